//! The noise floor by minimum statistics of a short-time spectrum in octave bands.
//!
//! One frame of [`FFT`] samples in [`EVERY`] is transformed (Hann window, every channel); each
//! octave band's mean-square level in that frame goes into a histogram of [`HISTOGRAM_BINS`] steps
//! of [`STEP_DB`], so memory does not grow with the track. The floor of a band is a low quantile
//! ([`FLOOR_QUANTILE`]) of its levels, and how far its median rises above the floor says whether
//! the floor is a steady noise or only the programme's quiet moments.

use lathe_model::defects::{FLOOR_DBFS, NoiseBand, NoiseFloor, NoiseShape};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

use crate::audio::AudioBlock;

/// Frame length, samples.
const FFT: usize = 1024;
/// One frame in this many is transformed.
const EVERY: u64 = 2;
/// Histogram step, dB.
const STEP_DB: f64 = 0.5;
/// Lowest level the histograms hold, dBFS.
const LOWEST_DB: f64 = -180.0;
/// Histogram bins: `LOWEST_DB` to +20 dBFS.
const HISTOGRAM_BINS: usize = 400;
/// The quantile of a band's levels taken as its floor.
const FLOOR_QUANTILE: f64 = 0.1;
/// Frames quieter than this over the whole band are digital silence and not counted, dBFS.
const SILENT_FRAME_DBFS: f64 = -140.0;
/// Octave band centres, Hz.
const CENTRES_HZ: [f64; 9] = [
    62.5, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0,
];
/// The steadiness of the floor is judged in the bands from this centre up, Hz.
const STEADY_FROM_HZ: f64 = 2000.0;

/// One octave band: its FFT bins and its level histogram.
#[derive(Debug, Clone)]
struct Band {
    centre_hz: f64,
    bins: std::ops::Range<usize>,
    /// Width of the bins, Hz.
    width_hz: f64,
    histogram: Vec<u32>,
    /// This frame's mean square.
    power: f64,
}

/// Streaming noise-floor meter.
pub(super) struct NoiseFloorMeter {
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// Power normalisation: a bin's `|X|^2` times this is its share of the mean square.
    scale: f64,
    frames: Vec<Vec<f64>>,
    spectrum: Vec<Complex<f64>>,
    input: Vec<f64>,
    scratch: Vec<Complex<f64>>,
    bands: Vec<Band>,
    filled: usize,
    frame_index: u64,
    /// Sum of the sounding frames' mean squares, and their number.
    power_sum: f64,
    sounding: u64,
}

impl NoiseFloorMeter {
    pub(super) fn new(channel_count: usize, sample_rate_hz: u32) -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(FFT);
        let window: Vec<f64> = (0..FFT)
            .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / FFT as f64).cos())
            .collect();
        let window_power: f64 = window.iter().map(|w| w * w).sum();
        let bin_hz = f64::from(sample_rate_hz) / FFT as f64;
        let nyquist_bin = FFT / 2;
        let bands = CENTRES_HZ
            .iter()
            .filter_map(|&centre_hz| {
                let lo = ((centre_hz / 2f64.sqrt() / bin_hz).round() as usize).max(1);
                let hi = ((centre_hz * 2f64.sqrt() / bin_hz).round() as usize).min(nyquist_bin);
                (hi > lo).then(|| Band {
                    centre_hz,
                    bins: lo..hi,
                    width_hz: (hi - lo) as f64 * bin_hz,
                    histogram: vec![0; HISTOGRAM_BINS],
                    power: 0.0,
                })
            })
            .collect();
        Self {
            scratch: fft.make_scratch_vec(),
            spectrum: fft.make_output_vec(),
            input: vec![0.0; FFT],
            fft,
            window,
            scale: 2.0 / (FFT as f64 * window_power * channel_count.max(1) as f64),
            frames: vec![Vec::with_capacity(FFT); channel_count],
            bands,
            filled: 0,
            frame_index: 0,
            power_sum: 0.0,
            sounding: 0,
        }
    }

    /// Adds the valid frames of `block`.
    pub(super) fn add(&mut self, block: &AudioBlock) {
        let frames = block.frames();
        let mut at = 0;
        while at < frames {
            let take = (FFT - self.filled).min(frames - at);
            if self.frame_index % EVERY == 0 {
                for (frame, channel) in self.frames.iter_mut().zip(block.channels()) {
                    frame.extend(channel[at..at + take].iter().map(|&x| f64::from(x)));
                }
            }
            self.filled += take;
            at += take;
            if self.filled == FFT {
                if self.frame_index % EVERY == 0 {
                    self.transform();
                }
                self.filled = 0;
                self.frame_index += 1;
            }
        }
    }

    fn transform(&mut self) {
        for band in &mut self.bands {
            band.power = 0.0;
        }
        for frame in &mut self.frames {
            for ((i, &x), &w) in self.input.iter_mut().zip(frame.iter()).zip(&self.window) {
                *i = x * w;
            }
            frame.clear();
            // Lengths are the plan's own, so the transform cannot fail.
            if self
                .fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
                .is_err()
            {
                return;
            }
            for band in &mut self.bands {
                band.power += self.spectrum[band.bins.clone()]
                    .iter()
                    .map(Complex::norm_sqr)
                    .sum::<f64>();
            }
        }
        let total: f64 = self.bands.iter().map(|b| b.power * self.scale).sum();
        if db(total) < SILENT_FRAME_DBFS {
            return;
        }
        self.power_sum += total;
        self.sounding += 1;
        for band in &mut self.bands {
            let level = db(band.power * self.scale);
            let bin = ((level - LOWEST_DB) / STEP_DB).floor();
            band.histogram[bin.clamp(0.0, (HISTOGRAM_BINS - 1) as f64) as usize] += 1;
        }
    }

    /// The floor of everything added.
    pub(super) fn finish(&self) -> NoiseFloor {
        if self.sounding == 0 {
            return NoiseFloor {
                level_dbfs: FLOOR_DBFS,
                snr_db: 0.0,
                bands: Vec::new(),
                slope_db_per_octave: 0.0,
                high_lift_db: 0.0,
                shape: NoiseShape::Other,
                spread_db: 0.0,
            };
        }
        let floors: Vec<f64> = self
            .bands
            .iter()
            .map(|b| quantile(&b.histogram, self.sounding, FLOOR_QUANTILE))
            .collect();
        let spread_db = self
            .bands
            .iter()
            .zip(&floors)
            .filter(|(b, _)| b.centre_hz >= STEADY_FROM_HZ)
            .map(|(b, floor)| quantile(&b.histogram, self.sounding, 0.5) - floor)
            .fold(f64::INFINITY, f64::min);
        let floor_power: f64 = floors.iter().map(|&f| undb(f)).sum();
        let level_dbfs = db(floor_power).max(FLOOR_DBFS);
        // Spectral density of the floor, dB per Hz, against octaves.
        let density: Vec<(f64, f64)> = self
            .bands
            .iter()
            .zip(&floors)
            .map(|(b, &floor)| (b.centre_hz.log2(), floor - 10.0 * b.width_hz.log10()))
            .collect();
        let slope_db_per_octave = slope(
            density
                .iter()
                .filter(|(octave, _)| *octave >= 250f64.log2() - 1e-9),
        );
        let mean_of = |from_hz: f64, to_hz: f64| {
            let picked: Vec<f64> = density
                .iter()
                .filter(|(o, _)| (from_hz.log2() - 1e-9..=to_hz.log2() + 1e-9).contains(o))
                .map(|(_, d)| *d)
                .collect();
            (!picked.is_empty()).then(|| picked.iter().sum::<f64>() / picked.len() as f64)
        };
        let high_lift_db = match (mean_of(4000.0, 16000.0), mean_of(500.0, 2000.0)) {
            (Some(high), Some(mid)) => high - mid,
            _ => 0.0,
        };
        NoiseFloor {
            level_dbfs,
            snr_db: db(self.power_sum / self.sounding as f64) - level_dbfs,
            bands: self
                .bands
                .iter()
                .zip(&floors)
                .map(|(b, &floor)| NoiseBand {
                    centre_hz: b.centre_hz,
                    level_dbfs: floor.max(FLOOR_DBFS),
                })
                .collect(),
            slope_db_per_octave,
            high_lift_db,
            shape: NoiseShape::of(slope_db_per_octave, high_lift_db),
            spread_db: if spread_db.is_finite() {
                spread_db
            } else {
                0.0
            },
        }
    }
}

/// The level under which `q` of the `count` frames of `histogram` lie, dB (the bin's centre).
fn quantile(histogram: &[u32], count: u64, q: f64) -> f64 {
    let wanted = (q * count as f64).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (i, &n) in histogram.iter().enumerate() {
        seen += u64::from(n);
        if seen >= wanted {
            return LOWEST_DB + (i as f64 + 0.5) * STEP_DB;
        }
    }
    LOWEST_DB + HISTOGRAM_BINS as f64 * STEP_DB
}

/// The least-squares slope of `(x, y)` points (0 for fewer than two).
fn slope<'a>(points: impl Iterator<Item = &'a (f64, f64)> + Clone) -> f64 {
    let n = points.clone().count() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = points
        .clone()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = points.fold((0.0, 0.0), |(sxy, sxx), p| {
        (sxy + (p.0 - mx) * (p.1 - my), sxx + (p.0 - mx).powi(2))
    });
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

fn db(power: f64) -> f64 {
    10.0 * power.max(1e-30).log10()
}

fn undb(level: f64) -> f64 {
    10f64.powf(level / 10.0)
}
