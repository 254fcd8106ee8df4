//! Stress cases: many concurrent writers against one online store, checked
//! for lost updates, regressions and torn rows while they run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};

use super::fixtures::{base_micros, feature_batch, test_definitions, unique_name};
use crate::adapter::{decode_payloads, encode_entity_key, to_online_rows};
use crate::model::Value;
use crate::online::{
    DynOnlineStore, OnlineKey, OnlineRow, ReadOptions, WriteOptions, WriteSummary,
};

/// Writers in [`online_concurrent_pushers`].
pub const STRESS_WRITERS: i64 = 8;
/// Distinct entities written by every writer.
pub const STRESS_ENTITIES: i64 = 256;
/// Versions each writer writes per entity.
pub const STRESS_ROUNDS: i64 = 5;
/// Rows per write call.
const CHUNK: usize = 128;

/// The score a writer stores for (entity, slot); a row whose score does not
/// match its own version is torn (payload and version from different writes).
fn score(entity: i64, slot: i64) -> f64 {
    (entity * 1_000 + slot) as f64
}

/// ≥ 8 writers push ≥ 10,000 rows (8 × 256 entities × 5 versions, plus every
/// writer re-sending its first chunk) concurrently, each writer in its own
/// order; a reader polls a sample of entities meanwhile. Checks:
///
/// * **counts add up**: over all writers, `written + skipped` equals the rows sent;
/// * **no row regressed**: per entity the version the reader sees never goes
///   down, and the final row is the newest version anyone wrote;
/// * **no torn row**: every row read (during and after) carries the payload
///   written with its own version (score ↔ event time, count ↔ event time).
///
/// Versions are `(event_ts, created_ts)` with slot `round * 8 + writer`, so
/// writers interleave on every entity and the newest is writer 7's last round.
pub async fn online_concurrent_pushers(store: Arc<DynOnlineStore>) {
    let b = store.backend();
    let view = unique_name("tk_stress");
    let (_, rv) = test_definitions(&view, None);
    let t0 = base_micros();
    let ts = move |slot: i64| t0 + slot * 1_000_000;
    let keys: Vec<OnlineKey> = (0..STRESS_ENTITIES)
        .map(|e| OnlineKey {
            view: view.clone(),
            entity_key: encode_entity_key(&[("user_id", Value::Int64(e))]).expect("key"),
        })
        .collect();

    let mut sent_total = 0u64;
    let mut writers = Vec::new();
    for w in 0..STRESS_WRITERS {
        // Writer w's rows: every entity, every round; even writers go forward,
        // odd writers backward (older rows after newer ones).
        let mut data = Vec::new();
        for round in 0..STRESS_ROUNDS {
            let slot = round * STRESS_WRITERS + w;
            for e in 0..STRESS_ENTITIES {
                data.push((e, ts(slot), ts(slot), Some(score(e, slot))));
            }
        }
        if w % 2 == 1 {
            data.reverse();
        }
        let mut chunks: Vec<Vec<OnlineRow>> = data
            .chunks(CHUNK)
            .map(|c| to_online_rows(&rv, &feature_batch(c)).expect("fixture rows"))
            .collect();
        // Re-send the first chunk at the end: idempotent, and counted.
        let again = chunks[0].clone();
        chunks.push(again);
        sent_total += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        let (store, rv) = (Arc::clone(&store), rv.clone());
        writers.push(tokio::spawn(async move {
            let mut total = WriteSummary::default();
            for c in chunks {
                let n = c.len() as u64;
                let s = store
                    .write(&rv, c, &WriteOptions::default())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("[{}] writer {w}: write failed: {e}", store.backend())
                    });
                assert_eq!(
                    s.written + s.skipped,
                    n,
                    "[{}] writer {w}: a write of {n} rows reported {s:?}",
                    store.backend()
                );
                total += s;
            }
            total
        }));
    }
    assert!(
        sent_total >= 10_000,
        "the stress case sends at least 10k rows"
    );

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done, rv) = (Arc::clone(&store), Arc::clone(&done), rv.clone());
        let sample: Vec<OnlineKey> = keys.iter().step_by(8).cloned().collect();
        tokio::spawn(async move {
            let mut seen: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
            let mut polls = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let got = store
                    .read(&sample, &ReadOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("[{}] reader: read failed: {e}", store.backend()));
                for (k, row) in sample.iter().zip(&got) {
                    let Some(row) = row else { continue };
                    check_coherent(store.backend(), &rv, row, t0);
                    let v = row.version();
                    if let Some(prev) = seen.insert(k.entity_key.clone(), v) {
                        assert!(
                            v >= prev,
                            "[{}] entity {}: version went back from {prev:?} to {v:?} while writers ran",
                            store.backend(),
                            crate::adapter::display_entity_key(&k.entity_key)
                        );
                    }
                }
                polls += 1;
                if finished {
                    return polls;
                }
                tokio::task::yield_now().await;
            }
        })
    };

    let mut total = WriteSummary::default();
    for h in writers {
        total += h
            .await
            .unwrap_or_else(|e| panic!("[{b}] writer task panicked: {e}"));
    }
    done.store(true, Ordering::Release);
    let polls = reader
        .await
        .unwrap_or_else(|e| panic!("[{b}] reader task panicked: {e}"));
    assert!(polls >= 1, "[{b}] the reader polled");
    assert_eq!(
        total.written + total.skipped,
        sent_total,
        "[{b}] counts add up: written {} + skipped {} != sent {sent_total}",
        total.written,
        total.skipped
    );

    let newest = ts((STRESS_ROUNDS - 1) * STRESS_WRITERS + STRESS_WRITERS - 1);
    let got = store
        .read(&keys, &ReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] final read failed: {e}"));
    assert_eq!(got.len(), keys.len(), "[{b}] read aligns with the request");
    for (e, row) in got.iter().enumerate() {
        let row = row
            .as_ref()
            .unwrap_or_else(|| panic!("[{b}] entity {e} missing after the stress run"));
        assert_eq!(
            row.event_ts, newest,
            "[{b}] entity {e}: the newest version must win (no lost update)"
        );
        check_coherent(b, &rv, row, t0);
    }
    store
        .delete_view(&view)
        .await
        .unwrap_or_else(|e| panic!("[{b}] delete_view failed: {e}"));
}

/// The row's payload was written with the row's own version.
fn check_coherent(b: &str, rv: &crate::model::ResolvedView, row: &OnlineRow, t0: i64) {
    let slot = (row.event_ts - t0) / 1_000_000;
    assert_eq!(
        row.created_ts,
        Some(row.event_ts),
        "[{b}] torn row: created_ts {:?} with event_ts {}",
        row.created_ts,
        row.event_ts
    );
    let entity = match crate::adapter::decode_entity_key(&row.entity_key) {
        Ok(pairs) => match pairs.first() {
            Some((_, Value::Int64(e))) => *e,
            other => panic!("[{b}] unexpected key {other:?}"),
        },
        Err(e) => panic!("[{b}] stored entity key does not decode: {e}"),
    };
    let cols = decode_payloads(&[Some(&row.payload)], &rv.view.features)
        .unwrap_or_else(|e| panic!("[{b}] entity {entity}: payload does not decode: {e}"));
    let s = cols[0].as_primitive::<Float64Type>();
    let count = cols[2].as_primitive::<Int64Type>();
    assert!(
        !s.is_null(0) && s.value(0) == score(entity, slot) && count.value(0) == row.event_ts,
        "[{b}] torn row for entity {entity}: version slot {slot} but payload score {:?}, count {:?}",
        (!s.is_null(0)).then(|| s.value(0)),
        (!count.is_null(0)).then(|| count.value(0))
    );
}
