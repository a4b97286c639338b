//! The job-level `report.json` that `lathe master` writes (and `lathe fetch`, in the same shape): each
//! track's outcome, its levels and QC.

use std::path::{Path, PathBuf};

use lathe_engine::atomic_file::write_atomically;
use lathe_model::level_rule::LevelRule;
use lathe_model::report::TrackReport;
use serde::Serialize;

/// The job-level `report.json` (`lathe fetch` writes the same shape).
#[derive(Debug, Serialize)]
pub(crate) struct JobReport {
    lathe_version: &'static str,
    profile: String,
    jobs: usize,
    /// The job's time in seconds.
    pub(crate) elapsed_s: f64,
    /// Tracks mastered with QC passed.
    pub(crate) succeeded: usize,
    /// Tracks that failed or did not pass QC.
    pub(crate) failed: usize,
    /// Each track's outcome, in input order.
    pub(crate) tracks: Vec<TrackOutcome>,
}

/// One track's outcome in the job report.
#[derive(Debug, Serialize)]
pub(crate) struct TrackOutcome {
    input: PathBuf,
    output: PathBuf,
    status: &'static str,
    error: Option<String>,
    integrated_lufs: Option<f64>,
    true_peak_dbtp: Option<f64>,
    gain_db: Option<f64>,
    /// How the level was set (`None` for a failed track).
    level_rule: Option<LevelRule>,
    qc_issues: Vec<String>,
    /// The track report's warnings (e.g. how a silent or very short track was mastered).
    notes: Vec<String>,
    elapsed_s: f64,
}

impl TrackOutcome {
    /// A mastered track (status `ok`, or `qc_failed` when its QC did not pass).
    pub(crate) fn mastered(
        input: &Path,
        output: &Path,
        report: &TrackReport,
        elapsed_s: f64,
    ) -> Self {
        Self {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
            status: if report.qc.passed { "ok" } else { "qc_failed" },
            error: None,
            integrated_lufs: report.output_analysis.integrated_lufs,
            true_peak_dbtp: report.output_analysis.true_peak_dbtp,
            gain_db: Some(report.chain_input_gain_db + report.gain_db),
            level_rule: Some(report.level_rule),
            qc_issues: report.qc.issues.clone(),
            notes: report.warnings.clone(),
            elapsed_s,
        }
    }

    /// A track that failed with `error`.
    pub(crate) fn failed(input: &Path, output: &Path, error: String, elapsed_s: f64) -> Self {
        Self {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
            status: "failed",
            error: Some(error),
            integrated_lufs: None,
            true_peak_dbtp: None,
            gain_db: None,
            level_rule: None,
            qc_issues: Vec::new(),
            notes: Vec::new(),
            elapsed_s,
        }
    }
}

impl JobReport {
    /// The report of `tracks` mastered with `profile` by `jobs` workers in `elapsed_s` seconds.
    pub(crate) fn new(
        profile: &str,
        jobs: usize,
        elapsed_s: f64,
        tracks: Vec<TrackOutcome>,
    ) -> Self {
        let failed = tracks.iter().filter(|o| o.status != "ok").count();
        Self {
            lathe_version: env!("CARGO_PKG_VERSION"),
            profile: profile.to_owned(),
            jobs,
            elapsed_s,
            succeeded: tracks.len() - failed,
            failed,
            tracks,
        }
    }

    /// Writes it as `OUT/report.json`.
    pub(crate) fn write(&self, out: &Path) -> anyhow::Result<()> {
        write_atomically(
            &out.join("report.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }
}
