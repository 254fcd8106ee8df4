//! The parity invariant ([semantics §7](crate::docs::semantics)) as a property test: after any sequence of
//! incremental materializations ending at T — any chunking of the history,
//! duplicates, out-of-order and late rows — an online read at `now = T` equals
//! the point-in-time join at T for every entity and feature (`Expired` ↔ null).

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::fixtures::{base_micros, entity_batch, feature_batch, test_definitions, unique_name};
use crate::memory::{InMemoryOfflineStore, InMemoryRegistry};
use crate::online::DynOnlineStore;
use crate::store::{
    FeatureSelection, FeatureStatus, FeatureStore, HistoricalRequest, MaterializeOptions,
    OnlineRequest,
};
use crate::time::{UTC, from_micros, timestamp_type};

/// One generated history and materialization schedule.
#[derive(Debug, Clone)]
struct Case {
    ttl_secs: Option<u8>,
    rows: Vec<(u8, u8, u8, Option<i8>)>,
    cuts: Vec<usize>,
    ends: Vec<Option<u8>>,
    t: u8,
    batch_size: usize,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::option::of(1u8..12),
        prop::collection::vec(
            (0u8..4, 0u8..16, 0u8..3, prop::option::of(-50i8..50)),
            0..24,
        ),
        prop::collection::vec(0usize..24, 0..4),
        prop::collection::vec(prop::option::of(0u8..20), 5),
        0u8..20,
        1usize..6,
    )
        .prop_map(|(ttl_secs, rows, cuts, ends, t, batch_size)| Case {
            ttl_secs,
            rows,
            cuts,
            ends,
            t,
            batch_size,
        })
}

const FEATURES: [&str; 4] = ["score", "label", "count", "emb"];

async fn check(store: &Arc<DynOnlineStore>, case: &Case) -> Result<(), TestCaseError> {
    let b = store.backend();
    let view = unique_name("tk_par");
    let (defs, _) = test_definitions(
        &view,
        case.ttl_secs.map(|s| Duration::from_secs(u64::from(s))),
    );
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(store))
        .with_online_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| TestCaseError::fail(format!("[{b}] build: {e}")))?;
    let fail = |what: &str, e: crate::Error| TestCaseError::fail(format!("[{b}] {what}: {e}"));
    fs.apply(&defs, Default::default())
        .await
        .map_err(|e| fail("apply", e))?;
    let base = base_micros();
    let sec = 1_000_000i64;
    let t_end = base + i64::from(case.t) * sec;
    let rows: Vec<(i64, i64, i64, Option<f64>)> = case
        .rows
        .iter()
        .map(|r| {
            (
                i64::from(r.0),
                base + i64::from(r.1) * sec,
                base + i64::from(r.2) * sec,
                r.3.map(f64::from),
            )
        })
        .collect();
    let mut cuts: Vec<usize> = case.cuts.iter().map(|c| (*c).min(rows.len())).collect();
    cuts.push(rows.len());
    cuts.sort_unstable();
    let opts = MaterializeOptions::default().with_batch_size(case.batch_size);
    let mut start = 0;
    for (i, cut) in cuts.iter().enumerate() {
        if *cut > start {
            fs.write_history(&view, &feature_batch(&rows[start..*cut]))
                .await
                .map_err(|e| fail("write_history", e))?;
            start = *cut;
        }
        if let Some(e) = case.ends.get(i).copied().flatten() {
            let end = (base + i64::from(e) * sec).min(t_end);
            fs.materialize_incremental(&[view.as_str()], from_micros(end), &opts)
                .await
                .map_err(|e| fail("materialize_incremental", e))?;
        }
    }
    let report = fs
        .materialize_incremental(&[view.as_str()], from_micros(t_end), &opts)
        .await
        .map_err(|e| fail("final materialize_incremental", e))?;
    for v in &report.views {
        prop_assert_eq!(
            v.rows_read,
            v.rows_written + v.rows_skipped,
            "[{}] read = written + skipped",
            b
        );
    }

    let ids: Vec<i64> = (0..5).collect();
    let refs = FeatureSelection::refs(FEATURES.iter().map(|f| format!("{view}:{f}")))
        .map_err(|e| fail("refs", e))?;
    let online = fs
        .get_online_features(
            &OnlineRequest::new(refs.clone(), entity_batch(&ids)).with_now(from_micros(t_end)),
        )
        .await
        .map_err(|e| fail("get_online_features", e))?;
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", timestamp_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(TimestampMicrosecondArray::from(vec![t_end; ids.len()]).with_timezone(UTC)),
        ],
    )
    .map_err(|e| fail("spine", e.into()))?;
    let hist = fs
        .get_historical_features(&HistoricalRequest::new(vec![spine], "ts", refs))
        .await
        .map_err(|e| fail("get_historical_features", e))?;
    for f in FEATURES {
        let (Some(on), Some(off)) = (
            online.batch().column_by_name(f),
            hist.batch.column_by_name(f),
        ) else {
            return Err(TestCaseError::fail(format!(
                "[{b}] feature {f} missing from an output"
            )));
        };
        let meta = online
            .feature(f)
            .ok_or_else(|| TestCaseError::fail(format!("[{b}] no metadata for {f}")))?;
        for (i, id) in ids.iter().enumerate() {
            let (a, c) = (on.slice(i, 1), off.slice(i, 1));
            prop_assert!(
                a.as_ref() == c.as_ref(),
                "[{}] entity {} feature {}: online {:?} (status {:?}) != point-in-time join {:?}",
                b,
                id,
                f,
                a,
                meta.status(i),
                c
            );
            let (want_status, want_event) = expected_cell(case, &rows, *id, t_end, c.is_null(0));
            prop_assert_eq!(
                meta.status(i),
                want_status,
                "[{}] entity {} feature {}: status (value {:?})",
                b,
                id,
                f,
                a
            );
            prop_assert_eq!(
                meta.event_timestamp(i),
                want_event.map(from_micros),
                "[{}] entity {} feature {} ({:?}): event time",
                b,
                id,
                f,
                want_status
            );
        }
    }
    store
        .delete_view(&view)
        .await
        .map_err(|e| fail("delete_view", e))?;
    Ok(())
}

/// The status and event time an online read at `t_end` must give for entity
/// `id`, derived from the history itself (not from the store under test): no
/// row with `event_ts <= t_end` → `NotFound` (no event time); the newest such
/// row older than the ttl → `Expired`; otherwise `NullValue` or `Present` as
/// the point-in-time join's value (`join_null`) is null or not. Found rows carry
/// the newest event time (ties in `(event, created)` cannot change it).
fn expected_cell(
    case: &Case,
    rows: &[(i64, i64, i64, Option<f64>)],
    id: i64,
    t_end: i64,
    join_null: bool,
) -> (FeatureStatus, Option<i64>) {
    let newest = rows
        .iter()
        .filter(|r| r.0 == id && r.1 <= t_end)
        .map(|r| r.1)
        .max();
    let Some(event) = newest else {
        return (FeatureStatus::NotFound, None);
    };
    let ttl = case.ttl_secs.map(|s| i64::from(s) * 1_000_000);
    let status = if ttl.is_some_and(|d| event < t_end - d) {
        FeatureStatus::Expired
    } else if join_null {
        FeatureStatus::NullValue
    } else {
        FeatureStatus::Present
    };
    (status, Some(event))
}

/// Runs `cases` parity cases against `store` (with shrinking on failure).
///
/// # Panics
/// On a parity violation (with the minimal failing case), or when called
/// outside a multi-threaded tokio runtime.
pub async fn online_parity(store: Arc<DynOnlineStore>, cases: u32) {
    let b = store.backend();
    super::run_async_proptest(
        "online_parity",
        &format!("[{b}] parity invariant violated"),
        cases,
        case_strategy(),
        |case| {
            let store = Arc::clone(&store);
            async move { check(&store, &case).await }
        },
    );
}
