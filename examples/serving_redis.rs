//! Materialize features into Redis, then serve concurrent requests and print
//! p50/p99 latency.
//!
//! ```text
//! source scripts/servers/redis.sh && start_redis
//! FSTORE_REDIS_URL=$FSTORE_TEST_REDIS_URL cargo run -p fstore-examples --example serving_redis --features redis
//! stop_redis
//! ```
//!
//! Reads its connection settings from `FSTORE_REDIS_*` (default URL
//! `redis://127.0.0.1:6379`), uses a random key prefix and removes its data at
//! the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, InMemoryOfflineStore,
    InMemoryRegistry, MaterializeOptions, OnlineRequest, OnlineStore, ValueType,
};
use fstore_online_redis::{RedisConfigKey, RedisOnlineStoreBuilder};

const DRIVERS: i64 = 20_000;
const TASKS: usize = 8;
const REQUESTS_PER_TASK: usize = 250;
const ENTITIES_PER_REQUEST: usize = 10;

#[tokio::main]
async fn main() -> fstore_core::Result<()> {
    let mut builder = RedisOnlineStoreBuilder::from_env()
        .with_key_prefix(format!("example-{}", std::process::id()));
    if std::env::var(fstore_core::config::ConfigKey::env_var(RedisConfigKey::Url)).is_err() {
        builder = builder.with_url("redis://127.0.0.1:6379");
    }
    let online = Arc::new(builder.build()?);
    println!("online store: {}", online.store_id());
    let store = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&online) as Arc<fstore_core::DynOnlineStore>)
        .build()?;

    let view = "driver_hourly";
    store
        .apply(
            &Definitions::new()
                .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
                .with_feature_view(
                    FeatureView::new(view, ["driver"])
                        .with_feature("conv_rate", ValueType::Float64)
                        .with_feature("acc_rate", ValueType::Float64)
                        .with_feature("trips", ValueType::Int64)
                        .with_ttl(Duration::from_secs(7 * 86_400)),
                ),
            Default::default(),
        )
        .await?;

    // Three hourly snapshots per driver.
    let now = Utc::now().timestamp_micros();
    let hour = 3_600_000_000i64;
    let (mut ids, mut ts, mut conv, mut acc, mut trips) = (vec![], vec![], vec![], vec![], vec![]);
    for h in 0..3i64 {
        for d in 0..DRIVERS {
            ids.push(d);
            ts.push(now - (2 - h) * hour);
            conv.push((d % 100) as f64 / 100.0 + h as f64 * 0.001);
            acc.push(1.0 - (d % 50) as f64 / 100.0);
            trips.push(d % 30 + h);
        }
    }
    let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let history = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", tz, false),
            Field::new("conv_rate", DataType::Float64, true),
            Field::new("acc_rate", DataType::Float64, true),
            Field::new("trips", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(conv)),
            Arc::new(Float64Array::from(acc)),
            Arc::new(Int64Array::from(trips)),
        ],
    )
    .map_err(fstore_core::Error::from)?;
    store.write_history(view, &history).await?;

    let end = DateTime::from_timestamp_micros(now).unwrap_or_else(Utc::now);
    let t0 = Instant::now();
    let report = store
        .materialize_incremental(&[view], end, &MaterializeOptions::default())
        .await?;
    let r = &report.views[0];
    println!(
        "materialized {} rows ({} written, {} skipped) in {:.2?}",
        r.rows_read,
        r.rows_written,
        r.rows_skipped,
        t0.elapsed()
    );

    // Serve: TASKS concurrent clients, each sending requests for 10 drivers.
    let store = Arc::new(store);
    let features = FeatureSelection::refs([
        format!("{view}:conv_rate"),
        format!("{view}:acc_rate"),
        format!("{view}:trips"),
    ])?;
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, features) = (Arc::clone(&store), features.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(REQUESTS_PER_TASK);
            let mut seed = task as i64 * 7_919 + 1;
            for _ in 0..REQUESTS_PER_TASK {
                let ids: Vec<i64> = (0..ENTITIES_PER_REQUEST)
                    .map(|_| {
                        seed = (seed * 48_271) % 2_147_483_647;
                        seed % DRIVERS
                    })
                    .collect();
                let entities = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new(
                        "driver_id",
                        DataType::Int64,
                        false,
                    )])),
                    vec![Arc::new(Int64Array::from(ids))],
                )
                .map_err(fstore_core::Error::from)?;
                let t = Instant::now();
                let resp = store
                    .get_online_features(&OnlineRequest::new(features.clone(), entities))
                    .await?;
                lat.push(t.elapsed());
                assert_eq!(resp.batch().num_rows(), ENTITIES_PER_REQUEST);
            }
            Ok::<_, fstore_core::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(
            h.await
                .map_err(|e| fstore_core::Error::backend_msg("example", e.to_string()))??,
        );
    }
    let wall = t0.elapsed();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "served {} requests × {ENTITIES_PER_REQUEST} entities with {TASKS} concurrent tasks in {wall:.2?} ({:.0} req/s)",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "latency p50 {:?}  p99 {:?}  max {:?}",
        p(0.5),
        p(0.99),
        p(1.0)
    );

    online.delete_view(view).await?;
    Ok(())
}
