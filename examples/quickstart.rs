//! fstore quickstart: embedded defaults only (in-memory online and offline
//! stores, a file registry in a temporary directory) — no server needed.
//!
//! Defines an entity and two feature views, writes a small history, builds a
//! point-in-time-correct training set, materializes the latest values online,
//! and serves them with per-feature statuses.
//!
//! Run: `cargo run -p fstore-examples --example quickstart`
//!
//! It checks its own results (the training set's values and the online values
//! and statuses, derived by hand below) and exits with an error when one is
//! wrong, so CI's quickstart run fails on a wrong answer, not only on a crash.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use fstore_core::{
    Definitions, Entity, FeatureField, FeatureRef, FeatureSelection, FeatureService, FeatureStatus,
    FeatureStore, FeatureView, FileRegistry, HistoricalRequest, InMemoryOfflineStore,
    InMemoryOnlineStore, MaterializeOptions, OnlineRequest, Value, ValueType,
};

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0)
        .single()
        .expect("valid date")
}

fn micros(t: &[DateTime<Utc>]) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from(t.iter().map(|t| t.timestamp_micros()).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

fn print_batch(title: &str, batch: &RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== {title} ({} rows)", batch.num_rows());
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    println!("{}", names.join(" | "));
    let opts = FormatOptions::default().with_null("null");
    // Timestamps are printed as UTC instants; arrow's formatter would need chrono-tz for "UTC".
    let cols: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(_, Some(_)) => {
                arrow_cast::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))
            }
            _ => Ok(Arc::clone(c)),
        })
        .collect::<Result<_, _>>()?;
    let fmts = cols
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        let cells: Vec<String> = fmts.iter().map(|f| f.value(row).to_string()).collect();
        println!("{}", cells.join(" | "));
    }
    Ok(())
}

/// The rows of column `name` as optional f64 / i64 / string values.
fn f64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, String> {
    let c = b.column_by_name(name).ok_or(format!("no column {name}"))?;
    let a = c
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or(format!("{name} is not float64"))?;
    Ok(a.iter().collect())
}

fn i64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, String> {
    let c = b.column_by_name(name).ok_or(format!("no column {name}"))?;
    let a = c
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or(format!("{name} is not int64"))?;
    Ok(a.iter().collect())
}

fn strs(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, String> {
    let c = b.column_by_name(name).ok_or(format!("no column {name}"))?;
    let a = c
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or(format!("{name} is not utf8"))?;
    Ok(a.iter().map(|v| v.map(str::to_owned)).collect())
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "quickstart self-check failed: {what}: got {got:?}, expected {want:?}"
        ))
    }
}

/// The training set, by hand: 1001 at Nov 1 10:00 sees the 08:00 row; at
/// 13:00 the two 12:00 rows tie on event time and the later-created one
/// (0.65) wins; 1002 at Nov 1 08:00 has no hourly row yet (nulls); at Nov 4
/// its newest row (Nov 3, conv_rate null) is inside the 2-day ttl; 1003 has
/// nothing. Profiles have no ttl.
fn check_training(b: &RecordBatch) -> Result<(), String> {
    check(
        "training conv_rate",
        f64s(b, "conv_rate")?,
        vec![Some(0.50), Some(0.65), None, None, None],
    )?;
    check(
        "training trips_today",
        i64s(b, "trips_today")?,
        vec![Some(3), Some(7), None, Some(4), None],
    )?;
    check(
        "training city",
        strs(b, "city")?,
        ["Lisbon", "Lisbon", "Porto", "Porto"]
            .iter()
            .map(|c| Some((*c).to_owned()))
            .chain([None])
            .collect(),
    )?;
    check(
        "training labels kept in spine order",
        f64s(b, "label")?,
        vec![Some(1.0), Some(0.0), Some(1.0), Some(0.0), Some(1.0)],
    )
}

/// Online at Nov 3 12:00, by hand: 1001's newest row (Nov 1 12:00, created
/// Nov 2) is exactly 2 days old — the ttl is inclusive, so Present; 1002's
/// newest row has a null conv_rate (NullValue) and 4 trips; 1003 is unknown
/// (NotFound), and its trips_today is imputed with the default 0.
fn check_online(r: &fstore_core::OnlineResponse) -> Result<(), String> {
    use FeatureStatus::{NotFound, NullValue, Present};
    check(
        "online conv_rate",
        f64s(r.batch(), "conv_rate")?,
        vec![Some(0.65), None, None],
    )?;
    check(
        "online trips_today",
        i64s(r.batch(), "trips_today")?,
        vec![Some(7), Some(4), Some(0)],
    )?;
    check(
        "online city",
        strs(r.batch(), "city")?,
        vec![Some("Lisbon".to_owned()), Some("Porto".to_owned()), None],
    )?;
    let statuses = |f: &str| {
        r.feature(f)
            .map(|m| m.statuses())
            .ok_or(format!("no metadata for {f}"))
    };
    check(
        "conv_rate statuses",
        statuses("conv_rate")?,
        vec![Present, NullValue, NotFound],
    )?;
    check(
        "trips_today statuses",
        statuses("trips_today")?,
        vec![Present, Present, NotFound],
    )?;
    check(
        "city statuses",
        statuses("city")?,
        vec![Present, Present, NotFound],
    )?;
    check("imputed values", r.imputed, 1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Embedded defaults: a file registry (atomic, versioned), in-memory stores.
    let registry_dir =
        std::env::temp_dir().join(format!("fstore-quickstart-{}", std::process::id()));
    let store = FeatureStore::builder()
        .with_registry(Arc::new(FileRegistry::open(&registry_dir)?))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .build()?;

    // 2. Definitions: one entity, two views, one feature service.
    let defs = Definitions::new()
        .with_entity(
            Entity::new("driver", "driver_id", ValueType::Int64)
                .with_description("A ride-hailing driver"),
        )
        .with_feature_view(
            FeatureView::new("driver_hourly", ["driver"])
                .with_feature("conv_rate", ValueType::Float64)
                .with_field(
                    FeatureField::new("trips_today", ValueType::Int64)
                        .with_default(Value::Int64(0)),
                )
                .with_ttl(Duration::from_secs(2 * 86_400))
                .with_created_timestamp_column("created")
                .with_owner("ml-platform"),
        )
        .with_feature_view(
            FeatureView::new("driver_profile", ["driver"])
                .with_feature("city", ValueType::String)
                .with_description("Slow-changing profile, no ttl"),
        )
        .with_feature_service(FeatureService::new(
            "eta_model_v1",
            [
                FeatureRef::new("driver_hourly", "conv_rate"),
                FeatureRef::new("driver_hourly", "trips_today"),
                FeatureRef::new("driver_profile", "city"),
            ],
        ));
    println!("plan:\n{}", store.plan(&defs).await?);
    let applied = store.apply(&defs, Default::default()).await?;
    println!(
        "registry version {} at {}",
        applied.version,
        registry_dir.display()
    );

    // 3. History (tz-aware UTC timestamps; naive ones would be rejected).
    let hourly = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
            Field::new("created", ts_type(), false),
            Field::new("conv_rate", DataType::Float64, true),
            Field::new("trips_today", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001, 1001, 1001, 1002, 1002])),
            micros(&[at(1, 8), at(1, 12), at(1, 12), at(1, 9), at(3, 9)]),
            micros(&[at(1, 8), at(1, 12), at(2, 0), at(1, 9), at(3, 9)]),
            Arc::new(Float64Array::from(vec![
                Some(0.50),
                Some(0.60),
                Some(0.65),
                Some(0.90),
                None,
            ])),
            Arc::new(Int64Array::from(vec![
                Some(3),
                Some(7),
                Some(7),
                Some(1),
                Some(4),
            ])),
        ],
    )?;
    let profile = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
            Field::new("city", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001, 1002])),
            micros(&[at(1, 0), at(1, 0)]),
            Arc::new(StringArray::from(vec!["Lisbon", "Porto"])),
        ],
    )?;
    store.write_history("driver_hourly", &hourly).await?;
    store.write_history("driver_profile", &profile).await?;

    // 4. A training set: labels at given times; features as of those times.
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("ts", ts_type(), false),
            Field::new("label", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1001, 1001, 1002, 1002, 1003])),
            micros(&[at(1, 10), at(1, 13), at(1, 8), at(4, 0), at(1, 10)]),
            Arc::new(Float64Array::from(vec![1.0, 0.0, 1.0, 0.0, 1.0])),
        ],
    )?;
    let training = store
        .get_historical_features(&HistoricalRequest::new(
            vec![spine],
            "ts",
            FeatureSelection::service("eta_model_v1"),
        ))
        .await?;
    print_batch("training set (point-in-time correct)", &training.batch)?;
    check_training(&training.batch)?;

    // 5. Materialize up to "now" = Nov 3, 12:00, then serve.
    let now = at(3, 12);
    let report = store
        .materialize_incremental(
            &["driver_hourly", "driver_profile"],
            now,
            &MaterializeOptions::default(),
        )
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
        vec![Arc::new(Int64Array::from(vec![1001, 1002, 1003]))],
    )?;
    let online = store
        .get_online_features(
            &OnlineRequest::new(FeatureSelection::service("eta_model_v1"), entities).with_now(now),
        )
        .await?;
    print_batch("online features", online.batch())?;
    for m in online.features() {
        println!("status {:<12} {:?}", m.name(), m.statuses());
    }
    println!("imputed values: {}", online.imputed);
    let _ = std::fs::remove_dir_all(&registry_dir);
    check_online(&online)?;
    check(
        "materialized driver_hourly (read, written, skipped)",
        report
            .views
            .iter()
            .find(|v| v.view == "driver_hourly")
            .map(|v| (v.rows_read, v.rows_written, v.rows_skipped)),
        Some((5, 2, 3)),
    )?;
    println!("\nself-check: training set, online values and statuses as expected");
    Ok(())
}
