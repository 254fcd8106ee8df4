//! fstore-online-scylla against CQL servers.
//!
//! * `FSTORE_TEST_SCYLLA_URI` set (contact points of a real Cassandra or
//!   ScyllaDB, e.g. `127.0.0.1:9042`): the **full** core testkit, parity
//!   proptest included (`real_cluster_full_suite`).
//! * Always: an in-process `kassandra-tester` CQL server on 127.0.0.1 for what
//!   it serves faithfully — every testkit case except the one that needs the
//!   server to order writes by `USING TIMESTAMP` — plus direct checks of TTL
//!   skipping, deletion markers, config and error paths.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fstore_core::testkit;
use fstore_core::{
    DynOnlineStore, FeatureView, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView,
    WriteOptions,
};
use fstore_online_scylla::{ScyllaOnlineStore, ScyllaOnlineStoreBuilder};
use kassandra_tester::KassandraTester;
use kassandra_tester::kassandra::session::KassandraSession;

/// One in-process kassandra server per test binary, on its own thread and
/// runtime, bound to 127.0.0.1 on a free port.
fn kassandra() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tester = KassandraTester::new(KassandraSession::new());
                let _ = tester
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
    })
}

fn kassandra_builder(keyspace: &str) -> ScyllaOnlineStoreBuilder {
    ScyllaOnlineStoreBuilder::new()
        .with_contact_points(kassandra().to_string())
        .with_keyspace(keyspace)
        .with_await_schema_agreement(false)
        .with_in_process_test_server(true)
        .with_connect_timeout(Duration::from_secs(10))
}

async fn kassandra_store(keyspace: &str) -> Arc<ScyllaOnlineStore> {
    let store = kassandra_builder(keyspace).connect().await.unwrap();
    store.ensure_schema().await.unwrap();
    Arc::new(store)
}

fn dyn_store(s: &Arc<ScyllaOnlineStore>) -> Arc<DynOnlineStore> {
    Arc::clone(s) as Arc<DynOnlineStore>
}

// ---------------------------------------------------------------- real cluster

/// The full testkit against a real Cassandra/ScyllaDB. None can be installed
/// by scripts/test.sh, so this test is `#[ignore]`d — the summary of every run
/// counts it as "1 ignored" — and runs with `--include-ignored` (README).
/// The kassandra tests below always run.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a real ScyllaDB/Cassandra: FSTORE_TEST_SCYLLA_URI=127.0.0.1:9042 and --include-ignored (README)"]
async fn real_cluster_full_suite() {
    let uri = std::env::var("FSTORE_TEST_SCYLLA_URI")
        .ok()
        .filter(|v| !v.is_empty())
        .expect(
            "FSTORE_TEST_SCYLLA_URI is not set: run a ScyllaDB/Cassandra on 127.0.0.1:9042 \
             and export it (README)",
        );
    let mut b = ScyllaOnlineStoreBuilder::from_env()
        .with_contact_points(uri)
        .with_keyspace(
            std::env::var("FSTORE_TEST_SCYLLA_KEYSPACE").unwrap_or_else(|_| "fstore_test".into()),
        );
    if let Ok(dc) = std::env::var("FSTORE_TEST_SCYLLA_LOCAL_DC") {
        b = b.with_local_dc(dc);
    }
    let store = b
        .connect()
        .await
        .expect("connect to FSTORE_TEST_SCYLLA_URI");
    store.ensure_schema().await.expect("ensure_schema");
    testkit::run_online_suite(Arc::new(store)).await;
}

// ------------------------------------------------------------ kassandra: testkit

/// Every testkit case the in-process server allows, from the one case
/// registry: kassandra ignores `USING TIMESTAMP` and keeps the last arrival,
/// so racing writers are not ordered by version there.
#[tokio::test(flavor = "multi_thread")]
async fn kassandra_testkit_cases() {
    let s = kassandra_store("tk_cases").await;
    let ran = testkit::OnlineSuite::new(dyn_store(&s))
        .without(testkit::Capability::ConcurrentNewestWins)
        .with_parity_cases(32)
        .run()
        .await;
    assert!(ran.contains(&"online_parity"), "{ran:?}");
}

// ------------------------------------------------------------ kassandra: direct

fn view(name: &str, ttl: Option<Duration>) -> ResolvedView {
    let mut v = FeatureView::new(name, ["e"]);
    v.ttl = ttl;
    ResolvedView::new(v, vec![])
}

fn row(key: u8, event_ts: i64, created_ts: Option<i64>, payload: &[u8]) -> OnlineRow {
    OnlineRow {
        entity_key: vec![key],
        event_ts,
        created_ts,
        payload: payload.to_vec(),
    }
}

fn k(v: &str, key: u8) -> OnlineKey {
    OnlineKey {
        view: v.into(),
        entity_key: vec![key],
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_rows_are_skipped_and_counted() {
    let s = kassandra_store("direct_ttl").await;
    let v = view("ttl_view", Some(Duration::from_secs(60)));
    let now = now_us();
    let rows = vec![
        row(1, now - 61_000_000, None, b"old"), // expired before it is written
        row(2, now - 30_000_000, None, b"live"), // half its ttl left
        row(3, now + 1_000_000, None, b"future"),
    ];
    let sum = s
        .write(&v, rows.clone(), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!((sum.written, sum.skipped), (2, 1));
    let got = s
        .read(
            &[k("ttl_view", 1), k("ttl_view", 2), k("ttl_view", 3)],
            &ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![None, Some(rows[1].clone()), Some(rows[2].clone())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_then_rewrite_same_version_is_readable() {
    let s = kassandra_store("direct_del").await;
    let v = view("del_view", None);
    let r = row(7, 5_000_000, Some(5_000_000), b"x");
    s.write(&v, vec![r.clone()], &WriteOptions::default())
        .await
        .unwrap();
    s.delete_view("del_view").await.unwrap();
    assert_eq!(
        s.read(&[k("del_view", 7)], &ReadOptions::default())
            .await
            .unwrap(),
        vec![None]
    );
    // the deletion marker is not a stored version: the same row is written again
    let sum = s
        .write(&v, vec![r.clone()], &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!((sum.written, sum.skipped), (1, 0));
    assert_eq!(
        s.read(&[k("del_view", 7)], &ReadOptions::default())
            .await
            .unwrap(),
        vec![Some(r)]
    );
    // deleting twice and deleting an unknown view are fine
    s.delete_view("del_view").await.unwrap();
    s.delete_view("del_view").await.unwrap();
    s.delete_view("never_written").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_timestamp_is_invalid_input() {
    let s = kassandra_store("direct_inv").await;
    let e = s
        .write(
            &view("inv", None),
            vec![row(1, i64::MIN, None, b"")],
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, fstore_core::Error::InvalidInput(ref m) if m.contains("'inv'")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_payload_and_empty_calls() {
    let s = kassandra_store("direct_empty").await;
    let v = view("empty", None);
    let r = row(1, 1, None, b"");
    assert_eq!(
        s.write(&v, vec![], &WriteOptions::default())
            .await
            .unwrap()
            .written,
        0
    );
    assert!(
        s.read(&[], &ReadOptions::default())
            .await
            .unwrap()
            .is_empty()
    );
    s.write(&v, vec![r.clone()], &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        s.read(&[k("empty", 1)], &ReadOptions::default())
            .await
            .unwrap(),
        vec![Some(r)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_ignoring_using_is_refused_without_the_test_flag() {
    kassandra_store("direct_strict").await; // schema
    let s = kassandra_builder("direct_strict")
        .with_in_process_test_server(false)
        .connect()
        .await
        .unwrap();
    let e = s
        .write(
            &view("v", None),
            vec![row(1, 1, None, b"")],
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ignores USING TIMESTAMP/TTL"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_table_names_ensure_schema() {
    let s = kassandra_builder("no_such_keyspace")
        .connect()
        .await
        .unwrap();
    let e = s
        .read(&[k("v", 1)], &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ensure_schema"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_refused_is_unavailable() {
    // a port that was free a moment ago
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = ScyllaOnlineStoreBuilder::new()
        .with_contact_points(format!("127.0.0.1:{port}"))
        .with_connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            fstore_core::Error::Unavailable {
                backend: "scylla",
                ..
            }
        ),
        "a refused connection is Unavailable: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_silent_listener_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // accept and hold connections, never answer
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let started = std::time::Instant::now();
    let e = ScyllaOnlineStoreBuilder::new()
        .with_contact_points(addr.to_string())
        .with_connect_timeout(Duration::from_millis(800))
        .connect()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            e,
            fstore_core::Error::Timeout {
                backend: "scylla",
                ..
            }
        ),
        "a listener that never answers is a Timeout: {e:?}"
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_and_store_id_hide_secrets() {
    let s = kassandra_builder("direct_dbg")
        .with_credentials("alice", "hunter2-secret")
        .settings_debug();
    assert!(s.contains("alice") && !s.contains("hunter2-secret"), "{s}");
    let store = kassandra_store("direct_dbg").await;
    let d = format!("{store:?}");
    assert!(d.contains("direct_dbg"), "{d}");
    assert_eq!(
        store.store_id(),
        format!("scylla://{}/direct_dbg.online_rows", kassandra())
    );
    assert!(store.capabilities().native_ttl);
}

trait DebugStr {
    fn settings_debug(&self) -> String;
}
impl DebugStr for ScyllaOnlineStoreBuilder {
    fn settings_debug(&self) -> String {
        format!("{self:?}")
    }
}
