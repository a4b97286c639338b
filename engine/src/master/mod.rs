//! Mastering stages: tone, dynamics, stereo image, level, true-peak limiting and word-length reduction.
//! One file per stage; each pairs a serde config type with the runtime [`crate::Stage`] it builds.

pub mod biquad;
pub mod compressor;
pub mod deesser;
pub mod dither;
pub mod eq;
pub mod gain;
pub mod highpass;
pub mod limiter;
pub mod multiband;
pub mod oversample;
pub mod stereo;
