#!/usr/bin/env bash
# The one test command (README): installs and starts every server the suites
# need (on 127.0.0.1 only), runs every test of the workspace — unit, property,
# conformance against the real servers, doc tests — then stops the servers.
#
# Each scripts/servers/NAME.sh defines start_NAME / stop_NAME; start_NAME
# installs what is missing, starts the server on a free loopback port and
# exports the FSTORE_TEST_* variables its conformance test reads.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cargo's default target (./target) unless CARGO_TARGET_DIR is set, so this and
# README's quickstart command share one build; .ci/run sets a shared cache.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A missing server is a test failure, never a silent skip.
export FSTORE_TEST_REQUIRE_SERVERS=1
export FSTORE_TEST_STATE="${FSTORE_TEST_STATE:-$(mktemp -d -t fstore-test-XXXXXX)}"

servers=()
for f in scripts/servers/*.sh; do
  [ -e "$f" ] || continue
  # shellcheck source=/dev/null
  source "$f"
  servers+=("$(basename "$f" .sh)")
done

stop_all() {
  for s in "${servers[@]}"; do
    "stop_$s" || true
  done
}
trap stop_all EXIT

for s in "${servers[@]}"; do
  echo "== starting $s"
  "start_$s"
done

# Default features: the optional cloud/TLS features are compiled (checked) by
# clippy and rustdoc in .ci/run, not linked into every test binary. The one
# exception, `fstore-examples/delta`, only adds the Delta adapter (built by
# the workspace anyway) to the examples: the quickstart and training_delta
# examples are test targets (harness = false) and run here, from this build.
echo "== cargo test --workspace"
cargo test --workspace --features fstore-examples/delta --no-fail-fast "$@"
