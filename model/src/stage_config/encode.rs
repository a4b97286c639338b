//! What a master is written as: container and bit depth.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::InvalidValue;

/// The container (and codec) of a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// RIFF WAVE, PCM integer or IEEE float.
    Wav,
    /// FLAC (lossless).
    Flac,
}

impl Container {
    /// File name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Flac => "flac",
        }
    }

    /// Bit depths this container accepts (WAV 32 means 32-bit float).
    pub fn allowed_bit_depths(self) -> &'static [u32] {
        match self {
            Self::Wav => &[16, 24, 32],
            Self::Flac => &[16, 24],
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// What to write: container and bit depth. In a profile it reads `format = "flac"`,
/// `bit_depth = 24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSpec {
    /// The container.
    #[serde(rename = "format")]
    pub container: Container,
    /// Bits per sample: WAV 16 or 24 (integer) or 32 (float); FLAC 16 or 24.
    pub bit_depth: u32,
}

impl EncodeSpec {
    /// Checks the bit depth against the container.
    ///
    /// # Errors
    /// An [`InvalidValue`] for key `bit_depth` naming the depths the container allows.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let allowed = self.container.allowed_bit_depths();
        if allowed.contains(&self.bit_depth) {
            return Ok(());
        }
        let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
        Err(InvalidValue::new(
            "bit_depth",
            format!(
                "{} is not allowed for {}; allowed {}{}",
                self.bit_depth,
                self.container,
                list.join(", "),
                if self.container == Container::Wav {
                    " (32 = float)"
                } else {
                    ""
                }
            ),
        ))
    }
}
