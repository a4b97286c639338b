//! Feed-forward, stereo-linked compressor, and the [`CompressorCore`] the multiband stage reuses per band.
//!
//! Signal flow (Giannoulis, Massberg & Reiss, *Digital Dynamic Range Compressor Design — A Tutorial
//! and Analysis*, JAES 2012, the "log-domain detector after the gain computer" design):
//!
//! 1. [`LevelDetector`]: one level in dBFS per frame, the maximum over channels (stereo link), so every
//!    channel gets the same gain and the image does not shift.
//!    - [`Detector::Peak`]: the sample's absolute value. A sine of amplitude 1 reads 0 dBFS.
//!    - [`Detector::Rms`]: the root mean square over the last `rms_window_ms` (a sliding boxcar, exact
//!      to rounding). A full-scale sine reads -3.01 dBFS.
//! 2. [`GainComputer`]: the static curve with a quadratic soft knee of width `knee_db` centred on the
//!    threshold; gives the wanted gain reduction in dB.
//! 3. [`GainSmoother`]: the *smooth decoupled* detector of the paper, in the dB domain: an instant-attack
//!    peak hold releasing with the `release_ms` one-pole, followed by an `attack_ms` one-pole. After a
//!    step up the gain reduction reaches 63 % of its final value (in dB) after `attack_ms`; after a step
//!    down the hold decays with `release_ms` (and the attack pole adds its short lag on top). Holding
//!    the peaks keeps a steady tone's gain steady, so on a long tone the output level follows the
//!    static curve exactly.
//!
//! The gain (minus gain reduction plus `makeup_db`) multiplies every channel of the frame.

use crate::audio::AudioBlock;
use crate::math;
use crate::stage::Stage;
use crate::vector::VectorKernel;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::{CompressorConfig, Detector};

/// Lowest level the detector reports (silence), in dBFS.
pub const LEVEL_FLOOR_DB: f64 = -200.0;

/// Gain reductions below this (dB) are flushed to zero so a released smoother settles exactly.
const SMOOTHER_FLOOR_DB: f64 = 1e-30;

/// The static compression curve: gain reduction in dB for a detector level in dBFS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GainComputer {
    threshold_db: f64,
    ratio: f64,
    knee_db: f64,
    /// Detector powers at or below this give no gain reduction: the power at `threshold - knee/2`,
    /// rounded down a little so that no level the curve would compress is skipped.
    quiet_power: f64,
}

impl GainComputer {
    /// A curve with the given threshold, ratio (>= 1) and soft-knee width (>= 0; 0 is a hard knee).
    pub fn new(threshold_db: f64, ratio: f64, knee_db: f64) -> Self {
        let knee_start_db = threshold_db - knee_db / 2.0;
        Self {
            threshold_db,
            ratio,
            knee_db,
            quiet_power: 10f64.powf((knee_start_db - 1e-6) / 10.0),
        }
    }

    /// The gain reduction (>= 0 dB) for a detector power (see [`LevelDetector::next_level_power`]):
    /// [`GainComputer::gain_reduction_db`] of its level, without the logarithm for quiet frames.
    #[inline]
    pub fn gain_reduction_db_for_power(&self, power: f64) -> f64 {
        if power <= self.quiet_power {
            0.0
        } else {
            self.gain_reduction_db(power_to_db(power))
        }
    }

    /// The gain reduction (>= 0 dB) for `level_db`: 0 below `threshold - knee/2`,
    /// `(level - threshold) (1 - 1/ratio)` above `threshold + knee/2`, and in between the quadratic
    /// `(1 - 1/ratio) (level - threshold + knee/2)^2 / (2 knee)` that joins them smoothly.
    #[inline]
    pub fn gain_reduction_db(&self, level_db: f64) -> f64 {
        let over_db = level_db - self.threshold_db;
        let slope = 1.0 - 1.0 / self.ratio;
        if self.knee_db > 0.0 && 2.0 * over_db.abs() <= self.knee_db {
            let into_knee_db = over_db + self.knee_db / 2.0;
            slope * into_knee_db * into_knee_db / (2.0 * self.knee_db)
        } else if over_db > 0.0 {
            slope * over_db
        } else {
            0.0
        }
    }
}

/// Measures one stereo-linked level per frame (see the module documentation for the definitions).
#[derive(Debug, Clone)]
pub struct LevelDetector {
    detector: Detector,
    /// Channels measured (a block's further channels are not).
    channel_count: usize,
    /// RMS window length in frames.
    window_frames: usize,
    /// Squared samples of the last `window_frames` frames, channel after channel.
    squares: Vec<f64>,
    /// Running sum of `squares` per channel.
    sums: Vec<f64>,
    /// Next write position in each channel's window.
    position: usize,
}

impl LevelDetector {
    /// A detector for `channel_count` channels; `rms_window_ms` is used only by [`Detector::Rms`].
    pub fn new(
        detector: Detector,
        rms_window_ms: f64,
        channel_count: usize,
        sample_rate_hz: u32,
    ) -> Self {
        let window_frames = match detector {
            Detector::Peak => 0,
            Detector::Rms => {
                ((rms_window_ms * 1e-3 * f64::from(sample_rate_hz)).round() as usize).max(1)
            }
        };
        Self {
            detector,
            channel_count,
            window_frames,
            squares: vec![0.0; window_frames * channel_count],
            sums: vec![0.0; if window_frames > 0 { channel_count } else { 0 }],
            position: 0,
        }
    }

    /// The level of the frame (one sample per channel) as a power: the squared peak, or the mean
    /// square over the RMS window (`10 log10` of it is the level in dBFS).
    #[inline]
    pub fn next_level_power(&mut self, frame: &[f64]) -> f64 {
        match self.detector {
            Detector::Peak => {
                let peak = frame.iter().fold(0.0, |m, x| larger(m, x.abs()));
                peak * peak
            }
            Detector::Rms => {
                let w = self.window_frames;
                let mut loudest = 0.0f64;
                for (channel, &x) in frame.iter().enumerate().take(self.sums.len()) {
                    let slot = &mut self.squares[channel * w + self.position];
                    let square = x * x;
                    self.sums[channel] += square - *slot;
                    *slot = square;
                    loudest = larger(loudest, self.sums[channel]);
                }
                self.position += 1;
                if self.position == w {
                    self.position = 0;
                    // Re-add the window from scratch once per window so that rounding in the running
                    // sum cannot accumulate over a long track (amortised O(1) per frame).
                    for (sum, window) in self.sums.iter_mut().zip(self.squares.chunks_exact(w)) {
                        *sum = window.iter().sum();
                    }
                }
                larger(loudest, 0.0) / w as f64
            }
        }
    }

    /// [`LevelDetector::next_level_power`] for the first `powers.len()` frames of `channels` (one
    /// slice per channel, each at least that long; `f32` audio or `f64` bands), with the same
    /// results: each channel's window runs in a loop of its own up to the window's end, where the
    /// frame-by-frame path interleaves the channels frame by frame.
    pub fn level_powers<'a, S>(
        &mut self,
        channels: impl Iterator<Item = &'a [S]> + Clone,
        powers: &mut [f64],
    ) where
        S: Copy + Into<f64> + 'a,
    {
        match self.detector {
            Detector::Peak => {
                powers.fill(0.0);
                for samples in channels.take(self.channel_count) {
                    for (power, &x) in powers.iter_mut().zip(samples) {
                        *power = larger(*power, x.into().abs());
                    }
                }
                powers.iter_mut().for_each(|peak| *peak *= *peak);
            }
            Detector::Rms => {
                let w = self.window_frames;
                let mut done = 0;
                while done < powers.len() {
                    // Up to the end of the window, where the sums are re-added.
                    let len = (w - self.position).min(powers.len() - done);
                    let run = &mut powers[done..done + len];
                    run.fill(0.0);
                    for ((samples, sum), window) in channels
                        .clone()
                        .zip(self.sums.iter_mut())
                        .zip(self.squares.chunks_exact_mut(w))
                    {
                        let slots = &mut window[self.position..self.position + len];
                        let mut running = *sum;
                        for ((power, &x), slot) in run.iter_mut().zip(&samples[done..]).zip(slots) {
                            let x: f64 = x.into();
                            let square = x * x;
                            running += square - *slot;
                            *slot = square;
                            *power = larger(*power, running);
                        }
                        *sum = running;
                    }
                    self.position += len;
                    if self.position == w {
                        self.position = 0;
                        for (sum, window) in self.sums.iter_mut().zip(self.squares.chunks_exact(w))
                        {
                            *sum = window.iter().sum();
                        }
                    }
                    for power in run.iter_mut() {
                        *power = larger(*power, 0.0) / w as f64;
                    }
                    done += len;
                }
            }
        }
    }

    /// Forgets all history.
    pub fn reset(&mut self) {
        self.squares.fill(0.0);
        self.sums.fill(0.0);
        self.position = 0;
    }
}

/// The larger of `m` and `x`, in one comparison (where `f64::max` adds its NaN handling); a NaN `x`
/// loses, as `f64::max` ignores it. The detector's per-frame maxima use it.
#[inline(always)]
fn larger(m: f64, x: f64) -> f64 {
    if x > m { x } else { m }
}

/// A power (squared amplitude) to dBFS, floored at [`LEVEL_FLOOR_DB`].
#[inline]
fn power_to_db(power: f64) -> f64 {
    if power > 0.0 {
        // `ln` is cheaper than `log10` and this runs once a frame.
        (power.ln() * (10.0 / std::f64::consts::LN_10)).max(LEVEL_FLOOR_DB)
    } else {
        LEVEL_FLOOR_DB
    }
}

/// One-pole coefficient for a time constant: `exp(-1 / (time * rate))`, `rate` the updates per
/// second.
fn one_pole_coefficient(time_ms: f64, updates_per_second: f64) -> f64 {
    (-1.0 / (time_ms * 1e-3 * updates_per_second)).exp()
}

/// Smooths the gain reduction in dB: instant-attack peak hold with release, then an attack one-pole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GainSmoother {
    attack_coefficient: f64,
    release_coefficient: f64,
    held_db: f64,
    smoothed_db: f64,
}

impl GainSmoother {
    /// A smoother with the given attack and release time constants, fed `updates_per_second` times a
    /// second (the sample rate, or a control rate below it).
    pub fn new(attack_ms: f64, release_ms: f64, updates_per_second: f64) -> Self {
        Self {
            attack_coefficient: one_pole_coefficient(attack_ms, updates_per_second),
            release_coefficient: one_pole_coefficient(release_ms, updates_per_second),
            held_db: 0.0,
            smoothed_db: 0.0,
        }
    }

    /// Feeds the wanted gain reduction (dB, >= 0) and returns the smoothed one.
    #[inline]
    pub fn next(&mut self, target_db: f64) -> f64 {
        let released =
            self.release_coefficient * self.held_db + (1.0 - self.release_coefficient) * target_db;
        self.held_db = flush_small(released.max(target_db));
        self.smoothed_db = flush_small(
            self.attack_coefficient * self.smoothed_db
                + (1.0 - self.attack_coefficient) * self.held_db,
        );
        self.smoothed_db
    }

    /// Returns to no gain reduction.
    pub fn reset(&mut self) {
        self.held_db = 0.0;
        self.smoothed_db = 0.0;
    }
}

#[inline]
fn flush_small(value_db: f64) -> f64 {
    if value_db < SMOOTHER_FLOOR_DB {
        0.0
    } else {
        value_db
    }
}

/// Maximum and mean gain reduction over everything processed since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GainReductionStats {
    max_db: f64,
    sum_db: f64,
    frames: u64,
}

impl GainReductionStats {
    /// Counts `frames` frames of this gain reduction.
    fn add(&mut self, gain_reduction_db: f64, frames: u64) {
        self.max_db = self.max_db.max(gain_reduction_db);
        self.sum_db += gain_reduction_db * frames as f64;
        self.frames += frames;
    }

    /// Largest gain reduction so far, dB.
    pub fn max_db(&self) -> f64 {
        self.max_db
    }

    /// Mean gain reduction per frame so far, dB (0 before any frame).
    pub fn mean_db(&self) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            self.sum_db / self.frames as f64
        }
    }

    /// `{"max_gain_reduction_db": .., "mean_gain_reduction_db": ..}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "max_gain_reduction_db": self.max_db(),
            "mean_gain_reduction_db": self.mean_db(),
        })
    }
}

/// Frames per control step of a [`CompressorCore`]: the gain computer, the smoother and the
/// exponential run once a step, on the step's loudest detector power, and the linear gain is
/// interpolated between steps. Four frames (0.09 ms at 44.1 kHz) is far below any attack time, and
/// the step's maximum keeps every peak the detector sees.
pub const CONTROL_FRAMES: usize = 4;

/// The fraction of a control step one frame is.
const CONTROL_STEP: f64 = 1.0 / CONTROL_FRAMES as f64;

/// Level detector, gain computer and smoother: turns frames of audio into one linear gain per frame.
/// Shared by [`Compressor`] and every band of the multiband compressor.
///
/// The detector runs every frame; the rest at the control rate ([`CONTROL_FRAMES`]): when a step
/// completes, its gain is computed, and the frames of the next step move linearly from the gain of
/// the step before to it. The gain so follows the detector one step late, which costs nothing
/// audible and makes the logarithm and exponential a quarter as frequent.
#[derive(Debug, Clone)]
pub struct CompressorCore {
    detector: LevelDetector,
    computer: GainComputer,
    smoother: GainSmoother,
    makeup_db: f64,
    stats: GainReductionStats,
    /// Frames of the current control step seen so far, and their loudest power.
    step_frames: usize,
    step_power: f64,
    /// Linear gains of the two latest complete steps: the current step's frames move from the first
    /// to the second.
    gain_from: f64,
    gain_to: f64,
    /// The vectors the control steps' exponentials run on.
    kernel: VectorKernel,
}

impl CompressorCore {
    /// A core for `channel_count` channels. `config` is assumed valid (see
    /// [`CompressorConfig::validate`]).
    pub fn new(config: &CompressorConfig, channel_count: usize, sample_rate_hz: u32) -> Self {
        Self {
            detector: LevelDetector::new(
                config.detector,
                config.rms_window_ms,
                channel_count,
                sample_rate_hz,
            ),
            computer: GainComputer::new(config.threshold_db, config.ratio, config.knee_db),
            smoother: GainSmoother::new(
                config.attack_ms,
                config.release_ms,
                f64::from(sample_rate_hz) / CONTROL_FRAMES as f64,
            ),
            makeup_db: config.makeup_db,
            stats: GainReductionStats::default(),
            step_frames: 0,
            step_power: 0.0,
            gain_from: db_to_amplitude(config.makeup_db),
            gain_to: db_to_amplitude(config.makeup_db),
            kernel: VectorKernel::detect(),
        }
    }

    /// Feeds one frame (one sample per channel) and returns the linear gain to apply to all of it.
    #[inline]
    pub fn next_gain(&mut self, frame: &[f64]) -> f64 {
        let mut value = [self.detector.next_level_power(frame)];
        self.powers_to_gains(&mut value);
        value[0]
    }

    /// Feeds the first `powers.len()` frames of `channels` (see [`LevelDetector::level_powers`])
    /// to the level detector only and sets `powers` to their powers: the first half of
    /// [`CompressorCore::next_gain`], for [`CompressorCore::powers_to_gains`].
    pub fn level_powers<'a, S>(
        &mut self,
        channels: impl Iterator<Item = &'a [S]> + Clone,
        powers: &mut [f64],
    ) where
        S: Copy + Into<f64> + 'a,
    {
        self.detector.level_powers(channels, powers);
    }

    /// The second half of [`CompressorCore::next_gain`] over a run of frames: `values[i]`, the
    /// power [`CompressorCore::next_power`] gave for frame `i`, becomes the frame's linear gain.
    /// Exactly what frame-by-frame calls give.
    pub fn powers_to_gains(&mut self, values: &mut [f64]) {
        // Frame by frame to the next step boundary, then whole steps, then frame by frame again.
        let head = ((CONTROL_FRAMES - self.step_frames) % CONTROL_FRAMES).min(values.len());
        let (head, rest) = values.split_at_mut(head);
        self.powers_to_gains_one_by_one(head);
        let whole = rest.len() - rest.len() % CONTROL_FRAMES;
        let (steps, tail) = rest.split_at_mut(whole);
        self.powers_to_gains_by_step(steps);
        self.powers_to_gains_one_by_one(tail);
    }

    /// [`CompressorCore::powers_to_gains`] over whole control steps, from a step boundary. Step `s`
    /// ends with a new target gain `g[s]`, and its frames move from `g[s - 2]` to `g[s - 1]` (the
    /// two latest targets before it). In three sweeps, so that the exponentials run on vectors:
    /// every step's target in the log domain, kept at `values[s]` (step `s` has been read by then);
    /// all their exponentials at once; then every step's frames, the last step first, so that no
    /// target is overwritten before its frames are written.
    fn powers_to_gains_by_step(&mut self, values: &mut [f64]) {
        let steps = values.len() / CONTROL_FRAMES;
        if steps == 0 {
            return;
        }
        debug_assert!(self.step_frames == 0 && values.len() % CONTROL_FRAMES == 0);
        for s in 0..steps {
            let step = &values[s * CONTROL_FRAMES..(s + 1) * CONTROL_FRAMES];
            let power = step.iter().fold(0.0, |m, &p| larger(m, p));
            let gain_reduction_db = self.gain_reduction_db(power);
            values[s] = log_amplitude(self.makeup_db - gain_reduction_db);
        }
        math::exp_each(self.kernel, &mut values[..steps]);
        let (before_first, first) = (self.gain_from, self.gain_to);
        let target = |values: &[f64], s: isize| match s {
            -2 => before_first,
            -1 => first,
            s => values[s as usize],
        };
        (self.gain_from, self.gain_to) = (
            target(values, steps as isize - 2),
            target(values, steps as isize - 1),
        );
        for s in (0..steps).rev() {
            let from = target(values, s as isize - 2);
            let change = target(values, s as isize - 1) - from;
            let frames = &mut values[s * CONTROL_FRAMES..(s + 1) * CONTROL_FRAMES];
            for (k, value) in frames.iter_mut().enumerate() {
                *value = from + change * ((k + 1) as f64 * CONTROL_STEP);
            }
        }
    }

    /// [`CompressorCore::powers_to_gains`] a frame at a time.
    fn powers_to_gains_one_by_one(&mut self, values: &mut [f64]) {
        for value in values.iter_mut() {
            self.step_power = larger(self.step_power, *value);
            self.step_frames += 1;
            let along = self.step_frames as f64 * CONTROL_STEP;
            *value = self.gain_from + (self.gain_to - self.gain_from) * along;
            if self.step_frames == CONTROL_FRAMES {
                self.end_step();
            }
        }
    }

    /// Closes a control step: its gain becomes the target of the next.
    fn end_step(&mut self) {
        let gain_reduction_db = self.gain_reduction_db(self.step_power);
        self.gain_from = self.gain_to;
        self.gain_to = math::exp(log_amplitude(self.makeup_db - gain_reduction_db));
        self.step_frames = 0;
        self.step_power = 0.0;
    }

    /// The smoothed gain reduction at the end of a control step whose loudest power was `power`,
    /// counted in the statistics.
    fn gain_reduction_db(&mut self, power: f64) -> f64 {
        let wanted_db = self.computer.gain_reduction_db_for_power(power);
        let gain_reduction_db = self.smoother.next(wanted_db);
        self.stats.add(gain_reduction_db, CONTROL_FRAMES as u64);
        gain_reduction_db
    }

    /// Gain reduction statistics since the last reset.
    pub fn stats(&self) -> &GainReductionStats {
        &self.stats
    }

    /// Returns to the freshly built state.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.smoother.reset();
        self.stats = GainReductionStats::default();
        self.step_frames = 0;
        self.step_power = 0.0;
        self.gain_from = db_to_amplitude(self.makeup_db);
        self.gain_to = self.gain_from;
    }
}

/// A gain in dB as the natural log of its linear amplitude.
#[inline]
fn log_amplitude(db: f64) -> f64 {
    db * (std::f64::consts::LN_10 / 20.0)
}

/// dB to a linear amplitude, by [`math::exp`] (the control steps' targets use it too).
fn db_to_amplitude(db: f64) -> f64 {
    math::exp(log_amplitude(db))
}

/// Compressor stage: one [`CompressorCore`] driving every channel with the same gain.
#[derive(Debug, Clone)]
pub struct Compressor {
    core: CompressorCore,
    /// Channels compressed.
    channel_count: usize,
    /// Per-frame gains of the current block.
    gains: Vec<f64>,
}

impl Compressor {
    /// Builds the compressor for `channel_count` channels at `sample_rate_hz`, with buffers for blocks
    /// of up to `max_block_frames` frames.
    ///
    /// # Errors
    /// An out-of-range value (see [`CompressorConfig::validate`]).
    pub fn new(
        config: &CompressorConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        config.validate()?;
        Ok(Self {
            core: CompressorCore::new(config, channel_count, sample_rate_hz),
            channel_count,
            gains: vec![0.0; max_block_frames.max(1)],
        })
    }

    /// Gain reduction statistics since the last reset.
    pub fn stats(&self) -> &GainReductionStats {
        self.core.stats()
    }
}

impl Stage for Compressor {
    fn name(&self) -> &'static str {
        "compressor"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        let channels = self.channel_count.min(block.channel_count());
        let frames = block.frames();
        // Chunked so that an oversized block (a contract violation) still allocates nothing.
        let mut start = 0;
        while start < frames {
            let len = self.gains.len().min(frames - start);
            let source: &AudioBlock = block;
            let inputs = (0..channels).map(|channel| &source.channel(channel)[start..start + len]);
            self.core.level_powers(inputs, &mut self.gains[..len]);
            self.core.powers_to_gains(&mut self.gains[..len]);
            for channel in 0..channels {
                let samples = &mut block.channel_mut(channel)[start..start + len];
                for (sample, &gain) in samples.iter_mut().zip(&self.gains[..len]) {
                    *sample = (f64::from(*sample) * gain) as f32;
                }
            }
            start += len;
        }
    }

    fn reset(&mut self) {
        self.core.reset();
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(self.core.stats().to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{max_abs_diff, noise, process_in_blocks, rms_db, sine};

    const FS: u32 = 48_000;

    fn compressor(config: &CompressorConfig, channels: usize) -> Compressor {
        Compressor::new(config, channels, FS, 4096).expect("valid config")
    }

    fn peak_db(samples: &[f32]) -> f64 {
        20.0 * f64::from(samples.iter().fold(0.0f32, |m, x| m.max(x.abs()))).log10()
    }

    fn db_to_amp(db: f64) -> f64 {
        10f64.powf(db / 20.0)
    }

    /// Output level of a steady 1 kHz sine whose detector level is `level_db` (3 s, last 1 s measured).
    fn steady_output_db(config: &CompressorConfig, level_db: f64) -> (f64, f64) {
        let amplitude = match config.detector {
            Detector::Peak => db_to_amp(level_db),
            Detector::Rms => db_to_amp(level_db) * std::f64::consts::SQRT_2,
        };
        let input = sine(2, 3 * FS as usize, FS, 1000.0, amplitude);
        let output = process_in_blocks(&mut compressor(config, 2), &input, &[4096]);
        let tail_in = &input.channel(0)[2 * FS as usize..];
        let tail_out = &output.channel(0)[2 * FS as usize..];
        match config.detector {
            Detector::Peak => (peak_db(tail_in), peak_db(tail_out)),
            Detector::Rms => (rms_db(tail_in), rms_db(tail_out)),
        }
    }

    #[test]
    fn static_curve_above_the_knee() {
        for detector in [Detector::Peak, Detector::Rms] {
            for makeup_db in [0.0, 4.0] {
                let config = CompressorConfig {
                    makeup_db,
                    detector,
                    ..CompressorConfig::new(-20.0, 4.0)
                };
                let (input_db, output_db) = steady_output_db(&config, -8.0);
                assert!((input_db + 8.0).abs() < 0.01);
                let want = -20.0 + 3.0 + makeup_db;
                eprintln!(
                    "static {detector:?} makeup {makeup_db}: out {output_db:.3} dB, want {want}"
                );
                assert!(
                    (output_db - want).abs() < 0.2,
                    "{detector:?} makeup {makeup_db}: {output_db} dB, want {want}"
                );
            }
        }
    }

    #[test]
    fn below_the_knee_gain_is_exactly_makeup() {
        for detector in [Detector::Peak, Detector::Rms] {
            let config = CompressorConfig {
                makeup_db: 2.5,
                detector,
                ..CompressorConfig::new(-20.0, 4.0)
            };
            // threshold - knee/2 = -23 dB; the tone reads -23.5 dB.
            let (input_db, output_db) = steady_output_db(&config, -23.5);
            eprintln!(
                "below knee {detector:?}: gain {:.5} dB",
                output_db - input_db
            );
            assert!(
                (output_db - input_db - 2.5).abs() < 0.01,
                "{detector:?}: {input_db} -> {output_db}"
            );
        }
    }

    #[test]
    fn gain_computer_curve() {
        let hard = GainComputer::new(-20.0, 4.0, 0.0);
        assert_eq!(hard.gain_reduction_db(-20.0), 0.0);
        assert_eq!(hard.gain_reduction_db(-8.0), 9.0);
        assert_eq!(hard.gain_reduction_db(LEVEL_FLOOR_DB), 0.0);
        let soft = GainComputer::new(-20.0, 4.0, 6.0);
        assert_eq!(soft.gain_reduction_db(-23.0), 0.0);
        // Continuous at both knee edges, and a quarter of the full slope's reduction at the threshold.
        assert!((soft.gain_reduction_db(-17.0) - 2.25).abs() < 1e-12);
        assert!((soft.gain_reduction_db(-16.999) - 2.25075).abs() < 1e-9);
        assert!((soft.gain_reduction_db(-20.0) - 0.75 * 9.0 / 12.0).abs() < 1e-12);
        let unity = GainComputer::new(-40.0, 1.0, 6.0);
        assert_eq!(unity.gain_reduction_db(0.0), 0.0);
    }

    #[test]
    fn attack_reaches_63_percent_at_attack_ms() {
        for attack_ms in [1.0, 10.0, 50.0] {
            let config = CompressorConfig {
                attack_ms,
                knee_db: 0.0,
                ..CompressorConfig::new(-20.0, 4.0)
            };
            // DC steps from -40 dBFS to -8 dBFS (12 dB over the threshold: 9 dB final reduction).
            let step_at = FS as usize / 10;
            let mut input = vec![0.01f32; FS as usize];
            input[step_at..].fill(db_to_amp(-8.0) as f32);
            let input = AudioBlock::from_channels(vec![input], FS);
            let output = process_in_blocks(&mut compressor(&config, 1), &input, &[4096]);
            let reduction_db =
                |n: usize| -20.0 * f64::from(output.channel(0)[n] / input.channel(0)[n]).log10();
            assert!(reduction_db(step_at - 1).abs() < 1e-6);
            let final_db = reduction_db(FS as usize - 1);
            assert!((final_db - 9.0).abs() < 0.01, "{final_db}");
            let reached = (step_at..FS as usize)
                .find(|&n| reduction_db(n) >= 0.632 * final_db)
                .unwrap_or(usize::MAX)
                - step_at;
            let reached_ms = reached as f64 * 1e3 / f64::from(FS);
            eprintln!("attack {attack_ms} ms: 63 % at {reached_ms:.3} ms");
            assert!(
                (reached_ms / attack_ms - 1.0).abs() < 0.2,
                "attack {attack_ms} ms: 63 % at {reached_ms} ms"
            );
        }
    }

    #[test]
    fn release_recovers_with_release_ms() {
        let config = CompressorConfig {
            attack_ms: 0.1,
            release_ms: 200.0,
            knee_db: 0.0,
            ..CompressorConfig::new(-20.0, 4.0)
        };
        let step_at = FS as usize / 2;
        let mut input = vec![db_to_amp(-8.0) as f32; 2 * FS as usize];
        input[step_at..].fill(0.01);
        let input = AudioBlock::from_channels(vec![input], FS);
        let output = process_in_blocks(&mut compressor(&config, 1), &input, &[4096]);
        let reduction_db =
            |n: usize| -20.0 * f64::from(output.channel(0)[n] / input.channel(0)[n]).log10();
        let start_db = reduction_db(step_at - 1);
        let recovered = (step_at..2 * FS as usize)
            .find(|&n| reduction_db(n) <= (1.0 - 0.632) * start_db)
            .unwrap_or(usize::MAX)
            - step_at;
        let recovered_ms = recovered as f64 * 1e3 / f64::from(FS);
        eprintln!("release 200 ms: 63 % recovered at {recovered_ms:.3} ms");
        assert!(
            (recovered_ms / 200.0 - 1.0).abs() < 0.2,
            "{recovered_ms} ms"
        );
    }

    #[test]
    fn stereo_link_reduces_both_channels_equally() {
        let config = CompressorConfig::new(-20.0, 4.0);
        let loud = sine(1, FS as usize, FS, 440.0, 0.5);
        let quiet = sine(1, FS as usize, FS, 440.0, 0.001);
        let input = AudioBlock::from_channels(
            vec![loud.channel(0).to_vec(), quiet.channel(0).to_vec()],
            FS,
        );
        let output = process_in_blocks(&mut compressor(&config, 2), &input, &[4096]);
        let left_gain = rms_db(&output.channel(0)[24_000..]) - rms_db(&input.channel(0)[24_000..]);
        let right_gain = rms_db(&output.channel(1)[24_000..]) - rms_db(&input.channel(1)[24_000..]);
        assert!(left_gain < -6.0, "{left_gain}");
        assert!(
            (left_gain - right_gain).abs() < 0.001,
            "{left_gain} {right_gain}"
        );
        // And sample by sample.
        for n in (0..FS as usize).step_by(97) {
            let (l_in, r_in) = (input.channel(0)[n], input.channel(1)[n]);
            if r_in.abs() > 1e-4 {
                let l = output.channel(0)[n] / l_in;
                let r = output.channel(1)[n] / r_in;
                assert!((l - r).abs() < 1e-3 * l, "frame {n}: {l} vs {r}");
            }
        }
    }

    #[test]
    fn block_size_independent() {
        for detector in [Detector::Peak, Detector::Rms] {
            let config = CompressorConfig {
                detector,
                attack_ms: 2.0,
                release_ms: 50.0,
                ..CompressorConfig::new(-30.0, 6.0)
            };
            let input = noise(2, 30_000, FS, 0.8, 21);
            let reference = process_in_blocks(&mut compressor(&config, 2), &input, &[4096]);
            for sizes in [&[1][..], &[7], &[64], &[4096], &[5, 700, 1]] {
                let output = process_in_blocks(&mut compressor(&config, 2), &input, sizes);
                assert_eq!(output, reference, "{detector:?} {sizes:?}");
            }
        }
    }

    /// The block-wise detector the stage runs gives the frame-by-frame detector's bits, whatever
    /// the blocks and however they fall against the RMS window.
    #[test]
    fn block_powers_equal_frame_by_frame_powers() {
        for detector in [Detector::Peak, Detector::Rms] {
            for channels in [1, 2, 3] {
                let input = noise(channels, 20_000, FS, 0.5, channels as u64);
                let mut by_frame = LevelDetector::new(detector, 7.3, channels, FS);
                let expected: Vec<f64> = (0..input.frames())
                    .map(|n| {
                        let frame: Vec<f64> = input.channels().map(|c| f64::from(c[n])).collect();
                        by_frame.next_level_power(&frame)
                    })
                    .collect();
                let mut by_block = LevelDetector::new(detector, 7.3, channels, FS);
                let mut powers = vec![0.0; input.frames()];
                let mut start = 0;
                for size in [1, 349, 4096, 17].into_iter().cycle() {
                    let end = (start + size).min(input.frames());
                    let inputs = (0..channels).map(|c| &input.channel(c)[start..end]);
                    by_block.level_powers(inputs, &mut powers[start..end]);
                    start = end;
                    if start == input.frames() {
                        break;
                    }
                }
                let same = powers
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{detector:?}, {channels} channels");
            }
        }
    }

    /// The stage (block-wise levels, whole control steps, vector exponentials) gives exactly the
    /// gains of the frame-by-frame definition, [`CompressorCore::next_gain`].
    #[test]
    fn stage_equals_frame_by_frame_gains() {
        for detector in [Detector::Peak, Detector::Rms] {
            let config = CompressorConfig {
                detector,
                attack_ms: 1.0,
                release_ms: 40.0,
                makeup_db: 1.5,
                ..CompressorConfig::new(-24.0, 4.0)
            };
            let input = noise(2, 20_000, FS, 0.7, 5);
            let output = process_in_blocks(&mut compressor(&config, 2), &input, &[4096, 333]);
            let mut core = CompressorCore::new(&config, 2, FS);
            for n in 0..input.frames() {
                let frame: Vec<f64> = input.channels().map(|c| f64::from(c[n])).collect();
                let gain = core.next_gain(&frame);
                for (channel, &x) in frame.iter().enumerate() {
                    let expected = (x * gain) as f32;
                    assert_eq!(
                        output.channel(channel)[n].to_bits(),
                        expected.to_bits(),
                        "{detector:?}, frame {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn reset_repeats_the_render() {
        let config = CompressorConfig {
            detector: Detector::Rms,
            ..CompressorConfig::new(-30.0, 3.0)
        };
        let mut stage = compressor(&config, 2);
        let input = noise(2, 20_000, FS, 0.5, 2);
        let first = process_in_blocks(&mut stage, &input, &[1000]);
        let first_report = stage.report();
        stage.reset();
        let second = process_in_blocks(&mut stage, &input, &[1000]);
        assert_eq!(first, second);
        assert_eq!(first_report, stage.report());
    }

    #[test]
    fn silence_in_silence_out_and_noise_stays_finite() {
        for detector in [Detector::Peak, Detector::Rms] {
            let config = CompressorConfig {
                detector,
                makeup_db: 24.0,
                ..CompressorConfig::new(-60.0, 100.0)
            };
            let mut stage = compressor(&config, 2);
            let silence = AudioBlock::from_channels(vec![vec![0.0; 10_000]; 2], FS);
            let out = process_in_blocks(&mut stage, &silence, &[512]);
            assert!(out.channels().flatten().all(|&x| x == 0.0));
            let loud = noise(2, 48_000, FS, 1.0, 13);
            let out = process_in_blocks(&mut stage, &loud, &[512]);
            assert!(out.channels().flatten().all(|x| x.is_finite()));
            let out = process_in_blocks(&mut stage, &silence, &[512]);
            assert!(out.channels().flatten().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn report_gives_max_and_mean_reduction() {
        let config = CompressorConfig {
            knee_db: 0.0,
            ..CompressorConfig::new(-20.0, 4.0)
        };
        let mut stage = compressor(&config, 1);
        let input = AudioBlock::from_channels(vec![vec![db_to_amp(-8.0) as f32; FS as usize]], FS);
        let output = process_in_blocks(&mut stage, &input, &[4096]);
        assert!(
            max_abs_diff(
                &output.channel(0)[FS as usize / 2..],
                &[db_to_amp(-17.0) as f32; 24_000]
            ) < 1e-5
        );
        let report = stage.report().expect("a report");
        let max = report["max_gain_reduction_db"].as_f64().unwrap_or(0.0);
        let mean = report["mean_gain_reduction_db"].as_f64().unwrap_or(0.0);
        assert!((max - 9.0).abs() < 1e-6, "{max}");
        assert!(mean > 8.5 && mean < 9.0, "{mean}");
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: CompressorConfig =
            toml::from_str("threshold_db = -18.0\nratio = 2.0").expect("valid");
        assert_eq!(config, CompressorConfig::new(-18.0, 2.0));
        let config: CompressorConfig = toml::from_str(
            "threshold_db = -18.0\nratio = 2.0\ndetector = \"rms\"\nrms_window_ms = 30.0",
        )
        .expect("valid");
        assert_eq!(config.detector, Detector::Rms);
        let text = toml::to_string(&config).expect("serialise");
        assert_eq!(toml::from_str::<CompressorConfig>(&text).ok(), Some(config));
        assert!(
            toml::from_str::<CompressorConfig>(
                "threshold_db = -18.0\nratio = 2.0\nlookahead_ms = 5.0"
            )
            .is_err()
        );
        assert!(
            toml::from_str::<CompressorConfig>(
                "threshold_db = -18.0\nratio = 2.0\ndetector = \"vu\""
            )
            .is_err()
        );
        let bad = CompressorConfig {
            ratio: 0.5,
            ..CompressorConfig::new(-18.0, 2.0)
        };
        assert_eq!(
            Compressor::new(&bad, 2, FS, 64)
                .map(|_| ())
                .map_err(|e| e.key),
            Err("ratio".into())
        );
        let bad = CompressorConfig {
            attack_ms: 0.0,
            ..CompressorConfig::new(-18.0, 2.0)
        };
        assert_eq!(bad.validate().map_err(|e| e.key), Err("attack_ms".into()));
    }
}
