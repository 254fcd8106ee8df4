//! Training set from a local Delta Lake offline store — no server needed.
//!
//! ```text
//! cargo run -p fstore-examples --example training_delta --features delta
//! ```
//!
//! Writes driver statistics to a Delta table (one per feature view) under a
//! temporary directory, keeps the registry next to it, builds a
//! point-in-time-correct training set, then shows that pinning the reported
//! table versions reproduces it after more data arrived (Delta time travel).

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, HistoricalRequest,
    InMemoryOnlineStore, ValueType,
};
use fstore_offline_delta::DeltaOfflineStoreBuilder;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn history(rows: &[(i64, i64, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts(), false),
            Field::new("conv_rate", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("valid batch")
}

#[tokio::main]
async fn main() -> fstore_core::Result<()> {
    let root = std::env::temp_dir().join(format!("fstore-training-delta-{}", std::process::id()));
    let delta = DeltaOfflineStoreBuilder::new().with_root(root.to_string_lossy());
    let store = FeatureStore::builder()
        .with_offline(Arc::new(delta.clone().build()?))
        .with_registry(Arc::new(delta.build_registry()?))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .build()?;

    store
        .apply(
            &Definitions::new()
                .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
                .with_feature_view(
                    FeatureView::new("driver_stats", ["driver"])
                        .with_feature("conv_rate", ValueType::Float64)
                        .with_ttl(Duration::from_secs(3_600)),
                ),
            Default::default(),
        )
        .await?;
    let w = store
        .write_history(
            "driver_stats",
            &history(&[(1001, 100, 0.50), (1002, 100, 0.30), (1001, 200, 0.55)]),
        )
        .await?;
    println!(
        "wrote {} rows to {} (Delta version {:?})",
        w.rows,
        root.join("driver_stats").display(),
        w.version
    );

    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("label_time", ts(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001, 1002, 1001])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![150_000_000, 250_000_000, 250_000_000])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .expect("valid spine");
    let req = HistoricalRequest::new(
        vec![spine],
        "label_time",
        FeatureSelection::refs(["driver_stats:conv_rate"])?,
    );
    let first = store.get_historical_features(&req).await?;
    println!(
        "training set (registry v{}, table versions {:?}, rows scanned {:?}):\n{:?}",
        first.registry_version, first.view_versions, first.rows_scanned, first.batch
    );

    // Later: late data for the same period arrives...
    store
        .write_history("driver_stats", &history(&[(1002, 240, 0.99)]))
        .await?;
    // ...and the pinned request still returns the identical training set.
    let pinned = req
        .clone()
        .with_view_versions(first.view_versions.clone())
        .with_registry_version(first.registry_version);
    let again = store.get_historical_features(&pinned).await?;
    assert_eq!(again.batch, first.batch);
    println!(
        "pinned to {:?}: identical training set reproduced",
        again.view_versions
    );
    let latest = store.get_historical_features(&req).await?;
    println!(
        "latest versions {:?} see the late row",
        latest.view_versions
    );

    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
