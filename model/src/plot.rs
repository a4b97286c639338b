//! The curves a delivery report plots for a file: short-term loudness over time and the mean
//! spectrum (measured by the engine; carried in task outcomes).

use serde::{Deserialize, Serialize};

/// Short-term loudness is read this often, seconds.
pub const CURVE_STEP_S: f64 = 1.0;
/// Bands of the plotted spectrum, log-spaced from 20 Hz to 20 kHz.
pub const SPECTRUM_BANDS: usize = 48;

/// A file's curves for the plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlotData {
    /// Short-term (3 s) loudness every [`CURVE_STEP_S`], LUFS (floored at -70).
    pub short_term_lufs: Vec<f64>,
    /// Mean power spectrum (channels summed) in [`SPECTRUM_BANDS`] bands, dB.
    pub spectrum_db: Vec<f64>,
}
