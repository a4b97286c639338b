//! Generates the gRPC code from `proto/lathe.proto` with Debian's `protoc` (package protobuf-compiler).

fn main() -> std::io::Result<()> {
    tonic_prost_build::configure().compile_protos(&["proto/lathe.proto"], &["proto"])
}
