//! Defect detection: listening to a track once and saying which defects it has, for automatic
//! restoration (`[restore] auto = true`) and `lathe analyze`.
//!
//! [`DefectDetector`] is fed the track block by block (any block size) in bounded memory and
//! measures, at the track's own rate:
//!
//! - clicks and crackle: outliers of the AR prediction residual against a robust (MAD) threshold,
//!   grouped into events, short ones counted as crackle ([`impulses`]);
//! - the noise floor, its steadiness and its spectral shape, by minimum statistics of a short-time
//!   spectrum in octave bands ([`noise_floor`]);
//! - mains hum ([`crate::restore::hum_detect`]);
//! - clipping: runs stuck at the peak, and samples piled up under it ([`clipping`]).
//!
//! [`lathe_model::restore_plan::RestorePlan`] turns the result into the restorers that run.

mod clipping;
mod impulses;
mod noise_floor;

use lathe_model::defects::{Defects, Hum, HumHarmonic};

use crate::audio::AudioBlock;
use crate::restore::hum_detect::HumDetector;

use clipping::ClippingMeter;
use impulses::ImpulseCounter;
use noise_floor::NoiseFloorMeter;

/// Streaming defect detector: [`DefectDetector::feed`] every block of a track, then
/// [`DefectDetector::finish`].
pub struct DefectDetector {
    sample_rate_hz: u32,
    channel_count: usize,
    frames: u64,
    impulses: ImpulseCounter,
    noise: NoiseFloorMeter,
    clipping: ClippingMeter,
    hum: HumDetector,
}

impl DefectDetector {
    /// A detector for audio of this shape.
    pub fn new(channel_count: usize, sample_rate_hz: u32) -> Self {
        Self {
            sample_rate_hz,
            channel_count,
            frames: 0,
            impulses: ImpulseCounter::new(channel_count),
            noise: NoiseFloorMeter::new(channel_count, sample_rate_hz),
            clipping: ClippingMeter::new(channel_count),
            hum: HumDetector::new(channel_count, sample_rate_hz),
        }
    }

    /// Measures the valid frames of `block`.
    pub fn feed(&mut self, block: &AudioBlock) {
        let frames = block.frames();
        for (index, channel) in block.channels().enumerate().take(self.channel_count) {
            self.impulses.add(index, channel);
            self.clipping.add(index, channel);
        }
        self.noise.add(block);
        self.hum.feed(block);
        self.frames += frames as u64;
    }

    /// The defects of everything fed.
    pub fn finish(&self) -> Defects {
        let rate = f64::from(self.sample_rate_hz.max(1));
        let seconds = self.frames as f64 / rate;
        let per_channel_s = (seconds * self.channel_count.max(1) as f64).max(1e-9);
        let (clicks, crackles) = self.impulses.counts();
        Defects {
            sample_rate_hz: self.sample_rate_hz,
            duration_s: seconds,
            clicks_per_min: 60.0 * clicks as f64 / per_channel_s,
            crackle_per_s: crackles as f64 / per_channel_s,
            noise: self.noise.finish(),
            hum: self.hum.finish().map(|finding| Hum {
                mains_hz: finding.mains_hz,
                fundamental_hz: finding.fundamental_hz,
                level_dbfs: finding.level_dbfs,
                harmonics: finding
                    .harmonics
                    .iter()
                    .map(|&(number, level_dbfs)| HumHarmonic { number, level_dbfs })
                    .collect(),
            }),
            clipping: self.clipping.finish(self.frames, self.sample_rate_hz),
        }
    }
}

#[cfg(test)]
mod tests;
