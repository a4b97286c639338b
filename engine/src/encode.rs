//! Streaming encoder: planar `f32` [`AudioBlock`]s to a WAV or FLAC file, in bounded memory.
//!
//! Integer output maps a sample `x` to `round(x * 2^(bits-1))`, clamped to the integer range
//! (`+1.0` becomes the largest integer). The dither stage upstream puts samples on exactly that
//! grid, so for dithered input the conversion is exact and a round trip through
//! [`crate::decode::Decoder`] gives back the same `f32` values bit for bit.
//!
//! - WAV is written with hound: 16-bit or 24-bit integer, or 32-bit float;
//!   `WAVE_FORMAT_EXTENSIBLE` beyond two channels or 16 bits. A RIFF file holds at most 4 GiB;
//!   longer masters must be FLAC.
//! - FLAC is lathe's own encoder ([`flac`]): fixed and LPC prediction, stereo decorrelation and
//!   partitioned Rice coding, frames of 4096 written as soon as they are made, `STREAMINFO`
//!   (frame sizes, sample count, MD5) completed by [`Encoder::finish`]. With
//!   [`Encoder::check_frames`] every frame is read back as it is written (by a frame reader of
//!   its own, written from the specification) and compared with its samples, and [`WrittenAudio::check_file`] later confirms the file still holds those
//!   frames, which stands in for decoding the whole file again.
//!
//! The encoder writes exactly the path it is given; writing to a temporary name and renaming is
//! the caller's business. [`Encoder::finish`] flushes, finalises the headers and fsyncs.

mod flac;
mod flac_format;
mod frame_check;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod written;

pub use written::WrittenAudio;

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::audio::AudioBlock;
use crate::decode::MAX_CHANNELS;
use crate::error::{Error, Result};
use lathe_model::stage_config::{Container, EncodeSpec};

/// A streaming encoder writing one master file.
pub struct Encoder {
    path: PathBuf,
    channel_count: usize,
    sample_rate_hz: u32,
    frames_written: u64,
    sink: Sink,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("path", &self.path)
            .field("channel_count", &self.channel_count)
            .field("sample_rate_hz", &self.sample_rate_hz)
            .field("frames_written", &self.frames_written)
            .finish_non_exhaustive()
    }
}

enum Sink {
    Wav(WavSink),
    Flac(Box<flac::FlacSink>),
}

impl Encoder {
    /// Creates (or truncates) `path` and writes the header.
    ///
    /// # Errors
    /// [`Error::Encode`] for an invalid spec, channel count (1 to 8) or sample rate;
    /// [`Error::Io`] if the file cannot be created.
    pub fn create(
        path: &Path,
        spec: &EncodeSpec,
        channel_count: usize,
        sample_rate_hz: u32,
    ) -> Result<Self> {
        spec.validate()
            .map_err(|e| encode_error(path, format!("{}: {}", e.key, e.reason)))?;
        if !(1..=MAX_CHANNELS).contains(&channel_count) {
            return Err(encode_error(
                path,
                format!("{channel_count} channels; allowed 1 to {MAX_CHANNELS}"),
            ));
        }
        let max_rate = match spec.container {
            Container::Wav => u32::MAX,
            Container::Flac => flac::MAX_SAMPLE_RATE_HZ,
        };
        if sample_rate_hz == 0 || sample_rate_hz > max_rate {
            return Err(encode_error(
                path,
                format!(
                    "sample rate {sample_rate_hz} Hz; {} allows 1 Hz to {max_rate} Hz",
                    spec.container
                ),
            ));
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let sink = match spec.container {
            Container::Wav => Sink::Wav(WavSink::new(
                path,
                file,
                spec.bit_depth,
                channel_count,
                sample_rate_hz,
            )?),
            Container::Flac => Sink::Flac(Box::new(flac::FlacSink::new(
                path,
                file,
                spec.bit_depth,
                channel_count,
                sample_rate_hz,
            )?)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            channel_count,
            sample_rate_hz,
            frames_written: 0,
            sink,
        })
    }

    /// Appends the valid frames of `block`.
    ///
    /// # Errors
    /// [`Error::Encode`] if the block's channel count or sample rate differs from the file's, if a
    /// sample is NaN or infinite, or if a WAV file would exceed 4 GiB; [`Error::Io`] on write
    /// failure.
    pub fn write(&mut self, block: &AudioBlock) -> Result<()> {
        let path = self.path.as_path();
        if block.channel_count() != self.channel_count {
            return Err(encode_error(
                path,
                format!(
                    "a block of {} channels written to a {}-channel file",
                    block.channel_count(),
                    self.channel_count
                ),
            ));
        }
        if block.sample_rate_hz() != self.sample_rate_hz {
            return Err(encode_error(
                path,
                format!(
                    "a block at {} Hz written to a {} Hz file",
                    block.sample_rate_hz(),
                    self.sample_rate_hz
                ),
            ));
        }
        if let Some((channel, frame)) = first_non_finite(block) {
            return Err(encode_error(
                path,
                format!(
                    "non-finite sample (NaN or Inf) in channel {channel} at frame {}",
                    self.frames_written + frame as u64
                ),
            ));
        }
        match &mut self.sink {
            Sink::Wav(wav) => wav.write(path, block)?,
            Sink::Flac(flac) => flac.write(path, block)?,
        }
        self.frames_written += block.frames() as u64;
        Ok(())
    }

    /// FLAC: from now on read back every frame as it is written (see `frame_check`), and fail
    /// the write if a frame does not give back its samples, as `flac --verify` does; then
    /// [`Encoder::finish_written`] vouches for the frames and [`WrittenAudio::check_file`] can stand in
    /// for decoding the file. WAV: no effect. Call before the first write.
    ///
    /// # Errors
    /// [`Error::Encode`] if the frame check cannot be started.
    pub fn check_frames(&mut self) -> Result<()> {
        match &mut self.sink {
            Sink::Wav(_) => Ok(()),
            Sink::Flac(flac) => flac.check_frames(&self.path),
        }
    }

    /// Whether every frame is decoded and compared as it is written ([`Encoder::check_frames`]
    /// was called and the format is FLAC): then [`Encoder::finish_written`] will vouch for the
    /// frames.
    pub fn checks_frames(&self) -> bool {
        match &self.sink {
            Sink::Wav(_) => false,
            Sink::Flac(flac) => flac.checks_frames(),
        }
    }

    /// Flushes buffered audio, finalises the headers and fsyncs the file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Encode`] if the file cannot be completed.
    pub fn finish(self) -> Result<()> {
        self.finish_written().map(drop)
    }

    /// [`Encoder::finish`], returning what the encoder can vouch for (see
    /// [`Encoder::check_frames`]).
    ///
    /// # Errors
    /// As [`Encoder::finish`].
    pub fn finish_written(self) -> Result<WrittenAudio> {
        let path = self.path.as_path();
        match self.sink {
            Sink::Wav(wav) => wav.finish(path).map(|()| WrittenAudio::unchecked()),
            Sink::Flac(flac) => flac.finish(path),
        }
    }
}

/// Integer quantiser: `round(x * 2^(bits-1))` (halves away from zero) clamped to the signed
/// `bits`-bit range.
#[derive(Debug, Clone, Copy)]
struct Quantiser {
    scale: f64,
    min: f64,
    max: f64,
}

impl Quantiser {
    fn new(bits: u32) -> Self {
        let full = f64::from(1u32 << (bits - 1));
        Self {
            scale: full,
            min: -full,
            max: full - 1.0,
        }
    }

    #[inline]
    fn quantise(self, x: f32) -> i32 {
        // Plain f64 arithmetic throughout, which the compiler vectorises (`f32::round` is a libm
        // call on baseline x86-64, and `as i32` a scalar conversion). The scaling is exact.
        // Adding and subtracting 1.5 * 2^52 rounds to the nearest integer (ties to even, exact
        // below 2^51; larger values are clamped anyway); a tie that went towards zero is moved
        // away from it. An integer plus 1.5 * 2^52 holds its two's complement in its low bits.
        const ROUND: f64 = 6_755_399_441_055_744.0;
        let y = f64::from(x) * self.scale;
        let nearest = (y + ROUND) - ROUND;
        let d = y - nearest;
        let tie_towards_zero = d.abs() == 0.5 && d * y > 0.0;
        let rounded = nearest + if tie_towards_zero { 2.0 * d } else { 0.0 };
        let low = if rounded < self.min {
            self.min
        } else {
            rounded
        };
        let clamped = if low > self.max { self.max } else { low };
        (clamped + ROUND).to_bits() as u32 as i32
    }
}

fn first_non_finite(block: &AudioBlock) -> Option<(usize, usize)> {
    // A fold without early exit, which the compiler vectorises: the common case is all finite.
    let finite = |c: &[f32]| c.iter().fold(true, |all, x| all & x.is_finite());
    if block.channels().all(finite) {
        return None;
    }
    (0..block.frames()).find_map(|frame| {
        (0..block.channel_count())
            .find(|&ch| !block.channel(ch)[frame].is_finite())
            .map(|ch| (ch, frame))
    })
}

struct WavSink {
    writer: hound::WavWriter<BufWriter<File>>,
    /// A second handle on the file, to fsync it after hound has finalised and closed its own.
    file: File,
    bit_depth: u32,
    quantiser: Quantiser,
    bytes_per_frame: u64,
    data_bytes: u64,
}

/// Largest RIFF data chunk: the 32-bit RIFF size field minus the largest header hound writes.
const WAV_MAX_DATA_BYTES: u64 = u32::MAX as u64 - 72;

impl WavSink {
    fn new(
        path: &Path,
        file: File,
        bit_depth: u32,
        channel_count: usize,
        sample_rate_hz: u32,
    ) -> Result<Self> {
        let sample_format = if bit_depth == 32 {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        };
        let spec = hound::WavSpec {
            channels: channel_count as u16,
            sample_rate: sample_rate_hz,
            bits_per_sample: bit_depth as u16,
            sample_format,
        };
        let handle = file.try_clone().map_err(|e| Error::io(path, e))?;
        let writer = hound::WavWriter::new(BufWriter::with_capacity(1 << 16, handle), spec)
            .map_err(|e| hound_error(path, e))?;
        Ok(Self {
            writer,
            file,
            bit_depth,
            quantiser: Quantiser::new(bit_depth.min(24)),
            bytes_per_frame: channel_count as u64 * u64::from(bit_depth / 8),
            data_bytes: 0,
        })
    }

    fn write(&mut self, path: &Path, block: &AudioBlock) -> Result<()> {
        let bytes = block.frames() as u64 * self.bytes_per_frame;
        if self.data_bytes + bytes > WAV_MAX_DATA_BYTES {
            return Err(encode_error(
                path,
                "a WAV file holds at most 4 GiB of audio; use FLAC for longer masters",
            ));
        }
        let channels = block.channel_count();
        for frame in 0..block.frames() {
            for ch in 0..channels {
                let x = block.channel(ch)[frame];
                let result = match self.bit_depth {
                    32 => self.writer.write_sample(x),
                    16 => self.writer.write_sample(self.quantiser.quantise(x) as i16),
                    _ => self.writer.write_sample(self.quantiser.quantise(x)),
                };
                result.map_err(|e| hound_error(path, e))?;
            }
        }
        self.data_bytes += bytes;
        Ok(())
    }

    fn finish(self, path: &Path) -> Result<()> {
        self.writer.finalize().map_err(|e| hound_error(path, e))?;
        self.file.sync_all().map_err(|e| Error::io(path, e))
    }
}

fn hound_error(path: &Path, error: hound::Error) -> Error {
    match error {
        hound::Error::IoError(e) => Error::io(path, e),
        other => encode_error(path, format!("WAV writer: {other}")),
    }
}

fn encode_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Encode {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::decode::Decoder;
    use crate::decode::fixtures::{assert_same_audio, decode_all, grid_signal};

    /// Encodes `signal` to `path` in blocks of `block` frames.
    pub(super) fn encode(path: &Path, spec: EncodeSpec, signal: &AudioBlock, block: usize) {
        let mut encoder =
            Encoder::create(path, &spec, signal.channel_count(), signal.sample_rate_hz()).unwrap();
        let mut part = AudioBlock::new(signal.channel_count(), block, signal.sample_rate_hz());
        let mut pos = 0;
        while pos < signal.frames() {
            let n = block.min(signal.frames() - pos);
            part.set_frames(n);
            for ch in 0..signal.channel_count() {
                part.channel_mut(ch)
                    .copy_from_slice(&signal.channel(ch)[pos..pos + n]);
            }
            encoder.write(&part).unwrap();
            pos += n;
        }
        encoder.finish().unwrap();
    }

    /// Runs `flac -t` on `path`, asserts it passes and returns its report.
    pub(super) fn flac_test(path: &Path) -> String {
        let output = Command::new("flac").arg("-t").arg(path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "flac -t failed: {stderr}");
        stderr
    }

    #[test]
    fn file_io_types_can_move_between_worker_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Encoder>();
        assert_send::<Decoder>();
        assert_send::<crate::resample::Resampler>();
    }

    #[test]
    fn grid_aligned_audio_round_trips_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            (Container::Wav, 16),
            (Container::Wav, 24),
            (Container::Wav, 32),
            (Container::Flac, 16),
            (Container::Flac, 24),
        ];
        for (container, bit_depth) in specs {
            for channels in [1, 2, 6] {
                // 32-bit float keeps any f32; the integer depths get grid-aligned input.
                let grid = if bit_depth == 32 { 0 } else { bit_depth };
                let signal = grid_signal(channels, 20_000, 48_000, grid);
                let path = dir.path().join(format!(
                    "rt-{bit_depth}-{channels}.{}",
                    container.extension()
                ));
                encode(
                    &path,
                    EncodeSpec {
                        container,
                        bit_depth,
                    },
                    &signal,
                    1000,
                );
                let decoded = decode_all(&path, 4096).unwrap();
                assert_same_audio(&decoded, &signal, 0.0);
                let info = Decoder::open(&path).unwrap().info().clone();
                assert_eq!(info.bits_per_sample, Some(bit_depth), "{}", path.display());
                assert_eq!(info.frames, Some(20_000), "{}", path.display());
            }
        }
    }

    #[test]
    fn wav_header_is_extensible_beyond_16_bits_or_2_channels() {
        let dir = tempfile::tempdir().unwrap();
        for (bits, channels, extensible) in
            [(16, 2, false), (24, 2, true), (16, 6, true), (32, 1, true)]
        {
            let path = dir.path().join(format!("h-{bits}-{channels}.wav"));
            let signal = grid_signal(channels, 100, 44_100, if bits == 32 { 0 } else { bits });
            encode(
                &path,
                EncodeSpec {
                    container: Container::Wav,
                    bit_depth: bits,
                },
                &signal,
                100,
            );
            let bytes = std::fs::read(&path).unwrap();
            let format_tag = u16::from_le_bytes([bytes[20], bytes[21]]);
            assert_eq!(
                format_tag == 0xFFFE,
                extensible,
                "{bits} bits, {channels} ch: {format_tag:#x}"
            );
        }
    }

    #[test]
    fn empty_flac_and_wav_are_valid_files() {
        let dir = tempfile::tempdir().unwrap();
        let flac = dir.path().join("empty.flac");
        Encoder::create(
            &flac,
            &EncodeSpec {
                container: Container::Flac,
                bit_depth: 16,
            },
            2,
            44_100,
        )
        .unwrap()
        .finish()
        .unwrap();
        flac_test(&flac);
        let wav = dir.path().join("empty.wav");
        Encoder::create(
            &wav,
            &EncodeSpec {
                container: Container::Wav,
                bit_depth: 24,
            },
            2,
            44_100,
        )
        .unwrap()
        .finish()
        .unwrap();
        assert_eq!(hound::WavReader::open(&wav).unwrap().duration(), 0);
    }

    #[test]
    fn quantiser_is_exact_on_the_grid_and_clamps_off_it() {
        for bits in [16, 24] {
            let q = Quantiser::new(bits);
            let full = 1i32 << (bits - 1);
            let step = if bits == 16 { 1 } else { 97 };
            for k in (-full..full).step_by(step) {
                let x = k as f32 / full as f32;
                assert_eq!(q.quantise(x), k, "{bits} bits, {k}");
            }
            assert_eq!(q.quantise(1.0), full - 1);
            assert_eq!(q.quantise(1.5), full - 1);
            assert_eq!(q.quantise(-1.5), -full);
            let half_lsb = 0.5 / full as f32;
            assert_eq!(q.quantise(3.0 * half_lsb), 2, "halves round away from zero");
            assert_eq!(q.quantise(-3.0 * half_lsb), -2);
            assert_eq!(q.quantise(5.0 * half_lsb), 3, "halves round away from zero");
            assert_eq!(q.quantise(-5.0 * half_lsb), -3);
            assert_eq!(q.quantise(half_lsb), 1);
            assert_eq!(q.quantise(-half_lsb), -1);
            assert_eq!(q.quantise(0.99 * half_lsb), 0);
            assert_eq!(q.quantise(f32::MAX), full - 1);
            assert_eq!(q.quantise(f32::MIN), -full);
            assert_eq!(q.quantise(-0.0), 0);
        }
    }

    #[test]
    fn wrong_blocks_and_non_finite_samples_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.flac");
        let spec = EncodeSpec {
            container: Container::Flac,
            bit_depth: 16,
        };
        let mut encoder = Encoder::create(&path, &spec, 2, 44_100).unwrap();
        let mut block = grid_signal(2, 100, 44_100, 16);
        assert!(matches!(
            encoder.write(&grid_signal(1, 100, 44_100, 16)),
            Err(Error::Encode { .. })
        ));
        assert!(encoder.write(&grid_signal(2, 100, 48_000, 16)).is_err());
        block.channel_mut(1)[42] = f32::NAN;
        let err = encoder.write(&block).unwrap_err();
        assert!(err.to_string().contains("channel 1 at frame 42"), "{err}");
        assert!(err.to_string().contains("bad.flac"), "{err}");
        for (container, bits, channels, rate) in [
            (Container::Flac, 32, 2, 44_100),
            (Container::Wav, 8, 2, 44_100),
            (Container::Wav, 16, 9, 44_100),
            (Container::Flac, 16, 2, 705_600),
        ] {
            let spec = EncodeSpec {
                container,
                bit_depth: bits,
            };
            let err = Encoder::create(&path, &spec, channels, rate).unwrap_err();
            assert!(matches!(err, Error::Encode { .. }), "{err:?}");
        }
    }

    #[test]
    fn spec_validates_bit_depth_per_container() {
        let ok = |container, bit_depth| {
            EncodeSpec {
                container,
                bit_depth,
            }
            .validate()
            .is_ok()
        };
        assert!(ok(Container::Wav, 16) && ok(Container::Wav, 24) && ok(Container::Wav, 32));
        assert!(ok(Container::Flac, 16) && ok(Container::Flac, 24));
        let err = EncodeSpec {
            container: Container::Flac,
            bit_depth: 32,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.key, "bit_depth");
        assert_eq!(err.reason, "32 is not allowed for flac; allowed 16, 24");
        assert!(!ok(Container::Wav, 20));
    }

    #[test]
    fn spec_reads_and_writes_as_toml() {
        let spec: EncodeSpec = toml::from_str("format = \"flac\"\nbit_depth = 24\n").unwrap();
        assert_eq!(
            spec,
            EncodeSpec {
                container: Container::Flac,
                bit_depth: 24
            }
        );
        let text = toml::to_string(&spec).unwrap();
        assert_eq!(toml::from_str::<EncodeSpec>(&text).unwrap(), spec);
        assert!(toml::from_str::<EncodeSpec>("format = \"mp3\"\nbit_depth = 16\n").is_err());
        assert!(toml::from_str::<EncodeSpec>("format = \"wav\"\nbit_depth = 16\nx = 1\n").is_err());
        assert_eq!(Container::Wav.to_string(), "wav");
        assert_eq!(Container::Flac.extension(), "flac");
    }
}
