//! What a task produced: its files (at relative delivery paths) and figures, small JSON.

use serde::{Deserialize, Serialize};

use crate::album_level::{ChainFigures, SourceMeasurement};
use crate::platforms::PlaybackPreview;
use crate::plot::PlotData;
use crate::report::{QcVerdict, TrackReport};

/// What a task produced: its files (written under the output folder at `path`) and figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Files written, relative to the output folder.
    pub files: Vec<OutcomeFile>,
    /// `measure`: the source's figures.
    pub source: Option<SourceMeasurement>,
    /// `measure_chain`: the chain's figures.
    pub chain: Option<ChainFigures>,
    /// `render`: the master's report.
    pub report: Option<TrackReport>,
    /// Plot curves (`measure`: the source's; `render` with `plot`: the master's).
    pub plot: Option<PlotData>,
    /// Album-level notes (Red Book problems, side lengths, the album plan's warnings).
    pub notes: Vec<String>,
}

/// One file a task wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeFile {
    /// Path relative to the delivery folder, `/`-separated.
    pub path: String,
    /// `false` for an intermediate another task reads (not delivered).
    pub delivered: bool,
    /// What the file is.
    pub kind: OutcomeKind,
    /// Duration, seconds (audio files).
    pub duration_s: Option<f64>,
    /// Integrated loudness as decoded, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak as decoded, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// The delivery check.
    pub qc: QcVerdict,
    /// The streaming platforms' normalisation (streaming outlet).
    pub platforms: Vec<PlaybackPreview>,
    /// What the engineer should know about this file.
    pub notes: Vec<String>,
}

/// What a file a task wrote is (serialised in snake case: `track`, `album_image`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A delivered track master (a per-track outlet, or a CD/vinyl single).
    Track,
    /// A 32-bit float master another task reads (not delivered).
    FloatMaster,
    /// A CD's continuous image (WAV).
    AlbumImage,
    /// A CD's CUE sheet.
    CueSheet,
    /// One of a CD's DDP files.
    Ddp,
    /// A vinyl side (WAV).
    Side,
}

impl OutcomeKind {
    /// The name used in manifests and JSON: `track`, `float_master`, `album_image`, `cue_sheet`,
    /// `ddp` or `side`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::FloatMaster => "float_master",
            Self::AlbumImage => "album_image",
            Self::CueSheet => "cue_sheet",
            Self::Ddp => "ddp",
            Self::Side => "side",
        }
    }
}
