//! The analysis of one programme: loudness, range, peaks, clipping, DC, phase and silences, as
//! `lathe analyze --json` prints it and reports hold it for a source and its master.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::defects::Defects;

/// The analysis of one programme. Levels are `None` where undefined (e.g. the integrated loudness of
/// silence); serialised as JSON `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The file analysed (empty for in-memory audio).
    pub path: PathBuf,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: usize,
    /// Integrated loudness, LUFS (BS.1770-4 gating).
    pub integrated_lufs: Option<f64>,
    /// Ungated loudness over the whole programme, LUFS: the K-weighted mean square without gates
    /// or 400 ms blocks, defined for programmes too short to gate (`None` for digital silence).
    #[serde(default)]
    pub ungated_lufs: Option<f64>,
    /// Loudness range, LU (EBU Tech 3342).
    pub loudness_range_lu: Option<f64>,
    /// Highest momentary (400 ms) loudness, LUFS.
    pub max_momentary_lufs: Option<f64>,
    /// Highest short-term (3 s) loudness, LUFS.
    pub max_short_term_lufs: Option<f64>,
    /// Highest true peak over all channels, dBTP (BS.1770-4 Annex 2, 4x oversampled below 96 kHz).
    pub true_peak_dbtp: Option<f64>,
    /// Highest sample magnitude, dBFS.
    pub sample_peak_dbfs: Option<f64>,
    /// Samples at or beyond 16-bit full scale, over all channels.
    pub clipped_samples: u64,
    /// Mean sample value of the channel with the largest offset (signed, full scale = 1).
    pub dc_offset: f64,
    /// Correlation of the first two channels over the programme, -1 (out of phase) to +1 (mono);
    /// 1 for mono files, `None` for silence.
    pub phase_correlation: Option<f64>,
    /// Silence before the first sound, seconds.
    pub leading_silence_s: f64,
    /// Silence after the last sound, seconds.
    pub trailing_silence_s: f64,
    /// The recording's defects (clicks, crackle, noise floor, hum, clipping), where they were
    /// measured (`lathe analyze`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defects: Option<Defects>,
}
