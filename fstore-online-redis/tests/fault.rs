//! Fault test: the Redis server is killed (SIGKILL) in the middle of a
//! `materialize_incremental`. The run must fail, the watermark must not move,
//! and after a restart a rerun converges to parity (online read at T equals
//! the point-in-time join at T).
//!
//! Runs against a dedicated single node (`FSTORE_TEST_REDIS_FAULT_URL`, pid in
//! `FSTORE_TEST_REDIS_FAULT_PIDFILE`, restarted with
//! `FSTORE_TEST_REDIS_FAULT_RESTART_CMD`), so killing it does not disturb the
//! other tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fstore_core::arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use fstore_core::arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::testkit::{entity_batch, feature_batch, test_definitions, unique_name};
use fstore_core::{
    Error, FeatureSelection, FeatureStore, HistoricalRequest, InMemoryOfflineStore,
    InMemoryRegistry, MaterializeOptions, OnlineRequest, OnlineStore, OnlineStoreExt,
};
use fstore_online_redis::RedisOnlineStoreBuilder;

mod common;
use common::server_url;

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

fn env(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} must be set with FSTORE_TEST_REDIS_FAULT_URL"))
}

fn kill_server(pidfile: &str) {
    let pid = std::fs::read_to_string(pidfile).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_killed_mid_materialization_then_rerun_converges() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_FAULT_URL") else {
        return;
    };
    let pidfile = env("FSTORE_TEST_REDIS_FAULT_PIDFILE");
    let restart = env("FSTORE_TEST_REDIS_FAULT_RESTART_CMD");

    let online = Arc::new(
        RedisOnlineStoreBuilder::new()
            .with_url(&url)
            .with_key_prefix(unique_name("fault"))
            .with_command_timeout(Duration::from_secs(1))
            .with_connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let store_id = online.store_id();
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&online) as Arc<fstore_core::DynOnlineStore>)
        .with_online_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let view = unique_name("fault_v");
    let (defs, _) = test_definitions(&view, Some(Duration::from_secs(7 * 86_400)));
    fs.apply(&defs, Default::default()).await.unwrap();

    // 2,000 entities × 5 versions, in the future so native TTL never interferes.
    let base = (Utc::now().timestamp() + 86_400) * 1_000_000;
    let sec = 1_000_000;
    let n_ent = 2_000i64;
    let rows: Vec<(i64, i64, i64, Option<f64>)> = (0..5i64)
        .flat_map(|v| {
            (0..n_ent).map(move |e| {
                (
                    e,
                    base + v * sec + e,
                    base + v * sec,
                    (e % 7 != 0).then_some((e * 10 + v) as f64),
                )
            })
        })
        .collect();
    fs.write_history(&view, &feature_batch(&rows))
        .await
        .unwrap();
    let t_end = base + 10 * sec;
    let end = from_micros(t_end);

    // Run 1: kill the server after the first chunks were written.
    let killed = Arc::new(AtomicBool::new(false));
    let k = Arc::clone(&killed);
    let pf = pidfile.clone();
    let opts = MaterializeOptions::default()
        .with_batch_size(250)
        .with_progress(move |p| {
            if p.rows_read >= 1_000 && !k.swap(true, Ordering::SeqCst) {
                kill_server(&pf);
            }
        });
    let t0 = Instant::now();
    let err = fs
        .materialize_incremental(&[view.as_str()], end, &opts)
        .await
        .expect_err("materialization must fail when the server dies");
    assert!(
        killed.load(Ordering::SeqCst),
        "the progress callback must have killed the server"
    );
    assert!(
        err.is_retryable(),
        "a dead server is a retryable error: {err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "failed in {:?}: no hang",
        t0.elapsed()
    );
    let snap = fs.snapshot().await.unwrap();
    assert!(
        snap.watermark(&view, &store_id).is_none(),
        "the watermark must not move on a failed run"
    );

    // Reads fail clearly (never a silent "not found") while the server is down.
    let t1 = Instant::now();
    let err = online.read_one(&view, b"any").await.unwrap_err();
    // fred keeps reconnecting, so the read waits and times out (seen here), or
    // is refused: a transient backend error either way, never a "not found".
    assert!(
        matches!(
            &err,
            Error::Timeout {
                backend: "redis",
                ..
            } | Error::Unavailable {
                backend: "redis",
                ..
            }
        ),
        "a read while the server is down is a Timeout or Unavailable: {err:?}"
    );
    assert!(
        t1.elapsed() < Duration::from_secs(3),
        "read failed after {:?}",
        t1.elapsed()
    );

    // Restart on the same port (empty: no persistence) and wait until it answers.
    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .unwrap();
    assert!(status.success(), "restart: {restart}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if online.read_one(&view, b"any").await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not reconnect after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Run 2: converges.
    let report = fs
        .materialize_incremental(
            &[view.as_str()],
            end,
            &MaterializeOptions::default().with_batch_size(250),
        )
        .await
        .unwrap();
    let r = &report.views[0];
    assert_eq!(r.rows_read, rows.len() as u64);
    assert_eq!(r.rows_read, r.rows_written + r.rows_skipped);
    let snap = fs.snapshot().await.unwrap();
    assert_eq!(
        snap.watermark(&view, &store_id).map(|w| w.event_end),
        Some(end)
    );

    // Parity at T for every entity.
    let ids: Vec<i64> = (0..n_ent).collect();
    let refs =
        FeatureSelection::refs(["score", "label", "count", "emb"].map(|f| format!("{view}:{f}")))
            .unwrap();
    let online_resp = fs
        .get_online_features(&OnlineRequest::new(refs.clone(), entity_batch(&ids)).with_now(end))
        .await
        .unwrap();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", ts, false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(TimestampMicrosecondArray::from(vec![t_end; ids.len()]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let hist = fs
        .get_historical_features(&HistoricalRequest::new(vec![spine], "ts", refs))
        .await
        .unwrap();
    for f in ["score", "label", "count", "emb"] {
        let on = online_resp.batch().column_by_name(f).unwrap();
        let off = hist.batch.column_by_name(f).unwrap();
        assert_eq!(
            on.as_ref(),
            off.as_ref(),
            "feature {f}: online != point-in-time join"
        );
    }
    online.delete_view(&view).await.unwrap();
}
