//! Decrackling: the dense, small clicks of worn vinyl (hundreds a second, one to a few samples).
//!
//! The declicker's machinery (see [`super::declick`]) tuned for crackle: a lower model order (short
//! bursts need little context, and a short model adapts to the local spectrum), a lower threshold
//! (crackle sits close to the programme's prediction error), short bursts only and a narrow fusion
//! gap, so that a transient's attack, whose prediction error stays high for many samples and raises
//! its sub-block's robust deviation, is not mistaken for a cluster of crackles and dulled.

use super::declick::{ClickRepairer, ClickSettings};
use crate::audio::AudioBlock;
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::restore::DecrackleConfig;

/// Crackles are small: a repair is kept if it divides the prediction error around it by this (6
/// rather than 7 lifts the worst corpus excerpt above ffmpeg; 4 did more still, but touched clean
/// synthetic rock below 40 dB).
const MIN_RESIDUAL_DROP: f64 = 6.0;

/// The decrackle stage.
#[derive(Debug, Clone)]
pub struct Decrackler {
    repairer: ClickRepairer,
    sample_rate_hz: u32,
}

impl Decrackler {
    /// Builds a decrackler for audio of this shape.
    pub fn new(
        config: &DecrackleConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        _max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        config.validate()?;
        let settings = ClickSettings {
            threshold_sigmas: config.threshold_sigmas,
            ar_order: config.ar_order,
            max_click_frames: config.max_crackle_frames,
            fusion_gap_frames: 2,
            pad_frames: 1,
            passes: 2,
            min_residual_drop: MIN_RESIDUAL_DROP,
            min_drop_per_sample: 0.0,
            settle_ratio: f64::INFINITY,
            wide_threshold_sigmas: f64::INFINITY,
            wide_min_drop: f64::INFINITY,
        };
        Ok(Self {
            repairer: ClickRepairer::new(settings, channel_count),
            sample_rate_hz,
        })
    }
}

impl Stage for Decrackler {
    fn name(&self) -> &'static str {
        "decrackle"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        self.repairer.process(block);
    }

    fn latency_frames(&self) -> usize {
        self.repairer.latency_frames()
    }

    fn reset(&mut self) {
        self.repairer.reset();
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(self.repairer.report(self.sample_rate_hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::declick::tests::{add_clicks, damage_model_gain};
    use crate::restore::testing::{music, run_aligned};
    use lathe_synth::Style;
    use lathe_synth::score::si_sdr_db;

    fn decrackler() -> Decrackler {
        Decrackler::new(&DecrackleConfig::default(), 2, 44_100, 4096).unwrap()
    }

    /// About 400 crackles a second: recall at least 0.45 (a crackle counts when half its damage is
    /// gone) and SI-SDR up at least 2.5 dB per channel. Measured: recall 0.50, 30.6 -> 34.0 and
    /// 30.8 -> 33.8 dB. The aim was recall 0.8 and +8 dB, not met yet; these bounds guard today's
    /// behaviour.
    #[test]
    fn removes_dense_crackle() {
        let clean = music(Style::Pop, 5.0, 31);
        // About 400 crackles a second per channel, 1-4 samples, up to 0.08.
        let (damaged, crackles) = add_clicks(&clean, 110, 4, (0.02, 0.08), 13);
        let mut stage = decrackler();
        let out = run_aligned(&mut stage, &damaged, &[4096]);
        let mut found = 0;
        for &(ch, a, b) in &crackles {
            let damage: f32 = (a..=b)
                .map(|n| (damaged.channel(ch)[n] - clean.channel(ch)[n]).abs())
                .sum();
            let left: f32 = (a..=b)
                .map(|n| (out.channel(ch)[n] - clean.channel(ch)[n]).abs())
                .sum();
            if left < 0.5 * damage {
                found += 1;
            }
        }
        let recall = found as f64 / crackles.len() as f64;
        assert!(recall > 0.45, "recall {recall:.3}");
        for ch in 0..2 {
            let before = si_sdr_db(clean.channel(ch), damaged.channel(ch));
            let after = si_sdr_db(clean.channel(ch), out.channel(ch));
            assert!(
                after > before + 2.5,
                "ch{ch}: SI-SDR {before:.1} -> {after:.1} dB"
            );
        }
    }

    /// The bench's crackle model on synthetic pop, two seeds: the SI-SDR gained stays above a
    /// floor 1.5 dB under what was measured (5.70 and 6.03 dB).
    #[test]
    fn repairs_the_damage_models_crackle() {
        for seed in [3, 4] {
            let gain = damage_model_gain(&mut decrackler(), "crackle", seed);
            assert!(gain >= 4.2, "seed {seed}: {gain:.1} dB");
        }
    }

    #[test]
    fn clean_music_comes_out_untouched() {
        for style in [Style::Rock, Style::Ambient] {
            let clean = music(style, 5.0, 8);
            let out = run_aligned(&mut decrackler(), &clean, &[4096]);
            for ch in 0..2 {
                let sdr = si_sdr_db(clean.channel(ch), out.channel(ch));
                assert!(sdr >= 40.0, "{style:?} ch{ch}: SI-SDR {sdr:.1} dB");
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_block_size() {
        let clean = music(Style::Pop, 2.0, 9);
        let (damaged, _) = add_clicks(&clean, 110, 4, (0.02, 0.08), 2);
        let a = run_aligned(&mut decrackler(), &damaged, &[4096]);
        let b = run_aligned(&mut decrackler(), &damaged, &[100, 5000]);
        assert_eq!(a, b);
    }
}
