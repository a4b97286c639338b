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

/// The longest file or folder name [`file_name_for`] makes, bytes of UTF-8: well under the 255 of
/// common file systems, with room for a track number, a `-2` and an extension.
pub const MAX_FILE_NAME_BYTES: usize = 120;

/// Names Windows reserves for devices, whatever the extension after them.
const WINDOWS_DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A file (or folder) name from a title, safe on every common file system: path separators,
/// characters Windows refuses and control characters (NUL included) become `_`; leading dots
/// (`..`, hidden files) and trailing dots and spaces (which Windows drops) go; the name is cut to
/// [`MAX_FILE_NAME_BYTES`] on a character boundary; a Windows device name (`CON`, `nul.txt`, `COM1`)
/// gets a leading `_`; and what is left empty becomes `untitled`.
pub fn file_name_for(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let mut name = String::new();
    for c in cleaned.trim().trim_start_matches('.').chars() {
        if name.len() + c.len_utf8() > MAX_FILE_NAME_BYTES {
            break;
        }
        name.push(c);
    }
    let name = name.trim_end_matches(['.', ' ']);
    if name.is_empty() {
        return "untitled".to_owned();
    }
    let device = name.split('.').next().unwrap_or_default().trim_end();
    if WINDOWS_DEVICE_NAMES
        .iter()
        .any(|reserved| device.eq_ignore_ascii_case(reserved))
    {
        let mut guarded = format!("_{name}");
        while guarded.len() > MAX_FILE_NAME_BYTES {
            guarded.pop();
        }
        return guarded;
    }
    name.to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_hostile_titles_are_safe_everywhere() {
        for (title, expected) in [
            ("Dawn Chorus", "Dawn Chorus"),
            ("AC/DC", "AC_DC"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("..", "untitled"),
            (".hidden", "hidden"),
            ("a\u{0}b\nc\rd\u{1b}e", "a_b_c_d_e"),
            ("C:\\Windows\\win.ini", "C__Windows_win.ini"),
            ("What? <Yes> \"No\" | *", "What_ _Yes_ _No_ _ _"),
            ("Vol. 2. ", "Vol. 2"),
            ("   ", "untitled"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("com1", "_com1"),
            ("Lpt9 .flac", "_Lpt9 .flac"),
            ("CONCERT", "CONCERT"),
            ("COM10", "COM10"),
        ] {
            assert_eq!(file_name_for(title), expected, "{title:?}");
        }
    }

    #[test]
    fn long_titles_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let name = file_name_for(&long);
        assert!(name.len() <= MAX_FILE_NAME_BYTES, "{}", name.len());
        assert_eq!(name, "é".repeat(MAX_FILE_NAME_BYTES / 2));
        let ascii = file_name_for(&"x".repeat(300));
        assert_eq!(ascii.len(), MAX_FILE_NAME_BYTES);
        // Cut where a dot would be last: the dot goes too.
        let dotted = format!("{}. tail", "y".repeat(MAX_FILE_NAME_BYTES - 1));
        assert_eq!(file_name_for(&dotted), "y".repeat(MAX_FILE_NAME_BYTES - 1));
        let device = format!("CON.{}", "z".repeat(300));
        let guarded = file_name_for(&device);
        assert!(guarded.starts_with("_CON.") && guarded.len() <= MAX_FILE_NAME_BYTES);
    }
}
