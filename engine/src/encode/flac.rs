//! FLAC: lathe's own encoder, from `f32` blocks to a complete `.flac` file in bounded memory.
//!
//! # Stream
//! `fLaC`, a `STREAMINFO` block (the only metadata block; the tagger adds Vorbis comments later),
//! then frames of [`BLOCK_FRAMES`] frames (the last one shorter), each written as soon as it is
//! made, so nothing accumulates. `STREAMINFO` goes first with placeholders; [`FlacSink::finish`]
//! seeks back to fill in the total sample count, the smallest and largest frame and the MD5 of the
//! audio, which `flac -t` checks.
//!
//! # A frame
//! For each channel (or each signal of a stereo pair):
//! 1. **Shape.** A constant signal becomes a constant subframe. Otherwise the trailing zero bits
//!    all samples share ("wasted bits": 16-bit audio in a 24-bit file) are shifted out first.
//! 2. **Fixed predictors.** One sweep sums the absolute residuals of FLAC's fixed polynomial
//!    predictors of orders 0 to 4; each sum gives that predictor's size, estimated as one Rice
//!    partition (see [`rice_parameter`]).
//! 3. **Stereo decorrelation.** For stereo the same for side (`L - R`) and mid (`(L + R) >> 1`);
//!    the cheapest pair by those estimates of left/right, left/side, right/side and mid/side is
//!    coded.
//! 4. **LPC.** Autocorrelation (in `f64`) of the signal under a Tukey-like window, up to order 8
//!    (12 above 48 kHz); Levinson-Durbin; the order with the fewest estimated bits (residual bits
//!    from the prediction error, plus warm-up and coefficients); coefficients quantised to 15 bits
//!    (12 for 16-bit audio) with error feedback, as the reference encoder does.
//! 5. **Residual coding.** The LPC residual (and the best fixed predictor's, if its estimate comes
//!    close) is Rice-coded in `2^k` equal partitions (`k` up to [`MAX_PARTITION_ORDER`]), each
//!    partition's parameter chosen from its sum, with 4-bit parameters or, where a parameter
//!    passes 14 (loud 24-bit audio), 5-bit ones (`RICE2`). The smaller model wins; a subframe that
//!    would not be smaller than verbatim is written verbatim, so no frame is ever larger than its
//!    verbatim form.
//!
//! Every size estimate used for a decision is an upper bound of the size actually written (see
//! [`RiceCoder::plan`]), which is what makes the verbatim guarantee hold.
//!
//! # Determinism
//! The analysis uses only integer arithmetic and plain `f64` additions, multiplications and
//! divisions in a fixed order (no libm function, no fused multiply-add), so every machine makes the
//! same bytes from the same samples.
//!
//! Speed and size are measured by `flac_speed_and_size_against_flac_5` in this module's tests:
//! about 650-700x realtime for 44.1 kHz 24-bit stereo on one core of a 2020s x86-64 (a third of it
//! the MD5 that `flac -t` checks), in files within 0.1 % of `flac -5`'s.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use md5::{Digest, Md5};

use super::Quantiser;
use super::flac_format::{HEADER_RATES, STREAMINFO_LEN, crc8};
use super::frame_check::FrameCheck;
use super::written::WrittenAudio;
use crate::audio::AudioBlock;
use crate::error::{Error, Result};

/// FLAC block size in frames (the reference encoder's default for 44.1/48 kHz).
pub(super) const BLOCK_FRAMES: usize = 4096;

/// Frame bytes fed to the frame digest at a time (BLAKE3 hashes up to sixteen 1 KiB chunks at
/// once where it is given them together).
const DIGEST_BATCH_BYTES: usize = 1 << 20;

/// Highest sample rate a FLAC frame header can state (16 bits of tens of Hz).
pub(super) const MAX_SAMPLE_RATE_HZ: u32 = 655_350;

/// Byte offset of the `STREAMINFO` body: after `fLaC` and the 4-byte metadata block header.
const STREAMINFO_OFFSET: u64 = 8;

/// Highest LPC order tried at 48 kHz and below (the reference encoder's `-5`).
const MAX_LPC_ORDER: usize = 8;

/// Highest LPC order tried above 48 kHz, where longer predictors pay.
const MAX_LPC_ORDER_HIGH_RATE: usize = 12;

/// Largest LPC order anywhere (the size of the coefficient arrays).
const LPC_ORDER_LIMIT: usize = MAX_LPC_ORDER_HIGH_RATE;

/// Shortest subframe LPC is tried on; shorter ones (only ever a stream's last frame) use the fixed
/// predictors.
const MIN_LPC_FRAMES: usize = 64;

/// Finest residual partitioning tried: 2^6 partitions (64 frames each in a 4096-frame block).
const MAX_PARTITION_ORDER: u32 = 6;

/// Largest parameter of 4-bit Rice coding (`RICE`); 15 is its escape code.
const MAX_RICE_PARAM: u32 = 14;

/// Largest parameter of 5-bit Rice coding (`RICE2`); 31 is its escape code.
const MAX_RICE2_PARAM: u32 = 30;

/// Coefficients of FLAC's fixed predictors of order 0 to 4 (`x[t] ≈ Σ c[j] x[t-1-j]`).
const FIXED_COEFFICIENTS: [&[i32]; 5] = [&[], &[1], &[2, -1], &[3, -3, 1], &[4, -6, 4, -1]];

/// Streams FLAC frames to the file as they are encoded.
pub(super) struct FlacSink {
    file: BufWriter<File>,
    sample_rate_hz: u32,
    bit_depth: u32,
    channel_count: usize,
    quantiser: Quantiser,
    /// The samples of the frame being gathered, planar: channel `c` at `c * BLOCK_FRAMES`.
    samples: Vec<i32>,
    pending_frames: usize,
    /// The same samples as the MD5 covers them: interleaved, little-endian, `bit_depth / 8` bytes
    /// each.
    md5_bytes: Vec<u8>,
    md5: Md5,
    frame_number: u64,
    total_frames: u64,
    /// Smallest and largest frame in bytes so far.
    frame_bytes_range: Option<(usize, usize)>,
    coder: FrameCoder,
    /// Decodes every frame written and compares it with its samples, when asked to.
    check: Option<FrameCheck>,
    /// Digest of the frame bytes written (when they are checked).
    frames_digest: blake3::Hasher,
    /// Frame bytes not yet in the digest: it is fed [`DIGEST_BATCH_BYTES`] at a time, so that it
    /// hashes many chunks at once.
    frames_batch: Vec<u8>,
    /// Samples given as `f32` values off the integer grid (or clamped), which decode to another
    /// value.
    off_grid_samples: u64,
}

impl FlacSink {
    /// Writes the stream marker and a placeholder `STREAMINFO` to `file`.
    pub(super) fn new(
        path: &Path,
        file: File,
        bit_depth: u32,
        channel_count: usize,
        sample_rate_hz: u32,
    ) -> Result<Self> {
        let bytes_per_sample = bit_depth as usize / 8;
        let mut this = Self {
            file: BufWriter::with_capacity(1 << 16, file),
            sample_rate_hz,
            bit_depth,
            channel_count,
            quantiser: Quantiser::new(bit_depth),
            samples: vec![0; BLOCK_FRAMES * channel_count],
            pending_frames: 0,
            md5_bytes: Vec::with_capacity(BLOCK_FRAMES * channel_count * bytes_per_sample),
            md5: Md5::new(),
            frame_number: 0,
            total_frames: 0,
            frame_bytes_range: None,
            check: None,
            frames_digest: blake3::Hasher::new(),
            frames_batch: Vec::new(),
            off_grid_samples: 0,
            coder: FrameCoder::new(FrameFormat {
                channel_count,
                bit_depth,
                rate: RateCode::of(sample_rate_hz),
                max_lpc_order: if sample_rate_hz > 48_000 {
                    MAX_LPC_ORDER_HIGH_RATE
                } else {
                    MAX_LPC_ORDER
                },
            }),
        };
        this.file
            .write_all(b"fLaC")
            .map_err(|e| Error::io(path, e))?;
        // STREAMINFO is the only metadata block (type 0, "last" flag set); the tagger adds more.
        let header = [0x80, 0, 0, STREAMINFO_LEN as u8];
        this.file
            .write_all(&header)
            .map_err(|e| Error::io(path, e))?;
        this.write_stream_info(path, [0; 16])?;
        Ok(this)
    }

    /// From now on, decodes every frame as it is written and fails the write if it does not give
    /// back its samples (see [`FrameCheck`]); [`FlacSink::finish`] then vouches for the frames.
    pub(super) fn check_frames(&mut self, path: &Path) -> Result<()> {
        // The check counts frames from the first; one started later could not vouch for them all.
        if self.frame_number > 0 {
            return Err(super::encode_error(
                path,
                "the frame check must start before the first frame is written",
            ));
        }
        let stream_info = stream_info_bytes(&self.stream_info_fields([0; 16]));
        let check =
            FrameCheck::new(&stream_info).map_err(|reason| super::encode_error(path, reason))?;
        self.check = Some(check);
        self.frames_batch = Vec::with_capacity(DIGEST_BATCH_BYTES);
        Ok(())
    }

    /// Whether [`FlacSink::check_frames`] was called.
    pub(super) fn checks_frames(&self) -> bool {
        self.check.is_some()
    }

    /// Quantises the valid frames of `block` (whose channel count the caller has checked) and
    /// writes every frame that fills up.
    pub(super) fn write(&mut self, path: &Path, block: &AudioBlock) -> Result<()> {
        let total = block.frames();
        let mut start = 0;
        while start < total {
            let n = (BLOCK_FRAMES - self.pending_frames).min(total - start);
            for (ch, samples) in block.channels().enumerate() {
                let planar_start = ch * BLOCK_FRAMES + self.pending_frames;
                let planar = &mut self.samples[planar_start..planar_start + n];
                let input = &samples[start..start + n];
                let quantiser = self.quantiser;
                // Only a checked stream vouches that it decodes to its `f32` samples, so only it
                // counts those off the grid, in the same sweep. The scaling is exact: a sample on
                // the grid equals its code scaled.
                if self.check.is_some() {
                    let mut off_grid = 0;
                    for (&x, code) in input.iter().zip(planar.iter_mut()) {
                        *code = quantiser.quantise(x);
                        off_grid += u64::from(f64::from(*code) != f64::from(x) * quantiser.scale);
                    }
                    self.off_grid_samples += off_grid;
                } else {
                    for (&x, code) in input.iter().zip(planar.iter_mut()) {
                        *code = quantiser.quantise(x);
                    }
                }
            }
            self.pending_frames += n;
            start += n;
            if self.pending_frames == BLOCK_FRAMES {
                self.encode_frame(path)?;
            }
        }
        Ok(())
    }

    /// Encodes the pending samples as one FLAC frame and writes it out.
    fn encode_frame(&mut self, path: &Path) -> Result<()> {
        let frames = self.pending_frames;
        interleave_le(
            &self.samples,
            self.channel_count,
            frames,
            self.bit_depth as usize / 8,
            &mut self.md5_bytes,
        );
        self.md5.update(&self.md5_bytes);
        let bytes = self.coder.encode(&self.samples, frames, self.frame_number);
        if let Some(check) = &mut self.check {
            check
                .check(
                    bytes,
                    &self.samples,
                    BLOCK_FRAMES,
                    self.channel_count,
                    frames,
                    self.bit_depth,
                )
                .map_err(|reason| {
                    super::encode_error(
                        path,
                        format!(
                            "frame {} does not decode to its samples: {reason}",
                            self.frame_number
                        ),
                    )
                })?;
        }
        // Only a checked stream vouches for its frames, so only it needs their digest.
        if self.check.is_some() {
            if self.frames_batch.len() + bytes.len() > DIGEST_BATCH_BYTES {
                self.frames_digest.update(&self.frames_batch);
                self.frames_batch.clear();
            }
            if bytes.len() > DIGEST_BATCH_BYTES {
                self.frames_digest.update(bytes);
            } else {
                self.frames_batch.extend_from_slice(bytes);
            }
        }
        self.file.write_all(bytes).map_err(|e| Error::io(path, e))?;
        let size = bytes.len();
        self.frame_bytes_range = Some(match self.frame_bytes_range {
            None => (size, size),
            Some((lo, hi)) => (lo.min(size), hi.max(size)),
        });
        self.frame_number += 1;
        self.total_frames += frames as u64;
        self.pending_frames = 0;
        Ok(())
    }

    /// Writes `STREAMINFO` at the current position and returns it.
    fn write_stream_info(&mut self, path: &Path, md5: [u8; 16]) -> Result<[u8; STREAMINFO_LEN]> {
        let bytes = stream_info_bytes(&self.stream_info_fields(md5));
        self.file
            .write_all(&bytes)
            .map_err(|e| Error::io(path, e))?;
        Ok(bytes)
    }

    /// The fields of `STREAMINFO` as they stand. Frame sizes not known yet (no frame written) are
    /// 0, "unknown", as in the reference encoder.
    fn stream_info_fields(&self, md5: [u8; 16]) -> StreamInfoFields {
        let (min_frame, max_frame) = self.frame_bytes_range.unwrap_or((0, 0));
        // The fields are 24 bits wide; a size that does not fit is written as 0, "unknown" (a
        // truncated size would mislead readers that size their buffers by it). Frames are never
        // larger than verbatim ones, so for 4096 frames of at most 8 channels this cannot happen.
        let field = |bytes: usize| u32::try_from(bytes).ok().filter(|&b| b < 1 << 24);
        StreamInfoFields {
            block_frames: BLOCK_FRAMES as u16,
            min_frame_bytes: field(min_frame).unwrap_or(0),
            max_frame_bytes: field(max_frame).unwrap_or(0),
            sample_rate_hz: self.sample_rate_hz,
            channel_count: self.channel_count as u8,
            bit_depth: self.bit_depth as u8,
            total_frames: self.total_frames,
            md5,
        }
    }

    /// Writes the last (short) frame, completes `STREAMINFO`, flushes and fsyncs; returns what it
    /// can vouch for (every frame, if they were checked).
    pub(super) fn finish(mut self, path: &Path) -> Result<WrittenAudio> {
        if self.pending_frames > 0 {
            self.encode_frame(path)?;
        }
        self.file
            .seek(SeekFrom::Start(STREAMINFO_OFFSET))
            .map_err(|e| Error::io(path, e))?;
        let md5: [u8; 16] = self.md5.clone().finalize().into();
        let stream_info = self.write_stream_info(path, md5)?;
        self.file.flush().map_err(|e| Error::io(path, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(path, e))?;
        self.frames_digest.update(&self.frames_batch);
        Ok(if self.check.is_some() {
            WrittenAudio::checked_flac(
                stream_info,
                *self.frames_digest.finalize().as_bytes(),
                self.off_grid_samples,
                self.bit_depth,
            )
        } else {
            WrittenAudio::unchecked()
        })
    }
}

/// Lays out `frames` frames of planar `samples` (channel `c` at `c * BLOCK_FRAMES`) as FLAC's MD5
/// covers them: interleaved, little-endian, `bytes_per_sample` bytes each.
fn interleave_le(
    samples: &[i32],
    channel_count: usize,
    frames: usize,
    bytes_per_sample: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(frames * channel_count * bytes_per_sample, 0);
    let channel = |c: usize| &samples[c * BLOCK_FRAMES..c * BLOCK_FRAMES + frames];
    match (channel_count, bytes_per_sample) {
        // Stereo, the common case, a frame at a time.
        (2, 3) => {
            for ((slot, &l), &r) in out.chunks_exact_mut(6).zip(channel(0)).zip(channel(1)) {
                slot[..3].copy_from_slice(&l.to_le_bytes()[..3]);
                slot[3..].copy_from_slice(&r.to_le_bytes()[..3]);
            }
        }
        (2, 2) => {
            for ((slot, &l), &r) in out.chunks_exact_mut(4).zip(channel(0)).zip(channel(1)) {
                slot[..2].copy_from_slice(&(l as i16).to_le_bytes());
                slot[2..].copy_from_slice(&(r as i16).to_le_bytes());
            }
        }
        _ => {
            let stride = channel_count * bytes_per_sample;
            for ch in 0..channel_count {
                let slots = out[ch * bytes_per_sample..].chunks_mut(stride);
                for (slot, &x) in slots.zip(channel(ch)) {
                    slot[..bytes_per_sample].copy_from_slice(&x.to_le_bytes()[..bytes_per_sample]);
                }
            }
        }
    }
}

/// The fields of a fixed-blocksize stream's `STREAMINFO`.
struct StreamInfoFields {
    block_frames: u16,
    min_frame_bytes: u32,
    max_frame_bytes: u32,
    sample_rate_hz: u32,
    channel_count: u8,
    bit_depth: u8,
    total_frames: u64,
    md5: [u8; 16],
}

/// `STREAMINFO` body: block sizes (16 + 16 bits; a fixed-blocksize stream gives its block size
/// for both, the short last block does not count), frame sizes (24 + 24), sample rate (20),
/// channels - 1 (3), bits per sample - 1 (5), total frames (36), MD5 (128).
fn stream_info_bytes(f: &StreamInfoFields) -> [u8; STREAMINFO_LEN] {
    let mut b = [0u8; STREAMINFO_LEN];
    b[0..2].copy_from_slice(&f.block_frames.to_be_bytes());
    b[2..4].copy_from_slice(&f.block_frames.to_be_bytes());
    b[4..7].copy_from_slice(&f.min_frame_bytes.to_be_bytes()[1..]);
    b[7..10].copy_from_slice(&f.max_frame_bytes.to_be_bytes()[1..]);
    let packed: u64 = (u64::from(f.sample_rate_hz) << 44)
        | (u64::from(f.channel_count - 1) << 41)
        | (u64::from(f.bit_depth - 1) << 36)
        | (f.total_frames & ((1 << 36) - 1));
    b[10..18].copy_from_slice(&packed.to_be_bytes());
    b[18..34].copy_from_slice(&f.md5);
    b
}

/// How a frame header states the sample rate: a 4-bit code, and for the codes that need it the
/// rate itself in the bytes after the frame number (`(value, bits)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RateCode {
    code: u8,
    extra: Option<(u32, u32)>,
}

impl RateCode {
    fn of(rate_hz: u32) -> Self {
        if let Some(&(code, _)) = HEADER_RATES.iter().find(|(_, rate)| *rate == rate_hz) {
            return Self { code, extra: None };
        }
        match rate_hz {
            r if r % 1000 == 0 && r / 1000 <= 255 => Self {
                code: 0b1100,
                extra: Some((r / 1000, 8)),
            },
            r if r <= 65_535 => Self {
                code: 0b1101,
                extra: Some((r, 16)),
            },
            r if r % 10 == 0 && r / 10 <= 65_535 => Self {
                code: 0b1110,
                extra: Some((r / 10, 16)),
            },
            // "As in STREAMINFO".
            _ => Self {
                code: 0b0000,
                extra: None,
            },
        }
    }
}

/// What every frame of a stream shares.
#[derive(Debug, Clone, Copy)]
struct FrameFormat {
    channel_count: usize,
    bit_depth: u32,
    rate: RateCode,
    max_lpc_order: usize,
}

/// How the channels of a frame are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelAssignment {
    Independent,
    LeftSide,
    RightSide,
    MidSide,
}

impl ChannelAssignment {
    /// The frame header's 4-bit channel assignment code.
    fn code(self, channel_count: usize) -> u8 {
        match self {
            Self::Independent => channel_count as u8 - 1,
            Self::LeftSide => 0b1000,
            Self::RightSide => 0b1001,
            Self::MidSide => 0b1010,
        }
    }
}

/// The signals of a stereo frame, in the order [`FrameCoder`] analyses them.
const LEFT: usize = 0;
const RIGHT: usize = 1;
const SIDE: usize = 2;
const MID: usize = 3;

/// Serialises frames: chooses the channel assignment, analyses and writes every subframe.
struct FrameCoder {
    format: FrameFormat,
    out: BitWriter,
    /// Mid and side of the current stereo frame.
    mid: Vec<i32>,
    side: Vec<i32>,
    subframes: SubframeCoder,
}

impl FrameCoder {
    fn new(format: FrameFormat) -> Self {
        Self {
            format,
            out: BitWriter::with_capacity(BLOCK_FRAMES * format.channel_count * 4 + 64),
            mid: Vec::with_capacity(BLOCK_FRAMES),
            side: Vec::with_capacity(BLOCK_FRAMES),
            subframes: SubframeCoder::new(format.max_lpc_order),
        }
    }

    /// Encodes `frames` frames of the planar `samples` (channel `c` at `c * BLOCK_FRAMES`) as frame
    /// `number`; returns the frame's bytes.
    fn encode(&mut self, samples: &[i32], frames: usize, number: u64) -> &[u8] {
        let Self {
            format,
            out,
            mid,
            side,
            subframes,
        } = self;
        let bits = format.bit_depth;
        let channel = |c: usize| &samples[c * BLOCK_FRAMES..c * BLOCK_FRAMES + frames];
        out.clear();
        if format.channel_count == 2 {
            let (left, right) = (channel(0), channel(1));
            mid.clear();
            side.clear();
            mid.extend(left.iter().zip(right).map(|(&l, &r)| (l + r) >> 1));
            side.extend(left.iter().zip(right).map(|(&l, &r)| l - r));
            // Indexed by LEFT, RIGHT, SIDE, MID: the side channel is one bit wider.
            let signals: [(&[i32], u32); 4] =
                [(left, bits), (right, bits), (side, bits + 1), (mid, bits)];
            let shapes = signals.map(|(signal, signal_bits)| Shape::of(signal, signal_bits));
            let (assignment, coded) = [
                (ChannelAssignment::Independent, [LEFT, RIGHT]),
                (ChannelAssignment::LeftSide, [LEFT, SIDE]),
                (ChannelAssignment::RightSide, [SIDE, RIGHT]),
                (ChannelAssignment::MidSide, [MID, SIDE]),
            ]
            .into_iter()
            .min_by_key(|(_, pair)| pair.map(|i| shapes[i].estimated_bits()).iter().sum::<u64>())
            .unwrap_or((ChannelAssignment::Independent, [LEFT, RIGHT]));
            write_frame_header(out, format, assignment, frames, number);
            for index in coded {
                let (signal, signal_bits) = signals[index];
                subframes.write(out, signal, signal_bits, shapes[index]);
            }
        } else {
            write_frame_header(out, format, ChannelAssignment::Independent, frames, number);
            for c in 0..format.channel_count {
                let signal = channel(c);
                subframes.write(out, signal, bits, Shape::of(signal, bits));
            }
        }
        out.align();
        let crc = crc16(out.bytes());
        out.put_bytes(&crc.to_be_bytes());
        out.bytes()
    }
}

/// Writes a frame header (fixed block size, with its CRC-8) into the empty `out`.
fn write_frame_header(
    out: &mut BitWriter,
    format: &FrameFormat,
    assignment: ChannelAssignment,
    frames: usize,
    number: u64,
) {
    debug_assert!(out.bytes().is_empty());
    // Sync code, reserved bit, fixed-blocksize strategy.
    out.put_bytes(&[0xFF, 0xF8]);
    let (size_code, size_extra) = match frames {
        BLOCK_FRAMES => (0b1100, None),
        n if n <= 256 => (0b0110, Some(((n - 1) as u32, 8))),
        n => (0b0111, Some(((n - 1) as u32, 16))),
    };
    out.put_bytes(&[(size_code << 4) | format.rate.code]);
    let sample_size_code = match format.bit_depth {
        8 => 0b001,
        12 => 0b010,
        16 => 0b100,
        20 => 0b101,
        24 => 0b110,
        _ => 0b000,
    };
    out.put_bytes(&[(assignment.code(format.channel_count) << 4) | (sample_size_code << 1)]);
    let (utf8, utf8_len) = utf8_coded(number);
    out.put_bytes(&utf8[..utf8_len]);
    for (value, bits) in [size_extra, format.rate.extra].into_iter().flatten() {
        out.put(u64::from(value), bits);
    }
    out.align();
    let crc = crc8(out.bytes());
    out.put_bytes(&[crc]);
}

/// A number in FLAC's UTF-8-like coding (up to 36 bits): the bytes and how many there are.
fn utf8_coded(value: u64) -> ([u8; 7], usize) {
    let mut bytes = [0u8; 7];
    if value < 0x80 {
        bytes[0] = value as u8;
        return (bytes, 1);
    }
    // n bytes hold 5n + 1 bits: 7 - n in the first, 6 in each continuation byte.
    let bits = 64 - value.leading_zeros() as usize;
    let n = (bits - 1).div_ceil(5);
    bytes[0] = ((0xFF00u16 >> n) as u8) | (value >> (6 * (n - 1))) as u8;
    for (i, byte) in bytes[1..n].iter_mut().enumerate() {
        *byte = 0x80 | ((value >> (6 * (n - 2 - i))) & 0x3F) as u8;
    }
    (bytes, n)
}

/// What the cheap first look at a signal found: whether it is constant, its wasted bits, and the
/// best fixed predictor by estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Every sample has this value.
    Constant { value: i32, bits: u32 },
    /// Anything else.
    Varying {
        /// Sample width, wasted bits not counted.
        bits: u32,
        /// Trailing zero bits common to every sample.
        wasted: u32,
        fixed_order: usize,
        /// Estimated size of the subframe with that fixed predictor.
        fixed_bits: u64,
    },
}

impl Shape {
    /// Looks at `signal`, whose samples are `bits` wide.
    fn of(signal: &[i32], bits: u32) -> Self {
        let first = signal.first().copied().unwrap_or(0);
        let (mut any_bits, mut differs) = (0i32, 0i32);
        for &x in signal {
            any_bits |= x;
            differs |= x ^ first;
        }
        if differs == 0 {
            return Self::Constant { value: first, bits };
        }
        let wasted = any_bits.trailing_zeros().min(bits - 1);
        let bits = bits - wasted;
        let n = signal.len();
        let header_bits = subframe_header_bits(wasted);
        let verbatim = header_bits + n as u64 * u64::from(bits);
        if n <= FIXED_COEFFICIENTS.len() {
            return Self::Varying {
                bits,
                wasted,
                fixed_order: 0,
                fixed_bits: verbatim,
            };
        }
        // The sums cover the residuals from frame 4 on for every order; the shift undoes the
        // wasted bits, which every residual of the unshifted signal carries.
        let sums = fixed_residual_sums(signal).map(|s| s >> wasted);
        let count = (n - FIXED_COEFFICIENTS.len() + 1) as u64;
        let (fixed_order, fixed_bits) = sums
            .iter()
            .enumerate()
            .map(|(order, &sum)| {
                let (_, residual) = rice_parameter(sum, count, MAX_RICE2_PARAM);
                // Warm-up, the residual header, one parameter; the residual of the warm-up
                // frames (fewer than 5) is counted as the sum's first.
                let total = header_bits + order as u64 * u64::from(bits) + 6 + 5 + residual;
                (order, total)
            })
            .fold((0, verbatim), |best, c| if c.1 < best.1 { c } else { best });
        Self::Varying {
            bits,
            wasted,
            fixed_order,
            fixed_bits,
        }
    }

    fn estimated_bits(self) -> u64 {
        match self {
            Self::Constant { bits, .. } => 8 + u64::from(bits),
            Self::Varying { fixed_bits, .. } => fixed_bits,
        }
    }
}

/// Size of a subframe header: the type byte, and the unary wasted-bits count if there are any.
fn subframe_header_bits(wasted: u32) -> u64 {
    8 + u64::from(wasted)
}

/// Sums of the absolute residuals of the fixed predictors of order 0 to 4, each over the frames
/// from 4 on (`x.len()` must exceed 4).
///
/// Samples are at most 25 bits wide (a 24-bit side channel), so a residual of order `k` stays
/// below `2^(24 + k)`: sixteen of them fit a `u32`. The sums run in `u32` lanes of eight frames
/// (which the compiler vectorises), each lane summing one frame of sixteen successive groups of
/// eight, and the lanes are added into `u64` sums after those sixteen groups.
fn fixed_residual_sums(x: &[i32]) -> [u64; 5] {
    const LANES: usize = 8;
    const BLOCK: usize = LANES * 16;
    let n = x.len();
    let (x0, x1, x2, x3, x4) = (
        &x[4..],
        &x[3..n - 1],
        &x[2..n - 2],
        &x[1..n - 3],
        &x[..n - 4],
    );
    let mut sums = [0u64; 5];
    let mut add = |range: std::ops::Range<usize>| {
        let mut lanes = [[0u32; LANES]; 5];
        let groups = x0[range.clone()]
            .chunks_exact(LANES)
            .zip(x1[range.clone()].chunks_exact(LANES))
            .zip(x2[range.clone()].chunks_exact(LANES))
            .zip(x3[range.clone()].chunks_exact(LANES))
            .zip(x4[range].chunks_exact(LANES));
        for ((((a, b), c), d), e) in groups {
            for i in 0..LANES {
                let residuals = fixed_residuals(a[i], b[i], c[i], d[i], e[i]);
                for (lane, r) in lanes.iter_mut().zip(residuals) {
                    lane[i] += r.unsigned_abs();
                }
            }
        }
        for (sum, lane) in sums.iter_mut().zip(lanes) {
            *sum += lane.iter().map(|&v| u64::from(v)).sum::<u64>();
        }
    };
    let blocks = x0.len() / BLOCK;
    for b in 0..blocks {
        add(b * BLOCK..(b + 1) * BLOCK);
    }
    let grouped = x0.len() / LANES * LANES;
    add(blocks * BLOCK..grouped);
    for t in 4 + grouped..n {
        let residuals = fixed_residuals(x[t], x[t - 1], x[t - 2], x[t - 3], x[t - 4]);
        for (sum, r) in sums.iter_mut().zip(residuals) {
            *sum += u64::from(r.unsigned_abs());
        }
    }
    sums
}

/// The residuals of the fixed predictors of order 0 to 4 at frame `t`, from `x[t]` (`a`) back to
/// `x[t - 4]` (`e`): successive differences.
#[inline(always)]
fn fixed_residuals(a: i32, b: i32, c: i32, d: i32, e: i32) -> [i32; 5] {
    let (d1, d1b, d1c, d1d) = (a - b, b - c, c - d, d - e);
    let (d2, d2b, d2c) = (d1 - d1b, d1b - d1c, d1c - d1d);
    let (d3, d3b) = (d2 - d2b, d2b - d2c);
    [a, d1, d2, d3, d3 - d3b]
}

/// One way of predicting a subframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Predictor {
    Fixed(usize),
    Lpc(LpcModel),
}

/// Quantised LPC coefficients: `x[t] ≈ (Σ coefficients[j] x[t-1-j]) >> shift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LpcModel {
    order: usize,
    coefficients: [i32; LPC_ORDER_LIMIT],
    /// Bits per coefficient (2 to 15).
    precision: u32,
    /// Right shift of the prediction (0 to 15).
    shift: u32,
}

/// A residual being tried: the predictor, its zigzag-folded residual and how to Rice-code it.
struct Trial {
    predictor: Predictor,
    /// Zigzag-folded (`0, -1, 1, -2, ...` to `0, 1, 2, 3, ...`), zeros in place of the warm-up.
    folded: Vec<u32>,
    rice: RiceCoder,
    plan: RicePlan,
    /// Estimated subframe size (an upper bound of the exact one).
    bits: u64,
}

impl Trial {
    fn new() -> Self {
        Self {
            predictor: Predictor::Fixed(0),
            folded: Vec::with_capacity(BLOCK_FRAMES),
            rice: RiceCoder::default(),
            plan: RicePlan::default(),
            bits: u64::MAX,
        }
    }

    /// Computes the residual of `predictor` over `x` (as `x_f64` too, for LPC) and plans its
    /// coding; false (and nothing to use) if a residual does not fit 32 bits.
    fn run(
        &mut self,
        x: &[i32],
        x_f64: &[f64],
        bits: u32,
        wasted: u32,
        predictor: Predictor,
    ) -> bool {
        self.predictor = predictor;
        let (order, model_bits) = match &predictor {
            Predictor::Fixed(order) => {
                fold_fixed(x, *order, &mut self.folded);
                (*order, 0)
            }
            Predictor::Lpc(m) => {
                if !fold_lpc(x_f64, m, &mut self.folded) {
                    self.bits = u64::MAX;
                    return false;
                }
                (m.order, 4 + 5 + u64::from(m.precision) * m.order as u64)
            }
        };
        self.plan = self.rice.plan(&self.folded, order);
        self.bits = subframe_header_bits(wasted)
            + order as u64 * u64::from(bits)
            + model_bits
            + self.plan.bits;
        true
    }
}

/// Analyses and writes subframes, with reused buffers.
struct SubframeCoder {
    max_lpc_order: usize,
    /// The signal with its wasted bits shifted out.
    shifted: Vec<i32>,
    lpc: LpcAnalyser,
    /// The best residual so far and the one being tried.
    best: Trial,
    trial: Trial,
}

impl SubframeCoder {
    fn new(max_lpc_order: usize) -> Self {
        Self {
            max_lpc_order,
            shifted: Vec::with_capacity(BLOCK_FRAMES),
            lpc: LpcAnalyser::new(),
            best: Trial::new(),
            trial: Trial::new(),
        }
    }

    /// Writes the subframe of `signal` (samples `bits` wide), whose [`Shape`] is `shape`.
    fn write(&mut self, out: &mut BitWriter, signal: &[i32], bits: u32, shape: Shape) {
        let (bits, wasted, fixed_order, fixed_bits) = match shape {
            Shape::Constant { value, bits } => {
                out.put(0x00, 8);
                out.put_signed(value, bits);
                return;
            }
            Shape::Varying {
                bits: shifted_bits,
                wasted,
                fixed_order,
                fixed_bits,
            } => {
                debug_assert_eq!(shifted_bits + wasted, bits);
                (shifted_bits, wasted, fixed_order, fixed_bits)
            }
        };
        let x: &[i32] = if wasted > 0 {
            self.shifted.clear();
            self.shifted.extend(signal.iter().map(|&s| s >> wasted));
            &self.shifted
        } else {
            signal
        };
        let n = x.len();
        let verbatim = subframe_header_bits(wasted) + n as u64 * u64::from(bits);
        self.best.bits = u64::MAX;
        if n >= MIN_LPC_FRAMES
            && let Some(model) = self.lpc.analyse(x, bits, self.max_lpc_order)
        {
            self.best
                .run(x, &self.lpc.signal, bits, wasted, Predictor::Lpc(model));
        }
        // The fixed estimate is one Rice partition, partitioning may save a little more: try it
        // where it comes within 1/32 of the best so far.
        let worth_trying = fixed_bits < self.best.bits.saturating_add(self.best.bits / 32);
        if n > FIXED_COEFFICIENTS.len() && fixed_bits < verbatim && worth_trying {
            self.trial
                .run(x, &[], bits, wasted, Predictor::Fixed(fixed_order));
            if self.trial.bits < self.best.bits {
                std::mem::swap(&mut self.trial, &mut self.best);
            }
        }
        if self.best.bits >= verbatim {
            out.put(0x02 | u64::from(wasted > 0), 8);
            if wasted > 0 {
                out.put(1, wasted);
            }
            for &s in x {
                out.put_signed(s, bits);
            }
            return;
        }
        let best = &self.best;
        let (type_code, order) = match &best.predictor {
            Predictor::Fixed(order) => (0b001000 | *order as u64, *order),
            Predictor::Lpc(m) => (0b100000 | (m.order - 1) as u64, m.order),
        };
        out.put((type_code << 1) | u64::from(wasted > 0), 8);
        if wasted > 0 {
            out.put(1, wasted);
        }
        for &s in &x[..order] {
            out.put_signed(s, bits);
        }
        if let Predictor::Lpc(m) = &best.predictor {
            out.put(u64::from(m.precision - 1), 4);
            out.put(u64::from(m.shift), 5);
            for &c in &m.coefficients[..m.order] {
                out.put_signed(c, m.precision);
            }
        }
        best.rice.write(out, &best.folded, order, best.plan);
    }
}

/// Linear prediction analysis with reused buffers.
struct LpcAnalyser {
    /// The signal analysed last, as `f64`.
    signal: Vec<f64>,
    /// The window for the current block length.
    window: Vec<f64>,
    /// The windowed signal.
    windowed: Vec<f64>,
}

impl LpcAnalyser {
    fn new() -> Self {
        Self {
            signal: Vec::with_capacity(BLOCK_FRAMES),
            window: Vec::with_capacity(BLOCK_FRAMES),
            windowed: Vec::with_capacity(BLOCK_FRAMES),
        }
    }

    /// The LPC model of `x` (samples `bits` wide, up to `max_order`) with the fewest estimated
    /// bits, or `None` for a signal LPC cannot model (silent under the window).
    fn analyse(&mut self, x: &[i32], bits: u32, max_order: usize) -> Option<LpcModel> {
        let n = x.len();
        if self.window.len() != n {
            tukey_like_window(n, &mut self.window);
        }
        self.signal.clear();
        self.signal.extend(x.iter().map(|&s| f64::from(s)));
        self.windowed.clear();
        self.windowed
            .extend(self.signal.iter().zip(&self.window).map(|(&s, &w)| s * w));
        let mut autocorrelation = [0.0; LPC_ORDER_LIMIT + 1];
        for (lag, r) in autocorrelation[..=max_order].iter_mut().enumerate() {
            *r = dot(&self.windowed[lag..], &self.windowed[..n - lag]);
        }
        if autocorrelation[0] <= 0.0 {
            return None;
        }
        // Levinson-Durbin: predictor coefficients and prediction error energy for every order.
        let mut coefficients = [[0.0; LPC_ORDER_LIMIT]; LPC_ORDER_LIMIT];
        let mut errors = [0.0; LPC_ORDER_LIMIT];
        let mut a = [0.0; LPC_ORDER_LIMIT];
        let mut error = autocorrelation[0];
        let mut orders = 0;
        for m in 0..max_order {
            let mut acc = autocorrelation[m + 1];
            for j in 0..m {
                acc -= a[j] * autocorrelation[m - j];
            }
            let k = acc / error;
            let previous = a;
            for j in 0..m {
                a[j] = previous[j] - k * previous[m - 1 - j];
            }
            a[m] = k;
            error *= 1.0 - k * k;
            if error.is_nan() || error <= 0.0 || !k.is_finite() {
                break;
            }
            coefficients[m] = a;
            errors[m] = error;
            orders = m + 1;
        }
        if orders == 0 {
            return None;
        }
        let precision = if bits <= 16 { 12 } else { 15 };
        // Estimated bits per residual sample of each order: half the log2 of the mean squared
        // error (as the reference encoder estimates it), then warm-up and coefficients.
        let scale = 0.5 / n as f64;
        let (best_order, _) = (1..=orders)
            .map(|order| {
                let per_sample = (0.5 * log2_estimate(errors[order - 1] * scale)).max(0.0);
                let total =
                    per_sample * (n - order) as f64 + (order as u32 * (bits + precision)) as f64;
                (order, total)
            })
            .fold(
                (0, f64::INFINITY),
                |best, c| if c.1 < best.1 { c } else { best },
            );
        quantise_coefficients(&coefficients[best_order - 1][..best_order], precision)
    }
}

/// A Tukey window (flat middle, tapers over a quarter of the length at each end) of `n` points,
/// its tapers cubic smoothsteps instead of raised cosines: within 0.01 of them, and computed
/// with plain arithmetic, so the same on every machine.
fn tukey_like_window(n: usize, window: &mut Vec<f64>) {
    window.clear();
    window.resize(n, 1.0);
    let taper = n / 4;
    for t in 0..taper {
        // Position in the taper, 0 to 1 (exclusive), and the smoothstep of it.
        let u = (t as f64 + 0.5) / taper as f64;
        let w = u * u * (3.0 - 2.0 * u);
        window[t] = w;
        window[n - 1 - t] = w;
    }
}

/// Dot product in sixteen interleaved partial sums, added pairwise at the end as vector
/// registers of two hold them (lane `k` with `k + 8`, then `k + 4`, ...), so that the compiler
/// vectorises without shuffles and enough sums are in flight to hide the additions' latency. The
/// summation order is fixed, so results are reproducible.
#[inline(never)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 16;
    let mut lanes = [0.0; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for k in 0..LANES {
            lanes[k] += ca[k] * cb[k];
        }
    }
    let mut width = LANES;
    while width > 2 {
        width /= 2;
        for k in 0..width {
            lanes[k] += lanes[k + width];
        }
    }
    (lanes[0] + lanes[1]) + tail
}

/// `log2(x)` for `x > 0` to within 1e-5, with plain arithmetic (the same on every machine): the
/// exponent from the bits, the mantissa's logarithm from the series of `atanh`.
fn log2_estimate(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 || x.is_infinite() {
        return 0.0;
    }
    // Normal numbers only: scale subnormals up first.
    let (x, offset) = if x < f64::MIN_POSITIVE {
        (x * 2f64.powi(64), -64.0)
    } else {
        (x, 0.0)
    };
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    // log2(m) = 2 atanh(s) / ln 2 with s = (m - 1) / (m + 1) in [0, 1/3).
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let series = s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 / 9.0))));
    exponent as f64 + offset + series * (2.0 / std::f64::consts::LN_2)
}

/// Quantises predictor coefficients to `precision` bits (sign included) with a common shift,
/// carrying each coefficient's rounding error into the next (the reference encoder's method).
/// `None` if no shift in 0..=15 fits them (never for a sane predictor).
fn quantise_coefficients(lp: &[f64], precision: u32) -> Option<LpcModel> {
    let largest = lp.iter().fold(0.0f64, |m, c| m.max(c.abs()));
    if largest.is_nan() || largest <= 0.0 || largest.is_infinite() {
        return None;
    }
    // floor(log2(largest)), from the exponent bits (largest is normal: it is not tiny).
    let log2_largest = ((largest.to_bits() >> 52) & 0x7FF) as i32 - 1023;
    let shift = (precision as i32 - 2 - log2_largest).min(15);
    if shift < 0 {
        return None;
    }
    let q_max = (1i64 << (precision - 1)) - 1;
    let q_min = -(1i64 << (precision - 1));
    let scale = f64::from(1u32 << shift);
    let mut coefficients = [0i32; LPC_ORDER_LIMIT];
    let mut error = 0.0;
    for (c, q) in lp.iter().zip(&mut coefficients) {
        error += c * scale;
        let rounded = (error.round() as i64).clamp(q_min, q_max);
        error -= rounded as f64;
        *q = rounded as i32;
    }
    Some(LpcModel {
        order: lp.len(),
        coefficients,
        precision,
        shift: shift as u32,
    })
}

/// Computes the residual of fixed predictor `order` (0 to 4) over `x` into `folded`,
/// zigzag-folded, with zeros for the warm-up samples. In `i32`: samples are at most 25 bits wide,
/// so the residuals stay below 2^29.
fn fold_fixed(x: &[i32], order: usize, folded: &mut Vec<u32>) {
    folded.clear();
    folded.resize(x.len(), 0);
    let out = &mut folded[order.min(x.len())..];
    match order {
        0 => out.iter_mut().zip(x).for_each(|(o, &a)| *o = fold(a)),
        1 => out
            .iter_mut()
            .zip(x.windows(2))
            .for_each(|(o, w)| *o = fold(w[1] - w[0])),
        2 => out
            .iter_mut()
            .zip(x.windows(3))
            .for_each(|(o, w)| *o = fold(w[2] - 2 * w[1] + w[0])),
        3 => out
            .iter_mut()
            .zip(x.windows(4))
            .for_each(|(o, w)| *o = fold(w[3] - 3 * w[2] + 3 * w[1] - w[0])),
        _ => out
            .iter_mut()
            .zip(x.windows(5))
            .for_each(|(o, w)| *o = fold(w[4] - 4 * w[3] + 6 * w[2] - 4 * w[1] + w[0])),
    }
}

/// Computes the LPC residual `x[t] - ((Σ c[j] x[t-1-j]) >> shift)` for `t >= order` into
/// `folded`, zigzag-folded, with zeros for the warm-up samples; `x` holds the samples as `f64`.
/// Returns false if a residual does not fit FLAC's 32-bit signed range.
///
/// Exact in `f64`, and so equal to the integer definition: samples (at most 25 bits) times
/// coefficients (at most 15) summed over at most 12 taps stay below 2^44, so every product and
/// every partial sum is an integer `f64` holds exactly, in any order; dividing by `2^shift` is
/// exact too, and [`lpc_residual`] floors exactly. In `f64` the products vectorise, where 64-bit
/// integer multiplies do not on baseline x86-64.
fn fold_lpc(x: &[f64], model: &LpcModel, folded: &mut Vec<u32>) -> bool {
    folded.clear();
    folded.resize(x.len(), 0);
    let c = &model.coefficients[..model.order];
    let shift = model.shift;
    // Every order gets a loop the compiler unrolls.
    match model.order {
        1 => fold_lpc_with::<1>(x, c, shift, folded),
        2 => fold_lpc_with::<2>(x, c, shift, folded),
        3 => fold_lpc_with::<3>(x, c, shift, folded),
        4 => fold_lpc_with::<4>(x, c, shift, folded),
        5 => fold_lpc_with::<5>(x, c, shift, folded),
        6 => fold_lpc_with::<6>(x, c, shift, folded),
        7 => fold_lpc_with::<7>(x, c, shift, folded),
        8 => fold_lpc_with::<8>(x, c, shift, folded),
        9 => fold_lpc_with::<9>(x, c, shift, folded),
        10 => fold_lpc_with::<10>(x, c, shift, folded),
        11 => fold_lpc_with::<11>(x, c, shift, folded),
        _ => fold_lpc_with::<12>(x, c, shift, folded),
    }
}

fn fold_lpc_with<const N: usize>(
    x: &[f64],
    coefficients: &[i32],
    shift: u32,
    folded: &mut [u32],
) -> bool {
    let Ok(c) = <[i32; N]>::try_from(coefficients) else {
        return false;
    };
    let c = c.map(f64::from);
    let scale = 1.0 / f64::from(1u32 << shift);
    let mut in_range = true;
    for (w, out) in x.windows(N + 1).zip(&mut folded[N..]) {
        let mut prediction = 0.0;
        for j in 0..N {
            prediction += c[j] * w[N - 1 - j];
        }
        let (e, fits) = lpc_residual(w[N], prediction, scale);
        in_range &= fits;
        *out = fold(e);
    }
    in_range
}

/// `sample - floor(prediction * scale)` for an integer `prediction` below 2^51 in magnitude and a
/// power-of-two `scale` (so the product is exact), as an `i32` (its low 32 bits), and whether it
/// fits one. Adding and subtracting 1.5 * 2^52 rounds to the nearest integer, exactly; the floor
/// steps down where that rounded up; and an integer plus 1.5 * 2^52 holds the integer's two's
/// complement in the low bits of its representation. Plain arithmetic that vectorises, where
/// `f64::floor` is a libm call on baseline x86-64 and `as i32` a scalar conversion.
#[inline(always)]
fn lpc_residual(sample: f64, prediction: f64, scale: f64) -> (i32, bool) {
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let y = prediction * scale;
    let nearest = (y + ROUND) - ROUND;
    let floor = nearest - if nearest > y { 1.0 } else { 0.0 };
    let e = sample - floor;
    let fits = (-2_147_483_648.0..=2_147_483_647.0).contains(&e);
    ((e + ROUND).to_bits() as u32 as i32, fits)
}

/// Zigzag folding: `0, -1, 1, -2, 2, ...` to `0, 1, 2, 3, 4, ...`.
#[inline]
fn fold(e: i32) -> u32 {
    ((e << 1) ^ (e >> 31)) as u32
}

/// How a residual is Rice-coded: the parameters themselves are in [`RiceCoder::params`].
#[derive(Debug, Clone, Copy, Default)]
struct RicePlan {
    partition_order: u32,
    /// 5-bit parameters (`RICE2`) rather than 4-bit ones.
    rice2: bool,
    /// Size of the coded residual, headers included: an upper bound, within one bit a sample
    /// of the exact size.
    bits: u64,
}

/// Partitioned Rice coding of residuals, with reused buffers.
#[derive(Default)]
struct RiceCoder {
    /// Sum of the folded residuals of each partition at the order being tried.
    sums: Vec<u64>,
    /// Parameters at the order being tried.
    trial: Vec<u8>,
    /// Parameters of the plan returned last.
    params: Vec<u8>,
}

impl RiceCoder {
    /// Chooses partition order and parameters for `folded`, whose first `warm_up` values are not
    /// coded, and returns the plan.
    ///
    /// Every partition order from the finest allowed to 0 is tried, each partition's parameter
    /// chosen from its sum ([`rice_parameter`]); 5-bit parameters where any exceeds 14. The finest
    /// order is limited by [`MAX_PARTITION_ORDER`], by the block size (partitions are equal, so
    /// `n` must divide by their number), and by the warm-up (the first partition must hold at
    /// least one coded sample). `folded` must be longer than `warm_up`.
    fn plan(&mut self, folded: &[u32], warm_up: usize) -> RicePlan {
        let n = folded.len();
        debug_assert!(n > warm_up);
        let mut order = MAX_PARTITION_ORDER.min(n.trailing_zeros());
        while order > 0 && n >> order <= warm_up {
            order -= 1;
        }
        let mut len = n >> order;
        self.sums.clear();
        self.sums.extend(folded.chunks_exact(len).map(sum_u32));
        let mut best = RicePlan {
            bits: u64::MAX,
            ..RicePlan::default()
        };
        loop {
            let parts = self.sums.len();
            self.trial.clear();
            let mut bits = 0;
            let mut rice2 = false;
            for (k, &sum) in self.sums.iter().enumerate() {
                let count = (len - if k == 0 { warm_up } else { 0 }) as u64;
                let (p, b) = rice_parameter(sum, count, MAX_RICE2_PARAM);
                rice2 |= p > MAX_RICE_PARAM;
                self.trial.push(p as u8);
                bits += b;
            }
            bits += 2 + 4 + parts as u64 * if rice2 { 5 } else { 4 };
            if bits < best.bits {
                best = RicePlan {
                    partition_order: order,
                    rice2,
                    bits,
                };
                std::mem::swap(&mut self.params, &mut self.trial);
            }
            if order == 0 {
                break;
            }
            for k in 0..parts / 2 {
                self.sums[k] = self.sums[2 * k] + self.sums[2 * k + 1];
            }
            self.sums.truncate(parts / 2);
            order -= 1;
            len *= 2;
        }
        best
    }

    /// Writes the residual as planned by the last call of [`RiceCoder::plan`].
    fn write(&self, out: &mut BitWriter, folded: &[u32], warm_up: usize, plan: RicePlan) {
        let len = folded.len() >> plan.partition_order;
        out.put(u64::from(plan.rice2), 2);
        out.put(u64::from(plan.partition_order), 4);
        let param_bits = if plan.rice2 { 5 } else { 4 };
        for (k, &p) in self.params.iter().enumerate() {
            out.put(u64::from(p), param_bits);
            let start = if k == 0 { warm_up } else { k * len };
            out.put_rice_run(&folded[start..(k + 1) * len], u32::from(p));
        }
    }
}

/// Sum of `u32`s in a `u64` (vectorised by the compiler).
fn sum_u32(values: &[u32]) -> u64 {
    values.iter().map(|&u| u64::from(u)).sum()
}

/// The Rice parameter up to `max_param` that codes `count` values summing to `sum` smallest, and
/// the estimated size: `count * (p + 1)` for the stop bits and remainders, `sum >> p` for the
/// unary quotients. Since `Σ (u >> p) <= (Σ u) >> p`, the estimate is never below the exact size,
/// and at most `count` bits above it.
///
/// The size is convex in `p` (raising `p` by one adds `count` bits and saves
/// `(sum >> p) - (sum >> (p + 1))`, which shrinks as `p` grows), so the search starts just below
/// `log2(sum / count)` and walks up while that saves bits.
fn rice_parameter(sum: u64, count: u64, max_param: u32) -> (u32, u64) {
    let bits = |p: u32| count * (u64::from(p) + 1) + (sum >> p);
    let mut p = sum
        .checked_div(count)
        .and_then(u64::checked_ilog2)
        .map_or(0, |log| log.saturating_sub(1).min(max_param));
    while p < max_param && bits(p + 1) < bits(p) {
        p += 1;
    }
    (p, bits(p))
}

/// An MSB-first bit writer into a byte vector, 64 bits at a time.
struct BitWriter {
    /// Whole bytes written so far.
    bytes: Vec<u8>,
    /// Bits not yet in `bytes`: the low `64 - free` bits (higher bits are stale, and shifted out
    /// before they are written).
    acc: u64,
    /// Room left in `acc`, 1 to 64 bits.
    free: u32,
}

impl BitWriter {
    fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            acc: 0,
            free: 64,
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.acc = 0;
        self.free = 64;
    }

    /// Appends the low `bits` bits of `value` (at most 32; higher bits must be zero).
    #[inline]
    fn put(&mut self, value: u64, bits: u32) {
        debug_assert!(bits <= 32 && value >> bits == 0);
        if bits < self.free {
            self.acc = (self.acc << bits) | value;
            self.free -= bits;
        } else {
            // `acc` fills up: its bits and the top `free` bits of `value` make a word (here
            // `free <= bits <= 32`, so neither shift reaches 64).
            let spill = bits - self.free;
            let word = (self.acc << self.free) | (value >> spill);
            self.bytes.extend_from_slice(&word.to_be_bytes());
            self.acc = value;
            self.free = 64 - spill;
        }
    }

    /// Appends `value` as a `bits`-bit two's complement number.
    #[inline]
    fn put_signed(&mut self, value: i32, bits: u32) {
        self.put(i64::from(value) as u64 & ((1 << bits) - 1), bits);
    }

    /// Appends every value of `values` Rice-coded with parameter `p` (at most 30): `value >> p`
    /// zeros, a one, then the low `p` bits.
    ///
    /// Without a branch per code: the pending bits are first moved out as whole bytes (fewer than
    /// 8 stay), then each code is placed under the bits left in a left-aligned 64-bit buffer,
    /// the buffer is stored whole at the end of the bytes, and the end moves on by the bytes it
    /// completed. The bytes are extended up front to the run's exact size plus room for the last
    /// store.
    fn put_rice_run(&mut self, values: &[u32], p: u32) {
        let pending = 64 - self.free;
        let mut acc = if pending == 0 {
            0
        } else {
            self.acc << (64 - pending)
        };
        let whole = (pending / 8) as usize;
        self.bytes.extend_from_slice(&acc.to_be_bytes()[..whole]);
        acc <<= 8 * whole;
        let mut count = pending % 8;
        let quotients: u64 = values.iter().map(|&u| u64::from(u >> p)).sum();
        let run_bits = quotients + values.len() as u64 * u64::from(p + 1);
        let mut at = self.bytes.len();
        self.bytes.resize(at + (run_bits / 8) as usize + 16, 0);
        let out = &mut self.bytes[..];
        // Places the low `len` bits (at most 56) of `code` and stores the buffer.
        let mut place = |acc: &mut u64, count: &mut u32, code: u64, len: u32| {
            *acc |= code << (64 - *count - len);
            *count += len;
            out[at..at + 8].copy_from_slice(&acc.to_be_bytes());
            let done = *count / 8;
            at += done as usize;
            *acc <<= 8 * done;
            *count %= 8;
        };
        let low = (1u64 << p) - 1;
        for &u in values {
            let quotient = u >> p;
            let code = (1 << p) | (u64::from(u) & low);
            if quotient + p < 56 {
                place(&mut acc, &mut count, code, quotient + 1 + p);
            } else {
                let mut zeros = quotient;
                while zeros > 0 {
                    let run = zeros.min(56);
                    place(&mut acc, &mut count, 0, run);
                    zeros -= run;
                }
                place(&mut acc, &mut count, code, p + 1);
            }
        }
        self.bytes.truncate(at);
        self.acc = if count == 0 { 0 } else { acc >> (64 - count) };
        self.free = 64 - count;
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        if self.free == 64 {
            self.bytes.extend_from_slice(bytes);
        } else {
            for &b in bytes {
                self.put(u64::from(b), 8);
            }
        }
    }

    /// Pads with zeros to a byte boundary and moves the pending whole bytes to `bytes`.
    fn align(&mut self) {
        let pending = 64 - self.free;
        if pending % 8 != 0 {
            self.put(0, 8 - pending % 8);
        }
        let pending = 64 - self.free;
        for k in (0..pending / 8).rev() {
            self.bytes.push((self.acc >> (8 * k)) as u8);
        }
        self.free = 64;
    }

    /// The bytes written up to the last [`BitWriter::align`].
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Bytes [`crc16`] takes a step.
const CRC16_STEP: usize = 16;

/// Tables of the CRC-16 of one byte followed by `k` zero bytes, for `k` in 0..[`CRC16_STEP`].
const CRC16_TABLES: [[u16; 256]; CRC16_STEP] = {
    let mut tables = [[0u16; 256]; CRC16_STEP];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000 != 0 {
                (r << 1) ^ 0x8005
            } else {
                r << 1
            };
            bit += 1;
        }
        tables[0][i] = r;
        i += 1;
    }
    let mut k = 1;
    while k < CRC16_STEP {
        let mut i = 0;
        while i < 256 {
            let previous = tables[k - 1][i];
            tables[k][i] = (previous << 8) ^ tables[0][(previous >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// FLAC's frame CRC-16: polynomial 0x8005, initial value 0; sixteen bytes a step (frames are
/// large), of which only the first two wait for the step before.
pub(super) fn crc16(bytes: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut chunks = bytes.chunks_exact(CRC16_STEP);
    let mut crc = 0u16;
    for c in &mut chunks {
        let [hi, lo] = crc.to_be_bytes();
        let mut next =
            t[CRC16_STEP - 1][usize::from(c[0] ^ hi)] ^ t[CRC16_STEP - 2][usize::from(c[1] ^ lo)];
        for (k, &b) in c.iter().enumerate().skip(2) {
            next ^= t[CRC16_STEP - 1 - k][usize::from(b)];
        }
        crc = next;
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ t[0][usize::from((crc >> 8) as u8 ^ b)]
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::decode::fixtures::{assert_same_audio, decode_all, grid_signal};
    use crate::encode::Encoder;
    use crate::encode::tests::{encode, flac_test};
    use lathe_model::stage_config::{Container, EncodeSpec};

    fn flac_spec(bit_depth: u32) -> EncodeSpec {
        EncodeSpec {
            container: Container::Flac,
            bit_depth,
        }
    }

    /// Integer samples of `signal` at `bits` (exact for grid-aligned input), interleaved.
    fn interleaved_codes(signal: &AudioBlock, bits: u32) -> Vec<i32> {
        let q = Quantiser::new(bits);
        (0..signal.frames())
            .flat_map(|n| signal.channels().map(move |c| q.quantise(c[n])))
            .collect()
    }

    /// Decodes `path` with the reference decoder (`flac -d`, MD5 checked) to interleaved integers.
    fn reference_decode(path: &Path, bits: u32) -> Vec<i32> {
        let raw = path.with_extension("raw");
        let output = Command::new("flac")
            .args(["-d", "-s", "-f", "--force-raw-format", "--endian=little"])
            .args(["--sign=signed", "-o"])
            .arg(&raw)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "flac -d {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let bytes = std::fs::read(&raw).unwrap();
        let width = bits as usize / 8;
        bytes
            .chunks_exact(width)
            .map(|b| {
                let mut le = [0u8; 4];
                le[4 - width..].copy_from_slice(b);
                i32::from_le_bytes(le) >> (32 - bits)
            })
            .collect()
    }

    /// A test signal: `kind` on every channel (channel `c` shifted a little), `frames` long,
    /// on the `bits` grid.
    fn test_signal(kind: &str, channels: usize, frames: usize, bits: u32) -> AudioBlock {
        let full = f64::from(1u32 << (bits - 1));
        let noise = crate::testkit::noise(channels, frames, 48_000, 1.0, 11);
        let data = (0..channels)
            .map(|c| {
                (0..frames)
                    .map(|n| {
                        let x = match kind {
                            "silence" => 0.0,
                            "dc" => 0.25 - 0.1 * c as f64,
                            "full-scale noise" => f64::from(noise.channel(c)[n]).clamp(-1.0, 1.0),
                            "sine" => {
                                let t = n as f64 / 48_000.0;
                                0.7 * (std::f64::consts::TAU * 997.0 * t + c as f64).sin()
                            }
                            "quiet noise" => 1e-4 * f64::from(noise.channel(c)[n]),
                            _ => unreachable!("{kind}"),
                        };
                        ((x * full).round().clamp(-full, full - 1.0) / full) as f32
                    })
                    .collect()
            })
            .collect();
        AudioBlock::from_channels(data, 48_000)
    }

    /// Everything the encoder writes decodes bit for bit with the reference decoder (which also
    /// checks the MD5 and every CRC), and with Symphonia: odd lengths (last frames of 1 to 4095
    /// frames), 16 and 24 bits, mono, stereo and 6 channels, silence, DC, full-scale noise, a
    /// sine and quiet noise, written in blocks of various sizes.
    #[test]
    fn reference_decoder_reads_back_every_sample_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut cases = 0;
        for (frames, write_block) in [(1, 1), (5, 3), (63, 64), (4096, 4096), (9000, 1000)] {
            for bits in [16, 24] {
                for channels in [1, 2, 6] {
                    for kind in ["silence", "dc", "full-scale noise", "sine", "quiet noise"] {
                        let signal = test_signal(kind, channels, frames, bits);
                        let path = dir
                            .path()
                            .join(format!("{kind}-{frames}-{bits}-{channels}.flac"));
                        encode(&path, flac_spec(bits), &signal, write_block);
                        assert_eq!(
                            reference_decode(&path, bits),
                            interleaved_codes(&signal, bits),
                            "{}",
                            path.display()
                        );
                        assert_same_audio(&decode_all(&path, 4096).unwrap(), &signal, 0.0);
                        cases += 1;
                    }
                }
            }
        }
        // Longer streams, stereo, every last-frame length class, each signal.
        for frames in [4096 * 3 + 1, 4096 * 2 + 255, 4096 * 2 + 257, 4096 * 5 - 1] {
            for kind in ["sine", "full-scale noise", "quiet noise"] {
                let signal = test_signal(kind, 2, frames, 24);
                let path = dir.path().join(format!("long-{kind}-{frames}.flac"));
                encode(&path, flac_spec(24), &signal, 4000);
                assert_eq!(reference_decode(&path, 24), interleaved_codes(&signal, 24));
                cases += 1;
            }
        }
        assert_eq!(cases, 162);
    }

    /// The same samples give the same bytes however the caller slices them into blocks.
    #[test]
    fn bytes_do_not_depend_on_how_the_audio_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let signal = test_signal("sine", 2, 20_000, 24);
        let mut files = Vec::new();
        for block in [1, 100, 4096, 20_000] {
            let path = dir.path().join(format!("b{block}.flac"));
            encode(&path, flac_spec(24), &signal, block);
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.iter().all(|f| f == &files[0]));
    }

    /// Stereo decorrelation: two equal channels cost barely more than one (the side channel is
    /// silent), and an inverted copy the same (mid is silent... or side is twice the channel; any
    /// pair with a constant member).
    #[test]
    fn equal_channels_cost_about_one_channel() {
        let dir = tempfile::tempdir().unwrap();
        let mono = test_signal("sine", 1, 48_000, 24);
        let noisy: Vec<f32> = mono
            .channel(0)
            .iter()
            .zip(test_signal("quiet noise", 1, 48_000, 24).channel(0))
            .map(|(a, b)| a + b)
            .collect();
        let size = |name: &str, channels: Vec<Vec<f32>>| {
            let path = dir.path().join(name);
            encode(
                &path,
                flac_spec(24),
                &AudioBlock::from_channels(channels, 48_000),
                4096,
            );
            std::fs::metadata(&path).unwrap().len()
        };
        let one = size("mono.flac", vec![noisy.clone()]);
        let two = size("stereo.flac", vec![noisy.clone(), noisy.clone()]);
        let inverted = size(
            "inverted.flac",
            vec![noisy.clone(), noisy.iter().map(|x| -x).collect()],
        );
        assert!(two < one + one / 50, "mono {one} bytes, stereo {two}");
        assert!(
            inverted < one + one / 50,
            "mono {one} bytes, inverted {inverted}"
        );
    }

    /// 16-bit audio in a 24-bit file costs about what the 16-bit file does: the 8 wasted bits are
    /// shifted out.
    #[test]
    fn wasted_bits_are_not_coded() {
        let dir = tempfile::tempdir().unwrap();
        let signal = test_signal("full-scale noise", 2, 30_000, 16);
        let size = |bits: u32| {
            let path = dir.path().join(format!("w{bits}.flac"));
            encode(&path, flac_spec(bits), &signal, 4096);
            assert_eq!(
                reference_decode(&path, bits),
                interleaved_codes(&signal, bits)
            );
            std::fs::metadata(&path).unwrap().len()
        };
        let (sixteen, twenty_four) = (size(16), size(24));
        assert!(
            twenty_four < sixteen + sixteen / 100,
            "16-bit {sixteen} bytes, 24-bit {twenty_four}"
        );
    }

    /// `seconds` of the demo album's pop track (stereo, 44.1 kHz), TPDF-dithered to 24 bits.
    fn pop_music(seconds: f64) -> AudioBlock {
        use crate::master::dither::Quantiser as Dither;
        use lathe_model::stage_config::DitherMode;
        let (_, recipe) = lathe_synth::demo_album(44_100).remove(1);
        let channels = recipe.channel_count;
        let mut synth = lathe_synth::TrackSynth::new(&lathe_synth::TrackRecipe {
            duration_s: seconds,
            ..recipe
        });
        let mut block = AudioBlock::new(channels, 4096, 44_100);
        let mut music = AudioBlock::new(channels, (seconds * 44_100.0) as usize + 4096, 44_100);
        let mut dither = Dither::new(DitherMode::Tpdf, 24, channels, 44_100, 5).unwrap();
        while crate::testkit::read_synth(&mut synth, &mut block) > 0 {
            crate::stage::Stage::process(&mut dither, &mut block);
            music.append(&block);
        }
        music
    }

    /// Writes `signal` as 24-bit WAV and encodes it with `flac -5`; returns that file's size.
    fn flac_5_size(dir: &Path, name: &str, signal: &AudioBlock) -> u64 {
        let wav = dir.join(format!("{name}.wav"));
        let wav_spec = EncodeSpec {
            container: Container::Wav,
            bit_depth: 24,
        };
        encode(&wav, wav_spec, signal, 4096);
        let reference = dir.join(format!("{name}-5.flac"));
        let status = Command::new("flac")
            .args(["-s", "-f", "-5", "-o"])
            .arg(&reference)
            .arg(&wav)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::metadata(&reference).unwrap().len()
    }

    /// Compression close to the reference encoder's default (`flac -5`): on a pure sine (where
    /// LPC matters most: the best fixed predictor leaves 13 bits a sample) and on 20 s of the
    /// demo album's music, within 2 %.
    #[test]
    fn compresses_within_2_percent_of_flac_5() {
        let dir = tempfile::tempdir().unwrap();
        let music = pop_music(20.0);
        for (name, signal) in [
            ("sine", test_signal("sine", 1, 96_000, 24)),
            ("music", music),
        ] {
            let path = dir.path().join(format!("{name}.flac"));
            encode(&path, flac_spec(24), &signal, 4096);
            let ours = std::fs::metadata(&path).unwrap().len();
            let reference = flac_5_size(dir.path(), name, &signal);
            let ratio = ours as f64 / reference as f64;
            eprintln!("{name}: {ours} bytes, flac -5 {reference} bytes, ratio {ratio:.4}");
            assert!(ratio < 1.02, "{name}: {ours} bytes, flac -5 {reference}");
        }
    }

    /// The `f64` LPC residual equals the integer definition, at the extremes of its range too
    /// (where residuals overflow 32 bits and the model is refused).
    #[test]
    fn lpc_residual_in_f64_equals_the_integer_definition() {
        let mut state = 1u64;
        let mut next = |range: i64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 20) as i64).rem_euclid(2 * range) - range
        };
        let mut refused = 0;
        for order in 1..=LPC_ORDER_LIMIT {
            for (bits, precision, shift) in [
                (25, 15, 0),
                (25, 15, 15),
                (24, 15, 13),
                (16, 12, 9),
                (25, 2, 3),
            ] {
                let full = 1i64 << (bits - 1);
                let x: Vec<i32> = (0..300)
                    .map(|k| match k % 7 {
                        0 => full - 1,
                        1 => -full,
                        _ => next(full),
                    } as i32)
                    .collect();
                let q_full = 1i64 << (precision - 1);
                let mut coefficients = [0i32; LPC_ORDER_LIMIT];
                for c in &mut coefficients[..order] {
                    *c = match next(5) {
                        0 => q_full - 1,
                        1 => -q_full,
                        _ => next(q_full),
                    } as i32;
                }
                let model = LpcModel {
                    order,
                    coefficients,
                    precision,
                    shift,
                };
                let x_f64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let mut folded = Vec::new();
                let fits = fold_lpc(&x_f64, &model, &mut folded);
                let mut all_fit = true;
                for t in order..x.len() {
                    let p: i64 = (0..order)
                        .map(|j| i64::from(coefficients[j]) * i64::from(x[t - 1 - j]))
                        .sum();
                    match i32::try_from(i64::from(x[t]) - (p >> shift)) {
                        Ok(e) => assert_eq!(folded[t], fold(e), "order {order}, frame {t}"),
                        Err(_) => all_fit = false,
                    }
                }
                assert_eq!(fits, all_fit, "order {order}, {bits} bits, shift {shift}");
                refused += usize::from(!fits);
            }
        }
        assert!(refused > 0, "no case reached beyond 32 bits");
    }

    #[test]
    fn frame_numbers_use_the_utf8_like_coding() {
        let coded = |v: u64| {
            let (bytes, len) = utf8_coded(v);
            bytes[..len].to_vec()
        };
        assert_eq!(coded(0), [0x00]);
        assert_eq!(coded(0x7F), [0x7F]);
        assert_eq!(coded(0x80), [0xC2, 0x80]);
        assert_eq!(coded(0x7FF), [0xDF, 0xBF]);
        assert_eq!(coded(0x800), [0xE0, 0xA0, 0x80]);
        assert_eq!(coded(0xFFFF), [0xEF, 0xBF, 0xBF]);
        assert_eq!(coded(0x10000), [0xF0, 0x90, 0x80, 0x80]);
        assert_eq!(coded(0x7FFF_FFFF), [0xFD, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF]);
        assert_eq!(
            coded((1 << 36) - 1),
            [0xFE, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF]
        );
    }

    #[test]
    fn crc16_sixteen_bytes_a_step_matches_the_bytewise_definition() {
        let bytewise = |bytes: &[u8]| {
            bytes.iter().fold(0u16, |crc, &b| {
                (crc << 8) ^ CRC16_TABLES[0][usize::from((crc >> 8) as u8 ^ b)]
            })
        };
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 999, 1000] {
            assert_eq!(crc16(&data[..len]), bytewise(&data[..len]), "{len} bytes");
        }
    }

    #[test]
    fn log2_estimate_is_within_1e_5() {
        for x in [
            1e-300, 1e-10, 0.3, 1.0, 1.5, 2.0, 3.0, 1e6, 12345.678, 1e300,
        ] {
            let error = (log2_estimate(x) - x.log2()).abs();
            assert!(error < 1e-5, "{x}: {error}");
        }
        assert_eq!(log2_estimate(0.0), 0.0);
        assert!((log2_estimate(4e-320) - 4e-320f64.log2()).abs() < 1e-5);
    }

    #[test]
    fn coefficients_quantise_with_error_feedback_into_their_precision() {
        let lp = [1.9, -0.95, 0.0401, -0.0002];
        let model = quantise_coefficients(&lp, 15).unwrap();
        // The largest coefficient (1.9) uses the 15-bit range: shift 13.
        assert_eq!(model.shift, 13);
        let scaled: Vec<f64> = lp.iter().map(|c| c * 8192.0).collect();
        let q = &model.coefficients[..4];
        assert_eq!(q[0], 15565); // 1.9 * 8192 = 15564.8
        for (k, &c) in q.iter().enumerate() {
            assert!(
                (f64::from(c) - scaled[k]).abs() <= 1.0,
                "{k}: {c} vs {}",
                scaled[k]
            );
        }
        // Error feedback: the running sum stays within half a step.
        let (mut sum_q, mut sum_exact) = (0.0, 0.0);
        for k in 0..4 {
            sum_q += f64::from(q[k]);
            sum_exact += scaled[k];
            assert!((sum_q - sum_exact).abs() <= 0.5, "{k}");
        }
        assert!(quantise_coefficients(&[0.0, 0.0], 15).is_none());
        assert_eq!(quantise_coefficients(&[0.001], 12).unwrap().shift, 15);
    }

    #[test]
    fn flac_passes_flac_t_with_md5_for_odd_lengths_rates_and_layouts() {
        let dir = tempfile::tempdir().unwrap();
        for (frames, block, bits, channels, rate) in [
            (44_100, 1000, 16, 2, 44_100),
            (4096 * 3, 4096, 24, 2, 48_000),
            (10, 3, 16, 1, 8_000),
            (100_003, 65_536, 24, 6, 96_000),
            (30_000, 1000, 24, 2, 176_400),
            (30_000, 4096, 16, 2, 192_000),
            (20_000, 4096, 24, 2, 352_800),
            (50_000, 7_777, 24, 8, 384_000),
        ] {
            let path = dir.path().join(format!("t-{frames}-{block}-{bits}.flac"));
            let signal = grid_signal(channels, frames, rate, bits);
            encode(
                &path,
                EncodeSpec {
                    container: Container::Flac,
                    bit_depth: bits,
                },
                &signal,
                block,
            );
            let report = flac_test(&path);
            assert!(!report.contains("WARNING"), "{report}");
            // STREAMINFO: block sizes, frame sizes (24 bits each), total samples (36 bits).
            let bytes = std::fs::read(&path).unwrap();
            let info = &bytes[8..8 + STREAMINFO_LEN];
            let be24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
            assert_eq!(u16::from_be_bytes([info[0], info[1]]), 4096);
            assert_eq!(u16::from_be_bytes([info[2], info[3]]), 4096);
            let (min_frame, max_frame) = (be24(&info[4..7]), be24(&info[7..10]));
            assert!(
                0 < min_frame && min_frame <= max_frame,
                "{min_frame} {max_frame}"
            );
            let total = u64::from_be_bytes([
                0,
                0,
                0,
                info[13] & 0x0f,
                info[14],
                info[15],
                info[16],
                info[17],
            ]);
            assert_eq!(total, frames as u64);
            assert!(report.contains("ok"), "{report}");
            assert_same_audio(&decode_all(&path, 4096).unwrap(), &signal, 0.0);
        }
    }

    #[test]
    fn flac_frames_reach_the_file_while_encoding() {
        // Streaming: frames are written as they are made, so the file grows during encoding and
        // nothing but the current frame is held in memory.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.flac");
        let spec = EncodeSpec {
            container: Container::Flac,
            bit_depth: 24,
        };
        let mut encoder = Encoder::create(&path, &spec, 2, 48_000).unwrap();
        let block = crate::testkit::noise(2, 4800, 48_000, 0.5, 9);
        let mut sizes = Vec::new();
        for second in 0..30 {
            for _ in 0..10 {
                encoder.write(&block).unwrap();
            }
            if second % 10 == 9 {
                sizes.push(std::fs::metadata(&path).unwrap().len());
            }
        }
        encoder.finish().unwrap();
        let final_size = std::fs::metadata(&path).unwrap().len();
        // Noise at 24 bits barely compresses: ~280 kB per second.
        assert!(sizes[0] > 2_000_000, "{sizes:?}");
        assert!(
            sizes[0] < sizes[1] && sizes[1] < sizes[2] && sizes[2] <= final_size,
            "{sizes:?}"
        );
        assert!(
            final_size - sizes[2] < 200_000,
            "{sizes:?} then {final_size}"
        );
        flac_test(&path);
    }

    #[test]
    fn flac_checksums_match_their_catalogue_check_values() {
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc16(b"123456789"), 0xFEE8);
    }

    /// Sizes of the frames of a FLAC file written by [`Encoder`] (`STREAMINFO` only), found the
    /// way a demuxer finds them: a frame runs up to the next frame header (sync code, valid CRC-8,
    /// the next frame number) at which its own CRC-16 checks, or to the end of the file.
    fn flac_frame_sizes(bytes: &[u8]) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut start = 8 + STREAMINFO_LEN;
        while start < bytes.len() {
            let number = sizes.len() as u64;
            assert!(is_frame_header(&bytes[start..], number), "frame {number}");
            let end = (start + 2..bytes.len())
                .find(|&at| {
                    is_frame_header(&bytes[at..], number + 1) && crc16(&bytes[start..at]) == 0
                })
                .unwrap_or(bytes.len());
            assert_eq!(
                crc16(&bytes[start..end]),
                0,
                "frame {number} fails its CRC-16"
            );
            sizes.push(end - start);
            start = end;
        }
        sizes
    }

    /// Whether `b` starts with the header of fixed-blocksize frame `number`.
    fn is_frame_header(b: &[u8], number: u64) -> bool {
        if b.len() < 6 || b[0] != 0xFF || b[1] != 0xF8 {
            return false;
        }
        let len = match b[4].leading_ones() {
            0 => 1,
            n @ 2..=7 => n as usize,
            _ => return false,
        };
        if b.len() < 4 + len + 3 {
            return false;
        }
        let first = u64::from(b[4] & if len == 1 { 0x7F } else { 0x7F >> len });
        let coded = b[5..4 + len]
            .iter()
            .fold(first, |n, &c| (n << 6) | u64::from(c & 0x3F));
        let block_size_len = match b[2] >> 4 {
            0b0110 => 1,
            0b0111 => 2,
            _ => 0,
        };
        let rate_len = match b[2] & 0x0F {
            0b1100 => 1,
            0b1101 | 0b1110 => 2,
            _ => 0,
        };
        let crc_at = 4 + len + block_size_len + rate_len;
        coded == number && crc_at < b.len() && crc8(&b[..crc_at]) == b[crc_at]
    }

    /// Checks a FLAC file frame by frame against the size of a verbatim frame of `block` frames
    /// (the 16-byte maximum header, a verbatim subframe per channel, a side channel one bit wider,
    /// the CRC-16), against `STREAMINFO`'s frame sizes, and with `flac -t`.
    fn assert_frames_no_larger_than_verbatim(path: &Path, channels: usize, bits: u32) {
        let bytes = std::fs::read(path).unwrap();
        let sizes = flac_frame_sizes(&bytes);
        let side = usize::from(channels == 2);
        let subframe_bits = |bits: usize| 8 + BLOCK_FRAMES * bits;
        let body_bits = channels * subframe_bits(bits as usize) + side * BLOCK_FRAMES;
        let verbatim = 16 + body_bits.div_ceil(8) + 2;
        for (number, &size) in sizes.iter().enumerate() {
            assert!(
                size <= verbatim,
                "{}: frame {number} is {size} bytes, a verbatim frame {verbatim}",
                path.display()
            );
        }
        let info = &bytes[8..8 + STREAMINFO_LEN];
        let be24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        let (min_frame, max_frame) = (be24(&info[4..7]), be24(&info[7..10]));
        assert_eq!(min_frame, sizes.iter().copied().min().unwrap());
        assert_eq!(max_frame, sizes.iter().copied().max().unwrap());
        flac_test(path);
    }

    /// The master from the bug report, rebuilt: the demo album's mono "old radio" track (band-
    /// limited and noisy), raised 6 dB as a master would be, TPDF-dithered to 24 bits. Its residuals
    /// often exceed 2^15, where flacenc's 4-bit Rice parameters top out: flacenc alone wrote it as
    /// 174 MB (raw PCM is 3.2 MB) with frames of up to 100 MB, past the 16 MiB at which Symphonia's
    /// demuxer gives up ("synchronization lost", frames 434176 to 438271 missing), and a
    /// `STREAMINFO` maximum frame size wrapped at 24 bits.
    #[test]
    fn loud_24_bit_master_stays_smaller_than_verbatim_and_decodes() {
        use crate::master::dither::Quantiser as Dither;
        use crate::stage::Stage;
        let (name, recipe) = lathe_synth::demo_album(44_100).remove(4);
        use lathe_model::stage_config::DitherMode;
        assert_eq!((name.as_str(), recipe.channel_count), ("05-old-radio", 1));
        let mut synth = lathe_synth::TrackSynth::new(&recipe);
        let mut dither = Dither::new(DitherMode::Tpdf, 24, 1, 44_100, 7).unwrap();
        let mut block = AudioBlock::new(1, 4096, 44_100);
        let mut master = Vec::new();
        while crate::testkit::read_synth(&mut synth, &mut block) > 0 {
            block.channel_mut(0).iter_mut().for_each(|x| *x *= 2.0);
            dither.process(&mut block);
            master.extend_from_slice(block.channel(0));
        }
        let master = AudioBlock::from_channels(vec![master], 44_100);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old-radio.flac");
        let spec = EncodeSpec {
            container: Container::Flac,
            bit_depth: 24,
        };
        encode(&path, spec, &master, 4096);
        assert_frames_no_larger_than_verbatim(&path, 1, 24);
        // flac -5 makes 2.48 MB of it.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 2_550_000, "{size} bytes");
        assert_same_audio(&decode_all(&path, 4096).unwrap(), &master, 0.0);
    }

    /// Signals at the edges of what 24-bit FLAC holds: full-scale white noise (incompressible),
    /// a full-scale square wave at Nyquist (order-4 fixed residuals near 2^27), full-scale steps,
    /// and stereo with the right channel inverted (side channel at 25 bits). Every frame stays
    /// within a verbatim one and everything round-trips.
    #[test]
    fn extreme_24_bit_signals_round_trip_within_verbatim_size() {
        let full = 1.0 - 1.0 / 8_388_608.0;
        let noise = crate::testkit::noise(2, 3 * 4096 + 100, 48_000, 1.0, 3);
        let quantise = |x: f32| (f64::from(x.clamp(-1.0, 1.0)) * 8_388_607.0).round() / 8_388_608.0;
        let sample = |name: &str, ch: usize, n: usize| match name {
            "noise" => quantise(noise.channel(ch)[n]),
            "nyquist" if n % 2 == 0 => full,
            "nyquist" => -1.0,
            "steps" => [0.0, full, -1.0, 0.25][(n / 1000) % 4],
            _ if ch == 0 => quantise(noise.channel(0)[n]),
            _ => -quantise(noise.channel(0)[n]),
        };
        let dir = tempfile::tempdir().unwrap();
        for name in ["noise", "nyquist", "steps", "inverted"] {
            for channels in [1, 2] {
                let data = (0..channels)
                    .map(|ch| {
                        (0..noise.frames())
                            .map(|n| sample(name, ch, n) as f32)
                            .collect()
                    })
                    .collect();
                let audio = AudioBlock::from_channels(data, 48_000);
                let path = dir.path().join(format!("{name}-{channels}.flac"));
                let spec = EncodeSpec {
                    container: Container::Flac,
                    bit_depth: 24,
                };
                encode(&path, spec, &audio, 1000);
                assert_frames_no_larger_than_verbatim(&path, channels, 24);
                assert_same_audio(&decode_all(&path, 4096).unwrap(), &audio, 0.0);
            }
        }
    }

    #[test]
    fn rice_coder_picks_5_bit_parameters_for_large_residuals() {
        let mut coder = RiceCoder::default();
        // Residuals around 2^20: parameter about 19, beyond the 4-bit coding's 14.
        let folded: Vec<u32> = (0..4096u32)
            .map(|n| (1 << 20) + n.wrapping_mul(2_654_435_761) % (1 << 19))
            .collect();
        let plan = coder.plan(&folded, 0);
        assert!(plan.rice2, "{plan:?}");
        assert!(
            coder.params.iter().all(|&p| (18..=20).contains(&p)),
            "{:?}",
            coder.params
        );
        // About 22 bits a sample, where parameter 14 would take over 80.
        assert!(plan.bits < 4096 * 23, "{plan:?}");
        // Small residuals keep 4-bit parameters.
        let small: Vec<u32> = folded.iter().map(|u| u >> 12).collect();
        assert!(!coder.plan(&small, 2).rice2);
        // The plan bounds what is written from above, by at most a bit a sample.
        for (values, warm_up) in [(&folded, 3), (&small, 0)] {
            let mut out = BitWriter::with_capacity(0);
            let plan = coder.plan(values, warm_up);
            coder.write(&mut out, values, warm_up, plan);
            out.align();
            let written = out.bytes().len() as u64 * 8;
            assert!(written <= plan.bits + 7, "{written} bits written, {plan:?}");
            assert!(
                plan.bits <= written + 4096,
                "{written} bits written, {plan:?}"
            );
        }
    }

    #[test]
    fn rice_parameter_matches_a_full_search() {
        for (sum, count) in [
            (0, 0),
            (0, 10),
            (5, 64),
            (1 << 20, 64),
            (u64::from(u32::MAX) * 16, 16),
        ] {
            for max in [MAX_RICE_PARAM, MAX_RICE2_PARAM] {
                let full = (0..=max)
                    .map(|p| count * (u64::from(p) + 1) + (sum >> p))
                    .min()
                    .unwrap();
                assert_eq!(
                    rice_parameter(sum, count, max).1,
                    full,
                    "{sum} {count} {max}"
                );
            }
        }
    }

    #[test]
    fn bit_writer_packs_msb_first() {
        let mut out = BitWriter::with_capacity(0);
        out.put(0b101, 3);
        out.put_signed(-1, 5);
        out.put_rice_run(&[5], 1); // quotient 2: "00", stop bit, remainder 1
        out.put_rice_run(&[3 << 20], 2); // a unary run longer than one buffer
        out.align();
        let mut expected = vec![0b1011_1111, 0b0011_0000];
        expected.extend(std::iter::repeat_n(0, (3 << 18) / 8 - 1));
        expected.push(0b0000_1000);
        assert_eq!(out.bytes()[..2], expected[..2]);
        assert_eq!(out.bytes().len(), expected.len());
        assert_eq!(out.bytes(), &expected[..]);
    }

    /// Speed and size against the reference encoder, on `LATHE_FLAC_SOURCE` (any file the decoder
    /// reads, quantised to 24 bits) or on 60 s of synthetic music:
    /// `LATHE_FLAC_SOURCE=x.mp3 cargo test -p lathe-engine --release --lib flac_speed -- --ignored --nocapture`
    /// The lane-wise fixed residual sums equal the definition, for any length and for the
    /// largest residuals a 25-bit side signal can have.
    #[test]
    fn fixed_residual_sums_match_the_definition() {
        let direct = |x: &[i32]| {
            let mut sums = [0u64; 5];
            for t in 4..x.len() {
                let r = [
                    i64::from(x[t]),
                    i64::from(x[t]) - i64::from(x[t - 1]),
                    i64::from(x[t]) - 2 * i64::from(x[t - 1]) + i64::from(x[t - 2]),
                    i64::from(x[t]) - 3 * i64::from(x[t - 1]) + 3 * i64::from(x[t - 2])
                        - i64::from(x[t - 3]),
                    i64::from(x[t]) - 4 * i64::from(x[t - 1]) + 6 * i64::from(x[t - 2])
                        - 4 * i64::from(x[t - 3])
                        + i64::from(x[t - 4]),
                ];
                for (sum, r) in sums.iter_mut().zip(r) {
                    *sum += r.unsigned_abs();
                }
            }
            sums
        };
        let full = 1 << 24;
        for n in [5, 6, 12, 13, 131, 132, 133, 1000, 4095, 4096] {
            let alternating: Vec<i32> = (0..n)
                .map(|t| if t % 2 == 0 { full - 1 } else { -full })
                .collect();
            let noise: Vec<i32> = (0..n)
                .map(|t: i32| (t.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 7) % full)
                .collect();
            for x in [alternating, noise] {
                assert_eq!(fixed_residual_sums(&x), direct(&x), "{n} frames");
            }
        }
    }

    /// Rice runs after any bit offset, with any parameter, long unary runs among them, give the
    /// bits of the definition (written one bit at a time).
    #[test]
    fn rice_runs_match_the_bitwise_definition() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for p in [0, 1, 5, 13, 14, 20, 30] {
            for offset in 0..9 {
                let values: Vec<u32> = (0..300)
                    .map(|i| {
                        let r = random();
                        match i % 50 {
                            // A quotient past one buffer.
                            7 => ((r as u32) & 0xFF) | (70 << p),
                            _ => (r >> (64 - p - 3)) as u32,
                        }
                    })
                    .collect();
                let mut out = BitWriter::with_capacity(0);
                out.put(0b1, 1);
                out.put(0, offset);
                out.put_rice_run(&values, p);
                out.put(0b101, 3);
                out.align();
                let mut bits = vec![true];
                bits.extend(std::iter::repeat_n(false, offset as usize));
                for &u in &values {
                    bits.extend(std::iter::repeat_n(false, (u >> p) as usize));
                    bits.push(true);
                    bits.extend((0..p).rev().map(|b| u >> b & 1 == 1));
                }
                bits.extend([true, false, true]);
                bits.resize(bits.len().div_ceil(8) * 8, false);
                let expected: Vec<u8> = bits
                    .chunks(8)
                    .map(|b| b.iter().fold(0, |byte, &bit| byte << 1 | u8::from(bit)))
                    .collect();
                assert_eq!(out.bytes(), &expected[..], "p {p}, offset {offset}");
            }
        }
    }

    #[test]
    #[ignore = "benchmark; prints x-realtime and sizes"]
    fn flac_speed_and_size_against_flac_5() {
        let dir = tempfile::tempdir().unwrap();
        let signal = match std::env::var_os("LATHE_FLAC_SOURCE") {
            Some(path) => decode_all(Path::new(&path), 4096).unwrap(),
            None => pop_music(60.0),
        };
        let seconds = signal.frames() as f64 / f64::from(signal.sample_rate_hz());
        let ours = dir.path().join("ours.flac");
        // CPU time of this thread (Linux), which other work on a shared machine does not inflate.
        let cpu_seconds =
            || lathe_synth::cpu_time::thread_cpu_time().map_or(0.0, |time| time.as_secs_f64());
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = cpu_seconds();
            encode(&ours, flac_spec(24), &signal, 4096);
            best = best.min(cpu_seconds() - start);
        }
        let wav = dir.path().join("ref.wav");
        let wav_spec = EncodeSpec {
            container: Container::Wav,
            bit_depth: 24,
        };
        encode(&wav, wav_spec, &signal, 4096);
        let reference = dir.path().join("ref.flac");
        let start = std::time::Instant::now();
        let status = Command::new("flac")
            .args(["-s", "-f", "-5", "-o"])
            .arg(&reference)
            .arg(&wav)
            .status()
            .unwrap();
        let ref_seconds = start.elapsed().as_secs_f64();
        assert!(status.success());
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        println!(
            "FLAC 24-bit, {} ch, {} Hz, {seconds:.0} s: ours {:.0}x realtime (CPU), {} bytes; \
             flac -5 {:.0}x realtime (wall, with file I/O), {} bytes; size ratio {:.4}",
            signal.channel_count(),
            signal.sample_rate_hz(),
            seconds / best,
            size(&ours),
            seconds / ref_seconds,
            size(&reference),
            size(&ours) as f64 / size(&reference) as f64
        );
        flac_test(&ours);
    }

    /// Writes `signal` (in blocks of 1000 frames) with the frame check on; returns what the
    /// encoder vouches for.
    fn write_checked(path: &Path, signal: &AudioBlock, bits: u32) -> crate::encode::WrittenAudio {
        let mut encoder =
            Encoder::create(path, &flac_spec(bits), signal.channel_count(), 48_000).unwrap();
        encoder.check_frames().unwrap();
        let mut block = AudioBlock::new(signal.channel_count(), 1000, 48_000);
        let mut start = 0;
        while start < signal.frames() {
            let n = 1000.min(signal.frames() - start);
            block.set_frames(n);
            for c in 0..signal.channel_count() {
                block
                    .channel_mut(c)
                    .copy_from_slice(&signal.channel(c)[start..start + n]);
            }
            encoder.write(&block).unwrap();
            start += n;
        }
        encoder.finish_written().unwrap()
    }

    fn encode_reason(result: Result<()>) -> String {
        match result {
            Err(Error::Encode { reason, .. }) => reason,
            other => panic!("expected an encode error, got {other:?}"),
        }
    }

    /// A checked stream vouches for the file as written and after tagging (which moves the
    /// frames), and the file then decodes (Symphonia) to exactly the samples.
    #[test]
    fn checked_frames_vouch_for_the_file_before_and_after_tagging() {
        let dir = tempfile::tempdir().unwrap();
        // The last: 1.2 MB of frames, past one batch of the frame digest.
        for (bits, channels, frames) in [
            (24, 2, 10_000),
            (16, 1, 4_096),
            (24, 6, 5_000),
            (24, 2, 200_000),
        ] {
            let path = dir
                .path()
                .join(format!("checked-{bits}-{channels}-{frames}.flac"));
            let signal = test_signal("full-scale noise", channels, frames, bits);
            let written = write_checked(&path, &signal, bits);
            assert!(written.is_checked());
            written.check_file(&path).unwrap();
            let tags = lathe_model::tags::TrackTags {
                title: Some("Checked".to_owned()),
                artist: Some("lathe".to_owned()),
                ..Default::default()
            };
            crate::tags::write_tags(&path, &tags).unwrap();
            written.check_file(&path).unwrap();
            assert_same_audio(&decode_all(&path, 4096).unwrap(), &signal, 0.0);
        }
    }

    /// One changed byte anywhere in the frames or in STREAMINFO, a lost byte at the end, or a
    /// sample that was not on the integer grid fails the file check.
    #[test]
    fn a_changed_frame_byte_or_an_off_grid_sample_fails_the_file_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checked.flac");
        let signal = test_signal("sine", 2, 20_000, 24);
        let written = write_checked(&path, &signal, 24);
        written.check_file(&path).unwrap();
        let original = std::fs::read(&path).unwrap();
        let frames_start = 8 + STREAMINFO_LEN;
        for (position, expected) in [
            (frames_start + 3, "audio frames"),
            (original.len() / 2, "audio frames"),
            (original.len() - 1, "audio frames"),
            (8 + 20, "STREAMINFO"),
        ] {
            let mut changed = original.clone();
            changed[position] ^= 0x10;
            std::fs::write(&path, &changed).unwrap();
            let reason = encode_reason(written.check_file(&path));
            assert!(reason.contains(expected), "byte {position}: {reason}");
        }
        std::fs::write(&path, &original[..original.len() - 1]).unwrap();
        let reason = encode_reason(written.check_file(&path));
        assert!(reason.contains("audio frames"), "{reason}");

        let mut off_grid = signal.clone();
        // 0.3 is 2516582.5 steps of 2^-23 as an f32: between two codes.
        off_grid.channel_mut(1)[12_345] = 0.3;
        let written = write_checked(&path, &off_grid, 24);
        let reason = encode_reason(written.check_file(&path));
        assert!(
            reason.starts_with("1 samples are not on the 24-bit grid"),
            "{reason}"
        );
    }

    /// The frame check accepts every kind of subframe the coder makes (constant, verbatim, fixed,
    /// LPC, with wasted bits, every channel assignment, short last frames), and the files then
    /// decode (Symphonia) to exactly the samples.
    #[test]
    fn frame_check_accepts_every_subframe_kind_the_coder_makes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kinds.flac");
        for kind in ["silence", "dc", "full-scale noise", "sine", "quiet noise"] {
            for (bits, channels) in [(16, 1), (16, 2), (24, 2), (24, 3)] {
                let mut signal = test_signal(kind, channels, 9_000, bits);
                // 16-bit audio in the 24-bit stream: eight wasted bits.
                if bits == 24 && kind == "sine" {
                    signal = test_signal(kind, channels, 9_000, 16);
                }
                let written = write_checked(&path, &signal, bits);
                written.check_file(&path).unwrap();
                assert_same_audio(&decode_all(&path, 4096).unwrap(), &signal, 0.0);
            }
        }
    }

    /// The `STREAMINFO` of a 48 kHz stereo 24-bit stream, for checking single frames.
    fn stereo_24_bit_48k_stream_info() -> [u8; STREAMINFO_LEN] {
        stream_info_bytes(&StreamInfoFields {
            block_frames: BLOCK_FRAMES as u16,
            min_frame_bytes: 0,
            max_frame_bytes: 0,
            sample_rate_hz: 48_000,
            channel_count: 2,
            bit_depth: 24,
            total_frames: 0,
            md5: [0; 16],
        })
    }

    /// Every single-bit change of a frame outside its CRC-16 fails the frame check.
    #[test]
    fn frame_check_rejects_every_flipped_bit() {
        let signal = test_signal("sine", 2, 300, 24);
        let q = Quantiser::new(24);
        // Planar, channel `c` at `c * BLOCK_FRAMES`, as the coder takes them.
        let mut samples = vec![0; 2 * BLOCK_FRAMES];
        for (c, channel) in signal.channels().enumerate() {
            for (code, &x) in samples[c * BLOCK_FRAMES..].iter_mut().zip(channel) {
                *code = q.quantise(x);
            }
        }
        let mut coder = FrameCoder::new(FrameFormat {
            channel_count: 2,
            bit_depth: 24,
            rate: RateCode::of(48_000),
            max_lpc_order: MAX_LPC_ORDER,
        });
        let frame = coder.encode(&samples, 300, 0).to_vec();
        let stream_info = stereo_24_bit_48k_stream_info();
        let run = |frame: &[u8]| {
            let mut check = FrameCheck::new(&stream_info).unwrap();
            check.check(frame, &samples, BLOCK_FRAMES, 2, 300, 24)
        };
        run(&frame).unwrap();
        let mut accepted = Vec::new();
        for bit in 0..(frame.len() - 2) * 8 {
            let mut changed = frame.clone();
            changed[bit / 8] ^= 0x80 >> (bit % 8);
            if run(&changed).is_ok() {
                accepted.push(bit);
            }
        }
        assert_eq!(accepted, Vec::<usize>::new());
        assert!(run(&frame[..frame.len() - 1]).is_err());
    }

    /// The frame check decodes what the coder made: a frame with a flipped bit, or samples other
    /// than those it was made from, fail it.
    #[test]
    fn frame_check_rejects_a_frame_that_decodes_to_other_samples() {
        let signal = test_signal("full-scale noise", 2, BLOCK_FRAMES, 24);
        let q = Quantiser::new(24);
        let mut samples: Vec<i32> = signal
            .channels()
            .flat_map(|c| c.iter().map(|&x| q.quantise(x)))
            .collect();
        let mut coder = FrameCoder::new(FrameFormat {
            channel_count: 2,
            bit_depth: 24,
            rate: RateCode::of(48_000),
            max_lpc_order: MAX_LPC_ORDER,
        });
        let frame = coder.encode(&samples, BLOCK_FRAMES, 0).to_vec();
        let stream_info = stereo_24_bit_48k_stream_info();
        let run = |frame: &[u8], samples: &[i32]| {
            let mut check = FrameCheck::new(&stream_info).unwrap();
            check.check(frame, samples, BLOCK_FRAMES, 2, BLOCK_FRAMES, 24)
        };
        run(&frame, &samples).unwrap();
        for position in [frame.len() / 3, frame.len() / 2, frame.len() - 40] {
            let mut changed = frame.clone();
            changed[position] ^= 0x04;
            assert!(
                run(&changed, &samples).is_err(),
                "bit flipped at {position}"
            );
        }
        samples[BLOCK_FRAMES + 77] += 1;
        let reason = run(&frame, &samples).unwrap_err();
        assert!(reason.ends_with("decodes to other samples"), "{reason}");
    }
}
