//! How far a long piece of work is, as its progress callback sees it; the callback's
//! [`std::ops::ControlFlow`] answer lets the caller stop the work at its next block.

use serde::{Deserialize, Serialize};

/// The phase a track is in, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Measuring the source.
    Analyse,
    /// Running the chain to set the gain.
    Chain,
    /// Matching the limited loudness to the target.
    Calibrate,
    /// Writing the master.
    Render,
    /// Re-reading and checking the master.
    Verify,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Analyse => "analyse",
            Self::Chain => "chain",
            Self::Calibrate => "calibrate",
            Self::Render => "render",
            Self::Verify => "verify",
        }
    }
}

/// Progress of one track: the phase and how far through the source it is (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Fraction of the source processed in this phase.
    pub fraction: f64,
}
