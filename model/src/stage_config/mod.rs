//! Each stage's configuration, as a profile spells it, with its validation. The engine builds the
//! running stage from it.
//!
//! Every struct is `deny_unknown_fields` and has a `validate` method returning the first
//! [`crate::config::InvalidValue`] it finds, keyed relative to the struct (`ratio`,
//! `bands[1].gain_db`); the profile prefixes the stage's position.

mod compressor;
mod deesser;
mod dither;
mod encode;
mod eq;
mod highpass;
mod limiter;
mod multiband;
pub mod restore;
mod stereo;

pub use compressor::{CompressorConfig, Detector};
pub use deesser::DeesserConfig;
pub use dither::DitherMode;
pub use encode::{Container, EncodeSpec};
pub use eq::{EqBand, EqConfig, MAX_BANDS};
pub use highpass::HighpassConfig;
pub use limiter::LimiterConfig;
pub use multiband::{BandConfig, MultibandConfig};
pub use stereo::StereoConfig;
