//! fstore-online-dynamo against a real DynamoDB-compatible server (moto's
//! server, started by `scripts/servers/dynamo.sh`): the core conformance suite
//! plus DynamoDB-specific limits, newest-wins races and TTL attributes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use fstore_core::adapter::encode_entity_key;
use fstore_core::{
    Error, FeatureView, JoinKey, OnlineKey, OnlineRow, OnlineStore, OnlineStoreExt, ReadOptions,
    ResolvedView, Value, ValueType, WriteOptions, WriteSummary,
};
use fstore_online_dynamo::{DynamoConfigKey, DynamoOnlineStore, DynamoOnlineStoreBuilder};

/// The server endpoint, or `None` (a loud skip) when no server runs; with
/// `FSTORE_TEST_REQUIRE_SERVERS=1` a missing server fails the test.
fn endpoint() -> Option<String> {
    fstore_core::testkit::server_url("FSTORE_TEST_DYNAMO_ENDPOINT")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A unique table per test, so tests run in parallel on one server.
fn table(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "fstore_{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Test SDK config: static fake credentials, the test endpoint.
fn sdk_config(endpoint: &str) -> aws_sdk_dynamodb::Config {
    aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(env_or(
            "FSTORE_TEST_DYNAMO_REGION",
            "us-east-1",
        )))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            env_or("FSTORE_TEST_DYNAMO_ACCESS_KEY_ID", "fstore-test"),
            env_or("FSTORE_TEST_DYNAMO_SECRET_ACCESS_KEY", "fstore-test"),
            None,
            None,
            "fstore-test",
        ))
        .build()
}

fn builder(endpoint: &str, table: &str) -> DynamoOnlineStoreBuilder {
    DynamoOnlineStoreBuilder::new()
        .with_sdk_config(sdk_config(endpoint))
        .with_table(table)
        .with_retry_base_delay(Duration::from_millis(2))
}

async fn open(endpoint: &str, name: &str) -> DynamoOnlineStore {
    let s = builder(endpoint, &table(name)).build().unwrap();
    s.ensure_tables().await.unwrap();
    s
}

fn view(name: &str, ttl: Option<Duration>) -> ResolvedView {
    let mut v = FeatureView::new(name, ["driver"]).with_feature("f", ValueType::Int64);
    if let Some(t) = ttl {
        v = v.with_ttl(t);
    }
    ResolvedView::new(v, vec![JoinKey::new("driver_id", ValueType::Int64)])
}

fn ek(id: i64) -> Vec<u8> {
    encode_entity_key(&[("driver_id", Value::Int64(id))]).unwrap()
}

fn row(id: i64, ev: i64, created: Option<i64>, tag: u8) -> OnlineRow {
    OnlineRow {
        entity_key: ek(id),
        event_ts: ev,
        created_ts: created,
        payload: vec![tag; 8].into(),
    }
}

fn key(view: &ResolvedView, id: i64) -> OnlineKey {
    OnlineKey {
        view: view.name().to_owned(),
        entity_key: ek(id),
    }
}

/// The core conformance suite (roundtrip, missing keys, newest-wins,
/// batch limits, delete_view, concurrent writers, statuses, and the parity
/// proptest against the point-in-time join).
#[tokio::test(flavor = "multi_thread")]
async fn dynamo_conformance() {
    let Some(ep) = endpoint() else { return };
    let store = open(&ep, "suite").await;
    fstore_core::testkit::run_online_suite(Arc::new(store)).await;
}

/// Aggregation tiles ([semantics §11](fstore_core::docs::semantics)): parity with the offline engine, 4
/// concurrent pushers (conditional puts), idempotent materialization, expiry
/// and the definition guard.
#[tokio::test(flavor = "multi_thread")]
async fn dynamo_aggregations() {
    let Some(ep) = endpoint() else { return };
    let store = open(&ep, "agg").await;
    let cases = std::env::var("FSTORE_TEST_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    fstore_core::testkit::run_agg_suite(Arc::new(store), cases).await;
}

fn w() -> WriteOptions {
    WriteOptions::default()
}

fn r() -> ReadOptions {
    ReadOptions::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn store_identity_and_capabilities() {
    let Some(ep) = endpoint() else { return };
    let t = table("ident");
    let s = builder(&ep, &t).build().unwrap();
    assert_eq!(
        s.store_id(),
        format!(
            "dynamo:{}/{}/{t}",
            env_or("FSTORE_TEST_DYNAMO_REGION", "us-east-1"),
            ep.trim_end_matches('/')
        )
    );
    assert_eq!(s.backend(), "dynamo");
    let caps = s.capabilities();
    assert_eq!(caps.max_read_batch, Some(100));
    assert!(caps.native_ttl);
    assert!(
        !format!("{s:?}").contains("fstore-test"),
        "credentials in Debug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_table_is_an_error_not_a_miss() {
    let Some(ep) = endpoint() else { return };
    let s = builder(&ep, &table("absent")).build().unwrap();
    let v = view("v", None);
    let err = s.read(&[key(&v, 1)], &r()).await.unwrap_err();
    assert!(err.to_string().contains("ensure_tables"), "{err}");
    assert!(s.write(&v, vec![row(1, 1, None, 1)], &w()).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_is_unavailable_after_retries() {
    if endpoint().is_none() {
        return;
    }
    // A loopback port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = builder(&format!("http://127.0.0.1:{port}"), "fstore_nowhere")
        .with_retry_budget(2)
        .build()
        .unwrap();
    let v = view("v", None);
    let err = s.read(&[key(&v, 1)], &r()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: "dynamo",
                ..
            }
        ),
        "an unreachable endpoint is Unavailable: {err:?}"
    );
    assert_eq!(
        s.request_counts().batch_get_item,
        3,
        "first try + 2 retries"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_tables_is_idempotent_and_enables_ttl() {
    let Some(ep) = endpoint() else { return };
    let t = table("ensure");
    let s = builder(&ep, &t).build().unwrap();
    s.ensure_tables().await.unwrap();
    s.ensure_tables().await.unwrap();
    let client = aws_sdk_dynamodb::Client::from_conf(sdk_config(&ep));
    let ttl = client
        .describe_time_to_live()
        .table_name(&t)
        .send()
        .await
        .unwrap();
    let d = ttl.time_to_live_description().unwrap();
    assert_eq!(d.attribute_name(), Some("expires_at"));
    let billing = client.describe_table().table_name(&t).send().await.unwrap();
    let bm = billing
        .table()
        .and_then(|t| t.billing_mode_summary())
        .and_then(|b| b.billing_mode());
    assert_eq!(bm.map(|b| b.as_str()), Some("PAY_PER_REQUEST"));

    // A table with another key schema is refused, naming it.
    let other = table("wrongschema");
    client
        .create_table()
        .table_name(&other)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let err = builder(&ep, &other)
        .build()
        .unwrap()
        .ensure_tables()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&other), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn items_carry_times_and_expiry() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "items").await;
    let with_ttl = view("ttl_view", Some(Duration::from_millis(1500)));
    let no_ttl = view("plain_view", None);
    let ev = 1_700_000_000_250_000_i64;
    s.write(&with_ttl, vec![row(1, ev, Some(ev + 1), 1)], &w())
        .await
        .unwrap();
    s.write(&no_ttl, vec![row(1, ev, None, 2)], &w())
        .await
        .unwrap();
    let client = aws_sdk_dynamodb::Client::from_conf(sdk_config(&ep));
    let get = |view: &str| {
        client
            .get_item()
            .table_name(s.table())
            .key("pk", AttributeValue::B(ek(1).into()))
            .key("sk", AttributeValue::S(view.to_owned()))
            .send()
    };
    let item = get("ttl_view").await.unwrap().item.unwrap();
    // ceil((ev + 1.5 s) / 1 s)
    assert_eq!(item["expires_at"], AttributeValue::N("1700000002".into()));
    assert_eq!(item["event_ts"], AttributeValue::N(ev.to_string()));
    assert_eq!(item["created_ts"], AttributeValue::N((ev + 1).to_string()));
    let item = get("plain_view").await.unwrap().item.unwrap();
    assert!(
        !item.contains_key("expires_at") && !item.contains_key("created_ts"),
        "{item:?}"
    );

    // native_ttl off: no expiry attribute.
    let s2 = builder(&ep, s.table())
        .with_config(DynamoConfigKey::NativeTtl, "false")
        .build()
        .unwrap();
    assert!(!s2.capabilities().native_ttl);
    s2.write(&with_ttl, vec![row(2, ev, None, 1)], &w())
        .await
        .unwrap();
    let item = client
        .get_item()
        .table_name(s.table())
        .key("pk", AttributeValue::B(ek(2).into()))
        .key("sk", AttributeValue::S("ttl_view".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!item.contains_key("expires_at"));
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_over_100_keys_chunk_dedupe_and_align() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "bigread").await;
    let a = view("view_a", None);
    let b = view("view_b", None);
    let rows_a: Vec<_> = (0..180).map(|i| row(i, 100 + i, None, 1)).collect();
    let rows_b: Vec<_> = (0..180)
        .filter(|i| i % 3 == 0)
        .map(|i| row(i, 200 + i, Some(i), 2))
        .collect();
    s.write(&a, rows_a.clone(), &w()).await.unwrap();
    s.write(&b, rows_b.clone(), &w()).await.unwrap();
    let before = s.request_counts();
    // 200 ids x 2 views = 400 keys, plus 50 duplicates: 400 distinct keys.
    let mut keys = Vec::new();
    for i in 0..200 {
        keys.push(key(&a, i));
        keys.push(key(&b, i));
    }
    keys.extend((0..50).map(|i| key(&a, i)));
    let got = s.read(&keys, &r()).await.unwrap();
    assert_eq!(got.len(), keys.len());
    let by_id = |rows: &[OnlineRow], id: i64| rows.iter().find(|r| r.entity_key == ek(id)).cloned();
    for (k, g) in keys.iter().zip(&got) {
        let id = (0..200).find(|i| ek(*i) == k.entity_key).unwrap();
        let want = if k.view == "view_a" {
            by_id(&rows_a, id)
        } else {
            by_id(&rows_b, id)
        };
        assert_eq!(g, &want, "{} id {id}", k.view);
    }
    let used = s.request_counts().since(&before);
    assert_eq!(
        used.batch_get_item, 4,
        "400 distinct keys = 4 BatchGetItem calls: {used:?}"
    );
    assert_eq!(used.retries, 0);
    // Empty read: no request.
    assert!(s.read(&[], &r()).await.unwrap().is_empty());
    assert_eq!(s.request_counts().since(&before).batch_get_item, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_over_25_items_and_delete_view() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "bigwrite").await;
    let a = view("del_a", None);
    let b = view("del_b", None);
    let rows: Vec<_> = (0..130).map(|i| row(i, 1, None, 3)).collect();
    let before = s.request_counts();
    assert_eq!(
        s.write(&a, rows.clone(), &w()).await.unwrap(),
        WriteSummary {
            written: 130,
            skipped: 0
        }
    );
    assert_eq!(
        s.write(&b, rows[..10].to_vec(), &w())
            .await
            .unwrap()
            .written,
        10
    );
    assert_eq!(s.request_counts().since(&before).put_item, 140);
    let keys: Vec<_> = (0..130).map(|i| key(&a, i)).collect();
    assert!(
        s.read(&keys, &r())
            .await
            .unwrap()
            .iter()
            .all(Option::is_some)
    );

    let before = s.request_counts();
    s.delete_view("del_a").await.unwrap();
    let used = s.request_counts().since(&before);
    // 130 deletes in chunks of <= 25: at least 6 BatchWriteItem calls.
    assert!(used.batch_write_item >= 6, "{used:?}");
    assert!(used.scan >= 1);
    assert!(
        s.read(&keys, &r())
            .await
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
    // The other view is untouched; deleting an empty view is fine.
    assert_eq!(
        s.read_one("del_b", &ek(3)).await.unwrap(),
        Some(rows[3].clone())
    );
    s.delete_view("del_a").await.unwrap();
    s.delete_view("never_written").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn newest_wins_with_created_tie_break() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "newest").await;
    let v = view("nw", None);
    let ws = |rows: Vec<OnlineRow>| {
        let s = &s;
        let v = &v;
        async move { s.write(v, rows, &w()).await.unwrap() }
    };
    let sum = |written, skipped| WriteSummary { written, skipped };
    assert_eq!(ws(vec![row(1, 10, Some(5), 1)]).await, sum(1, 0));
    assert_eq!(
        ws(vec![row(1, 9, Some(99), 2)]).await,
        sum(0, 1),
        "older event"
    );
    assert_eq!(
        ws(vec![row(1, 10, Some(4), 3)]).await,
        sum(0, 1),
        "same event, older created"
    );
    assert_eq!(
        ws(vec![row(1, 10, None, 4)]).await,
        sum(0, 1),
        "missing created sorts first"
    );
    assert_eq!(
        ws(vec![row(1, 10, Some(5), 5)]).await,
        sum(1, 0),
        "equal version replaces"
    );
    assert_eq!(
        s.read_one("nw", &ek(1)).await.unwrap().unwrap().payload,
        vec![5; 8]
    );
    assert_eq!(
        ws(vec![row(1, 10, Some(6), 6)]).await,
        sum(1, 0),
        "newer created"
    );
    assert_eq!(
        ws(vec![row(1, 11, None, 7)]).await,
        sum(1, 0),
        "newer event"
    );
    assert_eq!(
        ws(vec![row(1, 11, None, 8)]).await,
        sum(1, 0),
        "equal version without created"
    );
    assert_eq!(
        s.read_one("nw", &ek(1)).await.unwrap().unwrap().payload,
        vec![8; 8]
    );

    // Several rows of one entity in one call: counted as if applied in order.
    assert_eq!(
        ws(vec![
            row(2, 5, None, 1),
            row(2, 3, None, 2),
            row(2, 7, None, 3),
            row(2, 7, None, 4)
        ])
        .await,
        sum(3, 1)
    );
    assert_eq!(
        s.read_one("nw", &ek(2)).await.unwrap().unwrap().payload,
        vec![4; 8]
    );
    assert_eq!(
        ws(vec![
            row(2, 6, None, 1),
            row(2, 8, None, 2),
            row(2, 8, Some(1), 3)
        ])
        .await,
        sum(2, 1)
    );
    assert_eq!(
        ws(vec![row(2, 1, None, 1), row(2, 2, None, 2)]).await,
        sum(0, 2)
    );
    assert_eq!(
        s.read_one("nw", &ek(2)).await.unwrap().unwrap(),
        row(2, 8, Some(1), 3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_never_let_an_older_row_win() {
    let Some(ep) = endpoint() else { return };
    let s = Arc::new(open(&ep, "race").await);
    let other = Arc::new(
        builder(&ep, s.table())
            .with_max_concurrency(8)
            .build()
            .unwrap(),
    );
    let v = Arc::new(view("race", None));
    const ENTITIES: i64 = 40;
    const ROUNDS: i64 = 6;
    // Writer A writes even versions, writer B odd ones, each in a shuffled
    // order per round, both at once.
    let writer = |store: Arc<DynamoOnlineStore>, parity: i64| {
        let v = Arc::clone(&v);
        tokio::spawn(async move {
            let mut total = WriteSummary::default();
            for round in 0..ROUNDS {
                let mut rows: Vec<_> = (0..ENTITIES)
                    .map(|id| {
                        let ver = ((round * 7 + id * 13) % ROUNDS) * 2 + parity;
                        row(id, ver, Some(ver * 10), u8::try_from(ver).unwrap())
                    })
                    .collect();
                rows.rotate_left(usize::try_from(round).unwrap() * 5);
                total += store
                    .write(&v, rows, &WriteOptions::default())
                    .await
                    .unwrap();
            }
            total
        })
    };
    let (a, b) = tokio::join!(writer(Arc::clone(&s), 0), writer(other, 1));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.written + a.skipped + b.written + b.skipped,
        (2 * ENTITIES * ROUNDS) as u64
    );
    let max = (ROUNDS - 1) * 2 + 1;
    let keys: Vec<_> = (0..ENTITIES).map(|id| key(&v, id)).collect();
    for (id, got) in s.read(&keys, &r()).await.unwrap().into_iter().enumerate() {
        let got = got.unwrap();
        assert_eq!(got.event_ts, max, "entity {id}");
        assert_eq!(got.payload, vec![u8::try_from(max).unwrap(); 8]);
    }

    // A stale writer hammering an old version against one fresh write.
    let fresh = row(1000, 50, None, 50);
    let stale: Vec<_> = (0..30).map(|i| row(1000, 49 - (i % 3), None, 1)).collect();
    let (x, y) = tokio::join!(
        {
            let s = Arc::clone(&s);
            let v = Arc::clone(&v);
            async move {
                s.write(&v, vec![fresh], &WriteOptions::default())
                    .await
                    .unwrap()
            }
        },
        {
            let s = Arc::clone(&s);
            let v = Arc::clone(&v);
            async move {
                let mut t = WriteSummary::default();
                for r in stale {
                    t += s
                        .write(&v, vec![r], &WriteOptions::default())
                        .await
                        .unwrap();
                }
                t
            }
        }
    );
    assert_eq!(x.written, 1);
    assert_eq!(y.written + y.skipped, 30);
    assert_eq!(
        s.read_one("race", &ek(1000))
            .await
            .unwrap()
            .unwrap()
            .event_ts,
        50
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_items_are_rejected_before_sending() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "big").await;
    let v = view("big_view", None);
    let mut huge = row(77, 1, None, 1);
    huge.payload = vec![0; 400 * 1024].into();
    let before = s.request_counts();
    let err = s
        .write(&v, vec![row(1, 1, None, 1), huge], &w())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("big_view") && msg.contains("driver_id=77"),
        "{msg}"
    );
    assert_eq!(
        s.request_counts().since(&before).put_item,
        0,
        "nothing sent"
    );
    // A large item is stored and read back. (300 000 bytes: moto counts a
    // binary attribute by its base64 length, so its limit for binary payloads
    // is about 300 KB; DynamoDB itself counts the raw bytes.)
    let mut ok = row(78, 1, None, 1);
    ok.payload = vec![9; 300_000].into();
    assert_eq!(
        s.write(&v, vec![ok.clone()], &w()).await.unwrap().written,
        1
    );
    assert_eq!(s.read_one("big_view", &ek(78)).await.unwrap(), Some(ok));
    // Bad keys are input errors too.
    let err = s
        .read(
            &[OnlineKey {
                view: String::new(),
                entity_key: ek(1),
            }],
            &r(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn from_env_and_static_credentials() {
    let Some(ep) = endpoint() else { return };
    let t = table("env");
    // The same keys from_env reads, through with_config.
    let keys: HashMap<&str, String> = HashMap::from([
        ("FSTORE_DYNAMO_ENDPOINT", ep.clone()),
        (
            "FSTORE_DYNAMO_REGION",
            env_or("FSTORE_TEST_DYNAMO_REGION", "us-east-1"),
        ),
        ("FSTORE_DYNAMO_TABLE", t.clone()),
        (
            "FSTORE_DYNAMO_ACCESS_KEY_ID",
            env_or("FSTORE_TEST_DYNAMO_ACCESS_KEY_ID", "fstore-test"),
        ),
        (
            "FSTORE_DYNAMO_SECRET_ACCESS_KEY",
            env_or("FSTORE_TEST_DYNAMO_SECRET_ACCESS_KEY", "fstore-test"),
        ),
        ("FSTORE_DYNAMO_CONSISTENT_READS", "true".into()),
        ("FSTORE_DYNAMO_MAX_CONCURRENCY", "4".into()),
        ("FSTORE_DYNAMO_REQUEST_TIMEOUT", "5s".into()),
    ]);
    let mut b = DynamoOnlineStoreBuilder::new();
    for (k, v) in &keys {
        b = b.with_config(k.parse().unwrap(), v.clone());
    }
    let s = b.build().unwrap();
    s.ensure_tables().await.unwrap();
    let v = view("envv", None);
    s.write(&v, vec![row(1, 1, None, 1)], &w()).await.unwrap();
    assert_eq!(
        s.read_one("envv", &ek(1)).await.unwrap().unwrap().event_ts,
        1
    );
    assert_eq!(
        s.store_id(),
        format!(
            "dynamo:{}/{}/{t}",
            env_or("FSTORE_TEST_DYNAMO_REGION", "us-east-1"),
            ep.trim_end_matches('/')
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_is_a_timeout() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "deadline").await;
    let v = view("dl", None);
    let rows: Vec<_> = (0..300).map(|i| row(i, 1, None, 1)).collect();
    let err = s
        .write(
            &v,
            rows,
            &WriteOptions::default().with_timeout(Duration::from_micros(1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_unprocessed_keys_at_the_response_cap_are_fetched() {
    let Some(ep) = endpoint() else { return };
    let s = open(&ep, "cap").await;
    let v = view("cap_view", None);
    // 100 items of ~290 KB: ~29 MB, over BatchGetItem's 16 MB response cap,
    // so the server itself answers with UnprocessedKeys.
    let rows: Vec<_> = (0..100)
        .map(|i| {
            let mut r = row(i, i, None, 0);
            r.payload = vec![u8::try_from(i).unwrap(); 290_000].into();
            r
        })
        .collect();
    assert_eq!(s.write(&v, rows.clone(), &w()).await.unwrap().written, 100);
    let before = s.request_counts();
    let keys: Vec<_> = (0..100).map(|i| key(&v, i)).collect();
    let got = s.read(&keys, &r()).await.unwrap();
    for (want, got) in rows.iter().zip(&got) {
        assert_eq!(got.as_ref(), Some(want));
    }
    let used = s.request_counts().since(&before);
    assert!(
        used.batch_get_item >= 2 && used.retries >= 1,
        "no unprocessed keys seen: {used:?}"
    );
}

/// The read deadline through a connection that stops answering
/// (`fstore_core::testkit::online_read_deadline`): the store declares
/// `enforces_read_timeout`, so the facade relies on the store's own timer;
/// the SDK's request timeout (10 s) is far above the 300 ms deadline.
#[tokio::test(flavor = "multi_thread")]
async fn read_deadline_through_a_frozen_connection() {
    let Some(ep) = endpoint() else { return };
    let upstream = ep
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = fstore_core::testkit::FreezableProxy::start(upstream).await;
    let s = builder(&format!("http://127.0.0.1:{}", proxy.port()), &table("dl"))
        .with_request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    s.ensure_tables().await.unwrap();
    assert!(s.capabilities().enforces_read_timeout);
    fstore_core::testkit::online_read_deadline(Arc::new(s), &proxy).await;
}
