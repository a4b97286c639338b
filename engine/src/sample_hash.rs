//! The hash of a track's samples: the seed of its dither, and the check that a written master
//! decodes to exactly the samples rendered.

use crate::audio::AudioBlock;
use crate::loudness::MAX_CHANNELS;

/// FNV-1a over the bit patterns of samples, a 32-bit word at a time, in [`HASH_LANES`] interleaved
/// hashes per channel (sample `n` goes to lane `n % HASH_LANES`, so the result does not depend on
/// how the audio is cut into blocks, and the lanes' multiplications overlap instead of waiting on
/// each other): the track's dither seed, and the check that a written master decodes to exactly the
/// samples rendered.
pub(crate) struct SampleHash {
    lanes: [[u64; HASH_LANES]; MAX_CHANNELS],
    frames: usize,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;
const HASH_LANES: usize = 4;

impl SampleHash {
    /// A hash of no samples yet.
    pub(crate) fn new() -> Self {
        Self {
            lanes: [[FNV_OFFSET; HASH_LANES]; MAX_CHANNELS],
            frames: 0,
        }
    }

    /// Adds the frames of `block`, after those added before.
    pub(crate) fn add(&mut self, block: &AudioBlock) {
        // `+ 0.0` turns -0.0 into +0.0: a file stores no sign for zero.
        let step = |hash: &mut u64, x: f32| {
            *hash = (*hash ^ u64::from((x + 0.0).to_bits())).wrapping_mul(FNV_PRIME);
        };
        let phase = self.frames % HASH_LANES;
        for (lanes, channel) in self.lanes.iter_mut().zip(block.channels()) {
            // Up to the next multiple of HASH_LANES one at a time, then whole rounds of lanes.
            let head = ((HASH_LANES - phase) % HASH_LANES).min(channel.len());
            for (i, &x) in channel[..head].iter().enumerate() {
                step(&mut lanes[phase + i], x);
            }
            let mut rounds = channel[head..].chunks_exact(HASH_LANES);
            for round in &mut rounds {
                for (lane, &x) in lanes.iter_mut().zip(round) {
                    step(lane, x);
                }
            }
            for (lane, &x) in lanes.iter_mut().zip(rounds.remainder()) {
                step(lane, x);
            }
        }
        self.frames += block.frames();
    }

    /// The hash of every sample added so far.
    pub(crate) fn value(&self) -> u64 {
        self.lanes
            .iter()
            .flatten()
            .fold(FNV_OFFSET, |h, &c| (h ^ c).wrapping_mul(FNV_PRIME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `frames` frames of `channels` channels of a deterministic pattern (with a -0.0).
    fn pattern(channels: usize, frames: usize) -> Vec<Vec<f32>> {
        (0..channels)
            .map(|c| {
                (0..frames)
                    .map(|n| match n % 7 {
                        3 => -0.0,
                        k => ((n * 31 + c * 17) % 101) as f32 / 50.0 - 1.0 + k as f32 * 1e-3,
                    })
                    .collect()
            })
            .collect()
    }

    /// The hash of `samples` added in blocks of the given sizes (cycled).
    fn hash_in_blocks(samples: &[Vec<f32>], sizes: &[usize]) -> u64 {
        let frames = samples[0].len();
        let mut hash = SampleHash::new();
        let mut block = AudioBlock::new(samples.len(), frames, 44_100);
        let mut at = 0;
        for &size in sizes.iter().cycle() {
            if at == frames {
                break;
            }
            let n = size.min(frames - at);
            block.set_frames(n);
            for (c, channel) in samples.iter().enumerate() {
                block.channel_mut(c).copy_from_slice(&channel[at..at + n]);
            }
            hash.add(&block);
            at += n;
        }
        hash.value()
    }

    #[test]
    fn the_hash_does_not_depend_on_the_block_size() {
        let samples = pattern(2, 10_007);
        let whole = hash_in_blocks(&samples, &[10_007]);
        for sizes in [&[1][..], &[3], &[4], &[4096], &[5, 1, 2, 4093], &[7, 4, 13]] {
            assert_eq!(
                hash_in_blocks(&samples, sizes),
                whole,
                "blocks of {sizes:?}"
            );
        }
    }

    #[test]
    fn the_hash_sees_every_sample_and_channel_but_not_the_sign_of_zero() {
        let samples = pattern(2, 1000);
        let reference = hash_in_blocks(&samples, &[256]);
        let mut changed = samples.clone();
        changed[1][999] = f32::from_bits(changed[1][999].to_bits() ^ 1);
        assert_ne!(hash_in_blocks(&changed, &[256]), reference);
        let mut swapped = samples.clone();
        swapped.swap(0, 1);
        assert_ne!(hash_in_blocks(&swapped, &[256]), reference);
        let mut signed = samples.clone();
        assert_eq!(signed[0][3].to_bits(), (-0.0f32).to_bits());
        signed[0][3] = 0.0;
        assert_eq!(hash_in_blocks(&signed, &[256]), reference);
        assert_ne!(SampleHash::new().value(), reference);
    }
}
