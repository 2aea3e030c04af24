//! Property tests of the sync protocol (issue: foundation, properties a and b).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use opni_metrics_tests::sim::World;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    /// Desired state changes; the SyncNow that follows is lost, delivered or duplicated, and
    /// carries the config (`offered`) or not.
    Change {
        variant: u32,
        enabled: bool,
        copies: u8,
        offered: bool,
    },
    SyncNow,
    GatewayAnswers,
    DeliverReply,
    SyncFails,
    DriverFinishes {
        ok: bool,
    },
    Disconnect,
    Connect,
    RestartAgent {
        remembers: bool,
    },
    Advance {
        ms: u64,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0u32..8, any::<bool>(), 0u8..3, any::<bool>())
            .prop_map(|(variant, enabled, copies, offered)| Event::Change { variant, enabled, copies, offered }),
        2 => Just(Event::SyncNow),
        4 => Just(Event::GatewayAnswers),
        4 => Just(Event::DeliverReply),
        1 => Just(Event::SyncFails),
        3 => any::<bool>().prop_map(|ok| Event::DriverFinishes { ok }),
        1 => Just(Event::Disconnect),
        2 => Just(Event::Connect),
        1 => any::<bool>().prop_map(|remembers| Event::RestartAgent { remembers }),
        2 => (0u64..20_000).prop_map(|ms| Event::Advance { ms }),
    ]
}

fn run(world: &mut World, events: &[Event]) {
    for e in events {
        match *e {
            Event::Change { variant, enabled, copies, offered } => {
                world.change_desired(variant, enabled);
                for _ in 0..copies {
                    if offered { world.offer_now() } else { world.sync_now() }
                }
            }
            Event::SyncNow => world.sync_now(),
            Event::GatewayAnswers => world.gateway_answers(),
            Event::DeliverReply => world.deliver_reply(),
            Event::SyncFails => world.sync_fails(),
            Event::DriverFinishes { ok } => world.driver_finishes(ok),
            Event::Disconnect => world.disconnect(),
            Event::Connect => world.connect(),
            Event::RestartAgent { remembers } => world.restart_agent(remembers),
            Event::Advance { ms } => world.advance(ms),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// (a) From any sequence of desired-state changes, lost or duplicated SyncNow, agent
    /// restarts, apply failures and reconnects: once changes stop and one periodic SyncNow
    /// passes, agent and driver have applied exactly the gateway's desired digest.
    #[test]
    fn converges_after_one_periodic_sync(seed in any::<u64>(), events in prop::collection::vec(event(), 0..80)) {
        let mut world = World::new(seed);
        run(&mut world, &events);
        let settled = world.settle();
        prop_assert!(settled.is_ok(), "no convergence: {:?}", settled);
        prop_assert!(world.converged(), "agent {:?} driver {:?} desired {:?}", world.agent().applied(), world.driver_applied, world.desired_digest());
        prop_assert!(world.agent().is_idle());
    }

    /// (b) Syncs are bounded: every Sync is caused by a SyncNow, a (re)connect, a completed apply
    /// (the status report) or a retry after a failure — never by a loop. Applies happen only on
    /// NeedsUpdate or an offered config. Once settled, a further SyncNow costs exactly one Sync
    /// and no apply.
    #[test]
    fn syncs_per_sync_now_are_bounded(seed in any::<u64>(), events in prop::collection::vec(event(), 0..80)) {
        let mut world = World::new(seed);
        run(&mut world, &events);
        let phase = world.settle().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let c = world.counters;
        prop_assert!(c.syncs <= c.sync_nows + c.connects + c.applies_ok + c.failures, "{c:?}");
        prop_assert!(c.applies <= c.needs_update + c.offers, "{c:?}");
        // healing phase: a stale answer still in flight may finish its apply and report first
        // (apply, report), then the current config follows (apply, report): never more
        prop_assert!(phase.syncs <= 4, "{phase:?}");
        prop_assert!(phase.applies <= 2, "{phase:?}");
        let quiet = world.settle().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!((quiet.syncs, quiet.applies), (1, 0), "{:?}", quiet);
    }
}

#[test]
fn an_offered_change_costs_one_sync() {
    let mut world = World::new(1);
    world.settle().unwrap();
    let before = world.counters;
    world.change_desired(6, true);
    world.offer_now();
    // apply, then the report Sync and its answer
    world.driver_finishes(true);
    world.gateway_answers();
    world.deliver_reply();
    assert!(world.converged());
    assert!(!world.busy());
    assert_eq!((world.counters.syncs - before.syncs, world.counters.applies - before.applies), (1, 1));
}

#[test]
fn a_dropped_sync_now_heals_at_the_periodic_sync() {
    let mut world = World::new(1);
    world.settle().unwrap();
    assert!(world.converged());
    world.change_desired(5, true); // its SyncNow is lost
    assert!(!world.converged());
    let phase = world.settle().unwrap();
    assert!(world.converged());
    assert_eq!((phase.syncs, phase.applies), (2, 1), "sync, apply, report");
}
