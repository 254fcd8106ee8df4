# shellcheck shell=bash
# Test servers for fstore-online-scylla (sourced by scripts/test.sh).
#
# No Cassandra or ScyllaDB can be installed from this machine's package
# registries, so there is nothing to start: the crate's tests/conformance.rs
# always runs an in-process CQL server (kassandra-tester, a dev-dependency from
# crates.io) on 127.0.0.1. When FSTORE_TEST_SCYLLA_URI is already set (contact
# points of a real cluster, e.g. 127.0.0.1:9042), the same test file also runs
# the full core testkit against it; this script only reports which mode is on.

start_scylla() {
    if [ -n "${FSTORE_TEST_SCYLLA_URI:-}" ]; then
        echo "scylla: real cluster at $FSTORE_TEST_SCYLLA_URI: full testkit + in-process kassandra tests"
        export FSTORE_TEST_SCYLLA_URI
    else
        echo "scylla: no FSTORE_TEST_SCYLLA_URI: in-process kassandra tests only (real-cluster suite skips loudly)"
    fi
}

stop_scylla() {
    # Nothing was started: the in-process server lives and dies with the test binary.
    :
}
