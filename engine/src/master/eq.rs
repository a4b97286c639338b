//! Parametric EQ: up to 32 cookbook biquad bands (bells, shelves, high- and low-pass) in series.
//!
//! In a profile the bands are an array of tables tagged by `type`:
//!
//! ```toml
//! [[bands]]
//! type = "low_shelf"
//! frequency_hz = 100.0
//! gain_db = 1.5          # q defaults to 0.707
//!
//! [[bands]]
//! type = "peaking"
//! frequency_hz = 3000.0
//! gain_db = -2.0
//! q = 1.4
//! ```
//!
//! Every band is a minimum-phase biquad from [`BiquadCoefficients`]; an EQ with no bands passes the
//! audio through untouched.

use crate::audio::AudioBlock;
use crate::master::biquad::{BiquadCascade, BiquadCoefficients, check_below_nyquist};
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::{EqBand, EqConfig};

/// Parametric EQ stage: the configured bands in series on every channel.
#[derive(Debug, Clone)]
pub struct ParametricEq {
    filter: BiquadCascade,
}

impl ParametricEq {
    /// Builds the EQ for `channel_count` channels at `sample_rate_hz`. The filters need no buffers, so
    /// `max_block_frames` is accepted only for the common constructor shape.
    ///
    /// # Errors
    /// An out-of-range value (see [`EqConfig::validate`]), or a band frequency at or above 0.49 times the
    /// sample rate (key `bands[i].frequency_hz`).
    pub fn new(
        config: &EqConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        let _ = max_block_frames;
        config.validate()?;
        let mut sections = Vec::with_capacity(config.bands.len());
        for (i, band) in config.bands.iter().enumerate() {
            check_below_nyquist("frequency_hz", band.frequency_hz(), sample_rate_hz)
                .map_err(|e| e.within(&format!("bands[{i}]")))?;
            sections.push(band_coefficients(band, sample_rate_hz));
        }
        Ok(Self {
            filter: BiquadCascade::new(sections, channel_count),
        })
    }

    /// The analytic magnitude response of all bands together, in dB.
    pub fn magnitude_db(&self, frequency_hz: f64, sample_rate_hz: u32) -> f64 {
        self.filter.magnitude_db(frequency_hz, sample_rate_hz)
    }
}

impl Stage for ParametricEq {
    fn name(&self) -> &'static str {
        "eq"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        if self.filter.sections().is_empty() {
            return;
        }
        self.filter.process_block(block);
    }

    fn reset(&mut self) {
        self.filter.reset();
    }
}

/// `band`'s biquad at `sample_rate_hz`.
fn band_coefficients(band: &EqBand, sample_rate_hz: u32) -> BiquadCoefficients {
    let fs = sample_rate_hz;
    match *band {
        EqBand::Peaking {
            frequency_hz,
            gain_db,
            q,
        } => BiquadCoefficients::peaking(frequency_hz, gain_db, q, fs),
        EqBand::LowShelf {
            frequency_hz,
            gain_db,
            q,
        } => BiquadCoefficients::low_shelf(frequency_hz, gain_db, q, fs),
        EqBand::HighShelf {
            frequency_hz,
            gain_db,
            q,
        } => BiquadCoefficients::high_shelf(frequency_hz, gain_db, q, fs),
        EqBand::Highpass { frequency_hz, q } => BiquadCoefficients::highpass(frequency_hz, q, fs),
        EqBand::Lowpass { frequency_hz, q } => BiquadCoefficients::lowpass(frequency_hz, q, fs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{noise, process_in_blocks, sine, steady_rms_db};
    use lathe_model::stage_config::MAX_BANDS;

    const FS: u32 = 48_000;

    const PROFILE_SNIPPET: &str = r#"
        [[bands]]
        type = "highpass"
        frequency_hz = 25.0

        [[bands]]
        type = "low_shelf"
        frequency_hz = 90.0
        gain_db = 1.5

        [[bands]]
        type = "peaking"
        frequency_hz = 350.0
        gain_db = -2.5
        q = 1.2

        [[bands]]
        type = "high_shelf"
        frequency_hz = 9000.0
        gain_db = 2.0
        q = 0.5

        [[bands]]
        type = "lowpass"
        frequency_hz = 19000.0
        q = 0.9
    "#;

    fn peaking(frequency_hz: f64, gain_db: f64, q: f64) -> EqBand {
        EqBand::Peaking {
            frequency_hz,
            gain_db,
            q,
        }
    }

    fn eq(bands: Vec<EqBand>, channels: usize) -> ParametricEq {
        ParametricEq::new(&EqConfig { bands }, channels, FS, 4096).expect("valid config")
    }

    /// Gain on a steady 1.5 s sine, skipping the first 0.5 s.
    fn tone_gain_db(stage: &mut ParametricEq, frequency_hz: f64) -> f64 {
        stage.reset();
        let input = sine(1, 3 * FS as usize / 2, FS, frequency_hz, 0.25);
        let output = process_in_blocks(stage, &input, &[4096]);
        let skip = FS as usize / 2;
        steady_rms_db(&output.channel(0)[skip..], FS, frequency_hz)
            - steady_rms_db(&input.channel(0)[skip..], FS, frequency_hz)
    }

    #[test]
    fn peaking_bands_reach_their_gain_at_centre() {
        let bands = vec![
            peaking(60.0, 6.0, 4.0),
            peaking(400.0, -9.0, 4.0),
            peaking(2500.0, 4.5, 4.0),
            peaking(12_000.0, -12.0, 4.0),
        ];
        let mut stage = eq(bands.clone(), 1);
        for band in &bands {
            let EqBand::Peaking {
                frequency_hz,
                gain_db,
                ..
            } = *band
            else {
                unreachable!()
            };
            let measured = tone_gain_db(&mut stage, frequency_hz);
            assert!(
                (measured - gain_db).abs() < 0.1,
                "{frequency_hz} Hz: {measured} dB, want {gain_db}"
            );
        }
    }

    #[test]
    fn shelves_reach_their_gain_far_from_the_corner() {
        let low = EqBand::LowShelf {
            frequency_hz: 300.0,
            gain_db: 6.0,
            q: 0.707,
        };
        let high = EqBand::HighShelf {
            frequency_hz: 3000.0,
            gain_db: -8.0,
            q: 0.707,
        };
        let mut stage = eq(vec![low, high], 1);
        let at_low = tone_gain_db(&mut stage, 20.0);
        assert!((at_low - 6.0).abs() < 0.1, "{at_low}");
        let at_high = tone_gain_db(&mut stage, 20_000.0);
        assert!((at_high + 8.0).abs() < 0.1, "{at_high}");
        let at_corner = tone_gain_db(&mut stage, 300.0);
        assert!((at_corner - 3.0).abs() < 0.1, "{at_corner}");
        let in_between = tone_gain_db(&mut stage, 950.0);
        assert!(in_between.abs() < 1.0, "{in_between}");
    }

    #[test]
    fn pass_filters_and_no_bands() {
        let mut stage = eq(
            vec![
                EqBand::Highpass {
                    frequency_hz: 100.0,
                    q: std::f64::consts::FRAC_1_SQRT_2,
                },
                EqBand::Lowpass {
                    frequency_hz: 10_000.0,
                    q: std::f64::consts::FRAC_1_SQRT_2,
                },
            ],
            1,
        );
        let half_power = -10.0 * 2f64.log10();
        // The other filter contributes a few thousandths of a dB at each corner.
        assert!((tone_gain_db(&mut stage, 100.0) - half_power).abs() < 0.1);
        assert!((tone_gain_db(&mut stage, 10_000.0) - half_power).abs() < 0.1);
        assert!(tone_gain_db(&mut stage, 1000.0).abs() < 0.01);

        let mut flat = eq(vec![], 2);
        let input = noise(2, 5000, FS, 1.0, 5);
        assert_eq!(process_in_blocks(&mut flat, &input, &[333]), input);
    }

    #[test]
    fn profile_snippet_round_trips_through_serde() {
        let config: EqConfig = toml::from_str(PROFILE_SNIPPET).expect("valid TOML");
        assert_eq!(config.bands.len(), 5);
        assert_eq!(
            config.bands[1],
            EqBand::LowShelf {
                frequency_hz: 90.0,
                gain_db: 1.5,
                q: 0.707
            }
        );
        config.validate().expect("in range");
        let text = toml::to_string(&config).expect("serialise");
        let parsed: EqConfig = toml::from_str(&text).expect("parse back");
        assert_eq!(parsed, config);
        let json = serde_json::to_string(&config).expect("serialise");
        assert_eq!(serde_json::from_str::<EqConfig>(&json).ok(), Some(config));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let in_band = "[[bands]]\ntype = \"peaking\"\nfrequency_hz = 1000.0\ngain_db = 1.0\nq = 1.0\nwidth = 2.0\n";
        assert!(toml::from_str::<EqConfig>(in_band).is_err());
        let at_top = "gain_db = 3.0\n";
        assert!(toml::from_str::<EqConfig>(at_top).is_err());
        let unknown_type = "[[bands]]\ntype = \"notch\"\nfrequency_hz = 1000.0\n";
        assert!(toml::from_str::<EqConfig>(unknown_type).is_err());
        let q_on_missing_gain = "[[bands]]\ntype = \"peaking\"\nfrequency_hz = 1000.0\nq = 1.0\n";
        assert!(toml::from_str::<EqConfig>(q_on_missing_gain).is_err());
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let mut config: EqConfig = toml::from_str(PROFILE_SNIPPET).expect("valid TOML");
        config.bands[2] = peaking(350.0, 30.0, 1.2);
        let err = config.validate().expect_err("gain out of range");
        assert_eq!(err.key, "bands[2].gain_db");
        assert!(err.reason.contains("-24 dB to 24 dB"), "{}", err.reason);

        config.bands[2] = peaking(350.0, 3.0, 40.0);
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("bands[2].q".into())
        );
        config.bands[2] = peaking(5.0, 3.0, 1.0);
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("bands[2].frequency_hz".into())
        );
        // In range for the config, but above 0.49 * 44.1 kHz.
        config.bands[2] = peaking(30_000.0, 3.0, 1.0);
        config.validate().expect("in range");
        let err = ParametricEq::new(&config, 2, 44_100, 64)
            .map(|_| ())
            .expect_err("too high");
        assert_eq!(err.key, "bands[2].frequency_hz");
        assert!(ParametricEq::new(&config, 2, 96_000, 64).is_ok());

        let too_many = EqConfig {
            bands: vec![peaking(1000.0, 1.0, 1.0); MAX_BANDS + 1],
        };
        assert_eq!(too_many.validate().map_err(|e| e.key), Err("bands".into()));
    }

    #[test]
    fn block_size_independent() {
        let config: EqConfig = toml::from_str(PROFILE_SNIPPET).expect("valid TOML");
        let input = noise(2, 20_000, FS, 0.5, 9);
        let build = || ParametricEq::new(&config, 2, FS, 4096).expect("valid");
        let reference = process_in_blocks(&mut build(), &input, &[4096]);
        for sizes in [&[1][..], &[7], &[64], &[3, 1000, 17]] {
            assert_eq!(process_in_blocks(&mut build(), &input, sizes), reference);
        }
    }

    #[test]
    fn reset_repeats_the_render() {
        let config: EqConfig = toml::from_str(PROFILE_SNIPPET).expect("valid TOML");
        let mut stage = ParametricEq::new(&config, 2, FS, 4096).expect("valid");
        let input = noise(2, 10_000, FS, 0.5, 4);
        let first = process_in_blocks(&mut stage, &input, &[256]);
        stage.reset();
        assert_eq!(process_in_blocks(&mut stage, &input, &[256]), first);
    }

    #[test]
    fn silence_in_silence_out_and_noise_stays_finite() {
        let config: EqConfig = toml::from_str(PROFILE_SNIPPET).expect("valid TOML");
        let mut stage = ParametricEq::new(&config, 2, FS, 4096).expect("valid");
        let silence = AudioBlock::from_channels(vec![vec![0.0; 8000]; 2], FS);
        let out = process_in_blocks(&mut stage, &silence, &[512]);
        assert!(out.channels().flatten().all(|&x| x == 0.0));
        let extreme = EqConfig {
            bands: vec![
                peaking(100.0, 24.0, 20.0),
                EqBand::LowShelf {
                    frequency_hz: 10.0,
                    gain_db: 24.0,
                    q: 20.0,
                },
            ],
        };
        let mut stage = ParametricEq::new(&extreme, 2, FS, 4096).expect("valid");
        let out = process_in_blocks(&mut stage, &noise(2, 48_000, FS, 1.0, 8), &[512]);
        assert!(out.channels().flatten().all(|x| x.is_finite()));
    }
}
