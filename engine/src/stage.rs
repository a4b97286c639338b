//! The streaming-stage contract shared by restoration and mastering stages.

use crate::audio::AudioBlock;

/// A streaming processing stage: works in place on consecutive blocks of one track.
///
/// Contract every implementation keeps (and is tested for):
/// - the output does not depend on how the track is cut into blocks (block-size independence);
/// - `process` allocates nothing (buffers are sized in the constructor for `max_block_frames`);
/// - after [`Stage::reset`] the stage renders exactly as a freshly built one;
/// - silence in gives silence out (after any look-ahead has drained), and no NaN or Inf ever comes out.
///
/// A stage with look-ahead delays its output by [`Stage::latency_frames`]; the pipeline compensates by
/// dropping that many frames at the start and flushing with silence at the end, so masters stay
/// sample-aligned with their sources.
pub trait Stage: Send {
    /// Short name used in reports and progress ("eq", "compressor", "limiter", ...).
    fn name(&self) -> &'static str;

    /// Processes the valid frames of `block` in place. The block never holds more frames than the
    /// `max_block_frames` the stage was built for.
    fn process(&mut self, block: &mut AudioBlock);

    /// Delay the stage adds, in frames at its sample rate.
    fn latency_frames(&self) -> usize {
        0
    }

    /// Returns the stage to its freshly built state.
    fn reset(&mut self);

    /// What the stage did so far (e.g. maximum gain reduction), for the track report.
    fn report(&self) -> Option<serde_json::Value> {
        None
    }
}
