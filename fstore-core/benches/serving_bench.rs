//! Serving benchmark on the in-memory online store: the cost of the
//! `FeatureStore` facade with no network in the way.
//!
//! ```text
//! CARGO_PROFILE_BENCH_LTO=false cargo bench -p fstore-core --features testkit --bench serving_bench
//! ```
//!
//! Shapes: 1 and 100 entities × 2 views × 50 float64 features (1 entity =
//! 100 features). Sequential p50/p99 and allocations per call of
//! `OnlineStore::read` (the adapter alone), `get_online_features` (as a caller
//! writes it: a fresh `OnlineRequest` with a clone of the selection) and
//! `get_prepared` (a `PreparedRequest`), and `get_prepared` followed by
//! reading every value through the Arrow batch, or `get_prepared_dense` (or
//! `get_online_features`) and reading every value through the dense accessor
//! (`OnlineResponse::view_values`, no arrays built), rotating call by call
//! which goes first; then 8 and 64 concurrent callers on one `FeatureStore` (throughput
//! and p50/p99 of 1-entity requests) for each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use fstore_core::adapter::{encode_entity_keys, normalize_batch, to_online_rows};
use fstore_core::testkit::bench::{
    XorShift, float_definitions, id_batch, micros, percentile, view_history,
};
use fstore_core::{
    DenseValues, FeatureSelection, FeatureStore, InMemoryOfflineStore, InMemoryOnlineStore,
    InMemoryRegistry, OnlineKey, OnlineStore, PreparedRequest, ReadOptions, WriteOptions,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const ENTITIES: i64 = 10_000;

/// Everything one request needs, shared by the callers.
struct Bench {
    fs: FeatureStore,
    online: Arc<InMemoryOnlineStore>,
    views: [String; 2],
    ekeys: Vec<Vec<u8>>,
    refs: FeatureSelection,
    prepared: PreparedRequest,
}

impl Bench {
    async fn adapter(&self, ids: &[i64]) -> usize {
        let keys: Vec<OnlineKey> = ids
            .iter()
            .flat_map(|i| {
                self.views.each_ref().map(|v| OnlineKey {
                    view: v.clone(),
                    entity_key: self.ekeys[*i as usize].clone(),
                })
            })
            .collect();
        let got = self
            .online
            .read(&keys, &ReadOptions::default())
            .await
            .unwrap();
        assert!(got.iter().all(Option::is_some));
        got.len()
    }

    async fn facade(&self, ids: &[i64]) -> usize {
        let resp = self
            .fs
            .get_online_features(&fstore_core::OnlineRequest::new(
                self.refs.clone(),
                id_batch(ids),
            ))
            .await
            .unwrap();
        resp.batch().num_rows()
    }

    async fn prepared(&self, ids: &[i64]) -> usize {
        let resp = self
            .fs
            .get_prepared(&self.prepared, &id_batch(ids), None)
            .await
            .unwrap();
        resp.batch().num_rows()
    }

    /// `get_prepared`, then every value read through the Arrow batch.
    async fn prepared_batch_values(&self, ids: &[i64]) -> usize {
        let resp = self
            .fs
            .get_prepared(&self.prepared, &id_batch(ids), None)
            .await
            .unwrap();
        let batch = resp.batch();
        let mut sum = 0.0;
        for c in &batch.columns()[1..] {
            let a = c.as_primitive::<Float64Type>();
            sum += match a.nulls() {
                None => a.values().iter().sum::<f64>(),
                Some(_) => a.iter().flatten().sum(),
            };
        }
        std::hint::black_box(sum);
        batch.num_rows()
    }

    /// `get_prepared_dense` (or `get_online_features` when `facade`), then
    /// every value read through the dense accessor (no Arrow array is built).
    async fn dense_values(&self, ids: &[i64], facade: bool) -> usize {
        let resp = if facade {
            self.fs
                .get_online_features(&fstore_core::OnlineRequest::new(
                    self.refs.clone(),
                    id_batch(ids),
                ))
                .await
        } else {
            self.fs
                .get_prepared_dense(&self.prepared, &id_batch(ids), None)
                .await
        }
        .unwrap();
        let mut sum = 0.0;
        for v in &self.views {
            let block = resp.view_values(v).expect("a float64 view");
            let DenseValues::Float64(x) = block.values() else {
                panic!("float64 view")
            };
            sum += match block.validity() {
                None => x.iter().sum::<f64>(),
                Some(ok) => x
                    .iter()
                    .zip(ok.iter())
                    .filter(|(_, ok)| *ok)
                    .map(|(x, _)| x)
                    .sum(),
            };
        }
        std::hint::black_box(sum);
        resp.num_rows()
    }

    async fn run(&self, side: usize, ids: &[i64]) -> usize {
        match side {
            0 => self.adapter(ids).await,
            1 => self.facade(ids).await,
            2 => self.prepared(ids).await,
            3 => self.prepared_batch_values(ids).await,
            4 => self.dense_values(ids, false).await,
            _ => self.dense_values(ids, true).await,
        }
    }
}

/// Number of sides.
const N: usize = 6;

const SIDES: [&str; N] = [
    "OnlineStore::read",
    "get_online_features",
    "get_prepared",
    "get_prepared + read all (batch)",
    "get_prepared_dense + read all (dense)",
    "get_online_features + read all (dense)",
];

/// `callers` tasks each doing `per_caller` 1-entity requests by `side`;
/// (requests/s, all latencies).
async fn concurrent(
    b: &Arc<Bench>,
    callers: usize,
    per_caller: usize,
    side: usize,
) -> (f64, Vec<Duration>) {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let b = Arc::clone(b);
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let mut lat = Vec::with_capacity(per_caller);
            for _ in 0..per_caller {
                let ids = [rng.next_below(ENTITIES)];
                let t = Instant::now();
                b.run(side, &ids).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len() as f64 / t0.elapsed().as_secs_f64(), all)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let views = ["sa".to_owned(), "sb".to_owned()];
    let d = float_definitions("ent", 50, &[&views[0], &views[1]]);
    let online = Arc::new(InMemoryOnlineStore::new());
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&online) as Arc<fstore_core::DynOnlineStore>)
        .build()
        .unwrap();
    fs.apply(&d, Default::default()).await.unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    for v in &views {
        let rv = d.resolve_view(v).unwrap();
        let b = normalize_batch(&rv, &view_history(&rv, 0..ENTITIES, now), false).unwrap();
        online
            .write(
                &rv,
                to_online_rows(&rv, &b).unwrap(),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    let rv = d.resolve_view(&views[0]).unwrap();
    let ekeys =
        encode_entity_keys(&id_batch(&(0..ENTITIES).collect::<Vec<_>>()), &rv.join_keys).unwrap();
    let refs = FeatureSelection::refs(views.iter().flat_map(|v| {
        d.resolve_view(v)
            .unwrap()
            .view
            .features
            .iter()
            .map(|f| format!("{v}:{}", f.name))
            .collect::<Vec<_>>()
    }))
    .unwrap();
    let prepared = fs.prepare(&refs, false).await.unwrap();
    let b = Arc::new(Bench {
        prepared,
        fs,
        online,
        views,
        ekeys,
        refs,
    });

    println!(
        "in-memory serving benchmark ({} build), 2 views × 50 float64 features",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "{:<46} {:>9} {:>9} {:>10} {:>12}",
        "read", "p50 µs", "p99 µs", "allocs", "bytes alloc"
    );
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for (n_ent, iters) in [(1usize, 20_000usize), (100, 2_000)] {
        let mut lat: [Vec<Duration>; N] = Default::default();
        let mut allocs = [0u64; N];
        let mut bytes = [0u64; N];
        let warm = iters / 10;
        for it in 0..iters + warm {
            let ids: Vec<i64> = (0..n_ent).map(|_| rng.next_below(ENTITIES)).collect();
            // Rotate which side goes first.
            for k in 0..N {
                let j = (it + k) % N;
                let reg = Region::new(GLOBAL);
                let t0 = Instant::now();
                let got = b.run(j, &ids).await;
                let d = t0.elapsed();
                let s = reg.change();
                assert!(got >= n_ent);
                if it >= warm {
                    lat[j].push(d);
                    allocs[j] += (s.allocations + s.reallocations) as u64;
                    bytes[j] += s.bytes_allocated as u64;
                }
            }
        }
        let n = iters as u64;
        let mut p = [(0.0, 0.0); N];
        for j in 0..N {
            p[j] = (
                micros(percentile(&mut lat[j], 0.5)),
                micros(percentile(&mut lat[j], 0.99)),
            );
            println!(
                "{:<46} {:>9.1} {:>9.1} {:>10} {:>12}",
                format!("{n_ent} entity × 2 views: {}", SIDES[j]),
                p[j].0,
                p[j].1,
                allocs[j] / n,
                bytes[j] / n
            );
        }
        for j in 1..N {
            println!(
                "{:<46} {:>8.2}× {:>8.2}×",
                format!("  {} / adapter", SIDES[j]),
                p[j].0 / p[0].0,
                p[j].1 / p[0].1
            );
        }
        println!();
    }

    println!(
        "{:<46} {:>12} {:>9} {:>9}",
        "concurrent 1-entity requests", "req/s", "p50 µs", "p99 µs"
    );
    for callers in [8usize, 64] {
        let per = 40_000 / callers;
        let mut rps = [0.0f64; N];
        let mut lat: [Vec<Duration>; N] = Default::default();
        // Two rounds, each side once per round, rotating which goes first.
        for round in 0..2 {
            for k in 0..N {
                let j = (round + k) % N;
                let (r, l) = concurrent(&b, callers, per, j).await;
                rps[j] += r / 2.0;
                lat[j].extend(l);
            }
        }
        for j in 0..N {
            println!(
                "{:<46} {:>12.0} {:>9.1} {:>9.1}",
                format!("{callers} callers: {}", SIDES[j]),
                rps[j],
                micros(percentile(&mut lat[j], 0.5)),
                micros(percentile(&mut lat[j], 0.99))
            );
        }
    }
}
