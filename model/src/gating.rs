//! BS.1770-4 gating arithmetic over 400 ms block energies: the absolute and relative gates and the
//! integrated loudness of one programme or of several at once (an album). Pure arithmetic; the
//! engine's meter measures the block energies.

/// The absolute gate, LUFS (integrated loudness and loudness range).
pub const ABSOLUTE_GATE_LUFS: f64 = -70.0;
/// The integrated loudness's relative gate, LU below the absolute-gated loudness.
pub const INTEGRATED_RELATIVE_GATE_LU: f64 = -10.0;

/// Loudness, LUFS, of a weighted mean-square energy.
pub fn energy_to_lufs(energy: f64) -> f64 {
    -0.691 + 10.0 * energy.log10()
}

/// Weighted mean-square energy of a loudness, LUFS.
pub fn lufs_to_energy(lufs: f64) -> f64 {
    10f64.powf((lufs + 0.691) / 10.0)
}

/// The BS.1770-4 gated loudness, LUFS, of the gating blocks of one or more programmes taken as one
/// (an album's integrated loudness is gated over all its tracks' blocks at once); `None` when no
/// block passes the absolute gate.
pub fn gated_lufs(programmes: &[&[f64]]) -> Option<f64> {
    let absolute = lufs_to_energy(ABSOLUTE_GATE_LUFS);
    let mean_above = |threshold: f64| -> Option<f64> {
        let (sum, count) = programmes
            .iter()
            .flat_map(|blocks| blocks.iter())
            .filter(|&&e| e > threshold)
            .fold((0.0, 0usize), |(s, n), &e| (s + e, n + 1));
        (count > 0).then(|| sum / count as f64)
    };
    let relative = mean_above(absolute)? * 10f64.powf(INTEGRATED_RELATIVE_GATE_LU / 10.0);
    mean_above(absolute.max(relative)).map(energy_to_lufs)
}
