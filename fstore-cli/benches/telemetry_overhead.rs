//! Cost of the telemetry wrappers on the online read path.
//!
//! ```text
//! source scripts/servers/redis.sh && start_redis
//! FSTORE_BENCH_REDIS_URL=$FSTORE_TEST_REDIS_URL \
//!   cargo bench --profile dev -p fstore-cli --bench telemetry_overhead
//! stop_redis
//! ```
//!
//! Per backend (in-memory; Redis when `FSTORE_BENCH_REDIS_URL` is set), 1 and
//! 100 entities × 2 views × 50 float64 features: p50/p99 of
//! `OnlineStore::read` on the bare adapter vs through the instrumenting wrapper
//! the `FeatureStore` puts around it (calls alternate, and which goes first),
//! and of the whole `get_online_features` — first with no metrics recorder
//! and no tracing subscriber, then with a recorder installed
//! (`metrics_util::debugging::DebuggingRecorder`, which keeps every histogram
//! observation: a pessimistic stand-in for a real exporter).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fstore_core::adapter::encode_entity_keys;
use fstore_core::testkit::bench::{
    XorShift, float_definitions, float_history, id_batch, micros, percentile,
};
use fstore_core::{
    DynOnlineStore, FeatureSelection, FeatureStore, InMemoryOnlineStore, OnlineKey, OnlineRequest,
    PushTarget, ReadOptions,
};

const ENTITIES: i64 = 10_000;

struct Setup {
    name: &'static str,
    bare: Arc<DynOnlineStore>,
    fs: FeatureStore,
    views: [String; 2],
    ekeys: Vec<Vec<u8>>,
    refs: FeatureSelection,
}

async fn setup(name: &'static str, bare: Arc<DynOnlineStore>, prefix: &str) -> Setup {
    let views = [format!("{prefix}_a"), format!("{prefix}_b")];
    let d = float_definitions("ent", 50, &[&views[0], &views[1]]);
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&bare))
        .build()
        .unwrap();
    fs.apply(&d, Default::default()).await.unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    let mut names = Vec::new();
    for v in &views {
        let feats: Vec<String> = d.feature_views[v]
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect();
        for s in (0..ENTITIES).step_by(2_000) {
            fs.push(
                v,
                &float_history(&feats, s..s + 2_000, now),
                PushTarget::Online,
            )
            .await
            .unwrap();
        }
        names.extend(feats.iter().map(|f| format!("{v}:{f}")));
    }
    let rv = d.resolve_view(&views[0]).unwrap();
    let ekeys =
        encode_entity_keys(&id_batch(&(0..ENTITIES).collect::<Vec<_>>()), &rv.join_keys).unwrap();
    Setup {
        name,
        bare,
        fs,
        views,
        ekeys,
        refs: FeatureSelection::refs(names).unwrap(),
    }
}

async fn measure(s: &Setup, phase: &str) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let wrapped = Arc::clone(s.fs.online_store());
    for (n_ent, iters) in [(1usize, 5_000usize), (100, 1_000)] {
        let (mut bare, mut inst, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
        for it in 0..iters + 100 {
            let ids: Vec<i64> = (0..n_ent).map(|_| rng.next_below(ENTITIES)).collect();
            let keys: Vec<OnlineKey> = ids
                .iter()
                .flat_map(|i| {
                    s.views.clone().map(|v| OnlineKey {
                        view: v,
                        entity_key: s.ekeys[*i as usize].clone(),
                    })
                })
                .collect();
            let (mut d_bare, mut d_inst) = (Duration::ZERO, Duration::ZERO);
            for bare_turn in [it % 2 == 0, it % 2 == 1] {
                let store = if bare_turn { &s.bare } else { &wrapped };
                let t0 = Instant::now();
                let got = store.read(&keys, &ReadOptions::default()).await.unwrap();
                let d = t0.elapsed();
                assert!(got.iter().all(Option::is_some));
                if bare_turn {
                    d_bare = d;
                } else {
                    d_inst = d;
                }
            }
            let t0 = Instant::now();
            let resp =
                s.fs.get_online_features(&OnlineRequest::new(s.refs.clone(), id_batch(&ids)))
                    .await
                    .unwrap();
            let d_e2e = t0.elapsed();
            assert_eq!(resp.batch().num_rows(), n_ent);
            if it >= 100 {
                bare.push(d_bare);
                inst.push(d_inst);
                e2e.push(d_e2e);
            }
        }
        let (b50, b99, i50, i99) = (
            micros(percentile(&mut bare, 0.5)),
            micros(percentile(&mut bare, 0.99)),
            micros(percentile(&mut inst, 0.5)),
            micros(percentile(&mut inst, 0.99)),
        );
        println!(
            "{:<8} {:<12} {:>3} ent  read bare p50 {:>8.1} p99 {:>8.1}  instrumented p50 {:>8.1} p99 {:>8.1}  ({:+.1}% / {:+.1}%)  get_online_features p50 {:>8.1} p99 {:>8.1}",
            s.name,
            phase,
            n_ent,
            b50,
            b99,
            i50,
            i99,
            (i50 / b50 - 1.0) * 100.0,
            (i99 / b99 - 1.0) * 100.0,
            micros(percentile(&mut e2e, 0.5)),
            micros(percentile(&mut e2e, 0.99)),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "telemetry overhead on the online read path (µs; {} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut setups = vec![setup("memory", Arc::new(InMemoryOnlineStore::new()), "m").await];
    match std::env::var("FSTORE_BENCH_REDIS_URL") {
        Ok(url) => {
            let prefix = format!("tel{}", std::process::id());
            let store = fstore_online_redis::RedisOnlineStoreBuilder::new()
                .with_url(&url)
                .with_key_prefix(&prefix)
                .build()
                .unwrap();
            setups.push(setup("redis", Arc::new(store), &prefix).await);
        }
        Err(_) => eprintln!("FSTORE_BENCH_REDIS_URL is not set: in-memory only"),
    }
    for s in &setups {
        measure(s, "no recorder").await;
    }
    let rec = metrics_util::debugging::DebuggingRecorder::new();
    rec.install().unwrap();
    for s in &setups {
        measure(s, "recorder").await;
    }
}
