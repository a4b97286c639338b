//! What an [`super::Encoder`] wrote, and the check that a file still holds it.
//!
//! A FLAC encoder with its frame check on ([`super::Encoder::check_frames`]) has decoded every
//! frame it wrote and found its samples; what it hands back from [`super::Encoder::finish_written`] is a
//! [`WrittenAudio`] holding the `STREAMINFO` it wrote and a digest of the frame bytes. After the
//! file is tagged (which rewrites the metadata and moves the frames),
//! [`WrittenAudio::check_file`] reads the file once and confirms the same `STREAMINFO` and the same
//! frame bytes are there: the file then decodes to exactly the samples, without decoding it again.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::encode_error;
use super::flac::STREAMINFO_LEN;
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
    frames: DigestValue,
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
        frames: DigestValue,
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
        let mut digest = ByteDigest::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut chunk).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            digest.update(&chunk[..n]);
        }
        if digest.value() != flac.frames {
            return Err(encode_error(
                path,
                "the audio frames in the file differ from those the encoder wrote and checked",
            ));
        }
        Ok(())
    }
}

/// Lanes of [`ByteDigest`], each fed every eighth 64-bit word.
const DIGEST_LANES: usize = 8;
/// Bytes a round of the lanes takes.
const DIGEST_BLOCK_BYTES: usize = DIGEST_LANES * 8;
const DIGEST_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const DIGEST_PRIME: u64 = 0x0100_0000_01b3;

/// A checksum of a byte stream for catching accidental change (not a cryptographic hash): eight
/// interleaved lanes, each folding in its 64-bit little-endian words by xor, multiply and rotate
/// (the rotation carries the multiplication's high bits back down, so a change anywhere in a word
/// reaches every bit of the lane), plus the stream's length. The value depends only on the bytes,
/// not on how they are cut into calls of [`ByteDigest::update`]; the lanes' multiplications
/// overlap, so it runs at several gigabytes a second.
#[derive(Debug, Clone)]
pub(super) struct ByteDigest {
    lanes: [u64; DIGEST_LANES],
    /// Bytes of an unfinished round.
    pending: [u8; DIGEST_BLOCK_BYTES],
    pending_len: usize,
    total_bytes: u64,
}

impl ByteDigest {
    pub(super) fn new() -> Self {
        Self {
            lanes: [DIGEST_OFFSET; DIGEST_LANES],
            pending: [0; DIGEST_BLOCK_BYTES],
            pending_len: 0,
            total_bytes: 0,
        }
    }

    /// Adds the next bytes of the stream.
    pub(super) fn update(&mut self, mut bytes: &[u8]) {
        self.total_bytes += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (DIGEST_BLOCK_BYTES - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < DIGEST_BLOCK_BYTES {
                return;
            }
            let round = self.pending;
            self.round(&round);
            self.pending_len = 0;
        }
        let mut rounds = bytes.chunks_exact(DIGEST_BLOCK_BYTES);
        for round in &mut rounds {
            self.round(round);
        }
        let rest = rounds.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The digest of the bytes so far: the lanes after a last round padded with zeros, and the
    /// length.
    pub(super) fn value(&self) -> DigestValue {
        let mut lanes = self.lanes;
        if self.pending_len > 0 {
            let mut round = [0u8; DIGEST_BLOCK_BYTES];
            round[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
            fold_round(&mut lanes, &round);
        }
        (lanes, self.total_bytes)
    }

    fn round(&mut self, round: &[u8]) {
        fold_round(&mut self.lanes, round);
    }
}

/// What [`ByteDigest::value`] gives.
pub(super) type DigestValue = ([u64; DIGEST_LANES], u64);

fn fold_round(lanes: &mut [u64; DIGEST_LANES], round: &[u8]) {
    for (lane, word) in lanes.iter_mut().zip(round.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        *lane = ((*lane ^ u64::from_le_bytes(bytes)).wrapping_mul(DIGEST_PRIME)).rotate_left(29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(parts: &[&[u8]]) -> DigestValue {
        let mut digest = ByteDigest::new();
        for part in parts {
            digest.update(part);
        }
        digest.value()
    }

    #[test]
    fn digest_does_not_depend_on_how_the_bytes_are_cut() {
        let bytes: Vec<u8> = (0..1_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = digest_of(&[&bytes]);
        for cut in [0, 1, 63, 64, 65, 500, 999, 1_000] {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(digest_of(&[a, b]), whole, "cut at {cut}");
        }
        let mut byte_at_a_time = ByteDigest::new();
        for b in &bytes {
            byte_at_a_time.update(std::slice::from_ref(b));
        }
        assert_eq!(byte_at_a_time.value(), whole);
    }

    #[test]
    fn digest_sees_any_flipped_bit_and_any_length_change() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 31) as u8).collect();
        let whole = digest_of(&[&bytes]);
        for position in [0, 7, 8, 63, 64, 150, 299] {
            for bit in 0..8 {
                let mut changed = bytes.clone();
                changed[position] ^= 1 << bit;
                assert_ne!(digest_of(&[&changed]), whole, "byte {position} bit {bit}");
            }
        }
        // Two flips of the same bit in two words of one lane do not cancel.
        let mut twice = bytes.clone();
        twice[7] ^= 0x80;
        twice[71] ^= 0x80;
        assert_ne!(digest_of(&[&twice]), whole);
        assert_ne!(digest_of(&[&bytes[..299]]), whole);
        assert_ne!(digest_of(&[&bytes, &[0]]), whole);
    }
}
