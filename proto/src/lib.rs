//! lathe's gRPC protocol: the job API clients call, the worker API workers call, and the [`v1::Task`]
//! message the coordinator publishes on the work queue. Generated from `proto/lathe.proto` by
//! tonic-prost-build (protoc comes from Debian's `protobuf-compiler`).
#![allow(missing_docs, clippy::unwrap_used)]

/// Version 1 of the protocol (`package lathe.v1`).
pub mod v1 {
    tonic::include_proto!("lathe.v1");
}

/// Bytes per chunk when a blob is streamed: large enough that per-message overhead is small, small
/// enough to stay under gRPC's default 4 MiB message limit.
pub const CHUNK_BYTES: usize = 1 << 20;
