//! [`PitHashJoinExec`]: the point-in-time join of one view, per hash partition,
//! in memory ("grace hash"): collect the partition's spine rows and feature rows,
//! then run the pure join ([`crate::pit::point_in_time_rows`]) on them.
//!
//! Nothing is sorted: the children are only hash-partitioned by the join keys.
//! At most [`PitHashJoinConfig::concurrency`] partitions collect and join at
//! once; the queues of the others stay in the repartition below, which spills
//! them to disk when the memory pool refuses and reads them back when their
//! turn comes (each byte written and read at most once).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, TimestampMicrosecondArray,
    UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{concat, interleave, take};
use datafusion::arrow::datatypes::{Field, Int64Type, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, OrderingRequirements, PhysicalExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::exec::{
    CREATED_COLUMN, EVENT_COLUMN, TIME_COLUMN, WRITE_SEQ_COLUMN, external, join_schema,
};
use crate::pit::{PitOptions, PitView};

/// Working memory of the pure join per collected row (spine and feature rows),
/// registered before it runs: keys and times copied in write order (~24 B for
/// an `Int64` key), the key index and the spine's grouping (~16 B), the chosen
/// rows and gather indices (~24 B per spine row).
pub(crate) const WORK_BYTES_PER_ROW: usize = 64;

/// The config of a [`PitHashJoinExec`]: everything besides its two children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitHashJoinConfig {
    /// The view name (for display and errors).
    pub view: String,
    /// Join-key columns, present with the same types in both children.
    pub join_keys: Vec<String>,
    /// Lookback window in microseconds, inclusive; `None` = unbounded.
    pub ttl_micros: Option<i64>,
    /// Only feature rows created at or before the spine time are candidates
    /// (`PitOptions::created_cutoff`).
    pub created_cutoff: bool,
    /// `(view column, output name)` of each requested feature, in output order.
    pub features: Vec<(String, String)>,
    /// Partitions of this node that collect and join at the same time (at least 1).
    pub concurrency: usize,
}

/// The point-in-time join of one view into the spine ([semantics §5](crate::docs::semantics)),
/// hash partition by hash partition, in memory.
///
/// Child 0 is the spine (prepared by a spine [`super::PitPrepareExec`]), child 1
/// the view's rows (prepared by a view [`super::PitPrepareExec`]; of its engine
/// columns only [`WRITE_SEQ_COLUMN`], [`EVENT_COLUMN`] and [`CREATED_COLUMN`]
/// are read, the plan drops the others before the shuffle), both
/// partitioned alike by the join keys (hash, same partition count; one
/// partition when there are no keys), in any order inside a partition.
///
/// Per partition, once it holds one of the node's
/// [`PitHashJoinConfig::concurrency`] permits, it collects the partition's spine
/// rows, then its feature rows, registering them with the task's memory pool as
/// consumer `PitHashJoinExec[partition]` (it cannot spill), orders the feature
/// rows by their write sequence ([`WRITE_SEQ_COLUMN`]) and runs the pure join
/// ([`crate::pit::point_in_time_rows`]) on keys and times (registering an
/// estimate of its working memory first); then it gathers the
/// chosen rows' features, emits the spine batches with them, and gives its
/// permit back. A partition the pool cannot hold is an error naming the view,
/// the partition and the sizes.
///
/// Output: the spine's columns, then the features (nullable), in the spine's
/// partitioning and in no particular order.
///
/// Metrics (per partition): `output_rows`, `elapsed_compute` (join and
/// gather), `gate_wait` (waiting for a permit), `collect_time` (collecting both
/// inputs, including waiting for them), `spine_rows`, `view_rows` and
/// `collected_bytes`.
#[derive(Debug)]
pub struct PitHashJoinExec {
    spine: Arc<dyn ExecutionPlan>,
    view: Arc<dyn ExecutionPlan>,
    config: PitHashJoinConfig,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    gate: Arc<Semaphore>,
}

impl PitHashJoinExec {
    /// A join node over prepared, hash-partitioned children (see the type docs).
    ///
    /// # Errors
    /// Missing columns, key types that differ between the children, partition
    /// counts that differ.
    pub fn try_new(
        spine: Arc<dyn ExecutionPlan>,
        view: Arc<dyn ExecutionPlan>,
        config: PitHashJoinConfig,
    ) -> DfResult<Self> {
        let schema = join_schema(
            &spine,
            &view,
            &config.view,
            &config.join_keys,
            &config.features,
            &[WRITE_SEQ_COLUMN, EVENT_COLUMN, CREATED_COLUMN],
            "PitHashJoinExec",
        )?;
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            spine.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        let gate = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Ok(Self {
            spine,
            view,
            config,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
            gate,
        })
    }

    /// The spine child.
    pub fn spine(&self) -> &Arc<dyn ExecutionPlan> {
        &self.spine
    }

    /// The view child.
    pub fn view(&self) -> &Arc<dyn ExecutionPlan> {
        &self.view
    }

    /// The config (with the two children, all a codec needs).
    pub fn config(&self) -> &PitHashJoinConfig {
        &self.config
    }

    fn key_exprs(&self, schema: &Schema) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        self.config
            .join_keys
            .iter()
            .map(|k| Ok(Arc::new(Column::new_with_schema(k, schema)?) as Arc<dyn PhysicalExpr>))
            .collect()
    }
}

impl DisplayAs for PitHashJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PitHashJoinExec: view={}, keys=[{}], ttl_us={:?}, cutoff={}, features={}, concurrency={}",
            self.config.view,
            self.config.join_keys.join(", "),
            self.config.ttl_micros,
            self.config.created_cutoff,
            self.config.features.len(),
            self.config.concurrency.max(1)
        )
    }
}

impl ExecutionPlan for PitHashJoinExec {
    fn name(&self) -> &str {
        "PitHashJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.spine, &self.view]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        if self.config.join_keys.is_empty() {
            return vec![Distribution::SinglePartition, Distribution::SinglePartition];
        }
        match (
            self.key_exprs(&self.spine.schema()),
            self.key_exprs(&self.view.schema()),
        ) {
            (Ok(s), Ok(v)) => vec![
                Distribution::KeyPartitioned(s),
                Distribution::KeyPartitioned(v),
            ],
            _ => vec![
                Distribution::UnspecifiedDistribution,
                Distribution::UnspecifiedDistribution,
            ],
        }
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![None, None]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [spine, view] = super::exec::children(children)?;
        Ok(Arc::new(Self::try_new(spine, view, self.config.clone())?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let spine = self.spine.execute(partition, Arc::clone(&context))?;
        let view = self.view.execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("PitHashJoinExec[{partition}]"))
            .register(context.memory_pool());
        let m = &self.metrics;
        let job = Job {
            config: self.config.clone(),
            schema: Arc::clone(&self.schema),
            partition,
            partitions: self.cache.partitioning.partition_count(),
            reservation,
            counter: RecordBatchMemoryCounter::new(),
            metrics: JobMetrics {
                baseline: BaselineMetrics::new(m, partition),
                gate_wait: MetricBuilder::new(m).subset_time("gate_wait", partition),
                collect_time: MetricBuilder::new(m).subset_time("collect_time", partition),
                spine_rows: MetricBuilder::new(m).counter("spine_rows", partition),
                view_rows: MetricBuilder::new(m).counter("view_rows", partition),
                collected_bytes: MetricBuilder::new(m).counter("collected_bytes", partition),
            },
        };
        let gate = Arc::clone(&self.gate);
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        builder.spawn(async move { job.run(gate, spine, view, tx).await });
        Ok(builder.build())
    }
}

struct JobMetrics {
    baseline: BaselineMetrics,
    gate_wait: Time,
    collect_time: Time,
    spine_rows: Count,
    view_rows: Count,
    collected_bytes: Count,
}

/// One partition of a [`PitHashJoinExec`].
struct Job {
    config: PitHashJoinConfig,
    schema: SchemaRef,
    partition: usize,
    partitions: usize,
    reservation: MemoryReservation,
    /// Counts the memory of the collected batches, each buffer once.
    counter: RecordBatchMemoryCounter,
    metrics: JobMetrics,
}

impl Job {
    async fn run(
        mut self,
        gate: Arc<Semaphore>,
        spine: SendableRecordBatchStream,
        view: SendableRecordBatchStream,
        tx: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    ) -> DfResult<()> {
        let waiting = Instant::now();
        let permit = gate
            .acquire_owned()
            .await
            .map_err(|e| DataFusionError::Internal(format!("PitHashJoinExec gate: {e}")))?;
        self.metrics.gate_wait.add_elapsed(waiting);
        let collecting = Instant::now();
        // The spine first: while it arrives (e.g. from the previous view's join)
        // this view's rows wait in the repartition below, not in memory here.
        let spine = self.collect(spine, true).await?;
        let view = self.collect(view, false).await?;
        self.metrics.collect_time.add_elapsed(collecting);
        // The join's own working memory, estimated per row: the keys and times
        // copied in write order, the key index, the spine's grouping, the chosen
        // rows and the gather indices.
        let rows: usize = spine.iter().chain(&view).map(|b| b.num_rows()).sum();
        let work = rows.saturating_mul(WORK_BYTES_PER_ROW);
        if let Err(e) = self.reservation.try_grow(work) {
            return Err(self.too_big("the join's working memory", rows, work, e));
        }
        let started = Instant::now();
        let (sources, indices) = self.choose(&spine, &view)?;
        let mut compute = started.elapsed();
        let mut offset = 0;
        for batch in spine {
            let started = Instant::now();
            let n = batch.num_rows();
            let out = self.gather(batch, &view, sources, &indices[offset..offset + n])?;
            offset += n;
            compute += started.elapsed();
            self.metrics.baseline.record_output(n);
            if tx.send(Ok(out)).await.is_err() {
                return Ok(()); // the consumer hung up
            }
        }
        self.metrics
            .baseline
            .elapsed_compute()
            .add_duration(compute);
        self.metrics.baseline.done();
        drop(view);
        self.reservation.free();
        drop(permit);
        Ok(())
    }

    /// Collects one input, registering each batch with the memory pool.
    async fn collect(
        &mut self,
        mut input: SendableRecordBatchStream,
        spine: bool,
    ) -> DfResult<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            // Each buffer once: batches read back from a spill file share one
            // buffer between their columns.
            let bytes = self.counter.count_batch(&batch);
            if let Err(e) = self.reservation.try_grow(bytes) {
                let rows = out.iter().map(RecordBatch::num_rows).sum();
                let side = if spine { "spine rows" } else { "feature rows" };
                return Err(self.too_big(side, rows, bytes, e));
            }
            self.metrics.collected_bytes.add(bytes);
            if spine {
                self.metrics.spine_rows.add(batch.num_rows());
            } else {
                self.metrics.view_rows.add(batch.num_rows());
            }
            out.push(batch);
        }
        Ok(out)
    }

    /// The error of a partition that does not fit in the memory pool.
    /// `what`: what was being added (`rows` of it so far, `more` bytes).
    fn too_big(&self, what: &str, rows: usize, more: usize, e: DataFusionError) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "view '{}': hash partition {} of {} does not fit in the engine's memory: it holds \
             {} bytes and needs {more} more for {what} ({rows} rows so far) ({e}); use more \
             partitions (--partitions), fewer partitions joining at once (--join-concurrency), \
             a larger memory limit, or the sort-merge join (--join sort)",
            self.config.view,
            self.partition,
            self.partitions,
            self.reservation.size(),
        ))
    }

    /// Runs the pure join on the partition: for each spine row (in collection
    /// order), where its features come from: `(view batch, row)`, or
    /// `(sources, 0)` (the null source) for no match.
    fn choose(
        &self,
        spine: &[RecordBatch],
        view: &[RecordBatch],
    ) -> DfResult<(usize, Vec<(usize, usize)>)> {
        let n_spine: usize = spine.iter().map(|b| b.num_rows()).sum();
        let null_source = view.len();
        if view.is_empty() || n_spine == 0 {
            return Ok((null_source, vec![(null_source, 0); n_spine]));
        }
        let keys = &self.config.join_keys;
        let spine_narrow = spine
            .iter()
            .map(|b| narrow(b, keys, &[TIME_COLUMN]))
            .collect::<DfResult<Vec<_>>>()?;
        // The view's keys and times in one batch, in write order (the pure
        // join's last tie-break is row order; rows reach a partition in any order).
        let parts = view
            .iter()
            .map(|b| narrow(b, keys, &[EVENT_COLUMN, CREATED_COLUMN, WRITE_SEQ_COLUMN]))
            .collect::<DfResult<Vec<_>>>()?;
        let schema = parts[0].schema();
        let mut cols = Vec::with_capacity(schema.fields().len());
        for i in 0..schema.fields().len() {
            let arrays: Vec<&dyn Array> = parts.iter().map(|b| b.column(i).as_ref()).collect();
            cols.push(concat(&arrays)?);
        }
        drop(parts);
        let wseq_col = cols.len() - 1;
        let wseq = cols[wseq_col].as_primitive::<UInt64Type>();
        let perm: Option<UInt32Array> = ascending(wseq.values()).map(UInt32Array::from);
        cols.truncate(wseq_col);
        if let Some(p) = &perm {
            for c in &mut cols {
                *c = take(c.as_ref(), p, None)?;
            }
        }
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        fields.truncate(wseq_col);
        let narrow_view = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let pit_view = PitView {
            name: self.config.view.clone(),
            join_keys: keys.clone(),
            event_timestamp_column: EVENT_COLUMN.to_string(),
            // Without a created-timestamp column the engine's is i64::MIN on every
            // row: the same ranking, and always before the cutoff.
            created_timestamp_column: Some(CREATED_COLUMN.to_string()),
            ttl: self
                .config
                .ttl_micros
                .map(|us| Duration::from_micros(us.max(0).unsigned_abs())),
            features: Vec::new(),
            batches: std::slice::from_ref(&narrow_view),
        };
        let options = PitOptions::default().with_created_cutoff(self.config.created_cutoff);
        let chosen =
            crate::pit::point_in_time_rows(&spine_narrow, TIME_COLUMN, &[pit_view], &options)
                .map_err(external)?;
        let chosen = chosen
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("PitHashJoinExec: no rows chosen".into()))?;
        // Back from write order to collection order.
        let chosen = match &perm {
            Some(p) => take(p, &chosen, None)?
                .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
                .clone(),
            None => chosen,
        };
        let mut offsets = Vec::with_capacity(view.len() + 1);
        let mut total = 0usize;
        for b in view {
            offsets.push(total);
            total += b.num_rows();
        }
        let indices = chosen
            .iter()
            .map(|g| match g {
                None => (null_source, 0),
                Some(g) => {
                    let g = g as usize;
                    let b = offsets.partition_point(|&o| o <= g).saturating_sub(1);
                    (b, g - offsets[b])
                }
            })
            .collect();
        Ok((null_source, indices))
    }

    /// One spine batch with its features appended.
    fn gather(
        &self,
        batch: RecordBatch,
        view: &[RecordBatch],
        null_source: usize,
        indices: &[(usize, usize)],
    ) -> DfResult<RecordBatch> {
        let n = batch.num_rows();
        let n_spine_cols = batch.num_columns();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let no_match = indices.iter().all(|&(b, _)| b == null_source);
        for (f, (col, _)) in self.config.features.iter().enumerate() {
            let dt = self.schema.field(n_spine_cols + f).data_type();
            if no_match {
                columns.push(new_null_array(dt, n));
                continue;
            }
            let null = new_null_array(dt, 1);
            let mut sources: Vec<&dyn Array> = Vec::with_capacity(view.len() + 1);
            for b in view {
                let c = b.column_by_name(col).ok_or_else(|| {
                    DataFusionError::Internal(format!("PitHashJoinExec: no feature column '{col}'"))
                })?;
                sources.push(c.as_ref());
            }
            sources.push(null.as_ref());
            columns.push(interleave(&sources, indices)?);
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}

/// The permutation that lists `seq` in ascending order, or `None` when it
/// already is. A bucket sort by value range, about 16 values a bucket: one
/// count and one stable scatter, then a bucket whose values did not arrive in
/// ascending order is sorted on its own. A partition's feature rows arrive as
/// ascending runs, each from one scan partition, and the scan partitions read
/// disjoint ranges of the write order, so a bucket (a narrow range of
/// sequences) is nearly always in order already: ~1/3 of an 8-bit radix
/// sort's time, ~1/3 of a comparison sort's, on 1.25M rows of 8 interleaved runs.
pub(crate) fn ascending(seq: &[u64]) -> Option<Vec<u32>> {
    if seq.is_sorted() {
        return None;
    }
    let n = seq.len();
    let (mut min, mut max) = (u64::MAX, 0u64);
    for &v in seq {
        min = min.min(v);
        max = max.max(v);
    }
    let span = max - min;
    let buckets_wanted = (n / 16).max(1).next_power_of_two();
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(buckets_wanted.trailing_zeros());
    let buckets = usize::try_from(span >> shift).unwrap_or(usize::MAX - 1) + 1;
    let mut start = vec![0usize; buckets + 1];
    for &v in seq {
        start[((v - min) >> shift) as usize + 1] += 1;
    }
    for b in 1..=buckets {
        start[b] += start[b - 1];
    }
    let bounds = start.clone();
    let mut pairs: Vec<(u64, u32)> = vec![(0, 0); n];
    for (i, &v) in seq.iter().enumerate() {
        let b = ((v - min) >> shift) as usize;
        pairs[start[b]] = (v, i as u32);
        start[b] += 1;
    }
    for w in bounds.windows(2) {
        let bucket = &mut pairs[w[0]..w[1]];
        if !bucket.is_sorted_by_key(|p| p.0) {
            bucket.sort_unstable_by_key(|p| p.0);
        }
    }
    Some(pairs.into_iter().map(|(_, i)| i).collect())
}

/// The join-key columns of `batch` and its engine time columns `times`, the
/// `Int64` ones as UTC microsecond timestamps (the pure join's input types).
fn narrow(batch: &RecordBatch, keys: &[String], times: &[&str]) -> DfResult<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(keys.len() + times.len());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(keys.len() + times.len());
    for k in keys {
        let i = schema.index_of(k)?;
        fields.push(Arc::new(schema.field(i).clone()));
        cols.push(Arc::clone(batch.column(i)));
    }
    for &t in times {
        let i = schema.index_of(t)?;
        let c = batch.column(i);
        if t == WRITE_SEQ_COLUMN {
            fields.push(Arc::new(schema.field(i).clone()));
            cols.push(Arc::clone(c));
            continue;
        }
        let v = c.as_primitive::<Int64Type>();
        let ts = TimestampMicrosecondArray::new(v.values().clone(), v.nulls().cloned())
            .with_data_type(crate::time::timestamp_type());
        fields.push(Arc::new(Field::new(
            t,
            crate::time::timestamp_type(),
            false,
        )));
        cols.push(Arc::new(ts));
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}
