//! Issue 11 on Delta: a re-created table restarts incremental materialization
//! (its table id changes), checked end to end on local tables.

use std::sync::Arc;
use std::time::Duration;

use fstore_core::adapter::encode_entity_key;
use fstore_core::testkit::{feature_batch, test_definitions};
use fstore_core::{
    FeatureStore, InMemoryOnlineStore, MaterializeOptions, OfflineStore, OnlineKey, OnlineStore,
    ReadOptions, Value,
};
use fstore_offline_delta::DeltaOfflineStoreBuilder;

const S: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn watermark_starts_over_when_the_delta_table_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let b = DeltaOfflineStoreBuilder::new().with_root(dir.path().to_string_lossy());
    let offline = Arc::new(b.clone().build().unwrap());
    let online = Arc::new(InMemoryOnlineStore::new());
    let fs = FeatureStore::builder()
        .with_offline(Arc::clone(&offline) as Arc<dyn OfflineStore>)
        .with_registry(Arc::new(b.build_registry().unwrap()))
        .with_online(Arc::clone(&online) as Arc<dyn OnlineStore>)
        .with_registry_cache_ttl(Duration::ZERO)
        .build()
        .unwrap();
    let (defs, rv) = test_definitions("recreated", None);
    fs.apply(&defs, Default::default()).await.unwrap();
    let end = chrono::DateTime::from_timestamp(10, 0).unwrap();
    let opts = MaterializeOptions::default();

    fs.write_history("recreated", &feature_batch(&[(1, S, S, Some(1.0))]))
        .await
        .unwrap();
    fs.materialize_incremental(&["recreated"], end, &opts)
        .await
        .unwrap();
    let id1 = offline.table_id(&rv).await.unwrap();
    assert!(id1.is_some(), "a Delta table has an id");

    offline.delete_view(&rv).await.unwrap();
    assert_eq!(offline.table_id(&rv).await.unwrap(), None);
    // Two appends: the new table reaches a version >= the watermark's.
    for (id, t) in [(2, 5), (3, 6)] {
        fs.write_history(
            "recreated",
            &feature_batch(&[(id, t * S, t * S, Some(id as f64))]),
        )
        .await
        .unwrap();
    }
    let id2 = offline.table_id(&rv).await.unwrap();
    assert!(id2.is_some() && id2 != id1, "re-created table has a new id");
    let r = fs
        .materialize_incremental(&["recreated"], end, &opts)
        .await
        .unwrap();
    assert_eq!(r.views[0].start, None, "the run started over: {r:?}");
    for (id, t) in [(2, 5), (3, 6)] {
        let key = OnlineKey {
            view: "recreated".into(),
            entity_key: encode_entity_key(&[("user_id", Value::Int64(id))]).unwrap(),
        };
        let got = online
            .read(&[key], &ReadOptions::default())
            .await
            .unwrap()
            .pop()
            .flatten();
        assert_eq!(
            got.map(|r| r.event_ts),
            Some(t * S),
            "entity {id} of the re-created table is online"
        );
    }
    let snap = fs.snapshot().await.unwrap();
    let wm = snap.state.watermarks["recreated"].values().next().unwrap();
    assert_eq!(wm.table_id, id2, "the watermark records the new table id");
}
