//! Round-trip strategies, measured: `cargo bench -p fstore-online-scylla`.
//!
//! Against `FSTORE_TEST_SCYLLA_URI` when set, else the in-process
//! kassandra-tester server (single-threaded, one global lock: its figures show
//! the client side and per-statement overhead, not a cluster's parallelism).
//! `FSTORE_BENCH_ROWS` rows (default 2000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fstore_core::{
    FeatureView, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView, WriteOptions,
};
use fstore_online_scylla::ScyllaOnlineStoreBuilder;
use futures::{StreamExt, TryStreamExt, stream};
use kassandra_tester::KassandraTester;
use kassandra_tester::kassandra::session::KassandraSession;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};

fn kassandra() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _ = KassandraTester::new(KassandraSession::new())
                .in_scope(|addr| {
                    let tx = tx.clone();
                    async move {
                        tx.send(addr).unwrap();
                        std::future::pending::<Result<(), ()>>().await
                    }
                })
                .await;
        });
    });
    rx.recv().unwrap()
}

fn report(what: &str, n: usize, d: Duration) {
    println!(
        "{what:<58} {n:>6} rows {:>9.1} ms {:>10.0} rows/s",
        d.as_secs_f64() * 1e3,
        n as f64 / d.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("FSTORE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (uri, real) = match std::env::var("FSTORE_TEST_SCYLLA_URI") {
        Ok(u) if !u.is_empty() => (u, true),
        _ => (kassandra().to_string(), false),
    };
    println!(
        "server: {} ({uri})",
        if real {
            "real cluster"
        } else {
            "in-process kassandra-tester"
        }
    );
    let store = |conc: usize| {
        let uri = uri.clone();
        async move {
            let s = ScyllaOnlineStoreBuilder::new()
                .with_contact_points(uri)
                .with_keyspace("fstore_bench")
                .with_await_schema_agreement(real)
                .with_in_process_test_server(!real)
                .with_write_concurrency(conc)
                .with_read_concurrency(conc)
                .connect()
                .await
                .unwrap();
            s.ensure_schema().await.unwrap();
            Arc::new(s)
        }
    };
    let view = ResolvedView::new(FeatureView::new("bench", ["e"]), vec![]);
    let now = chrono::Utc::now().timestamp_micros();
    let rows = |generation: i64| -> Vec<OnlineRow> {
        (0..n)
            .map(|i| OnlineRow {
                entity_key: (i as u64).to_be_bytes().to_vec(),
                event_ts: now + generation,
                created_ts: Some(now),
                payload: vec![7u8; 64].into(),
            })
            .collect()
    };
    let keys: Vec<OnlineKey> = (0..n)
        .map(|i| OnlineKey {
            view: "bench".into(),
            entity_key: (i as u64).to_be_bytes().to_vec(),
        })
        .collect();

    for conc in [1usize, 256] {
        let s = store(conc).await;
        let t = Instant::now();
        let w = s
            .write(&view, rows(conc as i64), &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(w.written as usize, n);
        report(
            &format!("store.write: probe + insert per row, {conc} in flight"),
            n,
            t.elapsed(),
        );
        let t = Instant::now();
        let w = s
            .write(&view, rows(0), &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(w.skipped as usize, n);
        report(
            &format!("store.write of older rows (probe only, all skipped), {conc} in flight"),
            n,
            t.elapsed(),
        );
        let t = Instant::now();
        let got = s.read(&keys, &ReadOptions::default()).await.unwrap();
        assert!(got.iter().all(Option::is_some));
        report(
            &format!("store.read: one SELECT per key, {conc} in flight"),
            n,
            t.elapsed(),
        );
    }

    // The alternatives, with the raw driver: blind inserts (no probe) and
    // unlogged multi-partition batches.
    let session: Session = SessionBuilder::new()
        .known_node(&uri)
        .auto_await_schema_agreement(real)
        .build()
        .await
        .unwrap();
    let ins = session
        .prepare("INSERT INTO fstore_bench.online_rows (entity_key, view, payload, event_ts, created_ts, write_ts) VALUES (?, ?, ?, ?, ?, ?)")
        .await
        .unwrap();
    let vals = |i: usize| {
        (
            (i as u64).to_be_bytes().to_vec(),
            "raw".to_owned(),
            vec![7u8; 64],
            now,
            now,
            now,
        )
    };
    let t = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let (session, ins) = (&session, &ins);
            async move { session.execute_unpaged(ins, vals(i)).await.map(drop) }
        })
        .buffer_unordered(256)
        .try_collect::<()>()
        .await
        .unwrap();
    report(
        "raw blind INSERT per row (no probe), 256 in flight",
        n,
        t.elapsed(),
    );
    for size in [10usize, 100] {
        let t = Instant::now();
        let chunks: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(size)
            .map(<[usize]>::to_vec)
            .collect();
        stream::iter(chunks)
            .map(|chunk| {
                let (session, ins) = (&session, &ins);
                async move {
                    let mut b = Batch::new(BatchType::Unlogged);
                    for _ in &chunk {
                        b.append_statement(ins.clone());
                    }
                    let v: Vec<_> = chunk.iter().map(|i| vals(*i)).collect();
                    session.batch(&b, v).await.map(drop)
                }
            })
            .buffer_unordered(32)
            .try_collect::<()>()
            .await
            .unwrap();
        report(
            &format!("raw UNLOGGED BATCH of {size} partitions, 32 in flight"),
            n,
            t.elapsed(),
        );
    }
}
