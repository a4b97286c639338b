//! Multiband compressor: 3 or 4 bands split by Linkwitz-Riley crossovers, each band compressed by its
//! own stereo-linked [`CompressorCore`], then summed.
//!
//! The crossovers form a tree: the input is split at the lowest crossover into the lowest band and a
//! remainder, the remainder at the next crossover, and so on. A Linkwitz-Riley 4th-order low-pass and
//! high-pass at the same frequency sum to a 2nd-order all-pass (Q = 1/sqrt 2), so each band that left
//! the tree before crossover `k` is passed through that all-pass too. With every band at unity gain the
//! bands then sum to the product of the crossovers' all-passes: a flat magnitude response (the phase
//! turns smoothly, as in any IIR crossover).
//!
//! Each band uses the [`Detector::Peak`] detector (see [`crate::master::compressor`] for the level
//! definition and the smoothing).

use crate::audio::AudioBlock;
use crate::master::biquad::{BiquadCascade, BiquadCoefficients, PassBand, check_below_nyquist};
use crate::master::compressor::CompressorCore;
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::MultibandConfig;

/// One crossover point: a Linkwitz-Riley 4th-order low-pass and high-pass at the same frequency.
#[derive(Debug, Clone)]
struct Crossover {
    lowpass: BiquadCascade,
    highpass: BiquadCascade,
}

/// Multiband compressor stage (see the module documentation).
#[derive(Debug, Clone)]
pub struct MultibandCompressor {
    crossovers: Vec<Crossover>,
    /// Per band: the all-passes of the crossovers the band did not pass through (empty for the top
    /// two bands).
    compensation: Vec<BiquadCascade>,
    cores: Vec<CompressorCore>,
    channel_count: usize,
    /// Capacity of `band_samples` in frames.
    chunk_frames: usize,
    /// Band signals of the current chunk: `[(band * channel_count + channel) * chunk_frames + frame]`.
    band_samples: Vec<f64>,
    /// One band's level, then gain, per frame of the chunk.
    gains: Vec<f64>,
}

impl MultibandCompressor {
    /// Builds the stage for `channel_count` channels at `sample_rate_hz`, with buffers for blocks of up
    /// to `max_block_frames` frames.
    ///
    /// # Errors
    /// An invalid value (see [`MultibandConfig::validate`]), or a crossover at or above 0.49 times the
    /// sample rate (key `crossovers_hz[i]`).
    pub fn new(
        config: &MultibandConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        config.validate()?;
        for (i, &frequency_hz) in config.crossovers_hz.iter().enumerate() {
            check_below_nyquist(&format!("crossovers_hz[{i}]"), frequency_hz, sample_rate_hz)?;
        }
        let crossovers = config
            .crossovers_hz
            .iter()
            .map(|&f| Crossover {
                lowpass: BiquadCascade::linkwitz_riley4(
                    PassBand::Lowpass,
                    f,
                    sample_rate_hz,
                    channel_count,
                ),
                highpass: BiquadCascade::linkwitz_riley4(
                    PassBand::Highpass,
                    f,
                    sample_rate_hz,
                    channel_count,
                ),
            })
            .collect();
        let compensation = (0..config.bands.len())
            .map(|band| {
                let allpasses = config
                    .crossovers_hz
                    .iter()
                    .skip(band + 1)
                    .map(|&f| {
                        BiquadCoefficients::allpass(
                            f,
                            std::f64::consts::FRAC_1_SQRT_2,
                            sample_rate_hz,
                        )
                    })
                    .collect();
                BiquadCascade::new(allpasses, channel_count)
            })
            .collect();
        let cores = config
            .bands
            .iter()
            .map(|band| {
                CompressorCore::new(&band.compressor_config(), channel_count, sample_rate_hz)
            })
            .collect();
        let chunk_frames = max_block_frames.max(1);
        Ok(Self {
            crossovers,
            compensation,
            cores,
            channel_count,
            chunk_frames,
            band_samples: vec![0.0; config.bands.len() * channel_count * chunk_frames],
            gains: vec![0.0; chunk_frames],
        })
    }

    /// Splits, compresses and sums `len` frames of `block` starting at `start`.
    fn process_chunk(&mut self, block: &mut AudioBlock, start: usize, len: usize) {
        let channels = self.channel_count.min(block.channel_count());
        let stride = self.chunk_frames;
        let band_count = self.cores.len();
        let channel_count = self.channel_count;
        let band_index = |band: usize, channel: usize| (band * channel_count + channel) * stride;

        // Split every channel into bands.
        for channel in 0..channels {
            let input = &block.channel(channel)[start..start + len];
            for (i, &x) in input.iter().enumerate() {
                let mut rest = f64::from(x);
                for (band, crossover) in self.crossovers.iter_mut().enumerate() {
                    let low = crossover.lowpass.process_sample(channel, rest);
                    rest = crossover.highpass.process_sample(channel, rest);
                    self.band_samples[band_index(band, channel) + i] =
                        self.compensation[band].process_sample(channel, low);
                }
                self.band_samples[band_index(band_count - 1, channel) + i] = rest;
            }
        }

        // Compress every band with one gain per frame across channels: the chunk's levels, then
        // its gains all at once (so the control steps' exponentials run on vectors).
        let gains = &mut self.gains[..len];
        for (band, core) in self.cores.iter_mut().enumerate() {
            let band_samples = &self.band_samples;
            let inputs =
                (0..channels).map(|channel| &band_samples[band_index(band, channel)..][..len]);
            core.level_powers(inputs, gains);
            core.powers_to_gains(gains);
            for channel in 0..channels {
                let samples = &mut self.band_samples[band_index(band, channel)..][..len];
                for (sample, &gain) in samples.iter_mut().zip(gains.iter()) {
                    *sample *= gain;
                }
            }
        }

        // Sum the bands back into the block.
        for channel in 0..channels {
            let output = &mut block.channel_mut(channel)[start..start + len];
            for (i, sample) in output.iter_mut().enumerate() {
                let sum: f64 = (0..band_count)
                    .map(|band| self.band_samples[band_index(band, channel) + i])
                    .sum();
                *sample = sum as f32;
            }
        }
    }
}

impl Stage for MultibandCompressor {
    fn name(&self) -> &'static str {
        "multiband"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        let frames = block.frames();
        let mut start = 0;
        while start < frames {
            let len = self.chunk_frames.min(frames - start);
            self.process_chunk(block, start, len);
            start += len;
        }
    }

    fn reset(&mut self) {
        for crossover in &mut self.crossovers {
            crossover.lowpass.reset();
            crossover.highpass.reset();
        }
        self.compensation.iter_mut().for_each(BiquadCascade::reset);
        self.cores.iter_mut().for_each(CompressorCore::reset);
    }

    /// `{"bands": [{"max_gain_reduction_db": .., "mean_gain_reduction_db": ..}, ..]}`, lowest band
    /// first.
    fn report(&self) -> Option<serde_json::Value> {
        let bands: Vec<serde_json::Value> = self
            .cores
            .iter()
            .map(|core| core.stats().to_json())
            .collect();
        Some(serde_json::json!({ "bands": bands }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{
        log_spaced_hz, noise, process_in_blocks, sine, steady_rms_db, tone_rms_db,
    };
    use lathe_model::stage_config::BandConfig;

    fn unity_band() -> BandConfig {
        BandConfig {
            threshold_db: -40.0,
            ratio: 1.0,
            knee_db: 6.0,
            attack_ms: 10.0,
            release_ms: 100.0,
            makeup_db: 0.0,
        }
    }

    fn config(crossovers_hz: &[f64]) -> MultibandConfig {
        MultibandConfig {
            crossovers_hz: crossovers_hz.to_vec(),
            bands: vec![unity_band(); crossovers_hz.len() + 1],
        }
    }

    fn compressing(crossovers_hz: &[f64]) -> MultibandConfig {
        let mut config = config(crossovers_hz);
        for (i, band) in config.bands.iter_mut().enumerate() {
            band.threshold_db = -30.0 + 3.0 * i as f64;
            band.ratio = 2.0 + i as f64;
            band.attack_ms = 1.0 + 5.0 * i as f64;
            band.release_ms = 40.0 + 30.0 * i as f64;
        }
        config
    }

    fn stage(config: &MultibandConfig, channels: usize, fs: u32) -> MultibandCompressor {
        MultibandCompressor::new(config, channels, fs, 4096).expect("valid config")
    }

    /// Worst deviation from 0 dB of the summed bands over 30 log-spaced tones from 20 Hz to 20 kHz.
    fn worst_flatness_db(config: &MultibandConfig, fs: u32) -> f64 {
        let mut stage = stage(config, 1, fs);
        let mut worst: f64 = 0.0;
        for f in log_spaced_hz(20.0, 20_000.0, 30) {
            stage.reset();
            let input = sine(1, 3 * fs as usize / 2, fs, f, 0.5);
            let output = process_in_blocks(&mut stage, &input, &[4096]);
            let skip = fs as usize / 2;
            let gain = steady_rms_db(&output.channel(0)[skip..], fs, f)
                - steady_rms_db(&input.channel(0)[skip..], fs, f);
            worst = worst.max(gain.abs());
        }
        worst
    }

    #[test]
    fn bands_sum_flat_when_nothing_compresses() {
        for fs in [44_100, 96_000] {
            for crossovers in [
                &[120.0, 1000.0, 6000.0][..],
                &[80.0, 2500.0],
                &[40.0, 41.0, 16_000.0],
            ] {
                let worst = worst_flatness_db(&config(crossovers), fs);
                eprintln!("flatness at {fs} Hz, crossovers {crossovers:?}: worst {worst:.2e} dB");
                assert!(worst < 0.1, "{fs} Hz {crossovers:?}: {worst} dB");
            }
        }
    }

    #[test]
    fn compressing_band_only_affects_its_band() {
        let fs = 48_000;
        let mut config = config(&[100.0, 2000.0]);
        config.bands[1] = BandConfig {
            threshold_db: -18.0,
            ratio: 4.0,
            knee_db: 0.0,
            ..unity_band()
        };
        // 447 Hz (the band's geometric centre) peaks at -6 dBFS: 12 dB over, 9 dB reduction.
        // 8 kHz is two octaves above the band's upper crossover.
        let in_band = sine(2, 3 * fs as usize, fs, 447.0, 0.5);
        let other = sine(2, 3 * fs as usize, fs, 8000.0, 0.1);
        let mut input = in_band.clone();
        for channel in 0..2 {
            for (x, y) in input
                .channel_mut(channel)
                .iter_mut()
                .zip(other.channel(channel))
            {
                *x += y;
            }
        }
        let mut stage = stage(&config, 2, fs);
        let output = process_in_blocks(&mut stage, &input, &[4096]);
        let skip = 2 * fs as usize;
        let change_db = |f: f64| {
            tone_rms_db(&output.channel(1)[skip..], fs, f)
                - tone_rms_db(&input.channel(1)[skip..], fs, f)
        };
        let in_band_db = change_db(447.0);
        let other_db = change_db(8000.0);
        eprintln!("in-band tone {in_band_db:.3} dB, other tone {other_db:.4} dB");
        assert!((in_band_db + 9.0).abs() < 0.5, "{in_band_db}");
        assert!(other_db.abs() < 0.2, "{other_db}");
        let report = stage.report().expect("a report");
        let band1_max = report["bands"][1]["max_gain_reduction_db"]
            .as_f64()
            .unwrap_or(0.0);
        assert!((band1_max - 9.0).abs() < 0.1, "{band1_max}");
        assert_eq!(
            report["bands"][2]["max_gain_reduction_db"].as_f64(),
            Some(0.0)
        );
    }

    #[test]
    fn block_size_independent() {
        let config = compressing(&[150.0, 1500.0, 7000.0]);
        let input = noise(2, 30_000, 48_000, 0.8, 31);
        let reference = process_in_blocks(&mut stage(&config, 2, 48_000), &input, &[4096]);
        for sizes in [&[1][..], &[7], &[64], &[4096], &[9, 1000, 2]] {
            let output = process_in_blocks(&mut stage(&config, 2, 48_000), &input, sizes);
            assert_eq!(output, reference, "{sizes:?}");
        }
        // Blocks larger than the stage was built for are processed in chunks, identically.
        let mut small = MultibandCompressor::new(&config, 2, 48_000, 100).expect("valid");
        assert_eq!(process_in_blocks(&mut small, &input, &[4096]), reference);
    }

    #[test]
    fn reset_repeats_the_render() {
        let config = compressing(&[200.0, 3000.0]);
        let mut stage = stage(&config, 2, 44_100);
        let input = noise(2, 20_000, 44_100, 0.7, 5);
        let first = process_in_blocks(&mut stage, &input, &[512]);
        let first_report = stage.report();
        stage.reset();
        assert_eq!(process_in_blocks(&mut stage, &input, &[512]), first);
        assert_eq!(stage.report(), first_report);
    }

    #[test]
    fn silence_in_silence_out_and_noise_stays_finite() {
        let mut config = compressing(&[60.0, 500.0, 5000.0]);
        for band in &mut config.bands {
            band.makeup_db = 24.0;
            band.ratio = 100.0;
            band.threshold_db = -60.0;
        }
        let mut stage = stage(&config, 2, 48_000);
        let silence = AudioBlock::from_channels(vec![vec![0.0; 10_000]; 2], 48_000);
        let out = process_in_blocks(&mut stage, &silence, &[512]);
        assert!(out.channels().flatten().all(|&x| x == 0.0));
        let out = process_in_blocks(&mut stage, &noise(2, 48_000, 48_000, 1.0, 3), &[512]);
        assert!(out.channels().flatten().all(|x| x.is_finite()));
    }

    #[test]
    fn config_parses_and_validates() {
        let text = r#"
            crossovers_hz = [120.0, 1000.0, 6000.0]
            [[bands]]
            threshold_db = -24.0
            ratio = 2.0
            [[bands]]
            threshold_db = -20.0
            ratio = 1.5
            attack_ms = 20.0
            [[bands]]
            threshold_db = -20.0
            ratio = 1.5
            [[bands]]
            threshold_db = -18.0
            ratio = 2.0
            makeup_db = 1.0
        "#;
        let config: MultibandConfig = toml::from_str(text).expect("valid TOML");
        config.validate().expect("valid values");
        assert_eq!(config.bands[0].knee_db, 6.0);
        assert_eq!(config.bands[1].attack_ms, 20.0);
        let round_trip: MultibandConfig =
            toml::from_str(&toml::to_string(&config).expect("serialise")).expect("parse back");
        assert_eq!(round_trip, config);
        assert!(toml::from_str::<MultibandConfig>(&format!("{text}\ndetector = \"rms\"")).is_err());

        let key = |c: &MultibandConfig| c.validate().map_err(|e| e.key);
        let mut bad = config.clone();
        bad.crossovers_hz = vec![1000.0];
        assert_eq!(key(&bad), Err("crossovers_hz".into()));
        let mut bad = config.clone();
        bad.crossovers_hz[2] = 900.0;
        assert_eq!(key(&bad), Err("crossovers_hz[2]".into()));
        let mut bad = config.clone();
        bad.crossovers_hz[0] = 30.0;
        assert_eq!(key(&bad), Err("crossovers_hz[0]".into()));
        let mut bad = config.clone();
        bad.bands.pop();
        assert_eq!(key(&bad), Err("bands".into()));
        let mut bad = config.clone();
        bad.bands[3].ratio = 0.5;
        assert_eq!(key(&bad), Err("bands[3].ratio".into()));
        let mut bad = config.clone();
        bad.crossovers_hz[2] = 16_000.0;
        assert!(MultibandCompressor::new(&bad, 2, 44_100, 64).is_ok());
        assert_eq!(
            MultibandCompressor::new(&bad, 2, 32_000, 64)
                .map(|_| ())
                .map_err(|e| e.key),
            Err("crossovers_hz[2]".into())
        );
    }
}
