//! What a finished task's stored report says, for the dashboard: a track of a folder job keeps the
//! engine's `TrackReport` as its `report_json`, a task of a graph (album) job the model's
//! `TaskOutcome` (whose `render` tasks carry the track report and the master's plot curves, and
//! whose `measure` tasks the source's curves).

use lathe_model::delivery::outcome::TaskOutcome;
use lathe_model::report::TrackReport;

/// A task's stored report, read.
#[derive(Debug, Clone)]
pub enum StoredReport {
    /// None stored (the task has not succeeded).
    Empty,
    /// A folder job's track: the engine's report.
    Track(Box<TrackReport>),
    /// A graph job's task: its outcome.
    Outcome(Box<TaskOutcome>),
    /// Stored but not in a form this coordinator reads (shown raw); the reason.
    Unreadable(String),
}

/// The figures a task's row shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RowFigures {
    /// The source's integrated loudness, LUFS.
    pub input_lufs: Option<f64>,
    /// The master's integrated loudness, LUFS.
    pub output_lufs: Option<f64>,
    /// The master's true peak, dBTP.
    pub output_true_peak_dbtp: Option<f64>,
    /// The delivery check passed; `None` when there was none.
    pub qc_passed: Option<bool>,
}

impl StoredReport {
    /// Reads `report_json` as a task outcome, else as a track report.
    pub fn read(report_json: &str) -> Self {
        if report_json.trim().is_empty() {
            return Self::Empty;
        }
        match serde_json::from_str::<TaskOutcome>(report_json) {
            Ok(outcome) => Self::Outcome(Box::new(outcome)),
            Err(_) => match serde_json::from_str::<TrackReport>(report_json) {
                Ok(report) => Self::Track(Box::new(report)),
                Err(error) => Self::Unreadable(error.to_string()),
            },
        }
    }

    /// The track report, where there is one (a folder job's track, an album's `render`).
    pub fn track(&self) -> Option<&TrackReport> {
        match self {
            Self::Track(report) => Some(report),
            Self::Outcome(outcome) => outcome.report.as_ref(),
            Self::Empty | Self::Unreadable(_) => None,
        }
    }

    /// The figures of a task's row.
    pub fn row_figures(&self) -> RowFigures {
        if let Some(report) = self.track() {
            return RowFigures {
                input_lufs: report.input_analysis.integrated_lufs,
                output_lufs: report.output_analysis.integrated_lufs,
                output_true_peak_dbtp: report.output_analysis.true_peak_dbtp,
                qc_passed: Some(report.qc.passed),
            };
        }
        let Self::Outcome(outcome) = self else {
            return RowFigures::default();
        };
        let first_file = outcome.files.iter().find(|file| file.delivered);
        RowFigures {
            input_lufs: outcome
                .source
                .as_ref()
                .and_then(|source| source.level_lufs()),
            output_lufs: first_file.and_then(|file| file.integrated_lufs),
            output_true_peak_dbtp: first_file.and_then(|file| file.true_peak_dbtp),
            qc_passed: (!outcome.files.is_empty())
                .then(|| outcome.files.iter().all(|file| file.qc.passed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACK_REPORT: &str = include_str!("../testing/track_report.json");

    #[test]
    fn a_folder_jobs_track_report_gives_its_row() {
        let report = StoredReport::read(TRACK_REPORT);
        assert!(matches!(report, StoredReport::Track(_)), "{report:?}");
        let figures = report.row_figures();
        assert!((figures.input_lufs.unwrap_or(0.0) + 10.0).abs() < 0.01);
        assert!((figures.output_lufs.unwrap_or(0.0) + 14.04).abs() < 0.01);
        assert!((figures.output_true_peak_dbtp.unwrap_or(0.0) + 1.05).abs() < 0.01);
        assert_eq!(figures.qc_passed, Some(true));
    }

    #[test]
    fn an_outcome_is_read_as_one_and_garbage_is_unreadable() {
        let outcome = serde_json::to_string(&TaskOutcome::default()).expect("outcome");
        assert!(matches!(
            StoredReport::read(&outcome),
            StoredReport::Outcome(_)
        ));
        assert!(matches!(StoredReport::read(""), StoredReport::Empty));
        assert!(matches!(
            StoredReport::read("{\"not\": \"a report\"}"),
            StoredReport::Unreadable(_)
        ));
    }
}
