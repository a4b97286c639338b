//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Each variant names the file or profile key at fault so
/// that the CLI can print a one-line error a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not audio lathe can read (unknown container or codec).
    #[error("{path}: unsupported or unrecognised audio: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was not recognised.
        reason: String,
    },
    /// The file is audio but could not be decoded (corrupt, truncated, empty).
    #[error("{path}: cannot decode: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The decoded audio holds NaN or infinite samples.
    #[error("{path}: non-finite sample (NaN or Inf) in channel {channel} at frame {frame}")]
    NonFiniteSample {
        /// The file.
        path: PathBuf,
        /// Channel index.
        channel: usize,
        /// Frame index from the start of the track.
        frame: u64,
    },
    /// The audio's shape is outside what lathe handles (channel count, sample rate).
    #[error("{path}: {reason}")]
    UnsupportedShape {
        /// The file.
        path: PathBuf,
        /// Which limit was exceeded.
        reason: String,
    },
    /// Resampling failed.
    #[error("resampler: {0}")]
    Resample(String),
    /// Encoding the output failed.
    #[error("{path}: cannot encode: {reason}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing tags failed.
    #[error("{path}: cannot write tags: {reason}")]
    Tag {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A profile, catalogue manifest or plan the model rejected (its message unchanged).
    #[error(transparent)]
    Model(#[from] lathe_model::Error),
    /// An album cannot be delivered as asked (Red Book limits, missing tracks, a codec failure).
    #[error("{album}: {reason}")]
    Delivery {
        /// The album (or track) at fault.
        album: String,
        /// What went wrong.
        reason: String,
    },
    /// The caller's progress callback asked the work to stop
    /// ([`std::ops::ControlFlow::Break`]); what the work had written so far is removed.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// True when the fault lies in the input itself (a source that cannot be read as audio, is
    /// empty, corrupt or outside lathe's limits; a profile, manifest or plan that is refused):
    /// the same input fails the same way on any machine, so trying again is pointless. False for
    /// faults of the machine doing the work (a file system error, an encoder failure, a stop).
    pub fn is_input_fault(&self) -> bool {
        match self {
            Self::Unsupported { .. }
            | Self::Decode { .. }
            | Self::NonFiniteSample { .. }
            | Self::UnsupportedShape { .. }
            | Self::Delivery { .. } => true,
            Self::Model(error) => !matches!(error, lathe_model::Error::Io { .. }),
            Self::Io { .. }
            | Self::Resample(_)
            | Self::Encode { .. }
            | Self::Tag { .. }
            | Self::Cancelled => false,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
