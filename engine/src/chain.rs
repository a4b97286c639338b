//! Building the running chain from a profile: each stage's configuration (in `lathe_model`) becomes
//! its runtime [`Stage`] here, with one `match`.
//!
//! The builders are traits on the model's types, so a caller writes `profile.build_stages(..)` with
//! [`BuildChain`] in scope.

use lathe_model::config::InvalidValue;
use lathe_model::profile::{Profile, StageConfig};
use lathe_model::restore_plan::RestorePlan;

use crate::audio::AudioBlock;
use crate::error::{Error, Result};
use crate::master::compressor::Compressor;
use crate::master::deesser::Deesser;
use crate::master::dither::Quantiser;
use crate::master::eq::ParametricEq;
use crate::master::highpass::Highpass;
use crate::master::limiter::TruePeakLimiter;
use crate::master::multiband::MultibandCompressor;
use crate::master::stereo::StereoImage;
use crate::restore::BuildRestorers;
use crate::stage::Stage;

/// Builds the runtime stage of one `[[stage]]`.
pub trait BuildStage {
    /// Builds the runtime stage.
    ///
    /// # Errors
    /// The value the stage cannot run with at this shape (a frequency above Nyquist).
    fn build(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Box<dyn Stage>, InvalidValue>;
}

impl BuildStage for StageConfig {
    fn build(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Box<dyn Stage>, InvalidValue> {
        let (n, r, m) = (channel_count, sample_rate_hz, max_block_frames);
        Ok(match self {
            Self::Highpass(c) => Box::new(Highpass::new(c, n, r, m)?),
            Self::Eq(c) => Box::new(ParametricEq::new(c, n, r, m)?),
            Self::Compressor(c) => Box::new(Compressor::new(c, n, r, m)?),
            Self::Multiband(c) => Box::new(MultibandCompressor::new(c, n, r, m)?),
            Self::Stereo(c) => Box::new(StereoImage::new(c, n, r, m)?),
            Self::Deesser(c) => Box::new(Deesser::new(c, n, r, m)?),
        })
    }
}

/// Builds a profile's runtime chain: restoration, tone and dynamics, limiter, dither.
pub trait BuildChain {
    /// Builds the tone and dynamics chain for audio of this shape.
    fn build_stages(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Vec<Box<dyn Stage>>>;

    /// Builds the restoration stages of `[restore]` (none without it), in their running order; the
    /// denoiser learns the noise from `noise_excerpt` (the audio of its noise range) when given.
    fn build_restore(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
        noise_excerpt: Option<&AudioBlock>,
    ) -> Result<Vec<Box<dyn Stage>>>;

    /// Builds the restoration stages of `plan` (automatic restoration's choice for this track)
    /// when given, else of `[restore]`, as [`BuildChain::build_restore`] does.
    fn build_planned_restore(
        &self,
        plan: Option<&RestorePlan>,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
        noise_excerpt: Option<&AudioBlock>,
    ) -> Result<Vec<Box<dyn Stage>>>;

    /// Builds the limiter, if the profile has one.
    fn build_limiter(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Option<TruePeakLimiter>>;

    /// Builds the dither that takes a render to `bit_depth` bits (the profile's `output.dither`
    /// mode), seeded with `seed` (a hash of the source, so the same source always gets the same
    /// dither).
    fn build_quantiser(
        &self,
        bit_depth: u32,
        channel_count: usize,
        sample_rate_hz: u32,
        seed: u64,
    ) -> Result<Quantiser>;
}

impl BuildChain for Profile {
    fn build_stages(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Vec<Box<dyn Stage>>> {
        self.stages
            .iter()
            .enumerate()
            .map(|(index, stage)| {
                stage
                    .build(channel_count, sample_rate_hz, max_block_frames)
                    .map_err(|e| invalid_in(self, &format!("stage[{index}]"), e))
            })
            .collect()
    }

    fn build_restore(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
        noise_excerpt: Option<&AudioBlock>,
    ) -> Result<Vec<Box<dyn Stage>>> {
        self.build_planned_restore(
            None,
            channel_count,
            sample_rate_hz,
            max_block_frames,
            noise_excerpt,
        )
    }

    fn build_planned_restore(
        &self,
        plan: Option<&RestorePlan>,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
        noise_excerpt: Option<&AudioBlock>,
    ) -> Result<Vec<Box<dyn Stage>>> {
        let Some(restore) = plan.map(|p| &p.config).or(self.restore.as_ref()) else {
            return Ok(Vec::new());
        };
        restore
            .build_with_noise(
                channel_count,
                sample_rate_hz,
                max_block_frames,
                noise_excerpt,
            )
            .map_err(|e| invalid_in(self, "restore", e))
    }

    fn build_limiter(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Option<TruePeakLimiter>> {
        let Some(settings) = &self.limiter else {
            return Ok(None);
        };
        TruePeakLimiter::new(
            &self.limiter_config(settings),
            channel_count,
            sample_rate_hz,
            max_block_frames,
        )
        .map(Some)
        .map_err(|e| invalid_in(self, "limiter", e))
    }

    fn build_quantiser(
        &self,
        bit_depth: u32,
        channel_count: usize,
        sample_rate_hz: u32,
        seed: u64,
    ) -> Result<Quantiser> {
        Quantiser::new(
            self.output.dither,
            bit_depth,
            channel_count,
            sample_rate_hz,
            seed,
        )
        .map_err(|e| invalid_in(self, "output", e))
    }
}

/// `invalid`, a value of `profile`'s `section` (e.g. `limiter`), as the profile's error.
fn invalid_in(profile: &Profile, section: &str, invalid: InvalidValue) -> Error {
    lathe_model::Error::Profile {
        profile: profile.name.clone(),
        key: format!("{section}.{}", invalid.key),
        reason: invalid.reason,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_section_builds_its_restorers_in_order() {
        let base = "name = \"t\"\n[output]\nformat = \"wav\"\nbit_depth = 24\n[loudness]\n";
        let profile = Profile::from_toml(
            &format!("{base}[restore.declick]\n[restore.dehum]\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            profile.build_restore(2, 44_100, 4096, None).unwrap().len(),
            2
        );
    }
}
