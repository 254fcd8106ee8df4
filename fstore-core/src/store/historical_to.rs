//! Training sets that need not fit in memory: `historical_to` runs the
//! point-in-time join as a DataFusion plan ([semantics §12](crate::docs::semantics))
//! from Parquet spine files to a Parquet file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use futures::StreamExt;

use super::{FeatureSelection, FeatureStore, RequestPlan, output_name};
use crate::engine::{self, EngineConfig, EngineView};
use crate::error::{Error, Result};
use crate::model::{FeatureField, ResolvedView};
use crate::offline::{ScanRequest, TimeRange};
use crate::pit::PitOptions;
use crate::time::{duration_micros, from_micros, timestamp_micros};

/// A request for a training set built by the engine: [`super::HistoricalRequest`]
/// with Parquet spine files instead of in-memory batches, and the engine's config.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HistoricalToRequest {
    /// The spine as Parquet files (same schema); spine order is file order, then
    /// row order. Join-key columns must have the entities' declared types.
    pub spine_files: Vec<PathBuf>,
    /// The spine's timestamp column.
    pub timestamp_column: String,
    /// The features (plain view features; aggregation and on-demand features are
    /// not supported by the engine yet).
    pub features: FeatureSelection,
    /// Name output columns `view__feature`.
    pub full_feature_names: bool,
    /// Exclude rows created after the spine time (no backfill leakage).
    pub created_cutoff: bool,
    /// Treat naive timestamps as UTC instead of rejecting them.
    pub assume_utc: bool,
    /// Read these views at these offline versions (reproduce an earlier set).
    pub view_versions: BTreeMap<String, u64>,
    /// Use the definitions of this registry version.
    pub registry_version: Option<u64>,
    /// Partitions, batch size, memory limit, spill directory.
    pub engine: EngineConfig,
}

impl HistoricalToRequest {
    /// A request with default options.
    pub fn new(
        spine_files: Vec<PathBuf>,
        timestamp_column: impl Into<String>,
        features: FeatureSelection,
    ) -> Self {
        Self {
            spine_files,
            timestamp_column: timestamp_column.into(),
            features,
            full_feature_names: false,
            created_cutoff: false,
            assume_utc: false,
            view_versions: BTreeMap::new(),
            registry_version: None,
            engine: EngineConfig::default(),
        }
    }
    /// Sets `full_feature_names`.
    pub fn with_full_feature_names(mut self, v: bool) -> Self {
        self.full_feature_names = v;
        self
    }
    /// Sets `created_cutoff`.
    pub fn with_created_cutoff(mut self, v: bool) -> Self {
        self.created_cutoff = v;
        self
    }
    /// Sets `assume_utc`.
    pub fn with_assume_utc(mut self, v: bool) -> Self {
        self.assume_utc = v;
        self
    }
    /// Pins the offline versions (from an earlier result).
    pub fn with_view_versions(mut self, v: BTreeMap<String, u64>) -> Self {
        self.view_versions = v;
        self
    }
    /// Pins the registry version.
    pub fn with_registry_version(mut self, v: u64) -> Self {
        self.registry_version = Some(v);
        self
    }
    /// Sets the engine's config.
    pub fn with_engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }
}

/// What [`FeatureStore::historical_to`] wrote and what it was built from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HistoricalToResult {
    /// Rows written (one per spine row).
    pub rows: u64,
    /// Registry version whose definitions were used.
    pub registry_version: u64,
    /// Offline version read per view (versioned stores), to reproduce the set.
    pub view_versions: BTreeMap<String, u64>,
}

impl HistoricalToResult {
    /// A result of `rows` rows read at `view_versions` (for stores that run the
    /// join themselves; the facade sets the registry version).
    pub fn new(rows: u64, view_versions: BTreeMap<String, u64>) -> Self {
        Self {
            rows,
            registry_version: 0,
            view_versions,
        }
    }
}

impl FeatureStore {
    /// Builds a point-in-time-correct training set with the engine and streams it
    /// to the Parquet file `sink` ([semantics §12](crate::docs::semantics)): the
    /// same rows, columns and order as [`FeatureStore::get_historical_features`]
    /// on the same spine.
    ///
    /// # Behavior
    /// A store that declares [`crate::OfflineCapabilities::runs_join`] gets the
    /// request ([`crate::OfflineStore::historical_to`]). Otherwise the spine's
    /// time bounds are read first (the timestamp column only); each
    /// view is scanned over `[min - ttl, max]`, projected to the requested
    /// features, at the pinned version if any, and streamed into the plan. The
    /// file is written under a temporary name and renamed at the end.
    ///
    /// # Errors
    /// Those of `get_historical_features` (before the join starts, for schema
    /// problems); [`Error::NotSupported`] for aggregation or on-demand features;
    /// engine and file errors.
    pub async fn historical_to(
        &self,
        req: &HistoricalToRequest,
        sink: &Path,
    ) -> Result<HistoricalToResult> {
        let snap = match req.registry_version {
            Some(v) => self.registry.snapshot_at(v).await?,
            None => self.snapshot().await?,
        };
        let defs = &snap.state.definitions;
        let plan = RequestPlan::new(defs, &req.features)?;
        if !plan.aggs.is_empty() || !plan.on_demand.is_empty() {
            return Err(Error::NotSupported {
                backend: engine::BACKEND,
                operation: "aggregation and on-demand features in historical_to",
            });
        }
        self.note_deprecated(defs, &plan.view_names());
        if self.offline.capabilities().runs_join {
            let mut r = self
                .offline
                .historical_to(&plan.views, &plan.refs, req, sink)
                .await?;
            r.registry_version = snap.version;
            return Ok(r);
        }
        let cfg = &req.engine;
        let session = cfg.session()?;
        let ts = &req.timestamp_column;
        let (min, max) = spine_bounds(req, &session).await?;

        let mut views = Vec::with_capacity(plan.views.len());
        let mut view_versions = BTreeMap::new();
        for (rv, feats) in &plan.views {
            let name = rv.name().to_owned();
            let input = if min > max {
                // An empty spine reads nothing.
                engine::memory_plan(&[], canonical_schema(rv, feats), 1)?
            } else {
                let start = rv
                    .view
                    .ttl
                    .map(|t| from_micros(min.saturating_sub(duration_micros(t))));
                let scan = self
                    .offline
                    .scan(
                        rv,
                        &ScanRequest::new(TimeRange::inclusive(start, from_micros(max)))
                            .with_features(feats.clone())
                            .with_as_of_version(req.view_versions.get(&name).copied()),
                    )
                    .await?;
                if let Some(v) = scan.version {
                    view_versions.insert(name.clone(), v);
                }
                // The plan needs the schema before the first row: peek.
                let mut stream = scan.stream;
                match stream.next().await {
                    Some(first) => {
                        let first = first?;
                        let schema = first.schema();
                        let rest = futures::stream::once(async move { Ok(first) }).chain(stream);
                        engine::stream_plan(schema, rest.boxed())?
                    }
                    None => engine::memory_plan(&[], canonical_schema(rv, feats), 1)?,
                }
            };
            views.push(EngineView {
                name,
                join_keys: rv.join_keys.iter().map(|k| k.name.clone()).collect(),
                event_timestamp_column: rv.view.event_timestamp_column.clone(),
                created_timestamp_column: rv.view.created_timestamp_column.clone(),
                ttl: rv.view.ttl,
                features: feats
                    .iter()
                    .filter_map(|f| rv.view.feature(f).map(FeatureField::to_arrow))
                    .collect(),
                input,
            });
        }
        let opts = PitOptions::default()
            .with_full_feature_names(true)
            .with_created_cutoff(req.created_cutoff)
            .with_assume_utc(req.assume_utc);
        let spine = engine::parquet_plan(&req.spine_files, cfg.partitions)?;
        let n_spine = spine
            .schema()
            .fields()
            .iter()
            .filter(|f| f.name() != engine::SEQ_BASE_COLUMN)
            .count();
        let joined = engine::pit_join_plan_with(spine, ts, &views, &opts, cfg)?;
        // Spine columns, then the requested features in request order, named as asked.
        let js = joined.schema();
        let mut proj: Vec<ProjectionExpr> = js
            .fields()
            .iter()
            .take(n_spine)
            .map(|f| column(f.name(), f.name(), &js))
            .collect::<Result<_>>()?;
        for r in &plan.refs {
            proj.push(column(
                &output_name(r, true),
                &output_name(r, req.full_feature_names),
                &js,
            )?);
        }
        super::check_unique_names(proj.iter().map(|p| p.alias.as_str()))?;
        let out: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(proj, joined).map_err(engine::from_df)?);
        let rows = engine::write_parquet(engine::execute(out, session.task_ctx())?, sink).await?;
        Ok(HistoricalToResult {
            rows,
            registry_version: snap.version,
            view_versions,
        })
    }
}

fn column(name: &str, alias: &str, schema: &Schema) -> Result<ProjectionExpr> {
    Ok(ProjectionExpr {
        expr: Arc::new(Column::new_with_schema(name, schema).map_err(engine::from_df)?),
        alias: alias.to_string(),
    })
}

/// The canonical projected scan schema of a view (for a scan with no batches).
fn canonical_schema(rv: &ResolvedView, feats: &[String]) -> arrow_schema::SchemaRef {
    let mut fields: Vec<Field> = rv
        .join_keys
        .iter()
        .map(|k| Field::new(&k.name, k.value_type.to_arrow(), true))
        .collect();
    fields.push(Field::new(
        &rv.view.event_timestamp_column,
        crate::time::timestamp_type(),
        false,
    ));
    if let Some(c) = &rv.view.created_timestamp_column {
        fields.push(Field::new(c, crate::time::timestamp_type(), false));
    }
    for f in feats {
        if let Some(ff) = rv.view.feature(f) {
            fields.push(ff.to_arrow());
        }
    }
    Arc::new(Schema::new(fields))
}

/// The smallest and largest spine time in UTC microseconds (`min > max` for an
/// empty spine), reading only the timestamp column of the spine files.
async fn spine_bounds(
    req: &HistoricalToRequest,
    session: &datafusion::prelude::SessionContext,
) -> Result<(i64, i64)> {
    let ts = &req.timestamp_column;
    let spine = engine::parquet_plan(&req.spine_files, 1)?;
    let ss = spine.schema();
    if ss.index_of(ts).is_err() {
        return Err(Error::invalid(format!(
            "the spine has no timestamp column '{ts}'"
        )));
    }
    let only_ts: Arc<dyn ExecutionPlan> = Arc::new(
        ProjectionExec::try_new(vec![column(ts, ts, &ss)?], spine).map_err(engine::from_df)?,
    );
    let mut stream = engine::execute(only_ts, session.task_ctx())?;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    while let Some(b) = stream.next().await {
        let b: RecordBatch = b.map_err(engine::from_df)?;
        for t in
            timestamp_micros(b.column(0).as_ref(), ts, req.assume_utc).map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("spine: {m}")),
                other => other,
            })?
        {
            min = min.min(t);
            max = max.max(t);
        }
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow_array::{Float64Array, Int64Array, TimestampMicrosecondArray};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::store::{ApplyOptions, HistoricalRequest};
    use crate::testkit::{feature_batch, test_definitions};
    use crate::time::{UTC, timestamp_type};

    const S: i64 = 1_000_000;

    fn spine(ids: &[i64], ts: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("user_id", arrow_schema::DataType::Int64, false),
                Field::new("ts", timestamp_type(), false),
                Field::new("label", arrow_schema::DataType::Float64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone(UTC)),
                Arc::new(Float64Array::from_iter_values(
                    (0..ids.len()).map(|i| i as f64),
                )),
            ],
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn historical_to_writes_what_get_historical_features_returns() {
        let fs = FeatureStore::in_memory();
        fs.apply(
            &test_definitions("v", Some(Duration::from_secs(30))).0,
            ApplyOptions::default(),
        )
        .await
        .unwrap();
        // ties on (event, created): write order decides
        let mut rows = Vec::new();
        for i in 0..300i64 {
            rows.push((i % 17, (i % 50) * S, (i % 3) * S, Some(i as f64)));
        }
        fs.write_history("v", &feature_batch(&rows)).await.unwrap();
        fs.write_history("v", &feature_batch(&rows[..40]))
            .await
            .unwrap();
        let ids: Vec<i64> = (0..200).map(|i| (i * 7) % 19).collect();
        let ts: Vec<i64> = (0..200).map(|i| ((i * 13) % 90) * S).collect();
        let whole = spine(&ids, &ts);
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, part) in [whole.slice(0, 120), whole.slice(120, 80)]
            .iter()
            .enumerate()
        {
            let p = dir.path().join(format!("spine-{i}.parquet"));
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), whole.schema(), None)
                    .unwrap();
            w.write(part).unwrap();
            w.close().unwrap();
            files.push(p);
        }
        let sel = FeatureSelection::refs(["v:score"]).unwrap();
        let want = fs
            .get_historical_features(
                &HistoricalRequest::new(vec![whole.clone()], "ts", sel.clone())
                    .with_created_cutoff(true),
            )
            .await
            .unwrap();
        let out = dir.path().join("train.parquet");
        let got = fs
            .historical_to(
                &HistoricalToRequest::new(files, "ts", sel)
                    .with_created_cutoff(true)
                    .with_engine(
                        EngineConfig::default()
                            .with_partitions(3)
                            .with_batch_size(16),
                    ),
                &out,
            )
            .await
            .unwrap();
        assert_eq!(got.rows, 200);
        assert_eq!(got.registry_version, want.registry_version);
        assert_eq!(got.view_versions, want.view_versions);
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let batch = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(batch.num_columns(), want.batch.num_columns());
        for i in 0..batch.num_columns() {
            assert_eq!(
                batch.schema().field(i).name(),
                want.batch.schema().field(i).name()
            );
            assert_eq!(
                batch.column(i).to_data(),
                want.batch.column(i).to_data(),
                "column {i}"
            );
        }
    }

    /// A store that declares it runs the join, and records the request.
    #[derive(Debug)]
    struct Delegating {
        inner: crate::InMemoryOfflineStore,
        calls: std::sync::Mutex<Vec<(Vec<String>, usize, PathBuf)>>,
    }

    #[async_trait::async_trait]
    impl crate::OfflineStore for Delegating {
        fn backend(&self) -> &'static str {
            "delegating"
        }
        fn capabilities(&self) -> crate::OfflineCapabilities {
            crate::OfflineCapabilities::versioned().with_runs_join(true)
        }
        async fn write(
            &self,
            view: &ResolvedView,
            batch: RecordBatch,
        ) -> Result<crate::OfflineWriteSummary> {
            self.inner.write(view, batch).await
        }
        async fn scan(&self, view: &ResolvedView, req: &ScanRequest) -> Result<crate::ScanResult> {
            self.inner.scan(view, req).await
        }
        async fn latest_version(&self, view: &ResolvedView) -> Result<Option<u64>> {
            self.inner.latest_version(view).await
        }
        async fn delete_view(&self, view: &ResolvedView) -> Result<()> {
            self.inner.delete_view(view).await
        }
        async fn historical_to(
            &self,
            views: &[(ResolvedView, Vec<String>)],
            refs: &[crate::model::FeatureRef],
            _req: &HistoricalToRequest,
            sink: &Path,
        ) -> Result<HistoricalToResult> {
            self.calls.lock().unwrap().push((
                views.iter().map(|(v, _)| v.name().to_owned()).collect(),
                refs.len(),
                sink.to_path_buf(),
            ));
            Ok(HistoricalToResult::new(
                42,
                BTreeMap::from([("v".to_owned(), 9)]),
            ))
        }
    }

    #[tokio::test]
    async fn a_store_that_runs_the_join_gets_the_request() {
        let store = Arc::new(Delegating {
            inner: crate::InMemoryOfflineStore::default(),
            calls: Default::default(),
        });
        let fs = FeatureStore::builder()
            .with_offline(Arc::clone(&store) as Arc<crate::DynOfflineStore>)
            .build()
            .unwrap();
        fs.apply(&test_definitions("v", None).0, ApplyOptions::default())
            .await
            .unwrap();
        let sink = PathBuf::from("/nonexistent/out.parquet");
        let r = fs
            .historical_to(
                &HistoricalToRequest::new(
                    vec![PathBuf::from("/nonexistent/spine.parquet")],
                    "ts",
                    FeatureSelection::refs(["v:score"]).unwrap(),
                ),
                &sink,
            )
            .await
            .unwrap();
        assert_eq!(r.rows, 42);
        assert_eq!(r.view_versions.get("v"), Some(&9));
        assert_eq!(r.registry_version, fs.snapshot().await.unwrap().version);
        assert_eq!(
            *store.calls.lock().unwrap(),
            vec![(vec!["v".to_owned()], 1, sink)]
        );
    }
}
