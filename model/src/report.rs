//! What lathe reports of a master: the source, the stages, the analyses before and after, the
//! delivery check. Written beside every master as `<stem>.report.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::level_rule::LevelRule;
use crate::plot::TrackPlots;
use crate::restore_plan::RestorePlan;

/// What the chain makes of a source, measured by the engine's `render::measure_chain`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChainMeasurement {
    /// Integrated loudness after the chain, LUFS (`None` if silent).
    pub integrated_lufs: Option<f64>,
    /// True peak after the chain, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// Frames at the output rate.
    pub frames: u64,
    /// The output rate, Hz.
    pub sample_rate_hz: u32,
}

/// The source as found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// Container format.
    pub container: String,
    /// Codec.
    pub codec: String,
    /// Sample rate, Hz.
    pub sample_rate_hz: u32,
    /// Channels.
    pub channel_count: usize,
    /// Bits per sample, where the format has them.
    pub bits_per_sample: Option<u32>,
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// The stage's own figures.
    pub report: serde_json::Value,
}

/// The delivery check of a master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QcVerdict {
    /// True when the master meets the profile's ceiling and target and has no clipped samples.
    pub passed: bool,
    /// Each failed check, in words.
    pub issues: Vec<String>,
}

/// Everything about one mastered track: written beside the master as `<stem>.report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackReport {
    /// The source file.
    pub input: PathBuf,
    /// The master file.
    pub output: PathBuf,
    /// Profile name.
    pub profile: String,
    /// lathe version that rendered it.
    pub lathe_version: String,
    /// The source's format.
    pub source: SourceSummary,
    /// Output sample rate, Hz.
    pub output_sample_rate_hz: u32,
    /// Gain applied before the chain, dB.
    pub chain_input_gain_db: f64,
    /// Normalisation gain applied after the chain, dB.
    pub gain_db: f64,
    /// How the level was set: by the integrated loudness, the whole-track loudness (a source too
    /// short to gate), unity gain (near-silent) or as digital silence; a note in `warnings` says
    /// more for all but the first.
    #[serde(default)]
    pub level_rule: LevelRule,
    /// Loudness target, LUFS (`None` where no target applied: none in the profile, unity gain,
    /// silence).
    pub target_lufs: Option<f64>,
    /// Measured output loudness (as the level rule measures it) minus target, LU.
    pub loudness_error_lu: Option<f64>,
    /// How many calibration passes the limiter needed.
    pub calibration_passes: u32,
    /// Passes over the audio in all: the analysis, the chain, the calibration passes and, where no
    /// calibration pass wrote the master at the final gain, the render (the verify read is not
    /// counted).
    pub passes: u32,
    /// Dither seed (hash of the source samples), hexadecimal.
    pub dither_seed: String,
    /// What each stage did during the final render.
    pub stages: Vec<StageReport>,
    /// Analysis of the source.
    pub input_analysis: Analysis,
    /// Analysis of the written master (decoded back from disk).
    pub output_analysis: Analysis,
    /// The delivery check.
    pub qc: QcVerdict,
    /// Things a mastering engineer should know (e.g. the target was out of reach).
    pub warnings: Vec<String>,
    /// Wall-clock seconds for all passes.
    pub elapsed_s: f64,
    /// The curves of the source and of the master, for the plots of loudness over time and of
    /// the spectrum (absent from reports written before lathe measured them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plots: Option<TrackPlots>,
    /// With `[restore] auto = true`: the defects detected in the source and which restorers ran
    /// because of them, with their settings and the reasons (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_plan: Option<RestorePlan>,
}
