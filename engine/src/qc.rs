//! Quality control: the analysis lathe runs on every source and every master, and on any file through
//! `lathe analyze`.
//!
//! Definitions (all documented in the report's field docs): loudness per BS.1770-4 / EBU R128 (see
//! [`crate::loudness`]); a sample counts as clipped when its magnitude reaches the 16-bit full-scale
//! code (32767/32768) or beyond; silence is anything below [`SILENCE_THRESHOLD_DBFS`] on every channel;
//! phase correlation is measured between the first two channels over the whole programme.

use std::path::Path;

use lathe_model::analysis::Analysis;
use lathe_model::plot::PlotData;

use crate::audio::AudioBlock;
use crate::decode::Decoder;
use crate::error::Result;
use crate::loudness::{LoudnessMeter, linear_to_db};
use crate::plot::{SPECTRUM_EVERY, SpectrumMeter};
use crate::restore::detect::DefectDetector;

/// Samples quieter than this on every channel count as silence (leading/trailing silence).
pub const SILENCE_THRESHOLD_DBFS: f64 = -60.0;

/// A sample at or beyond this magnitude counts as clipped: the largest positive 16-bit code.
pub const CLIP_LEVEL: f32 = 32767.0 / 32768.0;

/// Frames per block when analysing a file.
const BLOCK_FRAMES: usize = 8192;

/// Streaming analyser: feed blocks with [`Analyzer::add`], read the result with [`Analyzer::finish`].
pub struct Analyzer {
    meter: LoudnessMeter,
    sample_rate_hz: u32,
    channel_count: usize,
    frames: u64,
    sample_peak: f32,
    clipped: u64,
    sums: Vec<f64>,
    sum_lr: f64,
    sum_ll: f64,
    sum_rr: f64,
    first_sound: Option<u64>,
    last_sound: Option<u64>,
    /// The mean spectrum, when the curves for the plots are asked for ([`Analyzer::with_plot`]).
    spectrum: Option<SpectrumMeter>,
    /// The defect detector, when the defects are asked for ([`Analyzer::with_defects`]).
    defects: Option<DefectDetector>,
}

impl Analyzer {
    /// An analyser for audio of this shape.
    pub fn new(channel_count: usize, sample_rate_hz: u32) -> Self {
        Self {
            meter: LoudnessMeter::new(channel_count, sample_rate_hz),
            sample_rate_hz,
            channel_count,
            frames: 0,
            sample_peak: 0.0,
            clipped: 0,
            sums: vec![0.0; channel_count],
            sum_lr: 0.0,
            sum_ll: 0.0,
            sum_rr: 0.0,
            first_sound: None,
            last_sound: None,
            spectrum: None,
            defects: None,
        }
    }

    /// Adds the valid frames of `block`.
    pub fn add(&mut self, block: &AudioBlock) {
        self.meter.add(block);
        if let Some(spectrum) = &mut self.spectrum {
            spectrum.add(block);
        }
        if let Some(defects) = &mut self.defects {
            defects.feed(block);
        }
        let silence = crate::loudness::db_to_linear(SILENCE_THRESHOLD_DBFS) as f32;
        let mut loud_first: Option<usize> = None;
        let mut loud_last: Option<usize> = None;
        for (channel, sum) in block.channels().zip(self.sums.iter_mut()) {
            // Whole-slice folds without branches per sample (they vectorise); the searches for the
            // first and last sound stop at the first loud sample from either end.
            self.sample_peak = self.sample_peak.max(crate::loudness::sample_peak(channel));
            self.clipped += channel.iter().filter(|x| x.abs() >= CLIP_LEVEL).count() as u64;
            *sum += sum_f64(channel);
            if let Some(first) = channel.iter().position(|x| x.abs() > silence) {
                loud_first = Some(loud_first.map_or(first, |f| f.min(first)));
            }
            if let Some(last) = channel.iter().rposition(|x| x.abs() > silence) {
                loud_last = Some(loud_last.map_or(last, |l| l.max(last)));
            }
        }
        if block.channel_count() >= 2 {
            let [lr, ll, rr] = products_f64(block.channel(0), block.channel(1));
            self.sum_lr += lr;
            self.sum_ll += ll;
            self.sum_rr += rr;
        }
        if let Some(first) = loud_first {
            self.first_sound.get_or_insert(self.frames + first as u64);
        }
        if let Some(last) = loud_last {
            self.last_sound = Some(self.frames + last as u64);
        }
        self.frames += block.frames() as u64;
    }

    /// This analyser, measuring the mean spectrum as well, for [`Analyzer::plot`].
    #[must_use]
    pub fn with_plot(mut self) -> Self {
        self.spectrum = Some(SpectrumMeter::new(SPECTRUM_EVERY));
        self
    }

    /// This analyser, measuring the recording's defects as well (clicks, crackle, noise floor, hum,
    /// clipping: [`DefectDetector`]), into [`Analysis::defects`].
    #[must_use]
    pub fn with_defects(mut self) -> Self {
        self.defects = Some(DefectDetector::new(self.channel_count, self.sample_rate_hz));
        self
    }

    /// The curves for the plots so far: the short-term loudness every
    /// `lathe_model::plot::CURVE_STEP_S`, and the mean spectrum if [`Analyzer::with_plot`] asked
    /// for it (empty otherwise). Values are rounded to 0.01 dB, which no plot can show, to keep the
    /// stored reports small.
    pub fn plot(&self) -> PlotData {
        let hundredths = |values: &[f64]| -> Vec<f64> {
            values.iter().map(|v| (v * 100.0).round() / 100.0).collect()
        };
        PlotData {
            short_term_lufs: hundredths(self.meter.short_term_curve()),
            spectrum_db: self
                .spectrum
                .as_ref()
                .map(|spectrum| hundredths(&spectrum.bands_db(self.sample_rate_hz)))
                .unwrap_or_default(),
        }
    }

    /// The analysis of everything added; `path` is recorded as given.
    pub fn finish(&self, path: &Path) -> Analysis {
        let rate = f64::from(self.sample_rate_hz);
        let figures = self.meter.figures();
        let frames = self.frames.max(1) as f64;
        let dc_offset = self
            .sums
            .iter()
            .map(|s| s / frames)
            .fold(0.0, |acc: f64, m| if m.abs() > acc.abs() { m } else { acc });
        let phase_correlation = if self.channel_count < 2 {
            (self.sample_peak > 0.0).then_some(1.0)
        } else {
            let energy = (self.sum_ll * self.sum_rr).sqrt();
            (energy > 0.0).then(|| self.sum_lr / energy)
        };
        let (leading, trailing) = match (self.first_sound, self.last_sound) {
            (Some(first), Some(last)) => (first, self.frames - 1 - last),
            _ => (self.frames, self.frames),
        };
        Analysis {
            path: path.to_path_buf(),
            duration_s: self.frames as f64 / rate,
            sample_rate: self.sample_rate_hz,
            channels: self.channel_count,
            integrated_lufs: figures.integrated_lufs,
            ungated_lufs: self.meter.ungated_lufs(),
            loudness_range_lu: figures.loudness_range_lu,
            max_momentary_lufs: figures.max_momentary_lufs,
            max_short_term_lufs: figures.max_short_term_lufs,
            true_peak_dbtp: figures.true_peak_dbtp,
            sample_peak_dbfs: (self.sample_peak > 0.0)
                .then(|| linear_to_db(f64::from(self.sample_peak))),
            clipped_samples: self.clipped,
            dc_offset,
            phase_correlation,
            leading_silence_s: leading as f64 / rate,
            trailing_silence_s: trailing as f64 / rate,
            defects: self.defects.as_ref().map(DefectDetector::finish),
        }
    }
}

/// Lanes of the partial sums below: independent accumulators let the sums vectorise.
const LANES: usize = 8;

/// The sum of `samples` in `f64`, in [`LANES`] interleaved partial sums.
fn sum_f64(samples: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = samples.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// `[sum(l * r), sum(l * l), sum(r * r)]` in `f64`, in [`LANES`] interleaved partial sums.
fn products_f64(left: &[f32], right: &[f32]) -> [f64; 3] {
    let mut lanes = [[0.0f64; LANES]; 3];
    let mut rest = [0.0f64; 3];
    let (l_chunks, r_chunks) = (left.chunks_exact(LANES), right.chunks_exact(LANES));
    for (&l, &r) in l_chunks.remainder().iter().zip(r_chunks.remainder()) {
        let (l, r) = (f64::from(l), f64::from(r));
        rest[0] += l * r;
        rest[1] += l * l;
        rest[2] += r * r;
    }
    for (l, r) in l_chunks.zip(r_chunks) {
        for k in 0..LANES {
            let (l, r) = (f64::from(l[k]), f64::from(r[k]));
            lanes[0][k] += l * r;
            lanes[1][k] += l * l;
            lanes[2][k] += r * r;
        }
    }
    let mut sums = rest;
    for (sum, lanes) in sums.iter_mut().zip(&lanes) {
        *sum += lanes.iter().sum::<f64>();
    }
    sums
}

/// Decodes `path` and analyses it, in bounded memory.
pub fn analyze_file(path: &Path) -> Result<Analysis> {
    analyze_file_measuring(path, false)
}

/// Decodes `path` and analyses it, its defects included ([`Analysis::defects`]), in bounded
/// memory: what `lathe analyze` prints.
pub fn analyze_file_with_defects(path: &Path) -> Result<Analysis> {
    analyze_file_measuring(path, true)
}

fn analyze_file_measuring(path: &Path, defects: bool) -> Result<Analysis> {
    let mut decoder = Decoder::open(path)?;
    let info = decoder.info().clone();
    let mut analyzer = Analyzer::new(info.channel_count, info.sample_rate_hz);
    if defects {
        analyzer = analyzer.with_defects();
    }
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, info.sample_rate_hz);
    while decoder.read(&mut block)? > 0 {
        analyzer.add(&block);
    }
    Ok(analyzer.finish(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn analyse(block: &AudioBlock) -> Analysis {
        let mut analyzer = Analyzer::new(block.channel_count(), block.sample_rate_hz());
        analyzer.add(block);
        analyzer.finish(Path::new(""))
    }

    #[test]
    fn silence_dc_clipping_and_correlation_are_measured() {
        let rate = 48_000;
        let mut block = testkit::sine(2, rate as usize * 3, rate, 440.0, 0.5);
        // One second of silence at each end, an offset of 0.01, three clipped samples.
        for ch in 0..2 {
            let samples = block.channel_mut(ch);
            samples[..rate as usize].fill(0.0);
            samples[2 * rate as usize..].fill(0.0);
            for x in samples.iter_mut() {
                *x += 0.0001;
            }
        }
        block.channel_mut(0)[60_000] = 1.0;
        block.channel_mut(1)[60_001] = -1.2;
        block.channel_mut(1)[60_002] = 1.0;
        let a = analyse(&block);
        assert_eq!(a.clipped_samples, 3);
        assert!((a.dc_offset - 0.0001).abs() < 2e-5, "{}", a.dc_offset);
        assert!(
            (a.leading_silence_s - 1.0).abs() < 0.01,
            "{}",
            a.leading_silence_s
        );
        assert!(
            (a.trailing_silence_s - 1.0).abs() < 0.01,
            "{}",
            a.trailing_silence_s
        );
        assert!(a.phase_correlation.unwrap() > 0.99);
        assert!((a.sample_peak_dbfs.unwrap() - linear_to_db(1.2)).abs() < 1e-3);
        assert!((a.duration_s - 3.0).abs() < 1e-9);
    }

    #[test]
    fn out_of_phase_channels_correlate_at_minus_one() {
        let mut block = testkit::sine(2, 48_000, 48_000, 1000.0, 0.5);
        for x in block.channel_mut(1) {
            *x = -*x;
        }
        let a = analyse(&block);
        assert!((a.phase_correlation.unwrap() + 1.0).abs() < 1e-6);
    }

    #[test]
    fn digital_silence_has_no_levels() {
        let block = AudioBlock::from_channels(vec![vec![0.0; 48_000]; 2], 48_000);
        let a = analyse(&block);
        assert_eq!(
            (a.integrated_lufs, a.true_peak_dbtp, a.phase_correlation),
            (None, None, None)
        );
        assert_eq!(a.leading_silence_s, 1.0);
        let json = serde_json::to_value(&a).unwrap();
        assert!(json["integrated_lufs"].is_null());
    }
}
