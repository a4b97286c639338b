//! Mastering profiles: what a master should sound like and how it is delivered.
//!
//! A profile is TOML, parsed by serde into closed types (`deny_unknown_fields` everywhere) and then
//! validated; every error names the profile, the key (`stage[2].ratio`) and the allowed range. The
//! built-in presets are TOML files shipped inside the crate, in the same format a user writes:
//!
//! ```toml
//! name = "streaming"
//! description = "..."
//!
//! [output]
//! format = "flac"            # flac | wav
//! bit_depth = 24             # 16 | 24, or 32 (float, WAV only)
//! min_sample_rate_hz = 44100 # optional: sources below this rate are resampled up to it
//! # sample_rate_hz = 48000   # optional: a fixed output rate (otherwise the source rate)
//! dither = "tpdf"            # none | tpdf | shaped (ignored for 32-bit float)
//!
//! [[stage]]                  # the tone and dynamics chain, in order
//! type = "highpass"
//! frequency_hz = 20.0
//!
//! [loudness]
//! chain_input_lufs = -18.0   # optional: the level the chain above sees
//! target_lufs = -14.0        # optional: without it the track is peak-normalised to the ceiling
//! ceiling_dbtp = -1.0        # the true-peak ceiling every master respects
//!
//! [limiter]                  # optional: without it the gain is capped so peaks stay under the ceiling
//! lookahead_ms = 5.0
//! release_ms = 150.0
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{InvalidValue, check_range};
use crate::error::{Error, Result};
use crate::stage_config::restore::RestoreConfig;
use crate::stage_config::{
    CompressorConfig, Container, DeesserConfig, DitherMode, EncodeSpec, EqConfig, HighpassConfig,
    LimiterConfig, MultibandConfig, StereoConfig,
};

/// The built-in presets: name and TOML source.
pub const PRESETS: [(&str, &str); 6] = [
    ("streaming", include_str!("presets/streaming.toml")),
    ("apple", include_str!("presets/apple.toml")),
    ("broadcast", include_str!("presets/broadcast.toml")),
    ("cd", include_str!("presets/cd.toml")),
    ("vinyl", include_str!("presets/vinyl.toml")),
    ("hires", include_str!("presets/hires.toml")),
];

/// A complete mastering profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name, used in reports.
    pub name: String,
    /// One line on what the profile is for.
    #[serde(default)]
    pub description: String,
    /// The delivery format.
    pub output: OutputConfig,
    /// Restoration (declip, declick, decrackle, dehum, denoise), run before the tone and dynamics
    /// chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreConfig>,
    /// The tone and dynamics chain, applied in order before loudness and limiting.
    #[serde(default, rename = "stage", skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageConfig>,
    /// Loudness target and true-peak ceiling.
    pub loudness: LoudnessConfig,
    /// The true-peak limiter; without it nothing is limited and the gain is capped by the ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limiter: Option<LimiterSettings>,
}

/// The delivery format of a master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Container and codec.
    pub format: Container,
    /// 16 or 24 (integer PCM), or 32 (float, WAV only).
    pub bit_depth: u32,
    /// A fixed output sample rate; without it the source rate is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate_hz: Option<u32>,
    /// Sources below this rate are resampled up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_rate_hz: Option<u32>,
    /// Dither for the word-length reduction to `bit_depth`.
    #[serde(default = "default_dither")]
    pub dither: DitherMode,
}

fn default_dither() -> DitherMode {
    DitherMode::Tpdf
}

/// One stage of the tone and dynamics chain (`[[stage]]` with a `type` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageConfig {
    /// DC and rumble high-pass.
    Highpass(HighpassConfig),
    /// Parametric equaliser.
    Eq(EqConfig),
    /// Broadband compressor.
    Compressor(CompressorConfig),
    /// Multiband compressor.
    Multiband(MultibandConfig),
    /// Stereo width and mono bass.
    Stereo(StereoConfig),
    /// Split-band de-esser.
    Deesser(DeesserConfig),
}

impl StageConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            Self::Highpass(c) => c.validate(),
            Self::Eq(c) => c.validate(),
            Self::Compressor(c) => c.validate(),
            Self::Multiband(c) => c.validate(),
            Self::Stereo(c) => c.validate(),
            Self::Deesser(c) => c.validate(),
        }
    }
}

/// Loudness normalisation and the true-peak ceiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoudnessConfig {
    /// Level the tone and dynamics chain sees: the source is first gained to this integrated loudness
    /// so that compressor thresholds mean the same on a quiet ballad as on a loud single. Without it
    /// the chain sees the source as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_input_lufs: Option<f64>,
    /// Integrated loudness target (BS.1770); without it the track is peak-normalised to the ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lufs: Option<f64>,
    /// True-peak ceiling in dBTP that no master may exceed.
    #[serde(default = "default_ceiling")]
    pub ceiling_dbtp: f64,
    /// The most gain normalisation may apply; a quieter source stays under its target (and the report
    /// says so) rather than having its noise floor raised without bound.
    #[serde(default = "default_max_gain")]
    pub max_gain_db: f64,
}

fn default_ceiling() -> f64 {
    -1.0
}

fn default_max_gain() -> f64 {
    30.0
}

/// Limiter timing; its ceiling is `[loudness].ceiling_dbtp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterSettings {
    /// Look-ahead, ms.
    #[serde(default = "default_lookahead")]
    pub lookahead_ms: f64,
    /// Release time, ms.
    #[serde(default = "default_release")]
    pub release_ms: f64,
    /// Oversampling factor of the peak detector: 4 or 8.
    #[serde(default = "default_oversampling")]
    pub oversampling: u32,
}

fn default_lookahead() -> f64 {
    5.0
}
fn default_release() -> f64 {
    150.0
}
fn default_oversampling() -> u32 {
    4
}

impl Profile {
    /// A built-in preset by name.
    pub fn preset(name: &str) -> Result<Self> {
        let (_, source) =
            PRESETS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| Error::Profile {
                    profile: name.to_owned(),
                    key: "name".to_owned(),
                    reason: format!("no such preset; presets are {}", preset_names().join(", ")),
                })?;
        Self::from_toml(source, name)
    }

    /// A preset name, or the path of a profile TOML file.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if PRESETS.iter().any(|(n, _)| *n == name_or_path) {
            return Self::preset(name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.exists() && !name_or_path.ends_with(".toml") {
            return Self::preset(name_or_path);
        }
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&source, name_or_path)
    }

    /// Parses and validates a profile; `origin` (a file or preset name) is used in error messages.
    pub fn from_toml(source: &str, origin: &str) -> Result<Self> {
        let profile: Profile = toml::from_str(source).map_err(|e| {
            let key = match e.span() {
                Some(span) => {
                    let line = source[..span.start].matches('\n').count() + 1;
                    format!("line {line}")
                }
                None => "toml".to_owned(),
            };
            Error::Profile {
                profile: origin.to_owned(),
                key,
                reason: e.message().trim().to_owned(),
            }
        })?;
        profile.validate().map_err(|invalid| Error::Profile {
            profile: origin.to_owned(),
            key: invalid.key,
            reason: invalid.reason,
        })?;
        Ok(profile)
    }

    /// The profile as TOML, in the format [`Profile::from_toml`] reads.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        EncodeSpec {
            container: self.output.format,
            bit_depth: self.output.bit_depth,
        }
        .validate()
        .map_err(|e| e.within("output"))?;
        for (key, rate) in [
            ("output.sample_rate_hz", self.output.sample_rate_hz),
            ("output.min_sample_rate_hz", self.output.min_sample_rate_hz),
        ] {
            if let Some(rate) = rate {
                check_range(key, f64::from(rate), 8000.0, 384_000.0, "Hz")?;
            }
        }
        if let Some(restore) = &self.restore {
            restore.validate().map_err(|e| e.within("restore"))?;
        }
        for (index, stage) in self.stages.iter().enumerate() {
            stage
                .validate()
                .map_err(|e| e.within(&format!("stage[{index}]")))?;
        }
        for (key, level) in [
            ("loudness.chain_input_lufs", self.loudness.chain_input_lufs),
            ("loudness.target_lufs", self.loudness.target_lufs),
        ] {
            if let Some(level) = level {
                check_range(key, level, -40.0, -5.0, "LUFS")?;
            }
        }
        check_range(
            "loudness.ceiling_dbtp",
            self.loudness.ceiling_dbtp,
            -20.0,
            0.0,
            "dBTP",
        )?;
        check_range(
            "loudness.max_gain_db",
            self.loudness.max_gain_db,
            0.0,
            60.0,
            "dB",
        )?;
        if let Some(limiter) = &self.limiter {
            self.limiter_config(limiter)
                .validate()
                .map_err(|e| e.within("limiter"))?;
        }
        Ok(())
    }

    /// The encoder settings for this profile.
    pub fn encode_spec(&self) -> EncodeSpec {
        EncodeSpec {
            container: self.output.format,
            bit_depth: self.output.bit_depth,
        }
    }

    /// The output sample rate for a source at `source_rate_hz`.
    pub fn output_rate_hz(&self, source_rate_hz: u32) -> u32 {
        let rate = self.output.sample_rate_hz.unwrap_or(source_rate_hz);
        rate.max(self.output.min_sample_rate_hz.unwrap_or(0))
    }

    /// The full limiter configuration (timing from `[limiter]`, ceiling from `[loudness]`).
    pub fn limiter_config(&self, limiter: &LimiterSettings) -> LimiterConfig {
        LimiterConfig {
            ceiling_dbtp: self.loudness.ceiling_dbtp,
            lookahead_ms: limiter.lookahead_ms,
            release_ms: limiter.release_ms,
            oversampling: limiter.oversampling,
        }
    }
}

/// Names of the built-in presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_validates_and_round_trips() {
        for (name, _) in PRESETS {
            let profile = Profile::preset(name).unwrap();
            assert_eq!(profile.name, name);
            let again = Profile::from_toml(&profile.to_toml(), name).unwrap();
            assert_eq!(again, profile, "{name} does not round-trip through TOML");
        }
    }

    #[test]
    fn presets_carry_the_documented_targets() {
        let target = |n: &str| Profile::preset(n).unwrap().loudness.target_lufs;
        let ceiling = |n: &str| Profile::preset(n).unwrap().loudness.ceiling_dbtp;
        assert_eq!(
            (target("streaming"), ceiling("streaming")),
            (Some(-14.0), -1.0)
        );
        assert_eq!((target("apple"), ceiling("apple")), (Some(-16.0), -1.0));
        assert_eq!(
            (target("broadcast"), ceiling("broadcast")),
            (Some(-23.0), -1.0)
        );
        assert_eq!(ceiling("cd"), -0.3);
        let cd = Profile::preset("cd").unwrap();
        assert_eq!(
            (cd.output.bit_depth, cd.output_rate_hz(96_000)),
            (16, 44_100)
        );
        let broadcast = Profile::preset("broadcast").unwrap();
        assert_eq!(broadcast.output_rate_hz(44_100), 48_000);
        assert_eq!(broadcast.output.format, Container::Wav);
        let hires = Profile::preset("hires").unwrap();
        assert_eq!(
            (hires.output.format, hires.output.bit_depth),
            (Container::Flac, 24)
        );
        assert_eq!(hires.output_rate_hz(44_100), 96_000);
        let vinyl = Profile::preset("vinyl").unwrap();
        assert!(
            vinyl.limiter.is_none(),
            "vinyl must not be brickwall limited"
        );
        assert!(
            vinyl
                .stages
                .iter()
                .any(|s| matches!(s, StageConfig::Stereo(c) if c.mono_bass_hz == Some(150.0))),
            "vinyl keeps bass mono below 150 Hz"
        );
        assert!(
            !vinyl
                .stages
                .iter()
                .any(|s| matches!(s, StageConfig::Compressor(_) | StageConfig::Multiband(_))),
            "vinyl preserves the loudness range: no compression"
        );
        let streaming = Profile::preset("streaming").unwrap();
        assert_eq!(streaming.output_rate_hz(22_050), 44_100);
        assert_eq!(streaming.output_rate_hz(48_000), 48_000);
    }

    #[test]
    fn unknown_key_is_named() {
        let source = Profile::preset("streaming")
            .unwrap()
            .to_toml()
            .replace("[loudness]", "[loudness]\nloudnes = 3");
        let err = Profile::from_toml(&source, "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mine.toml") && err.contains("unknown field `loudnes`"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_value_names_key_and_range() {
        let mut profile = Profile::preset("streaming").unwrap();
        profile.loudness.target_lufs = Some(3.0);
        let err = Profile::from_toml(&profile.to_toml(), "x.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "profile x.toml: loudness.target_lufs: 3 LUFS is out of range; allowed -40 LUFS to -5 LUFS"
        );
    }

    #[test]
    fn bad_stage_value_names_stage_index() {
        let source = r#"
            name = "t"
            [output]
            format = "wav"
            bit_depth = 24
            [[stage]]
            type = "highpass"
            frequency_hz = 20.0
            [[stage]]
            type = "compressor"
            threshold_db = -20.0
            ratio = 500.0
            [loudness]
            target_lufs = -14.0
        "#;
        let err = Profile::from_toml(source, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("profile t.toml: stage[1].ratio: 500 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn restore_section_parses_and_names_bad_keys() {
        let base = "name = \"t\"\n[output]\nformat = \"wav\"\nbit_depth = 24\n[loudness]\n";
        let profile = Profile::from_toml(
            &format!("{base}[restore.declick]\n[restore.dehum]\n"),
            "t.toml",
        )
        .unwrap();
        let restore = profile.restore.as_ref().unwrap();
        assert!(restore.declick.is_some() && restore.dehum.is_some());
        let again = Profile::from_toml(&profile.to_toml(), "t.toml").unwrap();
        assert_eq!(again, profile);
        let err = Profile::from_toml(
            &format!("{base}[restore.denoise]\nstrength_db = 90.0\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "profile t.toml: restore.denoise.strength_db: 90 dB is out of range; allowed 0 dB to 40 dB"
        );
    }

    /// `auto` parses, validates with the sub-tables beside it and survives the TOML round trip
    /// that carries a profile to the farm's workers.
    #[test]
    fn restore_auto_parses_and_travels_in_the_profile() {
        let base = "name = \"t\"\n[output]\nformat = \"wav\"\nbit_depth = 24\n[loudness]\n";
        let profile = Profile::from_toml(
            &format!("{base}[restore]\nauto = true\n[restore.declick]\n"),
            "t.toml",
        )
        .unwrap();
        let restore = profile.restore.as_ref().unwrap();
        assert!(restore.auto && restore.declick.is_some() && restore.denoise.is_none());
        let toml = profile.to_toml();
        assert!(toml.contains("auto = true"), "{toml}");
        assert_eq!(Profile::from_toml(&toml, "t.toml").unwrap(), profile);
        // Without it, a profile's TOML is what it was.
        let plain = Profile::from_toml(&format!("{base}[restore.declick]\n"), "t.toml").unwrap();
        assert!(!plain.restore.as_ref().unwrap().auto);
        assert!(!plain.to_toml().contains("auto"));
        let err = Profile::from_toml(&format!("{base}[restore]\nauto = \"yes\"\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a boolean"), "{err}");
    }

    #[test]
    fn unknown_stage_type_is_rejected() {
        let source = "name = \"t\"\n[output]\nformat = \"wav\"\nbit_depth = 24\n[[stage]]\ntype = \"reverb\"\n[loudness]\n";
        let err = Profile::from_toml(source, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("reverb"), "{err}");
    }

    #[test]
    fn unknown_preset_lists_the_presets() {
        let err = Profile::load("spotify").unwrap_err().to_string();
        assert!(
            err.contains("streaming, apple, broadcast, cd, vinyl, hires"),
            "{err}"
        );
    }
}
