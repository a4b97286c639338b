//! How much audio lathe takes from one source, and the checks that hold every source to it.
//!
//! A source comes from outside, and its header is only a claim: a crafted file of a few hundred
//! bytes can declare a day of audio at 384 kHz in 8 channels, or 65,535 channels. Everything a
//! render keeps grows with what the source decodes to (the chain's spool on disk holds 4 bytes a
//! sample at the output rate, and every pass takes time in proportion), so lathe decodes at most
//! [`MAX_SOURCE_SAMPLES`] from one file, in 1 to [`MAX_CHANNELS`] channels at
//! [`MIN_SAMPLE_RATE_HZ`] to [`MAX_SAMPLE_RATE_HZ`]. It holds a source to that in two places:
//!
//! - when the file is opened, what its header declares ([`Declared::check`]), before anything is
//!   decoded, and before anything is sized from the header (the PCM reader's buffer, the codec's
//!   decoder, WavPack's buffers for every channel): a source that declares too much is refused at
//!   once, whatever the file really holds;
//! - while it decodes ([`check_decoded`], after every packet or read): a stream whose header
//!   declares no length (FLAC with no sample count, MP3 without a Xing header, ADTS AAC) stops
//!   with the same error as soon as its decoded samples pass the limit, so a small file that
//!   decodes to far more audio than it declares ends as an error, not as a full disk. (A WAV
//!   written to a pipe declares no length either, but is read only to the end of its file, whose
//!   length is checked when it is opened.)
//!
//! Both refusals are input faults ([`Error::is_input_fault`]): the same file is refused the same
//! way on any machine, so the farm fails its task at once rather than retrying it elsewhere.

use std::path::Path;

use super::SourceInfo;
use crate::error::{Error, Result};

/// Lowest sample rate lathe accepts.
pub const MIN_SAMPLE_RATE_HZ: u32 = 8_000;
/// Highest sample rate lathe accepts.
pub const MAX_SAMPLE_RATE_HZ: u32 = 384_000;
/// Most channels lathe accepts (7.1).
pub const MAX_CHANNELS: usize = 8;
/// Most samples (frames times channels) lathe decodes from one source: 6 hours at 192 kHz in 8
/// channels, about 3.3e10 (24 hours of 96 kHz stereo; 6 hours of 384 kHz stereo). A legitimate
/// recording fits; a header that declares more is refused when the file is opened, and a stream
/// of no declared length that decodes past it stops with the same error
/// ([`Error::SourceTooLarge`]). At the limit the chain's spool alone takes 133 GB (4 bytes a sample).
pub const MAX_SOURCE_SAMPLES: u64 = 6 * 3600 * 192_000 * 8;

/// What a header declares about its audio, checked before anything is decoded. A value the header
/// leaves to the codec is `None`: the first decoded packet tells, and is checked then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Declared {
    /// Frames per second.
    pub(super) sample_rate_hz: Option<u32>,
    /// Channels per frame.
    pub(super) channel_count: Option<usize>,
    /// Frames in the stream; `None` when the header does not say.
    pub(super) frames: Option<u64>,
}

impl Declared {
    /// Everything `info` gives (its rate and channels settled, as after the first packet).
    pub(super) fn of(info: &SourceInfo) -> Self {
        Self {
            sample_rate_hz: Some(info.sample_rate_hz),
            channel_count: Some(info.channel_count),
            frames: info.frames,
        }
    }

    /// Refuses a declaration outside lathe's limits: channels outside 1 to [`MAX_CHANNELS`] and
    /// rates outside [`MIN_SAMPLE_RATE_HZ`] to [`MAX_SAMPLE_RATE_HZ`] are an
    /// [`Error::UnsupportedShape`]; more than `max_samples` samples (frames times channels; one
    /// channel counted when the header leaves the count to the codec) an
    /// [`Error::SourceTooLarge`].
    pub(super) fn check(&self, path: &Path, max_samples: u64) -> Result<()> {
        if let Some(channels) = self.channel_count {
            check_channel_count(path, channels)?;
        }
        if let Some(rate) = self.sample_rate_hz {
            check_sample_rate(path, rate)?;
        }
        if let Some(frames) = self.frames {
            let channels = self.channel_count.unwrap_or(1).max(1);
            if samples(frames, channels) > u128::from(max_samples) {
                return Err(Error::SourceTooLarge {
                    path: path.to_path_buf(),
                    declared: true,
                    frames,
                    sample_rate_hz: self.sample_rate_hz,
                    channel_count: self.channel_count,
                    limit_samples: max_samples,
                });
            }
        }
        Ok(())
    }
}

/// Refuses a decoded stream (rate and channels settled) that has passed `max_samples` after
/// `frames_decoded` frames: an [`Error::SourceTooLarge`], not declared.
pub(super) fn check_decoded(
    info: &SourceInfo,
    frames_decoded: u64,
    max_samples: u64,
) -> Result<()> {
    if samples(frames_decoded, info.channel_count.max(1)) <= u128::from(max_samples) {
        return Ok(());
    }
    Err(Error::SourceTooLarge {
        path: info.path.clone(),
        declared: false,
        frames: frames_decoded,
        sample_rate_hz: Some(info.sample_rate_hz),
        channel_count: Some(info.channel_count),
        limit_samples: max_samples,
    })
}

/// Refuses a rate or channel count outside lathe's limits ([`Error::UnsupportedShape`]).
pub(super) fn check_shape(info: &SourceInfo) -> Result<()> {
    check_channel_count(&info.path, info.channel_count)?;
    check_sample_rate(&info.path, info.sample_rate_hz)
}

fn check_channel_count(path: &Path, channels: usize) -> Result<()> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        return Ok(());
    }
    Err(Error::UnsupportedShape {
        path: path.to_path_buf(),
        reason: format!("{channels} channels; lathe handles 1 to {MAX_CHANNELS}"),
    })
}

fn check_sample_rate(path: &Path, rate_hz: u32) -> Result<()> {
    if (MIN_SAMPLE_RATE_HZ..=MAX_SAMPLE_RATE_HZ).contains(&rate_hz) {
        return Ok(());
    }
    Err(Error::UnsupportedShape {
        path: path.to_path_buf(),
        reason: format!(
            "sample rate {rate_hz} Hz; lathe handles {MIN_SAMPLE_RATE_HZ} Hz to \
             {MAX_SAMPLE_RATE_HZ} Hz"
        ),
    })
}

/// Frames times channels, without overflow.
fn samples(frames: u64, channels: usize) -> u128 {
    u128::from(frames) * channels as u128
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use lathe_model::stage_config::{Container, EncodeSpec};

    use super::*;
    use crate::audio::AudioBlock;
    use crate::decode::fixtures::{decode_all, grid_signal, write_wav};
    use crate::decode::{Decoder, OpenOptions};
    use crate::encode::Encoder;

    /// A day at 384 kHz: 3.3e10 frames, 2.65e11 samples in 8 channels.
    const DAY_AT_384_KHZ: u64 = 24 * 3600 * 384_000;

    /// Opens `path` with lathe's limits, expecting it refused at once as the input's fault, with
    /// an error that names the file.
    fn refused(path: &Path) -> Error {
        let started = Instant::now();
        let err = Decoder::open(path).expect_err("refused when opened");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refusing {} took {:?}",
            path.display(),
            started.elapsed()
        );
        assert!(err.is_input_fault(), "{err:?}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.to_string().contains(name), "{err}");
        err
    }

    /// The bytes of a WAV of 16 or 8-bit PCM in `channels` at `rate_hz` whose data chunk declares
    /// `frames` frames and holds `held_frames` of silence. `magic` `RIFF`: a plain WAV (its 32-bit
    /// sizes saturate); `RF64` or `BW64`: the data size is in a ds64 chunk.
    fn wav_declaring(
        magic: &[u8; 4],
        channels: u16,
        rate_hz: u32,
        bits: u16,
        frames: u64,
        held_frames: usize,
    ) -> Vec<u8> {
        let block_align = u64::from(channels) * u64::from(bits / 8);
        let data_size = frames * block_align;
        let held = vec![0u8; held_frames * block_align as usize];
        let saturated = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let plain = magic == b"RIFF";
        let mut body = b"WAVE".to_vec();
        if !plain {
            body.extend(b"ds64");
            body.extend(28u32.to_le_bytes());
            let riff_size = 4 + (8 + 28) + (8 + 16) + 8 + data_size;
            for size in [riff_size, data_size, frames] {
                body.extend(size.to_le_bytes());
            }
            body.extend(0u32.to_le_bytes());
        }
        body.extend(b"fmt ");
        body.extend(16u32.to_le_bytes());
        body.extend(1u16.to_le_bytes());
        body.extend(channels.to_le_bytes());
        body.extend(rate_hz.to_le_bytes());
        body.extend(saturated(u64::from(rate_hz) * block_align).to_le_bytes());
        body.extend(u16::try_from(block_align).unwrap_or(u16::MAX).to_le_bytes());
        body.extend(bits.to_le_bytes());
        body.extend(b"data");
        let declared_size = if plain {
            saturated(data_size)
        } else {
            u32::MAX
        };
        body.extend(declared_size.to_le_bytes());
        let riff_size = if plain {
            saturated(body.len() as u64 + data_size)
        } else {
            u32::MAX
        };
        body.extend(held);
        let mut bytes = magic.to_vec();
        bytes.extend(riff_size.to_le_bytes());
        bytes.extend(body);
        bytes
    }

    /// Writes a FLAC of `frames` frames of `grid_signal` with lathe's encoder.
    fn write_flac(path: &Path, channels: usize, rate_hz: u32, frames: usize) {
        let spec = EncodeSpec {
            container: Container::Flac,
            bit_depth: 16,
        };
        let mut encoder = Encoder::create(path, &spec, channels, rate_hz).unwrap();
        encoder
            .write(&grid_signal(channels, frames, rate_hz, 16))
            .unwrap();
        encoder.finish().unwrap();
    }

    /// Sets the total samples (frames) of a FLAC file's STREAMINFO: its 36 low bits of the eight
    /// bytes after the block sizes and frame sizes (rate: 20 bits, channels - 1: 3, bits - 1: 5,
    /// total: 36). 0 means "unknown".
    fn set_flac_total_frames(path: &Path, frames: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..4], b"fLaC");
        assert_eq!(bytes[4] & 0x7f, 0, "STREAMINFO comes first");
        let at = 8 + 10;
        let field = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let mask = (1u64 << 36) - 1;
        let field = (field & !mask) | (frames & mask);
        bytes[at..at + 8].copy_from_slice(&field.to_be_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_default_limit_takes_six_hours_at_192_khz_in_8_channels() {
        assert_eq!(MAX_SOURCE_SAMPLES, 6 * 3600 * 192_000 * 8);
        // The longest legitimate sources lathe means to take, and room to spare.
        for (hours, rate, channels) in [(24, 96_000, 2), (6, 384_000, 2), (48, 48_000, 2)] {
            assert!(hours * 3600 * rate * channels <= MAX_SOURCE_SAMPLES);
        }
    }

    #[test]
    fn a_wav_declaring_a_day_at_384_khz_in_8_channels_is_refused_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        for magic in [b"RF64", b"BW64"] {
            let path = dir
                .path()
                .join(format!("bomb-{}.wav", std::str::from_utf8(magic).unwrap()));
            std::fs::write(
                &path,
                wav_declaring(magic, 8, 384_000, 16, DAY_AT_384_KHZ, 16),
            )
            .unwrap();
            assert!(
                std::fs::metadata(&path).unwrap().len() < 1024,
                "a small file"
            );
            let err = refused(&path);
            match &err {
                Error::SourceTooLarge {
                    declared: true,
                    frames,
                    sample_rate_hz: Some(384_000),
                    channel_count: Some(8),
                    limit_samples: MAX_SOURCE_SAMPLES,
                    ..
                } => assert_eq!(*frames, DAY_AT_384_KHZ),
                other => panic!("expected SourceTooLarge, got {other:?}"),
            }
            let message = err.to_string();
            assert!(
                message.contains(
                    "the header declares 24 h 0 min at 384000 Hz with 8 channels (2.65e11 \
                     samples), more than lathe decodes from one source (3.32e10 samples: 6 h 0 \
                     min at 192000 Hz with 8 channels)"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn a_wav_declaring_just_the_limit_is_not_refused_by_it() {
        let dir = tempfile::tempdir().unwrap();
        // 6 hours at 192 kHz in 8 channels: within the limit, so the small file is simply
        // truncated (refused when opened, for the ds64 chunk says what the file should hold).
        let path = dir.path().join("six-hours.wav");
        let frames = MAX_SOURCE_SAMPLES / 8;
        std::fs::write(&path, wav_declaring(b"RF64", 8, 192_000, 16, frames, 16)).unwrap();
        let err = refused(&path);
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("truncated: expected {frames} frames, got 16")),
            "{err}"
        );
        // One frame more is over it.
        std::fs::write(
            &path,
            wav_declaring(b"RF64", 8, 192_000, 16, frames + 1, 16),
        )
        .unwrap();
        let err = refused(&path);
        assert!(matches!(err, Error::SourceTooLarge { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("(33177600008 samples), more than lathe decodes from one source (33177600000 samples: 6 h 0 min"),
            "{err}"
        );
    }

    #[test]
    fn wav_channel_counts_and_rates_outside_the_limits_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for magic in [b"RIFF", b"RF64"] {
            for (channels, rate_hz, expected) in [
                (0, 48_000, "0 channels; lathe handles 1 to 8"),
                (9, 48_000, "9 channels; lathe handles 1 to 8"),
                (u16::MAX, 48_000, "65535 channels; lathe handles 1 to 8"),
                (2, 0, "sample rate 0 Hz; lathe handles 8000 Hz to 384000 Hz"),
                (2, 768_000, "sample rate 768000 Hz; lathe handles"),
                (2, u32::MAX, "sample rate 4294967295 Hz; lathe handles"),
            ] {
                let what = format!(
                    "{} {channels} ch {rate_hz} Hz",
                    std::str::from_utf8(magic).unwrap()
                );
                let path = dir.path().join(format!("{what}.wav"));
                // 8-bit samples, so that even 65,535 channels fit a frame's 16-bit size.
                std::fs::write(&path, wav_declaring(magic, channels, rate_hz, 8, 100, 100))
                    .unwrap();
                let err = refused(&path);
                assert!(
                    matches!(err, Error::UnsupportedShape { .. }),
                    "{what}: {err:?}"
                );
                assert!(err.to_string().contains(expected), "{what}: {err}");
            }
        }
    }

    #[test]
    fn a_flac_declaring_more_than_the_limit_is_refused_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        // STREAMINFO counts frames in 36 bits: up to 6.9e10 frames.
        let most = (1u64 << 36) - 1;
        for (channels, rate_hz, frames) in [
            (8, 384_000, DAY_AT_384_KHZ),
            (8, 384_000, most),
            (2, 48_000, most),
        ] {
            let path = dir
                .path()
                .join(format!("bomb-{channels}-{rate_hz}-{frames}.flac"));
            write_flac(&path, channels, rate_hz, 4096);
            set_flac_total_frames(&path, frames);
            let err = refused(&path);
            match &err {
                Error::SourceTooLarge {
                    declared: true,
                    frames: declared,
                    sample_rate_hz,
                    channel_count,
                    limit_samples: MAX_SOURCE_SAMPLES,
                    ..
                } => {
                    assert_eq!(*declared, frames);
                    assert_eq!(*sample_rate_hz, Some(rate_hz));
                    assert_eq!(*channel_count, Some(channels));
                }
                other => panic!("{}: expected SourceTooLarge, got {other:?}", path.display()),
            }
        }
    }

    #[test]
    fn a_stream_of_no_declared_length_stops_when_it_decodes_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-length.flac");
        write_flac(&path, 2, 44_100, 44_100);
        set_flac_total_frames(&path, 0);
        // Under lathe's limit it decodes whole.
        let decoder = Decoder::open(&path).unwrap();
        assert_eq!(decoder.info().frames, None);
        assert_eq!(decode_all(&path, 4096).unwrap().frames(), 44_100);
        // Under a limit of 20,000 samples it opens (its first packet is within it) and stops
        // with the limit's error once the decoded samples pass it.
        let limit = 20_000;
        let options = OpenOptions {
            max_source_samples: limit,
            ..OpenOptions::STRICT
        };
        let mut decoder = Decoder::open_with(&path, options).unwrap();
        let mut block = AudioBlock::new(2, 4096, 44_100);
        let err = loop {
            match decoder.read(&mut block) {
                Ok(0) => panic!("decoded to the end past the limit"),
                Ok(_) => {}
                Err(err) => break err,
            }
        };
        assert!(err.is_input_fault(), "{err:?}");
        match &err {
            Error::SourceTooLarge {
                declared: false,
                frames,
                sample_rate_hz: Some(44_100),
                channel_count: Some(2),
                limit_samples,
                ..
            } => {
                assert_eq!(*limit_samples, limit);
                // Stopped at the packet that passed the limit: within one packet of it.
                assert!(*frames * 2 > limit, "{frames}");
                assert!(*frames * 2 <= limit + 2 * 8192, "{frames}");
            }
            other => panic!("expected SourceTooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("decoding stopped after "), "{err}");
    }

    #[test]
    fn the_limit_counts_frames_times_channels_as_declared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one-second.wav");
        write_wav(&path, &grid_signal(2, 44_100, 44_100, 16), 16, false);
        // A short legitimate source opens and decodes under lathe's limit.
        assert_eq!(decode_all(&path, 4096).unwrap().frames(), 44_100);
        let open = |limit| {
            let options = OpenOptions {
                max_source_samples: limit,
                ..OpenOptions::STRICT
            };
            Decoder::open_with(&path, options)
        };
        // 44,100 frames in 2 channels: 88,200 samples, refused under a limit one sample lower.
        let err = open(88_199).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SourceTooLarge {
                    declared: true,
                    frames: 44_100,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut decoder = open(88_200).unwrap();
        let mut block = AudioBlock::new(2, 4096, 44_100);
        let mut frames = 0;
        while decoder.read(&mut block).unwrap() > 0 {
            frames += block.frames();
        }
        assert_eq!(frames, 44_100);
    }

    /// The bytes of an AIFF of 16-bit PCM in 8 channels at 384 kHz whose sound data chunk
    /// declares nearly 4 GiB and holds 64 bytes.
    fn aiff_declaring_4_gib() -> Vec<u8> {
        // Whole frames of 16 bytes, leaving room for the chunk's and the form's own sizes.
        let sound_bytes: u32 = (u32::MAX - 1024) & !15;
        let frames = sound_bytes / 16;
        let mut comm = Vec::new();
        comm.extend(8i16.to_be_bytes());
        comm.extend(frames.to_be_bytes());
        comm.extend(16i16.to_be_bytes());
        // 384000 as an 80-bit extended float: 2^18 times 384000 / 2^18.
        comm.extend((16_383u16 + 18).to_be_bytes());
        comm.extend((384_000u64 << (63 - 18)).to_be_bytes());
        let mut body = b"AIFF".to_vec();
        body.extend(b"COMM");
        body.extend(18u32.to_be_bytes());
        body.extend(comm);
        body.extend(b"SSND");
        body.extend((sound_bytes + 8).to_be_bytes());
        body.extend(0u32.to_be_bytes());
        body.extend(0u32.to_be_bytes());
        body.extend([0u8; 64]);
        let mut bytes = b"FORM".to_vec();
        bytes.extend(
            (body.len() as u32 - 64)
                .saturating_add(sound_bytes)
                .to_be_bytes(),
        );
        bytes.extend(body);
        bytes
    }

    #[test]
    fn an_aiff_declaring_4_gib_of_sound_is_refused_when_opened() {
        // AIFF's sizes are 32-bit: its sound data can declare at most 4.3e9 samples, under the
        // limit. Symphonia finds the chunk longer than the file when it probes, before anything
        // is decoded.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.aiff");
        std::fs::write(&path, aiff_declaring_4_gib()).unwrap();
        refused(&path);
    }
}
