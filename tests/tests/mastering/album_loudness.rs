//! Album-mode levelling end to end: one level for the album, the differences between tracks kept.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lathe_engine::album::gain::{measure_source, measure_source_chain};
use lathe_engine::qc::analyze_file;
use lathe_engine::render::{MasterRequest, master_track};
use lathe_model::album_level::{
    AlbumLevelPlan, ChainFigures, SourceMeasurement, album_input, needs_chain_figures,
    plan_from_measurements,
};
use lathe_model::level::Level;
use lathe_model::profile::Profile;
use lathe_model::tags::TrackTags;
use lathe_synth::{Style, TrackRecipe, write_wav};

/// Plans album-mode levels for `sources` (in running order) rendered with `profile` as the farm's
/// tasks do: measures them (and their chain output when the plan needs it), then plans.
fn plan_album(
    album: &str,
    sources: &[&Path],
    profile: &Profile,
) -> lathe_engine::Result<AlbumLevelPlan> {
    let measured = sources
        .iter()
        .map(|path| measure_source(path))
        .collect::<lathe_engine::Result<Vec<_>>>()?;
    let measured_refs: Vec<&SourceMeasurement> = measured.iter().collect();
    let chains = if needs_chain_figures(profile) {
        let (_, chain_input_gain_db) = album_input(&measured_refs, profile);
        sources
            .iter()
            .map(|path| measure_source_chain(path, profile, chain_input_gain_db))
            .collect::<lathe_engine::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let chain_refs: Vec<&ChainFigures> = chains.iter().collect();
    Ok(plan_from_measurements(
        album,
        profile,
        &measured_refs,
        &chain_refs,
    )?)
}

/// A loud single, a quiet ballad and a medium track, 12 s each.
fn album(dir: &Path) -> Vec<PathBuf> {
    [
        (Style::Rock, -12.0, 1u64),
        (Style::Ballad, -27.0, 2),
        (Style::Pop, -19.0, 3),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (style, level_db, seed))| {
        let recipe = TrackRecipe {
            duration_s: 12.0,
            level_db,
            ..TrackRecipe::new(style, seed)
        };
        let path = dir.join(format!("{i}.wav"));
        write_wav(&recipe, &path, 32).unwrap();
        path
    })
    .collect()
}

#[test]
fn album_mode_meets_the_target_and_keeps_inter_track_differences() {
    let dir = tempfile::tempdir().unwrap();
    let sources = album(dir.path());
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let profile = Profile::preset("streaming").unwrap();
    let plan = plan_album("test album", &refs, &profile).unwrap();
    let mut masters = Vec::new();
    for (i, (source, track)) in sources.iter().zip(&plan.tracks).enumerate() {
        let output = dir.path().join(format!("{i}.master.flac"));
        let report = master_track(
            &MasterRequest {
                input: source,
                output: &output,
                profile: &profile,
                tags: TrackTags::default(),
                level: Some(track.level),
                fades: None,
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
        assert!(report.qc.passed, "{:?}", report.qc.issues);
        assert!(matches!(track.level.level, Level::TargetLufs(_)));
        masters.push(output);
    }
    let input: Vec<f64> = sources
        .iter()
        .map(|p| analyze_file(p).unwrap().integrated_lufs.unwrap())
        .collect();
    let output: Vec<f64> = masters
        .iter()
        .map(|p| analyze_file(p).unwrap().integrated_lufs.unwrap())
        .collect();
    // The ballad stays quieter than the single by as much as it was.
    assert!(input[0] - input[1] > 10.0, "{input:?}");
    for i in 0..3 {
        for j in 0..3 {
            let kept = (output[i] - output[j]) - (input[i] - input[j]);
            assert!(
                kept.abs() <= 0.1,
                "tracks {i}, {j}: difference changed by {kept:.3} LU (in {input:?}, out {output:?})"
            );
        }
    }
    // The album as a whole (gated over all masters at once) meets the target.
    let master_refs: Vec<&Path> = masters.iter().map(PathBuf::as_path).collect();
    let measured = plan_album("masters", &master_refs, &profile).unwrap();
    assert!(
        (measured.album_input_lufs.unwrap() + 14.0).abs() <= 0.1,
        "album loudness {:?} LUFS",
        measured.album_input_lufs
    );
    // Every master under the ceiling.
    for master in &masters {
        assert!(analyze_file(master).unwrap().true_peak_dbtp.unwrap() <= -1.0);
    }
}

#[test]
fn album_mode_without_a_limiter_uses_one_gain_under_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let sources = album(dir.path());
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let profile = Profile::preset("vinyl").unwrap();
    let plan = plan_album("test album", &refs, &profile).unwrap();
    let gain = plan.album_gain_db.unwrap();
    for track in &plan.tracks {
        assert_eq!(track.level.level, Level::FixedGainDb(gain));
    }
    let peak = plan
        .tracks
        .iter()
        .filter_map(|t| t.chain_peak_dbtp)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!((peak + gain - (-1.05)).abs() < 1e-9, "{peak} + {gain}");
}
