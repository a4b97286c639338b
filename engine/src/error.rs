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
    /// The source holds more audio than lathe decodes from one file
    /// ([`crate::decode::MAX_SOURCE_SAMPLES`]): its header declares more (refused when the file is
    /// opened, before anything is decoded), or a stream that declares no length decoded past it.
    #[error(
        "{path}: {}",
        source_too_large(*.declared, *.frames, *.sample_rate_hz, *.channel_count, *.limit_samples)
    )]
    SourceTooLarge {
        /// The file.
        path: PathBuf,
        /// `true`: the header declares `frames`; `false`: `frames` were decoded when the stream
        /// passed the limit.
        declared: bool,
        /// Frames declared, or decoded so far.
        frames: u64,
        /// The sample rate, if known (a header may leave it to the codec).
        sample_rate_hz: Option<u32>,
        /// The channel count, if known (a header may leave it to the codec).
        channel_count: Option<usize>,
        /// The limit in samples (frames times channels).
        limit_samples: u64,
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
            | Self::SourceTooLarge { .. }
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

/// [`Error::SourceTooLarge`]'s words: what the source declares or decoded to, and the limit (in
/// samples, and as a duration of 192 kHz audio in 8 channels).
fn source_too_large(
    declared: bool,
    frames: u64,
    sample_rate_hz: Option<u32>,
    channel_count: Option<usize>,
    limit_samples: u64,
) -> String {
    let length = match sample_rate_hz.filter(|&rate| rate > 0) {
        Some(rate) => format!("{} at {rate} Hz", duration(frames as f64 / f64::from(rate))),
        None => format!("{frames} frames"),
    };
    let (shape, samples) = match channel_count {
        Some(channels) => (
            format!("{length} with {channels} channels"),
            u128::from(frames) * channels as u128,
        ),
        None => (length, u128::from(frames)),
    };
    // Three digits, unless they read the same as the limit's (a source just over it).
    let (mut samples_text, mut limit_text) = (
        format!("{:.2e}", samples as f64),
        format!("{:.2e}", limit_samples as f64),
    );
    if samples_text == limit_text {
        (samples_text, limit_text) = (samples.to_string(), limit_samples.to_string());
    }
    let limit = format!(
        "{limit_text} samples: {} at 192000 Hz with 8 channels",
        duration(limit_samples as f64 / (192_000.0 * 8.0))
    );
    if declared {
        format!(
            "the header declares {shape} ({samples_text} samples), more than lathe decodes \
             from one source ({limit})"
        )
    } else {
        format!(
            "decoding stopped after {shape} ({samples_text} samples), past the most lathe \
             decodes from one source ({limit}); the header declares no such length"
        )
    }
}

/// `seconds` in words: `24 h 0 min`, `3 min 20 s`, `1.500 s`.
fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        let minutes = (seconds / 60.0).floor() as u64;
        format!("{} h {} min", minutes / 60, minutes % 60)
    } else if seconds >= 60.0 {
        let whole = seconds.floor() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{seconds:.3} s")
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
