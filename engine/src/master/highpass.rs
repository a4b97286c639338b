//! DC and rumble removal: a Butterworth high-pass at the front of the mastering chain.
//!
//! Transfers and needle drops often carry a DC offset and subsonic rumble (turntable, wind, handling
//! noise) that eat headroom and make compressors and limiters pump. A Butterworth high-pass of order
//! 1..=8 removes them with a maximally flat pass band: -3.01 dB at `frequency_hz`, 6 dB/octave per order
//! below it.

use crate::audio::AudioBlock;
use crate::master::biquad::{BiquadCascade, PassBand, check_below_nyquist};
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::HighpassConfig;

/// Butterworth high-pass stage removing DC offset and subsonic rumble from every channel.
#[derive(Debug, Clone)]
pub struct Highpass {
    filter: BiquadCascade,
}

impl Highpass {
    /// Builds the stage for `channel_count` channels at `sample_rate_hz`. The filter needs no buffers, so
    /// `max_block_frames` is accepted only for the common constructor shape.
    ///
    /// # Errors
    /// An out-of-range value (see [`HighpassConfig::validate`]), or `frequency_hz` at or above 0.49 times
    /// the sample rate.
    pub fn new(
        config: &HighpassConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        let _ = max_block_frames;
        config.validate()?;
        check_below_nyquist("frequency_hz", config.frequency_hz, sample_rate_hz)?;
        let filter = BiquadCascade::butterworth(
            PassBand::Highpass,
            config.order as usize,
            config.frequency_hz,
            sample_rate_hz,
            channel_count,
        )?;
        Ok(Self { filter })
    }
}

impl Stage for Highpass {
    fn name(&self) -> &'static str {
        "highpass"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        self.filter.process_block(block);
    }

    fn reset(&mut self) {
        self.filter.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{noise, process_in_blocks, sine, steady_rms_db};

    const FS: u32 = 48_000;

    fn stage(frequency_hz: f64, order: u32, channels: usize) -> Highpass {
        let config = HighpassConfig {
            frequency_hz,
            order,
        };
        Highpass::new(&config, channels, FS, 4096).expect("valid config")
    }

    fn tone_gain_db(stage: &mut Highpass, frequency_hz: f64) -> f64 {
        let input = sine(1, 3 * FS as usize, FS, frequency_hz, 0.5);
        let output = process_in_blocks(stage, &input, &[4096]);
        let skip = 2 * FS as usize;
        steady_rms_db(&output.channel(0)[skip..], FS, frequency_hz)
            - steady_rms_db(&input.channel(0)[skip..], FS, frequency_hz)
    }

    #[test]
    fn removes_dc_offset() {
        for order in 1..=8 {
            let mut hp = stage(20.0, order, 2);
            let input = AudioBlock::from_channels(vec![vec![0.1; 2 * FS as usize]; 2], FS);
            let output = process_in_blocks(&mut hp, &input, &[1024]);
            let half = output.channel(0).len() / 2;
            let tail = &output.channel(1)[half..];
            let mean = tail.iter().map(|&x| f64::from(x)).sum::<f64>() / tail.len() as f64;
            assert!(mean.abs() < 1e-5, "order {order}: mean {mean}");
        }
    }

    #[test]
    fn minus_3db_at_cutoff_and_flat_at_1khz() {
        let half_power = -10.0 * 2f64.log10();
        for order in [1, 2, 4, 8] {
            for cutoff in [20.0, 80.0] {
                let at_cutoff = tone_gain_db(&mut stage(cutoff, order, 1), cutoff);
                assert!(
                    (at_cutoff - half_power).abs() < 0.1,
                    "order {order} {cutoff} Hz: {at_cutoff} dB"
                );
            }
            if order >= 2 {
                let at_1k = tone_gain_db(&mut stage(20.0, order, 1), 1000.0);
                assert!(at_1k.abs() < 0.01, "order {order}: {at_1k} dB at 1 kHz");
            }
        }
        // A first-order slope is still 0.0017 dB down at 1 kHz from 20 Hz.
        let at_1k = tone_gain_db(&mut stage(20.0, 1, 1), 1000.0);
        assert!(at_1k.abs() < 0.01, "order 1: {at_1k} dB at 1 kHz");
    }

    #[test]
    fn block_size_independent() {
        let input = noise(2, 20_000, FS, 0.5, 7);
        let reference = process_in_blocks(&mut stage(30.0, 5, 2), &input, &[4096]);
        for sizes in [&[1][..], &[7], &[64], &[1, 500, 33]] {
            let output = process_in_blocks(&mut stage(30.0, 5, 2), &input, sizes);
            assert_eq!(output, reference, "block sizes {sizes:?}");
        }
    }

    #[test]
    fn reset_repeats_the_render() {
        let input = noise(2, 10_000, FS, 0.5, 3);
        let mut hp = stage(40.0, 4, 2);
        let first = process_in_blocks(&mut hp, &input, &[512]);
        hp.reset();
        let second = process_in_blocks(&mut hp, &input, &[512]);
        assert_eq!(first, second);
    }

    #[test]
    fn silence_in_silence_out_and_noise_stays_finite() {
        let mut hp = stage(20.0, 8, 2);
        let silence = AudioBlock::from_channels(vec![vec![0.0; 10_000]; 2], FS);
        let output = process_in_blocks(&mut hp, &silence, &[1000]);
        assert!(output.channels().flatten().all(|&x| x == 0.0));
        let loud = noise(2, 48_000, FS, 1.0, 11);
        let output = process_in_blocks(&mut hp, &loud, &[1000]);
        assert!(output.channels().flatten().all(|x| x.is_finite()));
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: HighpassConfig = toml::from_str("").expect("defaults");
        assert_eq!(config, HighpassConfig::default());
        assert_eq!((config.frequency_hz, config.order), (20.0, 4));
        let config: HighpassConfig =
            toml::from_str("frequency_hz = 30.0\norder = 2").expect("valid");
        let text = toml::to_string(&config).expect("serialise");
        assert_eq!(toml::from_str::<HighpassConfig>(&text).ok(), Some(config));
        assert!(toml::from_str::<HighpassConfig>("cutoff_hz = 30.0").is_err());
        let bad = HighpassConfig {
            frequency_hz: 400.0,
            order: 4,
        };
        assert_eq!(
            bad.validate().map_err(|e| e.key),
            Err("frequency_hz".into())
        );
        let bad = HighpassConfig {
            frequency_hz: 20.0,
            order: 9,
        };
        assert_eq!(
            Highpass::new(&bad, 2, FS, 64)
                .map(|_| ())
                .map_err(|e| e.key),
            Err("order".into())
        );
        // 300 Hz is fine at 48 kHz but not at a (hypothetical) 600 Hz rate.
        let edge = HighpassConfig {
            frequency_hz: 300.0,
            order: 4,
        };
        assert!(Highpass::new(&edge, 2, FS, 64).is_ok());
        assert_eq!(
            Highpass::new(&edge, 2, 600, 64)
                .map(|_| ())
                .map_err(|e| e.key),
            Err("frequency_hz".into())
        );
    }
}
