//! lathe's gRPC protocol: the job API clients call, the worker API workers call, and the [`v1::Task`]
//! message the coordinator publishes on the work queue. Generated from `proto/lathe.proto` by
//! tonic-prost-build (protoc comes from Debian's `protobuf-compiler`).
#![allow(missing_docs, clippy::unwrap_used)]

/// Version 1 of the protocol (`package lathe.v1`).
pub mod v1 {
    tonic::include_proto!("lathe.v1");
}

impl v1::TaskCounts {
    /// Every task of the job, whatever its state (`qc_failed` counts succeeded tasks again).
    pub fn total(&self) -> u32 {
        self.pending + self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }
}

impl v1::JobState {
    /// The state's word, as `lathe status`, its JSON and the dashboard print it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Unspecified => "unknown",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::CompletedWithFailures => "completed_with_failures",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Suspended => "suspended",
        }
    }
}

impl v1::TaskState {
    /// The state's word, as `lathe status`, its JSON and the dashboard print it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Unspecified => "unknown",
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Bytes per chunk when a blob is streamed: large enough that per-message overhead is small, small
/// enough to stay under gRPC's default 4 MiB message limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The codec every service uses: prost's, with buffers sized for a whole [`v1::BlobChunk`] (plus its
/// framing) where the message is one, so a chunk is encoded and decoded without its buffer regrowing
/// and copying as it fills. Other messages keep tonic's small default buffers.
#[derive(Debug, Clone)]
pub struct ChunkCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for ChunkCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for ChunkCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(buffer_settings::<T>())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(buffer_settings::<U>())
    }
}

/// Buffers for messages of type `M`: chunk-sized for blob chunks, tonic's defaults otherwise.
fn buffer_settings<M: 'static>() -> tonic::codec::BufferSettings {
    if std::any::TypeId::of::<M>() == std::any::TypeId::of::<v1::BlobChunk>() {
        // Room for the chunk's bytes, its digest field and the gRPC and protobuf framing; each chunk
        // goes to the transport as soon as it is encoded.
        tonic::codec::BufferSettings::new(CHUNK_BYTES + (4 << 10), CHUNK_BYTES)
    } else {
        tonic::codec::BufferSettings::default()
    }
}
