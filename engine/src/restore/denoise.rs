//! Denoising: broadband hiss and surface noise reduced by a short-time spectral Wiener filter.
//!
//! STFT of [`FRAME_FRAMES`] samples (at 44.1 kHz; the same duration at other rates) with 75 %
//! overlap and square-root Hann windows on analysis and synthesis (their product, a Hann window,
//! overlap-adds to a constant, so a gain of one reconstructs exactly). The noise power spectrum is
//! estimated from the programme itself: hiss and surface noise are stationary, so each bin tracks a
//! low quantile of its smoothed periodogram over the whole history (a stochastic-approximation
//! quantile whose step shrinks as frames accumulate, settled after about a second; music, which
//! only adds power, moves a low quantile little), corrected for the quantile's bias. Where the
//! programme never rests (bass, sustained chords) even a low quantile reads programme, so the
//! floor is then taken as smooth across frequency: a lower envelope in log power over log
//! frequency whose slope is at most 0.5 dB per octave carries the floor of the bands where the
//! programme does rest into those where it does not (noise that is steeper reads low away from
//! its quietest band; noise learned from a range of noise alone, `noise_from_s`, follows any
//! shape). Bands more than 6 dB under the median band (above a codec's bandwidth, where there is
//! no hiss) take no part.
//!
//! The gain is a two-step Wiener filter that looks a few frames ahead (restoration is offline, so a
//! non-causal estimate costs only latency). Spectra are whitened by the noise estimate. Each step
//! estimates the signal's covariance in a bin from a cross-shaped neighbourhood: one arm along
//! time (the bin in neighbouring frames), one along frequency (neighbouring bins in the same
//! frame). A neighbourhood that straddles a tone or an onset smears its power into cells that hold
//! noise alone; the arm that runs along the tone or the onset does not straddle it and holds less
//! power, so the two arms' means are weighted by the inverse square of their power (a soft
//! minimum: a hard one is biased low by the noise of each arm). Step one (the pilot): the noisy
//! covariance over ±2 frames and ±24 bins, less the noise, with its eigenvalues shrunk (a small
//! over-subtraction that clears bins holding noise alone), gives the Wiener filter
//! `R_s (R_s + mu I)^-1` and a first estimate. Step two (as in BM3D's second stage): the covariance
//! of that pilot over ±1 frame and ±2 bins is the signal's, and the Wiener filter it gives is
//! applied to the noisy spectrum. A stereo pair is filtered jointly (2 x 2 covariances): the noise
//! of the two channels is independent and most programme is not, so each channel's estimate also
//! draws on the other's. Other channel counts are filtered channel by channel. `strength_db`
//! bounds the attenuation: no eigen-gain of step two falls below it.
//!
//! Measured on the bench's hiss (`make bench-restore`, mean of four sources): the ideal Wiener gain
//! from the true clean and noise spectra in this STFT reaches +5.1 dB SI-SDR; the same gain from
//! the true spectra averaged over a 3 x 3 box only +4.0 (what any neighbourhood estimate gives
//! away), over the cross's better arm +4.5. This filter reaches about +4.0 with the true noise
//! spectrum and +3.9 with the estimated one (box neighbourhoods and the ±24-bin median floor
//! alone: +3.7 and +3.3; the causal decision-directed log-MMSE gain before them: +2.7 and +2.2).

use std::f32::consts::TAU;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::Framer;
use crate::audio::AudioBlock;
use crate::stage::Stage;
use lathe_model::config::InvalidValue;
use lathe_model::stage_config::restore::DenoiseConfig;

/// STFT frame length at 44.1 and 48 kHz, samples (about 46 ms); other rates use the power of two
/// closest to the same duration.
pub const FRAME_FRAMES: usize = 2048;
/// Periodogram smoothing constant per frame.
const PSD_SMOOTHING: f32 = 0.85;
/// The quantile of each bin's smoothed periodogram tracked as its noise level.
const NOISE_QUANTILE: f32 = 0.02;
/// The bias correction of that quantile: tuned on the bench's hiss under music. After the lower
/// envelope (which is itself biased low by the dips it follows) 2.7 reads white noise alone at its
/// true level; 2.3 reads it about 0.7 dB low and scores best under music, where the level still
/// holds a little programme (see the test `pure_noise_is_reduced_by_the_strength`).
const QUANTILE_BIAS: f32 = 2.3;
/// The quantile tracker's first step, in natural-log units of power...
const QUANTILE_STEP: f32 = 0.5;
/// ... which halves after this long, s, and keeps shrinking as 1 / time...
const QUANTILE_SETTLE_S: f64 = 0.4;
/// ... down to this step, so that the estimate still follows a slowly changing noise.
const QUANTILE_STEP_MIN: f32 = 0.01;
/// Bins either side over which the noise floor is taken as the median level...
const NOISE_MEDIAN_BINS: usize = 24;
/// ... at every this many bins (a divisor of every frame's bin count less one).
const NOISE_MEDIAN_STEP: usize = 8;
/// Steepest slope of the noise floor's lower envelope, dB per octave: the floor of a band where
/// the programme rests bounds the floor of the bands around it. Hiss is close to white; noise
/// that is steeper than this (surface noise rising below a few hundred hertz) reads low away from
/// its quietest band and is reduced less there (the programme is left alone): learning the noise
/// from a range of noise alone (`noise_from_s`) follows any shape. 1 dB per octave scores 0.05 dB
/// lower on the bench, 0.25 dB per octave 0.02 higher.
const NOISE_SLOPE_DB_PER_OCTAVE: f32 = 0.5;
/// Only anchors above this fraction of the median anchor (6 dB below it) take part in the lower
/// envelope: where the noise is absent or rolled off (above a codec's or a transfer's bandwidth,
/// where programme may still rest below the hiss level) the floor is real but says nothing about
/// the bands below it. With 10 dB, the bench's hiss cut off at 80 % of Nyquist scores +2.4 dB
/// instead of +3.3 (with 20 dB +1.8); with 3 dB, its full-band hiss scores 0.01 dB less.
const NOISE_ENVELOPE_BELOW_MEDIAN: f32 = 0.25;
/// The envelope's log-frequency axis starts at this bin (the lowest bins count as this one).
const NOISE_SLOPE_MIN_BIN: f32 = 4.0;
/// The noise estimate (a slowly settling per-bin quantile) is renewed every this many frames
/// (0.19 s at 44.1 kHz; every 4 frames scores the same on the bench and takes a third longer: the
/// medians are the costly part).
const NOISE_UPDATE_FRAMES: u64 = 16;
/// Noise power assumed before the first estimate: low enough that the filter passes the audio.
const UNKNOWN_NOISE: f32 = 1e-6;
/// The least noise power a bin is taken to have, about 20 dB under the noise of a 24-bit
/// source's dither in this unnormalised periodogram. Without it a stretch of digital silence (a
/// track that opens with it, or the leading zeros a restorer before this one adds with its
/// latency) froze the quantile tracker at zero (its updates are factors) and the whitened
/// statistics (power over noise, then squared) overflowed `f32`: the output was NaN.
const NOISE_FLOOR_POWER: f32 = 1e-13;
/// Spectra kept: the pilot of frame `f - 2` needs the noisy frames `f - 4 ..= f`.
const RING_FRAMES: usize = 5;
/// Pilots kept: the output of frame `f - 3` needs the pilots of frames `f - 4 ..= f - 2`.
const PILOT_FRAMES: usize = 3;
/// Bins either side in the frequency arm of the pilot's neighbourhood (its time arm is the
/// [`RING_FRAMES`] frames).
const PILOT_SPREAD_BINS: usize = 24;
/// Eigenvalue shrinkage of the pilot's signal covariance, in units of the noise power.
const PILOT_SHRINK: f32 = 0.4;
/// Noise weight of the pilot's Wiener filter (over-subtraction).
const PILOT_NOISE_WEIGHT: f32 = 1.2;
/// Bins either side in the frequency arm of the final neighbourhood (its time arm is the
/// [`PILOT_FRAMES`] pilots).
const FINAL_SPREAD_BINS: usize = 2;
/// Frames between the newest analysed frame and the one synthesised.
const LOOKAHEAD_FRAMES: usize = 3;

/// Quantile noise tracker of one channel.
#[derive(Debug, Clone)]
struct NoiseTracker {
    smoothed: Vec<f32>,
    /// The running [`NOISE_QUANTILE`] of `smoothed` per bin.
    level: Vec<f32>,
    /// The noise estimate every `NOISE_MEDIAN_STEP` bins.
    anchors: Vec<f32>,
    /// The lower envelope's largest rise from the anchor before to each anchor, natural-log
    /// units of power ([`NOISE_SLOPE_DB_PER_OCTAVE`] times the octaves between them).
    envelope_rise: Vec<f32>,
    /// The noise power estimate per bin.
    noise: Vec<f32>,
    /// Frames taken in so far (digital silence is passed over: it holds no noise to learn).
    taken: u64,
    /// Digital silence came before the first frame taken in.
    after_silence: bool,
}

impl NoiseTracker {
    fn new(bins: usize) -> Self {
        let anchor_count = (bins - 1) / NOISE_MEDIAN_STEP + 1;
        let octave = |j: usize| {
            ((j * NOISE_MEDIAN_STEP) as f32)
                .max(NOISE_SLOPE_MIN_BIN)
                .log2()
        };
        let per_octave = NOISE_SLOPE_DB_PER_OCTAVE / 10.0 * std::f32::consts::LN_10;
        Self {
            smoothed: vec![0.0; bins],
            level: vec![0.0; bins],
            anchors: vec![0.0; anchor_count],
            envelope_rise: (0..anchor_count)
                .map(|j| per_octave * (octave(j) - octave(j.saturating_sub(1))))
                .collect(),
            noise: vec![UNKNOWN_NOISE; bins],
            taken: 0,
            after_silence: false,
        }
    }

    fn reset(&mut self) {
        self.smoothed.fill(0.0);
        self.level.fill(0.0);
        self.noise.fill(UNKNOWN_NOISE);
        self.taken = 0;
        self.after_silence = false;
    }

    /// Takes in the periodogram of a frame wholly inside the track and updates the noise
    /// estimate; `settle_frames` is [`QUANTILE_SETTLE_S`] in frames, `sorted` scratch of one value
    /// a bin. A frame of digital silence (every bin under [`NOISE_FLOOR_POWER`]) is passed over:
    /// the tracker settles on the first frame with sound in it. Returns whether the estimate was
    /// renewed (every [`NOISE_UPDATE_FRAMES`] frames taken in).
    fn update(
        &mut self,
        spectrum: &[Complex<f32>],
        settle_frames: f32,
        sorted: &mut [f32],
    ) -> bool {
        if spectrum.iter().all(|y| y.norm_sqr() <= NOISE_FLOOR_POWER) {
            self.after_silence |= self.taken == 0;
            return false;
        }
        let tracked = self.taken;
        self.taken += 1;
        let bins = spectrum.len();
        if tracked == 0 {
            for ((s, l), y) in self.smoothed.iter_mut().zip(&mut self.level).zip(spectrum) {
                *s = y.norm_sqr();
                *l = s.max(NOISE_FLOOR_POWER);
            }
        } else {
            // q += step (p - [x < q]) in log power, as factors on the power.
            let step = (QUANTILE_STEP * settle_frames / (settle_frames + tracked as f32))
                .max(QUANTILE_STEP_MIN);
            let up = (step * NOISE_QUANTILE).exp();
            let down = (-step * (1.0 - NOISE_QUANTILE)).exp();
            // Sound that rises out of digital silence (a fade-in) would start the level far
            // below the noise, and it climbs slowly (a low quantile): for the settling time
            // after such a start it follows the periodogram up at once, and comes down as usual.
            let rising = self.after_silence && (tracked as f32) < settle_frames;
            for ((s, l), y) in self.smoothed.iter_mut().zip(&mut self.level).zip(spectrum) {
                *s = PSD_SMOOTHING * *s + (1.0 - PSD_SMOOTHING) * y.norm_sqr();
                *l = (*l * if *s < *l { down } else { up }).max(NOISE_FLOOR_POWER);
                if rising {
                    *l = l.max(*s);
                }
            }
        }
        if tracked % NOISE_UPDATE_FRAMES != 0 {
            return false;
        }
        // Noise spectra are smooth while programme is made of lines: the median of the levels
        // over a wide band reads the floor between a note's harmonics rather than the harmonics.
        // It is taken every NOISE_MEDIAN_STEP bins and interpolated between.
        for (j, anchor) in self.anchors.iter_mut().enumerate() {
            let k = j * NOISE_MEDIAN_STEP;
            let lo = k.saturating_sub(NOISE_MEDIAN_BINS);
            let hi = (k + NOISE_MEDIAN_BINS + 1).min(bins);
            let band = &mut sorted[..hi - lo];
            band.copy_from_slice(&self.level[lo..hi]);
            let (_, median, _) = band.select_nth_unstable_by(band.len() / 2, f32::total_cmp);
            *anchor = QUANTILE_BIAS * *median;
        }
        // Where the programme never rests the median still reads programme; the floor of the
        // bands where it does rest bounds it (a lower envelope of bounded slope: a distance
        // transform in log power, one pass up and one down).
        let count = self.anchors.len();
        let (logs, rest) = sorted.split_at_mut(count);
        let by_level = &mut rest[..count];
        by_level.copy_from_slice(&self.anchors);
        let (_, median, _) = by_level.select_nth_unstable_by(count / 2, f32::total_cmp);
        let below = (*median * NOISE_ENVELOPE_BELOW_MEDIAN).max(1e-30).ln();
        // An anchor below that stays as it is and bounds no other (infinite in the passes, which
        // carry the envelope across it).
        for (l, &a) in logs.iter_mut().zip(&self.anchors) {
            let own = a.max(1e-30).ln();
            *l = if own < below { f32::INFINITY } else { own };
        }
        for j in 1..logs.len() {
            logs[j] = logs[j].min(logs[j - 1] + self.envelope_rise[j]);
        }
        for j in (1..logs.len()).rev() {
            logs[j - 1] = logs[j - 1].min(logs[j] + self.envelope_rise[j]);
        }
        for (a, &l) in self.anchors.iter_mut().zip(logs.iter()) {
            *a = a.min(l.exp());
        }
        for (k, n) in self.noise.iter_mut().enumerate() {
            let j = k / NOISE_MEDIAN_STEP;
            let frac = (k % NOISE_MEDIAN_STEP) as f32 / NOISE_MEDIAN_STEP as f32;
            let next = self.anchors[(j + 1).min(self.anchors.len() - 1)];
            *n = (self.anchors[j] * (1.0 - frac) + next * frac).max(NOISE_FLOOR_POWER);
        }
        true
    }
}

/// Per-bin statistics of a cross-shaped neighbourhood in the whitened domain: `power[c]` the
/// mean power of channel `c`, `cross` the mean cross-spectrum of channels 0 and 1, each the means
/// along its time arm and along its frequency arm weighted by the inverse square of the arm's
/// power (summed over the channels).
#[derive(Debug, Clone)]
struct Covariance {
    power: Vec<Vec<f32>>,
    cross: Vec<Complex<f32>>,
    /// Means along the time arm.
    time_power: Vec<Vec<f32>>,
    time_cross: Vec<Complex<f32>>,
    /// The centre frame's whitened products, then their means along the frequency arm.
    centre_power: Vec<f32>,
    centre_cross: Vec<Complex<f32>>,
    frequency_power: Vec<Vec<f32>>,
    frequency_cross: Vec<Complex<f32>>,
}

impl Covariance {
    fn new(channel_count: usize, bins: usize) -> Self {
        let zeros = vec![Complex::new(0.0, 0.0); bins];
        Self {
            power: vec![vec![0.0; bins]; channel_count],
            cross: zeros.clone(),
            time_power: vec![vec![0.0; bins]; channel_count],
            time_cross: zeros.clone(),
            centre_power: vec![0.0; bins],
            centre_cross: zeros.clone(),
            frequency_power: vec![vec![0.0; bins]; channel_count],
            frequency_cross: zeros,
        }
    }

    /// The neighbourhood statistics of frame `centre` of `products`: its time arm the frames in
    /// `slots` (centre included), its frequency arm `spread` bins either side in frame `centre`;
    /// `cross_weight` is sqrt(1 / (noise_0 noise_1)) per bin.
    fn gather(
        &mut self,
        products: &Products,
        slots: &[usize],
        centre: usize,
        inverse_noise: &[Vec<f32>],
        cross_weight: &[f32],
        spread: usize,
    ) {
        let scale = 1.0 / slots.len() as f32;
        for (ch, power) in self.time_power.iter_mut().enumerate() {
            power.fill(0.0);
            for &slot in slots {
                for (p, &y) in power.iter_mut().zip(&products.power[ch][slot]) {
                    *p += y;
                }
            }
            for (p, &w) in power.iter_mut().zip(&inverse_noise[ch]) {
                *p *= w * scale;
            }
            for ((c, &y), &w) in self
                .centre_power
                .iter_mut()
                .zip(&products.power[ch][centre])
                .zip(&inverse_noise[ch])
            {
                *c = y * w;
            }
            box_mean(
                &self.centre_power,
                &mut self.frequency_power[ch],
                spread,
                f64::from,
                |sum| sum as f32,
            );
        }
        let pair = self.power.len() == 2;
        if pair {
            self.time_cross.fill(Complex::new(0.0, 0.0));
            for &slot in slots {
                for (x, &y) in self.time_cross.iter_mut().zip(&products.cross[slot]) {
                    *x += y;
                }
            }
            for (x, &w) in self.time_cross.iter_mut().zip(cross_weight) {
                *x *= w * scale;
            }
            for ((c, &y), &w) in self
                .centre_cross
                .iter_mut()
                .zip(&products.cross[centre])
                .zip(cross_weight)
            {
                *c = y * w;
            }
            box_mean(
                &self.centre_cross,
                &mut self.frequency_cross,
                spread,
                |x| Complex::new(f64::from(x.re), f64::from(x.im)),
                |sum| Complex::new(sum.re as f32, sum.im as f32),
            );
        }
        // Weights 1 / t^2 for the arms' total powers t, normalised: the time arm's is
        // t_f^2 / (t_t^2 + t_f^2) = 1 / (1 + (t_t / t_f)^2).
        if let ([p0, p1], [t0, t1], [f0, f1]) = (
            &mut self.power[..],
            &self.time_power[..],
            &self.frequency_power[..],
        ) {
            let bins = p0.iter_mut().zip(p1.iter_mut()).zip(&mut self.cross);
            let times = t0.iter().zip(t1).zip(&self.time_cross);
            let frequencies = f0.iter().zip(f1).zip(&self.frequency_cross);
            for (((p0, p1), x), (((&t0, &t1), &tx), ((&f0, &f1), &fx))) in
                bins.zip(times.zip(frequencies))
            {
                let along_time = arm_weight(t0 + t1, f0 + f1);
                let along_frequency = 1.0 - along_time;
                *p0 = along_time * t0 + along_frequency * f0;
                *p1 = along_time * t1 + along_frequency * f1;
                *x = tx * along_time + fx * along_frequency;
            }
            return;
        }
        for ((power, time), frequency) in self
            .power
            .iter_mut()
            .zip(&self.time_power)
            .zip(&self.frequency_power)
        {
            for ((p, &t), &f) in power.iter_mut().zip(time).zip(frequency) {
                let along_time = arm_weight(t, f);
                *p = along_time * t + (1.0 - along_time) * f;
            }
        }
    }
}

/// The time arm's share of a cross-shaped neighbourhood whose time and frequency arms hold the
/// powers `time` and `frequency`: `1 / (1 + (time / frequency)^2)` (the inverse-square weights,
/// normalised), one half for two empty arms.
#[inline]
fn arm_weight(time: f32, frequency: f32) -> f32 {
    if time == frequency {
        return 0.5;
    }
    let ratio = time / frequency.max(f32::MIN_POSITIVE);
    1.0 / (1.0 + ratio * ratio)
}

/// Each frame's powers per channel and, for a pair, cross-spectrum, kept beside a ring of spectra
/// so that the neighbourhood sums do not recompute them.
#[derive(Debug, Clone)]
struct Products {
    /// `[channel][slot][bin]`.
    power: Vec<Vec<Vec<f32>>>,
    /// `[slot][bin]`, channel 0 times the conjugate of channel 1.
    cross: Vec<Vec<Complex<f32>>>,
}

impl Products {
    fn new(channel_count: usize, slots: usize, bins: usize) -> Self {
        Self {
            power: vec![vec![vec![0.0; bins]; slots]; channel_count],
            cross: vec![vec![Complex::new(0.0, 0.0); bins]; slots],
        }
    }

    fn reset(&mut self) {
        for p in self.power.iter_mut().flatten() {
            p.fill(0.0);
        }
        for x in &mut self.cross {
            x.fill(Complex::new(0.0, 0.0));
        }
    }

    /// Computes the products of frame `slot` of `ring` (`[channel][slot][bin]`).
    fn store(&mut self, ring: &[Vec<Vec<Complex<f32>>>], slot: usize) {
        for (power, frames) in self.power.iter_mut().zip(ring) {
            for (p, y) in power[slot].iter_mut().zip(&frames[slot]) {
                *p = y.norm_sqr();
            }
        }
        if let [left, right] = ring {
            for ((x, l), r) in self.cross[slot]
                .iter_mut()
                .zip(&left[slot])
                .zip(&right[slot])
            {
                *x = l * r.conj();
            }
        }
    }
}

/// Mean of `input` over `spread` bins either side (fewer at the ends), into `output`: a running
/// sum, kept in a wider type (`widen`, `narrow`) so that what a loud bin leaves behind when it
/// leaves the window is far below the quietest bin's power.
fn box_mean<T, A>(
    input: &[T],
    output: &mut [T],
    spread: usize,
    widen: impl Fn(T) -> A,
    narrow: impl Fn(A) -> T,
) where
    T: Copy,
    A: Copy + Default + std::ops::AddAssign + std::ops::SubAssign + std::ops::Mul<f64, Output = A>,
{
    let bins = input.len();
    let mean = |lo: usize, hi: usize| {
        let mut sum = A::default();
        for &x in &input[lo..hi] {
            sum += widen(x);
        }
        narrow(sum * (1.0 / (hi - lo) as f64))
    };
    if bins < 2 * spread + 1 {
        for (k, o) in output.iter_mut().enumerate() {
            *o = mean(k.saturating_sub(spread), (k + spread + 1).min(bins));
        }
        return;
    }
    // Bins 0 ..= spread see the spectrum's start, bins - spread .. its end; in between, each
    // bin's window is the last one's moved up by a bin.
    let mut sum = A::default();
    for &x in &input[..spread] {
        sum += widen(x);
    }
    for (k, o) in output[..=spread].iter_mut().enumerate() {
        sum += widen(input[k + spread]);
        *o = narrow(sum * (1.0 / (k + spread + 1) as f64));
    }
    let width = 1.0 / (2 * spread + 1) as f64;
    let interior = output[spread + 1..bins - spread]
        .iter_mut()
        .zip(&input[2 * spread + 1..])
        .zip(input);
    for ((o, &entering), &leaving) in interior {
        sum += widen(entering);
        sum -= widen(leaving);
        *o = narrow(sum * width);
    }
    for (k, o) in output.iter_mut().enumerate().skip(bins - spread) {
        sum -= widen(input[k - spread - 1]);
        *o = narrow(sum * (1.0 / (bins + spread - k) as f64));
    }
}

/// The Wiener filter `R (R + mu I)^-1` of a 2 x 2 signal covariance `R = [[a, b], [b*, c]]` (noise
/// whitened to `I`) with its eigenvalues shrunk by `shrink` and each eigen-gain at least
/// `gain_floor`; returns `(w11, w12, w22)` (`w21` is the conjugate of `w12`).
#[inline]
fn pair_gains(
    a: f32,
    b: Complex<f32>,
    c: f32,
    shrink: f32,
    noise_weight: f32,
    gain_floor: f32,
) -> (f32, Complex<f32>, f32) {
    let half_difference = 0.5 * (a - c);
    let disc = (half_difference * half_difference + b.norm_sqr()).sqrt();
    let mean = 0.5 * (a + c);
    let (l1, l2) = (mean + disc, mean - disc);
    let (g1, g2) = (
        single_gain(l1, shrink, noise_weight, gain_floor),
        single_gain(l2, shrink, noise_weight, gain_floor),
    );
    // W = g2 I + (g1 - g2) P1, P1 = (R - l2 I) / (l1 - l2) the projector on the first eigenvector
    // (|a - l2| and |b| are at most l1 - l2, so equal eigenvalues need only a guard against 0 / 0).
    let step = (g1 - g2) / (2.0 * disc).max(f32::MIN_POSITIVE);
    (g2 + step * (a - l2), b * step, g2 + step * (c - l2))
}

/// The scalar Wiener gain of a whitened signal power `a`, as [`pair_gains`].
#[inline]
fn single_gain(a: f32, shrink: f32, noise_weight: f32, gain_floor: f32) -> f32 {
    let m = (a - shrink).max(1e-3);
    (m / (m + noise_weight)).max(gain_floor)
}

/// The denoise stage.
pub struct Denoiser {
    framer: Framer,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    window: Vec<f32>,
    frame: Vec<f32>,
    sorted: Vec<f32>,
    scratch: Vec<Complex<f32>>,
    /// Noisy spectra of the last [`RING_FRAMES`] frames, per channel (slot = frame mod ring).
    spectra: Vec<Vec<Vec<Complex<f32>>>>,
    /// Pilot estimates of the last [`PILOT_FRAMES`] frames, per channel.
    pilots: Vec<Vec<Vec<Complex<f32>>>>,
    /// The spectrum being synthesised, per channel (a ring of one).
    output: Vec<Vec<Vec<Complex<f32>>>>,
    trackers: Vec<NoiseTracker>,
    /// 1 / noise power per channel and bin, for the current step.
    inverse_noise: Vec<Vec<f32>>,
    /// sqrt(noise_0 / noise_1) per bin, for a pair.
    ratio: Vec<f32>,
    /// sqrt(1 / (noise_0 noise_1)) per bin, for a pair.
    cross_weight: Vec<f32>,
    /// The noise power per channel summed over the bins, for the report.
    noise_sum: Vec<f64>,
    /// Whether the noise changed since `inverse_noise`, `ratio`, `cross_weight` and `noise_sum`
    /// were computed.
    noise_changed: bool,
    spectrum_products: Products,
    pilot_products: Products,
    covariance: Covariance,
    overlap: Vec<Vec<f32>>,
    /// Finished output hop per channel, written out at the next frame.
    pending: Vec<Vec<f32>>,
    /// Noise power per channel and bin learned from a noise range ([`Denoiser::learn_noise`]);
    /// without it the noise is estimated from the programme.
    learned: Option<Vec<Vec<f32>>>,
    gain_floor: f64,
    frame_len: usize,
    hop: usize,
    /// [`QUANTILE_SETTLE_S`] in frames.
    settle_frames: f32,
    frames_done: u64,
    energy_in: f64,
    energy_out: f64,
    noise_energy: f64,
}

impl std::fmt::Debug for Denoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denoiser")
            .field("gain_floor", &self.gain_floor)
            .field("frames_done", &self.frames_done)
            .finish_non_exhaustive()
    }
}

impl Denoiser {
    /// Builds a denoiser for audio of this shape.
    pub fn new(
        config: &DenoiseConfig,
        channel_count: usize,
        sample_rate_hz: u32,
        _max_block_frames: usize,
    ) -> Result<Self, InvalidValue> {
        config.validate()?;
        let scaled = FRAME_FRAMES as f64 * f64::from(sample_rate_hz) / 44_100.0;
        let frame_len = 1usize << (scaled.log2().round().clamp(8.0, 14.0) as u32);
        let hop = frame_len / 4;
        let settle_frames = (QUANTILE_SETTLE_S * f64::from(sample_rate_hz) / hop as f64) as f32;
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(frame_len);
        let inverse = planner.plan_fft_inverse(frame_len);
        let bins = frame_len / 2 + 1;
        let scratch_len = forward.get_scratch_len().max(inverse.get_scratch_len());
        let window = (0..frame_len)
            .map(|n| (0.5 - 0.5 * (TAU * n as f32 / frame_len as f32).cos()).sqrt())
            .collect();
        let spectrum = vec![Complex::new(0.0, 0.0); bins];
        Ok(Self {
            framer: Framer::new(channel_count, 0, hop, frame_len - hop),
            forward,
            inverse,
            window,
            frame: vec![0.0; frame_len],
            sorted: vec![0.0; bins],
            scratch: vec![Complex::new(0.0, 0.0); scratch_len],
            spectra: vec![vec![spectrum.clone(); RING_FRAMES]; channel_count],
            pilots: vec![vec![spectrum.clone(); PILOT_FRAMES]; channel_count],
            output: vec![vec![spectrum]; channel_count],
            trackers: vec![NoiseTracker::new(bins); channel_count],
            inverse_noise: vec![vec![0.0; bins]; channel_count],
            ratio: vec![1.0; bins],
            cross_weight: vec![1.0; bins],
            noise_sum: vec![0.0; channel_count],
            noise_changed: true,
            spectrum_products: Products::new(channel_count, RING_FRAMES, bins),
            pilot_products: Products::new(channel_count, PILOT_FRAMES, bins),
            covariance: Covariance::new(channel_count, bins),
            overlap: vec![vec![0.0; frame_len]; channel_count],
            pending: vec![vec![0.0; hop]; channel_count],
            learned: None,
            gain_floor: 10f64.powf(-config.strength_db / 20.0),
            frame_len,
            hop,
            settle_frames,
            frames_done: 0,
            energy_in: 0.0,
            energy_out: 0.0,
            noise_energy: 0.0,
        })
    }

    /// Learns the noise spectrum from `excerpt`, a stretch of the track holding noise alone (its
    /// channels as the track's): the mean periodogram of its frames replaces the programme-based
    /// estimate for the whole track. Fails when the excerpt holds no whole frame.
    pub fn learn_noise(&mut self, excerpt: &AudioBlock) -> Result<(), InvalidValue> {
        let (len, hop) = (self.frame_len, self.hop);
        if excerpt.frames() < len || excerpt.channel_count() != self.trackers.len() {
            return Err(InvalidValue::new(
                "noise_to_s",
                format!(
                    "the noise range holds {} frames of {} channels; at least {len} frames of {} \
                     channels needed",
                    excerpt.frames(),
                    excerpt.channel_count(),
                    self.trackers.len()
                ),
            ));
        }
        let bins = self.sorted.len();
        let mut spectrum = vec![Complex::new(0.0, 0.0); bins];
        let mut learned = vec![vec![0.0f64; bins]; self.trackers.len()];
        for (noise, samples) in learned.iter_mut().zip(excerpt.channels()) {
            let mut count = 0usize;
            for start in (0..=samples.len() - len).step_by(hop) {
                for ((f, &x), &w) in self
                    .frame
                    .iter_mut()
                    .zip(&samples[start..])
                    .zip(&self.window)
                {
                    *f = x * w;
                }
                if self
                    .forward
                    .process_with_scratch(&mut self.frame, &mut spectrum, &mut self.scratch)
                    .is_ok()
                {
                    for (n, y) in noise.iter_mut().zip(&spectrum) {
                        *n += f64::from(y.norm_sqr());
                    }
                    count += 1;
                }
            }
            for n in noise.iter_mut() {
                *n = (*n / count.max(1) as f64).max(f64::from(NOISE_FLOOR_POWER));
            }
        }
        self.noise_changed = true;
        self.learned = Some(
            learned
                .into_iter()
                .map(|n| n.into_iter().map(|v| v as f32).collect())
                .collect(),
        );
        Ok(())
    }
}

impl Stage for Denoiser {
    fn name(&self) -> &'static str {
        "denoise"
    }

    fn process(&mut self, block: &mut AudioBlock) {
        // The closure needs most of self; move the framer out for the call.
        let mut framer = std::mem::replace(&mut self.framer, Framer::new(0, 0, 1, 0));
        framer.process(block, |ch, samples| self.frame_step(ch, samples));
        self.framer = framer;
    }

    fn latency_frames(&self) -> usize {
        // The framer's frame, the look-ahead, and one hop while the last channel of a frame is
        // awaited.
        self.framer.latency_frames() + (LOOKAHEAD_FRAMES + 1) * self.hop
    }

    fn reset(&mut self) {
        self.framer.reset();
        for t in &mut self.trackers {
            t.reset();
        }
        for ring in self.spectra.iter_mut().chain(&mut self.pilots) {
            for s in ring {
                s.fill(Complex::new(0.0, 0.0));
            }
        }
        for o in self.overlap.iter_mut().chain(&mut self.pending) {
            o.fill(0.0);
        }
        self.spectrum_products.reset();
        self.pilot_products.reset();
        self.noise_changed = true;
        self.frames_done = 0;
        self.energy_in = 0.0;
        self.energy_out = 0.0;
        self.noise_energy = 0.0;
    }

    fn report(&self) -> Option<serde_json::Value> {
        let db = |p: f64| (p > 0.0).then(|| 10.0 * p.log10());
        let frames = (self.frames_done as f64 * self.trackers.len() as f64).max(1.0);
        // Parseval: the one-sided bin powers of a Hann-weighted frame of white noise of power s sum
        // to s N^2 / 4.
        let per_sample = frames * self.frame_len as f64 * self.frame_len as f64 / 4.0;
        Some(serde_json::json!({
            "noise_floor_dbfs": db(self.noise_energy / per_sample),
            "reduction_db": (self.energy_in > 0.0 && self.energy_out > 0.0)
                .then(|| 10.0 * (self.energy_in / self.energy_out).log10()),
            "strength_db": -20.0 * self.gain_floor.log10(),
            "noise_from": if self.learned.is_some() { "range" } else { "programme" },
        }))
    }
}

impl Denoiser {
    /// One STFT frame of one channel: `samples` is the newest frame; its first hop is finished
    /// with the output computed at the previous frame. The last channel of a frame runs the
    /// filter for all channels.
    fn frame_step(&mut self, ch: usize, samples: &mut [f64]) {
        for ((f, &x), &w) in self.frame.iter_mut().zip(samples.iter()).zip(&self.window) {
            *f = x as f32 * w;
        }
        let slot = (self.frames_done % RING_FRAMES as u64) as usize;
        if self
            .forward
            .process_with_scratch(
                &mut self.frame,
                &mut self.spectra[ch][slot],
                &mut self.scratch,
            )
            .is_err()
        {
            self.spectra[ch][slot].fill(Complex::new(0.0, 0.0));
        }
        for (s, &o) in samples[..self.hop].iter_mut().zip(&self.pending[ch]) {
            *s = f64::from(o);
        }
        if ch + 1 == self.trackers.len() {
            self.joint_step();
            self.frames_done += 1;
        }
    }

    /// All channels of frame `f` are in: update the noise, make the pilot of frame `f - 2` and
    /// synthesise frame `f - 3`.
    fn joint_step(&mut self) {
        let f = self.frames_done;
        let ring = RING_FRAMES as u64;
        let slot = (f % ring) as usize;
        // The first frames reach back before the track (zeros): the noise search starts with the
        // first frame wholly inside it, which is also the first frame synthesised.
        let warm_up = (self.frame_len / self.hop - 1) as u64;
        if f >= warm_up {
            for (ch, tracker) in self.trackers.iter_mut().enumerate() {
                let renewed = tracker.update(
                    &self.spectra[ch][slot],
                    self.settle_frames,
                    &mut self.sorted,
                );
                self.noise_changed |= renewed && self.learned.is_none();
            }
        }
        if self.noise_changed {
            self.noise_changed = false;
            self.renew_noise_weights();
        }
        // Step one: the pilot of frame f - 2 from the noisy frames f - 4 ..= f.
        self.spectrum_products.store(&self.spectra, slot);
        let source = ((f + ring - 2) % ring) as usize;
        self.covariance.gather(
            &self.spectrum_products,
            &RING_SLOTS,
            source,
            &self.inverse_noise,
            &self.cross_weight,
            PILOT_SPREAD_BINS,
        );
        let pilot_slot = ((f + 1) % PILOT_FRAMES as u64) as usize;
        let pilot = Wiener {
            subtract: 1.0,
            shrink: PILOT_SHRINK,
            noise_weight: PILOT_NOISE_WEIGHT,
            gain_floor: 0.0,
        };
        pilot.apply(
            &self.covariance,
            &self.ratio,
            &self.spectra,
            source,
            &mut self.pilots,
            pilot_slot,
        );
        // Step two: frame f - 3 from the pilots of frames f - 4 ..= f - 2 (frame g's pilot is in
        // slot g mod PILOT_FRAMES).
        self.pilot_products.store(&self.pilots, pilot_slot);
        self.covariance.gather(
            &self.pilot_products,
            &PILOT_SLOTS,
            (f % PILOT_FRAMES as u64) as usize,
            &self.inverse_noise,
            &self.cross_weight,
            FINAL_SPREAD_BINS,
        );
        let source = ((f + ring - LOOKAHEAD_FRAMES as u64) % ring) as usize;
        let last = Wiener {
            subtract: 0.0,
            shrink: 0.0,
            noise_weight: 1.0,
            gain_floor: self.gain_floor as f32,
        };
        last.apply(
            &self.covariance,
            &self.ratio,
            &self.spectra,
            source,
            &mut self.output,
            0,
        );
        for ch in 0..self.trackers.len() {
            self.synthesise(ch, source);
        }
    }

    /// Recomputes the weights that follow from the noise estimate (it changes every
    /// [`NOISE_UPDATE_FRAMES`] frames, or once when learned from a range).
    fn renew_noise_weights(&mut self) {
        for (ch, tracker) in self.trackers.iter().enumerate() {
            let noise = match &self.learned {
                Some(learned) => &learned[ch],
                None => &tracker.noise,
            };
            for (w, &n) in self.inverse_noise[ch].iter_mut().zip(noise) {
                *w = 1.0 / n;
            }
            self.noise_sum[ch] = self.inverse_noise[ch]
                .iter()
                .map(|&w| f64::from(1.0 / w))
                .sum();
        }
        if let [left, right] = &self.inverse_noise[..] {
            for (((q, x), &wl), &wr) in self
                .ratio
                .iter_mut()
                .zip(self.cross_weight.iter_mut())
                .zip(left)
                .zip(right)
            {
                *q = (wr / wl).sqrt();
                *x = wl.sqrt() * wr.sqrt();
            }
        }
    }

    /// Inverse transform of `self.output[ch]`, overlap-added; the finished hop goes to `pending`.
    fn synthesise(&mut self, ch: usize, source: usize) {
        let bins = self.sorted.len();
        let spectrum = &mut self.output[ch][0];
        let (mut energy_in, mut energy_out) = (0.0f32, 0.0f32);
        for (y, x) in self.spectra[ch][source].iter().zip(spectrum.iter()) {
            energy_in += y.norm_sqr();
            energy_out += x.norm_sqr();
        }
        self.energy_in += f64::from(energy_in);
        self.energy_out += f64::from(energy_out);
        self.noise_energy += self.noise_sum[ch];
        spectrum[0].im = 0.0;
        spectrum[bins - 1].im = 0.0;
        if self
            .inverse
            .process_with_scratch(spectrum, &mut self.frame, &mut self.scratch)
            .is_err()
        {
            self.frame.fill(0.0);
        }
        // sqrt-Hann on both sides makes Hann, which sums to 2 at 75 % overlap; the inverse FFT is
        // unnormalised (a factor N).
        let scale = 1.0 / (2.0 * self.frame_len as f32);
        let overlap = &mut self.overlap[ch];
        for ((o, &f), &w) in overlap.iter_mut().zip(&self.frame).zip(&self.window) {
            *o += f * w * scale;
        }
        let hop = self.hop;
        self.pending[ch].copy_from_slice(&overlap[..hop]);
        overlap.copy_within(hop.., 0);
        let tail = self.frame_len - hop;
        overlap[tail..].fill(0.0);
    }
}

/// Every slot of the spectrum ring, and of the pilot ring.
const RING_SLOTS: [usize; RING_FRAMES] = [0, 1, 2, 3, 4];
const PILOT_SLOTS: [usize; PILOT_FRAMES] = [0, 1, 2];

/// One Wiener step's settings (see [`pair_gains`]).
struct Wiener {
    /// Noise power (whitened: 1) taken off the neighbourhood's power; 0 when it is a pilot's.
    subtract: f32,
    shrink: f32,
    noise_weight: f32,
    gain_floor: f32,
}

impl Wiener {
    /// Filters frame `source` of `spectra` with the gains from `covariance` into `slot` of
    /// `outputs[ch]` (one ring per channel); `ratio` is sqrt(noise_0 / noise_1) per bin, which
    /// takes a pair's filter back from the whitened domain.
    fn apply(
        &self,
        covariance: &Covariance,
        ratio: &[f32],
        spectra: &[Vec<Vec<Complex<f32>>>],
        source: usize,
        outputs: &mut [Vec<Vec<Complex<f32>>>],
        slot: usize,
    ) {
        if let ([left, right], [out_left, out_right]) = (spectra, &mut *outputs) {
            let pairs = covariance.power[0]
                .iter()
                .zip(&covariance.power[1])
                .zip(&covariance.cross)
                .zip(ratio)
                .zip(left[source].iter().zip(&right[source]))
                .zip(out_left[slot].iter_mut().zip(out_right[slot].iter_mut()));
            for (((((&a, &c), &b), &ratio), (&l, &r)), (ol, or)) in pairs {
                let (w11, w12, w22) = pair_gains(
                    a - self.subtract,
                    b,
                    c - self.subtract,
                    self.shrink,
                    self.noise_weight,
                    self.gain_floor,
                );
                *ol = l * w11 + r * w12 * ratio;
                *or = l * w12.conj() / ratio + r * w22;
            }
            return;
        }
        for ((ring, out), power) in spectra
            .iter()
            .zip(outputs.iter_mut())
            .zip(&covariance.power)
        {
            for ((o, y), &p) in out[slot].iter_mut().zip(&ring[source]).zip(power) {
                *o = y * single_gain(
                    p - self.subtract,
                    self.shrink,
                    self.noise_weight,
                    self.gain_floor,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::testing::{music, run_aligned};
    use crate::testkit::{noise, rms_db};
    use lathe_synth::Style;
    use lathe_synth::score::si_sdr_db;

    fn denoiser(strength_db: f64) -> Denoiser {
        let config = DenoiseConfig {
            strength_db,
            ..DenoiseConfig::default()
        };
        Denoiser::new(&config, 2, 44_100, 4096).unwrap()
    }

    /// Pure white noise comes out attenuated by close to the strength, and the noise estimate reads
    /// close to the true level (the bias constant is set a little below the white-noise
    /// calibration on purpose: on music, reading the floor a little low distorts the programme
    /// less).
    #[test]
    fn pure_noise_is_reduced_by_the_strength() {
        let input = noise(2, 44_100 * 30, 44_100, 0.1, 77);
        let mut stage = denoiser(18.0);
        let out = run_aligned(&mut stage, &input, &[4096]);
        let settled = 44_100 * 8;
        let before = rms_db(&input.channel(0)[settled..]);
        let after = rms_db(&out.channel(0)[settled..]);
        let floor = stage.report().unwrap()["noise_floor_dbfs"]
            .as_f64()
            .unwrap();
        // Measured: 16.4 dB less.
        assert!(
            before - after > 15.0,
            "{before:.1} -> {after:.1} dBFS (floor read {floor:.1})"
        );
        // Uniform noise of amplitude 0.1: -24.8 dBFS RMS.
        // Measured: -25.4 dBFS (0.7 dB low: the bias constant is tuned on the bench's hiss under
        // music, where a low quantile of the programme still reads a little music).
        assert!(
            (floor - (-25.4)).abs() < 1.0,
            "noise floor read {floor:.1} dBFS"
        );
    }

    /// Hiss 25 dB under synthetic pop: SI-SDR up by at least 3.7 dB (measured +4.1 and +4.0).
    /// Issue 4 asks for ffmpeg's afftdn + 2 dB on the bench (about +3.7 dB there, mean over its
    /// sources); the bench measures +3.9 there (ffmpeg +1.7).
    #[test]
    fn hiss_under_music_is_reduced() {
        let clean = music(Style::Pop, 8.0, 51);
        let hiss = noise(2, clean.frames(), 44_100, 1.0, 5);
        let level = 10f64.powf((rms_db(clean.channel(0)) - 25.0) / 20.0) * 3f64.sqrt();
        let mut damaged = clean.clone();
        for ch in 0..2 {
            for (x, n) in damaged.channel_mut(ch).iter_mut().zip(hiss.channel(ch)) {
                *x += n * level as f32;
            }
        }
        let out = run_aligned(&mut denoiser(18.0), &damaged, &[4096]);
        for ch in 0..2 {
            let before = si_sdr_db(clean.channel(ch), damaged.channel(ch));
            let after = si_sdr_db(clean.channel(ch), out.channel(ch));
            assert!(after > before + 3.7, "ch{ch}: {before:.1} -> {after:.1} dB");
        }
    }

    /// Hiss that stops short of Nyquist (above a lossy codec's or a transfer's bandwidth there is
    /// none) is reduced about as much as full-band hiss: SI-SDR up by at least 3.0 dB (measured
    /// +3.6 and +3.4). The empty band must not drag the floor estimate of the bands below it down:
    /// when every band took part in the lower envelope this gained +0.0 dB.
    #[test]
    fn band_limited_hiss_is_still_reduced() {
        let clean = music(Style::Pop, 8.0, 51);
        let frames = clean.frames();
        let hiss = noise(2, frames, 44_100, 1.0, 5);
        let level = 10f64.powf((rms_db(clean.channel(0)) - 25.0) / 20.0) * 3f64.sqrt();
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(frames);
        let inverse = planner.plan_fft_inverse(frames);
        let mut damaged = clean.clone();
        for ch in 0..2 {
            let mut samples = hiss.channel(ch).to_vec();
            let mut spectrum = forward.make_output_vec();
            forward.process(&mut samples, &mut spectrum).unwrap();
            // Nothing above 16.5 kHz.
            let cutoff = spectrum.len() * 3 / 4;
            spectrum[cutoff..].fill(Complex::new(0.0, 0.0));
            inverse.process(&mut spectrum, &mut samples).unwrap();
            let scale = (level / frames as f64) as f32;
            for (x, n) in damaged.channel_mut(ch).iter_mut().zip(&samples) {
                *x += n * scale;
            }
        }
        let out = run_aligned(&mut denoiser(18.0), &damaged, &[4096]);
        for ch in 0..2 {
            let before = si_sdr_db(clean.channel(ch), damaged.channel(ch));
            let after = si_sdr_db(clean.channel(ch), out.channel(ch));
            assert!(after > before + 3.0, "ch{ch}: {before:.1} -> {after:.1} dB");
        }
    }

    /// A mono track takes the channel-by-channel path: hiss 25 dB under synthetic pop, SI-SDR up
    /// by at least 3.3 dB (measured +3.6; the stereo pair above gains +4.1 on the same channel,
    /// each channel drawing on the other).
    #[test]
    fn hiss_under_mono_music_is_reduced() {
        let stereo = music(Style::Pop, 8.0, 51);
        let clean = AudioBlock::from_channels(vec![stereo.channel(0).to_vec()], 44_100);
        let hiss = noise(1, clean.frames(), 44_100, 1.0, 5);
        let level = 10f64.powf((rms_db(clean.channel(0)) - 25.0) / 20.0) * 3f64.sqrt();
        let mut damaged = clean.clone();
        for (x, n) in damaged.channel_mut(0).iter_mut().zip(hiss.channel(0)) {
            *x += n * level as f32;
        }
        let config = DenoiseConfig::default();
        let mut stage = Denoiser::new(&config, 1, 44_100, 4096).unwrap();
        let out = run_aligned(&mut stage, &damaged, &[4096]);
        let before = si_sdr_db(clean.channel(0), damaged.channel(0));
        let after = si_sdr_db(clean.channel(0), out.channel(0));
        assert!(after > before + 3.3, "{before:.1} -> {after:.1} dB");
    }

    /// Noise learned from a range of noise alone reads the true floor (the programme estimate comes
    /// within about 0.7 dB) and pure noise comes out attenuated by close to the strength.
    #[test]
    fn noise_learned_from_a_range_reads_the_true_floor() {
        let input = noise(2, 44_100 * 10, 44_100, 0.1, 78);
        let mut excerpt = input.clone();
        excerpt.set_frames(44_100);
        let mut stage = denoiser(18.0);
        stage.learn_noise(&excerpt).unwrap();
        let out = run_aligned(&mut stage, &input, &[4096]);
        let settled = 44_100;
        let before = rms_db(&input.channel(0)[settled..]);
        let after = rms_db(&out.channel(0)[settled..]);
        // Measured: 17.5 dB less.
        assert!(before - after > 16.0, "{before:.1} -> {after:.1} dBFS");
        let report = stage.report().unwrap();
        assert_eq!(report["noise_from"], "range");
        let floor = report["noise_floor_dbfs"].as_f64().unwrap();
        assert!(
            (floor - (-24.8)).abs() < 0.5,
            "noise floor read {floor:.1} dBFS"
        );
        let mut short = input.clone();
        short.set_frames(FRAME_FRAMES - 1);
        let err = denoiser(18.0).learn_noise(&short).unwrap_err();
        assert_eq!(err.key, "noise_to_s");
    }

    #[test]
    fn noise_range_needs_both_ends_and_some_length() {
        let parse = |text: &str| toml::from_str::<DenoiseConfig>(text).unwrap().validate();
        assert!(parse("noise_from_s = 0.0\nnoise_to_s = 2.0\n").is_ok());
        assert_eq!(parse("noise_from_s = 1.0\n").unwrap_err().key, "noise_to_s");
        assert_eq!(parse("noise_to_s = 1.0\n").unwrap_err().key, "noise_from_s");
        let err = parse("noise_from_s = 1.0\nnoise_to_s = 1.1\n").unwrap_err();
        assert_eq!(err.key, "noise_to_s");
        assert!(err.reason.contains("allowed"), "{}", err.reason);
    }

    /// The running-sum box mean equals the direct mean of each window, at the spectrum's ends, in
    /// between, and when the window is wider than the spectrum; a loud bin leaves nothing behind
    /// in the quiet bins after it.
    #[test]
    fn box_mean_is_the_mean_of_each_window() {
        let mut input: Vec<f32> = (0..40).map(|i| ((i * 37 % 11) as f32).powi(3)).collect();
        input[3] = 1e9;
        for spread in [0, 1, 2, 5, 19, 25] {
            let mut output = vec![0.0; input.len()];
            box_mean(&input, &mut output, spread, f64::from, |sum| sum as f32);
            for (k, &o) in output.iter().enumerate() {
                let (lo, hi) = (k.saturating_sub(spread), (k + spread + 1).min(input.len()));
                let window = &input[lo..hi];
                let expected =
                    window.iter().map(|&x| f64::from(x)).sum::<f64>() / window.len() as f64;
                assert!(
                    (f64::from(o) - expected).abs() <= 1e-6 * expected.max(1.0),
                    "spread {spread}, bin {k}: {o} against {expected}"
                );
            }
        }
    }

    /// A track that opens with digital silence (or a restorer before the denoiser, whose latency
    /// reaches it as leading zeros) must not freeze the noise tracker at zero: the output stays
    /// finite and the hiss after the silence is still reduced.
    #[test]
    fn leading_digital_silence_leaves_the_output_finite_and_the_hiss_reduced() {
        let clean = music(Style::Pop, 6.0, 52);
        let hiss = noise(2, clean.frames(), 44_100, 1.0, 6);
        let level = 10f64.powf((rms_db(clean.channel(0)) - 25.0) / 20.0) * 3f64.sqrt();
        let silence = 44_100;
        let mut damaged = AudioBlock::new(2, silence + clean.frames(), 44_100);
        damaged.set_frames(silence + clean.frames());
        for ch in 0..2 {
            for ((x, c), n) in damaged.channel_mut(ch)[silence..]
                .iter_mut()
                .zip(clean.channel(ch))
                .zip(hiss.channel(ch))
            {
                *x = c + n * level as f32;
            }
        }
        let out = run_aligned(&mut denoiser(18.0), &damaged, &[4096]);
        for ch in 0..2 {
            assert!(out.channel(ch).iter().all(|x| x.is_finite()), "ch{ch}");
            let before = si_sdr_db(clean.channel(ch), &damaged.channel(ch)[silence..]);
            let after = si_sdr_db(clean.channel(ch), &out.channel(ch)[silence..]);
            assert!(after > before + 3.0, "ch{ch}: {before:.1} -> {after:.1} dB");
        }
    }

    #[test]
    fn output_does_not_depend_on_block_size() {
        let input = noise(2, 30_000, 44_100, 0.3, 2);
        let a = run_aligned(&mut denoiser(12.0), &input, &[4096]);
        let b = run_aligned(&mut denoiser(12.0), &input, &[1, 777]);
        assert_eq!(a, b);
    }
}
