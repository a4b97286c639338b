//! `lathe master MANIFEST.toml`: deliver a catalogue's albums and loose tracks to every outlet it
//! asks for, with the delivery manifest and a report per album. The delivery is planned as the
//! engine's task graph (`lathe_model::delivery::plan::DeliveryPlan`) and run on the embedded farm, the same code
//! and the same bytes as `lathe submit MANIFEST` on a real farm.

use std::path::Path;

use anyhow::Context;
use lathe_engine::album::deliver::DeliveryManifest;
use lathe_engine::album::source_rate_hz;
use lathe_model::catalog::Catalogue;
use lathe_model::delivery::outcome::OutcomeKind;
use lathe_model::delivery::plan::DeliveryPlan;
use lathe_worker::embedded::{DeliveryJob, EmbeddedFarm, fetch_delivery, submit_delivery};

use crate::coordinator::runtime;
use crate::output_folder::{check_output_folder, source_folders};
use crate::progress::{JobView, follow_job};
use crate::table::{Table, level};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Streams};

/// What `lathe master MANIFEST` was asked for besides the manifest.
pub struct DeliveryArgs<'a> {
    /// A profile that replaces the manifest's `[job] profile`.
    pub profile: Option<&'a str>,
    /// The folder the delivery is written to.
    pub out: &'a Path,
    /// Tasks run in parallel (default: all cores).
    pub jobs: Option<usize>,
}

/// Runs the delivery of `manifest` into `args.out`.
pub fn run(
    manifest: &Path,
    args: &DeliveryArgs<'_>,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    let mut catalogue = match Catalogue::load(manifest) {
        Ok(catalogue) => catalogue,
        Err(error) => {
            writeln!(streams.err, "lathe: {error}")?;
            return Ok(EXIT_USAGE);
        }
    };
    if let Some(profile) = args.profile {
        catalogue.job.profile = profile.to_owned();
    }
    if let Err(error) = lathe_model::profile::Profile::load(&catalogue.profile_for(None)) {
        writeln!(streams.err, "lathe: {error}")?;
        return Ok(EXIT_USAGE);
    }
    let sources: Vec<_> = catalogue
        .albums
        .iter()
        .flat_map(|a| a.tracks.iter().map(|t| t.file.clone()))
        .chain(catalogue.tracks.iter().map(|t| t.file.clone()))
        .collect();
    // The masters may sit beside the manifest, but not in (or under) a folder holding sources:
    // neither the folder a source is named in nor, through a link, the one it really is in.
    if let Err(usage) = check_output_folder(args.out, &source_folders(&sources), &sources) {
        writeln!(streams.err, "lathe: {}", usage.0)?;
        return Ok(EXIT_USAGE);
    }
    let plan = match DeliveryPlan::of(&catalogue, &source_rate_hz) {
        Ok(plan) => plan,
        Err(error) => {
            writeln!(streams.err, "lathe: {}: {error}", manifest.display())?;
            return Ok(EXIT_USAGE);
        }
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    std::fs::create_dir_all(args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let name = if catalogue.job.name.is_empty() {
        "lathe master".to_owned()
    } else {
        catalogue.job.name.clone()
    };
    let job = DeliveryJob { catalogue, plan };
    let manifest_out =
        runtime()?.block_on(deliver_on_embedded_farm(&job, &name, jobs, args.out))?;
    print_delivery(&manifest_out, args.out, streams)
}

/// Runs the delivery's task graph on the embedded farm (the coordinator and `jobs` worker loops
/// in this process), a spinner naming the running tasks; then writes the delivery into `out`.
async fn deliver_on_embedded_farm(
    job: &DeliveryJob,
    name: &str,
    jobs: usize,
    out: &Path,
) -> anyhow::Result<DeliveryManifest> {
    // The blobs and the workers' scratch files, removed whatever happens.
    let scratch = out.join(format!(".lathe-work-{}", std::process::id()));
    let outcome = async {
        let farm = EmbeddedFarm::start(jobs, &scratch).await?;
        let outcome = async {
            let job_id =
                submit_delivery(&farm.client, job, name, job.catalogue.job.priority, "").await?;
            follow_job(&farm.client, &job_id, JobView::Spinner).await?;
            let status = farm.client.job_with_tasks(&job_id).await?;
            Ok::<_, anyhow::Error>(fetch_delivery(&farm.client, &status, out).await?)
        }
        .await;
        farm.stop().await;
        outcome
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

/// Prints a delivery: a table of its files, each album's report and notes, failures and QC
/// problems on stderr. Exit 0 only when nothing failed and every file passed QC.
pub(crate) fn print_delivery(
    manifest_out: &DeliveryManifest,
    out: &Path,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    let mut table = Table::new(&["file", "LUFS", "dBTP", "QC"]);
    for file in &manifest_out.files {
        if file.kind == OutcomeKind::Ddp {
            continue;
        }
        table.row(vec![
            file.path.display().to_string(),
            level(file.integrated_lufs),
            level(file.true_peak_dbtp),
            if file.qc.passed {
                "ok".to_owned()
            } else {
                file.qc.issues.join("; ")
            },
        ]);
    }
    write!(streams.out, "{}", table.render())?;
    for album in &manifest_out.albums {
        writeln!(
            streams.out,
            "{}: report {}",
            album.title,
            out.join(&album.report).display()
        )?;
        for note in &album.notes {
            writeln!(streams.out, "  note: {note}")?;
        }
    }
    writeln!(
        streams.out,
        "{} files delivered to {} (manifest: delivery.json)",
        manifest_out.files.len(),
        out.display()
    )?;
    for failure in &manifest_out.failures {
        writeln!(streams.err, "lathe: {failure}")?;
    }
    for file in manifest_out.files.iter().filter(|f| !f.qc.passed) {
        writeln!(
            streams.err,
            "lathe: {}: QC: {}",
            file.path.display(),
            file.qc.issues.join("; ")
        )?;
    }
    Ok(if manifest_out.all_passed() {
        EXIT_OK
    } else {
        EXIT_FAILURES
    })
}
