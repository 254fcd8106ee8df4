//! Window aggregations ([semantics §11](crate::docs::semantics)) as a DataFusion
//! plan: the same answer as [`crate::agg::aggregate`], cell for cell, computed
//! partition by partition by the same code.
//!
//! # Plan
//! ```text
//! spine source ─ AggSequenceExec(seq) ─┐                     view source ─ project ─ AggSequenceExec(wseq)
//!   per view: RepartitionExec(hash keys, N) ─┐                  RepartitionExec(hash keys, N) ─┘
//!             AggJoinExec (collect the partition, crate::agg::aggregate) ─ next view …
//! SortExec(seq, per partition) ─ SortPreservingMergeExec(seq) ─ ProjectionExec (drop seq)
//! ```
//! Hash partitioning by the view's join keys puts every event of an entity and
//! every spine row of that entity in one partition, so each partition is an
//! independent aggregation problem: [`AggJoinExec`] collects its spine rows and
//! events (registered with the memory pool; it cannot spill), restores the
//! events' write order (the last tie-break of `first`/`last`/`last_n`) from the
//! write sequence, and runs the in-memory [`crate::agg::aggregate`] on them —
//! one implementation of semantics §11 for both engines, so they cannot drift. The
//! repartitions spill under the pool's limit; the final sort by sequence
//! restores spine order.
//!
//! Both custom nodes are rebuilt from their children and a serde config, as a
//! `PhysicalExtensionCodec` needs. fstore's Ballista codec does not encode them
//! yet: aggregations run on the local engine.

use std::fmt;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, Partitioning, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::{RecordBatchReceiverStream, RecordBatchStreamAdapter};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{EngineConfig, RESERVED_PREFIX, SEQ_BASE_COLUMN};
use super::{execute, from_df, memory_plan};
use crate::agg::{AggOptions, AggView};
use crate::error::{Error, Result};
use crate::model::{Aggregation, JoinKey, ValueType};

/// Spine row sequence (`UInt64`) of the aggregation plan: the spine order the
/// output is sorted back into.
pub const AGG_SEQ_COLUMN: &str = "__fstore_agg_seq";
/// Event sequence (`UInt64`) of the aggregation plan: the events' write order.
pub const AGG_WRITE_SEQ_COLUMN: &str = "__fstore_agg_wseq";

/// Wraps an fstore error for DataFusion ([`from_df`] unwraps it again).
fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// One aggregation feature of an [`AggEngineView`]: the aggregation, the type
/// of its input column and the output column name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggFeature {
    /// The aggregation (column, function, window, hop).
    pub aggregation: Aggregation,
    /// The declared type of its input column.
    pub input_type: ValueType,
    /// The output column.
    pub output: String,
}

/// One view's input to [`aggregation_plan`]: an [`AggView`] with a plan
/// instead of batches and output names.
#[derive(Debug, Clone)]
pub struct AggEngineView {
    /// View name (used in errors).
    pub name: String,
    /// The view's join keys (same names and Arrow types in the spine).
    pub join_keys: Vec<JoinKey>,
    /// Event-time column of the events.
    pub event_timestamp_column: String,
    /// Created-time column (tie-break and cutoff), if any.
    pub created_timestamp_column: Option<String>,
    /// The aggregation features, in output order.
    pub features: Vec<AggFeature>,
    /// The events, in write order: partitions are contiguous runs of the write
    /// order, partition 0 first, or carry an [`SEQ_BASE_COLUMN`] (as
    /// [`super::memory_plan`] and [`super::parquet_plan`] build them).
    pub input: Arc<dyn ExecutionPlan>,
}

/// The config of an [`AggSequenceExec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceConfig {
    /// The `UInt64` column appended.
    pub column: String,
}

/// Appends a row sequence column (`UInt64`), partition by partition: with an
/// [`SEQ_BASE_COLUMN`] in the input (consumed), `base + row within the run`,
/// else `partition << 40 | row` — the input order, as the PIT join's
/// prepare node numbers rows. It must run before any repartitioning.
#[derive(Debug)]
pub struct AggSequenceExec {
    input: Arc<dyn ExecutionPlan>,
    config: SequenceConfig,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl AggSequenceExec {
    /// A sequence node over `input`.
    ///
    /// # Errors
    /// An input column using [`RESERVED_PREFIX`] (other than [`SEQ_BASE_COLUMN`]),
    /// an [`SEQ_BASE_COLUMN`] that is not `UInt64`.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, config: SequenceConfig) -> DfResult<Self> {
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
        if let Ok(f) = in_schema.field_with_name(SEQ_BASE_COLUMN)
            && f.data_type() != &DataType::UInt64
        {
            return Err(external(Error::invalid(format!(
                "column '{SEQ_BASE_COLUMN}' must be UInt64, found {}",
                f.data_type()
            ))));
        }
        let mut fields: Vec<Arc<Field>> = in_schema
            .fields()
            .iter()
            .filter(|f| f.name() != SEQ_BASE_COLUMN)
            .cloned()
            .collect();
        fields.push(Arc::new(Field::new(
            &config.column,
            DataType::UInt64,
            false,
        )));
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

    /// The config (with [`AggSequenceExec::input`], all a codec needs).
    pub fn config(&self) -> &SequenceConfig {
        &self.config
    }
}

impl DisplayAs for AggSequenceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AggSequenceExec: {}", self.config.column)
    }
}

impl ExecutionPlan for AggSequenceExec {
    fn name(&self) -> &str {
        "AggSequenceExec"
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
        let [input] = super::exec::children(children)?;
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
        let base = self.input.schema().index_of(SEQ_BASE_COLUMN).ok();
        let mut seq = super::exec::Sequencer::new(partition);
        let out_schema = Arc::clone(&schema);
        let stream = input.map(move |batch| {
            let mut batch = batch?;
            let n = batch.num_rows();
            let seqs = seq.next(&batch, base)?;
            if let Some(i) = base {
                batch.remove_column(i);
            }
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(seqs));
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&out_schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The config of an [`AggJoinExec`]: everything besides its two children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggJoinConfig {
    /// The view name (for display and errors).
    pub view: String,
    /// The view's join keys, present with the same Arrow types in both children.
    pub join_keys: Vec<JoinKey>,
    /// The spine's timestamp column.
    pub spine_timestamp_column: String,
    /// The events' event-time column.
    pub event_timestamp_column: String,
    /// The events' created-time column, if any.
    pub created_timestamp_column: Option<String>,
    /// The aggregation features, in output order.
    pub features: Vec<AggFeature>,
    /// semantics §5's created-time cutoff.
    pub created_cutoff: bool,
    /// Naive timestamps are UTC.
    pub assume_utc: bool,
}

impl AggJoinConfig {
    fn options(&self) -> AggOptions {
        AggOptions::default()
            .with_created_cutoff(self.created_cutoff)
            .with_assume_utc(self.assume_utc)
    }

    fn aggregations(&self) -> Vec<(Aggregation, ValueType)> {
        self.features
            .iter()
            .map(|f| (f.aggregation.clone(), f.input_type.clone()))
            .collect()
    }

    /// [`crate::agg::aggregate`] over one partition's spine rows and events
    /// (events in write order).
    fn aggregate(&self, spine: &[RecordBatch], events: &[RecordBatch]) -> Result<Vec<ArrayRef>> {
        let view = AggView {
            name: self.view.clone(),
            join_keys: self.join_keys.clone(),
            event_timestamp_column: self.event_timestamp_column.clone(),
            created_timestamp_column: self.created_timestamp_column.clone(),
            aggregations: self.aggregations(),
            batches: events,
        };
        crate::agg::aggregate(spine, &self.spine_timestamp_column, &view, &self.options())
    }
}

/// The aggregations of one view for the spine rows of one hash partition
/// ([semantics §11](crate::docs::semantics)).
///
/// Child 0 is the spine (with [`AGG_SEQ_COLUMN`]), child 1 the view's events (with
/// [`AGG_WRITE_SEQ_COLUMN`], their write order), both hash-partitioned alike by the
/// join keys (one partition without keys). Per partition it collects both
/// inputs — memory registered with the task's pool as consumer
/// `AggJoinExec[partition]`, which cannot spill: a pool that refuses is an
/// error —, orders the events by write sequence and runs
/// [`crate::agg::aggregate`] on them (on a blocking thread).
///
/// Output: the spine's columns, then one column per feature (nullable), in the
/// spine's partitioning and in no particular order; batches of the session's
/// batch size.
#[derive(Debug)]
pub struct AggJoinExec {
    spine: Arc<dyn ExecutionPlan>,
    view: Arc<dyn ExecutionPlan>,
    config: AggJoinConfig,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl AggJoinExec {
    /// An aggregation node over sequenced, partitioned children (see the type docs).
    ///
    /// # Errors
    /// Missing engine columns, key types that differ between the children,
    /// partition counts that differ, and the errors of
    /// [`crate::agg::aggregate`] on empty inputs of the children's schemas
    /// (missing or naive timestamp columns, a missing or mistyped input column).
    pub fn try_new(
        spine: Arc<dyn ExecutionPlan>,
        view: Arc<dyn ExecutionPlan>,
        config: AggJoinConfig,
    ) -> DfResult<Self> {
        let (ss, vs) = (spine.schema(), view.schema());
        let missing = |side: &str, c: &str| {
            external(Error::invalid(format!(
                "view '{}': the {side} input of the aggregation has no column '{c}'",
                config.view
            )))
        };
        ss.index_of(AGG_SEQ_COLUMN)
            .map_err(|_| missing("spine", AGG_SEQ_COLUMN))?;
        vs.index_of(AGG_WRITE_SEQ_COLUMN)
            .map_err(|_| missing("view", AGG_WRITE_SEQ_COLUMN))?;
        for k in &config.join_keys {
            let st = ss
                .field_with_name(&k.name)
                .map_err(|_| missing("spine", &k.name))?;
            let vt = vs
                .field_with_name(&k.name)
                .map_err(|_| missing("view", &k.name))?;
            // Hash partitioning must send equal keys to one partition.
            if st.data_type() != vt.data_type() {
                return Err(external(Error::invalid(format!(
                    "join key '{}' type mismatch: the spine has {}, view '{}' has {}",
                    k.name,
                    st.data_type(),
                    config.view,
                    vt.data_type()
                ))));
            }
        }
        let (np_s, np_v) = (
            spine.output_partitioning().partition_count(),
            view.output_partitioning().partition_count(),
        );
        if np_s != np_v {
            return Err(DataFusionError::Plan(format!(
                "AggJoinExec: the spine has {np_s} partitions, the view {np_v}"
            )));
        }
        // The in-memory aggregation on empty inputs: its schema checks, and the
        // output types.
        let empty = config
            .aggregate(
                &[RecordBatch::new_empty(Arc::clone(&ss))],
                &[RecordBatch::new_empty(Arc::clone(&vs))],
            )
            .map_err(external)?;
        let mut fields: Vec<Arc<Field>> = ss.fields().iter().cloned().collect();
        for (f, a) in config.features.iter().zip(&empty) {
            if fields.iter().any(|x| x.name() == &f.output) {
                return Err(external(Error::invalid(format!(
                    "aggregation feature '{}:{}': output column '{}' is already taken",
                    config.view, f.aggregation.name, f.output
                ))));
            }
            fields.push(Arc::new(Field::new(&f.output, a.data_type().clone(), true)));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, ss.metadata().clone()));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            spine.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            spine,
            view,
            config,
            schema,
            cache,
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
    pub fn config(&self) -> &AggJoinConfig {
        &self.config
    }

    fn key_exprs(&self, schema: &Schema) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        self.config
            .join_keys
            .iter()
            .map(|k| {
                Ok(Arc::new(Column::new_with_schema(&k.name, schema)?) as Arc<dyn PhysicalExpr>)
            })
            .collect()
    }
}

impl DisplayAs for AggJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .config
            .join_keys
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        write!(
            f,
            "AggJoinExec: view={}, keys=[{}], features={}, cutoff={}",
            self.config.view,
            keys.join(", "),
            self.config.features.len(),
            self.config.created_cutoff
        )
    }
}

impl ExecutionPlan for AggJoinExec {
    fn name(&self) -> &str {
        "AggJoinExec"
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, false]
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
        let mut spine = self.spine.execute(partition, Arc::clone(&context))?;
        let mut view = self.view.execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("AggJoinExec[{partition}]"))
            .register(context.memory_pool());
        let batch_size = context.session_config().batch_size().max(1);
        let (spine_schema, view_schema) = (self.spine.schema(), self.view.schema());
        let schema = Arc::clone(&self.schema);
        let config = self.config.clone();
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            // The whole partition: spine rows, then events (an upper bound:
            // batches counted whole; the sorted copy of the events counted too).
            let mut spine_batches = Vec::new();
            while let Some(b) = spine.next().await {
                let b = b?;
                reservation.try_grow(b.get_array_memory_size())?;
                spine_batches.push(b);
            }
            let mut events = Vec::new();
            while let Some(b) = view.next().await {
                let b = b?;
                reservation.try_grow(2 * b.get_array_memory_size())?;
                events.push(b);
            }
            let out = tokio::task::spawn_blocking(move || {
                let spine =
                    datafusion::arrow::compute::concat_batches(&spine_schema, &spine_batches)?;
                let events = in_write_order(&view_schema, &events)?;
                let cols = config
                    .aggregate(std::slice::from_ref(&spine), std::slice::from_ref(&events))
                    .map_err(external)?;
                let mut columns = spine.columns().to_vec();
                columns.extend(cols);
                Ok::<_, DataFusionError>(RecordBatch::try_new_with_options(
                    schema,
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(spine.num_rows())),
                )?)
            })
            .await
            .map_err(|e| DataFusionError::Execution(format!("AggJoinExec[{partition}]: {e}")))??;
            let mut off = 0;
            while off < out.num_rows() {
                let len = batch_size.min(out.num_rows() - off);
                if tx.send(Ok(out.slice(off, len))).await.is_err() {
                    break; // the consumer hung up
                }
                off += len;
            }
            drop(reservation);
            Ok(())
        });
        Ok(builder.build())
    }
}

/// `events` as one batch ordered by [`AGG_WRITE_SEQ_COLUMN`] (the input's write
/// order; repartitioning interleaves the input partitions).
fn in_write_order(schema: &SchemaRef, events: &[RecordBatch]) -> DfResult<RecordBatch> {
    let all = datafusion::arrow::compute::concat_batches(schema, events)?;
    let seq = all.column(schema.index_of(AGG_WRITE_SEQ_COLUMN)?);
    let idx = datafusion::arrow::compute::sort_to_indices(seq, None, None)?;
    Ok(datafusion::arrow::compute::take_record_batch(&all, &idx)?)
}

fn col(name: &str, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(Arc::new(
        Column::new_with_schema(name, schema).map_err(from_df)?,
    ))
}

/// Hash-partitions `input` by `keys` into `n` partitions (one partition when
/// there are no keys).
fn partitioned(
    input: Arc<dyn ExecutionPlan>,
    keys: &[JoinKey],
    n: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if keys.is_empty() {
        return Ok(Arc::new(CoalescePartitionsExec::new(input)));
    }
    let schema = input.schema();
    let exprs = keys
        .iter()
        .map(|k| col(&k.name, &schema))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(
        RepartitionExec::try_new(input, Partitioning::Hash(exprs, n)).map_err(from_df)?,
    ))
}

/// Builds the aggregations of `views` per spine row as a DataFusion plan with
/// exactly the semantics of [`crate::agg::aggregate`] ([semantics §11](crate::docs::semantics)).
///
/// The plan has one output partition, in spine order, with the spine's columns
/// (without an [`SEQ_BASE_COLUMN`]) then each view's features under their output
/// names. `spine` in spine order: partitions are contiguous runs, or carry an
/// [`SEQ_BASE_COLUMN`] (e.g. a [`super::parquet_plan`], or a one-partition plan
/// such as [`super::pit_join_plan`]'s output). `partitions` is the number of hash
/// partitions of each view.
///
/// # Errors
/// Before any data is read: those of [`crate::agg::aggregate`] for the same
/// schemas (missing column, naive timestamp, input column of the wrong type),
/// a join key whose Arrow type differs between the spine and the view, an
/// output name that is taken, input columns using [`RESERVED_PREFIX`]. Null
/// timestamps, null event keys and int64 sum overflows are found while the
/// data streams (the messages of [`crate::agg::aggregate`]; row numbers in them
/// count within the hash partition).
pub fn aggregation_plan(
    spine: Arc<dyn ExecutionPlan>,
    spine_timestamp_column: &str,
    views: &[AggEngineView],
    options: &AggOptions,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let n = partitions.max(1);
    let mut current: Arc<dyn ExecutionPlan> = Arc::new(
        AggSequenceExec::try_new(
            spine,
            SequenceConfig {
                column: AGG_SEQ_COLUMN.to_string(),
            },
        )
        .map_err(from_df)?,
    );
    let spine_names: Vec<String> = current
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|f| f != AGG_SEQ_COLUMN)
        .collect();
    let mut out_names: Vec<String> = Vec::new();
    for v in views {
        // Only the columns the aggregations read cross the shuffle.
        let vs = v.input.schema();
        let mut needed: Vec<&str> = v.join_keys.iter().map(|k| k.name.as_str()).collect();
        needed.push(&v.event_timestamp_column);
        needed.extend(v.created_timestamp_column.as_deref());
        needed.extend(v.features.iter().map(|f| f.aggregation.column.as_str()));
        if vs.index_of(SEQ_BASE_COLUMN).is_ok() {
            needed.push(SEQ_BASE_COLUMN);
        }
        let mut proj: Vec<ProjectionExpr> = Vec::new();
        for name in needed {
            if proj.iter().any(|p| p.alias == name) {
                continue;
            }
            // a missing column is left out: the check below names it
            if let Ok(expr) = Column::new_with_schema(name, &vs) {
                proj.push(ProjectionExpr {
                    expr: Arc::new(expr),
                    alias: name.to_string(),
                });
            }
        }
        let projected: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(proj, Arc::clone(&v.input)).map_err(from_df)?);
        let events: Arc<dyn ExecutionPlan> = Arc::new(
            AggSequenceExec::try_new(
                projected,
                SequenceConfig {
                    column: AGG_WRITE_SEQ_COLUMN.to_string(),
                },
            )
            .map_err(from_df)?,
        );
        out_names.extend(v.features.iter().map(|f| f.output.clone()));
        let config = AggJoinConfig {
            view: v.name.clone(),
            join_keys: v.join_keys.clone(),
            spine_timestamp_column: spine_timestamp_column.to_string(),
            event_timestamp_column: v.event_timestamp_column.clone(),
            created_timestamp_column: v.created_timestamp_column.clone(),
            features: v.features.clone(),
            created_cutoff: options.created_cutoff,
            assume_utc: options.assume_utc,
        };
        // The in-memory aggregation's own checks first (its messages).
        config.aggregate(
            &[RecordBatch::new_empty(current.schema())],
            &[RecordBatch::new_empty(events.schema())],
        )?;
        current = Arc::new(
            AggJoinExec::try_new(
                partitioned(current, &v.join_keys, n)?,
                partitioned(events, &v.join_keys, n)?,
                config,
            )
            .map_err(from_df)?,
        );
    }
    // Back to spine order: sort each partition by sequence, merge them.
    let seq = LexOrdering::new([PhysicalSortExpr::new(
        col(AGG_SEQ_COLUMN, &current.schema())?,
        Default::default(),
    )])
    .ok_or_else(|| Error::invalid("internal: empty sort order"))?;
    let sorted: Arc<dyn ExecutionPlan> =
        Arc::new(SortExec::new(seq.clone(), current).with_preserve_partitioning(true));
    let merged: Arc<dyn ExecutionPlan> = if sorted.output_partitioning().partition_count() > 1 {
        Arc::new(SortPreservingMergeExec::new(seq, sorted))
    } else {
        sorted
    };
    let ms = merged.schema();
    let proj = spine_names
        .iter()
        .chain(&out_names)
        .map(|name| {
            Ok(ProjectionExpr {
                expr: col(name, &ms)?,
                alias: name.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(
        ProjectionExec::try_new(proj, merged).map_err(from_df)?,
    ))
}

/// [`crate::agg::aggregate`] run by the engine over in-memory inputs: the spine
/// and the events become [`memory_plan`]s of `config.partitions` partitions,
/// the plan runs under `config`'s memory limit and batch size, and the result
/// (the spine's columns, then one column per aggregation of `view` named by its
/// feature name) is concatenated into one batch (tests, small inputs).
///
/// # Errors
/// Those of [`aggregation_plan`] and of the run ([`from_df`]); no spine batch
/// (pass at least one, possibly empty, batch), batches of different schemas.
pub async fn aggregate(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    view: &AggView<'_>,
    options: &AggOptions,
    config: &EngineConfig,
) -> Result<RecordBatch> {
    let first = spine.first().ok_or_else(|| {
        Error::invalid("the spine has no batches (pass at least one, possibly empty, batch)")
    })?;
    let events = view.batches.first().ok_or_else(|| {
        Error::invalid(format!(
            "view '{}': no event batches (pass at least one, possibly empty, batch)",
            view.name
        ))
    })?;
    let spine_plan = memory_plan(spine, first.schema(), config.partitions)?;
    let input = memory_plan(view.batches, events.schema(), config.partitions)?;
    let eview = AggEngineView {
        name: view.name.clone(),
        join_keys: view.join_keys.clone(),
        event_timestamp_column: view.event_timestamp_column.clone(),
        created_timestamp_column: view.created_timestamp_column.clone(),
        features: view
            .aggregations
            .iter()
            .map(|(a, t)| AggFeature {
                aggregation: a.clone(),
                input_type: t.clone(),
                output: a.name.clone(),
            })
            .collect(),
        input,
    };
    let plan = aggregation_plan(
        spine_plan,
        spine_timestamp_column,
        std::slice::from_ref(&eview),
        options,
        config.partitions,
    )?;
    let session = config.session()?;
    let schema = plan.schema();
    let mut stream = execute(plan, session.task_ctx())?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b.map_err(from_df)?);
    }
    Ok(arrow_select::concat::concat_batches(&schema, &out)?)
}

#[cfg(test)]
mod tests {
    //! The engine's aggregations against the in-memory ones: a property over
    //! random histories (ties, duplicates, nulls, hop and window boundaries,
    //! the created cutoff; 1 to 7 partitions, tiny batches), and bad input.

    use std::sync::Arc;

    use arrow_array::{Int32Array, Int64Array, RecordBatch};
    use proptest::prelude::*;

    use super::*;
    use crate::agg::tests::{E, all_aggs, event, events_batch, spine_batch};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn view(batches: &[RecordBatch]) -> AggView<'_> {
        AggView {
            name: "txn".into(),
            join_keys: vec![JoinKey::new("id", ValueType::Int64)],
            event_timestamp_column: "event_timestamp".into(),
            created_timestamp_column: Some("created".into()),
            aggregations: all_aggs(),
            batches,
        }
    }

    /// Splits `b` into batches of at most `size` rows (at least one batch).
    fn chunks(b: &RecordBatch, size: usize) -> Vec<RecordBatch> {
        let mut out: Vec<RecordBatch> = (0..b.num_rows())
            .step_by(size.max(1))
            .map(|o| b.slice(o, size.max(1).min(b.num_rows() - o)))
            .collect();
        if out.is_empty() {
            out.push(b.clone());
        }
        out
    }

    fn engine_run(
        spine: &[RecordBatch],
        events: &[RecordBatch],
        opts: &AggOptions,
        config: &EngineConfig,
    ) -> Result<RecordBatch> {
        rt().block_on(aggregate(spine, "ts", &view(events), opts, config))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// For every function of semantics §11, the engine's column equals the in-memory
        /// one bit for bit (same code on the same events per key, in the same
        /// order), the spine columns come back unchanged and in spine order,
        /// whatever the partitions and batch sizes.
        #[test]
        fn engine_aggregations_equal_the_memory_engines(
            ev in proptest::collection::vec(event(), 0..80),
            spine in proptest::collection::vec(
                (proptest::option::weighted(0.9, 0i64..4), (0i64..320).prop_map(|m| m * 60_000_000)),
                0..40),
            cutoff in any::<bool>(),
            partitions in prop_oneof![Just(1usize), Just(2), Just(3), Just(7)],
            spine_batch_rows in 1usize..6,
            event_batch_rows in 1usize..9,
            batch_size in 1usize..5,
        ) {
            // bursts and exact ties: duplicate some events, and give others a
            // twin at the same (key, event_ts, created_ts) with other values,
            // so write order decides first/last/last_n
            let mut ev: Vec<E> = ev;
            let dup: Vec<E> = ev.iter().step_by(4).cloned().collect();
            let twins: Vec<E> = ev
                .iter()
                .step_by(3)
                .map(|e| E {
                    amount: e.amount.map(|a| a + 7),
                    price: e.price.map(|p| p - 0.5),
                    ..e.clone()
                })
                .collect();
            ev.extend(dup);
            ev.extend(twins);
            let sb = spine_batch(&spine);
            let eb = events_batch(&ev);
            let opts = AggOptions::default().with_created_cutoff(cutoff);
            let want = crate::agg::aggregate(
                std::slice::from_ref(&sb), "ts", &view(std::slice::from_ref(&eb)), &opts,
            ).unwrap();
            let config = EngineConfig::default()
                .with_partitions(partitions)
                .with_batch_size(batch_size);
            let got = engine_run(
                &chunks(&sb, spine_batch_rows), &chunks(&eb, event_batch_rows), &opts, &config,
            ).unwrap();
            prop_assert_eq!(got.num_rows(), spine.len());
            prop_assert_eq!(got.num_columns(), 2 + want.len());
            for i in 0..2 {
                prop_assert_eq!(got.column(i).to_data(), sb.column(i).to_data());
            }
            for (k, ((a, _), w)) in all_aggs().iter().zip(&want).enumerate() {
                let g = got.column(2 + k);
                prop_assert_eq!(got.schema().field(2 + k).name().clone(), a.name.clone());
                prop_assert_eq!(g.data_type(), w.data_type(), "{}", a.name);
                prop_assert_eq!(g.to_data(), w.to_data(), "{}", a.name);
            }
        }
    }

    #[test]
    fn a_partition_beyond_the_memory_pool_is_a_named_error() {
        // ~40k events in one partition against a 256 KiB pool: the node that
        // holds them cannot spill, so its reservation fails, naming it
        let ev: Vec<E> = (0..40_000)
            .map(|i| E {
                key: 1,
                ts: i * 1_000_000,
                created: i * 1_000_000,
                amount: Some(i),
                price: None,
            })
            .collect();
        let sb = spine_batch(&[(Some(1), 50_000_000_000)]);
        let config = EngineConfig::default()
            .with_partitions(1)
            .with_memory_limit(Some(256 << 10));
        let e = err(engine_run(
            std::slice::from_ref(&sb),
            &chunks(&events_batch(&ev), 4096),
            &AggOptions::default(),
            &config,
        ));
        assert!(
            e.contains("AggJoinExec[0]") && e.contains("cannot spill"),
            "{e}"
        );
    }

    fn err(r: Result<RecordBatch>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_input_gives_named_errors() {
        let ev: Vec<E> = (0..20)
            .map(|i| E {
                key: i % 3,
                ts: i * 60_000_000,
                created: i * 60_000_000,
                amount: Some(i),
                price: Some(i as f64),
            })
            .collect();
        let eb = events_batch(&ev);
        let sb = spine_batch(&[(Some(1), 600_000_000), (None, 0)]);
        let opts = AggOptions::default();
        let config = EngineConfig::default()
            .with_partitions(3)
            .with_batch_size(2);

        // a spine key of another Arrow type than the events': both types named
        let narrow = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            ("ts", Arc::clone(sb.column(1))),
        ])
        .unwrap();
        let e = err(engine_run(
            &[narrow],
            std::slice::from_ref(&eb),
            &opts,
            &config,
        ));
        assert!(
            e.contains("join key 'id' type mismatch") && e.contains("Int32") && e.contains("Int64"),
            "{e}"
        );

        // a missing input column: the in-memory engine's message, before any data
        let no_price = eb.project(&[0, 1, 2, 3]).unwrap();
        let e = err(engine_run(
            std::slice::from_ref(&sb),
            std::slice::from_ref(&no_price),
            &opts,
            &config,
        ));
        let m = crate::agg::aggregate(
            std::slice::from_ref(&sb),
            "ts",
            &view(std::slice::from_ref(&no_price)),
            &opts,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, m);
        assert!(e.contains("price"), "{e}");

        // a null event key, found while the data streams: names the column
        let mut keys: Vec<Option<i64>> = ev.iter().map(|e| Some(e.key)).collect();
        keys[7] = None;
        let mut cols = eb.columns().to_vec();
        cols[0] = Arc::new(Int64Array::from(keys));
        let null_key = RecordBatch::try_new(
            Arc::new(Schema::new(
                eb.schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
            cols,
        )
        .unwrap();
        let e = err(engine_run(
            std::slice::from_ref(&sb),
            std::slice::from_ref(&null_key),
            &opts,
            &config,
        ));
        assert!(e.contains("join key column 'id' is null"), "{e}");

        // an int64 sum overflow names the feature
        let big: Vec<E> = (0..2)
            .map(|i| E {
                key: 1,
                ts: i * 60_000_000,
                created: 0,
                amount: Some(i64::MAX),
                price: None,
            })
            .collect();
        let e = err(engine_run(
            std::slice::from_ref(&sb),
            &[events_batch(&big)],
            &opts,
            &config,
        ));
        assert!(
            e.contains("int64 sum overflows") && e.contains("txn:amount_sum"),
            "{e}"
        );

        // an output name taken by a spine column
        let mut v = view(std::slice::from_ref(&eb));
        v.aggregations.truncate(1);
        v.aggregations[0].0.name = "ts".into();
        let e = rt()
            .block_on(aggregate(
                std::slice::from_ref(&sb),
                "ts",
                &v,
                &opts,
                &config,
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains("output column 'ts' is already taken"), "{e}");
    }
}
