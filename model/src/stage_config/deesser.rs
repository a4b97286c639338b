//! Configuration of the split-band de-esser (`type = "deesser"`).

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// Configuration of the engine's `Deesser` stage (`type = "deesser"`).
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
