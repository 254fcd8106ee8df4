//! All delta-rs / object-store I/O of the offline store.
//!
//! # How the Delta log is read
//!
//! fstore replays the commit JSON files (`_delta_log/<v>.json`) itself instead of
//! asking delta-rs for a snapshot's file list, because a scan needs three things a
//! snapshot does not give: the **commit version** of every file (write order =
//! commit order, then file order inside the commit), the **data-change** flag of
//! each add (change-log scans skip compaction rewrites), and the adds of *each*
//! version (`since_version`). Commit files are immutable, so the parsed commits are
//! cached per table (keyed by the table id, so a dropped and re-created table is
//! re-read). Tables are created with `delta.enableExpiredLogCleanup = false` so the
//! JSON commits survive checkpoints.
//!
//! Compaction writes one file per run of small, adjacent (in write order) files,
//! with `dataChange = false` and a `fstore.order` tag carrying the order key of the
//! first file it replaces, so the rewritten rows keep their place in write order
//! and are never re-emitted by a change-log scan.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove, StructType};
use deltalake::logstore::LogStoreRef;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use fstore_core::time::{timestamp_micros, to_micros};
use fstore_core::{ResolvedView, ScanRequest, TimeRange};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use url::Url;

use crate::BACKEND;
use crate::builder::Config;
use crate::error::Error;

type CoreResult<T> = fstore_core::Result<T>;

/// Tag on compacted files: the order key (`version.index`) of the first file replaced.
const ORDER_TAG: &str = "fstore.order";
/// The retention below which `vacuum` refuses to run unless forced (Delta's default).
pub(crate) const MIN_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Position of a file in write order: (commit version, index of the add in the commit).
type OrderKey = (u64, u64);

/// One add action, as much of it as a scan needs.
#[derive(Debug, Clone)]
struct AddFile {
    path: String,
    size: u64,
    data_change: bool,
    rows: Option<u64>,
    /// Event-time bounds from the add's stats (UTC micros), widened for the
    /// millisecond truncation of Delta stats.
    ev_min: Option<i64>,
    ev_max: Option<i64>,
    order: OrderKey,
}

/// One parsed commit.
#[derive(Debug, Default)]
struct Commit {
    adds: Vec<AddFile>,
    removes: Vec<String>,
    table_id: Option<String>,
}

/// The parsed commits `0..commits.len()` of one table.
#[derive(Debug, Default, Clone)]
struct TableLog {
    table_id: String,
    /// The event-time column whose stats were parsed (`None`: none).
    ev_col: Option<String>,
    commits: Vec<Arc<Commit>>,
}

impl TableLog {
    fn latest(&self) -> u64 {
        self.commits.len().saturating_sub(1) as u64
    }

    /// Live files at `version`, in write order.
    fn live_files(&self, version: u64) -> Vec<AddFile> {
        let mut live: HashMap<&str, &AddFile> = HashMap::new();
        for c in self.commits.iter().take(version as usize + 1) {
            for r in &c.removes {
                live.remove(r.as_str());
            }
            for a in &c.adds {
                live.insert(&a.path, a);
            }
        }
        let mut files: Vec<AddFile> = live.into_values().cloned().collect();
        files.sort_by_key(|f| f.order);
        files
    }

    /// Data-changing adds of the commits `since+1 ..= upto`, in write order.
    fn changes(&self, since: u64, upto: u64) -> Vec<AddFile> {
        let mut files: Vec<AddFile> = self
            .commits
            .iter()
            .enumerate()
            .filter(|(v, _)| (*v as u64) > since && (*v as u64) <= upto)
            .flat_map(|(_, c)| c.adds.iter().filter(|a| a.data_change).cloned())
            .collect();
        files.sort_by_key(|f| f.order);
        files
    }
}

fn parse_stats_ts(v: Option<&serde_json::Value>) -> Option<i64> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| to_micros(d.with_timezone(&Utc)))
}

fn parse_order_tag(v: &serde_json::Value) -> Option<OrderKey> {
    let s = v.get("tags")?.get(ORDER_TAG)?.as_str()?;
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_commit(bytes: &[u8], version: u64, ev_col: Option<&str>) -> Result<Commit, Error> {
    let mut c = Commit::default();
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::Log(format!("commit {version} is not UTF-8: {e}")))?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Log(format!("commit {version} has a malformed action: {e}")))?;
        if let Some(a) = v.get("add") {
            let path = a.get("path").and_then(|p| p.as_str()).ok_or_else(|| {
                Error::Log(format!("commit {version}: add action without a path"))
            })?;
            let stats: Option<serde_json::Value> = a
                .get("stats")
                .and_then(|s| s.as_str())
                .and_then(|s| serde_json::from_str(s).ok());
            let (ev_min, ev_max) = match (&stats, ev_col) {
                (Some(s), Some(col)) => (
                    parse_stats_ts(s.get("minValues").and_then(|m| m.get(col))),
                    // Stats are truncated to milliseconds: the true max is below +1 ms.
                    parse_stats_ts(s.get("maxValues").and_then(|m| m.get(col)))
                        .map(|m| m.saturating_add(999)),
                ),
                _ => (None, None),
            };
            let idx = c.adds.len() as u64;
            c.adds.push(AddFile {
                path: path.to_owned(),
                size: a
                    .get("size")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                data_change: a
                    .get("dataChange")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(true),
                rows: stats
                    .as_ref()
                    .and_then(|s| s.get("numRecords"))
                    .and_then(serde_json::Value::as_u64),
                ev_min,
                ev_max,
                order: parse_order_tag(a).unwrap_or((version, idx)),
            });
        } else if let Some(r) = v.get("remove") {
            if let Some(p) = r.get("path").and_then(|p| p.as_str()) {
                c.removes.push(p.to_owned());
            }
        } else if let Some(m) = v.get("metaData") {
            c.table_id = m.get("id").and_then(|i| i.as_str()).map(str::to_owned);
        }
    }
    Ok(c)
}

/// Validates a view name for use as a directory under the root.
pub(crate) fn check_view_name(name: &str) -> CoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.starts_with("_fstore")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(fstore_core::Error::invalid(format!(
            "{BACKEND}: feature view name '{name}' cannot name a Delta table directory \
             (use ASCII letters, digits, '_', '-', '.'; not starting with '.' or '_fstore')"
        )))
    }
}

/// Compares types the way Delta round-trips them (list item names and
/// timestamp zone spellings may differ).
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (
            DataType::List(x) | DataType::LargeList(x),
            DataType::List(y) | DataType::LargeList(y),
        ) => same_type(x.data_type(), y.data_type()),
        (DataType::Timestamp(u1, _), DataType::Timestamp(u2, _)) => u1 == u2,
        (
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
        ) => true,
        (
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView,
        ) => true,
        _ => a == b,
    }
}

fn conform(col: &ArrayRef, target: &DataType, name: &str) -> CoreResult<ArrayRef> {
    if col.data_type() == target {
        return Ok(Arc::clone(col));
    }
    arrow_cast::cast(col.as_ref(), target).map_err(|e| {
        fstore_core::Error::backend(
            BACKEND,
            format!(
                "column '{name}': cannot read {} as {target}",
                col.data_type()
            ),
            e,
        )
    })
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Files replaced.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
    /// Rows rewritten (unchanged in number and order).
    pub rows_rewritten: u64,
    /// The version committed (`None` when there was nothing to compact).
    pub version: Option<u64>,
}

/// What one vacuum did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VacuumReport {
    /// Data files deleted.
    pub files_deleted: u64,
}

/// Shared state of one store: config and the per-table log cache.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) cfg: Config,
    logs: Mutex<HashMap<String, TableLog>>,
}

/// Everything a scan task needs, cheap to clone.
#[derive(Clone)]
struct ScanCtx {
    store: Arc<dyn ObjectStore>,
    out_schema: SchemaRef,
    ev_col: String,
    range: TimeRange,
    batch_rows: usize,
    view: String,
}

impl Client {
    pub(crate) fn new(cfg: Config) -> Self {
        Self {
            cfg,
            logs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn table_url(&self, view: &str) -> CoreResult<Url> {
        check_view_name(view)?;
        self.cfg.root.join(&format!("{view}/")).map_err(|e| {
            fstore_core::Error::invalid(format!(
                "{BACKEND}: feature view '{view}': bad table URL: {e}"
            ))
        })
    }

    fn unloaded(&self, view: &str) -> CoreResult<DeltaTable> {
        let url = self.table_url(view)?;
        Ok(DeltaTableBuilder::from_url(url)
            .map_err(Error::delta(format!(
                "opening table of feature view '{view}'"
            )))?
            .with_storage_options(self.cfg.storage_options.clone())
            .build()
            .map_err(Error::delta(format!(
                "opening table of feature view '{view}'"
            )))?)
    }

    async fn read_commit(
        log_store: &LogStoreRef,
        view: &str,
        v: u64,
    ) -> Result<Option<bytes::Bytes>, Error> {
        log_store
            .read_commit_entry(v)
            .await
            .map_err(Error::delta(format!(
                "reading commit {v} of feature view '{view}'"
            )))
    }

    /// The parsed log of `view` up to its latest version (`None`: no table).
    async fn table_log(
        &self,
        view: &str,
        ev_col: Option<&str>,
    ) -> CoreResult<(LogStoreRef, Option<TableLog>)> {
        let table = self.unloaded(view)?;
        let ls = table.log_store();
        let Some(first) = Self::read_commit(&ls, view, 0).await? else {
            if let Ok(mut m) = self.logs.lock() {
                m.remove(view);
            }
            return Ok((ls, None));
        };
        let c0 = parse_commit(&first, 0, ev_col)?;
        let id = c0.table_id.clone().unwrap_or_default();
        let mut log = self
            .logs
            .lock()
            .ok()
            .and_then(|m| m.get(view).cloned())
            .filter(|l| l.table_id == id && !l.commits.is_empty() && l.ev_col.as_deref() == ev_col)
            .unwrap_or_else(|| TableLog {
                table_id: id,
                ev_col: ev_col.map(str::to_owned),
                commits: vec![Arc::new(c0)],
            });
        let latest = ls
            .get_latest_version(log.latest())
            .await
            .map_err(Error::delta(format!(
                "listing the log of feature view '{view}'"
            )))?;
        let next = log.commits.len() as u64;
        if latest >= next {
            let fetched: Vec<(u64, Option<bytes::Bytes>)> = stream::iter(next..=latest)
                .map(|v| {
                    let ls = Arc::clone(&ls);
                    async move { Ok::<_, Error>((v, Self::read_commit(&ls, view, v).await?)) }
                })
                .buffered(16)
                .try_collect()
                .await?;
            for (v, bytes) in fetched {
                let bytes = bytes.ok_or_else(|| {
                    Error::Log(format!(
                        "commit {v} of feature view '{view}' is missing from the Delta log \
                         (was the log cleaned up? fstore needs every commit JSON)"
                    ))
                })?;
                log.commits.push(Arc::new(parse_commit(&bytes, v, ev_col)?));
            }
        }
        if let Ok(mut m) = self.logs.lock() {
            m.insert(view.to_owned(), log.clone());
        }
        Ok((ls, Some(log)))
    }

    pub(crate) async fn latest_version(&self, view: &str) -> CoreResult<Option<u64>> {
        let table = self.unloaded(view)?;
        let ls = table.log_store();
        if Self::read_commit(&ls, view, 0).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(ls.get_latest_version(0).await.map_err(
            Error::delta(format!("listing the log of feature view '{view}'")),
        )?))
    }

    /// Loads the table, creating it with `schema` when it does not exist.
    async fn load_or_create(&self, view: &str, schema: &Schema) -> CoreResult<DeltaTable> {
        let mut table = self.unloaded(view)?;
        let exists = Self::read_commit(&table.log_store(), view, 0)
            .await?
            .is_some();
        if !exists {
            let st: StructType = schema.try_into_kernel().map_err(|e| {
                Error::delta(format!("converting the schema of feature view '{view}'"))(e.into())
            })?;
            let created = table
                .create()
                .with_table_name(view)
                .with_columns(st.fields().cloned())
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_configuration_property(
                    deltalake::TableProperty::EnableExpiredLogCleanup,
                    Some("false"),
                )
                .with_comment("fstore feature view history")
                .await;
            match created {
                Ok(t) => return Ok(t),
                // Lost a creation race to another writer: load the winner's table.
                Err(e) => tracing::debug!(view, error = %e, "table creation raced; loading"),
            }
            table = self.unloaded(view)?;
        }
        table.load().await.map_err(Error::delta(format!(
            "loading table of feature view '{view}'"
        )))?;
        Ok(table)
    }

    /// Appends `batch` (already in the view's canonical schema), retrying the
    /// whole write on commit conflicts. Returns the committed version.
    pub(crate) async fn write(&self, view: &ResolvedView, batch: &RecordBatch) -> CoreResult<u64> {
        let mut attempt = 0;
        loop {
            match self.try_write(view, batch).await {
                Ok(v) => return Ok(v),
                Err(WriteErr::Retry(e)) if attempt < self.cfg.commit_retries => {
                    attempt += 1;
                    tracing::debug!(view = view.name(), attempt, error = ?e, "delta commit conflict, retrying");
                    let jitter = u64::from(std::process::id() % 50) + 20 * u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(WriteErr::Retry(e)) => return Err(e.into()),
                Err(WriteErr::Fatal(e)) => return Err(e),
            }
        }
    }

    async fn try_write(&self, view: &ResolvedView, batch: &RecordBatch) -> Result<u64, WriteErr> {
        let name = view.name();
        let mut table = self.load_or_create(name, batch.schema().as_ref()).await?;
        let snapshot = table.snapshot().map_err(|e| WriteErr::delta(name, e))?;
        let table_schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| WriteErr::delta(name, e.into()))?;
        if !snapshot.metadata().partition_columns().is_empty() {
            return Err(WriteErr::Fatal(fstore_core::Error::invalid(format!(
                "{BACKEND}: the table of feature view '{name}' is partitioned; fstore writes unpartitioned tables"
            ))));
        }
        // Build the batch in the table's column order; new features go last
        // (additive evolution), features dropped from the view are written as null.
        let mut fields: Vec<Field> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        let mut seen = HashSet::new();
        for tf in table_schema.fields() {
            seen.insert(tf.name().as_str());
            match batch.column_by_name(tf.name()) {
                Some(c) if same_type(c.data_type(), tf.data_type()) => {
                    cols.push(conform(c, tf.data_type(), tf.name())?);
                }
                Some(c) => {
                    return Err(WriteErr::Fatal(fstore_core::Error::invalid(format!(
                        "{BACKEND}: feature view '{name}': column '{}' is {} in the batch but {} in the Delta table; \
                         changing a stored column's type is a breaking change (write to a new view)",
                        tf.name(),
                        c.data_type(),
                        tf.data_type()
                    ))));
                }
                None if tf.is_nullable() => {
                    cols.push(new_null_array(tf.data_type(), batch.num_rows()))
                }
                None => {
                    return Err(WriteErr::Fatal(fstore_core::Error::invalid(format!(
                        "{BACKEND}: feature view '{name}': the batch lacks the table's non-nullable column '{}'",
                        tf.name()
                    ))));
                }
            }
            fields.push(tf.as_ref().clone());
        }
        let mut evolve = false;
        let bs = batch.schema();
        for (i, f) in bs.fields().iter().enumerate() {
            if !seen.contains(f.name().as_str()) {
                evolve = true;
                fields.push(f.as_ref().clone().with_nullable(true));
                cols.push(Arc::clone(batch.column(i)));
            }
        }
        let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
            .map_err(|e| WriteErr::Fatal(e.into()))?;
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| WriteErr::delta(name, e))?
            .with_target_file_size(self.cfg.target_file_size)
            .with_commit_properties(
                CommitProperties::default().with_cleanup_expired_logs(Some(false)),
            );
        let mode = if evolve {
            WriteMode::MergeSchema
        } else {
            WriteMode::Default
        };
        writer
            .write_with_mode(out, mode)
            .await
            .map_err(|e| WriteErr::delta(name, e))?;
        let v = writer
            .flush_and_commit(&mut table)
            .await
            .map_err(|e| WriteErr::delta(name, e))?;
        Ok(v)
    }

    /// Streams the rows of `req` (see `OfflineStore::scan`). Returns the version read.
    pub(crate) async fn scan(
        &self,
        view: &ResolvedView,
        req: &ScanRequest,
    ) -> CoreResult<(Option<u64>, BoxStream<'static, CoreResult<RecordBatch>>)> {
        let name = view.name();
        let ev_col = view.view.event_timestamp_column.clone();
        let features: Vec<String> = req
            .features
            .clone()
            .unwrap_or_else(|| view.view.features.iter().map(|f| f.name.clone()).collect());
        let full = view.arrow_schema();
        let mut out_fields = Vec::new();
        for c in view.key_and_time_columns() {
            if let Ok(f) = full.field_with_name(c) {
                out_fields.push(f.clone());
            }
        }
        for f in &features {
            let def = view.view.feature(f).ok_or_else(|| {
                fstore_core::Error::invalid(format!("feature view '{name}' has no feature '{f}'"))
            })?;
            out_fields.push(def.to_arrow());
        }
        let out_schema: SchemaRef = Arc::new(Schema::new(out_fields));
        let (ls, log) = self.table_log(name, Some(&ev_col)).await?;
        let Some(log) = log else {
            if let Some(v) = req.as_of_version {
                return Err(fstore_core::Error::not_found(
                    "table version",
                    format!("{v} of feature view '{name}' (the view has no Delta table yet)"),
                ));
            }
            return Ok((None, Box::pin(stream::empty())));
        };
        let latest = log.latest();
        let upto = req.as_of_version.unwrap_or(latest);
        if upto > latest {
            return Err(fstore_core::Error::not_found(
                "table version",
                format!("{upto} of feature view '{name}' (latest is {latest})"),
            ));
        }
        let files = match req.since_version {
            Some(s) => log.changes(s, upto),
            None => log.live_files(upto),
        };
        let (lo, hi) = bounds(&req.range);
        let files: Vec<AddFile> = files
            .into_iter()
            .filter(|f| f.rows != Some(0))
            .filter(|f| !(f.ev_max.is_some_and(|m| m < lo) || f.ev_min.is_some_and(|m| m > hi)))
            .collect();
        let ctx = ScanCtx {
            store: ls.object_store(None),
            out_schema,
            ev_col,
            range: req.range,
            batch_rows: self.cfg.scan_batch_rows,
            view: name.to_owned(),
        };
        let s = stream::iter(files)
            .map(move |f| {
                let ctx = ctx.clone();
                async move { ctx.open(f).await }
            })
            // Open (read the footer of) the next files while the current one streams.
            .buffered(4)
            .map(|r| match r {
                Ok(s) => s,
                Err(e) => Box::pin(stream::once(async { Err(e) }))
                    as BoxStream<'static, CoreResult<RecordBatch>>,
            })
            .flatten()
            .try_filter(|b| futures::future::ready(b.num_rows() > 0));
        Ok((Some(upto), Box::pin(s)))
    }

    /// Rewrites runs of small adjacent files into files of about the target size.
    pub(crate) async fn compact(&self, view: &str) -> CoreResult<CompactReport> {
        let (_, log) = self.table_log(view, None).await?;
        let Some(log) = log else {
            return Ok(CompactReport::default());
        };
        let mut table = self.unloaded(view)?;
        table
            .load_version(log.latest())
            .await
            .map_err(Error::delta(format!(
                "loading table of feature view '{view}'"
            )))?;
        let files = log.live_files(log.latest());
        let target = self.cfg.target_file_size.max(1);
        let small = target / 2;
        let mut bins: Vec<Vec<AddFile>> = Vec::new();
        let mut cur: Vec<AddFile> = Vec::new();
        let mut cur_size = 0u64;
        for f in files {
            if f.size >= small || cur_size + f.size > target {
                if cur.len() > 1 {
                    bins.push(std::mem::take(&mut cur));
                }
                cur.clear();
                cur_size = 0;
                if f.size >= small {
                    continue;
                }
            }
            cur_size += f.size;
            cur.push(f);
        }
        if cur.len() > 1 {
            bins.push(cur);
        }
        if bins.is_empty() {
            return Ok(CompactReport::default());
        }
        let snapshot = table
            .snapshot()
            .map_err(Error::delta(format!("feature view '{view}'")))?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| Error::delta(format!("feature view '{view}'"))(e.into()))?;
        let schema = Arc::new(schema);
        let store = table.log_store().object_store(None);
        let now = Utc::now().timestamp_millis();
        let mut actions = Vec::new();
        let mut report = CompactReport::default();
        for bin in bins {
            let mut writer = RecordBatchWriter::for_table(&table)
                .map_err(Error::delta(format!("compacting feature view '{view}'")))?
                .with_target_file_size(0);
            for f in &bin {
                let batches = read_whole_file(&store, &f.path, f.size, &schema, view).await?;
                for b in batches {
                    report.rows_rewritten += b.num_rows() as u64;
                    writer
                        .write(b)
                        .await
                        .map_err(Error::delta(format!("compacting feature view '{view}'")))?;
                }
                actions.push(Action::Remove(Remove {
                    path: f.path.clone(),
                    data_change: false,
                    deletion_timestamp: Some(now),
                    extended_file_metadata: Some(true),
                    partition_values: Some(HashMap::new()),
                    size: i64::try_from(f.size).ok(),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                }));
                report.files_removed += 1;
            }
            let first = bin.first().map_or((0, 0), |f| f.order);
            for mut add in writer
                .flush()
                .await
                .map_err(Error::delta(format!("compacting feature view '{view}'")))?
            {
                add.data_change = false;
                add.tags = Some(HashMap::from([(
                    ORDER_TAG.to_owned(),
                    Some(format!("{}.{}", first.0, first.1)),
                )]));
                actions.push(Action::Add(add));
                report.files_added += 1;
            }
        }
        let finalized = CommitBuilder::default()
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: i64::try_from(target).unwrap_or(i64::MAX),
                },
            )
            .await
            .map_err(Error::delta(format!(
                "committing the compaction of feature view '{view}'"
            )))?;
        report.version = Some(finalized.version());
        Ok(report)
    }

    pub(crate) async fn vacuum(
        &self,
        view: &str,
        retention: Duration,
        force: bool,
    ) -> CoreResult<VacuumReport> {
        if retention < MIN_VACUUM_RETENTION && !force {
            return Err(fstore_core::Error::invalid(format!(
                "{BACKEND}: vacuum of feature view '{view}' with a retention of {retention:?} is below the \
                 7-day minimum: it would delete files that running readers, time travel and change-log \
                 scans may still need. Pass force = true to do it anyway"
            )));
        }
        let mut table = self.unloaded(view)?;
        if Self::read_commit(&table.log_store(), view, 0)
            .await?
            .is_none()
        {
            return Ok(VacuumReport::default());
        }
        table.load().await.map_err(Error::delta(format!(
            "loading table of feature view '{view}'"
        )))?;
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(!force)
            .await
            .map_err(Error::delta(format!("vacuuming feature view '{view}'")))?;
        Ok(VacuumReport {
            files_deleted: metrics.files_deleted.len() as u64,
        })
    }

    pub(crate) async fn delete_view(&self, view: &str) -> CoreResult<()> {
        let table = self.unloaded(view)?;
        let store = table.log_store().object_store(None);
        let paths = store.list(None).map_ok(|m| m.location).boxed();
        store
            .delete_stream(paths)
            .try_collect::<Vec<_>>()
            .await
            .map_err(Error::store(format!(
                "deleting the table of feature view '{view}'"
            )))?;
        if let Ok(mut m) = self.logs.lock() {
            m.remove(view);
        }
        Ok(())
    }
}

enum WriteErr {
    Retry(Error),
    Fatal(fstore_core::Error),
}

impl WriteErr {
    fn delta(view: &str, e: deltalake::DeltaTableError) -> Self {
        let e = Error::delta(format!("appending to feature view '{view}'"))(e);
        if e.is_conflict() {
            Self::Retry(e)
        } else {
            Self::Fatal(e.into())
        }
    }
}

impl From<fstore_core::Error> for WriteErr {
    fn from(e: fstore_core::Error) -> Self {
        Self::Fatal(e)
    }
}

/// Inclusive micro bounds of a range (exclusive ends moved by one micro).
fn bounds(r: &TimeRange) -> (i64, i64) {
    let lo = match r.start {
        Bound::Unbounded => i64::MIN,
        Bound::Included(t) => to_micros(t),
        Bound::Excluded(t) => to_micros(t).saturating_add(1),
    };
    let hi = match r.end {
        Bound::Unbounded => i64::MAX,
        Bound::Included(t) => to_micros(t),
        Bound::Excluded(t) => to_micros(t).saturating_sub(1),
    };
    (lo, hi)
}

fn object_path(view: &str, path: &str) -> CoreResult<Path> {
    Path::from_url_path(path).map_err(|e| {
        fstore_core::Error::backend(
            BACKEND,
            format!("feature view '{view}': bad data file path '{path}'"),
            e,
        )
    })
}

fn open_err(
    view: &str,
    path: &str,
) -> impl FnOnce(parquet::errors::ParquetError) -> fstore_core::Error {
    let msg = format!("reading data file '{path}' of feature view '{view}'");
    move |e| {
        if e.to_string().contains("not found") || e.to_string().contains("NotFound") {
            fstore_core::Error::not_found(
                "data file",
                format!(
                    "{msg}: it was removed (vacuumed?); time travel and change-log scans cannot reach before the last vacuum"
                ),
            )
        } else {
            Error::parquet(msg)(e).into()
        }
    }
}

async fn read_whole_file(
    store: &Arc<dyn ObjectStore>,
    path: &str,
    size: u64,
    schema: &SchemaRef,
    view: &str,
) -> CoreResult<Vec<RecordBatch>> {
    let reader = StoreReader::new(Arc::clone(store), object_path(view, path)?, size);
    let stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(open_err(view, path))?
        .build()
        .map_err(open_err(view, path))?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(open_err(view, path))?;
    batches
        .iter()
        .map(|b| {
            let cols = schema
                .fields()
                .iter()
                .map(|f| match b.column_by_name(f.name()) {
                    Some(c) => conform(c, f.data_type(), f.name()),
                    None => Ok(new_null_array(f.data_type(), b.num_rows())),
                })
                .collect::<CoreResult<Vec<_>>>()?;
            Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
        })
        .collect()
}

fn stat_i64(s: Option<&Statistics>) -> (Option<i64>, Option<i64>) {
    match s {
        Some(Statistics::Int64(v)) => (v.min_opt().copied(), v.max_opt().copied()),
        _ => (None, None),
    }
}

impl ScanCtx {
    /// Opens one data file: prunes its row groups by event-time statistics and
    /// projects to the requested columns present in the file.
    async fn open(self, f: AddFile) -> CoreResult<BoxStream<'static, CoreResult<RecordBatch>>> {
        let path = f.path.clone();
        let reader = StoreReader::new(
            Arc::clone(&self.store),
            object_path(&self.view, &path)?,
            f.size,
        );
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(open_err(&self.view, &path))?;
        let file_schema = Arc::clone(builder.schema());
        let parquet_schema = builder.parquet_schema();
        let meta = Arc::clone(builder.metadata());
        let (lo, hi) = bounds(&self.range);
        let leaf_of = |name: &str| {
            (0..parquet_schema.num_columns())
                .find(|i| parquet_schema.column(*i).path().parts() == [name])
        };
        let ev_leaf = leaf_of(&self.ev_col);
        let row_groups: Vec<usize> = (0..meta.num_row_groups())
            .filter(|rg| {
                let Some(leaf) = ev_leaf else { return true };
                let (min, max) = stat_i64(meta.row_group(*rg).column(leaf).statistics());
                !(max.is_some_and(|m| m < lo) || min.is_some_and(|m| m > hi))
            })
            .collect();
        let roots: Vec<usize> = self
            .out_schema
            .fields()
            .iter()
            .filter_map(|f| file_schema.index_of(f.name()).ok())
            .collect();
        let mask = ProjectionMask::roots(parquet_schema, roots);
        let stream = builder
            .with_row_groups(row_groups)
            .with_projection(mask)
            .with_batch_size(self.batch_rows)
            .build()
            .map_err(open_err(&self.view, &path))?;
        let view = self.view.clone();
        Ok(Box::pin(stream.map(move |r| {
            let b = r.map_err(open_err(&view, &path))?;
            self.finish(&b)
        })))
    }

    /// Filters one batch to the time range and conforms it to the output schema.
    fn finish(&self, b: &RecordBatch) -> CoreResult<RecordBatch> {
        let ev = b.column_by_name(&self.ev_col).ok_or_else(|| {
            fstore_core::Error::backend_msg(
                BACKEND,
                format!(
                    "feature view '{}': a data file lacks the event timestamp column '{}'",
                    self.view, self.ev_col
                ),
            )
        })?;
        let ev = timestamp_micros(ev.as_ref(), &self.ev_col, true)?;
        let cols = self
            .out_schema
            .fields()
            .iter()
            .map(|f| match b.column_by_name(f.name()) {
                Some(c) => conform(c, f.data_type(), f.name()),
                None => Ok(new_null_array(f.data_type(), b.num_rows())),
            })
            .collect::<CoreResult<Vec<_>>>()?;
        let projected = RecordBatch::try_new(Arc::clone(&self.out_schema), cols)?;
        if ev.iter().all(|t| self.range.contains_micros(*t)) {
            return Ok(projected);
        }
        let mask = BooleanArray::from(
            ev.iter()
                .map(|t| self.range.contains_micros(*t))
                .collect::<Vec<_>>(),
        );
        Ok(arrow_select::filter::filter_record_batch(
            &projected, &mask,
        )?)
    }
}

/// Parquet reads through the table's object store (ranged GETs; the footer is
/// fetched with one 64 KiB suffix-sized read when possible).
struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl StoreReader {
    fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size }
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move { Ok(self.store.get_range(&self.path, range).await?) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move { Ok(self.store.get_ranges(&self.path, &ranges).await?) })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        })
    }
}

#[cfg(test)]
fn micros_to_dt(m: i64) -> DateTime<Utc> {
    fstore_core::time::from_micros(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_max_is_widened_for_millisecond_truncation() {
        let line = r#"{"add":{"path":"a.parquet","size":10,"dataChange":true,"modificationTime":0,"partitionValues":{},"stats":"{\"numRecords\":2,\"minValues\":{\"ts\":\"2024-01-01T00:00:00.001Z\"},\"maxValues\":{\"ts\":\"2024-01-01T00:00:01Z\"}}"}}"#;
        let c = parse_commit(line.as_bytes(), 3, Some("ts")).unwrap();
        let a = &c.adds[0];
        assert_eq!(a.rows, Some(2));
        assert_eq!(a.order, (3, 0));
        assert_eq!(
            micros_to_dt(a.ev_min.unwrap()).timestamp_subsec_micros(),
            1_000
        );
        assert_eq!(a.ev_max.unwrap() % 1_000_000, 999);
    }

    #[test]
    fn order_tag_and_removes_are_parsed() {
        let text = concat!(
            r#"{"remove":{"path":"old.parquet","dataChange":false}}"#,
            "\n",
            r#"{"add":{"path":"new.parquet","size":1,"dataChange":false,"modificationTime":0,"partitionValues":{},"tags":{"fstore.order":"2.5"}}}"#
        );
        let c = parse_commit(text.as_bytes(), 9, None).unwrap();
        assert_eq!(c.removes, vec!["old.parquet".to_owned()]);
        assert_eq!(c.adds[0].order, (2, 5));
        assert!(!c.adds[0].data_change);
    }

    #[test]
    fn view_names_are_checked() {
        for ok in ["driver_stats", "v-1.2", "A"] {
            check_view_name(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", ".hidden", "_fstore_registry", "spa ce"] {
            let e = check_view_name(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn exclusive_bounds_move_by_one_micro() {
        let t = fstore_core::time::from_micros(10);
        assert_eq!(bounds(&TimeRange::after_until(Some(t), t)), (11, 10));
        assert_eq!(bounds(&TimeRange::all()), (i64::MIN, i64::MAX));
    }
}
