//! Bad-input classes of issue 11 at the facade: each asserts the named error
//! and that nothing was written (registry version, table version, online row).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int32Array, LargeStringArray, RecordBatch, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow_schema::{DataType, Field as ArrowField, Schema};

use super::*;
use crate::online::{OnlineKey, ReadOptions};
use crate::testkit::{entity_batch, feature_batch, test_definitions};
use crate::time::{UTC, from_micros, timestamp_type};

const S: i64 = 1_000_000;

/// `batch` with its `user_id` column replaced by `key`.
fn with_key(batch: &RecordBatch, key: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let fields: Vec<ArrowField> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "user_id" {
                ArrowField::new("user_id", key.data_type().clone(), false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            if f.name() == "user_id" {
                Arc::clone(&key)
            } else {
                Arc::clone(c)
            }
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

async fn store(view: &str) -> (FeatureStore, ResolvedView) {
    let fs = FeatureStore::in_memory();
    let (defs, rv) = test_definitions(view, None);
    fs.apply(&defs, ApplyOptions::default()).await.unwrap();
    (fs, rv)
}

async fn online_row(fs: &FeatureStore, view: &str, id: i64) -> Option<crate::online::OnlineRow> {
    let key =
        crate::codec::encode_entity_key(&[("user_id", crate::model::Value::Int64(id))]).unwrap();
    fs.online_store()
        .read(
            &[OnlineKey {
                view: view.into(),
                entity_key: key,
            }],
            &ReadOptions::default(),
        )
        .await
        .unwrap()
        .pop()
        .flatten()
}

fn assert_key_type_error(err: &Error, from: &str) {
    let m = err.to_string();
    assert!(
        matches!(err, Error::InvalidInput(_))
            && m.contains("'user_id'")
            && m.contains(from)
            && m.contains("int64"),
        "{m}"
    );
}

#[tokio::test]
async fn lossy_key_casts_are_refused_on_push_naming_both_types_and_nothing_is_written() {
    let (fs, rv) = store("keys_push").await;
    fs.push(
        "keys_push",
        &feature_batch(&[(1, S, S, Some(1.0))]),
        PushTarget::Both,
    )
    .await
    .unwrap();
    let before = online_row(&fs, "keys_push", 1).await;
    let v_before = fs.offline_store().latest_version(&rv).await.unwrap();
    let lossy: Vec<(ArrayRef, &str)> = vec![
        (Arc::new(Float64Array::from(vec![1.7])), "Float64"),
        (Arc::new(UInt64Array::from(vec![1])), "UInt64"),
        (Arc::new(arrow_array::StringArray::from(vec!["1"])), "Utf8"),
    ];
    for (key, name) in lossy {
        let batch = with_key(&feature_batch(&[(1, 2 * S, 2 * S, Some(9.0))]), key);
        for target in [PushTarget::Online, PushTarget::Offline, PushTarget::Both] {
            let err = fs.push("keys_push", &batch, target).await.unwrap_err();
            assert_key_type_error(&err, name);
        }
        assert_eq!(
            online_row(&fs, "keys_push", 1).await,
            before,
            "{name}: online row unchanged"
        );
        assert_eq!(
            fs.offline_store().latest_version(&rv).await.unwrap(),
            v_before,
            "{name}: table version unchanged"
        );
    }
    // Lossless widenings still work.
    let widened = with_key(
        &feature_batch(&[(1, 3 * S, 3 * S, Some(3.0))]),
        Arc::new(Int32Array::from(vec![1])),
    );
    fs.push("keys_push", &widened, PushTarget::Online)
        .await
        .unwrap();
    assert_eq!(
        online_row(&fs, "keys_push", 1).await.unwrap().event_ts,
        3 * S
    );
}

#[tokio::test]
async fn lossy_request_and_spine_keys_are_refused_naming_both_types() {
    let (fs, _) = store("keys_read").await;
    fs.push(
        "keys_read",
        &feature_batch(&[(1, S, S, Some(1.0))]),
        PushTarget::Both,
    )
    .await
    .unwrap();
    let sel = FeatureSelection::refs(["keys_read:score"]).unwrap();
    let float_keys = with_key(&entity_batch(&[1]), Arc::new(Float64Array::from(vec![1.7])));
    let err = fs
        .get_online_features(&OnlineRequest::new(sel.clone(), float_keys).with_now(from_micros(S)))
        .await
        .unwrap_err();
    assert_key_type_error(&err, "Float64");

    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            ArrowField::new("user_id", DataType::Float64, false),
            ArrowField::new("ts", timestamp_type(), false),
        ])),
        vec![
            Arc::new(Float64Array::from(vec![1.7])),
            Arc::new(TimestampMicrosecondArray::from(vec![2 * S]).with_timezone(UTC)),
        ],
    )
    .unwrap();
    let err = fs
        .get_historical_features(&HistoricalRequest::new(vec![spine], "ts", sel.clone()))
        .await
        .unwrap_err();
    assert_key_type_error(&err, "Float64");

    // A large-string key for a string entity, and int32 for int64, are lossless.
    let ok = with_key(&entity_batch(&[1]), Arc::new(Int32Array::from(vec![1])));
    let r = fs
        .get_online_features(&OnlineRequest::new(sel, ok).with_now(from_micros(S)))
        .await
        .unwrap();
    assert_eq!(
        r.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Present]
    );
    assert!(crate::codec::lossless_key_cast(
        &DataType::LargeUtf8,
        &crate::model::ValueType::String
    ));
    let _ = LargeStringArray::from(vec!["x"]);
}

/// Item 8: after the offline table is deleted and re-created, its versions
/// restart; rows at or before the old watermark must still be materialized.
#[tokio::test]
async fn watermark_starts_over_when_the_offline_table_is_recreated() {
    let (fs, rv) = store("wm_recreate").await;
    let end = from_micros(10 * S);
    fs.write_history("wm_recreate", &feature_batch(&[(1, S, S, Some(1.0))]))
        .await
        .unwrap();
    fs.materialize_incremental(&["wm_recreate"], end, &MaterializeOptions::default())
        .await
        .unwrap();
    let store_id = fs.online_store().store_id();
    let w1 = fs
        .snapshot()
        .await
        .unwrap()
        .watermark("wm_recreate", &store_id)
        .cloned()
        .unwrap();
    assert!(
        w1.table_id.is_some(),
        "the watermark records the table identity"
    );
    assert_eq!(online_row(&fs, "wm_recreate", 1).await.unwrap().event_ts, S);

    fs.offline_store().delete_view(&rv).await.unwrap();
    // Two appends: the new table reaches a version >= the old watermark's.
    fs.write_history(
        "wm_recreate",
        &feature_batch(&[(2, 5 * S, 5 * S, Some(2.0))]),
    )
    .await
    .unwrap();
    fs.write_history(
        "wm_recreate",
        &feature_batch(&[(3, 6 * S, 6 * S, Some(3.0))]),
    )
    .await
    .unwrap();
    let r = fs
        .materialize_incremental(&["wm_recreate"], end, &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.views[0].start, None, "the run started over");
    assert_eq!(r.views[0].rows_read, 2);
    for (id, ts) in [(2, 5 * S), (3, 6 * S)] {
        assert_eq!(
            online_row(&fs, "wm_recreate", id).await.map(|r| r.event_ts),
            Some(ts),
            "entity {id} of the re-created table is online"
        );
    }
    let w2 = fs
        .snapshot()
        .await
        .unwrap()
        .watermark("wm_recreate", &store_id)
        .cloned()
        .unwrap();
    assert_ne!(w2.table_id, w1.table_id);
    // Unchanged table: the next run is incremental again (reads nothing new).
    let r = fs
        .materialize_incremental(&["wm_recreate"], end, &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!((r.views[0].start, r.views[0].rows_read), (Some(end), 0));
}

/// Item 11: an event time in seconds that overflows microseconds is an error
/// naming the column and row; nothing reaches either store.
#[tokio::test]
async fn overflowing_timestamps_are_refused_and_nothing_is_written() {
    use arrow_array::TimestampSecondArray;
    let (fs, rv) = store("ts_overflow").await;
    let good = feature_batch(&[(1, S, S, Some(1.0)), (2, S, S, Some(2.0))]);
    let schema = good.schema();
    let (i, _) = schema.column_with_name("event_timestamp").unwrap();
    let mut cols = good.columns().to_vec();
    cols[i] =
        Arc::new(TimestampSecondArray::from(vec![1, i64::MAX / 1_000_000 + 1]).with_timezone(UTC));
    let mut fields: Vec<ArrowField> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = ArrowField::new("event_timestamp", cols[i].data_type().clone(), false);
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    for target in [PushTarget::Online, PushTarget::Offline, PushTarget::Both] {
        let err = fs.push("ts_overflow", &bad, target).await.unwrap_err();
        let m = err.to_string();
        assert!(
            matches!(err, Error::InvalidInput(_))
                && m.contains("'event_timestamp'")
                && m.contains("row 1"),
            "{m}"
        );
    }
    assert_eq!(fs.offline_store().latest_version(&rv).await.unwrap(), None);
    assert!(online_row(&fs, "ts_overflow", 1).await.is_none());
}
