//! WavPack (`.wv`), decoded by the reference library: the `wavpack` crate builds WavPack 5 from
//! its C source and wraps it in a safe API.
//!
//! Lossless integer (8 to 32 bits) and float files decode bit for bit; a hybrid file read without
//! its correction file decodes to its lossy part (codec `wavpack_lossy`), but one whose `.wvc`
//! correction file lies beside it is refused, because the library binding cannot read correction
//! files and a master made from the lossy part of a lossless archive would be silently worse.
//!
//! Every block carries a checksum of its decoded samples, which the library checks as each block
//! ends: a failed checksum, or a block it cannot read, is an [`Error::Decode`]. The check comes
//! when a block's last frame is decoded, so the first frames of a damaged block may already have
//! been handed out when the error is reported; the read fails all the same, before the track
//! ends.
//!
//! The library's reader cannot move between threads (it holds a C context), and a [`super::Decoder`]
//! must; so the reader lives on a decoding thread of its own, which hands decoded reads of
//! [`READ_FRAMES`] frames to the stream through a channel two reads deep and gets the emptied
//! buffers back: memory is a few reads plus the library's one block, whatever the track's length.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use wavpack::WavpackReader;

use super::limits::Declared;
use super::{SourceInfo, check_finite, decode_error, read_full, unsupported};
use crate::audio::AudioBlock;
use crate::error::{Error, Result};

/// Frames asked of the library per read.
const READ_FRAMES: usize = 4096;
/// Decoded reads the decoding thread may run ahead of the stream.
const READS_AHEAD: usize = 2;
/// `WavpackGetMode` flags (WavPack's `wavpack.h`).
const MODE_LOSSLESS: i32 = 0x2;
const MODE_HYBRID: i32 = 0x4;
const MODE_FLOAT: i32 = 0x8;

/// Whether `file` starts with a WavPack block (`wvpk`).
///
/// # Errors
/// [`Error::Io`].
pub(super) fn is_wavpack(path: &Path, file: &mut File) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let got = read_full(file, &mut magic).map_err(|e| Error::io(path, e))?;
    Ok(got == magic.len() && &magic == b"wvpk")
}

/// How the library's 32-bit samples become `f32`.
#[derive(Debug, Clone, Copy)]
enum SampleFormat {
    /// Integers right-justified in the file's bytes per sample, scaled by this power of two
    /// (1 / 2^(bits - 1), the scaling Symphonia gives PCM of that width).
    Integer { scale: f32 },
    /// IEEE floats, normalised to +/-1.0 by the library, passed as their bits.
    Float,
}

/// One read from the decoding thread: interleaved samples and the frames they hold (0 at the end
/// of the stream).
type DecodedRead = Result<(Vec<i32>, usize)>;

/// A WavPack stream, decoded [`READ_FRAMES`] frames at a time on its decoding thread.
#[derive(Debug)]
pub(super) struct WavPackStream {
    format: SampleFormat,
    channel_count: usize,
    /// Decoded reads, in order; the thread ends after sending the last (0 frames) or an error.
    reads: Receiver<DecodedRead>,
    /// Used buffers, back to the thread to be filled again.
    spent: Sender<Vec<i32>>,
    /// The read being handed out: interleaved samples.
    samples: Vec<i32>,
    /// Frames in `samples`.
    buffered_frames: usize,
    /// Frames of `samples` already converted into a caller's block.
    taken_frames: usize,
    /// Frames decoded since the start of the track, up to the end of `samples`.
    frames_decoded: u64,
}

/// Opens a WavPack file: what it holds, and the stream of its samples.
///
/// # Errors
/// [`Error::Unsupported`] for a file the library does not take (DSD audio, a newer version) or a
/// hybrid file with its correction file beside it; [`Error::UnsupportedShape`] for a channel
/// count or rate outside lathe's limits; [`Error::SourceTooLarge`] for a header that declares
/// more than `max_samples` samples; [`Error::Decode`] for a damaged header; [`Error::Io`]
/// (also if the decoding thread cannot start).
pub(super) fn open(path: &Path, max_samples: u64) -> Result<(SourceInfo, WavPackStream)> {
    let (opened_tx, opened) = sync_channel(1);
    let (reads_tx, reads) = sync_channel(READS_AHEAD);
    let (spent, spent_rx) = channel();
    let thread_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("wavpack-decode".to_string())
        .spawn(move || decode_on_thread(thread_path, max_samples, opened_tx, reads_tx, spent_rx))
        .map_err(|e| Error::io(path, e))?;
    let lost = || decode_error(path, "the WavPack decoding thread stopped");
    let (info, format) = opened.recv().map_err(|_| lost())??;
    let stream = WavPackStream {
        format,
        channel_count: info.channel_count,
        reads,
        spent,
        samples: Vec::new(),
        buffered_frames: 0,
        taken_frames: 0,
        frames_decoded: 0,
    };
    Ok((info, stream))
}

/// The decoding thread: opens the file, reports what it holds through `opened`, then decodes it
/// into the buffers that come back through `spent` (or new ones, until they do) and sends each
/// read through `reads`, until the end of the stream, an error, or the stream is dropped.
fn decode_on_thread(
    path: PathBuf,
    max_samples: u64,
    opened: SyncSender<Result<(SourceInfo, SampleFormat)>>,
    reads: SyncSender<DecodedRead>,
    spent: Receiver<Vec<i32>>,
) {
    let (mut reader, info) = match open_reader(&path, max_samples) {
        Ok((reader, info, format)) => {
            if opened.send(Ok((info.clone(), format))).is_err() {
                return;
            }
            (reader, info)
        }
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let mut frames_decoded = 0u64;
    loop {
        let mut samples = spent
            .try_recv()
            .unwrap_or_else(|_| vec![0; READ_FRAMES * info.channel_count]);
        let read = unpack(&mut reader, &info, &mut samples, frames_decoded);
        let last = !matches!(read, Ok(frames) if frames > 0);
        if let Ok(frames) = read {
            frames_decoded += frames as u64;
        }
        if reads.send(read.map(|frames| (samples, frames))).is_err() || last {
            return;
        }
    }
}

/// Opens the library's reader and reads what the file holds, held to lathe's limits.
fn open_reader(path: &Path, max_samples: u64) -> Result<(WavpackReader, SourceInfo, SampleFormat)> {
    let builder = WavpackReader::open(path).map_err(|e| library_error(path, e, "cannot open"))?;
    // Float audio normalised to +/-1.0 whatever exponent the encoder stored it at.
    let mut reader = builder
        .normalize(0)
        .build()
        .map_err(|e| unsupported(path, &format!("not a WavPack file lathe reads ({e})")))?;
    let query = |e| library_error(path, e, "bad header");
    let mode = reader.get_mode().map_err(query)?;
    let channel_count = usize::try_from(reader.get_num_channels().map_err(query)?).unwrap_or(0);
    let sample_rate_hz = reader.get_sample_rate().map_err(query)?;
    let bits = u32::try_from(reader.get_bits_per_sample().map_err(query)?).unwrap_or(0);
    let bytes_per_sample = reader.get_bytes_per_sample().map_err(query)?;
    let total_frames = u64::try_from(reader.get_num_samples().map_err(query)?).ok();

    let lossless = mode & MODE_LOSSLESS != 0;
    if mode & MODE_HYBRID != 0 && !lossless && path.with_extension("wvc").exists() {
        return Err(unsupported(
            path,
            "a hybrid WavPack file with its correction file (.wvc) beside it: lathe reads only \
             the lossy part, so unpack the pair to WAV with `wvunpack` first",
        ));
    }
    let format = if mode & MODE_FLOAT != 0 {
        SampleFormat::Float
    } else if (1..=4).contains(&bytes_per_sample) {
        let scale = 1.0 / (1u64 << (8 * bytes_per_sample - 1)) as f32;
        SampleFormat::Integer { scale }
    } else {
        return Err(decode_error(
            path,
            &format!("bad WavPack header: {bytes_per_sample} bytes per sample"),
        ));
    };
    let info = SourceInfo {
        path: path.to_path_buf(),
        container: "wavpack".to_string(),
        codec: if lossless { "wavpack" } else { "wavpack_lossy" }.to_string(),
        sample_rate_hz,
        channel_count,
        frames: total_frames,
        bits_per_sample: lossless.then_some(bits),
        notes: if lossless {
            Vec::new()
        } else {
            vec!["hybrid WavPack without its correction file: decoded to its lossy part".to_owned()]
        },
    };
    // Before allocating buffers for every channel, or decoding.
    Declared::of(&info).check(path, max_samples)?;
    Ok((reader, info, format))
}

/// Decodes the next frames into `samples` (interleaved); returns how many, 0 at the end of the
/// stream. `after` frames were decoded before.
///
/// # Errors
/// [`Error::Decode`] for a block whose checksum fails or that cannot be read (damage, or the
/// file cut short).
fn unpack(
    reader: &mut WavpackReader,
    info: &SourceInfo,
    samples: &mut [i32],
    after: u64,
) -> Result<usize> {
    let path = info.path.as_path();
    let frames = reader.unpack_samples(samples).map_err(|e| {
        let reason = match info.frames {
            Some(expected) => {
                format!("truncated or corrupt: expected {expected} frames, got {after} ({e})")
            }
            None => format!("truncated or corrupt after frame {after} ({e})"),
        };
        decode_error(path, &reason)
    })?;
    let errors = reader
        .get_num_errors()
        .map_err(|e| library_error(path, e, "decoder failed"))?;
    if errors > 0 {
        return Err(decode_error(
            path,
            &format!(
                "corrupt: a WavPack block fails its checksum (within {frames} frames after frame \
                 {after})"
            ),
        ));
    }
    Ok(frames as usize)
}

impl WavPackStream {
    /// Takes the next decoded read (after all buffered frames were taken). Returns its frames, 0
    /// at the end of the stream.
    ///
    /// # Errors
    /// [`Error::Decode`] for a block whose checksum fails or that cannot be read (damage, or the
    /// file cut short), or if the decoding thread stopped.
    pub(super) fn fill(&mut self, info: &SourceInfo) -> Result<usize> {
        debug_assert_eq!(self.taken_frames, self.buffered_frames);
        let (samples, frames) = self
            .reads
            .recv()
            .map_err(|_| decode_error(&info.path, "the WavPack decoding thread stopped"))??;
        let spent = std::mem::replace(&mut self.samples, samples);
        if !spent.is_empty() {
            // The thread may have ended: then the buffer is simply dropped.
            let _ = self.spent.send(spent);
        }
        self.buffered_frames = frames;
        self.taken_frames = 0;
        self.frames_decoded += frames as u64;
        Ok(frames)
    }
    /// Converts up to `block.capacity() - offset` decoded frames into the block's channels from
    /// frame `offset` on; returns how many (0 when the buffer is used up).
    ///
    /// # Errors
    /// [`Error::NonFiniteSample`] for the first NaN or infinite float sample of those frames.
    pub(super) fn take(
        &mut self,
        block: &mut AudioBlock,
        offset: usize,
        path: &Path,
    ) -> Result<usize> {
        let frames = (self.buffered_frames - self.taken_frames).min(block.capacity() - offset);
        if frames == 0 {
            return Ok(0);
        }
        let start = self.taken_frames * self.channel_count;
        let interleaved = &self.samples[start..start + frames * self.channel_count];
        for ch in 0..self.channel_count {
            let out = &mut block.channel_buffer_mut(ch)[offset..offset + frames];
            let samples = interleaved.iter().skip(ch).step_by(self.channel_count);
            match self.format {
                SampleFormat::Integer { scale } => {
                    for (y, &x) in out.iter_mut().zip(samples) {
                        *y = x as f32 * scale;
                    }
                }
                SampleFormat::Float => {
                    for (y, &x) in out.iter_mut().zip(samples) {
                        *y = f32::from_bits(x as u32);
                    }
                }
            }
        }
        if let SampleFormat::Float = self.format {
            block.set_frames(offset + frames);
            let block: &AudioBlock = block;
            let converted = (0..self.channel_count).map(move |ch| &block.channel(ch)[offset..]);
            let first_frame =
                self.frames_decoded - (self.buffered_frames - self.taken_frames) as u64;
            check_finite(path, converted, first_frame)?;
        }
        self.taken_frames += frames;
        Ok(frames)
    }
}

/// A library failure outside decoding, as lathe's error: an I/O failure as [`Error::Io`], anything
/// else as [`Error::Decode`] with `what` and the library's message.
fn library_error(path: &Path, error: wavpack::Error, what: &str) -> Error {
    match error {
        wavpack::Error::IoError(io) => Error::io(path, io),
        other => decode_error(path, &format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::audio::AudioBlock;
    use crate::decode::Decoder;
    use crate::decode::fixtures::{assert_same_audio, decode_all, grid_signal, write_wav};
    use crate::error::Error;

    /// `grid_signal` as a WAV of `bits` integer bits (or 32-bit float), and the samples lathe
    /// decodes from that WAV (the reference for the WavPack file).
    fn source(
        dir: &Path,
        bits: u32,
        float: bool,
        channels: usize,
        rate: u32,
    ) -> (PathBuf, AudioBlock) {
        let frames = rate as usize * 3 / 2 + 7;
        let signal = grid_signal(channels, frames, rate, if float { 0 } else { bits });
        let path = dir.join(format!("source-{bits}-{float}-{channels}-{rate}.wav"));
        write_wav(&path, &signal, bits as u16, float);
        let decoded = decode_all(&path, 4096).unwrap();
        (path, decoded)
    }

    /// `wavpack -q <args> wav -o wv`.
    fn wavpack(wav: &Path, args: &[&str], wv: &Path) {
        let status = Command::new("wavpack")
            .arg("-q")
            .args(args)
            .arg(wav)
            .arg("-o")
            .arg(wv)
            .status()
            .expect("wavpack runs");
        assert!(status.success(), "wavpack failed for {}", wv.display());
    }

    #[test]
    fn lossless_wavpack_decodes_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for (bits, float) in [(16, false), (24, false), (32, false), (32, true)] {
            for channels in [1, 2, 6, 8] {
                let (wav, expected) = source(dir.path(), bits, float, channels, 44_100);
                for mode in [&[][..], &["-hh", "-x3"][..], &["-f"][..]] {
                    let what = format!("{bits} bits, float {float}, {channels} ch, {mode:?}");
                    let wv = dir
                        .path()
                        .join(format!("{bits}-{float}-{channels}-{}.wv", mode.len()));
                    wavpack(&wav, mode, &wv);
                    let decoder = Decoder::open(&wv).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let info = decoder.info();
                    assert_eq!(
                        (info.container.as_str(), info.codec.as_str()),
                        ("wavpack", "wavpack"),
                        "{what}"
                    );
                    assert_eq!(info.frames, Some(expected.frames() as u64), "{what}");
                    assert_eq!(info.bits_per_sample, Some(bits), "{what}");
                    for capacity in [1000, 4096, 10_000] {
                        let decoded = decode_all(&wv, capacity).unwrap();
                        assert_same_audio(&decoded, &expected, 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn lowest_and_highest_rates_decode_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for rate in [8_000, 384_000] {
            let (wav, expected) = source(dir.path(), 16, false, 2, rate);
            let wv = dir.path().join(format!("{rate}.wv"));
            wavpack(&wav, &[], &wv);
            assert_eq!(Decoder::open(&wv).unwrap().info().sample_rate_hz, rate);
            assert_same_audio(&decode_all(&wv, 4096).unwrap(), &expected, 0.0);
        }
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, _) = source(dir.path(), 24, false, 2, 44_100);
        let wv = dir.path().join("take.wv");
        wavpack(&wav, &[], &wv);
        let bytes = std::fs::read(&wv).unwrap();
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x10;
        let flipped_path = dir.path().join("flipped.wv");
        std::fs::write(&flipped_path, flipped).unwrap();
        let cut_path = dir.path().join("cut.wv");
        std::fs::write(&cut_path, &bytes[..middle]).unwrap();
        for (path, reason) in [(&flipped_path, "corrupt"), (&cut_path, "truncated")] {
            let err = decode_all(path, 4096).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(reason), "{message}");
            assert!(
                message.contains(path.file_name().unwrap().to_str().unwrap()),
                "{message}"
            );
        }
    }

    #[test]
    fn hybrid_wavpack_decodes_lossy_unless_its_correction_file_is_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (wav, expected) = source(dir.path(), 16, false, 2, 44_100);
        let lossy = dir.path().join("lossy.wv");
        wavpack(&wav, &["-b4"], &lossy);
        let decoder = Decoder::open(&lossy).unwrap();
        assert_eq!(decoder.info().codec, "wavpack_lossy");
        assert_eq!(decoder.info().bits_per_sample, None);
        let decoded = decode_all(&lossy, 4096).unwrap();
        assert_eq!(decoded.frames(), expected.frames());
        assert_same_audio(&decoded, &expected, 0.05);

        let paired = dir.path().join("paired.wv");
        wavpack(&wav, &["-b4", "-c"], &paired);
        assert!(paired.with_extension("wvc").exists());
        let err = Decoder::open(&paired).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("correction file"), "{err}");
    }
}
