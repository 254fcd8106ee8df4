//! Benchmark of the Redis online store against a local redis-server, side by
//! side with raw fred doing the same commands and with `redis-benchmark`.
//!
//! ```text
//! source scripts/servers/redis.sh && start_redis
//! FSTORE_BENCH_REDIS_URL=$FSTORE_TEST_REDIS_URL CARGO_PROFILE_BENCH_LTO=false \
//!   cargo bench -p fstore-online-redis --bench redis_bench
//! stop_redis
//! ```
//!
//! Reads (1 entity × 2 views × 50 features; 100 entities × the same): p50/p99
//! and allocations per call (a counting global allocator) of raw fred `HMGET`
//! of the fields (one pipeline for 100 entities), `OnlineStore::read` and the
//! full `FeatureStore::get_online_features` (decode to Arrow, TTL, statuses)
//! and `FeatureStore::get_prepared` (the same on a `PreparedRequest`), and
//! `get_prepared` followed by reading every value through the Arrow batch or
//! through the dense accessor after `get_prepared_dense` or
//! `get_online_features` (`OnlineResponse::view_values`), and
//! `OnlineStore::read` with the facade's read options (its online timeout as
//! the read's deadline), rotating call by call which side goes first. Then 8
//! and 64 concurrent
//! callers of 1-entity reads on one `FeatureStore` / one pool: throughput and
//! p50/p99 per side.
//! `FSTORE_BENCH_RAW_TIMEOUT_MS=2000` gives raw fred the store's default
//! command timeout (one timer per command on both sides);
//! `FSTORE_BENCH_RAW_LIKE_STORE=1` also its connection settings and reconnect policy.
//! Writes (20 features per row, newest-wins on): rows/s of `OnlineStore::write`
//! in 10,000-row calls vs raw fred pipelined `HSET` of the same fields and
//! bytes vs `redis-benchmark -P 64` of that `HSET`.
//!
//! `redis_concurrency` (same code, `benches/redis_common`) runs only the
//! concurrent section, without the counting allocator: its shared atomic
//! counters are touched by every allocation and free from both worker
//! threads, which slows allocation-heavy code under concurrency.

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

mod redis_common;

fn main() {
    redis_common::main(true);
}
