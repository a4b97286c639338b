//! `[restore.denoise]`: settings of the denoiser.

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};

/// Shortest noise range a noise spectrum is learned from, seconds.
pub const MIN_NOISE_RANGE_S: f64 = 0.25;

/// `[restore.denoise]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenoiseConfig {
    /// The most attenuation any frequency receives, dB: the strength of the reduction.
    pub strength_db: f64,
    /// Start of a stretch of noise alone (a lead-in groove, tape hiss before the music) to learn
    /// the noise spectrum from, seconds into the track; given with `noise_to_s`. Without them the
    /// noise is estimated from the programme (a low quantile of each bin over the track).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_from_s: Option<f64>,
    /// End of that stretch, seconds into the track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_to_s: Option<f64>,
}

impl Default for DenoiseConfig {
    fn default() -> Self {
        Self {
            strength_db: 30.0,
            noise_from_s: None,
            noise_to_s: None,
        }
    }
}

impl DenoiseConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_range("strength_db", self.strength_db, 0.0, 40.0, "dB")?;
        match (self.noise_from_s, self.noise_to_s) {
            (None, None) => Ok(()),
            (Some(from), Some(to)) => {
                check_range("noise_from_s", from, 0.0, 86_400.0, "s")?;
                check_range("noise_to_s", to, from + MIN_NOISE_RANGE_S, 86_400.0, "s")
            }
            (Some(_), None) => Err(InvalidValue::new(
                "noise_to_s",
                "missing: a noise range needs both noise_from_s and noise_to_s".to_owned(),
            )),
            (None, Some(_)) => Err(InvalidValue::new(
                "noise_from_s",
                "missing: a noise range needs both noise_from_s and noise_to_s".to_owned(),
            )),
        }
    }

    /// The noise range `(from, to)` in seconds, when one is given.
    pub fn noise_range_s(&self) -> Option<(f64, f64)> {
        self.noise_from_s.zip(self.noise_to_s)
    }
}
