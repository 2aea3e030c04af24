//! Property (c): the node-config digest is deterministic and ignores ordering that carries no
//! meaning, yet changes with every meaningful field.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use opni_metrics_core::backoff::Rng;
use opni_metrics_core::node::NodeConfig;
use opni_metrics_core::spec::MetricsCapabilitySpec;
use opni_metrics_core::testing;
use proptest::prelude::*;

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

fn reorder(c: &NodeConfig, seed: u64) -> NodeConfig {
    let mut rng = Rng::new(seed);
    let mut c = c.clone();
    c.disabled_reasons.reverse();
    let p = &mut c.spec.prometheus;
    shuffle(&mut p.namespaces, &mut rng);
    if let Some(first) = p.namespaces.first().cloned() {
        p.namespaces.push(first); // duplicates carry no meaning either
    }
    for sel in [&mut p.service_monitor_selector, &mut p.pod_monitor_selector, &mut p.monitor_namespace_selector] {
        shuffle(&mut sel.match_expressions, &mut rng);
        for e in &mut sel.match_expressions {
            shuffle(&mut e.values, &mut rng);
        }
    }
    shuffle(&mut p.scrape_jobs, &mut rng);
    for j in &mut p.scrape_jobs {
        shuffle(&mut j.targets, &mut rng);
    }
    shuffle(&mut c.spec.rules.file_globs, &mut rng);
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn deterministic_and_order_insensitive(c in testing::node_config(), seed in any::<u64>()) {
        let d = c.digest();
        prop_assert_eq!(d, c.clone().digest());
        prop_assert_eq!(d, reorder(&c, seed).digest());
        // through the wire format of another process and back
        let json = serde_json::to_string(&c).unwrap();
        let back: NodeConfig = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(d, back.digest());
    }

    #[test]
    fn meaningful_changes_change_the_digest(c in testing::node_config()) {
        let d = c.digest();
        let mut m = c.clone();
        m.spec.prometheus.queue.max_shards += 1;
        prop_assert_ne!(d, m.digest());
        let mut m = c.clone();
        m.enabled = !m.enabled;
        prop_assert_ne!(d, m.digest());
        let mut m = c.clone();
        m.spec.prometheus.scrape_interval = opni_metrics_core::duration::PromDuration::from_millis(m.spec.prometheus.scrape_interval.as_millis() + 1);
        prop_assert_ne!(d, m.digest());
        let mut m = c;
        m.spec.rules.enabled = !m.spec.rules.enabled;
        prop_assert_ne!(d, m.digest());
    }

    #[test]
    fn generated_specs_are_valid(s in testing::spec()) {
        prop_assert_eq!(s.validate(), Ok(()));
    }
}

/// The digest of the default config is pinned: it must be the same in every process, on every
/// platform and in every release, or every deployed agent would re-apply after an upgrade.
#[test]
fn default_digest_is_pinned() {
    let d = NodeConfig::enabled(MetricsCapabilitySpec::default()).digest();
    assert_eq!(d.to_string(), "964683644231b6fffef8ba6da9f61e8b7d4e8c9f7b4ca43f650d941d1358d590");
}
