//! Access control from the command line, with real processes: the gateway binary, an agent
//! that joins with a bootstrap token (so one cluster is registered), and the `opni-metrics` CLI
//! driving `rbac`, `keys` and `query` — the admin token, API keys, and an admin client
//! certificate on a TLS management listener. The upstream is a scripted HTTP server that
//! answers every query with one fixed vector and records the tenants it was asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use opni_metrics_tests::pki::{Leaf, Pki};
use opni_metrics_tests::prometheus::free_port;
use opni_metrics_tests::upstream::{Behaviour, Upstream};

/// What the upstream answers to every query.
const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"node"},"value":[1714564800,"1"]}]}}"#;

struct Gateway {
    _proc: common::Daemon,
    grpc: u16,
    mgmt: u16,
    dir: PathBuf,
}

impl Gateway {
    /// Starts the gateway binary; `management_tls` is extra YAML under `management:`.
    async fn start(dir: &Path, upstream: &str, management_tls: &str) -> Self {
        let g = common::GatewayProcess::start(dir, upstream, None, management_tls, "", "").await;
        Self { _proc: g.proc, grpc: g.grpc, mgmt: g.mgmt, dir: g.dir }
    }

    /// The CLI with `credentials` (no admin token unless given) and `args`.
    async fn cli_as(&self, credentials: &[String], args: &[&str]) -> Output {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_opni-metrics"));
        for var in ["API_KEY", "API_KEY_FILE", "ADDRESS", "TLS_CA", "TLS_CERT", "TLS_KEY", "TLS_SERVER_NAME"] {
            c.env_remove(format!("OPNI_METRICS_{var}"));
        }
        // a token file that does not exist, unless `credentials` name one
        c.env("OPNI_METRICS_TOKEN_FILE", self.dir.join("no-such.token"))
            .arg(format!("--address=127.0.0.1:{}", self.mgmt))
            .args(credentials)
            .args(args);
        c.output().await.unwrap()
    }

    /// The CLI as the admin (the token file the gateway wrote).
    async fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&[format!("--token-file={}", self.dir.join("admin.token").display())], args).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args).await;
        assert!(o.status.success(), "opni-metrics {args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }

    /// `query` with an API key.
    async fn query_with(&self, key: &str, args: &[&str]) -> Output {
        let mut a = vec!["query"];
        a.extend(args);
        self.cli_as(&[format!("--api-key={key}")], &a).await
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails (non-zero, `words` in stderr) or panics with what it printed.
fn fails_with(o: &Output, words: &[&str]) {
    assert!(!o.status.success(), "expected a failure, got: {}", stdout(o));
    let e = stderr(o);
    assert!(words.iter().all(|w| e.contains(w)), "expected {words:?} in: {e}");
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_bindings_and_keys_decide_what_a_query_may_read() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(Behaviour::Answer {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: VECTOR.into(),
    })
    .await;
    let gw = Gateway::start(tmp.path(), &upstream.url(), "").await;

    // one registered cluster, c1: an agent joins with a bootstrap token (no Prometheus)
    let token = gw.ok(&["tokens", "create", "--ttl", "10m"]).await.trim().to_owned();
    let agent_port = free_port();
    let _agent = common::Daemon::spawn_raw(
        env!("CARGO_BIN_EXE_opni-metrics-agent"),
        vec![
            format!("--listen=127.0.0.1:{agent_port}"),
            format!("--gateway=127.0.0.1:{}", gw.grpc),
            "--gateway-server-name=localhost".into(),
            format!("--bootstrap-token={token}"),
            "--cluster-id=c1".into(),
            format!("--gateway-ca={}", gw.dir.join("pki/ca.pem").display()),
            format!("--data-dir={}", tmp.path().join("agent").display()),
            "--driver=none".into(),
            "--log-level=warn".into(),
        ],
        format!("http://127.0.0.1:{agent_port}/readyz"),
    )
    .await;
    assert_eq!(gw.json(&["clusters", "list"]).await[0]["id"], "c1");

    // bad input is refused before any call, naming what is wrong
    let o = gw.cli(&["rbac", "bindings", "create", "ops", "--role", "readers", "--subject", "alice"]).await;
    fails_with(&o, &["\"alice\"", "user:NAME or group:NAME"]);
    fails_with(&gw.cli(&["rbac", "roles", "create", "empty"]).await, &["names no cluster"]);
    fails_with(
        &gw.cli(&["rbac", "roles", "create", "r", "--selector-expr", "env Maybe x"]).await,
        &["--selector-expr"],
    );

    // a role for c1 and a cluster that never joined, granted to alice and the group ops
    gw.ok(&["rbac", "roles", "create", "readers", "--cluster", "c1", "--cluster", "ghost"]).await;
    assert_eq!(strings(&gw.json(&["rbac", "roles", "get", "readers"]).await[0]["clusters"]), ["c1", "ghost"]);
    let o = gw.cli(&["rbac", "bindings", "create", "ops", "--role", "missing", "--subject", "user:alice"]).await;
    fails_with(&o, &["missing"]);
    gw.ok(&[
        "rbac",
        "bindings",
        "create",
        "ops",
        "--role",
        "readers",
        "--subject",
        "user:alice",
        "--subject",
        "group:ops",
    ])
    .await;
    let bindings = gw.json(&["rbac", "bindings", "list"]).await;
    assert_eq!(bindings[0]["role"], "readers");
    assert_eq!(strings(&bindings[0]["subjects"]), ["user:alice", "group:ops"]);

    // only registered clusters are readable
    assert_eq!(strings(&gw.json(&["rbac", "readable", "--subject", "alice"]).await["clusters"]), ["c1"]);
    assert!(strings(&gw.json(&["rbac", "readable", "--subject", "bob"]).await["clusters"]).is_empty());
    let by_group = gw.json(&["rbac", "readable", "--subject", "bob", "--group", "ops"]).await;
    assert_eq!(strings(&by_group["clusters"]), ["c1"]);

    // API keys: the key is printed once, never listed
    let alice = gw.json(&["keys", "create", "alice-key", "--subject", "alice"]).await;
    let key = alice["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("omk_{}_", alice["id"].as_str().unwrap())), "{alice}");
    let o = gw.cli(&["keys", "create", "nobody"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let nobody = stdout(&o).trim().to_owned();
    assert!(nobody.starts_with("omk_") && stderr(&o).contains("shown only now"), "{nobody} / {}", stderr(&o));
    let secret = key.rsplit('_').next().unwrap();
    for listing in [gw.ok(&["keys", "list"]).await, gw.ok(&["keys", "list", "-o", "json"]).await] {
        assert!(listing.contains("alice-key") && listing.contains("apikey:nobody"), "{listing}");
        assert!(!listing.contains(secret), "a key's secret was listed: {listing}");
    }

    // alice's key reads c1 only: the upstream is asked for c1's tenant and nothing else
    let o = gw.query_with(&key, &["up"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(r#"up{job="node"}"#) && stdout(&o).contains("2024-05-01T12:00:00Z"), "{}", stdout(&o));
    let asked: Vec<Vec<String>> = upstream.requests().into_iter().map(|r| r.tenants).collect();
    assert_eq!(asked, [["c1"]]);
    fails_with(&gw.query_with(&key, &["up", "--cluster", "ghost"]).await, &["permissiondenied", "ghost"]);
    // a reader may not act on the whole Cortex, nor manage access
    fails_with(&gw.cli_as(&[format!("--api-key={key}")], &["admin", "flush"]).await, &["permissiondenied"]);
    fails_with(&gw.cli_as(&[format!("--api-key={key}")], &["rbac", "roles", "list"]).await, &["unauthenticated"]);

    // a key without a binding reads nothing
    fails_with(&gw.query_with(&nobody, &["up"]).await, &["permissiondenied", "no role binding"]);

    // a revoked key is refused; the other key still works
    gw.ok(&["keys", "revoke", "alice-key"]).await;
    fails_with(&gw.query_with(&key, &["up"]).await, &["unauthenticated"]);
    let left = gw.json(&["keys", "list"]).await;
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["name"], "nobody");

    // a malformed key is refused by the CLI itself, naming the expected form
    fails_with(&gw.query_with("omk_123", &["up"]).await, &["omk_<16 hex digits>_<64 hex digits>"]);

    // the admin reads every registered cluster, a range query too
    let o = gw.cli(&["query", "up", "--start", "-1h", "--step", "1m", "-o", "json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["resultType"], "vector");
    assert_eq!(upstream.requests().last().unwrap().tenants, ["c1"]);
    fails_with(&gw.cli(&["query", "up", "--start", "-1h", "--end", "-2h"]).await, &["--end", "before --start"]);

    // a granted role cannot be deleted; without its binding it can
    fails_with(&gw.cli(&["rbac", "roles", "delete", "readers"]).await, &["failedprecondition"]);
    gw.ok(&["rbac", "bindings", "delete", "ops"]).await;
    gw.ok(&["rbac", "roles", "delete", "readers"]).await;
    assert!(gw.json(&["rbac", "roles", "list"]).await.as_array().unwrap().is_empty());
    assert!(strings(&gw.json(&["rbac", "readable", "--subject", "alice"]).await["clusters"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_certificate_reaches_a_tls_management_listener_without_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"), "mgmt");
    let server = pki.gateway("mgmt-server");
    let admin = pki.issue("admin", &Leaf::default(), pki.ca_path());
    let agent = pki.agent("agent", "c1");
    let tls = format!(
        "  tls:\n    cert: {}\n    key: {}\n    clientCa: {}\n",
        server.cert.display(),
        server.key.display(),
        pki.ca_path().display()
    );
    let upstream = Upstream::start(Behaviour::status(200)).await;
    let gw = Gateway::start(tmp.path(), &upstream.url(), &tls).await;
    let with = |c: &opni_metrics_tests::pki::CertFiles| {
        vec![
            format!("--tls-ca={}", pki.ca_path().display()),
            format!("--tls-cert={}", c.cert.display()),
            format!("--tls-key={}", c.key.display()),
        ]
    };

    // the token file does not exist: the certificate alone authenticates
    let o = gw.cli_as(&with(&admin), &["rbac", "roles", "create", "r", "--cluster", "c1"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gw.cli_as(&with(&admin), &["rbac", "roles", "list", "-o", "json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0]["name"], "r");

    // an agent's certificate is not an admin's
    fails_with(&gw.cli_as(&with(&agent), &["rbac", "roles", "list"]).await, &["permissiondenied", "agent's"]);
    // without a certificate, the missing token file is the error
    let o = gw.cli_as(&[format!("--tls-ca={}", pki.ca_path().display())], &["rbac", "roles", "list"]).await;
    fails_with(&o, &["reading the admin token", "no-such.token"]);
}
