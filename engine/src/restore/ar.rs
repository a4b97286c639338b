//! Autoregressive (linear-prediction) models: fitting, prediction residuals and least-squares AR
//! interpolation of missing samples (Janssen, Veldhuis & Vries 1986; Godsill & Rayner 1998, ch. 5).
//!
//! Convention: the model predicts `x[n]` as `sum(a[k] * x[n - k], k = 1..=p)`; `a[0]` is unused and
//! the prediction-error filter is `b = [1, -a[1], ..., -a[p]]`.

/// Rounds of pinning violators to the clip level in constrained interpolation.
const MAX_ACTIVE_SET_ROUNDS: usize = 6;

/// Fits AR models and interpolates gaps; every buffer is allocated up front for a model order and a
/// longest gap.
#[derive(Debug, Clone)]
pub struct ArModel {
    order: usize,
    /// Prediction coefficients, `a[1..=order]`.
    a: Vec<f64>,
    /// `a[order], ..., a[1]`: the forward prediction of `x[n]` is their dot product with
    /// `x[n - order..n]`.
    a_reversed: Vec<f64>,
    autocorrelation: Vec<f64>,
    levinson_scratch: Vec<f64>,
    /// Autocorrelation of the prediction-error filter, lags `0..=order`.
    error_filter_acf: Vec<f64>,
    /// Banded Cholesky factor of the interpolation matrix, `max_unknowns * (order + 1)`.
    band: Vec<f64>,
    rhs: Vec<f64>,
    unknowns: Vec<usize>,
    fixed: Vec<bool>,
    max_unknowns: usize,
    taper: Vec<f64>,
    tapered: Vec<f64>,
}

impl ArModel {
    /// A model of `order` able to interpolate up to `max_unknowns` samples at once.
    pub fn new(order: usize, max_unknowns: usize) -> Self {
        Self {
            order,
            a: vec![0.0; order + 1],
            a_reversed: vec![0.0; order],
            autocorrelation: vec![0.0; order + 1],
            levinson_scratch: vec![0.0; order + 1],
            error_filter_acf: vec![0.0; order + 1],
            band: vec![0.0; max_unknowns * (order + 1)],
            rhs: vec![0.0; max_unknowns],
            unknowns: Vec::with_capacity(max_unknowns),
            fixed: vec![false; max_unknowns],
            max_unknowns,
            taper: Vec::new(),
            tapered: Vec::new(),
        }
    }

    /// The prediction-error energy of `x` over `range` (which must start at `order` or later).
    pub fn residual_energy(&self, x: &[f64], range: std::ops::Range<usize>) -> f64 {
        let p = self.order;
        range
            .map(|n| (x[n] - dot(&self.a_reversed, &x[n - p..n])).powi(2))
            .sum()
    }

    /// Model order.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Longest gap [`ArModel::interpolate`] takes.
    pub fn max_unknowns(&self) -> usize {
        self.max_unknowns
    }

    /// Autocorrelation of the prediction-error filter `[1, -a[1], ..., -a[order]]`, lags
    /// `0..=order`: the energy of a shape `h` after that filter is
    /// `sum(acf[|i - j|] h[i] h[j])`.
    pub fn error_filter_acf(&self) -> &[f64] {
        &self.error_filter_acf
    }

    /// The prediction coefficients `a[1..=order]` (index 0 unused).
    pub fn coefficients(&self) -> &[f64] {
        &self.a
    }

    /// Fits the model to `x` by the autocorrelation method (Hann taper, Levinson-Durbin) and returns
    /// the prediction-error power per sample. The taper is computed on the first fit of a length
    /// (stages always fit the same length, so `process` does not allocate after the first segment). A tiny white-noise floor keeps the fit stable on silence.
    pub fn fit(&mut self, x: &[f64]) -> f64 {
        self.fit_clamped(x, f64::INFINITY)
    }

    /// Like [`ArModel::fit`], but samples beyond four robust standard deviations of `x` (from its
    /// median absolute value) are clamped first, so that large clicks in the window do not shape
    /// the model that is to find them.
    pub fn fit_robust(&mut self, x: &[f64]) -> f64 {
        let n = x.len();
        if self.tapered.len() != n {
            self.tapered = vec![0.0; n];
        }
        for (t, &v) in self.tapered.iter_mut().zip(x) {
            *t = v.abs();
        }
        let (_, median, _) = self.tapered.select_nth_unstable_by(n / 2, f64::total_cmp);
        let clamp = (4.0 * 1.4826 * *median).max(1e-9);
        self.fit_clamped(x, clamp)
    }

    fn fit_clamped(&mut self, x: &[f64], clamp: f64) -> f64 {
        let p = self.order;
        let n = x.len();
        // A Hann taper (computed once per length) keeps the edges from smearing the spectrum.
        if self.taper.len() != n || self.tapered.len() != n {
            self.tapered = vec![0.0; n];
            self.taper = (0..n)
                .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * (i as f64 + 0.5) / n as f64).cos())
                .collect();
        }
        for ((t, &v), &w) in self.tapered.iter_mut().zip(x).zip(&self.taper) {
            *t = v.clamp(-clamp, clamp) * w;
        }
        let y = &self.tapered;
        for lag in 0..=p {
            self.autocorrelation[lag] = if lag < n { dot(&y[lag..], y) } else { 0.0 };
        }
        // About -100 dB of white noise plus a slight lag window, so that the fit is well conditioned.
        self.autocorrelation[0] = self.autocorrelation[0] * (1.0 + 1e-9) + 1e-10 * n as f64;
        let power = levinson(
            &self.autocorrelation,
            &mut self.a,
            &mut self.levinson_scratch,
        );
        self.update_error_filter_acf();
        power / n.max(1) as f64
    }

    fn update_error_filter_acf(&mut self) {
        let p = self.order;
        for (r, &a) in self.a_reversed.iter_mut().zip(self.a[1..].iter().rev()) {
            *r = a;
        }
        for lag in 0..=p {
            let mut sum = 0.0;
            for k in 0..=p - lag {
                let bk = if k == 0 { 1.0 } else { -self.a[k] };
                let bkl = if k + lag == 0 { 1.0 } else { -self.a[k + lag] };
                sum += bk * bkl;
            }
            self.error_filter_acf[lag] = sum;
        }
    }

    /// Forward prediction error `x[n] - sum(a[k] x[n-k])` for `n` in `range` (which must start at
    /// `order` or later), written to `out[n]`.
    pub fn forward_residual(&self, x: &[f64], range: std::ops::Range<usize>, out: &mut [f64]) {
        let p = self.order;
        for n in range {
            out[n] = x[n] - dot(&self.a_reversed, &x[n - p..n]);
        }
    }

    /// Backward prediction error `x[n] - sum(a[k] x[n+k])` for `n` in `range` (which must end at
    /// `x.len() - order` or before), written to `out[n]`.
    pub fn backward_residual(&self, x: &[f64], range: std::ops::Range<usize>, out: &mut [f64]) {
        let p = self.order;
        for n in range {
            out[n] = x[n] - dot(&self.a[1..], &x[n + 1..=n + p]);
        }
    }

    /// Replaces the samples of `x` at the sorted indices `missing` by the least-squares AR
    /// interpolation: the values that minimise the prediction-error energy of the fitted model
    /// (Janssen et al.). Each missing index needs `order` samples of context inside `x` on both
    /// sides; closer to the edges the context is simply shorter.
    ///
    /// With `clip_levels` (positive, negative magnitude), the interpolation is constrained as
    /// declipping needs it: a missing sample whose clipped value is positive must stay at or above
    /// the positive level, a negative one at or below minus the negative level; samples that come out on the wrong side are pinned to the clip level and
    /// the rest solved again (an active-set iteration).
    ///
    /// Returns false (and leaves `x` alone) if there are more than `max_unknowns` samples.
    pub fn interpolate(
        &mut self,
        x: &mut [f64],
        missing: &[usize],
        clip_levels: Option<(f64, f64)>,
    ) -> bool {
        let m = missing.len();
        if m == 0 {
            return true;
        }
        if m > self.max_unknowns {
            return false;
        }
        self.fixed[..m].fill(false);
        for _ in 0..MAX_ACTIVE_SET_ROUNDS {
            self.unknowns.clear();
            for (i, &n) in missing.iter().enumerate() {
                if !self.fixed[i] {
                    self.unknowns.push(n);
                }
            }
            if self.solve(x, missing, clip_levels) {
                break;
            }
        }
        true
    }

    /// One solve over the currently free unknowns; with a clip level, pins violators and returns
    /// false if any were found.
    fn solve(&mut self, x: &mut [f64], missing: &[usize], clip_levels: Option<(f64, f64)>) -> bool {
        let p = self.order;
        let m = self.unknowns.len();
        if m == 0 {
            return true;
        }
        let len = x.len();
        let acf = &self.error_filter_acf;
        let bw = p.min(m - 1);
        let stride = p + 1;
        // Right-hand side: -sum over known neighbours j of acf[|i - j|] x[j].
        for (i, &n) in self.unknowns.iter().enumerate() {
            let lo = n.saturating_sub(p);
            let hi = (n + p).min(len - 1);
            let mut sum = 0.0;
            // Unknowns are sorted: walk them alongside to skip them.
            let mut next_unknown = self.unknowns[..i]
                .iter()
                .rposition(|&u| u < lo)
                .map_or(0, |q| q + 1);
            for j in lo..=hi {
                while next_unknown < m && self.unknowns[next_unknown] < j {
                    next_unknown += 1;
                }
                if next_unknown < m && self.unknowns[next_unknown] == j {
                    continue;
                }
                sum += acf[n.abs_diff(j)] * x[j];
            }
            self.rhs[i] = -sum;
        }
        // Banded Cholesky of M[i][j] = acf[|u_i - u_j|] (0 beyond the order), lower band by rows.
        let ridge = acf[0] * 1e-9 + 1e-300;
        for i in 0..m {
            let j0 = i.saturating_sub(bw);
            for j in j0..=i {
                let d = self.unknowns[i] - self.unknowns[j];
                let mut s = if d <= p { acf[d] } else { 0.0 };
                if i == j {
                    s += ridge;
                }
                let k0 = j0.max(j.saturating_sub(bw));
                for k in k0..j {
                    s -= self.band[i * stride + (i - k)] * self.band[j * stride + (j - k)];
                }
                if i == j {
                    self.band[i * stride] = s.max(ridge).sqrt();
                } else {
                    self.band[i * stride + (i - j)] = s / self.band[j * stride];
                }
            }
        }
        // Forward then backward substitution, in place in rhs.
        for i in 0..m {
            let mut s = self.rhs[i];
            for k in i.saturating_sub(bw)..i {
                s -= self.band[i * stride + (i - k)] * self.rhs[k];
            }
            self.rhs[i] = s / self.band[i * stride];
        }
        for i in (0..m).rev() {
            let mut s = self.rhs[i];
            for k in i + 1..(i + bw + 1).min(m) {
                s -= self.band[k * stride + (k - i)] * self.rhs[k];
            }
            self.rhs[i] = s / self.band[i * stride];
        }
        let Some((positive, negative)) = clip_levels else {
            for (i, &n) in self.unknowns.iter().enumerate() {
                x[n] = self.rhs[i];
            }
            return true;
        };
        // The clipped value's sign says which side of the clip level the true sample lies on.
        let mut ok = true;
        let mut u = 0;
        for (i, &n) in missing.iter().enumerate() {
            if self.fixed[i] {
                continue;
            }
            let value = self.rhs[u];
            u += 1;
            let (sign, level) = if x[n] >= 0.0 {
                (1.0, positive)
            } else {
                (-1.0, negative)
            };
            if value * sign < level {
                self.fixed[i] = true;
                x[n] = sign * level;
                ok = false;
            } else {
                x[n] = value;
            }
        }
        ok
    }
}

/// The dot product of the common length of `a` and `b`, in four interleaved partial sums (which
/// the compiler keeps in vector registers) instead of one serial chain.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(u, v)| u * v)
        .sum();
    for (u, v) in a4.zip(b4) {
        for ((s, &x), &y) in sums.iter_mut().zip(u).zip(v) {
            *s += x * y;
        }
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// Levinson-Durbin recursion: prediction coefficients `a[1..=p]` from autocorrelation `r[0..=p]`;
/// returns the final prediction-error power (same scale as `r[0]`).
pub fn levinson(r: &[f64], a: &mut [f64], scratch: &mut [f64]) -> f64 {
    let p = r.len() - 1;
    a.fill(0.0);
    let mut error = r[0];
    if error <= 0.0 {
        return 0.0;
    }
    for i in 1..=p {
        let mut acc = r[i];
        for j in 1..i {
            acc -= a[j] * r[i - j];
        }
        let k = acc / error;
        scratch[..i].copy_from_slice(&a[..i]);
        a[i] = k;
        for j in 1..i {
            a[j] = scratch[j] - k * scratch[i - j];
        }
        error *= 1.0 - k * k;
        if error <= 0.0 {
            error = r[0] * 1e-12;
            break;
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar2_signal(n: usize) -> Vec<f64> {
        // A resonance at about 1 kHz (44.1 kHz) driven by deterministic noise.
        let (r, w) = (0.99f64, 2.0 * std::f64::consts::PI * 1000.0 / 44_100.0);
        let (a1, a2) = (2.0 * r * w.cos(), -r * r);
        let mut state = 12345u64;
        let mut x = vec![0.0; n];
        for i in 2..n {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let e = ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
            x[i] = a1 * x[i - 1] + a2 * x[i - 2] + 0.01 * e;
        }
        x
    }

    #[test]
    fn fit_recovers_a_known_ar2_model() {
        let x = ar2_signal(20_000);
        let mut model = ArModel::new(2, 4);
        model.fit(&x);
        let (r, w) = (0.99f64, 2.0 * std::f64::consts::PI * 1000.0 / 44_100.0);
        assert!((model.coefficients()[1] - 2.0 * r * w.cos()).abs() < 0.01);
        assert!((model.coefficients()[2] + r * r).abs() < 0.01);
    }

    /// Interpolating a 40-sample gap of a resonant signal recovers it to within a few percent of its
    /// RMS; the interpolation error bound the declicker relies on.
    #[test]
    fn interpolation_error_is_small_on_a_predictable_signal() {
        let clean = ar2_signal(4000);
        let mut x = clean.clone();
        let gap: Vec<usize> = (2000..2040).collect();
        for &n in &gap {
            x[n] = 0.7;
        }
        let mut model = ArModel::new(16, 64);
        model.fit(&clean[1000..3000]);
        assert!(model.interpolate(&mut x, &gap, None));
        let err: f64 = gap.iter().map(|&n| (x[n] - clean[n]).powi(2)).sum::<f64>() / 40.0;
        let sig: f64 = gap.iter().map(|&n| clean[n].powi(2)).sum::<f64>() / 40.0;
        let ratio_db = 10.0 * (err / sig).log10();
        assert!(
            ratio_db < -12.0,
            "gap error only {ratio_db:.1} dB below the signal"
        );
    }

    /// Constrained interpolation keeps rebuilt samples beyond the clip level.
    #[test]
    fn constrained_interpolation_stays_beyond_the_clip_level() {
        let clean: Vec<f64> = (0..2000)
            .map(|n| (2.0 * std::f64::consts::PI * 300.0 * n as f64 / 44_100.0).sin())
            .collect();
        let level = 0.6;
        let mut x: Vec<f64> = clean.iter().map(|v| v.clamp(-level, level)).collect();
        let missing: Vec<usize> = (200..1800).filter(|&n| clean[n].abs() > level).collect();
        let mut model = ArModel::new(16, 2000);
        model.fit(&clean);
        assert!(model.interpolate(&mut x, &missing, Some((level, level))));
        for &n in &missing {
            assert!(x[n].abs() >= level - 1e-12);
        }
        let err = missing
            .iter()
            .map(|&n| (x[n] - clean[n]).abs())
            .sum::<f64>()
            / missing.len() as f64;
        let damage =
            missing.iter().map(|&n| clean[n].abs() - level).sum::<f64>() / missing.len() as f64;
        assert!(
            err < 0.5 * damage,
            "mean error {err}, clipping removed {damage} on average"
        );
    }
}
