use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use bytes::Bytes;
use fred::interfaces::{ClientLike, HashesInterface};
use fred::prelude::{Builder, Config};
use fred::types::Value;
use fstore_core::adapter::{encode_entity_keys, normalize_batch, to_online_rows};
use fstore_core::testkit::bench::{
    XorShift, float_definitions, id_batch, micros, percentile, view_history,
};
use fstore_core::{
    DenseValues, FeatureSelection, FeatureStore, InMemoryOfflineStore, InMemoryRegistry,
    MaterializeOptions, OnlineKey, OnlineRequest, OnlineRow, OnlineStore, PreparedRequest,
    ReadOptions, ResolvedView, WriteOptions,
};
use fstore_online_redis::{RedisOnlineStore, RedisOnlineStoreBuilder};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region};

/// The `FeatureStore`'s default online timeout, which it passes to every read.
const FACADE_TIMEOUT: Duration = Duration::from_secs(1);
const READ_ENTITIES: i64 = 10_000;
const WRITE_ROWS: i64 = 100_000;
const WRITE_CHUNK: usize = 10_000;

fn rows_of(rv: &ResolvedView, ids: std::ops::Range<i64>, event_us: i64) -> Vec<OnlineRow> {
    let b = normalize_batch(rv, &view_history(rv, ids, event_us), false).unwrap();
    to_online_rows(rv, &b).unwrap()
}

/// What the three sides of a read need, shared by concurrent callers.
struct Sides {
    fs: FeatureStore,
    store: Arc<RedisOnlineStore>,
    raw: fred::clients::Pool,
    views: [String; 2],
    ekeys: Vec<Vec<u8>>,
    fields: Vec<String>,
    refs: FeatureSelection,
    prepared: PreparedRequest,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Raw,
    Adapter,
    /// `OnlineStore::read` with the facade's `ReadOptions` (its 1 s online
    /// timeout as the read's deadline, as `get_prepared` passes it).
    AdapterTimeout,
    Facade,
    Prepared,
    /// `get_prepared`, then every value read through the Arrow batch.
    PreparedBatchValues,
    /// `get_prepared_dense`, then every value read through the dense accessor.
    PreparedDenseValues,
    /// `get_online_features`, then every value read through the dense accessor.
    FacadeDenseValues,
}

/// Number of sides.
const N: usize = 8;

const SIDES: [Side; N] = [
    Side::Raw,
    Side::Adapter,
    Side::AdapterTimeout,
    Side::Facade,
    Side::Prepared,
    Side::PreparedBatchValues,
    Side::PreparedDenseValues,
    Side::FacadeDenseValues,
];
/// Index of `get_online_features` in `SIDES`.
const FACADE: usize = 3;
const NAMES: [&str; N] = [
    "raw fred HMGET",
    "OnlineStore::read",
    "OnlineStore::read, 1 s timeout",
    "get_online_features",
    "get_prepared",
    "get_prepared + read all (batch)",
    "get_prepared_dense + read all (dense)",
    "get_online_features + read all (dense)",
];

impl Sides {
    /// One read of `ids` × both views by `side`; returns the rows/values seen.
    async fn run(&self, side: Side, ids: &[i64]) -> usize {
        match side {
            Side::Adapter | Side::AdapterTimeout => {
                let keys: Vec<OnlineKey> = ids
                    .iter()
                    .flat_map(|i| {
                        self.views.each_ref().map(|v| OnlineKey {
                            view: v.clone(),
                            entity_key: self.ekeys[*i as usize].clone(),
                        })
                    })
                    .collect();
                let opts = match side {
                    Side::AdapterTimeout => ReadOptions::default().with_timeout(FACADE_TIMEOUT),
                    _ => ReadOptions::default(),
                };
                let got = self.store.read(&keys, &opts).await.unwrap();
                assert!(got.iter().all(Option::is_some));
                got.len()
            }
            Side::Raw => {
                let c = self.raw.next();
                let vals: Vec<Value> = if ids.len() == 1 {
                    vec![
                        c.hmget(
                            Bytes::from(self.store.entity_hash_key(&self.ekeys[ids[0] as usize])),
                            self.fields.clone(),
                        )
                        .await
                        .unwrap(),
                    ]
                } else {
                    let p = c.pipeline();
                    for i in ids {
                        let _: () = p
                            .hmget(
                                Bytes::from(self.store.entity_hash_key(&self.ekeys[*i as usize])),
                                self.fields.clone(),
                            )
                            .await
                            .unwrap();
                    }
                    p.all().await.unwrap()
                };
                assert_eq!(vals.len(), ids.len());
                vals.len()
            }
            Side::Facade => {
                let resp = self
                    .fs
                    .get_online_features(&OnlineRequest::new(self.refs.clone(), id_batch(ids)))
                    .await
                    .unwrap();
                resp.batch().num_rows()
            }
            Side::Prepared => {
                let resp = self
                    .fs
                    .get_prepared(&self.prepared, &id_batch(ids), None)
                    .await
                    .unwrap();
                resp.batch().num_rows()
            }
            Side::PreparedBatchValues => {
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
            Side::PreparedDenseValues | Side::FacadeDenseValues => {
                let resp = if side == Side::FacadeDenseValues {
                    self.fs
                        .get_online_features(&OnlineRequest::new(self.refs.clone(), id_batch(ids)))
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
        }
    }
}

/// `callers` tasks each doing `per_caller` 1-entity reads by `side`;
/// (requests/s, all latencies).
async fn concurrent(
    s: &Arc<Sides>,
    side: Side,
    callers: usize,
    per_caller: usize,
) -> (f64, Vec<Duration>) {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let mut lat = Vec::with_capacity(per_caller);
            for _ in 0..per_caller {
                let ids = [rng.next_below(READ_ENTITIES)];
                let t = Instant::now();
                s.run(side, &ids).await;
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

/// The benchmark on a 2-worker runtime; `counted`: this binary counts
/// allocations (all sections), else only the concurrent section runs.
pub(crate) fn main(counted: bool) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(counted));
}

async fn run(counted: bool) {
    let Ok(url) = std::env::var("FSTORE_BENCH_REDIS_URL") else {
        eprintln!(
            "FSTORE_BENCH_REDIS_URL is not set: start a redis-server (scripts/servers/redis.sh) and set it"
        );
        return;
    };
    let prefix = format!("bench{}", std::process::id());
    let store = Arc::new(
        RedisOnlineStoreBuilder::new()
            .with_url(&url)
            .with_key_prefix(&prefix)
            .connect()
            .await
            .unwrap(),
    );
    // FSTORE_BENCH_RAW_TIMEOUT_MS: give the raw fred pool a command timeout
    // too (fred then arms a timer per command, as the store does).
    // FSTORE_BENCH_RAW_LIKE_STORE: also the store's connection settings and
    // reconnect policy (see `client.rs`).
    let raw_timeout = std::env::var("FSTORE_BENCH_RAW_TIMEOUT_MS")
        .ok()
        .map(|v| Duration::from_millis(v.parse().unwrap()));
    let raw_like_store = std::env::var_os("FSTORE_BENCH_RAW_LIKE_STORE").is_some();
    let mut raw = Builder::from_config(Config::from_url(&url).unwrap());
    raw.with_connection_config(|c| c.tcp.nodelay = Some(true))
        .with_performance_config(|p| {
            if let Some(t) = raw_timeout {
                p.default_command_timeout = t;
            }
        });
    if raw_like_store {
        raw.with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
        })
        .set_policy(fred::types::config::ReconnectPolicy::new_exponential(
            0, 50, 2_000, 2,
        ));
    }
    let raw = raw.build_pool(4).unwrap();
    raw.init().await.unwrap();
    let now = chrono::Utc::now().timestamp_micros();

    // ---------------------------------------------------------------- reads
    let (va, vb) = (format!("{prefix}_a"), format!("{prefix}_b"));
    let d = float_definitions(&format!("{prefix}_ent"), 50, &[&va, &vb]);
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&store) as Arc<fstore_core::DynOnlineStore>)
        .build()
        .unwrap();
    fs.apply(&d, Default::default()).await.unwrap();
    let (rva, rvb) = (d.resolve_view(&va).unwrap(), d.resolve_view(&vb).unwrap());
    for rv in [&rva, &rvb] {
        for s in (0..READ_ENTITIES).step_by(WRITE_CHUNK) {
            let rows = rows_of(rv, s..(s + WRITE_CHUNK as i64).min(READ_ENTITIES), now);
            store
                .write(rv, rows, &WriteOptions::default())
                .await
                .unwrap();
        }
    }
    let ekeys = encode_entity_keys(
        &id_batch(&(0..READ_ENTITIES).collect::<Vec<_>>()),
        &rva.join_keys,
    )
    .unwrap();
    let payload_len = {
        let r = store
            .read(
                &[OnlineKey {
                    view: va.clone(),
                    entity_key: ekeys[0].clone(),
                }],
                &ReadOptions::default(),
            )
            .await
            .unwrap();
        r[0].as_ref().unwrap().payload.len()
    };
    let fields: Vec<String> = [&va, &vb]
        .iter()
        .flat_map(|v| [format!("t:{v}"), format!("p:{v}")])
        .collect();
    let refs = FeatureSelection::refs(
        rva.view
            .features
            .iter()
            .map(|f| format!("{va}:{}", f.name))
            .chain(rvb.view.features.iter().map(|f| format!("{vb}:{}", f.name))),
    )
    .unwrap();

    println!(
        "redis online store benchmark ({url}, {} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("payload: 50 float64 features = {payload_len} bytes per view");
    println!(
        "raw fred: command timeout {raw_timeout:?}, store's connection settings {raw_like_store}\n"
    );
    let prepared = fs.prepare(&refs, false).await.unwrap();
    let sides = Arc::new(Sides {
        prepared,
        fs,
        store: Arc::clone(&store),
        raw: raw.clone(),
        views: [va.clone(), vb.clone()],
        ekeys: ekeys.clone(),
        fields: fields.clone(),
        refs: refs.clone(),
    });
    if counted {
        println!(
            "{:<46} {:>9} {:>9} {:>8} {:>11}",
            "read", "p50 µs", "p99 µs", "allocs", "bytes alloc"
        );
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let shapes: &[(usize, usize)] = if counted {
        &[(1, 5_000), (100, 1_000)]
    } else {
        &[]
    };
    for &(n_ent, iters) in shapes {
        let mut lat: [Vec<Duration>; N] = Default::default();
        let mut allocs = [0u64; N];
        let mut bytes = [0u64; N];
        for it in 0..iters + 100 {
            let ids: Vec<i64> = (0..n_ent).map(|_| rng.next_below(READ_ENTITIES)).collect();
            // Rotate which side goes first, so none always runs right after
            // another (cold caches) or first.
            for k in 0..N {
                let j = (it + k) % N;
                let reg = Region::new(&INSTRUMENTED_SYSTEM);
                let t0 = Instant::now();
                let got = sides.run(SIDES[j], &ids).await;
                let d = t0.elapsed();
                let st = reg.change();
                assert!(got >= n_ent);
                if it >= 100 {
                    lat[j].push(d);
                    allocs[j] += (st.allocations + st.reallocations) as u64;
                    bytes[j] += st.bytes_allocated as u64;
                }
            }
        }
        let mut p = [(0.0, 0.0); N];
        for j in 0..N {
            p[j] = (
                micros(percentile(&mut lat[j], 0.5)),
                micros(percentile(&mut lat[j], 0.99)),
            );
            println!(
                "{:<46} {:>9.1} {:>9.1} {:>8} {:>11}",
                format!("{n_ent} entity × 2 views: {}", NAMES[j]),
                p[j].0,
                p[j].1,
                allocs[j] / iters as u64,
                bytes[j] / iters as u64
            );
        }
        for j in 1..N {
            println!(
                "{:<46} {:>8.2}× {:>8.2}×",
                format!("  {} / raw", NAMES[j]),
                p[j].0 / p[0].0,
                p[j].1 / p[0].1
            );
        }
        println!(
            "{:<46} {:>8.2}× {:>8.2}×",
            "  get_online_features / OnlineStore::read",
            p[FACADE].0 / p[1].0,
            p[FACADE].1 / p[1].1
        );
        println!();
    }

    // One side alone, for profiling it (see redis_concurrency.rs).
    if let Ok(only) = std::env::var("FSTORE_BENCH_ONLY") {
        let j: usize = only
            .parse()
            .ok()
            .filter(|j| *j < N)
            .expect("FSTORE_BENCH_ONLY: a side index below 8");
        let t = std::time::Instant::now();
        let (r, _) = concurrent(&sides, SIDES[j], 8, 40_000 / 8).await;
        println!("ONLY {} {r:.0} req/s in {:?}", NAMES[j], t.elapsed());
        return;
    }
    println!(
        "{:<46} {:>12} {:>9} {:>9}",
        if counted {
            "concurrent 1-entity reads (allocations counted)"
        } else {
            "concurrent 1-entity reads (no counting)"
        },
        "req/s",
        "p50 µs",
        "p99 µs"
    );
    for callers in [8usize, 64] {
        let per = 16_000 / callers;
        let mut rps = [0.0f64; N];
        let mut lat: [Vec<Duration>; N] = Default::default();
        // Two rounds, each side once per round, rotating which goes first.
        for round in 0..2 {
            for k in 0..N {
                let j = (round + k) % N;
                let (r, l) = concurrent(&sides, SIDES[j], callers, per).await;
                rps[j] += r / 2.0;
                lat[j].extend(l);
            }
        }
        let mut p99 = [0.0; N];
        for j in 0..N {
            p99[j] = micros(percentile(&mut lat[j], 0.99));
            println!(
                "{:<46} {:>12.0} {:>9.1} {:>9.1}",
                format!("{callers} callers: {}", NAMES[j]),
                rps[j],
                micros(percentile(&mut lat[j], 0.5)),
                p99[j]
            );
        }
        println!(
            "{:<46} {:>11.2}× {:>9} {:>8.2}×",
            "  get_online_features / raw (req/s, p99)",
            rps[FACADE] / rps[0],
            "",
            p99[FACADE] / p99[0]
        );
    }
    println!();

    if !counted {
        for v in [&va, &vb] {
            store.delete_view(v).await.unwrap();
        }
        return;
    }

    // --------------------------------------------------------------- writes
    let vw = format!("{prefix}_w");
    let dw = float_definitions(&format!("{prefix}w_ent"), 20, &[&vw]);
    let rvw = dw.resolve_view(&vw).unwrap();
    let rows = rows_of(&rvw, 0..WRITE_ROWS, now);
    let wpayload = rows[0].payload.len();
    println!(
        "write: 20 float64 features = {wpayload} bytes per row, {WRITE_ROWS} rows, {WRITE_CHUNK} rows per call"
    );
    let t0 = Instant::now();
    let mut written = 0;
    for c in rows.chunks(WRITE_CHUNK) {
        written += store
            .write(&rvw, c.to_vec(), &WriteOptions::default())
            .await
            .unwrap()
            .written;
    }
    let ours = WRITE_ROWS as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(written, WRITE_ROWS as u64);
    // Again: every row is an equal version (rewritten), so the compare path runs.
    let t0 = Instant::now();
    for c in rows.chunks(WRITE_CHUNK) {
        store
            .write(&rvw, c.to_vec(), &WriteOptions::default())
            .await
            .unwrap();
    }
    let ours_update = WRITE_ROWS as f64 / t0.elapsed().as_secs_f64();

    // Raw fred: the same two fields with the same bytes, pipelined HSET, no compare.
    let t0 = Instant::now();
    let (tf, pf) = (format!("t:{vw}r"), format!("p:{vw}r"));
    for c in rows.chunks(WRITE_CHUNK) {
        let p = raw.next().pipeline();
        for r in c {
            let key = Bytes::from(store.entity_hash_key(&r.entity_key));
            let ver = Bytes::from(vec![0u8; 17]);
            let _: () = p
                .hset(
                    key,
                    vec![
                        (tf.clone(), Value::Bytes(ver)),
                        (pf.clone(), Value::Bytes(r.payload.clone())),
                    ],
                )
                .await
                .unwrap();
        }
        let _: Vec<Value> = p.all().await.unwrap();
    }
    let rawfred = WRITE_ROWS as f64 / t0.elapsed().as_secs_f64();

    // redis-benchmark -P 64: HSET of the same two fields and sizes.
    let (host, port) = {
        let hp = url.trim_start_matches("redis://");
        let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "6379"));
        (h.to_owned(), p.trim_end_matches('/').to_owned())
    };
    let bench_cmd = [
        "-h",
        &host,
        "-p",
        &port,
        "-P",
        "64",
        "-n",
        "500000",
        "-r",
        "100000",
        "-q",
        "HSET",
        &format!("{prefix}:{{rb__rand_int__}}"),
        "t:rbv",
        &"v".repeat(17),
        "p:rbv",
        &"x".repeat(wpayload),
    ]
    .map(str::to_owned);
    let rb = std::process::Command::new("redis-benchmark")
        .args(&bench_cmd)
        .output();
    let rb_rps = rb.ok().and_then(|o| {
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        let line = s.rsplit('\r').next().unwrap_or(&s).to_owned();
        line.split_whitespace()
            .zip(line.split_whitespace().skip(1))
            .find(|(_, b)| *b == "requests")
            .and_then(|(a, _)| a.parse::<f64>().ok())
    });

    // End to end: FeatureStore::materialize from the in-memory offline store.
    let fs2 = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&store) as Arc<fstore_core::DynOnlineStore>)
        .build()
        .unwrap();
    fs2.apply(&dw, Default::default()).await.unwrap();
    fs2.write_history(&vw, &view_history(&rvw, 0..WRITE_ROWS, now + 1))
        .await
        .unwrap();
    let t0 = Instant::now();
    let rep = fs2
        .materialize(
            &[vw.as_str()],
            None,
            chrono::DateTime::from_timestamp_micros(now + 1).unwrap(),
            &MaterializeOptions::default(),
        )
        .await
        .unwrap();
    let e2e = rep.views[0].rows_read as f64 / t0.elapsed().as_secs_f64();

    println!("{:<52} {:>12}", "write", "rows/s");
    println!(
        "{:<52} {:>12.0}",
        "OnlineStore::write (newest-wins script, new keys)", ours
    );
    println!(
        "{:<52} {:>12.0}",
        "OnlineStore::write (newest-wins script, rewrites)", ours_update
    );
    println!(
        "{:<52} {:>12.0}",
        "FeatureStore::materialize (scan+encode+write)", e2e
    );
    println!(
        "{:<52} {:>12.0}",
        "raw fred pipelined HSET (no compare)", rawfred
    );
    match rb_rps {
        Some(r) => {
            println!(
                "{:<52} {:>12.0}",
                "redis-benchmark -P 64 HSET (same fields/sizes)", r
            );
            println!(
                "{:<52} {:>11.0}%",
                "  OnlineStore::write vs redis-benchmark",
                ours / r * 100.0
            );
        }
        None => println!("redis-benchmark: not run (not installed or output not understood)"),
    }
    println!(
        "redis-benchmark command: redis-benchmark {}",
        bench_cmd
            .iter()
            .map(|a| if a.len() > 40 {
                format!("<{} bytes>", a.len())
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Clean up.
    for v in [&va, &vb, &vw] {
        store.delete_view(v).await.unwrap();
    }
    // The raw fred and redis-benchmark fields live under the same prefix.
    for v in [format!("{vw}r"), "rbv".to_owned()] {
        store.delete_view(&v).await.unwrap();
    }
}
