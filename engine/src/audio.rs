//! The one audio buffer type every stage works on, and the engine's block size.

/// Frames the engine decodes (and its passes process) per block.
pub const BLOCK_FRAMES: usize = 4096;

/// A block of planar `f32` audio: one buffer per channel, all of the same capacity, of which the first
/// [`AudioBlock::frames`] frames are valid.
///
/// Stages process blocks in place and never allocate while doing so; a block is allocated once per
/// pipeline with the largest size the pipeline will use and then reused.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioBlock {
    channels: Vec<Vec<f32>>,
    frames: usize,
    sample_rate_hz: u32,
}

impl AudioBlock {
    /// A silent block of `channel_count` channels that can hold `capacity_frames` frames, with no valid
    /// frames yet.
    pub fn new(channel_count: usize, capacity_frames: usize, sample_rate_hz: u32) -> Self {
        Self {
            channels: vec![vec![0.0; capacity_frames]; channel_count],
            frames: 0,
            sample_rate_hz,
        }
    }

    /// A block holding copies of the given channel buffers (all must have the same length).
    ///
    /// # Panics
    /// If the channels differ in length.
    pub fn from_channels(channels: Vec<Vec<f32>>, sample_rate_hz: u32) -> Self {
        let frames = channels.first().map_or(0, Vec::len);
        assert!(
            channels.iter().all(|c| c.len() == frames),
            "all channels of an AudioBlock must have the same length"
        );
        Self {
            channels,
            frames,
            sample_rate_hz,
        }
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Number of valid frames.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Number of frames the block can hold.
    pub fn capacity(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Sample rate of the audio in the block.
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Changes the sample rate the block is labelled with (used by the resampler's output block).
    pub fn set_sample_rate_hz(&mut self, sample_rate_hz: u32) {
        self.sample_rate_hz = sample_rate_hz;
    }

    /// Sets the number of valid frames.
    ///
    /// # Panics
    /// If `frames` exceeds the capacity.
    pub fn set_frames(&mut self, frames: usize) {
        assert!(
            frames <= self.capacity(),
            "{frames} frames exceed the block capacity"
        );
        self.frames = frames;
    }

    /// The valid samples of one channel.
    pub fn channel(&self, index: usize) -> &[f32] {
        &self.channels[index][..self.frames]
    }

    /// The valid samples of one channel, mutably.
    pub fn channel_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.channels[index][..self.frames]
    }

    /// The whole buffer of one channel (all `capacity` samples), for writers that fill the block.
    pub fn channel_buffer_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.channels[index]
    }

    /// Iterates over the valid samples of every channel.
    pub fn channels(&self) -> impl Iterator<Item = &[f32]> {
        let frames = self.frames;
        self.channels.iter().map(move |c| &c[..frames])
    }

    /// Iterates mutably over the valid samples of every channel.
    pub fn channels_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        let frames = self.frames;
        self.channels.iter_mut().map(move |c| &mut c[..frames])
    }

    /// Two distinct channels mutably at once (e.g. left and right for stereo processing).
    ///
    /// # Panics
    /// If `a == b` or either is out of range.
    pub fn channel_pair_mut(&mut self, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
        assert_ne!(a, b, "a channel pair needs two different channels");
        let frames = self.frames;
        if a < b {
            let (lo, hi) = self.channels.split_at_mut(b);
            (&mut lo[a][..frames], &mut hi[0][..frames])
        } else {
            let (lo, hi) = self.channels.split_at_mut(a);
            (&mut hi[0][..frames], &mut lo[b][..frames])
        }
    }

    /// Sets every valid sample to zero.
    pub fn fill_silence(&mut self) {
        for channel in self.channels_mut() {
            channel.fill(0.0);
        }
    }

    /// Copies the valid frames of `other` (same channel count) after this block's valid frames.
    ///
    /// # Panics
    /// If the channel counts differ or the result would exceed the capacity.
    pub fn append(&mut self, other: &AudioBlock) {
        assert_eq!(self.channel_count(), other.channel_count());
        let start = self.frames;
        let end = start + other.frames;
        assert!(end <= self.capacity(), "append exceeds the block capacity");
        for (dst, src) in self.channels.iter_mut().zip(other.channels()) {
            dst[start..end].copy_from_slice(src);
        }
        self.frames = end;
    }

    /// Removes the first `count` valid frames, moving the rest to the front.
    pub fn discard_front(&mut self, count: usize) {
        let count = count.min(self.frames);
        let frames = self.frames;
        for channel in &mut self.channels {
            channel.copy_within(count..frames, 0);
        }
        self.frames -= count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_discard_keep_sample_order() {
        let mut block = AudioBlock::new(2, 8, 48_000);
        let part =
            AudioBlock::from_channels(vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]], 48_000);
        block.append(&part);
        block.append(&part);
        assert_eq!(block.frames(), 6);
        block.discard_front(2);
        assert_eq!(block.channel(0), &[3.0, 1.0, 2.0, 3.0]);
        assert_eq!(block.channel(1), &[6.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn channel_pair_is_ordered_as_asked() {
        let mut block = AudioBlock::from_channels(vec![vec![1.0], vec![2.0]], 44_100);
        let (right, left) = block.channel_pair_mut(1, 0);
        assert_eq!((right[0], left[0]), (2.0, 1.0));
    }
}
