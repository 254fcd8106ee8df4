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
    let store = Arc::new(store);
    testkit::run_online_suite(dyn_store(&store)).await;
    testkit::run_agg_suite(dyn_store(&store), parity_cases(16)).await;
}

fn parity_cases(default: u32) -> u32 {
    std::env::var("FSTORE_TEST_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// The read deadline through a connection that stops answering
/// (`fstore_core::testkit::online_read_deadline`): the store declares
/// `enforces_read_timeout`, so the facade adds no timer and relies on the
/// store's own; the driver's request timeout (10 s) is far above the test's
/// deadline, so only the per-read deadline can end the calls in time.
#[tokio::test(flavor = "multi_thread")]
async fn read_deadline_through_a_frozen_connection() {
    let proxy = testkit::FreezableProxy::start(kassandra().to_string()).await;
    let store = kassandra_builder("tk_deadline")
        .with_contact_points(format!("127.0.0.1:{}", proxy.port()))
        .with_request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    store.ensure_schema().await.unwrap();
    assert!(store.capabilities().enforces_read_timeout);
    testkit::online_read_deadline(Arc::new(store), &proxy).await;
}

// ------------------------------------------------------- kassandra: aggregations

/// The aggregation suite on the in-process server: parity of online tiles
/// with the offline value (random histories, materialization runs and pushes),
/// 4 concurrent pushers × 25 events → 100, idempotent materialization, expiry,
/// the definition guard. Nothing in the tile design needs what kassandra lacks
/// (LWT, USING TIMESTAMP/TTL, range deletes).
#[tokio::test(flavor = "multi_thread")]
async fn kassandra_aggregations() {
    let s = kassandra_store("tk_agg").await;
    assert!(s.capabilities().tiles);
    testkit::run_agg_suite(dyn_store(&s), parity_cases(24)).await;
}

/// The view name of the round-trip test: frames carrying it are the store's
/// own requests about that view (the driver's metadata queries never do).
const RT_VIEW: &str = "rt_marker_view";

/// Counts client→server CQL request frames that carry [`RT_VIEW`], by opcode,
/// on their way to kassandra.
struct FrameCounter {
    addr: SocketAddr,
    counts: Arc<[std::sync::atomic::AtomicUsize; 256]>,
}

impl FrameCounter {
    const EXECUTE: u8 = 0x0A;
    const BATCH: u8 = 0x0D;

    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<[std::sync::atomic::AtomicUsize; 256]> =
            Arc::new(std::array::from_fn(|_| Default::default()));
        let c = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(kassandra()).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    // frame: version, flags, stream (2), opcode, length (4 BE), body
                    let mut head = [0u8; 9];
                    while cr.read_exact(&mut head).await.is_ok() {
                        let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                        let mut body = vec![0u8; len as usize];
                        if cr.read_exact(&mut body).await.is_err() {
                            break;
                        }
                        if body.windows(RT_VIEW.len()).any(|w| w == RT_VIEW.as_bytes()) {
                            c[head[4] as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        if sw.write_all(&head).await.is_err() || sw.write_all(&body).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, counts }
    }

    fn get(&self, opcode: u8) -> usize {
        self.counts[opcode as usize].load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn tile(feature: &str, start: i64, state: &[u8]) -> fstore_core::Tile {
    fstore_core::Tile {
        feature: feature.into(),
        start,
        expires_at: start + 100,
        state: state.to_vec(),
    }
}

/// Round trips on the wire: a read of K (view, entity) keys is exactly K
/// single-partition EXECUTE requests (no batch, no second request per key);
/// a push or a materialization of one entity is one EXECUTE (the partition
/// read) and one BATCH. Push rows come back in write order after the
/// materialized row; a rebuilt tile replaces them; expired rows are deleted.
#[tokio::test(flavor = "multi_thread")]
async fn tile_round_trips_and_layout() {
    kassandra_store("tile_rt").await; // schema
    let proxy = FrameCounter::start().await;
    let s = ScyllaOnlineStoreBuilder::new()
        .with_contact_points(proxy.addr.to_string())
        .with_keyspace("tile_rt")
        .with_await_schema_agreement(false)
        .with_in_process_test_server(true)
        .with_connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let v = view(RT_VIEW, None);
    let keys: Vec<OnlineKey> = (0..5).map(|i| k(RT_VIEW, i)).collect();
    // warm up: statements prepared
    s.read_tiles(&keys, &ReadOptions::default()).await.unwrap();
    let concat: &fstore_core::TileMergeFn = &|_f: &str, a: &[u8], b: &[u8]| Ok([a, b].concat());
    let w = |key: u8, tiles: Vec<fstore_core::Tile>, expire_before: i64| fstore_core::TileWrite {
        entity_key: vec![key],
        tiles,
        expire_before,
    };

    let (e0, b0) = (
        proxy.get(FrameCounter::EXECUTE),
        proxy.get(FrameCounter::BATCH),
    );
    s.write_tiles(
        &v,
        vec![w(1, vec![tile("f", 0, b"m0"), tile("f", 10, b"m10")], -1)],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        proxy.get(FrameCounter::EXECUTE) - e0,
        1,
        "materialize: one read"
    );
    assert_eq!(
        proxy.get(FrameCounter::BATCH) - b0,
        1,
        "materialize: one batch"
    );

    for (i, d) in [b"p1", b"p2", b"p3"].iter().enumerate() {
        let (e0, b0) = (
            proxy.get(FrameCounter::EXECUTE),
            proxy.get(FrameCounter::BATCH),
        );
        s.merge_tiles(
            &v,
            vec![w(1, vec![tile("f", 10, *d)], -1)],
            concat,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            proxy.get(FrameCounter::EXECUTE) - e0,
            1,
            "push {i}: one read"
        );
        assert_eq!(
            proxy.get(FrameCounter::BATCH) - b0,
            1,
            "push {i}: one batch"
        );
    }

    let (e0, b0) = (
        proxy.get(FrameCounter::EXECUTE),
        proxy.get(FrameCounter::BATCH),
    );
    let got = s.read_tiles(&keys, &ReadOptions::default()).await.unwrap();
    assert_eq!(
        proxy.get(FrameCounter::EXECUTE) - e0,
        keys.len(),
        "read: one request per key"
    );
    assert_eq!(proxy.get(FrameCounter::BATCH) - b0, 0);
    let states = |t: &[fstore_core::Tile]| -> Vec<(i64, Vec<u8>)> {
        t.iter().map(|t| (t.start, t.state.clone())).collect()
    };
    assert_eq!(
        states(&got[1]),
        vec![
            (0, b"m0".to_vec()),
            (10, b"m10".to_vec()),
            (10, b"p1".to_vec()),
            (10, b"p2".to_vec()),
            (10, b"p3".to_vec()),
        ],
        "materialized row first, then push rows in write order"
    );
    assert!(got[0].is_empty() && got[2].is_empty());

    // re-materializing tile 10 replaces its push rows; tile 0 expires
    s.write_tiles(
        &v,
        vec![w(1, vec![tile("f", 10, b"m10'")], 100)],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let got = s
        .read_tiles(&keys[1..2], &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(states(&got[0]), vec![(10, b"m10'".to_vec())]);

    // a push whose merge fails writes nothing
    let refuse: &fstore_core::TileMergeFn =
        &|f: &str, _: &[u8], _: &[u8]| Err(fstore_core::Error::invalid(format!("refused {f}")));
    let e = s
        .merge_tiles(
            &v,
            vec![w(1, vec![tile("f", 10, b"x")], -1)],
            refuse,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused f"), "{e}");
    let got = s
        .read_tiles(&keys[1..2], &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(states(&got[0]), vec![(10, b"m10'".to_vec())]);

    s.delete_view(RT_VIEW).await.unwrap();
    let got = s.read_tiles(&keys, &ReadOptions::default()).await.unwrap();
    assert!(got.iter().all(Vec::is_empty), "{got:?}");
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
        payload: payload.to_vec().into(),
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
