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
//! The dither comes from xoshiro256** generators, one per channel, seeded through SplitMix64 from the
//! `seed` and the channel index, each output giving one TPDF value (the difference of its two
//! 32-bit halves): the same seed renders the same bytes on any machine, a different seed
//! different noise, and channels get independent noise. Input samples that are exactly 0.0 (digital
//! silence) come out as exactly 0 without dither ("auto-black"), and clear the noise shaper's memory,
//! so silent passages stay digitally silent. Non-finite input is treated as silence.

use crate::audio::AudioBlock;
use crate::config::{InvalidValue, check_range};
use crate::stage::Stage;

/// What the [`Quantiser`] adds before rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DitherMode {
    /// Plain rounding, no dither.
    None,
    /// Triangular-PDF dither of ±1 LSB peak, spectrally flat.
    Tpdf,
    /// Triangular-PDF dither with F-weighted error-feedback noise shaping.
    Shaped,
}

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

/// The xoshiro256** generator (Blackman & Vigna 2018): small, fast, and statistically strong enough
/// for dither.
#[derive(Debug, Clone)]
struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    fn seeded(seed: u64, stream: u64) -> Self {
        let mut state = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Self {
            s: std::array::from_fn(|_| splitmix64(&mut state)),
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Triangular in `(-1, 1)`: the difference of two independent uniforms of 32 bits each, both
    /// taken from one output of the generator (its high and low halves).
    #[inline]
    fn next_tpdf(&mut self) -> f64 {
        let bits = self.next_u64();
        let (high, low) = (f64::from((bits >> 32) as u32), f64::from(bits as u32));
        (high - low) * (1.0 / 4_294_967_296.0)
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
    rng: Xoshiro256StarStar,
    errors: [f64; 3],
}

/// Quantises `samples` in place: each sample, scaled to codes (`scale` per unit), becomes the code
/// `code_of` picks for it, scaled back (`step` = 1 / `scale`). Silence and non-finite samples become
/// exact zeros and clear the noise shaper's memory.
#[inline(always)]
fn quantise_each(
    samples: &mut [f32],
    state: &mut ChannelState,
    scale: f64,
    step: f64,
    mut code_of: impl FnMut(f64, &mut ChannelState) -> f64,
) {
    for sample in samples.iter_mut() {
        let x = *sample;
        if x == 0.0 || !x.is_finite() {
            *sample = 0.0;
            state.errors = [0.0; 3];
            continue;
        }
        *sample = (code_of(f64::from(x) * scale, state) * step) as f32;
    }
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
            rng: Xoshiro256StarStar::seeded(self.seed, channel as u64 + 1),
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
        // A power of two, so multiplying by it is dividing by `scale`, exactly.
        let step = 1.0 / scale;
        let (min_code, max_code) = (-scale, scale - 1.0);
        let mode = self.mode;
        for (samples, state) in block.channels_mut().zip(&mut self.channels) {
            // One loop per mode, so that no sample decides the mode again.
            match mode {
                DitherMode::None => quantise_each(samples, state, scale, step, |v, _| {
                    round_and_clamp(v, min_code, max_code)
                }),
                DitherMode::Tpdf => quantise_each(samples, state, scale, step, |v, state| {
                    round_and_clamp(v + state.rng.next_tpdf(), min_code, max_code)
                }),
                DitherMode::Shaped => quantise_each(samples, state, scale, step, |v, state| {
                    let [e1, e2, e3] = state.errors;
                    let feedback =
                        SHAPING_COEFFS[0] * e1 + SHAPING_COEFFS[1] * e2 + SHAPING_COEFFS[2] * e3;
                    let wanted = v - feedback;
                    let code = round_and_clamp(wanted + state.rng.next_tpdf(), min_code, max_code);
                    let error = (code - wanted).clamp(-MAX_FEEDBACK_LSB, MAX_FEEDBACK_LSB);
                    state.errors = [error, e1, e2];
                    code
                }),
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
