//! BS.1770 / EBU R128 loudness and true-peak measurement, on top of the `ebur128` crate.
//!
//! [`LoudnessMeter`] is streaming: it holds the gating-block history (8 bytes per 100 ms) and nothing
//! that grows with the audio itself. It tracks the maximum momentary and short-term loudness by reading
//! the meter at every 100 ms boundary of the programme (EBU Tech 3341 asks for at least 10 updates a
//! second), independent of how the caller cuts the audio into blocks.
//!
//! True peak is read with lathe's own 4x windowed-sinc interpolator
//! ([`crate::master::oversample::TruePeakDetector`], 48 taps a phase) rather than `ebur128`'s: the
//! latter over-reads an fs/6 sine by 0.34 dB, outside EBU Tech 3341 case 17's tolerance.

use ebur128::{Channel, EbuR128, Mode};

use crate::audio::AudioBlock;
use crate::master::oversample::TruePeakDetector;

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
    meter: EbuR128,
    hop_frames: f64,
    frames_seen: u64,
    next_update_frame: u64,
    updates: u64,
    max_momentary: f64,
    max_short_term: f64,
    peak_meters: Vec<TruePeakMeter>,
    /// Weighted energy of the last 30 sub-blocks of 100 ms (a ring indexed by update count).
    sub_block_energy: [f64; SHORT_TERM_SUB_BLOCKS],
    full: bool,
}

/// 100 ms sub-blocks in the momentary (400 ms) window.
const MOMENTARY_SUB_BLOCKS: usize = 4;
/// 100 ms sub-blocks in the short-term (3 s) window.
const SHORT_TERM_SUB_BLOCKS: usize = 30;

/// Oversampling of the true-peak reading (BS.1770-4 asks for at least 4x at 48 kHz).
const TRUE_PEAK_OVERSAMPLING: usize = 4;

/// The BS.1770 channel roles for a WAV-ordered layout of `channel_count` channels: LFE is excluded,
/// surround channels get the 1.41 weight.
fn channel_map(channel_count: usize) -> Vec<Channel> {
    use Channel::{Center, Left, LeftSurround, Right, RightSurround, Unused};
    match channel_count {
        1 => vec![Center],
        2 => vec![Left, Right],
        3 => vec![Left, Right, Center],
        4 => vec![Left, Right, LeftSurround, RightSurround],
        5 => vec![Left, Right, Center, LeftSurround, RightSurround],
        6 => vec![Left, Right, Center, Unused, LeftSurround, RightSurround],
        7 => vec![
            Left,
            Right,
            Center,
            Unused,
            LeftSurround,
            RightSurround,
            Center,
        ],
        _ => {
            let mut map = vec![
                Left,
                Right,
                Center,
                Unused,
                LeftSurround,
                RightSurround,
                LeftSurround,
                RightSurround,
            ];
            map.resize(channel_count, Unused);
            map
        }
    }
}

/// Frames of a span the [`TruePeakMeter`] computes or skips as a whole.
pub const TRUE_PEAK_SPAN_FRAMES: usize = 256;

/// Block-wise true-peak reading of one channel: the interpolator of
/// [`crate::master::oversample::TruePeakDetector`] evaluated a whole block at a time in `f32` (one
/// multiply-add per tap over a contiguous run of samples, which the compiler vectorises), for meters
/// that need only the maximum, not a per-sample envelope.
///
/// Spans that cannot raise the reading are skipped: no interpolated point can exceed the largest
/// input sample it is made from times the largest absolute coefficient sum of a branch, so a span of
/// [`TRUE_PEAK_SPAN_FRAMES`] frames whose inputs stay under `peak / gain_bound` is not computed. The
/// reading is the same as computing every point; on a master most spans sit a few dB under its peak.
#[derive(Debug, Clone)]
pub struct TruePeakMeter {
    /// Non-trivial branches; coefficient `i` multiplies the input `i` samples before the newest.
    branches: Vec<Vec<f32>>,
    /// The largest sum of absolute coefficients of any branch, with a margin for `f32` rounding.
    gain_bound: f32,
    taps: usize,
    /// The last `taps - 1` samples, then the current block.
    buffer: Vec<f32>,
    points: Vec<f32>,
    peak: f32,
}

impl TruePeakMeter {
    /// A meter oversampling `oversampling` times (2 to 16).
    pub fn new(oversampling: usize) -> Result<Self, crate::config::InvalidValue> {
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
            taps,
            buffer: vec![0.0; taps - 1],
            points: vec![0.0; TRUE_PEAK_SPAN_FRAMES],
            peak: 0.0,
        })
    }

    /// Adds consecutive samples.
    pub fn add(&mut self, samples: &[f32]) {
        let history = self.taps - 1;
        self.buffer.truncate(history);
        self.buffer.extend_from_slice(samples);
        let mut peak = samples.iter().fold(self.peak, |p, x| p.max(x.abs()));
        let mut start = 0;
        while start < samples.len() {
            let len = TRUE_PEAK_SPAN_FRAMES.min(samples.len() - start);
            // Points `start..start + len` are made from `buffer[start..start + len + history]`.
            let inputs = &self.buffer[start..start + len + history];
            let loudest = inputs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            if loudest * self.gain_bound > peak {
                let points = &mut self.points[..len];
                for branch in &self.branches {
                    points.fill(0.0);
                    for (i, &c) in branch.iter().enumerate() {
                        multiply_add(points, &inputs[history - i..history - i + len], c);
                    }
                    peak = points.iter().fold(peak, |p, x| p.max(x.abs()));
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

/// `points[n] += c * input[n]`: separate slices as arguments let the compiler vectorise it.
#[inline(never)]
fn multiply_add(points: &mut [f32], input: &[f32], c: f32) {
    let mut points = points.chunks_exact_mut(8);
    let mut input = input.chunks_exact(8);
    for (p, x) in (&mut points).zip(&mut input) {
        for k in 0..8 {
            p[k] += c * x[k];
        }
    }
    for (p, x) in points.into_remainder().iter_mut().zip(input.remainder()) {
        *p += c * x;
    }
}

impl LoudnessMeter {
    /// A meter for `channel_count` channels (WAV channel order) at `sample_rate_hz`.
    ///
    /// # Panics
    /// If the channel count or rate is outside what `ebur128` accepts (the decoder refuses such files
    /// before a meter is built).
    pub fn new(channel_count: usize, sample_rate_hz: u32) -> Self {
        Self::build(channel_count, sample_rate_hz, true)
    }

    /// A cheaper meter that reads only integrated loudness and loudness range (the figures it cannot
    /// read are `None`): for passes that only need to know how loud a render is.
    pub fn integrated_only(channel_count: usize, sample_rate_hz: u32) -> Self {
        Self::build(channel_count, sample_rate_hz, false)
    }

    #[allow(clippy::expect_used)]
    fn build(channel_count: usize, sample_rate_hz: u32, full: bool) -> Self {
        let mode = if full {
            Mode::I | Mode::LRA | Mode::M | Mode::S
        } else {
            Mode::I | Mode::LRA
        };
        let mut meter = EbuR128::new(channel_count as u32, sample_rate_hz, mode)
            .expect("the decoder only admits 1-8 channels at 8-384 kHz");
        meter
            .set_channel_map(&channel_map(channel_count))
            .expect("the channel map has one entry per channel");
        let hop_frames = f64::from(sample_rate_hz) / 10.0;
        Self {
            meter,
            hop_frames,
            frames_seen: 0,
            next_update_frame: hop_frames.round() as u64,
            updates: 0,
            max_momentary: f64::NEG_INFINITY,
            max_short_term: f64::NEG_INFINITY,
            peak_meters: if full {
                vec![
                    TruePeakMeter::new(TRUE_PEAK_OVERSAMPLING)
                        .expect("4x is a supported oversampling");
                    channel_count
                ]
            } else {
                Vec::new()
            },
            full,
            sub_block_energy: [0.0; SHORT_TERM_SUB_BLOCKS],
        }
    }

    /// Adds the valid frames of `block`.
    pub fn add(&mut self, block: &AudioBlock) {
        for (meter, channel) in self.peak_meters.iter_mut().zip(block.channels()) {
            meter.add(channel);
        }
        if !self.full {
            self.add_span(block, 0, block.frames());
            return;
        }
        let mut start = 0;
        while start < block.frames() {
            let until_update = (self.next_update_frame - self.frames_seen) as usize;
            let end = (start + until_update).min(block.frames());
            self.add_span(block, start, end);
            self.frames_seen += (end - start) as u64;
            if self.frames_seen == self.next_update_frame {
                self.update_maxima();
            }
            start = end;
        }
    }

    fn add_span(&mut self, block: &AudioBlock, start: usize, end: usize) {
        if start == end {
            return;
        }
        let mut spans: [&[f32]; MAX_CHANNELS] = [&[]; MAX_CHANNELS];
        for (span, channel) in spans.iter_mut().zip(block.channels()) {
            *span = &channel[start..end];
        }
        // ebur128 only fails on a channel-count mismatch, which the constructor rules out.
        let _ = self
            .meter
            .add_frames_planar_f32(&spans[..block.channel_count().min(MAX_CHANNELS)]);
    }

    /// At every 100 ms boundary: reads the last 100 ms sub-block's weighted energy (one pass over
    /// 100 ms, instead of re-summing 400 ms and 3 s windows each time) and updates the momentary (4
    /// sub-blocks) and short-term (30 sub-blocks) maxima from the running sub-block energies. Before
    /// a window has filled, its missing sub-blocks count as silence, as in `ebur128`.
    fn update_maxima(&mut self) {
        self.updates += 1;
        self.next_update_frame = ((self.updates + 1) as f64 * self.hop_frames).round() as u64;
        let energy = self
            .meter
            .loudness_window(100)
            .map_or(0.0, |lufs| 10f64.powf((lufs + 0.691) / 10.0));
        let slot = (self.updates as usize - 1) % SHORT_TERM_SUB_BLOCKS;
        self.sub_block_energy[slot] = energy;
        let recent = |count: usize| -> f64 {
            (0..count)
                .map(|back| {
                    self.sub_block_energy
                        [(slot + SHORT_TERM_SUB_BLOCKS - back) % SHORT_TERM_SUB_BLOCKS]
                })
                .sum::<f64>()
                / count as f64
        };
        let loudness = |energy: f64| -0.691 + 10.0 * energy.log10();
        self.max_momentary = self
            .max_momentary
            .max(loudness(recent(MOMENTARY_SUB_BLOCKS)));
        self.max_short_term = self
            .max_short_term
            .max(loudness(recent(SHORT_TERM_SUB_BLOCKS)));
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
            integrated_lufs: self.meter.loudness_global().ok().and_then(finite),
            loudness_range_lu: self.meter.loudness_range().ok().and_then(finite),
            max_momentary_lufs: finite(self.max_momentary),
            max_short_term_lufs: finite(self.max_short_term),
            true_peak_dbtp: if self.full {
                finite(linear_to_db(true_peak))
            } else {
                None
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
        assert_eq!((lean.true_peak_dbtp, lean.max_momentary_lufs), (None, None));
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
