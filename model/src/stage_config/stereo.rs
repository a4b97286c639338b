//! Configuration of the stereo image stage (`type = "stereo"`): width and mono bass.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// Configuration of the engine's `StereoImage` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StereoConfig {
    /// Side-signal gain, 0..=2 (0 mono, 1 unchanged); default 1.
    #[serde(default = "default_width")]
    pub width: f64,
    /// Below this frequency (20..=500 Hz) the side signal is removed; absent for no mono bass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mono_bass_hz: Option<f64>,
}

fn default_width() -> f64 {
    1.0
}

impl Default for StereoConfig {
    fn default() -> Self {
        Self {
            width: default_width(),
            mono_bass_hz: None,
        }
    }
}

impl StereoConfig {
    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// The first out-of-range value, keyed `width` or `mono_bass_hz`.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("width", self.width, 0.0, 2.0, "")?;
        if let Some(frequency_hz) = self.mono_bass_hz {
            check_range("mono_bass_hz", frequency_hz, 20.0, 500.0, "Hz")?;
        }
        Ok(())
    }
}
