//! Configuration of the DC and rumble high-pass (`type = "highpass"`).

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// Configuration of the engine's `Highpass` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighpassConfig {
    /// Cutoff (-3.01 dB) frequency, 5..=300 Hz; default 20 Hz.
    #[serde(default = "default_frequency_hz")]
    pub frequency_hz: f64,
    /// Butterworth order, 1..=8 (6 dB/octave each); default 4.
    #[serde(default = "default_order")]
    pub order: u32,
}

fn default_frequency_hz() -> f64 {
    20.0
}

fn default_order() -> u32 {
    4
}

impl Default for HighpassConfig {
    fn default() -> Self {
        Self {
            frequency_hz: default_frequency_hz(),
            order: default_order(),
        }
    }
}

impl HighpassConfig {
    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// The first out-of-range value, keyed `frequency_hz` or `order`.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("frequency_hz", self.frequency_hz, 5.0, 300.0, "Hz")?;
        check_range("order", f64::from(self.order), 1.0, 8.0, "")?;
        Ok(())
    }
}
