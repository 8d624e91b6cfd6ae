//! Compiles the `.proto` files under `proto/` with protox (pure Rust, no system
//! `protoc`) and generates prost messages, plus tonic clients and servers with the `grpc` feature.
//! The encoded descriptor set is also written to OUT_DIR so the server can
//! serve the JSON gateway with prost-reflect.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "proto/kv.proto",
    "proto/auth.proto",
    "proto/rpc.proto",
    "proto/v3lock.proto",
    "proto/v3election.proto",
    "proto/concord.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(PROTO_FILES, ["proto"])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut encoded = Vec::new();
    prost::Message::encode(&fds, &mut encoded)?;
    std::fs::write(out_dir.join("concord_descriptor.bin"), encoded)?;

    // Service code only with the `grpc` feature: without it the generated files
    // hold plain prost messages and never name tonic.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
