//! The point-in-time join as a DataFusion plan ([semantics §12](crate::docs::semantics)):
//! the same answer as [`point_in_time_join`](crate::pit::point_in_time_join), cell
//! for cell, for inputs that need not fit in memory.
//!
//! # Plan
//! [`JoinAlgorithm::Hash`] (the default):
//! ```text
//! spine source ─ PitPrepareExec(spine: seq, t)              view source ─ project ─ PitPrepareExec(view: wseq, times; null keys dropped)
//!   └ per view: RepartitionExec(hash keys, N) ─┐              RepartitionExec(hash keys, N) ─┘
//!               PitHashJoinExec (collect a partition, pure join in memory; K at once) ─ next view …
//! CoalescePartitionsExec ─ SortExec(seq) ─ ProjectionExec (drop engine columns)
//! ```
//! [`JoinAlgorithm::Sort`]:
//! ```text
//! spine source ─ PitPrepareExec(spine: seq, t)                      view source ─ project ─ PitPrepareExec(view: wseq, times; null keys dropped)
//!   └ per view: RepartitionExec(hash keys, N) ─ SortExec(keys, t) ─┐   RepartitionExec(hash keys, N) ─ SortExec(keys, avail) ─┘
//!               PitJoinExec (streaming merge per partition) ─ next view …
//! SortExec(seq, per partition) ─ SortPreservingMergeExec(seq) ─ ProjectionExec (drop engine columns)
//! ```
//! DataFusion's repartition (and, for the sort join, its sort) do the heavy
//! lifting and spill to disk under the memory pool of the [`TaskContext`]. The
//! only custom nodes are [`PitPrepareExec`], [`PitHashJoinExec`] and
//! [`PitJoinExec`]; each is rebuilt from its children and a serde-serializable
//! config, which is what a `PhysicalExtensionCodec` needs.
//!
//! # Example
//! ```
//! # async fn demo() -> fstore_core::Result<()> {
//! use fstore_core::engine::{self, EngineConfig};
//! use fstore_core::pit::{PitOptions, PitView};
//! # let (spine, views): (Vec<fstore_core::arrow_array::RecordBatch>, Vec<PitView<'_>>) = (vec![], vec![]);
//! # if spine.is_empty() { return Ok(()); }
//! let out = engine::point_in_time_join(&spine, "ts", &views, &PitOptions::default(),
//!     &EngineConfig::default().with_partitions(4).with_memory_limit(Some(256 << 20))).await?;
//! # let _ = out;
//! # Ok(()) }
//! ```

pub mod agg;
mod exec;
mod hash;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{Field, SchemaRef};
use datafusion::arrow::compute::SortOptions;
use datafusion::common::DataFusionError;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, Partitioning, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::pit::{PitOptions, PitView};
use crate::time::duration_micros;

use exec::SEQ_ROW_BITS;
pub use exec::{
    AVAIL_COLUMN, CREATED_COLUMN, EVENT_COLUMN, PitJoinConfig, PitJoinExec, PitPrepareExec,
    PrepareConfig, PrepareRole, RESERVED_PREFIX, SEQ_BASE_COLUMN, SEQ_COLUMN, TIME_COLUMN,
    WRITE_SEQ_COLUMN,
};
pub use hash::{PitHashJoinConfig, PitHashJoinExec};

/// Backend name in the errors of the engine.
pub const BACKEND: &str = "datafusion";

/// One view's input to [`pit_join_plan`]: [`PitView`] with a plan instead of batches.
#[derive(Debug, Clone)]
pub struct EngineView {
    /// View name (used for `view__feature` output names and in errors).
    pub name: String,
    /// Join-key columns (same names and types in the spine).
    pub join_keys: Vec<String>,
    /// Event-timestamp column of the feature rows.
    pub event_timestamp_column: String,
    /// Optional created-timestamp column (tie-break, cutoff).
    pub created_timestamp_column: Option<String>,
    /// Lookback window; `None` = unbounded. Inclusive at both ends.
    pub ttl: Option<Duration>,
    /// The requested features, in output order, with their types.
    pub features: Vec<Field>,
    /// The feature rows (plans from [`memory_plan`] / [`parquet_plan`] carry an
    /// extra [`SEQ_BASE_COLUMN`]: never list it as a feature). Partitions are contiguous runs of the write order,
    /// partition 0 first (as [`memory_plan`] and [`parquet_plan`] build them): the
    /// last tie-break is "partition, then row inside the partition".
    pub input: Arc<dyn ExecutionPlan>,
}

/// How the engine runs: partitions, batch size, memory limit, spill directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Hash partitions of each join (the parallelism). Default: the number of cores.
    pub partitions: usize,
    /// Rows per batch inside the plan. Default 8192.
    pub batch_size: usize,
    /// Memory pool limit in bytes (operators that spill share half of it, divided
    /// among those running; merges of spill files may use the rest); `None` =
    /// unbounded.
    pub memory_limit: Option<usize>,
    /// Where sorts and repartitions spill; `None` = the OS temporary directory.
    pub spill_dir: Option<PathBuf>,
    /// Spill files one merge pass opens under a memory limit (more are merged in
    /// several passes). Default 8.
    pub spill_merge_fan_in: usize,
    /// How each view is joined. Default [`JoinAlgorithm::Hash`].
    pub join: JoinAlgorithm,
    /// With [`JoinAlgorithm::Hash`]: partitions of one join that collect and
    /// join at once (the others wait in the repartition, spilled to disk under a
    /// memory limit). Default: the number of cores.
    pub hash_concurrency: usize,
}

/// How [`pit_join_plan_with`] joins each view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JoinAlgorithm {
    /// Hash-partition both sides (no sort) and join each partition in memory
    /// with the pure join ([`PitHashJoinExec`]), at most
    /// [`EngineConfig::hash_concurrency`] partitions at once. Every partition
    /// (its spine rows and its view's feature rows) must fit in the memory
    /// pool next to the others joining at once: more partitions make them
    /// smaller; a partition that does not fit is an error naming the view,
    /// the partition and the sizes.
    #[default]
    Hash,
    /// Hash-partition and sort both sides (DataFusion's spilling sort), then a
    /// streaming merge ([`PitJoinExec`]): any partition size, slower.
    Sort,
}

impl std::str::FromStr for JoinAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hash" => Ok(Self::Hash),
            "sort" => Ok(Self::Sort),
            other => Err(Error::invalid(format!(
                "unknown join algorithm '{other}' (expected 'hash' or 'sort')"
            ))),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            partitions: std::thread::available_parallelism().map_or(1, |n| n.get()),
            batch_size: 8192,
            memory_limit: None,
            spill_dir: None,
            spill_merge_fan_in: 8,
            join: JoinAlgorithm::default(),
            hash_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl EngineConfig {
    /// Sets [`EngineConfig::partitions`] (at least 1).
    pub fn with_partitions(mut self, n: usize) -> Self {
        self.partitions = n.max(1);
        self
    }
    /// Sets [`EngineConfig::batch_size`] (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Sets [`EngineConfig::memory_limit`].
    pub fn with_memory_limit(mut self, bytes: Option<usize>) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// Sets [`EngineConfig::spill_merge_fan_in`] (at least 2).
    pub fn with_spill_merge_fan_in(mut self, n: usize) -> Self {
        self.spill_merge_fan_in = n.max(2);
        self
    }
    /// Sets [`EngineConfig::join`].
    pub fn with_join(mut self, join: JoinAlgorithm) -> Self {
        self.join = join;
        self
    }
    /// Sets [`EngineConfig::hash_concurrency`] (at least 1).
    pub fn with_hash_concurrency(mut self, n: usize) -> Self {
        self.hash_concurrency = n.max(1);
        self
    }
    /// Sets [`EngineConfig::spill_dir`].
    pub fn with_spill_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.spill_dir = dir;
        self
    }

    /// A DataFusion session with this config: batch size, target partitions, a
    /// memory pool of `memory_limit` bytes (half shared by the operators that
    /// spill, divided among those holding memory; the merges of spill files,
    /// which cannot spill, may use all that is left), spilling to
    /// `spill_dir` with at most `spill_merge_fan_in` files per merge pass.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the spill directory does not exist or cannot be
    /// written (checked by creating a file in it).
    pub fn session(&self) -> Result<SessionContext> {
        let mut config = SessionConfig::new()
            .with_batch_size(self.batch_size)
            .with_target_partitions(self.partitions);
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = self.memory_limit {
            // Every sort of the plan (two per view, one at the end, per partition)
            // reserves this much up front for merging its spill files; DataFusion's
            // default (10 MiB) alone would exceed small pools.
            let sorts = 64 * self.partitions.max(1);
            let exec = &mut config.options_mut().execution;
            exec.sort_spill_reservation_bytes = exec
                .sort_spill_reservation_bytes
                .min((limit / sorts).max(32 << 10));
            // Runs sorted in place are spilled as one batch, and a merge holds a
            // batch per spill file: keep those batches small under small pools.
            exec.sort_in_place_threshold_bytes = exec
                .sort_in_place_threshold_bytes
                .min((limit / sorts).max(32 << 10));
            // The top consumers are named when an allocation fails.
            rt = rt.with_memory_pool(Arc::new(TrackConsumersPool::new(
                SplitPool::new(limit),
                std::num::NonZeroUsize::new(8).unwrap_or(std::num::NonZeroUsize::MIN),
            )));
        }
        let mut disk = DiskManagerBuilder::default();
        if let Some(dir) = &self.spill_dir {
            check_writable(dir)?;
            disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
        }
        if self.memory_limit.is_some() {
            // A merge of spill files reserves a batch per file it opens, and the
            // plan's sorts merge concurrently: an unbounded fan-in lets the first
            // merge take the whole pool and starve the others.
            disk = disk.with_max_spill_merge_fan_in(self.spill_merge_fan_in);
        }
        rt = rt.with_disk_manager_builder(disk);
        let rt = rt.build_arc().map_err(from_df)?;
        Ok(SessionContext::new_with_config_rt(config, rt))
    }
}

/// The engine's memory pool. Operators that can spill (sorts, repartitions) share
/// half of the limit: each may grow to that half divided by the spilling
/// consumers that are *active* (hold memory) counting itself, and spills when it
/// reaches that share. A consumer below its base share (the half divided by every
/// registered spilling consumer, idle or not) always gets up to it, as in a fair
/// pool, so one that starts while the others hold the whole half can still take
/// its first batch; the others spill at their next allocation, being above the new
/// share. Idle consumers (the later views' sorts, the final sort, empty
/// repartition buffers) thus take nothing from the running sorts. A spilling
/// consumer that holds nothing may take its first allocation from whatever the
/// whole limit has left (DataFusion 55's sort fails when refused with nothing in
/// memory; with many small consumers the base share can be below one batch).
/// Operators that
/// cannot spill (the merges of spill files, one batch per open file) may use
/// whatever the whole limit has left. The total never exceeds the limit.
/// With one shared pool, sorts that filled it early starve the merges that start
/// later; with a fixed half for the merges, concurrent merges failed while the
/// spill half stood idle (a CI run: merges at 8 of 8 MB, sorts at 3.3 of 8 MB);
/// with the half divided over every registered consumer, sorts of data that fit
/// the limit spilled gigabytes (M shape, 4 GiB: ~28 registered, ~3 running).
#[derive(Debug)]
struct SplitPool {
    state: std::sync::Mutex<PoolState>,
    limit: usize,
}

#[derive(Debug, Default)]
struct PoolState {
    spillable: usize,
    unspillable: usize,
    /// Registered spilling consumers.
    spillers: usize,
    /// Bytes held by each spilling consumer that holds any (by consumer id: a
    /// consumer's reservations may be split, its share is for all of them).
    held: HashMap<usize, usize>,
}

impl PoolState {
    fn add_spillable(&mut self, id: usize, bytes: usize) {
        if bytes > 0 {
            self.spillable += bytes;
            *self.held.entry(id).or_default() += bytes;
        }
    }

    fn remove_spillable(&mut self, id: usize, bytes: usize) {
        self.spillable = self.spillable.saturating_sub(bytes);
        if let Some(h) = self.held.get_mut(&id) {
            *h = h.saturating_sub(bytes);
            if *h == 0 {
                self.held.remove(&id);
            }
        }
    }
}

impl SplitPool {
    fn new(limit: usize) -> Self {
        Self {
            state: std::sync::Mutex::new(PoolState::default()),
            limit,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Each update is a few counter changes that cannot panic halfway: a panic
        // elsewhere cannot leave the state half-written, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes a spilling consumer holding `held` may still take: up to its base
    /// share (half of the limit over every registered spilling consumer), or up
    /// to its share among the active ones while the spill half has room; never
    /// past the whole limit.
    fn spill_available(&self, s: &PoolState, id: usize, held: usize) -> usize {
        let half = self.limit / 2;
        let free = self.limit.saturating_sub(s.spillable + s.unspillable);
        let base = (half / s.spillers.max(1)).saturating_sub(held);
        let active = s.held.len() + usize::from(!s.held.contains_key(&id));
        let extra = (half / active)
            .saturating_sub(held)
            .min(half.saturating_sub(s.spillable));
        base.max(extra).min(free)
    }

    fn exhausted(
        &self,
        r: &MemoryReservation,
        additional: usize,
        available: usize,
    ) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{} ({} bytes reserved, {}) failed to allocate {additional} more bytes: \
             {available} bytes available to it within the engine memory limit of {} bytes",
            r.consumer().name(),
            r.size(),
            if r.consumer().can_spill() {
                "can spill"
            } else {
                "cannot spill"
            },
            self.limit
        ))
    }
}

impl std::fmt::Display for SplitPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        write!(
            f,
            "fstore-engine(limit: {}, spillable: {} in {} consumers, unspillable: {})",
            self.limit,
            s.spillable,
            s.held.len(),
            s.unspillable
        )
    }
}

impl MemoryPool for SplitPool {
    fn name(&self) -> &str {
        "fstore-engine"
    }
    fn register(&self, c: &MemoryConsumer) {
        if c.can_spill() {
            self.state().spillers += 1;
        }
    }
    fn unregister(&self, c: &MemoryConsumer) {
        if c.can_spill() {
            let mut s = self.state();
            s.spillers = s.spillers.saturating_sub(1);
        }
    }
    fn grow(&self, r: &MemoryReservation, additional: usize) {
        let mut s = self.state();
        if r.consumer().can_spill() {
            s.add_spillable(r.consumer().id(), additional);
        } else {
            s.unspillable += additional;
        }
    }
    fn shrink(&self, r: &MemoryReservation, shrink: usize) {
        let mut s = self.state();
        if r.consumer().can_spill() {
            s.remove_spillable(r.consumer().id(), shrink);
        } else {
            s.unspillable = s.unspillable.saturating_sub(shrink);
        }
    }
    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> datafusion::common::Result<()> {
        let mut s = self.state();
        if r.consumer().can_spill() {
            let id = r.consumer().id();
            let held = s.held.get(&id).copied().unwrap_or(0);
            let available = if held == 0 {
                // A first allocation: DataFusion 55 fails hard when a sort holding
                // nothing is refused, and a repartition queue holding nothing
                // sends the batch on in memory; either takes what the limit has left.
                self.limit.saturating_sub(s.spillable + s.unspillable)
            } else {
                self.spill_available(&s, id, held)
            };
            if additional > available {
                return Err(self.exhausted(r, additional, available));
            }
            s.add_spillable(id, additional);
        } else {
            let free = self.limit.saturating_sub(s.spillable + s.unspillable);
            if additional > free {
                return Err(self.exhausted(r, additional, free));
            }
            s.unspillable += additional;
        }
        Ok(())
    }
    fn reserved(&self) -> usize {
        let s = self.state();
        s.spillable + s.unspillable
    }
    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// Fails with a clear error when `dir` cannot hold spill files.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".fstore-spill-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            Error::invalid(format!(
                "spill directory '{}' cannot be written: {e}",
                dir.display()
            ))
        })
}

/// Maps a DataFusion error back to fstore's: an fstore error raised inside the
/// plan comes back as itself (an [`Error::InvalidInput`] keeps its message);
/// anything else is [`Error::Backend`] with backend [`BACKEND`].
pub fn from_df(e: DataFusionError) -> Error {
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(Error::InvalidInput(m)) = inner.downcast_ref::<Error>()
    {
        return Error::InvalidInput(m.clone());
    }
    Error::Backend {
        backend: BACKEND,
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// In-memory batches as a plan of `partitions` contiguous runs (in order), each
/// with the sequence base `p << 40` (`p`: its ordinal) as the
/// [`SEQ_BASE_COLUMN`], so the engine's sequence numbers follow the slice's
/// row order.
///
/// # Errors
/// A batch whose schema differs from `schema`.
pub fn memory_plan(
    batches: &[RecordBatch],
    schema: SchemaRef,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let partitions = partitions.max(1);
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let per = total.div_ceil(partitions).max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    let mut seen = 0usize;
    for b in batches {
        let mut off = 0;
        while off < b.num_rows() {
            let p = ((seen + off) / per).min(partitions - 1);
            let room = per * (p + 1) - (seen + off);
            let len = room.min(b.num_rows() - off);
            let len = if p == partitions - 1 {
                b.num_rows() - off
            } else {
                len
            };
            parts[p].push(b.slice(off, len));
            off += len;
        }
        seen += b.num_rows();
    }
    // Each slice carries its base, so sequences follow the slice order
    // whichever partition or task reads it.
    let schema = with_seq_base(&schema);
    let parts = parts
        .into_iter()
        .enumerate()
        .map(|(p, batches)| {
            batches
                .into_iter()
                .map(|b| {
                    let n = b.num_rows();
                    let mut cols = b.columns().to_vec();
                    cols.push(Arc::new(datafusion::arrow::array::UInt64Array::from(
                        vec![(p as u64) << SEQ_ROW_BITS; n],
                    )));
                    RecordBatch::try_new_with_options(
                        Arc::clone(&schema),
                        cols,
                        &arrow_array::RecordBatchOptions::new().with_row_count(Some(n)),
                    )
                    .map_err(|e| {
                        Error::invalid(format!("a batch does not match the given schema: {e}"))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(&parts, schema, None).map_err(from_df)?)
}

/// `schema` with the [`SEQ_BASE_COLUMN`] appended.
fn with_seq_base(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<arrow_schema::FieldRef> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        SEQ_BASE_COLUMN,
        arrow_schema::DataType::UInt64,
        false,
    )));
    Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// `schema` without the [`SEQ_BASE_COLUMN`].
fn without_seq_base(schema: &SchemaRef) -> SchemaRef {
    if schema.index_of(SEQ_BASE_COLUMN).is_err() {
        return Arc::clone(schema);
    }
    let fields: Vec<arrow_schema::FieldRef> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ_BASE_COLUMN)
        .cloned()
        .collect();
    Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// Parquet files as a plan of up to `partitions` partitions that read
/// contiguous pieces of the files, in the given order: the row groups of all
/// files, one after the other, are cut into `partitions` runs of about equal
/// uncompressed size, and a run is read as one piece per file it touches (a
/// byte range that holds exactly those row groups). Each piece carries its
/// sequence base as the [`SEQ_BASE_COLUMN`]: `f << 40 | s` for the piece of
/// file `f` (its ordinal in `files`) that starts at row `s` of that file; the
/// engine's sequence numbers, `base + row within the piece`, thus follow "file
/// order, then row order" wherever and by whichever partition a piece is read,
/// and every partition scans and decodes at once.
///
/// # Errors
/// No files, a file that cannot be opened or is not Parquet, files whose schemas
/// differ, more than 2^24 files or a file of 2^40 rows or more.
pub fn parquet_plan(files: &[PathBuf], partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
    let first = files
        .first()
        .ok_or_else(|| Error::invalid("no Parquet files given"))?;
    if files.len() as u64 >= 1 << (64 - SEQ_ROW_BITS) {
        return Err(Error::invalid(format!(
            "{} Parquet files: the engine numbers at most 2^{} files",
            files.len(),
            64 - SEQ_ROW_BITS
        )));
    }
    let mut schema: Option<SchemaRef> = None;
    let mut scanned: Vec<ScannedFile> = Vec::with_capacity(files.len());
    for f in files {
        let abs = std::path::absolute(f)
            .map_err(|e| Error::invalid(format!("'{}': {e}", f.display())))?;
        let file = std::fs::File::open(&abs)
            .map_err(|e| Error::invalid(format!("cannot open '{}': {e}", f.display())))?;
        let size = file
            .metadata()
            .map_err(|e| Error::invalid(format!("'{}': {e}", f.display())))?
            .len();
        let meta = ArrowReaderMetadata::load(&file, Default::default())
            .map_err(|e| Error::invalid(format!("'{}' is not a Parquet file: {e}", f.display())))?;
        let s = Arc::clone(meta.schema());
        match &schema {
            None => schema = Some(s),
            Some(s0) if s0.fields() != s.fields() => {
                return Err(Error::invalid(format!(
                    "'{}' has a different schema from '{}'",
                    f.display(),
                    first.display()
                )));
            }
            Some(_) => {}
        }
        let path = datafusion::object_store::path::Path::from_absolute_path(&abs)
            .map_err(|e| Error::invalid(format!("'{}': {e}", f.display())))?;
        let groups = row_groups(meta.metadata().row_groups(), size);
        let rows: u64 = groups.iter().map(|g| g.rows).sum();
        if rows >= 1 << SEQ_ROW_BITS {
            return Err(Error::invalid(format!(
                "'{}' has {rows} rows: the engine numbers at most 2^{SEQ_ROW_BITS} rows per file",
                f.display()
            )));
        }
        scanned.push(ScannedFile {
            path: path.to_string(),
            size,
            groups,
        });
    }
    let Some(schema) = schema else {
        return Err(Error::invalid("no Parquet files given"));
    };
    let groups: Vec<FileGroup> = pieces(&scanned, partitions.max(1))
        .into_iter()
        .map(|run| {
            FileGroup::new(
                run.into_iter()
                    .map(|p| {
                        let f = &scanned[p.file];
                        let mut pf = PartitionedFile::new(f.path.clone(), f.size);
                        if let Some((start, end)) = p.range {
                            pf = pf.with_range(start, end);
                        }
                        pf.partition_values =
                            vec![datafusion::common::ScalarValue::UInt64(Some(p.base))];
                        pf
                    })
                    .collect(),
            )
        })
        .collect();
    let table_schema =
        datafusion::datasource::table_schema::TableSchema::builder(Arc::clone(&schema))
            .with_table_partition_cols(vec![Arc::new(Field::new(
                SEQ_BASE_COLUMN,
                arrow_schema::DataType::UInt64,
                false,
            ))])
            .build();
    let source = Arc::new(ParquetSource::new(table_schema));
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
        .with_file_groups(groups)
        .with_preserve_order(true)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// A Parquet file as [`parquet_plan`] cuts it.
struct ScannedFile {
    path: String,
    size: u64,
    groups: Vec<RowGroupSpan>,
}

/// One row group of a file: its rows, its uncompressed size (the weight of the
/// cut) and the byte offset DataFusion's scan tests against a piece's range.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RowGroupSpan {
    rows: u64,
    bytes: u64,
    /// `None` when the file's row groups cannot be told apart by byte range
    /// (offsets not strictly increasing): the file is then read whole.
    offset: Option<i64>,
}

/// The row groups of a file of `size` bytes, as [`check_offsets`] leaves them.
fn row_groups(
    groups: &[datafusion::parquet::file::metadata::RowGroupMetaData],
    size: u64,
) -> Vec<RowGroupSpan> {
    let spans = groups
        .iter()
        .map(|g| RowGroupSpan {
            rows: u64::try_from(g.num_rows()).unwrap_or(0),
            bytes: u64::try_from(g.total_byte_size()).unwrap_or(0).max(1),
            offset: (g.num_columns() > 0).then(|| {
                let c = g.column(0);
                c.dictionary_page_offset().unwrap_or(c.data_page_offset())
            }),
        })
        .collect();
    check_offsets(spans, size)
}

/// DataFusion's Parquet scan reads a row group of a ranged file iff the offset
/// of its first column's first page (the dictionary page if any, else the
/// first data page) lies in the range: a file's row groups can be read by
/// range only when these offsets strictly increase from row group to row
/// group inside the file; otherwise every offset becomes `None` (the file is
/// read whole).
fn check_offsets(mut spans: Vec<RowGroupSpan>, size: u64) -> Vec<RowGroupSpan> {
    let offsets: Option<Vec<i64>> = spans.iter().map(|g| g.offset).collect();
    let ordered = offsets.is_some_and(|o| {
        o.windows(2).all(|w| w[0] < w[1])
            && o.first().is_none_or(|&x| x >= 0)
            && o.last()
                .is_none_or(|&x| u64::try_from(x).is_ok_and(|x| x < size))
    });
    if !ordered {
        for g in &mut spans {
            g.offset = None;
        }
    }
    spans
}

/// One piece of a [`parquet_plan`] partition: a file, the byte range holding
/// its row groups (`None`: the whole file) and its sequence base.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    file: usize,
    range: Option<(i64, i64)>,
    base: u64,
}

/// Cuts the row groups of `files` (in order) into at most `n` runs of about
/// equal weight and each run into one [`Piece`] per file it touches.
///
/// The sequence base of a piece is `file << 40 | rows of the file before the
/// piece`. A piece yields its rows in file order, and a scan may drop rows
/// (pruning) but never reorders them, so `base + row within the piece` is
/// strictly increasing in write order across pieces and files, whichever
/// partition reads which piece: the last tie-break of the join, "the row
/// written last" (semantics §5), is preserved, and the result does not depend
/// on the number of partitions (semantics §12).
fn pieces(files: &[ScannedFile], n: usize) -> Vec<Vec<Piece>> {
    let total: u64 = files
        .iter()
        .flat_map(|f| f.groups.iter().map(|g| g.bytes))
        .sum::<u64>()
        .max(1);
    let mut runs: Vec<Vec<Piece>> = Vec::new();
    // Weight placed so far; a new run starts where the weight before a row
    // group reaches the next multiple of total / n.
    let mut acc: u64 = 0;
    let next_run = |runs: &mut Vec<Vec<Piece>>, acc: u64| -> bool {
        let due = runs.is_empty()
            || (runs.len() < n
                && u128::from(acc) * n as u128 >= u128::from(total) * runs.len() as u128);
        if due {
            runs.push(Vec::new());
        }
        due
    };
    for (fi, f) in files.iter().enumerate() {
        let ordinal = (fi as u64) << SEQ_ROW_BITS;
        // A file whose row groups cannot be told apart by range is one piece.
        if f.groups.is_empty() || f.groups.iter().any(|g| g.offset.is_none()) {
            next_run(&mut runs, acc);
            if let Some(run) = runs.last_mut() {
                run.push(Piece {
                    file: fi,
                    range: None,
                    base: ordinal,
                });
            }
            acc += f.groups.iter().map(|g| g.bytes).sum::<u64>();
            continue;
        }
        let mut rows_before: u64 = 0;
        for (gi, g) in f.groups.iter().enumerate() {
            let start = g.offset.unwrap_or(0);
            let end = f
                .groups
                .get(gi + 1)
                .and_then(|next| next.offset)
                .unwrap_or(f.size as i64);
            let new_run = next_run(&mut runs, acc);
            if let Some(run) = runs.last_mut() {
                match run.last_mut() {
                    // The run continues this file's piece: extend it.
                    Some(Piece {
                        file,
                        range: Some((_, e)),
                        ..
                    }) if !new_run && *file == fi => *e = end,
                    _ => run.push(Piece {
                        file: fi,
                        range: Some((start, end)),
                        base: ordinal | rows_before,
                    }),
                }
            }
            rows_before += g.rows;
            acc += g.bytes;
        }
    }
    runs
}

/// A stream of batches (e.g. an offline store's scan) as a one-partition plan
/// that can be executed once; a second execution yields an error. Rows keep the
/// stream's order (the write order of a scan).
pub fn stream_plan(
    schema: SchemaRef,
    stream: futures::stream::BoxStream<'static, Result<RecordBatch>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let part = Arc::new(OnceStream {
        schema: Arc::clone(&schema),
        stream: std::sync::Mutex::new(Some(stream)),
    });
    Ok(Arc::new(
        StreamingTableExec::try_new(
            schema,
            vec![part],
            None,
            Vec::<LexOrdering>::new(),
            false,
            None,
        )
        .map_err(from_df)?,
    ))
}

struct OnceStream {
    schema: SchemaRef,
    stream: std::sync::Mutex<Option<futures::stream::BoxStream<'static, Result<RecordBatch>>>>,
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceStream").finish_non_exhaustive()
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().map(|mut s| s.take()).unwrap_or(None);
        let schema = Arc::clone(&self.schema);
        match taken {
            Some(stream) => Box::pin(RecordBatchStreamAdapter::new(
                schema,
                stream.map(|b| b.map_err(exec::external)),
            )),
            None => Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async {
                    Err(DataFusionError::Execution(
                        "a stream plan can be executed only once".into(),
                    ))
                }),
            )),
        }
    }
}

fn col(name: &str, plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(Arc::new(
        Column::new_with_schema(name, &plan.schema()).map_err(from_df)?,
    ))
}

fn ordering(exprs: Vec<Arc<dyn PhysicalExpr>>) -> Result<LexOrdering> {
    LexOrdering::new(
        exprs
            .into_iter()
            .map(|e| PhysicalSortExpr::new(e, SortOptions::default())),
    )
    .ok_or_else(|| Error::invalid("internal: empty sort order"))
}

/// The columns of a prepared view that the hash join reads: the keys, the
/// features, and the engine's write sequence, event and created times; the
/// input's own time columns (unless requested as features) and the
/// availability time (the hash join computes it) do not cross the shuffle.
fn hash_side(prepared: Arc<dyn ExecutionPlan>, v: &EngineView) -> Result<Arc<dyn ExecutionPlan>> {
    let ps = prepared.schema();
    let mut names: Vec<&str> = v.join_keys.iter().map(String::as_str).collect();
    names.extend(v.features.iter().map(|f| f.name().as_str()));
    names.extend([WRITE_SEQ_COLUMN, EVENT_COLUMN, CREATED_COLUMN]);
    let mut proj: Vec<ProjectionExpr> = Vec::with_capacity(names.len());
    for name in names {
        if proj.iter().any(|p| p.alias == name) {
            continue;
        }
        proj.push(ProjectionExpr {
            expr: Arc::new(Column::new_with_schema(name, &ps).map_err(from_df)?),
            alias: name.to_string(),
        });
    }
    Ok(Arc::new(
        ProjectionExec::try_new(proj, prepared).map_err(from_df)?,
    ))
}

/// Hash-partitions `input` by `keys` into `n` partitions (one partition when there
/// are no keys).
fn partition(
    input: Arc<dyn ExecutionPlan>,
    keys: &[String],
    n: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let key_exprs = keys
        .iter()
        .map(|k| col(k, &input))
        .collect::<Result<Vec<_>>>()?;
    Ok(if key_exprs.is_empty() {
        Arc::new(CoalescePartitionsExec::new(input))
    } else {
        Arc::new(
            RepartitionExec::try_new(input, Partitioning::Hash(key_exprs, n)).map_err(from_df)?,
        )
    })
}

/// [`partition`], then sorts each partition by `keys` then `time`.
fn partition_and_sort(
    input: Arc<dyn ExecutionPlan>,
    keys: &[String],
    time: &str,
    n: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let parted = partition(input, keys, n)?;
    let mut sort_exprs = keys
        .iter()
        .map(|k| col(k, &parted))
        .collect::<Result<Vec<_>>>()?;
    sort_exprs.push(col(time, &parted)?);
    Ok(Arc::new(
        SortExec::new(ordering(sort_exprs)?, parted).with_preserve_partitioning(true),
    ))
}

/// Builds the PIT join of `spine` and `views` as a DataFusion plan with exactly
/// the semantics of [`crate::pit::point_in_time_join`] ([semantics §5](crate::docs::semantics)).
///
/// The plan has one output partition, in spine order, with the spine's columns
/// then each view's requested features (named `feature` or `view__feature`).
/// `partitions` is the number of hash partitions of each join.
///
/// # Errors
/// Before any data is read, the errors of the pure join for the same schemas
/// ([`Error::InvalidInput`] naming the column: missing key, key type mismatch
/// naming both types, naive timestamps, unknown feature or wrong feature type,
/// output-name clash), and input columns using [`RESERVED_PREFIX`]. Null
/// timestamps are found while the data streams (the same message as the pure join).
pub fn pit_join_plan(
    spine: Arc<dyn ExecutionPlan>,
    spine_timestamp_column: &str,
    views: &[EngineView],
    options: &PitOptions,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    pit_join_plan_with(
        spine,
        spine_timestamp_column,
        views,
        options,
        &EngineConfig::default().with_partitions(partitions),
    )
}

/// [`pit_join_plan`] with the partitions, the join algorithm
/// ([`EngineConfig::join`]) and the hash join's concurrency of `config` (its
/// other fields are the session's: see [`EngineConfig::session`]).
///
/// # Errors
/// As [`pit_join_plan`].
pub fn pit_join_plan_with(
    spine: Arc<dyn ExecutionPlan>,
    spine_timestamp_column: &str,
    views: &[EngineView],
    options: &PitOptions,
    config: &EngineConfig,
) -> Result<Arc<dyn ExecutionPlan>> {
    let n = config.partitions.max(1);
    let spine_schema = without_seq_base(&spine.schema());
    // Schema-level validation by the pure join itself on empty inputs: the same
    // errors, and the output schema, before any heavy work.
    let empty_spine = RecordBatch::new_empty(Arc::clone(&spine_schema));
    let empties: Vec<[RecordBatch; 1]> = views
        .iter()
        .map(|v| [RecordBatch::new_empty(without_seq_base(&v.input.schema()))])
        .collect();
    let pit_views: Vec<PitView<'_>> = views
        .iter()
        .zip(&empties)
        .map(|(v, e)| PitView {
            name: v.name.clone(),
            join_keys: v.join_keys.clone(),
            event_timestamp_column: v.event_timestamp_column.clone(),
            created_timestamp_column: v.created_timestamp_column.clone(),
            ttl: v.ttl,
            features: v.features.clone(),
            batches: e,
        })
        .collect();
    let expected = crate::pit::point_in_time_join(
        std::slice::from_ref(&empty_spine),
        spine_timestamp_column,
        &pit_views,
        options,
    )?;
    let out_schema = expected.schema();

    let mut current: Arc<dyn ExecutionPlan> = Arc::new(
        PitPrepareExec::try_new(
            spine,
            PrepareConfig {
                role: PrepareRole::Spine {
                    timestamp_column: spine_timestamp_column.to_string(),
                },
                assume_utc: options.assume_utc,
            },
        )
        .map_err(from_df)?,
    );
    let n_spine_cols = spine_schema.fields().len();
    let mut out_names: Vec<String> = Vec::new();
    for v in views {
        // Only the columns the join needs cross the shuffle.
        let vs = v.input.schema();
        let mut needed: Vec<&str> = v.join_keys.iter().map(String::as_str).collect();
        needed.push(&v.event_timestamp_column);
        if let Some(c) = &v.created_timestamp_column {
            needed.push(c);
        }
        needed.extend(v.features.iter().map(|f| f.name().as_str()));
        if vs.index_of(SEQ_BASE_COLUMN).is_ok() {
            needed.push(SEQ_BASE_COLUMN);
        }
        let mut proj: Vec<ProjectionExpr> = Vec::new();
        for name in needed {
            if proj.iter().any(|p| p.alias == name) {
                continue;
            }
            proj.push(ProjectionExpr {
                expr: Arc::new(Column::new_with_schema(name, &vs).map_err(from_df)?),
                alias: name.to_string(),
            });
        }
        let projected: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(proj, Arc::clone(&v.input)).map_err(from_df)?);
        let prepared: Arc<dyn ExecutionPlan> = Arc::new(
            PitPrepareExec::try_new(
                projected,
                PrepareConfig {
                    role: PrepareRole::View {
                        view: v.name.clone(),
                        join_keys: v.join_keys.clone(),
                        event_timestamp_column: v.event_timestamp_column.clone(),
                        created_timestamp_column: v.created_timestamp_column.clone(),
                        created_cutoff: options.created_cutoff,
                    },
                    assume_utc: options.assume_utc,
                },
            )
            .map_err(from_df)?,
        );
        let features: Vec<(String, String)> = v
            .features
            .iter()
            .map(|f| {
                let out = if options.full_feature_names {
                    format!("{}__{}", v.name, f.name())
                } else {
                    f.name().clone()
                };
                (f.name().clone(), out)
            })
            .collect();
        out_names.extend(features.iter().map(|(_, o)| o.clone()));
        current = match config.join {
            JoinAlgorithm::Sort => Arc::new(
                PitJoinExec::try_new(
                    partition_and_sort(current, &v.join_keys, TIME_COLUMN, n)?,
                    partition_and_sort(prepared, &v.join_keys, AVAIL_COLUMN, n)?,
                    PitJoinConfig {
                        view: v.name.clone(),
                        join_keys: v.join_keys.clone(),
                        ttl_micros: v.ttl.map(duration_micros),
                        features,
                    },
                )
                .map_err(from_df)?,
            ),
            JoinAlgorithm::Hash => Arc::new(
                PitHashJoinExec::try_new(
                    partition(current, &v.join_keys, n)?,
                    partition(hash_side(prepared, v)?, &v.join_keys, n)?,
                    PitHashJoinConfig {
                        view: v.name.clone(),
                        join_keys: v.join_keys.clone(),
                        ttl_micros: v.ttl.map(duration_micros),
                        created_cutoff: options.created_cutoff
                            && v.created_timestamp_column.is_some(),
                        features,
                        concurrency: config.hash_concurrency.max(1),
                    },
                )
                .map_err(from_df)?,
            ),
        };
    }
    // Back to spine order.
    let seq = ordering(vec![col(SEQ_COLUMN, &current)?])?;
    let several = current.output_partitioning().partition_count() > 1;
    let merged: Arc<dyn ExecutionPlan> = match config.join {
        // Sort each partition by sequence, merge them.
        JoinAlgorithm::Sort => {
            let sorted: Arc<dyn ExecutionPlan> =
                Arc::new(SortExec::new(seq.clone(), current).with_preserve_partitioning(true));
            if several {
                Arc::new(SortPreservingMergeExec::new(seq, sorted))
            } else {
                sorted
            }
        }
        // The partitions finish one after the other: one sort of them all.
        // (A sort per partition under a merge keeps the merge buffers of every
        // finished partition until the last one starts.)
        JoinAlgorithm::Hash => {
            let one: Arc<dyn ExecutionPlan> = if several {
                Arc::new(CoalescePartitionsExec::new(current))
            } else {
                current
            };
            Arc::new(SortExec::new(seq, one))
        }
    };
    let ms = merged.schema();
    let mut proj = Vec::with_capacity(out_schema.fields().len());
    for f in spine_schema.fields().iter().take(n_spine_cols) {
        proj.push(ProjectionExpr {
            expr: Arc::new(Column::new_with_schema(f.name(), &ms).map_err(from_df)?),
            alias: f.name().clone(),
        });
    }
    for name in &out_names {
        proj.push(ProjectionExpr {
            expr: Arc::new(Column::new_with_schema(name, &ms).map_err(from_df)?),
            alias: name.clone(),
        });
    }
    Ok(Arc::new(
        ProjectionExec::try_new(proj, merged).map_err(from_df)?,
    ))
}

/// Runs `plan` (one output partition) as a stream of batches.
///
/// # Errors
/// As [`from_df`].
pub fn execute(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    execute_stream(plan, ctx).map_err(from_df)
}

/// Streams `stream` batch by batch into the Parquet file `path` and returns the
/// rows written. The file is written under a temporary name in the same
/// directory (`.NAME.tmp-PID`) and renamed to `path` only after the last batch
/// and the footer are written, so a failed run leaves no file that looks complete
/// (the temporary file is removed). The columns are encoded on up to as many
/// threads as there are cores (row groups of the Parquet writer's default
/// size), while the stream goes on producing batches.
///
/// # Errors
/// The stream's first error ([`from_df`]); the directory or file cannot be written.
pub async fn write_parquet(stream: SendableRecordBatchStream, path: &Path) -> Result<u64> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    write_parquet_with(stream, path, None, threads).await
}

/// [`write_parquet`] with row groups of at most `row_group_rows` rows (`None`:
/// the writer's default) and the columns encoded on `threads` threads.
pub(crate) async fn write_parquet_with(
    mut stream: SendableRecordBatchStream,
    path: &Path,
    row_group_rows: Option<usize>,
    threads: usize,
) -> Result<u64> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("'{}' is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |e: std::io::Error, what: &Path| {
        Error::invalid(format!("cannot write '{}': {e}", what.display()))
    };
    let parquet = |what: String| {
        move |e: datafusion::parquet::errors::ParquetError| Error::Backend {
            backend: BACKEND,
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        }
    };
    let result = async {
        let file = std::fs::File::create(&tmp).map_err(|e| io(e, &tmp))?;
        let mut props = WriterProperties::builder();
        if let Some(n) = row_group_rows {
            props = props.set_max_row_group_row_count(Some(n.max(1)));
        }
        let props = props.build();
        let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let schema = stream.schema();
        // ArrowWriter writes the Arrow schema into the footer; its parts then
        // encode the columns of each row group in parallel.
        let (mut writer, factory) = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet(format!("parquet writer for '{}'", path.display())))?;
        let mut encoder = ColumnEncoder::new(threads.max(1));
        let mut rows = 0u64;
        let mut in_group = 0usize;
        let mut group = 0usize;
        let writing = |e| parquet(format!("writing '{}'", tmp.display()))(e);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(from_df)?;
            rows += batch.num_rows() as u64;
            let mut off = 0;
            while off < batch.num_rows() {
                if in_group == 0 {
                    encoder
                        .start(factory.create_column_writers(group).map_err(writing)?)
                        .map_err(writing)?;
                }
                let len = (max_rows - in_group).min(batch.num_rows() - off);
                encoder
                    .write(&schema, &batch.slice(off, len))
                    .map_err(writing)?;
                off += len;
                in_group += len;
                if in_group == max_rows {
                    encoder.finish_into(&mut writer).map_err(writing)?;
                    in_group = 0;
                    group += 1;
                }
            }
        }
        if in_group > 0 {
            encoder.finish_into(&mut writer).map_err(writing)?;
        }
        writer
            .close()
            .map_err(parquet(format!("closing '{}'", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| io(e, path))?;
        Ok(rows)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Encodes the leaf columns of one row group at a time on worker threads:
/// leaf column `i` on worker `i % threads`, in batch order.
struct ColumnEncoder {
    workers: Vec<EncoderWorker>,
    /// Leaf columns of the current row group.
    leaves: usize,
}

struct EncoderWorker {
    tx: std::sync::mpsc::SyncSender<EncoderJob>,
    done: std::sync::mpsc::Receiver<EncodedChunks>,
    handle: Option<std::thread::JoinHandle<()>>,
}

type EncodedChunks = datafusion::parquet::errors::Result<
    Vec<(
        usize,
        datafusion::parquet::arrow::arrow_writer::ArrowColumnChunk,
    )>,
>;

enum EncoderJob {
    /// The writers of a new row group's leaf columns (index, writer).
    Start(
        Vec<(
            usize,
            datafusion::parquet::arrow::arrow_writer::ArrowColumnWriter,
        )>,
    ),
    /// A leaf column's next values.
    Leaf(
        usize,
        datafusion::parquet::arrow::arrow_writer::ArrowLeafColumn,
    ),
    /// Close the row group's writers and send back their chunks.
    Finish,
}

impl ColumnEncoder {
    fn new(threads: usize) -> Self {
        let workers = (0..threads)
            .map(|_| {
                // A few jobs in flight per worker: the stream keeps producing
                // while the workers encode, and memory stays bounded.
                let (tx, rx) = std::sync::mpsc::sync_channel::<EncoderJob>(64);
                let (done_tx, done) = std::sync::mpsc::channel::<EncodedChunks>();
                let handle = std::thread::spawn(move || {
                    let mut writers = Vec::new();
                    let mut failed: Option<datafusion::parquet::errors::ParquetError> = None;
                    for job in rx {
                        match job {
                            EncoderJob::Start(w) => writers = w,
                            EncoderJob::Leaf(i, leaf) => {
                                if failed.is_some() {
                                    continue;
                                }
                                if let Some((_, w)) = writers.iter_mut().find(|(j, _)| *j == i)
                                    && let Err(e) = w.write(&leaf)
                                {
                                    failed = Some(e);
                                }
                            }
                            EncoderJob::Finish => {
                                let out = match failed.take() {
                                    Some(e) => Err(e),
                                    None => std::mem::take(&mut writers)
                                        .into_iter()
                                        .map(|(i, w)| w.close().map(|c| (i, c)))
                                        .collect(),
                                };
                                if done_tx.send(out).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                EncoderWorker {
                    tx,
                    done,
                    handle: Some(handle),
                }
            })
            .collect();
        Self { workers, leaves: 0 }
    }

    fn gone() -> datafusion::parquet::errors::ParquetError {
        datafusion::parquet::errors::ParquetError::General("a column encoder thread stopped".into())
    }

    /// Hands out the writers of a new row group.
    fn start(
        &mut self,
        writers: Vec<datafusion::parquet::arrow::arrow_writer::ArrowColumnWriter>,
    ) -> datafusion::parquet::errors::Result<()> {
        self.leaves = writers.len();
        let n = self.workers.len();
        let mut parts: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for (i, w) in writers.into_iter().enumerate() {
            parts[i % n].push((i, w));
        }
        for (worker, part) in self.workers.iter().zip(parts) {
            worker
                .tx
                .send(EncoderJob::Start(part))
                .map_err(|_| Self::gone())?;
        }
        Ok(())
    }

    /// Sends `batch`'s leaf columns to their workers.
    fn write(
        &mut self,
        schema: &SchemaRef,
        batch: &RecordBatch,
    ) -> datafusion::parquet::errors::Result<()> {
        use datafusion::parquet::arrow::arrow_writer::compute_leaves;
        let n = self.workers.len();
        let mut i = 0;
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                self.workers[i % n]
                    .tx
                    .send(EncoderJob::Leaf(i, leaf))
                    .map_err(|_| Self::gone())?;
                i += 1;
            }
        }
        Ok(())
    }

    /// Closes the row group's writers and appends their chunks, in column
    /// order, as the next row group of `writer`.
    fn finish_into<W: std::io::Write + Send>(
        &mut self,
        writer: &mut datafusion::parquet::file::writer::SerializedFileWriter<W>,
    ) -> datafusion::parquet::errors::Result<()> {
        for worker in &self.workers {
            worker
                .tx
                .send(EncoderJob::Finish)
                .map_err(|_| Self::gone())?;
        }
        let mut chunks = Vec::with_capacity(self.leaves);
        for worker in &self.workers {
            chunks.extend(worker.done.recv().map_err(|_| Self::gone())??);
        }
        chunks.sort_by_key(|(i, _)| *i);
        let mut group = writer.next_row_group()?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }
}

impl Drop for ColumnEncoder {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing the job channel ends the worker's loop.
            let (tx, _) = std::sync::mpsc::sync_channel(0);
            drop(std::mem::replace(&mut w.tx, tx));
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// [`crate::pit::point_in_time_join`] run by the engine over in-memory inputs:
/// the spine and each view become [`memory_plan`]s of `config.partitions`
/// partitions, the plan runs under `config`'s memory limit and batch size, and
/// the result is concatenated into one batch (tests, small inputs).
///
/// # Errors
/// Those of [`pit_join_plan`] and of the run ([`from_df`]).
pub async fn point_in_time_join(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
    config: &EngineConfig,
) -> Result<RecordBatch> {
    let first = spine.first().ok_or_else(|| {
        Error::invalid("the spine has no batches (pass at least one, possibly empty, batch)")
    })?;
    let spine_schema = first.schema();
    for (i, b) in spine.iter().enumerate().skip(1) {
        if b.schema_ref().fields() != spine_schema.fields() {
            return Err(Error::invalid(format!(
                "spine batch {i} has a different schema from spine batch 0"
            )));
        }
    }
    let spine_plan = memory_plan(spine, Arc::clone(&spine_schema), config.partitions)?;
    let mut eviews = Vec::with_capacity(views.len());
    for v in views {
        let schema = match v.batches.first() {
            Some(b) => b.schema(),
            // No rows: a schema of the columns the join reads, so the plan can be built.
            None => empty_view_schema(v, &spine_schema, options)?,
        };
        for (bi, b) in v.batches.iter().enumerate().skip(1) {
            if b.schema_ref().fields() != schema.fields() {
                return Err(Error::invalid(format!(
                    "view '{}': feature batch {bi} has a different schema from feature batch 0",
                    v.name
                )));
            }
        }
        eviews.push(EngineView {
            name: v.name.clone(),
            join_keys: v.join_keys.clone(),
            event_timestamp_column: v.event_timestamp_column.clone(),
            created_timestamp_column: v.created_timestamp_column.clone(),
            ttl: v.ttl,
            features: v.features.clone(),
            input: memory_plan(v.batches, schema, config.partitions)?,
        });
    }
    let plan = pit_join_plan_with(spine_plan, spine_timestamp_column, &eviews, options, config)?;
    let session = config.session()?;
    let schema = plan.schema();
    let mut stream = execute(plan, session.task_ctx())?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b.map_err(from_df)?);
    }
    Ok(arrow_select::concat::concat_batches(&schema, &out)?)
}

/// The schema of a view given no batches: its keys (typed as in the spine), UTC
/// timestamps and declared features.
fn empty_view_schema(
    v: &PitView<'_>,
    spine: &arrow_schema::Schema,
    _options: &PitOptions,
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    for k in &v.join_keys {
        let f = spine.field_with_name(k).map_err(|_| {
            Error::invalid(format!(
                "join key '{k}' of view '{}' is not a spine column",
                v.name
            ))
        })?;
        fields.push(Field::new(k, f.data_type().clone(), true));
    }
    fields.push(Field::new(
        &v.event_timestamp_column,
        crate::time::timestamp_type(),
        false,
    ));
    if let Some(c) = &v.created_timestamp_column {
        fields.push(Field::new(c, crate::time::timestamp_type(), false));
    }
    for f in &v.features {
        if !fields.iter().any(|x| x.name() == f.name()) {
            fields.push(Field::new(f.name(), f.data_type().clone(), true));
        }
    }
    Ok(Arc::new(arrow_schema::Schema::new(fields)))
}
