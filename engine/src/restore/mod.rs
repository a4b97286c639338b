//! Restoration: repairing the defects of old transfers before the mastering chain.
//!
//! One file per restorer, each a streaming [`Stage`] with a fixed latency that the pipeline
//! compensates (so restored audio stays sample-aligned with its source):
//!
//! - [`declip`]: flat-topped runs rebuilt by constrained least-squares AR interpolation (Janssen);
//! - [`declick`]: impulsive clicks found in the AR prediction residual (forward and backward, robust
//!   MAD threshold, burst fusion) and replaced by least-squares AR interpolation (Godsill & Rayner);
//! - [`decrackle`]: the same machinery tuned for dense clicks of one to a few samples;
//! - [`dehum`]: 50 or 60 Hz mains hum and its harmonics, frequency tracked, subtracted as sinusoids;
//! - [`denoise`]: broadband hiss by an STFT Wiener filter (minimum-statistics noise estimate,
//!   a look-ahead two-step estimate of the signal covariance, stereo pairs filtered jointly).
//!
//! A profile enables them with a `[restore]` section, one sub-table per restorer (an empty sub-table
//! enables it with automatic settings); they run in the order above, before the mastering chain:
//!
//! ```toml
//! [restore.declick]
//! [restore.denoise]
//! strength_db = 12.0
//! ```
//!
//! With `auto = true` in `[restore]`, [`detect::DefectDetector`] measures the track first (in the
//! render's analysis pass, or in a pass of its own for [`restore_file`]) and
//! [`lathe_model::restore_plan::RestorePlan`] chooses the restorers whose defect is present, with
//! settings from the measurement; a restorer with its own sub-table always runs with it.

pub mod ar;
pub mod declick;
pub mod declip;
pub mod decrackle;
pub mod dehum;
pub mod denoise;
pub mod detect;
pub mod hum_detect;

use std::ops::ControlFlow;
use std::path::Path;

use crate::atomic_file::TempFile;
use crate::audio::AudioBlock;
use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::pass::{Input, Pass, stage_reports};
use crate::progress::Phase;
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::report::StageReport;
use lathe_model::restore_plan::RestorePlan;
use lathe_model::stage_config::restore::RestoreConfig;
use lathe_model::stage_config::{Container, EncodeSpec};

use declick::Declicker;
use declip::Declipper;
use decrackle::Decrackler;
use dehum::Dehummer;
use denoise::Denoiser;
use detect::DefectDetector;

/// Builds the restorers a profile's `[restore]` section enables.
pub trait BuildRestorers {
    /// Builds the enabled restorers in their running order: declip, declick, decrackle, dehum,
    /// denoise; the denoiser learns the noise spectrum from `noise_excerpt` (the
    /// track's audio over `[restore.denoise]`'s noise range) when given.
    fn build_with_noise(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
        noise_excerpt: Option<&AudioBlock>,
    ) -> Result<Vec<Box<dyn Stage>>, InvalidValue>;
}

impl BuildRestorers for RestoreConfig {
    fn build_with_noise(
        &self,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
        noise_excerpt: Option<&AudioBlock>,
    ) -> Result<Vec<Box<dyn Stage>>, InvalidValue> {
        let (n, r, m) = (channel_count, sample_rate_hz, max_block_frames);
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        if let Some(c) = &self.declip {
            stages.push(boxed(Declipper::new(c, n, r, m), "declip")?);
        }
        if let Some(c) = &self.declick {
            stages.push(boxed(Declicker::new(c, n, r, m), "declick")?);
        }
        if let Some(c) = &self.decrackle {
            stages.push(boxed(Decrackler::new(c, n, r, m), "decrackle")?);
        }
        if let Some(c) = &self.dehum {
            stages.push(boxed(Dehummer::new(c, n, r, m), "dehum")?);
        }
        if let Some(c) = &self.denoise {
            let mut denoiser = Denoiser::new(c, n, r, m).map_err(|e| e.within("denoise"))?;
            if let Some(excerpt) = noise_excerpt {
                denoiser
                    .learn_noise(excerpt)
                    .map_err(|e| e.within("denoise"))?;
            }
            stages.push(Box::new(denoiser));
        }
        Ok(stages)
    }
}

/// A restorer just built, boxed as a stage; its configuration error keyed under `section`.
fn boxed<S: Stage + 'static>(
    built: Result<S, InvalidValue>,
    section: &str,
) -> Result<Box<dyn Stage>, InvalidValue> {
    Ok(Box::new(built.map_err(|e| e.within(section))?))
}

/// The source's audio over a denoise noise range (`[restore.denoise]` `noise_from_s` to
/// `noise_to_s`, shorter where the track ends first), at `rate_hz`, the rate the restorers run at;
/// `None` when there is no range. Read in a pass of its own, from the file or from a spool of its
/// decode.
///
/// # Errors
/// A decode or resample error of `input`.
pub(crate) fn noise_excerpt(
    noise_range_s: Option<(f64, f64)>,
    input: Input<'_>,
    rate_hz: u32,
) -> Result<Option<AudioBlock>> {
    let Some((from_s, to_s)) = noise_range_s else {
        return Ok(None);
    };
    let rate = f64::from(rate_hz);
    let (from, to) = ((from_s * rate) as u64, (to_s * rate) as u64);
    let pass = Pass::over(input, rate_hz)?;
    let channels = pass.channel_count();
    let mut excerpt = AudioBlock::new(channels, to.saturating_sub(from) as usize, rate_hz);
    let mut scratch = AudioBlock::new(channels, pass.max_block_frames(), rate_hz);
    let mut at = 0u64;
    pass.run(
        &mut [],
        &mut [],
        Phase::Chain,
        &mut |_| ControlFlow::Continue(()),
        |_| {},
        |block| {
            let end = at + block.frames() as u64;
            if end > from && at < to {
                scratch.set_frames(0);
                scratch.append(block);
                scratch.set_frames((to.min(end) - at) as usize);
                scratch.discard_front(from.saturating_sub(at) as usize);
                excerpt.append(&scratch);
            }
            at = end;
            Ok(())
        },
    )?;
    Ok(Some(excerpt))
}

/// The automatic restoration plan for `input` when `section` asks for one (`auto = true`): its
/// defects measured in a pass of their own at `rate_hz` (the track's own rate, as the render's
/// analysis measures them), then planned; `None` otherwise.
///
/// # Errors
/// A decode or resample error of `input`.
pub(crate) fn plan_in_own_pass(
    section: Option<&RestoreConfig>,
    input: Input<'_>,
    rate_hz: u32,
) -> Result<Option<RestorePlan>> {
    let Some(section) = section.filter(|s| s.auto) else {
        return Ok(None);
    };
    let pass = Pass::over(input, rate_hz)?;
    let mut detector = DefectDetector::new(pass.channel_count(), rate_hz);
    pass.run(
        &mut [],
        &mut [],
        Phase::Analyse,
        &mut |_| ControlFlow::Continue(()),
        |_| {},
        |block| {
            detector.feed(block);
            Ok(())
        },
    )?;
    Ok(Some(RestorePlan::new(detector.finish(), section)))
}

/// What [`restore_file`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// What each restorer did, in running order.
    pub stages: Vec<StageReport>,
    /// With `auto = true`: what was detected and which restorers ran, with their settings and why.
    pub plan: Option<RestorePlan>,
}

/// Restores `input` with `config` into `output`, a 32-bit float WAV at the input's sample rate and
/// sample-aligned with it (every restorer's latency is compensated). The output is written under a
/// temporary name and renamed into place; `input` is only read. Returns what each restorer did.
/// A denoise noise range is read first, in a pass of its own; with `auto = true` the defects are
/// measured first too, in a pass of their own, and the plan chooses the restorers.
pub fn restore_file(input: &Path, output: &Path, config: &RestoreConfig) -> Result<Restored> {
    let pass = Pass::open_at_source_rate(input)?;
    let (channels, rate) = (pass.channel_count(), pass.sample_rate_hz());
    let invalid = |e: InvalidValue| {
        Error::from(lathe_model::Error::Profile {
            profile: "restore".to_owned(),
            key: format!("restore.{}", e.key),
            reason: e.reason,
        })
    };
    config.validate().map_err(invalid)?;
    let plan = plan_in_own_pass(Some(config), Input::File(input), rate)?;
    let config = plan.as_ref().map_or(config, |p| &p.config);
    let noise_range_s = config.denoise.as_ref().and_then(|d| d.noise_range_s());
    let excerpt = noise_excerpt(noise_range_s, Input::File(input), rate)?;
    let mut stages = config
        .build_with_noise(channels, rate, pass.max_block_frames(), excerpt.as_ref())
        .map_err(invalid)?;
    let temp = TempFile::for_output(output);
    let spec = EncodeSpec {
        container: Container::Wav,
        bit_depth: 32,
    };
    let mut encoder = Encoder::create(temp.path(), &spec, channels, rate)?;
    pass.run(
        &mut stages,
        &mut [],
        Phase::Render,
        &mut |_| ControlFlow::Continue(()),
        |_| {},
        |block| encoder.write(block),
    )?;
    encoder.finish()?;
    temp.commit(output)?;
    Ok(Restored {
        stages: stage_reports(&stages),
        plan,
    })
}

/// Streams audio through a fixed grid of segments so that a restorer can look at each segment with
/// some already-finished history before it and some raw look-ahead after it.
///
/// The window of each channel holds `history + hop + lookahead` samples in `f64`: `[0, history)` are
/// finished output (already repaired), `[history, history + hop)` is the segment being finished,
/// and the rest is raw look-ahead. Segments sit on a fixed grid of the track's samples, so the output
/// does not depend on how the track is cut into blocks. Latency: `hop + lookahead` frames.
#[derive(Debug, Clone)]
pub(crate) struct Framer {
    history: usize,
    hop: usize,
    windows: Vec<Vec<f64>>,
    ready: Vec<Vec<f32>>,
    fill: usize,
    ready_pos: usize,
}

impl Framer {
    pub(crate) fn new(channel_count: usize, history: usize, hop: usize, lookahead: usize) -> Self {
        let len = history + hop + lookahead;
        Self {
            history,
            hop,
            windows: vec![vec![0.0; len]; channel_count],
            ready: vec![vec![0.0; hop]; channel_count],
            fill: len - hop,
            ready_pos: 0,
        }
    }

    pub(crate) fn latency_frames(&self) -> usize {
        self.windows.first().map_or(0, Vec::len) - self.history
    }

    /// Where the segment starts in the window.
    pub(crate) fn history(&self) -> usize {
        self.history
    }

    pub(crate) fn hop(&self) -> usize {
        self.hop
    }

    pub(crate) fn reset(&mut self) {
        for w in &mut self.windows {
            w.fill(0.0);
        }
        for r in &mut self.ready {
            r.fill(0.0);
        }
        self.fill = self.windows.first().map_or(0, Vec::len) - self.hop;
        self.ready_pos = 0;
    }

    /// Pushes a block through; `segment(channel, window)` finishes each full segment in place.
    pub(crate) fn process(
        &mut self,
        block: &mut AudioBlock,
        mut segment: impl FnMut(usize, &mut [f64]),
    ) {
        let frames = block.frames();
        let mut pos = 0;
        while pos < frames {
            let n = (self.hop - self.ready_pos).min(frames - pos);
            for (ch, samples) in block.channels_mut().enumerate() {
                let window = &mut self.windows[ch][self.fill..self.fill + n];
                let ready = &self.ready[ch][self.ready_pos..self.ready_pos + n];
                for ((x, w), r) in samples[pos..pos + n].iter_mut().zip(window).zip(ready) {
                    *w = f64::from(*x);
                    *x = *r;
                }
            }
            pos += n;
            self.fill += n;
            self.ready_pos += n;
            if self.ready_pos == self.hop {
                let (history, hop) = (self.history, self.hop);
                for (ch, (window, ready)) in
                    self.windows.iter_mut().zip(&mut self.ready).enumerate()
                {
                    segment(ch, window);
                    for (r, &w) in ready.iter_mut().zip(&window[history..history + hop]) {
                        *r = w as f32;
                    }
                    window.copy_within(hop.., 0);
                }
                self.fill -= hop;
                self.ready_pos = 0;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared material for the restorers' tests.
    use super::*;
    use crate::testkit::{process_in_blocks, read_synth};
    use lathe_synth::{Style, TrackRecipe, TrackSynth};

    /// A few seconds of the deterministic music generator, as one block.
    pub fn music(style: Style, seconds: f64, seed: u64) -> AudioBlock {
        let recipe = TrackRecipe {
            duration_s: seconds,
            ..TrackRecipe::new(style, seed)
        };
        let mut synth = TrackSynth::new(&recipe);
        let frames = recipe.total_frames() as usize;
        let mut out = AudioBlock::new(synth.channel_count(), frames, synth.sample_rate_hz());
        let mut block = AudioBlock::new(synth.channel_count(), 4096, synth.sample_rate_hz());
        while read_synth(&mut synth, &mut block) > 0 {
            out.append(&block);
        }
        out
    }

    /// Runs a stage over `input` in blocks of `sizes` and removes its latency, so the output is
    /// aligned with the input and as long.
    pub fn run_aligned(stage: &mut dyn Stage, input: &AudioBlock, sizes: &[usize]) -> AudioBlock {
        let latency = stage.latency_frames();
        let mut padded = AudioBlock::new(
            input.channel_count(),
            input.frames() + latency,
            input.sample_rate_hz(),
        );
        padded.append(input);
        let tail = AudioBlock::new(input.channel_count(), latency, input.sample_rate_hz());
        let mut tail = tail;
        tail.set_frames(latency);
        padded.append(&tail);
        let mut out = process_in_blocks(stage, &padded, sizes);
        out.discard_front(latency);
        out
    }

    /// `clean` with `damage` (a `lathe_synth::damage` model drawn for a seed) applied, seeded
    /// with `seed`.
    pub fn damaged(
        clean: &AudioBlock,
        damage: &lathe_synth::damage::Damage,
        seed: u64,
    ) -> AudioBlock {
        let mut channels: Vec<Vec<f32>> = clean.channels().map(<[f32]>::to_vec).collect();
        damage.apply(&mut channels, clean.sample_rate_hz(), seed);
        AudioBlock::from_channels(channels, clean.sample_rate_hz())
    }

    /// Deterministic uniform numbers in [0, 1).
    pub struct Lcg(pub u64);

    impl Lcg {
        pub fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::testkit::noise;

    /// A framer that changes nothing is a pure delay of `latency_frames`, whatever the block sizes.
    #[test]
    fn framer_is_a_pure_delay() {
        let input = noise(2, 10_000, 44_100, 0.5, 3);
        struct Delay(Framer);
        impl Stage for Delay {
            fn name(&self) -> &'static str {
                "delay"
            }
            fn process(&mut self, block: &mut AudioBlock) {
                self.0.process(block, |_, _| {});
            }
            fn latency_frames(&self) -> usize {
                self.0.latency_frames()
            }
            fn reset(&mut self) {
                self.0.reset();
            }
        }
        let mut stage = Delay(Framer::new(2, 100, 256, 77));
        assert_eq!(stage.latency_frames(), 333);
        let out = run_aligned(&mut stage, &input, &[1, 1000, 17]);
        assert_eq!(out.channel(0), input.channel(0));
        assert_eq!(out.channel(1), input.channel(1));
    }

    #[test]
    fn section_parses_and_names_bad_keys() {
        let config: RestoreConfig =
            toml::from_str("[declick]\n[denoise]\nstrength_db = 10.0\n").unwrap();
        assert!(config.declick.is_some() && config.denoise.is_some());
        assert!(config.dehum.is_none());
        let err = toml::from_str::<RestoreConfig>("[declick]\nthreshhold = 3.0\n").unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
        let bad: RestoreConfig = toml::from_str("[denoise]\nstrength_db = 99.0\n").unwrap();
        let err = bad.validate().unwrap_err();
        assert_eq!(err.key, "denoise.strength_db");
        assert!(err.reason.contains("allowed"), "{}", err.reason);
    }
}
