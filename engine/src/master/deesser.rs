//! A split-band de-esser: tames sibilance and harsh highs without touching the rest.
//!
//! Each channel is split by a Linkwitz-Riley crossover at `frequency_hz` (LR4: the two bands sum
//! to an all-pass, so with nothing to reduce only the phase turns and the magnitude stays flat).
//! The high band's peak level, linked over the channels, drives a compressor curve (threshold,
//! ratio, soft knee) whose reduction, capped at `max_reduction_db` and smoothed (fast attack,
//! slower release), is applied to the high band only. A vinyl cut needs it: loud sibilants and
//! cymbals make the cutting head's high-frequency current (and later the stylus) distort.

use serde::{Deserialize, Serialize};

use crate::audio::AudioBlock;
use crate::config::{InvalidValue, check_range};
use crate::loudness::MAX_CHANNELS;
use crate::master::biquad::{BiquadCascade, PassBand, check_below_nyquist};
use crate::master::compressor::{GainComputer, GainSmoother};
use crate::stage::Stage;

/// Configuration of the [`Deesser`] stage (`type = "deesser"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeesserConfig {
    /// Crossover above which the band is controlled, Hz (2000..=16000); default 6000.
    #[serde(default = "default_frequency")]
    pub frequency_hz: f64,
    /// High-band peak level where reduction starts, dBFS (-60..=0); default -30.
    #[serde(default = "default_threshold")]
    pub threshold_db: f64,
    /// Compression ratio above the threshold (1..=20); default 4.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// The most the high band is turned down, dB (0..=24); default 8.
    #[serde(default = "default_max_reduction")]
    pub max_reduction_db: f64,
    /// Attack, ms (0.1..=50); default 1.
    #[serde(default = "default_attack")]
    pub attack_ms: f64,
    /// Release, ms (5..=1000); default 60.
    #[serde(default = "default_release")]
    pub release_ms: f64,
}

fn default_frequency() -> f64 {
    6000.0
}
fn default_threshold() -> f64 {
    -30.0
}
fn default_ratio() -> f64 {
    4.0
}
fn default_max_reduction() -> f64 {
    8.0
}
fn default_attack() -> f64 {
    1.0
}
fn default_release() -> f64 {
    60.0
}

impl Default for DeesserConfig {
    fn default() -> Self {
        Self {
            frequency_hz: default_frequency(),
            threshold_db: default_threshold(),
            ratio: default_ratio(),
            max_reduction_db: default_max_reduction(),
            attack_ms: default_attack(),
            release_ms: default_release(),
        }
    }
}

impl DeesserConfig {
    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// The first out-of-range value, named by its key.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("frequency_hz", self.frequency_hz, 2000.0, 16_000.0, "Hz")?;
        check_range("threshold_db", self.threshold_db, -60.0, 0.0, "dB")?;
        check_range("ratio", self.ratio, 1.0, 20.0, "")?;
        check_range("max_reduction_db", self.max_reduction_db, 0.0, 24.0, "dB")?;
        check_range("attack_ms", self.attack_ms, 0.1, 50.0, "ms")?;
        check_range("release_ms", self.release_ms, 5.0, 1000.0, "ms")
    }
}

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
