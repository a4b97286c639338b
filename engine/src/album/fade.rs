//! Fades and crossfade envelopes: gain curves over a track's frames.
//!
//! A fade of `n` frames with curve `c` gives frame `k` of a fade-in the gain `c(k / n)` (so the
//! first frame is silent and frame `n` is at full level) and frame `k` of a fade-out, counted from
//! the end, the same curve mirrored: the last frame gets `c(1 / n)`. Crossfades are equal power: the
//! outgoing track is multiplied by `cos(π/2 · k/n)` and the incoming one by `sin(π/2 · k/n)` at the
//! same output frame, so the two gains' squares always sum to one.

use std::f64::consts::FRAC_PI_2;

use crate::audio::AudioBlock;
use crate::stage::Stage;
use lathe_model::catalog::FadeCurve;
use lathe_model::level::TrackFades;

/// The floor of an exponential fade, dB: the curve rises linearly in dB from here.
pub const EXPONENTIAL_FLOOR_DB: f64 = -60.0;

/// The gain of `curve` at `t` (0: start of a fade-in, silent; 1: full level).
pub fn curve_gain(curve: FadeCurve, t: f64) -> f64 {
    let t = t.clamp(0.0, 1.0);
    match curve {
        FadeCurve::Linear => t,
        FadeCurve::Sine => (FRAC_PI_2 * t).sin(),
        FadeCurve::Exponential if t <= 0.0 => 0.0,
        FadeCurve::Exponential => 10f64.powf(EXPONENTIAL_FLOOR_DB * (1.0 - t) / 20.0),
    }
}

/// The gain envelope of one track: fade-in over its first frames, fade-out over its last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope {
    /// The track's length, frames.
    pub total_frames: u64,
    /// Fade-in length, frames (0: none).
    pub fade_in_frames: u64,
    /// Fade-out length, frames (0: none).
    pub fade_out_frames: u64,
    /// Curve of the fade-in.
    pub fade_in_curve: FadeCurve,
    /// Curve of the fade-out.
    pub fade_out_curve: FadeCurve,
}

impl Envelope {
    /// No fades.
    pub fn flat(total_frames: u64) -> Self {
        Self {
            total_frames,
            fade_in_frames: 0,
            fade_out_frames: 0,
            fade_in_curve: FadeCurve::Linear,
            fade_out_curve: FadeCurve::Linear,
        }
    }

    /// The gain at frame `k` of the track.
    pub fn gain(&self, k: u64) -> f64 {
        let mut gain = 1.0;
        if k < self.fade_in_frames {
            gain *= curve_gain(self.fade_in_curve, k as f64 / self.fade_in_frames as f64);
        }
        let from_end = self.total_frames.saturating_sub(k);
        if from_end <= self.fade_out_frames && self.fade_out_frames > 0 {
            gain *= curve_gain(
                self.fade_out_curve,
                from_end as f64 / self.fade_out_frames as f64,
            );
        }
        gain
    }

    /// `true` if frame `k` is outside both fades (gain exactly 1).
    pub fn is_flat_at(&self, k: u64) -> bool {
        k >= self.fade_in_frames && self.total_frames.saturating_sub(k) > self.fade_out_frames
    }
}

/// The equal-power crossfade's incoming-track curve (`sin`); the outgoing track's is the same curve
/// mirrored, `cos(π/2 · k/n) = sin(π/2 · (n-k)/n)`.
pub const CROSSFADE_CURVE: FadeCurve = FadeCurve::Sine;

/// The fade stage ("fade"): applies a track's [`TrackFades`] at the end of the render chain, so that
/// every deliverable of the track carries them.
#[derive(Debug, Clone)]
pub struct Fade {
    envelope: Envelope,
    position: u64,
}

impl Fade {
    /// A fade stage for a track of `total_frames` frames at `sample_rate_hz`.
    pub fn new(fades: &TrackFades, total_frames: u64, sample_rate_hz: u32) -> Self {
        let frames = |s: f64| ((s * f64::from(sample_rate_hz)).round() as u64).min(total_frames);
        Self {
            envelope: Envelope {
                total_frames,
                fade_in_frames: frames(fades.fade_in_s),
                fade_out_frames: frames(fades.fade_out_s),
                fade_in_curve: fades.curve,
                fade_out_curve: fades.curve,
            },
            position: 0,
        }
    }
}

impl Stage for Fade {
    fn name(&self) -> &'static str {
        "fade"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        let start = self.position;
        let frames = block.frames();
        self.position += frames as u64;
        if self.envelope.is_flat_at(start) && self.envelope.is_flat_at(self.position - 1) {
            return;
        }
        for channel in block.channels_mut() {
            for (i, sample) in channel.iter_mut().enumerate() {
                let gain = self.envelope.gain(start + i as u64);
                *sample = (f64::from(*sample) * gain) as f32;
            }
        }
    }

    fn reset(&mut self) {
        self.position = 0;
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "fade_in_frames": self.envelope.fade_in_frames,
            "fade_out_frames": self.envelope.fade_out_frames,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_start_silent_and_end_at_unity() {
        for curve in [FadeCurve::Linear, FadeCurve::Sine, FadeCurve::Exponential] {
            assert_eq!(curve_gain(curve, 0.0), 0.0, "{curve:?}");
            assert!((curve_gain(curve, 1.0) - 1.0).abs() < 1e-12, "{curve:?}");
        }
        assert!((curve_gain(FadeCurve::Linear, 0.25) - 0.25).abs() < 1e-12);
        assert!((curve_gain(FadeCurve::Sine, 0.5) - 0.5f64.sqrt()).abs() < 1e-12);
        // Exponential: half way is -30 dB.
        let half = curve_gain(FadeCurve::Exponential, 0.5);
        assert!((20.0 * half.log10() + 30.0).abs() < 1e-9);
    }

    #[test]
    fn fade_stage_hits_exact_frames_in_any_block_size() {
        let fades = TrackFades {
            fade_in_s: 0.01,
            fade_out_s: 0.02,
            curve: FadeCurve::Linear,
        };
        let total = 1000u64;
        let render = |block_frames: usize| {
            let mut stage = Fade::new(&fades, total, 10_000);
            let mut out = Vec::new();
            let mut done = 0;
            while done < total as usize {
                let n = block_frames.min(total as usize - done);
                let mut block = AudioBlock::from_channels(vec![vec![1.0; n]], 10_000);
                stage.process(&mut block);
                out.extend_from_slice(block.channel(0));
                done += n;
            }
            out
        };
        let out = render(64);
        assert_eq!(out, render(1000));
        assert_eq!(out[0], 0.0);
        assert!((out[50] - 0.5).abs() < 1e-6, "{}", out[50]);
        assert_eq!(out[100], 1.0);
        assert_eq!(out[799], 1.0);
        assert!((out[900] - 0.5).abs() < 1e-6, "{}", out[900]);
        assert!((out[999] - 1.0 / 200.0).abs() < 1e-6, "{}", out[999]);
    }
}
