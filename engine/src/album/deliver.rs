//! Delivering a catalogue: every requested outlet of every album and loose track, checked, with a
//! delivery manifest and a report per album.
//!
//! ```text
//! OUT/delivery.json                     every file: MD5, SHA-256, duration, loudness, true peak, QC
//! OUT/<album>/report.html               plots and tables for a person
//! OUT/<album>/streaming/01 Dawn.flac    24-bit FLAC per track (+ the platforms' normalisation preview)
//! OUT/<album>/broadcast/01 Dawn.wav     R128 WAV per track with a BWF bext chunk
//! OUT/<album>/hires/01 Dawn.flac        96 kHz 24-bit FLAC per track
//! OUT/<album>/mp3-320/01 Dawn.mp3       LAME CBR 320 (and mp3-v0/ for V0), checked after decoding
//! OUT/<album>/opus/01 Dawn.opus         Opus, checked after decoding
//! OUT/<album>/cd/<album>.wav + .cue     44.1 kHz 16-bit album image, CUE sheet with CD-TEXT
//! OUT/<album>/cd/ddp/                   DDP 2.0 image for the plant
//! OUT/<album>/vinyl/Side A.wav          24-bit WAV per side
//! OUT/tracks/<outlet>/...               loose tracks: one master per track for every outlet (CD:
//!                                       16-bit WAV single; vinyl: 24-bit WAV, one side each)
//! ```
//!
//! Every master is rendered by [`crate::render::master_track`] with the outlet's profile; albums in
//! `album` loudness mode get one level for the whole album ([`crate::album::gain`]). Continuous
//! renders (CD image, vinyl sides) are made from 32-bit float masters of each track, sequenced with
//! their gaps and crossfades ([`crate::album::sequence`]) and dithered once. Intermediate files live
//! in `OUT/.lathe-work-<pid>` and are removed at the end. A failing outlet of one album is recorded
//! in the manifest's `failures` and the rest carries on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use md5::{Digest, Md5};
use serde::Serialize;
use sha2::Sha256;

use crate::album::cue::{CD_FRAME_SAMPLES, CD_SAMPLE_RATE_HZ, CdLayout, CdTrack};
use crate::album::ddp::{DDP_FILES, write_ddp};
use crate::album::gain::plan_album;
use crate::album::lossy::{LossyCodec, decoded_figures, encode};
use crate::album::platforms::{PlaybackPreview, preview};
use crate::album::report::{self, PlotData, ReportTrack};
use crate::album::sequence::{self, Placement, SequenceInput};
use crate::album::vinyl;
use crate::audio::AudioBlock;
use crate::catalog::{Album, Catalogue, LoudnessMode, Outlet, VinylFormat};
use crate::decode::Decoder;
use crate::encode::{Container, EncodeSpec, Encoder};
use crate::error::{Error, Result};
use crate::master::dither::{DitherMode, Quantiser};
use crate::profile::Profile;
use crate::qc::{Analyzer, analyze_file};
use crate::render::{
    BLOCK_FRAMES, LevelOverride, MasterRequest, QcVerdict, TrackFades, TrackReport, master_track,
    temp_path_for, write_atomically,
};
use crate::stage::Stage;
use crate::tags::{BroadcastExtension, TrackTags, write_tags, write_tags_with_bext};

/// How often a lossy encode is re-rendered with more headroom before giving up.
pub const MAX_HEADROOM_RETRIES: u32 = 3;
/// Extra headroom added on top of a codec's measured overshoot, dB.
pub const HEADROOM_MARGIN_DB: f64 = 0.1;

/// One delivered file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveredFile {
    /// Path relative to the delivery folder.
    pub path: PathBuf,
    /// The album it belongs to (`None`: a loose track).
    pub album: Option<String>,
    /// The outlet.
    pub outlet: Outlet,
    /// `track`, `album_image`, `cue_sheet`, `ddp`, `side`.
    pub kind: String,
    /// Size, bytes.
    pub bytes: u64,
    /// MD5, hexadecimal.
    pub md5: String,
    /// SHA-256, hexadecimal.
    pub sha256: String,
    /// Duration, seconds (audio files).
    pub duration_s: Option<f64>,
    /// Integrated loudness as decoded, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak as decoded, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// The delivery check.
    pub qc: QcVerdict,
    /// The streaming platforms' normalisation (streaming outlet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlaybackPreview>,
    /// What the engineer should know about this file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One album's summary in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlbumSummary {
    /// Title.
    pub title: String,
    /// Album or track levelling.
    pub loudness: LoudnessMode,
    /// The HTML report, relative to the delivery folder.
    pub report: PathBuf,
    /// Warnings and notes (album gain capped, Red Book problems, side lengths, headroom).
    pub notes: Vec<String>,
}

/// `delivery.json`: everything delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryManifest {
    /// lathe's version.
    pub lathe_version: String,
    /// The job's name.
    pub job: String,
    /// The outlets asked for.
    pub outlets: Vec<Outlet>,
    /// The albums.
    pub albums: Vec<AlbumSummary>,
    /// Every file.
    pub files: Vec<DeliveredFile>,
    /// Outlets or tracks that failed, one line each.
    pub failures: Vec<String>,
}

impl DeliveryManifest {
    /// `true` when nothing failed and every file passed QC.
    pub fn all_passed(&self) -> bool {
        self.failures.is_empty() && self.files.iter().all(|f| f.qc.passed)
    }
}

/// MD5 and SHA-256 of a file, hexadecimal, read in blocks.
///
/// # Errors
/// [`Error::Io`] if it cannot be read.
pub fn file_digests(path: &Path) -> Result<(u64, String, String)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha.update(&buffer[..n]);
        bytes += n as u64;
    }
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok((bytes, hex(&md5.finalize()), hex(&sha.finalize())))
}

/// A file name from a title: no path separators or characters that trouble file systems.
pub fn file_name_for(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').to_owned();
    if trimmed.is_empty() {
        "untitled".to_owned()
    } else {
        trimmed
    }
}

/// The profile an outlet renders with. `job_profile` serves the streaming-class outlets.
pub fn outlet_profile(outlet: Outlet, job_profile: &Profile) -> Result<Profile> {
    Ok(match outlet {
        Outlet::Streaming => job_profile.clone(),
        Outlet::Cd => float_master(Profile::preset("cd")?, None),
        Outlet::Vinyl => float_master(Profile::preset("vinyl")?, None),
        Outlet::Broadcast => Profile::preset("broadcast")?,
        Outlet::Hires => Profile::preset("hires")?,
        Outlet::Mp3 => float_master(job_profile.clone(), Some(44_100)),
        Outlet::Opus => float_master(job_profile.clone(), Some(48_000)),
    })
}

/// `profile` writing 32-bit float WAV (no dither), optionally at a fixed rate: the intermediate a
/// continuous render or a lossy encode is made from.
fn float_master(mut profile: Profile, rate_hz: Option<u32>) -> Profile {
    profile.output.format = Container::Wav;
    profile.output.bit_depth = 32;
    profile.output.dither = DitherMode::None;
    if rate_hz.is_some() {
        profile.output.sample_rate_hz = rate_hz;
        profile.output.min_sample_rate_hz = None;
    }
    profile
}

/// A track to render: where it comes from and what it is.
#[derive(Debug, Clone)]
struct TrackJob {
    source: PathBuf,
    name: String,
    tags: TrackTags,
    fades: Option<TrackFades>,
    profile: Option<String>,
    level: Option<LevelOverride>,
}

/// Runs `f` over `items` on `jobs` threads; results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Ok(mut results) = results.lock() {
                        results[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// Delivers `catalogue` into `out` (created), rendering `jobs` tracks at a time; `log` hears one
/// line per step. The manifest is also written to `out/delivery.json`.
///
/// # Errors
/// Only what stops the whole job: the output folder cannot be made, the job's profile cannot be
/// loaded, the manifest cannot be written. Everything else is a `failures` line.
pub fn deliver(
    catalogue: &Catalogue,
    out: &Path,
    jobs: usize,
    log: &(dyn Fn(&str) + Sync),
) -> Result<DeliveryManifest> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let job_profile = Profile::load(&catalogue.profile_for(None))?;
    let work = out.join(format!(".lathe-work-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let mut ctx = Context {
        catalogue,
        out,
        work: &work,
        jobs,
        log,
        job_profile,
        files: Vec::new(),
        failures: Vec::new(),
    };
    let mut albums = Vec::new();
    for album in &catalogue.albums {
        albums.push(ctx.album(album));
    }
    if !catalogue.tracks.is_empty() {
        ctx.loose_tracks();
    }
    let _ = std::fs::remove_dir_all(&work);
    let manifest = DeliveryManifest {
        lathe_version: env!("CARGO_PKG_VERSION").to_owned(),
        job: catalogue.job.name.clone(),
        outlets: catalogue.job.outlets.clone(),
        albums,
        files: ctx.files,
        failures: ctx.failures,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Delivery {
        album: catalogue.job.name.clone(),
        reason: format!("manifest: {e}"),
    })?;
    write_atomically(&out.join("delivery.json"), json.as_bytes())?;
    Ok(manifest)
}

struct Context<'a> {
    catalogue: &'a Catalogue,
    out: &'a Path,
    work: &'a Path,
    jobs: usize,
    log: &'a (dyn Fn(&str) + Sync),
    job_profile: Profile,
    files: Vec<DeliveredFile>,
    failures: Vec<String>,
}

/// A lossy file: path, (duration, loudness, true peak), QC, notes, and the master's plot data.
type LossyOutcome = (
    PathBuf,
    (Option<f64>, Option<f64>, Option<f64>),
    QcVerdict,
    Vec<String>,
    PlotData,
);

/// What is known of a delivered file besides its bytes.
struct Facts {
    /// Duration (s), integrated loudness (LUFS), true peak (dBTP).
    levels: (Option<f64>, Option<f64>, Option<f64>),
    qc: QcVerdict,
    platforms: Vec<PlaybackPreview>,
    notes: Vec<String>,
}

impl Facts {
    /// A file that is not audio (CUE sheet, DDP stream), checked as `qc` says.
    fn paperwork(qc: QcVerdict) -> Self {
        Self {
            levels: (None, None, None),
            qc,
            platforms: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// What rendering one outlet's tracks gave: each track's report and file, or its error.
type Rendered = Vec<Result<(TrackReport, PathBuf)>>;

impl Context<'_> {
    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.out).unwrap_or(path).to_path_buf()
    }

    /// Lists a written file in the manifest, with its checksums.
    fn record(
        &mut self,
        path: &Path,
        album: Option<&str>,
        outlet: Outlet,
        kind: &str,
        facts: Facts,
    ) {
        match file_digests(path) {
            Ok((bytes, md5, sha256)) => self.files.push(DeliveredFile {
                path: self.relative(path),
                album: album.map(str::to_owned),
                outlet,
                kind: kind.to_owned(),
                bytes,
                md5,
                sha256,
                duration_s: facts.levels.0,
                integrated_lufs: facts.levels.1,
                true_peak_dbtp: facts.levels.2,
                qc: facts.qc,
                platforms: facts.platforms,
                notes: facts.notes,
            }),
            Err(e) => self.failures.push(e.to_string()),
        }
    }

    fn album(&mut self, album: &Album) -> AlbumSummary {
        let folder = self.out.join(file_name_for(&album.title));
        let mut notes = Vec::new();
        let total = album.tracks.len() as u32;
        let jobs: Vec<TrackJob> = album
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| TrackJob {
                source: t.file.clone(),
                name: format!("{:02} {}", i + 1, file_name_for(&t.title)),
                tags: TrackTags {
                    title: Some(t.title.clone()),
                    artist: Some(t.artist.clone().unwrap_or_else(|| album.artist.clone())),
                    album: Some(album.title.clone()),
                    album_artist: Some(album.album_artist().to_owned()),
                    track_number: Some(i as u32 + 1),
                    track_total: Some(total),
                    disc_number: Some(t.disc),
                    year: album.year,
                    genre: album.genre.clone(),
                    composer: t.composer.clone(),
                    isrc: t.isrc.clone(),
                    upc: album.upc.clone(),
                    copyright: album.copyright.clone(),
                    label: album.label.clone(),
                },
                fades: TrackFades::of(t.fade_in_s, t.fade_out_s, t.fade_curve),
                profile: t.profile.clone(),
                level: None,
            })
            .collect();
        let mut after: Option<Vec<PlotData>> = None;
        let mut sections = Vec::new();
        for &outlet in &self.catalogue.job.outlets.clone() {
            (self.log)(&format!("{}: {outlet}", album.title));
            let before = self.files.len();
            let result = match outlet {
                Outlet::Cd => self.cd(album, &folder, &jobs, &mut notes, &mut after),
                Outlet::Vinyl => self.vinyl(album, &folder, &jobs, &mut notes, &mut after),
                Outlet::Mp3 => self
                    .lossy(
                        Some(album),
                        &folder,
                        &jobs,
                        LossyCodec::Mp3Cbr320,
                        &mut after,
                    )
                    .and_then(|()| {
                        self.lossy(Some(album), &folder, &jobs, LossyCodec::Mp3V0, &mut after)
                    }),
                Outlet::Opus => {
                    self.lossy(Some(album), &folder, &jobs, LossyCodec::Opus, &mut after)
                }
                Outlet::Streaming | Outlet::Broadcast | Outlet::Hires => {
                    outlet_profile(outlet, &self.job_profile).and_then(|profile| {
                        self.per_track(Some(album), &folder, &jobs, outlet, &profile, &mut after)
                    })
                }
            };
            if let Err(e) = result {
                self.failures
                    .push(format!("{} ({outlet}): {e}", album.title));
            }
            sections.push(self.outlet_section(outlet, before));
        }
        // The report.
        let report_path = folder.join("report.html");
        let tracks: Vec<ReportTrack> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let before = report::measure(&job.source).unwrap_or_default();
                let after = after
                    .as_ref()
                    .and_then(|a| a.get(i).cloned())
                    .unwrap_or_default();
                ReportTrack {
                    name: job.name.clone(),
                    before_lufs: analyze_file(&job.source)
                        .ok()
                        .and_then(|a| a.integrated_lufs),
                    after_lufs: self
                        .files
                        .iter()
                        .find(|f| {
                            f.album.as_deref() == Some(album.title.as_str())
                                && f.kind == "track"
                                && f.path
                                    .file_stem()
                                    .is_some_and(|s| s.to_string_lossy() == job.name)
                        })
                        .and_then(|f| f.integrated_lufs),
                    before,
                    after,
                }
            })
            .collect();
        if !notes.is_empty() {
            let rows: Vec<Vec<String>> = notes.iter().map(|n| vec![n.clone()]).collect();
            sections.push(("Notes".to_owned(), report::table(&["note"], &rows)));
        }
        let page = report::html(&album.title, &tracks, &sections);
        if let Err(e) = std::fs::create_dir_all(&folder)
            .map_err(|e| Error::io(&folder, e))
            .and_then(|()| write_atomically(&report_path, page.as_bytes()))
        {
            self.failures.push(e.to_string());
        }
        AlbumSummary {
            title: album.title.clone(),
            loudness: album.loudness,
            report: self.relative(&report_path),
            notes,
        }
    }

    fn outlet_section(&self, outlet: Outlet, from: usize) -> (String, String) {
        let rows: Vec<Vec<String>> = self.files[from..]
            .iter()
            .map(|f| {
                let level = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
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

    /// Renders `jobs` with `profile` (or each track's own) into `folder`, in parallel.
    fn render_tracks(
        &self,
        jobs: &[TrackJob],
        profile: &Profile,
        use_track_profiles: bool,
        folder: &Path,
        extension: &str,
        tagged: bool,
    ) -> Result<Rendered> {
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        let profiles: Vec<Result<Profile>> = jobs
            .iter()
            .map(|job| match (&job.profile, use_track_profiles) {
                (Some(name), true) => {
                    let mut own = Profile::load(&self.catalogue.profile_for(Some(name)))?;
                    own.output = profile.output.clone();
                    Ok(own)
                }
                _ => Ok(profile.clone()),
            })
            .collect();
        let indexed: Vec<usize> = (0..jobs.len()).collect();
        Ok(parallel_map(&indexed, self.jobs, |&i| {
            let job = &jobs[i];
            let profile = profiles[i].as_ref().map_err(|e| Error::Delivery {
                album: job.name.clone(),
                reason: e.to_string(),
            })?;
            let output = folder.join(format!("{}.{extension}", job.name));
            let request = MasterRequest {
                input: &job.source,
                output: &output,
                profile,
                tags: if tagged {
                    job.tags.clone()
                } else {
                    TrackTags::default()
                },
                level: job.level,
                fades: job.fades,
            };
            (self.log)(&format!("  {} ({})", job.name, profile.name));
            let report = master_track(&request, &mut |_| {})?;
            Ok((report, output))
        }))
    }

    /// Levels for `jobs` under `profile`: the album plan in album mode, none otherwise.
    fn plan(
        &self,
        album: Option<&Album>,
        jobs: &[TrackJob],
        profile: &Profile,
        notes: &mut Vec<String>,
    ) -> Result<Vec<TrackJob>> {
        let mut planned = jobs.to_vec();
        if let Some(album) = album.filter(|a| a.loudness == LoudnessMode::Album) {
            let sources: Vec<&Path> = jobs.iter().map(|j| j.source.as_path()).collect();
            let plan = plan_album(&album.title, &sources, profile)?;
            notes.extend(
                plan.warnings
                    .iter()
                    .map(|w| format!("{}: {w}", profile.name)),
            );
            for (job, track) in planned.iter_mut().zip(&plan.tracks) {
                job.level = Some(track.level);
            }
        }
        Ok(planned)
    }

    fn per_track(
        &mut self,
        album: Option<&Album>,
        folder: &Path,
        jobs: &[TrackJob],
        outlet: Outlet,
        profile: &Profile,
        after: &mut Option<Vec<PlotData>>,
    ) -> Result<()> {
        let mut notes = Vec::new();
        let planned = self.plan(album, jobs, profile, &mut notes)?;
        let staging = self.work.join(outlet.as_str());
        let rendered = self.render_tracks(
            &planned,
            profile,
            outlet == Outlet::Streaming,
            &staging,
            profile.output.format.extension(),
            true,
        )?;
        let target = folder.join(outlet.as_str());
        std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        let mut plots = Vec::new();
        for (job, result) in planned.iter().zip(rendered) {
            let (report, staged) = match result {
                Ok(r) => r,
                Err(e) => {
                    self.failures.push(format!("{} ({outlet}): {e}", job.name));
                    plots.push(PlotData::default());
                    continue;
                }
            };
            if after.is_none() {
                plots.push(report::measure(&staged).unwrap_or_default());
            }
            let a = &report.output_analysis;
            if profile.output.format == Container::Wav {
                let bext = bext_for(&job.tags, &report, profile);
                write_tags_with_bext(&staged, &job.tags, Some(&bext))?;
            }
            let final_path = target.join(staged.file_name().unwrap_or_default());
            std::fs::rename(&staged, &final_path).map_err(|e| Error::io(&final_path, e))?;
            let platforms = match (outlet, a.integrated_lufs, a.true_peak_dbtp) {
                (Outlet::Streaming, Some(l), Some(p)) => preview(l, p),
                _ => Vec::new(),
            };
            let mut qc = report.qc.clone();
            let title = job.tags.title.as_deref().unwrap_or(&job.name);
            qc.issues
                .extend(single_format_issues(outlet, title, a.duration_s));
            qc.passed = qc.issues.is_empty();
            self.record(
                &final_path,
                album.map(|a| a.title.as_str()),
                outlet,
                "track",
                Facts {
                    levels: (Some(a.duration_s), a.integrated_lufs, a.true_peak_dbtp),
                    qc,
                    platforms,
                    notes: report.warnings.iter().chain(&notes).cloned().collect(),
                },
            );
        }
        if after.is_none() {
            *after = Some(plots);
        }
        Ok(())
    }

    fn lossy(
        &mut self,
        album: Option<&Album>,
        folder: &Path,
        jobs: &[TrackJob],
        codec: LossyCodec,
        after: &mut Option<Vec<PlotData>>,
    ) -> Result<()> {
        let outlet = if codec == LossyCodec::Opus {
            Outlet::Opus
        } else {
            Outlet::Mp3
        };
        let base = outlet_profile(outlet, &self.job_profile)?;
        let ceiling = base.loudness.ceiling_dbtp;
        let mut notes = Vec::new();
        let planned = self.plan(album, jobs, &base, &mut notes)?;
        let target = folder.join(codec.as_str());
        std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        let staging = self.work.join(codec.as_str());
        let indexed: Vec<usize> = (0..planned.len()).collect();
        let results = parallel_map(&indexed, self.jobs, |&i| -> Result<LossyOutcome> {
            let job = &planned[i];
            let mut headroom_db = 0.0;
            let mut attempt = 0;
            let mut job_notes = Vec::new();
            loop {
                let mut profile = base.clone();
                profile.loudness.ceiling_dbtp = ceiling - headroom_db;
                let rendered = self.render_tracks(
                    std::slice::from_ref(job),
                    &profile,
                    true,
                    &staging.join(format!("{i}-{attempt}")),
                    "wav",
                    false,
                )?;
                let (report, master) =
                    rendered
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::Delivery {
                            album: job.name.clone(),
                            reason: "nothing rendered".into(),
                        })??;
                let output = target.join(format!("{}.{}", job.name, codec.extension()));
                let temp = temp_path_for(&output);
                encode(codec, &master, &temp)?;
                let (figures, frames) = decoded_figures(codec, &temp)?;
                let peak = figures.true_peak_dbtp.unwrap_or(f64::NEG_INFINITY);
                if peak > ceiling && attempt < MAX_HEADROOM_RETRIES {
                    let extra = peak - ceiling + HEADROOM_MARGIN_DB;
                    job_notes.push(format!(
                        "{}: decoded true peak {peak:.2} dBTP over the {ceiling} dBTP ceiling; re-rendered with {:.2} dB more headroom",
                        codec.as_str(),
                        extra
                    ));
                    headroom_db += extra;
                    attempt += 1;
                    let _ = std::fs::remove_file(&temp);
                    continue;
                }
                write_tags(&temp, &job.tags)?;
                std::fs::rename(&temp, &output).map_err(|e| Error::io(&output, e))?;
                let plot = report::measure(&master).unwrap_or_default();
                let rate = if codec == LossyCodec::Opus {
                    48_000.0
                } else {
                    f64::from(report.output_sample_rate_hz)
                };
                let mut issues = Vec::new();
                if peak > ceiling {
                    issues.push(format!(
                        "decoded true peak {peak:.2} dBTP is over the {ceiling} dBTP ceiling"
                    ));
                }
                if let (Some(t), Some(l)) = (report.target_lufs, figures.integrated_lufs)
                    && (l - t).abs() > crate::render::QC_LOUDNESS_TOLERANCE_LU
                {
                    issues.push(format!("decoded loudness {l:.2} LUFS misses {t:.2} LUFS"));
                }
                if headroom_db > 0.0 {
                    job_notes.push(format!(
                        "{}: codec-aware limiting: rendered with a {:.2} dBTP ceiling",
                        codec.as_str(),
                        ceiling - headroom_db
                    ));
                }
                return Ok((
                    output,
                    (
                        Some(frames as f64 / rate),
                        figures.integrated_lufs,
                        Some(peak),
                    ),
                    QcVerdict {
                        passed: issues.is_empty(),
                        issues,
                    },
                    job_notes,
                    plot,
                ));
            }
        });
        let mut plots = Vec::new();
        for (job, result) in planned.iter().zip(results) {
            match result {
                Ok((path, levels, qc, job_notes, plot)) => {
                    plots.push(plot);
                    self.record(
                        &path,
                        album.map(|a| a.title.as_str()),
                        outlet,
                        "track",
                        Facts {
                            levels,
                            qc,
                            platforms: Vec::new(),
                            notes: job_notes.iter().chain(&notes).cloned().collect(),
                        },
                    );
                }
                Err(e) => {
                    plots.push(PlotData::default());
                    self.failures
                        .push(format!("{} ({}): {e}", job.name, codec.as_str()));
                }
            }
        }
        if after.is_none() {
            *after = Some(plots);
        }
        Ok(())
    }

    /// Renders 32-bit float masters of `jobs` for a continuous programme.
    fn float_masters(
        &mut self,
        album: &Album,
        jobs: &[TrackJob],
        outlet: Outlet,
        notes: &mut Vec<String>,
        after: &mut Option<Vec<PlotData>>,
    ) -> Result<(Profile, Vec<(TrackReport, PathBuf)>)> {
        let mut profile = outlet_profile(outlet, &self.job_profile)?;
        // One programme has one rate: the highest any track would be rendered at.
        let mut rate_hz = 0;
        for job in jobs {
            let source_rate = Decoder::open(&job.source)?.info().sample_rate_hz;
            rate_hz = rate_hz.max(profile.output_rate_hz(source_rate));
        }
        profile.output.sample_rate_hz = Some(rate_hz);
        let planned = self.plan(Some(album), jobs, &profile, notes)?;
        let rendered = self.render_tracks(
            &planned,
            &profile,
            false,
            &self.work.join(outlet.as_str()),
            "wav",
            false,
        )?;
        let masters = rendered.into_iter().collect::<Result<Vec<_>>>()?;
        if after.is_none() {
            *after = Some(
                masters
                    .iter()
                    .map(|(_, p)| report::measure(p).unwrap_or_default())
                    .collect(),
            );
        }
        Ok((profile, masters))
    }

    fn cd(
        &mut self,
        album: &Album,
        folder: &Path,
        jobs: &[TrackJob],
        notes: &mut Vec<String>,
        after: &mut Option<Vec<PlotData>>,
    ) -> Result<()> {
        let (profile, masters) = self.float_masters(album, jobs, Outlet::Cd, notes, after)?;
        let inputs: Vec<SequenceInput> = album
            .tracks
            .iter()
            .zip(&masters)
            .map(|(t, (_, path))| {
                Ok(SequenceInput {
                    frames: master_frames(path)?,
                    gap_s: t.effective_gap_s(),
                    crossfade_s: t.crossfade_s,
                })
            })
            .collect::<Result<_>>()?;
        let (placements, total) = sequence::plan(&inputs, CD_SAMPLE_RATE_HZ, CD_FRAME_SAMPLES);
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
        notes.extend(violations.iter().map(|v| format!("Red Book: {v}")));
        let cd_folder = folder.join("cd");
        std::fs::create_dir_all(&cd_folder).map_err(|e| Error::io(&cd_folder, e))?;
        let stem = file_name_for(&album.title);
        let image = cd_folder.join(format!("{stem}.wav"));
        let seed = album_seed(&masters);
        let tracks: Vec<(PathBuf, Placement)> = masters
            .iter()
            .map(|(_, p)| p.clone())
            .zip(placements.iter().copied())
            .collect();
        let programme = Programme {
            tracks: &tracks,
            total_frames: total,
            sample_rate_hz: CD_SAMPLE_RATE_HZ,
            bit_depth: 16,
            dither: profile_dither(&profile),
            seed,
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
        let ceiling = profile.loudness.ceiling_dbtp;
        let mut issues: Vec<String> = violations.clone();
        if let Some(peak) = analysis.true_peak_dbtp
            && peak > ceiling
        {
            issues.push(format!(
                "true peak {peak:.2} dBTP is over the {ceiling} dBTP ceiling (crossfades add up)"
            ));
        }
        let verdict = QcVerdict {
            passed: issues.is_empty(),
            issues,
        };
        self.record(
            &image,
            Some(&album.title),
            Outlet::Cd,
            "album_image",
            Facts {
                levels: (
                    Some(analysis.duration_s),
                    analysis.integrated_lufs,
                    analysis.true_peak_dbtp,
                ),
                qc: verdict,
                platforms: Vec::new(),
                notes: Vec::new(),
            },
        );
        let cue = cd_folder.join(format!("{stem}.cue"));
        write_atomically(&cue, layout.cue_sheet(&format!("{stem}.wav")).as_bytes())?;
        let paperwork = QcVerdict {
            passed: violations.is_empty(),
            issues: violations,
        };
        self.record(
            &cue,
            Some(&album.title),
            Outlet::Cd,
            "cue_sheet",
            Facts::paperwork(paperwork.clone()),
        );
        let ddp = cd_folder.join("ddp");
        write_ddp(&ddp, &layout, &image)?;
        for name in DDP_FILES {
            self.record(
                &ddp.join(name),
                Some(&album.title),
                Outlet::Cd,
                "ddp",
                Facts::paperwork(paperwork.clone()),
            );
        }
        Ok(())
    }

    fn vinyl(
        &mut self,
        album: &Album,
        folder: &Path,
        jobs: &[TrackJob],
        notes: &mut Vec<String>,
        after: &mut Option<Vec<PlotData>>,
    ) -> Result<()> {
        let (profile, masters) = self.float_masters(album, jobs, Outlet::Vinyl, notes, after)?;
        let vinyl_folder = folder.join("vinyl");
        std::fs::create_dir_all(&vinyl_folder).map_err(|e| Error::io(&vinyl_folder, e))?;
        let mut sides: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, track) in album.tracks.iter().enumerate() {
            sides.entry(track.side().to_owned()).or_default().push(i);
        }
        for (side, indexes) in sides {
            let inputs: Vec<SequenceInput> = indexes
                .iter()
                .map(|&i| {
                    Ok(SequenceInput {
                        frames: master_frames(&masters[i].1)?,
                        gap_s: album.tracks[i].effective_gap_s(),
                        crossfade_s: album.tracks[i].crossfade_s,
                    })
                })
                .collect::<Result<_>>()?;
            let rate = masters[indexes[0]].0.output_sample_rate_hz;
            let (placements, total) = sequence::plan(&inputs, rate, 1);
            let tracks: Vec<(PathBuf, Placement)> = indexes
                .iter()
                .map(|&i| masters[i].1.clone())
                .zip(placements)
                .collect();
            let path = vinyl_folder.join(format!("Side {}.wav", file_name_for(&side)));
            let side_masters: Vec<(TrackReport, PathBuf)> =
                indexes.iter().map(|&i| masters[i].clone()).collect();
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
                notes.push(warning);
            }
            let ceiling = profile.loudness.ceiling_dbtp;
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
            self.record(
                &path,
                Some(&album.title),
                Outlet::Vinyl,
                "side",
                Facts {
                    levels: (
                        Some(analysis.duration_s),
                        analysis.integrated_lufs,
                        analysis.true_peak_dbtp,
                    ),
                    qc: QcVerdict {
                        passed: issues.is_empty(),
                        issues,
                    },
                    platforms: Vec::new(),
                    notes: side_notes,
                },
            );
        }
        Ok(())
    }

    fn loose_tracks(&mut self) {
        let jobs: Vec<TrackJob> = self
            .catalogue
            .tracks
            .iter()
            .map(|t| TrackJob {
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
                level: None,
            })
            .collect();
        let folder = self.out.join("tracks");
        let mut after = None;
        for &outlet in &self.catalogue.job.outlets.clone() {
            (self.log)(&format!("loose tracks: {outlet}"));
            let result = match outlet {
                // A single: one CD or vinyl master per track, with the preset itself (16-bit
                // dithered WAV for CD, 24-bit for the cut) and the format's length checks.
                Outlet::Cd | Outlet::Vinyl => {
                    Profile::preset(outlet.as_str()).and_then(|profile| {
                        self.per_track(None, &folder, &jobs, outlet, &profile, &mut after)
                    })
                }
                Outlet::Mp3 => self
                    .lossy(None, &folder, &jobs, LossyCodec::Mp3Cbr320, &mut after)
                    .and_then(|()| self.lossy(None, &folder, &jobs, LossyCodec::Mp3V0, &mut after)),
                Outlet::Opus => self.lossy(None, &folder, &jobs, LossyCodec::Opus, &mut after),
                _ => outlet_profile(outlet, &self.job_profile).and_then(|profile| {
                    self.per_track(None, &folder, &jobs, outlet, &profile, &mut after)
                }),
            };
            if let Err(e) = result {
                self.failures.push(format!("loose tracks ({outlet}): {e}"));
            }
        }
    }
}

/// A loose track delivered as a CD or vinyl single: the format's limits, as QC issues. A CD single
/// is checked as the one-track disc it would be, by the album path's Red Book check.
fn single_format_issues(outlet: Outlet, title: &str, duration_s: f64) -> Vec<String> {
    match outlet {
        Outlet::Cd => {
            let input = SequenceInput {
                frames: (duration_s * f64::from(CD_SAMPLE_RATE_HZ)).round() as u64,
                gap_s: 0.0,
                crossfade_s: 0.0,
            };
            let (placements, total_samples) =
                sequence::plan(&[input], CD_SAMPLE_RATE_HZ, CD_FRAME_SAMPLES);
            let disc = CdLayout {
                title: title.to_owned(),
                performer: String::new(),
                catalog: None,
                genre: None,
                year: None,
                tracks: placements
                    .into_iter()
                    .map(|placement| CdTrack {
                        title: title.to_owned(),
                        performer: String::new(),
                        songwriter: None,
                        isrc: None,
                        placement,
                    })
                    .collect(),
                total_samples,
            };
            disc.red_book_violations()
                .into_iter()
                .map(|v| format!("Red Book: {v}"))
                .collect()
        }
        Outlet::Vinyl => vinyl::side_length_warning("A", duration_s, VinylFormat::default())
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

fn profile_dither(profile: &Profile) -> DitherMode {
    match profile.output.dither {
        DitherMode::None => DitherMode::Tpdf,
        other => other,
    }
}

fn master_frames(path: &Path) -> Result<u64> {
    Decoder::open(path)?
        .info()
        .frames
        .ok_or_else(|| Error::Delivery {
            album: path.display().to_string(),
            reason: "the master's length is unknown".into(),
        })
}

/// The dither seed of a continuous programme: the tracks' own seeds combined.
fn album_seed(masters: &[(TrackReport, PathBuf)]) -> u64 {
    masters.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, (r, _)| {
        let seed = u64::from_str_radix(&r.dither_seed, 16).unwrap_or(0);
        (h ^ seed).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A continuous programme (CD image, vinyl side): its placed float masters and how it is written.
#[derive(Clone, Copy)]
struct Programme<'a> {
    tracks: &'a [(PathBuf, Placement)],
    total_frames: u64,
    sample_rate_hz: u32,
    /// WAV bit depth, 16 or 24.
    bit_depth: u32,
    dither: DitherMode,
    seed: u64,
}

/// Sequences a programme's tracks, dithers them to its depth and writes `path` (temporary name,
/// then renamed), tagged with `tags`; returns the analysis of the written samples.
fn render_programme(
    programme: &Programme<'_>,
    path: &Path,
    tags: &TrackTags,
) -> Result<crate::qc::Analysis> {
    let Programme {
        tracks,
        total_frames: total,
        sample_rate_hz: rate,
        bit_depth,
        dither,
        seed,
    } = *programme;
    let spec = EncodeSpec {
        container: Container::Wav,
        bit_depth,
    };
    let channels = 2;
    let temp = temp_path_for(path);
    let mut encoder = Encoder::create(&temp, &spec, channels, rate)?;
    let mut quantiser =
        Quantiser::new(dither, spec.bit_depth, channels, rate, seed).map_err(|e| {
            Error::Delivery {
                album: path.display().to_string(),
                reason: format!("dither: {}: {}", e.key, e.reason),
            }
        })?;
    let mut analyzer = Analyzer::new(channels, rate);
    let mut scratch = AudioBlock::new(channels, BLOCK_FRAMES, rate);
    let result = sequence::render(tracks, total, channels, rate, &mut |block| {
        let n = block.frames();
        scratch.set_frames(n);
        for c in 0..channels {
            scratch.channel_mut(c)[..n].copy_from_slice(&block.channel(c)[..n]);
        }
        quantiser.process(&mut scratch);
        analyzer.add(&scratch);
        encoder.write(&scratch)
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    encoder.finish()?;
    write_tags(&temp, tags)?;
    std::fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
    Ok(analyzer.finish(path))
}

/// The `bext` chunk of a per-track WAV deliverable.
fn bext_for(tags: &TrackTags, report: &TrackReport, profile: &Profile) -> BroadcastExtension {
    let a = &report.output_analysis;
    BroadcastExtension {
        description: tags.title.clone().unwrap_or_default(),
        originator: format!("lathe {}", env!("CARGO_PKG_VERSION")),
        originator_reference: tags.isrc.clone().unwrap_or_default(),
        loudness_value_lufs: a.integrated_lufs,
        loudness_range_lu: a.loudness_range_lu,
        max_true_peak_dbtp: a.true_peak_dbtp,
        max_momentary_lufs: a.max_momentary_lufs,
        max_short_term_lufs: a.max_short_term_lufs,
        coding_history: format!(
            "A=PCM,F={},W={},M={},T=lathe {}\r\n",
            report.output_sample_rate_hz,
            profile.output.bit_depth,
            if a.channels == 1 { "mono" } else { "stereo" },
            profile.name
        ),
        ..BroadcastExtension::default()
    }
}
