//! Exit codes of the daemon binaries: a bad configuration exits 64 naming the field, before
//! binding anything; a start failure that is not the configuration's (a port in use) exits 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn gateway(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_opni-metrics-gateway"))
        .args(args)
        .arg(format!("--data-dir={}", data_dir.display()))
        .env("OPNI_GATEWAY_LOG_LEVEL", "error")
        .output()
        .unwrap()
}

#[test]
fn a_bad_config_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let o = gateway(&["--upstream-url=ftp://cortex/api/v1/push", "--check-config"], dir.path());
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("upstream.url"), "{err}");
    let o = gateway(&["--management-listen=0.0.0.0:9091"], dir.path());
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("management.listen"));
    // nothing was created: refused before any state is touched
    assert!(!dir.path().join("admin.token").exists());
}

#[test]
fn a_port_in_use_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = gateway(
        &[
            &format!("--http-listen=127.0.0.1:{port}"),
            "--grpc-listen=127.0.0.1:0",
            "--management-listen=127.0.0.1:0",
            "--query-listen=127.0.0.1:0",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}

#[test]
fn the_shipped_gateway_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let config = &format!(
        "{}/../../deploy/gateway/gateway.yaml",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
    );
    let o = gateway(&["--config", config, "--check-config"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}
