//! The remote-write relay through real sockets and real mutual TLS: status rules, tenant
//! isolation, bad input, and identity checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{CLUSTER, Stack, WAIT, body};
use http::Method;
use opni_metrics_proto::remote::v1::PushRequest;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_tests::http::{push, send};
use opni_metrics_tests::pki::{Leaf, Pki};
use opni_metrics_tests::upstream::Behaviour;
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use tokio::sync::watch;

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Behaviour {
    Behaviour::Answer {
        status,
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rules_hold_end_to_end() {
    let stack = Stack::start(Behaviour::status(204)).await;
    let cases: &[(Behaviour, u16)] = &[
        (Behaviour::status(200), 200),
        (Behaviour::status(204), 204),
        (answer(202, &[], "dedup"), 202),
        (answer(400, &[], "out of order sample"), 400),
        (Behaviour::status(413), 413),
        (Behaviour::status(415), 415),
        (Behaviour::status(500), 503),
        (Behaviour::status(502), 503),
        (Behaviour::status(503), 503),
        (Behaviour::status(401), 503),
        (Behaviour::status(403), 503),
        (Behaviour::status(404), 503),
        (Behaviour::status(504), 504),
    ];
    for (behaviour, want) in cases {
        stack.upstream.set(behaviour.clone());
        let r = push(&stack.push_url(), body(10)).await.unwrap();
        assert_eq!(r.status.as_u16(), *want, "{behaviour:?}: {}", r.text());
        assert_ne!(r.status.as_u16(), 408);
    }
    // data errors pass their body through
    stack.upstream.set(answer(400, &[], "out of order sample"));
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.text(), "out of order sample");
    // a huge error page keeps its status; its body is cut at the gateway's limit (64 KiB)
    let page = format!("bad sample {}", "x".repeat(1 << 20));
    stack.upstream.set(answer(400, &[], &page));
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.status.as_u16(), 400, "{}", r.text().chars().take(200).collect::<String>());
    let text = r.text();
    assert!(text.starts_with("bad sample xxx") && text.ends_with("... (truncated)"), "{}", &text[..100]);
    assert!(text.len() <= (64 << 10) + 64, "{} bytes relayed", text.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_keep_retry_after() {
    let stack = Stack::start(answer(429, &[("Retry-After", "7")], "slow down")).await;
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.headers.get("retry-after").unwrap(), "7");

    let stack = Stack::start_with(
        answer(429, &[("Retry-After", "7")], ""),
        |g| g.remote_write.rate_limit_as_503 = true,
        |_| {},
    )
    .await;
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.status.as_u16(), 503, "gateway option answers 503 for senders that never retry 429");
    assert_eq!(r.headers.get("retry-after").unwrap(), "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_headers_travel_back() {
    let h = [
        ("X-Prometheus-Remote-Write-Samples-Written", "10"),
        ("X-Prometheus-Remote-Write-Histograms-Written", "0"),
        ("Set-Cookie", "no"),
    ];
    let stack = Stack::start(answer(204, &h, "")).await;
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(r.headers.get("x-prometheus-remote-write-samples-written").unwrap(), "10");
    assert_eq!(r.headers.get("x-prometheus-remote-write-histograms-written").unwrap(), "0");
    assert!(r.headers.get("set-cookie").is_none(), "only the remote-write headers are relayed");
}

/// A real remote write 2.0 body through agent and gateway: the upstream receives it byte for
/// byte with its 2.0 headers. An upstream that reports what it wrote has its
/// `X-Prometheus-Remote-Write-*-Written` headers relayed to the sender; one that does not
/// (a 1.x receiver that accepted the bytes) gets its 2xx relayed as it is: the agent never
/// invents counts, and Prometheus (which then cannot confirm what was written) decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_end_to_end() {
    use opni_metrics_tests::rw::v2;
    let v2_push = |url: String, body: Vec<u8>| async move {
        opni_metrics_tests::http::send(
            http::Method::POST,
            &url,
            &[
                ("content-type", v2::CONTENT_TYPE),
                ("content-encoding", "snappy"),
                ("x-prometheus-remote-write-version", "2.0.0"),
            ],
            body,
        )
        .await
        .unwrap()
    };
    let body = v2::encode(&v2::request(3, 1_700_000_000_000, "v2_metric"));
    let written = [
        ("X-Prometheus-Remote-Write-Samples-Written", "3"),
        ("X-Prometheus-Remote-Write-Histograms-Written", "0"),
        ("X-Prometheus-Remote-Write-Exemplars-Written", "0"),
    ];
    let stack = Stack::start_with(answer(204, &written, ""), |_| {}, |a| a.remote_write.validate = true).await;
    let r = v2_push(stack.push_url(), body.clone()).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
    assert_eq!(r.headers.get("x-prometheus-remote-write-samples-written").unwrap(), "3");
    assert_eq!(r.headers.get("x-prometheus-remote-write-exemplars-written").unwrap(), "0");
    let seen = stack.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].bytes, body.len(), "forwarded byte for byte");
    assert_eq!(seen[0].headers.get("content-type").unwrap(), v2::CONTENT_TYPE);
    assert_eq!(seen[0].headers.get("x-prometheus-remote-write-version").unwrap(), "2.0.0");
    assert_eq!(seen[0].tenants, [CLUSTER]);
    let m = opni_metrics_tests::http::get(&format!("http://{}/metrics", stack.gateway.as_ref().unwrap().http_addr))
        .await
        .unwrap()
        .text();
    assert!(m.contains(&format!("opni_gateway_remote_write_samples_written_total{{cluster=\"{CLUSTER}\"}} 3")), "{m}");
    // validate mode checks 2.0 too: a label reference past the symbol table
    let mut bad = v2::request(1, 1_700_000_000_000, "v2_metric");
    bad.timeseries[0].labels_refs[5] = 99;
    let r = v2_push(stack.push_url(), v2::encode(&bad)).await;
    assert_eq!(r.status.as_u16(), 400);
    assert!(r.text().contains("timeseries[0].labels_refs[5]: symbol reference 99 is out of range"), "{}", r.text());

    // an upstream that does not say what it wrote
    let stack = Stack::start(Behaviour::status(204)).await;
    let r = v2_push(stack.push_url(), body).await;
    assert_eq!(r.status.as_u16(), 204);
    assert!(r.headers.keys().all(|k| !k.as_str().ends_with("-written")), "no invented counts: {:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_upstream_answers_504_within_the_deadline() {
    let stack = Stack::start(Behaviour::Hang).await;
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.status.as_u16(), 504, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_upstream_is_503() {
    let port = opni_metrics_tests::prometheus::free_port();
    let stack = Stack::start_with(
        Behaviour::status(204),
        |g| g.upstream.url = format!("http://127.0.0.1:{port}/api/v1/push"),
        |_| {},
    )
    .await;
    let r = push(&stack.push_url(), body(10)).await.unwrap();
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_answers_503_at_once_while_the_gateway_is_down() {
    let mut stack = Stack::start(Behaviour::status(204)).await;
    assert_eq!(push(&stack.push_url(), body(1)).await.unwrap().status.as_u16(), 204);
    stack.gateway.take().unwrap().shutdown().await;
    let r = push(&stack.push_url(), body(1)).await.unwrap();
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_comes_only_from_the_certificate() {
    let stack = Stack::start(Behaviour::status(204)).await;
    let spoofed = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("X-Scope-OrgID", "evil"),
        ("x-scope-orgid", "evil|other"),
        ("X-SCOPE-ORGID", "evil2"),
    ];
    let r = send(Method::POST, &stack.push_url(), &spoofed, body(5)).await.unwrap();
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
    let reqs = stack.upstream.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].tenants, vec![CLUSTER.to_owned()], "exactly one tenant header, the certificate's");
    assert_eq!(reqs[0].samples, 5, "body forwarded intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_at_the_agent_and_never_forwarded() {
    let stack = Stack::start_with(Behaviour::status(204), |_| {}, |a| a.remote_write.max_body_bytes = 64 * 1024).await;
    let url = stack.push_url();
    let ok_headers = [("content-type", "application/x-protobuf"), ("content-encoding", "snappy")];
    let framed = b"\xff\x06\x00\x00sNaPpY\x01\x00\x00\x00".to_vec();
    let bomb = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0];
    let truncated = vec![0x80, 0x80];
    // declares 1 MiB (within the limit) in 10 bytes: more than snappy can expand
    let small_bomb = vec![0x80, 0x80, 0x40, 0, 0, 0, 0, 0, 0, 0];
    type Case<'a> = (&'a str, Method, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("framed snappy", Method::POST, ok_headers.to_vec(), framed, 400),
        ("bomb header over the limit", Method::POST, ok_headers.to_vec(), bomb, 413),
        ("bomb header under the limit", Method::POST, ok_headers.to_vec(), small_bomb, 400),
        ("truncated preamble", Method::POST, ok_headers.to_vec(), truncated, 400),
        ("oversize body", Method::POST, ok_headers.to_vec(), vec![1u8; 64 * 1024 + 1], 413),
        (
            "gzip",
            Method::POST,
            vec![("content-type", "application/x-protobuf"), ("content-encoding", "gzip")],
            body(1),
            415,
        ),
        (
            "json",
            Method::POST,
            vec![("content-type", "application/json"), ("content-encoding", "snappy")],
            body(1),
            415,
        ),
        (
            "unknown proto",
            Method::POST,
            vec![("content-type", "application/x-protobuf;proto=x.Y"), ("content-encoding", "snappy")],
            body(1),
            415,
        ),
        ("GET", Method::GET, vec![], vec![], 405),
    ];
    for (what, method, headers, b, want) in cases {
        let r = send(method, &url, &headers, b).await.unwrap();
        assert_eq!(r.status.as_u16(), want, "{what}: {}", r.text());
    }
    assert!(stack.upstream.requests().is_empty(), "nothing refused was forwarded");
    // an empty body is a protocol probe: 2xx, not forwarded
    let r = send(Method::POST, &url, &ok_headers, Vec::new()).await.unwrap();
    assert_eq!(r.status.as_u16(), 204);
    assert!(stack.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_mode_refuses_corrupt_bodies() {
    let stack = Stack::start_with(Behaviour::status(204), |_| {}, |a| a.remote_write.validate = true).await;
    // a valid preamble (10 bytes) followed by garbage that is not snappy
    let corrupt = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let r = push(&stack.push_url(), corrupt).await.unwrap();
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    // valid snappy of something that is not protobuf
    let not_proto = snap::raw::Encoder::new().compress_vec(&[0x0f, 0x01, 0x02]).unwrap();
    let r = push(&stack.push_url(), not_proto).await.unwrap();
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    // well-formed protobuf that the remote-write spec says a receiver must refuse: the answer
    // names the first problem
    use opni_metrics_tests::rw::{Label, Sample, TimeSeries, WriteRequest, encode};
    let series = |labels: &[(&str, &str)]| WriteRequest {
        timeseries: vec![TimeSeries {
            labels: labels.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }).collect(),
            samples: vec![Sample { value: 1.0, timestamp: 1_700_000_000_000 }],
        }],
    };
    for (labels, words) in [
        (&[("__name__", "m"), ("b", "1"), ("a", "2")][..], "timeseries[0].labels[2].name: labels are not sorted"),
        (&[("job", "x")][..], "timeseries[0].labels: no __name__ label"),
        (&[("__name__", "m"), ("a-b", "1")][..], "is not a valid label name"),
    ] {
        let r = push(&stack.push_url(), encode(&series(labels))).await.unwrap();
        assert_eq!(r.status.as_u16(), 400, "{}", r.text());
        assert!(r.text().contains(words), "{}", r.text());
    }
    assert!(stack.upstream.requests().is_empty());
    assert_eq!(push(&stack.push_url(), body(3)).await.unwrap().status.as_u16(), 204);
}

/// In validate mode the decompressed copy counts against the agent's in-flight budget: a body
/// that fits compressed but not decompressed is refused with 503 (retryable), not validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_spends_from_the_in_flight_budget() {
    let raw_limit = 256 << 10;
    let big = opni_metrics_tests::rw::request(0, 3000, 1_700_000_000_000, "m");
    let compressed = opni_metrics_tests::rw::encode(&big);
    let decoded = snap::raw::decompress_len(&compressed).unwrap();
    assert!(compressed.len() < raw_limit && decoded > raw_limit, "{} {decoded}", compressed.len());
    let budget = |validate: bool| {
        move |a: &mut opni_metrics_daemons::config::agent::AgentConfig| {
            a.remote_write.validate = validate;
            a.remote_write.max_body_bytes = raw_limit;
            a.remote_write.max_in_flight_bytes = raw_limit;
        }
    };
    let stack = Stack::start_with(Behaviour::status(204), |_| {}, budget(true)).await;
    let r = push(&stack.push_url(), compressed.clone()).await.unwrap();
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert!(stack.upstream.requests().is_empty());
    // the same body without validation fits
    let stack = Stack::start_with(Behaviour::status(204), |_| {}, budget(false)).await;
    assert_eq!(push(&stack.push_url(), compressed).await.unwrap().status.as_u16(), 204);
}

/// Calls `Push` on the gateway with a hand-made TLS client config.
async fn raw_push(addr: std::net::SocketAddr, cfg: rustls::ClientConfig) -> Result<u32, tonic::Status> {
    let (_tx, rx) = watch::channel(Arc::new(cfg));
    let channel = tls_channel(&addr.to_string(), "localhost", rx, &ChannelOptions::default()).unwrap();
    let mut client = RemoteWriteClient::new(channel);
    let req = PushRequest {
        body: body(1).into(),
        content_type: String::new(),
        content_encoding: String::new(),
        remote_write_version: String::new(),
    };
    client.push(req).await.map(|r| r.into_inner().http_status)
}

fn client_config(files: &opni_metrics_transport::tls::TlsFiles) -> rustls::ClientConfig {
    files.client_config().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_bad_identities() {
    let stack = Stack::start(Behaviour::status(204)).await;
    let addr = stack.gateway.as_ref().unwrap().grpc_addr;
    let ca = stack.certs.pki.ca_path().to_owned();

    // the real agent certificate works
    assert_eq!(raw_push(addr, client_config(&common::files(&stack.certs.agent))).await.unwrap(), 204);

    // no client certificate
    let no_cert = opni_metrics_transport::tls::anonymous_client_config(&ca).unwrap();
    assert!(raw_push(addr, no_cert).await.is_err(), "no client certificate");

    // a certificate from another CA
    let other = Pki::new(stack.certs.dir.path(), "other");
    let mut untrusted = common::files(&other.agent("untrusted", CLUSTER));
    untrusted.ca.clone_from(&ca);
    assert!(raw_push(addr, client_config(&untrusted)).await.is_err(), "untrusted CA");

    // an expired certificate
    let expired = stack.certs.pki.issue(
        "expired",
        &Leaf { uris: vec![format!("urn:opni-metrics:cluster:{CLUSTER}")], expired: true, ..Leaf::default() },
        &ca,
    );
    assert!(raw_push(addr, client_config(&common::files(&expired))).await.is_err(), "expired certificate");

    // a valid certificate that names no cluster
    let no_san =
        stack.certs.pki.issue("nosan", &Leaf { uris: vec!["spiffe://elsewhere/x".into()], ..Leaf::default() }, &ca);
    let e = raw_push(addr, client_config(&common::files(&no_san))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // a certificate naming an invalid tenant
    let bad_id = stack.certs.pki.issue(
        "badid",
        &Leaf { uris: vec!["urn:opni-metrics:cluster:a|b".into()], ..Leaf::default() },
        &ca,
    );
    let e = raw_push(addr, client_config(&common::files(&bad_id))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    assert_eq!(stack.upstream.requests().len(), 1, "only the real agent's push went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_and_metrics() {
    let stack = Stack::start(Behaviour::status(204)).await;
    assert_eq!(push(&stack.push_url(), body(4)).await.unwrap().status.as_u16(), 204);
    let agent = format!("http://{}", stack.agent.addr);
    let gw = format!("http://{}", stack.gateway.as_ref().unwrap().http_addr);
    // the agent is ready once its notification stream is up, which its sync loop opens on its own
    let mut sync = stack.agent.sync.clone();
    tokio::time::timeout(WAIT, sync.wait_for(|s| s.connected)).await.unwrap().unwrap();
    for base in [&agent, &gw] {
        assert_eq!(opni_metrics_tests::http::get(&format!("{base}/healthz")).await.unwrap().status.as_u16(), 200);
        assert_eq!(opni_metrics_tests::http::get(&format!("{base}/readyz")).await.unwrap().status.as_u16(), 200);
    }
    let m = opni_metrics_tests::http::get(&format!("{agent}/metrics")).await.unwrap().text();
    assert!(m.contains("opni_agent_remote_write_requests_total{code=\"2xx\"} 1"), "{m}");
    let m = opni_metrics_tests::http::get(&format!("{gw}/metrics")).await.unwrap().text();
    assert!(
        m.contains(&format!("opni_gateway_remote_write_requests_total{{cluster=\"{CLUSTER}\",code=\"2xx\"}} 1")),
        "{m}"
    );
    assert!(m.contains("opni_gateway_upstream_request_duration_seconds_count 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_path_is_served_and_others_are_not() {
    let stack = Stack::start(Behaviour::status(204)).await;
    let base = format!("http://{}", stack.agent.addr);
    // a remote-write URL copied from Cortex, Mimir or a Prometheus receiver works as well
    for path in opni_metrics_agent::PUSH_PATHS {
        let r = push(&format!("{base}{path}"), body(2)).await.unwrap();
        assert_eq!(r.status.as_u16(), 204, "{path}: {}", r.text());
    }
    let r = push(&format!("{base}/api/v1/writes"), body(2)).await.unwrap();
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(stack.upstream.requests().len(), opni_metrics_agent::PUSH_PATHS.len());
}
