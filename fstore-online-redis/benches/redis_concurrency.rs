//! The concurrent section of `redis_bench` (8 and 64 callers of 1-entity reads
//! on one `FeatureStore` / one fred pool: raw fred `HMGET`, `OnlineStore::read`,
//! `get_online_features`, `get_prepared`) with the system allocator, so the
//! figures carry no allocation-counting cost.
//!
//! ```text
//! source scripts/servers/redis.sh && start_redis
//! FSTORE_BENCH_REDIS_URL=$FSTORE_TEST_REDIS_URL CARGO_PROFILE_BENCH_LTO=false \
//!   cargo bench -p fstore-online-redis --bench redis_concurrency
//! stop_redis
//! ```
//!
//! `FSTORE_BENCH_ONLY=K` runs only side `K` of the sides' list (0 raw fred,
//! 1 `OnlineStore::read`, 3 `get_online_features`, 7 `get_online_features` +
//! dense read, …): 40,000 requests from 8 callers, for profiling one path
//! (`/usr/bin/time -f "%U %S %c"` gives its CPU and involuntary switches).

mod redis_common;

fn main() {
    redis_common::main(false);
}
