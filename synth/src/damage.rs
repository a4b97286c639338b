//! Damage models: the defects of old transfers, added to clean audio with a fixed seed, so that the
//! restorers' tests and the restoration bench score a repair against the clean original.
//!
//! Every [`Model`] is a family of defects with ranges; [`Model::draw`] picks one [`Damage`] from
//! the ranges for a seed (an excerpt's seed gives that excerpt its own click rate, SNR, hum level,
//! clip level), and [`Damage::apply`] adds it to planar channels. [`MODELS`] is the bench's set,
//! several per defect:
//!
//! | model | defect |
//! |---|---|
//! | `clicks-hann` | Hann-shaped clicks, 1-40 samples, 5-50 a second |
//! | `clicks-rect` | rectangular steps, 1-200 samples, 1-10 a second |
//! | `clicks-ring` | exponentially decaying ringing (1-6 kHz), 20-200 samples, 1-20 a second |
//! | `crackle` | dense 1-4-sample impulses, 200-800 a second |
//! | `hiss-white` | white noise, SNR 15-35 dB |
//! | `hiss-pink` | pink (-3 dB/octave) noise, SNR 15-35 dB |
//! | `hiss-tape` | white noise through a +12 dB high shelf at 3 kHz, SNR 15-35 dB |
//! | `hum-50` | 50 Hz, 2-4 harmonics falling as 1/k, -50 to -30 dBFS |
//! | `hum-60` | 60 Hz, 2-5 harmonics of equal level, -50 to -30 dBFS |
//! | `hum-60-buzz` | 60 Hz full-wave rectified buzz: 8 harmonics, odd ones strong |
//! | `hum-50-drift` | 50 Hz, 4 harmonics, its frequency drifting slowly by up to +-0.3 Hz |
//! | `clip-hard` | hard clipping at 0.3-0.9 of the peak |
//! | `clip-soft` | tanh saturation, its knee at 0.3-0.7 of the peak |
//!
//! Click and crackle amplitudes are relative to the local level (the RMS of the 20 ms around
//! each), log-uniform over their range; hiss is set against the whole excerpt's RMS; hum and clip
//! levels are absolute (hum in dBFS RMS of all its harmonics) or relative to the peak.

use std::f64::consts::{PI, TAU};

/// A kind of defect, with the ranges its parameters are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// Impulsive clicks.
    Clicks {
        /// Their shape.
        shape: ClickShape,
        /// Clicks a second per channel, drawn from this range.
        per_second: (f64, f64),
        /// Widths in samples, uniform over this range.
        width: (usize, usize),
        /// Amplitude relative to the local RMS, log-uniform over this range.
        relative_amplitude: (f64, f64),
    },
    /// Broadband noise.
    Hiss {
        /// Its spectrum.
        color: HissColor,
        /// Signal-to-noise ratio against the excerpt's RMS, dB, drawn from this range.
        snr_db: (f64, f64),
    },
    /// Mains hum.
    Hum {
        /// Nominal mains frequency, Hz.
        mains_hz: f64,
        /// Number of harmonics (the fundamental counts as the first), drawn from this range.
        harmonics: (usize, usize),
        /// Relative amplitude of each harmonic.
        profile: HumProfile,
        /// RMS of the whole hum, dBFS, drawn from this range.
        level_dbfs: (f64, f64),
        /// Largest slow excursion of the fundamental from nominal, Hz (0: steady).
        drift_hz: f64,
    },
    /// Clipping.
    Clipping {
        /// Hard or soft.
        kind: ClipKind,
        /// The clip level (hard) or the knee (soft), relative to the excerpt's peak, drawn from
        /// this range.
        level: (f64, f64),
    },
}

/// The shape of one click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickShape {
    /// A raised-cosine bump.
    Hann,
    /// A flat step with hard edges.
    Rectangular,
    /// A decaying sinusoid: a scratch exciting the stylus' resonance.
    Ringing,
}

/// The spectrum of hiss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HissColor {
    /// Flat.
    White,
    /// Falling 3 dB an octave.
    Pink,
    /// White lifted 12 dB above about 3 kHz, as tape hiss is.
    Tape,
}

/// How the harmonics of hum fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HumProfile {
    /// Harmonic `k` at `1/k`.
    Falling,
    /// Every harmonic at the same level.
    Flat,
    /// Full-wave rectified buzz: odd harmonics strong (`1/k`), even ones at a quarter of that.
    Buzz,
}

/// Hard or soft clipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipKind {
    /// Samples beyond the level are set to it.
    Hard,
    /// `level * tanh(x / level)`.
    Soft,
}

/// The bench's damage models, by name.
pub const MODELS: [(&str, Model); 13] = [
    (
        "clicks-hann",
        Model::Clicks {
            shape: ClickShape::Hann,
            per_second: (5.0, 50.0),
            width: (1, 40),
            relative_amplitude: (2.0, 10.0),
        },
    ),
    (
        "clicks-rect",
        Model::Clicks {
            shape: ClickShape::Rectangular,
            per_second: (1.0, 10.0),
            width: (1, 200),
            relative_amplitude: (1.0, 5.0),
        },
    ),
    (
        "clicks-ring",
        Model::Clicks {
            shape: ClickShape::Ringing,
            per_second: (1.0, 20.0),
            width: (20, 200),
            relative_amplitude: (2.0, 10.0),
        },
    ),
    (
        "crackle",
        Model::Clicks {
            shape: ClickShape::Hann,
            per_second: (200.0, 800.0),
            width: (1, 4),
            relative_amplitude: (1.0, 4.0),
        },
    ),
    (
        "hiss-white",
        Model::Hiss {
            color: HissColor::White,
            snr_db: (15.0, 35.0),
        },
    ),
    (
        "hiss-pink",
        Model::Hiss {
            color: HissColor::Pink,
            snr_db: (15.0, 35.0),
        },
    ),
    (
        "hiss-tape",
        Model::Hiss {
            color: HissColor::Tape,
            snr_db: (15.0, 35.0),
        },
    ),
    (
        "hum-50",
        Model::Hum {
            mains_hz: 50.0,
            harmonics: (2, 4),
            profile: HumProfile::Falling,
            level_dbfs: (-50.0, -30.0),
            drift_hz: 0.0,
        },
    ),
    (
        "hum-60",
        Model::Hum {
            mains_hz: 60.0,
            harmonics: (2, 5),
            profile: HumProfile::Flat,
            level_dbfs: (-50.0, -30.0),
            drift_hz: 0.0,
        },
    ),
    (
        "hum-60-buzz",
        Model::Hum {
            mains_hz: 60.0,
            harmonics: (8, 8),
            profile: HumProfile::Buzz,
            level_dbfs: (-50.0, -30.0),
            drift_hz: 0.0,
        },
    ),
    (
        "hum-50-drift",
        Model::Hum {
            mains_hz: 50.0,
            harmonics: (4, 4),
            profile: HumProfile::Falling,
            level_dbfs: (-50.0, -30.0),
            drift_hz: 0.3,
        },
    ),
    (
        "clip-hard",
        Model::Clipping {
            kind: ClipKind::Hard,
            level: (0.3, 0.9),
        },
    ),
    (
        "clip-soft",
        Model::Clipping {
            kind: ClipKind::Soft,
            level: (0.3, 0.7),
        },
    ),
];

/// The model named `name` in [`MODELS`].
pub fn model(name: &str) -> Option<Model> {
    MODELS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
}

/// One defect with its parameters fixed, ready to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Damage {
    /// Clicks (or crackle).
    Clicks {
        /// Their shape.
        shape: ClickShape,
        /// Mean clicks a second per channel.
        per_second: f64,
        /// Width range, samples.
        width: (usize, usize),
        /// Amplitude range relative to the local RMS.
        relative_amplitude: (f64, f64),
    },
    /// Hiss.
    Hiss {
        /// Its spectrum.
        color: HissColor,
        /// SNR against the excerpt's RMS, dB.
        snr_db: f64,
    },
    /// Hum.
    Hum {
        /// Nominal fundamental, Hz.
        mains_hz: f64,
        /// Number of harmonics.
        harmonics: usize,
        /// Their relative amplitudes.
        profile: HumProfile,
        /// RMS of the hum, dBFS.
        level_dbfs: f64,
        /// Largest excursion of the fundamental, Hz.
        drift_hz: f64,
    },
    /// Clipping.
    Clipping {
        /// Hard or soft.
        kind: ClipKind,
        /// Level relative to the peak.
        level: f64,
    },
}

impl Model {
    /// The defect this model gives for `seed`: each ranged parameter drawn uniformly.
    pub fn draw(&self, seed: u64) -> Damage {
        let mut rng = Rng::new(seed ^ 0xD4A6_E5EE_D000_0001);
        let mut within = |range: (f64, f64)| range.0 + (range.1 - range.0) * rng.unit();
        match *self {
            Model::Clicks {
                shape,
                per_second,
                width,
                relative_amplitude,
            } => Damage::Clicks {
                shape,
                per_second: within(per_second),
                width,
                relative_amplitude,
            },
            Model::Hiss { color, snr_db } => Damage::Hiss {
                color,
                snr_db: within(snr_db),
            },
            Model::Hum {
                mains_hz,
                harmonics,
                profile,
                level_dbfs,
                drift_hz,
            } => Damage::Hum {
                mains_hz,
                harmonics: within((harmonics.0 as f64, harmonics.1 as f64 + 1.0))
                    .floor()
                    .min(harmonics.1 as f64) as usize,
                profile,
                level_dbfs: within(level_dbfs),
                drift_hz,
            },
            Model::Clipping { kind, level } => Damage::Clipping {
                kind,
                level: within(level),
            },
        }
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Clicks {
                shape, per_second, ..
            } => write!(f, "{shape:?} clicks {per_second:.0}/s"),
            Damage::Hiss { color, snr_db } => write!(f, "{color:?} hiss SNR {snr_db:.1} dB"),
            Damage::Hum {
                mains_hz,
                harmonics,
                profile,
                level_dbfs,
                drift_hz,
            } => write!(
                f,
                "{mains_hz:.0} Hz hum x{harmonics} {profile:?} {level_dbfs:.1} dBFS drift {drift_hz:.1} Hz"
            ),
            Damage::Clipping { kind, level } => write!(f, "{kind:?} clip at {level:.2} of peak"),
        }
    }
}

impl Damage {
    /// Adds this defect to `channels` (planar, at `sample_rate_hz`), with the randomness of `seed`.
    /// Every channel gets its own clicks and noise; hum is the same in every channel (one mains).
    pub fn apply(&self, channels: &mut [Vec<f32>], sample_rate_hz: u32, seed: u64) {
        let rate = f64::from(sample_rate_hz);
        let mut rng = Rng::new(seed);
        match *self {
            Damage::Clicks {
                shape,
                per_second,
                width,
                relative_amplitude,
            } => {
                for channel in channels.iter_mut() {
                    add_clicks(
                        channel,
                        rate,
                        shape,
                        per_second,
                        width,
                        relative_amplitude,
                        &mut rng,
                    );
                }
            }
            Damage::Hiss { color, snr_db } => {
                let level = rms(channels) * 10f64.powf(-snr_db / 20.0);
                for channel in channels.iter_mut() {
                    let noise = colored_noise(channel.len(), rate, color, &mut rng);
                    for (x, n) in channel.iter_mut().zip(noise) {
                        *x += (level * n) as f32;
                    }
                }
            }
            Damage::Hum {
                mains_hz,
                harmonics,
                profile,
                level_dbfs,
                drift_hz,
            } => {
                let hum = hum(
                    channels.first().map_or(0, Vec::len),
                    rate,
                    mains_hz,
                    harmonics,
                    profile,
                    level_dbfs,
                    drift_hz,
                    &mut rng,
                );
                for channel in channels.iter_mut() {
                    for (x, h) in channel.iter_mut().zip(&hum) {
                        *x += *h;
                    }
                }
            }
            Damage::Clipping { kind, level } => {
                let peak = channels
                    .iter()
                    .flatten()
                    .fold(0.0f32, |m, x| m.max(x.abs()));
                let level = (f64::from(peak) * level).max(1e-9);
                for x in channels.iter_mut().flatten() {
                    *x = match kind {
                        ClipKind::Hard => x.clamp(-level as f32, level as f32),
                        ClipKind::Soft => (level * (f64::from(*x) / level).tanh()) as f32,
                    };
                }
            }
        }
    }
}

/// Deterministic uniform numbers (a 64-bit LCG, top 53 bits).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Close to a unit Gaussian (a sum of four uniforms).
    fn gaussian(&mut self) -> f64 {
        let sum: f64 = (0..4).map(|_| self.unit() - 0.5).sum();
        sum * 3f64.sqrt()
    }

    /// Log-uniform over `range`.
    fn log_uniform(&mut self, range: (f64, f64)) -> f64 {
        let (lo, hi) = (range.0.max(1e-12).ln(), range.1.max(1e-12).ln());
        (lo + (hi - lo) * self.unit()).exp()
    }
}

fn rms(channels: &[Vec<f32>]) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for channel in channels {
        sum += channel.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        n += channel.len();
    }
    (sum / n.max(1) as f64).sqrt()
}

/// RMS of `samples[from..to]`.
fn local_rms(samples: &[f32], from: usize, to: usize) -> f64 {
    let window = &samples[from.min(samples.len())..to.min(samples.len())];
    let sum: f64 = window.iter().map(|&x| f64::from(x).powi(2)).sum();
    (sum / window.len().max(1) as f64).sqrt()
}

fn add_clicks(
    samples: &mut [f32],
    rate: f64,
    shape: ClickShape,
    per_second: f64,
    width: (usize, usize),
    relative_amplitude: (f64, f64),
    rng: &mut Rng,
) {
    let mean_gap = rate / per_second.max(1e-9);
    let half_window = (0.01 * rate) as usize;
    let mut pos = (rng.unit() * mean_gap) as usize;
    while pos + width.1 < samples.len() {
        let span = width.0 + ((rng.unit() * (width.1 - width.0 + 1) as f64) as usize);
        let span = span.clamp(width.0.max(1), width.1.max(1));
        let local = local_rms(samples, pos.saturating_sub(half_window), pos + half_window);
        let amplitude = local.max(1e-4) * rng.log_uniform(relative_amplitude);
        let sign = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
        // Ringing: a resonance between 1 and 6 kHz (below Nyquist), decaying by 40 dB over the span.
        let ring_hz = (1000.0 + 5000.0 * rng.unit()).min(0.4 * rate);
        let ring_phase = TAU * rng.unit();
        for i in 0..span {
            let t = (i as f64 + 0.5) / span as f64;
            let value = match shape {
                ClickShape::Hann => (PI * t).sin().powi(2),
                ClickShape::Rectangular => 1.0,
                ClickShape::Ringing => {
                    (-4.6 * t).exp() * (TAU * ring_hz * i as f64 / rate + ring_phase).sin()
                }
            };
            samples[pos + i] += (sign * amplitude * value) as f32;
        }
        pos += span + (2.0 * mean_gap * rng.unit()) as usize;
    }
}

/// Unit-RMS noise of `color`.
fn colored_noise(len: usize, rate: f64, color: HissColor, rng: &mut Rng) -> Vec<f64> {
    let white: Vec<f64> = (0..len).map(|_| rng.gaussian()).collect();
    let shaped = match color {
        HissColor::White => white,
        HissColor::Pink => pink(&white),
        HissColor::Tape => high_shelf(&white, rate, 3000.0, 12.0),
    };
    let power = shaped.iter().map(|x| x * x).sum::<f64>() / len.max(1) as f64;
    let scale = 1.0 / power.sqrt().max(1e-12);
    shaped.into_iter().map(|x| x * scale).collect()
}

/// Pink noise from white by Paul Kellet's economy filter (within 0.5 dB of -3 dB/octave above
/// about 10 Hz).
fn pink(white: &[f64]) -> Vec<f64> {
    let (mut b0, mut b1, mut b2) = (0.0, 0.0, 0.0);
    white
        .iter()
        .map(|&w| {
            b0 = 0.99765 * b0 + w * 0.099_046_0;
            b1 = 0.96300 * b1 + w * 0.296_516_4;
            b2 = 0.57000 * b2 + w * 1.052_691_3;
            b0 + b1 + b2 + w * 0.1848
        })
        .collect()
}

/// `x` through an RBJ high shelf (slope 1) at `corner_hz` with `gain_db`.
fn high_shelf(x: &[f64], rate: f64, corner_hz: f64, gain_db: f64) -> Vec<f64> {
    let a = 10f64.powf(gain_db / 40.0);
    let w0 = TAU * corner_hz / rate;
    let (sin, cos) = w0.sin_cos();
    let alpha = sin / 2.0 * 2f64.sqrt();
    let root = 2.0 * a.sqrt() * alpha;
    let b0 = a * ((a + 1.0) + (a - 1.0) * cos + root);
    let b1 = -2.0 * a * ((a - 1.0) + (a + 1.0) * cos);
    let b2 = a * ((a + 1.0) + (a - 1.0) * cos - root);
    let a0 = (a + 1.0) - (a - 1.0) * cos + root;
    let a1 = 2.0 * ((a - 1.0) - (a + 1.0) * cos);
    let a2 = (a + 1.0) - (a - 1.0) * cos - root;
    let (mut x1, mut x2, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0);
    x.iter()
        .map(|&x0| {
            let y0 = (b0 * x0 + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2) / a0;
            (x2, x1, y2, y1) = (x1, x0, y1, y0);
            y0
        })
        .collect()
}

/// `len` samples of hum: `harmonics` sinusoids of the (possibly drifting) fundamental with random
/// phases, scaled to `level_dbfs` RMS.
#[allow(clippy::too_many_arguments)]
fn hum(
    len: usize,
    rate: f64,
    mains_hz: f64,
    harmonics: usize,
    profile: HumProfile,
    level_dbfs: f64,
    drift_hz: f64,
    rng: &mut Rng,
) -> Vec<f32> {
    let amplitudes: Vec<f64> = (1..=harmonics)
        .map(|k| match profile {
            HumProfile::Falling => 1.0 / k as f64,
            HumProfile::Flat => 1.0,
            HumProfile::Buzz if k % 2 == 1 => 1.0 / k as f64,
            HumProfile::Buzz => 0.25 / k as f64,
        })
        .collect();
    let phases: Vec<f64> = (0..harmonics).map(|_| TAU * rng.unit()).collect();
    let power: f64 = amplitudes.iter().map(|a| a * a / 2.0).sum();
    let scale = 10f64.powf(level_dbfs / 20.0) / power.sqrt().max(1e-12);
    // Drift: a slow sinusoidal wander of the fundamental, one cycle in 20-40 s.
    let drift_period_s = 20.0 + 20.0 * rng.unit();
    let drift_phase = TAU * rng.unit();
    let mut phase = 0.0f64;
    (0..len)
        .map(|n| {
            let t = n as f64 / rate;
            let f = mains_hz + drift_hz * (TAU * t / drift_period_s + drift_phase).sin();
            let value: f64 = amplitudes
                .iter()
                .zip(&phases)
                .enumerate()
                .map(|(k, (a, p))| a * ((k + 1) as f64 * phase + p).sin())
                .sum();
            phase = (phase + TAU * f / rate) % (TAU * 1e6);
            (scale * value) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(len: usize, rate: f64) -> Vec<Vec<f32>> {
        let x: Vec<f32> = (0..len)
            .map(|n| (0.3 * (TAU * 440.0 * n as f64 / rate).sin()) as f32)
            .collect();
        vec![x.clone(), x]
    }

    #[test]
    fn every_model_damages_and_is_deterministic() {
        for (name, model) in MODELS {
            let damage = model.draw(7);
            assert_eq!(damage, model.draw(7), "{name}");
            let clean = tone(44_100, 44_100.0);
            let mut a = clean.clone();
            let mut b = clean.clone();
            damage.apply(&mut a, 44_100, 11);
            damage.apply(&mut b, 44_100, 11);
            assert_eq!(a, b, "{name} is not deterministic");
            let changed = a[0].iter().zip(&clean[0]).filter(|(x, y)| x != y).count();
            assert!(changed > 0, "{name} changed nothing");
        }
    }

    #[test]
    fn hiss_and_hum_have_the_level_they_are_drawn_with() {
        let clean = tone(96_000, 48_000.0);
        let signal = rms(&clean);
        let mut noisy = clean.clone();
        Damage::Hiss {
            color: HissColor::Pink,
            snr_db: 20.0,
        }
        .apply(&mut noisy, 48_000, 3);
        let noise: Vec<Vec<f32>> = noisy
            .iter()
            .zip(&clean)
            .map(|(n, c)| n.iter().zip(c).map(|(a, b)| a - b).collect())
            .collect();
        let snr = 20.0 * (signal / rms(&noise)).log10();
        assert!((snr - 20.0).abs() < 0.1, "{snr}");

        let mut silent = vec![vec![0.0f32; 96_000]; 2];
        Damage::Hum {
            mains_hz: 60.0,
            harmonics: 8,
            profile: HumProfile::Buzz,
            level_dbfs: -40.0,
            drift_hz: 0.0,
        }
        .apply(&mut silent, 48_000, 3);
        let level = 20.0 * rms(&silent).log10();
        assert!((level + 40.0).abs() < 0.2, "{level}");
        assert_eq!(silent[0], silent[1], "hum is the same in every channel");
    }

    #[test]
    fn clipping_respects_its_level() {
        let mut x = tone(4_410, 44_100.0);
        Damage::Clipping {
            kind: ClipKind::Hard,
            level: 0.5,
        }
        .apply(&mut x, 44_100, 1);
        let peak = x.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((peak - 0.15).abs() < 1e-6, "{peak}");
        let mut y = tone(4_410, 44_100.0);
        Damage::Clipping {
            kind: ClipKind::Soft,
            level: 0.5,
        }
        .apply(&mut y, 44_100, 1);
        let peak = y.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak < 0.15 && peak > 0.14, "{peak}");
    }

    #[test]
    fn click_amplitude_follows_the_local_level() {
        // A quiet first half and a loud second half: the clicks in each scale with it.
        let len = 88_200;
        let x: Vec<f32> = (0..len)
            .map(|n| {
                let a = if n < len / 2 { 0.01 } else { 0.3 };
                (a * (TAU * 200.0 * n as f64 / 44_100.0).sin()) as f32
            })
            .collect();
        let clean = vec![x];
        let mut clicked = clean.clone();
        Damage::Clicks {
            shape: ClickShape::Rectangular,
            per_second: 20.0,
            width: (5, 5),
            relative_amplitude: (3.0, 3.0),
        }
        .apply(&mut clicked, 44_100, 5);
        let biggest = |range: std::ops::Range<usize>| {
            range
                .map(|i| (clicked[0][i] - clean[0][i]).abs())
                .fold(0.0f32, f32::max)
        };
        let (quiet, loud) = (biggest(2_000..40_000), biggest(48_000..86_000));
        assert!(quiet > 0.0 && quiet < 0.05, "{quiet}");
        assert!(loud > 0.4 && loud < 1.0, "{loud}");
    }
}
