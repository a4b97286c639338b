//! Word-length reduction: quantisation to 16 or 24 bits, with optional TPDF dither and noise shaping.
//!
//! [`Quantiser`] rounds every sample to the grid `k / 2^(bits - 1)` of the target word length and
//! clamps it to `[-1, 1 - 1 LSB]`, the range of a two's-complement integer sample. Its output is exact
//! in `f32` (at most 24 significant bits), so an encoder that scales by `2^(bits - 1)` writes exactly
//! these integers. [`DitherMode`] chooses what happens before rounding:
//!
//! - `none`: plain rounding (to nearest, ties to even). The error is correlated with the signal:
//!   signals below half an LSB vanish and low-level tones turn into harmonic distortion.
//! - `tpdf`: triangular-PDF dither, the sum of two independent uniform variables of ±½ LSB each
//!   (±1 LSB peak), added before rounding. It makes the first two moments of the error independent of
//!   the signal (Lipshitz, Wannamaker & Vanderkooy, "Quantization and Dither: A Theoretical Survey",
//!   JAES 1992): the error is a steady white noise of power LSB²/12 (rounding) + LSB²/6 (dither) =
//!   LSB²/4, and signals far below one LSB survive, buried in that noise.
//! - `shaped`: TPDF dither inside an error-feedback loop that filters the total error with
//!   `E(z) = 1 - 1.623 z⁻¹ + 0.982 z⁻² - 0.109 z⁻³`, the 3-coefficient F-weighted (minimally audible)
//!   shaper of Wannamaker ("Psychoacoustically Optimal Noise Shaping", JAES 1992), designed for
//!   44.1 kHz. At 44.1 and 48 kHz the noise is about 12 dB lower below 2 kHz and 15-19 dB lower at
//!   3-4 kHz, where hearing is most sensitive, and up to 11.4 dB higher near Nyquist, where it is least
//!   (total power +6.6 dB). At 88.2/96 kHz the same filter keeps the whole audio band at or below the
//!   flat TPDF level (its minimum moves to about 8 kHz). The fed-back error is clamped to ±2 LSB (an
//!   unclipped error never exceeds 1.5 LSB), so clipping at full scale cannot make the loop ring or
//!   grow.
//!
//! The dither comes from xoshiro256** generators, eight per channel whose outputs interleave, seeded
//! through SplitMix64 from the `seed`, the channel index and the generator's place; each output gives
//! one TPDF value (the difference of its two 32-bit halves), and sample `n` of a channel takes the
//! channel's value `n`: the same seed renders the same bytes on any machine and in blocks of any
//! size, a different seed different noise, and channels get independent noise. Input samples that
//! are exactly 0.0 (digital silence) come out as exactly 0 without dither ("auto-black"), and clear
//! the noise shaper's memory,
//! so silent passages stay digitally silent. Non-finite input is treated as silence.

use crate::audio::AudioBlock;
use crate::stage::Stage;
use lathe_model::config::{InvalidValue, check_range};
use lathe_model::stage_config::DitherMode;

/// Coefficients `a_k` of the error feedback: the output error is `e[n] - Σ a_k e[n-k]`, i.e. the
/// noise transfer function `1 - 1.623 z⁻¹ + 0.982 z⁻² - 0.109 z⁻³` (Wannamaker's 3-tap F-weighted
/// shaper).
const SHAPING_COEFFS: [f64; 3] = [1.623, -0.982, 0.109];

/// Largest fed-back error, in LSB.
const MAX_FEEDBACK_LSB: f64 = 2.0;

/// SplitMix64 step (Steele, Lea & Flood 2014), used only to expand a seed into generator state.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent xoshiro256** generators a channel's dither interleaves.
const DITHER_LANES: usize = 8;

/// Dither values generated at a time, per channel.
const DITHER_BATCH: usize = 32 * DITHER_LANES;

/// A channel's TPDF dither: [`DITHER_LANES`] xoshiro256** generators (Blackman & Vigna 2018: small,
/// fast, and statistically strong enough for dither), seeded through SplitMix64, whose outputs
/// interleave (value `n` comes from generator `n % DITHER_LANES`). Independent generators side by
/// side vectorise, where one generator's every step waits on the one before; values are made
/// [`DITHER_BATCH`] at a time.
#[derive(Debug, Clone)]
struct DitherSource {
    /// The generators' states, word by word: `state[w][lane]` is word `w` of generator `lane`.
    state: [[u64; DITHER_LANES]; 4],
    batch: Vec<f64>,
    /// The next value of `batch` to hand out.
    next: usize,
}

impl DitherSource {
    fn seeded(seed: u64, stream: u64) -> Self {
        let mut state = [[0; DITHER_LANES]; 4];
        for lane in 0..DITHER_LANES {
            let mut mix = seed
                ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)
                ^ (lane as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for word in &mut state {
                word[lane] = splitmix64(&mut mix);
            }
        }
        Self {
            state,
            batch: vec![0.0; DITHER_BATCH],
            next: DITHER_BATCH,
        }
    }

    /// The next values, triangular in `(-1, 1)`: at most `wanted`, and at least one for `wanted` > 0.
    fn take(&mut self, wanted: usize) -> &[f64] {
        if self.next == DITHER_BATCH {
            self.refill();
        }
        let start = self.next;
        self.next = (start + wanted).min(DITHER_BATCH);
        &self.batch[start..self.next]
    }

    /// A new batch: every generator steps [`DITHER_BATCH`] / [`DITHER_LANES`] times. Each output
    /// gives one value, the difference of its two 32-bit halves (two independent uniforms).
    fn refill(&mut self) {
        // The states in registers, not in `self`, while the loop runs.
        let [mut s0, mut s1, mut s2, mut s3] = self.state;
        for round in self.batch.chunks_exact_mut(DITHER_LANES) {
            for lane in 0..DITHER_LANES {
                let result = s1[lane].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
                let t = s1[lane] << 17;
                s2[lane] ^= s0[lane];
                s3[lane] ^= s1[lane];
                s1[lane] ^= s2[lane];
                s0[lane] ^= s3[lane];
                s2[lane] ^= t;
                s3[lane] = s3[lane].rotate_left(45);
                // high - low, exactly, through the bits of ROUND + (high - low) (an integer
                // conversion vectors lack before AVX-512).
                let difference = (result >> 32).wrapping_sub(result & 0xFFFF_FFFF);
                let value = f64::from_bits(ROUND.to_bits().wrapping_add(difference)) - ROUND;
                round[lane] = value * (1.0 / 4_294_967_296.0);
            }
        }
        self.state = [s0, s1, s2, s3];
        self.next = 0;
    }
}

/// 1.5 * 2^52: adding and subtracting it rounds an `f64` below 2^51 in magnitude to the nearest
/// integer, ties to even, exactly (plain arithmetic, where `round_ties_even` is a libm call on
/// baseline x86-64). Larger values come back unchanged or at most one away, and the quantiser
/// clamps them to full scale anyway.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// `v` rounded to the nearest integer (ties to even) and clamped to `[min, max]`, branch-free.
#[inline]
fn round_and_clamp(v: f64, min: f64, max: f64) -> f64 {
    let rounded = (v + ROUND) - ROUND;
    let low = if rounded < min { min } else { rounded };
    if low > max { max } else { low }
}

/// Per-channel state: the dither generator and the last three (clamped) total errors, in LSB.
#[derive(Debug, Clone)]
struct ChannelState {
    dither: DitherSource,
    errors: [f64; 3],
}

/// The output grid: `scale` codes per unit of amplitude, `step` = 1 / `scale`, and the codes a
/// word of the bit depth holds.
#[derive(Debug, Clone, Copy)]
struct Grid {
    scale: f64,
    step: f64,
    min_code: f64,
    max_code: f64,
}

impl Grid {
    /// `x` plus `offset` codes, rounded to the grid; silence and non-finite samples become exact
    /// zeros. Branch-free, so that loops of it vectorise.
    #[inline(always)]
    fn quantise(&self, x: f32, offset: f64) -> f32 {
        let code = round_and_clamp(
            f64::from(x) * self.scale + offset,
            self.min_code,
            self.max_code,
        );
        if x == 0.0 || !x.is_finite() {
            0.0
        } else {
            (code * self.step) as f32
        }
    }
}

/// Plain rounding, no dither.
fn quantise_rounding(samples: &mut [f32], grid: &Grid) {
    for sample in samples.iter_mut() {
        *sample = grid.quantise(*sample, 0.0);
    }
}

/// TPDF dither: sample `n` of the channel takes the channel's dither value `n`.
fn quantise_tpdf(samples: &mut [f32], dither: &mut DitherSource, grid: &Grid) {
    let mut rest = samples;
    while !rest.is_empty() {
        let values = dither.take(rest.len());
        let (now, later) = rest.split_at_mut(values.len());
        for (sample, &value) in now.iter_mut().zip(values) {
            *sample = grid.quantise(*sample, value);
        }
        rest = later;
    }
}

/// TPDF dither inside the noise shaper's error feedback: sample `n` takes dither value `n`, as
/// [`quantise_tpdf`]; silence and non-finite samples clear the shaper's memory.
fn quantise_shaped(samples: &mut [f32], state: &mut ChannelState, grid: &Grid) {
    // The errors in registers, not in `state`, while the loop runs.
    let mut errors = state.errors;
    let mut rest = samples;
    while !rest.is_empty() {
        let values = state.dither.take(rest.len());
        let (now, later) = rest.split_at_mut(values.len());
        for (sample, &dither) in now.iter_mut().zip(values) {
            let x = *sample;
            if x == 0.0 || !x.is_finite() {
                *sample = 0.0;
                errors = [0.0; 3];
                continue;
            }
            let [e1, e2, e3] = errors;
            let feedback = SHAPING_COEFFS[0] * e1 + SHAPING_COEFFS[1] * e2 + SHAPING_COEFFS[2] * e3;
            let wanted = f64::from(x) * grid.scale - feedback;
            let code = round_and_clamp(wanted + dither, grid.min_code, grid.max_code);
            let error = (code - wanted).clamp(-MAX_FEEDBACK_LSB, MAX_FEEDBACK_LSB);
            errors = [error, e1, e2];
            *sample = (code * grid.step) as f32;
        }
        rest = later;
    }
    state.errors = errors;
}

/// The word-length reduction stage ("dither"); see the module documentation.
#[derive(Debug, Clone)]
pub struct Quantiser {
    mode: DitherMode,
    bit_depth: u32,
    seed: u64,
    /// `2^(bit_depth - 1)`: codes per unit of amplitude.
    scale: f64,
    channels: Vec<ChannelState>,
}

impl Quantiser {
    /// A quantiser to `bit_depth` bits (16 or 24) for `channel_count` channels at `sample_rate_hz`,
    /// its dither seeded from `seed`.
    pub fn new(
        mode: DitherMode,
        bit_depth: u32,
        channel_count: usize,
        sample_rate_hz: u32,
        seed: u64,
    ) -> Result<Self, InvalidValue> {
        if !matches!(bit_depth, 16 | 24) {
            return Err(InvalidValue::new(
                "bit_depth",
                format!("{bit_depth} is not allowed; allowed 16 or 24"),
            ));
        }
        check_range("channel_count", channel_count as f64, 1.0, 64.0, "")?;
        check_range(
            "sample_rate_hz",
            f64::from(sample_rate_hz),
            8000.0,
            768_000.0,
            "Hz",
        )?;
        let mut quantiser = Self {
            mode,
            bit_depth,
            seed,
            scale: f64::from(1u32 << (bit_depth - 1)),
            channels: Vec::with_capacity(channel_count),
        };
        quantiser.channels = (0..channel_count)
            .map(|channel| quantiser.fresh_channel(channel))
            .collect();
        Ok(quantiser)
    }

    /// The dither mode.
    pub fn mode(&self) -> DitherMode {
        self.mode
    }

    /// The target word length in bits.
    pub fn bit_depth(&self) -> u32 {
        self.bit_depth
    }

    /// One step of the output grid, `1 / 2^(bit_depth - 1)`.
    pub fn lsb(&self) -> f64 {
        1.0 / self.scale
    }

    fn fresh_channel(&self, channel: usize) -> ChannelState {
        ChannelState {
            dither: DitherSource::seeded(self.seed, channel as u64 + 1),
            errors: [0.0; 3],
        }
    }
}

impl Stage for Quantiser {
    fn name(&self) -> &'static str {
        "dither"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        let scale = self.scale;
        let grid = Grid {
            scale,
            // A power of two, so multiplying by it is dividing by `scale`, exactly.
            step: 1.0 / scale,
            min_code: -scale,
            max_code: scale - 1.0,
        };
        for (samples, state) in block.channels_mut().zip(&mut self.channels) {
            match self.mode {
                DitherMode::None => quantise_rounding(samples, &grid),
                DitherMode::Tpdf => quantise_tpdf(samples, &mut state.dither, &grid),
                DitherMode::Shaped => quantise_shaped(samples, state, &grid),
            }
        }
    }

    fn reset(&mut self) {
        for channel in 0..self.channels.len() {
            self.channels[channel] = self.fresh_channel(channel);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testkit::{noise, process_in_blocks, sine};
    use std::f64::consts::PI;

    const MODES: [DitherMode; 3] = [DitherMode::None, DitherMode::Tpdf, DitherMode::Shaped];

    fn quantise(mode: DitherMode, bits: u32, input: &AudioBlock, seed: u64) -> AudioBlock {
        let mut q = Quantiser::new(
            mode,
            bits,
            input.channel_count(),
            input.sample_rate_hz(),
            seed,
        )
        .unwrap();
        process_in_blocks(&mut q, input, &[4096])
    }

    /// Total error (output - input) of one channel, in LSB.
    fn error_lsb(input: &AudioBlock, output: &AudioBlock, bits: u32) -> Vec<f64> {
        let scale = f64::from(1u32 << (bits - 1));
        input
            .channel(0)
            .iter()
            .zip(output.channel(0))
            .map(|(&x, &y)| (f64::from(y) - f64::from(x)) * scale)
            .collect()
    }

    /// Mean power of `signal` in the band `low_hz..=high_hz`, relative to the whole-band mean power
    /// of a white signal of unit variance: averaged over Hann-windowed 4096-frame segments, each bin's
    /// power computed with the Goertzel recurrence.
    fn band_power_db(signal: &[f64], rate: f64, low_hz: f64, high_hz: f64) -> f64 {
        const N: usize = 4096;
        let window: Vec<f64> = (0..N)
            .map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / N as f64).cos())
            .collect();
        let window_power: f64 = window.iter().map(|w| w * w).sum();
        let first_bin = (low_hz * N as f64 / rate).ceil() as usize;
        let last_bin = (high_hz * N as f64 / rate).floor() as usize;
        let mut total = 0.0;
        let mut count = 0usize;
        for segment in signal.chunks_exact(N) {
            for bin in first_bin..=last_bin {
                let coeff = 2.0 * (2.0 * PI * bin as f64 / N as f64).cos();
                let (mut s1, mut s2) = (0.0, 0.0);
                for (x, w) in segment.iter().zip(&window) {
                    let s0 = x * w + coeff * s1 - s2;
                    s2 = s1;
                    s1 = s0;
                }
                total += (s1 * s1 + s2 * s2 - coeff * s1 * s2) / window_power;
                count += 1;
            }
        }
        10.0 * (total / count as f64).log10()
    }

    #[test]
    fn output_lies_on_the_grid_within_range() {
        let mut input = noise(2, 20_000, 44_100, 1.3, 4);
        input.channel_mut(0)[..2000]
            .iter_mut()
            .for_each(|x| *x *= 1e-4);
        input.channel_mut(1)[5] = 1.0;
        input.channel_mut(1)[6] = -1.0;
        for bits in [16, 24] {
            let scale = f64::from(1u32 << (bits - 1));
            for mode in MODES {
                let out = quantise(mode, bits, &input, 1);
                for &y in out.channels().flatten() {
                    let code = f64::from(y) * scale;
                    assert_eq!(code, code.round(), "{mode:?} {bits} bits: {y}");
                    assert!((-scale..=scale - 1.0).contains(&code), "{mode:?}: {code}");
                }
            }
        }
    }

    #[test]
    fn same_seed_same_output_other_seed_other_noise() {
        let input = noise(2, 10_000, 48_000, 0.3, 8);
        for mode in [DitherMode::Tpdf, DitherMode::Shaped] {
            let a = quantise(mode, 16, &input, 42);
            assert_eq!(a, quantise(mode, 16, &input, 42));
            assert_ne!(a, quantise(mode, 16, &input, 43));
            // Channels get independent noise: equal inputs do not give equal outputs.
            let twin = sine(2, 10_000, 48_000, 440.0, 0.3);
            let out = quantise(mode, 16, &twin, 42);
            assert_ne!(out.channel(0), out.channel(1));
        }
    }

    #[test]
    fn tpdf_total_error_power_is_a_quarter_lsb_squared() {
        let input = noise(1, 441_000, 44_100, 0.5, 21);
        for bits in [16, 24] {
            let out = quantise(DitherMode::Tpdf, bits, &input, 5);
            let error = error_lsb(&input, &out, bits);
            let power = error.iter().map(|e| e * e).sum::<f64>() / error.len() as f64;
            let deviation_db = 10.0 * (power / 0.25).log10();
            eprintln!("{bits}-bit TPDF error power {power:.4} LSB² ({deviation_db:+.3} dB)");
            assert!(deviation_db.abs() <= 0.5, "{power} LSB²");
        }
        let out = quantise(DitherMode::None, 16, &input, 5);
        let error = error_lsb(&input, &out, 16);
        let power = error.iter().map(|e| e * e).sum::<f64>() / error.len() as f64;
        assert!(
            (10.0 * (power * 12.0).log10()).abs() <= 0.5,
            "rounding: {power} LSB²"
        );
    }

    /// The interleaved generators must not echo each other: the TPDF error has no correlation at
    /// any lag up to four rounds of generators, nor between channels (1/sqrt(N) is 0.0015 here).
    #[test]
    fn tpdf_error_is_white_and_independent_between_channels() {
        let input = noise(2, 441_000, 44_100, 0.5, 33);
        let out = quantise(DitherMode::Tpdf, 16, &input, 9);
        let error = |channel: usize| -> Vec<f64> {
            let scale = 32_768.0;
            input
                .channel(channel)
                .iter()
                .zip(out.channel(channel))
                .map(|(&x, &y)| (f64::from(y) - f64::from(x)) * scale)
                .collect()
        };
        let (left, right) = (error(0), error(1));
        let correlation = |a: &[f64], b: &[f64]| {
            let ab: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let aa: f64 = a.iter().map(|x| x * x).sum();
            let bb: f64 = b.iter().map(|x| x * x).sum();
            ab / (aa * bb).sqrt()
        };
        for lag in 1..=4 * DITHER_LANES {
            let r = correlation(&left[lag..], &left[..left.len() - lag]);
            assert!(r.abs() < 0.01, "lag {lag}: correlation {r:.4}");
        }
        let r = correlation(&left, &right);
        assert!(r.abs() < 0.01, "between channels: correlation {r:.4}");
    }

    #[test]
    fn quarter_lsb_sine_survives_tpdf_but_not_rounding() {
        let rate = 44_100;
        let lsb = 1.0 / 32_768.0;
        let input = sine(1, 10 * rate as usize, rate, 1000.0, 0.25 * lsb);
        let correlation = |out: &AudioBlock| {
            let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for (&x, &y) in input.channel(0).iter().zip(out.channel(0)) {
                let (x, y) = (f64::from(x), f64::from(y));
                xy += x * y;
                xx += x * x;
                yy += y * y;
            }
            if yy == 0.0 {
                0.0
            } else {
                xy / (xx * yy).sqrt()
            }
        };
        let rounded = quantise(DitherMode::None, 16, &input, 0);
        assert!(
            rounded.channel(0).iter().all(|&y| y == 0.0),
            "rounding keeps nothing"
        );
        // Expected sqrt(signal power / (signal + error power)): 0.33 for TPDF (error LSB²/4), 0.16
        // for the shaped error (6.6 dB more power, mostly near Nyquist).
        for (mode, at_least) in [(DitherMode::Tpdf, 0.3), (DitherMode::Shaped, 0.14)] {
            let dithered = quantise(mode, 16, &input, 3);
            let rho = correlation(&dithered);
            eprintln!("{mode:?}: correlation with the 0.25 LSB sine {rho:.3}");
            assert!(rho > at_least, "{mode:?}: {rho}");
        }
    }

    #[test]
    fn shaped_noise_is_6_db_lower_at_1_to_4_khz() {
        for rate in [44_100, 48_000] {
            let input = noise(1, 5 * rate as usize, rate, 0.1, 13);
            let tpdf = error_lsb(&input, &quantise(DitherMode::Tpdf, 16, &input, 7), 16);
            let shaped = error_lsb(&input, &quantise(DitherMode::Shaped, 16, &input, 7), 16);
            let fs = f64::from(rate);
            let difference_db = band_power_db(&shaped, fs, 1000.0, 4000.0)
                - band_power_db(&tpdf, fs, 1000.0, 4000.0);
            eprintln!("{rate} Hz: shaped minus TPDF error power in 1-4 kHz {difference_db:.2} dB");
            assert!(difference_db <= -6.0, "{difference_db} dB");
        }
    }

    #[test]
    fn output_is_independent_of_block_size() {
        let input = noise(2, 30_000, 48_000, 0.8, 17);
        for mode in MODES {
            let mut reference = None;
            for size in [1, 13, 512, 4096] {
                let mut q = Quantiser::new(mode, 16, 2, 48_000, 9).unwrap();
                let out = process_in_blocks(&mut q, &input, &[size]);
                match &reference {
                    None => reference = Some(out),
                    Some(r) => assert_eq!(&out, r, "{mode:?}, block size {size}"),
                }
            }
        }
    }

    #[test]
    fn reset_makes_rendering_repeatable() {
        let input = noise(2, 5000, 44_100, 0.5, 2);
        let mut q = Quantiser::new(DitherMode::Shaped, 16, 2, 44_100, 77).unwrap();
        let first = process_in_blocks(&mut q, &input, &[700]);
        q.reset();
        assert_eq!(process_in_blocks(&mut q, &input, &[1024]), first);
    }

    #[test]
    fn silence_stays_silent_and_nan_never_comes_out() {
        let silence = AudioBlock::from_channels(vec![vec![0.0; 3000]; 2], 48_000);
        for mode in MODES {
            let out = quantise(mode, 16, &silence, 1);
            assert!(out.channels().flatten().all(|&y| y == 0.0), "{mode:?}");
            let mut input = noise(1, 100, 48_000, 0.5, 3);
            input.channel_mut(0)[10] = f32::NAN;
            input.channel_mut(0)[20] = f32::NEG_INFINITY;
            input.channel_mut(0)[30] = 1e30;
            let out = quantise(mode, 24, &input, 1);
            assert!(out.channel(0).iter().all(|y| y.is_finite()));
            assert_eq!(out.channel(0)[30], 1.0 - 1.0 / 8_388_608.0);
        }
    }

    #[test]
    fn rejects_unsupported_bit_depth_and_parses_modes() {
        assert_eq!(
            Quantiser::new(DitherMode::Tpdf, 20, 2, 44_100, 0)
                .unwrap_err()
                .key,
            "bit_depth"
        );
        let q = Quantiser::new(DitherMode::Shaped, 24, 2, 44_100, 0).unwrap();
        assert_eq!(
            (q.mode(), q.bit_depth(), q.lsb()),
            (DitherMode::Shaped, 24, 1.0 / 8_388_608.0)
        );
        assert_eq!(q.name(), "dither");
        #[derive(serde::Deserialize)]
        struct Holder {
            mode: DitherMode,
        }
        for (text, mode) in [
            ("none", DitherMode::None),
            ("tpdf", DitherMode::Tpdf),
            ("shaped", DitherMode::Shaped),
        ] {
            let holder: Holder = toml::from_str(&format!("mode = \"{text}\"")).unwrap();
            assert_eq!(holder.mode, mode);
        }
        assert!(toml::from_str::<Holder>("mode = \"TPDF\"").is_err());
    }
}
