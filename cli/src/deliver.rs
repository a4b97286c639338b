//! `lathe master MANIFEST.toml`: deliver a catalogue's albums and loose tracks to every outlet it
//! asks for, with the delivery manifest and a report per album.

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lathe_engine::album::deliver::deliver;
use lathe_engine::catalog::Catalogue;

use crate::master::{MasterArgs, check_output_folder};
use crate::table::{Table, level};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Streams};

/// Runs the delivery of `manifest` into `args.out`.
pub fn run(manifest: &Path, args: &MasterArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    let mut catalogue = match Catalogue::load(manifest) {
        Ok(catalogue) => catalogue,
        Err(error) => {
            writeln!(streams.err, "lathe: {error}")?;
            return Ok(EXIT_USAGE);
        }
    };
    if let Some(profile) = &args.profile {
        catalogue.job.profile = profile.clone();
    }
    if let Err(error) = lathe_engine::profile::Profile::load(&catalogue.profile_for(None)) {
        writeln!(streams.err, "lathe: {error}")?;
        return Ok(EXIT_USAGE);
    }
    let sources: Vec<_> = catalogue
        .albums
        .iter()
        .flat_map(|a| a.tracks.iter().map(|t| t.file.clone()))
        .chain(catalogue.tracks.iter().map(|t| t.file.clone()))
        .collect();
    // The masters may sit beside the manifest, but not in (or under) a folder holding sources.
    let mut source_folders: Vec<_> = sources
        .iter()
        .filter_map(|s| s.parent().map(Path::to_path_buf))
        .collect();
    source_folders.sort();
    source_folders.dedup();
    if let Err(usage) = check_output_folder(&args.out, &source_folders, &sources) {
        writeln!(streams.err, "lathe: {}", usage.0)?;
        return Ok(EXIT_USAGE);
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let log = |line: &str| {
        bar.set_message(line.trim().to_owned());
        bar.tick();
    };
    let manifest_out = deliver(&catalogue, &args.out, jobs, &log)?;
    bar.finish_and_clear();

    let mut table = Table::new(&["file", "LUFS", "dBTP", "QC"]);
    for file in &manifest_out.files {
        if file.kind == "ddp" {
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
            args.out.join(&album.report).display()
        )?;
        for note in &album.notes {
            writeln!(streams.out, "  note: {note}")?;
        }
    }
    writeln!(
        streams.out,
        "{} files delivered to {} (manifest: delivery.json)",
        manifest_out.files.len(),
        args.out.display()
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
