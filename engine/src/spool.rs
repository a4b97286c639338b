//! Spools: the audio one pass of a render hands to the passes after it, kept on disk.
//!
//! A master is made in several passes over the same audio (see [`crate::render`]). The expensive
//! front of the pipeline (decode, resample, restore, the tone and dynamics chain) gives the same
//! samples every time, so the chain pass writes them once to a spool and the later passes read the
//! spool instead of running that front again. Samples are stored as raw little-endian `f32`,
//! interleaved, so a spool reads back bit for bit what was written; blocks are streamed through a
//! fixed buffer, so memory does not grow with the track (the spool's size does: 4 bytes a sample, on
//! disk beside the master).
//!
//! A spool lives under a temporary name beside the output ([`crate::atomic_file::temp_path_for`]'s
//! convention) and is removed when its [`Spool`] (or an unfinished [`SpoolWriter`]) is dropped,
//! including when a render fails or is cancelled.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic_file::TempFile;
use crate::audio::AudioBlock;
use crate::error::{Error, Result};

/// Bytes of one stored sample.
const SAMPLE_BYTES: usize = 4;

/// Writes blocks to a new spool; [`SpoolWriter::finish`] makes it readable.
#[derive(Debug)]
pub struct SpoolWriter {
    file: BufWriter<File>,
    path: TempFile,
    channel_count: usize,
    sample_rate_hz: u32,
    frames: u64,
    bytes: Vec<u8>,
}

impl SpoolWriter {
    /// Creates (or truncates) the spool file `path` for audio of this shape; blocks written later may
    /// hold up to `max_block_frames` frames without reallocating.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be created.
    pub fn create(
        path: PathBuf,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self> {
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            file: BufWriter::with_capacity(1 << 16, file),
            path: TempFile::new(path),
            channel_count,
            sample_rate_hz,
            frames: 0,
            bytes: Vec::with_capacity(max_block_frames * channel_count * SAMPLE_BYTES),
        })
    }

    /// Appends the valid frames of `block` (same channel count as the spool).
    ///
    /// # Errors
    /// [`Error::Io`] on a write failure.
    pub fn write(&mut self, block: &AudioBlock) -> Result<()> {
        let channels = self.channel_count;
        self.bytes
            .resize(block.frames() * channels * SAMPLE_BYTES, 0);
        for (channel, samples) in block.channels().enumerate() {
            let frames = self.bytes.chunks_exact_mut(channels * SAMPLE_BYTES);
            for (frame, &x) in frames.zip(samples) {
                frame[channel * SAMPLE_BYTES..][..SAMPLE_BYTES].copy_from_slice(&x.to_le_bytes());
            }
        }
        self.file
            .write_all(&self.bytes)
            .map_err(|e| Error::io(self.path.path(), e))?;
        self.frames += block.frames() as u64;
        Ok(())
    }

    /// Flushes the spool and hands it over for reading.
    ///
    /// # Errors
    /// [`Error::Io`] if the buffered audio cannot be written.
    pub fn finish(mut self) -> Result<Spool> {
        self.file
            .flush()
            .map_err(|e| Error::io(self.path.path(), e))?;
        Ok(Spool {
            path: self.path,
            channel_count: self.channel_count,
            sample_rate_hz: self.sample_rate_hz,
            frames: self.frames,
        })
    }
}

/// A finished spool: read it any number of times with [`Spool::reader`]. The file is removed when
/// this is dropped.
#[derive(Debug)]
pub struct Spool {
    path: TempFile,
    channel_count: usize,
    sample_rate_hz: u32,
    frames: u64,
}

impl Spool {
    /// Frames in the spool.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Channels of the spooled audio.
    pub fn channel_count(&self) -> usize {
        self.channel_count
    }

    /// Sample rate of the spooled audio, Hz.
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// The spool's file.
    pub fn path(&self) -> &Path {
        self.path.path()
    }

    /// Opens the spool for reading from its start.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened.
    pub fn reader(&self) -> Result<SpoolReader> {
        let path = self.path.path().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(SpoolReader {
            file,
            path,
            channel_count: self.channel_count,
            remaining: self.frames,
            bytes: Vec::new(),
        })
    }
}

/// Reads a spool's blocks in order.
#[derive(Debug)]
pub struct SpoolReader {
    file: File,
    path: PathBuf,
    channel_count: usize,
    remaining: u64,
    bytes: Vec<u8>,
}

impl SpoolReader {
    /// Fills `block` (same channel count as the spool) with the next frames, as many as it holds;
    /// returns the number of frames read, 0 at the end.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read or is shorter than what was written.
    pub fn read(&mut self, block: &mut AudioBlock) -> Result<usize> {
        let channels = self.channel_count;
        let frames = (block.capacity() as u64).min(self.remaining) as usize;
        self.bytes.resize(frames * channels * SAMPLE_BYTES, 0);
        self.file
            .read_exact(&mut self.bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        block.set_frames(frames);
        for channel in 0..channels {
            let samples = block.channel_mut(channel);
            let frames = self.bytes.chunks_exact(channels * SAMPLE_BYTES);
            for (x, frame) in samples.iter_mut().zip(frames) {
                let mut sample = [0; SAMPLE_BYTES];
                sample.copy_from_slice(&frame[channel * SAMPLE_BYTES..][..SAMPLE_BYTES]);
                *x = f32::from_le_bytes(sample);
            }
        }
        self.remaining -= frames as u64;
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn spool_reads_back_bit_for_bit_in_any_block_size_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.spool");
        let mut audio = testkit::noise(3, 10_000, 48_000, 0.5, 3);
        audio.channel_mut(1)[17] = -0.0;
        audio.channel_mut(2)[18] = f32::MIN_POSITIVE / 2.0;
        let mut writer = SpoolWriter::create(path.clone(), 3, 48_000, 4096).unwrap();
        let mut part = AudioBlock::new(3, 4096, 48_000);
        for start in (0..10_000).step_by(3000) {
            let n = 3000.min(10_000 - start);
            part.set_frames(n);
            for ch in 0..3 {
                part.channel_mut(ch)
                    .copy_from_slice(&audio.channel(ch)[start..start + n]);
            }
            writer.write(&part).unwrap();
        }
        let spool = writer.finish().unwrap();
        assert_eq!(spool.frames(), 10_000);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            10_000 * 3 * SAMPLE_BYTES as u64
        );
        for size in [1, 777, 4096, 20_000] {
            let mut reader = spool.reader().unwrap();
            let mut block = AudioBlock::new(3, size, 48_000);
            let mut read: Vec<Vec<u32>> = vec![Vec::new(); 3];
            while reader.read(&mut block).unwrap() > 0 {
                for (ch, samples) in block.channels().enumerate() {
                    read[ch].extend(samples.iter().map(|x| x.to_bits()));
                }
            }
            for (ch, samples) in read.iter().enumerate() {
                let expected: Vec<u32> = audio.channel(ch).iter().map(|x| x.to_bits()).collect();
                assert_eq!(samples, &expected, "channel {ch}, blocks of {size}");
            }
        }
        drop(spool);
        assert!(!path.exists());
    }

    #[test]
    fn unfinished_spool_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.spool");
        let mut writer = SpoolWriter::create(path.clone(), 1, 8_000, 16).unwrap();
        writer.write(&testkit::noise(1, 16, 8_000, 0.1, 1)).unwrap();
        assert!(path.exists());
        drop(writer);
        assert!(!path.exists());
    }
}
