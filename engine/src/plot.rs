//! The curves a report plots for an audio stream (`lathe_model::plot::PlotData`): short-term
//! loudness over time and the mean spectrum. Both are measured as the stream passes through an
//! analysis, with no pass of their own: the loudness curve is read off the loudness meter
//! ([`crate::loudness::LoudnessMeter::short_term_curve`]), and [`SpectrumMeter`] transforms frames
//! of [`SPECTRUM_FFT`] samples: one in [`SPECTRUM_EVERY`] in a render's analysis, every one for an
//! album report (which reads the file for its curves alone).

use std::sync::Arc;

use lathe_model::plot::{SPECTRUM_BANDS, band_centre_hz};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::audio::AudioBlock;

/// The spectrum's FFT length, frames.
pub const SPECTRUM_FFT: usize = 4096;
/// The stride of the spectrum a render's analysis measures: one frame in this many (at 44.1 kHz,
/// 93 ms of every 743 ms). A mean over a whole track needs no more, and the analysis it rides on
/// stays as fast.
pub const SPECTRUM_EVERY: u64 = 8;
/// The floor of every plotted level, dB (LUFS for loudness).
pub const FLOOR_DB: f64 = -70.0;

/// The mean spectrum in the plot's [`SPECTRUM_BANDS`] bands, dB (floored at [`FLOOR_DB`]), from
/// `power`: the summed squared magnitudes of bins `0..SPECTRUM_FFT / 2` over `ffts` Hann-windowed
/// transforms at `sample_rate_hz`. A band with no bin takes its nearest bin's power.
fn bands_db(power: &[f64], ffts: usize, sample_rate_hz: u32) -> Vec<f64> {
    let norm = (ffts.max(1) as f64) * (SPECTRUM_FFT as f64 / 2.0).powi(2);
    let bin_hz = f64::from(sample_rate_hz) / SPECTRUM_FFT as f64;
    (0..SPECTRUM_BANDS)
        .map(|b| {
            let lo = 20.0 * 1000f64.powf(b as f64 / SPECTRUM_BANDS as f64);
            let hi = 20.0 * 1000f64.powf((b + 1) as f64 / SPECTRUM_BANDS as f64);
            let bins: Vec<f64> = power
                .iter()
                .enumerate()
                .filter(|(k, _)| {
                    let f = *k as f64 * bin_hz;
                    f >= lo && f < hi
                })
                .map(|(_, p)| *p / norm)
                .collect();
            let nearest = ((band_centre_hz(b) / bin_hz).round() as usize).min(power.len() - 1);
            let mean = if bins.is_empty() {
                power[nearest] / norm
            } else {
                bins.iter().sum::<f64>() / bins.len() as f64
            };
            (10.0 * mean.max(1e-12).log10()).max(FLOOR_DB)
        })
        .collect()
}

/// The Hann window of [`SPECTRUM_FFT`] points.
fn hann_window() -> Vec<f64> {
    (0..SPECTRUM_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / SPECTRUM_FFT as f64).cos())
        .collect()
}

/// The mean spectrum of a stream, channels summed, from one frame of [`SPECTRUM_FFT`] in every
/// `every` (the first frame always). Frames are counted from the stream's start, so the result
/// does not depend on how the stream is cut into blocks.
pub struct SpectrumMeter {
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// The windowed samples of the current frame, when it is one that is transformed.
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    /// Summed squared magnitudes of bins `0..SPECTRUM_FFT / 2`.
    power: Vec<f64>,
    ffts: usize,
    /// Transform one frame in this many.
    every: u64,
    /// The current frame's index and how many of its samples have passed.
    frame_index: u64,
    filled: usize,
}

impl SpectrumMeter {
    /// An empty meter that transforms one frame in `every` (at least 1: every frame).
    pub fn new(every: u64) -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(SPECTRUM_FFT);
        let spectrum = fft.make_output_vec();
        Self {
            fft,
            window: hann_window(),
            frame: Vec::with_capacity(SPECTRUM_FFT),
            spectrum,
            power: vec![0.0; SPECTRUM_FFT / 2],
            ffts: 0,
            every: every.max(1),
            frame_index: 0,
            filled: 0,
        }
    }

    /// Adds the frames of `block`.
    pub fn add(&mut self, block: &AudioBlock) {
        let frames = block.frames();
        let mut at = 0;
        while at < frames {
            let take = (SPECTRUM_FFT - self.filled).min(frames - at);
            if self.frame_index % self.every == 0 {
                for i in at..at + take {
                    let sum: f64 = block.channels().map(|c| f64::from(c[i])).sum();
                    self.frame.push(sum * self.window[self.frame.len()]);
                }
            }
            self.filled += take;
            at += take;
            if self.filled == SPECTRUM_FFT {
                if self.frame.len() == SPECTRUM_FFT {
                    self.transform();
                }
                self.frame.clear();
                self.frame_index += 1;
                self.filled = 0;
            }
        }
    }

    fn transform(&mut self) {
        // Lengths are the plan's own, so the transform cannot fail.
        if self
            .fft
            .process(&mut self.frame, &mut self.spectrum)
            .is_ok()
        {
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p += c.norm_sqr();
            }
            self.ffts += 1;
        }
    }

    /// The mean spectrum so far in the plot's bands, dB (a band with no FFT bin takes its nearest bin's power); every band at
    /// [`FLOOR_DB`] before a whole frame has passed.
    pub fn bands_db(&self, sample_rate_hz: u32) -> Vec<f64> {
        bands_db(&self.power, self.ffts, sample_rate_hz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seconds` of a sine at `hz` and amplitude `amplitude` on both channels, in blocks of `block`.
    fn sine_blocks(
        hz: f64,
        amplitude: f32,
        rate: u32,
        seconds: f64,
        block: usize,
    ) -> Vec<AudioBlock> {
        let frames = (seconds * f64::from(rate)) as usize;
        let samples: Vec<f32> = (0..frames)
            .map(|i| {
                amplitude
                    * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() as f32
            })
            .collect();
        samples
            .chunks(block)
            .map(|chunk| AudioBlock::from_channels(vec![chunk.to_vec(), chunk.to_vec()], rate))
            .collect()
    }

    fn spectrum_of(blocks: &[AudioBlock], rate: u32) -> Vec<f64> {
        let mut meter = SpectrumMeter::new(SPECTRUM_EVERY);
        for block in blocks {
            meter.add(block);
        }
        meter.bands_db(rate)
    }

    #[test]
    fn a_sine_peaks_in_its_band_and_nowhere_else() {
        let rate = 44_100;
        let bands = spectrum_of(&sine_blocks(1000.0, 0.5, rate, 5.0, 4096), rate);
        assert_eq!(bands.len(), SPECTRUM_BANDS);
        let loudest = (0..SPECTRUM_BANDS)
            .max_by(|&a, &b| bands[a].total_cmp(&bands[b]))
            .expect("bands");
        let centre = band_centre_hz(loudest);
        let width = 1000f64.powf(0.5 / SPECTRUM_BANDS as f64);
        assert!(
            (centre / width..centre * width).contains(&1000.0),
            "1 kHz in band {loudest} (centre {centre:.0} Hz)"
        );
        // Far from the tone, the Hann window's leakage is 50 dB or more below the peak.
        assert!(bands[0] < bands[loudest] - 50.0, "{bands:?}");
        assert!(
            bands[SPECTRUM_BANDS - 1] < bands[loudest] - 50.0,
            "{bands:?}"
        );
    }

    #[test]
    fn the_spectrum_does_not_depend_on_how_the_stream_is_cut() {
        let rate = 48_000;
        let whole = spectrum_of(&sine_blocks(440.0, 0.3, rate, 4.0, 4096), rate);
        let cut = spectrum_of(&sine_blocks(440.0, 0.3, rate, 4.0, 1000), rate);
        assert_eq!(whole, cut);
    }

    #[test]
    fn a_stream_shorter_than_a_frame_is_at_the_floor() {
        let rate = 44_100;
        let bands = spectrum_of(&sine_blocks(1000.0, 0.5, rate, 0.05, 512), rate);
        assert!(bands.iter().all(|&b| b == FLOOR_DB), "{bands:?}");
    }
}
