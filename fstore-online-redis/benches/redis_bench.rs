//! Benchmark of the Redis online store against a local redis-server, side by
//! side with raw fred doing the same commands and with `redis-benchmark`.
//!
//! ```text
//! source scripts/servers/redis.sh && start_redis
//! FSTORE_BENCH_REDIS_URL=$FSTORE_TEST_REDIS_URL \
//!   cargo bench --profile dev -p fstore-online-redis --bench redis_bench
//! stop_redis
//! ```
//!
//! Reads (1 entity × 2 views × 50 features; 100 entities × the same): p50/p99
//! of `OnlineStore::read` vs raw fred `HMGET` of the same fields (one pipeline
//! for 100 entities), alternating call by call (and which side goes first); also the full
//! `FeatureStore::get_online_features` (decode to Arrow, TTL, statuses).
//! `FSTORE_BENCH_RAW_TIMEOUT_MS=2000` gives raw fred the store's default
//! command timeout (one timer per command on both sides);
//! `FSTORE_BENCH_RAW_LIKE_STORE=1` also its connection settings and reconnect policy.
//! Writes (20 features per row, newest-wins on): rows/s of `OnlineStore::write`
//! in 10,000-row calls vs raw fred pipelined `HSET` of the same fields and
//! bytes vs `redis-benchmark -P 64` of that `HSET`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::interfaces::{ClientLike, HashesInterface};
use fred::prelude::{Builder, Config};
use fred::types::Value;
use fstore_core::adapter::{encode_entity_keys, normalize_batch, to_online_rows};
use fstore_core::arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use fstore_core::arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, InMemoryOfflineStore,
    InMemoryRegistry, MaterializeOptions, OnlineKey, OnlineRequest, OnlineRow, OnlineStore,
    ReadOptions, ResolvedView, ValueType, WriteOptions,
};
use fstore_online_redis::RedisOnlineStoreBuilder;

const READ_ENTITIES: i64 = 10_000;
const WRITE_ROWS: i64 = 100_000;
const WRITE_CHUNK: usize = 10_000;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn defs(prefix: &str, n_features: usize, views: &[&str]) -> Definitions {
    let mut d = Definitions::new().with_entity(Entity::new(
        format!("{prefix}_ent"),
        "id",
        ValueType::Int64,
    ));
    for v in views {
        let mut fv = FeatureView::new(*v, [format!("{prefix}_ent")]);
        for f in 0..n_features {
            fv = fv.with_feature(format!("{v}_f{f}"), ValueType::Float64);
        }
        d = d.with_feature_view(fv.with_ttl(Duration::from_secs(30 * 86_400)));
    }
    d
}

fn history(rv: &ResolvedView, ids: std::ops::Range<i64>, event_us: i64) -> RecordBatch {
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
    for (j, f) in rv.view.features.iter().enumerate() {
        fields.push(Field::new(&f.name, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(
            ids.clone()
                .map(|i| (i as f64) * 0.5 + j as f64)
                .collect::<Vec<_>>(),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn rows_of(rv: &ResolvedView, ids: std::ops::Range<i64>, event_us: i64) -> Vec<OnlineRow> {
    let b = normalize_batch(rv, &history(rv, ids, event_us), false).unwrap();
    to_online_rows(rv, &b).unwrap()
}

fn key_batch(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .unwrap()
}

/// A tiny deterministic PRNG (xorshift) for entity picks.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
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
    let d = defs(&prefix, 50, &[&va, &vb]);
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
        &key_batch(&(0..READ_ENTITIES).collect::<Vec<_>>()),
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
    println!("{:<44} {:>9} {:>9}", "read", "p50 µs", "p99 µs");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (n_ent, iters) in [(1usize, 5_000usize), (100, 1_000)] {
        let (mut ours, mut rawt, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
        for it in 0..iters + 100 {
            let ids: Vec<i64> = (0..n_ent).map(|_| rng.next(READ_ENTITIES)).collect();
            let keys: Vec<OnlineKey> = ids
                .iter()
                .flat_map(|i| {
                    [&va, &vb].map(|v| OnlineKey {
                        view: v.clone(),
                        entity_key: ekeys[*i as usize].clone(),
                    })
                })
                .collect();
            // Alternate which side goes first, so neither always runs right
            // after `get_online_features` (cold caches) or right after the other.
            let (mut d_ours, mut d_raw) = (Duration::ZERO, Duration::ZERO);
            for ours_turn in [it % 2 == 0, it % 2 == 1] {
                if ours_turn {
                    let t0 = Instant::now();
                    let got = store.read(&keys, &ReadOptions::default()).await.unwrap();
                    d_ours = t0.elapsed();
                    assert!(got.iter().all(Option::is_some));
                } else {
                    let t0 = Instant::now();
                    let c = raw.next();
                    let vals: Vec<Value> = if n_ent == 1 {
                        vec![
                            c.hmget(
                                Bytes::from(store.entity_hash_key(&ekeys[ids[0] as usize])),
                                fields.clone(),
                            )
                            .await
                            .unwrap(),
                        ]
                    } else {
                        let p = c.pipeline();
                        for i in &ids {
                            let _: () = p
                                .hmget(
                                    Bytes::from(store.entity_hash_key(&ekeys[*i as usize])),
                                    fields.clone(),
                                )
                                .await
                                .unwrap();
                        }
                        p.all().await.unwrap()
                    };
                    d_raw = t0.elapsed();
                    assert_eq!(vals.len(), n_ent);
                }
            }

            let t0 = Instant::now();
            let resp = fs
                .get_online_features(&OnlineRequest::new(refs.clone(), key_batch(&ids)))
                .await
                .unwrap();
            let d_e2e = t0.elapsed();
            assert_eq!(resp.batch.num_rows(), n_ent);
            if it >= 100 {
                ours.push(d_ours);
                rawt.push(d_raw);
                e2e.push(d_e2e);
            }
        }
        let (o50, o99, r50, r99) = (
            pct(&mut ours, 0.5),
            pct(&mut ours, 0.99),
            pct(&mut rawt, 0.5),
            pct(&mut rawt, 0.99),
        );
        println!(
            "{:<44} {:>9.1} {:>9.1}",
            format!("{n_ent} entity × 2 views: OnlineStore::read"),
            us(o50),
            us(o99)
        );
        println!(
            "{:<44} {:>9.1} {:>9.1}",
            format!("{n_ent} entity × 2 views: raw fred HMGET"),
            us(r50),
            us(r99)
        );
        println!(
            "{:<44} {:>9.1} {:>9.1}",
            format!("{n_ent} entity × 2 views: get_online_features"),
            us(pct(&mut e2e, 0.5)),
            us(pct(&mut e2e, 0.99))
        );
        println!(
            "{:<44} {:>+8.1}% {:>+8.1}%\n",
            "  read overhead vs raw",
            (us(o50) / us(r50) - 1.0) * 100.0,
            (us(o99) / us(r99) - 1.0) * 100.0
        );
    }

    // --------------------------------------------------------------- writes
    let vw = format!("{prefix}_w");
    let dw = defs(&format!("{prefix}w"), 20, &[&vw]);
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
                        (pf.clone(), Value::Bytes(Bytes::from(r.payload.clone()))),
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
    fs2.write_history(&vw, &history(&rvw, 0..WRITE_ROWS, now + 1))
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
