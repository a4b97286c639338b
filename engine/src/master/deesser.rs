//! A split-band de-esser: tames sibilance and harsh highs without touching the rest.
//!
//! Each channel is split by a Linkwitz-Riley crossover at `frequency_hz` (LR4: the two bands sum
//! to an all-pass, so with nothing to reduce only the phase turns and the magnitude stays flat).
//! The high band's peak level, linked over the channels, drives a compressor curve (threshold,
//! ratio, soft knee) whose reduction, capped at `max_reduction_db` and smoothed (fast attack,
//! slower release), is applied to the high band only. A vinyl cut needs it: loud sibilants and
//! cymbals make the cutting head's high-frequency current (and later the stylus) distort.

use crate::audio::AudioBlock;
use crate::loudness::MAX_CHANNELS;
use crate::master::biquad::{BiquadCascade, PassBand, check_below_nyquist};
use crate::master::compressor::{GainComputer, GainSmoother};
use crate::stage::Stage;
use lathe_model::config::{InvalidValue, check_range};
use lathe_model::stage_config::DeesserConfig;

/// The de-esser stage ("deesser"); see the module documentation.
#[derive(Debug, Clone)]
pub struct Deesser {
    lowpass: BiquadCascade,
    highpass: BiquadCascade,
    computer: GainComputer,
    smoother: GainSmoother,
    max_reduction_db: f64,
    most_reduction_db: f64,
    frames_reduced: u64,
}

/// Reductions below this are not counted as the de-esser working.
const ACTIVE_DB: f64 = 0.1;

impl Deesser {
    /// A de-esser for `channel_count` channels at `sample_rate_hz`.
    ///
    /// # Errors
    /// An out-of-range value, or a crossover at or above the Nyquist frequency.
    pub fn new(
        config: &DeesserConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        let _ = max_block_frames;
        config.validate()?;
        check_below_nyquist("frequency_hz", config.frequency_hz, sample_rate_hz)?;
        check_range(
            "channel_count",
            channel_count as f64,
            1.0,
            MAX_CHANNELS as f64,
            "",
        )?;
        Ok(Self {
            lowpass: BiquadCascade::linkwitz_riley4(
                PassBand::Lowpass,
                config.frequency_hz,
                sample_rate_hz,
                channel_count,
            ),
            highpass: BiquadCascade::linkwitz_riley4(
                PassBand::Highpass,
                config.frequency_hz,
                sample_rate_hz,
                channel_count,
            ),
            computer: GainComputer::new(config.threshold_db, config.ratio, 6.0),
            smoother: GainSmoother::new(
                config.attack_ms,
                config.release_ms,
                f64::from(sample_rate_hz),
            ),
            max_reduction_db: config.max_reduction_db,
            most_reduction_db: 0.0,
            frames_reduced: 0,
        })
    }
}

impl Stage for Deesser {
    fn name(&self) -> &'static str {
        "deesser"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        let channels = block.channel_count().min(MAX_CHANNELS);
        let mut low = [0f64; MAX_CHANNELS];
        let mut high = [0f64; MAX_CHANNELS];
        for i in 0..block.frames() {
            let mut peak = 0f64;
            for c in 0..channels {
                let x = f64::from(block.channel(c)[i]);
                low[c] = self.lowpass.process_sample(c, x);
                high[c] = self.highpass.process_sample(c, x);
                peak = peak.max(high[c].abs());
            }
            let level_db = 20.0 * peak.max(1e-10).log10();
            let wanted = self
                .computer
                .gain_reduction_db(level_db)
                .min(self.max_reduction_db);
            let reduction_db = self.smoother.next(wanted);
            if reduction_db > ACTIVE_DB {
                self.frames_reduced += 1;
            }
            self.most_reduction_db = self.most_reduction_db.max(reduction_db);
            let gain = 10f64.powf(-reduction_db / 20.0);
            for c in 0..channels {
                let y = (low[c] + high[c] * gain) as f32;
                block.channel_mut(c)[i] = if y.is_finite() { y } else { 0.0 };
            }
        }
    }

    fn reset(&mut self) {
        self.lowpass.reset();
        self.highpass.reset();
        self.smoother.reset();
        self.most_reduction_db = 0.0;
        self.frames_reduced = 0;
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "max_reduction_db": self.most_reduction_db,
            "frames_reduced": self.frames_reduced,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{noise, process_in_blocks, sine};

    fn rms_db(block: &AudioBlock, skip: usize) -> f64 {
        let x = &block.channel(0)[skip..block.frames()];
        let mean = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64;
        10.0 * mean.log10()
    }

    #[test]
    fn loud_sibilance_is_cut_by_the_maximum_and_bass_passes() {
        let config = DeesserConfig::default();
        let rate = 48_000;
        let hiss = sine(2, rate as usize, rate, 8000.0, 0.5);
        let mut stage = Deesser::new(&config, 2, rate, 4096).unwrap();
        let out = process_in_blocks(&mut stage, &hiss, &[4096]);
        // LR4 at 8 kHz over a 6 kHz crossover: the bands carry lp and hp of the tone, in phase. The
        // high band peaks near -8 dBFS, over 20 dB above the threshold: the curve asks for 15 dB
        // or more, the cap gives 8, so the tone drops to lp + hp * 10^(-8/20).
        let band = |pass| {
            let db =
                BiquadCascade::linkwitz_riley4(pass, 6000.0, rate, 1).magnitude_db(8000.0, rate);
            10f64.powf(db / 20.0)
        };
        let (lp, hp) = (band(PassBand::Lowpass), band(PassBand::Highpass));
        let expected = -20.0 * (lp + hp * 10f64.powf(-8.0 / 20.0)).log10();
        let cut = rms_db(&hiss, 4800) - rms_db(&out, 4800);
        assert!(
            (cut - expected).abs() < 0.2,
            "cut {cut:.2} dB, expected {expected:.2}"
        );
        assert!(
            (stage.report().unwrap()["max_reduction_db"]
                .as_f64()
                .unwrap()
                - 8.0)
                .abs()
                < 0.01
        );

        let bass = sine(2, rate as usize, rate, 200.0, 0.5);
        let mut stage = Deesser::new(&config, 2, rate, 4096).unwrap();
        let out = process_in_blocks(&mut stage, &bass, &[4096]);
        let change = rms_db(&out, 4800) - rms_db(&bass, 4800);
        assert!(change.abs() < 0.05, "bass changed by {change:.3} dB");
    }

    #[test]
    fn quiet_highs_are_left_alone_and_blocks_do_not_matter() {
        let rate = 44_100;
        let quiet = sine(2, rate as usize, rate, 9000.0, 0.01);
        let mut stage = Deesser::new(&DeesserConfig::default(), 2, rate, 4096).unwrap();
        let out = process_in_blocks(&mut stage, &quiet, &[4096]);
        assert!((rms_db(&out, 4410) - rms_db(&quiet, 4410)).abs() < 0.05);
        let input = noise(2, 20_000, rate, 0.8, 3);
        let mut a = Deesser::new(&DeesserConfig::default(), 2, rate, 4096).unwrap();
        let mut b = a.clone();
        let one = process_in_blocks(&mut a, &input, &[4096]);
        let many = process_in_blocks(&mut b, &input, &[1, 17, 512, 4096]);
        assert_eq!(one, many);
        a.reset();
        assert_eq!(process_in_blocks(&mut a, &input, &[4096]), one);
        let silence = AudioBlock::from_channels(vec![vec![0.0; 4096]; 2], rate);
        let mut c = Deesser::new(&DeesserConfig::default(), 2, rate, 4096).unwrap();
        assert!(
            process_in_blocks(&mut c, &silence, &[4096])
                .channels()
                .all(|ch| ch.iter().all(|x| *x == 0.0))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let config = DeesserConfig {
            frequency_hz: 30_000.0,
            ..DeesserConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "frequency_hz");
        let config = DeesserConfig {
            frequency_hz: 12_000.0,
            ..DeesserConfig::default()
        };
        assert!(Deesser::new(&config, 2, 22_050, 64).is_err());
    }
}
