//! The model's error type.

use std::path::PathBuf;

/// Everything the model's parsing, validation and planning can report. Each variant names the file,
/// profile key or album at fault so that the CLI can print a one-line error a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A profile could not be parsed or holds an invalid value.
    #[error("profile {profile}: {key}: {reason}")]
    Profile {
        /// Profile name or file.
        profile: String,
        /// The offending key, as a dotted path (e.g. `stage[2].ratio`).
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// An album cannot be delivered as planned (a plan the outcomes do not fit).
    #[error("{album}: {reason}")]
    Delivery {
        /// The album (or track) at fault.
        album: String,
        /// What went wrong.
        reason: String,
    },
    /// A catalogue manifest is malformed or holds an invalid value.
    #[error("{manifest}: {item}: {reason}")]
    Catalogue {
        /// The manifest file (or folder).
        manifest: PathBuf,
        /// Where in it: `album[1] "Title" track 3 "Dusk"`, `job.outlets`, `line 12`.
        item: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The model's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
