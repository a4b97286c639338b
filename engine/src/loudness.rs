//! BS.1770-4 / EBU R128 loudness and true-peak measurement.
//!
//! [`LoudnessMeter`] is streaming: it K-weights each channel in `f64` (the BS.1770 pre-filter and
//! RLB high-pass, two biquads per channel, re-derived from their analog prototypes for any rate as
//! libebur128 does), sums the weighted squares into 100 ms sub-blocks and builds every figure from
//! those sub-block energies: the 400 ms gating blocks of the integrated loudness (75 % overlap), the
//! 3 s short-term values of the loudness range (EBU Tech 3342, ten a second) and the maximum
//! momentary and short-term loudness (read at every 100 ms boundary of the programme, as EBU Tech
//! 3341 asks, independent of how the caller cuts the audio into blocks). It keeps 16 bytes per
//! 100 ms of audio (the gating and short-term histories) and nothing else that grows with the audio.
//!
//! True peak is read with lathe's own 4x windowed-sinc interpolator
//! ([`crate::master::oversample::TruePeakDetector`], 48 taps a phase): `ebur128`'s over-reads an
//! fs/6 sine by 0.34 dB, outside EBU Tech 3341 case 17's tolerance.

use lathe_model::gating::{ABSOLUTE_GATE_LUFS, energy_to_lufs, gated_lufs, lufs_to_energy};

use crate::audio::AudioBlock;
use crate::master::oversample::TruePeakDetector;
use crate::vector::VectorKernel;

/// The most channels lathe handles (7.1).
pub const MAX_CHANNELS: usize = 8;

/// Loudness figures of a programme. `None` where the quantity is undefined (e.g. integrated loudness
/// of digital silence, which is below the absolute gate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoudnessFigures {
    /// Integrated (gated) loudness, LUFS.
    pub integrated_lufs: Option<f64>,
    /// Loudness range (EBU Tech 3342), LU.
    pub loudness_range_lu: Option<f64>,
    /// Highest momentary (400 ms) loudness, LUFS.
    pub max_momentary_lufs: Option<f64>,
    /// Highest short-term (3 s) loudness, LUFS.
    pub max_short_term_lufs: Option<f64>,
    /// Highest true peak over all channels, dBTP.
    pub true_peak_dbtp: Option<f64>,
}

/// A streaming BS.1770-4 meter: integrated loudness, loudness range, maximum momentary and short-term
/// loudness, and true peak.
pub struct LoudnessMeter {
    filters: Vec<KWeighting>,
    /// BS.1770 weight of each channel (0 for LFE).
    weights: Vec<f64>,
    /// Sum of squared K-weighted samples of each channel in the current sub-block.
    sums: Vec<f64>,
    hop_frames: f64,
    /// Frames since the start, and where the current sub-block ends.
    frames_seen: u64,
    next_boundary: u64,
    /// Frames in the current sub-block.
    sub_block_frames: u64,
    /// Completed sub-blocks.
    sub_blocks: u64,
    /// Mean-square energy of the last 30 sub-blocks (a ring indexed by sub-block count).
    sub_block_energy: [f64; SHORT_TERM_SUB_BLOCKS],
    /// Energy of every complete 400 ms gating block.
    gating_blocks: Vec<f64>,
    /// Energy of every complete 3 s short-term window (for the loudness range).
    short_term: Vec<f64>,
    /// Short-term loudness every [`CURVE_SUB_BLOCKS`] sub-blocks, LUFS (floored), for the plots.
    curve: Vec<f64>,
    max_momentary: f64,
    max_short_term: f64,
    peak_meters: Vec<TruePeakMeter>,
    /// K-weighted energy of the current segment so far ([`LoudnessMeter::add_segmented`]).
    segment_energy: f64,
    /// Channel-weighted sum of the squared K-weighted samples of every completed sub-block: with
    /// the current sub-block's sums, the ungated loudness of the whole programme.
    closed_energy: f64,
}

/// What [`LoudnessMeter::add_segmented`] hands each completed segment to: its frames in the block,
/// and its K-weighted energy.
pub type SegmentSink<'a> = dyn FnMut(std::ops::Range<usize>, f64) + 'a;

/// 100 ms sub-blocks in the momentary (400 ms) window and in a gating block.
const MOMENTARY_SUB_BLOCKS: usize = 4;
/// 100 ms sub-blocks in the short-term (3 s) window.
const SHORT_TERM_SUB_BLOCKS: usize = 30;
/// 100 ms sub-blocks between two points of the plotted loudness curve
/// (`lathe_model::plot::CURVE_STEP_S`, 1 s).
const CURVE_SUB_BLOCKS: u64 = 10;

/// Oversampling of the true-peak reading (BS.1770-4 asks for at least 4x at 48 kHz).
const TRUE_PEAK_OVERSAMPLING: usize = 4;

/// The loudness range's relative gate, LU below the absolute-gated short-term loudness.
const RANGE_RELATIVE_GATE_LU: f64 = -20.0;
/// The loudness range spans these percentiles of the gated short-term values.
const RANGE_PERCENTILES: (f64, f64) = (0.10, 0.95);

/// The BS.1770 weight of each channel of a WAV-ordered layout of `channel_count` channels: LFE is
/// excluded, surround channels get 1.41.
fn channel_weights(channel_count: usize) -> Vec<f64> {
    const SURROUND: f64 = 1.41;
    let mut weights = match channel_count {
        1 => vec![1.0],
        2 => vec![1.0, 1.0],
        3 => vec![1.0, 1.0, 1.0],
        4 => vec![1.0, 1.0, SURROUND, SURROUND],
        5 => vec![1.0, 1.0, 1.0, SURROUND, SURROUND],
        6 => vec![1.0, 1.0, 1.0, 0.0, SURROUND, SURROUND],
        7 => vec![1.0, 1.0, 1.0, 0.0, SURROUND, SURROUND, 1.0],
        _ => vec![1.0, 1.0, 1.0, 0.0, SURROUND, SURROUND, SURROUND, SURROUND],
    };
    weights.resize(channel_count, 0.0);
    weights
}

/// A biquad's coefficients, `a0` normalised to 1.
#[derive(Debug, Clone, Copy)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
}

impl Biquad {
    /// The BS.1770 pre-filter (a high shelf of about +4 dB) at `rate_hz`, from its analog prototype.
    fn k_shelf(rate_hz: f64) -> Self {
        let f0 = 1_681.974_450_955_533;
        let gain_db = 3.999_843_853_973_347;
        let q = 0.707_175_236_955_419_6;
        let k = (std::f64::consts::PI * f0 / rate_hz).tan();
        let vh = 10f64.powf(gain_db / 20.0);
        let vb = vh.powf(0.499_666_774_154_541_6);
        let a0 = 1.0 + k / q + k * k;
        Self {
            b: [
                (vh + vb * k / q + k * k) / a0,
                2.0 * (k * k - vh) / a0,
                (vh - vb * k / q + k * k) / a0,
            ],
            a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        }
    }

    /// The BS.1770 RLB high-pass (about 38 Hz) at `rate_hz`, from its analog prototype.
    fn k_highpass(rate_hz: f64) -> Self {
        let f0 = 38.135_470_876_024_44;
        let q = 0.500_327_037_323_877_3;
        let k = (std::f64::consts::PI * f0 / rate_hz).tan();
        let a0 = 1.0 + k / q + k * k;
        Self {
            b: [1.0, -2.0, 1.0],
            a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        }
    }
}

/// The K-weighting filter of one channel, direct form I in `f64` (the form with the shortest
/// recursion per sample).
#[derive(Debug, Clone)]
pub(crate) struct KWeighting {
    shelf: Biquad,
    highpass: Biquad,
    /// Shelf input history, shelf output (= high-pass input) history, high-pass output history.
    x: [f64; 2],
    y: [f64; 2],
    z: [f64; 2],
}

impl KWeighting {
    pub(crate) fn new(rate_hz: u32) -> Self {
        let rate_hz = f64::from(rate_hz);
        Self {
            shelf: Biquad::k_shelf(rate_hz),
            highpass: Biquad::k_highpass(rate_hz),
            x: [0.0; 2],
            y: [0.0; 2],
            z: [0.0; 2],
        }
    }

    /// The next output for input `x`. The terms that do not wait for the previous output come
    /// first, so that only one multiply and one subtraction sit on each filter's recursion.
    #[inline(always)]
    fn step(&mut self, x: f64) -> f64 {
        let (s, h) = (&self.shelf, &self.highpass);
        let [x1, x2] = self.x;
        let [y1, y2] = self.y;
        let [z1, z2] = self.z;
        let y = (s.b[0] * x + s.b[1] * x1 + s.b[2] * x2 - s.a[1] * y2) - s.a[0] * y1;
        let z = (h.b[0] * y + h.b[1] * y1 + h.b[2] * y2 - h.a[1] * z2) - h.a[0] * z1;
        self.x = [x, x1];
        self.y = [y, y1];
        self.z = [z, z1];
        z
    }

    /// Sets state values too small to matter to zero: denormals would slow the recursion to a
    /// crawl after long silence.
    fn flush_denormals(&mut self) {
        for v in self.x.iter_mut().chain(&mut self.y).chain(&mut self.z) {
            if v.abs() < 1e-30 {
                *v = 0.0;
            }
        }
    }

    /// Filters `samples` and adds the squared outputs to `sum`, one at a time (so the result does
    /// not depend on how the audio is cut into blocks).
    pub(crate) fn add_squares(&mut self, samples: &[f32], sum: &mut f64) {
        let mut filter = self.clone();
        let mut acc = *sum;
        for &sample in samples {
            let z = filter.step(f64::from(sample));
            acc += z * z;
        }
        *sum = acc;
        filter.flush_denormals();
        *self = filter;
    }

    /// [`KWeighting::add_squares`] on two channels at once: their recursions interleave, so the
    /// processor overlaps them. Each channel's result is bit for bit that of its own call.
    fn add_squares_pair(
        (first, second): (&mut Self, &mut Self),
        (first_samples, second_samples): (&[f32], &[f32]),
        (first_sum, second_sum): (&mut f64, &mut f64),
    ) {
        let (mut a, mut b) = (first.clone(), second.clone());
        let (mut sum_a, mut sum_b) = (*first_sum, *second_sum);
        for (&xa, &xb) in first_samples.iter().zip(second_samples) {
            let za = a.step(f64::from(xa));
            let zb = b.step(f64::from(xb));
            sum_a += za * za;
            sum_b += zb * zb;
        }
        (*first_sum, *second_sum) = (sum_a, sum_b);
        a.flush_denormals();
        b.flush_denormals();
        (*first, *second) = (a, b);
    }
}

/// Frames of a span the [`TruePeakMeter`] computes or skips as a whole.
pub const TRUE_PEAK_SPAN_FRAMES: usize = 256;

/// Block-wise true-peak reading of one channel: the interpolator of
/// [`crate::master::oversample::TruePeakDetector`] evaluated a whole block at a time in `f32`
/// ([`branch_peak`] on the widest vectors the CPU has, see [`VectorKernel`]), for meters that need only the maximum, not a per-sample envelope.
///
/// Spans that cannot raise the reading are skipped: no interpolated point can exceed the largest
/// input sample it is made from times the largest absolute coefficient sum of a branch, so a span of
/// [`TRUE_PEAK_SPAN_FRAMES`] frames whose inputs stay under `peak / gain_bound` is not computed. The
/// reading is bit for bit the same as computing every point (a point's value does not depend on
/// which others are computed). The bound is loose for the 48-tap interpolator (2.67, 8.5 dB): on a
/// dense master (the 5-minute pop bench track) about a quarter of the spans are computed.
#[derive(Debug, Clone)]
pub struct TruePeakMeter {
    /// Non-trivial branches; coefficient `i` multiplies the input `i` samples before the newest.
    branches: Vec<Vec<f32>>,
    /// The largest sum of absolute coefficients of any branch, with a margin for `f32` rounding.
    gain_bound: f32,
    /// Whether spans that cannot raise the reading are skipped (always, except in the test that
    /// proves skipping changes nothing).
    skipping: bool,
    /// The instructions the interpolation runs on.
    kernel: VectorKernel,
    taps: usize,
    /// The last `taps - 1` samples, then the current block.
    buffer: Vec<f32>,
    peak: f32,
}

impl TruePeakMeter {
    /// A meter oversampling `oversampling` times (2 to 16).
    pub fn new(oversampling: usize) -> Result<Self, lathe_model::config::InvalidValue> {
        let detector = TruePeakDetector::new(oversampling)?;
        let unit = |branch: &[f64]| branch.iter().filter(|&&c| c != 0.0).count() == 1;
        let branches: Vec<Vec<f32>> = detector
            .branches()
            .filter(|b| !unit(b))
            .map(|b| b.iter().map(|&c| c as f32).collect())
            .collect();
        let taps = detector.branches().next().map_or(1, <[f64]>::len);
        let gain_bound = detector
            .branches()
            .map(|b| b.iter().map(|c| c.abs()).sum::<f64>())
            .fold(1.0, f64::max);
        Ok(Self {
            branches,
            // Each point is a sum of `taps` f32 products: its rounding error is far below 1e-4.
            gain_bound: (gain_bound * (1.0 + 1e-4)) as f32,
            skipping: true,
            kernel: VectorKernel::detect(),
            taps,
            buffer: vec![0.0; taps - 1],
            peak: 0.0,
        })
    }

    /// The same meter computing every span: the reference skipping must match bit for bit.
    #[cfg(test)]
    #[allow(clippy::expect_used)]
    fn without_skipping(oversampling: usize) -> Self {
        let mut meter = Self::new(oversampling).expect("a supported oversampling");
        meter.skipping = false;
        meter
    }

    /// Adds consecutive samples.
    pub fn add(&mut self, samples: &[f32]) {
        let history = self.taps - 1;
        self.buffer.truncate(history);
        self.buffer.extend_from_slice(samples);
        let mut peak = self.peak.max(kernel_loudest(self.kernel, samples));
        let mut start = 0;
        while start < samples.len() {
            let len = TRUE_PEAK_SPAN_FRAMES.min(samples.len() - start);
            // Points `start..start + len` are made from `buffer[start..start + len + history]`.
            let inputs = &self.buffer[start..start + len + history];
            let loudest = kernel_loudest(self.kernel, inputs);
            if !self.skipping || loudest * self.gain_bound > peak {
                for branch in &self.branches {
                    peak = kernel_branch_peak(self.kernel, branch, inputs, peak);
                }
            }
            start += len;
        }
        self.peak = peak;
        let keep_from = self.buffer.len() - history;
        self.buffer.copy_within(keep_from.., 0);
    }

    /// The highest absolute value of the reconstructed signal so far, counting the ringing after the
    /// last sample (as if silence followed).
    pub fn peak(&self) -> f64 {
        let mut flushed = self.clone();
        flushed.add(&vec![0.0; self.taps]);
        f64::from(flushed.peak)
    }
}

/// [`loudest`] on the widest vectors the CPU has.
fn kernel_loudest(kernel: VectorKernel, samples: &[f32]) -> f32 {
    match kernel {
        VectorKernel::Baseline => loudest::<32>(samples),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `VectorKernel` names a kernel only where the CPU has its features (AVX2 here), the
        // one requirement of `loudest_avx2`.
        VectorKernel::Avx2 => unsafe { loudest_avx2(samples) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: as above, for AVX-512F and `loudest_avx512`.
        VectorKernel::Avx512 => unsafe { loudest_avx512(samples) },
    }
}

/// The largest absolute value of `samples` (0 for none; NaN ignored), on the widest vectors the CPU
/// has.
pub(crate) fn sample_peak(samples: &[f32]) -> f32 {
    kernel_loudest(VectorKernel::detect(), samples)
}

/// [`branch_peak`] on the widest vectors the CPU has.
fn kernel_branch_peak(
    kernel: VectorKernel,
    coefficients: &[f32],
    inputs: &[f32],
    peak: f32,
) -> f32 {
    match kernel {
        VectorKernel::Baseline => branch_peak::<32>(coefficients, inputs, peak),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `VectorKernel` names a kernel only where the CPU has its features (AVX2 here), the
        // one requirement of `branch_peak_avx2`.
        VectorKernel::Avx2 => unsafe { branch_peak_avx2(coefficients, inputs, peak) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: as above, for AVX-512F and `branch_peak_avx512`.
        VectorKernel::Avx512 => unsafe { branch_peak_avx512(coefficients, inputs, peak) },
    }
}

/// [`loudest`] compiled for 256-bit vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn loudest_avx2(samples: &[f32]) -> f32 {
    loudest::<64>(samples)
}

/// [`loudest`] compiled for 512-bit vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn loudest_avx512(samples: &[f32]) -> f32 {
    loudest::<128>(samples)
}

/// The largest absolute value of `samples` (0 for none; NaN ignored), `LANES` running maxima at
/// once. The maximum is exact, so any `LANES` gives the same bits.
#[inline(always)]
fn loudest<const LANES: usize>(samples: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = samples.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x.abs());
        }
    }
    // The rest (up to `LANES - 1` values: the meter's spans leave a filter's history over) eight
    // lanes at a time, then one by one.
    let mut short_lanes = [0.0f32; 8];
    let mut short_chunks = chunks.remainder().chunks_exact(8);
    for chunk in &mut short_chunks {
        for (lane, x) in short_lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x.abs());
        }
    }
    let tail = short_chunks
        .remainder()
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    lanes.into_iter().chain(short_lanes).fold(tail, f32::max)
}

/// [`branch_peak`] compiled for 256-bit vectors, 64 points at a time (eight registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn branch_peak_avx2(coefficients: &[f32], inputs: &[f32], peak: f32) -> f32 {
    branch_peak::<64>(coefficients, inputs, peak)
}

/// [`branch_peak`] compiled for 512-bit vectors, 128 points at a time (eight registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn branch_peak_avx512(coefficients: &[f32], inputs: &[f32], peak: f32) -> f32 {
    branch_peak::<128>(coefficients, inputs, peak)
}

/// The larger of `peak` and the largest absolute value of the points one interpolator branch makes
/// from `inputs`: point `n` is `sum_i coefficients[i] * inputs[history + n - i]` (`history` =
/// taps - 1), for every `n` that has a whole history in `inputs`. The points are summed tap by tap in
/// order, `LANES` at a time in registers: enough independent sums (eight vector registers) that the
/// additions' latency is hidden (with a quarter as many, each sum waits on the one before and the
/// meter ran at half the speed; twice as many spill registers).
#[inline(always)]
fn branch_peak<const LANES: usize>(coefficients: &[f32], inputs: &[f32], peak: f32) -> f32 {
    let history = coefficients.len() - 1;
    let points = inputs.len() - history;
    let mut lane_peaks = [peak; LANES];
    let whole = points - points % LANES;
    for start in (0..whole).step_by(LANES) {
        let window = &inputs[start..start + LANES + history];
        let mut sums = [0.0f32; LANES];
        for (i, &c) in coefficients.iter().enumerate() {
            let x = &window[history - i..history - i + LANES];
            for k in 0..LANES {
                sums[k] += c * x[k];
            }
        }
        for (lane, sum) in lane_peaks.iter_mut().zip(sums) {
            *lane = lane.max(sum.abs());
        }
    }
    let mut peak = lane_peaks.into_iter().fold(peak, f32::max);
    for start in whole..points {
        let window = &inputs[start..=start + history];
        let sum = window
            .iter()
            .rev()
            .zip(coefficients)
            .fold(0.0f32, |sum, (&x, &c)| sum + c * x);
        peak = peak.max(sum.abs());
    }
    peak
}

impl LoudnessMeter {
    /// A meter for `channel_count` channels (WAV channel order) at `sample_rate_hz`.
    pub fn new(channel_count: usize, sample_rate_hz: u32) -> Self {
        Self::build(channel_count, sample_rate_hz, true)
    }

    /// A cheaper meter that does not read the true peak (its figure is `None`): for passes that
    /// only need to know how loud a render is.
    pub fn integrated_only(channel_count: usize, sample_rate_hz: u32) -> Self {
        Self::build(channel_count, sample_rate_hz, false)
    }

    #[allow(clippy::expect_used)]
    fn build(channel_count: usize, sample_rate_hz: u32, true_peak: bool) -> Self {
        let hop_frames = f64::from(sample_rate_hz) / 10.0;
        let first_boundary = (hop_frames.round() as u64).max(1);
        Self {
            filters: vec![KWeighting::new(sample_rate_hz); channel_count],
            weights: channel_weights(channel_count),
            sums: vec![0.0; channel_count],
            hop_frames,
            frames_seen: 0,
            next_boundary: first_boundary,
            sub_block_frames: first_boundary,
            sub_blocks: 0,
            sub_block_energy: [0.0; SHORT_TERM_SUB_BLOCKS],
            gating_blocks: Vec::new(),
            short_term: Vec::new(),
            curve: Vec::new(),
            max_momentary: f64::NEG_INFINITY,
            max_short_term: f64::NEG_INFINITY,
            segment_energy: 0.0,
            closed_energy: 0.0,
            peak_meters: if true_peak {
                vec![
                    TruePeakMeter::new(TRUE_PEAK_OVERSAMPLING)
                        .expect("4x is a supported oversampling");
                    channel_count
                ]
            } else {
                Vec::new()
            },
        }
    }

    /// Adds the valid frames of `block`.
    pub fn add(&mut self, block: &AudioBlock) {
        self.add_pieces(block, None);
    }

    /// [`LoudnessMeter::add`], and hands `on_segment` each completed segment of `segment_frames`
    /// frames of the programme (counted from its start): the segment's frames in `block`, and the
    /// K-weighted energy of the whole segment (the channel-weighted sum of its squared K-weighted
    /// samples, not divided by its length). One K-weighting serves both, for a caller that needs
    /// finer energies than the meter's 100 ms (the calibration's limiter model). The meter's own
    /// figures are exactly those of [`LoudnessMeter::add`].
    pub fn add_segmented(
        &mut self,
        block: &AudioBlock,
        segment_frames: usize,
        on_segment: &mut SegmentSink<'_>,
    ) {
        self.add_pieces(block, Some((segment_frames.max(1) as u64, on_segment)));
    }

    /// Weighted sum of the current sub-block sums.
    fn weighted_sum(&self) -> f64 {
        self.sums
            .iter()
            .zip(&self.weights)
            .map(|(s, w)| s * w)
            .sum()
    }

    fn add_pieces(
        &mut self,
        block: &AudioBlock,
        mut segments: Option<(u64, &mut SegmentSink<'_>)>,
    ) {
        for (meter, channel) in self.peak_meters.iter_mut().zip(block.channels()) {
            meter.add(channel);
        }
        let mut start = 0;
        let mut segment_start = 0;
        while start < block.frames() {
            let until_boundary = (self.next_boundary - self.frames_seen) as usize;
            let mut end = (start + until_boundary).min(block.frames());
            // With segments, pieces also end at segment boundaries; the energy of a segment is the
            // growth of the sums over it (carried across a sub-block boundary inside it).
            let before = match &segments {
                Some((frames, _)) => {
                    let until_segment = frames - self.frames_seen % frames;
                    end = end.min(start + until_segment as usize);
                    self.weighted_sum()
                }
                None => 0.0,
            };
            self.add_squares(block, start, end);
            self.frames_seen += (end - start) as u64;
            if let Some((frames, on_segment)) = &mut segments {
                self.segment_energy += self.weighted_sum() - before;
                if self.frames_seen % *frames == 0 {
                    on_segment(segment_start..end, std::mem::take(&mut self.segment_energy));
                    segment_start = end;
                }
            }
            if self.frames_seen == self.next_boundary {
                self.close_sub_block();
            }
            start = end;
        }
    }

    /// K-weights frames `start..end` of `block` into the sub-block sums.
    fn add_squares(&mut self, block: &AudioBlock, start: usize, end: usize) {
        // Channels two at a time where both count (the common stereo case), else one by one.
        let channels = self.filters.len();
        let mut ch = 0;
        while ch < channels {
            let pair = ch + 1 < channels && self.weights[ch] > 0.0 && self.weights[ch + 1] > 0.0;
            if pair {
                let (filters, sums) = (&mut self.filters[ch..ch + 2], &mut self.sums[ch..ch + 2]);
                let (fa, fb) = filters.split_at_mut(1);
                let (sa, sb) = sums.split_at_mut(1);
                KWeighting::add_squares_pair(
                    (&mut fa[0], &mut fb[0]),
                    (
                        &block.channel(ch)[start..end],
                        &block.channel(ch + 1)[start..end],
                    ),
                    (&mut sa[0], &mut sb[0]),
                );
                ch += 2;
            } else {
                if self.weights[ch] > 0.0 {
                    self.filters[ch]
                        .add_squares(&block.channel(ch)[start..end], &mut self.sums[ch]);
                }
                ch += 1;
            }
        }
    }

    /// At every 100 ms boundary: stores the sub-block's mean-square energy, records the gating
    /// block and short-term window that end there, and updates the momentary (4 sub-blocks) and
    /// short-term (30 sub-blocks) maxima. Before a window has filled, its missing sub-blocks count
    /// as silence for the maxima, as in `ebur128`; only complete windows are gated.
    fn close_sub_block(&mut self) {
        let frames = self.sub_block_frames as f64;
        let weighted = self
            .sums
            .iter_mut()
            .zip(&self.weights)
            .map(|(sum, weight)| weight * std::mem::take(sum))
            .sum::<f64>();
        self.closed_energy += weighted;
        let energy = weighted / frames;
        let slot = (self.sub_blocks as usize) % SHORT_TERM_SUB_BLOCKS;
        self.sub_block_energy[slot] = energy;
        self.sub_blocks += 1;
        self.next_boundary = ((self.sub_blocks + 1) as f64 * self.hop_frames).round() as u64;
        self.sub_block_frames = self.next_boundary - self.frames_seen;
        let recent = |count: usize| -> f64 {
            (0..count)
                .map(|back| {
                    self.sub_block_energy
                        [(slot + SHORT_TERM_SUB_BLOCKS - back) % SHORT_TERM_SUB_BLOCKS]
                })
                .sum::<f64>()
                / count as f64
        };
        let momentary = recent(MOMENTARY_SUB_BLOCKS);
        let short_term = recent(SHORT_TERM_SUB_BLOCKS);
        if self.sub_blocks >= MOMENTARY_SUB_BLOCKS as u64 {
            self.gating_blocks.push(momentary);
        }
        if self.sub_blocks >= SHORT_TERM_SUB_BLOCKS as u64 {
            self.short_term.push(short_term);
        }
        if self.sub_blocks % CURVE_SUB_BLOCKS == 0 {
            self.curve
                .push(energy_to_lufs(short_term).max(crate::plot::FLOOR_DB));
        }
        self.max_momentary = self.max_momentary.max(energy_to_lufs(momentary));
        self.max_short_term = self.max_short_term.max(energy_to_lufs(short_term));
    }

    /// Integrated loudness (BS.1770-4 gating), LUFS; `None` when no block passes the absolute gate.
    fn integrated_lufs(&self) -> Option<f64> {
        gated_lufs(&[&self.gating_blocks])
    }

    /// The short-term (3 s) loudness at every whole `lathe_model::plot::CURVE_STEP_S` of the
    /// programme so far, LUFS, floored at [`crate::plot::FLOOR_DB`]; before 3 s have passed, the
    /// missing part of the window counts as silence. The curve a report plots.
    pub fn short_term_curve(&self) -> &[f64] {
        &self.curve
    }

    /// The weighted mean-square energy of every complete 400 ms gating block so far (75 % overlap):
    /// what [`gated_lufs`] gates, so several programmes can be gated as one (an album).
    pub fn gating_blocks(&self) -> &[f64] {
        &self.gating_blocks
    }

    /// The ungated loudness of everything added so far, LUFS: the BS.1770 K-weighted, channel-weighted
    /// mean square over the whole programme, with neither gate and no 400 ms blocks, so it is
    /// defined for a programme shorter than one gating block. `None` for nothing or digital
    /// silence.
    pub fn ungated_lufs(&self) -> Option<f64> {
        let energy = (self.closed_energy + self.weighted_sum()) / self.frames_seen.max(1) as f64;
        (energy > 0.0).then(|| energy_to_lufs(energy))
    }

    /// Loudness range (EBU Tech 3342), LU; `None` when no short-term value passes the gates.
    fn loudness_range_lu(&self) -> Option<f64> {
        let absolute = lufs_to_energy(ABSOLUTE_GATE_LUFS);
        let gated: Vec<f64> = self
            .short_term
            .iter()
            .copied()
            .filter(|&e| e > absolute)
            .collect();
        if gated.is_empty() {
            return None;
        }
        let mean = gated.iter().sum::<f64>() / gated.len() as f64;
        let relative = mean * 10f64.powf(RANGE_RELATIVE_GATE_LU / 10.0);
        let mut kept: Vec<f64> = gated.into_iter().filter(|&e| e > relative).collect();
        if kept.is_empty() {
            return None;
        }
        kept.sort_by(f64::total_cmp);
        let at = |fraction: f64| kept[((kept.len() - 1) as f64 * fraction).round() as usize];
        let (low, high) = RANGE_PERCENTILES;
        Some(energy_to_lufs(at(high)) - energy_to_lufs(at(low)))
    }

    /// The figures for everything added so far.
    pub fn figures(&self) -> LoudnessFigures {
        let finite = |v: f64| v.is_finite().then_some(v);
        let true_peak = self
            .peak_meters
            .iter()
            .map(TruePeakMeter::peak)
            .fold(0.0, f64::max);
        LoudnessFigures {
            integrated_lufs: self.integrated_lufs(),
            loudness_range_lu: self.loudness_range_lu(),
            max_momentary_lufs: finite(self.max_momentary),
            max_short_term_lufs: finite(self.max_short_term),
            true_peak_dbtp: if self.peak_meters.is_empty() {
                None
            } else {
                finite(linear_to_db(true_peak))
            },
        }
    }
}

/// Converts a linear amplitude to decibels (`-inf` for zero).
pub fn linear_to_db(amplitude: f64) -> f64 {
    20.0 * amplitude.log10()
}

/// Converts decibels to a linear amplitude.
pub fn db_to_linear(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn full_scale_1k_sine_reads_minus_3_lufs_per_channel_pair() {
        // A 0 dBFS 997 Hz sine in both channels of stereo reads -3.01 LUFS (BS.1770 calibration gives
        // -3.01 for one channel; two channels add 3.01 dB).
        let block = testkit::sine(2, 48_000 * 5, 48_000, 997.0, 1.0);
        let mut meter = LoudnessMeter::new(2, 48_000);
        meter.add(&block);
        let lufs = meter.figures().integrated_lufs.unwrap();
        assert!((lufs - 0.0).abs() < 0.1, "{lufs}");
    }

    #[test]
    fn ungated_loudness_reads_a_programme_shorter_than_a_gating_block() {
        // 250 ms of a -6.02 dBFS 997 Hz sine in both channels: no gating block, so no integrated
        // loudness, but the whole-programme mean square reads -6.02 LUFS.
        let mut meter = LoudnessMeter::new(2, 48_000);
        meter.add(&testkit::sine(2, 12_000, 48_000, 997.0, 0.5));
        assert_eq!(meter.figures().integrated_lufs, None);
        let lufs = meter.ungated_lufs().unwrap();
        assert!((lufs - -6.02).abs() < 0.05, "{lufs}");
        // A steady tone reads the same with or without the gates, however it is cut into blocks.
        let tone = testkit::sine(2, 48_000 * 5, 48_000, 997.0, 0.5);
        let mut whole = LoudnessMeter::new(2, 48_000);
        whole.add(&tone);
        let mut cut = LoudnessMeter::integrated_only(2, 48_000);
        for start in (0..tone.frames()).step_by(1000) {
            let end = (start + 1000).min(tone.frames());
            let part: Vec<Vec<f32>> = tone.channels().map(|c| c[start..end].to_vec()).collect();
            cut.add(&AudioBlock::from_channels(part, 48_000));
        }
        let (gated, ungated) = (
            whole.figures().integrated_lufs.unwrap(),
            whole.ungated_lufs().unwrap(),
        );
        assert!((gated - ungated).abs() < 0.01, "{gated} vs {ungated}");
        assert!((cut.ungated_lufs().unwrap() - ungated).abs() < 1e-9);
        // Digital silence has none.
        let mut silent = LoudnessMeter::new(2, 48_000);
        silent.add(&AudioBlock::from_channels(vec![vec![0.0; 4800]; 2], 48_000));
        assert_eq!(silent.ungated_lufs(), None);
    }

    #[test]
    fn the_plotted_curve_reads_short_term_loudness_every_second() {
        assert_eq!(
            CURVE_SUB_BLOCKS as f64 / 10.0,
            lathe_model::plot::CURVE_STEP_S,
            "a curve point every CURVE_STEP_S"
        );
        // 10 s of a steady tone: ten points; from 3 s on (a full window) each reads the tone's
        // loudness; before, the missing part of the window counts as silence.
        let mut meter = LoudnessMeter::new(2, 48_000);
        meter.add(&testkit::sine(2, 48_000 * 10, 48_000, 997.0, 0.5));
        let curve = meter.short_term_curve();
        let lufs = meter.figures().integrated_lufs.unwrap();
        assert_eq!(curve.len(), 10, "{curve:?}");
        for &point in &curve[2..] {
            assert!((point - lufs).abs() < 0.05, "{point} vs {lufs}: {curve:?}");
        }
        let one_third = lufs + 10.0 * (1.0f64 / 3.0).log10();
        assert!((curve[0] - one_third).abs() < 0.05, "{curve:?}");
        // Digital silence sits at the plots' floor.
        let mut silent = LoudnessMeter::new(1, 44_100);
        silent.add(&AudioBlock::from_channels(
            vec![vec![0.0; 44_100 * 2]],
            44_100,
        ));
        assert_eq!(silent.short_term_curve(), &[crate::plot::FLOOR_DB; 2]);
    }

    #[test]
    fn maxima_do_not_depend_on_block_size() {
        let block = testkit::noise(2, 48_000 * 4, 48_000, 0.3, 7);
        let measure = |size: usize| {
            let mut meter = LoudnessMeter::new(2, 48_000);
            let mut part = AudioBlock::new(2, size, 48_000);
            let mut pos = 0;
            while pos < block.frames() {
                let n = size.min(block.frames() - pos);
                part.set_frames(n);
                for ch in 0..2 {
                    part.channel_mut(ch)
                        .copy_from_slice(&block.channel(ch)[pos..pos + n]);
                }
                meter.add(&part);
                pos += n;
            }
            meter.figures()
        };
        assert_eq!(measure(4800), measure(1013));
        assert_eq!(measure(4800), measure(65_536));
    }

    #[test]
    fn block_meter_reads_what_the_per_sample_detector_reads() {
        // Loud noise throughout, and a quiet bed with one loud burst and a late near-peak sine at
        // fs/4 + a little (inter-sample peaks above its samples), where most spans are skipped.
        let bursty = {
            let mut block = testkit::noise(1, 40_000, 44_100, 0.05, 9);
            let burst = testkit::noise(1, 3_000, 44_100, 0.5, 10);
            block.channel_mut(0)[12_000..15_000].copy_from_slice(burst.channel(0));
            let tone = testkit::sine(1, 4_000, 44_100, 11_100.0, 0.85);
            block.channel_mut(0)[30_000..34_000].copy_from_slice(tone.channel(0));
            block
        };
        for (signal, size) in [
            (testkit::noise(1, 20_000, 44_100, 0.8, 1), 1),
            (testkit::noise(1, 20_000, 44_100, 0.8, 2), 37),
            (testkit::noise(1, 20_000, 44_100, 0.8, 3), 4096),
            (bursty.clone(), 1),
            (bursty.clone(), 300),
            (bursty, 4096),
        ] {
            let mut detector = TruePeakDetector::new(4).unwrap();
            let mut expected = 0.0f64;
            for &x in signal.channel(0).iter().chain(&[0.0; 64]) {
                expected = expected.max(detector.push(f64::from(x)));
            }
            let mut meter = TruePeakMeter::new(4).unwrap();
            for chunk in signal.channel(0).chunks(size) {
                meter.add(chunk);
            }
            let relative = (meter.peak() - expected).abs() / expected;
            assert!(
                relative < 1e-5,
                "block {size}: {} vs {expected}",
                meter.peak()
            );
        }
    }

    /// A dense, loud, music-like channel: a few detuned tones under a slow envelope, noise, and
    /// hard clipping at 0.9 (as a loud master's peaks sit), 44.1 kHz.
    fn music_like(frames: usize, seed: u64) -> Vec<f32> {
        let noise = testkit::noise(1, frames, 44_100, 0.25, seed);
        let tau = 2.0 * std::f64::consts::PI;
        (0..frames)
            .map(|n| {
                let t = n as f64 / 44_100.0;
                let envelope = 0.6 + 0.4 * (tau * 1.7 * t).sin();
                let tones: f64 = [(110.0, 0.5), (220.5, 0.3), (1_318.0, 0.2), (7_040.0, 0.1)]
                    .iter()
                    .map(|&(hz, level)| level * (tau * hz * t).sin())
                    .sum();
                let x = envelope * tones * 1.6 + f64::from(noise.channel(0)[n]);
                x.clamp(-0.9, 0.9) as f32
            })
            .collect()
    }

    /// Signals whose true peak sits well above their samples, or that stress the bounds.
    fn torture_channels() -> Vec<(&'static str, Vec<f32>)> {
        let fs_over_4 = testkit::sine(1, 20_000, 44_100, 11_025.0, 1.0);
        // fs/4 at 45 degrees: every sample at 0.707, the waveform's peaks between them at 1.
        let shifted: Vec<f32> = (0..20_000)
            .map(|n| {
                (std::f64::consts::FRAC_PI_2 * n as f64 + std::f64::consts::FRAC_PI_4).sin() as f32
            })
            .collect();
        let nyquist: Vec<f32> = (0..20_000)
            .map(|n| if n % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let square: Vec<f32> = (0..20_000)
            .map(|n| if (n / 37) % 2 == 0 { 0.99 } else { -0.99 })
            .collect();
        let mut impulses = vec![0.0f32; 20_000];
        for (k, at) in [500, 4_000, 4_001, 9_999, 19_990].into_iter().enumerate() {
            impulses[at] = if k % 2 == 0 { 1.0 } else { -0.8 };
        }
        let mut growing = testkit::noise(1, 20_000, 44_100, 1.0, 31)
            .channel(0)
            .to_vec();
        for (n, x) in growing.iter_mut().enumerate() {
            *x *= n as f32 / 20_000.0;
        }
        vec![
            ("fs/4 sine", fs_over_4.channel(0).to_vec()),
            ("fs/4 sine at 45 degrees", shifted),
            ("alternating full scale", nyquist),
            ("clipped square", square),
            ("impulses", impulses),
            ("noise fading in", growing),
        ]
    }

    #[test]
    fn skipping_true_peak_points_gives_the_same_bits_as_computing_them_all() {
        let mut signals = torture_channels();
        signals.push(("music-like", music_like(60_000, 41)));
        signals.push(("music-like, other seed", music_like(60_000, 42)));
        for (name, signal) in &signals {
            for size in [1, 100, 4096] {
                let mut skipping = TruePeakMeter::new(4).unwrap();
                let mut reference = TruePeakMeter::without_skipping(4);
                for chunk in signal.chunks(size) {
                    skipping.add(chunk);
                    reference.add(chunk);
                    assert_eq!(skipping.peak.to_bits(), reference.peak.to_bits(), "{name}");
                }
                assert_eq!(
                    skipping.peak().to_bits(),
                    reference.peak().to_bits(),
                    "{name}, blocks of {size}: {} vs {}",
                    skipping.peak(),
                    reference.peak()
                );
            }
        }
        // The fs/4 sine at 45 degrees reads about its waveform's peak (0 dBTP; its abrupt start
        // and end ring a little over), 3 dB over its samples.
        let mut meter = TruePeakMeter::new(4).unwrap();
        meter.add(&signals[1].1);
        assert!(linear_to_db(meter.peak()).abs() < 0.1, "{}", meter.peak());
    }

    #[test]
    fn every_vector_kernel_gives_the_same_true_peak_bits() {
        let kernels = VectorKernel::available();
        eprintln!("true-peak kernels on this CPU: {kernels:?}");
        let mut signals = torture_channels();
        signals.push(("music-like", music_like(60_000, 43)));
        for (name, signal) in &signals {
            let reading = |kernel: VectorKernel| {
                let mut meter = TruePeakMeter::without_skipping(4);
                meter.kernel = kernel;
                // Blocks of 1000 leave spans whose length is no multiple of any kernel's lanes.
                let mut bits = Vec::new();
                for chunk in signal.chunks(1000) {
                    meter.add(chunk);
                    bits.push(u64::from(meter.peak.to_bits()));
                }
                bits.push(meter.peak().to_bits());
                bits
            };
            let portable = reading(VectorKernel::Baseline);
            for &kernel in &kernels {
                assert_eq!(reading(kernel), portable, "{name}: {kernel:?}");
            }
        }
    }

    #[test]
    fn integrated_only_meter_agrees_with_the_full_meter() {
        let block = testkit::noise(2, 48_000 * 4, 48_000, 0.3, 11);
        let mut full = LoudnessMeter::new(2, 48_000);
        let mut lean = LoudnessMeter::integrated_only(2, 48_000);
        full.add(&block);
        lean.add(&block);
        let (full, lean) = (full.figures(), lean.figures());
        assert_eq!(full.integrated_lufs, lean.integrated_lufs);
        assert_eq!(full.loudness_range_lu, lean.loudness_range_lu);
        assert_eq!(full.max_momentary_lufs, lean.max_momentary_lufs);
        assert_eq!(lean.true_peak_dbtp, None);
    }

    #[test]
    fn paired_k_weighting_is_bit_identical_to_one_channel_at_a_time() {
        let block = testkit::noise(2, 10_000, 44_100, 0.5, 21);
        let mut single = [KWeighting::new(44_100), KWeighting::new(44_100)];
        let mut single_sums = [0.0; 2];
        for (ch, (filter, sum)) in single.iter_mut().zip(&mut single_sums).enumerate() {
            filter.add_squares(block.channel(ch), sum);
        }
        let (mut a, mut b) = (KWeighting::new(44_100), KWeighting::new(44_100));
        let (mut sum_a, mut sum_b) = (0.0, 0.0);
        KWeighting::add_squares_pair(
            (&mut a, &mut b),
            (block.channel(0), block.channel(1)),
            (&mut sum_a, &mut sum_b),
        );
        assert_eq!(
            [sum_a.to_bits(), sum_b.to_bits()],
            single_sums.map(f64::to_bits)
        );
        assert_eq!((a.z, b.z), (single[0].z, single[1].z));
    }

    #[test]
    fn k_weighting_at_48k_has_the_coefficients_bs1770_publishes() {
        // ITU-R BS.1770-4, tables 1 and 2.
        let shelf = Biquad::k_shelf(48_000.0);
        let highpass = Biquad::k_highpass(48_000.0);
        let expected_shelf = (
            [
                1.535_124_859_586_97,
                -2.691_696_189_406_38,
                1.198_392_810_852_85,
            ],
            [-1.690_659_293_182_41, 0.732_480_774_215_85],
        );
        let expected_highpass = (
            [1.0, -2.0, 1.0],
            [-1.990_047_454_833_98, 0.990_072_250_366_21],
        );
        for (got, want) in [
            (
                shelf.b.iter().chain(&shelf.a),
                expected_shelf.0.iter().chain(&expected_shelf.1),
            ),
            (
                highpass.b.iter().chain(&highpass.a),
                expected_highpass.0.iter().chain(&expected_highpass.1),
            ),
        ] {
            for (g, w) in got.zip(want) {
                assert!((g - w).abs() < 1e-8, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn integrated_loudness_agrees_with_libebur128_at_any_rate() {
        // Noise whose level steps over 30 dB (so both gates act), at common and odd rates.
        for rate in [11_025, 44_100, 48_000, 96_000] {
            let mut block = testkit::noise(2, rate as usize * 12, rate, 0.5, 5);
            for (i, x) in block.channel_mut(0).iter_mut().enumerate() {
                *x *= [1.0, 0.1, 0.03, 0.6][i * 4 / (rate as usize * 12)];
            }
            let mut meter = LoudnessMeter::new(2, rate);
            meter.add(&block);
            let mut reference = ebur128::EbuR128::new(2, rate, ebur128::Mode::I).unwrap();
            reference
                .add_frames_planar_f32(&[block.channel(0), block.channel(1)])
                .unwrap();
            let ours = meter.figures().integrated_lufs.unwrap();
            let theirs = reference.loudness_global().unwrap();
            assert!(
                (ours - theirs).abs() < 0.01,
                "{rate} Hz: {ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn an_album_is_gated_over_all_its_tracks_as_libebur128_gates_them() {
        // A loud track and a quiet one 20 dB down: gated together, the quiet one's blocks fall
        // under the relative gate, so the album reads near the loud track, not the energy mean.
        let rates = [44_100, 48_000];
        let levels = [0.5, 0.05];
        let mut meters = Vec::new();
        let mut references = Vec::new();
        for (i, (&rate, &level)) in rates.iter().zip(&levels).enumerate() {
            let block = testkit::noise(2, rate as usize * 8, rate, level, 11 + i as u64);
            let mut meter = LoudnessMeter::integrated_only(2, rate);
            meter.add(&block);
            meters.push(meter);
            let mut reference = ebur128::EbuR128::new(2, rate, ebur128::Mode::I).unwrap();
            reference
                .add_frames_planar_f32(&[block.channel(0), block.channel(1)])
                .unwrap();
            references.push(reference);
        }
        let blocks: Vec<&[f64]> = meters.iter().map(LoudnessMeter::gating_blocks).collect();
        let ours = gated_lufs(&blocks).unwrap();
        let theirs = ebur128::EbuR128::loudness_global_multiple(references.iter()).unwrap();
        assert!((ours - theirs).abs() < 0.01, "{ours} vs {theirs}");
        let loud = meters[0].figures().integrated_lufs.unwrap();
        assert!(
            (ours - loud).abs() < 0.1,
            "album {ours} vs loud track {loud}"
        );
        assert_eq!(gated_lufs(&[&[]]), None);
    }

    #[test]
    fn silence_has_no_integrated_loudness() {
        let mut meter = LoudnessMeter::new(2, 44_100);
        meter.add(&AudioBlock::from_channels(
            vec![vec![0.0; 44_100]; 2],
            44_100,
        ));
        let figures = meter.figures();
        assert_eq!(figures.integrated_lufs, None);
        assert_eq!(figures.true_peak_dbtp, None);
    }
}
