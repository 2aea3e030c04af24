//! What a caller without an identity can make the gateway spend: its message is refused on the
//! headers (never read), its handshakes are capped, and `Join` checks the token before telling
//! anything or doing CA work, rate limited per address. Authenticated agents keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Stack, WAIT, body};
use opni_metrics_core::node::{ConditionKind, ConditionStatus};
use opni_metrics_proto::bootstrap::v1::JoinRequest;
use opni_metrics_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use opni_metrics_proto::remote::v1::PushRequest;
use opni_metrics_proto::remote::v1::remote_write_client::RemoteWriteClient;
use opni_metrics_tests::http::{eventually, push};
use opni_metrics_tests::prometheus::connect_from;
use opni_metrics_tests::upstream::Behaviour;
use opni_metrics_transport::grpc::{ChannelOptions, tls_channel};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tonic::Code;

fn anonymous(stack: &Stack) -> tonic::transport::Channel {
    let ca = stack.certs.pki.ca_path().to_owned();
    let cfg = opni_metrics_transport::tls::anonymous_client_config(&ca).unwrap();
    let (tx, rx) = watch::channel(Arc::new(cfg));
    std::mem::forget(tx);
    tls_channel(&stack.gateway.as_ref().unwrap().grpc_addr.to_string(), "localhost", rx, &ChannelOptions::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_before_its_message_is_read() {
    let stack = Stack::start(Behaviour::status(204)).await;
    // 20 MiB: over the decoding limit. Read first, it would be refused as too large; refused on
    // its headers, it is unauthenticated.
    let big = PushRequest {
        body: vec![0u8; 20 << 20].into(),
        content_type: "application/x-protobuf".into(),
        content_encoding: "snappy".into(),
        remote_write_version: "0.1.0".into(),
    };
    let mut client = RemoteWriteClient::new(anonymous(&stack)).max_encoding_message_size(64 << 20);
    let e = client.push(big).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(stack.upstream.requests().is_empty());
    // the agent is unaffected
    assert_eq!(push(&stack.push_url(), body(3)).await.unwrap().status, 204);
}

/// A stack whose gateway allows `total` TLS handshakes at once (`per_address` from one address,
/// when given), each for up to `timeout_secs`; returned once the agent's first Sync is done, so
/// the agent's own dial no longer competes for the slots.
async fn capped_stack(total: usize, per_address: Option<usize>, timeout_secs: u64) -> Stack {
    let stack = Stack::start_with(
        Behaviour::status(204),
        |g| {
            g.grpc.max_handshakes = total;
            if let Some(n) = per_address {
                g.grpc.max_handshakes_per_address = n;
            }
            g.grpc.handshake_timeout = opni_metrics_core::duration::PromDuration::from_secs(timeout_secs);
        },
        |_| {},
    )
    .await;
    let mut sync = stack.agent.sync.clone();
    let synced = |s: &opni_metrics_agent::sync_loop::SyncState| {
        s.status.get(ConditionKind::Synced).is_some_and(|c| c.status == ConditionStatus::True)
    };
    tokio::time::timeout(WAIT, sync.wait_for(synced)).await.unwrap().unwrap();
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_over_the_cap_are_closed_at_once() {
    let stack = capped_stack(2, None, 60).await;
    let gw = stack.gateway.as_ref().unwrap();
    // Two connections that never start a handshake hold both slots, and the next one is closed
    // without waiting for anything. Each attempt opens all three afresh: should any other dial
    // of the agent (a redial, its first push) be in its handshake at that moment, it holds a
    // slot, the gateway closes the second idle connection instead, and the third gets the freed
    // slot and waits out its handshake timeout.
    let metrics = format!("http://{}/metrics", gw.http_addr);
    let idle = eventually(WAIT, "a connection over the cap is closed", || async {
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(tokio::net::TcpStream::connect(gw.grpc_addr).await.map_err(|e| e.to_string())?);
        }
        let mut third = tokio::net::TcpStream::connect(gw.grpc_addr).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => Ok(idle),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let m = opni_metrics_tests::http::get(&metrics).await.unwrap().text();
    assert!(m.contains("opni_gateway_tls_handshake_failures_total{reason=\"handshake_limit\"}"), "{m}");
    // once they go, agents connect again
    drop(idle);
    eventually(WAIT, "pushes succeed once the slots are free", || async {
        let r = push(&stack.push_url(), body(1)).await?;
        if r.status == 204 { Ok(()) } else { Err(r.status.to_string()) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_handshake_slot() {
    // a handshake timeout longer than the test waits: only the quota can close a connection
    let stack = capped_stack(8, Some(2), 600).await;
    let gw = stack.gateway.as_ref().unwrap();
    // one host (127.0.0.2) opens as many connections as the listener has handshake slots, and
    // never starts a handshake: it holds two, the other six are closed at once
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from("127.0.0.2", gw.grpc_addr).await.unwrap());
    }
    // (accepted in the order they connected: the first two hold the slots)
    for (i, c) in held.iter_mut().enumerate().skip(2) {
        assert!(closed_by_peer(c).await, "connection {i} of the address is closed at once");
    }
    // another host (127.0.0.1) still completes a handshake: its call reaches the service
    let e = BootstrapClient::new(anonymous(&stack))
        .join(JoinRequest { token: "0123abcd.wrong".into(), csr_pem: String::new(), cluster_id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let m = opni_metrics_tests::http::get(&format!("http://{}/metrics", gw.http_addr)).await.unwrap().text();
    assert!(m.contains("opni_gateway_tls_handshake_failures_total{reason=\"address_handshake_limit\"} 6"), "{m}");
    assert!(!m.contains("reason=\"handshake_limit\""), "the listener's cap was never reached: {m}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_checks_the_token_first_and_is_rate_limited() {
    let stack = Stack::start_with(Behaviour::status(204), |g| g.bootstrap.join_rate_per_minute = 3, |_| {}).await;
    let gw = stack.gateway.as_ref().unwrap();
    // the cluster exists (the stack registered the agent's), but a stranger without a token
    // learns nothing about it: the same answer as for any other id
    assert!(
        gw.gateway
            .state()
            .cluster(&opni_metrics_core::ClusterId::new(common::CLUSTER).unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let mut public = BootstrapClient::new(anonymous(&stack));
    let join = |cluster: &str| JoinRequest {
        token: "0123abcd.wrong".into(),
        csr_pem: "not even a CSR".into(),
        cluster_id: cluster.into(),
    };
    let existing = public.join(join(common::CLUSTER)).await.unwrap_err();
    let other = public.join(join("no-such-cluster")).await.unwrap_err();
    assert_eq!((existing.code(), other.code()), (Code::Unauthenticated, Code::Unauthenticated));
    assert_eq!(existing.message(), other.message());
    // three attempts a minute per address: the fourth is refused without looking at it
    public.join(join("x")).await.unwrap_err();
    let e = public.join(join("x")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("retry in"), "{e}");
}

/// Reads until the peer closes (or fails); `true` if it did within `WAIT`.
async fn closed_by_peer(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_of_the_agent_are_closed() {
    use tokio::io::AsyncWriteExt;
    // short, but not so short that the test's own pushes, sent meanwhile, risk it on a busy
    // machine
    let d = opni_metrics_core::duration::PromDuration::from_secs(1);
    let stack = Stack::start_with(
        Behaviour::status(204),
        |_| {},
        |a| {
            a.http.header_read_timeout = d;
            a.http.keepalive_interval = d;
            a.http.keepalive_timeout = d;
        },
    )
    .await;
    let addr = stack.agent.addr;
    let connect = || tokio::net::TcpStream::connect(addr);
    // nothing at all
    let mut silent = connect().await.unwrap();
    // the first byte of the HTTP/2 preface, then nothing (before the protocol is known)
    let mut sniff = connect().await.unwrap();
    sniff.write_all(b"P").await.unwrap();
    // an HTTP/1 request line, then nothing
    let mut trickle = connect().await.unwrap();
    trickle.write_all(b"POST /api/agent/push HTTP/1.1\r\n").await.unwrap();
    // a complete HTTP/2 preface and SETTINGS, then never answering the server's PINGs
    let mut h2 = connect().await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // others are served meanwhile
    assert_eq!(push(&stack.push_url(), body(2)).await.unwrap().status, 204);
    for (what, c) in [("silent", &mut silent), ("sniff", &mut sniff), ("trickle", &mut trickle), ("h2", &mut h2)] {
        assert!(closed_by_peer(c).await, "{what} connection still open");
    }
    assert_eq!(push(&stack.push_url(), body(2)).await.unwrap().status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_caps_its_connections() {
    let stack = Stack::start_with(Behaviour::status(204), |_| {}, |a| a.http.max_connections = 2).await;
    let addr = stack.agent.addr;
    let held: Vec<tokio::net::TcpStream> =
        vec![tokio::net::TcpStream::connect(addr).await.unwrap(), tokio::net::TcpStream::connect(addr).await.unwrap()];
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_peer(&mut third).await, "a connection over the cap is closed at once");
    drop(held);
    eventually(WAIT, "pushes succeed once connections are free", || async {
        let r = push(&stack.push_url(), body(1)).await?;
        if r.status == 204 { Ok(()) } else { Err(r.status.to_string()) }
    })
    .await
    .unwrap();
}
