//! Aggregation features ([semantics §11](crate::docs::semantics)) on a live online store: parity of the
//! online read at `now = T` with the offline value at `(k, T)` for every
//! function, over random histories and random splits between materialization
//! runs and pushes; concurrent pushers; idempotent materialization; tile
//! expiry; the definition-version guard.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field as ArrowField, Schema};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::fixtures::unique_name;
use crate::memory::{InMemoryOfflineStore, InMemoryRegistry};
use crate::model::{AggFunction, Aggregation, Definitions, Entity, FeatureView, ValueType};
use crate::online::{DynOnlineStore, OnlineKey, ReadOptions};
use crate::store::{
    ApplyOptions, FeatureSelection, FeatureStatus, FeatureStore, HistoricalRequest,
    MaterializeOptions, OnlineRequest, PushTarget,
};
use crate::time::{from_micros, timestamp_type};

const MIN: i64 = 60_000_000;

/// Tomorrow, rounded down to a whole day (tiles and windows align to it).
fn base() -> i64 {
    let day = 86_400i64;
    ((chrono::Utc::now().timestamp() / day + 1) * day) * 1_000_000
}

fn aggregations() -> Vec<Aggregation> {
    let m = |x: u64| Duration::from_secs(60 * x);
    let mut out = Vec::new();
    for (col, f) in [
        ("amount", AggFunction::Count),
        ("amount", AggFunction::Sum),
        ("price", AggFunction::Sum),
        ("price", AggFunction::Mean),
        ("amount", AggFunction::Min),
        ("amount", AggFunction::Max),
        ("price", AggFunction::VarPop),
        ("price", AggFunction::StddevPop),
        ("merchant", AggFunction::First),
        ("merchant", AggFunction::Last),
        ("amount", AggFunction::LastN(3)),
        ("merchant", AggFunction::ApproxCountDistinct),
    ] {
        out.push(Aggregation::new(col, f, Some(m(10))).with_hop(m(1)));
    }
    for (col, f) in [
        ("amount", AggFunction::Sum),
        ("merchant", AggFunction::Count),
        ("amount", AggFunction::ApproxCountDistinct),
        ("amount", AggFunction::Last),
        ("price", AggFunction::Mean),
    ] {
        out.push(Aggregation::new(col, f, Some(m(60))));
    }
    for (col, f) in [
        ("amount", AggFunction::Count),
        ("price", AggFunction::Sum),
        ("amount", AggFunction::Max),
    ] {
        out.push(Aggregation::new(col, f, None).with_hop(m(30)));
    }
    out
}

fn definitions(view: &str, aggs: Vec<Aggregation>) -> Definitions {
    let mut v = FeatureView::new(view, ["user"])
        .with_feature("amount", ValueType::Int64)
        .with_feature("price", ValueType::Float64)
        .with_feature("merchant", ValueType::String)
        .with_created_timestamp_column("created");
    for a in aggs {
        v = v.with_aggregation(a);
    }
    Definitions::new()
        .with_entity(Entity::new("user", "user_id", ValueType::Int64))
        .with_feature_view(v)
}

/// One event: (user, ts µs, created µs, amount, price, merchant).
type Ev = (i64, i64, i64, Option<i64>, Option<f64>, Option<String>);

fn events_batch(ev: &[Ev]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            ArrowField::new("user_id", DataType::Int64, false),
            ArrowField::new("event_timestamp", timestamp_type(), false),
            ArrowField::new("created", timestamp_type(), false),
            ArrowField::new("amount", DataType::Int64, true),
            ArrowField::new("price", DataType::Float64, true),
            ArrowField::new("merchant", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ev.iter().map(|e| e.0).collect::<Vec<_>>())),
            Arc::new(
                TimestampMicrosecondArray::from(ev.iter().map(|e| e.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(ev.iter().map(|e| e.2).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(ev.iter().map(|e| e.3).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(
                ev.iter().map(|e| e.4).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ev.iter().map(|e| e.5.clone()).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("events batch")
}

fn users(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![ArrowField::new(
            "user_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .expect("users batch")
}

fn spine(ids: &[i64], t: i64) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            ArrowField::new("user_id", DataType::Int64, false),
            ArrowField::new("ts", timestamp_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(vec![t; ids.len()]).with_timezone("UTC")),
        ],
    )
    .expect("spine batch")
}

fn store_on(online: &Arc<DynOnlineStore>) -> crate::Result<FeatureStore> {
    FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(online))
        .with_online_timeout(Duration::from_secs(30))
        .build()
}

/// Cells equal: exactly, or within a relative 1e-9 for float64 ([semantics §11](crate::docs::semantics)).
fn same_cell(a: &ArrayRef, b: &ArrayRef, i: usize) -> bool {
    if a.data_type() == &DataType::Float64 && b.data_type() == &DataType::Float64 {
        let (x, y) = (
            a.as_primitive::<Float64Type>(),
            b.as_primitive::<Float64Type>(),
        );
        return match (x.is_null(i), y.is_null(i)) {
            (true, true) => true,
            (false, false) => {
                let (p, q) = (x.value(i), y.value(i));
                p == q || (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
            }
            _ => false,
        };
    }
    a.slice(i, 1).as_ref() == b.slice(i, 1).as_ref()
}

/// A generated event: (user, minute, odd microseconds?, created lag, amount,
/// price in quarters, merchant).
type GenEv = (i64, i64, bool, i64, Option<i64>, Option<i64>, Option<u8>);

#[derive(Debug, Clone)]
struct Case {
    t_min: i64,
    events: Vec<GenEv>,
    cuts: Vec<usize>,
    modes: Vec<(bool, Option<i64>)>,
    tail_push: usize,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        60i64..130,
        prop::collection::vec(
            (
                0i64..4,
                0i64..130,
                any::<bool>(),
                0i64..3,
                prop::option::weighted(0.85, -40i64..40),
                prop::option::weighted(0.85, -200i64..200),
                prop::option::weighted(0.85, 0u8..6),
            ),
            0..40,
        ),
        prop::collection::vec(0usize..40, 0..4),
        prop::collection::vec((any::<bool>(), prop::option::of(0i64..130)), 5),
        0usize..6,
    )
        .prop_map(|(t_min, events, cuts, modes, tail_push)| Case {
            t_min,
            events,
            cuts,
            modes,
            tail_push,
        })
}

async fn check(store: &Arc<DynOnlineStore>, case: &Case) -> Result<(), TestCaseError> {
    let b = store.backend();
    let fail = |what: &str, e: crate::Error| TestCaseError::fail(format!("[{b}] {what}: {e}"));
    let view = unique_name("tk_agg");
    let aggs = aggregations();
    let fs = store_on(store).map_err(|e| fail("build", e))?;
    fs.apply(&definitions(&view, aggs.clone()), ApplyOptions::default())
        .await
        .map_err(|e| fail("apply", e))?;
    let base = base();
    let t = base + case.t_min * MIN;
    // events at or before T only (the online head tile holds the whole hop);
    // whole minutes are hop and window boundaries; bursts are duplicates
    let mut ev: Vec<Ev> = case
        .events
        .iter()
        .map(|(u, m, odd, c, amount, price, merchant)| {
            let ts = base + m * MIN + if *odd { 17_000_001 } else { 0 };
            (
                *u,
                ts,
                ts + c * 7 * MIN,
                *amount,
                price.map(|p| p as f64 * 0.25),
                merchant.map(|x| format!("m{x}")),
            )
        })
        .filter(|e| e.1 <= t)
        .collect();
    let dup: Vec<Ev> = ev.iter().step_by(4).cloned().collect();
    ev.extend(dup);
    let tail = ev.split_off(ev.len() - case.tail_push.min(ev.len()));
    let mut cuts: Vec<usize> = case.cuts.iter().map(|c| c % (ev.len() + 1)).collect();
    cuts.push(ev.len());
    cuts.sort_unstable();
    let mut from = 0;
    for (i, cut) in cuts.into_iter().enumerate() {
        if cut <= from {
            continue;
        }
        let seg = events_batch(&ev[from..cut]);
        from = cut;
        let (push, end) = case.modes[i % case.modes.len()];
        if push {
            fs.push(&view, &seg, PushTarget::Both)
                .await
                .map_err(|e| fail("push", e))?;
        } else {
            fs.write_history(&view, &seg)
                .await
                .map_err(|e| fail("write_history", e))?;
            if let Some(m) = end {
                let end = from_micros((base + m * MIN).min(t));
                fs.materialize_incremental(&[&view], end, &MaterializeOptions::default())
                    .await
                    .map_err(|e| fail("materialize_incremental", e))?;
            }
        }
    }
    fs.materialize_incremental(&[&view], from_micros(t), &MaterializeOptions::default())
        .await
        .map_err(|e| fail("materialize_incremental(T)", e))?;
    if !tail.is_empty() {
        fs.push(&view, &events_batch(&tail), PushTarget::Both)
            .await
            .map_err(|e| fail("push tail", e))?;
    }

    let ids: Vec<i64> = (0..5).collect();
    let refs: Vec<String> = aggs.iter().map(|a| format!("{view}:{}", a.name)).collect();
    let sel = FeatureSelection::refs(&refs).map_err(|e| fail("refs", e))?;
    let online = fs
        .get_online_features(&OnlineRequest::new(sel.clone(), users(&ids)).with_now(from_micros(t)))
        .await
        .map_err(|e| fail("get_online_features", e))?;
    let offline = fs
        .get_historical_features(&HistoricalRequest::new(vec![spine(&ids, t)], "ts", sel))
        .await
        .map_err(|e| fail("get_historical_features", e))?;
    for a in &aggs {
        let on = online
            .batch()
            .column_by_name(&a.name)
            .ok_or_else(|| TestCaseError::fail(format!("[{b}] online lacks {}", a.name)))?;
        let off = offline
            .batch
            .column_by_name(&a.name)
            .ok_or_else(|| TestCaseError::fail(format!("[{b}] offline lacks {}", a.name)))?;
        for (i, id) in ids.iter().enumerate() {
            if !same_cell(on, off, i) {
                return Err(TestCaseError::fail(format!(
                    "[{b}] {} user {id} at T: online {:?} != offline {:?}",
                    a.name,
                    on.slice(i, 1),
                    off.slice(i, 1)
                )));
            }
        }
        let meta = online
            .feature(&a.name)
            .ok_or_else(|| TestCaseError::fail(format!("[{b}] no metadata for {}", a.name)))?;
        if meta.status(4) != FeatureStatus::NotFound {
            return Err(TestCaseError::fail(format!(
                "[{b}] {}: user without events has status {}",
                a.name,
                meta.status(4)
            )));
        }
    }
    store
        .delete_view(&view)
        .await
        .map_err(|e| fail("delete_view", e))?;
    Ok(())
}

/// Parity ([semantics §11](crate::docs::semantics)): after random materialization runs and pushes (to
/// both stores) of random histories — duplicates, ties, out-of-order rows,
/// nulls, events on hop and window boundaries, bursts on one key — the online
/// read at `now = T` equals `get_historical_features` at `(k, T)` for every
/// function, exactly except float sums/means/variances (relative 1e-9).
///
/// # Panics
/// On the first violation, with the backend, feature, user and both values.
pub async fn agg_parity(store: Arc<DynOnlineStore>, cases: u32) {
    let b = store.backend();
    super::run_async_proptest(
        "agg_parity",
        &format!("[{b}] aggregation parity violated"),
        cases,
        case_strategy(),
        |case| {
            let store = Arc::clone(&store);
            async move { check(&store, &case).await }
        },
    );
}

/// `writers` concurrent pushers × `events` single-event pushes into the same
/// head tile of one entity: the count is `writers · events` and the sum exact.
///
/// # Panics
/// On a lost update or a failed call, naming the backend.
pub async fn agg_concurrent_push(store: Arc<DynOnlineStore>, writers: usize, events: usize) {
    let b = store.backend();
    let view = unique_name("tk_aggc");
    let fs = Arc::new(store_on(&store).unwrap_or_else(|e| panic!("[{b}] build: {e}")));
    let aggs = vec![
        Aggregation::new("amount", AggFunction::Count, None),
        Aggregation::new(
            "amount",
            AggFunction::Sum,
            Some(Duration::from_secs(86_400)),
        ),
    ];
    fs.apply(&definitions(&view, aggs), ApplyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    let t = base() + MIN;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let fs = Arc::clone(&fs);
        let view = view.clone();
        tasks.push(tokio::spawn(async move {
            for e in 0..events {
                let ev = (7, t, t, Some((w * events + e) as i64), None, None);
                fs.push(&view, &events_batch(&[ev]), PushTarget::Online)
                    .await?;
            }
            Ok::<_, crate::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .unwrap_or_else(|e| panic!("[{b}] pusher panicked: {e}"))
            .unwrap_or_else(|e| panic!("[{b}] push: {e}"));
    }
    let n = (writers * events) as i64;
    let sel = FeatureSelection::refs([
        format!("{view}:amount_count_lifetime"),
        format!("{view}:amount_sum_1d"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let resp = fs
        .get_online_features(&OnlineRequest::new(sel, users(&[7])).with_now(from_micros(t)))
        .await
        .unwrap_or_else(|e| panic!("[{b}] read: {e}"));
    let count = resp
        .batch()
        .column(1)
        .as_primitive::<arrow_array::types::Int64Type>();
    let sum = resp
        .batch()
        .column(2)
        .as_primitive::<arrow_array::types::Int64Type>();
    assert_eq!(
        count.value(0),
        n,
        "[{b}] {writers} pushers × {events} events: count"
    );
    assert_eq!(
        sum.value(0),
        n * (n - 1) / 2,
        "[{b}] concurrent pushes: sum"
    );
    store
        .delete_view(&view)
        .await
        .unwrap_or_else(|e| panic!("[{b}] delete_view: {e}"));
}

async fn entity_tiles(store: &DynOnlineStore, key: &OnlineKey) -> Vec<crate::online::Tile> {
    let b = store.backend();
    let mut t = store
        .read_tiles(std::slice::from_ref(key), &ReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] read_tiles: {e}"));
    let mut t = t.pop().unwrap_or_default();
    t.sort_by_key(|x| (x.feature.clone(), x.start));
    t
}

/// Re-running materialization gives the same tiles; tiles older than the
/// window plus one hop are gone; a read of tiles written by another
/// definition is refused with [`crate::Error::AggregationDefinitionMismatch`].
///
/// # Panics
/// On any violation, naming the backend.
pub async fn agg_tiles_idempotent_expiring_guarded(store: Arc<DynOnlineStore>) {
    let b = store.backend();
    let view = unique_name("tk_aggt");
    let fs = store_on(&store).unwrap_or_else(|e| panic!("[{b}] build: {e}"));
    let ten = Duration::from_secs(600);
    let sum =
        Aggregation::new("amount", AggFunction::Sum, Some(ten)).with_hop(Duration::from_secs(60));
    fs.apply(
        &definitions(&view, vec![sum.clone()]),
        ApplyOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    let base = base();
    let ev: Vec<Ev> = [0i64, 1, 2, 5, 180, 181, 185]
        .iter()
        .map(|m| (1, base + m * MIN, base + m * MIN, Some(*m + 1), None, None))
        .collect();
    fs.write_history(&view, &events_batch(&ev))
        .await
        .unwrap_or_else(|e| panic!("[{b}] write_history: {e}"));
    let end = from_micros(base + 185 * MIN);
    let key = OnlineKey {
        view: view.clone(),
        entity_key: crate::adapter::encode_entity_key(&[("user_id", crate::Value::Int64(1))])
            .unwrap_or_else(|e| panic!("{e}")),
    };
    fs.materialize_incremental(
        &[&view],
        from_micros(base + 2 * MIN),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("[{b}] materialize: {e}"));
    fs.materialize_incremental(&[&view], end, &MaterializeOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] materialize: {e}"));
    let first = entity_tiles(store.as_ref(), &key).await;
    fs.materialize(&[&view], None, end, &MaterializeOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] materialize again: {e}"));
    let second = entity_tiles(store.as_ref(), &key).await;
    assert_eq!(
        first, second,
        "[{b}] re-running materialization changed the tiles"
    );
    let starts: Vec<i64> = first.iter().map(|t| (t.start - base) / MIN).collect();
    assert_eq!(
        starts,
        vec![180, 181, 185],
        "[{b}] tiles older than window + one hop must expire"
    );
    // the guard: another window → another definition
    let mut wider = sum.clone();
    wider.window = Some(Duration::from_secs(1_200));
    fs.apply(
        &definitions(&view, vec![wider]),
        ApplyOptions::default().with_force(true),
    )
    .await
    .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    let sel =
        FeatureSelection::refs([format!("{view}:{}", sum.name)]).unwrap_or_else(|e| panic!("{e}"));
    let e = fs
        .get_online_features(&OnlineRequest::new(sel, users(&[1])).with_now(end))
        .await
        .expect_err("tiles of another definition must be refused");
    assert!(
        matches!(e, crate::Error::AggregationDefinitionMismatch { .. }),
        "[{b}] {e}"
    );
    store
        .delete_view(&view)
        .await
        .unwrap_or_else(|e| panic!("[{b}] delete_view: {e}"));
}

/// Every aggregation case: parity (`cases`), ≥ 4 concurrent pushers,
/// idempotence, expiry and the definition guard.
pub async fn run_agg_suite(store: Arc<DynOnlineStore>, cases: u32) {
    agg_parity(Arc::clone(&store), cases).await;
    agg_tiles_idempotent_expiring_guarded(Arc::clone(&store)).await;
    agg_concurrent_push(Arc::clone(&store), 4, 25).await;
}
