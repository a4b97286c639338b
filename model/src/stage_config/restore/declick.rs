//! `[restore.declick]`: settings of the declicker.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// `[restore.declick]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeclickConfig {
    /// Detection threshold in robust standard deviations of the prediction error; lower finds
    /// smaller clicks and risks touching programme.
    pub threshold_sigmas: f64,
    /// AR model order.
    pub ar_order: usize,
    /// Longest click repaired, ms; longer bursts are taken for programme.
    pub max_click_ms: f64,
    /// Also search for wide smooth clicks (bumps of tens of samples, which a music model predicts
    /// too well to show sample by sample) with a matched filter. Off by default: it repairs far
    /// more of such clicks, but also some attacks and synthetic waveform edges of clean music.
    pub wide_clicks: bool,
}

impl Default for DeclickConfig {
    fn default() -> Self {
        Self {
            threshold_sigmas: 7.0,
            ar_order: 32,
            max_click_ms: 3.0,
            wide_clicks: false,
        }
    }
}

impl DeclickConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("threshold_sigmas", self.threshold_sigmas, 2.0, 50.0, "")?;
        check_range("ar_order", self.ar_order as f64, 4.0, 64.0, "")?;
        check_range("max_click_ms", self.max_click_ms, 0.05, 5.0, "ms")?;
        Ok(())
    }
}
