//! What each outlet renders with: its profile, its lossy codecs, and the names its files get.

use serde::{Deserialize, Serialize};

use crate::catalog::Outlet;
use crate::error::Result;
use crate::profile::Profile;
use crate::stage_config::{Container, DitherMode};

/// The CD sample rate.
pub const CD_SAMPLE_RATE_HZ: u32 = 44_100;

/// A lossy format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossyCodec {
    /// MP3, constant 320 kbit/s.
    Mp3Cbr320,
    /// MP3, LAME VBR quality 0.
    Mp3V0,
    /// Opus in Ogg, 48 kHz, VBR around the engine's Opus bitrate.
    Opus,
}

impl LossyCodec {
    /// File name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Mp3Cbr320 | Self::Mp3V0 => "mp3",
            Self::Opus => "opus",
        }
    }

    /// Short name, used as the delivery sub-folder.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mp3Cbr320 => "mp3-320",
            Self::Mp3V0 => "mp3-v0",
            Self::Opus => "opus",
        }
    }
}

/// A file name from a title: no path separators or characters that trouble file systems.
pub fn file_name_for(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').to_owned();
    if trimmed.is_empty() {
        "untitled".to_owned()
    } else {
        trimmed
    }
}

/// The profile an outlet renders with. `job_profile` serves the streaming-class outlets.
pub fn outlet_profile(outlet: Outlet, job_profile: &Profile) -> Result<Profile> {
    Ok(match outlet {
        Outlet::Streaming => job_profile.clone(),
        Outlet::Cd => float_master(Profile::preset("cd")?, None),
        Outlet::Vinyl => float_master(Profile::preset("vinyl")?, None),
        Outlet::Broadcast => Profile::preset("broadcast")?,
        Outlet::Hires => Profile::preset("hires")?,
        Outlet::Mp3 => float_master(job_profile.clone(), Some(44_100)),
        Outlet::Opus => float_master(job_profile.clone(), Some(48_000)),
    })
}

/// `profile` writing 32-bit float WAV (no dither), optionally at a fixed rate: the intermediate a
/// continuous render or a lossy encode is made from.
fn float_master(mut profile: Profile, rate_hz: Option<u32>) -> Profile {
    profile.output.format = Container::Wav;
    profile.output.bit_depth = 32;
    profile.output.dither = DitherMode::None;
    if rate_hz.is_some() {
        profile.output.sample_rate_hz = rate_hz;
        profile.output.min_sample_rate_hz = None;
    }
    profile
}
