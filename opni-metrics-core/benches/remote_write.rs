//! Micro-benchmarks of the per-request work on the remote-write path (DESIGN §8): the header and
//! snappy-preamble check, the early `Content-Length` check, the status rules, the optional
//! structural check of a decompressed body — and the node-config digest the sync path computes.
//!
//! Run with `cargo bench -p opni-metrics-core --bench remote_write` (about 30 s).
// criterion_group! generates undocumented public items; a bench panics on a broken fixture.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opni_metrics_core::duration::PromDuration;
use opni_metrics_core::node::{DisabledReason, NodeConfig};
use opni_metrics_core::remote_write::{
    Limits, Outcome, RequestHead, StatusOptions, Version, check, check_content_length, check_well_formed, classify,
    validate_body,
};
use opni_metrics_core::spec::{MetricsCapabilitySpec, ScrapeJob};

/// Samples (one per series) in the benchmarked request, as Prometheus sends by default.
const SAMPLES: usize = 500;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(out: &mut Vec<u8>, field: u64, payload: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// splitmix64: deterministic pseudo-random label values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A `prometheus.WriteRequest` of `n` series with eleven labels and one sample each, encoded by
/// hand: the label shapes of `opni_metrics_tests::rw::request` plus the high-entropy
/// `container_id` that `rw-bench` adds (≈ 54 KB snappy for 500 samples, like its bodies).
fn write_request(n: usize) -> Vec<u8> {
    let mut req = Vec::new();
    for id in 0..n as u64 {
        let container_id: String = (0..4).map(|j| format!("{:016x}", mix(id * 4 + j))).collect();
        let labels: [(&str, String); 11] = [
            ("__name__", "node_cpu_seconds_total".into()),
            ("container", format!("app-{}", id % 7)),
            ("container_id", format!("containerd://{container_id}")),
            ("endpoint", "http-metrics".into()),
            ("instance", format!("10.0.{}.{}:9100", (id / 250) % 250, id % 250)),
            ("job", "node-exporter".into()),
            ("mode", ["idle", "user", "system", "iowait"][(id % 4) as usize].into()),
            ("namespace", format!("team-{}", id % 13)),
            ("node", format!("worker-{}", id % 31)),
            ("pod", format!("app-{}-{:x}", id % 97, id)),
            ("series", id.to_string()),
        ];
        let mut ts = Vec::new();
        for (name, value) in &labels {
            let mut label = Vec::new();
            len_field(&mut label, 1, name.as_bytes());
            len_field(&mut label, 2, value.as_bytes());
            len_field(&mut ts, 1, &label);
        }
        let mut sample = Vec::new();
        sample.push(0x09); // field 1, fixed64: the value
        sample.extend_from_slice(&((id % 1000) as f64 * 1.5).to_le_bytes());
        sample.push(0x10); // field 2, varint: the timestamp
        varint(&mut sample, 1_700_000_000_000);
        len_field(&mut ts, 2, &sample);
        len_field(&mut req, 1, &ts);
    }
    req
}

fn node_config() -> NodeConfig {
    let mut spec = MetricsCapabilitySpec::default();
    spec.prometheus.scrape_interval = PromDuration::from_secs(15);
    spec.prometheus.namespaces = (0..8).map(|i| format!("team-{i}")).collect();
    spec.prometheus.scrape_jobs = (0..6)
        .map(|i| ScrapeJob {
            name: format!("job-{i}"),
            targets: vec![format!("10.0.0.{i}:9100"), format!("10.0.1.{i}:9100")],
            metrics_path: None,
            scrape_interval: None,
        })
        .collect();
    let mut config = NodeConfig::enabled(spec);
    config.disabled_reasons = vec![DisabledReason::UpstreamNotInstalled];
    config.enabled = false;
    config
}

fn benches(c: &mut Criterion) {
    let raw = write_request(SAMPLES);
    let body = snap::raw::Encoder::new().compress_vec(&raw).expect("snappy");
    let limits = Limits::default();
    let head = RequestHead { content_type: Some("application/x-protobuf"), content_encoding: Some("snappy") };
    assert!(check(&head, &body, &limits).is_ok());
    assert!(check_well_formed(&raw).is_ok());
    eprintln!("request: {SAMPLES} samples, {} bytes snappy, {} bytes decompressed", body.len(), raw.len());

    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(SAMPLES as u64));
    g.bench_function("check/500_samples", |b| b.iter(|| check(black_box(&head), black_box(&body), &limits)));
    g.bench_function("check_content_length", |b| {
        b.iter(|| check_content_length(black_box(Some(body.len() as u64)), &limits))
    });
    g.bench_function("classify", |b| {
        let opts = StatusOptions::default();
        b.iter(|| {
            (
                classify(black_box(Outcome::Response { status: 204 }), &opts),
                classify(black_box(Outcome::Response { status: 500 }), &opts),
                classify(black_box(Outcome::Timeout), &opts),
            )
        })
    });
    g.bench_function("check_well_formed/500_samples", |b| b.iter(|| check_well_formed(black_box(&raw))));
    // what `validate: true` costs per request: decompress plus the structural walk
    g.bench_function("decompress+check_well_formed/500_samples", |b| {
        let mut out = vec![0; raw.len()];
        let mut dec = snap::raw::Decoder::new();
        b.iter(|| {
            let n = dec.decompress(black_box(&body), &mut out).expect("decompress");
            check_well_formed(&out[..n])
        })
    });
    // the semantic checks of validate mode on top (labels, samples, histograms)
    assert!(validate_body(&raw, Version::V1).is_ok());
    g.bench_function("validate_body/500_samples", |b| b.iter(|| validate_body(black_box(&raw), Version::V1)));
    g.bench_function("decompress+check_well_formed+validate_body/500_samples", |b| {
        let mut out = vec![0; raw.len()];
        let mut dec = snap::raw::Decoder::new();
        b.iter(|| {
            let n = dec.decompress(black_box(&body), &mut out).expect("decompress");
            check_well_formed(&out[..n]).and(Ok(validate_body(&out[..n], Version::V1)))
        })
    });
    g.finish();

    let config = node_config();
    let mut g = c.benchmark_group("node_config");
    g.bench_function("digest", |b| b.iter(|| black_box(&config).digest()));
    g.finish();
}

criterion_group! {
    name = remote_write;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(remote_write);
