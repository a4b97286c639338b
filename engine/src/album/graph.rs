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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::album::gain::{ChainFigures, SourceMeasurement};

use crate::album::codec_headroom::{CheckedLossyMaster, render_under_ceiling};
use crate::album::cue::{CD_FRAME_SAMPLES, CD_SAMPLE_RATE_HZ, CdLayout, CdTrack};
use crate::album::ddp::{DDP_FILES, write_ddp};
use crate::album::deliver::{
    AlbumSummary, DeliveredFile, DeliveryManifest, Programme, album_seed, bext_for, file_digests,
    file_name_for, master_frames, outlet_profile, profile_dither, render_programme,
    single_format_issues,
};
use crate::album::gain::{
    album_input, measure_source, measure_source_chain, needs_chain_figures, plan_from_measurements,
};
use crate::album::lossy::LossyCodec;
use crate::album::platforms::{PlaybackPreview, preview};
use crate::album::report::{self, PlotData, ReportTrack};
use crate::album::sequence::{self, Placement, SequenceInput};
use crate::album::vinyl;
use crate::atomic_file::{temp_path_for, write_atomically};
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::render::{MasterRequest, Progress, master_track};
use crate::tags::{BroadcastExtension, write_tags, write_tags_with_bext};
use lathe_model::catalog::{Album, Catalogue, LoudnessMode, Outlet};
use lathe_model::level::{LevelOverride, TrackFades};
use lathe_model::profile::Profile;
use lathe_model::report::{QcVerdict, TrackReport};
use lathe_model::stage_config::Container;
use lathe_model::stage_config::DitherMode;
use lathe_model::tags::TrackTags;

/// The folder, inside the output folder, for intermediates (float masters, staged files).
pub const WORK_FOLDER: &str = ".lathe-work";

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
    MeasureChain(Box<MeasureChainWork>),
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
        profile: Box<Profile>,
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
    /// The track's position in its album, or among the loose tracks, from 0.
    pub track: usize,
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

impl DeliveryPlan {
    /// Plans `catalogue`: loads its profiles and reads its sources' rates (a source that cannot be
    /// opened fails in its own tasks, not here).
    ///
    /// # Errors
    /// A profile that cannot be loaded.
    pub fn of(catalogue: &Catalogue) -> Result<Self> {
        let mut planner = Planner {
            catalogue,
            job_profile: Profile::load(&catalogue.profile_for(None))?,
            tasks: Vec::new(),
        };
        for album in &catalogue.albums {
            planner.album(album)?;
        }
        planner.loose_tracks()?;
        Ok(Self {
            tasks: planner.tasks,
        })
    }
}

/// The tags of an album's track `index`.
fn album_track_tags(album: &Album, index: usize) -> TrackTags {
    let track = &album.tracks[index];
    TrackTags {
        title: Some(track.title.clone()),
        artist: Some(track.artist.clone().unwrap_or_else(|| album.artist.clone())),
        album: Some(album.title.clone()),
        album_artist: Some(album.album_artist().to_owned()),
        track_number: Some(index as u32 + 1),
        track_total: Some(album.tracks.len() as u32),
        disc_number: Some(track.disc),
        year: album.year,
        genre: album.genre.clone(),
        composer: track.composer.clone(),
        isrc: track.isrc.clone(),
        upc: album.upc.clone(),
        copyright: album.copyright.clone(),
        label: album.label.clone(),
    }
}

/// The file stem of an album's track `index`: `01 Dawn`.
fn album_track_name(album: &Album, index: usize) -> String {
    format!(
        "{:02} {}",
        index + 1,
        file_name_for(&album.tracks[index].title)
    )
}

/// A track to render, as the planner sees it.
struct TrackPlan {
    source: PathBuf,
    name: String,
    tags: TrackTags,
    fades: Option<TrackFades>,
    profile: Option<String>,
}

/// Where an outlet's renders go and how they are levelled.
struct OutletRenders<'a> {
    album: Option<&'a Album>,
    outlet: Outlet,
    codec: Option<LossyCodec>,
    profile: &'a Profile,
    use_track_profiles: bool,
    /// The folder under the delivery folder, `/`-separated.
    folder: String,
    extension: &'static str,
    delivered: bool,
    plot: bool,
}

struct Planner<'a> {
    catalogue: &'a Catalogue,
    job_profile: Profile,
    tasks: Vec<PlannedTask>,
}

impl Planner<'_> {
    fn push(&mut self, task: PlannedTask) -> usize {
        self.tasks.push(task);
        self.tasks.len() - 1
    }

    fn album(&mut self, album: &Album) -> Result<()> {
        let folder = file_name_for(&album.title);
        let tracks: Vec<TrackPlan> = album
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| TrackPlan {
                source: t.file.clone(),
                name: album_track_name(album, i),
                tags: album_track_tags(album, i),
                fades: TrackFades::of(t.fade_in_s, t.fade_out_s, t.fade_curve),
                profile: t.profile.clone(),
            })
            .collect();
        let measures: Vec<usize> = tracks
            .iter()
            .enumerate()
            .map(|(i, track)| {
                self.push(PlannedTask {
                    label: format!("{} / measure / {}", album.title, track.name),
                    work: Work::Measure(MeasureWork {
                        album: album.title.clone(),
                        track: i,
                    }),
                    sources: vec![track.source.clone()],
                    needs: Vec::new(),
                    inputs_from: Vec::new(),
                })
            })
            .collect();
        for (position, &outlet) in self.catalogue.job.outlets.iter().enumerate() {
            let plot = position == 0;
            match outlet {
                Outlet::Cd | Outlet::Vinyl => {
                    let mut profile = outlet_profile(outlet, &self.job_profile)?;
                    // One programme has one rate: the highest any track would be rendered at.
                    let rate_hz = tracks
                        .iter()
                        .filter_map(|t| Decoder::open(&t.source).ok())
                        .map(|d| profile.output_rate_hz(d.info().sample_rate_hz))
                        .max()
                        .unwrap_or_else(|| profile.output_rate_hz(CD_SAMPLE_RATE_HZ));
                    profile.output.sample_rate_hz = Some(rate_hz);
                    let renders = self.renders(
                        &tracks,
                        &measures,
                        &OutletRenders {
                            album: Some(album),
                            outlet,
                            codec: None,
                            profile: &profile,
                            use_track_profiles: false,
                            folder: format!("{WORK_FOLDER}/{folder}/{outlet}"),
                            extension: "wav",
                            delivered: false,
                            plot,
                        },
                    )?;
                    self.push(PlannedTask {
                        label: format!("{} / {outlet} / assemble", album.title),
                        work: Work::Assemble(Box::new(AssembleWork {
                            album: album.clone(),
                            outlet,
                            profile,
                            masters: Vec::new(),
                        })),
                        sources: Vec::new(),
                        needs: renders.clone(),
                        inputs_from: renders,
                    });
                }
                _ => {
                    self.outlet_renders(Some(album), &tracks, &measures, outlet, &folder, plot)?;
                }
            }
        }
        Ok(())
    }

    /// The renders of a per-track outlet (streaming, broadcast, hi-res, the lossy codecs; CD and
    /// vinyl singles for loose tracks).
    fn outlet_renders(
        &mut self,
        album: Option<&Album>,
        tracks: &[TrackPlan],
        measures: &[usize],
        outlet: Outlet,
        folder: &str,
        plot: bool,
    ) -> Result<()> {
        let codecs: &[LossyCodec] = match outlet {
            Outlet::Mp3 => &[LossyCodec::Mp3Cbr320, LossyCodec::Mp3V0],
            Outlet::Opus => &[LossyCodec::Opus],
            _ => &[],
        };
        if codecs.is_empty() {
            let profile = match (album, outlet) {
                // A single: the preset itself (16-bit dithered WAV for CD, 24-bit for the cut).
                (None, Outlet::Cd | Outlet::Vinyl) => Profile::preset(outlet.as_str())?,
                _ => outlet_profile(outlet, &self.job_profile)?,
            };
            self.renders(
                tracks,
                measures,
                &OutletRenders {
                    album,
                    outlet,
                    codec: None,
                    profile: &profile,
                    use_track_profiles: outlet == Outlet::Streaming,
                    folder: format!("{folder}/{outlet}"),
                    extension: profile.output.format.extension(),
                    delivered: true,
                    plot,
                },
            )?;
            return Ok(());
        }
        let profile = outlet_profile(outlet, &self.job_profile)?;
        for (i, &codec) in codecs.iter().enumerate() {
            self.renders(
                tracks,
                measures,
                &OutletRenders {
                    album,
                    outlet,
                    codec: Some(codec),
                    profile: &profile,
                    use_track_profiles: true,
                    folder: format!("{folder}/{}", codec.as_str()),
                    extension: codec.extension(),
                    delivered: true,
                    plot: plot && i == 0,
                },
            )?;
        }
        Ok(())
    }

    /// One render task per track (after the album's `measure_chain` tasks when its plan needs
    /// them); returns the renders' indexes.
    fn renders(
        &mut self,
        tracks: &[TrackPlan],
        measures: &[usize],
        spec: &OutletRenders<'_>,
    ) -> Result<Vec<usize>> {
        let album_mode = spec
            .album
            .filter(|a| a.loudness == LoudnessMode::Album && !measures.is_empty());
        let name_of = |outlet: Outlet, codec: Option<LossyCodec>| {
            codec.map_or_else(|| outlet.as_str().to_owned(), |c| c.as_str().to_owned())
        };
        let mut needs = measures.to_vec();
        if let Some(album) = album_mode
            && needs_chain_figures(spec.profile)
        {
            for (i, track) in tracks.iter().enumerate() {
                let chain = self.push(PlannedTask {
                    label: format!(
                        "{} / {} / measure chain / {}",
                        album.title,
                        name_of(spec.outlet, spec.codec),
                        track.name
                    ),
                    work: Work::MeasureChain(Box::new(MeasureChainWork {
                        album: album.title.clone(),
                        track: i,
                        profile: spec.profile.clone(),
                        chain_input_gain_db: None,
                    })),
                    sources: vec![track.source.clone()],
                    needs: measures.to_vec(),
                    inputs_from: Vec::new(),
                });
                needs.push(chain);
            }
        }
        let mut renders = Vec::with_capacity(tracks.len());
        for (i, track) in tracks.iter().enumerate() {
            let profile = match (&track.profile, spec.use_track_profiles) {
                (Some(name), true) => {
                    let mut own = Profile::load(&self.catalogue.profile_for(Some(name)))?;
                    own.output = spec.profile.output.clone();
                    own
                }
                _ => spec.profile.clone(),
            };
            let level = match album_mode {
                Some(album) => LevelSource::Album {
                    album: album.title.clone(),
                    track: i,
                    profile: Box::new(spec.profile.clone()),
                    level: None,
                    warnings: Vec::new(),
                },
                None => LevelSource::Track,
            };
            let label = match spec.album {
                Some(album) => format!(
                    "{} / {} / {}",
                    album.title,
                    name_of(spec.outlet, spec.codec),
                    track.name
                ),
                None => format!(
                    "tracks / {} / {}",
                    name_of(spec.outlet, spec.codec),
                    track.name
                ),
            };
            let index = self.push(PlannedTask {
                label,
                work: Work::Render(Box::new(RenderWork {
                    album: spec.album.map(|a| a.title.clone()),
                    track: i,
                    outlet: spec.outlet,
                    codec: spec.codec,
                    profile,
                    tags: if spec.delivered {
                        track.tags.clone()
                    } else {
                        TrackTags::default()
                    },
                    fades: track.fades,
                    level,
                    path: format!("{}/{}.{}", spec.folder, track.name, spec.extension),
                    delivered: spec.delivered,
                    plot: spec.plot,
                })),
                sources: vec![track.source.clone()],
                needs: if album_mode.is_some() {
                    needs.clone()
                } else {
                    Vec::new()
                },
                inputs_from: Vec::new(),
            });
            renders.push(index);
        }
        Ok(renders)
    }

    fn loose_tracks(&mut self) -> Result<()> {
        let tracks: Vec<TrackPlan> = self
            .catalogue
            .tracks
            .iter()
            .map(|t| TrackPlan {
                source: t.file.clone(),
                name: file_name_for(
                    &t.file
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                tags: TrackTags {
                    title: t.title.clone(),
                    artist: t.artist.clone(),
                    composer: t.composer.clone(),
                    isrc: t.isrc.clone(),
                    ..TrackTags::default()
                },
                fades: TrackFades::of(t.fade_in_s, t.fade_out_s, t.fade_curve),
                profile: t.profile.clone(),
            })
            .collect();
        if tracks.is_empty() {
            return Ok(());
        }
        for &outlet in &self.catalogue.job.outlets {
            self.outlet_renders(None, &tracks, &[], outlet, "tracks", false)?;
        }
        Ok(())
    }
}

/// The outcome of each `needs` task holding a `T`, in order.
fn gather<'a, T>(
    needs: &[&'a TaskOutcome],
    field: impl Fn(&'a TaskOutcome) -> Option<&'a T>,
) -> Vec<&'a T> {
    needs.iter().filter_map(|o| field(o)).collect()
}

/// Fills in what `work` takes from the outcomes of its `needs` (in the order of `needs`): the
/// album's level plan, the chain-input gain, the masters' reports.
///
/// # Errors
/// [`Error::Delivery`] when the outcomes do not hold what the plan needs (e.g. a silent album).
pub fn resolve(work: &Work, needs: &[&TaskOutcome]) -> Result<Work> {
    let mut resolved = work.clone();
    let sources = gather(needs, |o| o.source.as_ref());
    match &mut resolved {
        Work::Measure(_) => {}
        Work::MeasureChain(chain) => {
            let (_, gain_db) = album_input(&sources, &chain.profile);
            chain.chain_input_gain_db = Some(gain_db);
        }
        Work::Render(render) => {
            if let LevelSource::Album {
                album,
                track,
                profile,
                level,
                warnings,
            } = &mut render.level
            {
                let chains = gather(needs, |o| o.chain.as_ref());
                let plan = plan_from_measurements(album, profile, &sources, &chains)?;
                let planned = plan.tracks.get(*track).ok_or_else(|| Error::Delivery {
                    album: album.clone(),
                    reason: format!("the plan has no track {}", *track + 1),
                })?;
                *level = Some(planned.level);
                *warnings = plan
                    .warnings
                    .iter()
                    .map(|w| format!("{}: {w}", profile.name))
                    .collect();
            }
        }
        Work::Assemble(assemble) => {
            assemble.masters = gather(needs, |o| o.report.as_ref())
                .into_iter()
                .cloned()
                .collect();
        }
    }
    Ok(resolved)
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
    progress: &mut dyn FnMut(Progress) -> std::ops::ControlFlow<()>,
) -> Result<TaskOutcome> {
    let source = || {
        sources.first().ok_or_else(|| Error::Delivery {
            album: String::new(),
            reason: format!("a {} task needs its source", work.kind()),
        })
    };
    match work {
        Work::Measure(_) => {
            let path = source()?;
            Ok(TaskOutcome {
                source: Some(measure_source(path)?),
                plot: Some(report::measure(path)?),
                ..TaskOutcome::default()
            })
        }
        Work::MeasureChain(chain) => {
            let gain_db = chain.chain_input_gain_db.ok_or_else(|| Error::Delivery {
                album: chain.album.clone(),
                reason: "the chain measurement has no album gain (not resolved)".to_owned(),
            })?;
            Ok(TaskOutcome {
                chain: Some(measure_source_chain(source()?, &chain.profile, gain_db)?),
                ..TaskOutcome::default()
            })
        }
        Work::Render(render) => match render.codec {
            None => render_master(render, source()?, out, progress),
            Some(codec) => render_lossy(render, codec, source()?, out, progress),
        },
        Work::Assemble(assemble) => match assemble.outlet {
            Outlet::Cd => assemble_cd(assemble, inputs, out),
            Outlet::Vinyl => assemble_vinyl(assemble, inputs, out),
            other => Err(Error::Delivery {
                album: assemble.album.title.clone(),
                reason: format!("the {other} outlet is not assembled"),
            }),
        },
    }
}

/// A relative delivery path under `out`, its folder made.
fn place(out: &Path, relative: &str) -> Result<PathBuf> {
    let path = out.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    Ok(path)
}

/// A file's path relative to `out`, `/`-separated.
fn relative_to(out: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(out).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl RenderWork {
    fn level_override(&self) -> Result<(Option<LevelOverride>, &[String])> {
        match &self.level {
            LevelSource::Track => Ok((None, &[])),
            LevelSource::Album {
                album,
                level,
                warnings,
                ..
            } => match level {
                Some(level) => Ok((Some(*level), warnings)),
                None => Err(Error::Delivery {
                    album: album.clone(),
                    reason: "the album level is not planned yet (not resolved)".to_owned(),
                }),
            },
        }
    }

    fn request<'a>(
        &'a self,
        source: &'a Path,
        output: &'a Path,
        profile: &'a Profile,
        level: Option<LevelOverride>,
    ) -> MasterRequest<'a> {
        MasterRequest {
            input: source,
            output,
            profile,
            tags: self.tags.clone(),
            level,
            fades: self.fades,
        }
    }
}

/// A per-track master (or a float master for `assemble`).
fn render_master(
    work: &RenderWork,
    source: &Path,
    out: &Path,
    progress: &mut dyn FnMut(Progress) -> std::ops::ControlFlow<()>,
) -> Result<TaskOutcome> {
    let (level, warnings) = work.level_override()?;
    let final_path = place(out, &work.path)?;
    // Rendered under the work folder, tagged there, then renamed into place.
    let staged = place(out, &format!("{WORK_FOLDER}/staging/{}", work.path))?;
    let result = (|| {
        let report = master_track(
            &work.request(source, &staged, &work.profile, level),
            progress,
        )?;
        if work.delivered && work.profile.output.format == Container::Wav {
            let bext = bext_for(&work.tags, &report, &work.profile);
            write_tags_with_bext(&staged, &work.tags, Some(&bext))?;
        }
        std::fs::rename(&staged, &final_path).map_err(|e| Error::io(&final_path, e))?;
        Ok(report)
    })();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    let a = &report.output_analysis;
    let platforms = match (work.outlet, a.integrated_lufs, a.true_peak_dbtp) {
        (Outlet::Streaming, Some(l), Some(p)) => preview(l, p),
        _ => Vec::new(),
    };
    let mut qc = report.qc.clone();
    if work.album.is_none() {
        let title = work
            .tags
            .title
            .clone()
            .unwrap_or_else(|| file_stem(&work.path));
        qc.issues
            .extend(single_format_issues(work.outlet, &title, a.duration_s));
        qc.passed = qc.issues.is_empty();
    }
    let plot = if work.plot {
        Some(report::measure(&final_path)?)
    } else {
        None
    };
    let (notes, album_notes) = if work.delivered {
        (
            report.warnings.iter().chain(warnings).cloned().collect(),
            Vec::new(),
        )
    } else {
        (report.warnings.clone(), warnings.to_vec())
    };
    Ok(TaskOutcome {
        files: vec![OutcomeFile {
            path: work.path.clone(),
            delivered: work.delivered,
            kind: if work.delivered {
                "track"
            } else {
                "float_master"
            }
            .to_owned(),
            duration_s: Some(a.duration_s),
            integrated_lufs: a.integrated_lufs,
            true_peak_dbtp: a.true_peak_dbtp,
            qc,
            platforms,
            notes,
        }],
        report: Some(report),
        plot,
        notes: album_notes,
        ..TaskOutcome::default()
    })
}

fn file_stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A lossy deliverable: a float master, encoded, decoded and checked against the ceiling; rendered
/// again with more headroom while the codec pushes it over ([`render_under_ceiling`]).
fn render_lossy(
    work: &RenderWork,
    codec: LossyCodec,
    source: &Path,
    out: &Path,
    progress: &mut dyn FnMut(Progress) -> std::ops::ControlFlow<()>,
) -> Result<TaskOutcome> {
    let (level, warnings) = work.level_override()?;
    let ceiling = work.profile.loudness.ceiling_dbtp;
    let output = place(out, &work.path)?;
    let master = place(out, &format!("{WORK_FOLDER}/lossy/{}.wav", work.path))?;
    let temp = temp_path_for(&output);
    let mut request = work.request(source, &master, &work.profile, level);
    request.tags = TrackTags::default();
    let checked = render_under_ceiling(codec, &request, &temp, progress)?;
    let finished = write_tags(&temp, &work.tags)
        .and_then(|()| std::fs::rename(&temp, &output).map_err(|e| Error::io(&output, e)));
    let plot = if work.plot {
        report::measure(&master).map(Some)
    } else {
        Ok(None)
    };
    let _ = std::fs::remove_file(&master);
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let CheckedLossyMaster {
        report,
        figures,
        frames,
        tries,
    } = &checked;
    let peak = checked.decoded_true_peak_dbtp();
    let headroom_db = checked.headroom_db(ceiling);
    let mut notes: Vec<String> = tries
        .windows(2)
        .map(|pair| {
            format!(
                "{}: decoded true peak {:.2} dBTP over the {ceiling} dBTP ceiling; re-rendered with {:.2} dB more headroom",
                codec.as_str(),
                pair[0].decoded_true_peak_dbtp,
                pair[0].ceiling_dbtp - pair[1].ceiling_dbtp,
            )
        })
        .collect();
    let rate = if codec == LossyCodec::Opus {
        48_000.0
    } else {
        f64::from(report.output_sample_rate_hz)
    };
    let mut issues = Vec::new();
    if peak > ceiling {
        issues.push(format!(
            "decoded true peak {peak:.2} dBTP is over the {ceiling} dBTP ceiling after {} renders (the last limited to {:.2} dBTP)",
            tries.len(),
            ceiling - headroom_db
        ));
    }
    match (report.target_lufs, figures.integrated_lufs) {
        (Some(t), Some(l)) if (l - t).abs() > crate::render::QC_LOUDNESS_TOLERANCE_LU => {
            issues.push(format!("decoded loudness {l:.2} LUFS misses {t:.2} LUFS"));
        }
        // A track too short to gate has no integrated loudness even when it sounds.
        (Some(t), None)
            if report.level_rule == lathe_model::level_rule::LevelRule::IntegratedLoudness =>
        {
            issues.push(format!(
                "decodes to silence (under the -70 LUFS gate), not {t:.2} LUFS"
            ));
        }
        _ => {}
    }
    if headroom_db > 0.0 {
        notes.push(format!(
            "{}: codec-aware limiting: rendered with a {:.2} dBTP ceiling ({headroom_db:.2} dB of extra headroom, {} renders)",
            codec.as_str(),
            ceiling - headroom_db,
            tries.len()
        ));
    }
    notes.extend(warnings.iter().cloned());
    Ok(TaskOutcome {
        files: vec![OutcomeFile {
            path: work.path.clone(),
            delivered: true,
            kind: "track".to_owned(),
            duration_s: Some(*frames as f64 / rate),
            integrated_lufs: figures.integrated_lufs,
            true_peak_dbtp: Some(peak),
            qc: QcVerdict {
                passed: issues.is_empty(),
                issues,
            },
            platforms: Vec::new(),
            notes,
        }],
        report: Some(checked.report),
        plot: plot?,
        ..TaskOutcome::default()
    })
}

/// An audio file an `assemble` task wrote, with its figures.
fn programme_file(
    out: &Path,
    path: &Path,
    kind: &str,
    analysis: &lathe_model::analysis::Analysis,
    issues: Vec<String>,
    notes: Vec<String>,
) -> OutcomeFile {
    OutcomeFile {
        path: relative_to(out, path),
        delivered: true,
        kind: kind.to_owned(),
        duration_s: Some(analysis.duration_s),
        integrated_lufs: analysis.integrated_lufs,
        true_peak_dbtp: analysis.true_peak_dbtp,
        qc: QcVerdict {
            passed: issues.is_empty(),
            issues,
        },
        platforms: Vec::new(),
        notes,
    }
}

/// A file an `assemble` task wrote that is not audio (CUE sheet, DDP stream).
fn paperwork_file(out: &Path, path: &Path, kind: &str, qc: &QcVerdict) -> OutcomeFile {
    OutcomeFile {
        path: relative_to(out, path),
        delivered: true,
        kind: kind.to_owned(),
        duration_s: None,
        integrated_lufs: None,
        true_peak_dbtp: None,
        qc: qc.clone(),
        platforms: Vec::new(),
        notes: Vec::new(),
    }
}

fn check_masters(work: &AssembleWork, inputs: &[PathBuf]) -> Result<()> {
    let tracks = work.album.tracks.len();
    if inputs.len() != tracks || work.masters.len() != tracks {
        return Err(Error::Delivery {
            album: work.album.title.clone(),
            reason: format!(
                "{} needs {tracks} float masters and reports, has {} and {}",
                work.outlet,
                inputs.len(),
                work.masters.len()
            ),
        });
    }
    Ok(())
}

/// The CD image (16-bit, dithered once), its CUE sheet and the DDP image.
fn assemble_cd(work: &AssembleWork, inputs: &[PathBuf], out: &Path) -> Result<TaskOutcome> {
    check_masters(work, inputs)?;
    let album = &work.album;
    let sequence_inputs: Vec<SequenceInput> = album
        .tracks
        .iter()
        .zip(inputs)
        .map(|(t, path)| {
            Ok(SequenceInput {
                frames: master_frames(path)?,
                gap_s: t.effective_gap_s(),
                crossfade_s: t.crossfade_s,
            })
        })
        .collect::<Result<_>>()?;
    let (placements, total) = sequence::plan(&sequence_inputs, CD_SAMPLE_RATE_HZ, CD_FRAME_SAMPLES);
    let layout = CdLayout {
        title: album.title.clone(),
        performer: album.album_artist().to_owned(),
        catalog: album.upc.clone(),
        genre: album.genre.clone(),
        year: album.year,
        tracks: album
            .tracks
            .iter()
            .zip(&placements)
            .map(|(t, p)| CdTrack {
                title: t.title.clone(),
                performer: t.artist.clone().unwrap_or_else(|| album.artist.clone()),
                songwriter: t.composer.clone(),
                isrc: t.isrc.clone(),
                placement: *p,
            })
            .collect(),
        total_samples: total,
    };
    let violations = layout.red_book_violations();
    let notes: Vec<String> = violations
        .iter()
        .map(|v| format!("Red Book: {v}"))
        .collect();
    let stem = file_name_for(&album.title);
    let image = place(out, &format!("{stem}/cd/{stem}.wav"))?;
    let tracks: Vec<(PathBuf, Placement)> = inputs
        .iter()
        .cloned()
        .zip(placements.iter().copied())
        .collect();
    let programme = Programme {
        tracks: &tracks,
        total_frames: total,
        sample_rate_hz: CD_SAMPLE_RATE_HZ,
        bit_depth: 16,
        dither: profile_dither(&work.profile),
        seed: album_seed(&work.masters),
    };
    let analysis = render_programme(
        &programme,
        &image,
        &TrackTags {
            title: Some(album.title.clone()),
            artist: Some(album.album_artist().to_owned()),
            album: Some(album.title.clone()),
            year: album.year,
            genre: album.genre.clone(),
            upc: album.upc.clone(),
            copyright: album.copyright.clone(),
            label: album.label.clone(),
            ..TrackTags::default()
        },
    )?;
    let ceiling = work.profile.loudness.ceiling_dbtp;
    let mut issues = violations.clone();
    if let Some(peak) = analysis.true_peak_dbtp
        && peak > ceiling
    {
        issues.push(format!(
            "true peak {peak:.2} dBTP is over the {ceiling} dBTP ceiling (crossfades add up)"
        ));
    }
    let mut files = vec![programme_file(
        out,
        &image,
        "album_image",
        &analysis,
        issues,
        Vec::new(),
    )];
    let cue = image.with_extension("cue");
    write_atomically(&cue, layout.cue_sheet(&format!("{stem}.wav")).as_bytes())?;
    let paperwork = QcVerdict {
        passed: violations.is_empty(),
        issues: violations,
    };
    files.push(paperwork_file(out, &cue, "cue_sheet", &paperwork));
    let ddp = place(out, &format!("{stem}/cd/ddp/DDPID"))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    write_ddp(&ddp, &layout, &image)?;
    for name in DDP_FILES {
        files.push(paperwork_file(out, &ddp.join(name), "ddp", &paperwork));
    }
    Ok(TaskOutcome {
        files,
        notes,
        ..TaskOutcome::default()
    })
}

/// One 24-bit WAV per side, with its length checked against the format.
fn assemble_vinyl(work: &AssembleWork, inputs: &[PathBuf], out: &Path) -> Result<TaskOutcome> {
    check_masters(work, inputs)?;
    let album = &work.album;
    let stem = file_name_for(&album.title);
    let mut sides: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, track) in album.tracks.iter().enumerate() {
        sides.entry(track.side().to_owned()).or_default().push(i);
    }
    let mut outcome = TaskOutcome::default();
    for (side, indexes) in sides {
        let sequence_inputs: Vec<SequenceInput> = indexes
            .iter()
            .map(|&i| {
                Ok(SequenceInput {
                    frames: master_frames(&inputs[i])?,
                    gap_s: album.tracks[i].effective_gap_s(),
                    crossfade_s: album.tracks[i].crossfade_s,
                })
            })
            .collect::<Result<_>>()?;
        let rate = work.masters[indexes[0]].output_sample_rate_hz;
        let (placements, total) = sequence::plan(&sequence_inputs, rate, 1);
        let tracks: Vec<(PathBuf, Placement)> = indexes
            .iter()
            .map(|&i| inputs[i].clone())
            .zip(placements)
            .collect();
        let path = place(
            out,
            &format!("{stem}/vinyl/Side {}.wav", file_name_for(&side)),
        )?;
        let side_masters: Vec<TrackReport> =
            indexes.iter().map(|&i| work.masters[i].clone()).collect();
        let tags = TrackTags {
            title: Some(format!("{} (side {side})", album.title)),
            artist: Some(album.album_artist().to_owned()),
            album: Some(album.title.clone()),
            ..TrackTags::default()
        };
        let programme = Programme {
            tracks: &tracks,
            total_frames: total,
            sample_rate_hz: rate,
            bit_depth: 24,
            dither: DitherMode::Tpdf,
            seed: album_seed(&side_masters),
        };
        let analysis = render_programme(&programme, &path, &tags)?;
        let length_s = total as f64 / f64::from(rate);
        let mut side_notes = Vec::new();
        if let Some(warning) = vinyl::side_length_warning(&side, length_s, album.vinyl_format) {
            side_notes.push(warning.clone());
            outcome.notes.push(warning);
        }
        let ceiling = work.profile.loudness.ceiling_dbtp;
        let mut issues = Vec::new();
        if let Some(peak) = analysis.true_peak_dbtp
            && peak > ceiling
        {
            issues.push(format!(
                "true peak {peak:.2} dBTP is over the {ceiling} dBTP ceiling"
            ));
        }
        let bext = BroadcastExtension {
            description: format!("{} side {side}", album.title),
            originator: format!("lathe {}", env!("CARGO_PKG_VERSION")),
            loudness_value_lufs: analysis.integrated_lufs,
            loudness_range_lu: analysis.loudness_range_lu,
            max_true_peak_dbtp: analysis.true_peak_dbtp,
            max_momentary_lufs: analysis.max_momentary_lufs,
            max_short_term_lufs: analysis.max_short_term_lufs,
            coding_history: format!("A=PCM,F={rate},W=24,T=lathe vinyl side\r\n"),
            ..BroadcastExtension::default()
        };
        write_tags_with_bext(&path, &tags, Some(&bext))?;
        outcome.files.push(programme_file(
            out, &path, "side", &analysis, issues, side_notes,
        ));
    }
    Ok(outcome)
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
    let mut files: Vec<DeliveredFile> = Vec::new();
    let mut failures = Vec::new();
    for (task, outcome) in plan.tasks.iter().zip(outcomes) {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                failures.push(format!("{}: {error}", task.label));
                continue;
            }
        };
        let (album, outlet) = match &task.work {
            Work::Render(r) => (r.album.clone(), r.outlet),
            Work::Assemble(a) => (Some(a.album.title.clone()), a.outlet),
            Work::Measure(_) | Work::MeasureChain(_) => continue,
        };
        for file in outcome.files.iter().filter(|f| f.delivered) {
            let path = out.join(&file.path);
            match file_digests(&path) {
                Ok((bytes, md5, sha256)) => files.push(DeliveredFile {
                    path: PathBuf::from(&file.path),
                    album: album.clone(),
                    outlet,
                    kind: file.kind.clone(),
                    bytes,
                    md5,
                    sha256,
                    duration_s: file.duration_s,
                    integrated_lufs: file.integrated_lufs,
                    true_peak_dbtp: file.true_peak_dbtp,
                    qc: file.qc.clone(),
                    platforms: file.platforms.clone(),
                    notes: file.notes.clone(),
                }),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    let mut albums = Vec::new();
    for album in &catalogue.albums {
        match album_report(catalogue, album, plan, outcomes, &files, out) {
            Ok(summary) => albums.push(summary),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let manifest = DeliveryManifest {
        lathe_version: env!("CARGO_PKG_VERSION").to_owned(),
        job: catalogue.job.name.clone(),
        outlets: catalogue.job.outlets.clone(),
        albums,
        files,
        failures,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Delivery {
        album: catalogue.job.name.clone(),
        reason: format!("manifest: {e}"),
    })?;
    write_atomically(&out.join("delivery.json"), json.as_bytes())?;
    Ok(manifest)
}

/// The album's `report.html` and its summary for the manifest.
fn album_report(
    catalogue: &Catalogue,
    album: &Album,
    plan: &DeliveryPlan,
    outcomes: &[std::result::Result<TaskOutcome, String>],
    files: &[DeliveredFile],
    out: &Path,
) -> Result<AlbumSummary> {
    let title = album.title.as_str();
    let mut before: Vec<(Option<f64>, PlotData)> =
        vec![(None, PlotData::default()); album.tracks.len()];
    let mut after: Vec<PlotData> = vec![PlotData::default(); album.tracks.len()];
    let mut notes: Vec<String> = Vec::new();
    for (task, outcome) in plan.tasks.iter().zip(outcomes) {
        let Ok(outcome) = outcome else { continue };
        match &task.work {
            Work::Measure(m) if m.album == title => {
                if let Some(slot) = before.get_mut(m.track) {
                    *slot = (
                        outcome.source.as_ref().and_then(|s| s.integrated_lufs),
                        outcome.plot.clone().unwrap_or_default(),
                    );
                }
            }
            Work::Render(r) if r.album.as_deref() == Some(title) => {
                if let (Some(plot), Some(slot)) = (&outcome.plot, after.get_mut(r.track)) {
                    *slot = plot.clone();
                }
            }
            Work::Assemble(a) if a.album.title == title => {}
            _ => continue,
        }
        for note in &outcome.notes {
            if !notes.contains(note) {
                notes.push(note.clone());
            }
        }
    }
    let album_files: Vec<&DeliveredFile> = files
        .iter()
        .filter(|f| f.album.as_deref() == Some(title))
        .collect();
    let tracks: Vec<ReportTrack> = (0..album.tracks.len())
        .map(|i| {
            let name = album_track_name(album, i);
            ReportTrack {
                after_lufs: album_files
                    .iter()
                    .find(|f| {
                        f.kind == "track"
                            && f.path
                                .file_stem()
                                .is_some_and(|s| s.to_string_lossy() == name)
                    })
                    .and_then(|f| f.integrated_lufs),
                name,
                before_lufs: before[i].0,
                before: before[i].1.clone(),
                after: after[i].clone(),
            }
        })
        .collect();
    let mut sections: Vec<(String, String)> = catalogue
        .job
        .outlets
        .iter()
        .map(|&outlet| {
            let rows: Vec<&DeliveredFile> = album_files
                .iter()
                .copied()
                .filter(|f| f.outlet == outlet)
                .collect();
            outlet_section(outlet, &rows)
        })
        .collect();
    if !notes.is_empty() {
        let rows: Vec<Vec<String>> = notes.iter().map(|n| vec![n.clone()]).collect();
        sections.push(("Notes".to_owned(), report::table(&["note"], &rows)));
    }
    let folder = out.join(file_name_for(title));
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let report_path = folder.join("report.html");
    write_atomically(
        &report_path,
        report::html(title, &tracks, &sections).as_bytes(),
    )?;
    Ok(AlbumSummary {
        title: album.title.clone(),
        loudness: album.loudness,
        report: report_path
            .strip_prefix(out)
            .unwrap_or(&report_path)
            .to_path_buf(),
        notes,
    })
}

/// One outlet's table in an album report.
fn outlet_section(outlet: Outlet, files: &[&DeliveredFile]) -> (String, String) {
    let level = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            let mut row = vec![
                f.path.display().to_string(),
                level(f.integrated_lufs),
                level(f.true_peak_dbtp),
                if f.qc.passed {
                    "ok".to_owned()
                } else {
                    format!("FAIL: {}", f.qc.issues.join("; "))
                },
            ];
            if outlet == Outlet::Streaming {
                row.push(
                    f.platforms
                        .iter()
                        .map(|p| {
                            format!(
                                "{} {:+.1} dB{}",
                                p.platform,
                                p.gain_db,
                                if p.into_limiter { " (limited)" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            row.push(f.notes.join("; "));
            row
        })
        .collect();
    let mut header = vec!["file", "LUFS", "dBTP", "QC"];
    if outlet == Outlet::Streaming {
        header.push("platform normalisation");
    }
    header.push("notes");
    (outlet.as_str().to_owned(), report::table(&header, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lathe_model::level::Level;

    fn catalogue(outlets: &str, loudness: &str) -> Catalogue {
        let toml = format!(
            r#"
[job]
outlets = [{outlets}]
[[album]]
title = "Night"
artist = "Band"
loudness = "{loudness}"
[[album.track]]
file = "a.wav"
title = "Loud"
[[album.track]]
file = "b.wav"
title = "Quiet"
fade_out_s = 2.0
"#
        );
        let root = std::env::temp_dir().join("lathe-graph-test-does-not-exist");
        Catalogue::from_toml(&toml, Path::new("test.toml"), &root).unwrap()
    }

    fn kinds(plan: &DeliveryPlan) -> Vec<&str> {
        plan.tasks.iter().map(|t| t.work.kind()).collect()
    }

    #[test]
    fn an_album_plans_measures_first_then_renders_then_assembles() {
        let plan = DeliveryPlan::of(&catalogue(r#""streaming", "cd", "vinyl""#, "album")).unwrap();
        // 2 measures; streaming: 2 renders; cd: 2 float masters + assemble; vinyl (no limiter):
        // 2 chain measurements, 2 float masters, assemble.
        assert_eq!(
            kinds(&plan),
            [
                "measure",
                "measure",
                "render",
                "render",
                "render",
                "render",
                "assemble",
                "measure_chain",
                "measure_chain",
                "render",
                "render",
                "assemble"
            ]
        );
        for (i, task) in plan.tasks.iter().enumerate() {
            assert!(
                task.needs.iter().all(|&n| n < i),
                "{} needs a later task",
                task.label
            );
            assert!(task.inputs_from.iter().all(|n| task.needs.contains(n)));
        }
        assert_eq!(plan.tasks[2].needs, [0, 1]);
        assert_eq!(plan.tasks[9].needs, [0, 1, 7, 8]);
        assert_eq!(plan.tasks[11].inputs_from, [9, 10]);
        let Work::Render(streaming) = &plan.tasks[3].work else {
            panic!("a render")
        };
        assert_eq!(streaming.path, "Night/streaming/02 Quiet.flac");
        assert!(streaming.delivered && streaming.plot && streaming.fades.is_some());
        let Work::Render(float) = &plan.tasks[4].work else {
            panic!("a render")
        };
        assert!(!float.delivered && float.path.starts_with(WORK_FOLDER));
        // Track mode: renders stand alone.
        let plan = DeliveryPlan::of(&catalogue(r#""streaming""#, "track")).unwrap();
        assert_eq!(kinds(&plan), ["measure", "measure", "render", "render"]);
        assert!(plan.tasks[2].needs.is_empty());
    }

    /// A measurement of a programme at a constant loudness: `blocks` gating blocks at `lufs`.
    fn steady(lufs: f64, blocks: usize) -> TaskOutcome {
        let energy = 10f64.powf((lufs + 0.691) / 10.0);
        TaskOutcome {
            source: Some(SourceMeasurement {
                integrated_lufs: Some(lufs),
                gating_blocks: vec![energy; blocks],
                ungated_lufs: Some(lufs),
            }),
            ..TaskOutcome::default()
        }
    }

    #[test]
    fn resolve_sets_each_render_the_album_plan_level() {
        let plan = DeliveryPlan::of(&catalogue(r#""streaming""#, "album")).unwrap();
        let (loud, quiet) = (steady(-10.0, 100), steady(-20.0, 100));
        let work = resolve(&plan.tasks[3].work, &[&loud, &quiet]).unwrap();
        let Work::Render(render) = work else {
            panic!("a render")
        };
        let LevelSource::Album {
            level: Some(level), ..
        } = render.level
        else {
            panic!("an album level: {:?}", render.level)
        };
        // Both tracks pass the relative gate: the album is their energy mean, -12.59 LUFS; the
        // quiet track keeps its 7.41 LU distance below the -14 LUFS target.
        let album = -0.691 + 10.0 * ((10f64.powf(-0.9309) + 10f64.powf(-1.9309)) / 2.0).log10();
        let Level::TargetLufs(target) = level.level else {
            panic!("a target: {level:?}")
        };
        assert!(
            (target - (-14.0 + (-20.0 - album))).abs() < 1e-9,
            "{target}"
        );
        assert!((level.chain_input_gain_db - (-18.0 - album)).abs() < 1e-9);
        // A track too short to gate keeps its whole-track distance from the album, which is
        // measured over the loud track's blocks alone; silence is delivered as silence.
        let short = TaskOutcome {
            source: Some(SourceMeasurement {
                ungated_lufs: Some(-20.0),
                ..SourceMeasurement::default()
            }),
            ..TaskOutcome::default()
        };
        let silent = TaskOutcome {
            source: Some(SourceMeasurement::default()),
            ..TaskOutcome::default()
        };
        let level_of = |work: &Work, needs: &[&TaskOutcome]| {
            let Work::Render(render) = resolve(work, needs).unwrap() else {
                panic!("a render")
            };
            let LevelSource::Album {
                level: Some(level), ..
            } = render.level
            else {
                panic!("an album level: {:?}", render.level)
            };
            level
        };
        let level = level_of(&plan.tasks[3].work, &[&loud, &short]);
        let Level::TargetLufs(target) = level.level else {
            panic!("a target: {level:?}")
        };
        assert!(
            (target - (-14.0 + (-20.0 - -10.0))).abs() < 1e-9,
            "{target}"
        );
        assert!((level.chain_input_gain_db - (-18.0 - -10.0)).abs() < 1e-9);
        let level = level_of(&plan.tasks[3].work, &[&loud, &silent]);
        assert_eq!(level.level, Level::Silence);
        // An album of only silence is delivered as silence, with no chain-input gain.
        let level = level_of(&plan.tasks[2].work, &[&silent, &silent]);
        assert_eq!(
            (level.level, level.chain_input_gain_db),
            (Level::Silence, 0.0)
        );
    }
}
