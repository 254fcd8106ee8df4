//! Conformance (core testkit) and Redis-specific tests against real servers:
//! a single node (`FSTORE_TEST_REDIS_URL`) and a 3-master cluster
//! (`FSTORE_TEST_REDIS_CLUSTER_URL`), both started by `scripts/servers/redis.sh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface};
use fred::prelude::{Builder, Client, Config};
use fstore_core::{
    Error, FeatureView, JoinKey, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView,
    ValueType, WriteOptions,
};
use fstore_online_redis::{RedisOnlineStore, RedisOnlineStoreBuilder};

mod common;
use common::server_url;

fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn store(url: &str) -> RedisOnlineStore {
    RedisOnlineStoreBuilder::new()
        .with_url(url)
        .with_key_prefix(unique("t"))
        .build()
        .unwrap()
}

fn view(name: &str, ttl: Option<Duration>) -> ResolvedView {
    let mut v = FeatureView::new(name, ["e"]).with_feature("f", ValueType::Int64);
    if let Some(t) = ttl {
        v = v.with_ttl(t);
    }
    ResolvedView::new(
        v,
        vec![JoinKey {
            name: "id".into(),
            value_type: ValueType::Int64,
        }],
    )
}

fn row(key: &[u8], event_ts: i64, created_ts: Option<i64>, payload: &[u8]) -> OnlineRow {
    OnlineRow {
        entity_key: key.to_vec(),
        event_ts,
        created_ts,
        payload: payload.to_vec().into(),
    }
}

fn okey(view: &str, key: &[u8]) -> OnlineKey {
    OnlineKey {
        view: view.to_owned(),
        entity_key: key.to_vec(),
    }
}

async fn raw_client(url: &str) -> Client {
    let c = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    c.init().await.unwrap();
    c
}

/// Now in µs.
fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn roundtrip_and_newest_wins(url: &str) {
    let s = store(url);
    let (a, b) = (
        view(&unique("a"), None),
        view(&unique("b"), Some(Duration::from_secs(3600))),
    );
    let k1: &[u8] = b"\x01k}1{";
    let k2: &[u8] = b"k2";
    let t = now_us();
    let w = s
        .write(
            &a,
            vec![
                row(k1, t, None, b"a1"),
                row(k2, t, Some(5), b"a2"),
                row(k1, t - 1, None, b"old"),
            ],
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((w.written, w.skipped), (2, 1));
    let w = s
        .write(
            &b,
            vec![row(k1, t, Some(1), b"b1")],
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((w.written, w.skipped), (1, 0));

    // Duplicates, several views of one entity, missing keys and views.
    let keys = vec![
        okey(a.name(), k1),
        okey(b.name(), k1),
        okey(a.name(), k2),
        okey(b.name(), k2),
        okey(a.name(), k1),
        okey(a.name(), b"nope"),
        okey("no_such_view", k1),
    ];
    let got = s.read(&keys, &ReadOptions::default()).await.unwrap();
    assert_eq!(got.len(), keys.len());
    assert_eq!(got[0], Some(row(k1, t, None, b"a1")));
    assert_eq!(got[1], Some(row(k1, t, Some(1), b"b1")));
    assert_eq!(got[2], Some(row(k2, t, Some(5), b"a2")));
    assert_eq!(got[3], None);
    assert_eq!(got[4], got[0]);
    assert_eq!(got[5], None);
    assert_eq!(got[6], None);

    // Equal version rewrites (later write wins); missing created < any created;
    // strictly older is skipped.
    let w = s
        .write(
            &a,
            vec![
                row(k1, t, None, b"a1-again"),
                row(k2, t, None, b"older-created"),
                row(k2, t, Some(i64::MIN), b"min-created-equal"),
                row(k2, t, Some(4), b"older"),
            ],
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((w.written, w.skipped), (1, 3));
    let got = s
        .read(
            &[okey(a.name(), k1), okey(a.name(), k2)],
            &ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(&got[0].as_ref().unwrap().payload[..], b"a1-again");
    assert_eq!(&got[1].as_ref().unwrap().payload[..], b"a2");

    // Extreme timestamps survive exactly (no Lua doubles).
    let big = (1i64 << 53) + 1;
    let w = s
        .write(
            &a,
            vec![
                row(b"x", big, Some(big), b"p"),
                row(b"x", big - 1, Some(i64::MAX), b"q"),
            ],
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((w.written, w.skipped), (1, 1));
    let got = s
        .read(&[okey(a.name(), b"x")], &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(
        got[0].as_ref().map(|r| (r.event_ts, r.created_ts)),
        Some((big, Some(big)))
    );

    // Many entities in one call (pipelined, chunked script calls, several slots).
    let rows: Vec<OnlineRow> = (0..1000u32)
        .map(|i| row(&i.to_be_bytes(), t, None, &i.to_le_bytes()))
        .collect();
    let w = s
        .write(&a, rows.clone(), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(w.written, 1000);
    let keys: Vec<OnlineKey> = (0..1000u32)
        .map(|i| okey(a.name(), &i.to_be_bytes()))
        .collect();
    let got = s.read(&keys, &ReadOptions::default()).await.unwrap();
    assert_eq!(
        got.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
        rows
    );

    // delete_view removes one view, keeps the others.
    s.delete_view(a.name()).await.unwrap();
    let got = s
        .read(
            &[okey(a.name(), k1), okey(b.name(), k1), keys[7].clone()],
            &ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(got[0], None);
    assert_eq!(got[1], Some(row(k1, t, Some(1), b"b1")));
    assert_eq!(got[2], None);
    s.delete_view(b.name()).await.unwrap();
}

/// Concurrent writers of random versions to the same keys: the stored row is
/// the maximum version, whatever the interleaving.
async fn concurrent_writers_newest_wins(url: &str) {
    let s = Arc::new(store(url));
    let v = view(&unique("c"), None);
    let keys: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'c', i]).collect();
    let mut tasks = Vec::new();
    for w in 0..8i64 {
        let (s, v, keys) = (Arc::clone(&s), v.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..20i64 {
                // A deterministic scramble of versions per writer and round.
                let ev = (w * 7919 + round * 104_729) % 997;
                let rows = keys
                    .iter()
                    .map(|k| row(k, ev, Some(w), format!("{ev}/{w}").as_bytes()))
                    .collect();
                s.write(&v, rows, &WriteOptions::default()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let max = (0..8i64)
        .flat_map(|w| (0..20i64).map(move |r| ((w * 7919 + r * 104_729) % 997, w)))
        .max()
        .unwrap();
    let ks: Vec<OnlineKey> = keys.iter().map(|k| okey(v.name(), k)).collect();
    for r in s.read(&ks, &ReadOptions::default()).await.unwrap() {
        let r = r.unwrap();
        assert_eq!((r.event_ts, r.created_ts), (max.0, Some(max.1)));
        assert_eq!(r.payload, format!("{}/{}", max.0, max.1).as_bytes());
    }
    s.delete_view(v.name()).await.unwrap();
}

/// The key's expiry is the maximum over its views' needs and never shrinks; a
/// view without ttl makes the key persistent.
async fn native_ttl_only_extends(url: &str) {
    let s = store(url);
    let raw = raw_client(url).await;
    let short = view(&unique("short"), Some(Duration::from_secs(100)));
    let long = view(&unique("long"), Some(Duration::from_secs(10_000)));
    let forever = view(&unique("forever"), None);
    let t = now_us();
    let k: &[u8] = b"ttl-entity";
    let redis_key = bytes::Bytes::from(s.entity_hash_key(k));
    let pttl =
        |raw: Client, key: bytes::Bytes| async move { raw.pttl::<i64, _>(key).await.unwrap() };

    s.write(
        &short,
        vec![row(k, t, None, b"s")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let p1 = pttl(raw.clone(), redis_key.clone()).await;
    // 100 s ttl + 60 s default grace (+1 s slack: the expiry is computed from the client clock, rounded up).
    assert!((150_000..=161_000).contains(&p1), "pttl {p1}");
    s.write(&long, vec![row(k, t, None, b"l")], &WriteOptions::default())
        .await
        .unwrap();
    let p2 = pttl(raw.clone(), redis_key.clone()).await;
    assert!((10_050_000..=10_061_000).contains(&p2), "pttl {p2}");
    // A newer row of the short view must not shorten the key's life.
    s.write(
        &short,
        vec![row(k, t + 1_000_000, None, b"s2")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let p3 = pttl(raw.clone(), redis_key.clone()).await;
    assert!(p3 >= p2 - 1_000, "pttl shrank from {p2} to {p3}");
    // A view without ttl: persistent, and stays so.
    s.write(
        &forever,
        vec![row(k, t, None, b"f")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(pttl(raw.clone(), redis_key.clone()).await, -1);
    s.write(
        &short,
        vec![row(k, t + 2_000_000, None, b"s3")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(pttl(raw.clone(), redis_key.clone()).await, -1);
    // Skipped (older) rows do not touch the expiry either.
    let k2: &[u8] = b"ttl-entity-2";
    let key2 = bytes::Bytes::from(s.entity_hash_key(k2));
    s.write(
        &long,
        vec![row(k2, t, None, b"l")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let before = pttl(raw.clone(), key2.clone()).await;
    let w = s
        .write(
            &long,
            vec![row(k2, t - 5_000_000_000, None, b"old")],
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(w.skipped, 1);
    assert!(pttl(raw.clone(), key2.clone()).await >= before - 1_000);
    // An entity whose only view expired long ago is freed by Redis.
    let k3: &[u8] = b"ttl-entity-3";
    s.write(
        &short,
        vec![row(k3, t - 3_600_000_000, None, b"gone")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.read(&[okey(short.name(), k3)], &ReadOptions::default())
            .await
            .unwrap()[0],
        None
    );
    // With native TTL off nothing expires.
    let off = RedisOnlineStoreBuilder::new()
        .with_url(url)
        .with_key_prefix(unique("t"))
        .with_native_ttl(false)
        .build()
        .unwrap();
    assert!(!off.capabilities().native_ttl);
    off.write(
        &short,
        vec![row(k3, t - 3_600_000_000, None, b"kept")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let got = off
        .read(&[okey(short.name(), k3)], &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(&got[0].as_ref().unwrap().payload[..], b"kept");
    assert_eq!(
        pttl(raw.clone(), bytes::Bytes::from(off.entity_hash_key(k3))).await,
        -1
    );
    for st in [&s, &off] {
        for v in [&short, &long, &forever] {
            st.delete_view(v.name()).await.unwrap();
        }
    }
    assert_eq!(
        raw.exists::<i64, _>(redis_key).await.unwrap(),
        0,
        "an empty hash is removed"
    );
}

/// After SCRIPT FLUSH (as after a restart) writes reload the script.
async fn noscript_reloads(url: &str) {
    let s = store(url);
    let v = view(&unique("ns"), None);
    s.write(&v, vec![row(b"n", 1, None, b"1")], &WriteOptions::default())
        .await
        .unwrap();
    let raw = raw_client(url).await;
    if s.is_cluster() {
        raw.script_flush_cluster(false).await.unwrap();
    } else {
        raw.script_flush(false).await.unwrap();
    }
    let w = s
        .write(&v, vec![row(b"n", 2, None, b"2")], &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(w.written, 1);
    let got = s
        .read(&[okey(v.name(), b"n")], &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(&got[0].as_ref().unwrap().payload[..], b"2");
    s.delete_view(v.name()).await.unwrap();
}

async fn layout_is_one_hash_per_entity(url: &str) {
    let s = store(url);
    let (a, b) = (view(&unique("la"), None), view(&unique("lb"), None));
    s.write(
        &a,
        vec![row(b"e", 1, None, b"pa")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    s.write(
        &b,
        vec![row(b"e", 2, Some(3), b"pb")],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let raw = raw_client(url).await;
    let key = bytes::Bytes::from(s.entity_hash_key(b"e"));
    let n: i64 = raw.hlen(key.clone()).await.unwrap();
    assert_eq!(n, 4, "t:/p: fields of two views in one hash");
    let p: Option<bytes::Bytes> = raw.hget(key, format!("p:{}", a.name())).await.unwrap();
    assert_eq!(p.as_deref(), Some(&b"pa"[..]));
    s.delete_view(a.name()).await.unwrap();
    s.delete_view(b.name()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_single_node_conformance() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_URL") else {
        return;
    };
    fstore_core::testkit::run_online_suite(Arc::new(store(&url))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_conformance() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    let s = store(&url);
    assert!(s.is_cluster());
    fstore_core::testkit::run_online_suite(Arc::new(s)).await;
}

/// TLS (crate feature `tls`) against the TLS-only node of
/// `scripts/servers/redis.sh`, whose certificate is signed by a CA made when the
/// server started. The adapter trusts the platform roots (rustls-native-certs),
/// which honour `SSL_CERT_FILE`; that variable is set for a child process (this
/// test binary, filtered to the ignored `redis_tls_child`), never in this one.
#[tokio::test(flavor = "multi_thread")]
// The assertion is constant per build: that is the point (a build without `tls`).
#[allow(clippy::assertions_on_constants)]
async fn redis_tls_conformance() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_TLS_URL") else {
        return;
    };
    if cfg!(not(feature = "tls")) {
        panic!(
            "FSTORE_TEST_REDIS_TLS_URL is set but this test was built without the `tls` feature: \
         cargo test -p fstore-online-redis --features tls (scripts/test.sh does)"
        );
    }
    let ca = std::env::var("FSTORE_TEST_REDIS_TLS_CA").expect(
        "FSTORE_TEST_REDIS_TLS_CA (the CA of the TLS node) is set by scripts/servers/redis.sh",
    );
    let run = |mode: &str, ca: Option<&str>| {
        let mut c = std::process::Command::new(std::env::current_exe().expect("test binary"));
        c.args(["--ignored", "--exact", "redis_tls_child", "--nocapture"])
            .env("FSTORE_TEST_REDIS_TLS_MODE", mode)
            .env("FSTORE_TEST_REDIS_TLS_URL", &url);
        match ca {
            Some(ca) => c.env("SSL_CERT_FILE", ca),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        let out = c.output().expect("run the TLS child");
        assert!(
            out.status.success(),
            "TLS child ({mode}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // the CA trusted: the whole online suite (parity proptest included) over TLS
    let out = run("suite", Some(&ca));
    assert!(out.contains("TLS suite passed"), "{out}");
    // the CA not trusted: the handshake fails (the certificate really is checked),
    // and a plaintext client on the TLS port fails too
    let out = run("untrusted", None);
    assert!(out.contains("TLS refusals checked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "child process of redis_tls_conformance"]
async fn redis_tls_child() {
    let url = std::env::var("FSTORE_TEST_REDIS_TLS_URL").expect("FSTORE_TEST_REDIS_TLS_URL");
    let mode = std::env::var("FSTORE_TEST_REDIS_TLS_MODE").expect("FSTORE_TEST_REDIS_TLS_MODE");
    let timeout = Duration::from_secs(2);
    match mode.as_str() {
        "suite" => {
            let s = store(&url);
            let v = view("tls", None);
            s.write(&v, vec![row(b"k", 1, None, b"p")], &WriteOptions::default())
                .await
                .unwrap();
            let got = s
                .read(&[okey("tls", b"k")], &ReadOptions::default())
                .await
                .unwrap();
            assert_eq!(got[0].as_ref().map(|r| &r.payload[..]), Some(&b"p"[..]));
            s.delete_view("tls").await.unwrap();
            fstore_core::testkit::run_online_suite(Arc::new(s)).await;
            println!("TLS suite passed");
        }
        "untrusted" => {
            let untrusted = RedisOnlineStoreBuilder::new()
                .with_url(&url)
                .with_connect_timeout(timeout)
                .with_command_timeout(timeout)
                .build()
                .unwrap();
            let err = untrusted
                .read(&[okey("tls", b"k")], &ReadOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, Error::Unavailable { backend: "redis", message } if message.contains("UnknownIssuer")),
                "an untrusted certificate must be refused: {err:?}"
            );
            let plain = RedisOnlineStoreBuilder::new()
                .with_url(url.replacen("rediss://", "redis://", 1))
                .with_connect_timeout(timeout)
                .with_command_timeout(timeout)
                .build()
                .unwrap();
            let err = plain
                .read(&[okey("tls", b"k")], &ReadOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Unavailable {
                        backend: "redis",
                        ..
                    }
                ),
                "plaintext to a TLS-only port is refused: {err:?}"
            );
            println!("TLS refusals checked");
        }
        other => panic!("unknown FSTORE_TEST_REDIS_TLS_MODE {other:?}"),
    }
}

/// Aggregation tiles ([semantics §11](fstore_core::docs::semantics)): parity with the offline engine, 4 concurrent
/// pushers, idempotent materialization, expiry and the definition guard.
#[tokio::test(flavor = "multi_thread")]
async fn redis_single_node_aggregations() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_URL") else {
        return;
    };
    let cases = std::env::var("FSTORE_TEST_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    fstore_core::testkit::run_agg_suite(Arc::new(store(&url)), cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_aggregations() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    let s = store(&url);
    assert!(s.is_cluster());
    fstore_core::testkit::run_agg_suite(Arc::new(s), 16).await;
}

async fn all_backend_cases(url: &str) {
    roundtrip_and_newest_wins(url).await;
    concurrent_writers_newest_wins(url).await;
    native_ttl_only_extends(url).await;
    noscript_reloads(url).await;
    layout_is_one_hash_per_entity(url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_single_node_backend_cases() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_URL") else {
        return;
    };
    all_backend_cases(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_backend_cases() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    let s = store(&url);
    assert!(s.is_cluster());
    all_backend_cases(&url).await;
}

/// A closed port: a clear, retryable error well within the connect timeout.
#[tokio::test(flavor = "multi_thread")]
async fn dead_server_fails_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let timeout = Duration::from_millis(800);
    let s = RedisOnlineStoreBuilder::new()
        .with_url(format!("redis://127.0.0.1:{port}"))
        .with_command_timeout(timeout)
        .with_connect_timeout(timeout)
        .build()
        .unwrap();
    let v = view("dead", None);
    for _ in 0..2 {
        let t0 = Instant::now();
        let err = s
            .read(&[okey("dead", b"k")], &ReadOptions::default())
            .await
            .unwrap_err();
        assert!(
            t0.elapsed() < timeout + Duration::from_millis(700),
            "took {:?}",
            t0.elapsed()
        );
        assert!(
            matches!(
                &err,
                Error::Unavailable {
                    backend: "redis",
                    ..
                }
            ),
            "a refused connection is Unavailable: {err:?}"
        );
        let err = s
            .write(&v, vec![row(b"k", 1, None, b"")], &WriteOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Unavailable {
                    backend: "redis",
                    ..
                }
            ),
            "a refused connection is Unavailable: {err:?}"
        );
    }
}

/// A server that accepts connections but never answers: Timeout within the
/// configured timeout (+ slack), never a hang.
#[tokio::test(flavor = "multi_thread")]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let timeout = Duration::from_millis(600);
    let s = RedisOnlineStoreBuilder::new()
        .with_url(format!("redis://127.0.0.1:{port}"))
        .with_command_timeout(timeout)
        .with_connect_timeout(timeout)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = s
        .read(&[okey("v", b"k")], &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        t0.elapsed() < timeout * 2 + Duration::from_millis(700),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Timeout {
                backend: "redis",
                ..
            }
        ),
        "a server that never answers is a Timeout: {err:?}"
    );
    hold.abort();
}

/// A connected server that stops answering mid-way (a frozen proxy): reads
/// return `Error::Timeout` within the command timeout.
#[tokio::test(flavor = "multi_thread")]
async fn frozen_server_gives_timeout() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_URL") else {
        return;
    };
    let upstream = url.trim_start_matches("redis://").to_owned();
    let (port, frozen) = common::freezable_proxy(upstream).await;
    let timeout = Duration::from_millis(500);
    let s = RedisOnlineStoreBuilder::new()
        .with_url(format!("redis://127.0.0.1:{port}"))
        .with_key_prefix(unique("t"))
        .with_command_timeout(timeout)
        .build()
        .unwrap();
    let v = view(&unique("fz"), None);
    s.write(&v, vec![row(b"k", 1, None, b"x")], &WriteOptions::default())
        .await
        .unwrap();
    assert!(
        s.read(&[okey(v.name(), b"k")], &ReadOptions::default())
            .await
            .unwrap()[0]
            .is_some()
    );
    frozen.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let err = s
        .read(&[okey(v.name(), b"k")], &ReadOptions::default())
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_millis(500),
        "took {took:?}"
    );
    // A per-call deadline wins over the configured one.
    let t0 = Instant::now();
    let err = s
        .read(
            &[okey(v.name(), b"k")],
            &ReadOptions::default().with_timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "took {:?}",
        t0.elapsed()
    );
    frozen.store(false, Ordering::SeqCst);
}

/// Issue 11 item 10: reads above `MAX_READ_KEYS` are refused by name (before
/// any I/O); below it, many entities go out in several pipelines of
/// `HMGETS_PER_PIPELINE` and come back aligned, on one node and on a cluster.
#[tokio::test(flavor = "multi_thread")]
async fn large_reads_are_chunked_and_oversized_reads_refused() {
    use fstore_online_redis::{HMGETS_PER_PIPELINE, MAX_READ_KEYS};
    let lazy = RedisOnlineStoreBuilder::new()
        .with_url("redis://127.0.0.1:1")
        .build()
        .unwrap();
    let too_many: Vec<OnlineKey> = (0..=MAX_READ_KEYS)
        .map(|i| okey("v", &(i as u64).to_be_bytes()))
        .collect();
    match lazy.read(&too_many, &ReadOptions::default()).await {
        Err(Error::InvalidInput(m)) => assert!(m.contains(&MAX_READ_KEYS.to_string()), "{m}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    for var in ["FSTORE_TEST_REDIS_URL", "FSTORE_TEST_REDIS_CLUSTER_URL"] {
        let Some(url) = server_url(var) else { return };
        let s = store(&url);
        let v = view(&unique("chunk"), None);
        let n = 2 * HMGETS_PER_PIPELINE + 7;
        let keys: Vec<Vec<u8>> = (0..n as u64).map(|i| i.to_be_bytes().to_vec()).collect();
        let rows: Vec<OnlineRow> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .map(|(i, k)| row(k, i as i64 + 1, None, &(i as u64).to_le_bytes()))
            .collect();
        s.write(&v, rows, &WriteOptions::default()).await.unwrap();
        let req: Vec<OnlineKey> = keys.iter().map(|k| okey(v.name(), k)).collect();
        let got = s.read(&req, &ReadOptions::default()).await.unwrap();
        assert_eq!(got.len(), n);
        for (i, g) in got.iter().enumerate() {
            match g {
                Some(r) => {
                    assert!(i % 3 == 0, "{var}: entity {i} was never written");
                    assert_eq!(r.event_ts, i as i64 + 1, "{var}: entity {i}");
                    assert_eq!(r.payload[..], (i as u64).to_le_bytes(), "{var}: entity {i}");
                }
                None => assert!(i % 3 != 0, "{var}: entity {i} missing"),
            }
        }
        s.delete_view(v.name()).await.unwrap();
    }
}

/// The read deadline through a connection that stops answering
/// (`fstore_core::testkit::online_read_deadline`): the store declares
/// `enforces_read_timeout`, so the facade relies on the store's own timer;
/// the store's configured command timeout (10 s) is far above the 300 ms
/// deadline, so only the per-read deadline can end the calls in time.
#[tokio::test(flavor = "multi_thread")]
async fn read_deadline_through_a_frozen_connection() {
    let Some(url) = server_url("FSTORE_TEST_REDIS_URL") else {
        return;
    };
    let proxy =
        fstore_core::testkit::FreezableProxy::start(url.trim_start_matches("redis://")).await;
    let s = RedisOnlineStoreBuilder::new()
        .with_url(format!("redis://127.0.0.1:{}", proxy.port()))
        .with_key_prefix(unique("dl"))
        .with_command_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(s.capabilities().enforces_read_timeout);
    fstore_core::testkit::online_read_deadline(Arc::new(s), &proxy).await;
}
