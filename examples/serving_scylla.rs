//! Serving from Cassandra / ScyllaDB.
//!
//! ```text
//! # a ScyllaDB on 127.0.0.1:9042, then:
//! FSTORE_SCYLLA_CONTACT_POINTS=127.0.0.1:9042 \
//!   cargo run -p fstore-examples --example serving_scylla --features scylla
//! ```
//!
//! Every `FSTORE_SCYLLA_*` variable is honoured (keyspace, local DC,
//! consistency levels, credentials, timeouts, …); the keyspace defaults to
//! `fstore_example` here and is created with `SimpleStrategy:1` unless
//! `FSTORE_SCYLLA_REPLICATION` says otherwise.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::Utc;
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, InMemoryOfflineStore,
    InMemoryRegistry, MaterializeOptions, OnlineRequest, ValueType,
};
use fstore_online_scylla::{ScyllaConfigKey, ScyllaOnlineStoreBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = ScyllaOnlineStoreBuilder::from_env();
    if std::env::var(fstore_core::config::ConfigKey::env_var(
        ScyllaConfigKey::Keyspace,
    ))
    .is_err()
    {
        builder = builder.with_keyspace("fstore_example");
    }
    let online = builder.connect().await?;
    online.ensure_schema().await?; // explicit: never done on the read path
    println!("online store: {online:?}");

    let store = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::new(online))
        .with_online_timeout(Duration::from_millis(500))
        .build()?;
    store
        .apply(
            &Definitions::new()
                .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
                .with_feature_view(
                    FeatureView::new("driver_stats", ["driver"])
                        .with_feature("conv_rate", ValueType::Float64)
                        .with_ttl(Duration::from_secs(86_400)),
                ),
            Default::default(),
        )
        .await?;

    // Two versions of driver 1001, written out of order: the newer one wins.
    let now = Utc::now().timestamp() * 1_000_000;
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let history = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts, false),
            Field::new("conv_rate", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001, 1001, 1002])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    now - 60_000_000,
                    now - 120_000_000,
                    now - 5_000_000,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(vec![0.7, 0.5, 0.9])),
        ],
    )?;
    store.write_history("driver_stats", &history).await?;
    let report = store
        .materialize_incremental(
            &["driver_stats"],
            Utc::now(),
            &MaterializeOptions::default(),
        )
        .await?;
    println!("materialized: {report:?}");

    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "driver_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(vec![1001, 1002, 42]))],
    )?;
    let resp = store
        .get_online_features(&OnlineRequest::new(
            FeatureSelection::refs(["driver_stats:conv_rate"])?,
            entities,
        ))
        .await?;
    let meta = resp.feature("conv_rate").ok_or("no conv_rate")?;
    println!("conv_rate statuses: {:?}", meta.statuses());
    println!("{:?}", resp.batch());
    Ok(())
}
