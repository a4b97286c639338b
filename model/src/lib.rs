//! lathe's model: the types every part of lathe shares and their validation, with no audio or
//! network dependencies (on the pattern of camilladsp's configuration crate).
//!
//! - [`profile`]: mastering profiles and the built-in presets; [`stage_config`]: each stage's
//!   configuration; [`config`]: the range checks they share.
//! - [`catalog`]: the catalogue manifest (albums, tracks, outlets).
//! - [`tags`]: the tags carried from a source to its master.
//! - [`defects`]: a recording's measured defects; [`restore_plan`]: the restorers they call for.
//!
//! The engine builds runtime stages from these types; the coordinator plans from them without
//! linking a codec.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod album_level;
pub mod analysis;
pub mod catalog;
pub mod config;
pub mod defects;
pub mod delivery;
pub mod error;
pub mod gating;
pub mod level;
pub mod level_rule;
pub mod platforms;
pub mod plot;
pub mod profile;
pub mod report;
pub mod restore_plan;
pub mod stage_config;
pub mod tags;

pub use error::{Error, Result};
