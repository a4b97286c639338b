//! `lathe master`: master files and folders on this machine, tracks in parallel; or, given a
//! catalogue manifest (`.toml`), deliver every outlet it asks for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lathe_engine::catalog::find_audio_files;
use lathe_engine::profile::Profile;
use lathe_engine::render::{MasterRequest, TrackReport, master_track, write_atomically};
use lathe_engine::tags::TrackTags;
use serde::Serialize;

use crate::table::{Table, level};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Streams};

/// Arguments of `lathe master`.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    /// Audio files, or folders searched recursively for audio files; or one catalogue manifest
    /// (`.toml`) of albums and loose tracks.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// A preset name (see `lathe profiles`) or a profile TOML file (required for files and
    /// folders; with a manifest it replaces the manifest's `[job] profile`).
    #[arg(short, long)]
    pub profile: Option<String>,
    /// Folder for the masters and reports (created if missing; must not be an input folder).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Tracks mastered in parallel (default: all cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
}

/// One track's outcome in the job report.
#[derive(Debug, Serialize)]
struct TrackOutcome {
    input: PathBuf,
    output: PathBuf,
    status: &'static str,
    error: Option<String>,
    integrated_lufs: Option<f64>,
    true_peak_dbtp: Option<f64>,
    gain_db: Option<f64>,
    qc_issues: Vec<String>,
    elapsed_s: f64,
}

/// A track's report or error, and the seconds it took.
type TrackResult = (Result<TrackReport, String>, f64);

/// The job-level `report.json`.
#[derive(Debug, Serialize)]
struct JobReport {
    lathe_version: &'static str,
    profile: String,
    jobs: usize,
    elapsed_s: f64,
    succeeded: usize,
    failed: usize,
    tracks: Vec<TrackOutcome>,
}

/// A usage problem: reported on one line, exit status 2, nothing processed.
#[derive(Debug)]
pub struct Usage(pub String);

/// Runs `lathe master`.
pub fn run(args: &MasterArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    if let [manifest] = args.inputs.as_slice()
        && manifest.extension().is_some_and(|e| e == "toml")
    {
        return crate::deliver::run(manifest, args, streams);
    }
    let Some(profile) = &args.profile else {
        writeln!(
            streams.err,
            "lathe: --profile is required when mastering files or folders (a manifest names its own)"
        )?;
        return Ok(EXIT_USAGE);
    };
    let profile = match Profile::load(profile) {
        Ok(profile) => profile,
        Err(error) => {
            writeln!(streams.err, "lathe: {error}")?;
            return Ok(EXIT_USAGE);
        }
    };
    match master_inputs(&args.inputs, &profile, &args.out, args.jobs, streams)? {
        Ok(status) => Ok(status),
        Err(Usage(message)) => {
            writeln!(streams.err, "lathe: {message}")?;
            Ok(EXIT_USAGE)
        }
    }
}

/// Masters `inputs` into `out` with `profile`; also used by `lathe demo`.
pub fn master_inputs(
    inputs: &[PathBuf],
    profile: &Profile,
    out: &Path,
    jobs: Option<usize>,
    streams: &mut Streams<'_>,
) -> anyhow::Result<Result<i32, Usage>> {
    let sources = match collect_sources(inputs) {
        Ok(sources) => sources,
        Err(usage) => return Ok(Err(usage)),
    };
    if sources.is_empty() {
        return Ok(Err(Usage("no audio files found in the inputs".to_owned())));
    }
    if let Err(usage) = check_output_folder(out, inputs, &sources) {
        return Ok(Err(usage));
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let outputs = output_paths(&sources, out, profile.output.format.extension());
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, sources.len());

    let started = Instant::now();
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:>24!} {bar:30} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TrackResult>>> =
        Mutex::new((0..sources.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(source) = sources.get(index) else {
                        break;
                    };
                    let bar = bars.add(ProgressBar::new(1000));
                    bar.set_style(style.clone());
                    bar.set_prefix(display_name(source));
                    let track_started = Instant::now();
                    let result = master_one(source, &outputs[index], profile, &bar);
                    bar.finish_and_clear();
                    if let Ok(mut results) = results.lock() {
                        results[index] = Some((result, track_started.elapsed().as_secs_f64()));
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();

    let mut table = Table::new(&[
        "track", "in LUFS", "out LUFS", "out dBTP", "gain dB", "QC", "time s",
    ]);
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for ((source, output), result) in sources.iter().zip(&outputs).zip(results) {
        let (result, elapsed_s) = result.unwrap_or((Err("not run".to_owned()), 0.0));
        match result {
            Ok(report) => {
                let qc = if report.qc.passed {
                    "ok".to_owned()
                } else {
                    report.qc.issues.join("; ")
                };
                table.row(vec![
                    display_name(source),
                    level(report.input_analysis.integrated_lufs),
                    level(report.output_analysis.integrated_lufs),
                    level(report.output_analysis.true_peak_dbtp),
                    format!("{:+.1}", report.chain_input_gain_db + report.gain_db),
                    qc,
                    format!("{elapsed_s:.1}"),
                ]);
                if !report.qc.passed {
                    failures.push(format!(
                        "{}: QC: {}",
                        source.display(),
                        report.qc.issues.join("; ")
                    ));
                }
                outcomes.push(TrackOutcome {
                    input: source.clone(),
                    output: output.clone(),
                    status: if report.qc.passed { "ok" } else { "qc_failed" },
                    error: None,
                    integrated_lufs: report.output_analysis.integrated_lufs,
                    true_peak_dbtp: report.output_analysis.true_peak_dbtp,
                    gain_db: Some(report.chain_input_gain_db + report.gain_db),
                    qc_issues: report.qc.issues.clone(),
                    elapsed_s,
                });
            }
            Err(error) => {
                table.row(vec![
                    display_name(source),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "FAILED".into(),
                    format!("{elapsed_s:.1}"),
                ]);
                failures.push(error.clone());
                outcomes.push(TrackOutcome {
                    input: source.clone(),
                    output: output.clone(),
                    status: "failed",
                    error: Some(error),
                    integrated_lufs: None,
                    true_peak_dbtp: None,
                    gain_db: None,
                    qc_issues: Vec::new(),
                    elapsed_s,
                });
            }
        }
    }
    let failed = outcomes.iter().filter(|o| o.status != "ok").count();
    let job = JobReport {
        lathe_version: env!("CARGO_PKG_VERSION"),
        profile: profile.name.clone(),
        jobs,
        elapsed_s: started.elapsed().as_secs_f64(),
        succeeded: outcomes.len() - failed,
        failed,
        tracks: outcomes,
    };
    write_atomically(
        &out.join("report.json"),
        serde_json::to_string_pretty(&job)?.as_bytes(),
    )?;

    write!(streams.out, "{}", table.render())?;
    writeln!(
        streams.out,
        "{} of {} tracks mastered with profile {} in {:.1} s -> {}",
        job.succeeded,
        job.tracks.len(),
        profile.name,
        job.elapsed_s,
        out.display()
    )?;
    for failure in &failures {
        writeln!(streams.err, "lathe: {failure}")?;
    }
    Ok(Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILURES }))
}

fn master_one(
    source: &Path,
    output: &Path,
    profile: &Profile,
    bar: &ProgressBar,
) -> Result<TrackReport, String> {
    let request = MasterRequest {
        input: source,
        output,
        profile,
        tags: TrackTags::default(),
        level: None,
        fades: None,
    };
    let report = master_track(&request, &mut |progress| {
        bar.set_message(progress.phase.as_str());
        bar.set_position((progress.fraction * 1000.0) as u64);
    })
    .map_err(|e| e.to_string())?;
    let report_path = report_path_for(output);
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    write_atomically(&report_path, json.as_bytes()).map_err(|e| e.to_string())?;
    Ok(report)
}

/// `OUT/<stem>.report.json` beside `OUT/<stem>.<ext>`.
pub fn report_path_for(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}.report.json"))
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Expands folders (recursively, audio extensions only, sorted) and keeps files as given.
pub(crate) fn collect_sources(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, Usage> {
    let mut sources = Vec::new();
    for input in inputs {
        if input.is_dir() {
            sources.extend(find_audio_files(input).map_err(|e| Usage(e.to_string()))?);
        } else if input.exists() {
            sources.push(input.clone());
        } else {
            return Err(Usage(format!(
                "{}: no such file or folder",
                input.display()
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    sources.retain(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())));
    Ok(sources)
}

/// Refuses an output folder that could mix masters with sources: one inside (or equal to) a folder
/// given as input (a later run would pick the masters up as sources), or the folder of an input file.
pub(crate) fn check_output_folder(
    out: &Path,
    inputs: &[PathBuf],
    sources: &[PathBuf],
) -> Result<(), Usage> {
    let out = resolve(out).map_err(|e| Usage(format!("{}: {e}", out.display())))?;
    let canonical = |folder: &Path| {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        folder.canonicalize().ok()
    };
    let refuse = |folder: &Path| {
        Usage(format!(
            "the output folder {} is an input folder (or inside one: {}); choose another",
            out.display(),
            folder.display()
        ))
    };
    for folder in inputs
        .iter()
        .filter(|i| i.is_dir())
        .filter_map(|i| canonical(i))
    {
        if out.starts_with(&folder) {
            return Err(refuse(&folder));
        }
    }
    for folder in sources
        .iter()
        .filter_map(|s| s.parent())
        .filter_map(canonical)
    {
        if out == folder {
            return Err(refuse(&folder));
        }
    }
    Ok(())
}

/// The absolute, symlink-free form of `path`, which need not exist yet (its nearest existing ancestor is
/// canonicalised and the rest appended).
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    if path.exists() {
        return path.canonicalize();
    }
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(parent) = existing.parent() else {
            break;
        };
        rest.push(
            existing
                .file_name()
                .map(ToOwned::to_owned)
                .unwrap_or_default(),
        );
        existing = parent;
    }
    let mut resolved = existing.canonicalize()?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

/// `OUT/<stem>.<ext>` per source; when two sources share a stem, the later ones (in input order) get
/// `-2`, `-3`, ... appended.
fn output_paths(sources: &[PathBuf], out: &Path, extension: &str) -> Vec<PathBuf> {
    let mut used: HashMap<String, usize> = HashMap::new();
    sources
        .iter()
        .map(|source| {
            let stem = source
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let count = used.entry(stem.to_lowercase()).or_insert(0);
            *count += 1;
            let name = if *count == 1 {
                stem
            } else {
                format!("{stem}-{count}")
            };
            out.join(format!("{name}.{extension}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_stems_get_numbered_suffixes() {
        let sources = [
            PathBuf::from("a/01-dawn.ogg"),
            PathBuf::from("b/01-dawn.wav"),
            PathBuf::from("c/01-Dawn.flac"),
        ];
        let outputs = output_paths(&sources, Path::new("out"), "flac");
        assert_eq!(
            outputs,
            [
                PathBuf::from("out/01-dawn.flac"),
                PathBuf::from("out/01-dawn-2.flac"),
                PathBuf::from("out/01-Dawn-3.flac")
            ]
        );
    }

    #[test]
    fn report_sits_beside_master() {
        assert_eq!(
            report_path_for(Path::new("out/01-dawn.flac")),
            PathBuf::from("out/01-dawn.report.json")
        );
    }
}
