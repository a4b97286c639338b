//! The curves a delivery report plots for a file: short-term loudness over time and the mean
//! spectrum (measured by the engine; carried in task outcomes).

use serde::{Deserialize, Serialize};

/// Short-term loudness is read this often, seconds.
pub const CURVE_STEP_S: f64 = 1.0;
/// Bands of the plotted spectrum, log-spaced from 20 Hz to 20 kHz.
pub const SPECTRUM_BANDS: usize = 48;

/// The centre frequency of spectrum band `band` (of [`SPECTRUM_BANDS`], log-spaced from 20 Hz to
/// 20 kHz), Hz.
pub fn band_centre_hz(band: usize) -> f64 {
    20.0 * 1000f64.powf((band as f64 + 0.5) / SPECTRUM_BANDS as f64)
}

/// A file's curves for the plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlotData {
    /// Short-term (3 s) loudness every [`CURVE_STEP_S`], LUFS (floored at -70).
    pub short_term_lufs: Vec<f64>,
    /// Mean power spectrum (channels summed) in [`SPECTRUM_BANDS`] bands, dB.
    pub spectrum_db: Vec<f64>,
}

/// A track's curves before and after mastering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackPlots {
    /// The source's.
    pub before: PlotData,
    /// The master's.
    pub after: PlotData,
}
