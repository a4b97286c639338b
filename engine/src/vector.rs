//! Which vector instructions the hottest loops run on, chosen once at run time.
//!
//! A few loops dominate the engine's time and vectorise well: the true-peak interpolation of the
//! meters ([`crate::loudness`]) and of the limiter's detector ([`crate::master::oversample`]). They are
//! written once, generic over how many values they keep in flight, and compiled a second and third
//! time with AVX2 and AVX-512 enabled; [`VectorKernel::detect`] picks the widest the CPU has. Every
//! version forms every value with the same `f32` multiplications, additions and comparisons in the
//! same order (Rust never fuses a multiplication and an addition, and the wider versions only work on
//! more values at once), so every machine computes the same bits and masters stay byte-identical
//! across workers. Each caller's tests check that.
//!
//! Calling a function compiled for features the CPU may lack is `unsafe`; these calls are the
//! engine's only unsafe code, each with the reason it is sound beside it.

/// The vector instructions a kernel is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VectorKernel {
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
    /// 256-bit vectors. Only ever constructed where the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// 512-bit vectors. Only ever constructed where the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl VectorKernel {
    /// The widest kernel this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Baseline
    }

    /// Every kernel this CPU runs, for tests that they agree.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let mut kernels = vec![Self::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(Self::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Self::Avx512);
            }
        }
        kernels
    }
}
