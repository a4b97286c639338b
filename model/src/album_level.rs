//! Album-mode levelling, the arithmetic: one level for the whole album, from the tracks'
//! measurements (the engine measures; this plans).
//!
//! In `track` mode every track is taken to the profile's target on its own, so a quiet ballad comes
//! out as loud as the single. In `album` mode:
//!
//! 1. every source is measured (the engine's `album::gain::measure_source`, the farm's `measure` task) and the album's
//!    integrated loudness is gated over all their 400 ms blocks at once (BS.1770 over the whole
//!    programme, [`crate::gating::gated_lufs`]);
//! 2. one chain-input gain (`chain_input_lufs` minus the album's loudness) goes before the chain on
//!    every track, so the chain treats loud and quiet tracks as the album has them;
//! 3. with a target and a limiter, each track's own target is the album target plus the track's
//!    distance from the album's loudness in the source: the album meets the target and the
//!    differences between tracks stay as they were. Each track is calibrated through the limiter to
//!    its target within the engine's `render::ALBUM_CALIBRATION_TOLERANCE_LU`, so the differences survive the
//!    true-peak ceiling too (the limiter works harder on the loud tracks, the gain makes up for it);
//! 4. without a limiter (vinyl) or without a target, the chain output is measured too
//!    (the engine's `album::gain::measure_source_chain`, the `measure_chain` task) and one fixed
//!    gain goes on every track: to the target, but never so high that the album's highest true peak
//!    passes the ceiling.
//!
//! Tracks without an integrated loudness (see [`crate::level_rule`]) stay out of the album's
//! loudness, which has none of their gating blocks anyway. A track too short to gate (under
//! 400 ms) is levelled by its ungated whole-track loudness as the others are by their integrated
//! loudness: with a limiter, its target is the album target plus its whole-track distance from the
//! album's loudness; with one fixed gain, it gets that gain. A silent or near-silent track (its
//! whole-track loudness below the -70 LUFS gate too) is delivered as digital silence of its length
//! ([`Level::Silence`]). An album with no gating block at all (only such tracks) is measured over
//! its tracks' whole-track loudness, each track one block; an album of only silent tracks is
//! delivered as silence, not refused.
//!
//! [`plan_from_measurements`] is the plan itself, a cheap function of the measurements (the
//! design's `plan(album)`, run by the scheduler, through [`crate::delivery::resolve`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gating::{ABSOLUTE_GATE_LUFS, gated_lufs, lufs_to_energy};
use crate::level::{Level, LevelOverride};
use crate::profile::Profile;

/// Without a limiter, the album gain leaves this much room under the ceiling.
pub const PEAK_MARGIN_DB: f64 = 0.05;

/// The album's level plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlbumLevelPlan {
    /// The album's integrated loudness as delivered, LUFS (`None`: every track is silent or
    /// near-silent).
    pub album_input_lufs: Option<f64>,
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
    /// Ungated loudness over the whole track, LUFS (`None`: digital silence): the level of a track
    /// too short to gate.
    #[serde(default)]
    pub ungated_lufs: Option<f64>,
}

impl SourceMeasurement {
    /// The level the album plan reads for this track, LUFS: its integrated loudness, or for a track
    /// with none its whole-track loudness when that is above the -70 LUFS gate; `None` for a
    /// silent or near-silent track, delivered as silence.
    pub fn level_lufs(&self) -> Option<f64> {
        level_of(self.integrated_lufs, self.ungated_lufs)
    }
}

/// A programme's integrated loudness, or its whole-track loudness above the gate (see
/// [`SourceMeasurement::level_lufs`]).
fn level_of(integrated_lufs: Option<f64>, ungated_lufs: Option<f64>) -> Option<f64> {
    integrated_lufs.or(ungated_lufs.filter(|&lufs| lufs > ABSOLUTE_GATE_LUFS))
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
    /// Ungated loudness over the whole track, LUFS.
    #[serde(default)]
    pub ungated_lufs: Option<f64>,
}

/// `true` when an album planned with `profile` needs its tracks' chain output measured
/// ([`measure_source_chain`]) too: without a limiter or without a target, one fixed gain goes on
/// every track, set from the chain's output.
pub fn needs_chain_figures(profile: &Profile) -> bool {
    profile.loudness.target_lufs.is_none() || profile.limiter.is_none()
}

/// The loudness of an album, LUFS: gated over its tracks' gating blocks at once; for an album with
/// no gating block above the gate (only tracks too short to gate, or silent), gated over the
/// levels of its tracks that have one, each track one block; `None` when every track is silent.
fn album_lufs(blocks: &[&[f64]], levels: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    gated_lufs(blocks).or_else(|| {
        let whole_tracks: Vec<f64> = levels.flatten().map(lufs_to_energy).collect();
        gated_lufs(&[&whole_tracks])
    })
}

/// The album's loudness as delivered (gated over every track's blocks), LUFS (`None` when every
/// track is silent or near-silent), and the chain-input gain that goes before the chain on every
/// track, dB (0 for a silent album).
pub fn album_input(sources: &[&SourceMeasurement], profile: &Profile) -> (Option<f64>, f64) {
    let blocks: Vec<&[f64]> = sources.iter().map(|s| s.gating_blocks.as_slice()).collect();
    let album_input_lufs = album_lufs(&blocks, sources.iter().map(|s| s.level_lufs()));
    let chain_input_gain_db = album_input_lufs
        .zip(profile.loudness.chain_input_lufs)
        .map_or(0.0, |(album, level)| level - album);
    (album_input_lufs, chain_input_gain_db)
}

/// Plans album-mode levels from the tracks' measurements, in running order. `chains` holds each
/// track's chain figures when [`needs_chain_figures`] (measured after [`album_input`]'s gain), and
/// is empty otherwise.
///
/// # Errors
/// [`Error::Delivery`] when the chain figures are missing.
pub fn plan_from_measurements(
    album: &str,
    profile: &Profile,
    sources: &[&SourceMeasurement],
    chains: &[&ChainFigures],
) -> Result<AlbumLevelPlan> {
    let (album_input_lufs, chain_input_gain_db) = album_input(sources, profile);
    if let (Some(target), Some(_)) = (profile.loudness.target_lufs, &profile.limiter) {
        let tracks = sources
            .iter()
            .map(|source| TrackLevelPlan {
                input_lufs: source.integrated_lufs,
                chain_lufs: None,
                chain_peak_dbtp: None,
                level: LevelOverride {
                    chain_input_gain_db,
                    level: match source.level_lufs().zip(album_input_lufs) {
                        Some((lufs, album)) => Level::TargetLufs(target + lufs - album),
                        None => Level::Silence,
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
    // Only the tracks with a level sound in the album; the others are delivered as silence.
    let sounding = |i: &usize| sources[*i].level_lufs().is_some();
    let blocks: Vec<&[f64]> = (0..chains.len())
        .filter(sounding)
        .map(|i| chains[i].gating_blocks.as_slice())
        .collect();
    let album_chain_lufs = album_lufs(
        &blocks,
        (0..chains.len())
            .filter(sounding)
            .map(|i| level_of(chains[i].integrated_lufs, chains[i].ungated_lufs)),
    );
    let mut warnings = Vec::new();
    let ceiling = profile.loudness.ceiling_dbtp;
    let max_peak = (0..chains.len())
        .filter(sounding)
        .filter_map(|i| chains[i].true_peak_dbtp)
        .fold(f64::NEG_INFINITY, f64::max);
    let Some(album_chain_lufs) = album_chain_lufs else {
        // Nothing sounds: every track is delivered as silence.
        if (0..chains.len()).any(|i| sounding(&i)) {
            warnings.push(
                "the chain output of every track is silent: check the profile's stages".to_owned(),
            );
        }
        return Ok(AlbumLevelPlan {
            album_input_lufs,
            album_chain_lufs: None,
            album_gain_db: None,
            tracks: sources
                .iter()
                .map(|source| TrackLevelPlan {
                    input_lufs: source.integrated_lufs,
                    chain_lufs: None,
                    chain_peak_dbtp: None,
                    level: LevelOverride {
                        chain_input_gain_db,
                        level: Level::Silence,
                    },
                })
                .collect(),
            warnings,
        });
    };
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
                level: match source.level_lufs() {
                    Some(_) => Level::FixedGainDb(album_gain_db),
                    None => Level::Silence,
                },
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Gating blocks of a programme at a constant loudness.
    fn blocks(lufs: f64, count: usize) -> Vec<f64> {
        vec![lufs_to_energy(lufs); count]
    }

    #[test]
    fn one_fixed_gain_is_set_by_the_sounding_tracks_and_silence_stays_silence() {
        // Vinyl: no target, no limiter: the album's highest chain peak sets the one gain.
        let profile = Profile::preset("vinyl").unwrap();
        let loud = SourceMeasurement {
            integrated_lufs: Some(-16.0),
            gating_blocks: blocks(-16.0, 50),
            ungated_lufs: Some(-16.0),
        };
        let short = SourceMeasurement {
            ungated_lufs: Some(-20.0),
            ..SourceMeasurement::default()
        };
        let room = SourceMeasurement {
            gating_blocks: blocks(-76.0, 20),
            ungated_lufs: Some(-76.0),
            ..SourceMeasurement::default()
        };
        let chain = |lufs: Option<f64>, peak: f64, gating_blocks: Vec<f64>| ChainFigures {
            integrated_lufs: lufs,
            true_peak_dbtp: Some(peak),
            gating_blocks,
            ungated_lufs: lufs,
        };
        // The room tone's chain peak (as if a click) must not set the album's gain.
        let chains = [
            chain(Some(-16.0), -6.0, blocks(-16.0, 50)),
            chain(Some(-20.0), -4.0, Vec::new()),
            chain(None, -0.5, blocks(-76.0, 20)),
        ];
        let plan = plan_from_measurements(
            "a",
            &profile,
            &[&loud, &short, &room],
            &chains.iter().collect::<Vec<_>>(),
        )
        .unwrap();
        let gain = -1.0 - PEAK_MARGIN_DB - -4.0;
        assert!((plan.album_gain_db.unwrap() - gain).abs() < 1e-9);
        assert!((plan.album_input_lufs.unwrap() - -16.0).abs() < 1e-9);
        let levels: Vec<Level> = plan.tracks.iter().map(|t| t.level.level).collect();
        assert_eq!(
            levels,
            [
                Level::FixedGainDb(plan.album_gain_db.unwrap()),
                Level::FixedGainDb(plan.album_gain_db.unwrap()),
                Level::Silence
            ]
        );

        // Only silence: planned, as silence.
        let silent = SourceMeasurement::default();
        let silent_chain = ChainFigures::default();
        let plan = plan_from_measurements(
            "a",
            &profile,
            &[&silent, &room],
            &[&silent_chain, &chains[2]],
        )
        .unwrap();
        assert_eq!(plan.album_input_lufs, None);
        assert!(plan.tracks.iter().all(|t| t.level.level == Level::Silence));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        // Only stings: the album is measured over their whole-track loudness.
        let other = SourceMeasurement {
            ungated_lufs: Some(-30.0),
            ..SourceMeasurement::default()
        };
        let (album, _) = album_input(&[&short, &other], &profile);
        let mean = -0.691 + 10.0 * ((lufs_to_energy(-20.0) + lufs_to_energy(-30.0)) / 2.0).log10();
        assert!((album.unwrap() - mean).abs() < 1e-9, "{album:?}");
    }
}
