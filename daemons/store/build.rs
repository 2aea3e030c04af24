//! Generates the etcd v3 gRPC client (KV and Watch) of the etcd store from `proto/etcd/rpc.proto`,
//! our own minimal subset of etcd's API, with protox (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["etcd/rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Values are handed to the store's callers as `Bytes` without a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
