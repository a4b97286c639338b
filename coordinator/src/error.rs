//! The coordinator library's error type, and its one mapping to `tonic::Status`.

use std::path::PathBuf;

/// Everything that can go wrong in the farm's infrastructure and services.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The work queue (NATS JetStream or the in-process queue) failed.
    #[error("work queue: {0}")]
    Queue(String),
    /// The state store (etcd or the in-memory store) failed.
    #[error("state store: {0}")]
    State(String),
    /// A lease ran out or was revoked: whatever was registered under it is gone.
    #[error("state store: lease {lease} has expired")]
    LeaseExpired {
        /// The lease id.
        lease: i64,
    },
    /// A blob's bytes do not hash to the digest they were sent or stored with.
    #[error("blob {expected}: digest mismatch, the bytes hash to {actual}")]
    DigestMismatch {
        /// The digest the blob should have.
        expected: String,
        /// The digest of the bytes that arrived.
        actual: String,
    },
    /// A digest is not 64 lower-case hexadecimal characters.
    #[error("{0:?} is not a blob digest (64 hexadecimal characters)")]
    BadDigest(String),
    /// No blob with this digest is stored.
    #[error("blob {0} is not stored")]
    BlobNotFound(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No job with this id.
    #[error("job {0} does not exist")]
    JobNotFound(String),
    /// No task with this id.
    #[error("task {0} does not exist")]
    TaskNotFound(String),
    /// A request was malformed (names the field and what is wrong).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An upload would pass the cap on a blob's size.
    #[error(
        "upload refused: more than the coordinator's cap of {cap_bytes} bytes a blob \
         (lathe-coordinator --max-upload-bytes)"
    )]
    UploadTooLarge {
        /// The cap, bytes.
        cap_bytes: u64,
    },
    /// The caller presented no valid credentials (no token, a malformed, unknown or revoked one).
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The caller's credentials do not allow the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {reason}")]
    CorruptRecord {
        /// The state-store key.
        key: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// A compare-and-swap transition kept losing to concurrent writers.
    #[error("{key}: concurrent updates, gave up after {attempts} attempts")]
    Contention {
        /// The state-store key.
        key: String,
        /// How many times the transition was tried.
        attempts: u32,
    },
    /// A gRPC call to the coordinator failed: its message, then its code. The status is not
    /// the error's source, so a chain of causes does not print the message twice.
    #[error("coordinator: {} ({:?})", .0.message(), .0.code())]
    Rpc(tonic::Status),
    /// Connecting to the coordinator failed.
    #[error("cannot connect to the coordinator at {url}: {reason}")]
    Connect {
        /// The address tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The model refused a profile, manifest or plan.
    #[error(transparent)]
    Model(#[from] lathe_model::Error),
    /// Logging or the OpenTelemetry exporter could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc(status)
    }
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// True when trying again later may succeed (a server was unreachable, a write lost a race); false
    /// when the request itself is wrong or refers to something that does not exist.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Queue(_)
            | Self::State(_)
            | Self::Contention { .. }
            | Self::Connect { .. }
            | Self::Io { .. } => true,
            Self::Rpc(status) => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Aborted | tonic::Code::ResourceExhausted
            ),
            _ => false,
        }
    }
}

/// The one place errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Rpc(status) => status,
            Error::JobNotFound(_) | Error::TaskNotFound(_) | Error::BlobNotFound(_) => {
                tonic::Status::not_found(message)
            }
            Error::InvalidRequest(_) | Error::BadDigest(_) | Error::Model(_) => {
                tonic::Status::invalid_argument(message)
            }
            Error::DigestMismatch { .. } => tonic::Status::data_loss(message),
            // Not `resource_exhausted`, which clients take as "try again".
            Error::UploadTooLarge { .. } => tonic::Status::out_of_range(message),
            Error::Contention { .. } => tonic::Status::aborted(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::LeaseExpired { .. } => tonic::Status::failed_precondition(message),
            Error::Queue(_) | Error::State(_) | Error::Connect { .. } => {
                tonic::Status::unavailable(message)
            }
            Error::Io { .. } | Error::CorruptRecord { .. } | Error::Telemetry(_) => {
                tonic::Status::internal(message)
            }
        }
    }
}

/// The coordinator library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
