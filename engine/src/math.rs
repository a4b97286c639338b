//! The natural exponential in plain arithmetic, for the gain laws that turn a log-domain gain into
//! a linear one every frame (the limiter's) or every control step (the compressor's).
//!
//! Two reasons not to call libm there:
//! - **The same bits everywhere.** glibc picks its `exp` at run time by CPU (an FMA version and a
//!   plain one), and the two are not guaranteed to round alike, so a master's bytes could depend on
//!   the worker's CPU. [`exp`] uses only additions, multiplications and bit operations, in a fixed
//!   order (Rust never fuses a multiplication and an addition), so every machine computes the same
//!   result, and so does every vector kernel of [`exp_each`].
//! - **Speed.** It is branch-free, so [`exp_each`] runs eight values at once where the CPU has
//!   AVX-512; a libm call takes one value at a time.
//!
//! It is accurate to 2 units in the last place (tested against libm below): far finer than any
//! audible or measurable difference.

use crate::vector::VectorKernel;

/// `ln 2` split in two: the high part has its low 32 bits zero, so `k * LN2_HI` is exact for any
/// exponent `k` an `f64` has.
/// (0.693147180369..., and the remainder 1.9082149292705877e-10, as fdlibm has them.)
const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);

/// 1.5 * 2^52: adding it rounds an `f64` below 2^51 in magnitude to an integer (ties to even), and
/// the sum's low bits then hold that integer in two's complement.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// Below this, [`exp`] returns `exp(EXP_MIN_ARG)` (about 3e-308) rather than a subnormal or 0.
pub(crate) const EXP_MIN_ARG: f64 = -708.0;
/// Above this, [`exp`] returns `exp(EXP_MAX_ARG)` (about 8e307) rather than infinity.
pub(crate) const EXP_MAX_ARG: f64 = 709.0;

/// `1 / n!` for `n` from 0 to 13: the Taylor coefficients of `e^r`.
const INVERSE_FACTORIALS: [f64; 14] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

/// `e^x`, within 2 units in the last place. Arguments outside [`EXP_MIN_ARG`]..=[`EXP_MAX_ARG`]
/// are clamped to that range; a NaN gives a NaN. `exp(0.0)` is exactly 1.
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    let x = x.clamp(EXP_MIN_ARG, EXP_MAX_ARG);
    // x = k ln 2 + r with k an integer and |r| <= ln 2 / 2.
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // e^r by its Taylor series to r^13 (the next term is below 5e-18 for |r| <= 0.35), by Estrin's
    // scheme: pairs, then pairs of pairs, so that a single call waits on four multiply-adds in a
    // row where Horner's rule waits on thirteen.
    let c = &INVERSE_FACTORIALS;
    let (r2, r4) = (r * r, (r * r) * (r * r));
    let r8 = r4 * r4;
    let pairs = [
        c[0] + c[1] * r,
        c[2] + c[3] * r,
        c[4] + c[5] * r,
        c[6] + c[7] * r,
        c[8] + c[9] * r,
        c[10] + c[11] * r,
        c[12] + c[13] * r,
    ];
    let quads = [
        pairs[0] + pairs[1] * r2,
        pairs[2] + pairs[3] * r2,
        pairs[4] + pairs[5] * r2,
        pairs[6],
    ];
    let e_r = (quads[0] + quads[1] * r4) + (quads[2] + quads[3] * r4) * r8;
    // 2^k, built from its exponent bits: k sits in the low bits of `shifted` (|k| <= 1022 here).
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_to_k = f64::from_bits(k_bits.wrapping_add(1023) << 52);
    e_r * two_to_k
}

/// Replaces every value of `values` by its [`exp`], on the widest vectors the CPU has; every kernel
/// gives the same bits.
pub(crate) fn exp_each(kernel: VectorKernel, values: &mut [f64]) {
    match kernel {
        VectorKernel::Baseline => values.iter_mut().for_each(|v| *v = exp(*v)),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `VectorKernel` names a kernel only where the CPU has its features (AVX2 here), the
        // one requirement of `exp_each_avx2`.
        VectorKernel::Avx2 => unsafe { exp_each_avx2(values) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: as above, for AVX-512F and `exp_each_avx512`.
        VectorKernel::Avx512 => unsafe { exp_each_avx512(values) },
    }
}

/// [`exp_each`] compiled for 256-bit vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exp_each_avx2(values: &mut [f64]) {
    values.iter_mut().for_each(|v| *v = exp(*v));
}

/// [`exp_each`] compiled for 512-bit vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_each_avx512(values: &mut [f64]) {
    values.iter_mut().for_each(|v| *v = exp(*v));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// A deterministic spread of values from `low` to `high`, ends included.
    fn spread(low: f64, high: f64, count: usize) -> impl Iterator<Item = f64> {
        (0..=count).map(move |i| low + (high - low) * i as f64 / count as f64)
    }

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut worst = 0;
        for x in spread(-700.0, 700.0, 1_000_003).chain(spread(-1.0, 1.0, 1_000_003)) {
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        eprintln!("exp: worst {worst} ulps from libm");
        assert!(worst <= 2, "{worst} ulps");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1e6), exp(EXP_MIN_ARG));
        assert!(exp(f64::NAN).is_nan());
    }

    #[test]
    fn every_vector_kernel_gives_the_same_bits() {
        let values: Vec<f64> = spread(-30.0, 5.0, 10_007)
            .chain([0.0, -0.0, 1e-300, -745.0, 710.0])
            .collect();
        let expected: Vec<u64> = values.iter().map(|&x| exp(x).to_bits()).collect();
        for kernel in VectorKernel::available() {
            let mut computed = values.clone();
            exp_each(kernel, &mut computed);
            let bits: Vec<u64> = computed.iter().map(|v| v.to_bits()).collect();
            assert!(bits == expected, "{kernel:?}");
        }
    }
}
