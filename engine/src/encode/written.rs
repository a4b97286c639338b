//! What an [`super::Encoder`] wrote, and the check that a file still holds it.
//!
//! A FLAC encoder with its frame check on ([`super::Encoder::check_frames`]) has decoded every
//! frame it wrote and found its samples; what it hands back from [`super::Encoder::finish_written`] is a
//! [`WrittenAudio`] holding the `STREAMINFO` it wrote and a BLAKE3 digest of the frame bytes. After the
//! file is tagged (which rewrites the metadata and moves the frames),
//! [`WrittenAudio::check_file`] reads the file once and confirms the same `STREAMINFO` and the same
//! frame bytes are there: the file then decodes to exactly the samples, without decoding it again.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::encode_error;
use super::flac_format::STREAMINFO_LEN;
use crate::error::{Error, Result};

/// What [`super::Encoder::finish_written`] wrote, as far as the encoder can vouch for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenAudio {
    flac: Option<WrittenFlac>,
}

/// A FLAC stream whose frames were all checked as they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WrittenFlac {
    stream_info: [u8; STREAMINFO_LEN],
    /// BLAKE3 of the frame bytes.
    frames: [u8; 32],
    /// Samples whose `f32` value was not exactly on the integer grid (or was clamped): they cannot
    /// decode to the value written.
    off_grid_samples: u64,
    bit_depth: u32,
}

impl WrittenAudio {
    /// Nothing the encoder can vouch for (WAV, or FLAC without the frame check).
    pub(super) fn unchecked() -> Self {
        Self { flac: None }
    }

    /// A FLAC stream of which every frame was decoded and compared as it was written.
    pub(super) fn checked_flac(
        stream_info: [u8; STREAMINFO_LEN],
        frames: [u8; 32],
        off_grid_samples: u64,
        bit_depth: u32,
    ) -> Self {
        Self {
            flac: Some(WrittenFlac {
                stream_info,
                frames,
                off_grid_samples,
                bit_depth,
            }),
        }
    }

    /// True when the encoder decoded every frame it wrote and found its samples, so that
    /// [`WrittenAudio::check_file`] can stand in for decoding the file.
    pub fn is_checked(&self) -> bool {
        self.flac.is_some()
    }

    /// Confirms that the file at `path` (as written, or tagged since) decodes to exactly the `f32`
    /// samples the encoder was given: every one of them was on the integer grid, and the file
    /// holds the `STREAMINFO` and the frame bytes the encoder wrote and checked.
    ///
    /// # Errors
    /// [`Error::Encode`] naming `path` with what differs (or that the encoder did not check its
    /// frames); [`Error::Io`] if the file cannot be read.
    pub fn check_file(&self, path: &Path) -> Result<()> {
        let Some(flac) = &self.flac else {
            return Err(encode_error(
                path,
                "the encoder did not check its frames: decode the file to verify it",
            ));
        };
        if flac.off_grid_samples > 0 {
            return Err(encode_error(
                path,
                format!(
                    "{} samples are not on the {}-bit grid: the file cannot decode to them",
                    flac.off_grid_samples, flac.bit_depth
                ),
            ));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let read = |reader: &mut BufReader<File>, buffer: &mut [u8]| {
            reader.read_exact(buffer).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    encode_error(path, "the file ends inside its metadata")
                }
                _ => Error::io(path, e),
            })
        };
        let mut marker = [0u8; 4];
        read(&mut reader, &mut marker)?;
        if &marker != b"fLaC" {
            return Err(encode_error(path, "the file no longer starts with fLaC"));
        }
        // Metadata blocks: STREAMINFO first (as written), then whatever the tagger added.
        let mut first = true;
        loop {
            let mut header = [0u8; 4];
            read(&mut reader, &mut header)?;
            let last = header[0] & 0x80 != 0;
            let block_type = header[0] & 0x7F;
            let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            if first {
                let mut stream_info = [0u8; STREAMINFO_LEN];
                if block_type != 0 || len != STREAMINFO_LEN {
                    return Err(encode_error(
                        path,
                        "the first metadata block is not STREAMINFO",
                    ));
                }
                read(&mut reader, &mut stream_info)?;
                if stream_info != flac.stream_info {
                    return Err(encode_error(path, "STREAMINFO changed after encoding"));
                }
                first = false;
            } else {
                std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink())
                    .map_err(|e| Error::io(path, e))?;
            }
            if last {
                break;
            }
        }
        // The rest of the file is the frames.
        let mut digest = blake3::Hasher::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut chunk).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            digest.update(&chunk[..n]);
        }
        if digest.finalize().as_bytes() != &flac.frames {
            return Err(encode_error(
                path,
                "the audio frames in the file differ from those the encoder wrote and checked",
            ));
        }
        Ok(())
    }
}
