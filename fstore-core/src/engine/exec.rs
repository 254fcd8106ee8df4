//! The two custom plan nodes of the engine: [`PitPrepareExec`] (row sequence and
//! UTC-microsecond time columns, before any repartitioning) and [`PitJoinExec`]
//! (the streaming as-of merge of one view into the spine, per partition).
//!
//! Both are rebuilt from their children plus a serde-serializable config
//! ([`PrepareConfig`], [`PitJoinConfig`]), so a `PhysicalExtensionCodec` (e.g.
//! Ballista's) needs nothing else.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, UInt64Array, new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{filter_record_batch, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexRequirement, OrderingRequirements, Partitioning,
    PhysicalExpr, PhysicalSortRequirement,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::{RecordBatchReceiverStream, RecordBatchStreamAdapter};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::time::timestamp_micros;

/// Spine row sequence (`UInt64`): the spine order the output is sorted back into.
pub const SEQ_COLUMN: &str = "__fstore_seq";
/// Spine time in UTC microseconds (`Int64`).
pub const TIME_COLUMN: &str = "__fstore_t";
/// Feature-row sequence (`UInt64`): write order, the last tie-break.
pub const WRITE_SEQ_COLUMN: &str = "__fstore_wseq";
/// Feature-row event time in UTC microseconds (`Int64`).
pub const EVENT_COLUMN: &str = "__fstore_event";
/// Feature-row created time in UTC microseconds (`Int64`; `i64::MIN` without a
/// created-timestamp column).
pub const CREATED_COLUMN: &str = "__fstore_created";
/// When a feature row becomes visible, UTC microseconds (`Int64`): its event time,
/// or `max(event, created)` with the created cutoff.
pub const AVAIL_COLUMN: &str = "__fstore_avail";

/// Optional input column (`UInt64`) of a prepare node: the sequence base of
/// the run of input rows (a piece of a file, a slice of batches) each row comes
/// from. The sequence of a row is `base + r`, `r` counting the rows of its run
/// in stream order, independent of which partition of which task executes the
/// scan (Ballista renumbers a task's partitions from 0).
/// [`super::parquet_plan`] gives a piece of file `f` starting at row `s` the base
/// `f << 40 | s`; [`super::memory_plan`] gives slice `p` the base `p << 40`. The
/// prepare node consumes it (it is not in its output).
pub const SEQ_BASE_COLUMN: &str = "__fstore_seq_base";

/// Prefix of every column the engine adds; input columns may not use it
/// (except [`SEQ_BASE_COLUMN`]).
pub const RESERVED_PREFIX: &str = "__fstore_";

/// Bits of the row counter inside a sequence value; the partition index sits above.
pub(crate) const SEQ_ROW_BITS: u32 = 40;

/// What a [`PitPrepareExec`] prepares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PrepareRole {
    /// The spine: appends [`SEQ_COLUMN`] and [`TIME_COLUMN`].
    Spine {
        /// The spine's timestamp column.
        timestamp_column: String,
    },
    /// A view's feature rows: drops rows with a null join-key component (they can
    /// never match) and appends [`WRITE_SEQ_COLUMN`], [`EVENT_COLUMN`],
    /// [`CREATED_COLUMN`] and [`AVAIL_COLUMN`].
    View {
        /// The view name (for errors).
        view: String,
        /// Join-key columns.
        join_keys: Vec<String>,
        /// Event-timestamp column.
        event_timestamp_column: String,
        /// Optional created-timestamp column.
        created_timestamp_column: Option<String>,
        /// Visibility is `max(event, created)` instead of `event`.
        created_cutoff: bool,
    },
}

/// The config of a [`PitPrepareExec`]: everything besides its child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareConfig {
    /// Spine or view.
    pub role: PrepareRole,
    /// Interpret naive timestamps as UTC (`PitOptions::assume_utc`).
    pub assume_utc: bool,
}

/// Appends the engine's sequence and time columns to its input, partition by
/// partition; see [`PrepareRole`].
///
/// With a [`SEQ_BASE_COLUMN`] in the input, the sequence of a row is
/// `base + r` where `r` counts the rows of that base in stream order; the
/// engine's sources give their runs (pieces of files, slices) increasing bases
/// in input order, so the order of sequences is the input order, whatever
/// partition or task reads a run. Without it, the sequence of row `r` of input
/// partition `p` is `p << 40 | r` (correct only where partitions keep their
/// indices: a local DataFusion run).
/// It must run before any repartitioning.
///
/// Timestamps are converted with the same function, and so the same errors
/// (naive timestamp, null timestamp naming the column and row), as the pure join.
#[derive(Debug)]
pub struct PitPrepareExec {
    input: Arc<dyn ExecutionPlan>,
    config: PrepareConfig,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl PitPrepareExec {
    /// A prepare node over `input`.
    ///
    /// # Errors
    /// A missing column, or an input column using [`RESERVED_PREFIX`].
    pub fn try_new(input: Arc<dyn ExecutionPlan>, config: PrepareConfig) -> DfResult<Self> {
        let in_schema = input.schema();
        if let Some(f) = in_schema
            .fields()
            .iter()
            .find(|f| f.name().starts_with(RESERVED_PREFIX) && f.name() != SEQ_BASE_COLUMN)
        {
            return Err(external(Error::invalid(format!(
                "column '{}' uses the prefix '{RESERVED_PREFIX}' reserved by the engine",
                f.name()
            ))));
        }
        let mut fields: Vec<Arc<Field>> = in_schema
            .fields()
            .iter()
            .filter(|f| f.name() != SEQ_BASE_COLUMN)
            .cloned()
            .collect();
        if let Ok(f) = in_schema.field_with_name(SEQ_BASE_COLUMN)
            && f.data_type() != &DataType::UInt64
        {
            return Err(external(Error::invalid(format!(
                "column '{SEQ_BASE_COLUMN}' must be UInt64, found {}",
                f.data_type()
            ))));
        }
        let required: Vec<&String> = match &config.role {
            PrepareRole::Spine { timestamp_column } => {
                fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::UInt64, false)));
                fields.push(Arc::new(Field::new(TIME_COLUMN, DataType::Int64, false)));
                vec![timestamp_column]
            }
            PrepareRole::View {
                join_keys,
                event_timestamp_column,
                created_timestamp_column,
                ..
            } => {
                fields.push(Arc::new(Field::new(
                    WRITE_SEQ_COLUMN,
                    DataType::UInt64,
                    false,
                )));
                for c in [EVENT_COLUMN, CREATED_COLUMN, AVAIL_COLUMN] {
                    fields.push(Arc::new(Field::new(c, DataType::Int64, false)));
                }
                join_keys
                    .iter()
                    .chain(std::iter::once(event_timestamp_column))
                    .chain(created_timestamp_column)
                    .collect()
            }
        };
        for c in required {
            in_schema.index_of(c).map_err(|_| {
                external(Error::invalid(format!(
                    "column '{c}' not found in the engine's input"
                )))
            })?;
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            in_schema.metadata().clone(),
        ));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            input,
            config,
            schema,
            cache,
        })
    }

    /// The child.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The config (with [`PitPrepareExec::input`], all a codec needs).
    pub fn config(&self) -> &PrepareConfig {
        &self.config
    }
}

impl DisplayAs for PitPrepareExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.config.role {
            PrepareRole::Spine { timestamp_column } => {
                write!(f, "PitPrepareExec: spine, t={timestamp_column}")
            }
            PrepareRole::View {
                view,
                created_cutoff,
                ..
            } => write!(f, "PitPrepareExec: view={view}, cutoff={created_cutoff}"),
        }
    }
}

impl ExecutionPlan for PitPrepareExec {
    fn name(&self) -> &str {
        "PitPrepareExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
        let [input] = self::children(children)?;
        Ok(Arc::new(Self::try_new(input, self.config.clone())?))
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
        let input = self.input.execute(partition, context)?;
        let schema = Arc::clone(&self.schema);
        let config = self.config.clone();
        let base = self.input.schema().index_of(SEQ_BASE_COLUMN).ok();
        let mut seq = Sequencer::new(partition);
        let out_schema = Arc::clone(&schema);
        let stream = input.map(move |batch| {
            let batch = batch?;
            let seqs = seq.next(&batch, base)?;
            let batch = match base {
                Some(i) => {
                    let mut b = batch;
                    b.remove_column(i);
                    b
                }
                None => batch,
            };
            prepare_batch(&batch, &config, seqs, &out_schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Numbers rows `base + row within the run`: by the scan's per-run
/// [`SEQ_BASE_COLUMN`] when the input has one (a run is a maximal stretch of
/// rows with the same base; the engine's sources never give two runs one base),
/// else `partition << 40 | row`. Shared by the PIT prepare node and the
/// aggregation sequence node.
pub(crate) struct Sequencer {
    base: u64,
    next_row: u64,
}

impl Sequencer {
    /// A sequencer for output partition `partition` (base `partition << 40`
    /// until the input names one).
    pub(crate) fn new(partition: usize) -> Self {
        Self {
            base: (partition as u64) << SEQ_ROW_BITS,
            next_row: 0,
        }
    }

    /// The sequence numbers of `batch`'s rows; `base` is the index of
    /// [`SEQ_BASE_COLUMN`] in it, if any.
    pub(crate) fn next(
        &mut self,
        batch: &RecordBatch,
        base: Option<usize>,
    ) -> DfResult<UInt64Array> {
        let n = batch.num_rows();
        let Some(i) = base else {
            let first = self.base + self.next_row;
            self.next_row += n as u64;
            return Ok(UInt64Array::from_iter_values(first..first + n as u64));
        };
        let bases = batch
            .column(i)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataFusionError::Internal(format!("{SEQ_BASE_COLUMN} type")))?;
        if bases.null_count() > 0 {
            return Err(DataFusionError::Internal(format!("null {SEQ_BASE_COLUMN}")));
        }
        let mut out = Vec::with_capacity(n);
        for &b in bases.values() {
            if b != self.base {
                self.base = b;
                self.next_row = 0;
            }
            out.push(b.wrapping_add(self.next_row));
            self.next_row += 1;
        }
        Ok(UInt64Array::from(out))
    }
}

/// The `N` children `replace_children` was given, or an internal error
/// naming how many it got (every fstore node has a fixed number of inputs).
pub(crate) fn children<const N: usize>(
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> DfResult<[Arc<dyn ExecutionPlan>; N]> {
    <[_; N]>::try_from(children).map_err(|c: Vec<_>| {
        DataFusionError::Internal(format!("expected {N} children, got {}", c.len()))
    })
}

/// Wraps an fstore error for DataFusion (unwrapped again by `engine::from_df`).
pub(crate) fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn micros(batch: &RecordBatch, column: &str, assume_utc: bool, ctx: &str) -> DfResult<Vec<i64>> {
    let a = batch.column_by_name(column).ok_or_else(|| {
        external(Error::invalid(format!(
            "{ctx}: column '{column}' not found"
        )))
    })?;
    timestamp_micros(a.as_ref(), column, assume_utc).map_err(|e| {
        external(match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{ctx}: {m}")),
            other => other,
        })
    })
}

fn prepare_batch(
    batch: &RecordBatch,
    config: &PrepareConfig,
    seq: UInt64Array,
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let n = batch.num_rows();
    let seq: ArrayRef = Arc::new(seq);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    match &config.role {
        PrepareRole::Spine { timestamp_column } => {
            let t = micros(batch, timestamp_column, config.assume_utc, "spine")?;
            columns.push(seq);
            columns.push(Arc::new(Int64Array::from(t)));
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?)
        }
        PrepareRole::View {
            view,
            join_keys,
            event_timestamp_column,
            created_timestamp_column,
            created_cutoff,
        } => {
            let ctx = format!("view '{view}'");
            let event = micros(batch, event_timestamp_column, config.assume_utc, &ctx)?;
            let created = match created_timestamp_column {
                Some(c) => micros(batch, c, config.assume_utc, &ctx)?,
                None => vec![i64::MIN; n],
            };
            let avail: Vec<i64> = if *created_cutoff && created_timestamp_column.is_some() {
                event.iter().zip(&created).map(|(e, c)| *e.max(c)).collect()
            } else {
                event.clone()
            };
            columns.push(seq);
            columns.push(Arc::new(Int64Array::from(event)));
            columns.push(Arc::new(Int64Array::from(created)));
            columns.push(Arc::new(Int64Array::from(avail)));
            let out = RecordBatch::try_new_with_options(
                Arc::clone(schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?;
            let key_cols: Vec<&ArrayRef> = join_keys
                .iter()
                .filter_map(|k| batch.column_by_name(k))
                .collect();
            match NullBuffer::union_many(
                key_cols
                    .iter()
                    .map(|c| c.logical_nulls())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|n| n.as_ref()),
            ) {
                Some(valid) if valid.null_count() > 0 => {
                    let keep =
                        datafusion::arrow::array::BooleanArray::new(valid.into_inner(), None);
                    Ok(filter_record_batch(&out, &keep)?)
                }
                _ => Ok(out),
            }
        }
    }
}

/// The output schema of a join node (the spine's columns, then each feature,
/// nullable, under its output name), after checking that both children carry
/// the keys with the same types, the engine columns (the view's: `view_columns`)
/// and the features, and have the same number of partitions.
pub(crate) fn join_schema(
    spine: &Arc<dyn ExecutionPlan>,
    view: &Arc<dyn ExecutionPlan>,
    view_name: &str,
    join_keys: &[String],
    features: &[(String, String)],
    view_columns: &[&str],
    node: &str,
) -> DfResult<SchemaRef> {
    let ss = spine.schema();
    let vs = view.schema();
    let missing = |side: &str, c: &str| {
        external(Error::invalid(format!(
            "view '{}': the {side} input of the join has no column '{c}'",
            view_name
        )))
    };
    for k in join_keys {
        let st = ss.field_with_name(k).map_err(|_| missing("spine", k))?;
        let vt = vs.field_with_name(k).map_err(|_| missing("view", k))?;
        if st.data_type() != vt.data_type() {
            return Err(external(Error::invalid(format!(
                "join key '{k}' type mismatch: the spine has {}, view '{}' has {}",
                st.data_type(),
                view_name,
                vt.data_type()
            ))));
        }
    }
    for c in [SEQ_COLUMN, TIME_COLUMN] {
        ss.index_of(c).map_err(|_| missing("spine", c))?;
    }
    for &c in view_columns {
        vs.index_of(c).map_err(|_| missing("view", c))?;
    }
    let mut fields: Vec<Arc<Field>> = ss.fields().iter().cloned().collect();
    for (col, out) in features {
        let f = vs.field_with_name(col).map_err(|_| missing("view", col))?;
        fields.push(Arc::new(
            Field::new(out, f.data_type().clone(), true).with_metadata(f.metadata().clone()),
        ));
    }
    let (np_s, np_v) = (
        spine.output_partitioning().partition_count(),
        view.output_partitioning().partition_count(),
    );
    if np_s != np_v {
        return Err(DataFusionError::Plan(format!(
            "{node}: the spine has {np_s} partitions, the view {np_v}"
        )));
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        ss.metadata().clone(),
    )))
}

/// The config of a [`PitJoinExec`]: everything besides its two children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitJoinConfig {
    /// The view name (for display and errors).
    pub view: String,
    /// Join-key columns, present with the same types in both children.
    pub join_keys: Vec<String>,
    /// Lookback window in microseconds, inclusive; `None` = unbounded.
    pub ttl_micros: Option<i64>,
    /// `(view column, output name)` of each requested feature, in output order.
    pub features: Vec<(String, String)>,
}

/// The point-in-time merge of one view into the spine ([semantics §5](crate::docs::semantics)).
///
/// Child 0 is the spine (prepared by a spine [`PitPrepareExec`]), child 1 the
/// view's rows (prepared by a view [`PitPrepareExec`]). Both must be partitioned
/// alike by the join keys (hash, same partition count; one partition when there
/// are no keys) and sorted inside each partition: the spine by (keys, [`TIME_COLUMN`]),
/// the view by (keys, [`AVAIL_COLUMN`]), keys ascending with nulls first. The node
/// declares these requirements, so an optimizer keeps the sorts.
///
/// Per partition it streams both inputs once: for each spine row (k, t) it
/// consumes the view rows with key < k, or key = k and visibility <= t, keeping
/// the greatest `(event, created, write sequence)` of the current key; that row
/// is the answer if its event is inside the ttl window (every other visible row
/// has an earlier event). Memory: the current spine batch and the view batches
/// its answers point into, registered with the task's memory pool as consumer
/// `PitJoinExec[partition]` (it cannot spill: a pool that refuses is an error).
///
/// Output: the spine's columns, then the features (nullable), in the spine's
/// partitioning and in no particular order.
///
/// Metrics (per partition): `output_rows`, `elapsed_compute` (the merge itself,
/// without the time spent waiting for either input) and `view_rows` (feature
/// rows read).
#[derive(Debug)]
pub struct PitJoinExec {
    spine: Arc<dyn ExecutionPlan>,
    view: Arc<dyn ExecutionPlan>,
    config: PitJoinConfig,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PitJoinExec {
    /// A join node over prepared, partitioned and sorted children (see the type docs).
    ///
    /// # Errors
    /// Missing columns, key types that differ between the children, partition
    /// counts that differ.
    pub fn try_new(
        spine: Arc<dyn ExecutionPlan>,
        view: Arc<dyn ExecutionPlan>,
        config: PitJoinConfig,
    ) -> DfResult<Self> {
        let schema = join_schema(
            &spine,
            &view,
            &config.view,
            &config.join_keys,
            &config.features,
            &[WRITE_SEQ_COLUMN, EVENT_COLUMN, CREATED_COLUMN, AVAIL_COLUMN],
            "PitJoinExec",
        )?;
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            spine.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            spine,
            view,
            config,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
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
    pub fn config(&self) -> &PitJoinConfig {
        &self.config
    }

    fn key_exprs(&self, schema: &Schema) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        self.config
            .join_keys
            .iter()
            .map(|k| Ok(Arc::new(Column::new_with_schema(k, schema)?) as Arc<dyn PhysicalExpr>))
            .collect()
    }

    fn requirement(&self, schema: &Schema, time: &str) -> DfResult<OrderingRequirements> {
        let mut reqs = Vec::new();
        for e in self.key_exprs(schema)? {
            reqs.push(PhysicalSortRequirement::new(
                e,
                Some(SortOptions::default()),
            ));
        }
        reqs.push(PhysicalSortRequirement::new(
            Arc::new(Column::new_with_schema(time, schema)?),
            Some(SortOptions::default()),
        ));
        let req = LexRequirement::new(reqs)
            .ok_or_else(|| DataFusionError::Internal("empty ordering requirement".into()))?;
        Ok(OrderingRequirements::new(req))
    }
}

impl DisplayAs for PitJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PitJoinExec: view={}, keys=[{}], ttl_us={:?}, features={}",
            self.config.view,
            self.config.join_keys.join(", "),
            self.config.ttl_micros,
            self.config.features.len()
        )
    }
}

impl ExecutionPlan for PitJoinExec {
    fn name(&self) -> &str {
        "PitJoinExec"
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
        vec![
            self.requirement(&self.spine.schema(), TIME_COLUMN).ok(),
            self.requirement(&self.view.schema(), AVAIL_COLUMN).ok(),
        ]
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
        let [spine, view] = self::children(children)?;
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
        let reservation = MemoryConsumer::new(format!("PitJoinExec[{partition}]"))
            .register(context.memory_pool());
        let merge = Merge::try_new(self, view, partition, reservation)?;
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        builder.spawn(async move { merge.run(spine, tx).await });
        Ok(builder.build())
    }
}

/// One view batch being merged: its key rows and times, and its feature columns.
struct ViewBatch {
    id: u64,
    /// Memory of the batch and its key rows.
    bytes: usize,
    keys: Rows,
    avail: Int64Array,
    event: Int64Array,
    created: Int64Array,
    wseq: UInt64Array,
    features: Vec<ArrayRef>,
}

/// What a [`PitJoinExec`] partition reports.
struct MergeMetrics {
    baseline: BaselineMetrics,
    view_rows: Count,
}

/// The best row of the current key so far.
#[derive(Clone, Copy)]
struct Best {
    rank: (i64, i64, u64),
    batch: u64,
    row: usize,
}

struct Merge {
    schema: SchemaRef,
    converter: RowConverter,
    spine_keys: Vec<usize>,
    spine_time: usize,
    view_keys: Vec<usize>,
    view_cols: [usize; 4],
    feature_cols: Vec<usize>,
    feature_types: Vec<DataType>,
    ttl: Option<i64>,
    view: SendableRecordBatchStream,
    cur: Option<ViewBatch>,
    pos: usize,
    next_id: u64,
    done: bool,
    /// Current key and its best row; the batch that row lives in.
    key: Option<OwnedRow>,
    best: Option<Best>,
    /// The best row's batch: id, feature columns, memory of the whole batch.
    best_batch: Option<(u64, Vec<ArrayRef>, usize)>,
    /// Memory held for the current spine batch (the batch, its key rows, the
    /// view batches its answers point into), registered with the pool together
    /// with the current and the best view batch.
    pinned: usize,
    reservation: MemoryReservation,
    metrics: MergeMetrics,
    /// Time spent waiting for the view input during the current spine batch.
    waited: Duration,
}

impl Merge {
    fn try_new(
        node: &PitJoinExec,
        view: SendableRecordBatchStream,
        partition: usize,
        reservation: MemoryReservation,
    ) -> DfResult<Self> {
        let ss = node.spine.schema();
        let vs = node.view.schema();
        let idx = |s: &Schema, c: &str| s.index_of(c).map_err(DataFusionError::from);
        let spine_keys = node
            .config
            .join_keys
            .iter()
            .map(|k| idx(&ss, k))
            .collect::<DfResult<Vec<_>>>()?;
        let view_keys = node
            .config
            .join_keys
            .iter()
            .map(|k| idx(&vs, k))
            .collect::<DfResult<Vec<_>>>()?;
        let converter = RowConverter::new(
            spine_keys
                .iter()
                .map(|&i| {
                    SortField::new_with_options(
                        ss.field(i).data_type().clone(),
                        SortOptions::default(),
                    )
                })
                .collect(),
        )?;
        let feature_cols = node
            .config
            .features
            .iter()
            .map(|(c, _)| idx(&vs, c))
            .collect::<DfResult<Vec<_>>>()?;
        let feature_types = feature_cols
            .iter()
            .map(|&i| vs.field(i).data_type().clone())
            .collect();
        Ok(Self {
            schema: Arc::clone(&node.schema),
            converter,
            spine_time: idx(&ss, TIME_COLUMN)?,
            spine_keys,
            view_cols: [
                idx(&vs, AVAIL_COLUMN)?,
                idx(&vs, EVENT_COLUMN)?,
                idx(&vs, CREATED_COLUMN)?,
                idx(&vs, WRITE_SEQ_COLUMN)?,
            ],
            view_keys,
            feature_cols,
            feature_types,
            ttl: node.config.ttl_micros,
            view,
            cur: None,
            pos: 0,
            next_id: 0,
            done: false,
            key: None,
            best: None,
            best_batch: None,
            pinned: 0,
            reservation,
            metrics: MergeMetrics {
                baseline: BaselineMetrics::new(&node.metrics, partition),
                view_rows: MetricBuilder::new(&node.metrics).counter("view_rows", partition),
            },
            waited: Duration::ZERO,
        })
    }

    /// Makes `cur[pos]` a valid view row; `false` at the end of the view.
    async fn ready(&mut self) -> DfResult<bool> {
        loop {
            if let Some(b) = &self.cur
                && self.pos < b.avail.len()
            {
                return Ok(true);
            }
            if self.done {
                return Ok(false);
            }
            let waiting = Instant::now();
            let next = self.view.next().await;
            self.waited += waiting.elapsed();
            match next {
                None => {
                    self.done = true;
                    self.cur = None;
                }
                Some(batch) => {
                    let batch = batch?;
                    self.metrics.view_rows.add(batch.num_rows());
                    let cols: Vec<ArrayRef> = self
                        .view_keys
                        .iter()
                        .map(|&i| Arc::clone(batch.column(i)))
                        .collect();
                    let i64col = |i: usize| -> DfResult<Int64Array> {
                        Ok(batch
                            .column(i)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .ok_or_else(|| DataFusionError::Internal("engine time column".into()))?
                            .clone())
                    };
                    let keys = self.converter.convert_columns(&cols)?;
                    let vb = ViewBatch {
                        id: self.next_id,
                        bytes: batch.get_array_memory_size() + keys.size(),
                        keys,
                        avail: i64col(self.view_cols[0])?,
                        event: i64col(self.view_cols[1])?,
                        created: i64col(self.view_cols[2])?,
                        wseq: batch
                            .column(self.view_cols[3])
                            .as_any()
                            .downcast_ref::<UInt64Array>()
                            .ok_or_else(|| {
                                DataFusionError::Internal("engine sequence column".into())
                            })?
                            .clone(),
                        features: self
                            .feature_cols
                            .iter()
                            .map(|&i| Arc::clone(batch.column(i)))
                            .collect(),
                    };
                    self.next_id += 1;
                    self.cur = Some(vb);
                    self.pos = 0;
                    self.reserve()?;
                }
            }
        }
    }

    /// Registers what the merge holds with the memory pool (an upper bound:
    /// batches are counted whole, shared buffers more than once). The pool may
    /// refuse: the join cannot spill, so that is a resources-exhausted error.
    fn reserve(&self) -> DfResult<()> {
        let cur = self.cur.as_ref().map_or(0, |b| b.bytes);
        let best = match &self.best_batch {
            Some((id, _, bytes)) if self.cur.as_ref().is_none_or(|c| c.id != *id) => *bytes,
            _ => 0,
        };
        self.reservation.try_resize(self.pinned + cur + best)
    }

    async fn run(
        mut self,
        mut spine: SendableRecordBatchStream,
        tx: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    ) -> DfResult<()> {
        while let Some(batch) = spine.next().await {
            let start = Instant::now();
            self.waited = Duration::ZERO;
            let out = self.join_batch(batch?).await?;
            let baseline = &self.metrics.baseline;
            baseline
                .elapsed_compute()
                .add_duration(start.elapsed().saturating_sub(self.waited));
            baseline.record_output(out.num_rows());
            if tx.send(Ok(out)).await.is_err() {
                return Ok(()); // the consumer hung up
            }
        }
        self.metrics.baseline.done();
        Ok(())
    }

    async fn join_batch(&mut self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let n = batch.num_rows();
        let key_cols: Vec<ArrayRef> = self
            .spine_keys
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let nulls = NullBuffer::union_many(
            key_cols
                .iter()
                .map(|c| c.logical_nulls())
                .collect::<Vec<_>>()
                .iter()
                .map(|n| n.as_ref()),
        );
        let rows = self.converter.convert_columns(&key_cols)?;
        self.pinned = batch.get_array_memory_size() + rows.size();
        self.reserve()?;
        let times = batch
            .column(self.spine_time)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("engine time column".into()))?
            .clone();
        // Sources of the gathered features: the view batches answers point into.
        let mut held: Vec<Vec<ArrayRef>> = Vec::new();
        let mut held_at: HashMap<u64, usize> = HashMap::new();
        let mut indices: Vec<(usize, usize)> = Vec::with_capacity(n);
        const NULL: (usize, usize) = (usize::MAX, 0);
        for i in 0..n {
            if nulls.as_ref().is_some_and(|nb| nb.is_null(i)) {
                indices.push(NULL);
                continue;
            }
            let k = rows.row(i);
            let t = times.value(i);
            while self.ready().await? {
                // `ready` returned true: a current batch is there.
                let Some(vb) = self.cur.as_ref() else { break };
                let p = self.pos;
                let vk = vb.keys.row(p);
                let take = match vk.cmp(&k) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => vb.avail.value(p) <= t,
                    std::cmp::Ordering::Greater => false,
                };
                if !take {
                    break;
                }
                if self.key.as_ref().is_none_or(|o| o.row() != vk) {
                    self.key = Some(vk.owned());
                    self.best = None;
                }
                let rank = (vb.event.value(p), vb.created.value(p), vb.wseq.value(p));
                if self.best.is_none_or(|b| rank > b.rank) {
                    self.best = Some(Best {
                        rank,
                        batch: vb.id,
                        row: p,
                    });
                    if self.best_batch.as_ref().is_none_or(|(id, ..)| *id != vb.id) {
                        self.best_batch = Some((vb.id, vb.features.clone(), vb.bytes));
                    }
                }
                self.pos += 1;
            }
            let hit = match (&self.key, &self.best, &self.best_batch) {
                (Some(key), Some(best), Some((bid, cols, bytes)))
                    if key.row() == k
                        && self.ttl.is_none_or(|d| best.rank.0 >= t.saturating_sub(d)) =>
                {
                    debug_assert_eq!(*bid, best.batch);
                    let slot = *held_at.entry(*bid).or_insert_with(|| {
                        held.push(cols.clone());
                        self.pinned += bytes;
                        held.len() - 1
                    });
                    Some((slot, best.row))
                }
                _ => None,
            };
            indices.push(hit.unwrap_or(NULL));
        }
        let null_slot = held.len();
        for ix in &mut indices {
            if ix.0 == usize::MAX {
                *ix = (null_slot, 0);
            }
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (f, dt) in self.feature_types.iter().enumerate() {
            let null = new_null_array(dt, 1);
            if held.is_empty() {
                columns.push(new_null_array(dt, n));
                continue;
            }
            let mut sources: Vec<&dyn Array> = held.iter().map(|h| h[f].as_ref()).collect();
            sources.push(null.as_ref());
            columns.push(interleave(&sources, &indices)?);
        }
        // The spine batch and the view batches only it pointed into are done.
        drop(held);
        self.pinned = 0;
        self.reserve()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}
