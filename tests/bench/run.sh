#!/usr/bin/env bash
# Builds the release daemons and the benchmark harness, then runs the default benchmark set:
# saturation at 4 and 32 senders and 250k samples/s at 4 senders, each scenario 10 s
# (direct, agent→gateway, vmagent when installed). About 2.5 minutes after the build.
#
#   tests/bench/run.sh                         # the default set, report on stdout
#   tests/bench/run.sh --out /tmp/bench.md     # also write the markdown report to a file
#   tests/bench/run.sh --runs rate/32 --duration 5 --scenarios direct,relay
#
# Extra arguments go to rw-bench (see `rw-bench --help`); later flags override the defaults.
# Set CARGO_WRAP (e.g. CARGO_WRAP="flock /tmp/cargo.lock") to wrap the cargo invocation.
set -euo pipefail
cd "$(dirname "$0")/../.."

${CARGO_WRAP:-} cargo build --release -p opni-metrics-daemons -p opni-metrics-tests --bins

exec target/release/rw-bench \
  --bin-dir target/release \
  --runs saturation/4,saturation/32,rate/4 \
  --rate 250000 \
  --duration 10 \
  "$@"
