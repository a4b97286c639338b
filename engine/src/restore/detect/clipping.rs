//! Clipping: runs of equal samples at the track's peak (hard clipping) and samples piled up just
//! under it (soft, tanh-like clipping).
//!
//! The peak is not known until the end, so runs are kept only at the highest magnitude a run has
//! had so far, and sample magnitudes go into a histogram in dBFS steps of [`STEP_DB`]; the pile-up
//! is read from it against the final peak.

use lathe_model::defects::{Clipping, FLOOR_DBFS, MIN_CLIPPED_RUN};

/// Histogram step, dB.
const STEP_DB: f64 = 0.1;
/// Lowest magnitude the histogram holds, dBFS.
const LOWEST_DB: f64 = -60.0;
/// Histogram bins: `LOWEST_DB` to +20 dBFS.
const HISTOGRAM_BINS: usize = 800;
/// The pile-up compares the top `PILE_DB` under the peak...
const PILE_DB: f64 = 0.5;
/// ... with the same width this far under it, dB.
const REFERENCE_DB: f64 = 6.0;

/// One channel's run of equal samples.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    value: f32,
    length: usize,
}

/// Streaming clipping meter.
#[derive(Debug, Clone)]
pub(super) struct ClippingMeter {
    runs: Vec<Run>,
    peak: f32,
    /// The magnitude the counted runs sit at, their number and the longest.
    runs_at: f32,
    run_count: u64,
    longest: usize,
    histogram: Vec<u64>,
}

impl ClippingMeter {
    pub(super) fn new(channel_count: usize) -> Self {
        Self {
            runs: vec![Run::default(); channel_count],
            peak: 0.0,
            runs_at: 0.0,
            run_count: 0,
            longest: 0,
            histogram: vec![0; HISTOGRAM_BINS],
        }
    }

    /// Adds one channel's samples.
    pub(super) fn add(&mut self, channel: usize, samples: &[f32]) {
        let mut run = self.runs[channel];
        for &x in samples {
            let magnitude = x.abs();
            self.peak = self.peak.max(magnitude);
            if magnitude > 0.0 {
                let level = 20.0 * f64::from(magnitude).log10();
                let bin = ((level - LOWEST_DB) / STEP_DB).floor();
                if bin >= 0.0 {
                    self.histogram[(bin as usize).min(HISTOGRAM_BINS - 1)] += 1;
                }
            }
            if x == run.value {
                run.length += 1;
            } else {
                self.close(run);
                run = Run {
                    value: x,
                    length: 1,
                };
            }
        }
        self.runs[channel] = run;
    }

    /// Counts a finished run if it is long enough and at the highest level seen in a run.
    fn close(&mut self, run: Run) {
        let magnitude = run.value.abs();
        if run.length < MIN_CLIPPED_RUN || magnitude == 0.0 || magnitude < self.runs_at {
            return;
        }
        if magnitude > self.runs_at {
            self.runs_at = magnitude;
            self.run_count = 0;
            self.longest = 0;
        }
        self.run_count += 1;
        self.longest = self.longest.max(run.length);
    }

    /// The clipping of everything added, over `frames` frames of `channel_count` channels at
    /// `sample_rate_hz`.
    pub(super) fn finish(&self, frames: u64, sample_rate_hz: u32) -> Clipping {
        let mut meter = self.clone();
        for run in self.runs.clone() {
            meter.close(run);
        }
        // Runs count only at the peak itself.
        let (runs, longest) = if meter.runs_at > 0.0 && meter.runs_at == meter.peak {
            (meter.run_count, meter.longest)
        } else {
            (0, 0)
        };
        let peak_dbfs = if self.peak > 0.0 {
            20.0 * f64::from(self.peak).log10()
        } else {
            FLOOR_DBFS
        };
        let count_between = |from_db: f64, to_db: f64| -> u64 {
            let bin = |db: f64| ((db - LOWEST_DB) / STEP_DB).round().max(0.0) as usize;
            let (from, to) = (bin(from_db), bin(to_db).min(HISTOGRAM_BINS));
            self.histogram[from.min(to)..to].iter().sum()
        };
        let top = count_between(peak_dbfs - PILE_DB, peak_dbfs + 2.0 * STEP_DB);
        let reference = count_between(peak_dbfs - REFERENCE_DB - PILE_DB, peak_dbfs - REFERENCE_DB);
        let minutes = frames as f64 / f64::from(sample_rate_hz.max(1)) / 60.0;
        let channels = self.runs.len().max(1) as f64;
        Clipping {
            peak_dbfs,
            runs,
            runs_per_min: if minutes > 0.0 {
                runs as f64 / minutes / channels
            } else {
                0.0
            },
            longest_run: longest,
            pile_up: top as f64 / reference.max(1) as f64,
        }
    }
}
