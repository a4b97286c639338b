//! lathe's audio engine: decode, resample, restore, master, measure, encode and tag audio, one track
//! at a time and in bounded memory. No networking: the coordinator and workers drive this crate.
#![deny(missing_docs)]

pub mod album;
pub mod atomic_file;
pub mod audio;
pub mod calibration;
pub mod chain;
pub mod decode;
pub mod encode;
pub mod error;
#[cfg(test)]
mod level_rule_tests;
pub mod loudness;
pub mod master;
mod math;
mod pass;
pub mod plot;
pub mod progress;
pub mod qc;
pub mod render;
pub mod resample;
pub mod restore;
mod sample_hash;
pub mod spool;
pub mod stage;
pub mod tags;
#[cfg(test)]
pub(crate) mod testkit;
mod vector;

pub use audio::AudioBlock;
pub use error::{Error, Result};
pub use stage::Stage;
