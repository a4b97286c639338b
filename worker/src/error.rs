//! The worker library's error type.

/// What can stop a worker or one of its tasks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The farm's infrastructure (queue, state store, coordinator) failed.
    #[error(transparent)]
    Farm(#[from] lathe_coordinator::Error),
    /// The engine failed on the track (the message names the file and the reason).
    #[error(transparent)]
    Engine(#[from] lathe_engine::Error),
    /// The engine failed on the track; the message names the source by its file name.
    #[error("{message}")]
    Track {
        /// What went wrong.
        message: String,
        /// The input itself is at fault ([`lathe_engine::Error::is_input_fault`]).
        input_fault: bool,
    },
    /// A local file or folder could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The task was stopped (its job was cancelled, or the worker is handing it back).
    #[error("stopped: {0}")]
    Stopped(&'static str),
    /// The engine thread panicked.
    #[error("the engine panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// True when the task's input is at fault, so that no worker can do better: the coordinator
    /// fails the task at once and does not count it against this worker.
    pub fn is_input_fault(&self) -> bool {
        match self {
            Self::Track { input_fault, .. } => *input_fault,
            Self::Engine(error) => error.is_input_fault(),
            Self::Farm(_) | Self::Io { .. } | Self::Stopped(_) | Self::Panicked(_) => false,
        }
    }
}

/// A profile or manifest the model refused is an engine failure on the track, as it was when the
/// engine parsed profiles.
impl From<lathe_model::Error> for Error {
    fn from(error: lathe_model::Error) -> Self {
        Self::Engine(error.into())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Farm(lathe_coordinator::Error::Rpc(status))
    }
}

/// The worker library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
