//! The streaming platforms' loudness normalisation, previewed: what gain each would apply to a
//! master and whether turning it up would drive it into a limiter.
//!
//! lathe's model of each platform (its default setting): all turn loud masters down to their
//! reference; Spotify turns quiet ones up and limits peaks at -1 dBTP when it does; Apple Music's
//! Sound Check turns quiet ones up only as far as the peaks allow (to -1 dBTP), without a limiter;
//! YouTube, Tidal, Amazon Music and Deezer never turn up.

use serde::{Deserialize, Serialize};

/// The true peak a platform keeps when it turns a track up, dBTP.
pub const TURN_UP_PEAK_DBTP: f64 = -1.0;

/// How a platform treats a track quieter than its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnUp {
    /// Left as it is.
    Never,
    /// Turned up as far as its peaks allow.
    UntilPeak,
    /// Turned up to the reference, peaks limited.
    WithLimiter,
}

/// A streaming platform's normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Platform {
    /// Name.
    pub name: &'static str,
    /// Reference loudness, LUFS.
    pub reference_lufs: f64,
    /// What it does to quiet tracks.
    pub turn_up: TurnUp,
}

/// The platforms lathe previews.
pub const PLATFORMS: [Platform; 6] = [
    Platform {
        name: "Spotify",
        reference_lufs: -14.0,
        turn_up: TurnUp::WithLimiter,
    },
    Platform {
        name: "Apple Music",
        reference_lufs: -16.0,
        turn_up: TurnUp::UntilPeak,
    },
    Platform {
        name: "YouTube",
        reference_lufs: -14.0,
        turn_up: TurnUp::Never,
    },
    Platform {
        name: "Amazon Music",
        reference_lufs: -14.0,
        turn_up: TurnUp::Never,
    },
    Platform {
        name: "Tidal",
        reference_lufs: -14.0,
        turn_up: TurnUp::Never,
    },
    Platform {
        name: "Deezer",
        reference_lufs: -15.0,
        turn_up: TurnUp::Never,
    },
];

/// What one platform would do to one master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybackPreview {
    /// Platform name.
    pub platform: String,
    /// Its reference, LUFS.
    pub reference_lufs: f64,
    /// The gain it would apply, dB (negative: turned down).
    pub gain_db: f64,
    /// Loudness as played, LUFS.
    pub played_lufs: f64,
    /// `true` if the platform's limiter would work on the master's peaks.
    pub into_limiter: bool,
}

/// The preview of a master of `integrated_lufs` and `true_peak_dbtp` on every platform.
pub fn preview(integrated_lufs: f64, true_peak_dbtp: f64) -> Vec<PlaybackPreview> {
    PLATFORMS
        .iter()
        .map(|p| {
            let wanted = p.reference_lufs - integrated_lufs;
            let (gain_db, into_limiter) = if wanted <= 0.0 {
                (wanted, false)
            } else {
                match p.turn_up {
                    TurnUp::Never => (0.0, false),
                    TurnUp::UntilPeak => (
                        wanted.min((TURN_UP_PEAK_DBTP - true_peak_dbtp).max(0.0)),
                        false,
                    ),
                    TurnUp::WithLimiter => (wanted, true_peak_dbtp + wanted > TURN_UP_PEAK_DBTP),
                }
            };
            PlaybackPreview {
                platform: p.name.to_owned(),
                reference_lufs: p.reference_lufs,
                gain_db,
                played_lufs: integrated_lufs + gain_db,
                into_limiter,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_masters_are_turned_down_everywhere() {
        let p = preview(-9.0, -0.5);
        let gains: Vec<f64> = p.iter().map(|x| x.gain_db).collect();
        assert_eq!(gains, [-5.0, -7.0, -5.0, -5.0, -5.0, -6.0]);
        assert!(p.iter().all(|x| !x.into_limiter));
    }

    #[test]
    fn quiet_masters_are_turned_up_by_some_and_limited_by_spotify() {
        let p = preview(-20.0, -3.0);
        assert_eq!(p[0].gain_db, 6.0);
        assert!(p[0].into_limiter, "Spotify: -3 + 6 = +3 dBTP, limited");
        assert_eq!(p[1].gain_db, 2.0, "Apple: up to -1 dBTP only");
        assert!(!p[1].into_limiter);
        assert_eq!(p[2].gain_db, 0.0, "YouTube never turns up");
        let gentle = preview(-15.0, -6.0);
        assert_eq!(gentle[0].gain_db, 1.0);
        assert!(!gentle[0].into_limiter);
    }
}
