//! Facade tests on the in-memory backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray, TimestampSecondArray,
};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use chrono::{TimeZone, Utc};

use super::*;
use crate::model::{
    Deprecation, Entity, FeatureField, FeatureService, FeatureView, OnDemandView, Value, ValueType,
};
use crate::online::{OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions};
use crate::testkit::{entity_batch, feature_batch, test_definitions};
use crate::time::{UTC, from_micros, timestamp_type};

const S: i64 = 1_000_000;

fn spine(ids: &[i64], ts: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", timestamp_type(), false),
            Field::new("label", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone(UTC)),
            Arc::new(Float64Array::from(vec![1.0; ids.len()])),
        ],
    )
    .unwrap()
}

async fn store_with(view: &str, ttl: Option<Duration>) -> FeatureStore {
    let fs = FeatureStore::in_memory();
    fs.apply(&test_definitions(view, ttl).0, ApplyOptions::default())
        .await
        .unwrap();
    fs
}

#[tokio::test]
async fn push_rejects_naive_timestamps_naming_the_column() {
    let fs = store_with("v", None).await;
    let good = feature_batch(&[(1, S, S, Some(1.0))]);
    let mut cols = good.columns().to_vec();
    cols[1] = Arc::new(TimestampSecondArray::from(vec![1]));
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[1] = Field::new("event_timestamp", cols[1].data_type().clone(), false);
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let err = fs
        .push("v", &bad, PushTarget::Both)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("event_timestamp") && err.contains("naive"),
        "{err}"
    );
    // a missing feature column is named too
    let missing = good.project(&[0, 1, 2, 3, 4, 5]).unwrap();
    let err = fs
        .push("v", &missing, PushTarget::Offline)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'emb'"), "{err}");
}

#[tokio::test]
async fn apply_against_a_stale_snapshot_conflicts() {
    // Store b caches version 0, store a commits version 1, then b's apply must
    // plan against the registry (not its cache) or lose the race with Conflict.
    let reg: Arc<crate::registry::DynRegistry> = Arc::new(crate::memory::InMemoryRegistry::new());
    let a = FeatureStore::builder()
        .with_registry(Arc::clone(&reg))
        .build()
        .unwrap();
    let b = FeatureStore::builder()
        .with_registry(Arc::clone(&reg))
        .with_registry_cache_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_eq!(b.snapshot().await.unwrap().version, 0);
    a.apply(&test_definitions("va", None).0, ApplyOptions::default())
        .await
        .unwrap();
    let r = b
        .apply(&test_definitions("vb", None).0, ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(
        r.version, 2,
        "apply plans against the latest registry version"
    );
    assert!(
        r.plan
            .changes
            .iter()
            .any(|c| c.name == "va" && c.kind == crate::registry::ChangeKind::Removed)
    );
    // the CAS itself: two commits against one version, one wins
    assert_eq!(reg.commit(2, Default::default()).await.unwrap(), 3);
    assert!(matches!(
        reg.commit(2, Default::default()).await,
        Err(Error::Conflict(_))
    ));
}

#[tokio::test]
async fn historical_pins_versions_and_reproduces() {
    let fs = store_with("v", None).await;
    fs.write_history("v", &feature_batch(&[(1, 10 * S, S, Some(1.0))]))
        .await
        .unwrap();
    let sel = FeatureSelection::refs(["v:score"]).unwrap();
    let req = HistoricalRequest::new(vec![spine(&[1], &[20 * S])], "ts", sel.clone());
    let first = fs.get_historical_features(&req).await.unwrap();
    assert_eq!(first.view_versions.get("v"), Some(&1));
    // a later, newer row changes the latest answer but not the pinned one
    fs.write_history("v", &feature_batch(&[(1, 15 * S, S, Some(2.0))]))
        .await
        .unwrap();
    let latest = fs.get_historical_features(&req).await.unwrap();
    assert_eq!(
        latest
            .batch
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        2.0
    );
    let pinned = fs
        .get_historical_features(
            &req.clone()
                .with_view_versions(first.view_versions.clone())
                .with_registry_version(first.registry_version),
        )
        .await
        .unwrap();
    assert_eq!(pinned.batch, first.batch);
    assert_eq!(first.rows_scanned.get("v"), Some(&1));
}

#[tokio::test]
async fn historical_pushes_the_ttl_window_down() {
    let fs = store_with("v", Some(Duration::from_secs(5))).await;
    let rows: Vec<_> = (0..100).map(|i| (1, i * S, S, Some(i as f64))).collect();
    fs.write_history("v", &feature_batch(&rows)).await.unwrap();
    let req = HistoricalRequest::new(
        vec![spine(&[1, 1], &[50 * S, 60 * S])],
        "ts",
        FeatureSelection::refs(["v:score"]).unwrap(),
    );
    let r = fs.get_historical_features(&req).await.unwrap();
    // window [50 - 5, 60] inclusive: 16 rows of 100
    assert_eq!(r.rows_scanned.get("v"), Some(&16));
    let score = r
        .batch
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!((score.value(0), score.value(1)), (50.0, 60.0));
    assert_eq!(
        r.batch.column_by_name("label").unwrap().len(),
        2,
        "spine columns are kept"
    );
}

fn odfv_defs() -> Definitions {
    let (d, _) = test_definitions("v", None);
    d.with_on_demand_view(
        OnDemandView::new("ratio", "v1")
            .with_input(FeatureRef::new("v", "score"))
            .with_input(FeatureRef::new("v", "count"))
            .with_request_field("scale", ValueType::Float64)
            .with_output("scaled", ValueType::Float64),
    )
}

fn odfv_fn(version: &str) -> OnDemandFunction {
    OnDemandFunction::new("ratio", version, |b: &RecordBatch| {
        let s = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        let k = b
            .column_by_name("scale")
            .unwrap()
            .as_primitive::<Float64Type>();
        let out: Float64Array = s.iter().zip(k.iter()).map(|(a, b)| Some(a? * b?)).collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "scaled",
                DataType::Float64,
                true,
            )])),
            vec![Arc::new(out)],
        )?)
    })
}

#[tokio::test]
async fn on_demand_views_run_on_both_paths_and_check_versions() {
    let fs = FeatureStore::builder()
        .with_on_demand(odfv_fn("v1"))
        .build()
        .unwrap();
    fs.apply(&odfv_defs(), ApplyOptions::default())
        .await
        .unwrap();
    fs.write_history("v", &feature_batch(&[(1, 10 * S, S, Some(3.0))]))
        .await
        .unwrap();
    fs.materialize_incremental(&["v"], from_micros(20 * S), &MaterializeOptions::default())
        .await
        .unwrap();
    let sel = FeatureSelection::refs(["ratio:scaled"]).unwrap();
    let mut sp = spine(&[1], &[20 * S]);
    let scale = Arc::new(Float64Array::from(vec![2.0]));
    let mut fields: Vec<Field> = sp
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("scale", DataType::Float64, false));
    let mut cols = sp.columns().to_vec();
    cols.push(Arc::clone(&scale) as _);
    sp = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let hist = fs
        .get_historical_features(&HistoricalRequest::new(vec![sp], "ts", sel.clone()))
        .await
        .unwrap();
    assert_eq!(
        hist.batch
            .column_by_name("scaled")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        6.0
    );
    assert!(
        hist.batch.column_by_name("score").is_none(),
        "hidden inputs are not output"
    );
    let ents = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("scale", DataType::Float64, false),
        ])),
        vec![Arc::new(Int64Array::from(vec![1])), scale],
    )
    .unwrap();
    let online = fs
        .get_online_features(
            &OnlineRequest::new(sel.clone(), ents.clone()).with_now(from_micros(20 * S)),
        )
        .await
        .unwrap();
    assert_eq!(
        online
            .batch()
            .column_by_name("scaled")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        6.0
    );

    // a process with another version of the function is refused
    let other = FeatureStore::builder()
        .with_registry(Arc::clone(fs.registry()))
        .with_online(Arc::clone(fs.online_store()))
        .with_on_demand(odfv_fn("v2"))
        .build()
        .unwrap();
    let err = other
        .get_online_features(&OnlineRequest::new(sel, ents))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::OnDemandVersionMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn fallbacks_impute_and_require() {
    let (mut d, _) = test_definitions("v", None);
    let v = d.feature_views.get_mut("v").unwrap();
    v.features[0] =
        FeatureField::new("score", ValueType::Float64).with_default(Value::Float64(-1.0));
    v.features[2] = FeatureField::new("count", ValueType::Int64).required();
    let fs = FeatureStore::in_memory();
    fs.apply(&d, ApplyOptions::default()).await.unwrap();
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let now = from_micros(2 * S);
    let r = fs
        .get_online_features(
            &OnlineRequest::new(
                FeatureSelection::refs(["v:score"]).unwrap(),
                entity_batch(&[1, 2]),
            )
            .with_now(now),
        )
        .await
        .unwrap();
    let s = r
        .batch()
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!((s.value(0), s.value(1)), (5.0, -1.0));
    assert_eq!(
        r.feature("score").unwrap().status(1),
        FeatureStatus::NotFound,
        "status tells the truth"
    );
    assert_eq!((r.imputed, fs.imputation_count()), (1, 1));
    let err = fs
        .get_online_features(
            &OnlineRequest::new(
                FeatureSelection::refs(["v:count"]).unwrap(),
                entity_batch(&[1, 2]),
            )
            .with_now(now),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::RequiredFeatureMissing { feature, row: 1, .. } if feature == "v:count"),
        "{err}"
    );
}

#[tokio::test]
async fn online_keys_are_cast_or_rejected_by_name() {
    let fs = store_with("v", None).await;
    fs.push(
        "v",
        &feature_batch(&[(7, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let sel = FeatureSelection::refs(["v:score"]).unwrap();
    let int32 = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Int32,
            false,
        )])),
        vec![Arc::new(arrow_array::Int32Array::from(vec![7]))],
    )
    .unwrap();
    let r = fs
        .get_online_features(&OnlineRequest::new(sel.clone(), int32).with_now(from_micros(S)))
        .await
        .unwrap();
    assert_eq!(
        r.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Present]
    );
    let text = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(arrow_array::StringArray::from(vec!["seven"]))],
    )
    .unwrap();
    let err = fs
        .get_online_features(&OnlineRequest::new(sel, text))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'user_id'") && err.contains("Int64"), "{err}");
}

#[tokio::test]
async fn deprecated_views_count_reads_and_services_resolve() {
    let (mut d, _) = test_definitions("v", None);
    d.feature_views.get_mut("v").unwrap().deprecation = Some(Deprecation {
        tombstone: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
        replacement: Some("v2".into()),
    });
    let d = d.with_feature_service(FeatureService::new("svc", [FeatureRef::new("v", "label")]));
    let fs = FeatureStore::in_memory();
    fs.apply(&d, ApplyOptions::default()).await.unwrap();
    for _ in 0..3 {
        fs.get_online_features(&OnlineRequest::new(
            FeatureSelection::service("svc"),
            entity_batch(&[1]),
        ))
        .await
        .unwrap();
    }
    assert_eq!(fs.deprecated_reads().get("v"), Some(&3));
    let err = fs
        .get_online_features(&OnlineRequest::new(
            FeatureSelection::service("nope"),
            entity_batch(&[1]),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// The in-memory online store with injected faults: writes fail after
/// `write_budget` calls, reads fail while `down` is set. Tests the facade's
/// watermark, cache and breaker logic (the adapters' own fault tests use real
/// servers).
#[derive(Debug)]
struct Faulty {
    inner: crate::memory::InMemoryOnlineStore,
    write_budget: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
    reads: AtomicUsize,
    /// Every read sleeps this long first (ms), ignoring `ReadOptions::timeout`:
    /// a hung backend only the facade's own timeout can cut short.
    read_delay_ms: std::sync::atomic::AtomicU64,
    /// Declares `enforces_read_timeout` and keeps it: a delayed read ends
    /// at `ReadOptions::timeout` with its own `Timeout`.
    enforces_deadline: bool,
}

impl Faulty {
    fn new(write_budget: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: crate::memory::InMemoryOnlineStore::new(),
            write_budget: AtomicUsize::new(write_budget),
            down: std::sync::atomic::AtomicBool::new(false),
            reads: AtomicUsize::new(0),
            read_delay_ms: std::sync::atomic::AtomicU64::new(0),
            enforces_deadline: false,
        })
    }

    /// A store that enforces the read deadline itself.
    fn enforcing() -> Arc<Self> {
        let mut s = Arc::into_inner(Self::new(usize::MAX)).expect("sole owner");
        s.enforces_deadline = true;
        Arc::new(s)
    }
}

#[async_trait]
impl OnlineStore for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    fn store_id(&self) -> String {
        "faulty:1".into()
    }
    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities::default().with_enforces_read_timeout(self.enforces_deadline)
    }
    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> Result<WriteSummary> {
        let budget = self.write_budget.load(AtomicOrdering::SeqCst);
        if budget == 0 {
            return Err(Error::Unavailable {
                backend: "faulty",
                message: "injected write failure".into(),
            });
        }
        self.write_budget.store(budget - 1, AtomicOrdering::SeqCst);
        self.inner.write(view, rows, opts).await
    }
    async fn read(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Option<OnlineRow>>> {
        self.reads.fetch_add(1, AtomicOrdering::SeqCst);
        let delay = Duration::from_millis(self.read_delay_ms.load(AtomicOrdering::SeqCst));
        match opts.timeout {
            Some(t) if self.enforces_deadline && delay > t => {
                // a little late, like a real client's timer
                tokio::time::sleep(t + Duration::from_millis(50)).await;
                return Err(Error::Timeout {
                    backend: "faulty",
                    message: "no reply before the read's deadline".into(),
                });
            }
            _ if !delay.is_zero() => tokio::time::sleep(delay).await,
            _ => {}
        }
        if self.down.load(AtomicOrdering::SeqCst) {
            return Err(Error::Unavailable {
                backend: "faulty",
                message: "connection refused".into(),
            });
        }
        self.inner.read(keys, opts).await
    }
    async fn delete_view(&self, view: &str) -> Result<()> {
        self.inner.delete_view(view).await
    }
}

#[tokio::test]
async fn failed_materialization_keeps_the_watermark_and_rerun_converges() {
    let failing = Faulty::new(2);
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&failing) as _)
        .build()
        .unwrap();
    fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    let rows: Vec<_> = (0..50).map(|i| (i % 7, i * S, S, Some(i as f64))).collect();
    fs.write_history("v", &feature_batch(&rows)).await.unwrap();
    let opts = MaterializeOptions::default().with_batch_size(5);
    let end = from_micros(100 * S);
    let err = fs
        .materialize_incremental(&["v"], end, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable { backend: "faulty", message } if message.contains("injected write failure")),
        "the backend's write error comes through: {err:?}"
    );
    assert!(
        fs.registry()
            .snapshot()
            .await
            .unwrap()
            .watermark("v", "faulty:1")
            .is_none(),
        "watermark must not move"
    );
    // the backend recovers: the same store lets every write through
    failing
        .write_budget
        .store(usize::MAX, AtomicOrdering::SeqCst);
    let fs2 = fs;
    let progress = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&progress);
    let report = fs2
        .materialize_incremental(
            &["v"],
            end,
            &opts.clone().with_progress(move |_| {
                p.fetch_add(1, AtomicOrdering::SeqCst);
            }),
        )
        .await
        .unwrap();
    assert_eq!(report.views[0].rows_read, 50);
    assert_eq!(
        report.views[0].rows_read,
        report.views[0].rows_written + report.views[0].rows_skipped
    );
    assert_eq!(
        progress.load(AtomicOrdering::SeqCst),
        10,
        "progress after every chunk of 5"
    );
    assert_eq!(
        fs2.registry()
            .snapshot()
            .await
            .unwrap()
            .watermark("v", "faulty:1")
            .map(|w| w.event_end),
        Some(end)
    );
    let skew = fs2
        .skew(
            FeatureSelection::refs(["v:score", "v:count"]).unwrap(),
            &entity_batch(&[0, 1, 2, 3, 4, 5, 6, 99]),
            end,
        )
        .await
        .unwrap();
    assert!(
        skew.iter().all(|s| s.mismatches == 0 && s.compared == 8),
        "{skew:?}"
    );
    // a rerun reads nothing new
    let again = fs2
        .materialize_incremental(&["v"], end, &opts)
        .await
        .unwrap();
    assert_eq!(again.views[0].rows_read, 0);
}

#[tokio::test]
async fn late_rows_are_materialized_through_the_change_log() {
    let fs = store_with("v", None).await;
    fs.write_history("v", &feature_batch(&[(1, 10 * S, S, Some(1.0))]))
        .await
        .unwrap();
    let opts = MaterializeOptions::default();
    fs.materialize_incremental(&["v"], from_micros(20 * S), &opts)
        .await
        .unwrap();
    // arrives late with an old event time, newer than what is online
    fs.write_history("v", &feature_batch(&[(1, 15 * S, S, Some(2.0))]))
        .await
        .unwrap();
    let r = fs
        .materialize_incremental(&["v"], from_micros(30 * S), &opts)
        .await
        .unwrap();
    assert_eq!(r.views[0].rows_read, 1);
    let online = fs
        .get_online_features(
            &OnlineRequest::new(
                FeatureSelection::refs(["v:count"]).unwrap(),
                entity_batch(&[1]),
            )
            .with_now(from_micros(30 * S)),
        )
        .await
        .unwrap();
    assert_eq!(
        online
            .batch()
            .column_by_name("count")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        15 * S
    );
}

#[tokio::test]
async fn apply_validates_and_refuses_breaking_changes() {
    let fs = FeatureStore::in_memory();
    let bad = Definitions::new()
        .with_feature_view(FeatureView::new("x", ["ghost"]).with_feature("f", ValueType::Int64));
    assert!(
        fs.apply(&bad, ApplyOptions::default())
            .await
            .unwrap_err()
            .to_string()
            .contains("ghost")
    );
    let d = Definitions::new()
        .with_entity(Entity::new("e", "k", ValueType::Int64))
        .with_feature_view(FeatureView::new("x", ["e"]).with_feature("f", ValueType::Int64));
    fs.apply(&d, ApplyOptions::default()).await.unwrap();
    let mut changed = d.clone();
    changed.entities.get_mut("e").unwrap().join_keys[0].value_type = ValueType::String;
    let err = fs
        .apply(&changed, ApplyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BreakingChange { .. }), "{err}");
}

#[tokio::test]
async fn last_known_good_cache_and_circuit_breaker_keep_serving() {
    // the breaker's state is also a gauge (current-thread runtime: a local recorder sees it)
    let rec = metrics_util::debugging::DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&rec);
    let breaker_gauge = || {
        rec.snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(k, ..)| k.key().name() == crate::telemetry::CIRCUIT_BREAKER_OPEN)
            .map(|(.., v)| v)
    };
    use metrics_util::debugging::DebugValue;
    let backend = Faulty::new(usize::MAX);
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&backend) as _)
        .with_last_known_good_cache(1_000)
        .with_circuit_breaker(2, Duration::from_secs(3600))
        .build()
        .unwrap();
    fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let req = OnlineRequest::new(
        FeatureSelection::refs(["v:score"]).unwrap(),
        entity_batch(&[1, 2]),
    )
    .with_now(from_micros(S));
    let ok = fs.get_online_features(&req).await.unwrap();
    assert_eq!(
        ok.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Present, FeatureStatus::NotFound]
    );

    backend.down.store(true, AtomicOrdering::SeqCst);
    let req3 = OnlineRequest::new(
        FeatureSelection::refs(["v:score"]).unwrap(),
        entity_batch(&[1, 2, 3]),
    )
    .with_now(from_micros(S));
    for _ in 0..3 {
        let r = fs.get_online_features(&req3).await.unwrap();
        assert_eq!(
            r.feature("score").unwrap().statuses(),
            vec![
                FeatureStatus::Stale,
                FeatureStatus::Stale,
                FeatureStatus::Unavailable
            ],
            "cached value (and cached absence) is served and labelled Stale; an uncached entity says Unavailable"
        );
        assert_eq!(
            r.batch()
                .column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0),
            5.0
        );
    }
    // the breaker opened after two failures: the third request did not reach the backend
    assert_eq!(
        backend.reads.load(AtomicOrdering::SeqCst),
        3,
        "1 ok + 2 failed reads, then fail-fast"
    );

    // without a cache, an open breaker fails fast with a retryable error
    let bare = FeatureStore::builder()
        .with_registry(Arc::clone(fs.registry()))
        .with_online(Arc::clone(&backend) as _)
        .with_circuit_breaker(1, Duration::from_secs(3600))
        .build()
        .unwrap();
    let first = bare.get_online_features(&req).await.unwrap_err();
    assert_eq!(
        breaker_gauge(),
        Some(DebugValue::Gauge(1.0.into())),
        "the open breaker shows in fstore_circuit_breaker_open"
    );
    assert!(
        matches!(&first, Error::Unavailable { message, .. } if message.contains("connection refused")),
        "the backend's own error first: {first:?}"
    );
    let before = backend.reads.load(AtomicOrdering::SeqCst);
    let err = bare.get_online_features(&req).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable { message, .. } if message.contains("circuit breaker open")),
        "then the open breaker: {err:?}"
    );
    assert_eq!(
        backend.reads.load(AtomicOrdering::SeqCst),
        before,
        "open breaker: no backend call"
    );
}

#[tokio::test]
async fn facade_timeout_fires_on_a_hung_backend() {
    let backend = Faulty::new(usize::MAX);
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&backend) as _)
        .with_online_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let req = OnlineRequest::new(
        FeatureSelection::refs(["v:score"]).unwrap(),
        entity_batch(&[1]),
    )
    .with_now(from_micros(S));
    // a hung backend (it never answers within the test): only the facade's
    // own timeout can end the call
    backend.read_delay_ms.store(20_000, AtomicOrdering::SeqCst);
    let started = std::time::Instant::now();
    let err = fs.get_online_features(&req).await.unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { backend: "faulty", message } if message.contains("100ms")),
        "a read past the online timeout is a Timeout naming the limit, got {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the facade gave up at its timeout, not when the backend answered"
    );

    // with a last-known-good cache, the timeout is answered from the cache
    let cached = FeatureStore::builder()
        .with_registry(Arc::clone(fs.registry()))
        .with_online(Arc::clone(&backend) as _)
        .with_online_timeout(Duration::from_millis(100))
        .with_last_known_good_cache(10)
        .build()
        .unwrap();
    backend.read_delay_ms.store(0, AtomicOrdering::SeqCst);
    cached.get_online_features(&req).await.unwrap();
    backend.read_delay_ms.store(20_000, AtomicOrdering::SeqCst);
    let r = cached.get_online_features(&req).await.unwrap();
    assert_eq!(
        r.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Stale],
        "timed-out read served from the cache"
    );
}

/// A store that ends reads at `ReadOptions::timeout` itself
/// (`enforces_read_timeout`): the facade adds no timer, and a read past the
/// deadline is still a `Timeout` naming the online timeout, answered from
/// the last-known-good cache when there is one.
#[tokio::test]
async fn store_enforced_deadline_is_the_facade_timeout() {
    let backend = Faulty::enforcing();
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&backend) as _)
        .with_online_timeout(Duration::from_millis(100))
        .with_last_known_good_cache(10)
        .build()
        .unwrap();
    let plain = FeatureStore::builder()
        .with_registry(Arc::clone(fs.registry()))
        .with_online(Arc::clone(&backend) as _)
        .with_online_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let req = OnlineRequest::new(
        FeatureSelection::refs(["v:score"]).unwrap(),
        entity_batch(&[1]),
    )
    .with_now(from_micros(S));
    fs.get_online_features(&req).await.unwrap();
    backend.read_delay_ms.store(20_000, AtomicOrdering::SeqCst);
    let started = std::time::Instant::now();
    let err = plain.get_online_features(&req).await.unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { backend: "faulty", message }
            if message.contains("100ms") && message.contains("no reply before")),
        "the store's timeout, naming the online timeout, got {err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let r = fs.get_online_features(&req).await.unwrap();
    assert_eq!(
        r.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Stale],
        "timed-out read served from the cache"
    );
}

#[tokio::test]
async fn freshness_reports_the_newest_event_in_the_lookback_and_the_watermark() {
    let fs = store_with("v", None).await;
    let now = from_micros(100 * S);
    // nothing written yet: no newest event, no age, no watermark
    let empty = fs
        .freshness("v", now, Duration::from_secs(1_000))
        .await
        .unwrap();
    assert_eq!(
        empty,
        crate::monitor::Freshness {
            newest_event: None,
            age: None,
            watermark: None
        }
    );
    // rows at 10 s, 50 s and 200 s (after `now`: not counted)
    fs.write_history(
        "v",
        &feature_batch(&[
            (1, 10 * S, S, Some(1.0)),
            (2, 50 * S, S, Some(2.0)),
            (1, 200 * S, S, Some(3.0)),
        ]),
    )
    .await
    .unwrap();
    let f = fs
        .freshness("v", now, Duration::from_secs(1_000))
        .await
        .unwrap();
    assert_eq!(f.newest_event, Some(from_micros(50 * S)), "{f:?}");
    assert_eq!(f.age, Some(Duration::from_secs(50)), "stale by 50 s: {f:?}");
    assert_eq!(f.watermark, None, "never materialized");
    // a lookback of 30 s sees none of them: the view is stale beyond the lookback
    let stale = fs
        .freshness("v", now, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((stale.newest_event, stale.age), (None, None), "{stale:?}");
    // the lookback is inclusive: 50 s back reaches the row at 50 s exactly
    let edge = fs
        .freshness("v", now, Duration::from_secs(50))
        .await
        .unwrap();
    assert_eq!(edge.newest_event, Some(from_micros(50 * S)), "{edge:?}");
    fs.materialize_incremental(&["v"], from_micros(80 * S), &MaterializeOptions::default())
        .await
        .unwrap();
    let m = fs
        .freshness("v", now, Duration::from_secs(1_000))
        .await
        .unwrap();
    assert_eq!(m.watermark, Some(from_micros(80 * S)), "{m:?}");
}

#[tokio::test]
async fn skew_counts_each_entity_whose_online_value_differs_from_the_join() {
    let fs = store_with("v", None).await;
    let t = 100 * S;
    fs.write_history(
        "v",
        &feature_batch(&[
            (0, 10 * S, S, Some(1.0)),
            (1, 10 * S, S, Some(2.0)),
            (2, 10 * S, S, Some(3.0)),
            (3, 10 * S, S, None),
        ]),
    )
    .await
    .unwrap();
    fs.materialize_incremental(&["v"], from_micros(t), &MaterializeOptions::default())
        .await
        .unwrap();
    let refs = FeatureSelection::refs(["v:score", "v:label"]).unwrap();
    let entities = entity_batch(&[0, 1, 2, 3, 4, 5]);
    let clean = fs
        .skew(refs.clone(), &entities, from_micros(t))
        .await
        .unwrap();
    assert_eq!(clean.len(), 2, "{clean:?}");
    assert!(
        clean.iter().all(|s| s.mismatches == 0 && s.compared == 6),
        "{clean:?}"
    );

    // skew: entity 1 gets a newer value online only (a push that never reached
    // the offline store); entity 5 gets an online row the history lacks;
    // entity 2 gets a newer offline row that was never materialized
    fs.push(
        "v",
        &feature_batch(&[(1, 20 * S, S, Some(9.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    fs.push(
        "v",
        &feature_batch(&[(5, 20 * S, S, Some(7.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    fs.write_history("v", &feature_batch(&[(2, 30 * S, S, Some(4.0))]))
        .await
        .unwrap();
    let skew = fs.skew(refs, &entities, from_micros(t)).await.unwrap();
    for s in &skew {
        assert_eq!(
            (s.compared, s.mismatches, s.first_mismatch),
            (6, 3, Some(1)),
            "entities 1, 2 and 5 differ in {}: {skew:?}",
            s.feature
        );
    }
    assert_eq!(
        skew.iter().map(|s| s.feature.as_str()).collect::<Vec<_>>(),
        vec!["score", "label"]
    );
}

/// Rejects reads of more than two keys as the caller's mistake (as a backend
/// refuses an over-long key), serves the rest from memory.
#[derive(Debug)]
struct Picky {
    inner: crate::memory::InMemoryOnlineStore,
    reads: AtomicUsize,
}

#[async_trait]
impl OnlineStore for Picky {
    fn backend(&self) -> &'static str {
        "picky"
    }
    fn store_id(&self) -> String {
        "picky:1".into()
    }
    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities::default()
    }
    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> Result<WriteSummary> {
        self.inner.write(view, rows, opts).await
    }
    async fn read(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Option<OnlineRow>>> {
        self.reads.fetch_add(1, AtomicOrdering::SeqCst);
        if keys.len() > 2 {
            return Err(Error::invalid("request refused by the backend"));
        }
        self.inner.read(keys, opts).await
    }
    async fn delete_view(&self, view: &str) -> Result<()> {
        self.inner.delete_view(view).await
    }
}

#[tokio::test]
async fn circuit_breaker_ignores_the_callers_mistakes() {
    let backend = Arc::new(Picky {
        inner: crate::memory::InMemoryOnlineStore::new(),
        reads: AtomicUsize::new(0),
    });
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&backend) as _)
        .with_circuit_breaker(1, Duration::from_secs(3600))
        .build()
        .unwrap();
    fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let sel = FeatureSelection::refs(["v:score"]).unwrap();
    for _ in 0..3 {
        let err = fs
            .get_online_features(&OnlineRequest::new(sel.clone(), entity_batch(&[1, 2, 3])))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
    let ok = fs
        .get_online_features(&OnlineRequest::new(sel, entity_batch(&[1])).with_now(from_micros(S)))
        .await
        .expect("three bad requests must not open the breaker for a good one");
    assert_eq!(
        ok.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Present]
    );
    assert_eq!(backend.reads.load(AtomicOrdering::SeqCst), 4);
}

#[tokio::test]
async fn stale_values_are_values_for_fallbacks() {
    let (mut d, _) = test_definitions("v", None);
    let v = d.feature_views.get_mut("v").unwrap();
    v.features[0] =
        FeatureField::new("score", ValueType::Float64).with_default(Value::Float64(-1.0));
    v.features[2] = FeatureField::new("count", ValueType::Int64).required();
    let backend = Faulty::new(usize::MAX);
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&backend) as _)
        .with_last_known_good_cache(100)
        .build()
        .unwrap();
    fs.apply(&d, ApplyOptions::default()).await.unwrap();
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let now = from_micros(2 * S);
    let score = OnlineRequest::new(
        FeatureSelection::refs(["v:score"]).unwrap(),
        entity_batch(&[1, 2]),
    )
    .with_now(now);
    let count = OnlineRequest::new(
        FeatureSelection::refs(["v:count"]).unwrap(),
        entity_batch(&[1]),
    )
    .with_now(now);
    // warm the cache: entity 1 has a row, entity 2 is known absent
    fs.get_online_features(&score).await.unwrap();
    let fresh = fs.get_online_features(&count).await.unwrap();
    backend.down.store(true, AtomicOrdering::SeqCst);

    let r = fs.get_online_features(&score).await.unwrap();
    let s = r
        .batch()
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(
        (s.value(0), s.value(1)),
        (5.0, -1.0),
        "the stale value is served, not replaced by the default; the cached absence is imputed"
    );
    assert_eq!(
        r.feature("score").unwrap().statuses(),
        vec![FeatureStatus::Stale, FeatureStatus::Stale]
    );
    assert_eq!(r.imputed, 1);
    let stale = fs
        .get_online_features(&count)
        .await
        .expect("Required accepts a stale value");
    assert_eq!(
        stale.batch().column_by_name("count").unwrap().as_ref(),
        fresh.batch().column_by_name("count").unwrap().as_ref()
    );
    assert_eq!(
        stale.feature("count").unwrap().statuses(),
        vec![FeatureStatus::Stale]
    );
}

#[tokio::test]
async fn online_requests_over_the_entity_limit_are_refused_before_reading() {
    let backend = Faulty::new(usize::MAX);
    let fs = FeatureStore::builder()
        .with_online(Arc::clone(&backend) as _)
        .with_max_online_entities(2)
        .build()
        .unwrap();
    fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    let sel = FeatureSelection::refs(["v:score"]).unwrap();
    let err = fs
        .get_online_features(&OnlineRequest::new(sel.clone(), entity_batch(&[1, 2, 3])))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("3 entities") && m.contains("maximum is 2")),
        "{err}"
    );
    let prepared = fs.prepare(&sel, false).await.unwrap();
    let err = fs
        .get_prepared(&prepared, &entity_batch(&[1, 2, 3]), None)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidInput(_)), "{err}");
    assert_eq!(
        backend.reads.load(AtomicOrdering::SeqCst),
        0,
        "no backend call"
    );
    fs.get_online_features(&OnlineRequest::new(sel, entity_batch(&[1, 2])))
        .await
        .unwrap();
    assert_eq!(backend.reads.load(AtomicOrdering::SeqCst), 1);
}

#[tokio::test]
async fn prepared_requests_follow_registry_changes() {
    let fs = store_with("v", None).await;
    fs.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let sel = FeatureSelection::refs(["v:score"]).unwrap();
    let p = fs.prepare(&sel, true).await.unwrap();
    assert_eq!(p.output_names(), vec!["v__score".to_owned()]);
    let r = fs
        .get_prepared(&p, &entity_batch(&[1, 2]), Some(from_micros(S)))
        .await
        .unwrap();
    assert_eq!(
        r.feature("v__score").unwrap().statuses(),
        vec![FeatureStatus::Present, FeatureStatus::NotFound]
    );
    assert_eq!(
        r.feature("v__score").unwrap().event_timestamps(),
        vec![Some(from_micros(S)), None]
    );
    // a new version of the view (a default for score) is picked up
    let (mut d, _) = test_definitions("v", None);
    d.feature_views.get_mut("v").unwrap().features[0] =
        FeatureField::new("score", ValueType::Float64).with_default(Value::Float64(-1.0));
    fs.apply(&d, ApplyOptions::default()).await.unwrap();
    let r = fs
        .get_prepared(&p, &entity_batch(&[1, 2]), Some(from_micros(S)))
        .await
        .unwrap();
    let s = r
        .batch()
        .column_by_name("v__score")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!((s.value(0), s.value(1)), (5.0, -1.0));
}

/// Another store's registry change reaches serving once the registry cache
/// ttl has passed, for a selection whose plan is already cached (the serving
/// path reads the cached version without the lock: it must still age out).
#[tokio::test]
async fn serving_follows_another_stores_registry_change_after_the_ttl() {
    let reg: Arc<crate::registry::DynRegistry> = Arc::new(crate::memory::InMemoryRegistry::new());
    let online: Arc<crate::online::DynOnlineStore> =
        Arc::new(crate::memory::InMemoryOnlineStore::new());
    let a = FeatureStore::builder()
        .with_registry(Arc::clone(&reg))
        .with_online(Arc::clone(&online))
        .build()
        .unwrap();
    let b = FeatureStore::builder()
        .with_registry(Arc::clone(&reg))
        .with_online(Arc::clone(&online))
        .with_registry_cache_ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    a.apply(&test_definitions("v", None).0, ApplyOptions::default())
        .await
        .unwrap();
    a.push(
        "v",
        &feature_batch(&[(1, S, S, Some(5.0))]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let sel = FeatureSelection::refs(["v:score"]).unwrap();
    let p = b.prepare(&sel, false).await.unwrap();
    let values = |r: &OnlineResponse| {
        let c = r
            .batch()
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        let second = if c.is_null(1) { f64::NAN } else { c.value(1) };
        (c.value(0), second)
    };
    let ents = entity_batch(&[1, 2]);
    let req = OnlineRequest::new(sel.clone(), ents.clone()).with_now(from_micros(S));
    let before = values(&b.get_online_features(&req).await.unwrap());
    assert_eq!(before.0, 5.0);
    assert!(before.1.is_nan(), "no default yet: {before:?}");
    // store a gives score a default; b's cached plan must age out
    let (mut d, _) = test_definitions("v", None);
    d.feature_views.get_mut("v").unwrap().features[0] =
        FeatureField::new("score", ValueType::Float64).with_default(Value::Float64(-1.0));
    a.apply(&d, ApplyOptions::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (mut facade, mut prepared) = (false, false);
    while !(facade && prepared) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        facade |= values(&b.get_online_features(&req).await.unwrap()) == (5.0, -1.0);
        let r = b
            .get_prepared(&p, &ents, Some(from_micros(S)))
            .await
            .unwrap();
        prepared |= values(&r) == (5.0, -1.0);
    }
    assert!(
        facade && prepared,
        "after the ttl, serving sees the new version (get_online_features: {facade}, get_prepared: {prepared})"
    );
}

/// Small requests reuse their working memory and output arrays between calls
/// (see `serving.rs`, `Scratch`): a response a caller still holds must never
/// change, and every later request must see only its own entities, whatever
/// the shape of the requests before it.
#[tokio::test]
async fn reused_request_memory_never_leaks_between_responses() {
    let fs = store_with("v", None).await;
    let rows: Vec<_> = (1..=4).map(|i| (i, S * i, S, Some(i as f64))).collect();
    fs.push("v", &feature_batch(&rows), PushTarget::Online)
        .await
        .unwrap();
    let sel = FeatureSelection::refs(["v:score", "v:count", "v:label"]).unwrap();
    let p = fs.prepare(&sel, false).await.unwrap();
    let at = Some(from_micros(10 * S));
    let get = |ids: Vec<i64>| {
        let (fs, p) = (&fs, &p);
        async move { fs.get_prepared(p, &entity_batch(&ids), at).await.unwrap() }
    };
    // (score, count, label) per row, None when the entity has no row.
    let values = |r: &OnlineResponse| -> Vec<Option<(f64, i64, String)>> {
        let s = r
            .batch()
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        let c = r
            .batch()
            .column_by_name("count")
            .unwrap()
            .as_primitive::<Int64Type>();
        let l = r
            .batch()
            .column_by_name("label")
            .unwrap()
            .as_string::<i32>();
        (0..r.num_rows())
            .map(|i| {
                s.is_valid(i)
                    .then(|| (s.value(i), c.value(i), l.value(i).to_owned()))
            })
            .collect()
    };
    let want = |i: i64| Some((i as f64, S * i, format!("u{i}@{}", S * i)));

    let r1 = get(vec![1]).await;
    let r2 = get(vec![2]).await;
    assert_eq!(values(&r1), vec![want(1)]);
    assert_eq!(values(&r2), vec![want(2)]);
    drop((r1, r2));
    let r3 = get(vec![3]).await;
    assert_eq!(values(&r3), vec![want(3)]);
    let r4 = get(vec![4, 1, 4]).await;
    assert_eq!(values(&r4), vec![want(4), want(1), want(4)]);
    let r5 = get(vec![99]).await;
    assert_eq!(values(&r5), vec![None]);
    assert_eq!(
        r5.feature("score").unwrap().statuses(),
        vec![FeatureStatus::NotFound]
    );
    drop((r4, r5));
    // past the size whose output arrays are pooled, then small again
    let ids: Vec<i64> = (0..40).map(|i| i % 5 + 1).collect();
    let r = get(ids.clone()).await;
    let expect: Vec<_> = ids
        .iter()
        .map(|&i| if i == 5 { None } else { want(i) })
        .collect();
    assert_eq!(values(&r), expect);
    drop(r);
    for i in [2, 4, 1] {
        let r = get(vec![i]).await;
        assert_eq!(values(&r), vec![want(i)]);
        assert_eq!(
            r.feature("count").unwrap().statuses(),
            vec![FeatureStatus::Present]
        );
    }
    let r = fs
        .get_online_features(
            &OnlineRequest::new(sel.clone(), entity_batch(&[2, 3])).with_now(from_micros(10 * S)),
        )
        .await
        .unwrap();
    assert_eq!(values(&r), vec![want(2), want(3)]);
    // the response held all along is unchanged
    assert_eq!(values(&r3), vec![want(3)]);
    assert_eq!(
        r3.feature("score").unwrap().event_timestamps(),
        vec![Some(from_micros(3 * S))]
    );
}

/// Views for the dense-access property: float64-only (with a 5 s ttl),
/// int64-only, and one with a string feature.
fn dense_defs() -> Definitions {
    let mut fa = FeatureView::new("fa", ["tk_user"])
        .with_feature("x1", ValueType::Float64)
        .with_feature("x2", ValueType::Float64)
        .with_feature("x3", ValueType::Float64);
    fa.ttl = Some(Duration::from_secs(5));
    let ib = FeatureView::new("ib", ["tk_user"])
        .with_feature("c1", ValueType::Int64)
        .with_feature("c2", ValueType::Int64);
    let sc = FeatureView::new("sc", ["tk_user"])
        .with_feature("s", ValueType::String)
        .with_feature("y", ValueType::Float64);
    Definitions::new()
        .with_entity(Entity::new("tk_user", "user_id", ValueType::Int64))
        .with_feature_view(fa)
        .with_feature_view(ib)
        .with_feature_view(sc)
}

/// A tiny deterministic generator for the property cases.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One pushed row per (entity, view) unless missing: event time `ts`, a value
/// or null per feature.
fn dense_rows(view: &str, rows: &[(i64, i64, Vec<Option<i64>>)]) -> RecordBatch {
    let feats: &[(&str, DataType)] = match view {
        "fa" => &[
            ("x1", DataType::Float64),
            ("x2", DataType::Float64),
            ("x3", DataType::Float64),
        ],
        "ib" => &[("c1", DataType::Int64), ("c2", DataType::Int64)],
        _ => &[("s", DataType::Utf8), ("y", DataType::Float64)],
    };
    let mut fields = vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", timestamp_type(), false),
    ];
    let mut cols: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone(UTC),
        ),
    ];
    for (k, (name, t)) in feats.iter().enumerate() {
        fields.push(Field::new(*name, t.clone(), true));
        let v = rows.iter().map(|r| r.2[k]);
        cols.push(match t {
            DataType::Float64 => Arc::new(Float64Array::from_iter(
                v.map(|x| x.map(|x| x as f64 / 4.0)),
            )),
            DataType::Int64 => Arc::new(Int64Array::from_iter(v)),
            _ => Arc::new(arrow_array::StringArray::from_iter(
                v.map(|x| x.map(|x| format!("s{x}"))),
            )),
        });
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// `block`'s and `column`'s cells equal those of `batch` (validity, and the
/// value where valid).
fn assert_dense_equals(resp: &OnlineResponse, batch: &RecordBatch, ctx: &str) {
    let cell = |name: &str, row: usize| -> Option<f64> {
        let c = batch.column_by_name(name).unwrap();
        c.is_valid(row).then(|| match c.data_type() {
            DataType::Float64 => c.as_primitive::<Float64Type>().value(row),
            _ => c.as_primitive::<Int64Type>().value(row) as f64,
        })
    };
    let n = batch.num_rows();
    for view in ["fa", "ib"] {
        let Some(block) = resp.view_values(view) else {
            // not read by this selection
            assert!(
                resp.features().all(|f| f.feature().view != view),
                "{ctx}: no dense block for {view}"
            );
            continue;
        };
        assert_eq!(block.n_rows(), n, "{ctx}");
        for (c, name) in block.features().iter().enumerate() {
            for row in 0..n {
                let got = block.is_valid(c, row).then(|| match block.values() {
                    DenseValues::Float64(v) => v[c * n + row],
                    DenseValues::Int64(v) => v[c * n + row] as f64,
                });
                assert_eq!(got, cell(name, row), "{ctx}: {view} {name} row {row}");
            }
        }
    }
    assert!(
        resp.view_values("sc").is_none(),
        "{ctx}: sc has a string feature"
    );
    assert!(resp.view_values("nope").is_none(), "{ctx}");
    for f in resp.features() {
        let name = f.name().to_owned();
        let col = resp.column(&name);
        if name.ends_with('s') && f.feature().view == "sc" {
            assert!(col.is_none(), "{ctx}: string column {name}");
            continue;
        }
        let col = col.unwrap_or_else(|| panic!("{ctx}: no column {name}"));
        for row in 0..n {
            let got = col.is_valid(row).then(|| match col.values() {
                DenseValues::Float64(v) => v[row],
                DenseValues::Int64(v) => v[row] as f64,
            });
            assert_eq!(got, cell(&name, row), "{ctx}: column {name} row {row}");
        }
    }
}

#[tokio::test]
async fn dense_access_equals_the_batch_cell_by_cell() {
    let fs = FeatureStore::in_memory();
    fs.apply(&dense_defs(), ApplyOptions::default())
        .await
        .unwrap();
    let now = 1_000 * S;
    let mut g = Lcg(7);
    let (mut lazy, mut eager) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    let selections = [
        vec!["fa:x1", "ib:c1", "fa:x2", "fa:x3", "ib:c2"],
        vec!["fa:x3", "fa:x1", "ib:c2", "ib:c1", "fa:x2"],
        vec!["fa:x1", "fa:x2", "fa:x3", "ib:c1", "ib:c2", "sc:s", "sc:y"],
        vec!["ib:c1", "ib:c2"],
    ];
    for case in 0..120i64 {
        let ents = 1 + g.next(6) as i64;
        let ids: Vec<i64> = (0..ents).map(|e| case * 100 + e).collect();
        // half the cases have no null, missing or expired row (the lazy path)
        let nulls = g.next(2) == 0;
        for (view, k) in [("fa", 3), ("ib", 2), ("sc", 2)] {
            let mut rows = Vec::new();
            for &id in &ids {
                if nulls && g.next(5) == 0 {
                    continue; // missing row
                }
                let ts = if nulls && view == "fa" && g.next(4) == 0 {
                    now - 10 * S // expired (ttl 5 s)
                } else {
                    now - S
                };
                let vals: Vec<Option<i64>> = (0..k)
                    .map(|_| (!nulls || g.next(3) > 0).then(|| g.next(1000) as i64 - 500))
                    .collect();
                rows.push((id, ts, vals));
            }
            if !rows.is_empty() {
                fs.push(view, &dense_rows(view, &rows), PushTarget::Online)
                    .await
                    .unwrap();
            }
        }
        let sel = &selections[g.next(selections.len() as u64) as usize];
        let full = g.next(2) == 0;
        let mut q = ids.clone();
        if nulls {
            q.push(case * 100 + 99); // never pushed
        }
        q.push(ids[0]); // twice
        let selection = FeatureSelection::refs(sel.iter().copied()).unwrap();
        let resp = if g.next(4) == 0 {
            let req = OnlineRequest::new(selection, entity_batch(&q))
                .with_now(from_micros(now))
                .with_full_feature_names(full);
            fs.get_online_features(&req).await.unwrap()
        } else {
            let p = fs.prepare(&selection, full).await.unwrap();
            fs.get_prepared_dense(&p, &entity_batch(&q), Some(from_micros(now)))
                .await
                .unwrap()
        };
        for f in resp.features() {
            seen.extend(f.statuses());
        }
        if resp.batch_built() {
            eager += 1;
        } else {
            lazy += 1;
        }
        let ctx = format!("case {case} {sel:?} full={full}");
        // dense reads before the batch exists, then again after
        let copy = resp.clone();
        let batch = resp.batch().clone();
        assert_dense_equals(&copy, &batch, &ctx);
        assert_dense_equals(&resp, &batch, &ctx);
    }
    assert!(
        lazy > 10 && eager > 10,
        "both paths: lazy {lazy}, eager {eager}"
    );
    for s in [
        FeatureStatus::Present,
        FeatureStatus::NullValue,
        FeatureStatus::NotFound,
        FeatureStatus::Expired,
    ] {
        assert!(seen.contains(&s), "fixture reaches {s:?}");
    }
}

/// A `Default` fallback through the prepared path and `get_online_features`:
/// a request with a missing row builds its arrays during the request (the
/// fallback replaces the null), `column` and the batch give the imputed
/// value, and `view_values` of the imputed view says it cannot (`None`: its
/// block holds values before fallbacks); a request with every value leaves
/// the arrays to `batch()` and its block equals the batch.
#[tokio::test]
async fn default_fallbacks_reach_the_dense_accessors() {
    let mut d = dense_defs();
    let fa = d.feature_views.get_mut("fa").unwrap();
    fa.features[0] = FeatureField::new("x1", ValueType::Float64).with_default(Value::Float64(-1.0));
    let fs = FeatureStore::in_memory();
    fs.apply(&d, ApplyOptions::default()).await.unwrap();
    let now = 1_000 * S;
    // entity 1 has every value; entity 2 was never pushed
    fs.push(
        "fa",
        &dense_rows("fa", &[(1, now - S, vec![Some(4), Some(8), Some(12)])]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    fs.push(
        "ib",
        &dense_rows("ib", &[(1, now - S, vec![Some(3), Some(5)])]),
        PushTarget::Online,
    )
    .await
    .unwrap();
    let f64_col = |r: &OnlineResponse, name: &str| -> Vec<Option<f64>> {
        let c = r.column(name).unwrap();
        let DenseValues::Float64(v) = c.values() else {
            panic!("{name} is float64")
        };
        (0..r.num_rows())
            .map(|row| c.is_valid(row).then(|| v[row]))
            .collect()
    };
    let batch_col = |r: &OnlineResponse, name: &str| -> Vec<Option<f64>> {
        r.batch()
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    };
    let sel = FeatureSelection::refs(["fa:x1", "fa:x2", "ib:c1"]).unwrap();
    let p = fs.prepare(&sel, false).await.unwrap();
    for api in ["get_prepared_dense", "get_online_features"] {
        let serve = |ids: &'static [i64]| {
            let (fs, sel, p) = (&fs, sel.clone(), &p);
            async move {
                if api == "get_online_features" {
                    let req = OnlineRequest::new(sel, entity_batch(ids)).with_now(from_micros(now));
                    fs.get_online_features(&req).await.unwrap()
                } else {
                    fs.get_prepared_dense(p, &entity_batch(ids), Some(from_micros(now)))
                        .await
                        .unwrap()
                }
            }
        };
        // every value present: nothing built yet, the block is the values
        let r = serve(&[1]).await;
        assert!(!r.batch_built(), "{api}: no arrays needed");
        let b = r.view_values("fa").expect("fa block");
        assert_eq!(b.values(), DenseValues::Float64(&[1.0, 2.0]), "{api}");
        assert_eq!(f64_col(&r, "x1"), [Some(1.0)], "{api}");
        assert_eq!(batch_col(&r, "x1"), [Some(1.0)], "{api}");
        assert_eq!(r.imputed, 0, "{api}");

        // entity 2 missing: x1 imputed, x2 null
        let r = serve(&[1, 2]).await;
        assert!(r.batch_built(), "{api}: fallbacks need the arrays");
        assert_eq!(r.imputed, 1, "{api}");
        assert!(
            r.view_values("fa").is_none(),
            "{api}: fa's block predates the fallback"
        );
        assert_eq!(f64_col(&r, "x1"), [Some(1.0), Some(-1.0)], "{api}");
        assert_eq!(batch_col(&r, "x1"), [Some(1.0), Some(-1.0)], "{api}");
        assert_eq!(f64_col(&r, "x2"), [Some(2.0), None], "{api}");
        assert_eq!(
            r.feature("x1").unwrap().statuses(),
            [FeatureStatus::Present, FeatureStatus::NotFound],
            "{api}: the status tells the truth"
        );
        // a view without an imputed value keeps its block (nulls as validity)
        let ib = r.view_values("ib").expect("ib block");
        let DenseValues::Int64(c1) = ib.values() else {
            panic!("{api}: ib is int64")
        };
        assert_eq!((c1.len(), c1[0]), (2, 3), "{api}");
        assert_eq!(
            (ib.is_valid(0, 0), ib.is_valid(0, 1)),
            (true, false),
            "{api}"
        );
    }
}

/// Responses whose arrays are built late (first `batch()` call, in the
/// prepared request's pooled arrays) never see each other's values, whatever
/// the order of the calls, requests and drops in between; a request with a
/// missing row (arrays built during the request, also pooled) in between
/// changes nothing either.
#[tokio::test]
async fn late_batches_never_share_pooled_arrays() {
    let fs = FeatureStore::in_memory();
    fs.apply(&dense_defs(), ApplyOptions::default())
        .await
        .unwrap();
    let now = 1_000 * S;
    let rows: Vec<_> = (1..=6)
        .map(|i| (i, now - S, vec![Some(4 * i), Some(8 * i), Some(12 * i)]))
        .collect();
    fs.push("fa", &dense_rows("fa", &rows), PushTarget::Online)
        .await
        .unwrap();
    let sel = FeatureSelection::refs(["fa:x1", "fa:x2", "fa:x3"]).unwrap();
    let p = fs.prepare(&sel, false).await.unwrap();
    let get = |ids: &'static [i64]| {
        let (fs, p) = (&fs, &p);
        async move {
            fs.get_prepared(p, &entity_batch(ids), Some(from_micros(now)))
                .await
                .unwrap()
        }
    };
    // (x1, x2, x3) per row, None when absent
    let values = |r: &OnlineResponse| -> Vec<Option<(f64, f64, f64)>> {
        let b = r.batch();
        let c = |n: &str| b.column_by_name(n).unwrap().as_primitive::<Float64Type>();
        let (x1, x2, x3) = (c("x1"), c("x2"), c("x3"));
        (0..r.num_rows())
            .map(|i| {
                x1.is_valid(i)
                    .then(|| (x1.value(i), x2.value(i), x3.value(i)))
            })
            .collect()
    };
    let want = |i: i64| Some((i as f64, 2.0 * i as f64, 3.0 * i as f64));

    let (r1, r2, r3) = (get(&[1]).await, get(&[2]).await, get(&[3]).await);
    assert!(!r1.batch_built() && !r2.batch_built() && !r3.batch_built());
    assert_eq!(values(&r2), [want(2)]);
    assert_eq!(values(&r1), [want(1)]);
    drop(r2);
    let r4 = get(&[4]).await;
    assert_eq!(values(&r4), [want(4)]);
    let r5 = get(&[5, 99]).await; // a missing row: arrays built during the request
    assert!(r5.batch_built());
    assert_eq!(values(&r5), [want(5), None]);
    assert_eq!(values(&r3), [want(3)]);
    drop((r4, r5));
    let r6 = get(&[6]).await;
    assert_eq!(values(&r6), [want(6)]);
    // the early responses still hold their own values
    assert_eq!(values(&r1), [want(1)]);
    assert_eq!(values(&r3), [want(3)]);
    let b1 = r1.into_batch();
    let r7 = get(&[2]).await;
    assert_eq!(values(&r7), [want(2)]);
    assert_eq!(
        b1.column_by_name("x3")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        3.0
    );
}
