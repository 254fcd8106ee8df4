//! Offline store conformance cases.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::fixtures::{base_micros, feature_batch, test_definitions, unique_name};
use crate::adapter::normalize_batch;
use crate::memory::{InMemoryOnlineStore, InMemoryRegistry};
use crate::model::{ResolvedView, ValueType};
use crate::offline::{DynOfflineStore, ScanRequest, TimeRange};
use crate::pit::{PitOptions, PitView, point_in_time_join};
use crate::store::{FeatureSelection, FeatureStore, HistoricalRequest};
use crate::time::{UTC, from_micros, timestamp_type};

async fn write(
    store: &DynOfflineStore,
    rv: &ResolvedView,
    rows: &[(i64, i64, i64, Option<f64>)],
) -> Option<u64> {
    let b = store.backend();
    let batch = normalize_batch(rv, &feature_batch(rows), false)
        .unwrap_or_else(|e| panic!("[{b}] normalize: {e}"));
    store
        .write(rv, batch)
        .await
        .unwrap_or_else(|e| panic!("[{b}] write: {e}"))
        .version
}

async fn scan(store: &DynOfflineStore, rv: &ResolvedView, req: ScanRequest) -> Vec<RecordBatch> {
    let b = store.backend();
    store
        .scan(rv, &req)
        .await
        .unwrap_or_else(|e| panic!("[{b}] scan: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("[{b}] scan stream: {e}"))
}

/// `(user_id, event)` pairs of scanned batches, in order.
fn ids_events(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_primitive::<Int64Type>().clone();
            let ev = b
                .column(1)
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .clone();
            (0..b.num_rows()).map(move |i| (ids.value(i), ev.value(i)))
        })
        .collect()
}

async fn cleanup(store: &DynOfflineStore, rv: &ResolvedView) {
    store
        .delete_view(rv)
        .await
        .unwrap_or_else(|e| panic!("[{}] delete_view: {e}", store.backend()));
}

/// Appended rows are all scanned back, in write order, in the canonical schema.
pub async fn offline_append_and_scan(store: &DynOfflineStore) {
    let b = store.backend();
    let (_, rv) = test_definitions(&unique_name("tk_off"), None);
    let t = base_micros();
    write(store, &rv, &[(1, t + 3, t, Some(1.0)), (2, t + 1, t, None)]).await;
    write(
        store,
        &rv,
        &[(1, t + 2, t, Some(2.0)), (1, t + 2, t, Some(2.0))],
    )
    .await;
    let got = scan(store, &rv, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(
        ids_events(&got),
        vec![(1, t + 3), (2, t + 1), (1, t + 2), (1, t + 2)],
        "[{b}] every row (duplicates too), in write order"
    );
    let schema = got[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec![
            "user_id",
            "event_timestamp",
            "created",
            "score",
            "label",
            "count",
            "emb"
        ],
        "[{b}] canonical column order"
    );
    assert_eq!(
        schema.field(1).data_type(),
        &timestamp_type(),
        "[{b}] event ts is UTC micros"
    );
    cleanup(store, &rv).await;
}

/// Time ranges honour inclusive/exclusive bounds; projection returns only the
/// requested features (plus keys and timestamps).
pub async fn offline_time_range(store: &DynOfflineStore) {
    let b = store.backend();
    let (_, rv) = test_definitions(&unique_name("tk_rng"), None);
    let t = base_micros();
    let rows: Vec<_> = (0..10)
        .map(|i| (i, t + i * 1_000_000, t, Some(i as f64)))
        .collect();
    write(store, &rv, &rows).await;
    let s = |i: i64| from_micros(t + i * 1_000_000);
    let cases = [
        (TimeRange::inclusive(Some(s(2)), s(5)), vec![2, 3, 4, 5]),
        (TimeRange::after_until(Some(s(2)), s(5)), vec![3, 4, 5]),
        (TimeRange::inclusive(None, s(1)), vec![0, 1]),
        (
            TimeRange {
                start: Bound::Included(s(8)),
                end: Bound::Unbounded,
            },
            vec![8, 9],
        ),
        (TimeRange::inclusive(Some(s(20)), s(30)), vec![]),
    ];
    for (range, expect) in cases {
        let got = scan(
            store,
            &rv,
            ScanRequest::new(range).with_features(vec!["score".into()]),
        )
        .await;
        let mut ids: Vec<i64> = ids_events(&got).into_iter().map(|(i, _)| i).collect();
        ids.sort_unstable();
        assert_eq!(ids, expect, "[{b}] range {range:?}");
        for batch in &got {
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(
                names,
                vec!["user_id", "event_timestamp", "created", "score"],
                "[{b}] projection"
            );
            let score = batch.column(3).as_primitive::<Float64Type>();
            let ids = batch.column(0).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                assert_eq!(
                    score.value(i),
                    ids.value(i) as f64,
                    "[{b}] projected values stay aligned"
                );
            }
        }
    }
    cleanup(store, &rv).await;
}

/// Versioned stores: `since_version` returns exactly the later commits,
/// `as_of_version` reproduces an earlier state. Skipped (with a note) when the
/// store has neither capability.
pub async fn offline_versions(store: &DynOfflineStore) {
    let b = store.backend();
    let caps = store.capabilities();
    if !caps.change_log && !caps.time_travel {
        eprintln!("[{b}] offline_versions: store has no versions; case not applicable");
        return;
    }
    let (_, rv) = test_definitions(&unique_name("tk_ver"), None);
    let t = base_micros();
    let v1 = write(store, &rv, &[(1, t, t, Some(1.0))]).await;
    let v2 = write(store, &rv, &[(2, t, t, Some(2.0))]).await;
    let v3 = write(store, &rv, &[(3, t - 5, t, Some(3.0))]).await;
    let (Some(v1), Some(v2), Some(v3)) = (v1, v2, v3) else {
        panic!("[{b}] a versioned store must report the version of each write");
    };
    assert!(
        v1 < v2 && v2 < v3,
        "[{b}] versions increase: {v1} {v2} {v3}"
    );
    let latest = store
        .latest_version(&rv)
        .await
        .unwrap_or_else(|e| panic!("[{b}] latest_version: {e}"));
    assert_eq!(latest, Some(v3), "[{b}] latest_version");
    if caps.time_travel {
        let got = scan(
            store,
            &rv,
            ScanRequest::new(TimeRange::all()).with_as_of_version(Some(v2)),
        )
        .await;
        let ids: Vec<i64> = ids_events(&got).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![1, 2], "[{b}] as_of_version = {v2}");
    }
    if caps.change_log {
        let got = scan(
            store,
            &rv,
            ScanRequest::new(TimeRange::all()).with_since_version(Some(v1)),
        )
        .await;
        let ids: Vec<i64> = ids_events(&got).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![2, 3], "[{b}] since_version = {v1}");
        let got = scan(
            store,
            &rv,
            ScanRequest::new(TimeRange::all())
                .with_since_version(Some(v1))
                .with_as_of_version(Some(v2)),
        )
        .await;
        let ids: Vec<i64> = ids_events(&got).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![2], "[{b}] since {v1} as of {v2}");
    }
    cleanup(store, &rv).await;
}

/// A feature added to the view after rows were written reads as null in them.
pub async fn offline_schema_evolution(store: &DynOfflineStore) {
    let b = store.backend();
    let name = unique_name("tk_evo");
    let (_, rv) = test_definitions(&name, None);
    let t = base_micros();
    write(store, &rv, &[(1, t, t, Some(1.0))]).await;
    let mut view = (*rv.view).clone();
    view = view.with_feature("extra", ValueType::Int64);
    let rv2 = ResolvedView::new(view, rv.join_keys.clone());
    let mut batch = feature_batch(&[(2, t + 1, t, Some(2.0))]);
    let extra = Arc::new(Int64Array::from(vec![Some(42)]));
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("extra", DataType::Int64, true));
    let mut cols = batch.columns().to_vec();
    cols.push(extra);
    batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("evolved batch");
    let batch =
        normalize_batch(&rv2, &batch, false).unwrap_or_else(|e| panic!("[{b}] normalize: {e}"));
    store
        .write(&rv2, batch)
        .await
        .unwrap_or_else(|e| panic!("[{b}] write after adding a feature: {e}"));
    let got = scan(
        store,
        &rv2,
        ScanRequest::new(TimeRange::all()).with_features(vec!["extra".into(), "score".into()]),
    )
    .await;
    let mut seen = Vec::new();
    for batch in &got {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let extra = batch
            .column_by_name("extra")
            .unwrap_or_else(|| panic!("[{b}] 'extra' missing from scan"))
            .as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            seen.push((ids.value(i), extra.is_valid(i).then(|| extra.value(i))));
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![(1, None), (2, Some(42))],
        "[{b}] old rows read null for the new feature"
    );
    cleanup(store, &rv2).await;
}

async fn check_reference(
    store: &Arc<DynOfflineStore>,
    rows: &[(i64, i64, i64, Option<f64>)],
    spine: &[(i64, i64)],
    ttl: Option<u8>,
) -> Result<(), TestCaseError> {
    let b = store.backend();
    let name = unique_name("tk_hist");
    let (defs, rv) = test_definitions(&name, ttl.map(|s| Duration::from_secs(u64::from(s))));
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::clone(store))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .build()
        .map_err(|e| TestCaseError::fail(format!("[{b}] build: {e}")))?;
    let fail = |what: &str, e: crate::Error| TestCaseError::fail(format!("[{b}] {what}: {e}"));
    fs.apply(&defs, Default::default())
        .await
        .map_err(|e| fail("apply", e))?;
    // write in two appends to exercise multi-file reads
    let mid = rows.len() / 2;
    let mut written = Vec::new();
    for part in [&rows[..mid], &rows[mid..]] {
        if !part.is_empty() {
            let batch = feature_batch(part);
            fs.write_history(&name, &batch)
                .await
                .map_err(|e| fail("write_history", e))?;
            written.push(normalize_batch(&rv, &batch, false).map_err(|e| fail("normalize", e))?);
        }
    }
    let spine_batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", timestamp_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                spine.iter().map(|s| s.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(spine.iter().map(|s| s.1).collect::<Vec<_>>())
                    .with_timezone(UTC),
            ),
        ],
    )
    .map_err(|e| fail("spine", e.into()))?;
    let feats = ["score", "label", "count", "emb"];
    let sel = FeatureSelection::refs(feats.iter().map(|f| format!("{name}:{f}")))
        .map_err(|e| fail("refs", e))?;
    let got = fs
        .get_historical_features(&HistoricalRequest::new(
            vec![spine_batch.clone()],
            "ts",
            sel,
        ))
        .await
        .map_err(|e| fail("get_historical_features", e))?;
    let pv = PitView {
        name: name.clone(),
        join_keys: vec!["user_id".into()],
        event_timestamp_column: "event_timestamp".into(),
        created_timestamp_column: Some("created".into()),
        ttl: rv.view.ttl,
        features: rv
            .view
            .features
            .iter()
            .map(crate::model::FeatureField::to_arrow)
            .collect(),
        batches: &written,
    };
    let expect = point_in_time_join(&[spine_batch], "ts", &[pv], &PitOptions::default())
        .map_err(|e| fail("reference join", e))?;
    for f in feats {
        let (a, e) = (got.batch.column_by_name(f), expect.column_by_name(f));
        prop_assert!(
            a.is_some() && a == e,
            "[{}] feature {}: store {:?} != pure join over full history {:?}",
            b,
            f,
            a,
            e
        );
    }
    store
        .delete_view(&rv)
        .await
        .map_err(|e| fail("delete_view", e))?;
    Ok(())
}

/// Historical retrieval through the store equals the pure join over the full
/// history (proptest, `cases` cases; the time-window pushdown must not lose rows).
pub async fn offline_historical_matches_reference(store: Arc<DynOfflineStore>, cases: u32) {
    let b = store.backend();
    let strategy = (
        prop::collection::vec(
            (0i64..4, 0i64..20, 0i64..3, prop::option::of(-9i8..9)),
            1..30,
        ),
        prop::collection::vec((0i64..5, 0i64..25), 1..12),
        prop::option::of(1u8..8),
    );
    super::run_async_proptest(
        "offline_historical_matches_reference",
        &format!("[{b}] historical retrieval differs from the pure join"),
        cases,
        strategy,
        |(rows, spine, ttl)| {
            let base = base_micros();
            let sec = 1_000_000;
            let rows: Vec<_> = rows
                .iter()
                .map(|r| (r.0, base + r.1 * sec, base + r.2 * sec, r.3.map(f64::from)))
                .collect();
            let spine: Vec<_> = spine.iter().map(|s| (s.0, base + s.1 * sec)).collect();
            let store = Arc::clone(&store);
            async move { check_reference(&store, &rows, &spine, ttl).await }
        },
    );
}

/// Runs every offline case of the registry ([`super::offline_cases`]) that
/// the store's capabilities allow. Needs a multi-threaded tokio runtime.
pub async fn run_offline_suite(store: Arc<DynOfflineStore>) {
    super::run_offline_cases(store, super::parity_cases(32)).await;
}
