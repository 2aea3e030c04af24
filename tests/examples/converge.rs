//! The demo until the daemons land: a simulated gateway and agent converge through lost
//! notifications, failures, disconnects and restarts, printing what happens.
//!
//! `cargo run -p opni-metrics-tests --example converge`

use opni_metrics_tests::sim::World;

fn main() {
    let mut world = World::new(42);
    println!("opni-metrics sync protocol simulation (core state machines, no I/O)\n");

    world.connect();
    step(&mut world, "agent connects and syncs", |w| {
        w.gateway_answers();
        w.deliver_reply();
        w.driver_finishes(true);
        w.gateway_answers();
        w.deliver_reply();
    });

    world.change_desired(7, true);
    step(&mut world, "operator changes the default node config; the SyncNow is LOST", |_| {});
    step(&mut world, "periodic SyncNow heals it", |w| {
        w.settle().ok();
    });

    world.change_desired(9, true);
    step(&mut world, "another change; the agent's Prometheus fails to restart once", |w| {
        w.sync_now();
        w.gateway_answers();
        w.deliver_reply();
        w.driver_finishes(false);
    });
    step(&mut world, "back-off passes; the agent retries and succeeds", |w| {
        w.settle().ok();
    });

    world.change_desired(3, false);
    step(&mut world, "capability uninstalled (node disabled) while the agent restarts", |w| {
        w.sync_now();
        w.restart_agent(false);
        w.settle().ok();
    });

    let c = world.counters;
    println!(
        "\ntotals: {} Syncs, {} SyncNows, {} applies ({} ok), {} failures, {} connects",
        c.syncs, c.sync_nows, c.applies, c.applies_ok, c.failures, c.connects
    );
    println!("converged: {}", world.converged());
    if !world.converged() {
        std::process::exit(1);
    }
}

fn step(world: &mut World, what: &str, f: impl FnOnce(&mut World)) {
    f(world);
    let applied = world.agent().applied().map_or_else(|| "none".to_owned(), |d| d.to_string()[..12].to_owned());
    let desired = world.desired_digest().to_string()[..12].to_owned();
    let mark = if world.converged() { "in sync" } else { "DIFFERS" };
    println!("t={:>6}ms  {:<68} desired {desired}  applied {applied}  {mark}", world.now.as_millis(), what);
}
