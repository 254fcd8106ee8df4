//! Window aggregations ([semantics §11](fstore_core::docs::semantics)), embedded defaults only — no server.
//!
//! Card transactions → `amount_sum_7d`, `txn_count_1h` and
//! `merchant_approx_distinct_30d`, declared once and computed from the event
//! log for training (point-in-time, per spine row) and for serving (hop tiles
//! written by materialization and updated by push). The example checks its
//! own output: the training values against a direct computation, and the
//! served values against the training values at the same instant.
//!
//! Run: `cargo run -p fstore-examples --example aggregations`

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field as ArrowField, Schema, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use fstore_core::{
    AggFunction, Aggregation, Definitions, Entity, FeatureSelection, FeatureService, FeatureStatus,
    FeatureStore, FeatureView, HistoricalRequest, MaterializeOptions, OnlineRequest, PushTarget,
    ValueType,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn start() -> i64 {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_micros())
}

fn at(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}

/// (user, event time µs, amount, merchant)
type Txn = (i64, i64, f64, &'static str);

fn transactions() -> Vec<Txn> {
    let s = start();
    let merchants = ["grocer", "cafe", "fuel", "books", "cinema"];
    let mut out = Vec::new();
    // user 1: a purchase every 9 hours for 30 days; user 2: a burst on day 20
    for i in 0..80i64 {
        out.push((
            1,
            s + i * 9 * HOUR,
            10.0 + (i % 7) as f64,
            merchants[(i % 5) as usize],
        ));
    }
    for i in 0..12i64 {
        out.push((
            2,
            s + 20 * DAY + i * 4 * 60_000_000,
            2.5 * i as f64,
            merchants[(i % 2) as usize],
        ));
    }
    out
}

fn batch(txns: &[Txn]) -> Res<RecordBatch> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            ArrowField::new("user_id", DataType::Int64, false),
            ArrowField::new("event_timestamp", ts_type(), false),
            ArrowField::new("amount", DataType::Float64, true),
            ArrowField::new("merchant", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(
                txns.iter().map(|t| t.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(txns.iter().map(|t| t.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                txns.iter().map(|t| t.2).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                txns.iter().map(|t| t.3).collect::<Vec<_>>(),
            )),
        ],
    )?)
}

/// The three features computed directly from the transactions (sawtooth
/// windows: `floor_hop(t − W) <= event_ts <= t`).
fn direct(txns: &[Txn], user: i64, t: i64) -> (Option<f64>, i64, i64) {
    let floor = |x: i64, r: i64| x.div_euclid(r) * r;
    let win = |w: i64, r: i64| {
        txns.iter()
            .filter(move |x| x.0 == user && x.1 >= floor(t - w, r) && x.1 <= t)
    };
    let sums: Vec<f64> = win(7 * DAY, HOUR).map(|x| x.2).collect();
    let sum = (!sums.is_empty()).then(|| sums.iter().sum());
    let count = win(HOUR, 5 * 60_000_000).count() as i64;
    let mut m: Vec<&str> = win(30 * DAY, DAY).map(|x| x.3).collect();
    m.sort_unstable();
    m.dedup();
    (sum, count, m.len() as i64)
}

fn check(what: &str, ok: bool) -> Res<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let store = FeatureStore::in_memory();
    let view = FeatureView::new("txn", ["user"])
        .with_feature("amount", ValueType::Float64)
        .with_feature("merchant", ValueType::String)
        .with_aggregation(Aggregation::new(
            "amount",
            AggFunction::Sum,
            Some(Duration::from_secs(7 * 86_400)),
        ))
        .with_aggregation(
            Aggregation::new(
                "amount",
                AggFunction::Count,
                Some(Duration::from_secs(3_600)),
            )
            .with_name("txn_count_1h"),
        )
        .with_aggregation(
            Aggregation::new(
                "merchant",
                AggFunction::ApproxCountDistinct,
                Some(Duration::from_secs(30 * 86_400)),
            )
            .with_name("merchant_approx_distinct_30d"),
        );
    let features = [
        "txn:amount_sum_7d",
        "txn:txn_count_1h",
        "txn:merchant_approx_distinct_30d",
    ];
    store
        .apply(
            &Definitions::new()
                .with_entity(Entity::new("user", "user_id", ValueType::Int64))
                .with_feature_view(view)
                .with_feature_service(FeatureService::new(
                    "fraud_v1",
                    features
                        .iter()
                        .map(|f| f.parse())
                        .collect::<Result<Vec<_>, _>>()?,
                )),
            Default::default(),
        )
        .await?;
    let txns = transactions();
    store.write_history("txn", &batch(&txns)?).await?;

    // 1. Training set: one row per (user, time), point-in-time correct.
    let s = start();
    let spine_rows: Vec<(i64, i64)> = vec![
        (1, s + 3 * DAY + 5 * HOUR),
        (2, s + 20 * DAY + 30 * 60_000_000),
        (1, s + 29 * DAY),
        (2, s + 19 * DAY),
        (3, s + 10 * DAY),
    ];
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            ArrowField::new("user_id", DataType::Int64, false),
            ArrowField::new("ts", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                spine_rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(spine_rows.iter().map(|r| r.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
        ],
    )?;
    let training = store
        .get_historical_features(&HistoricalRequest::new(
            vec![spine],
            "ts",
            FeatureSelection::service("fraud_v1"),
        ))
        .await?
        .batch;
    println!("== training set");
    println!("user_id | ts | amount_sum_7d | txn_count_1h | merchant_approx_distinct_30d");
    let sum = training.column(2).as_primitive::<Float64Type>();
    let count = training.column(3).as_primitive::<Int64Type>();
    let distinct = training.column(4).as_primitive::<Int64Type>();
    for (i, (u, t)) in spine_rows.iter().enumerate() {
        let got = (
            (!sum.is_null(i)).then(|| sum.value(i)),
            count.value(i),
            if distinct.is_null(i) {
                0
            } else {
                distinct.value(i)
            },
        );
        println!("{u} | {} | {:?} | {} | {}", at(*t), got.0, got.1, got.2);
        check(&format!("training row {i}"), got == direct(&txns, *u, *t))?;
    }

    // 2. Materialize the tiles and serve at the same instant as a training row.
    let now = s + 20 * DAY + 30 * 60_000_000;
    store
        .materialize_incremental(&["txn"], at(now), &MaterializeOptions::default())
        .await?;
    let users = RecordBatch::try_new(
        Arc::new(Schema::new(vec![ArrowField::new(
            "user_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(vec![2, 1, 3]))],
    )?;
    let serve = |now: i64| {
        let req = OnlineRequest::new(FeatureSelection::service("fraud_v1"), users.clone())
            .with_now(at(now));
        let store = &store;
        async move { store.get_online_features(&req).await }
    };
    let resp = serve(now).await?;
    let row = |b: &RecordBatch, i: usize| {
        let s = b.column(1).as_primitive::<Float64Type>();
        (
            (!s.is_null(i)).then(|| s.value(i)),
            b.column(2).as_primitive::<Int64Type>().value(i),
            b.column(3).as_primitive::<Int64Type>().value(i),
        )
    };
    println!("\n== served at {}", at(now));
    println!("user 2: {:?}", row(resp.batch(), 0));
    check(
        "online == training for user 2 at the same instant",
        row(resp.batch(), 0) == (Some(sum.value(1)), count.value(1), distinct.value(1)),
    )?;
    check(
        "user 3 has no events",
        resp.feature("txn_count_1h").map(|m| m.status(2)) == Some(FeatureStatus::NotFound),
    )?;

    // 3. Push one more transaction; the head tile is updated at once.
    let new = (2, now + 60_000_000, 100.0, "jeweller");
    store.push("txn", &batch(&[new])?, PushTarget::Both).await?;
    let resp2 = serve(now + 60_000_000).await?;
    println!("after push: user 2: {:?}", row(resp2.batch(), 0));
    let mut all = txns.clone();
    all.push(new);
    let want = direct(&all, 2, now + 60_000_000);
    check(
        "served after push == direct computation",
        row(resp2.batch(), 0) == want,
    )?;
    check("push counted", want.1 == count.value(1) + 1)?;
    println!("\nall checks passed");
    Ok(())
}
