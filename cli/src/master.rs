//! `lathe master`: master files and folders on this machine, tracks in parallel on the embedded farm
//! (the farm's coordinator and `-j` worker loops in this process, on the in-process queue and state
//! store: the same code as a real farm, no servers); or, given a catalogue manifest (`.toml`),
//! deliver every outlet it asks for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use lathe_coordinator::blob::Digest;
use lathe_coordinator::client::digest_file;
use lathe_engine::atomic_file::write_atomically;
use lathe_model::profile::Profile;
use lathe_model::report::TrackReport;
use lathe_proto::v1;
use lathe_worker::embedded::EmbeddedFarm;

use crate::coordinator::runtime;
use crate::job_report::{JobReport, TrackOutcome};
use crate::output_folder::check_output_folder;
use crate::progress::{JobView, follow_job};
use crate::sources::{collect_sources, display_name, file_name};
use crate::table::{Table, level};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Streams, Usage};

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

/// A track's report or error, and the seconds it took.
type TrackResult = (Result<TrackReport, String>, f64);

/// Runs `lathe master`.
pub fn run(args: &MasterArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    if let [manifest] = args.inputs.as_slice()
        && manifest.extension().is_some_and(|e| e == "toml")
    {
        let delivery = crate::deliver::DeliveryArgs {
            profile: args.profile.as_deref(),
            out: &args.out,
            jobs: args.jobs,
        };
        return crate::deliver::run(manifest, &delivery, streams);
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
    let results = runtime()?.block_on(master_on_embedded_farm(
        &sources, &outputs, profile, jobs, out,
    ))?;

    let mut table = Table::new(&[
        "track", "in LUFS", "out LUFS", "out dBTP", "gain dB", "QC", "time s",
    ]);
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    // How each silent, near-silent or very short track was mastered, printed under the table.
    let mut level_notes = Vec::new();
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
                if let Some(note) = report
                    .level_rule
                    .note(&report.input_analysis, &report.output_analysis)
                {
                    level_notes.push(format!("{}: {note}", display_name(source)));
                }
                if !report.qc.passed {
                    failures.push(format!(
                        "{}: QC: {}",
                        source.display(),
                        report.qc.issues.join("; ")
                    ));
                }
                outcomes.push(TrackOutcome::mastered(source, output, &report, elapsed_s));
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
                outcomes.push(TrackOutcome::failed(source, output, error, elapsed_s));
            }
        }
    }
    let job = JobReport::new(
        &profile.name,
        jobs,
        started.elapsed().as_secs_f64(),
        outcomes,
    );
    job.write(out)?;

    write!(streams.out, "{}", table.render())?;
    for note in &level_notes {
        writeln!(streams.out, "note: {note}")?;
    }
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
    Ok(Ok(if job.failed == 0 {
        EXIT_OK
    } else {
        EXIT_FAILURES
    }))
}

/// Masters `sources` into `outputs` on the embedded farm (the coordinator and `jobs` worker loops
/// in this process), a progress bar per running track; returns each track's report or error, in
/// order.
async fn master_on_embedded_farm(
    sources: &[PathBuf],
    outputs: &[PathBuf],
    profile: &Profile,
    jobs: usize,
    out: &Path,
) -> anyhow::Result<Vec<Option<TrackResult>>> {
    // The blobs and the workers' scratch files, removed whatever happens.
    let scratch = out.join(format!(".lathe-work-{}", std::process::id()));
    let outcome = async {
        let farm = EmbeddedFarm::start(jobs, &scratch).await?;
        let outcome = run_job(&farm, sources, outputs, profile).await;
        farm.stop().await;
        outcome
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

async fn run_job(
    farm: &EmbeddedFarm,
    sources: &[PathBuf],
    outputs: &[PathBuf],
    profile: &Profile,
) -> anyhow::Result<Vec<Option<TrackResult>>> {
    let client = &farm.client;
    // A source that cannot be read fails alone; the others go to the farm.
    let mut results: Vec<Option<TrackResult>> = Vec::new();
    let mut readable = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        match digest_file(source).await {
            Ok(digest) => {
                readable.push((index, digest));
                results.push(None);
            }
            Err(error) => results.push(Some((Err(error.to_string()), 0.0))),
        }
    }
    if readable.is_empty() {
        return Ok(results);
    }
    let files: Vec<&Path> = readable
        .iter()
        .map(|&(i, _)| sources[i].as_path())
        .collect();
    let digests: Vec<Digest> = readable.iter().map(|&(_, digest)| digest).collect();
    match &farm.local_blobs {
        // The farm is in this process: it reads the files where they are (checking each digest).
        Some(blobs) => {
            for (file, digest) in files.iter().zip(&digests) {
                blobs.adopt(*digest, file)?;
            }
        }
        None => client.upload_digested(&files, &digests).await?,
    }
    let tracks = readable
        .iter()
        .map(|&(index, digest)| v1::TrackSpec {
            source_digest: digest.to_string(),
            source_name: file_name(&sources[index]),
            output_name: file_name(&outputs[index]),
            ..Default::default()
        })
        .collect();
    let job_id = client
        .jobs
        .clone()
        .submit(v1::SubmitJobRequest {
            name: "lathe master".to_owned(),
            priority: 0,
            profile_toml: profile.to_toml(),
            tracks,
            ..Default::default()
        })
        .await?
        .into_inner()
        .job_id;
    let track_names: Vec<String> = readable
        .iter()
        .map(|&(i, _)| display_name(&sources[i]))
        .collect();
    follow_job(
        client,
        &job_id,
        JobView::TrackBars {
            track_names: &track_names,
        },
    )
    .await?;
    // Every task: this machine's own job, whose report lists every track anyway.
    let status = client.job_with_tasks(&job_id).await?;
    for (task, &(index, _)) in status.tasks.iter().zip(&readable) {
        let (source, output) = (&sources[index], &outputs[index]);
        results[index] = Some(match task.state() {
            v1::TaskState::Succeeded => {
                match &farm.local_blobs {
                    Some(blobs) => {
                        blobs
                            .deliver(&Digest::parse(&task.output_digest)?, output)
                            .await?;
                    }
                    None => {
                        client
                            .download(&job_id, &task.output_digest, output)
                            .await?;
                    }
                }
                let mut report: TrackReport = serde_json::from_str(&task.report_json)
                    .with_context(|| format!("{}: unreadable track report", source.display()))?;
                // The worker knew the files by name only: the report names them as given here.
                report.input = source.clone();
                report.output = output.clone();
                let json = serde_json::to_string_pretty(&report)?;
                write_atomically(&report_path_for(output), json.as_bytes())?;
                let elapsed_s = report.elapsed_s;
                (Ok(report), elapsed_s)
            }
            state => {
                let error = if task.last_error.is_empty() {
                    format!("{}: {state:?}", source.display())
                } else {
                    // Worker errors name the source by its file name: name it as the user gave it.
                    task.last_error
                        .replacen(&task.source_name, &source.display().to_string(), 1)
                };
                (Err(error), 0.0)
            }
        });
    }
    Ok(results)
}

/// `OUT/<stem>.report.json` beside `OUT/<stem>.<ext>`.
pub fn report_path_for(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}.report.json"))
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
