//! Shared fixtures of the suites.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema};

use crate::model::{Definitions, Entity, FeatureView, ResolvedView, ValueType};
use crate::time::{UTC, timestamp_type};

/// A name unique to this process and call: `prefix_<random hex>`.
pub fn unique_name(prefix: &str) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let h = RandomState::new().hash_one((std::process::id(), n, std::time::SystemTime::now()));
    format!("{prefix}_{h:016x}")
}

/// Definitions with entity `tk_user` (key `user_id: int64`) and one view
/// `view` with features `score: float64`, `label: string`, `count: int64`,
/// `emb: list<float32>`, a created-timestamp column `created`, and `ttl`.
pub fn test_definitions(view: &str, ttl: Option<Duration>) -> (Definitions, ResolvedView) {
    let mut v = FeatureView::new(view, ["tk_user"])
        .with_feature("score", ValueType::Float64)
        .with_feature("label", ValueType::String)
        .with_feature("count", ValueType::Int64)
        .with_feature("emb", ValueType::list(ValueType::Float32))
        .with_created_timestamp_column("created");
    v.ttl = ttl;
    let defs = Definitions::new()
        .with_entity(Entity::new("tk_user", "user_id", ValueType::Int64))
        .with_feature_view(v);
    let rv = defs.resolve_view(view).expect("fixture view resolves");
    (defs, rv)
}

/// A canonical batch for [`test_definitions`]' view: rows of
/// `(user_id, event_us, created_us, score)`; `label` = `"u{id}@{event}"`,
/// `count` = event, `emb` = `[score, -score]`. A `None` score makes every
/// feature of the row null.
pub fn feature_batch(rows: &[(i64, i64, i64, Option<f64>)]) -> RecordBatch {
    let mut emb = ListBuilder::new(Float32Builder::new());
    for r in rows {
        match r.3 {
            Some(s) => {
                emb.values().append_value(s as f32);
                emb.values().append_value(-s as f32);
                emb.append(true);
            }
            None => emb.append(false),
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                .with_timezone(UTC),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                .with_timezone(UTC),
        ),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.3.map(|_| format!("u{}@{}", r.0, r.1)))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.3.map(|_| r.1)).collect::<Vec<_>>(),
        )),
        Arc::new(emb.finish()),
    ];
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", timestamp_type(), false),
        Field::new("created", timestamp_type(), false),
        Field::new("score", DataType::Float64, true),
        Field::new("label", DataType::Utf8, true),
        Field::new("count", DataType::Int64, true),
        Field::new(
            "emb",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
    ]);
    RecordBatch::try_new(Arc::new(schema), cols).expect("fixture batch is well-formed")
}

/// A batch with one `user_id` column.
pub fn entity_batch(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .expect("entity batch is well-formed")
}

/// A base instant one day in the future (so backends with native TTL never
/// expire test rows while a case runs), rounded to the second, in micros.
pub(crate) fn base_micros() -> i64 {
    (chrono::Utc::now().timestamp() + 86_400) * 1_000_000
}

/// A bare view for adapter-level tests: entity `e` with one `id: int64` join
/// key, one feature `f: int64`, and `ttl`.
pub fn online_view(name: &str, ttl: Option<Duration>) -> ResolvedView {
    let mut v = FeatureView::new(name, ["e"]).with_feature("f", ValueType::Int64);
    v.ttl = ttl;
    ResolvedView::new(
        v,
        vec![crate::model::JoinKey {
            name: "id".into(),
            value_type: ValueType::Int64,
        }],
    )
}

/// An online row with raw entity-key and payload bytes.
pub fn online_row(
    entity_key: &[u8],
    event_ts: i64,
    created_ts: Option<i64>,
    payload: &[u8],
) -> crate::OnlineRow {
    crate::OnlineRow {
        entity_key: entity_key.to_vec(),
        event_ts,
        created_ts,
        payload: crate::bytes::Bytes::copy_from_slice(payload),
    }
}

/// The key of `entity_key` in `view`.
pub fn online_key(view: &str, entity_key: &[u8]) -> crate::OnlineKey {
    crate::OnlineKey {
        view: view.to_owned(),
        entity_key: entity_key.to_vec(),
    }
}
