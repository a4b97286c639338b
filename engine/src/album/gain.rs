//! Album-mode levelling: one level for the whole album.
//!
//! In `track` mode every track is taken to the profile's target on its own, so a quiet ballad comes
//! out as loud as the single. In `album` mode ([`plan_album`]):
//!
//! 1. every source is measured ([`measure_source`], the farm's `measure` task) and the album's
//!    integrated loudness is gated over all their 400 ms blocks at once (BS.1770 over the whole
//!    programme, [`crate::loudness::gated_lufs`]);
//! 2. one chain-input gain (`chain_input_lufs` minus the album's loudness) goes before the chain on
//!    every track, so the chain treats loud and quiet tracks as the album has them;
//! 3. with a target and a limiter, each track's own target is the album target plus the track's
//!    distance from the album's loudness in the source: the album meets the target and the
//!    differences between tracks stay as they were. Each track is calibrated through the limiter to
//!    its target within [`ALBUM_CALIBRATION_TOLERANCE_LU`], so the differences survive the
//!    true-peak ceiling too (the limiter works harder on the loud tracks, the gain makes up for it);
//! 4. without a limiter (vinyl) or without a target, the chain output is measured too
//!    ([`measure_source_chain`], the `measure_chain` task) and one fixed
//!    gain goes on every track: to the target, but never so high that the album's highest true peak
//!    passes the ceiling.
//!
//! [`plan_from_measurements`] is the plan itself, a cheap function of the measurements (the
//! design's `plan(album)`, run by the scheduler); [`plan_album`] measures and plans in one call.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audio::AudioBlock;
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::loudness::{LoudnessMeter, gated_lufs};
use crate::profile::Profile;
use crate::render::{BLOCK_FRAMES, Level, LevelOverride, measure_chain};

/// Each album track is calibrated to its own target this closely, so that two tracks' difference
/// stays within 0.1 LU of the source's.
pub const ALBUM_CALIBRATION_TOLERANCE_LU: f64 = 0.04;

/// Without a limiter, the album gain leaves this much room under the ceiling.
pub const PEAK_MARGIN_DB: f64 = 0.05;

/// The album's level plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlbumLevelPlan {
    /// The album's integrated loudness as delivered, LUFS.
    pub album_input_lufs: f64,
    /// The album's integrated loudness after the chain, LUFS (measured only for a fixed gain).
    pub album_chain_lufs: Option<f64>,
    /// The fixed gain after the chain for the whole album, dB (without a limiter or a target).
    pub album_gain_db: Option<f64>,
    /// Each track's figures and level.
    pub tracks: Vec<TrackLevelPlan>,
    /// Things the engineer should know (the gain was capped).
    pub warnings: Vec<String>,
}

/// One track of an [`AlbumLevelPlan`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackLevelPlan {
    /// Source loudness, LUFS (`None`: silent).
    pub input_lufs: Option<f64>,
    /// Loudness after the chain, LUFS.
    pub chain_lufs: Option<f64>,
    /// True peak after the chain, dBTP.
    pub chain_peak_dbtp: Option<f64>,
    /// The level the render is given.
    pub level: LevelOverride,
}

/// A source's loudness, as the album plan needs it (the `measure` task's figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMeasurement {
    /// Integrated loudness, LUFS (`None`: silent).
    pub integrated_lufs: Option<f64>,
    /// BS.1770 weighted mean-square energy of every 400 ms gating block (75 % overlap): the
    /// album's loudness is gated over all its tracks' blocks at once.
    pub gating_blocks: Vec<f64>,
}

/// A track's chain output, as a fixed-gain album plan needs it (the `measure_chain` task's
/// figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainFigures {
    /// Integrated loudness, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// The gating blocks, as in [`SourceMeasurement`].
    pub gating_blocks: Vec<f64>,
}

/// Measures a source for the album plan (one decode pass at its own rate).
///
/// # Errors
/// A decode error.
pub fn measure_source(path: &Path) -> Result<SourceMeasurement> {
    let mut decoder = Decoder::open(path)?;
    let info = decoder.info().clone();
    let mut meter = LoudnessMeter::integrated_only(info.channel_count, info.sample_rate_hz);
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    while decoder.read(&mut block)? > 0 {
        meter.add(&block);
    }
    Ok(SourceMeasurement {
        integrated_lufs: meter.figures().integrated_lufs,
        gating_blocks: meter.gating_blocks().to_vec(),
    })
}

/// Runs `profile`'s chain on a source after the album's chain-input gain and measures its output.
///
/// # Errors
/// A decode or profile error.
pub fn measure_source_chain(
    path: &Path,
    profile: &Profile,
    chain_input_gain_db: f64,
) -> Result<ChainFigures> {
    let info = Decoder::open(path)?.info().clone();
    let mut meter = LoudnessMeter::integrated_only(
        info.channel_count,
        profile.output_rate_hz(info.sample_rate_hz),
    );
    let figures = measure_chain(path, profile, chain_input_gain_db, &mut |block| {
        meter.add(block);
    })?;
    Ok(ChainFigures {
        integrated_lufs: figures.integrated_lufs,
        true_peak_dbtp: figures.true_peak_dbtp,
        gating_blocks: meter.gating_blocks().to_vec(),
    })
}

/// `true` when an album planned with `profile` needs its tracks' chain output measured
/// ([`measure_source_chain`]) too: without a limiter or without a target, one fixed gain goes on
/// every track, set from the chain's output.
pub fn needs_chain_figures(profile: &Profile) -> bool {
    profile.loudness.target_lufs.is_none() || profile.limiter.is_none()
}

fn silent(album: &str) -> Error {
    Error::Delivery {
        album: album.to_owned(),
        reason: "the album is silent (below the -70 LUFS gate)".to_owned(),
    }
}

/// The album's loudness as delivered (gated over every track's blocks), LUFS, and the chain-input
/// gain that goes before the chain on every track, dB.
///
/// # Errors
/// [`Error::Delivery`] when the whole album is silent.
pub fn album_input(
    album: &str,
    sources: &[&SourceMeasurement],
    profile: &Profile,
) -> Result<(f64, f64)> {
    let blocks: Vec<&[f64]> = sources.iter().map(|s| s.gating_blocks.as_slice()).collect();
    let album_input_lufs = gated_lufs(&blocks).ok_or_else(|| silent(album))?;
    let chain_input_gain_db = profile
        .loudness
        .chain_input_lufs
        .map_or(0.0, |level| level - album_input_lufs);
    Ok((album_input_lufs, chain_input_gain_db))
}

/// Plans album-mode levels from the tracks' measurements, in running order. `chains` holds each
/// track's chain figures when [`needs_chain_figures`] (measured after [`album_input`]'s gain), and
/// is empty otherwise.
///
/// # Errors
/// [`Error::Delivery`] when the album is silent or the chain figures are missing.
pub fn plan_from_measurements(
    album: &str,
    profile: &Profile,
    sources: &[&SourceMeasurement],
    chains: &[&ChainFigures],
) -> Result<AlbumLevelPlan> {
    let (album_input_lufs, chain_input_gain_db) = album_input(album, sources, profile)?;
    if let (Some(target), Some(_)) = (profile.loudness.target_lufs, &profile.limiter) {
        let tracks = sources
            .iter()
            .map(|source| TrackLevelPlan {
                input_lufs: source.integrated_lufs,
                chain_lufs: None,
                chain_peak_dbtp: None,
                level: LevelOverride {
                    chain_input_gain_db,
                    level: match source.integrated_lufs {
                        Some(lufs) => Level::TargetLufs(target + lufs - album_input_lufs),
                        None => Level::FixedGainDb(0.0),
                    },
                },
            })
            .collect();
        return Ok(AlbumLevelPlan {
            album_input_lufs,
            album_chain_lufs: None,
            album_gain_db: None,
            tracks,
            warnings: Vec::new(),
        });
    }

    // One fixed gain after the chain.
    if chains.len() != sources.len() {
        return Err(Error::Delivery {
            album: album.to_owned(),
            reason: format!(
                "the plan needs the chain figures of all {} tracks, has {}",
                sources.len(),
                chains.len()
            ),
        });
    }
    let blocks: Vec<&[f64]> = chains.iter().map(|c| c.gating_blocks.as_slice()).collect();
    let album_chain_lufs = gated_lufs(&blocks).ok_or_else(|| silent(album))?;
    let mut warnings = Vec::new();
    let ceiling = profile.loudness.ceiling_dbtp;
    let max_peak = chains
        .iter()
        .filter_map(|c| c.true_peak_dbtp)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut album_gain_db = match profile.loudness.target_lufs {
        Some(target) => target - album_chain_lufs,
        None => ceiling - PEAK_MARGIN_DB - max_peak,
    };
    if album_gain_db > profile.loudness.max_gain_db {
        warnings.push(format!(
            "the album needs {album_gain_db:.1} dB of gain, more than max_gain_db ({:.1} dB): it stays under its target",
            profile.loudness.max_gain_db
        ));
        album_gain_db = profile.loudness.max_gain_db;
    }
    if profile.limiter.is_none() && max_peak + album_gain_db > ceiling - PEAK_MARGIN_DB {
        let capped = ceiling - PEAK_MARGIN_DB - max_peak;
        if profile.loudness.target_lufs.is_some() {
            warnings.push(format!(
                "no limiter: the album gain is capped at {capped:.2} dB (not {album_gain_db:.2} dB) by its loudest peak"
            ));
        }
        album_gain_db = capped;
    }
    let tracks = chains
        .iter()
        .zip(sources)
        .map(|(chain, source)| TrackLevelPlan {
            input_lufs: source.integrated_lufs,
            chain_lufs: chain.integrated_lufs,
            chain_peak_dbtp: chain.true_peak_dbtp,
            level: LevelOverride {
                chain_input_gain_db,
                level: Level::FixedGainDb(album_gain_db),
            },
        })
        .collect();
    Ok(AlbumLevelPlan {
        album_input_lufs,
        album_chain_lufs: Some(album_chain_lufs),
        album_gain_db: Some(album_gain_db),
        tracks,
        warnings,
    })
}

/// Plans album-mode levels for `sources` (in running order) rendered with `profile`: measures them
/// (and their chain output when [`needs_chain_figures`]) and calls [`plan_from_measurements`].
///
/// # Errors
/// A source's decode error; [`Error::Delivery`] if the whole album is silent.
pub fn plan_album(album: &str, sources: &[&Path], profile: &Profile) -> Result<AlbumLevelPlan> {
    let measured = sources
        .iter()
        .map(|path| measure_source(path))
        .collect::<Result<Vec<_>>>()?;
    let measured_refs: Vec<&SourceMeasurement> = measured.iter().collect();
    let chains = if needs_chain_figures(profile) {
        let (_, chain_input_gain_db) = album_input(album, &measured_refs, profile)?;
        sources
            .iter()
            .map(|path| measure_source_chain(path, profile, chain_input_gain_db))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let chain_refs: Vec<&ChainFigures> = chains.iter().collect();
    plan_from_measurements(album, profile, &measured_refs, &chain_refs)
}
