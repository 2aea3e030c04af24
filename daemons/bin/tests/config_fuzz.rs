//! The daemons' YAML config files are input: whatever they hold (arbitrary text, or a valid
//! file with characters flipped), loading and validating answers with a value or an error, and
//! never panics.
#![allow(clippy::unwrap_used)]

use opni_metrics_daemons::config::agent::AgentConfig;
use opni_metrics_daemons::config::gateway::GatewayConfig;
use proptest::prelude::*;

const GATEWAY: &str = include_str!("../../../deploy/gateway/gateway.yaml");
const AGENT: &str = include_str!("../../../deploy/agent/agent.yaml");

fn both(text: &str) {
    if let Ok(c) = serde_saphyr::from_str::<GatewayConfig>(text) {
        let _ = c.validate();
    }
    if let Ok(c) = serde_saphyr::from_str::<AgentConfig>(text) {
        let _ = c.validate();
    }
}

/// `base` with the byte at each `(position, byte)` replaced, kept only where it stays UTF-8.
fn mutated(base: &str, edits: &[(usize, u8)]) -> String {
    let mut b = base.as_bytes().to_vec();
    for (i, x) in edits {
        if !b.is_empty() {
            let i = i % b.len();
            b[i] = *x;
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        both(&text);
    }

    #[test]
    fn mutated_shipped_configs_never_panic(edits in proptest::collection::vec((any::<usize>(), 0x20u8..0x7f), 1..8)) {
        both(&mutated(GATEWAY, &edits));
        both(&mutated(AGENT, &edits));
    }
}

#[test]
fn the_shipped_configs_are_valid() {
    serde_saphyr::from_str::<GatewayConfig>(GATEWAY).unwrap().validate().unwrap();
    serde_saphyr::from_str::<AgentConfig>(AGENT).unwrap().validate().unwrap();
}
