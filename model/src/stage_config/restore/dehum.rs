//! `[restore.dehum]`: settings of the dehummer.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// Most harmonics (fundamental included) a dehummer removes.
pub const MAX_HARMONICS: usize = 16;

/// `[restore.dehum]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DehumConfig {
    /// Nominal mains frequency, 50 or 60 Hz; without it both are watched and the present one chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mains_hz: Option<f64>,
    /// Harmonics removed, the fundamental included.
    pub harmonics: usize,
}

impl Default for DehumConfig {
    fn default() -> Self {
        Self {
            mains_hz: None,
            harmonics: 4,
        }
    }
}

impl DehumConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if let Some(hz) = self.mains_hz
            && hz != 50.0
            && hz != 60.0
        {
            return Err(InvalidValue::new(
                "mains_hz",
                format!("{hz} Hz is not a mains frequency; allowed 50 or 60 (omit it to detect)"),
            ));
        }
        check_range(
            "harmonics",
            self.harmonics as f64,
            1.0,
            MAX_HARMONICS as f64,
            "",
        )?;
        Ok(())
    }
}
