//! Scoring: SI-SDR against the clean excerpt (after removing a constant delay where the output
//! may have one), and the distribution of a set of results (median, 10th percentile, worst).

use lathe_engine::AudioBlock;
use lathe_synth::score::si_sdr_db;

/// Largest delay searched for in an output that may be late or early, frames.
const MAX_LAG: usize = 2048;
/// Frames of the excerpt the delay is searched on.
const LAG_SEARCH_FRAMES: usize = 24_000;
/// Scores are capped here: an output equal to its reference would score hundreds of dB.
pub const MAX_SCORE_DB: f64 = 100.0;

/// The SI-SDR of `estimate` against `reference`, every channel's samples together (one scale for
/// all), sample for sample, at most [`MAX_SCORE_DB`].
pub fn si_sdr(reference: &AudioBlock, estimate: &AudioBlock) -> f64 {
    si_sdr_at(reference, estimate, 0)
}

/// The same after removing the delay of `estimate` (searched over +-2048 frames: `afftdn` delays by 1200).
pub fn aligned_si_sdr(reference: &AudioBlock, estimate: &AudioBlock) -> f64 {
    let lag = best_lag(reference.channel(0), estimate.channel(0));
    si_sdr_at(reference, estimate, lag)
}

fn si_sdr_at(reference: &AudioBlock, estimate: &AudioBlock, lag: isize) -> f64 {
    let n = reference.frames().min(estimate.frames());
    let lag_abs = lag.unsigned_abs();
    let (mut r_all, mut e_all) = (Vec::new(), Vec::new());
    for ch in 0..reference.channel_count() {
        let (r, e) = (reference.channel(ch), estimate.channel(ch));
        if lag >= 0 {
            r_all.extend_from_slice(&r[..n - lag_abs]);
            e_all.extend_from_slice(&e[lag_abs..n]);
        } else {
            r_all.extend_from_slice(&r[lag_abs..n]);
            e_all.extend_from_slice(&e[..n - lag_abs]);
        }
    }
    si_sdr_db(&r_all, &e_all).min(MAX_SCORE_DB)
}

/// The delay of `estimate` against `reference` (positive: estimate late), from the
/// cross-correlation of a 1-second stretch in the middle.
fn best_lag(reference: &[f32], estimate: &[f32]) -> isize {
    let n = reference.len().min(estimate.len());
    let len = LAG_SEARCH_FRAMES.min(n.saturating_sub(2 * MAX_LAG));
    if len == 0 {
        return 0;
    }
    let start = (n - len) / 2;
    let mut best = (f64::NEG_INFINITY, 0isize);
    for lag in -(MAX_LAG as isize)..=MAX_LAG as isize {
        let shifted = &estimate[(start as isize + lag) as usize..];
        let sum: f64 = reference[start..start + len]
            .iter()
            .zip(shifted)
            .map(|(&r, &e)| f64::from(r) * f64::from(e))
            .sum();
        if sum > best.0 {
            best = (sum, lag);
        }
    }
    best.1
}

/// The distribution of labelled values: how many, the median, the 10th percentile, and the worst
/// (lowest) with its label.
pub struct Distribution {
    pub count: usize,
    pub median: f64,
    pub p10: f64,
    pub worst: f64,
    pub worst_label: String,
}

impl Distribution {
    /// The distribution of `values`; `None` when there are none.
    pub fn of(values: &[(f64, String)]) -> Option<Distribution> {
        if values.is_empty() {
            return None;
        }
        let mut sorted: Vec<&(f64, String)> = values.iter().collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at = |q: f64| {
            // Linear interpolation between closest ranks.
            let position = q * (sorted.len() - 1) as f64;
            let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
            let t = position - lo as f64;
            sorted[lo].0 * (1.0 - t) + sorted[hi].0 * t
        };
        Some(Distribution {
            count: sorted.len(),
            median: at(0.5),
            p10: at(0.1),
            worst: sorted[0].0,
            worst_label: sorted[0].1.clone(),
        })
    }
}
