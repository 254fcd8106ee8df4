//! The offline engine against a naive reference (filter the window, compute
//! each function directly), over random histories.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, Float64Array, Int64Array, ListArray, RecordBatch, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;

use super::*;
use crate::model::{AggFunction, Aggregation};

const MIN: i64 = 60_000_000;

#[derive(Debug, Clone)]
pub(crate) struct E {
    pub(crate) key: i64,
    pub(crate) ts: i64,
    pub(crate) created: i64,
    pub(crate) amount: Option<i64>,
    pub(crate) price: Option<f64>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub(crate) fn events_batch(ev: &[E]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
            Field::new("created", ts_type(), false),
            Field::new("amount", DataType::Int64, true),
            Field::new("price", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(
                ev.iter().map(|e| e.key).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(ev.iter().map(|e| e.ts).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(ev.iter().map(|e| e.created).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(
                ev.iter().map(|e| e.amount).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                ev.iter().map(|e| e.price).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

pub(crate) fn spine_batch(rows: &[(Option<i64>, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

pub(crate) fn all_aggs() -> Vec<(Aggregation, ValueType)> {
    let h = Duration::from_secs(3_600);
    let mut out = Vec::new();
    for (w, hop) in [
        (Some(h), None),
        (Some(2 * h), Some(h)),
        (
            Some(Duration::from_secs(600)),
            Some(Duration::from_secs(60)),
        ),
        (None, Some(Duration::from_secs(900))),
    ] {
        for f in [
            AggFunction::Count,
            AggFunction::Sum,
            AggFunction::Min,
            AggFunction::Max,
            AggFunction::First,
            AggFunction::Last,
            AggFunction::LastN(3),
            AggFunction::ApproxCountDistinct,
        ] {
            let mut a = Aggregation::new("amount", f, w);
            a.hop = hop;
            out.push((a, ValueType::Int64));
        }
        for f in [
            AggFunction::Sum,
            AggFunction::Mean,
            AggFunction::VarPop,
            AggFunction::StddevPop,
            AggFunction::Count,
        ] {
            let mut a = Aggregation::new("price", f, w);
            a.hop = hop;
            out.push((a, ValueType::Float64));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Naive {
    Null,
    I(i64),
    F(f64),
    L(Vec<i64>),
}

fn naive(ev: &[E], a: &Aggregation, key: Option<i64>, t: i64, cutoff: bool) -> Naive {
    let r = duration_micros(a.effective_hop());
    let lo = a
        .window
        .map_or(i64::MIN, |w| floor_to(t - duration_micros(w), r));
    let mut win: Vec<(usize, &E)> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            Some(e.key) == key && e.ts >= lo && e.ts <= t && (!cutoff || e.created <= t)
        })
        .collect();
    win.sort_by_key(|(i, e)| (e.ts, e.created, *i));
    let ints: Vec<i64> = win.iter().filter_map(|(_, e)| e.amount).collect();
    let floats: Vec<f64> = win.iter().filter_map(|(_, e)| e.price).collect();
    let float = a.column == "price";
    let n = if float { floats.len() } else { ints.len() };
    if n == 0 {
        return if a.function == AggFunction::Count {
            Naive::I(0)
        } else {
            Naive::Null
        };
    }
    let mean = floats.iter().sum::<f64>() / n as f64;
    match a.function {
        AggFunction::Count => Naive::I(n as i64),
        AggFunction::Sum if float => Naive::F(floats.iter().sum()),
        AggFunction::Sum => Naive::I(ints.iter().sum()),
        AggFunction::Mean => Naive::F(mean),
        AggFunction::Min => Naive::I(*ints.iter().min().unwrap()),
        AggFunction::Max => Naive::I(*ints.iter().max().unwrap()),
        AggFunction::VarPop | AggFunction::StddevPop => {
            let v = floats.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            Naive::F(if a.function == AggFunction::VarPop {
                v
            } else {
                v.sqrt()
            })
        }
        AggFunction::First => Naive::I(ints[0]),
        AggFunction::Last => Naive::I(ints[n - 1]),
        AggFunction::LastN(k) => Naive::L(ints.iter().rev().take(k as usize).copied().collect()),
        AggFunction::ApproxCountDistinct => {
            let mut d = ints.clone();
            d.sort_unstable();
            d.dedup();
            Naive::I(d.len() as i64)
        }
    }
}

fn got(col: &ArrayRef, i: usize) -> Naive {
    if col.is_null(i) {
        return Naive::Null;
    }
    match col.data_type() {
        DataType::Int64 => Naive::I(col.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Naive::F(col.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => {
            let l = col.as_any().downcast_ref::<ListArray>().unwrap().value(i);
            Naive::L(l.as_primitive::<Int64Type>().values().to_vec())
        }
        other => panic!("unexpected output type {other}"),
    }
}

pub(crate) fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn check(ev: &[E], spine: &[(Option<i64>, i64)], cutoff: bool, split: usize) -> Result<(), String> {
    let aggs = all_aggs();
    let (b1, b2) = ev.split_at(split.min(ev.len()));
    let batches = vec![events_batch(b1), events_batch(b2)];
    let view = AggView {
        name: "txn".into(),
        join_keys: vec![JoinKey::new("id", ValueType::Int64)],
        event_timestamp_column: "event_timestamp".into(),
        created_timestamp_column: Some("created".into()),
        aggregations: aggs.clone(),
        batches: &batches,
    };
    let cols = aggregate(
        &[spine_batch(spine)],
        "ts",
        &view,
        &AggOptions::default().with_created_cutoff(cutoff),
    )
    .map_err(|e| e.to_string())?;
    for ((a, _), col) in aggs.iter().zip(&cols) {
        assert_eq!(col.len(), spine.len());
        for (i, (k, t)) in spine.iter().enumerate() {
            let want = naive(ev, a, *k, *t, cutoff);
            let have = got(col, i);
            let ok = match (&want, &have) {
                // a variance of (nearly) equal values is the rounding error of
                // the subtraction: compare variances absolutely near zero
                (Naive::F(x), Naive::F(y)) if a.function == AggFunction::VarPop => {
                    close(*x, *y) || (x - y).abs() <= 1e-9
                }
                (Naive::F(x), Naive::F(y)) if a.function == AggFunction::StddevPop => {
                    close(*x, *y) || (x * x - y * y).abs() <= 1e-9
                }
                (Naive::F(x), Naive::F(y)) => close(*x, *y),
                _ => want == have,
            };
            if !ok {
                return Err(format!(
                    "{} row {i} ({k:?}, {t}): want {want:?} got {have:?}",
                    a.name
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn event() -> impl Strategy<Value = E> {
    (
        0i64..3,
        // minutes with many exact hop/window boundaries, plus odd microseconds
        (0i64..300, prop_oneof![Just(0i64), 0i64..MIN]),
        0i64..4,
        proptest::option::weighted(0.8, -50i64..50),
        proptest::option::weighted(0.8, (-400i64..400).prop_map(|x| x as f64 * 0.25)),
    )
        .prop_map(|(key, (m, off), c, amount, price)| E {
            key,
            ts: m * MIN + off,
            created: m * MIN + off + c * 30 * MIN,
            amount,
            price,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn engine_matches_naive_reference(
        ev in proptest::collection::vec(event(), 0..60),
        spine in proptest::collection::vec(
            (proptest::option::weighted(0.9, 0i64..4), (0i64..320).prop_map(|m| m * MIN)), 1..30),
        cutoff in any::<bool>(),
        split in 0usize..60,
    ) {
        // bursts: duplicate some events exactly
        let mut ev = ev;
        let dup: Vec<E> = ev.iter().step_by(5).cloned().collect();
        ev.extend(dup);
        check(&ev, &spine, cutoff, split).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn boundaries_are_inclusive_at_the_head_and_hop_aligned_at_the_tail() {
    // window 1h, hop 5m: at t = 10:02, the window is [09:00, 10:02]
    let ev: Vec<E> = [
        (8 * 60 + 59, 1),
        (9 * 60, 2),
        (9 * 60 + 3, 4),
        (10 * 60 + 2, 8),
        (10 * 60 + 3, 16),
    ]
    .into_iter()
    .map(|(m, x)| E {
        key: 1,
        ts: m * MIN,
        created: m * MIN,
        amount: Some(x),
        price: None,
    })
    .collect();
    let batches = vec![events_batch(&ev)];
    let a = Aggregation::new("amount", AggFunction::Sum, Some(Duration::from_secs(3_600)));
    let view = AggView {
        name: "txn".into(),
        join_keys: vec![JoinKey::new("id", ValueType::Int64)],
        event_timestamp_column: "event_timestamp".into(),
        created_timestamp_column: None,
        aggregations: vec![(a, ValueType::Int64)],
        batches: &batches,
    };
    let cols = aggregate(
        &[spine_batch(&[
            (Some(1), (10 * 60 + 2) * MIN),
            (None, 0),
            (Some(7), 0),
        ])],
        "ts",
        &view,
        &AggOptions::default(),
    )
    .unwrap();
    let c = cols[0].as_primitive::<Int64Type>();
    assert_eq!(c.value(0), 2 + 4 + 8);
    assert!(c.is_null(1) && c.is_null(2));
}

#[test]
fn int_sum_overflow_names_the_feature() {
    let ev: Vec<E> = (0..2)
        .map(|i| E {
            key: 1,
            ts: i * MIN,
            created: 0,
            amount: Some(i64::MAX),
            price: None,
        })
        .collect();
    let batches = vec![events_batch(&ev)];
    let view = AggView {
        name: "txn".into(),
        join_keys: vec![JoinKey::new("id", ValueType::Int64)],
        event_timestamp_column: "event_timestamp".into(),
        created_timestamp_column: None,
        aggregations: vec![(
            Aggregation::new("amount", AggFunction::Sum, None),
            ValueType::Int64,
        )],
        batches: &batches,
    };
    let e = aggregate(
        &[spine_batch(&[(Some(1), MIN)])],
        "ts",
        &view,
        &AggOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("txn:amount_sum_lifetime") && e.contains("overflow"),
        "{e}"
    );
}

/// Events over many keys and two weeks (many tiles per window); with `mixed`,
/// prices that mix magnitudes (float sums then depend on the order of
/// additions, beyond the relative 1e-9 of the reference comparison).
fn wide_event(mixed: bool) -> impl Strategy<Value = E> {
    let big = if mixed { 1e15 } else { 0.0 };
    (
        0i64..40,
        (0i64..20_000, prop_oneof![Just(0i64), 0i64..MIN]),
        0i64..4,
        proptest::option::weighted(0.9, -1_000_000i64..1_000_000),
        proptest::option::weighted(
            0.9,
            prop_oneof![
                (-400i64..400).prop_map(|x| x as f64 * 0.25),
                (-9i64..9).prop_map(move |x| x as f64 * big + 0.1),
            ],
        ),
    )
        .prop_map(|(key, (m, off), c, amount, price)| E {
            key,
            ts: m * MIN + off,
            created: m * MIN + off + c * 30 * MIN,
            amount,
            price,
        })
}

fn run_paths(ev: &[E], spine: &[(Option<i64>, i64)], cutoff: bool, fast: bool) -> Vec<ArrayRef> {
    let (b1, b2) = ev.split_at(ev.len() / 3);
    let batches = vec![events_batch(b1), events_batch(b2)];
    let view = AggView {
        name: "txn".into(),
        join_keys: vec![JoinKey::new("id", ValueType::Int64)],
        event_timestamp_column: "event_timestamp".into(),
        created_timestamp_column: Some("created".into()),
        aggregations: all_aggs(),
        batches: &batches,
    };
    aggregate(
        &[spine_batch(spine)],
        "ts",
        &view,
        &AggOptions::default()
            .with_created_cutoff(cutoff)
            .with_fast_path(fast),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// The numeric fast path gives exactly (bit for bit) the generic path's
    /// columns, on histories large enough for many tiles per window and
    /// spines long enough to be cut into several chunks (threads).
    #[test]
    fn fast_path_equals_generic_path_on_large_histories(
        ev in proptest::collection::vec(wide_event(true), 3_000..6_000),
        spine in proptest::collection::vec(
            (proptest::option::weighted(0.95, 0i64..45), (0i64..20_100).prop_map(|m| m * MIN)),
            3_000..5_000),
        cutoff in any::<bool>(),
    ) {
        let fast = run_paths(&ev, &spine, cutoff, true);
        let generic = run_paths(&ev, &spine, cutoff, false);
        for ((a, _), (f, g)) in all_aggs().iter().zip(fast.iter().zip(&generic)) {
            prop_assert_eq!(f.data_type(), g.data_type(), "{}", a.name);
            prop_assert_eq!(f.len(), g.len());
            for i in 0..f.len() {
                let same = match (got(f, i), got(g, i)) {
                    (Naive::F(x), Naive::F(y)) => x.to_bits() == y.to_bits(),
                    (x, y) => x == y,
                };
                prop_assert!(same, "{} row {}: fast {:?} generic {:?}", a.name, i, got(f, i), got(g, i));
            }
        }
    }

    /// The engine (fast path included) against the naive reference on
    /// medium histories with many tiles per window.
    #[test]
    fn engine_matches_naive_reference_on_wide_histories(
        ev in proptest::collection::vec(wide_event(false), 200..500),
        spine in proptest::collection::vec(
            (proptest::option::weighted(0.95, 0i64..45), (0i64..20_100).prop_map(|m| m * MIN)),
            100..200),
        cutoff in any::<bool>(),
        split in 0usize..500,
    ) {
        check(&ev, &spine, cutoff, split).map_err(TestCaseError::fail)?;
    }
}

/// `b` with its `id` column as strings (`k<id>`).
fn with_string_ids(b: &RecordBatch) -> RecordBatch {
    let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let s: arrow_array::StringArray = ids.iter().map(|v| v.map(|v| format!("k{v}"))).collect();
    let mut cols = b.columns().to_vec();
    cols[0] = Arc::new(s);
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[0] = Field::new("id", DataType::Utf8, fields[0].is_nullable());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    /// Histories keyed by strings (key bytes per event) group exactly as the
    /// same histories keyed by integers (grouped by value).
    #[test]
    fn string_keys_give_the_integer_keys_results(
        ev in proptest::collection::vec(wide_event(false), 500..1_500),
        spine in proptest::collection::vec(
            (proptest::option::weighted(0.95, 0i64..45), (0i64..20_100).prop_map(|m| m * MIN)),
            500..1_500),
    ) {
        let (b1, b2) = ev.split_at(ev.len() / 2);
        let int_batches = vec![events_batch(b1), events_batch(b2)];
        let str_batches: Vec<RecordBatch> = int_batches.iter().map(with_string_ids).collect();
        let run = |batches: &[RecordBatch], key: ValueType, spine: RecordBatch| {
            let view = AggView {
                name: "txn".into(),
                join_keys: vec![JoinKey::new("id", key)],
                event_timestamp_column: "event_timestamp".into(),
                created_timestamp_column: Some("created".into()),
                aggregations: all_aggs(),
                batches,
            };
            aggregate(&[spine], "ts", &view, &AggOptions::default()).unwrap()
        };
        let sp = spine_batch(&spine);
        let ints = run(&int_batches, ValueType::Int64, sp.clone());
        let strs = run(&str_batches, ValueType::String, with_string_ids(&sp));
        for ((a, _), (x, y)) in all_aggs().iter().zip(ints.iter().zip(&strs)) {
            prop_assert_eq!(x.as_ref(), y.as_ref(), "{}", a.name);
        }
    }
}
