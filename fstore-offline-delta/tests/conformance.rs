//! Conformance and end-to-end tests of the Delta offline store and registry on
//! local Delta tables (temporary directories; no server needed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{TimeZone, Utc};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, HistoricalRequest,
    InMemoryOnlineStore, MaterializeOptions, OfflineStore, OnlineRequest, Registry, RegistryState,
    ResolvedView, ScanRequest, TimeRange, ValueType,
};
use fstore_offline_delta::{DeltaOfflineStore, DeltaOfflineStoreBuilder, DeltaRegistry};

/// Core's offline suite (append/scan, time ranges, versions, schema evolution,
/// historical retrieval vs the pure join as a proptest) on local Delta tables.
#[tokio::test(flavor = "multi_thread")]
async fn delta_offline_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<fstore_core::DynOfflineStore> = Arc::new(store(&dir));
    fstore_core::testkit::run_offline_suite(store).await;
}

/// Core's registry suite (history, conflicts, racing writers, plan/apply) on
/// the object-store registry; two `open(ns)` calls are two handles on one registry.
#[tokio::test(flavor = "multi_thread")]
async fn delta_registry_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    fstore_core::testkit::run_registry_suite(|ns| {
        let root = root.clone();
        async move {
            let r: Arc<fstore_core::DynRegistry> =
                Arc::new(DeltaRegistry::open(&root.join(ns).to_string_lossy(), []).unwrap());
            r
        }
    })
    .await;
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn defs(view: &str, extra_feature: bool) -> Definitions {
    let mut v = FeatureView::new(view, ["driver"])
        .with_feature("conv_rate", ValueType::Float64)
        .with_feature("trips", ValueType::Int64);
    if extra_feature {
        v = v.with_feature("acc_rate", ValueType::Float64);
    }
    Definitions::new()
        .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
        .with_feature_view(v)
}

fn resolved(view: &str, extra: bool) -> ResolvedView {
    defs(view, extra).resolve_view(view).unwrap()
}

/// Canonical rows: (driver, event seconds, conv_rate, trips).
fn rows(data: &[(i64, i64, f64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
            Field::new("conv_rate", DataType::Float64, true),
            Field::new("trips", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(
                data.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    data.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                data.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                data.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn store(dir: &tempfile::TempDir) -> DeltaOfflineStore {
    DeltaOfflineStoreBuilder::new()
        .with_root(dir.path().to_string_lossy())
        .build()
        .unwrap()
}

async fn scan_all(
    s: &DeltaOfflineStore,
    v: &ResolvedView,
    req: ScanRequest,
) -> (Option<u64>, Vec<(i64, i64, Option<f64>)>) {
    let r = s.scan(v, &req).await.unwrap();
    let version = r.version;
    let mut out = Vec::new();
    for b in r.collect().await.unwrap() {
        let k = b
            .column_by_name("driver_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let t = b
            .column_by_name("event_timestamp")
            .unwrap()
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        let c = b
            .column_by_name("conv_rate")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        for i in 0..b.num_rows() {
            let cv = c.as_ref().and_then(|c| (!c.is_null(i)).then(|| c.value(i)));
            out.push((k.value(i), t.value(i) / 1_000_000, cv));
        }
    }
    (version, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn write_scan_versions_projection_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let v = resolved("drivers", false);
    assert_eq!(s.latest_version(&v).await.unwrap(), None);
    let (ver, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!((ver, got.len()), (None, 0));

    let w1 = s
        .write(&v, rows(&[(1, 10, 0.1, 1), (2, 20, 0.2, 2)]))
        .await
        .unwrap();
    let w2 = s
        .write(&v, rows(&[(1, 30, 0.3, 3), (1, 10, 0.9, 9)]))
        .await
        .unwrap();
    assert_eq!((w1.rows, w2.rows), (2, 2));
    let (v1, v2) = (w1.version.unwrap(), w2.version.unwrap());
    assert!(v2 > v1, "{v1} {v2}");
    assert_eq!(s.latest_version(&v).await.unwrap(), Some(v2));

    // Write order: commit order, then row order; the duplicate (1, 10) comes last.
    let (ver, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(ver, Some(v2));
    assert_eq!(
        got,
        vec![
            (1, 10, Some(0.1)),
            (2, 20, Some(0.2)),
            (1, 30, Some(0.3)),
            (1, 10, Some(0.9))
        ]
    );

    // Time range with both bound kinds.
    let t = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
    let (_, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::after_until(Some(t(10)), t(30))),
    )
    .await;
    assert_eq!(got, vec![(2, 20, Some(0.2)), (1, 30, Some(0.3))]);
    // A range that misses every file (pruned by stats) returns nothing.
    let (_, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::inclusive(Some(t(100)), t(200))),
    )
    .await;
    assert!(got.is_empty());

    // Projection: only keys, timestamps and the requested feature.
    let r = s
        .scan(
            &v,
            &ScanRequest::new(TimeRange::all()).with_features(vec!["trips".into()]),
        )
        .await
        .unwrap();
    let b = r.collect().await.unwrap();
    let names: Vec<String> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["driver_id", "event_timestamp", "trips"]);
    let bad = s
        .scan(
            &v,
            &ScanRequest::new(TimeRange::all()).with_features(vec!["nope".into()]),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("nope"), "{bad}");

    // Time travel and change log.
    let (ver, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::all()).with_as_of_version(Some(v1)),
    )
    .await;
    assert_eq!((ver, got.len()), (Some(v1), 2));
    let (_, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::all()).with_since_version(Some(v1)),
    )
    .await;
    assert_eq!(got, vec![(1, 30, Some(0.3)), (1, 10, Some(0.9))]);
    let e = s
        .scan(
            &v,
            &ScanRequest::new(TimeRange::all()).with_as_of_version(Some(v2 + 5)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, fstore_core::Error::NotFound { .. }), "{e}");

    // Non-canonical batch.
    let e = s
        .write(&resolved("drivers", true), rows(&[(1, 1, 0.0, 0)]))
        .await
        .unwrap_err();
    assert!(matches!(e, fstore_core::Error::InvalidInput(_)), "{e}");

    s.delete_view(&v).await.unwrap();
    assert_eq!(s.latest_version(&v).await.unwrap(), None);
    let (_, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn additive_schema_evolution_reads_old_files_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let old = resolved("evo", false);
    s.write(&old, rows(&[(1, 10, 0.1, 1)])).await.unwrap();
    let new = resolved("evo", true);
    let b = rows(&[(2, 20, 0.2, 2)]);
    let mut cols = b.columns().to_vec();
    cols.push(Arc::new(Float64Array::from(vec![Some(0.5)])));
    let b = RecordBatch::try_new(new.arrow_schema(), cols).unwrap();
    s.write(&new, b).await.unwrap();
    let r = s
        .scan(&new, &ScanRequest::new(TimeRange::all()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let acc: Vec<Option<f64>> = r
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("acc_rate")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            (0..c.len()).map(move |i| (!c.is_null(i)).then(|| c.value(i)))
        })
        .collect();
    assert_eq!(acc, vec![None, Some(0.5)]);
    // The old definition still reads (the new column is not requested).
    let (_, got) = scan_all(&s, &old, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(got.len(), 2);

    // A type change of a stored column is refused.
    let changed = Definitions::new()
        .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
        .with_feature_view(
            FeatureView::new("evo", ["driver"])
                .with_feature("conv_rate", ValueType::String)
                .with_feature("trips", ValueType::Int64),
        )
        .resolve_view("evo")
        .unwrap();
    let b = RecordBatch::try_new(
        changed.arrow_schema(),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(TimestampMicrosecondArray::from(vec![1]).with_timezone("UTC")),
            Arc::new(arrow_array::StringArray::from(vec!["x"])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let e = s.write(&changed, b).await.unwrap_err();
    assert!(
        e.to_string().contains("conv_rate") && e.to_string().contains("breaking"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_appenders_from_separate_handles_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v = resolved("race", false);
    let writers = 6;
    let per = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = store(&dir);
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..per {
                let r = s
                    .write(&v, rows(&[(w, i, w as f64, i), (w, 100 + i, 0.0, 0)]))
                    .await
                    .unwrap();
                versions.push(r.version.unwrap());
            }
            versions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        (writers * per) as usize,
        "every append got its own version: {all:?}"
    );
    let (_, got) = scan_all(&store(&dir), &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(got.len(), (writers * per * 2) as usize);
    // Each writer's rows come in its own write order.
    for w in 0..writers {
        let mine: Vec<i64> = got
            .iter()
            .filter(|r| r.0 == w && r.1 < 100)
            .map(|r| r.1)
            .collect();
        assert_eq!(mine, (0..per).collect::<Vec<_>>());
    }
}

/// Two processes append to the same table at once (this test binary re-executes
/// itself as the child writer).
#[tokio::test(flavor = "multi_thread")]
async fn racing_appenders_from_two_processes_lose_nothing() {
    if let Ok(root) = std::env::var("FSTORE_DELTA_TEST_CHILD_ROOT") {
        let s = DeltaOfflineStoreBuilder::new()
            .with_root(root)
            .build()
            .unwrap();
        let v = resolved("procs", false);
        let w: i64 = std::env::var("FSTORE_DELTA_TEST_CHILD_ID")
            .unwrap()
            .parse()
            .unwrap();
        for i in 0..5 {
            s.write(&v, rows(&[(w, i, 0.0, i)])).await.unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|id| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "racing_appenders_from_two_processes_lose_nothing",
                    "--nocapture",
                ])
                .env("FSTORE_DELTA_TEST_CHILD_ROOT", dir.path())
                .env("FSTORE_DELTA_TEST_CHILD_ID", id.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let s = store(&dir);
    let v = resolved("procs", false);
    let (ver, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(got.len(), 10, "{got:?}");
    assert_eq!(
        ver,
        Some(10),
        "table creation is version 0, then one commit per append"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_rows_and_order_and_is_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let v = resolved("compact", false);
    let mut expected = Vec::new();
    for i in 0..6 {
        // Same event time every write: only write order tells the rows apart.
        s.write(&v, rows(&[(1, 50, i as f64, i)])).await.unwrap();
        expected.push((1, 50, Some(i as f64)));
    }
    let before = s.latest_version(&v).await.unwrap().unwrap();
    let report = s.compact("compact").await.unwrap();
    assert_eq!(
        (
            report.files_removed,
            report.files_added,
            report.rows_rewritten
        ),
        (6, 1, 6)
    );
    let after = report.version.unwrap();
    assert_eq!(after, before + 1);
    let (_, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(got, expected);
    // Nothing new since `before`: the rewrite is not data.
    let (_, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::all()).with_since_version(Some(before)),
    )
    .await;
    assert!(got.is_empty(), "{got:?}");
    // Appends after compaction come after the compacted rows; change log sees them.
    s.write(&v, rows(&[(1, 50, 99.0, 99)])).await.unwrap();
    let (_, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(got.last(), Some(&(1, 50, Some(99.0))));
    assert_eq!(got.len(), 7);
    let (_, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::all()).with_since_version(Some(before - 2)),
    )
    .await;
    assert_eq!(
        got.iter().map(|r| r.2.unwrap()).collect::<Vec<_>>(),
        vec![4.0, 5.0, 99.0]
    );
    // Time travel before the compaction still reads the original files.
    let (_, got) = scan_all(
        &s,
        &v,
        ScanRequest::new(TimeRange::all()).with_as_of_version(Some(before)),
    )
    .await;
    assert_eq!(got, expected);
    // Nothing left to compact (one big-enough run was already merged: 2 files now).
    let again = s.compact("compact").await.unwrap();
    assert_eq!(again.files_removed, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuum_has_a_retention_guard() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let v = resolved("vac", false);
    for i in 0..3 {
        s.write(&v, rows(&[(1, i, 0.0, i)])).await.unwrap();
    }
    let e = s
        .vacuum("vac", Duration::from_secs(3600), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("7-day"), "{e}");
    let r = s
        .vacuum("vac", Duration::from_secs(8 * 86_400), false)
        .await
        .unwrap();
    assert_eq!(r.files_deleted, 0);
    let before = s.latest_version(&v).await.unwrap().unwrap();
    s.compact("vac").await.unwrap();
    let r = s.vacuum("vac", Duration::ZERO, true).await.unwrap();
    assert_eq!(r.files_deleted, 3);
    let (_, got) = scan_all(&s, &v, ScanRequest::new(TimeRange::all())).await;
    assert_eq!(got.len(), 3);
    // The vacuumed past is gone, with a clear error.
    let e = s
        .scan(
            &v,
            &ScanRequest::new(TimeRange::all()).with_as_of_version(Some(before)),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("vacuum"), "{e}");
}

fn feature_store(dir: &tempfile::TempDir) -> FeatureStore {
    let b = DeltaOfflineStoreBuilder::new().with_root(dir.path().to_string_lossy());
    FeatureStore::builder()
        .with_offline(Arc::new(b.clone().build().unwrap()))
        .with_registry(Arc::new(b.build_registry().unwrap()))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .with_registry_cache_ttl(Duration::ZERO)
        .build()
        .unwrap()
}

fn spine(data: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("ts", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                data.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    data.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn training_sets_are_reproducible_with_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let fs = feature_store(&dir);
    fs.apply(&defs("tt", false), Default::default())
        .await
        .unwrap();
    fs.write_history("tt", &rows(&[(1, 10, 0.1, 1), (2, 10, 0.2, 2)]))
        .await
        .unwrap();
    let req = HistoricalRequest::new(
        vec![spine(&[(1, 20), (2, 20), (3, 20)])],
        "ts",
        FeatureSelection::refs(["tt:conv_rate", "tt:trips"]).unwrap(),
    );
    let first = fs.get_historical_features(&req).await.unwrap();
    assert_eq!(first.view_versions.get("tt"), Some(&1));
    assert!(first.registry_version >= 1);

    // More data arrives, including a newer value for the same spine time.
    fs.write_history("tt", &rows(&[(1, 15, 0.7, 7), (3, 5, 0.3, 3)]))
        .await
        .unwrap();
    let latest = fs.get_historical_features(&req).await.unwrap();
    assert_ne!(latest.batch, first.batch);

    let pinned = req
        .clone()
        .with_view_versions(first.view_versions.clone())
        .with_registry_version(first.registry_version);
    let again = fs.get_historical_features(&pinned).await.unwrap();
    assert_eq!(again.batch, first.batch);
    assert_eq!(again.view_versions, first.view_versions);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_data_is_materialized_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let fs = feature_store(&dir);
    fs.apply(&defs("late", false), Default::default())
        .await
        .unwrap();
    fs.write_history("late", &rows(&[(1, 10, 0.1, 1), (2, 20, 0.2, 2)]))
        .await
        .unwrap();
    let t = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
    let opts = MaterializeOptions::default();
    fs.materialize_incremental(&["late"], t(100), &opts)
        .await
        .unwrap();

    // Late rows: event times before the watermark, committed after the run.
    fs.write_history(
        "late",
        &rows(&[(1, 50, 0.5, 5), (3, 30, 0.3, 3), (2, 5, 9.9, 9)]),
    )
    .await
    .unwrap();
    let r = fs
        .materialize_incremental(&["late"], t(100), &opts)
        .await
        .unwrap();
    assert_eq!(
        r.views[0].rows_read, 3,
        "only the late commit is read: {r:?}"
    );
    let snap = fs.snapshot().await.unwrap();
    let wm = snap.state.watermarks["late"].values().next().unwrap();
    assert_eq!(wm.offline_version, Some(2));

    // Parity: the online read at T equals the point-in-time join at T.
    let keys = [1, 2, 3, 4];
    let feats = FeatureSelection::refs(["late:conv_rate", "late:trips"]).unwrap();
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "driver_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(keys.to_vec()))],
    )
    .unwrap();
    let online = fs
        .get_online_features(&OnlineRequest::new(feats.clone(), entities).with_now(t(100)))
        .await
        .unwrap();
    let hist = fs
        .get_historical_features(&HistoricalRequest::new(
            vec![spine(&keys.map(|k| (k, 100)))],
            "ts",
            feats,
        ))
        .await
        .unwrap();
    for name in ["conv_rate", "trips"] {
        let a = online.batch().column_by_name(name).unwrap();
        let b = hist.batch.column_by_name(name).unwrap();
        assert_eq!(a.as_ref(), b.as_ref(), "{name}");
    }
    let conv = online
        .batch()
        .column_by_name("conv_rate")
        .unwrap()
        .as_primitive::<Float64Type>()
        .clone();
    assert_eq!(conv.value(0), 0.5);
    assert_eq!(conv.value(2), 0.3);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_commits_are_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let b = DeltaOfflineStoreBuilder::new().with_root(dir.path().to_string_lossy());
    let a = b.build_registry().unwrap();
    let c = b.build_registry().unwrap();
    assert_eq!(a.snapshot().await.unwrap().version, 0);
    assert_eq!(a.commit(0, RegistryState::default()).await.unwrap(), 1);
    let e = c.commit(0, RegistryState::default()).await.unwrap_err();
    assert!(matches!(e, fstore_core::Error::Conflict(_)), "{e}");
    assert_eq!(c.snapshot().await.unwrap().version, 1);

    // Racing appliers: one wins per version, every version readable.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let r = DeltaRegistry::open(&dir.path().join("_fstore_registry").to_string_lossy(), [])
            .unwrap();
        tasks.push(tokio::spawn(async move {
            r.commit(1, RegistryState::default()).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, 2);
                wins += 1;
            }
            Err(fstore_core::Error::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(a.versions().await.unwrap(), vec![1, 2]);
    for v in [1, 2] {
        assert_eq!(c.snapshot_at(v).await.unwrap().version, v);
    }
    assert!(matches!(
        c.snapshot_at(9).await.unwrap_err(),
        fstore_core::Error::NotFound { .. }
    ));
    let _ = BTreeMap::<String, u64>::new();
}
