//! The `[restore]` section of a profile: which restorers run, with what settings.

mod declick;
mod declip;
mod decrackle;
mod dehum;
mod denoise;

use serde::{Deserialize, Serialize};

use crate::config::InvalidValue;

pub use declick::DeclickConfig;
pub use declip::DeclipConfig;
pub use decrackle::DecrackleConfig;
pub use dehum::{DehumConfig, MAX_HARMONICS};
pub use denoise::{DenoiseConfig, MIN_NOISE_RANGE_S};

/// The `[restore]` section of a profile: which restorers run, with what settings.
///
/// With `auto = true` the track is measured first (clicks, crackle, noise floor, hum, clipping)
/// and the restorers whose defect is present run, with settings the measurement implies
/// ([`crate::restore_plan::RestorePlan`]). A restorer given its own sub-table as well always runs,
/// with the sub-table's settings, whatever was detected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Measure the track and run the restorers whose defect is present (the sub-tables given run
    /// whatever was found).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
    /// Rebuild clipped peaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declip: Option<DeclipConfig>,
    /// Remove clicks (1 to about 50 samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declick: Option<DeclickConfig>,
    /// Remove crackle (dense clicks of 1 to 4 samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrackle: Option<DecrackleConfig>,
    /// Remove mains hum and its harmonics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dehum: Option<DehumConfig>,
    /// Reduce broadband hiss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denoise: Option<DenoiseConfig>,
}

impl RestoreConfig {
    /// True when no restorer is enabled and none is chosen automatically.
    pub fn is_empty(&self) -> bool {
        !self.auto && self.has_no_restorer()
    }

    /// True when no restorer has a sub-table (whether or not `auto` may add some).
    pub fn has_no_restorer(&self) -> bool {
        self.declip.is_none()
            && self.declick.is_none()
            && self.decrackle.is_none()
            && self.dehum.is_none()
            && self.denoise.is_none()
    }

    /// Checks every enabled restorer's settings; keys are relative to `[restore]` (`denoise.strength_db`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if let Some(c) = &self.declip {
            c.validate().map_err(|e| e.within("declip"))?;
        }
        if let Some(c) = &self.declick {
            c.validate().map_err(|e| e.within("declick"))?;
        }
        if let Some(c) = &self.decrackle {
            c.validate().map_err(|e| e.within("decrackle"))?;
        }
        if let Some(c) = &self.dehum {
            c.validate().map_err(|e| e.within("dehum"))?;
        }
        if let Some(c) = &self.denoise {
            c.validate().map_err(|e| e.within("denoise"))?;
        }
        Ok(())
    }
}
