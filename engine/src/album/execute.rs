//! Runs one resolved task of a delivery plan: measures a source, measures the chain, renders a
//! delivered master (and its lossy encodes, checked after decoding), or assembles an album; writes
//! its files under the output folder at their relative delivery paths.

use std::path::{Path, PathBuf};

use crate::album::assemble::{assemble_cd, assemble_vinyl};
use crate::album::codec_headroom::{CheckedLossyMaster, render_under_ceiling};
use crate::album::deliver::{bext_for, single_format_issues};
use crate::album::gain::{measure_source, measure_source_chain};
use crate::album::outcome_files::place;
use crate::album::report::{self};
use crate::atomic_file::TempFile;
use crate::error::{Error, Result};
use crate::render::{MasterRequest, Progress, master_track};
use crate::tags::{write_tags, write_tags_with_bext};
use lathe_model::catalog::Outlet;
use lathe_model::delivery::outcome::{OutcomeFile, OutcomeKind, TaskOutcome};
use lathe_model::delivery::outlet::LossyCodec;
use lathe_model::delivery::plan::{LevelSource, RenderWork, WORK_FOLDER, Work};
use lathe_model::level::LevelOverride;
use lathe_model::platforms::preview;
use lathe_model::profile::Profile;
use lathe_model::report::QcVerdict;
use lathe_model::stage_config::Container;
use lathe_model::tags::TrackTags;

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
            None => render_delivered_master(render, source()?, out, progress),
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

/// The level a render takes: its own (`None`) or the resolved album plan's, and the plan's warnings.
fn level_override(work: &RenderWork) -> Result<(Option<LevelOverride>, &[String])> {
    match &work.level {
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

/// The engine's request for `work`'s master.
fn master_request<'a>(
    work: &'a RenderWork,
    source: &'a Path,
    output: &'a Path,
    profile: &'a Profile,
    level: Option<LevelOverride>,
) -> MasterRequest<'a> {
    MasterRequest {
        input: source,
        output,
        profile,
        tags: work.tags.clone(),
        level,
        fades: work.fades,
    }
}

/// A per-track master (or a float master for `assemble`).
fn render_delivered_master(
    work: &RenderWork,
    source: &Path,
    out: &Path,
    progress: &mut dyn FnMut(Progress) -> std::ops::ControlFlow<()>,
) -> Result<TaskOutcome> {
    let (level, warnings) = level_override(work)?;
    let final_path = place(out, &work.path)?;
    // Rendered under the work folder, tagged there, then renamed into place.
    let staged = TempFile::new(place(out, &format!("{WORK_FOLDER}/staging/{}", work.path))?);
    let report = master_track(
        &master_request(work, source, staged.path(), &work.profile, level),
        progress,
    )?;
    if work.delivered && work.profile.output.format == Container::Wav {
        let bext = bext_for(&work.tags, &report, &work.profile);
        write_tags_with_bext(staged.path(), &work.tags, Some(&bext))?;
    }
    staged.commit(&final_path)?;
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
                OutcomeKind::Track
            } else {
                OutcomeKind::FloatMaster
            },
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
    let (level, warnings) = level_override(work)?;
    let ceiling = work.profile.loudness.ceiling_dbtp;
    let output = place(out, &work.path)?;
    // The float master is scratch: its guard removes it however this ends.
    let master = TempFile::new(place(
        out,
        &format!("{WORK_FOLDER}/lossy/{}.wav", work.path),
    )?);
    let encoded = TempFile::for_output(&output);
    let mut request = master_request(work, source, master.path(), &work.profile, level);
    request.tags = TrackTags::default();
    let checked = render_under_ceiling(codec, &request, encoded.path(), progress)?;
    write_tags(encoded.path(), &work.tags)?;
    encoded.commit(&output)?;
    let plot = if work.plot {
        Some(report::measure(master.path())?)
    } else {
        None
    };
    drop(master);
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
            kind: OutcomeKind::Track,
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
        plot,
        ..TaskOutcome::default()
    })
}
