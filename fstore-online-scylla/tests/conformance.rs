//! fstore-online-scylla against a CQL server.
//!
//! * `FSTORE_TEST_SCYLLA_URI` set (contact points of a real Cassandra/ScyllaDB):
//!   the full core testkit, parity proptest included.
//! * Always: an in-process `kassandra-tester` server on 127.0.0.1 for what it
//!   serves faithfully (protocol, prepare, bind-by-name, single-partition
//!   reads, deletes, schema DDL, concurrency, error paths), plus direct checks.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fstore_core::{DynOnlineStore, OnlineKey, OnlineRow, OnlineStore, ReadOptions, WriteOptions};
use fstore_online_scylla::{ScyllaOnlineStore, ScyllaOnlineStoreBuilder};
use kassandra_tester::KassandraTester;
use kassandra_tester::kassandra::session::KassandraSession;

/// One in-process kassandra server per test binary, on its own thread and runtime.
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

async fn kassandra_store(keyspace: &str) -> ScyllaOnlineStore {
    let store = ScyllaOnlineStoreBuilder::new()
        .with_contact_points(kassandra().to_string())
        .with_keyspace(keyspace)
        .with_await_schema_agreement(false)
        .with_in_process_test_server(true)
        .with_connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    store.ensure_schema().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn smoke_kassandra() {
    let store = kassandra_store("smoke").await;
    let view = fstore_core::ResolvedView::new(fstore_core::FeatureView::new("v", ["e"]), vec![]);
    let rows = vec![OnlineRow {
        entity_key: vec![1, 2],
        event_ts: 5_000_000,
        created_ts: None,
        payload: vec![9, 9],
    }];
    let s = store
        .write(&view, rows.clone(), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(s.written, 1);
    let got = store
        .read(
            &[
                OnlineKey {
                    view: "v".into(),
                    entity_key: vec![1, 2],
                },
                OnlineKey {
                    view: "v".into(),
                    entity_key: vec![3],
                },
            ],
            &ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(got, vec![Some(rows[0].clone()), None]);
    store.delete_view("v").await.unwrap();
    let got = store
        .read(
            &[OnlineKey {
                view: "v".into(),
                entity_key: vec![1, 2],
            }],
            &ReadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(got, vec![None]);
    let _: Arc<DynOnlineStore> = Arc::new(store);
}
