//! Generates the gRPC code from `proto/lathe.proto` with Debian's `protoc` (package protobuf-compiler).

fn main() -> std::io::Result<()> {
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: blob chunks move without copies.
        .bytes(".")
        // Codec buffers sized for a blob chunk: messages are encoded and decoded without regrowth.
        .codec_path("crate::ChunkCodec")
        .compile_protos(&["proto/lathe.proto"], &["proto"])
}
