//! Read latency, materialization throughput and request counts against a
//! DynamoDB-compatible server (`FSTORE_TEST_DYNAMO_ENDPOINT`, e.g. moto from
//! `scripts/servers/dynamo.sh`). Prints figures; absolute numbers on a local
//! emulator mean little, the request counts are what a DynamoDB bill is made of.
//!
//! ```text
//! source scripts/servers/dynamo.sh && start_dynamo
//! cargo bench -p fstore-online-dynamo --bench dynamo --profile dev
//! stop_dynamo
//! ```

use std::time::{Duration, Instant};

use fstore_core::adapter::encode_entity_key;
use fstore_core::{
    FeatureView, JoinKey, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView, Value,
    ValueType, WriteOptions,
};
use fstore_online_dynamo::{DynamoOnlineStore, DynamoOnlineStoreBuilder, RequestCounts};

const ENTITIES: i64 = 2_000;
const READ_ITERS: usize = 200;
const PAYLOAD_BYTES: usize = 256;

fn view(name: &str) -> ResolvedView {
    ResolvedView::new(
        FeatureView::new(name, ["driver"])
            .with_feature("f", ValueType::Int64)
            .with_ttl(Duration::from_secs(86_400)),
        vec![JoinKey::new("driver_id", ValueType::Int64)],
    )
}

fn ek(id: i64) -> Vec<u8> {
    encode_entity_key(&[("driver_id", Value::Int64(id))]).expect("key")
}

fn rows(ts: i64) -> Vec<OnlineRow> {
    (0..ENTITIES)
        .map(|id| OnlineRow {
            entity_key: ek(id),
            event_ts: ts,
            created_ts: Some(ts),
            payload: vec![7; PAYLOAD_BYTES].into(),
        })
        .collect()
}

fn fmt_counts(c: &RequestCounts) -> String {
    format!(
        "BatchGetItem={} PutItem={} BatchWriteItem={} Scan={} retries={}",
        c.batch_get_item, c.put_item, c.batch_write_item, c.scan, c.retries
    )
}

async fn materialize(store: &DynamoOnlineStore, views: &[ResolvedView], ts: i64, label: &str) {
    let before = store.request_counts();
    let started = Instant::now();
    let mut written = 0;
    let mut skipped = 0;
    for v in views {
        let s = store
            .write(v, rows(ts), &WriteOptions::default())
            .await
            .expect("write");
        written += s.written;
        skipped += s.skipped;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = ENTITIES as f64 * views.len() as f64;
    let used = store.request_counts().since(&before);
    println!(
        "materialize {label}: {n} rows in {secs:.2} s = {:.0} rows/s (written {written}, skipped {skipped}); {} ({:.2} requests/row)",
        n / secs,
        fmt_counts(&used),
        used.total() as f64 / n
    );
}

async fn read_latency(store: &DynamoOnlineStore, views: &[ResolvedView], entities: i64) {
    let mut lat = Vec::with_capacity(READ_ITERS);
    let before = store.request_counts();
    for i in 0..READ_ITERS {
        let first = (i as i64 * 97) % (ENTITIES - entities);
        let keys: Vec<OnlineKey> = (first..first + entities)
            .flat_map(|id| {
                views.iter().map(move |v| OnlineKey {
                    view: v.name().to_owned(),
                    entity_key: ek(id),
                })
            })
            .collect();
        let started = Instant::now();
        let got = store
            .read(&keys, &ReadOptions::default())
            .await
            .expect("read");
        lat.push(started.elapsed());
        assert!(got.iter().all(Option::is_some));
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    let used = store.request_counts().since(&before);
    println!(
        "read {entities:>3} entities x {} views ({} keys): p50 {:?}  p99 {:?}  mean {mean:?}; {:.2} BatchGetItem/read, {} retries",
        views.len(),
        entities as usize * views.len(),
        pct(0.5),
        pct(0.99),
        used.batch_get_item as f64 / READ_ITERS as f64,
        used.retries
    );
}

#[tokio::main]
async fn main() {
    let Ok(endpoint) = std::env::var("FSTORE_TEST_DYNAMO_ENDPOINT") else {
        eprintln!(
            "SKIPPED: dynamo bench (FSTORE_TEST_DYNAMO_ENDPOINT not set; see scripts/servers/dynamo.sh)"
        );
        return;
    };
    let store = DynamoOnlineStoreBuilder::new()
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_access_key_id("fstore-bench")
        .with_secret_access_key("fstore-bench")
        .with_table(format!("fstore_bench_{}", std::process::id()))
        .build()
        .expect("store");
    store.ensure_tables().await.expect("ensure_tables");
    let views = [view("bench_a"), view("bench_b")];
    println!(
        "server: local DynamoDB-compatible server; {ENTITIES} entities x 2 views, {PAYLOAD_BYTES}-byte payloads"
    );
    materialize(&store, &views, 1_000, "(new rows)").await;
    materialize(
        &store,
        &views,
        1_000,
        "(same rows again: equal version, rewritten)",
    )
    .await;
    materialize(&store, &views, 500, "(older rows: all skipped)").await;
    read_latency(&store, &views, 1).await;
    read_latency(&store, &views, 100).await;
    let before = store.request_counts();
    for v in &views {
        store.delete_view(v.name()).await.expect("delete_view");
    }
    println!(
        "delete_view x2: {}",
        fmt_counts(&store.request_counts().since(&before))
    );
}
