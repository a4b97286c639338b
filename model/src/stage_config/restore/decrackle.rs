//! `[restore.decrackle]`: settings of the decrackler.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// `[restore.decrackle]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecrackleConfig {
    /// Detection threshold in robust standard deviations of the prediction error.
    pub threshold_sigmas: f64,
    /// AR model order.
    pub ar_order: usize,
    /// Longest crackle repaired, in samples.
    pub max_crackle_frames: usize,
}

impl Default for DecrackleConfig {
    fn default() -> Self {
        Self {
            threshold_sigmas: 3.5,
            ar_order: 20,
            max_crackle_frames: 6,
        }
    }
}

impl DecrackleConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("threshold_sigmas", self.threshold_sigmas, 2.0, 50.0, "")?;
        check_range("ar_order", self.ar_order as f64, 4.0, 64.0, "")?;
        check_range(
            "max_crackle_frames",
            self.max_crackle_frames as f64,
            1.0,
            32.0,
            "",
        )?;
        Ok(())
    }
}
