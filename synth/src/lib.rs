//! lathe's test material: a deterministic, music-like track generator for the demo (`lathe demo`),
//! the tests and the benchmarks, the scores their restoration checks compute, and the CPU timer the
//! benches read. Nothing here is part of a master's path.
//!
//! The crate depends on no other lathe crate, so the engine's own unit tests can use it (as a
//! dev-dependency) without a second `AudioBlock` type: [`TrackSynth::read`] writes planar `f32` into
//! buffers the caller owns, and the caller copies them into whatever block type it works on.
//!
//! - [`TrackSynth`], [`TrackRecipe`], [`Style`], [`demo_album`]: the generator;
//! - [`write_wav`]: a recipe rendered to a WAV file;
//! - [`damage`]: the defects of old transfers, added with a fixed seed;
//! - [`score`]: how close a processed signal is to the clean one;
//! - [`cpu_time`]: bench support, the calling thread's CPU time.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cpu_time;
pub mod damage;
mod generator;
pub mod score;
mod wav;

pub use generator::{Style, TrackRecipe, TrackSynth, demo_album};
pub use wav::{WavError, write_wav};
