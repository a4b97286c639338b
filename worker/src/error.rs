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
    /// The render passed the worker's task time limit
    /// ([`WorkerSettings::task_time_limit`](crate::WorkerSettings::task_time_limit)) and was
    /// stopped.
    #[error("render took longer than the task time limit of {limit_s} s")]
    TimedOut {
        /// The limit, seconds.
        limit_s: f64,
    },
}

impl Error {
    /// True when the task's input is at fault, so that no worker can do better: the coordinator
    /// fails the task at once and does not count it against this worker.
    ///
    /// A render past the time limit is not: the engine's speed depends on the machine as much
    /// as on the track (a throttled or overloaded worker, a stalled disk), and the decoder
    /// already refuses sources too long to master in time. Another worker gets the task, and
    /// a track that is too slow everywhere fails once its attempts are used up.
    pub fn is_input_fault(&self) -> bool {
        match self {
            Self::Track { input_fault, .. } => *input_fault,
            Self::Engine(error) => error.is_input_fault(),
            Self::Farm(_)
            | Self::Io { .. }
            | Self::Stopped(_)
            | Self::Panicked(_)
            | Self::TimedOut { .. } => false,
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
