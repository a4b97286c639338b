//! Counting impulsive events (clicks and crackle) in the AR prediction residual.
//!
//! Each channel is cut into segments of [`SEGMENT`] samples on a fixed grid; an AR model of order
//! [`ORDER`] is fitted to each (robustly: large samples clamped first) and its forward prediction
//! error computed. The error's local scale is robust: 1.4826 times the median absolute error of
//! each run of [`LOCAL`] samples, the largest of it and its two neighbours (so that the onset of a
//! drum's noise, which raises the error for many samples at once, sets its own scale and is not
//! taken for clicks). Samples whose error passes [`THRESHOLD_SIGMAS`] local scales, and
//! [`THRESHOLD_OF_RMS`] of the segment's RMS, are outliers (the second test keeps the pitch pulses
//! that the residual of a bright, periodic tone carries from counting: they are large against the
//! error, small against the signal); outliers closer than
//! [`MERGE_GAP`] samples form one event, which counts as crackle when it spans up to
//! [`SHORT_EVENT_FRAMES`] samples and as a click when longer.

use crate::restore::ar::ArModel;

/// AR model order.
const ORDER: usize = 16;
/// Samples a segment.
const SEGMENT: usize = 2048;
/// An outlier's error is at least this fraction of the segment's RMS.
const THRESHOLD_OF_RMS: f64 = 0.5;
/// Samples a local scale is measured over.
const LOCAL: usize = 128;
/// Outlier threshold, robust standard deviations of the prediction error.
const THRESHOLD_SIGMAS: f64 = 8.0;
/// Outliers this close (samples) belong to one event.
const MERGE_GAP: u64 = 4;
/// The longest event (in residual samples) counted as crackle. A single-sample impulse leaves a
/// few samples of error behind it, as the predictor carries it on.
pub(super) const SHORT_EVENT_FRAMES: u64 = 6;
/// Prediction errors smaller than this are never outliers (the last bits of 24-bit audio).
const ABSOLUTE_FLOOR: f64 = 1e-6;

/// One channel's window and its open event.
#[derive(Debug, Clone)]
struct ChannelState {
    /// `ORDER` samples of history, then the segment being filled.
    window: Vec<f64>,
    fill: usize,
    /// The track position of `window[ORDER]`.
    at: u64,
    /// The open event: first and last outlier.
    open: Option<(u64, u64)>,
    clicks: u64,
    crackles: u64,
}

/// Streaming click and crackle counter.
#[derive(Debug, Clone)]
pub(super) struct ImpulseCounter {
    model: ArModel,
    channels: Vec<ChannelState>,
    residual: Vec<f64>,
    magnitudes: Vec<f64>,
    /// The median absolute error of each run of `LOCAL` samples of the segment.
    medians: Vec<f64>,
}

impl ImpulseCounter {
    pub(super) fn new(channel_count: usize) -> Self {
        Self {
            model: ArModel::new(ORDER, 1),
            channels: vec![
                ChannelState {
                    window: vec![0.0; ORDER + SEGMENT],
                    fill: ORDER,
                    at: 0,
                    open: None,
                    clicks: 0,
                    crackles: 0,
                };
                channel_count
            ],
            residual: vec![0.0; ORDER + SEGMENT],
            magnitudes: vec![0.0; LOCAL],
            medians: vec![0.0; SEGMENT / LOCAL],
        }
    }

    /// Adds one channel's samples.
    pub(super) fn add(&mut self, channel: usize, samples: &[f32]) {
        let mut pos = 0;
        while pos < samples.len() {
            let state = &mut self.channels[channel];
            let n = (ORDER + SEGMENT - state.fill).min(samples.len() - pos);
            for (w, &x) in state.window[state.fill..state.fill + n]
                .iter_mut()
                .zip(&samples[pos..pos + n])
            {
                *w = f64::from(x);
            }
            state.fill += n;
            pos += n;
            if state.fill == ORDER + SEGMENT {
                self.segment(channel);
            }
        }
    }

    /// Finds the outliers of a full segment of `channel` and moves its window on.
    fn segment(&mut self, channel: usize) {
        let state = &mut self.channels[channel];
        let window = &state.window;
        self.model.fit_robust(window);
        self.model
            .forward_residual(window, ORDER..ORDER + SEGMENT, &mut self.residual);
        for (median, run) in self
            .medians
            .iter_mut()
            .zip(self.residual[ORDER..].chunks_exact(LOCAL))
        {
            for (m, r) in self.magnitudes.iter_mut().zip(run) {
                *m = r.abs();
            }
            let (_, middle, _) = self
                .magnitudes
                .select_nth_unstable_by(LOCAL / 2, f64::total_cmp);
            *median = *middle;
        }
        let runs = self.medians.len();
        let segment = &state.window[ORDER..];
        let rms = (segment.iter().map(|x| x * x).sum::<f64>() / SEGMENT as f64).sqrt();
        let floor = (THRESHOLD_OF_RMS * rms).max(ABSOLUTE_FLOOR);
        for (i, r) in self.residual[ORDER..].iter().enumerate() {
            let k = i / LOCAL;
            let local = self.medians[k.saturating_sub(1)..(k + 2).min(runs)]
                .iter()
                .fold(0.0f64, |a, &b| a.max(b));
            let threshold = (THRESHOLD_SIGMAS * 1.4826 * local).max(floor);
            if r.abs() > threshold {
                let at = state.at + i as u64;
                state.open = match state.open {
                    Some((first, last)) if at - last <= MERGE_GAP => Some((first, at)),
                    Some(event) => {
                        count(event, &mut state.clicks, &mut state.crackles);
                        Some((at, at))
                    }
                    None => Some((at, at)),
                };
            }
        }
        state.window.copy_within(SEGMENT.., 0);
        state.fill = ORDER;
        state.at += SEGMENT as u64;
    }

    /// Clicks and crackles found so far, over all channels (an open event counted).
    pub(super) fn counts(&self) -> (u64, u64) {
        let (mut clicks, mut crackles) = (0, 0);
        for state in &self.channels {
            clicks += state.clicks;
            crackles += state.crackles;
            if let Some(event) = state.open {
                count(event, &mut clicks, &mut crackles);
            }
        }
        (clicks, crackles)
    }
}

/// Counts the event from `first` to `last` as a click or as crackle.
fn count((first, last): (u64, u64), clicks: &mut u64, crackles: &mut u64) {
    if last - first < SHORT_EVENT_FRAMES {
        *crackles += 1;
    } else {
        *clicks += 1;
    }
}
