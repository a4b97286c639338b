//! The delivery plan: a catalogue's tasks in dependency order, each with self-contained work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::album_level::needs_chain_figures;
use crate::catalog::{Album, Catalogue, LoudnessMode, Outlet};
use crate::delivery::outlet::{CD_SAMPLE_RATE_HZ, LossyCodec, file_name_for, outlet_profile};
use crate::error::Result;
use crate::level::{LevelOverride, TrackFades};
use crate::profile::Profile;
use crate::report::TrackReport;
use crate::tags::TrackTags;

/// The folder, inside the output folder, for intermediates (float masters, staged files).
pub const WORK_FOLDER: &str = ".lathe-work";
/// The folder, inside the output folder, of the loose tracks' deliveries.
const LOOSE_FOLDER: &str = "tracks";

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

impl DeliveryPlan {
    /// Plans `catalogue`: loads its profiles and asks `source_rate_hz` for each album source's
    /// sample rate (a CD or vinyl programme has one rate: the highest its tracks render at); a
    /// source it cannot tell (`None`) fails in its own tasks, not here.
    ///
    /// # Errors
    /// A profile that cannot be loaded.
    pub fn of(
        catalogue: &Catalogue,
        source_rate_hz: &dyn Fn(&Path) -> Option<u32>,
    ) -> Result<Self> {
        let mut planner = Planner {
            catalogue,
            source_rate_hz,
            job_profile: Profile::load(&catalogue.profile_for(None))?,
            tasks: Vec::new(),
        };
        for album in &catalogue.albums {
            planner.album(album)?;
        }
        planner.loose_tracks()?;
        refuse_shared_paths(catalogue, &planner.tasks)?;
        Ok(Self {
            tasks: planner.tasks,
        })
    }
}

/// Two albums delivered into one folder, or two renders written to one file (compared as a
/// case-insensitive file system compares them: `Dawn` is `dawn`), are an error naming both: one
/// never silently overwrites the other.
fn refuse_shared_paths(catalogue: &Catalogue, tasks: &[PlannedTask]) -> Result<()> {
    let shared = |first: String, second: String, path: &str| crate::error::Error::Catalogue {
        manifest: catalogue.origin.clone(),
        item: format!("{first} and {second}"),
        reason: format!(
            "both would be delivered as {path:?} (titles and file names are made safe for every \
             file system, which can make two the same); give one another title"
        ),
    };
    let mut folders: BTreeMap<String, String> = BTreeMap::new();
    if !catalogue.tracks.is_empty() {
        folders.insert(LOOSE_FOLDER.to_owned(), "the loose tracks".to_owned());
    }
    for album in &catalogue.albums {
        let folder = file_name_for(&album.title);
        let this = format!("album {:?}", album.title);
        if let Some(first) = folders.insert(folder.to_lowercase(), this.clone()) {
            return Err(shared(first, this, &format!("{folder}/")));
        }
    }
    let mut files: BTreeMap<String, &str> = BTreeMap::new();
    for task in tasks {
        if let Work::Render(render) = &task.work
            && let Some(first) = files.insert(render.path.to_lowercase(), &task.label)
        {
            return Err(shared(
                format!("{first:?}"),
                format!("{:?}", task.label),
                &render.path,
            ));
        }
    }
    Ok(())
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
pub fn album_track_name(album: &Album, index: usize) -> String {
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
    /// A source's sample rate, Hz (`None` when it cannot be opened: it fails in its own tasks).
    source_rate_hz: &'a dyn Fn(&Path) -> Option<u32>,
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
                        .filter_map(|t| (self.source_rate_hz)(&t.source))
                        .map(|source_hz| profile.output_rate_hz(source_hz))
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
            self.outlet_renders(None, &tracks, &[], outlet, LOOSE_FOLDER, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::album_level::SourceMeasurement;
    use crate::delivery::outcome::TaskOutcome;
    use crate::delivery::resolve::resolve;
    use crate::level::Level;

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

    /// The planner's error for `toml`, as text.
    fn refusal(toml: &str) -> String {
        let root = std::env::temp_dir().join("lathe-graph-test-does-not-exist");
        let catalogue = Catalogue::from_toml(toml, Path::new("test.toml"), &root).unwrap();
        DeliveryPlan::of(&catalogue, &|_| None)
            .expect_err("a shared path")
            .to_string()
    }

    #[test]
    fn deliveries_that_would_share_a_path_are_refused_naming_both() {
        // Two titles made the same by file-name safety.
        let error = refusal(
            r#"
[[album]]
title = "AC/DC"
artist = "A"
[[album.track]]
file = "a.wav"
title = "One"
[[album]]
title = "AC_DC"
artist = "B"
[[album.track]]
file = "b.wav"
title = "Two"
"#,
        );
        assert!(
            error.contains("album \"AC/DC\" and album \"AC_DC\"") && error.contains("\"AC_DC/\""),
            "{error}"
        );
        // Two titles that differ in case only: one folder on a case-insensitive file system.
        let error = refusal(
            r#"
[[album]]
title = "Night"
artist = "A"
[[album.track]]
file = "a.wav"
title = "One"
[[album]]
title = "NIGHT"
artist = "B"
[[album.track]]
file = "b.wav"
title = "Two"
"#,
        );
        assert!(error.contains("\"Night\" and album \"NIGHT\""), "{error}");
        // Two loose tracks of one name from two folders.
        let error = refusal(
            r#"
[[track]]
file = "side-a/song.wav"
[[track]]
file = "side-b/Song.wav"
"#,
        );
        assert!(
            error.contains("\"tracks/streaming/Song.flac\"")
                && error.contains("song")
                && error.contains(" and "),
            "{error}"
        );
        // An album called "Tracks" beside loose tracks.
        let error = refusal(
            r#"
[[album]]
title = "Tracks"
artist = "A"
[[album.track]]
file = "a.wav"
title = "One"
[[track]]
file = "b.wav"
"#,
        );
        assert!(
            error.contains("the loose tracks and album \"Tracks\""),
            "{error}"
        );
    }

    fn kinds(plan: &DeliveryPlan) -> Vec<&str> {
        plan.tasks.iter().map(|t| t.work.kind()).collect()
    }

    #[test]
    fn an_album_plans_measures_first_then_renders_then_assembles() {
        let plan = DeliveryPlan::of(
            &catalogue(r#""streaming", "cd", "vinyl""#, "album"),
            &|_| None,
        )
        .unwrap();
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
        let plan = DeliveryPlan::of(&catalogue(r#""streaming""#, "track"), &|_| None).unwrap();
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
        let plan = DeliveryPlan::of(&catalogue(r#""streaming""#, "album"), &|_| None).unwrap();
        let (loud, quiet) = (steady(-10.0, 100), steady(-20.0, 100));
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
        let level = level_of(&plan.tasks[3].work, &[&loud, &quiet]);
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
