//! Compiles the `.proto` files with protox (no system `protoc`), generates the prost messages
//! and tonic clients and servers, and writes the encoded file descriptor set for gRPC server
//! reflection.

use std::path::PathBuf;

/// Every `.proto` file of the crate, relative to `proto/`.
const PROTOS: &[&str] = &[
    "opni/metrics/common/v1/common.proto",
    "opni/metrics/node/v1/node.proto",
    "opni/metrics/remote/v1/remote.proto",
    "opni/metrics/capability/v1/capability.proto",
    "opni/metrics/nodeconfig/v1/nodeconfig.proto",
    "opni/metrics/cortexops/v1/cortexops.proto",
    "opni/metrics/cortexadmin/v1/cortexadmin.proto",
    "opni/metrics/clusters/v1/clusters.proto",
    "opni/metrics/bootstrap/v1/bootstrap.proto",
    "opni/metrics/rbac/v1/rbac.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    // Source info carries the comments into the generated docs; imports put the well-known
    // types into the descriptor set, which reflection clients need.
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(out_dir.join("opni_metrics_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Deterministic maps that convert to the core's BTreeMaps without re-sorting.
        .btree_map(".")
        // `bytes::Bytes` for bytes fields: remote-write bodies are forwarded without a copy.
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
