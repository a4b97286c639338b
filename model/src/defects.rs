//! The defects of a recording as the engine's defect detector measures them: clicks, crackle,
//! the noise floor and its shape, mains hum and clipping. `lathe analyze` prints them, and with
//! `[restore] auto = true` they decide which restorers run ([`crate::restore_plan`]).

use serde::{Deserialize, Serialize};

/// Levels below this are reported as this, dBFS (JSON has no minus infinity).
pub const FLOOR_DBFS: f64 = -200.0;

/// Everything the defect detector found in one track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Defects {
    /// The sample rate measured at, Hz.
    pub sample_rate_hz: u32,
    /// Seconds of audio measured.
    pub duration_s: f64,
    /// Impulsive events longer than [`CRACKLE_MAX_FRAMES`] samples a minute, per channel.
    pub clicks_per_min: f64,
    /// Impulsive events of one to [`CRACKLE_MAX_FRAMES`] samples a second, per channel.
    pub crackle_per_s: f64,
    /// The noise floor and its shape.
    pub noise: NoiseFloor,
    /// Mains hum, when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hum: Option<Hum>,
    /// Runs of samples stuck at, or piled up near, the track's peak.
    pub clipping: Clipping,
}

/// The longest impulsive event counted as crackle rather than as a click, samples.
pub const CRACKLE_MAX_FRAMES: usize = 4;

/// The noise floor: the quiet end of a short-time spectrum's level in a few octave bands
/// (minimum statistics), and how steady it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// The floor over the whole band, dBFS RMS (the sum of the bands' floors).
    pub level_dbfs: f64,
    /// The programme's mean level over its sounding frames minus the floor, dB.
    pub snr_db: f64,
    /// The floor in each octave band, dBFS RMS of the band.
    pub bands: Vec<NoiseBand>,
    /// The least-squares slope of the floor's spectral density over the bands from 250 Hz up,
    /// dB an octave (white 0, pink -3).
    pub slope_db_per_octave: f64,
    /// The floor's density in the bands from 4 kHz up over its density from 500 Hz to 2 kHz, dB:
    /// positive for the high-frequency lift of tape hiss.
    pub high_lift_db: f64,
    /// The spectrum's name.
    pub shape: NoiseShape,
    /// How far the band levels rise above their floor in half of the frames, dB, in the most
    /// steady band from 2 kHz up: a few dB where a steady noise fills the band, tens of dB where
    /// the floor is only the programme's quiet moments.
    pub spread_db: f64,
}

/// One octave band of the noise floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseBand {
    /// Centre frequency, Hz.
    pub centre_hz: f64,
    /// Floor, dBFS RMS of the band.
    pub level_dbfs: f64,
}

/// The name of a noise spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseShape {
    /// Flat density (within 1.5 dB an octave).
    White,
    /// Density falling about 3 dB an octave.
    Pink,
    /// Flat with a high-frequency lift of 6 dB or more, as tape hiss is.
    Tape,
    /// Anything else (often the programme's own spectrum where there is no noise to speak of).
    Other,
}

impl NoiseShape {
    /// The shape of a floor with this slope and high-frequency lift.
    pub fn of(slope_db_per_octave: f64, high_lift_db: f64) -> Self {
        if high_lift_db >= 6.0 {
            Self::Tape
        } else if slope_db_per_octave.abs() < 1.5 {
            Self::White
        } else if (-5.0..=-1.5).contains(&slope_db_per_octave) {
            Self::Pink
        } else {
            Self::Other
        }
    }

    /// The shape's name as reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::White => "white",
            Self::Pink => "pink",
            Self::Tape => "tape",
            Self::Other => "other",
        }
    }
}

/// Mains hum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hum {
    /// Nominal mains frequency, 50 or 60 Hz.
    pub mains_hz: f64,
    /// The measured fundamental, Hz.
    pub fundamental_hz: f64,
    /// Level of all harmonics together, dBFS RMS.
    pub level_dbfs: f64,
    /// Each harmonic found: its number (1 = fundamental) and level, dBFS.
    pub harmonics: Vec<HumHarmonic>,
}

/// One harmonic of hum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HumHarmonic {
    /// Harmonic number, the fundamental being 1.
    pub number: usize,
    /// Level, dBFS RMS.
    pub level_dbfs: f64,
}

/// Clipping: flat runs at the track's peak (hard) and samples piled up just under it (soft).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clipping {
    /// The track's sample peak, dBFS (the level clipped runs sit at).
    pub peak_dbfs: f64,
    /// Runs of [`MIN_CLIPPED_RUN`] or more equal samples at the peak (hard clipping), over all
    /// channels.
    pub runs: u64,
    /// Those runs a minute, per channel.
    pub runs_per_min: f64,
    /// The longest of them, samples.
    pub longest_run: usize,
    /// Samples within 0.5 dB of the peak for every sample from 6 to 6.5 dB under it: a few
    /// hundredths in open programme, near or above 1 where a soft (tanh) clipper piles the
    /// tops up under the peak.
    pub pile_up: f64,
}

/// The shortest run of equal samples at the peak counted as hard clipping.
pub const MIN_CLIPPED_RUN: usize = 3;
