//! How a track's level is set when someone who sees more than the track decides it (an album
//! plan), and the fades a track gets.

use serde::{Deserialize, Serialize};

use crate::catalog::FadeCurve;

/// A track's level decided outside the track, e.g. by an album plan
/// ([`crate::album_level::plan_from_measurements`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelOverride {
    /// Gain before the tone and dynamics chain, dB (instead of `chain_input_lufs - input`).
    pub chain_input_gain_db: f64,
    /// The level after the chain.
    pub level: Level,
}

/// How the gain after the chain is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Level {
    /// Reach this integrated loudness (through the limiter, calibrated like the profile's target).
    TargetLufs(f64),
    /// Apply exactly this gain, dB (no calibration; the limiter, if any, still guards the ceiling).
    FixedGainDb(f64),
    /// Deliver digital silence of the track's length: an album's silent or near-silent track,
    /// left out of the album's loudness ([`LevelRule::Silence`]).
    Silence,
}

/// Fade-in and fade-out of a track, in seconds of output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackFades {
    /// Fade-in length, seconds.
    pub fade_in_s: f64,
    /// Fade-out length, seconds.
    pub fade_out_s: f64,
    /// Shape of both.
    pub curve: FadeCurve,
}

impl TrackFades {
    /// The fades of a track, or `None` when both lengths are zero.
    pub fn of(fade_in_s: f64, fade_out_s: f64, curve: FadeCurve) -> Option<Self> {
        (fade_in_s > 0.0 || fade_out_s > 0.0).then_some(Self {
            fade_in_s,
            fade_out_s,
            curve,
        })
    }
}
