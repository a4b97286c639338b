//! lathe's own reader of the RIFF-family WAV headers Symphonia does not read: RF64 (EBU Tech 3306)
//! and BW64 (ITU-R BS.2088), whose 64-bit sizes sit in a `ds64` chunk; Sony Wave64, whose chunks
//! have 16-byte GUID ids and 64-bit sizes; and RIFF WAV written to a pipe, whose RIFF and data
//! sizes are placeholders (0xFFFFFFFF, or 0) because the writer could not seek back to fill them.
//!
//! Only the header is read here: the `fmt` chunk (`WAVE_FORMAT_PCM`, `WAVE_FORMAT_IEEE_FLOAT`, or
//! `WAVE_FORMAT_EXTENSIBLE` with either as its sub-format), the `ds64` chunk, and the position and
//! length of the `data` chunk; every other chunk (`bext`, `JUNK`, `LIST`, `chna`, `axml`, ...) is
//! skipped. The samples are then read by [`super::pcm::PcmStream`], like those of a plain WAV.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use super::limits::Declared;
use super::pcm::SampleLayout;
use super::{decode_error, unsupported};
use crate::error::{Error, Result};

/// The RIFF size and data size that mean "see the ds64 chunk" (RF64, BW64) or "unknown: written
/// to a pipe" (RIFF).
const SIZE_PLACEHOLDER: u32 = u32::MAX;
/// The largest `fmt` or `ds64` chunk read (a `ds64` table of a few entries, an extensible `fmt`
/// with its extra bytes); anything larger is damage.
const MAX_HEADER_CHUNK_BYTES: u64 = 64 * 1024;

/// RIFF chunk ids.
const DS64: [u8; 4] = *b"ds64";
const FMT: [u8; 4] = *b"fmt ";
const DATA: [u8; 4] = *b"data";

/// Wave64's GUIDs: the four-character code, then a fixed tail.
const W64_RIFF: [u8; 16] = *b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00";
const W64_WAVE: [u8; 16] = *b"wave\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a";
const W64_FMT: [u8; 16] = *b"fmt \xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a";
const W64_DATA: [u8; 16] = *b"data\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a";

/// `WAVE_FORMAT_EXTENSIBLE`'s sub-format GUID, after its first two bytes (the format tag).
const KSDATAFORMAT_TAIL: [u8; 14] = *b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71";

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xfffe;

/// The container family a WAV file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaveContainer {
    /// RIFF WAV (here only when its sizes are placeholders).
    Riff,
    /// EBU Tech 3306 RF64.
    Rf64,
    /// ITU-R BS.2088 BW64.
    Bw64,
    /// Sony Wave64.
    Wave64,
}

impl WaveContainer {
    /// The name [`super::SourceInfo::container`] gives it (`wave` as Symphonia names RIFF WAV).
    pub(super) fn short_name(self) -> &'static str {
        match self {
            Self::Riff => "wave",
            Self::Rf64 => "rf64",
            Self::Bw64 => "bw64",
            Self::Wave64 => "w64",
        }
    }

    /// What the file calls itself, for error messages.
    fn display_name(self) -> &'static str {
        match self {
            Self::Riff => "WAV",
            Self::Rf64 => "RF64",
            Self::Bw64 => "BW64",
            Self::Wave64 => "Wave64",
        }
    }
}

/// What a WAV header says about its audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WaveHeader {
    /// The container family.
    pub(super) container: WaveContainer,
    /// How each sample is stored.
    pub(super) layout: SampleLayout,
    /// The codec's short name, as Symphonia and ffmpeg name it (`pcm_s24le`, `pcm_f32le`, ...).
    pub(super) codec: &'static str,
    /// Samples per second.
    pub(super) sample_rate_hz: u32,
    /// Channels per frame.
    pub(super) channel_count: usize,
    /// Significant bits of each sample (an extensible header's valid bits).
    pub(super) bits_per_sample: u32,
    /// Where the first sample starts in the file.
    pub(super) data_start: u64,
    /// Whole frames in the data chunk (all of them are in the file: checked when it was read).
    pub(super) frames: u64,
}

/// Reads the header of `file` (its whole length `file_len` bytes) if it is a WAV that lathe reads
/// itself: RF64, BW64, Wave64, or a RIFF WAV whose data chunk runs to the end of the file (its
/// length a placeholder). Returns `None` for every other file, a plain RIFF WAV included (even a
/// damaged one: Symphonia reads those and names their damage), and leaves the file's position
/// anywhere.
///
/// Every WAV's `fmt` chunk, a plain RIFF WAV's included, is held to lathe's limits on channels and
/// rate here, before Symphonia reads it; the data chunk's length, to `max_samples`
/// ([`super::MAX_SOURCE_SAMPLES`]) before it is compared with the file's (a plain RIFF WAV's 32-bit
/// size cannot reach the limit).
///
/// # Errors
/// For any WAV: [`Error::UnsupportedShape`] for a channel count or rate outside lathe's limits.
/// For an RF64, BW64, Wave64 or pipe-written WAV: [`Error::SourceTooLarge`] for a data chunk
/// of more than `max_samples` samples; [`Error::Decode`] for a header that is cut short or
/// contradicts itself, or a data chunk longer than the file (truncation); [`Error::Unsupported`]
/// for a codec other than integer or float PCM; [`Error::Io`].
pub(super) fn read_wave_header(
    path: &Path,
    file: &mut File,
    file_len: u64,
    max_samples: u64,
) -> Result<Option<WaveHeader>> {
    let mut magic = [0u8; 16];
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    if super::read_full(file, &mut magic).map_err(|e| Error::io(path, e))? < magic.len() {
        return Ok(None);
    }
    let container = if magic == W64_RIFF {
        WaveContainer::Wave64
    } else if &magic[8..12] != b"WAVE" {
        return Ok(None);
    } else {
        match &magic[..4] {
            b"RIFF" => WaveContainer::Riff,
            b"RF64" => WaveContainer::Rf64,
            b"BW64" => WaveContainer::Bw64,
            _ => return Ok(None),
        }
    };
    let mut reader = ChunkReader {
        path,
        file,
        file_len,
        container,
        max_samples,
    };
    match reader.read_header() {
        Ok(header) => Ok(Some(header)),
        Err(HeaderProblem::NotOurs) => Ok(None),
        Err(HeaderProblem::Io(e)) => Err(Error::io(path, e)),
        Err(HeaderProblem::OverLimit(error)) => Err(error),
        Err(HeaderProblem::DataDamaged(reason)) => Err(decode_error(path, &reason)),
        // A RIFF WAV whose header this reader cannot make sense of: Symphonia reads (or refuses)
        // it, and names what is wrong.
        Err(_) if container == WaveContainer::Riff => Ok(None),
        Err(HeaderProblem::Damaged(reason)) => Err(decode_error(path, &reason)),
        Err(HeaderProblem::Unsupported(reason)) => Err(unsupported(path, &reason)),
    }
}

/// Why a header was not read.
#[derive(Debug)]
enum HeaderProblem {
    /// A plain RIFF WAV with real sizes: Symphonia reads it.
    NotOurs,
    /// Reading the file failed.
    Io(std::io::Error),
    /// A header cut short or contradicting itself.
    Damaged(String),
    /// A data chunk longer than the file, or ending inside a frame, or at odds with the ds64
    /// chunk: damage in any container, a RIFF WAV included.
    DataDamaged(String),
    /// A codec lathe does not read from these containers.
    Unsupported(String),
    /// A shape or length outside lathe's limits, in any container, a RIFF WAV included.
    OverLimit(Error),
}

impl From<std::io::Error> for HeaderProblem {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == ErrorKind::UnexpectedEof {
            Self::Damaged("truncated: the file ends inside its header".to_string())
        } else {
            Self::Io(error)
        }
    }
}

/// The sizes an RF64 or BW64 `ds64` chunk gives.
#[derive(Debug, Default)]
struct Ds64 {
    riff_size: u64,
    data_size: u64,
    sample_count: u64,
}

/// What the `fmt` chunk says.
#[derive(Debug)]
struct Format {
    layout: SampleLayout,
    codec: &'static str,
    sample_rate_hz: u32,
    channel_count: usize,
    bits_per_sample: u32,
}

/// Walks the chunks of one file.
struct ChunkReader<'a> {
    path: &'a Path,
    file: &'a mut File,
    file_len: u64,
    container: WaveContainer,
    /// The most samples the data chunk may hold.
    max_samples: u64,
}

impl ChunkReader<'_> {
    fn read_header(&mut self) -> Result<WaveHeader, HeaderProblem> {
        let name = self.container.display_name();
        let damaged =
            |what: String| HeaderProblem::Damaged(format!("corrupt {name} header: {what}"));
        // The first chunk starts after the RIFF header: 12 bytes, or Wave64's two GUIDs and size.
        let mut pos: u64 = if self.container == WaveContainer::Wave64 {
            self.expect_w64_wave()?;
            40
        } else {
            12
        };
        let mut ds64: Option<Ds64> = None;
        let mut format: Option<Format> = None;
        loop {
            let Some((id, body_len, header_len)) = self.chunk_header(pos)? else {
                return Err(HeaderProblem::Damaged(format!(
                    "truncated: the {name} file ends before its data chunk"
                )));
            };
            let body_start = pos + header_len;
            match &id {
                ChunkId::Riff(DS64) if pos == 12 => {
                    ds64 = Some(self.read_ds64(body_start, body_len)?);
                }
                ChunkId::Riff(FMT) => format = Some(self.read_format(body_start, body_len)?),
                ChunkId::Wave64(guid) if *guid == W64_FMT => {
                    format = Some(self.read_format(body_start, body_len)?);
                }
                ChunkId::Riff(DATA) => {
                    let format =
                        format.ok_or_else(|| damaged("no fmt chunk before the data".into()))?;
                    let declared = self.riff_data_len(body_len, ds64.as_ref())?;
                    return self.header_with_data(format, body_start, declared, ds64.as_ref());
                }
                ChunkId::Wave64(guid) if *guid == W64_DATA => {
                    let format =
                        format.ok_or_else(|| damaged("no fmt chunk before the data".into()))?;
                    return self.header_with_data(format, body_start, Some(body_len), None);
                }
                _ => {}
            }
            if self.container == WaveContainer::Riff && body_len == u64::from(SIZE_PLACEHOLDER) {
                // Only the data chunk may run to the end of the file.
                return Err(HeaderProblem::NotOurs);
            }
            // RIFF chunks are padded to an even length, Wave64 chunks to a multiple of 8 bytes.
            let end = body_start
                .checked_add(body_len)
                .ok_or_else(|| damaged("a chunk size overflows".into()))?;
            pos = match self.container {
                WaveContainer::Wave64 => end.next_multiple_of(8),
                _ => end + end % 2,
            };
        }
    }

    /// Checks the Wave64 `wave` GUID after the `riff` GUID and its size.
    fn expect_w64_wave(&mut self) -> Result<(), HeaderProblem> {
        let mut guid = [0u8; 16];
        self.file.seek(SeekFrom::Start(24))?;
        self.file.read_exact(&mut guid)?;
        if guid == W64_WAVE {
            Ok(())
        } else {
            Err(HeaderProblem::Unsupported(
                "a Wave64 file that holds no WAVE form".to_string(),
            ))
        }
    }

    /// The chunk header at `pos`: its id, the length of its body, and the header's own length.
    /// `None` at the end of the file.
    fn chunk_header(&mut self, pos: u64) -> Result<Option<(ChunkId, u64, u64)>, HeaderProblem> {
        let header_len: u64 = if self.container == WaveContainer::Wave64 {
            24
        } else {
            8
        };
        if pos + header_len > self.file_len {
            return Ok(None);
        }
        self.file.seek(SeekFrom::Start(pos))?;
        if self.container == WaveContainer::Wave64 {
            let mut header = [0u8; 24];
            self.file.read_exact(&mut header)?;
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&header[..16]);
            let size = u64::from_le_bytes(le8(&header[16..24]));
            // Wave64 sizes count the 24-byte header.
            let body_len = size.checked_sub(header_len).ok_or_else(|| {
                HeaderProblem::Damaged(format!(
                    "corrupt Wave64 header: a chunk of {size} bytes, shorter than its own header"
                ))
            })?;
            Ok(Some((ChunkId::Wave64(guid), body_len, header_len)))
        } else {
            let mut header = [0u8; 8];
            self.file.read_exact(&mut header)?;
            let id = [header[0], header[1], header[2], header[3]];
            let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            Ok(Some((ChunkId::Riff(id), u64::from(size), header_len)))
        }
    }

    /// Reads a chunk body that the parser needs whole (`fmt `, `ds64`).
    fn read_body(&mut self, start: u64, len: u64) -> Result<Vec<u8>, HeaderProblem> {
        if len > MAX_HEADER_CHUNK_BYTES {
            return Err(HeaderProblem::Damaged(format!(
                "corrupt {} header: a {len}-byte format chunk",
                self.container.display_name()
            )));
        }
        let mut body = vec![0u8; len as usize];
        self.file.seek(SeekFrom::Start(start))?;
        self.file.read_exact(&mut body)?;
        Ok(body)
    }

    fn read_ds64(&mut self, start: u64, len: u64) -> Result<Ds64, HeaderProblem> {
        if len < 24 {
            return Err(HeaderProblem::Damaged(format!(
                "corrupt {} header: a ds64 chunk of {len} bytes (at least 24)",
                self.container.display_name()
            )));
        }
        let body = self.read_body(start, len)?;
        Ok(Ds64 {
            riff_size: u64::from_le_bytes(le8(&body[0..8])),
            data_size: u64::from_le_bytes(le8(&body[8..16])),
            sample_count: u64::from_le_bytes(le8(&body[16..24])),
        })
    }

    fn read_format(&mut self, start: u64, len: u64) -> Result<Format, HeaderProblem> {
        let name = self.container.display_name();
        if len < 16 {
            return Err(HeaderProblem::Damaged(format!(
                "corrupt {name} header: a fmt chunk of {len} bytes (at least 16)"
            )));
        }
        let body = self.read_body(start, len)?;
        let u16_at = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]);
        let tag = u16_at(0);
        let channel_count = usize::from(u16_at(2));
        let sample_rate_hz = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
        // Whatever the format: every WAVEFORMATEX gives these two here.
        self.check(Declared {
            sample_rate_hz: Some(sample_rate_hz),
            channel_count: Some(channel_count),
            frames: None,
        })?;
        let block_align = usize::from(u16_at(12));
        let container_bits = u32::from(u16_at(14));
        let (format_tag, valid_bits) = if tag == WAVE_FORMAT_EXTENSIBLE {
            if body.len() < 40 || body[26..40] != KSDATAFORMAT_TAIL {
                return Err(HeaderProblem::Unsupported(format!(
                    "{name} with an extensible format lathe does not know"
                )));
            }
            let valid = u32::from(u16_at(18));
            (u16_at(24), if valid == 0 { container_bits } else { valid })
        } else {
            (tag, container_bits)
        };
        let (layout, codec) = match (format_tag, container_bits) {
            (WAVE_FORMAT_PCM, 8) => (SampleLayout::U8, "pcm_u8"),
            (WAVE_FORMAT_PCM, 16) => (SampleLayout::S16Le, "pcm_s16le"),
            (WAVE_FORMAT_PCM, 24) => (SampleLayout::S24Le, "pcm_s24le"),
            (WAVE_FORMAT_PCM, 32) => (SampleLayout::S32Le, "pcm_s32le"),
            (WAVE_FORMAT_IEEE_FLOAT, 32) => (SampleLayout::F32Le, "pcm_f32le"),
            (WAVE_FORMAT_IEEE_FLOAT, 64) => (SampleLayout::F64Le, "pcm_f64le"),
            _ => {
                return Err(HeaderProblem::Unsupported(format!(
                    "{name} with format tag {format_tag:#06x} and {container_bits}-bit samples; \
                     lathe reads 8/16/24/32-bit integer and 32/64-bit float PCM"
                )));
            }
        };
        if valid_bits == 0 || valid_bits > container_bits {
            return Err(HeaderProblem::Damaged(format!(
                "corrupt {name} header: {valid_bits} valid bits in {container_bits}-bit samples"
            )));
        }
        if channel_count == 0 || block_align != channel_count * layout.sample_bytes() {
            return Err(HeaderProblem::Damaged(format!(
                "corrupt {name} header: {channel_count} channels of {container_bits}-bit samples \
                 in frames of {block_align} bytes"
            )));
        }
        Ok(Format {
            layout,
            codec,
            sample_rate_hz,
            channel_count,
            bits_per_sample: valid_bits,
        })
    }

    /// The data length of a RIFF, RF64 or BW64 data chunk whose header gives `size`: itself, the
    /// ds64 chunk's, or `None` (a RIFF written to a pipe: to the end of the file).
    fn riff_data_len(&self, size: u64, ds64: Option<&Ds64>) -> Result<Option<u64>, HeaderProblem> {
        let placeholder = size == u64::from(SIZE_PLACEHOLDER);
        match (self.container, ds64) {
            (WaveContainer::Riff, _) if placeholder || size == 0 => Ok(None),
            (WaveContainer::Riff, _) => Err(HeaderProblem::NotOurs),
            (_, Some(ds64)) if placeholder => Ok(Some(ds64.data_size)),
            (_, None) if placeholder => Err(HeaderProblem::Damaged(format!(
                "corrupt {} header: the data size is in a ds64 chunk, and there is none",
                self.container.display_name()
            ))),
            _ => Ok(Some(size)),
        }
    }

    /// The header, once the data chunk is found at `data_start` with `declared` bytes (`None`: to
    /// the end of the file), checked against the file's length and the ds64 chunk's sizes.
    fn header_with_data(
        &self,
        format: Format,
        data_start: u64,
        declared: Option<u64>,
        ds64: Option<&Ds64>,
    ) -> Result<WaveHeader, HeaderProblem> {
        let name = self.container.display_name();
        let frame_bytes = (format.layout.sample_bytes() * format.channel_count) as u64;
        let held = self.file_len.saturating_sub(data_start);
        let frames = match declared {
            None => {
                // Written to a pipe: every byte to the end of the file is audio.
                if held % frame_bytes != 0 {
                    return Err(HeaderProblem::DataDamaged(format!(
                        "truncated: the audio ends inside a frame ({} of its {frame_bytes} bytes)",
                        held % frame_bytes
                    )));
                }
                held / frame_bytes
            }
            Some(len) => len / frame_bytes,
        };
        // What the header declares, before it is compared with what the file holds.
        self.check(Declared {
            sample_rate_hz: Some(format.sample_rate_hz),
            channel_count: Some(format.channel_count),
            frames: Some(frames),
        })?;
        if let Some(len) = declared
            && len > held
        {
            return Err(HeaderProblem::DataDamaged(format!(
                "truncated: expected {frames} frames, got {}",
                held / frame_bytes
            )));
        }
        if let Some(ds64) = ds64 {
            let data_end = data_start + declared.unwrap_or(held);
            if ds64.riff_size.saturating_add(8) < data_end {
                return Err(HeaderProblem::DataDamaged(format!(
                    "corrupt {name} header: the ds64 chunk's RIFF size ({} bytes) ends before \
                     its data chunk (at byte {data_end})",
                    ds64.riff_size
                )));
            }
            if ds64.sample_count != 0 && ds64.sample_count != frames {
                return Err(HeaderProblem::DataDamaged(format!(
                    "corrupt {name} header: the ds64 chunk counts {} frames, its data chunk \
                     holds {frames}",
                    ds64.sample_count
                )));
            }
        }
        Ok(WaveHeader {
            container: self.container,
            layout: format.layout,
            codec: format.codec,
            sample_rate_hz: format.sample_rate_hz,
            channel_count: format.channel_count,
            bits_per_sample: format.bits_per_sample,
            data_start,
            frames,
        })
    }

    /// Holds `declared` to lathe's limits.
    fn check(&self, declared: Declared) -> Result<(), HeaderProblem> {
        declared
            .check(self.path, self.max_samples)
            .map_err(HeaderProblem::OverLimit)
    }
}

/// A chunk's id: a four-character code (RIFF, RF64, BW64) or a GUID (Wave64).
#[derive(Debug)]
enum ChunkId {
    Riff([u8; 4]),
    Wave64([u8; 16]),
}

/// Eight little-endian bytes from a slice of exactly eight.
fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    b
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::audio::AudioBlock;
    use crate::decode::Decoder;
    use crate::decode::fixtures::{assert_same_audio, decode_all, ffmpeg, grid_signal, write_wav};

    /// A WAV of `grid_signal(channels, frames)` as `codec` would hold it: 16 or 24-bit integers
    /// (quantised to that grid) or 32-bit floats; the path and the samples.
    fn source_wav(
        dir: &Path,
        codec: &str,
        channels: usize,
        frames: usize,
    ) -> (PathBuf, AudioBlock) {
        let (bits, float) = match codec {
            "pcm_s16le" => (16, false),
            "pcm_s24le" => (24, false),
            "pcm_f32le" => (32, true),
            other => panic!("no source for {other}"),
        };
        let signal = grid_signal(channels, frames, 48_000, if float { 0 } else { bits });
        let path = dir.join(format!("source-{codec}-{channels}ch.wav"));
        write_wav(&path, &signal, bits as u16, float);
        (path, signal)
    }

    const CODECS: [&str; 3] = ["pcm_s16le", "pcm_s24le", "pcm_f32le"];

    /// Decodes `path` in blocks of a few sizes and asserts the same samples as `expected`, bit for
    /// bit, read straight from the data chunk, with the container and codec named.
    fn assert_decodes_to(path: &Path, expected: &AudioBlock, container: &str, codec: &str) {
        let decoder = Decoder::open(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(decoder.reads_pcm_directly(), "{}", path.display());
        let info = decoder.info();
        assert_eq!(info.container, container, "{}", path.display());
        assert_eq!(info.codec, codec, "{}", path.display());
        assert_eq!(info.frames, Some(expected.frames() as u64));
        assert_eq!(info.channel_count, expected.channel_count());
        for capacity in [1000, 4096] {
            let decoded = decode_all(path, capacity).unwrap();
            assert_same_audio(&decoded, expected, 0.0);
        }
    }

    #[test]
    fn rf64_from_ffmpeg_decodes_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for channels in [1, 2, 6] {
            for codec in CODECS {
                let (wav, signal) = source_wav(dir.path(), codec, channels, 50_001);
                let rf64 = dir.path().join(format!("rf64-{codec}-{channels}.wav"));
                ffmpeg(&wav, &["-c:a", codec, "-rf64", "always"], &rf64);
                assert_eq!(&std::fs::read(&rf64).unwrap()[..4], b"RF64");
                assert_decodes_to(&rf64, &signal, "rf64", codec);
            }
        }
    }

    /// A BW64 (or RF64) file of `samples` (interleaved little-endian bytes) as BS.2088 lays it
    /// out: ds64, an extensible fmt, a JUNK and an odd-length chna chunk, the data chunk (its
    /// size in the ds64 chunk) and an axml chunk after it. `data_bytes` may exceed
    /// `samples.len()`: the rest of the data is left to a sparse `set_len` by the caller.
    fn bw64_bytes(
        id: &[u8; 4],
        channels: u16,
        bits: u16,
        float: bool,
        samples: &[u8],
        data_bytes: u64,
    ) -> Vec<u8> {
        let axml = b"<ebuCoreMain/>";
        let mut fmt = Vec::new();
        let sample_bytes = bits / 8;
        fmt.extend(WAVE_FORMAT_EXTENSIBLE.to_le_bytes());
        fmt.extend(channels.to_le_bytes());
        fmt.extend(48_000u32.to_le_bytes());
        fmt.extend((48_000 * u32::from(channels * sample_bytes)).to_le_bytes());
        fmt.extend((channels * sample_bytes).to_le_bytes());
        fmt.extend(bits.to_le_bytes());
        fmt.extend(22u16.to_le_bytes());
        fmt.extend(bits.to_le_bytes());
        fmt.extend(0u32.to_le_bytes()); // channel mask
        let tag = if float {
            WAVE_FORMAT_IEEE_FLOAT
        } else {
            WAVE_FORMAT_PCM
        };
        fmt.extend(tag.to_le_bytes());
        fmt.extend(KSDATAFORMAT_TAIL);
        let chunk = |id: &[u8; 4], body: &[u8]| {
            let mut c = id.to_vec();
            c.extend((body.len() as u32).to_le_bytes());
            c.extend(body);
            if body.len() % 2 == 1 {
                c.push(0);
            }
            c
        };
        let mut after_ds64 = chunk(b"fmt ", &fmt);
        after_ds64.extend(chunk(b"JUNK", &[0; 28]));
        after_ds64.extend(chunk(b"chna", &[1, 2, 3]));
        after_ds64.extend(b"data");
        after_ds64.extend(u32::MAX.to_le_bytes());
        let axml_chunk = chunk(b"axml", axml);
        let ds64_len = 8 + 28;
        let riff_size = 4
            + ds64_len
            + after_ds64.len() as u64
            + data_bytes
            + data_bytes % 2
            + axml_chunk.len() as u64;
        let frame_bytes = u64::from(channels * sample_bytes);
        let mut ds64 = Vec::new();
        ds64.extend(riff_size.to_le_bytes());
        ds64.extend(data_bytes.to_le_bytes());
        ds64.extend((data_bytes / frame_bytes).to_le_bytes());
        ds64.extend(0u32.to_le_bytes());
        let mut bytes = id.to_vec();
        bytes.extend(u32::MAX.to_le_bytes());
        bytes.extend(b"WAVE");
        bytes.extend(chunk(b"ds64", &ds64));
        bytes.extend(after_ds64);
        bytes.extend(samples);
        if data_bytes == samples.len() as u64 {
            if data_bytes % 2 == 1 {
                bytes.push(0);
            }
            bytes.extend(axml_chunk);
        }
        bytes
    }

    /// `block`'s samples, interleaved, as little-endian 24-bit integers.
    fn interleaved_s24(block: &AudioBlock) -> Vec<u8> {
        let mut bytes = Vec::new();
        for n in 0..block.frames() {
            for ch in 0..block.channel_count() {
                let v = (f64::from(block.channel(ch)[n]) * 8_388_608.0).round() as i32;
                bytes.extend(&v.to_le_bytes()[..3]);
            }
        }
        bytes
    }

    #[test]
    fn bw64_with_bext_like_chunks_decodes_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // An odd number of frames of 3 mono bytes: the data chunk is padded.
        let signal = grid_signal(1, 40_001, 48_000, 24);
        let samples = interleaved_s24(&signal);
        let path = dir.path().join("adm.wav");
        let bytes = bw64_bytes(b"BW64", 1, 24, false, &samples, samples.len() as u64);
        std::fs::write(&path, &bytes).unwrap();
        assert_decodes_to(&path, &signal, "bw64", "pcm_s24le");

        // The same file claiming one frame more than it holds, or a frame count of its own.
        let mut longer = bytes.clone();
        let data_size_at = 12 + 8 + 8;
        longer[data_size_at..data_size_at + 8]
            .copy_from_slice(&(samples.len() as u64 + 3 * 1000).to_le_bytes());
        longer[data_size_at + 8..data_size_at + 16].copy_from_slice(&41_001u64.to_le_bytes());
        let mut miscounted = bytes.clone();
        miscounted[data_size_at + 8..data_size_at + 16].copy_from_slice(&7u64.to_le_bytes());
        for (name, bytes, reason) in [
            (
                "longer.wav",
                longer,
                "truncated: expected 41001 frames, got 40008",
            ),
            (
                "miscounted.wav",
                miscounted,
                "the ds64 chunk counts 7 frames, its data chunk holds 40001",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = Decoder::open(&path).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err:?}");
            assert!(err.to_string().contains(reason), "{err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn rf64_cut_short_is_refused_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = source_wav(dir.path(), "pcm_s16le", 2, 10_000);
        let rf64 = dir.path().join("cut.wav");
        ffmpeg(&wav, &["-rf64", "always"], &rf64);
        let len = std::fs::metadata(&rf64).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&rf64)
            .unwrap()
            .set_len(len - 4 * 2_500 - 1)
            .unwrap();
        let err = Decoder::open(&rf64).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(
            err.to_string()
                .ends_with("truncated: expected 10000 frames, got 7499"),
            "{err}"
        );
    }

    #[test]
    fn rf64_over_4_gib_reads_to_its_last_frames() {
        let dir = tempfile::tempdir().unwrap();
        // 64-bit float mono: the fewest samples for the bytes. 2^29 + 1000 frames, 4 GiB + 8000
        // bytes, all zeros (a hole in a sparse file) but the last 1000 frames.
        let tail: Vec<f64> = (0..1000).map(|n| (n as f64 - 500.0) / 512.0).collect();
        let frames = (1u64 << 29) + tail.len() as u64;
        let data_bytes = frames * 8;
        let header = bw64_bytes(b"RF64", 1, 64, true, &[], data_bytes);
        let path = dir.path().join("long.wav");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&header).unwrap();
        file.set_len(header.len() as u64 + data_bytes).unwrap();
        file.seek(SeekFrom::End(-(tail.len() as i64) * 8)).unwrap();
        let tail_bytes: Vec<u8> = tail.iter().flat_map(|x| x.to_le_bytes()).collect();
        file.write_all(&tail_bytes).unwrap();
        drop(file);

        let mut decoder = Decoder::open(&path).unwrap();
        assert_eq!(decoder.info().frames, Some(frames));
        assert_eq!(decoder.info().codec, "pcm_f64le");
        let mut block = AudioBlock::new(1, 1 << 16, 48_000);
        let mut read = 0u64;
        let mut last = Vec::new();
        loop {
            let n = decoder.read(&mut block).unwrap();
            if n == 0 {
                break;
            }
            read += n as u64;
            if read + (1 << 16) > frames {
                last.extend_from_slice(block.channel(0));
            }
        }
        assert_eq!(read, frames);
        let expected: Vec<f32> = tail.iter().map(|&x| x as f32).collect();
        assert_eq!(last[last.len() - tail.len()..], expected[..]);
        assert!(last[..last.len() - tail.len()].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn wave64_from_ffmpeg_and_sox_decodes_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for channels in [1, 2, 6] {
            for codec in CODECS {
                let (wav, signal) = source_wav(dir.path(), codec, channels, 50_001);
                // sox carries samples as 32-bit integers, so its float output is not the float
                // input: integers only.
                if codec != "pcm_f32le" {
                    let from_sox = dir.path().join(format!("sox-{codec}-{channels}.w64"));
                    let status = Command::new("sox")
                        .arg(&wav)
                        .arg(&from_sox)
                        .status()
                        .unwrap();
                    assert!(status.success());
                    assert_eq!(&std::fs::read(&from_sox).unwrap()[..16], &W64_RIFF);
                    assert_decodes_to(&from_sox, &signal, "w64", codec);
                }

                // ffmpeg counts the zeros that pad its data chunk to 8 bytes as data (its own
                // reader and sox decode them as frames too): the source's frames, then as many
                // zero frames as fit in the padding.
                let from_ffmpeg = dir.path().join(format!("ffmpeg-{codec}-{channels}.w64"));
                ffmpeg(&wav, &["-c:a", codec, "-f", "w64"], &from_ffmpeg);
                let frame_bytes = channels
                    * if codec == "pcm_s16le" {
                        2
                    } else {
                        3 + usize::from(codec == "pcm_f32le")
                    };
                let padding_frames = (signal.frames() * frame_bytes).next_multiple_of(8)
                    / frame_bytes
                    - signal.frames();
                let padded_channels = signal
                    .channels()
                    .map(|c| [c, &vec![0.0; padding_frames]].concat())
                    .collect();
                let padded = AudioBlock::from_channels(padded_channels, 48_000);
                assert_decodes_to(&from_ffmpeg, &padded, "w64", codec);
            }
        }
        // Where no padding is needed, the same frames.
        let (wav, signal) = source_wav(dir.path(), "pcm_s16le", 2, 50_000);
        let from_ffmpeg = dir.path().join("ffmpeg-even.w64");
        ffmpeg(&wav, &["-f", "w64"], &from_ffmpeg);
        assert_decodes_to(&from_ffmpeg, &signal, "w64", "pcm_s16le");
    }

    /// Runs `ffmpeg -i source -c:a codec -f wav -` with its standard output a pipe read here, and
    /// writes what came through the pipe to `path`.
    fn ffmpeg_through_pipe(source: &Path, codec: &str, path: &Path) {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(source)
            .args(["-c:a", codec, "-f", "wav", "-"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut piped = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut piped)
            .unwrap();
        assert!(child.wait().unwrap().success());
        std::fs::write(path, piped).unwrap();
    }

    #[test]
    fn wav_written_to_a_pipe_decodes_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for codec in CODECS {
            for channels in [1, 2, 6] {
                let (wav, signal) = source_wav(dir.path(), codec, channels, 18 * 1152 + 1);
                let piped = dir.path().join(format!("piped-{codec}-{channels}.wav"));
                ffmpeg_through_pipe(&wav, codec, &piped);
                let bytes = std::fs::read(&piped).unwrap();
                // ffmpeg leaves both sizes at the placeholder it could not go back to fill in.
                assert_eq!(&bytes[4..8], &[0xff; 4], "{codec}");
                let data = bytes.windows(4).position(|w| w == b"data").unwrap();
                assert_eq!(&bytes[data + 4..data + 8], &[0xff; 4], "{codec}");
                assert_decodes_to(&piped, &signal, "wave", codec);

                // Some writers leave the data size at 0 instead.
                let mut zero = bytes.clone();
                zero[data + 4..data + 8].fill(0);
                let zero_path = dir.path().join(format!("zero-{codec}-{channels}.wav"));
                std::fs::write(&zero_path, &zero).unwrap();
                assert_decodes_to(&zero_path, &signal, "wave", codec);

                // A cut inside the last frame is truncation.
                let cut = dir.path().join(format!("cut-{codec}-{channels}.wav"));
                std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
                let err = Decoder::open(&cut).unwrap_err();
                assert!(matches!(err, Error::Decode { .. }), "{err:?}");
                assert!(
                    err.to_string()
                        .contains("truncated: the audio ends inside a frame"),
                    "{err}"
                );
            }
        }
    }
}
