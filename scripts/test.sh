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

# Default features, plus the ones a server here can exercise:
# - Redis `tls` (the TLS-only node of scripts/servers/redis.sh): rustls, ring and
#   rustls-native-certs are already in the tree for the other adapters, so the
#   cost is rebuilding fred and the Redis crate with their TLS code;
# - DynamoDB `aws-config` (the default credential chain, against moto): adds
#   aws-config and aws-sdk-sts (+ smithy xml/query) to the test build;
# - Delta `s3` (tables and registry on moto's S3, same moto server): adds
#   deltalake-aws and object_store's aws code, and builds object_store, parquet,
#   the delta kernel and deltalake with those features (about 3 min more on a
#   busy 2-core machine, measured incrementally).
# - `fstore-examples/delta` (the Delta adapter, built anyway): the quickstart
#   and training_delta examples are test targets (harness = false) and run
#   here, from this build, instead of separate `cargo run -p` builds in CI.
# - `fstore-core/datafusion` (the scale engine, `fstore_core::engine`): its
#   property test against the pure join (500 cases, 1/2/7 partitions), the
#   spill test under a 16 MiB pool and the Parquet in/out tests. Adds DataFusion
#   55 (parquet feature only) to the build: about 6-10 min on a busy 2-core
#   machine, cold; the tests themselves take ~10 s.
# - `fstore-offline-delta/datafusion` (only turns on fstore-core/datafusion for
#   the Delta crate): its test of a spine read from a pinned Delta table version
#   and a result committed to a Delta table (tests/training_delta_ends.rs).
# The other optional features (Scylla `tls`, Delta `gcs`/`azure`) have no
# server here: clippy and rustdoc in .ci/run compile them, nothing runs them
# (README, "What the tests do not run").
echo "== cargo test --workspace"
cargo test --workspace --no-fail-fast \
  --features fstore-online-redis/tls,fstore-online-dynamo/aws-config,fstore-offline-delta/s3,fstore-offline-delta/datafusion,fstore-examples/delta,fstore-core/datafusion "$@"
