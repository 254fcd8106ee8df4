//! The scan decodes files ahead of the consumer on their own tasks: more files
//! than are decoded ahead, more batches per file than a file's task runs
//! ahead. Every row must come back exactly once, in write order, and a
//! stream dropped half-way must not hang or leak a blocked task.

use std::sync::Arc;

use arrow_array::{Array, Int64Array, cast::AsArray, types::TimestampMicrosecondType};
use fstore_core::testkit::{feature_batch, test_definitions};
use fstore_core::{OfflineStore, ScanRequest, TimeRange};
use fstore_offline_delta::DeltaOfflineStoreBuilder;
use futures::StreamExt;

const S: i64 = 1_000_000;
/// Commits (one file each): more than the files decoded ahead (4).
const FILES: i64 = 9;
/// Rows per file: 40 batches of 25 rows, more than a task runs ahead (8).
const ROWS: i64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_decoded_ahead_come_back_complete_and_in_write_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeltaOfflineStoreBuilder::new()
        .with_root(dir.path().to_string_lossy())
        .with_scan_batch_rows(25)
        .build()
        .unwrap();
    let (_, rv) = test_definitions("ahead", None);
    let mut written = Vec::new();
    for f in 0..FILES {
        // event times run backwards across files: write order, not time order
        let rows: Vec<(i64, i64, i64, Option<f64>)> = (0..ROWS)
            .map(|i| {
                let id = f * ROWS + i;
                let t = (FILES - f) * 10 * S + i;
                (id, t, t, Some(id as f64))
            })
            .collect();
        written.extend(rows.iter().map(|r| r.0));
        store.write(&rv, feature_batch(&rows)).await.unwrap();
    }

    let scan = store
        .scan(&rv, &ScanRequest::new(TimeRange::all()))
        .await
        .unwrap();
    let batches = scan.collect().await.unwrap();
    assert!(
        batches.len() as i64 >= FILES * ROWS / 25,
        "batches of 25 rows: {}",
        batches.len()
    );
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("user_id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, written, "every row once, in write order");

    // A time range keeps only files 2..=4 and the rows in range.
    let lo = fstore_core::time::from_micros((FILES - 4) * 10 * S + 500);
    let hi = fstore_core::time::from_micros((FILES - 2) * 10 * S + 499);
    let scan = store
        .scan(&rv, &ScanRequest::new(TimeRange::inclusive(Some(lo), hi)))
        .await
        .unwrap();
    let batches = scan.collect().await.unwrap();
    let mut got = Vec::new();
    for b in &batches {
        let ev = b
            .column_by_name("event_timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ev.null_count(), 0);
        got.extend(ev.values().iter().copied());
    }
    let want: Vec<i64> = (2..=4)
        .flat_map(|f| (0..ROWS).map(move |i| (FILES - f) * 10 * S + i))
        .filter(|t| (FILES - 4) * 10 * S + 500 <= *t && *t <= (FILES - 2) * 10 * S + 499)
        .collect();
    assert_eq!(got, want, "in-range rows of the kept files, in write order");

    // Dropped after two batches: the other files' tasks stop, nothing hangs.
    let store = Arc::new(store);
    let scan = store
        .scan(&rv, &ScanRequest::new(TimeRange::all()))
        .await
        .unwrap();
    let first: Vec<_> = scan.stream.take(2).collect().await;
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(Result::is_ok));
    let again = store
        .scan(&rv, &ScanRequest::new(TimeRange::all()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|b| b.num_rows()).sum::<usize>() as i64,
        FILES * ROWS
    );
}
