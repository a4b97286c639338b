//! Configuration of the multiband compressor (`type = "multiband"`).

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};
use crate::stage_config::compressor::{
    CompressorConfig, Detector, default_attack_ms, default_knee_db, default_release_ms,
};

/// Compression settings of one band (same ranges and defaults as the compressor's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandConfig {
    /// Peak level above which the band's gain is reduced, -60..=0 dBFS.
    pub threshold_db: f64,
    /// Compression ratio, 1..=100 (1 leaves the band untouched).
    pub ratio: f64,
    /// Soft-knee width, 0..=24 dB; default 6 dB.
    #[serde(default = "default_knee_db")]
    pub knee_db: f64,
    /// Attack time constant, 0.01..=500 ms; default 10 ms.
    #[serde(default = "default_attack_ms")]
    pub attack_ms: f64,
    /// Release time constant, 1..=5000 ms; default 100 ms.
    #[serde(default = "default_release_ms")]
    pub release_ms: f64,
    /// Gain added to the band after compression, -24..=24 dB; default 0 dB.
    #[serde(default)]
    pub makeup_db: f64,
}

impl BandConfig {
    /// The equivalent single-band compressor settings (peak detector).
    pub fn compressor_config(&self) -> CompressorConfig {
        CompressorConfig {
            threshold_db: self.threshold_db,
            ratio: self.ratio,
            knee_db: self.knee_db,
            attack_ms: self.attack_ms,
            release_ms: self.release_ms,
            makeup_db: self.makeup_db,
            detector: Detector::Peak,
            ..CompressorConfig::new(self.threshold_db, self.ratio)
        }
    }

    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// The first out-of-range value, keyed by its field name.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        self.compressor_config().validate()
    }
}

/// Configuration of the engine's `MultibandCompressor` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultibandConfig {
    /// Crossover frequencies: 2 or 3 values, strictly ascending, each 40..=16000 Hz.
    pub crossovers_hz: Vec<f64>,
    /// One entry per band, lowest first: exactly one more than there are crossovers.
    pub bands: Vec<BandConfig>,
}

impl MultibandConfig {
    /// Checks the crossovers, the band count and every band.
    ///
    /// # Errors
    /// The first problem, keyed `crossovers_hz`, `crossovers_hz[i]`, `bands` or `bands[i].<field>`.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let count = self.crossovers_hz.len();
        if !(2..=3).contains(&count) {
            return Err(InvalidValue::new(
                "crossovers_hz",
                format!("{count} crossovers; allowed 2 or 3"),
            ));
        }
        for (i, &frequency_hz) in self.crossovers_hz.iter().enumerate() {
            let key = format!("crossovers_hz[{i}]");
            check_range(&key, frequency_hz, 40.0, 16_000.0, "Hz")?;
            if i > 0 && frequency_hz <= self.crossovers_hz[i - 1] {
                return Err(InvalidValue::new(
                    key,
                    format!(
                        "{frequency_hz} Hz is not above the previous crossover ({} Hz); \
                         crossovers must be strictly ascending",
                        self.crossovers_hz[i - 1]
                    ),
                ));
            }
        }
        if self.bands.len() != count + 1 {
            return Err(InvalidValue::new(
                "bands",
                format!(
                    "{} bands for {count} crossovers; need exactly {}",
                    self.bands.len(),
                    count + 1
                ),
            ));
        }
        for (i, band) in self.bands.iter().enumerate() {
            band.validate()
                .map_err(|e| e.within(&format!("bands[{i}]")))?;
        }
        Ok(())
    }
}
