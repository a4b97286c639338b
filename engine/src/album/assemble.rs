//! `assemble(album, outlet)`: a CD image with its CUE sheet and DDP, or vinyl sides, from the
//! album's float masters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::album::cue::{CD_FRAME_SAMPLES, CdLayout, CdTrack};
use crate::album::ddp::{DDP_FILES, write_ddp};
use crate::album::deliver::{
    Programme, album_seed, master_frames, profile_dither, render_programme,
};
use crate::album::outcome_files::{paperwork_file, place, programme_file};
use crate::album::sequence::{self, Placement, SequenceInput};
use crate::album::vinyl;
use crate::atomic_file::write_atomically;
use crate::error::{Error, Result};
use crate::tags::{BroadcastExtension, write_tags_with_bext};
use lathe_model::delivery::outcome::{OutcomeKind, TaskOutcome};
use lathe_model::delivery::outlet::{CD_SAMPLE_RATE_HZ, file_name_for};
use lathe_model::delivery::plan::AssembleWork;
use lathe_model::report::{QcVerdict, TrackReport};
use lathe_model::stage_config::DitherMode;
use lathe_model::tags::TrackTags;

/// Checks that `inputs` and the resolved reports match the album's tracks.
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
pub(crate) fn assemble_cd(
    work: &AssembleWork,
    inputs: &[PathBuf],
    out: &Path,
) -> Result<TaskOutcome> {
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
        OutcomeKind::AlbumImage,
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
    files.push(paperwork_file(out, &cue, OutcomeKind::CueSheet, &paperwork));
    let ddp = place(out, &format!("{stem}/cd/ddp/DDPID"))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    write_ddp(&ddp, &layout, &image)?;
    for name in DDP_FILES {
        files.push(paperwork_file(
            out,
            &ddp.join(name),
            OutcomeKind::Ddp,
            &paperwork,
        ));
    }
    Ok(TaskOutcome {
        files,
        notes,
        ..TaskOutcome::default()
    })
}

/// One 24-bit WAV per side, with its length checked against the format.
pub(crate) fn assemble_vinyl(
    work: &AssembleWork,
    inputs: &[PathBuf],
    out: &Path,
) -> Result<TaskOutcome> {
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
            out,
            &path,
            OutcomeKind::Side,
            &analysis,
            issues,
            side_notes,
        ));
    }
    Ok(outcome)
}
