//! Streaming decoder: any supported source file to planar `f32` [`AudioBlock`]s.
//!
//! Built on Symphonia. Supported: WAV (8/16/24/32-bit integer, 32/64-bit float), AIFF, FLAC (native
//! or in Ogg), ALAC (in M4A/CAF), MP3, Ogg Vorbis, Ogg Opus (mono or stereo, decoded by libopus:
//! `decode/opus.rs`) and AAC (ADTS or M4A); 1 to 8 channels; 8 kHz to 384 kHz.
//! Besides, read by lathe itself: RF64 and BW64 WAV (data over 4 GiB), Sony Wave64 (`.w64`) and
//! WAV written to a pipe (unknown length: read to the end of the file), all of integer or float
//! PCM (`decode/riff.rs`); and WavPack (`.wv`: 8 to 32-bit integer and 32-bit float, lossless,
//! or hybrid decoded to its lossy part) through the reference library (`decode/wavpack.rs`).
//!
//! The decoder holds one decoded packet at a time (a few thousand frames) and hands it out in blocks
//! of whatever size the caller asks for, so memory does not grow with the length of the track.
//!
//! Uncompressed PCM in WAV and AIFF (8-bit unsigned or signed, 16/24/32-bit integer, 32/64-bit
//! float, either byte order) whose data chunk gives its length takes a shorter road: Symphonia
//! parses and checks the container, then the decoder reads the data chunk itself, 128 KiB at a
//! time, and converts the bytes straight into the caller's block (`decode/pcm.rs`): the same
//! samples, bit for bit, and the same errors, at a third of the CPU time.
//!
//! Errors are strict, because a master made from a damaged source is worse than no master:
//! - a packet that fails to decode mid-stream is an [`Error::Decode`], never silently skipped;
//! - a lossless stream (PCM, FLAC, ALAC, WavPack) whose header promises more frames than the file holds is
//!   reported as `truncated: expected N frames, got M`; a lossless packet the demuxer skipped
//!   (a FLAC frame whose CRC fails) is reported as corrupt with the missing frames; a FLAC stream
//!   whose MD5 signature does not match the decoded audio is reported as corrupt; so is a WavPack
//!   block whose checksum fails; an RF64, BW64 or Wave64 data chunk longer than the file is
//!   refused when the file is opened;
//! - Ogg files are checked page by page first (checksums, sequence numbers, end-of-stream flag:
//!   `decode/ogg.rs`), because Symphonia silently skips damaged pages; an MP4 stream that decodes
//!   to clearly fewer frames than its sample tables announce is reported as truncated or damaged;
//! - a container cut short before its index (MP4 without `moov`, WAV without `data`) is damage,
//!   not an unknown format;
//! - NaN or infinite samples (only possible in float WAV and WavPack) are an [`Error::NonFiniteSample`];
//! - a header that declares more than [`MAX_SOURCE_SAMPLES`] (6 hours at 192 kHz in 8 channels), a
//!   channel count or a rate outside the limits, is refused when the file is opened, before
//!   anything is decoded or sized from it; a stream of no declared length stops with the same
//!   [`Error::SourceTooLarge`] once it decodes past the limit (`decode/limits.rs`).
//!
//! Limits: MP3 and ADTS AAC carry no checksums (LAME omits the optional CRC) and only an estimated
//! length, so damage inside their frames decodes to noise rather than an error, and a truncated
//! MP3 decodes to its shorter length.
//!
//! What the decoder tolerates is said in [`SourceInfo::notes`]: an Ogg stream whose end-of-stream
//! flag is set on pages before its last (some encoders do that) is decoded to its real end, as
//! libvorbis, libopus and ffmpeg do, with a note.
//!
//! Lossy streams are decoded gaplessly where the container says how (MP3 LAME/Xing headers, Ogg
//! granule positions; Opus's pre-skip). AAC keeps its encoder priming and padding (about 1024 frames of near-silence
//! at the start, up to a packet at the end), because Symphonia does not read the MP4 edit list.

mod limits;
mod ogg;
mod opus;
mod pcm;
mod riff;
mod wavpack;

use std::fs::File;
use std::io::{ErrorKind, Seek};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_ALAC, CODEC_ID_FLAC, CODEC_ID_PCM_MULAW, CODEC_ID_PCM_S32LE,
};
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions,
};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadBytes};
use symphonia::core::meta::MetadataOptions;

use self::limits::{Declared, check_decoded, check_shape};
pub use self::limits::{MAX_CHANNELS, MAX_SAMPLE_RATE_HZ, MAX_SOURCE_SAMPLES, MIN_SAMPLE_RATE_HZ};
use self::opus::OpusDecoder;
use self::pcm::{PcmStream, SampleLayout};
use self::wavpack::WavPackStream;
use crate::audio::AudioBlock;
use crate::error::{Error, Result};

/// How far a lossy stream of known length may fall short of it (encoder delay and padding are
/// at most a couple of packets) before it counts as truncated.
const LOSSY_SLACK_FRAMES: u64 = 8192;

/// What a source file holds, as read from its headers when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The file.
    pub path: PathBuf,
    /// Container format, Symphonia's short name (`wave`, `aiff`, `flac`, `mp3`, `ogg`, `isomp4`,
    /// `aac`, `caf`, `matroska`), or lathe's for the containers it reads itself (`rf64`, `bw64`,
    /// `w64`, `wavpack`).
    pub container: String,
    /// Codec, Symphonia's short name (`pcm_s24le`, `flac`, `mp3`, `vorbis`, `aac`, `alac`, ...),
    /// or `wavpack` (lossless) and `wavpack_lossy` (hybrid, without its correction file).
    pub codec: String,
    /// Sample rate of the decoded audio.
    pub sample_rate_hz: u32,
    /// Number of channels of the decoded audio.
    pub channel_count: usize,
    /// Number of frames the container announces, if it does (not always exact for lossy codecs).
    pub frames: Option<u64>,
    /// Bit depth of the stored samples, for PCM and lossless codecs.
    pub bits_per_sample: Option<u32>,
    /// What the decoder tolerated in the file and how (an Ogg stream that marks a page before
    /// its last as its end, and was decoded to its real end): one line each, for the track
    /// report. Empty for a clean file.
    pub notes: Vec<String>,
}

/// A streaming decoder for one source file.
///
/// ```no_run
/// # use lathe_engine::{decode::Decoder, AudioBlock};
/// # fn run() -> lathe_engine::Result<()> {
/// let mut decoder = Decoder::open("take1.flac".as_ref())?;
/// let info = decoder.info().clone();
/// let mut block = AudioBlock::new(info.channel_count, 4096, info.sample_rate_hz);
/// while decoder.read(&mut block)? > 0 {
///     // process `block`
/// }
/// # Ok(()) }
/// ```
pub struct Decoder {
    info: SourceInfo,
    source: Source,
    /// Frames decoded so far (including those not yet handed out).
    frames_decoded: u64,
    /// The stream has ended and was checked.
    finished: bool,
    /// The most samples (frames times channels) decoded before the stream is refused
    /// ([`MAX_SOURCE_SAMPLES`]).
    max_source_samples: u64,
}

/// Where the decoded frames come from.
enum Source {
    /// Symphonia demuxes and decodes, a packet at a time: every codec but the one below.
    Codec(CodecStream),
    /// Uncompressed integer or float PCM of known length in WAV or AIFF, read straight from the
    /// data chunk once Symphonia has parsed the container (see [`pcm`]), or once lathe has read
    /// the header itself (RF64, BW64, Wave64, a WAV written to a pipe: see [`riff`]).
    Pcm(PcmStream),
    /// WavPack, decoded by the reference library (see [`wavpack`]).
    WavPack(WavPackStream),
}

/// Symphonia's demuxer and decoder, and the decoded frames of the current packet.
struct CodecStream {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Only lossless streams are checked against the frame count their header promises.
    lossless: bool,
    /// For lossless streams timed in frames: the timestamp of the first frame. Every packet must
    /// then start where the previous one ended; a gap means the demuxer skipped a damaged packet.
    frame_clock_start: Option<i64>,
    /// Decoded frames of the current packet, one buffer per channel (reused; grows to the largest
    /// packet and then stays).
    pending: Vec<Vec<f32>>,
    /// Frames of `pending` already handed out.
    pending_pos: usize,
}

/// How [`Decoder::open_with`] reads a file.
#[derive(Debug, Clone, Copy)]
struct OpenOptions {
    /// Check a FLAC stream's MD5 signature of its decoded audio.
    check_md5: bool,
    /// Read uncompressed PCM in WAV and AIFF straight from the data chunk; `false` decodes it
    /// through Symphonia like every other codec (the reference the tests compare with).
    direct_pcm: bool,
    /// The most samples the source may declare or decode to ([`MAX_SOURCE_SAMPLES`]; smaller in
    /// the tests of the limit).
    max_source_samples: u64,
}

impl OpenOptions {
    /// What [`Decoder::open`] does: every check, PCM read directly.
    const STRICT: Self = Self {
        check_md5: true,
        direct_pcm: true,
        max_source_samples: MAX_SOURCE_SAMPLES,
    };
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            Source::Codec(_) => "codec",
            Source::Pcm(_) => "pcm",
            Source::WavPack(_) => "wavpack",
        };
        f.debug_struct("Decoder")
            .field("info", &self.info)
            .field("source", &source)
            .field("frames_decoded", &self.frames_decoded)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Opens `path`, reads its headers and decodes the first packet (so that an empty or
    /// undecodable stream fails here rather than at the first [`Decoder::read`]).
    ///
    /// # Errors
    /// - [`Error::Io`] if the file does not exist or cannot be read;
    /// - [`Error::Unsupported`] for an empty file, a file that is not audio, or an unknown codec;
    /// - [`Error::UnsupportedShape`] for a channel count or sample rate outside lathe's limits;
    /// - [`Error::SourceTooLarge`] for a header that declares more than [`MAX_SOURCE_SAMPLES`]
    ///   (refused before anything is decoded; [`Decoder::read`] stops a stream of no declared
    ///   length with the same error when it decodes past the limit);
    /// - [`Error::Decode`] for a corrupt header, or a stream with no audio.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, OpenOptions::STRICT)
    }

    /// As [`Decoder::open`], but without checking a FLAC stream's MD5 signature of its decoded
    /// audio (which hashes every decoded sample). Only for a caller that checks the
    /// decoded samples itself, as `render` does when it re-reads a master it has just written;
    /// every other check (truncation, gaps, non-finite samples) still applies.
    ///
    /// # Errors
    /// As [`Decoder::open`].
    pub fn open_skipping_md5(path: &Path) -> Result<Self> {
        Self::open_with(
            path,
            OpenOptions {
                check_md5: false,
                ..OpenOptions::STRICT
            },
        )
    }

    fn open_with(path: &Path, options: OpenOptions) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
        if metadata.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::new(ErrorKind::InvalidInput, "is a directory"),
            ));
        }
        if metadata.len() == 0 {
            return Err(unsupported(path, "empty file"));
        }
        // RF64, BW64, Wave64 and WAV written to a pipe: lathe reads the header itself.
        let max_samples = options.max_source_samples;
        if let Some(header) = riff::read_wave_header(path, &mut file, metadata.len(), max_samples)?
        {
            return Self::open_wave(path, file, header, max_samples);
        }
        if wavpack::is_wavpack(path, &mut file)? {
            let (info, stream) = wavpack::open(path, max_samples)?;
            return Self::start((info, Source::WavPack(stream)), max_samples);
        }
        file.rewind().map_err(|e| Error::io(path, e))?;
        // A second handle on the same open file, for reading a PCM data chunk directly.
        let data_file = if options.direct_pcm {
            Some(file.try_clone().map_err(|e| Error::io(path, e))?)
        } else {
            None
        };

        let mss = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());
        let mut hint = Hint::new();
        if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(extension);
        }
        // Symphonia builds a seek index while reading when the container has none; one entry a
        // minute keeps it negligible (we never seek).
        let format_options = FormatOptions::default().seek_index_fill_period_ms(u16::MAX);
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, format_options, MetadataOptions::default())
            .map_err(|e| match e {
                SymphoniaError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
                    unsupported(path, "no audio container recognised")
                }
                SymphoniaError::IoError(io) => Error::io(path, io),
                SymphoniaError::Unsupported(what) if is_missing_structure(what) => {
                    decode_error(path, &format!("damaged or truncated container ({what})"))
                }
                SymphoniaError::Unsupported(what) => {
                    unsupported(path, &format!("no audio container recognised ({what})"))
                }
                other => decode_error(path, &format!("bad container header: {other}")),
            })?;

        let ogg_pages = if format.format_info().short_name == "ogg" {
            Some(ogg::verify_pages(path)?)
        } else {
            None
        };
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| unsupported(path, "no audio track"))?;
        let track_id = track.id;
        let frames = match &ogg_pages {
            Some(pages) => pages.frames(track),
            None => track.num_frames,
        };
        let time_base = track.time_base;
        let start_ts = track.start_ts.get();
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| unsupported(path, "the track has no audio codec parameters"))?
            .clone();
        // Before the decoder is built (it sizes its buffers from the header) and anything is
        // decoded. A rate or channel count of 0 is left to the codec, like one not given: the
        // first packet tells, and is held to the same limits.
        Declared {
            sample_rate_hz: params.sample_rate.filter(|&rate| rate > 0),
            channel_count: params
                .channels
                .as_ref()
                .map(|c| c.count())
                .filter(|&n| n > 0),
            frames,
        }
        .check(path, max_samples)?;

        // FLAC: have the decoder check the stream's MD5 signature.
        let decoder_options = AudioDecoderOptions::default()
            .gapless(true)
            .verify(options.check_md5);
        opus::check_channel_mapping(path, &params)?;
        let decoder = codecs()
            .make_audio_decoder(&params, &decoder_options)
            .map_err(|e| match e {
                SymphoniaError::Unsupported(what) => unsupported(
                    path,
                    &format!("codec {} not supported ({what})", params.codec),
                ),
                other => decode_error(path, &format!("cannot start the decoder: {other}")),
            })?;

        let info = SourceInfo {
            path: path.to_path_buf(),
            container: format.format_info().short_name.to_string(),
            codec: decoder.codec_info().short_name.to_string(),
            sample_rate_hz: params.sample_rate.unwrap_or(0),
            channel_count: params.channels.as_ref().map_or(0, |c| c.count()),
            frames,
            bits_per_sample: params.bits_per_sample,
            notes: ogg_pages.map(|pages| pages.notes).unwrap_or_default(),
        };
        if frames == Some(0) {
            return Err(decode_error(path, "no audio"));
        }

        let direct_pcm = data_file.zip(direct_pcm_layout(&info, &params));
        let source = if let Some((data_file, layout)) = direct_pcm {
            // Symphonia has checked every header; from here on the data chunk is read directly.
            let data_start = format.into_inner().pos();
            let frames = frames.unwrap_or(0);
            let stream = PcmStream::new(data_file, data_start, frames, layout, info.channel_count)
                .map_err(|e| Error::io(path, e))?;
            Source::Pcm(stream)
        } else {
            let lossless = is_lossless(params.codec);
            let timed_in_frames = time_base.is_some_and(|tb| {
                tb.numer.get() == 1 && Some(tb.denom.get()) == params.sample_rate
            });
            Source::Codec(CodecStream {
                format,
                decoder,
                track_id,
                lossless,
                frame_clock_start: (lossless && timed_in_frames).then_some(start_ts),
                pending: Vec::new(),
                pending_pos: 0,
            })
        };

        Self::start((info, source), max_samples)
    }

    /// Opens a WAV whose header lathe has read itself (see [`riff`], which has held it to the
    /// limits): its data chunk is read directly, like that of a plain WAV.
    fn open_wave(
        path: &Path,
        file: File,
        header: riff::WaveHeader,
        max_samples: u64,
    ) -> Result<Self> {
        let info = SourceInfo {
            path: path.to_path_buf(),
            container: header.container.short_name().to_string(),
            codec: header.codec.to_string(),
            sample_rate_hz: header.sample_rate_hz,
            channel_count: header.channel_count,
            frames: Some(header.frames),
            bits_per_sample: Some(header.bits_per_sample),
            // Plain RIFF reaches lathe's own reader only when its sizes are placeholders.
            notes: if header.container == riff::WaveContainer::Riff {
                vec![
                    "the WAV gives no data length (written to a pipe): read to the end of the file"
                        .to_owned(),
                ]
            } else {
                Vec::new()
            },
        };
        if header.frames == 0 {
            return Err(decode_error(path, "no audio"));
        }
        let stream = PcmStream::new(
            file,
            header.data_start,
            header.frames,
            header.layout,
            header.channel_count,
        )
        .map_err(|e| Error::io(path, e))?;
        Self::start((info, Source::Pcm(stream)), max_samples)
    }

    /// Reads the first frames of an opened `source` (so that an empty or undecodable stream
    /// fails when opening), then checks the stream's shape and declared length against the
    /// limits once more: some containers leave the rate or channels to the codec.
    fn start((info, source): (SourceInfo, Source), max_source_samples: u64) -> Result<Self> {
        let mut this = Self {
            info,
            source,
            frames_decoded: 0,
            finished: false,
            max_source_samples,
        };
        // Some containers leave the rate or layout to the codec: the first packet tells.
        if !this.refill()? {
            this.finish_stream()?;
        }
        Declared::of(&this.info).check(&this.info.path, max_source_samples)?;
        Ok(this)
    }

    /// What the file holds.
    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Fills `block` (sets its frames and labels its sample rate) with up to `block.capacity()`
    /// frames; returns the number read, 0 at the end of the track. Any capacity works: the decoder
    /// keeps decoded frames that did not fit for the next call.
    ///
    /// # Errors
    /// [`Error::Decode`] for corrupt or truncated data (see the module docs),
    /// [`Error::NonFiniteSample`] for NaN or infinite samples, [`Error::Io`] for read failures.
    ///
    /// # Panics
    /// If the block's channel count differs from [`SourceInfo::channel_count`].
    pub fn read(&mut self, block: &mut AudioBlock) -> Result<usize> {
        assert_eq!(
            block.channel_count(),
            self.info.channel_count,
            "the block's channel count must match the source's"
        );
        block.set_sample_rate_hz(self.info.sample_rate_hz);
        let capacity = block.capacity();
        let mut filled = 0;
        while filled < capacity {
            let taken = match &mut self.source {
                Source::Codec(codec) => codec.take(block, filled),
                Source::Pcm(pcm) => pcm.take(block, filled, &self.info.path)?,
                Source::WavPack(wavpack) => wavpack.take(block, filled, &self.info.path)?,
            };
            if taken > 0 {
                filled += taken;
                continue;
            }
            if self.finished || !self.refill()? {
                self.finish_stream()?;
                break;
            }
        }
        block.set_frames(filled);
        #[cfg(test)]
        counting::FRAMES_READ.with(|frames| frames.set(frames.get() + filled as u64));
        Ok(filled)
    }

    /// Whether the samples are read straight from a PCM data chunk: as cheap to read again as a
    /// spool of them, where a codec's decode is not.
    pub(crate) fn reads_pcm_directly(&self) -> bool {
        matches!(self.source, Source::Pcm(_))
    }

    /// Decodes or reads the next frames into the source's buffer (all earlier ones were handed
    /// out). Returns `false` at the end of the stream, after which `finish_stream` must run its
    /// checks.
    fn refill(&mut self) -> Result<bool> {
        let frames = match &mut self.source {
            Source::Codec(codec) => {
                codec.decode_next_packet(&mut self.info, self.frames_decoded)?
            }
            Source::Pcm(pcm) => {
                let frames = pcm.fill().map_err(|e| Error::io(&self.info.path, e))?;
                if frames == 0 && pcm.cut_short() {
                    return Err(truncation_error(&self.info, self.frames_decoded));
                }
                frames
            }
            Source::WavPack(wavpack) => wavpack.fill(&self.info)?,
        };
        self.frames_decoded += frames as u64;
        check_decoded(&self.info, self.frames_decoded, self.max_source_samples)?;
        Ok(frames > 0)
    }

    /// End-of-stream checks: some audio, as many frames as promised, a matching MD5.
    fn finish_stream(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let path = self.info.path.as_path();
        if self.frames_decoded == 0 {
            return Err(decode_error(path, "no audio"));
        }
        let lossless = match &self.source {
            Source::Codec(codec) => codec.lossless,
            Source::Pcm(_) | Source::WavPack(_) => true,
        };
        if let Some(expected) = self.info.frames {
            let decoded = self.frames_decoded;
            if lossless && decoded < expected {
                return Err(truncation_error(&self.info, decoded));
            }
            // Lossy: MP4 knows its exact length from its sample tables; a stream that falls short
            // by more than a few packets lost data.
            let exact_length = self.info.container == "isomp4";
            if !lossless && exact_length && decoded + LOSSY_SLACK_FRAMES < expected {
                return Err(decode_error(
                    path,
                    &format!("truncated or damaged: expected {expected} frames, got {decoded}"),
                ));
            }
        }
        if let Source::Codec(codec) = &mut self.source
            && codec.decoder.finalize().verify_ok == Some(false)
        {
            return Err(decode_error(
                path,
                "corrupt: the decoded audio does not match the stream's MD5 signature",
            ));
        }
        Ok(())
    }
}

impl CodecStream {
    /// Copies up to `block.capacity() - offset` pending frames into the block from frame `offset`
    /// on; returns how many (0 when the packet is used up).
    fn take(&mut self, block: &mut AudioBlock, offset: usize) -> usize {
        let available = self.pending.first().map_or(0, Vec::len) - self.pending_pos;
        let n = available.min(block.capacity() - offset);
        for (ch, src) in self.pending.iter().enumerate() {
            block.channel_buffer_mut(ch)[offset..offset + n]
                .copy_from_slice(&src[self.pending_pos..self.pending_pos + n]);
        }
        self.pending_pos += n;
        n
    }

    /// Decodes the next packet of our track into `pending`; returns its frames, 0 at the end of
    /// the stream. `frames_decoded` counts the frames of the packets before; the first packet sets
    /// the stream's rate and channel count in `info`.
    fn decode_next_packet(&mut self, info: &mut SourceInfo, frames_decoded: u64) -> Result<usize> {
        let path = info.path.as_path();
        loop {
            // Drop metadata revisions as they come (chained Ogg streams add one per link).
            while !self.format.metadata().is_latest() {
                self.format.metadata().pop();
            }
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(0),
                Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    // The container ended inside a packet: report it as truncation.
                    return Err(truncation_error(info, frames_decoded));
                }
                Err(SymphoniaError::IoError(e)) => return Err(Error::io(path, e)),
                Err(SymphoniaError::ResetRequired) => {
                    return Err(decode_error(
                        path,
                        &format!(
                            "the stream changes its format after frame {frames_decoded} (chained \
                             stream)"
                        ),
                    ));
                }
                Err(e) => {
                    return Err(decode_error(
                        path,
                        &format!("corrupt data after frame {frames_decoded}: {e}"),
                    ));
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            if let Some(start) = self.frame_clock_start {
                let expected = start.saturating_add_unsigned(frames_decoded);
                let pts = packet.pts.get();
                if pts != expected {
                    let reason = if pts > expected {
                        format!(
                            "corrupt: a damaged packet was skipped, frames {expected} to {} are \
                             missing",
                            pts - 1
                        )
                    } else {
                        format!("corrupt: a packet starts at frame {pts}, expected {expected}")
                    };
                    return Err(decode_error(path, &reason));
                }
            }
            let buffer = self.decoder.decode(&packet).map_err(|e| {
                decode_error(
                    path,
                    &format!("bad packet after frame {frames_decoded}: {e}"),
                )
            })?;
            let frames = buffer.frames();
            if frames == 0 {
                continue;
            }
            let spec = buffer.spec();
            let (rate, channels) = (spec.rate(), spec.channels().count());
            if frames_decoded == 0 {
                // The codec has the last word on the stream's shape.
                info.sample_rate_hz = rate;
                info.channel_count = channels;
                check_shape(info)?;
            } else if rate != info.sample_rate_hz || channels != info.channel_count {
                return Err(decode_error(
                    &info.path,
                    &format!(
                        "the stream changes from {} Hz, {} channels to {rate} Hz, {channels} \
                         channels after frame {frames_decoded}",
                        info.sample_rate_hz, info.channel_count
                    ),
                ));
            }
            buffer.copy_to_vecs_planar::<f32>(&mut self.pending);
            self.pending_pos = 0;
            check_finite(
                &info.path,
                self.pending.iter().map(Vec::as_slice),
                frames_decoded,
            )?;
            return Ok(frames);
        }
    }
}

/// Symphonia's decoders, and libopus's for Opus (see [`opus`]).
fn codecs() -> &'static CodecRegistry {
    static CODECS: OnceLock<CodecRegistry> = OnceLock::new();
    CODECS.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<OpusDecoder>();
        registry
    })
}

/// The error for a lossless stream that ends before the frame count its header promised, after
/// `frames_decoded` whole frames.
fn truncation_error(info: &SourceInfo, frames_decoded: u64) -> Error {
    let reason = match info.frames {
        Some(expected) => format!("truncated: expected {expected} frames, got {frames_decoded}"),
        None => format!("truncated: the file ends inside a packet after {frames_decoded} frames"),
    };
    decode_error(&info.path, &reason)
}

/// The sample layout to read directly, if `info` and `params` describe uncompressed PCM of known
/// length in WAV or AIFF that Symphonia's decoder would not shift (its coded and decoded widths
/// agree).
fn direct_pcm_layout(info: &SourceInfo, params: &AudioCodecParameters) -> Option<SampleLayout> {
    let container_ok = matches!(info.container.as_str(), "wave" | "aiff");
    let unshifted = params.bits_per_coded_sample == params.bits_per_sample;
    let known_length = info.frames.is_some();
    if container_ok && unshifted && known_length && info.channel_count > 0 {
        SampleLayout::of_codec(params.codec)
    } else {
        None
    }
}

/// Symphonia reports a recognised container whose essential part is missing (a file cut short
/// before its index, a WAV without its data chunk) as "unsupported"; for lathe that is damage.
fn is_missing_structure(reason: &str) -> bool {
    ["missing moov atom", "missing data chunk"]
        .iter()
        .any(|m| reason.ends_with(m))
}

/// Reads until `buf` is full or the end of the file; returns the number of bytes read.
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// PCM, FLAC and ALAC streams decode to exactly the frame count their header gives.
fn is_lossless(codec: AudioCodecId) -> bool {
    (CODEC_ID_PCM_S32LE..=CODEC_ID_PCM_MULAW).contains(&codec)
        || codec == CODEC_ID_FLAC
        || codec == CODEC_ID_ALAC
}

/// Finds the first NaN or infinite sample of `channels` (all of the same length, starting at frame
/// `first_frame` of the track): lowest frame, then lowest channel.
fn check_finite<'a>(
    path: &Path,
    channels: impl Iterator<Item = &'a [f32]> + Clone,
    first_frame: u64,
) -> Result<()> {
    if channels.clone().all(|c| c.iter().all(|x| x.is_finite())) {
        return Ok(());
    }
    let first = channels
        .enumerate()
        .filter_map(|(channel, samples)| {
            let frame = samples.iter().position(|x| !x.is_finite())?;
            Some((frame, channel))
        })
        .min();
    match first {
        Some((frame, channel)) => Err(Error::NonFiniteSample {
            path: path.to_path_buf(),
            channel,
            frame: first_frame + frame as u64,
        }),
        None => Ok(()),
    }
}

fn unsupported(path: &Path, reason: &str) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn decode_error(path: &Path, reason: &str) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Fixture builders shared by the file I/O tests (decode, encode, tags).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::Path;
    use std::process::Command;

    use crate::audio::AudioBlock;
    use crate::decode::{Decoder, OpenOptions};
    use crate::error::Result;

    /// A different sine in every channel (plus a full-scale negative and the largest positive grid
    /// value at the start), quantised to the `bits`-bit grid (`bits == 0`: not quantised).
    pub(crate) fn grid_signal(channels: usize, frames: usize, rate: u32, bits: u32) -> AudioBlock {
        let data = (0..channels)
            .map(|ch| {
                let freq = 220.0 * (ch + 1) as f64 + 17.0;
                (0..frames)
                    .map(|n| {
                        let x = 0.6
                            * (std::f64::consts::TAU * freq * n as f64 / f64::from(rate)).sin()
                            + 0.05
                                * (std::f64::consts::TAU * 9_000.5 * n as f64 / f64::from(rate))
                                    .cos();
                        let x = match n {
                            0 => -1.0,
                            1 if bits > 0 => 1.0 - 1.0 / f64::from(1u32 << (bits - 1)),
                            _ => x,
                        };
                        quantise(x, bits)
                    })
                    .collect()
            })
            .collect();
        AudioBlock::from_channels(data, rate)
    }

    fn quantise(x: f64, bits: u32) -> f32 {
        if bits == 0 {
            return x as f32;
        }
        let scale = f64::from(1u32 << (bits - 1));
        ((x * scale).round() / scale) as f32
    }

    /// Writes `block` as WAV with hound: `bits` 8/16/24/32 integer, or 32-bit float if `float`.
    pub(crate) fn write_wav(path: &Path, block: &AudioBlock, bits: u16, float: bool) {
        let spec = hound::WavSpec {
            channels: block.channel_count() as u16,
            sample_rate: block.sample_rate_hz(),
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        let scale = 2f64.powi(i32::from(bits) - 1);
        for n in 0..block.frames() {
            for ch in 0..block.channel_count() {
                let x = block.channel(ch)[n];
                if float {
                    writer.write_sample(x).unwrap();
                } else {
                    let v = (f64::from(x) * scale).round().clamp(-scale, scale - 1.0) as i32;
                    writer.write_sample(v).unwrap();
                }
            }
        }
        writer.finalize().unwrap();
    }

    /// Runs ffmpeg quietly: `ffmpeg -y -i input <args> output`.
    pub(crate) fn ffmpeg(input: &Path, args: &[&str], output: &Path) {
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(input)
            .args(args)
            .arg(output)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg failed for {}", output.display());
    }

    /// Decodes the whole file with blocks of `capacity` frames.
    pub(crate) fn decode_all(path: &Path, capacity: usize) -> Result<AudioBlock> {
        read_to_end(Decoder::open(path)?, capacity)
    }

    /// As [`decode_all`], but uncompressed PCM too goes through Symphonia's decoder: the
    /// reference the direct PCM path must match bit for bit.
    pub(crate) fn decode_all_through_symphonia(path: &Path, capacity: usize) -> Result<AudioBlock> {
        let options = OpenOptions {
            direct_pcm: false,
            ..OpenOptions::STRICT
        };
        read_to_end(Decoder::open_with(path, options)?, capacity)
    }

    fn read_to_end(mut decoder: Decoder, capacity: usize) -> Result<AudioBlock> {
        let info = decoder.info().clone();
        let mut block = AudioBlock::new(info.channel_count, capacity, info.sample_rate_hz);
        let mut channels = vec![Vec::new(); info.channel_count];
        while decoder.read(&mut block)? > 0 {
            for (all, part) in channels.iter_mut().zip(block.channels()) {
                all.extend_from_slice(part);
            }
        }
        Ok(AudioBlock::from_channels(channels, info.sample_rate_hz))
    }

    /// Asserts two blocks hold the same samples within `tolerance`.
    pub(crate) fn assert_same_audio(decoded: &AudioBlock, expected: &AudioBlock, tolerance: f32) {
        assert_eq!(
            decoded.channel_count(),
            expected.channel_count(),
            "channels"
        );
        assert_eq!(decoded.frames(), expected.frames(), "frames");
        assert_eq!(decoded.sample_rate_hz(), expected.sample_rate_hz(), "rate");
        for ch in 0..expected.channel_count() {
            let diff = crate::testkit::max_abs_diff(decoded.channel(ch), expected.channel(ch));
            assert!(
                diff <= tolerance,
                "channel {ch}: max difference {diff} exceeds {tolerance}"
            );
        }
    }
}

/// How many frames every [`Decoder`] on this thread has handed out: the tests' count of how often
/// a render decodes its source.
#[cfg(test)]
pub(crate) mod counting {
    use std::cell::Cell;

    thread_local! {
        pub(super) static FRAMES_READ: Cell<u64> = const { Cell::new(0) };
    }

    /// Frames read from sources on this thread so far.
    pub(crate) fn frames_read() -> u64 {
        FRAMES_READ.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::fixtures::{
        assert_same_audio, decode_all, decode_all_through_symphonia, ffmpeg, grid_signal, write_wav,
    };
    use super::*;
    use crate::testkit::{rms_db, sine};

    fn lsb(bits: u32) -> f32 {
        1.0 / (1u64 << (bits - 1)) as f32
    }

    /// A 2-channel, 1 s, 44.1 kHz WAV of `bits` integer bits and its signal.
    fn wav_fixture(dir: &Path, bits: u32) -> (PathBuf, AudioBlock) {
        let signal = grid_signal(2, 44_100, 44_100, bits);
        let path = dir.join(format!("source-{bits}.wav"));
        write_wav(&path, &signal, bits as u16, false);
        (path, signal)
    }

    fn assert_names_file(err: &Error, path: &Path) {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            err.to_string().contains(name),
            "error does not name {name}: {err}"
        );
    }

    #[test]
    fn wav_integer_depths_decode_sample_exact() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [16, 24, 32] {
            let (path, signal) = wav_fixture(dir.path(), bits);
            let decoded = decode_all(&path, 4096).unwrap();
            assert_same_audio(&decoded, &signal, lsb(bits.min(24)));
            let decoder = Decoder::open(&path).unwrap();
            let info = decoder.info();
            assert_eq!(info.container, "wave");
            assert_eq!(info.frames, Some(44_100));
            assert_eq!(info.bits_per_sample, Some(bits));
            assert_eq!((info.sample_rate_hz, info.channel_count), (44_100, 2));
        }
    }

    #[test]
    fn wav_float_32_and_64_decode_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let signal = grid_signal(2, 48_000, 48_000, 0);
        let f32_path = dir.path().join("float32.wav");
        write_wav(&f32_path, &signal, 32, true);
        assert_same_audio(&decode_all(&f32_path, 4096).unwrap(), &signal, 0.0);
        let f64_path = dir.path().join("float64.wav");
        ffmpeg(&f32_path, &["-c:a", "pcm_f64le"], &f64_path);
        assert_same_audio(&decode_all(&f64_path, 4096).unwrap(), &signal, 0.0);
        assert_eq!(Decoder::open(&f64_path).unwrap().info().codec, "pcm_f64le");
    }

    #[test]
    fn lossless_containers_decode_sample_exact() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [16, 24] {
            let (wav, signal) = wav_fixture(dir.path(), bits);
            let tolerance = lsb(bits);
            let aiff = dir.path().join(format!("s{bits}.aiff"));
            ffmpeg(&wav, &["-c:a", &format!("pcm_s{bits}be")], &aiff);
            let flac = dir.path().join(format!("s{bits}.flac"));
            let status = std::process::Command::new("flac")
                .args(["-s", "-f", "-5", "-o"])
                .arg(&flac)
                .arg(&wav)
                .status()
                .unwrap();
            assert!(status.success());
            let alac = dir.path().join(format!("s{bits}.m4a"));
            ffmpeg(&wav, &["-c:a", "alac"], &alac);
            for (path, container, codec) in [
                (
                    &aiff,
                    "aiff",
                    if bits == 16 { "pcm_s16be" } else { "pcm_s24be" },
                ),
                (&flac, "flac", "flac"),
                (&alac, "isomp4", "alac"),
            ] {
                let decoded =
                    decode_all(path, 4096).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_same_audio(&decoded, &signal, tolerance);
                let decoder = Decoder::open(path).unwrap();
                assert_eq!(decoder.info().container, container, "{}", path.display());
                assert_eq!(decoder.info().codec, codec, "{}", path.display());
            }
        }
    }

    #[test]
    fn lossy_codecs_keep_duration_and_level() {
        let dir = tempfile::tempdir().unwrap();
        // A 1 kHz tone at -6 dBFS peak (RMS -9.03 dBFS), 3 s, stereo.
        let tone = sine(2, 3 * 44_100, 44_100, 1000.0, 0.5);
        let wav = dir.path().join("tone.wav");
        write_wav(&wav, &tone, 24, false);
        let expected_rms = rms_db(&tone.channel(0)[44_100..2 * 44_100]);
        for (name, args, codec) in [
            (
                "tone.mp3",
                &["-c:a", "libmp3lame", "-b:a", "192k"][..],
                "mp3",
            ),
            (
                "tone.ogg",
                &["-c:a", "libvorbis", "-q:a", "5"][..],
                "vorbis",
            ),
            ("tone.m4a", &["-c:a", "aac", "-b:a", "192k"][..], "aac"),
            ("tone.aac", &["-c:a", "aac", "-b:a", "192k"][..], "aac"),
        ] {
            let path = dir.path().join(name);
            ffmpeg(&wav, args, &path);
            let decoded = decode_all(&path, 4096).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(Decoder::open(&path).unwrap().info().codec, codec, "{name}");
            assert_eq!(decoded.sample_rate_hz(), 44_100, "{name}");
            assert_eq!(decoded.channel_count(), 2, "{name}");
            let duration = decoded.frames() as f64 / 44_100.0;
            assert!((duration - 3.0).abs() < 0.1, "{name}: {duration} s");
            for ch in 0..2 {
                let level = rms_db(&decoded.channel(ch)[44_100..2 * 44_100]);
                assert!(
                    (level - expected_rms).abs() < 0.5,
                    "{name}: channel {ch} at {level:.2} dB, expected {expected_rms:.2} dB"
                );
            }
        }
    }

    #[test]
    fn six_and_eight_channel_wav_keep_channel_order() {
        let dir = tempfile::tempdir().unwrap();
        for channels in [6, 8] {
            let signal = grid_signal(channels, 9_600, 48_000, 24);
            let path = dir.path().join(format!("{channels}ch.wav"));
            write_wav(&path, &signal, 24, false);
            assert_same_audio(&decode_all(&path, 1000).unwrap(), &signal, lsb(24));
        }
    }

    #[test]
    fn lowest_and_highest_sample_rates_decode() {
        let dir = tempfile::tempdir().unwrap();
        for rate in [8_000, 384_000] {
            let signal = grid_signal(2, rate as usize / 2, rate, 16);
            let path = dir.path().join(format!("{rate}.wav"));
            write_wav(&path, &signal, 16, false);
            assert_same_audio(&decode_all(&path, 4096).unwrap(), &signal, lsb(16));
        }
    }

    #[test]
    fn rates_and_channel_counts_outside_the_limits_are_unsupported_shapes() {
        let dir = tempfile::tempdir().unwrap();
        for (channels, rate, limit) in [
            (2, 4_000, "8000 Hz"),
            (2, 400_000, "384000 Hz"),
            (9, 48_000, "1 to 8"),
        ] {
            let path = dir.path().join(format!("shape-{channels}-{rate}.wav"));
            write_wav(&path, &grid_signal(channels, 1000, rate, 16), 16, false);
            let err = Decoder::open(&path).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedShape { .. }),
                "{channels} ch {rate} Hz: {err:?}"
            );
            assert!(err.to_string().contains(limit), "{err}");
            assert_names_file(&err, &path);
        }
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-take.wav");
        let err = Decoder::open(&path).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_names_file(&err, &path);
    }

    #[test]
    fn empty_text_and_random_files_are_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.wav");
        std::fs::File::create(&empty).unwrap();
        let text = dir.path().join("notes.mp3");
        std::fs::write(&text, "These are liner notes, not audio.\n".repeat(200)).unwrap();
        let random = dir.path().join("random.flac");
        let noise = crate::testkit::noise(1, 64 * 1024, 44_100, 1.0, 7);
        let bytes: Vec<u8> = noise
            .channel(0)
            .iter()
            .map(|x| (x * 127.0) as i8 as u8)
            .collect();
        std::fs::write(&random, bytes).unwrap();
        for path in [&empty, &text, &random] {
            let err = Decoder::open(path).unwrap_err();
            assert!(
                matches!(err, Error::Unsupported { .. }),
                "{}: {err:?}",
                path.display()
            );
            assert_names_file(&err, path);
        }
    }

    #[test]
    fn unknown_codec_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = wav_fixture(dir.path(), 16);
        // AC-3 in Matroska: Symphonia reads the container but has no AC-3 decoder.
        let ac3 = dir.path().join("film.mka");
        ffmpeg(&wav, &["-c:a", "ac3", "-ar", "48000"], &ac3);
        let err = Decoder::open(&ac3).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("not supported"), "{err}");
        assert_names_file(&err, &ac3);
    }

    #[test]
    fn truncated_wav_and_flac_report_expected_and_actual_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = wav_fixture(dir.path(), 16);
        let flac = dir.path().join("take.flac");
        let status = std::process::Command::new("flac")
            .args(["-s", "-f", "-o"])
            .arg(&flac)
            .arg(&wav)
            .status()
            .unwrap();
        assert!(status.success());
        for path in [&wav, &flac] {
            let len = std::fs::metadata(path).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(len * 6 / 10).unwrap();
            drop(file);
            let err = decode_all(path, 4096).unwrap_err();
            assert!(
                matches!(err, Error::Decode { .. }),
                "{}: {err:?}",
                path.display()
            );
            let message = err.to_string();
            assert!(
                message.contains("truncated: expected 44100 frames, got "),
                "{message}"
            );
            assert_names_file(&err, path);
        }
    }

    #[test]
    fn corrupt_flac_frame_mid_stream_is_an_error_naming_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = wav_fixture(dir.path(), 16);
        let flac = dir.path().join("damaged.flac");
        let status = std::process::Command::new("flac")
            .args(["-s", "-f", "-o"])
            .arg(&flac)
            .arg(&wav)
            .status()
            .unwrap();
        assert!(status.success());
        let mut bytes = std::fs::read(&flac).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&flac, bytes).unwrap();
        let err = decode_all(&flac, 4096).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("corrupt: a damaged packet was skipped"),
            "{err}"
        );
        assert_names_file(&err, &flac);
    }

    #[test]
    fn damaged_or_truncated_ogg_vorbis_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let signal = grid_signal(2, 3 * 44_100, 44_100, 16);
        let wav = dir.path().join("long.wav");
        write_wav(&wav, &signal, 16, false);
        let ogg = dir.path().join("take.ogg");
        for damage in ["corrupt", "truncated"] {
            ffmpeg(&wav, &["-c:a", "libvorbis"], &ogg);
            let mut bytes = std::fs::read(&ogg).unwrap();
            let middle = bytes.len() / 2;
            if damage == "corrupt" {
                for b in &mut bytes[middle..middle + 64] {
                    *b ^= 0x5a;
                }
            } else {
                bytes.truncate(middle);
            }
            std::fs::write(&ogg, bytes).unwrap();
            let err = decode_all(&ogg, 4096).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{damage}: {err:?}");
            assert!(err.to_string().contains(&format!("{damage}: ")), "{err}");
            assert_names_file(&err, &ogg);
        }
    }

    #[test]
    fn truncated_m4a_is_damage_not_an_unknown_format() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = wav_fixture(dir.path(), 16);
        let m4a = dir.path().join("cut.m4a");
        ffmpeg(&wav, &["-c:a", "aac"], &m4a);
        let len = std::fs::metadata(&m4a).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&m4a).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        let err = Decoder::open(&m4a).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_names_file(&err, &m4a);
    }

    #[test]
    fn wav_without_frames_has_no_audio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent-nothing.wav");
        write_wav(&path, &AudioBlock::new(2, 0, 44_100), 16, false);
        let err = Decoder::open(&path).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("no audio"), "{err}");
        assert_names_file(&err, &path);
    }

    #[test]
    fn nan_in_float_wav_names_channel_and_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut signal = grid_signal(2, 10_000, 44_100, 0);
        signal.channel_mut(1)[7_777] = f32::NAN;
        signal.channel_mut(0)[9_000] = f32::INFINITY;
        let path = dir.path().join("nan.wav");
        write_wav(&path, &signal, 32, true);
        let err = decode_all(&path, 1000).unwrap_err();
        match &err {
            Error::NonFiniteSample { channel, frame, .. } => {
                assert_eq!((*channel, *frame), (1, 7_777))
            }
            other => panic!("expected NonFiniteSample, got {other:?}"),
        }
        assert_names_file(&err, &path);
    }

    #[test]
    fn block_capacity_does_not_change_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = wav_fixture(dir.path(), 24);
        let flac = dir.path().join("cap.flac");
        ffmpeg(&wav, &["-c:a", "flac"], &flac);
        let mp3 = dir.path().join("cap.mp3");
        ffmpeg(&wav, &["-c:a", "libmp3lame"], &mp3);
        for path in [&flac, &mp3] {
            let reference = decode_all(path, 65_536).unwrap();
            for capacity in [1, 100] {
                assert_eq!(decode_all(path, capacity).unwrap(), reference, "{capacity}");
            }
        }
    }

    #[test]
    fn read_after_the_end_keeps_returning_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = wav_fixture(dir.path(), 16);
        let mut decoder = Decoder::open(&wav).unwrap();
        let mut block = AudioBlock::new(2, 100_000, 44_100);
        assert_eq!(decoder.read(&mut block).unwrap(), 44_100);
        assert_eq!(decoder.read(&mut block).unwrap(), 0);
        assert_eq!(decoder.read(&mut block).unwrap(), 0);
        assert_eq!(block.frames(), 0);
    }

    /// Every uncompressed PCM layout read straight from the file: container extension, and the
    /// codec as ffmpeg and Symphonia both name it.
    const DIRECT_PCM_LAYOUTS: [(&str, &str); 14] = [
        ("wav", "pcm_u8"),
        ("wav", "pcm_s16le"),
        ("wav", "pcm_s24le"),
        ("wav", "pcm_s32le"),
        ("wav", "pcm_f32le"),
        ("wav", "pcm_f64le"),
        ("aiff", "pcm_s8"),
        ("aiff", "pcm_u8"),
        ("aiff", "pcm_s16be"),
        ("aiff", "pcm_s16le"),
        ("aiff", "pcm_s24be"),
        ("aiff", "pcm_s32be"),
        ("aiff", "pcm_f32be"),
        ("aiff", "pcm_f64be"),
    ];

    /// `grid_signal(channels, frames)` as `codec` in `extension`'s container, made by ffmpeg from
    /// a 32-bit integer WAV (so that 32-bit integers use all their bits) or a 32-bit float WAV.
    /// 64-bit floats are scaled in `f64` on the way, so that they do not all fit in an `f32`.
    fn pcm_fixture(
        dir: &Path,
        extension: &str,
        codec: &str,
        channels: usize,
        frames: usize,
    ) -> PathBuf {
        let float = codec.starts_with("pcm_f");
        let source = dir.join(format!("source-{channels}ch-{frames}-{float}.wav"));
        if !source.exists() {
            let signal = grid_signal(channels, frames, 44_100, if float { 0 } else { 32 });
            write_wav(&source, &signal, 32, float);
        }
        let path = dir.join(format!("{codec}-{channels}ch-{frames}.{extension}"));
        let mut args = vec!["-c:a", codec];
        if codec.starts_with("pcm_f64") {
            args.extend(["-af", "aformat=sample_fmts=dbl,volume=0.7"]);
        }
        ffmpeg(&source, &args, &path);
        path
    }

    /// Asserts two blocks hold the same samples, bit for bit.
    fn assert_same_bits(decoded: &AudioBlock, expected: &AudioBlock, what: &str) {
        let shape = |b: &AudioBlock| (b.channel_count(), b.frames(), b.sample_rate_hz());
        assert_eq!(shape(decoded), shape(expected), "{what}");
        for ch in 0..expected.channel_count() {
            let first_difference = decoded
                .channel(ch)
                .iter()
                .zip(expected.channel(ch))
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                first_difference, None,
                "{what}: channel {ch} differs at this frame"
            );
        }
    }

    fn open_through_symphonia(path: &Path) -> Result<Decoder> {
        let options = OpenOptions {
            direct_pcm: false,
            ..OpenOptions::STRICT
        };
        Decoder::open_with(path, options)
    }

    #[test]
    fn direct_pcm_gives_symphonias_samples_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        // Longer than one read of every layout (128 KiB: 131072 frames of 8-bit mono), and not a
        // multiple of 4096 or of any read's frames.
        let frames = 150_001;
        for channels in [1, 2, 6] {
            for (extension, codec) in DIRECT_PCM_LAYOUTS {
                let path = pcm_fixture(dir.path(), extension, codec, channels, frames);
                let what = format!("{codec}, {channels} channels, .{extension}");
                let decoder = Decoder::open(&path).unwrap();
                assert!(decoder.reads_pcm_directly(), "{what}");
                assert_eq!(decoder.info().codec, codec, "{what}");
                assert_eq!(decoder.info().frames, Some(frames as u64), "{what}");
                assert_eq!(
                    decoder.info(),
                    open_through_symphonia(&path).unwrap().info(),
                    "{what}"
                );
                let reference = decode_all_through_symphonia(&path, 4096).unwrap();
                assert_eq!(reference.frames(), frames, "{what}");
                let level_db = rms_db(reference.channel(channels - 1));
                assert!(level_db > -12.0, "{what}: reference at {level_db:.1} dB");
                for capacity in [1, 1000, 4096] {
                    let decoded = decode_all(&path, capacity).unwrap();
                    assert_same_bits(
                        &decoded,
                        &reference,
                        &format!("{what}, blocks of {capacity}"),
                    );
                }
            }
        }
    }

    /// Where the samples of a WAV file's data chunk start.
    fn wav_data_start(bytes: &[u8]) -> usize {
        let mut pos = 12;
        loop {
            let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            if &bytes[pos..pos + 4] == b"data" {
                return pos + 8;
            }
            pos += 8 + len + len % 2;
        }
    }

    #[test]
    fn truncated_pcm_wav_reports_its_whole_frames_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let frames = 50_001;
        for (codec, sample_bytes, channels) in
            [("pcm_s24le", 3, 2), ("pcm_u8", 1, 1), ("pcm_f32le", 4, 6)]
        {
            let full = pcm_fixture(dir.path(), "wav", codec, channels, frames);
            let bytes = std::fs::read(&full).unwrap();
            let data_start = wav_data_start(&bytes);
            let frame_bytes = sample_bytes * channels;
            // Cut inside a frame after the first read, between two frames, inside the first frame.
            for (whole_frames, extra_bytes) in [(30_000, 1), (30_000, 0), (0, frame_bytes - 1)] {
                let what = format!("{codec}: {whole_frames} frames and {extra_bytes} bytes");
                let cut = dir
                    .path()
                    .join(format!("cut-{whole_frames}-{extra_bytes}-{codec}.wav"));
                let end = data_start + whole_frames * frame_bytes + extra_bytes;
                std::fs::write(&cut, &bytes[..end]).unwrap();
                let expected = format!("truncated: expected {frames} frames, got ");
                let direct = decode_all(&cut, 4096).unwrap_err();
                let reference = decode_all_through_symphonia(&cut, 4096).unwrap_err();
                for err in [&direct, &reference] {
                    assert!(matches!(err, Error::Decode { .. }), "{what}: {err:?}");
                    assert!(err.to_string().contains(&expected), "{what}: {err}");
                    assert_names_file(err, &cut);
                }
                // Symphonia counts only its whole packets of 1152 frames; the direct path counts
                // every whole frame the file holds.
                let held = whole_frames + extra_bytes / frame_bytes;
                let message = direct.to_string();
                assert!(message.ends_with(&format!("{expected}{held}")), "{message}");
                if held == 0 {
                    // Nothing to decode: both fail when opening, with the same words.
                    let opened = Decoder::open(&cut).unwrap_err().to_string();
                    assert_eq!(opened, message);
                    assert_eq!(
                        open_through_symphonia(&cut).unwrap_err().to_string(),
                        message
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_aiff_is_refused_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let full = pcm_fixture(dir.path(), "aiff", "pcm_s16be", 2, 50_001);
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.path().join("cut.aiff");
        std::fs::write(&cut, &bytes[..bytes.len() / 2 + 1]).unwrap();
        // Symphonia's AIFF reader skips over the sound data to look for chunks after it, so the
        // cut already fails the probe, before either path reads a sample.
        let direct = decode_all(&cut, 4096).unwrap_err();
        let reference = decode_all_through_symphonia(&cut, 4096).unwrap_err();
        assert!(matches!(direct, Error::Unsupported { .. }), "{direct:?}");
        assert_names_file(&direct, &cut);
        assert_eq!(direct.to_string(), reference.to_string());
    }

    #[test]
    fn non_finite_pcm_floats_give_symphonias_error() {
        let dir = tempfile::tempdir().unwrap();
        // (channel, frame, value) written, and the (channel, frame) the error must name: the
        // lowest frame, then the lowest channel.
        type Damage<'a> = &'a [(usize, usize, f32)];
        let cases: [(Damage, (usize, u64)); 2] = [
            (
                &[(1, 7_777, f32::NAN), (0, 9_000, f32::INFINITY)],
                (1, 7_777),
            ),
            (
                &[(1, 5_000, f32::NEG_INFINITY), (0, 5_000, f32::NAN)],
                (0, 5_000),
            ),
        ];
        for (case, (damage, expected)) in cases.iter().enumerate() {
            let mut signal = grid_signal(2, 10_001, 44_100, 0);
            for &(channel, frame, value) in *damage {
                signal.channel_mut(channel)[frame] = value;
            }
            let float_wav = dir.path().join(format!("nan-{case}.wav"));
            write_wav(&float_wav, &signal, 32, true);
            for (extension, codec) in [
                ("wav", "pcm_f32le"),
                ("wav", "pcm_f64le"),
                ("aiff", "pcm_f32be"),
                ("aiff", "pcm_f64be"),
            ] {
                let path = dir.path().join(format!("nan-{case}-{codec}.{extension}"));
                ffmpeg(&float_wav, &["-c:a", codec], &path);
                assert!(Decoder::open(&path).unwrap().reads_pcm_directly());
                for capacity in [1, 1000, 4096] {
                    let direct = decode_all(&path, capacity).unwrap_err();
                    let reference = decode_all_through_symphonia(&path, capacity).unwrap_err();
                    for err in [&direct, &reference] {
                        match err {
                            Error::NonFiniteSample { channel, frame, .. } => {
                                assert_eq!((*channel, *frame), *expected, "{codec}, {capacity}")
                            }
                            other => panic!("{codec}: expected NonFiniteSample, got {other:?}"),
                        }
                    }
                    assert_eq!(direct.to_string(), reference.to_string());
                }
            }
        }
    }
}
