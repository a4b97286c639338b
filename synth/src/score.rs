//! Scores of a processed signal against the clean one it came from, for the tests and benches of
//! restoration (how much of the damage a restorer took away).

/// Scale-invariant signal-to-distortion ratio of `estimate` against `reference`, in dB (Le Roux et
/// al. 2019): the reference is scaled to best fit the estimate, and the rest counts as distortion.
/// Only the first `min(reference.len(), estimate.len())` samples count; a silent reference scores
/// negative infinity.
pub fn si_sdr_db(reference: &[f32], estimate: &[f32]) -> f64 {
    let n = reference.len().min(estimate.len());
    let (mut rr, mut re, mut ee) = (0.0f64, 0.0f64, 0.0f64);
    for (&r, &e) in reference[..n].iter().zip(&estimate[..n]) {
        let (r, e) = (f64::from(r), f64::from(e));
        rr += r * r;
        re += r * e;
        ee += e * e;
    }
    if rr <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let alpha = re / rr;
    let target = alpha * alpha * rr;
    let distortion = (ee - 2.0 * alpha * re + target).max(0.0);
    10.0 * (target.max(1e-300) / distortion.max(1e-300)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_sdr_reads_known_ratios() {
        let x: Vec<f32> = (0..1000).map(|n| ((n as f32) * 0.1).sin()).collect();
        assert!(si_sdr_db(&x, &x) > 100.0);
        let scaled: Vec<f32> = x.iter().map(|v| 0.5 * v).collect();
        assert!(si_sdr_db(&x, &scaled) > 100.0, "scale must not count");
        // Uniform white noise in [-1, 1] (xorshift), a tenth of it added.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noisy: Vec<f32> = x
            .iter()
            .map(|a| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
                a + 0.1 * (2.0 * unit - 1.0) as f32
            })
            .collect();
        // Signal power 0.5, noise power 0.01/3: about 21.8 dB.
        assert!((si_sdr_db(&x, &noisy) - 21.8).abs() < 0.6);
        assert_eq!(si_sdr_db(&[0.0; 10], &x), f64::NEG_INFINITY);
    }
}
