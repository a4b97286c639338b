//! The end of a delivery: `delivery.json` (checksums of every delivered file) and each album's
//! `report.html`, from the tasks' outcomes.

use std::path::{Path, PathBuf};

use crate::album::deliver::{AlbumSummary, DeliveredFile, DeliveryManifest, file_digests};
use crate::album::report::{self, ReportTrack};
use crate::atomic_file::write_atomically;
use crate::error::{Error, Result};
use lathe_model::catalog::{Album, Catalogue, Outlet};
use lathe_model::delivery::outcome::{OutcomeKind, TaskOutcome};
use lathe_model::delivery::outlet::file_name_for;
use lathe_model::delivery::plan::{DeliveryPlan, Work, album_track_name};
use lathe_model::plot::PlotData;

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
                    kind: file.kind,
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
                        f.kind == OutcomeKind::Track
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
