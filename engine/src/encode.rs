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
//! - FLAC is encoded frame by frame and each frame is written as soon as it is made (nothing
//!   accumulates): `STREAMINFO` goes first with placeholders, and [`Encoder::finish`] seeks back
//!   to fill in the total sample count, the frame sizes and the MD5 of the audio, which `flac -t`
//!   checks. Blocks of 4096 frames, single-threaded. flacenc chooses stereo mode and predictors;
//!   the residuals are Rice-coded here, with the 5-bit parameters 24-bit audio needs, and no
//!   subframe is ever larger than verbatim (see `FrameWriter`). flacenc's LPC analysis is only
//!   fast when the crate is compiled with FMA (`-C target-cpu=x86-64-v3`); then frames use LPC of
//!   order 8, otherwise the fixed predictors only (within about 1 to 3 % of `flac -5`), so that
//!   either build encodes 44.1 kHz 24-bit stereo at over 100x realtime on one core.
//!
//! The encoder writes exactly the path it is given; writing to a temporary name and renaming is
//! the caller's business. [`Encoder::finish`] flushes, finalises the headers and fsyncs.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flacenc::bitsink::ByteSink;
use flacenc::component::{BitRepr, ChannelAssignment, Frame, StreamInfo, SubFrame};
use flacenc::error::{Verified, Verify};
use flacenc::source::{Context, Fill, FrameBuf};
use serde::{Deserialize, Serialize};

use crate::audio::AudioBlock;
use crate::config::InvalidValue;
use crate::decode::MAX_CHANNELS;
use crate::error::{Error, Result};

/// FLAC block size in frames (the reference encoder's default for 44.1/48 kHz).
const FLAC_BLOCK_FRAMES: usize = 4096;

/// Highest sample rate FLAC's `STREAMINFO` can hold (20 bits).
const FLAC_MAX_SAMPLE_RATE_HZ: u32 = 655_350;

/// Byte offset of the `STREAMINFO` body: after `fLaC` and the 4-byte metadata block header.
const STREAMINFO_OFFSET: u64 = 8;

/// Length of the `STREAMINFO` body in bytes.
const STREAMINFO_LEN: usize = 34;

/// The container (and codec) of a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// RIFF WAVE, PCM integer or IEEE float.
    Wav,
    /// FLAC (lossless).
    Flac,
}

impl Container {
    /// File name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Flac => "flac",
        }
    }

    /// Bit depths this container accepts (WAV 32 means 32-bit float).
    pub fn allowed_bit_depths(self) -> &'static [u32] {
        match self {
            Self::Wav => &[16, 24, 32],
            Self::Flac => &[16, 24],
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// What to write: container and bit depth. In a profile it reads `format = "flac"`,
/// `bit_depth = 24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSpec {
    /// The container.
    #[serde(rename = "format")]
    pub container: Container,
    /// Bits per sample: WAV 16 or 24 (integer) or 32 (float); FLAC 16 or 24.
    pub bit_depth: u32,
}

impl EncodeSpec {
    /// Checks the bit depth against the container.
    ///
    /// # Errors
    /// An [`InvalidValue`] for key `bit_depth` naming the depths the container allows.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let allowed = self.container.allowed_bit_depths();
        if allowed.contains(&self.bit_depth) {
            return Ok(());
        }
        let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
        Err(InvalidValue::new(
            "bit_depth",
            format!(
                "{} is not allowed for {}; allowed {}{}",
                self.bit_depth,
                self.container,
                list.join(", "),
                if self.container == Container::Wav {
                    " (32 = float)"
                } else {
                    ""
                }
            ),
        ))
    }
}

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
    Flac(Box<FlacSink>),
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
            Container::Flac => FLAC_MAX_SAMPLE_RATE_HZ,
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
            Container::Flac => Sink::Flac(Box::new(FlacSink::new(
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

    /// Flushes buffered audio, finalises the headers and fsyncs the file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Encode`] if the file cannot be completed.
    pub fn finish(self) -> Result<()> {
        let path = self.path.as_path();
        match self.sink {
            Sink::Wav(wav) => wav.finish(path),
            Sink::Flac(flac) => flac.finish(path),
        }
    }
}

/// Integer quantiser: `round(x * 2^(bits-1))` (halves away from zero) clamped to the signed
/// `bits`-bit range.
#[derive(Debug, Clone, Copy)]
struct Quantiser {
    scale: f64,
    min: i64,
    max: i64,
}

impl Quantiser {
    fn new(bits: u32) -> Self {
        let full = 1i64 << (bits - 1);
        Self {
            scale: full as f64,
            min: -full,
            max: full - 1,
        }
    }

    #[inline]
    fn quantise(self, x: f32) -> i32 {
        // In f64 both the scaling and the added half are exact for any f32 input, and the
        // truncating cast is a single instruction (`f32::round` is a libm call on baseline x86-64).
        let y = f64::from(x) * self.scale;
        let rounded = (y + 0.5f64.copysign(y)) as i64;
        rounded.clamp(self.min, self.max) as i32
    }
}

fn first_non_finite(block: &AudioBlock) -> Option<(usize, usize)> {
    if block.channels().all(|c| c.iter().all(|x| x.is_finite())) {
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

/// Streams FLAC frames to the file as they are encoded.
struct FlacSink {
    file: BufWriter<File>,
    config: Verified<flacenc::config::Encoder>,
    /// What flacenc encodes frames for. flacenc refuses rates above 96 kHz, so for those it is
    /// told 96 kHz and the frame headers are patched (see `rate_code`).
    frame_info: StreamInfo,
    sample_rate_hz: u32,
    bit_depth: u32,
    /// For rates above 96 kHz: the frame header's sample-rate code to write instead of 96 kHz's.
    rate_code: Option<u8>,
    /// Samples of the frame being gathered, interleaved little-endian, `bytes_per_sample` each
    /// (the form flacenc's MD5 wants).
    pending: Vec<u8>,
    /// The same samples, planar: channel `c` at `c * FLAC_BLOCK_FRAMES` (what the residual coder
    /// predicts from).
    samples: Vec<i32>,
    pending_frames: usize,
    bytes_per_sample: usize,
    channel_count: usize,
    quantiser: Quantiser,
    /// The samples of one FLAC frame, planar, and the running MD5: filled together.
    frame_buf: FrameBuf,
    context: Context,
    frame_number: usize,
    total_frames: u64,
    /// Smallest and largest frame in bytes so far.
    frame_bytes_range: Option<(usize, usize)>,
    /// Serialises each frame; holds the reused buffers.
    frame_writer: FrameWriter,
    patched: Vec<u8>,
}

/// Highest rate flacenc accepts.
const FLACENC_MAX_SAMPLE_RATE_HZ: u32 = 96_000;

/// Frame header sample-rate code of 96 kHz, which flacenc writes for rates above it.
const RATE_CODE_96K: u8 = 0b1011;

impl FlacSink {
    fn new(
        path: &Path,
        file: File,
        bit_depth: u32,
        channel_count: usize,
        sample_rate_hz: u32,
    ) -> Result<Self> {
        let config = flac_config()
            .into_verified()
            .map_err(|(_, e)| encode_error(path, format!("FLAC encoder configuration: {e}")))?;
        let flac_error = |e: flacenc::error::VerifyError| encode_error(path, format!("FLAC: {e}"));
        let rate_code = match sample_rate_hz {
            rate if rate <= FLACENC_MAX_SAMPLE_RATE_HZ => None,
            176_400 => Some(0b0010),
            192_000 => Some(0b0011),
            _ => Some(0b0000), // "take the rate from STREAMINFO"
        };
        let frame_info = StreamInfo::new(
            sample_rate_hz.min(FLACENC_MAX_SAMPLE_RATE_HZ) as usize,
            channel_count,
            bit_depth as usize,
        )
        .map_err(flac_error)?;
        let frame_buf =
            FrameBuf::with_size(channel_count, FLAC_BLOCK_FRAMES).map_err(flac_error)?;
        let bytes_per_sample = bit_depth as usize / 8;
        let mut this = Self {
            file: BufWriter::with_capacity(1 << 16, file),
            config,
            frame_info,
            sample_rate_hz,
            bit_depth,
            rate_code,
            pending: vec![0; FLAC_BLOCK_FRAMES * channel_count * bytes_per_sample],
            samples: vec![0; FLAC_BLOCK_FRAMES * channel_count],
            pending_frames: 0,
            bytes_per_sample,
            channel_count,
            quantiser: Quantiser::new(bit_depth),
            frame_buf,
            context: Context::new(bit_depth as usize, channel_count),
            frame_number: 0,
            total_frames: 0,
            frame_bytes_range: None,
            frame_writer: FrameWriter::new(),
            patched: Vec::new(),
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

    fn write(&mut self, path: &Path, block: &AudioBlock) -> Result<()> {
        let total = block.frames();
        let mut start = 0;
        while start < total {
            let n = (FLAC_BLOCK_FRAMES - self.pending_frames).min(total - start);
            let stride = self.channel_count * self.bytes_per_sample;
            let bps = self.bytes_per_sample;
            let base = self.pending_frames * stride;
            for (ch, samples) in block.channels().enumerate() {
                let mut offset = base + ch * bps;
                let planar_start = ch * FLAC_BLOCK_FRAMES + self.pending_frames;
                let planar = &mut self.samples[planar_start..planar_start + n];
                for (&x, code) in samples[start..start + n].iter().zip(planar) {
                    *code = self.quantiser.quantise(x);
                    let bytes = code.to_le_bytes();
                    self.pending[offset..offset + bps].copy_from_slice(&bytes[..bps]);
                    offset += stride;
                }
            }
            self.pending_frames += n;
            start += n;
            if self.pending_frames == FLAC_BLOCK_FRAMES {
                self.encode_frame(path)?;
            }
        }
        Ok(())
    }

    /// Encodes the pending samples as one FLAC frame and writes it out.
    fn encode_frame(&mut self, path: &Path) -> Result<()> {
        let used = self.pending_frames * self.channel_count * self.bytes_per_sample;
        (&mut self.frame_buf, &mut self.context)
            .fill_le_bytes(&self.pending[..used], self.bytes_per_sample)
            .map_err(|e| encode_error(path, format!("FLAC: {e}")))?;
        let frame = flacenc::encode_fixed_size_frame(
            &self.config,
            &self.frame_buf,
            self.frame_number,
            &self.frame_info,
        )
        .map_err(|e| encode_error(path, format!("FLAC: {e}")))?;
        let encoded = self
            .frame_writer
            .write(&frame, &self.samples, FLAC_BLOCK_FRAMES)
            .map_err(|reason| encode_error(path, format!("FLAC: {reason}")))?;
        let bytes = match self.rate_code {
            None => encoded,
            Some(code) => {
                self.patched.clear();
                self.patched.extend_from_slice(encoded);
                patch_frame_rate_code(&mut self.patched, code)
                    .map_err(|reason| encode_error(path, format!("FLAC: {reason}")))?;
                &self.patched
            }
        };
        self.file.write_all(bytes).map_err(|e| Error::io(path, e))?;
        let size = bytes.len();
        self.frame_bytes_range = Some(match self.frame_bytes_range {
            None => (size, size),
            Some((lo, hi)) => (lo.min(size), hi.max(size)),
        });
        self.frame_number += 1;
        self.total_frames += self.pending_frames as u64;
        self.pending_frames = 0;
        Ok(())
    }

    /// Writes `STREAMINFO` at the current position. Frame sizes not known yet (no frame written)
    /// are 0, "unknown", as in the reference encoder.
    fn write_stream_info(&mut self, path: &Path, md5: [u8; 16]) -> Result<()> {
        let (min_frame, max_frame) = self.frame_bytes_range.unwrap_or((0, 0));
        // The fields are 24 bits wide; a size that does not fit is written as 0, "unknown" (a
        // truncated size would mislead readers that size their buffers by it). Frames are never
        // larger than verbatim ones, so for 4096 frames of at most 8 channels this cannot happen.
        let field = |bytes: usize| u32::try_from(bytes).ok().filter(|&b| b < 1 << 24);
        let bytes = stream_info_bytes(&StreamInfoFields {
            block_frames: FLAC_BLOCK_FRAMES as u16,
            min_frame_bytes: field(min_frame).unwrap_or(0),
            max_frame_bytes: field(max_frame).unwrap_or(0),
            sample_rate_hz: self.sample_rate_hz,
            channel_count: self.channel_count as u8,
            bit_depth: self.bit_depth as u8,
            total_frames: self.total_frames,
            md5,
        });
        self.file.write_all(&bytes).map_err(|e| Error::io(path, e))
    }

    fn finish(mut self, path: &Path) -> Result<()> {
        if self.pending_frames > 0 {
            self.encode_frame(path)?;
        }
        self.file
            .seek(SeekFrom::Start(STREAMINFO_OFFSET))
            .map_err(|e| Error::io(path, e))?;
        let md5 = self.context.md5_digest();
        self.write_stream_info(path, md5)?;
        self.file.flush().map_err(|e| Error::io(path, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(path, e))
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

/// Rewrites the sample-rate code of an encoded frame written for 96 kHz, then its header CRC-8
/// and frame CRC-16.
fn patch_frame_rate_code(frame: &mut [u8], code: u8) -> Result<(), String> {
    let malformed = || "unexpected frame header from the encoder".to_string();
    if frame.len() < 8 || frame[0] != 0xFF || frame[2] & 0x0F != RATE_CODE_96K {
        return Err(malformed());
    }
    frame[2] = (frame[2] & 0xF0) | code;
    // Header: 4 fixed bytes, the UTF-8-style frame number, an optional block size, then CRC-8.
    let utf8_len = match frame[4].leading_ones() {
        0 => 1,
        n @ 2..=7 => n as usize,
        _ => return Err(malformed()),
    };
    let block_size_len = match frame[2] >> 4 {
        0b0110 => 1,
        0b0111 => 2,
        _ => 0,
    };
    let crc8_at = 4 + utf8_len + block_size_len;
    if crc8_at + 3 > frame.len() {
        return Err(malformed());
    }
    frame[crc8_at] = crc8(&frame[..crc8_at]);
    let crc16_at = frame.len() - 2;
    let crc = crc16(&frame[..crc16_at]);
    frame[crc16_at..].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// FLAC's header CRC-8: polynomial 0x07, initial value 0.
fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// FLAC's frame CRC-16: polynomial 0x8005, initial value 0 (table-driven: frames are large).
fn crc16(bytes: &[u8]) -> u16 {
    const TABLE: [u16; 256] = {
        let mut table = [0u16; 256];
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
            table[i] = r;
            i += 1;
        }
        table
    };
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// Finest residual partitioning tried: 2^8 partitions (16 frames each in a 4096-frame block).
const MAX_PARTITION_ORDER: u32 = 8;

/// Largest parameter of 4-bit Rice coding (`RICE`); 15 is its escape code.
const MAX_RICE_PARAM: u32 = 14;

/// Largest parameter of 5-bit Rice coding (`RICE2`); 31 is its escape code.
const MAX_RICE2_PARAM: u32 = 30;

/// Coefficients of FLAC's fixed predictors of order 0 to 4 (`x[t] ≈ Σ c[j] x[t-1-j]`).
const FIXED_COEFFICIENTS: [&[i64]; 5] = [&[], &[1], &[2, -1], &[3, -3, 1], &[4, -6, 4, -1]];

/// Serialises the frames flacenc analyses, with lathe's own residual coder.
///
/// flacenc (0.5.1) decides the stereo mode and each subframe's predictor well, but its residual
/// coder is only fit for 16-bit audio: it has no 5-bit Rice parameters (`RICE2`, needed once
/// residuals pass about 2^15, which loud 24-bit material does all the time), so it codes them with
/// parameter 14 and long unary runs, several times larger than verbatim; and its parameter search
/// packs each cost with its parameter into a `u32` assuming costs below 2^28, which merged
/// partitions of such residuals exceed, so the packed value wraps, parameter 0 looks cheapest and
/// a frame of hundreds of megabits comes out. Nor does it check the coded size against verbatim.
///
/// So each subframe is written here: constant and verbatim ones as they are, predicted ones with
/// flacenc's predictor (fixed order, or quantised LPC coefficients) and a residual coded with
/// partitioned Rice coding, 4- or 5-bit parameters, partition order and parameters chosen from the
/// partition sums, then counted exactly; a subframe that would not be smaller than verbatim is
/// written verbatim, and one that flacenc left verbatim gets the best fixed predictor if that is
/// smaller. No frame is ever larger than its verbatim form.
struct FrameWriter {
    out: BitWriter,
    /// The frame header as flacenc writes it (byte-aligned, with its CRC-8).
    header: ByteSink,
    /// The samples of the subframe being written (for a side channel, `left - right`).
    channel: Vec<i32>,
    /// Its prediction residual, zigzag-folded (`0, -1, 1, -2, ...` to `0, 1, 2, 3, ...`), with
    /// zeros in place of the warm-up samples.
    folded: Vec<u32>,
    rice: RiceCoder,
}

impl FrameWriter {
    fn new() -> Self {
        Self {
            out: BitWriter::default(),
            header: ByteSink::new(),
            channel: Vec::with_capacity(FLAC_BLOCK_FRAMES),
            folded: Vec::with_capacity(FLAC_BLOCK_FRAMES),
            rice: RiceCoder::default(),
        }
    }

    /// Writes `frame`, the analysis of `samples` (planar, channel `c` at `c * stride`), and
    /// returns its bytes.
    fn write(&mut self, frame: &Frame, samples: &[i32], stride: usize) -> Result<&[u8], String> {
        let n = frame.block_size();
        self.out.clear();
        self.header.clear();
        frame
            .header()
            .write(&mut self.header)
            .map_err(|e| e.to_string())?;
        self.out.put_bytes(self.header.as_slice());
        let assignment = frame.header().channel_assignment();
        for index in 0..frame.subframe_count() {
            let subframe = frame
                .subframe(index)
                .ok_or_else(|| format!("subframe {index} missing from the encoder's frame"))?;
            self.load_channel(assignment, index, samples, stride, n)?;
            self.write_subframe(subframe)?;
        }
        self.out.align();
        let crc = crc16(self.out.bytes());
        self.out.put_bytes(&crc.to_be_bytes());
        self.out.align();
        Ok(self.out.bytes())
    }

    /// Puts the samples of subframe `index` in `self.channel`: a channel, or for stereo
    /// decorrelation the side (`left - right`) or mid (`(left + right) >> 1`) signal.
    fn load_channel(
        &mut self,
        assignment: &ChannelAssignment,
        index: usize,
        samples: &[i32],
        stride: usize,
        n: usize,
    ) -> Result<(), String> {
        let channel = |c: usize| &samples[c * stride..c * stride + n];
        self.channel.clear();
        let side = || channel(0).iter().zip(channel(1)).map(|(&l, &r)| l - r);
        match (assignment, index) {
            (ChannelAssignment::Independent(_), c)
            | (ChannelAssignment::LeftSide, c @ 0)
            | (ChannelAssignment::RightSide, c @ 1) => self.channel.extend_from_slice(channel(c)),
            (ChannelAssignment::LeftSide | ChannelAssignment::MidSide, 1)
            | (ChannelAssignment::RightSide, 0) => self.channel.extend(side()),
            (ChannelAssignment::MidSide, 0) => self.channel.extend(
                channel(0)
                    .iter()
                    .zip(channel(1))
                    .map(|(&l, &r)| (l + r) >> 1),
            ),
            (other, _) => return Err(format!("unexpected subframe {index} for {other:?}")),
        }
        Ok(())
    }

    fn write_subframe(&mut self, subframe: &SubFrame) -> Result<(), String> {
        let mismatch = || "the encoder's subframe does not match the samples".to_string();
        match subframe {
            SubFrame::Constant(c) => {
                let bits = c.bits_per_sample() as u32;
                if self.channel.iter().any(|&x| x != c.dc_offset()) {
                    return Err(mismatch());
                }
                self.out.put(0x00, 8);
                self.out.put_signed(c.dc_offset(), bits);
            }
            SubFrame::Verbatim(v) => {
                if v.samples() != self.channel {
                    return Err(mismatch());
                }
                self.write_best_fixed(v.bits_per_sample() as u32);
            }
            SubFrame::FixedLpc(f) => {
                let order = f.order();
                if f.warm_up() != &self.channel[..order] {
                    return Err(mismatch());
                }
                let bits = f.bits_per_sample() as u32;
                let header = 0x10 | (order as u64) << 1;
                self.write_predicted(header, FIXED_COEFFICIENTS[order], 0, bits, None);
            }
            SubFrame::Lpc(l) => {
                let order = l.order();
                let params = l.parameters();
                let coefficients: Option<Vec<i64>> = (0..order)
                    .map(|j| params.coefficient(j).map(i64::from))
                    .collect();
                // The header holds the shift in 5 bits, signed (negative shifts are invalid),
                // and the precision minus 1 in 4 bits (all ones invalid).
                let shift = u32::try_from(params.shift()).ok().filter(|&s| s < 16);
                let precision = Some(params.precision() as u32).filter(|p| (1..16).contains(p));
                let (Some(coefficients), Some(shift), Some(precision)) =
                    (coefficients, shift, precision)
                else {
                    return Err("unexpected LPC parameters from the encoder".to_string());
                };
                if l.warm_up() != &self.channel[..order] {
                    return Err(mismatch());
                }
                let bits = l.bits_per_sample() as u32;
                let header = 0x40 | ((order - 1) as u64) << 1;
                let lpc = LpcHeader { precision, shift };
                self.write_predicted(header, &coefficients, shift, bits, Some(lpc));
            }
        }
        Ok(())
    }

    /// Writes the subframe with the fixed predictor that codes it smallest, or verbatim.
    fn write_best_fixed(&mut self, bits: u32) {
        let mut best: Option<(usize, u64)> = None;
        for (order, coefficients) in FIXED_COEFFICIENTS.iter().enumerate() {
            if !fold_residual(&self.channel, coefficients, 0, &mut self.folded) {
                continue;
            }
            if let Some(plan) = self.rice.plan(&self.folded, order) {
                let total = order as u64 * u64::from(bits) + plan.bits;
                if best.is_none_or(|(_, b)| total < b) {
                    best = Some((order, total));
                }
            }
        }
        match best {
            Some((order, _)) => {
                let header = 0x10 | (order as u64) << 1;
                self.write_predicted(header, FIXED_COEFFICIENTS[order], 0, bits, None);
            }
            None => self.write_verbatim(bits),
        }
    }

    /// Writes a predicted subframe (`header` is its first byte: type and order), or the verbatim
    /// subframe if that is no larger.
    fn write_predicted(
        &mut self,
        header: u64,
        coefficients: &[i64],
        shift: u32,
        bits: u32,
        lpc: Option<LpcHeader>,
    ) {
        let order = coefficients.len();
        let n = self.channel.len();
        let plan = fold_residual(&self.channel, coefficients, shift, &mut self.folded)
            .then(|| self.rice.plan(&self.folded, order))
            .flatten();
        let Some(plan) = plan else {
            self.write_verbatim(bits);
            return;
        };
        let lpc_bits = lpc.map_or(0, |h| 4 + 5 + u64::from(h.precision) * order as u64);
        let total = 8 + order as u64 * u64::from(bits) + lpc_bits + plan.bits;
        if total >= verbatim_subframe_bits(n, bits) {
            self.write_verbatim(bits);
            return;
        }
        self.out.put(header, 8);
        for &x in &self.channel[..order] {
            self.out.put_signed(x, bits);
        }
        if let Some(h) = lpc {
            self.out.put(u64::from(h.precision - 1), 4);
            self.out.put(u64::from(h.shift), 5);
            for &c in coefficients {
                self.out.put_signed(c as i32, h.precision);
            }
        }
        self.rice.write(&mut self.out, &self.folded, order, plan);
    }

    fn write_verbatim(&mut self, bits: u32) {
        self.out.put(0x02, 8);
        for &x in &self.channel {
            self.out.put_signed(x, bits);
        }
    }
}

/// Size of a verbatim subframe: its header byte and the samples.
fn verbatim_subframe_bits(n: usize, bits: u32) -> u64 {
    8 + n as u64 * u64::from(bits)
}

/// The fields an LPC subframe has before its residual besides the warm-up samples.
#[derive(Clone, Copy)]
struct LpcHeader {
    /// Bits per coefficient.
    precision: u32,
    /// Right shift of the prediction.
    shift: u32,
}

/// Computes the residual `x[t] - (Σ c[j] x[t-1-j] >> shift)` for `t >= order` into `folded`,
/// zigzag-folded, with zeros for the warm-up samples. Returns false if a residual does not fit
/// FLAC's 32-bit signed range, or if there are fewer samples than coefficients.
fn fold_residual(x: &[i32], coefficients: &[i64], shift: u32, folded: &mut Vec<u32>) -> bool {
    if x.len() < coefficients.len() {
        return false;
    }
    folded.clear();
    folded.resize(x.len(), 0);
    // Orders up to 8 (all fixed predictors, and the LPC order lathe configures) get a loop the
    // compiler unrolls.
    match coefficients.len() {
        0 => fold_with::<0>(x, coefficients, shift, folded),
        1 => fold_with::<1>(x, coefficients, shift, folded),
        2 => fold_with::<2>(x, coefficients, shift, folded),
        3 => fold_with::<3>(x, coefficients, shift, folded),
        4 => fold_with::<4>(x, coefficients, shift, folded),
        5 => fold_with::<5>(x, coefficients, shift, folded),
        6 => fold_with::<6>(x, coefficients, shift, folded),
        7 => fold_with::<7>(x, coefficients, shift, folded),
        8 => fold_with::<8>(x, coefficients, shift, folded),
        _ => fold_any(x, coefficients, shift, folded),
    }
}

fn fold_with<const N: usize>(
    x: &[i32],
    coefficients: &[i64],
    shift: u32,
    folded: &mut [u32],
) -> bool {
    let Ok(c) = <[i64; N]>::try_from(coefficients) else {
        return false;
    };
    let mut in_range = true;
    for (window, out) in x.windows(N + 1).zip(&mut folded[N..]) {
        let mut prediction = 0i64;
        for j in 0..N {
            prediction += c[j] * i64::from(window[N - 1 - j]);
        }
        let e = i64::from(window[N]) - (prediction >> shift);
        in_range &= i32::try_from(e).is_ok();
        *out = fold(e as i32);
    }
    in_range
}

fn fold_any(x: &[i32], coefficients: &[i64], shift: u32, folded: &mut [u32]) -> bool {
    let order = coefficients.len();
    let mut in_range = true;
    for (window, out) in x.windows(order + 1).zip(&mut folded[order..]) {
        let prediction: i64 = coefficients
            .iter()
            .zip(window[..order].iter().rev())
            .map(|(&c, &s)| c * i64::from(s))
            .sum();
        let e = i64::from(window[order]) - (prediction >> shift);
        in_range &= i32::try_from(e).is_ok();
        *out = fold(e as i32);
    }
    in_range
}

/// Zigzag folding: `0, -1, 1, -2, 2, ...` to `0, 1, 2, 3, 4, ...`.
#[inline]
fn fold(e: i32) -> u32 {
    ((e << 1) ^ (e >> 31)) as u32
}

/// How a residual is Rice-coded: the parameters themselves are in [`RiceCoder::params`].
#[derive(Debug, Clone, Copy)]
struct RicePlan {
    partition_order: u32,
    /// 5-bit parameters (`RICE2`) rather than 4-bit ones.
    rice2: bool,
    /// Exact size of the coded residual, headers included.
    bits: u64,
}

/// Partitioned Rice coding of residuals, with reused buffers.
#[derive(Default)]
struct RiceCoder {
    /// Sum of the folded residuals of each partition at the order being tried.
    sums: Vec<u64>,
    /// Best 4-bit and 5-bit parameters at the order being tried.
    params4: Vec<u8>,
    params5: Vec<u8>,
    /// Parameters of the plan returned last.
    params: Vec<u8>,
}

impl RiceCoder {
    /// Chooses partition order and parameters for `folded` (whose first `warm_up` values are not
    /// coded) and returns the exact size; `None` if the residual cannot be partitioned (fewer
    /// samples than warm-up).
    ///
    /// Every partition order from the finest allowed to 0 is tried, with each partition's
    /// parameter chosen from its sum: `count * (p + 1) + (sum >> p)` bits, which is within `count`
    /// bits of the exact size. The finest order is limited by [`MAX_PARTITION_ORDER`], by the
    /// block size (partitions are equal, so `n` must divide by their number), and by the warm-up
    /// (the first partition must hold at least one coded sample).
    fn plan(&mut self, folded: &[u32], warm_up: usize) -> Option<RicePlan> {
        let n = folded.len();
        if n < warm_up {
            return None;
        }
        let mut order = MAX_PARTITION_ORDER.min(n.trailing_zeros());
        while order > 0 && n >> order <= warm_up {
            order -= 1;
        }
        let mut len = n >> order;
        self.sums.clear();
        self.sums.extend(
            folded
                .chunks_exact(len)
                .map(|c| c.iter().map(|&u| u64::from(u)).sum::<u64>()),
        );
        let mut best: Option<(u64, u32, bool)> = None;
        loop {
            let parts = self.sums.len();
            self.params4.clear();
            self.params5.clear();
            let (mut bits4, mut bits5) = (parts as u64 * 4, parts as u64 * 5);
            for (k, &sum) in self.sums.iter().enumerate() {
                let count = (len - if k == 0 { warm_up } else { 0 }) as u64;
                let (p4, b4) = rice_parameter(sum, count, MAX_RICE_PARAM);
                let (p5, b5) = rice_parameter(sum, count, MAX_RICE2_PARAM);
                self.params4.push(p4 as u8);
                self.params5.push(p5 as u8);
                bits4 += b4;
                bits5 += b5;
            }
            let (bits, rice2) = if bits5 < bits4 {
                (bits5, true)
            } else {
                (bits4, false)
            };
            if best.is_none_or(|(b, _, _)| bits < b) {
                best = Some((bits, order, rice2));
                self.params.clear();
                self.params
                    .extend_from_slice(if rice2 { &self.params5 } else { &self.params4 });
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
        let (_, partition_order, rice2) = best?;
        let len = n >> partition_order;
        let param_bits = if rice2 { 5 } else { 4 };
        let mut bits = 2 + 4;
        for (k, &p) in self.params.iter().enumerate() {
            let start = if k == 0 { warm_up } else { k * len };
            let coded = &folded[start..(k + 1) * len];
            let unary: u64 = coded.iter().map(|&u| u64::from(u >> p)).sum();
            bits += param_bits + coded.len() as u64 * (u64::from(p) + 1) + unary;
        }
        Some(RicePlan {
            partition_order,
            rice2,
            bits,
        })
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
            for &u in &folded[start..(k + 1) * len] {
                out.put_rice(u, u32::from(p));
            }
        }
    }
}

/// The Rice parameter up to `max_param` that codes `count` values summing to `sum` smallest, and
/// the estimated size: `count * (p + 1)` for the stop bits and remainders, `sum >> p` for the
/// unary quotients (exact to within `count` bits).
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

/// An MSB-first bit writer into a byte vector.
#[derive(Default)]
struct BitWriter {
    /// Whole 32-bit words written so far (then, after [`BitWriter::align`], whole bytes).
    bytes: Vec<u8>,
    /// Bits not yet in `bytes`: the low `pending` bits (fewer than 32 between calls).
    acc: u64,
    pending: u32,
}

impl BitWriter {
    fn clear(&mut self) {
        self.bytes.clear();
        self.acc = 0;
        self.pending = 0;
    }

    /// Appends the low `bits` bits of `value` (at most 32; higher bits must be zero).
    #[inline]
    fn put(&mut self, value: u64, bits: u32) {
        debug_assert!(bits <= 32 && value >> bits == 0);
        // `pending + bits` stays below 64, and the bits shifted out of `acc` are already out.
        self.acc = (self.acc << bits) | value;
        self.pending += bits;
        if self.pending >= 32 {
            self.pending -= 32;
            let word = (self.acc >> self.pending) as u32;
            self.bytes.extend_from_slice(&word.to_be_bytes());
        }
    }

    /// Appends `value` as a `bits`-bit two's complement number.
    #[inline]
    fn put_signed(&mut self, value: i32, bits: u32) {
        self.put(i64::from(value) as u64 & ((1 << bits) - 1), bits);
    }

    /// Appends `value` Rice-coded with parameter `p`: `value >> p` zeros, a one, then the low `p`
    /// bits.
    #[inline]
    fn put_rice(&mut self, value: u32, p: u32) {
        let quotient = value >> p;
        let code = (1 << p) | (u64::from(value) & ((1 << p) - 1));
        if quotient < 32 - p {
            // The leading zeros of a (quotient + p + 1)-bit field are the unary part.
            self.put(code, quotient + p + 1);
        } else {
            let mut zeros = quotient;
            while zeros > 0 {
                let run = zeros.min(32);
                self.put(0, run);
                zeros -= run;
            }
            self.put(code, p + 1);
        }
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        if self.pending == 0 {
            self.bytes.extend_from_slice(bytes);
        } else {
            for &b in bytes {
                self.put(u64::from(b), 8);
            }
        }
    }

    /// Pads with zeros to a byte boundary and moves the pending whole bytes to `bytes`.
    fn align(&mut self) {
        self.put(0, (8 - self.pending % 8) % 8);
        while self.pending > 0 {
            self.pending -= 8;
            self.bytes.push((self.acc >> self.pending) as u8);
        }
    }

    /// The bytes written up to the last [`BitWriter::align`].
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The FLAC encoder configuration: fixed 4096-frame blocks, single-threaded (workers run one
/// track per core), stereo decorrelation tried per frame.
///
/// Prediction depends on how the crate was compiled. flacenc's LPC analysis is built on
/// `f32::mul_add`; without the FMA instruction enabled at compile time (the default x86-64
/// target) every `mul_add` is a libm call and LPC runs at under 100x realtime for 44.1 kHz 24-bit
/// stereo. So:
/// - built with FMA (e.g. `-C target-cpu=x86-64-v3`): LPC of order 8, the size of `flac -5`;
/// - otherwise: the fixed polynomial predictors only (like `flac -2`), a few percent larger.
///
/// flacenc's own Rice coding (and so its `prc` settings) is not used: [`FrameWriter`] codes the
/// residuals.
fn flac_config() -> flacenc::config::Encoder {
    let mut config = flacenc::config::Encoder::default();
    config.block_size = FLAC_BLOCK_FRAMES;
    config.multithread = false;
    if cfg!(target_feature = "fma") {
        config.subframe_coding.use_fixed = false;
        config.subframe_coding.qlpc.lpc_order = 8;
    } else {
        config.subframe_coding.use_lpc = false;
    }
    config
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
    fn encode(path: &Path, spec: EncodeSpec, signal: &AudioBlock, block: usize) {
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

    fn flac_test(path: &Path) -> String {
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
        let subframe_bits = |bits: usize| 8 + FLAC_BLOCK_FRAMES * bits;
        let body_bits = channels * subframe_bits(bits as usize) + side * FLAC_BLOCK_FRAMES;
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
        use crate::master::dither::{DitherMode, Quantiser as Dither};
        use crate::stage::Stage;
        let (name, recipe) = crate::synth::demo_album(44_100).remove(4);
        assert_eq!((name.as_str(), recipe.channel_count), ("05-old-radio", 1));
        let mut synth = crate::synth::TrackSynth::new(&recipe);
        let mut dither = Dither::new(DitherMode::Tpdf, 24, 1, 44_100, 7).unwrap();
        let mut block = AudioBlock::new(1, 4096, 44_100);
        let mut master = Vec::new();
        while synth.read(&mut block) > 0 {
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
        let plan = coder.plan(&folded, 0).unwrap();
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
        assert!(!coder.plan(&small, 2).unwrap().rice2);
        // The planned size is exactly what is written.
        let mut out = BitWriter::default();
        let plan = coder.plan(&folded, 3).unwrap();
        coder.write(&mut out, &folded, 3, plan);
        out.align();
        assert_eq!(out.bytes().len() as u64, plan.bits.div_ceil(8));
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
        let mut out = BitWriter::default();
        out.put(0b101, 3);
        out.put_signed(-1, 5);
        out.put_rice(5, 1); // quotient 2: "00", stop bit, remainder 1
        out.put_rice(3 << 20, 2); // a unary run longer than one `put`
        out.align();
        let mut expected = vec![0b1011_1111, 0b0011_0000];
        expected.extend(std::iter::repeat_n(0, (3 << 18) / 8 - 1));
        expected.push(0b0000_1000);
        assert_eq!(out.bytes()[..2], expected[..2]);
        assert_eq!(out.bytes().len(), expected.len());
        assert_eq!(out.bytes(), &expected[..]);
    }

    /// FLAC speed and size against the reference encoder:
    /// `cargo test -p lathe-engine --release encode::tests::flac_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark"]
    fn flac_speed_and_size_against_flac_5() {
        let dir = tempfile::tempdir().unwrap();
        // 60 s of music-like 24-bit stereo: decaying partials plus a little noise, dithered.
        let rate = 44_100;
        let frames = 60 * rate as usize;
        let noise = crate::testkit::noise(2, frames, rate, 1.0, 4);
        let channels: Vec<Vec<f32>> = (0..2)
            .map(|ch| {
                (0..frames)
                    .map(|n| {
                        let t = n as f64 / f64::from(rate);
                        let note = (t * 2.0).floor();
                        let env = (-(t * 2.0 - note) * 3.0).exp();
                        let f0 = 110.0 * 2f64.powf((note % 12.0) / 12.0);
                        let mut x = 0.0;
                        for h in 1..8 {
                            x += (std::f64::consts::TAU * f0 * h as f64 * t + ch as f64).sin()
                                / h as f64;
                        }
                        let x = 0.25 * env * x + 0.002 * f64::from(noise.channel(ch)[n]);
                        ((x * 8_388_608.0).round() / 8_388_608.0) as f32
                    })
                    .collect()
            })
            .collect();
        let signal = AudioBlock::from_channels(channels, rate);
        let ours = dir.path().join("ours.flac");
        let start = std::time::Instant::now();
        encode(
            &ours,
            EncodeSpec {
                container: Container::Flac,
                bit_depth: 24,
            },
            &signal,
            4096,
        );
        let ours_seconds = start.elapsed().as_secs_f64();

        let wav = dir.path().join("ref.wav");
        encode(
            &wav,
            EncodeSpec {
                container: Container::Wav,
                bit_depth: 24,
            },
            &signal,
            4096,
        );
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
        let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
        println!(
            "FLAC 24-bit stereo 44.1 kHz: ours {:.0}x realtime, {:.0} kB; flac -5 {:.0}x realtime, \
             {:.0} kB; size ratio {:.3}",
            60.0 / ours_seconds,
            size(&ours) / 1000.0,
            60.0 / ref_seconds,
            size(&reference) / 1000.0,
            size(&ours) / size(&reference)
        );
        let start = std::time::Instant::now();
        decode_all(&ours, 4096).unwrap();
        println!(
            "decode FLAC: {:.0}x realtime",
            60.0 / start.elapsed().as_secs_f64()
        );
        let mp3 = dir.path().join("ref.mp3");
        crate::decode::fixtures::ffmpeg(&wav, &["-c:a", "libmp3lame", "-b:a", "320k"], &mp3);
        let start = std::time::Instant::now();
        decode_all(&mp3, 4096).unwrap();
        println!(
            "decode MP3 320k: {:.0}x realtime",
            60.0 / start.elapsed().as_secs_f64()
        );
    }

    #[test]
    #[ignore = "scratch"]
    fn scratch_repro() {
        let path = std::path::Path::new(&std::env::var("SRC").unwrap()).to_path_buf();
        let out = std::path::PathBuf::from(std::env::var("OUT").unwrap());
        let mut d = Decoder::open(&path).unwrap();
        let info = d.info().clone();
        let mut b = AudioBlock::new(info.channel_count, 4096, info.sample_rate_hz);
        let mut all = AudioBlock::new(info.channel_count, 4_000_000, info.sample_rate_hz);
        while d.read(&mut b).unwrap() > 0 {
            all.append(&b);
        }
        let t = std::time::Instant::now();
        encode(
            &out,
            EncodeSpec {
                container: Container::Flac,
                bit_depth: 24,
            },
            &all,
            4096,
        );
        eprintln!(
            "frames {} encode {:?} size {}",
            all.frames(),
            t.elapsed(),
            std::fs::metadata(&out).unwrap().len()
        );
        let r = decode_all(&out, 4096);
        match r {
            Ok(x) => {
                eprintln!("decoded {}", x.frames());
                assert_same_audio(&x, &all, 0.0);
            }
            Err(e) => eprintln!("ERR {e}"),
        }
    }

    #[test]
    #[ignore = "scratch"]
    fn scratch_synth() {
        use crate::stage::Stage;
        let gain: f32 = std::env::var("GAIN").unwrap().parse().unwrap();
        let dur: f64 = std::env::var("DUR").unwrap().parse().unwrap();
        let out = std::path::PathBuf::from(std::env::var("OUT").unwrap());
        let (_, recipe) = crate::synth::demo_album(44_100).remove(4);
        let recipe = crate::synth::TrackRecipe {
            duration_s: dur,
            ..recipe
        };
        let mut synth = crate::synth::TrackSynth::new(&recipe);
        let mut q = crate::master::dither::Quantiser::new(
            crate::master::dither::DitherMode::Tpdf,
            24,
            1,
            44_100,
            7,
        )
        .unwrap();
        let mut b = AudioBlock::new(1, 4096, 44_100);
        let mut all = AudioBlock::new(1, 4_000_000, 44_100);
        let t = std::time::Instant::now();
        while synth.read(&mut b) > 0 {
            for x in b.channel_mut(0) {
                *x *= gain;
            }
            q.process(&mut b);
            all.append(&b);
        }
        eprintln!("synth {:?}", t.elapsed());
        let t = std::time::Instant::now();
        encode(
            &out,
            EncodeSpec {
                container: Container::Flac,
                bit_depth: 24,
            },
            &all,
            4096,
        );
        eprintln!(
            "frames {} encode {:?} size {}",
            all.frames(),
            t.elapsed(),
            std::fs::metadata(&out).unwrap().len()
        );
        let r = decode_all(&out, 4096);
        match r {
            Ok(x) => {
                eprintln!("decoded {}", x.frames());
                assert_same_audio(&x, &all, 0.0);
            }
            Err(e) => eprintln!("ERR {e}"),
        }
    }

    #[test]
    #[ignore = "scratch"]
    fn scratch_speed() {
        use crate::stage::Stage;
        let dir = tempfile::tempdir().unwrap();
        for (track, gain) in [(1usize, 1.5f32), (4, 2.0), (3, 1.0)] {
            let (name, recipe) = crate::synth::demo_album(44_100).remove(track);
            let ch = recipe.channel_count;
            let mut synth = crate::synth::TrackSynth::new(&recipe);
            let mut q = crate::master::dither::Quantiser::new(
                crate::master::dither::DitherMode::Tpdf,
                24,
                ch,
                44_100,
                7,
            )
            .unwrap();
            let mut b = AudioBlock::new(ch, 4096, 44_100);
            let mut all = AudioBlock::new(ch, 4_000_000, 44_100);
            while synth.read(&mut b) > 0 {
                for c in b.channels_mut() {
                    for x in c {
                        *x = (*x * gain).clamp(-1.0, 1.0);
                    }
                }
                q.process(&mut b);
                all.append(&b);
            }
            let out = dir.path().join("s.flac");
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                encode(
                    &out,
                    EncodeSpec {
                        container: Container::Flac,
                        bit_depth: 24,
                    },
                    &all,
                    4096,
                );
                best = best.min(t.elapsed().as_secs_f64());
            }
            let secs = all.frames() as f64 / 44_100.0;
            let wav = dir.path().join("s.wav");
            encode(
                &wav,
                EncodeSpec {
                    container: Container::Wav,
                    bit_depth: 24,
                },
                &all,
                4096,
            );
            let reference = dir.path().join("r.flac");
            Command::new("flac")
                .args(["-s", "-f", "-5", "-o"])
                .arg(&reference)
                .arg(&wav)
                .status()
                .unwrap();
            let size = |p: &Path| std::fs::metadata(p).unwrap().len();
            eprintln!(
                "{name} ({ch} ch): {:.0}x realtime, {} bytes, flac -5 {} bytes, ratio {:.3}",
                secs / best,
                size(&out),
                size(&reference),
                size(&out) as f64 / size(&reference) as f64
            );
        }
    }
}
