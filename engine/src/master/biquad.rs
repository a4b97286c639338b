//! Second-order IIR sections (biquads) and cascades of them: the building block of the high-pass, EQ,
//! crossover and stereo stages.
//!
//! Coefficients come from Robert Bristow-Johnson's *Audio-EQ cookbook* (bilinear transform with the
//! analogue prototype pre-warped at the corner frequency), normalised so that `a0 == 1`. Sections run in
//! transposed direct form II with `f64` state, which keeps low-frequency filters at 44.1 kHz and above
//! well-behaved. A section whose state values are both below [`DENORMAL_FLOOR`] is flushed to zero so that a filter fed silence
//! settles to exact zero instead of crawling through subnormal numbers (slow on most CPUs).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use crate::audio::AudioBlock;
use lathe_model::config::InvalidValue;

/// Magnitude below which filter state is flushed to zero (about -600 dBFS).
pub const DENORMAL_FLOOR: f64 = 1e-30;

/// Checks that a filter frequency is below 0.49 times the sample rate (the bilinear transform cannot
/// place a corner at or above Nyquist, and cramps it just below).
///
/// # Errors
/// An [`InvalidValue`] naming `key` otherwise.
pub fn check_below_nyquist(
    key: &str,
    frequency_hz: f64,
    sample_rate_hz: u32,
) -> Result<(), InvalidValue> {
    let limit_hz = 0.49 * f64::from(sample_rate_hz);
    if frequency_hz < limit_hz {
        Ok(())
    } else {
        Err(InvalidValue::new(
            key,
            format!(
                "{frequency_hz} Hz is too close to the Nyquist frequency at {sample_rate_hz} Hz; \
                 must be below {limit_hz} Hz"
            ),
        ))
    }
}

/// Normalised biquad coefficients: `H(z) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)`.
///
/// A first-order section is a biquad with `b2 == a2 == 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BiquadCoefficients {
    /// Feed-forward coefficient of the current input.
    pub b0: f64,
    /// Feed-forward coefficient of the input one sample ago.
    pub b1: f64,
    /// Feed-forward coefficient of the input two samples ago.
    pub b2: f64,
    /// Feedback coefficient of the output one sample ago (sign as in the denominator).
    pub a1: f64,
    /// Feedback coefficient of the output two samples ago (sign as in the denominator).
    pub a2: f64,
}

/// Intermediate cookbook quantities for a corner frequency and Q.
struct Warped {
    cos_w0: f64,
    alpha: f64,
}

impl Warped {
    fn new(frequency_hz: f64, q: f64, sample_rate_hz: u32) -> Self {
        let w0 = 2.0 * PI * frequency_hz / f64::from(sample_rate_hz);
        Self {
            cos_w0: w0.cos(),
            alpha: w0.sin() / (2.0 * q),
        }
    }
}

impl BiquadCoefficients {
    /// The identity filter (`H(z) = 1`).
    pub fn identity() -> Self {
        Self {
            b0: 1.0,
            b1: 0.0,
            b2: 0.0,
            a1: 0.0,
            a2: 0.0,
        }
    }

    /// Normalises raw coefficients by `a0`.
    fn normalised(b0: f64, b1: f64, b2: f64, a0: f64, a1: f64, a2: f64) -> Self {
        Self {
            b0: b0 / a0,
            b1: b1 / a0,
            b2: b2 / a0,
            a1: a1 / a0,
            a2: a2 / a0,
        }
    }

    /// Peaking (bell) filter: `gain_db` at `frequency_hz`, 0 dB far from it; `q` sets the bandwidth.
    pub fn peaking(frequency_hz: f64, gain_db: f64, q: f64, sample_rate_hz: u32) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let Warped { cos_w0, alpha } = Warped::new(frequency_hz, q, sample_rate_hz);
        Self::normalised(
            1.0 + alpha * a,
            -2.0 * cos_w0,
            1.0 - alpha * a,
            1.0 + alpha / a,
            -2.0 * cos_w0,
            1.0 - alpha / a,
        )
    }

    /// Low shelf: `gain_db` well below `frequency_hz`, 0 dB well above, `gain_db / 2` at the corner.
    /// `q` = 0.707 gives the steepest shelf without overshoot.
    pub fn low_shelf(frequency_hz: f64, gain_db: f64, q: f64, sample_rate_hz: u32) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let Warped { cos_w0, alpha } = Warped::new(frequency_hz, q, sample_rate_hz);
        let two_sqrt_a_alpha = 2.0 * a.sqrt() * alpha;
        Self::normalised(
            a * ((a + 1.0) - (a - 1.0) * cos_w0 + two_sqrt_a_alpha),
            2.0 * a * ((a - 1.0) - (a + 1.0) * cos_w0),
            a * ((a + 1.0) - (a - 1.0) * cos_w0 - two_sqrt_a_alpha),
            (a + 1.0) + (a - 1.0) * cos_w0 + two_sqrt_a_alpha,
            -2.0 * ((a - 1.0) + (a + 1.0) * cos_w0),
            (a + 1.0) + (a - 1.0) * cos_w0 - two_sqrt_a_alpha,
        )
    }

    /// High shelf: `gain_db` well above `frequency_hz`, 0 dB well below, `gain_db / 2` at the corner.
    pub fn high_shelf(frequency_hz: f64, gain_db: f64, q: f64, sample_rate_hz: u32) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let Warped { cos_w0, alpha } = Warped::new(frequency_hz, q, sample_rate_hz);
        let two_sqrt_a_alpha = 2.0 * a.sqrt() * alpha;
        Self::normalised(
            a * ((a + 1.0) + (a - 1.0) * cos_w0 + two_sqrt_a_alpha),
            -2.0 * a * ((a - 1.0) + (a + 1.0) * cos_w0),
            a * ((a + 1.0) + (a - 1.0) * cos_w0 - two_sqrt_a_alpha),
            (a + 1.0) - (a - 1.0) * cos_w0 + two_sqrt_a_alpha,
            2.0 * ((a - 1.0) - (a + 1.0) * cos_w0),
            (a + 1.0) - (a - 1.0) * cos_w0 - two_sqrt_a_alpha,
        )
    }

    /// Second-order high-pass; `q` = 1/sqrt(2) is Butterworth (-3.01 dB at `frequency_hz`).
    pub fn highpass(frequency_hz: f64, q: f64, sample_rate_hz: u32) -> Self {
        let Warped { cos_w0, alpha } = Warped::new(frequency_hz, q, sample_rate_hz);
        Self::normalised(
            (1.0 + cos_w0) / 2.0,
            -(1.0 + cos_w0),
            (1.0 + cos_w0) / 2.0,
            1.0 + alpha,
            -2.0 * cos_w0,
            1.0 - alpha,
        )
    }

    /// Second-order low-pass; `q` = 1/sqrt(2) is Butterworth (-3.01 dB at `frequency_hz`).
    pub fn lowpass(frequency_hz: f64, q: f64, sample_rate_hz: u32) -> Self {
        let Warped { cos_w0, alpha } = Warped::new(frequency_hz, q, sample_rate_hz);
        Self::normalised(
            (1.0 - cos_w0) / 2.0,
            1.0 - cos_w0,
            (1.0 - cos_w0) / 2.0,
            1.0 + alpha,
            -2.0 * cos_w0,
            1.0 - alpha,
        )
    }

    /// Second-order all-pass: unity magnitude, phase turning through -180 degrees at `frequency_hz`.
    ///
    /// With `q` = 1/sqrt(2) this is exactly the sum of the low-pass and high-pass outputs of a
    /// Linkwitz-Riley 4th-order crossover at the same frequency, so it is the phase compensation for
    /// bands that did not pass through that crossover.
    pub fn allpass(frequency_hz: f64, q: f64, sample_rate_hz: u32) -> Self {
        let Warped { cos_w0, alpha } = Warped::new(frequency_hz, q, sample_rate_hz);
        Self::normalised(
            1.0 - alpha,
            -2.0 * cos_w0,
            1.0 + alpha,
            1.0 + alpha,
            -2.0 * cos_w0,
            1.0 - alpha,
        )
    }

    /// First-order high-pass (6 dB/octave, -3.01 dB at `frequency_hz`).
    pub fn first_order_highpass(frequency_hz: f64, sample_rate_hz: u32) -> Self {
        let k = (PI * frequency_hz / f64::from(sample_rate_hz)).tan();
        Self::normalised(1.0, -1.0, 0.0, 1.0 + k, k - 1.0, 0.0)
    }

    /// First-order low-pass (6 dB/octave, -3.01 dB at `frequency_hz`).
    pub fn first_order_lowpass(frequency_hz: f64, sample_rate_hz: u32) -> Self {
        let k = (PI * frequency_hz / f64::from(sample_rate_hz)).tan();
        Self::normalised(k, k, 0.0, 1.0 + k, k - 1.0, 0.0)
    }

    /// The analytic magnitude response in dB at `frequency_hz` (evaluates `H(e^jw)`).
    pub fn magnitude_db(&self, frequency_hz: f64, sample_rate_hz: u32) -> f64 {
        let w = 2.0 * PI * frequency_hz / f64::from(sample_rate_hz);
        // z^-1 = cos w - j sin w, z^-2 = cos 2w - j sin 2w.
        let (c1, s1) = (w.cos(), -w.sin());
        let (c2, s2) = ((2.0 * w).cos(), -(2.0 * w).sin());
        let num_re = self.b0 + self.b1 * c1 + self.b2 * c2;
        let num_im = self.b1 * s1 + self.b2 * s2;
        let den_re = 1.0 + self.a1 * c1 + self.a2 * c2;
        let den_im = self.a1 * s1 + self.a2 * s2;
        let num = num_re * num_re + num_im * num_im;
        let den = den_re * den_re + den_im * den_im;
        10.0 * (num.max(1e-300) / den.max(1e-300)).log10()
    }
}

/// One biquad section with its state (transposed direct form II, `f64`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Biquad {
    coefficients: BiquadCoefficients,
    s1: f64,
    s2: f64,
}

impl Biquad {
    /// A section with the given coefficients and zero state.
    pub fn new(coefficients: BiquadCoefficients) -> Self {
        Self {
            coefficients,
            s1: 0.0,
            s2: 0.0,
        }
    }

    /// The section's coefficients.
    pub fn coefficients(&self) -> &BiquadCoefficients {
        &self.coefficients
    }

    /// Filters one sample.
    #[inline]
    pub fn process_sample(&mut self, x: f64) -> f64 {
        let c = &self.coefficients;
        let y = c.b0 * x + self.s1;
        self.s1 = c.b1 * x - c.a1 * y + self.s2;
        self.s2 = c.b2 * x - c.a2 * y;
        // Flushing both states together (never one alone, which can sustain a tiny limit cycle)
        // lands on the zero state, a fixed point for silent input.
        if self.s1.abs() < DENORMAL_FLOOR && self.s2.abs() < DENORMAL_FLOOR {
            self.s1 = 0.0;
            self.s2 = 0.0;
        }
        y
    }

    /// Clears the state (as if the input had always been silent).
    pub fn reset(&mut self) {
        self.s1 = 0.0;
        self.s2 = 0.0;
    }
}

/// Which side of the corner frequency a filter passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassBand {
    /// Pass frequencies below the corner.
    Lowpass,
    /// Pass frequencies above the corner.
    Highpass,
}

/// The Q of each second-order section of a Butterworth filter of `order` (a first-order section for
/// odd orders comes in addition): `Q_k = 1 / (2 cos(theta_k))`, `k = 1..=order/2`, where `theta_k` is the
/// angle of the k-th pole pair from the negative real axis.
pub fn butterworth_section_qs(order: usize) -> impl Iterator<Item = f64> {
    // Pole angles from the negative real axis: (2k - 1) pi / (2 order) for even orders and
    // k pi / order for odd ones (whose remaining real pole is the first-order section).
    (1..=order / 2).map(move |k| {
        let theta = (2 * k - 1 + order % 2) as f64 * PI / (2 * order) as f64;
        1.0 / (2.0 * theta.cos())
    })
}

/// A chain of biquad sections applied in series, with one set of state per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BiquadCascade {
    sections: Vec<BiquadCoefficients>,
    /// `channels[c][s]` is section `s` of channel `c`.
    channels: Vec<Vec<Biquad>>,
}

impl BiquadCascade {
    /// A cascade of `sections` for `channel_count` channels, with zero state. No sections is the
    /// identity.
    pub fn new(sections: Vec<BiquadCoefficients>, channel_count: usize) -> Self {
        let chain: Vec<Biquad> = sections.iter().copied().map(Biquad::new).collect();
        Self {
            sections,
            channels: vec![chain; channel_count],
        }
    }

    /// A Butterworth low- or high-pass of `order` 1..=8 (-3.01 dB at `frequency_hz`, maximally flat
    /// pass band, 6 dB/octave per order).
    ///
    /// # Errors
    /// An [`InvalidValue`] with key `order` when the order is outside 1..=8.
    pub fn butterworth(
        pass_band: PassBand,
        order: usize,
        frequency_hz: f64,
        sample_rate_hz: u32,
        channel_count: usize,
    ) -> Result<Self, InvalidValue> {
        if !(1..=8).contains(&order) {
            return Err(InvalidValue::new(
                "order",
                format!("{order} is out of range; allowed 1 to 8"),
            ));
        }
        let mut sections: Vec<BiquadCoefficients> = butterworth_section_qs(order)
            .map(|q| match pass_band {
                PassBand::Lowpass => BiquadCoefficients::lowpass(frequency_hz, q, sample_rate_hz),
                PassBand::Highpass => BiquadCoefficients::highpass(frequency_hz, q, sample_rate_hz),
            })
            .collect();
        if order % 2 == 1 {
            sections.push(match pass_band {
                PassBand::Lowpass => {
                    BiquadCoefficients::first_order_lowpass(frequency_hz, sample_rate_hz)
                }
                PassBand::Highpass => {
                    BiquadCoefficients::first_order_highpass(frequency_hz, sample_rate_hz)
                }
            });
        }
        Ok(Self::new(sections, channel_count))
    }

    /// A Linkwitz-Riley 4th-order low- or high-pass: two identical Butterworth 2nd-order sections
    /// (Q = 1/sqrt(2)), -6.02 dB at `frequency_hz`. The low-pass and high-pass outputs at the same
    /// frequency sum to the all-pass [`BiquadCoefficients::allpass`] with Q = 1/sqrt(2).
    pub fn linkwitz_riley4(
        pass_band: PassBand,
        frequency_hz: f64,
        sample_rate_hz: u32,
        channel_count: usize,
    ) -> Self {
        let section = match pass_band {
            PassBand::Lowpass => {
                BiquadCoefficients::lowpass(frequency_hz, FRAC_1_SQRT_2, sample_rate_hz)
            }
            PassBand::Highpass => {
                BiquadCoefficients::highpass(frequency_hz, FRAC_1_SQRT_2, sample_rate_hz)
            }
        };
        Self::new(vec![section, section], channel_count)
    }

    /// The sections' coefficients, in processing order.
    pub fn sections(&self) -> &[BiquadCoefficients] {
        &self.sections
    }

    /// Number of channels the cascade keeps state for.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Filters one sample of `channel`.
    ///
    /// # Panics
    /// If `channel` is out of range.
    #[inline]
    pub fn process_sample(&mut self, channel: usize, x: f64) -> f64 {
        self.channels[channel]
            .iter_mut()
            .fold(x, |acc, section| section.process_sample(acc))
    }

    /// Filters a buffer of `channel` in place.
    ///
    /// # Panics
    /// If `channel` is out of range.
    pub fn process_channel(&mut self, channel: usize, samples: &mut [f32]) {
        let chain = &mut self.channels[channel];
        for sample in samples {
            let y = chain.iter_mut().fold(f64::from(*sample), |acc, section| {
                section.process_sample(acc)
            });
            *sample = y as f32;
        }
    }

    /// Filters every channel of `block` (up to the cascade's channel count) in place: channels two
    /// at a time where there are two, each pair in one loop so that the two channels' recursions
    /// (each sample waits on the one before) overlap. The same output as
    /// [`process_channel`](Self::process_channel) on each channel.
    pub fn process_block(&mut self, block: &mut AudioBlock) {
        let channels = self.channels.len().min(block.channel_count());
        let mut channel = 0;
        while channel + 1 < channels {
            let (left, right) = block.channel_pair_mut(channel, channel + 1);
            let (first, second) = self.channels[channel..].split_at_mut(1);
            let (left_chain, right_chain) = (&mut first[0], &mut second[0]);
            for (l, r) in left.iter_mut().zip(right.iter_mut()) {
                let (mut yl, mut yr) = (f64::from(*l), f64::from(*r));
                for (left_section, right_section) in
                    left_chain.iter_mut().zip(right_chain.iter_mut())
                {
                    yl = left_section.process_sample(yl);
                    yr = right_section.process_sample(yr);
                }
                *l = yl as f32;
                *r = yr as f32;
            }
            channel += 2;
        }
        if channel < channels {
            self.process_channel(channel, block.channel_mut(channel));
        }
    }

    /// Clears the state of every channel.
    pub fn reset(&mut self) {
        self.channels.iter_mut().flatten().for_each(Biquad::reset);
    }

    /// The analytic magnitude response of the whole cascade in dB at `frequency_hz`.
    pub fn magnitude_db(&self, frequency_hz: f64, sample_rate_hz: u32) -> f64 {
        self.sections
            .iter()
            .map(|s| s.magnitude_db(frequency_hz, sample_rate_hz))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{log_spaced_hz, sine, steady_rms_db};

    const FS: u32 = 48_000;

    /// Measured gain of a single section on a steady sine (1 s settle, 1 s measured).
    fn measured_db(coefficients: BiquadCoefficients, frequency_hz: f64, fs: u32) -> f64 {
        let mut cascade = BiquadCascade::new(vec![coefficients], 1);
        measured_cascade_db(&mut cascade, frequency_hz, fs)
    }

    fn measured_cascade_db(cascade: &mut BiquadCascade, frequency_hz: f64, fs: u32) -> f64 {
        let frames = 2 * fs as usize;
        let input = sine(1, frames, fs, frequency_hz, 0.5);
        let mut output = input.clone();
        cascade.process_channel(0, output.channel_mut(0));
        let skip = fs as usize;
        steady_rms_db(&output.channel(0)[skip..], fs, frequency_hz)
            - steady_rms_db(&input.channel(0)[skip..], fs, frequency_hz)
    }

    #[test]
    fn block_processing_in_pairs_equals_channel_by_channel() {
        let sections = vec![
            BiquadCoefficients::highpass(40.0, FRAC_1_SQRT_2, FS),
            BiquadCoefficients::peaking(1000.0, 6.0, 1.0, FS),
        ];
        let input = crate::testkit::noise(3, 5000, FS, 0.5, 7);
        let mut paired = BiquadCascade::new(sections.clone(), 3);
        let mut by_pairs = input.clone();
        paired.process_block(&mut by_pairs);
        let mut single = BiquadCascade::new(sections, 3);
        for channel in 0..3 {
            let mut expected = input.channel(channel).to_vec();
            single.process_channel(channel, &mut expected);
            assert_eq!(
                by_pairs.channel(channel),
                &expected[..],
                "channel {channel}"
            );
        }
    }

    #[test]
    fn peaking_gain_at_centre() {
        for &(f, gain, q) in &[(100.0, 6.0, 1.0), (1000.0, -9.0, 4.0), (8000.0, 12.0, 0.5)] {
            let c = BiquadCoefficients::peaking(f, gain, q, FS);
            assert!((c.magnitude_db(f, FS) - gain).abs() < 0.01);
            assert!((measured_db(c, f, FS) - gain).abs() < 0.1, "{f} Hz");
            // Far from the centre the bell is flat.
            assert!(c.magnitude_db(f / 100.0, FS).abs() < 0.05);
        }
    }

    #[test]
    fn shelves_give_half_gain_at_corner_and_full_gain_far_away() {
        for &gain in &[-12.0, 6.0] {
            let low = BiquadCoefficients::low_shelf(200.0, gain, FRAC_1_SQRT_2, FS);
            assert!((low.magnitude_db(200.0, FS) - gain / 2.0).abs() < 0.01);
            assert!((measured_db(low, 200.0, FS) - gain / 2.0).abs() < 0.1);
            assert!((low.magnitude_db(10.0, FS) - gain).abs() < 0.01);
            assert!(low.magnitude_db(20_000.0, FS).abs() < 0.01);

            let high = BiquadCoefficients::high_shelf(4000.0, gain, FRAC_1_SQRT_2, FS);
            assert!((high.magnitude_db(4000.0, FS) - gain / 2.0).abs() < 0.01);
            assert!((measured_db(high, 4000.0, FS) - gain / 2.0).abs() < 0.1);
            assert!((high.magnitude_db(23_000.0, FS) - gain).abs() < 0.05);
            assert!(high.magnitude_db(20.0, FS).abs() < 0.01);
        }
    }

    #[test]
    fn second_order_filters_at_corner() {
        let half_power = -10.0 * 2f64.log10();
        let hp = BiquadCoefficients::highpass(500.0, FRAC_1_SQRT_2, FS);
        let lp = BiquadCoefficients::lowpass(500.0, FRAC_1_SQRT_2, FS);
        for c in [hp, lp] {
            assert!((c.magnitude_db(500.0, FS) - half_power).abs() < 0.01);
            assert!((measured_db(c, 500.0, FS) - half_power).abs() < 0.1);
        }
        // Resonant Q: gain at the corner is 20 log10(Q).
        let resonant = BiquadCoefficients::lowpass(500.0, 4.0, FS);
        assert!((resonant.magnitude_db(500.0, FS) - 20.0 * 4f64.log10()).abs() < 0.01);
        assert!(hp.magnitude_db(10_000.0, FS).abs() < 0.01);
        assert!(lp.magnitude_db(20.0, FS).abs() < 0.01);
    }

    #[test]
    fn first_order_filters_at_corner() {
        let half_power = -10.0 * 2f64.log10();
        for c in [
            BiquadCoefficients::first_order_highpass(1000.0, FS),
            BiquadCoefficients::first_order_lowpass(1000.0, FS),
        ] {
            assert!((c.magnitude_db(1000.0, FS) - half_power).abs() < 0.01);
            assert!((measured_db(c, 1000.0, FS) - half_power).abs() < 0.1);
        }
    }

    #[test]
    fn allpass_has_unity_magnitude() {
        let c = BiquadCoefficients::allpass(700.0, FRAC_1_SQRT_2, FS);
        for f in log_spaced_hz(20.0, 20_000.0, 30) {
            assert!(c.magnitude_db(f, FS).abs() < 1e-9);
        }
        assert!(measured_db(c, 700.0, FS).abs() < 0.01);
    }

    #[test]
    fn butterworth_section_qs_are_textbook() {
        let q2: Vec<f64> = butterworth_section_qs(2).collect();
        assert!((q2[0] - FRAC_1_SQRT_2).abs() < 1e-12);
        let q4: Vec<f64> = butterworth_section_qs(4).collect();
        assert!((q4[0] - 0.541_196).abs() < 1e-6 && (q4[1] - 1.306_563).abs() < 1e-6);
        let q3: Vec<f64> = butterworth_section_qs(3).collect();
        assert_eq!(q3.len(), 1);
        assert!((q3[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn butterworth_is_minus_3db_at_cutoff_for_every_order() {
        let half_power = -10.0 * 2f64.log10();
        for order in 1..=8 {
            for pass_band in [PassBand::Lowpass, PassBand::Highpass] {
                let mut c = BiquadCascade::butterworth(pass_band, order, 1000.0, FS, 1)
                    .expect("valid order");
                assert!((c.magnitude_db(1000.0, FS) - half_power).abs() < 0.01);
                assert!(
                    (measured_cascade_db(&mut c, 1000.0, FS) - half_power).abs() < 0.1,
                    "order {order} {pass_band:?}"
                );
                // Maximally flat: an octave and a half into the pass band it is within 0.1 dB.
                let pass = match pass_band {
                    PassBand::Lowpass => 350.0,
                    PassBand::Highpass => 2850.0,
                };
                if order >= 2 {
                    assert!(c.magnitude_db(pass, FS).abs() < 0.1, "order {order}");
                }
                // Slope: an octave into the stop band it falls by about 6 dB per order.
                let stop = match pass_band {
                    PassBand::Lowpass => 4000.0,
                    PassBand::Highpass => 250.0,
                };
                assert!(c.magnitude_db(stop, FS) < -11.0 * order as f64);
            }
        }
        assert!(BiquadCascade::butterworth(PassBand::Highpass, 0, 1000.0, FS, 1).is_err());
        assert!(BiquadCascade::butterworth(PassBand::Highpass, 9, 1000.0, FS, 1).is_err());
    }

    #[test]
    fn linkwitz_riley_sum_is_allpass() {
        for &(fc, fs) in &[(100.0, 44_100), (1000.0, 48_000), (5000.0, 96_000)] {
            let lp = BiquadCascade::linkwitz_riley4(PassBand::Lowpass, fc, fs, 1);
            let hp = BiquadCascade::linkwitz_riley4(PassBand::Highpass, fc, fs, 1);
            let six_db = -20.0 * 2f64.log10();
            assert!((lp.magnitude_db(fc, fs) - six_db).abs() < 0.01);
            assert!((hp.magnitude_db(fc, fs) - six_db).abs() < 0.01);
            // Run an impulse through both and sum: the result must be an all-pass.
            let mut lp = lp;
            let mut hp = hp;
            let mut ap =
                BiquadCascade::new(vec![BiquadCoefficients::allpass(fc, FRAC_1_SQRT_2, fs)], 1);
            let mut worst_vs_allpass: f64 = 0.0;
            for n in 0..4096 {
                let x = if n == 0 { 1.0 } else { 0.0 };
                let sum = lp.process_sample(0, x) + hp.process_sample(0, x);
                worst_vs_allpass = worst_vs_allpass.max((sum - ap.process_sample(0, x)).abs());
            }
            assert!(worst_vs_allpass < 1e-12, "{worst_vs_allpass}");
            // And measured on steady sines across the audio band.
            for f in log_spaced_hz(20.0, 20_000.0, 12) {
                let frames = fs as usize;
                let input = sine(1, frames, fs, f, 0.5);
                lp.reset();
                hp.reset();
                let summed: Vec<f32> = input
                    .channel(0)
                    .iter()
                    .map(|&x| {
                        let x = f64::from(x);
                        (lp.process_sample(0, x) + hp.process_sample(0, x)) as f32
                    })
                    .collect();
                let skip = frames / 2;
                let gain = steady_rms_db(&summed[skip..], fs, f)
                    - steady_rms_db(&input.channel(0)[skip..], fs, f);
                assert!(gain.abs() < 0.01, "{f} Hz at {fs}: {gain} dB");
            }
        }
    }

    #[test]
    fn silence_stays_silent_and_state_flushes() {
        let mut c = BiquadCascade::butterworth(PassBand::Highpass, 8, 20.0, 44_100, 1)
            .expect("valid order");
        let mut buf = vec![0.0f32; 4096];
        c.process_channel(0, &mut buf);
        assert!(buf.iter().all(|&x| x == 0.0));
        // After an impulse the state decays and is flushed to exact zero.
        let mut impulse = vec![0.0f32; 44_100 * 30];
        impulse[0] = 1.0;
        c.process_channel(0, &mut impulse);
        assert!(impulse.iter().all(|x| x.is_finite()));
        assert_eq!(*impulse.last().unwrap_or(&1.0), 0.0);
        assert!(c.channels[0].iter().all(|b| b.s1 == 0.0 && b.s2 == 0.0));
    }
}
