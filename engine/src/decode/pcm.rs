//! Uncompressed PCM read straight from the data chunk of a WAV or AIFF file.
//!
//! Symphonia reads such a file through four copies of every sample (its read-ahead ring, a packet
//! of 1152 frames allocated per packet, an integer audio buffer, then `f32` planes) before the
//! decoder copies it once more into the caller's block. Once Symphonia has parsed the container
//! and checked its headers, [`PcmStream`] reads the data chunk itself in large reads of whole
//! frames into one reused byte buffer, and converts from those bytes straight into the caller's
//! block.
//!
//! The `f32` values are exactly Symphonia's (its `symphonia_core::audio::conv` conversions, see
//! each [`PcmSample`] implementation); the decode tests compare every sample's bits with the
//! Symphonia path for every layout.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use symphonia::core::codecs::audio::AudioCodecId;
use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_PCM_F32BE, CODEC_ID_PCM_F32LE, CODEC_ID_PCM_F64BE, CODEC_ID_PCM_F64LE,
    CODEC_ID_PCM_S8, CODEC_ID_PCM_S16BE, CODEC_ID_PCM_S16LE, CODEC_ID_PCM_S24BE,
    CODEC_ID_PCM_S24LE, CODEC_ID_PCM_S32BE, CODEC_ID_PCM_S32LE, CODEC_ID_PCM_U8,
};

use super::{check_finite, read_full};
use crate::audio::AudioBlock;
use crate::error::Result;

/// Bytes asked of the file per read (rounded down to whole frames): large enough that the read
/// calls cost nothing next to the conversion, small enough to stay in the L2 cache.
const READ_BYTES: usize = 128 * 1024;

/// How one sample is stored in the data chunk, as the codec id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SampleLayout {
    /// 8-bit unsigned integer (WAV's 8-bit PCM, AIFF-C `raw `).
    U8,
    /// 8-bit signed integer (AIFF's 8-bit PCM).
    S8,
    /// 16-bit signed integer, little-endian.
    S16Le,
    /// 16-bit signed integer, big-endian.
    S16Be,
    /// 24-bit signed integer, little-endian.
    S24Le,
    /// 24-bit signed integer, big-endian.
    S24Be,
    /// 32-bit signed integer, little-endian.
    S32Le,
    /// 32-bit signed integer, big-endian.
    S32Be,
    /// 32-bit IEEE float, little-endian.
    F32Le,
    /// 32-bit IEEE float, big-endian.
    F32Be,
    /// 64-bit IEEE float, little-endian.
    F64Le,
    /// 64-bit IEEE float, big-endian.
    F64Be,
}

impl SampleLayout {
    /// The layout of an uncompressed PCM codec; `None` for every other codec (A-law, mu-law,
    /// ADPCM, compressed codecs).
    pub(super) fn of_codec(codec: AudioCodecId) -> Option<Self> {
        Some(match codec {
            CODEC_ID_PCM_U8 => Self::U8,
            CODEC_ID_PCM_S8 => Self::S8,
            CODEC_ID_PCM_S16LE => Self::S16Le,
            CODEC_ID_PCM_S16BE => Self::S16Be,
            CODEC_ID_PCM_S24LE => Self::S24Le,
            CODEC_ID_PCM_S24BE => Self::S24Be,
            CODEC_ID_PCM_S32LE => Self::S32Le,
            CODEC_ID_PCM_S32BE => Self::S32Be,
            CODEC_ID_PCM_F32LE => Self::F32Le,
            CODEC_ID_PCM_F32BE => Self::F32Be,
            CODEC_ID_PCM_F64LE => Self::F64Le,
            CODEC_ID_PCM_F64BE => Self::F64Be,
            _ => return None,
        })
    }

    /// Bytes per sample.
    pub(super) fn sample_bytes(self) -> usize {
        match self {
            Self::U8 | Self::S8 => U8::BYTES,
            Self::S16Le | Self::S16Be => S16Le::BYTES,
            Self::S24Le | Self::S24Be => S24Le::BYTES,
            Self::S32Le | Self::S32Be | Self::F32Le | Self::F32Be => S32Le::BYTES,
            Self::F64Le | Self::F64Be => F64Le::BYTES,
        }
    }

    /// Float samples can be NaN or infinite; integers cannot.
    fn is_float(self) -> bool {
        matches!(self, Self::F32Le | Self::F32Be | Self::F64Le | Self::F64Be)
    }

    /// Converts the first `frames` interleaved frames of `bytes` into the block's channels, from
    /// frame `offset` of each channel on.
    fn convert(self, bytes: &[u8], block: &mut AudioBlock, offset: usize, frames: usize) {
        match self {
            Self::U8 => convert::<U8>(bytes, block, offset, frames),
            Self::S8 => convert::<S8>(bytes, block, offset, frames),
            Self::S16Le => convert::<S16Le>(bytes, block, offset, frames),
            Self::S16Be => convert::<S16Be>(bytes, block, offset, frames),
            Self::S24Le => convert::<S24Le>(bytes, block, offset, frames),
            Self::S24Be => convert::<S24Be>(bytes, block, offset, frames),
            Self::S32Le => convert::<S32Le>(bytes, block, offset, frames),
            Self::S32Be => convert::<S32Be>(bytes, block, offset, frames),
            Self::F32Le => convert::<F32Le>(bytes, block, offset, frames),
            Self::F32Be => convert::<F32Be>(bytes, block, offset, frames),
            Self::F64Le => convert::<F64Le>(bytes, block, offset, frames),
            Self::F64Be => convert::<F64Be>(bytes, block, offset, frames),
        }
    }
}

/// The data chunk of a WAV or AIFF file, read and converted a large read at a time.
#[derive(Debug)]
pub(super) struct PcmStream {
    file: File,
    layout: SampleLayout,
    channel_count: usize,
    /// Bytes of one frame (one sample of every channel).
    frame_bytes: usize,
    /// The last read: whole frames only, reused (allocated once, at open).
    bytes: Vec<u8>,
    /// Frames in `bytes`.
    buffered_frames: usize,
    /// Frames of `bytes` already converted into a caller's block.
    taken_frames: usize,
    /// Frames handed out since the start of the track.
    frames_handed_out: u64,
    /// Frames of the data chunk not yet read from the file.
    unread_frames: u64,
    /// The file ended before the data chunk did.
    cut_short: bool,
}

impl PcmStream {
    /// Reads `frames` frames of `layout` from `data_start` (the first byte of the data chunk's
    /// samples) on.
    ///
    /// # Panics
    /// If `channel_count` is 0 (the caller checked the shape).
    pub(super) fn new(
        mut file: File,
        data_start: u64,
        frames: u64,
        layout: SampleLayout,
        channel_count: usize,
    ) -> std::io::Result<Self> {
        assert!(channel_count > 0, "a PCM stream needs a channel");
        let frame_bytes = layout.sample_bytes() * channel_count;
        file.seek(SeekFrom::Start(data_start))?;
        let read_frames = (READ_BYTES / frame_bytes).max(1);
        Ok(Self {
            file,
            layout,
            channel_count,
            frame_bytes,
            bytes: vec![0; read_frames * frame_bytes],
            buffered_frames: 0,
            taken_frames: 0,
            frames_handed_out: 0,
            unread_frames: frames,
            cut_short: false,
        })
    }

    /// The file ended inside the data chunk (every whole frame before the cut has been read).
    pub(super) fn cut_short(&self) -> bool {
        self.cut_short
    }

    /// Reads the next frames of the data chunk (after all buffered frames were taken). Returns
    /// the number of whole frames read, 0 at the end of the chunk or of the file. A trailing
    /// partial frame is not a frame.
    pub(super) fn fill(&mut self) -> std::io::Result<usize> {
        debug_assert_eq!(self.taken_frames, self.buffered_frames);
        self.buffered_frames = 0;
        self.taken_frames = 0;
        if self.cut_short || self.unread_frames == 0 {
            return Ok(0);
        }
        let capacity_frames = self.bytes.len() / self.frame_bytes;
        let frames = usize::try_from(self.unread_frames)
            .map_or(capacity_frames, |unread| unread.min(capacity_frames));
        let wanted = frames * self.frame_bytes;
        let got = read_full(&mut self.file, &mut self.bytes[..wanted])?;
        self.cut_short = got < wanted;
        self.buffered_frames = got / self.frame_bytes;
        self.unread_frames -= self.buffered_frames as u64;
        Ok(self.buffered_frames)
    }

    /// Converts up to `block.capacity() - offset` buffered frames into the block's channels from
    /// frame `offset` on; returns how many (0 when the buffer is exhausted).
    ///
    /// # Errors
    /// [`crate::Error::NonFiniteSample`] for the first NaN or infinite sample of those frames (lowest
    /// frame, then lowest channel), with `path` and its frame from the start of the track.
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
        let start = self.taken_frames * self.frame_bytes;
        self.layout
            .convert(&self.bytes[start..], block, offset, frames);
        if self.layout.is_float() {
            block.set_frames(offset + frames);
            let block: &AudioBlock = block;
            let converted = (0..self.channel_count).map(move |ch| &block.channel(ch)[offset..]);
            check_finite(path, converted, self.frames_handed_out)?;
        }
        self.taken_frames += frames;
        self.frames_handed_out += frames as u64;
        Ok(frames)
    }
}

/// One stored sample format and its conversion to `f32`, bit for bit Symphonia's.
trait PcmSample {
    /// Bytes per sample.
    const BYTES: usize;
    /// The sample stored in `bytes` (exactly [`PcmSample::BYTES`] long).
    fn to_f32(bytes: &[u8]) -> f32;
}

// Symphonia divides an integer sample by 2^(bits - 1); a multiplication by the reciprocal of that
// power of two gives the same bits (both are exact: no result is subnormal).
const SCALE_8_BIT: f32 = 1.0 / 128.0;
const SCALE_16_BIT: f32 = 1.0 / 32_768.0;
const SCALE_24_BIT: f32 = 1.0 / 8_388_608.0;
const SCALE_32_BIT: f32 = 1.0 / 2_147_483_648.0;

struct U8;
impl PcmSample for U8 {
    const BYTES: usize = 1;
    /// Symphonia: `s / 128 - 1`. Both steps are exact for every byte.
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from(bytes[0]) * SCALE_8_BIT - 1.0
    }
}

struct S8;
impl PcmSample for S8 {
    const BYTES: usize = 1;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from(bytes[0] as i8) * SCALE_8_BIT
    }
}

struct S16Le;
impl PcmSample for S16Le {
    const BYTES: usize = 2;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from(i16::from_le_bytes([bytes[0], bytes[1]])) * SCALE_16_BIT
    }
}

struct S16Be;
impl PcmSample for S16Be {
    const BYTES: usize = 2;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from(i16::from_be_bytes([bytes[0], bytes[1]])) * SCALE_16_BIT
    }
}

struct S24Le;
impl PcmSample for S24Le {
    const BYTES: usize = 3;
    /// The sample in the top 24 bits of an `i32`, shifted down with its sign; exact in `f32`.
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        let sample = i32::from_le_bytes([0, bytes[0], bytes[1], bytes[2]]) >> 8;
        sample as f32 * SCALE_24_BIT
    }
}

struct S24Be;
impl PcmSample for S24Be {
    const BYTES: usize = 3;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        let sample = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], 0]) >> 8;
        sample as f32 * SCALE_24_BIT
    }
}

struct S32Le;
impl PcmSample for S32Le {
    const BYTES: usize = 4;
    /// Symphonia: `(s as f64 / 2^31) as f32`, one rounding of the exact quotient to `f32`. Here
    /// `s as f32` rounds `s` to `f32` (to nearest, ties to even, as the `f64` to `f32` cast
    /// does) and the scaling by 2^-31 is exact, so the bits are the same.
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f32 * SCALE_32_BIT
    }
}

struct S32Be;
impl PcmSample for S32Be {
    const BYTES: usize = 4;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f32 * SCALE_32_BIT
    }
}

struct F32Le;
impl PcmSample for F32Le {
    const BYTES: usize = 4;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

struct F32Be;
impl PcmSample for F32Be {
    const BYTES: usize = 4;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

struct F64Le;
impl PcmSample for F64Le {
    const BYTES: usize = 8;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes[..8]);
        f64::from_le_bytes(b) as f32
    }
}

struct F64Be;
impl PcmSample for F64Be {
    const BYTES: usize = 8;
    #[inline(always)]
    fn to_f32(bytes: &[u8]) -> f32 {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes[..8]);
        f64::from_be_bytes(b) as f32
    }
}

/// Converts `frames` interleaved frames of `S` samples at the start of `bytes` into the block's
/// channels from frame `offset` on. One loop per channel count the engine meets most (mono,
/// stereo) so that the compiler sees the stride, and one per channel for the rest.
fn convert<S: PcmSample>(bytes: &[u8], block: &mut AudioBlock, offset: usize, frames: usize) {
    let channel_count = block.channel_count();
    let frame_bytes = S::BYTES * channel_count;
    let bytes = &bytes[..frames * frame_bytes];
    let end = offset + frames;
    match channel_count {
        1 => {
            let out = &mut block.channel_buffer_mut(0)[offset..end];
            for (y, sample) in out.iter_mut().zip(bytes.chunks_exact(S::BYTES)) {
                *y = S::to_f32(sample);
            }
        }
        2 => {
            // Both channels at once: the block hands out two channels only within its valid frames.
            block.set_frames(end);
            let (left, right) = block.channel_pair_mut(0, 1);
            let out = left[offset..].iter_mut().zip(right[offset..].iter_mut());
            for ((l, r), frame) in out.zip(bytes.chunks_exact(frame_bytes)) {
                let (a, b) = frame.split_at(S::BYTES);
                *l = S::to_f32(a);
                *r = S::to_f32(b);
            }
        }
        _ => {
            for ch in 0..channel_count {
                let at = ch * S::BYTES;
                let out = &mut block.channel_buffer_mut(ch)[offset..end];
                for (y, frame) in out.iter_mut().zip(bytes.chunks_exact(frame_bytes)) {
                    *y = S::to_f32(&frame[at..at + S::BYTES]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use symphonia::core::audio::conv::FromSample;
    use symphonia::core::audio::sample::i24;

    use super::*;

    /// Asserts `ours` and Symphonia's value have the same bits.
    fn assert_same(ours: f32, symphonias: f32, what: &str) {
        assert_eq!(
            ours.to_bits(),
            symphonias.to_bits(),
            "{what}: {ours} vs {symphonias}"
        );
    }

    #[test]
    fn every_8_16_and_24_bit_sample_converts_as_symphonia_does() {
        for byte in 0..=u8::MAX {
            assert_same(U8::to_f32(&[byte]), f32::from_sample(byte), "u8");
            assert_same(S8::to_f32(&[byte]), f32::from_sample(byte as i8), "s8");
        }
        for sample in i16::MIN..=i16::MAX {
            let theirs = f32::from_sample(sample);
            assert_same(S16Le::to_f32(&sample.to_le_bytes()), theirs, "s16le");
            assert_same(S16Be::to_f32(&sample.to_be_bytes()), theirs, "s16be");
        }
        for sample in -(1_i32 << 23)..(1 << 23) {
            let theirs = f32::from_sample(i24::from(sample));
            let (le, be) = (sample.to_le_bytes(), sample.to_be_bytes());
            assert_same(S24Le::to_f32(&le[..3]), theirs, "s24le");
            assert_same(S24Be::to_f32(&be[1..]), theirs, "s24be");
        }
    }

    #[test]
    fn wide_samples_round_as_symphonia_does() {
        // The extremes, values around 2^24 (where `f32` starts rounding) and a fixed-seed
        // xorshift sweep of every other bit pattern class.
        let mut edges = vec![i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];
        for base in [1 << 24, 1 << 25, 1 << 30, -(1 << 24), -(1 << 30)] {
            edges.extend((-3..=3).map(|d| base + d));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let random = std::iter::repeat_with(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        });
        for (n, bits) in random.take(1 << 22).enumerate() {
            let sample = edges.get(n).copied().unwrap_or((bits >> 32) as i32);
            let theirs = f32::from_sample(sample);
            assert_same(S32Le::to_f32(&sample.to_le_bytes()), theirs, "s32le");
            assert_same(S32Be::to_f32(&sample.to_be_bytes()), theirs, "s32be");
            let float = f32::from_bits(bits as u32);
            assert_same(F32Le::to_f32(&float.to_le_bytes()), float, "f32le");
            assert_same(F32Be::to_f32(&float.to_be_bytes()), float, "f32be");
            let double = f64::from_bits(bits);
            let theirs = f32::from_sample(double);
            assert_same(F64Le::to_f32(&double.to_le_bytes()), theirs, "f64le");
            assert_same(F64Be::to_f32(&double.to_be_bytes()), theirs, "f64be");
            // Doubles in the audio range, where most samples are.
            let audio = (bits >> 11) as f64 / (1u64 << 52) as f64 * 2.0 - 1.0;
            let theirs = f32::from_sample(audio);
            assert_same(F64Le::to_f32(&audio.to_le_bytes()), theirs, "f64le");
        }
    }
}
