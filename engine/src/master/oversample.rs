//! Streaming polyphase FIR interpolation for true-peak detection (ITU-R BS.1770-4 Annex 2).
//!
//! A sampled signal can peak between its samples: the reconstructed waveform of a full-scale fs/4 sine
//! at 45° phase reaches 1.0 although no sample exceeds 0.707. BS.1770 measures this "true peak" by
//! oversampling at least 4x and taking the largest absolute value.
//!
//! [`TruePeakDetector`] does this with a linear-phase Kaiser-windowed-sinc interpolator of
//! [`TAPS_PER_PHASE`] taps per phase (prototype length `factor * TAPS_PER_PHASE`, Kaiser β =
//! [`KAISER_BETA`], cut-off at the input Nyquist frequency). Its passband is flat within 0.003 dB up to
//! 0.45 fs and its images are about 75 dB down, so what it reads is limited by the oversampling grid,
//! not by the filter: a sine's crest can fall between two oversampled points, which under-reads it by at
//! most `1 - cos(π f / (factor fs))` (at 0.45 fs: 0.55 dB at 4x, 0.14 dB at 8x; at 1 kHz / 48 kHz:
//! nothing measurable). The first phase of the filter is an exact unit impulse, so the reading always
//! includes the sample peak.
//!
//! Meters in the field do not all reconstruct this way. The BS.1770-4 Annex 2 table (48 taps, 4
//! phases) and the Hann-windowed 48-tap sinc of libebur128 (used by ffmpeg and by the `ebur128` crate,
//! hence by lathe's own [`crate::loudness`] meter) ripple in their passbands: they over-read some
//! signals by up to 0.22 dB and 0.11 dB respectively and read broadband peaks differently again.
//! [`CompliancePeakDetector`] therefore reads the largest of the ideal reconstruction and both meter
//! models, time-aligned; a limiter driven by it keeps a master under its ceiling on any of them.

use crate::vector::VectorKernel;

/// Taps per polyphase branch of [`TruePeakDetector`]'s interpolation filter.
pub const TAPS_PER_PHASE: usize = 48;

/// Kaiser window β of [`TruePeakDetector`]'s prototype filter (about 76 dB of image rejection).
pub const KAISER_BETA: f64 = 7.5;

/// The interpolation filter of ITU-R BS.1770-4 Annex 2 (order 48, phases 0 and 1; phases 2 and 3 are
/// phases 1 and 0 reversed). Phase `p` sits `(2p + 1) / 8` of a sample after input `n - 6`.
const BS1770_ANNEX2_PHASES: [[f64; 12]; 2] = [
    [
        0.001_708_984_375_0,
        0.010_986_328_125_0,
        -0.019_653_320_312_5,
        0.033_203_125_000_0,
        -0.059_448_242_187_5,
        0.137_329_101_562_5,
        0.972_167_968_750_0,
        -0.102_294_921_875_0,
        0.047_607_421_875_0,
        -0.026_611_328_125_0,
        0.014_892_578_125_0,
        -0.008_300_781_250_0,
    ],
    [
        -0.029_174_804_687_5,
        0.029_296_875_000_0,
        -0.051_757_812_500_0,
        0.089_111_328_125_0,
        -0.166_503_906_250_0,
        0.465_087_890_625_0,
        0.779_785_156_250_0,
        -0.200_317_382_812_5,
        0.101_562_500_000_0,
        -0.058_227_539_062_5,
        0.033_081_054_687_5,
        -0.018_920_898_437_5,
    ],
];

/// Zeroth-order modified Bessel function of the first kind, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let half_sq = (x / 2.0) * (x / 2.0);
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut k = 1.0;
    while term > 1e-17 * sum {
        term *= half_sq / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// A streaming polyphase FIR interpolator: for each input sample it computes `factor` points of the
/// oversampled signal. Coefficients are stored branch by branch; `coeffs[p * taps + i]` multiplies the
/// input `i` samples before the newest.
#[derive(Debug, Clone)]
struct PolyphaseFir {
    factor: usize,
    taps: usize,
    coeffs: Vec<f64>,
    /// `coeffs` rounded to `f32`, the precision the readings are computed in (twice the lanes of
    /// `f64` per vector instruction; the rounding is about 1e-6 of full scale, far below any
    /// ceiling's margin).
    coeffs_f32: Vec<f32>,
    /// Which branches are a pure delay of the input (computed as a copy, not a dot product):
    /// `Some(i)` means the branch is the unit impulse at tap `i`.
    unit_branch: Vec<Option<usize>>,
    /// Input history written twice (at `pos` and `pos + taps`) so that `history[pos..pos + taps]` is
    /// always the newest `taps` samples, newest first.
    history: Vec<f32>,
    pos: usize,
}

impl PolyphaseFir {
    /// Builds the interpolator from its branches (`factor` rows of `taps` coefficients).
    fn from_branches(factor: usize, taps: usize, coeffs: Vec<f64>) -> Self {
        debug_assert_eq!(coeffs.len(), factor * taps);
        let unit_branch = coeffs
            .chunks_exact(taps)
            .map(|branch| {
                let ones: Vec<usize> = (0..taps).filter(|&i| branch[i] == 1.0).collect();
                let zeros = branch.iter().filter(|&&c| c == 0.0).count();
                (ones.len() == 1 && zeros == taps - 1).then(|| ones[0])
            })
            .collect();
        Self {
            factor,
            taps,
            coeffs_f32: coeffs.iter().map(|&c| c as f32).collect(),
            coeffs,
            unit_branch,
            history: vec![0.0; 2 * taps],
            pos: 0,
        }
    }

    /// A Kaiser-windowed-sinc interpolator with its cut-off at the input Nyquist frequency. The
    /// prototype has `factor * taps` coefficients centred on index `factor * taps / 2`, so branch `p`
    /// computes the point `p / factor` of a sample after input `n - taps / 2`. Branch 0 is exactly the
    /// input delayed by `taps / 2`; the other branches are scaled to unit gain at DC.
    fn kaiser(factor: usize, taps: usize, beta: f64) -> Self {
        debug_assert!(
            taps % 2 == 0,
            "branch 0 is a unit impulse only for an even tap count"
        );
        let len = factor * taps;
        let centre = (len / 2) as f64;
        let norm = bessel_i0(beta);
        let mut coeffs = vec![0.0; len];
        for (p, branch) in coeffs.chunks_exact_mut(taps).enumerate() {
            for (i, c) in branch.iter_mut().enumerate() {
                let j = p + factor * i;
                let m = j as f64 - centre;
                let r = 2.0 * j as f64 / len as f64 - 1.0;
                let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / norm;
                let x = m / factor as f64;
                *c = if m == 0.0 {
                    1.0
                } else if x.fract() == 0.0 {
                    // sinc at a non-zero integer: exactly zero (sin would leave ~1e-17).
                    0.0
                } else {
                    window * (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                };
            }
            if p != 0 {
                let dc: f64 = branch.iter().sum();
                branch.iter_mut().for_each(|c| *c /= dc);
            }
        }
        Self::from_branches(factor, taps, coeffs)
    }

    /// The BS.1770-4 Annex 2 interpolator (4 branches of 12 taps).
    fn bs1770_annex2() -> Self {
        let [p0, p1] = BS1770_ANNEX2_PHASES;
        let mut coeffs = Vec::with_capacity(48);
        coeffs.extend_from_slice(&p0);
        coeffs.extend_from_slice(&p1);
        coeffs.extend(p1.iter().rev());
        coeffs.extend(p0.iter().rev());
        Self::from_branches(4, 12, coeffs)
    }

    /// libebur128's interpolator: a 48-tap Hann-windowed sinc split into `factor` branches (4 below
    /// 96 kHz, 2 below 192 kHz), without normalisation, as that library computes it.
    fn libebur128(factor: usize) -> Self {
        const LEN: usize = 48;
        let taps = LEN / factor;
        let mut coeffs = vec![0.0; LEN];
        for (j, c) in (0..LEN).map(|j| (j, (j % factor) * taps + j / factor)) {
            let jf = j as f64;
            let window = 0.5 * (1.0 - (2.0 * std::f64::consts::PI * jf / LEN as f64).cos());
            let m = jf - LEN as f64 / 2.0;
            coeffs[c] = if m.abs() > 1e-6 {
                let arg = m * std::f64::consts::PI / factor as f64;
                window * arg.sin() / arg
            } else {
                window
            };
        }
        Self::from_branches(factor, taps, coeffs)
    }

    /// Pushes one input sample and returns the largest absolute value of the `factor` points it
    /// completes. The sample is rounded to `f32` (lathe's sample format).
    fn push_peak(&mut self, sample: f64) -> f64 {
        let taps = self.taps;
        self.pos = if self.pos == 0 {
            taps - 1
        } else {
            self.pos - 1
        };
        let sample = sample as f32;
        self.history[self.pos] = sample;
        self.history[self.pos + taps] = sample;
        let recent = &self.history[self.pos..self.pos + taps];
        let mut peak = 0.0_f32;
        for (branch, unit) in self.coeffs_f32.chunks_exact(taps).zip(&self.unit_branch) {
            let value = match unit {
                Some(i) => recent[*i],
                None => dot(branch, recent),
            };
            peak = peak.max(value.abs());
        }
        f64::from(peak)
    }

    fn reset(&mut self) {
        self.history.fill(0.0);
        self.pos = 0;
    }
}

/// Dot product of two equally long slices, in four interleaved partial sums (lets the compiler
/// vectorise; the summation order is fixed, so results are still bit-reproducible).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let (a_rest, b_rest) = (a4.remainder(), b4.remainder());
    for (ca, cb) in a4.zip(b4) {
        for k in 0..4 {
            lanes[k] += ca[k] * cb[k];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]) + tail
}

/// A fixed delay for `f64` values (a ring buffer); a delay of 0 passes values straight through.
#[derive(Debug, Clone)]
struct ValueDelay {
    ring: Vec<f64>,
    pos: usize,
}

impl ValueDelay {
    fn new(delay: usize) -> Self {
        Self {
            ring: vec![0.0; delay],
            pos: 0,
        }
    }

    fn push(&mut self, value: f64) -> f64 {
        if self.ring.is_empty() {
            return value;
        }
        let out = std::mem::replace(&mut self.ring[self.pos], value);
        self.pos = (self.pos + 1) % self.ring.len();
        out
    }

    fn reset(&mut self) {
        self.ring.fill(0.0);
        self.pos = 0;
    }
}

/// The true peak of one channel, sample by sample, by ideal (band-limited) reconstruction.
///
/// [`TruePeakDetector::push`] takes input sample `n` and returns the largest absolute value of the
/// reconstructed signal over `[n - L, n - L + 1)`, where `L` = [`TruePeakDetector::latency_frames`]
/// (the filter's group delay): the sample `n - L` itself and the `oversampling - 1` points after it.
/// The maximum of all readings is the channel's true peak.
#[derive(Debug, Clone)]
pub struct TruePeakDetector {
    fir: PolyphaseFir,
}

impl TruePeakDetector {
    /// A detector oversampling by `oversampling` (2 to 16; BS.1770 asks for at least 4, and 8 reads
    /// sines up to 0.45 fs within 0.15 dB).
    pub fn new(oversampling: usize) -> Result<Self, lathe_model::config::InvalidValue> {
        lathe_model::config::check_range("oversampling", oversampling as f64, 2.0, 16.0, "")?;
        Ok(Self {
            fir: PolyphaseFir::kaiser(oversampling, TAPS_PER_PHASE, KAISER_BETA),
        })
    }

    /// The oversampling factor.
    pub fn oversampling(&self) -> usize {
        self.fir.factor
    }

    /// How many input samples a reading lags the sample it describes (the filter's group delay).
    pub fn latency_frames(&self) -> usize {
        TAPS_PER_PHASE / 2
    }

    /// Pushes the next input sample; returns the largest absolute value of the reconstructed signal
    /// around the sample [`TruePeakDetector::latency_frames`] earlier (see the type's documentation).
    pub fn push(&mut self, sample: f64) -> f64 {
        self.fir.push_peak(sample)
    }

    /// Forgets all past input (as if freshly built).
    pub fn reset(&mut self) {
        self.fir.reset();
    }

    /// The interpolation filter's branches (`oversampling` rows of [`TAPS_PER_PHASE`] coefficients;
    /// coefficient `i` of a row multiplies the input `i` samples before the newest).
    pub fn branches(&self) -> impl Iterator<Item = &[f64]> {
        self.fir.coeffs.chunks_exact(self.fir.taps)
    }
}

/// A true-peak reading no BS.1770 meter in common use will exceed: the largest of the ideal
/// reconstruction ([`TruePeakDetector`]), the BS.1770-4 Annex 2 interpolator and libebur128's
/// interpolator (at the factor that library uses for the sample rate), aligned to the same sample.
///
/// Both meter models ripple by a few tenths of a dB around the ideal reading, in either direction, so
/// the largest of the three is what a limiter must hold under its ceiling. Readings follow the same
/// timing as [`TruePeakDetector::push`].
#[derive(Debug, Clone)]
pub struct CompliancePeakDetector {
    ideal: TruePeakDetector,
    annex2: PolyphaseFir,
    annex2_delay: ValueDelay,
    libebur128: Option<(PolyphaseFir, ValueDelay)>,
}

impl CompliancePeakDetector {
    /// A detector whose ideal reconstruction oversamples by `oversampling` (2 to 16), for audio at
    /// `sample_rate_hz` (which decides libebur128's factor: 4x below 96 kHz, 2x below 192 kHz, none
    /// from there up).
    pub fn new(
        oversampling: usize,
        sample_rate_hz: u32,
    ) -> Result<Self, lathe_model::config::InvalidValue> {
        let ideal = TruePeakDetector::new(oversampling)?;
        let latency = ideal.latency_frames();
        // Annex 2 and libebur128 at 4x place their points in [n - 6, n - 5); at 2x in [n - 12, n - 11).
        let libebur128 = match sample_rate_hz {
            0..96_000 => Some((PolyphaseFir::libebur128(4), ValueDelay::new(latency - 6))),
            96_000..192_000 => Some((PolyphaseFir::libebur128(2), ValueDelay::new(latency - 12))),
            _ => None,
        };
        Ok(Self {
            ideal,
            annex2: PolyphaseFir::bs1770_annex2(),
            annex2_delay: ValueDelay::new(latency - 6),
            libebur128,
        })
    }

    /// How many input samples a reading lags the sample it describes.
    pub fn latency_frames(&self) -> usize {
        self.ideal.latency_frames()
    }

    /// Pushes the next input sample; returns the largest reading of the three reconstructions around
    /// the sample [`CompliancePeakDetector::latency_frames`] earlier.
    pub fn push(&mut self, sample: f64) -> f64 {
        let ideal = self.ideal.push(sample);
        let annex2 = self.annex2_delay.push(self.annex2.push_peak(sample));
        let libebur128 = self
            .libebur128
            .as_mut()
            .map_or(0.0, |(fir, delay)| delay.push(fir.push_peak(sample)));
        ideal.max(annex2).max(libebur128)
    }

    /// Forgets all past input (as if freshly built).
    pub fn reset(&mut self) {
        self.ideal.reset();
        self.annex2.reset();
        self.annex2_delay.reset();
        if let Some((fir, delay)) = &mut self.libebur128 {
            fir.reset();
            delay.reset();
        }
    }
}

/// Input frames [`ComplianceEnvelope`] works on per pass (its buffer holds this many after the
/// filters' history).
const CHUNK_FRAMES: usize = 256;

/// Frames per span over which [`ComplianceEnvelope`] decides whether exact readings can matter.
const SPAN_FRAMES: usize = 32;

/// Buffer positions per block of which [`ComplianceEnvelope`] keeps the largest absolute input (the
/// grain of its bounds).
const BLOCK_FRAMES: usize = 8;

/// Headroom on the bounds with which [`ComplianceEnvelope`] skips spans: covers the rounding of the
/// `f32` dot products (below 49 x 2^-24, about 3e-6 relative, for 48 taps) and of the bounds
/// themselves (summed in `f64`).
const BOUND_HEADROOM: f64 = 1.0 + 1e-5;

/// One interpolator of a [`ComplianceEnvelope`], its readings delayed by `delay` input samples.
#[derive(Debug, Clone)]
struct BlockFilter {
    taps: usize,
    delay: usize,
    /// The branches that need a dot product, one after another (`taps` coefficients each; coefficient
    /// `i` multiplies the input `i` samples before the newest).
    dot_branches: Vec<f32>,
    /// For each of `dot_branches`, the sum of its absolute coefficients times [`BOUND_HEADROOM`]: no
    /// reading of the branch exceeds this times the largest absolute input it reads.
    dot_bounds: Vec<f64>,
    /// For each branch that is a pure delay, its delay in taps.
    unit_taps: Vec<usize>,
}

impl BlockFilter {
    fn new(fir: &PolyphaseFir, delay: usize) -> Self {
        debug_assert_eq!(
            fir.taps % 4,
            0,
            "raise_to_branch sums in four partial sums, as dot does for these lengths"
        );
        let mut dot_branches = Vec::new();
        let mut dot_bounds = Vec::new();
        let mut unit_taps = Vec::new();
        for (branch, unit) in fir.coeffs_f32.chunks_exact(fir.taps).zip(&fir.unit_branch) {
            match unit {
                Some(i) => unit_taps.push(*i),
                None => {
                    dot_branches.extend_from_slice(branch);
                    let gain: f64 = branch.iter().map(|&c| f64::from(c.abs())).sum();
                    dot_bounds.push(gain * BOUND_HEADROOM);
                }
            }
        }
        Self {
            taps: fir.taps,
            delay,
            dot_branches,
            dot_bounds,
            unit_taps,
        }
    }

    /// How many samples before the newest the filter's readings reach back.
    fn reach(&self) -> usize {
        self.delay + self.taps - 1
    }
}

/// The readings of [`CompliancePeakDetector`], a block at a time, computing only what can exceed a
/// given floor.
///
/// [`ComplianceEnvelope::raise`] takes a block of input and, for each sample, the reading
/// [`CompliancePeakDetector::push`] would return for it: same filters, same time alignment, same
/// arithmetic, so bit for bit the same value. It works in passes of up to [`CHUNK_FRAMES`] frames,
/// each branch over a whole run of outputs at once ([`raise_to_branch`], on the widest vectors the
/// CPU has) instead of one dot product per sample and branch.
///
/// It also skips work that cannot matter to a caller that acts only on readings above a floor (a
/// limiter: readings at or below its target all ask for a gain of exactly 1). No reading of a branch
/// exceeds `G * M`, where `G` is the sum of the branch's absolute coefficients (1 to 2.7 for the
/// filters here) and `M` the largest absolute input the branch reads for it. Per span of
/// [`SPAN_FRAMES`] outputs and per branch, where that bound keeps every reading of the span at or
/// below the floor, the branch is not run over the span.
#[derive(Debug, Clone)]
pub struct ComplianceEnvelope {
    filters: Vec<BlockFilter>,
    /// How many past inputs precede the current pass in `buffer` (the filters' longest reach).
    history: usize,
    /// `history` past inputs, then up to [`CHUNK_FRAMES`] new ones.
    buffer: Vec<f32>,
    /// The largest absolute value in each block of [`BLOCK_FRAMES`] positions of `buffer`, for the
    /// current pass.
    block_peaks: Vec<f64>,
    /// The instructions [`raise_to_branch`] runs on.
    kernel: VectorKernel,
    latency_frames: usize,
}

impl ComplianceEnvelope {
    /// The block-wise counterpart of [`CompliancePeakDetector::new`] (same arguments, same readings).
    pub fn new(
        oversampling: usize,
        sample_rate_hz: u32,
    ) -> Result<Self, lathe_model::config::InvalidValue> {
        let CompliancePeakDetector {
            ideal,
            annex2,
            annex2_delay,
            libebur128,
        } = CompliancePeakDetector::new(oversampling, sample_rate_hz)?;
        let mut filters = vec![
            BlockFilter::new(&ideal.fir, 0),
            BlockFilter::new(&annex2, annex2_delay.ring.len()),
        ];
        if let Some((fir, delay)) = &libebur128 {
            filters.push(BlockFilter::new(fir, delay.ring.len()));
        }
        let history = filters.iter().map(BlockFilter::reach).max().unwrap_or(0);
        Ok(Self {
            filters,
            history,
            buffer: vec![0.0; history + CHUNK_FRAMES],
            block_peaks: vec![0.0; (history + CHUNK_FRAMES).div_ceil(BLOCK_FRAMES)],
            kernel: VectorKernel::detect(),
            latency_frames: ideal.latency_frames(),
        })
    }

    /// How many input samples a reading lags the sample it describes (as
    /// [`CompliancePeakDetector::latency_frames`]).
    pub fn latency_frames(&self) -> usize {
        self.latency_frames
    }

    /// Takes the next `input.len()` samples; raises `peaks[n]` to the reading for `input[n]`
    /// (exactly [`CompliancePeakDetector::push`]'s) wherever that reading exceeds `floor`. Readings at
    /// or below `floor` may be left out (they are, where a bound shows a branch's readings over a span
    /// all are); a floor of `f64::NEG_INFINITY` computes them all. Non-finite samples count as 0.
    ///
    /// # Panics
    /// If `peaks` is shorter than `input`.
    pub fn raise(&mut self, input: &[f32], floor: f64, peaks: &mut [f64]) {
        assert!(peaks.len() >= input.len(), "one peak per input sample");
        let floor = if floor.is_nan() {
            f64::NEG_INFINITY
        } else {
            floor
        };
        let Self {
            filters,
            history,
            buffer,
            block_peaks,
            kernel,
            ..
        } = self;
        let history = *history;
        for (input, peaks) in input
            .chunks(CHUNK_FRAMES)
            .zip(peaks.chunks_mut(CHUNK_FRAMES))
        {
            let len = input.len();
            for (slot, &x) in buffer[history..history + len].iter_mut().zip(input) {
                *slot = if x.is_finite() { x } else { 0.0 };
            }
            for (peak, block) in block_peaks
                .iter_mut()
                .zip(buffer[..history + len].chunks(BLOCK_FRAMES))
            {
                *peak = abs_max(block);
            }
            let mut loudest = [0.0; CHUNK_FRAMES / SPAN_FRAMES];
            let loudest = &mut loudest[..len.div_ceil(SPAN_FRAMES)];
            for filter in filters.iter() {
                // Output `j` of the pass reads, for tap `i`, the input `j - delay - i`, which is at
                // `history + j - delay - i` in the buffer: `newest + j - i`.
                let newest = history - filter.delay;
                let oldest = newest + 1 - filter.taps;
                for (span, loudest) in loudest.iter_mut().enumerate() {
                    // The span's readings read `buffer[oldest + start..newest + end]`; the blocks
                    // holding that range bound it (a few positions wider, never narrower).
                    let start = span * SPAN_FRAMES;
                    let end = (start + SPAN_FRAMES).min(len);
                    let blocks =
                        (oldest + start) / BLOCK_FRAMES..=(newest + end - 1) / BLOCK_FRAMES;
                    // Plain comparisons: the buffer holds no NaN.
                    *loudest = block_peaks[blocks]
                        .iter()
                        .fold(0.0, |m: f64, &p| if p > m { p } else { m });
                }
                for &tap in &filter.unit_taps {
                    let from = newest - tap;
                    for_each_run(loudest, floor / BOUND_HEADROOM, len, |run| {
                        let inputs = &buffer[from + run.start..from + run.end];
                        for (peak, &x) in peaks[run].iter_mut().zip(inputs) {
                            let value = f64::from(x.abs());
                            *peak = if value > *peak { value } else { *peak };
                        }
                    });
                }
                let branches = filter.dot_branches.chunks_exact(filter.taps);
                for (branch, &bound) in branches.zip(&filter.dot_bounds) {
                    for_each_run(loudest, floor / bound, len, |run| {
                        let src = &buffer[oldest + run.start..newest + run.end];
                        raise_to_branch(*kernel, branch, src, &mut peaks[run]);
                    });
                }
            }
            buffer.copy_within(len..len + history, 0);
        }
    }

    /// Forgets all past input (as if freshly built).
    pub fn reset(&mut self) {
        self.buffer.fill(0.0);
    }
}

/// Calls `f` with each longest range of outputs (of a pass of `len`) made of consecutive spans whose
/// largest input, `loudest[span]`, exceeds `quiet`.
fn for_each_run(
    loudest: &[f64],
    quiet: f64,
    len: usize,
    mut f: impl FnMut(std::ops::Range<usize>),
) {
    let mut run_start = None;
    for (span, &loudest) in loudest.iter().enumerate() {
        match (loudest > quiet, run_start) {
            (true, None) => run_start = Some(span * SPAN_FRAMES),
            (false, Some(start)) => {
                f(start..span * SPAN_FRAMES);
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        f(start..len);
    }
}

/// The largest absolute value in `values` (0 if empty), which hold no NaN (so plain comparisons,
/// not `f32::max`'s NaN handling, find it).
fn abs_max(values: &[f32]) -> f64 {
    let larger = |m: f32, x: f32| if x > m { x } else { m };
    let mut lanes = [0.0_f32; 4];
    let mut chunks = values.chunks_exact(4);
    for chunk in &mut chunks {
        for k in 0..4 {
            lanes[k] = larger(lanes[k], chunk[k].abs());
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0, |m: f32, x| larger(m, x.abs()));
    f64::from(lanes.into_iter().fold(tail, larger))
}

/// Raises `peaks[j]` to `|Σ_i coeffs[i] · src[j + taps - 1 - i]|` for every `j`, where `src` holds
/// `peaks.len() + taps - 1` inputs, oldest first, and `taps = coeffs.len()` is a multiple of 4; on
/// the widest vectors the CPU has (see [`VectorKernel`]).
///
/// Every sum is formed exactly as [`dot`] forms it on the sample-by-sample path (four partial sums
/// over the taps `i ≡ k (mod 4)`, each in increasing `i` from 0.0, then `(s0 + s2) + (s1 + s3)`), so
/// every value is bit-identical to that path's, on every kernel.
fn raise_to_branch(kernel: VectorKernel, coeffs: &[f32], src: &[f32], peaks: &mut [f64]) {
    debug_assert!(coeffs.len() % 4 == 0 && src.len() == peaks.len() + coeffs.len() - 1);
    match kernel {
        VectorKernel::Baseline => raise_to_branch_in::<8>(coeffs, src, peaks),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `VectorKernel` names a kernel only where the CPU has its features (AVX2 here), the
        // one requirement of `raise_to_branch_avx2`.
        VectorKernel::Avx2 => unsafe { raise_to_branch_avx2(coeffs, src, peaks) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: as above, for AVX-512F and `raise_to_branch_avx512`.
        VectorKernel::Avx512 => unsafe { raise_to_branch_avx512(coeffs, src, peaks) },
    }
}

/// [`raise_to_branch`] compiled for 256-bit vectors, 16 outputs at a time (eight registers of
/// partial sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn raise_to_branch_avx2(coeffs: &[f32], src: &[f32], peaks: &mut [f64]) {
    raise_to_branch_in::<16>(coeffs, src, peaks);
}

/// [`raise_to_branch`] compiled for 512-bit vectors, 32 outputs at a time (eight registers of
/// partial sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn raise_to_branch_avx512(coeffs: &[f32], src: &[f32], peaks: &mut [f64]) {
    raise_to_branch_in::<32>(coeffs, src, peaks);
}

/// [`raise_to_branch`], `LANES` outputs at a time: their four partial sums stay in registers while
/// the taps go by, so each tap costs one load, one multiplication and one addition per vector of
/// outputs. The last `peaks.len() % LANES` outputs one at a time, in the same order.
#[inline(always)]
fn raise_to_branch_in<const LANES: usize>(coeffs: &[f32], src: &[f32], peaks: &mut [f64]) {
    let taps = coeffs.len();
    let mut chunks = peaks.chunks_exact_mut(LANES);
    let mut start = 0;
    for peaks in &mut chunks {
        let mut sums = [[0.0f32; LANES]; 4];
        for (g, group) in coeffs.chunks_exact(4).enumerate() {
            // Unrolled over the group, so that every partial sum has a fixed register.
            for (k, (sums, &c)) in sums.iter_mut().zip(group).enumerate() {
                let from = start + taps - 1 - (4 * g + k);
                let inputs = &src[from..from + LANES];
                for (sum, &x) in sums.iter_mut().zip(inputs) {
                    *sum += c * x;
                }
            }
        }
        let [s0, s1, s2, s3] = &sums;
        for (j, peak) in peaks.iter_mut().enumerate() {
            let value = f64::from(((s0[j] + s2[j]) + (s1[j] + s3[j])).abs());
            *peak = if value > *peak { value } else { *peak };
        }
        start += LANES;
    }
    for (j, peak) in chunks.into_remainder().iter_mut().enumerate() {
        let mut sums = [0.0f32; 4];
        for (i, &c) in coeffs.iter().enumerate() {
            sums[i % 4] += c * src[start + j + taps - 1 - i];
        }
        let [s0, s1, s2, s3] = sums;
        let value = f64::from(((s0 + s2) + (s1 + s3)).abs());
        *peak = if value > *peak { value } else { *peak };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    /// The largest reading over a sine of `cycles_per_sample` (fraction of fs) and phase `phase_rad`.
    fn sine_true_peak(
        detector: &mut TruePeakDetector,
        cycles_per_sample: f64,
        phase_rad: f64,
        amplitude: f64,
        frames: usize,
    ) -> f64 {
        // A sine switched on abruptly genuinely overshoots at its onset (its band-limited
        // reconstruction rings), so the readings of the first 100 frames are not the sine's.
        (0..frames)
            .map(|n| {
                let x = amplitude * (2.0 * PI * cycles_per_sample * n as f64 + phase_rad).sin();
                detector.push(f64::from(x as f32))
            })
            .skip(100)
            .fold(0.0, f64::max)
    }

    #[test]
    fn tech3341_cases_15_to_18_read_minus_6_dbtp() {
        // (case, frequency as a fraction of fs, phase in degrees, peak amplitude)
        let cases = [
            (15, 0.25, 0.0, 0.5),
            (16, 0.25, 45.0, 0.5),
            (17, 1.0 / 6.0, 60.0, 0.5),
            (18, 0.125, 67.5, 0.5),
        ];
        for oversampling in [4, 8] {
            for (case, f, phase_deg, amplitude) in cases {
                let mut detector = TruePeakDetector::new(oversampling).unwrap();
                let tp = sine_true_peak(
                    &mut detector,
                    f,
                    f64::to_radians(phase_deg),
                    amplitude,
                    48_000,
                );
                let tp_db = db(tp);
                eprintln!("case {case} at {oversampling}x: {tp_db:.4} dBTP");
                assert!(
                    (tp_db - -6.0).abs() <= 0.1,
                    "case {case} at {oversampling}x: {tp_db:.3} dBTP"
                );
            }
        }
    }

    #[test]
    fn sine_at_045_fs_reads_within_02_db_at_8x() {
        for phase_deg in [0.0, 17.0, 45.0, 90.0, 131.0] {
            let mut detector = TruePeakDetector::new(8).unwrap();
            let tp = sine_true_peak(&mut detector, 0.45, f64::to_radians(phase_deg), 0.7, 20_000);
            let error_db = db(tp / 0.7);
            eprintln!("0.45 fs at {phase_deg}°, 8x: {error_db:+.4} dB");
            assert!(error_db.abs() <= 0.2, "phase {phase_deg}: {error_db:.3} dB");
        }
    }

    #[test]
    fn sample_peak_is_always_included() {
        let input = crate::testkit::noise(1, 4096, 48_000, 1.0, 7);
        let mut detector = TruePeakDetector::new(4).unwrap();
        let latency = detector.latency_frames();
        let samples = input.channel(0);
        for n in 0..samples.len() {
            let reading = detector.push(f64::from(samples[n]));
            if n >= latency {
                assert!(reading >= f64::from(samples[n - latency].abs()));
            }
        }
    }

    #[test]
    fn impulse_reads_one_at_the_documented_latency() {
        let mut detector = TruePeakDetector::new(8).unwrap();
        let latency = detector.latency_frames();
        let readings: Vec<f64> = (0..100)
            .map(|n| detector.push(if n == 0 { 1.0 } else { 0.0 }))
            .collect();
        // The impulse's own point reads 1; the interval before it ends 1/8 of a sample before it
        // (sinc(1/8) = 0.97); everything earlier or later reads the sinc's side lobes only.
        assert_eq!(readings[latency], 1.0);
        assert!(readings[latency - 1] < 1.0);
        for (n, &r) in readings.iter().enumerate() {
            if n + 1 < latency || n > latency {
                assert!(r < 0.25, "reading {n}: {r}");
            }
        }
    }

    #[test]
    fn reset_makes_readings_repeatable() {
        let input = crate::testkit::noise(1, 2000, 44_100, 0.9, 3);
        let mut detector = CompliancePeakDetector::new(4, 44_100).unwrap();
        let first: Vec<f64> = input
            .channel(0)
            .iter()
            .map(|&x| detector.push(x.into()))
            .collect();
        detector.reset();
        let second: Vec<f64> = input
            .channel(0)
            .iter()
            .map(|&x| detector.push(x.into()))
            .collect();
        assert_eq!(first, second);
    }

    #[test]
    fn compliance_reading_is_at_least_ebur128_and_ideal() {
        for (rate, seed) in [(44_100, 1), (48_000, 2), (96_000, 3)] {
            let input = crate::testkit::noise(1, rate as usize / 2, rate, 1.0, seed);
            let mut meter = ebur128::EbuR128::new(1, rate, ebur128::Mode::TRUE_PEAK).unwrap();
            meter.add_frames_planar_f32(&[input.channel(0)]).unwrap();
            let reference = meter.true_peak(0).unwrap();
            let mut ideal = TruePeakDetector::new(8).unwrap();
            let mut compliance = CompliancePeakDetector::new(8, rate).unwrap();
            let (mut tp_ideal, mut tp_compliance) = (0.0_f64, 0.0_f64);
            for &x in input.channel(0) {
                tp_ideal = tp_ideal.max(ideal.push(x.into()));
                tp_compliance = tp_compliance.max(compliance.push(x.into()));
            }
            assert!(tp_compliance >= tp_ideal);
            assert!(
                tp_compliance >= reference * (1.0 - 1e-6),
                "{tp_compliance} < {reference}"
            );
        }
    }

    /// Test signals for the block-wise envelope: noise at three levels, a near-Nyquist sine, sparse
    /// impulses over silence (quiet spans and loud ones), and full-scale square bursts.
    fn envelope_signals(rate: u32, frames: usize) -> Vec<(&'static str, Vec<f32>)> {
        let noise = |amplitude, seed| crate::testkit::noise(1, frames, rate, amplitude, seed);
        let mut impulses = vec![0.0_f32; frames];
        for (k, n) in (37..frames).step_by(641).enumerate() {
            impulses[n] = if k % 2 == 0 { 0.9 } else { -1.3 };
        }
        let squares: Vec<f32> = (0..frames)
            .map(|n| match (n / 500) % 3 {
                0 => 0.0,
                1 if (n / 7) % 2 == 0 => 1.0,
                1 => -1.0,
                _ => 0.01,
            })
            .collect();
        let sine: Vec<f32> = (0..frames)
            .map(|n| (1.2 * (2.0 * PI * 0.47 * n as f64 + 0.3).sin()) as f32)
            .collect();
        vec![
            ("loud noise", noise(2.0, 1).channel(0).to_vec()),
            ("noise", noise(0.5, 2).channel(0).to_vec()),
            ("quiet noise", noise(0.05, 3).channel(0).to_vec()),
            ("sine 0.47 fs", sine),
            ("impulses", impulses),
            ("square bursts", squares),
        ]
    }

    /// The readings of the sample-by-sample detector for `input`.
    fn reference_readings(oversampling: usize, rate: u32, input: &[f32]) -> Vec<f64> {
        let mut detector = CompliancePeakDetector::new(oversampling, rate).unwrap();
        input.iter().map(|&x| detector.push(x.into())).collect()
    }

    /// The envelope's readings for `input` given in blocks of `block` frames.
    fn envelope_readings(
        envelope: &mut ComplianceEnvelope,
        input: &[f32],
        block: usize,
        floor: f64,
    ) -> Vec<f64> {
        let mut peaks = vec![0.0; input.len()];
        for (input, peaks) in input.chunks(block).zip(peaks.chunks_mut(block)) {
            envelope.raise(input, floor, peaks);
        }
        peaks
    }

    /// On every vector kernel this CPU runs (see [`VectorKernel`]), in blocks of any size.
    #[test]
    fn envelope_is_bit_identical_to_the_sample_by_sample_detector() {
        let kernels = VectorKernel::available();
        eprintln!("envelope kernels on this CPU: {kernels:?}");
        for rate in [44_100, 96_000, 192_000] {
            for oversampling in [4, 8] {
                for (name, input) in envelope_signals(rate, 3000) {
                    let reference = reference_readings(oversampling, rate, &input);
                    let mut envelope = ComplianceEnvelope::new(oversampling, rate).unwrap();
                    assert_eq!(envelope.latency_frames(), 24);
                    for (&kernel, block) in kernels
                        .iter()
                        .flat_map(|k| [1, 3, 13, 256, 700, 3000].into_iter().map(move |b| (k, b)))
                    {
                        envelope.kernel = kernel;
                        envelope.reset();
                        let readings =
                            envelope_readings(&mut envelope, &input, block, f64::NEG_INFINITY);
                        assert!(
                            readings == reference,
                            "{name} at {rate} Hz, {oversampling}x, blocks of {block}, {kernel:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn envelope_keeps_every_reading_above_the_floor() {
        let rate = 48_000;
        let mut skipped = 0;
        for floor in [0.0, 0.3, 0.891, 2.0] {
            for (name, input) in envelope_signals(rate, 3000) {
                let reference = reference_readings(4, rate, &input);
                let mut envelope = ComplianceEnvelope::new(4, rate).unwrap();
                let readings = envelope_readings(&mut envelope, &input, 1024, floor);
                for (n, (&got, &want)) in readings.iter().zip(&reference).enumerate() {
                    if want > floor {
                        assert_eq!(got, want, "{name}, floor {floor}, sample {n}");
                    } else {
                        assert!(got <= floor, "{name}, floor {floor}, sample {n}: {got}");
                        skipped += usize::from(got != want);
                    }
                }
            }
        }
        // The bound does spare work: many readings at or below the floor were never computed.
        assert!(skipped > 10_000, "{skipped}");
    }

    #[test]
    fn envelope_reads_non_finite_samples_as_silence() {
        let mut input = crate::testkit::noise(1, 600, 44_100, 1.0, 4)
            .channel(0)
            .to_vec();
        let mut zeroed = input.clone();
        for (n, bad) in [
            (100, f32::NAN),
            (200, f32::INFINITY),
            (300, f32::NEG_INFINITY),
        ] {
            input[n] = bad;
            zeroed[n] = 0.0;
        }
        let mut envelope = ComplianceEnvelope::new(4, 44_100).unwrap();
        let readings = envelope_readings(&mut envelope, &input, 128, f64::NEG_INFINITY);
        assert_eq!(readings, reference_readings(4, 44_100, &zeroed));
    }

    #[test]
    fn rejects_oversampling_out_of_range() {
        assert!(TruePeakDetector::new(1).is_err());
        assert!(TruePeakDetector::new(32).is_err());
        assert!(CompliancePeakDetector::new(0, 48_000).is_err());
        assert!(ComplianceEnvelope::new(32, 48_000).is_err());
    }
}
