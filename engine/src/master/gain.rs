//! A constant gain, given in dB.
//!
//! [`Gain`] multiplies every sample by `10^(gain_db / 20)`, computed and applied in `f64` and rounded
//! to `f32` once per sample. It is the level stage of the chain: loudness normalisation computes the
//! gain in an analysis pass and sets it here for the streaming pass.

use crate::audio::AudioBlock;
use crate::stage::Stage;

/// The constant-gain stage ("gain").
#[derive(Debug, Clone, PartialEq)]
pub struct Gain {
    gain_db: f64,
    factor: f64,
}

impl Gain {
    /// A stage applying `gain_db` dB (positive boosts, negative cuts, `-inf` mutes). A NaN or `+inf`
    /// gain has no meaning and is applied as 0 dB, with a warning in the log.
    pub fn new(gain_db: f64) -> Self {
        let mut gain = Self {
            gain_db: 0.0,
            factor: 1.0,
        };
        gain.set_gain_db(gain_db);
        gain
    }

    /// Changes the gain from the next processed sample on (see [`Gain::new`] for non-finite values).
    pub fn set_gain_db(&mut self, gain_db: f64) {
        let factor = 10f64.powf(gain_db / 20.0);
        if factor.is_finite() {
            self.gain_db = gain_db;
            self.factor = factor;
        } else {
            tracing::warn!(gain_db, "gain is not a finite number of dB; applying 0 dB");
            self.gain_db = 0.0;
            self.factor = 1.0;
        }
    }

    /// The gain in dB.
    pub fn gain_db(&self) -> f64 {
        self.gain_db
    }

    /// The gain as a linear factor.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Stage for Gain {
    fn name(&self) -> &'static str {
        "gain"
    }

    /// Multiplies every valid sample by the gain. A result that does not fit in `f32` (or non-finite
    /// input) comes out as 0, so nothing non-finite leaves the stage.
    fn process(&mut self, block: &mut AudioBlock) {
        let factor = self.factor;
        for samples in block.channels_mut() {
            for sample in samples.iter_mut() {
                let y = (f64::from(*sample) * factor) as f32;
                *sample = if y.is_finite() { y } else { 0.0 };
            }
        }
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testkit::{noise, process_in_blocks};

    #[test]
    fn plus_6_0206_db_doubles() {
        let mut gain = Gain::new(6.0206);
        let mut block = AudioBlock::from_channels(vec![vec![0.25, -0.4], vec![0.1, 0.0]], 48_000);
        gain.process(&mut block);
        assert!((block.channel(0)[0] - 0.5).abs() <= 1e-6);
        assert!((block.channel(0)[1] + 0.8).abs() <= 1e-6);
        assert!((block.channel(1)[0] - 0.2).abs() <= 1e-6);
        assert_eq!(block.channel(1)[1], 0.0);
        assert_eq!(gain.name(), "gain");
    }

    #[test]
    fn set_gain_db_changes_the_factor_and_zero_db_is_identity() {
        let input = noise(2, 3000, 44_100, 0.9, 6);
        let mut gain = Gain::new(-12.0);
        assert!((gain.factor() - 0.251_188_643).abs() < 1e-9);
        gain.set_gain_db(0.0);
        assert_eq!(gain.gain_db(), 0.0);
        assert_eq!(process_in_blocks(&mut gain, &input, &[1, 13, 512]), input);
    }

    #[test]
    fn block_size_independent_and_never_non_finite() {
        let mut input = noise(2, 5000, 48_000, 1.0, 1);
        input.channel_mut(0)[7] = f32::NAN;
        input.channel_mut(1)[9] = f32::MAX;
        let mut gain = Gain::new(20.0);
        let a = process_in_blocks(&mut gain, &input, &[4096]);
        gain.reset();
        let b = process_in_blocks(&mut gain, &input, &[1, 13, 512]);
        assert_eq!(a, b);
        assert!(a.channels().flatten().all(|y| y.is_finite()));
        assert_eq!(Gain::new(f64::NAN).factor(), 1.0);
        assert_eq!(Gain::new(f64::NEG_INFINITY).factor(), 0.0);
    }
}
