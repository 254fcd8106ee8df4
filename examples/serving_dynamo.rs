//! Serving features from DynamoDB.
//!
//! Defines a view, writes history to the (in-memory) offline store,
//! materializes it into DynamoDB, and serves online features for a few
//! drivers, printing values, statuses and the DynamoDB requests it took.
//!
//! Against a local DynamoDB-compatible server (moto, as the tests use):
//!
//! ```text
//! source scripts/servers/dynamo.sh && start_dynamo
//! FSTORE_DYNAMO_ENDPOINT=$FSTORE_TEST_DYNAMO_ENDPOINT FSTORE_DYNAMO_REGION=us-east-1 \
//! FSTORE_DYNAMO_ACCESS_KEY_ID=fake FSTORE_DYNAMO_SECRET_ACCESS_KEY=fake \
//!   cargo run -p fstore-examples --example serving_dynamo --features dynamo
//! stop_dynamo
//! ```
//!
//! Against AWS, set `FSTORE_DYNAMO_REGION` (and `FSTORE_DYNAMO_TABLE`) and
//! static keys, or build the store with the `aws-config` feature's
//! `build_with_default_chain()` to use the standard credential chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{TimeZone, Utc};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, MaterializeOptions,
    OnlineRequest, ValueType,
};
use fstore_online_dynamo::DynamoOnlineStoreBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dynamo = Arc::new(DynamoOnlineStoreBuilder::from_env().build()?);
    // Deploy-time step: create the table (on-demand billing) and enable TTL.
    dynamo.ensure_tables().await?;
    println!("online store: {dynamo:?}");

    let store = FeatureStore::builder()
        .with_online(Arc::clone(&dynamo) as Arc<fstore_core::DynOnlineStore>)
        .build()?;
    // A view name unique to this run, so reruns start empty.
    let view = format!("driver_stats_{}", std::process::id());
    store
        .apply(
            &Definitions::new()
                .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
                .with_feature_view(
                    FeatureView::new(view.as_str(), ["driver"])
                        .with_feature("conv_rate", ValueType::Float64)
                        .with_feature("trips_today", ValueType::Int64)
                        .with_ttl(Duration::from_secs(3600)),
                ),
            Default::default(),
        )
        .await?;

    // History: two updates for driver 1001, one for 1002 (an hour too old by serving time).
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let t = |secs: i64| secs * 1_000_000;
    let history = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts, false),
            Field::new("conv_rate", DataType::Float64, true),
            Field::new("trips_today", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001, 1001, 1002])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![t(7200), t(9000), t(1000)])
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(vec![Some(0.5), Some(0.7), Some(0.9)])),
            Arc::new(Int64Array::from(vec![Some(3), None, Some(8)])),
        ],
    )?;
    store.write_history(&view, &history).await?;

    let now = Utc.timestamp_opt(9_500, 0).single().ok_or("bad time")?;
    let report = store
        .materialize_incremental(&[view.as_str()], now, &MaterializeOptions::default())
        .await?;
    for v in &report.views {
        println!(
            "materialized {}: read {}, written {}, skipped {}",
            v.view, v.rows_read, v.rows_written, v.rows_skipped
        );
    }

    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "driver_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(vec![1001, 1002, 42]))],
    )?;
    let before = dynamo.request_counts();
    let started = Instant::now();
    let resp = store
        .get_online_features(
            &OnlineRequest::new(
                FeatureSelection::refs([
                    format!("{view}:conv_rate"),
                    format!("{view}:trips_today"),
                ])?,
                entities,
            )
            .with_now(now),
        )
        .await?;
    let took = started.elapsed();
    println!("{}", arrow_cast_pretty(resp.batch()));
    for m in resp.features() {
        println!("{:>12}: {:?}", m.name(), m.statuses());
    }
    let used = dynamo.request_counts().since(&before);
    println!(
        "online read of 3 entities took {took:?}: {} BatchGetItem request(s), {} retries",
        used.batch_get_item, used.retries
    );

    // Clean up this run's view.
    fstore_core::OnlineStore::delete_view(dynamo.as_ref(), &view).await?;
    Ok(())
}

/// A plain-text rendering of a batch (arrow's pretty printer is not a dependency here).
fn arrow_cast_pretty(batch: &RecordBatch) -> String {
    let schema = batch.schema();
    let mut out = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect::<Vec<_>>()
        .join(" | ");
    for row in 0..batch.num_rows() {
        let cells: Vec<String> = batch
            .columns()
            .iter()
            .map(|c| {
                if c.is_null(row) {
                    "null".to_owned()
                } else if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
                    a.value(row).to_string()
                } else if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
                    a.value(row).to_string()
                } else {
                    "?".to_owned()
                }
            })
            .collect();
        out.push('\n');
        out.push_str(&cells.join(" | "));
    }
    out
}
