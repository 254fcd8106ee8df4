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
use fstore_core::arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use fstore_core::arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::{
    Definitions, DynOnlineStore, Entity, FeatureSelection, FeatureStore, FeatureView,
    InMemoryOnlineStore, OnlineKey, OnlineRequest, PushTarget, ReadOptions, ValueType,
};

const ENTITIES: i64 = 10_000;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

fn defs(views: &[&str]) -> Definitions {
    let mut d = Definitions::new().with_entity(Entity::new("ent", "id", ValueType::Int64));
    for v in views {
        let mut fv = FeatureView::new(*v, ["ent"]);
        for f in 0..50 {
            fv = fv.with_feature(format!("{v}_f{f}"), ValueType::Float64);
        }
        d = d.with_feature_view(fv.with_ttl(Duration::from_secs(30 * 86_400)));
    }
    d
}

fn history(features: &[String], ids: std::ops::Range<i64>, event_us: i64) -> RecordBatch {
    let n = (ids.end - ids.start) as usize;
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("event_timestamp", ts, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone().collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(vec![event_us; n]).with_timezone("UTC")),
    ];
    for (j, f) in features.iter().enumerate() {
        fields.push(Field::new(f, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(
            ids.clone()
                .map(|i| (i as f64) * 0.5 + j as f64)
                .collect::<Vec<_>>(),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn key_batch(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

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
    let d = defs(&[&views[0], &views[1]]);
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
            fs.push(v, &history(&feats, s..s + 2_000, now), PushTarget::Online)
                .await
                .unwrap();
        }
        names.extend(feats.iter().map(|f| format!("{v}:{f}")));
    }
    let rv = d.resolve_view(&views[0]).unwrap();
    let ekeys = encode_entity_keys(
        &key_batch(&(0..ENTITIES).collect::<Vec<_>>()),
        &rv.join_keys,
    )
    .unwrap();
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
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let wrapped = Arc::clone(s.fs.online_store());
    for (n_ent, iters) in [(1usize, 5_000usize), (100, 1_000)] {
        let (mut bare, mut inst, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
        for it in 0..iters + 100 {
            let ids: Vec<i64> = (0..n_ent).map(|_| rng.next(ENTITIES)).collect();
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
                s.fs.get_online_features(&OnlineRequest::new(s.refs.clone(), key_batch(&ids)))
                    .await
                    .unwrap();
            let d_e2e = t0.elapsed();
            assert_eq!(resp.batch.num_rows(), n_ent);
            if it >= 100 {
                bare.push(d_bare);
                inst.push(d_inst);
                e2e.push(d_e2e);
            }
        }
        let (b50, b99, i50, i99) = (
            pct(&mut bare, 0.5),
            pct(&mut bare, 0.99),
            pct(&mut inst, 0.5),
            pct(&mut inst, 0.99),
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
            pct(&mut e2e, 0.5),
            pct(&mut e2e, 0.99),
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
