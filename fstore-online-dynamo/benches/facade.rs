//! The serving facade's cost over the DynamoDB adapter: p50/p99 of
//! `OnlineStore::read`, `FeatureStore::get_online_features` and
//! `FeatureStore::get_prepared` for 1 and 100 entities × 2 views × 50 float64
//! features, rotating call by call which goes first, against a
//! DynamoDB-compatible server (`FSTORE_TEST_DYNAMO_ENDPOINT`, e.g. moto).
//!
//! ```text
//! source scripts/servers/dynamo.sh && start_dynamo
//! CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo bench --profile dev -p fstore-online-dynamo --bench facade
//! stop_dynamo
//! ```
//! (`--profile dev` reuses the dependencies built for the tests, at
//! opt-level 1; the workspace crates are built at opt-level 2.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use fstore_core::adapter::{encode_entity_keys, normalize_batch, to_online_rows};
use fstore_core::testkit::bench::{XorShift, id_batch, micros, percentile, view_history};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, InMemoryOfflineStore,
    InMemoryRegistry, OnlineKey, OnlineRequest, OnlineStore, PreparedRequest, ReadOptions,
    ValueType, WriteOptions,
};
use fstore_online_dynamo::{DynamoOnlineStore, DynamoOnlineStoreBuilder};

const ENTITIES: i64 = 1_000;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

const NAMES: [&str; 3] = ["OnlineStore::read", "get_online_features", "get_prepared"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(endpoint) = std::env::var("FSTORE_TEST_DYNAMO_ENDPOINT") else {
        eprintln!("FSTORE_TEST_DYNAMO_ENDPOINT is not set: start moto (scripts/servers/dynamo.sh)");
        return;
    };
    let sdk = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(env_or(
            "FSTORE_TEST_DYNAMO_REGION",
            "us-east-1",
        )))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            env_or("FSTORE_TEST_DYNAMO_ACCESS_KEY_ID", "fstore-test"),
            env_or("FSTORE_TEST_DYNAMO_SECRET_ACCESS_KEY", "fstore-test"),
            None,
            None,
            "fstore-test",
        ))
        .build();
    let table = format!("fstore_facade_{}", std::process::id());
    let store: Arc<DynamoOnlineStore> = Arc::new(
        DynamoOnlineStoreBuilder::new()
            .with_sdk_config(sdk)
            .with_table(&table)
            .build()
            .unwrap(),
    );
    store.ensure_tables().await.unwrap();

    let views = ["da".to_owned(), "db".to_owned()];
    let mut d = Definitions::new().with_entity(Entity::new("ent", "id", ValueType::Int64));
    for v in &views {
        let mut fv = FeatureView::new(v.as_str(), ["ent"]);
        for f in 0..50 {
            fv = fv.with_feature(format!("{v}_f{f}"), ValueType::Float64);
        }
        d = d.with_feature_view(fv.with_ttl(Duration::from_secs(30 * 86_400)));
    }
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&store) as Arc<fstore_core::DynOnlineStore>)
        .build()
        .unwrap();
    fs.apply(&d, Default::default()).await.unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    for v in &views {
        let rv = d.resolve_view(v).unwrap();
        let b = normalize_batch(&rv, &view_history(&rv, 0..ENTITIES, now), false).unwrap();
        store
            .write(
                &rv,
                to_online_rows(&rv, &b).unwrap(),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    let rv = d.resolve_view(&views[0]).unwrap();
    let ekeys =
        encode_entity_keys(&id_batch(&(0..ENTITIES).collect::<Vec<_>>()), &rv.join_keys).unwrap();
    let refs = FeatureSelection::refs(
        views
            .iter()
            .flat_map(|v| (0..50).map(|f| format!("{v}:{v}_f{f}")).collect::<Vec<_>>()),
    )
    .unwrap();
    let prepared: PreparedRequest = fs.prepare(&refs, false).await.unwrap();

    println!(
        "dynamodb facade benchmark ({endpoint}, {} build), 2 views × 50 float64 features",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "optimized"
        }
    );
    println!("{:<46} {:>9} {:>9}", "read", "p50 µs", "p99 µs");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for (n_ent, iters) in [(1usize, 400usize), (100, 60)] {
        let mut lat: [Vec<Duration>; 3] = Default::default();
        for it in 0..iters + 10 {
            let ids: Vec<i64> = (0..n_ent).map(|_| rng.next_below(ENTITIES)).collect();
            for k in 0..3 {
                let j = (it + k) % 3;
                let t0 = Instant::now();
                let got = match j {
                    0 => {
                        let keys: Vec<OnlineKey> = ids
                            .iter()
                            .flat_map(|i| {
                                views.each_ref().map(|v| OnlineKey {
                                    view: v.clone(),
                                    entity_key: ekeys[*i as usize].clone(),
                                })
                            })
                            .collect();
                        let rows = store.read(&keys, &ReadOptions::default()).await.unwrap();
                        assert!(rows.iter().all(Option::is_some));
                        rows.len() / 2
                    }
                    1 => fs
                        .get_online_features(&OnlineRequest::new(refs.clone(), id_batch(&ids)))
                        .await
                        .unwrap()
                        .num_rows(),
                    _ => fs
                        .get_prepared(&prepared, &id_batch(&ids), None)
                        .await
                        .unwrap()
                        .num_rows(),
                };
                let el = t0.elapsed();
                assert_eq!(got, n_ent);
                if it >= 10 {
                    lat[j].push(el);
                }
            }
        }
        let mut p = [(0.0, 0.0); 3];
        for j in 0..3 {
            p[j] = (
                micros(percentile(&mut lat[j], 0.5)),
                micros(percentile(&mut lat[j], 0.99)),
            );
            println!(
                "{:<46} {:>9.1} {:>9.1}",
                format!("{n_ent} entity × 2 views: {}", NAMES[j]),
                p[j].0,
                p[j].1
            );
        }
        for j in 1..3 {
            println!(
                "{:<46} {:>8.2}× {:>8.2}×",
                format!("  {} / adapter", NAMES[j]),
                p[j].0 / p[0].0,
                p[j].1 / p[0].1
            );
        }
        println!();
    }
    for v in &views {
        store.delete_view(v).await.unwrap();
    }
}
