//! The FLAC encoder's check of its own frames (`engine/src/encode/frame_check.rs`, which
//! `Encoder::check_frames` runs on every frame it writes and which then vouches for the file).
//!
//! Input: a shape (channels, bits, frames, rate), the samples the frame must carry (each in
//! `ceil(bits / 8)` little-endian bytes, sign-extended from `bits`), then the frame's bytes. Any
//! frame may be refused; a panic is a bug. A frame the check accepts must decode to those samples:
//! it is wrapped in a stream (STREAMINFO, CRC-16 set) and decoded by Symphonia through
//! `Decoder`; where that decoder reads it, it must give back exactly the samples.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use lathe_engine::AudioBlock;
use lathe_engine::decode::Decoder;
use lathe_engine::encode::fuzzing::check_flac_frame;
use libfuzzer_sys::fuzz_target;

/// Sample widths a FLAC frame header can state.
const BITS: [u32; 5] = [8, 12, 16, 20, 24];
/// Rates by a header code of their own, and two that need the header's extra bytes.
const RATES_HZ: [u32; 8] = [
    44_100, 48_000, 96_000, 8_000, 192_000, 22_050, 37_800, 11_000,
];

fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lathe-fuzz-flac-")
            .tempdir()
            .expect("a temporary folder")
            .keep();
        dir.join("frame.flac")
    })
}

/// FLAC's frame CRC-16: polynomial 0x8005, initial value 0.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// A one-frame FLAC stream around `frame` (its CRC-16 recomputed), MD5 unset.
fn stream(frame: &[u8], rate_hz: u32, channels: usize, bits: u32, frames: usize) -> Vec<u8> {
    let block = (frames.max(16) as u16).to_be_bytes();
    // After the block sizes: frame sizes (unknown), rate, channels, bits, length: 112 bits.
    let mut info = 0u128;
    let mut put = |value: u64, width: u32| info = (info << width) | u128::from(value);
    put(0, 24);
    put(0, 24);
    put(u64::from(rate_hz), 20);
    put(channels as u64 - 1, 3);
    put(u64::from(bits) - 1, 5);
    put(frames as u64, 36);
    let mut bytes = b"fLaC".to_vec();
    bytes.extend_from_slice(&[0x80, 0, 0, 34]);
    bytes.extend_from_slice(&block);
    bytes.extend_from_slice(&block);
    bytes.extend_from_slice(&info.to_be_bytes()[2..]);
    bytes.extend_from_slice(&[0; 16]);
    bytes.extend_from_slice(frame);
    let body = bytes.len() - 2;
    let crc = crc16(&bytes[bytes.len() - frame.len()..body]);
    bytes[body..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((shape, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let channels = usize::from(shape[0] & 7) + 1;
    let bits = BITS[usize::from(shape[1]) % BITS.len()];
    // 1 to 65535, the block sizes FLAC can state.
    let frames = usize::from(u16::from_le_bytes([shape[2], shape[3]])) % 65_535 + 1;
    let rate_hz = RATES_HZ[usize::from(shape[4]) % RATES_HZ.len()];
    let width = bits.div_ceil(8) as usize;
    let Some((sample_bytes, frame)) = rest.split_at_checked(channels * frames * width) else {
        return;
    };
    let unused = 32 - bits;
    let samples: Vec<i32> = sample_bytes
        .chunks_exact(width)
        .map(|b| {
            let mut word = [0u8; 4];
            word[..width].copy_from_slice(b);
            (i32::from_le_bytes(word) << unused) >> unused
        })
        .collect();
    if check_flac_frame(rate_hz, frame, &samples, channels, frames, bits).is_err() {
        return;
    }
    // Accepted: a decoder must read the samples back. (A frame of fewer than two bytes of
    // CRC-16 could not have been accepted.)
    let path = input_path();
    std::fs::write(path, stream(frame, rate_hz, channels, bits, frames)).expect("stream written");
    let Ok(mut decoder) = Decoder::open_skipping_md5(path) else {
        return;
    };
    let scale = f64::from(1u32 << (bits - 1));
    let mut block = AudioBlock::new(channels, frames, rate_hz);
    let mut at = 0;
    while let Ok(n) = decoder.read(&mut block) {
        if n == 0 {
            break;
        }
        assert!(
            at + n <= frames,
            "the check accepted a frame of {frames} frames that decodes to more"
        );
        for c in 0..channels {
            for (i, &x) in block.channel(c)[..n].iter().enumerate() {
                let expected = samples[c * frames + at + i];
                assert_eq!(
                    (f64::from(x) * scale) as i64,
                    i64::from(expected),
                    "channel {c} frame {}: the check accepted a frame that decodes to other samples",
                    at + i
                );
            }
        }
        at += n;
    }
});
