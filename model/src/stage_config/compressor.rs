//! Configuration of the broadband compressor (`type = "compressor"`) and its level detector.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// How the level that drives the gain computer is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Absolute sample value (a sine reads its peak amplitude).
    #[default]
    Peak,
    /// Root mean square over `rms_window_ms` (a sine reads 3.01 dB below its peak).
    Rms,
}

/// Configuration of the engine's `Compressor` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressorConfig {
    /// Level above which the gain is reduced, -60..=0 dBFS (as read by the detector).
    pub threshold_db: f64,
    /// Input dB over the threshold per output dB over it, 1..=100 (1 is no compression).
    pub ratio: f64,
    /// Width of the soft knee centred on the threshold, 0..=24 dB; default 6 dB.
    #[serde(default = "default_knee_db")]
    pub knee_db: f64,
    /// Time for the gain reduction to reach 63 % of a step up, 0.01..=500 ms; default 10 ms.
    #[serde(default = "default_attack_ms")]
    pub attack_ms: f64,
    /// Time constant of the gain reduction's decay, 1..=5000 ms; default 100 ms.
    #[serde(default = "default_release_ms")]
    pub release_ms: f64,
    /// Gain added after compression, -24..=24 dB; default 0 dB.
    #[serde(default)]
    pub makeup_db: f64,
    /// Level detector; default `peak`.
    #[serde(default)]
    pub detector: Detector,
    /// Window of the RMS detector, 1..=300 ms; default 10 ms (ignored by the peak detector).
    #[serde(default = "default_rms_window_ms")]
    pub rms_window_ms: f64,
}

pub(crate) fn default_knee_db() -> f64 {
    6.0
}

pub(crate) fn default_attack_ms() -> f64 {
    10.0
}

pub(crate) fn default_release_ms() -> f64 {
    100.0
}

fn default_rms_window_ms() -> f64 {
    10.0
}

impl CompressorConfig {
    /// A peak-detecting configuration with the given threshold and ratio and every other value at its
    /// default.
    pub fn new(threshold_db: f64, ratio: f64) -> Self {
        Self {
            threshold_db,
            ratio,
            knee_db: default_knee_db(),
            attack_ms: default_attack_ms(),
            release_ms: default_release_ms(),
            makeup_db: 0.0,
            detector: Detector::Peak,
            rms_window_ms: default_rms_window_ms(),
        }
    }

    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// The first out-of-range value, keyed by its field name.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("threshold_db", self.threshold_db, -60.0, 0.0, "dB")?;
        check_range("ratio", self.ratio, 1.0, 100.0, "")?;
        check_range("knee_db", self.knee_db, 0.0, 24.0, "dB")?;
        check_range("attack_ms", self.attack_ms, 0.01, 500.0, "ms")?;
        check_range("release_ms", self.release_ms, 1.0, 5000.0, "ms")?;
        check_range("makeup_db", self.makeup_db, -24.0, 24.0, "dB")?;
        check_range("rms_window_ms", self.rms_window_ms, 1.0, 300.0, "ms")?;
        Ok(())
    }
}
