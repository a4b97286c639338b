//! A catalogue delivery as a graph of tasks: the unit of work a farm worker (or a local thread) runs.
//!
//! ```text
//! measure(track)          the source's 400 ms loudness blocks and its plot curves   (every album track)
//! measure_chain(track)    the chain's output loudness and true peak                 (album mode, no limiter)
//! render(track, outlet)   master_track with the outlet's profile (+ lossy encode and check)
//! assemble(album, outlet) CD image + CUE + DDP, or vinyl sides, from the float masters
//! ```
//!
//! [`DeliveryPlan::of`] plans a catalogue on the machine that holds it (profiles loaded, source
//! rates read); every [`Work`] is then self-contained (profiles inline, no catalogue paths), so a
//! worker on another host needs only the source bytes and its input files. The album level plan
//! (`plan(album)` in the design) is [`resolve`]: a cheap function of the `needs` tasks' outcomes,
//! run by whoever schedules the graph just before the task is handed out. [`execute`] runs one task,
//! writing its files under an output folder at their relative delivery paths; [`write_delivery`]
//! turns the outcomes into `delivery.json` and each album's `report.html`.
//!
//! The same functions serve `lathe master MANIFEST` (a local run of the graph) and the farm, so a
//! delivery's bytes do not depend on where its tasks ran.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::album::deliver::DeliveryManifest;
use crate::album::lossy::LossyCodec;
use crate::album::platforms::PlaybackPreview;
use crate::album::report::PlotData;
use crate::catalog::{Album, Catalogue, Outlet};
use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::render::{LevelOverride, Progress, QcVerdict, TrackFades, TrackReport};
use crate::tags::TrackTags;

/// A catalogue's delivery, planned: tasks in an order where every task comes after the tasks it
/// needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPlan {
    /// The tasks.
    pub tasks: Vec<PlannedTask>,
}

/// One task of a [`DeliveryPlan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedTask {
    /// What a person sees in a status table: `Dawn Chorus / cd / 01 Dawn`.
    pub label: String,
    /// What to do (self-contained; [`resolve`] fills in what depends on other tasks).
    pub work: Work,
    /// The catalogue source files it reads, in the order [`execute`] takes them (zero or one).
    pub sources: Vec<PathBuf>,
    /// Tasks (indexes into the plan) whose outcomes [`resolve`] reads; the task runs only after
    /// they all succeeded.
    pub needs: Vec<usize>,
    /// Tasks whose files [`execute`] reads as its `inputs`, in order (every file of each, in the
    /// order of its outcome's `files`); always a subset of `needs`.
    pub inputs_from: Vec<usize>,
}

/// What one task does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// `measure(track)`.
    Measure(MeasureWork),
    /// `measure_chain(track)`.
    MeasureChain(MeasureChainWork),
    /// `render(track, outlet)`.
    Render(Box<RenderWork>),
    /// `assemble(album, outlet)`.
    Assemble(Box<AssembleWork>),
}

impl Work {
    /// `measure`, `measure_chain`, `render` or `assemble`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Measure(_) => "measure",
            Self::MeasureChain(_) => "measure_chain",
            Self::Render(_) => "render",
            Self::Assemble(_) => "assemble",
        }
    }
}

/// `measure(track)`: the source's loudness blocks (for the album's level) and plot curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureWork {
    /// The album.
    pub album: String,
    /// The track's position in the album, from 0.
    pub track: usize,
}

/// `measure_chain(track)`: the chain's output for an album levelled with one fixed gain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureChainWork {
    /// The album.
    pub album: String,
    /// The track's position in the album, from 0.
    pub track: usize,
    /// The outlet's profile.
    pub profile: Profile,
    /// The album's chain-input gain, dB: set by [`resolve`] from the album's `measure` tasks.
    pub chain_input_gain_db: Option<f64>,
}

/// How a render's level is decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LevelSource {
    /// The track on its own (track loudness mode, loose tracks).
    Track,
    /// The album plan with `profile`: [`resolve`] sets `level` from the album's `measure` (and
    /// `measure_chain`) tasks, which are the task's `needs` in track order.
    Album {
        /// The album.
        album: String,
        /// The track's position in the album, from 0.
        track: usize,
        /// The profile the album is planned with (the outlet's).
        profile: Profile,
        /// The planned level, once resolved.
        level: Option<LevelOverride>,
        /// The plan's warnings, once resolved.
        warnings: Vec<String>,
    },
}

/// `render(track, outlet)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderWork {
    /// The album (`None`: a loose track).
    pub album: Option<String>,
    /// The outlet.
    pub outlet: Outlet,
    /// A lossy encode of the rendered float master, checked after decoding.
    pub codec: Option<LossyCodec>,
    /// The profile to render with.
    pub profile: Profile,
    /// Tags written into the delivered file.
    pub tags: TrackTags,
    /// Fades.
    pub fades: Option<TrackFades>,
    /// The level.
    pub level: LevelSource,
    /// The file's path relative to the delivery folder (`/`-separated).
    pub path: String,
    /// `false` for an intermediate (a float master an `assemble` task reads).
    pub delivered: bool,
    /// Measure the master's plot curves for the album report.
    pub plot: bool,
}

/// `assemble(album, outlet)`: a continuous programme from float masters (the task's inputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssembleWork {
    /// The album (its tracks' file paths are not read).
    pub album: Album,
    /// [`Outlet::Cd`] or [`Outlet::Vinyl`].
    pub outlet: Outlet,
    /// The outlet's profile (its ceiling and dither).
    pub profile: Profile,
    /// The masters' reports (dither seeds, rates), set by [`resolve`] from the `needs` renders.
    pub masters: Vec<TrackReport>,
}

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
    /// `track`, `album_image`, `cue_sheet`, `ddp`, `side`, `float_master`.
    pub kind: String,
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

/// A source's figures from `measure`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMeasurement {
    /// Integrated loudness, LUFS (`None`: silent).
    pub integrated_lufs: Option<f64>,
    /// BS.1770 weighted mean-square energy of every 400 ms gating block (75 % overlap): the
    /// album's loudness is gated over all its tracks' blocks at once.
    pub gating_blocks: Vec<f64>,
}

/// The chain's output figures from `measure_chain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainFigures {
    /// Integrated loudness, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// The gating blocks, as in [`SourceMeasurement`].
    pub gating_blocks: Vec<f64>,
}

impl DeliveryPlan {
    /// Plans `catalogue`: loads its profiles and reads its sources' rates.
    ///
    /// # Errors
    /// A profile that cannot be loaded, a source that cannot be opened.
    pub fn of(catalogue: &Catalogue) -> Result<Self> {
        let _ = catalogue;
        Err(not_yet())
    }
}

/// Fills in what `work` takes from the outcomes of its `needs` (in the order of `needs`): the
/// album's level plan, the chain-input gain, the masters' reports.
///
/// # Errors
/// [`Error::Delivery`] when the outcomes do not hold what the plan needs (e.g. a silent album).
pub fn resolve(work: &Work, needs: &[&TaskOutcome]) -> Result<Work> {
    let _ = needs;
    Ok(work.clone())
}

/// Runs one resolved task: reads `sources` (catalogue files, as the plan lists them) and `inputs`
/// (files of its `inputs_from` tasks), writes its files under `out` at their paths.
///
/// # Errors
/// Any engine error; nothing is left at a file's final path when the task fails.
pub fn execute(
    work: &Work,
    sources: &[PathBuf],
    inputs: &[PathBuf],
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<TaskOutcome> {
    let _ = (work, sources, inputs, out, progress);
    Err(not_yet())
}

/// Writes `out/delivery.json` and each album's `report.html` from the outcomes of `plan`'s tasks
/// (same order; `Err` holds a failed task's error), checksumming the delivered files under `out`.
///
/// # Errors
/// The manifest or a report cannot be written.
pub fn write_delivery(
    catalogue: &Catalogue,
    plan: &DeliveryPlan,
    outcomes: &[std::result::Result<TaskOutcome, String>],
    out: &Path,
) -> Result<DeliveryManifest> {
    let _ = (catalogue, plan, outcomes, out);
    Err(not_yet())
}

fn not_yet() -> Error {
    Error::Delivery {
        album: String::new(),
        reason: "not built yet".to_owned(),
    }
}
