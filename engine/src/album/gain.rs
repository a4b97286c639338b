//! Album-mode levelling: one level for the whole album.
//!
//! In `track` mode every track is taken to the profile's target on its own, so a quiet ballad comes
//! out as loud as the single. In `album` mode ([`plan_album`]):
//!
//! 1. every source is measured and the album's integrated loudness is gated over all of them at once
//!    (BS.1770 over the whole programme: `ebur128`'s `loudness_global_multiple`);
//! 2. one chain-input gain (`chain_input_lufs` minus the album's loudness) goes before the chain on
//!    every track, so the chain treats loud and quiet tracks as the album has them;
//! 3. with a target and a limiter, each track's own target is the album target plus the track's
//!    distance from the album's loudness in the source: the album meets the target and the
//!    differences between tracks stay as they were. Each track is calibrated through the limiter to
//!    its target within [`ALBUM_CALIBRATION_TOLERANCE_LU`], so the differences survive the
//!    true-peak ceiling too (the limiter works harder on the loud tracks, the gain makes up for it);
//! 4. without a limiter (vinyl) or without a target, the chain output is measured too and one fixed
//!    gain goes on every track: to the target, but never so high that the album's highest true peak
//!    passes the ceiling.

use std::path::Path;

use ebur128::{EbuR128, Mode};
use serde::Serialize;

use crate::audio::AudioBlock;
use crate::decode::Decoder;
use crate::error::{Error, Result};
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

/// A fresh integrated-loudness meter for `channels` at `rate`.
fn meter(path: &Path, channels: usize, rate: u32) -> Result<EbuR128> {
    EbuR128::new(channels as u32, rate, Mode::I).map_err(|e| Error::Decode {
        path: path.to_path_buf(),
        reason: format!("loudness meter: {e}"),
    })
}

fn add(meter: &mut EbuR128, block: &AudioBlock) {
    let channels: Vec<&[f32]> = block.channels().map(|c| &c[..block.frames()]).collect();
    // The meter accepts any planar f32 block of its own channel count.
    let _ = meter.add_frames_planar_f32(&channels);
}

fn global(path: &Path, meters: &[EbuR128]) -> Result<Option<f64>> {
    let lufs = EbuR128::loudness_global_multiple(meters.iter()).map_err(|e| Error::Decode {
        path: path.to_path_buf(),
        reason: format!("album loudness: {e}"),
    })?;
    Ok(lufs.is_finite().then_some(lufs))
}

/// Plans album-mode levels for `sources` (in running order) rendered with `profile`.
///
/// # Errors
/// A source's decode error; [`Error::Delivery`] if the whole album is silent.
pub fn plan_album(album: &str, sources: &[&Path], profile: &Profile) -> Result<AlbumLevelPlan> {
    let silent = || Error::Delivery {
        album: album.to_owned(),
        reason: "the album is silent (below the -70 LUFS gate)".to_owned(),
    };
    let first = sources.first().copied().unwrap_or(Path::new(album));

    // 1. The sources.
    let mut input_meters = Vec::with_capacity(sources.len());
    let mut input_lufs = Vec::with_capacity(sources.len());
    for source in sources {
        let mut decoder = Decoder::open(source)?;
        let info = decoder.info().clone();
        let mut m = meter(source, info.channel_count, info.sample_rate_hz)?;
        let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
        while decoder.read(&mut block)? > 0 {
            add(&mut m, &block);
        }
        input_lufs.push(m.loudness_global().ok().filter(|l| l.is_finite()));
        input_meters.push(m);
    }
    let album_input_lufs = global(first, &input_meters)?.ok_or_else(silent)?;
    let chain_input_gain_db = profile
        .loudness
        .chain_input_lufs
        .map_or(0.0, |level| level - album_input_lufs);

    let target_tracks = |target: f64| {
        input_lufs
            .iter()
            .map(|lufs| TrackLevelPlan {
                input_lufs: *lufs,
                chain_lufs: None,
                chain_peak_dbtp: None,
                level: LevelOverride {
                    chain_input_gain_db,
                    level: match lufs {
                        Some(lufs) => Level::TargetLufs(target + lufs - album_input_lufs),
                        None => Level::FixedGainDb(0.0),
                    },
                },
            })
            .collect::<Vec<_>>()
    };
    if let (Some(target), Some(_)) = (profile.loudness.target_lufs, &profile.limiter) {
        return Ok(AlbumLevelPlan {
            album_input_lufs,
            album_chain_lufs: None,
            album_gain_db: None,
            tracks: target_tracks(target),
            warnings: Vec::new(),
        });
    }

    // 4. One fixed gain after the chain.
    let mut chain_meters = Vec::with_capacity(sources.len());
    let mut measured = Vec::with_capacity(sources.len());
    for source in sources {
        let info = Decoder::open(source)?.info().clone();
        let rate = profile.output_rate_hz(info.sample_rate_hz);
        let mut m = meter(source, info.channel_count, rate)?;
        let figures = measure_chain(source, profile, chain_input_gain_db, &mut |block| {
            add(&mut m, block);
        })?;
        measured.push(figures);
        chain_meters.push(m);
    }
    let album_chain_lufs = global(first, &chain_meters)?.ok_or_else(silent)?;
    let mut warnings = Vec::new();
    let ceiling = profile.loudness.ceiling_dbtp;
    let max_peak = measured
        .iter()
        .filter_map(|m| m.true_peak_dbtp)
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
    let tracks = measured
        .iter()
        .zip(input_lufs)
        .map(|(m, input_lufs)| TrackLevelPlan {
            input_lufs,
            chain_lufs: m.integrated_lufs,
            chain_peak_dbtp: m.true_peak_dbtp,
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
