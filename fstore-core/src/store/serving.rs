//! Serving: `get_online_features` on a prepared request.
//!
//! A selection is resolved once per registry version into a [`Prepared`]
//! request (views, join-key groups, decoder indexes, fallbacks, on-demand
//! wiring, output fields). A request then only encodes keys, makes one backend
//! read, decodes straight into the output columns and records one status per
//! (view, row); per-feature statuses are derived from that and the column's
//! validity when asked for.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, Scalar};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field as ArrowField, FieldRef, Schema, SchemaRef};
use chrono::{DateTime, Utc};

use super::{FeatureSelection, FeatureStore, RequestPlan, check_unique_names, output_name};
use crate::codec::{
    ColumnBuilder, ColumnPool, DecoderIndex, DecoderScratch, PayloadDecoder, Slab, cast_column,
    encode_sorted_keys_into, payload_context, pool_slot,
};
use crate::error::{Error, Result};
use crate::model::{Definitions, Fallback, FeatureRef, JoinKey, Value, ValueType};
use crate::ondemand::{OnDemandFunction, input_batch};
use crate::online::{OnlineKey, OnlineRow, ReadOptions};
use crate::registry::RegistrySnapshot;
use crate::time::{duration_micros, from_micros, to_micros};

/// Default of [`super::FeatureStoreBuilder::with_max_online_entities`]: the most
/// entities (rows) one online request may carry.
pub const DEFAULT_MAX_ONLINE_ENTITIES: usize = 10_000;

/// Online read timeouts of requests with more keys than this do not count
/// against the circuit breaker: a huge request that times out says more about
/// the request than about the backend.
const BREAKER_MAX_COUNTED_KEYS: usize = 1_024;

/// Why a served value is what it is ([semantics §6](crate::docs::semantics)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureStatus {
    /// A stored, unexpired, non-null value.
    Present,
    /// The row exists but this feature's value is null.
    NullValue,
    /// No row for this entity.
    NotFound,
    /// The row is older than the view's ttl at `now`; value withheld.
    Expired,
    /// The online backend failed (or its circuit breaker is open) and this is
    /// the last-known-good answer from the local cache: a value (served like
    /// a present one: no `Default` replaces it, `Required` accepts it), or
    /// null when the cache last saw no row for the entity.
    Stale,
    /// The online backend failed and no cached value exists; value null.
    Unavailable,
}

impl std::fmt::Display for FeatureStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FeatureStatus {
    /// Every status, in declaration order.
    const ALL: [Self; 6] = [
        Self::Present,
        Self::NullValue,
        Self::NotFound,
        Self::Expired,
        Self::Stale,
        Self::Unavailable,
    ];

    /// The status's name (`"Present"`, …), as in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "Present",
            Self::NullValue => "NullValue",
            Self::NotFound => "NotFound",
            Self::Expired => "Expired",
            Self::Stale => "Stale",
            Self::Unavailable => "Unavailable",
        }
    }
}

/// A request for online features.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OnlineRequest {
    /// The features.
    pub features: FeatureSelection,
    /// One row per entity: the join-key columns (cast to the declared types)
    /// and any request fields on-demand views need.
    pub entities: RecordBatch,
    /// The serving time for TTL checks (default: now).
    pub now: Option<DateTime<Utc>>,
    /// Name output columns `view__feature`.
    pub full_feature_names: bool,
}

impl OnlineRequest {
    /// A request at the current time with short names.
    pub fn new(features: FeatureSelection, entities: RecordBatch) -> Self {
        Self {
            features,
            entities,
            now: None,
            full_feature_names: false,
        }
    }
    /// Sets the serving time.
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }
    /// Sets `full_feature_names`.
    pub fn with_full_feature_names(mut self, v: bool) -> Self {
        self.full_feature_names = v;
        self
    }
}

/// What the read found for one (view, row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowStatus {
    Found,
    NotFound,
    Expired,
    /// From the last-known-good cache: a row.
    Stale,
    /// From the last-known-good cache: known absent.
    StaleAbsent,
    Unavailable,
}

/// One status and one event time per (read view, request row), view-major
/// (`view * n + row`): two vectors for the whole response.
#[derive(Debug, Clone)]
struct Rows {
    n: usize,
    status: Vec<RowStatus>,
    event_ts: Vec<Option<i64>>,
}

impl Rows {
    fn status(&self, view: usize, row: usize) -> RowStatus {
        self.status[view * self.n + row]
    }

    fn event_ts(&self, view: usize, row: usize) -> Option<i64> {
        self.event_ts[view * self.n + row]
    }

    /// The statuses of read view `view`.
    fn of_view(&self, view: usize) -> &[RowStatus] {
        &self.status[view * self.n..(view + 1) * self.n]
    }
}

/// Online features: the request's columns, then one column per feature, with
/// a status and event time per (feature, row) — see [`OnlineResponse::feature`].
///
/// Statuses are kept compactly (one per view and row, plus each column's
/// validity before fallbacks) and derived per feature on demand.
///
/// The values are kept as decoded: per read view, one column-major block of
/// its 8-byte columns. [`OnlineResponse::view_values`] and
/// [`OnlineResponse::column`] read them in place; [`OnlineResponse::batch`]
/// gives them as Arrow. The arrays are built during the request when the
/// request needs them itself (a null, missing or expired value, which
/// fallbacks may replace; an on-demand or aggregation feature; a column that
/// is not 8 bytes wide), else on the first call of
/// [`OnlineResponse::batch`], in the arrays the prepared request keeps
/// between requests (as the request itself would have): a caller that reads
/// the values in place never pays for 100 Arrow arrays, and one that reads
/// the batch pays the same either way.
///
/// ```
/// # use fstore_core::{DenseValues, OnlineResponse};
/// /// The feature vector of row `row` of view `view`, in the view's order.
/// fn feature_vector(resp: &OnlineResponse, view: &str, row: usize) -> Option<Vec<f64>> {
///     let block = resp.view_values(view)?;
///     let DenseValues::Float64(v) = block.values() else { return None };
///     let n = block.n_rows();
///     Some((0..block.features().len()).map(|c| v[c * n + row]).collect())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct OnlineResponse {
    /// Values imputed by `Default` fallbacks in this response.
    pub imputed: u64,
    /// The values as Arrow, once built.
    batch: OnceLock<RecordBatch>,
    schema: SchemaRef,
    /// The request's columns, while `batch` is unbuilt.
    entity_cols: Vec<ArrayRef>,
    /// Per plain read view: its decoded slab when every column is 8 bytes wide.
    slabs: Vec<Option<Slab>>,
    plan: Arc<Prepared>,
    rows: Rows,
    /// Validity before fallbacks of the outputs that had a null, by output
    /// index (ascending); every other output had a value in every row.
    raw_nulls: Vec<(usize, NullBuffer)>,
}

/// Borrowed 8-byte values, column-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DenseValues<'a> {
    /// Float64 values.
    Float64(&'a [f64]),
    /// Int64 values.
    Int64(&'a [i64]),
}

impl DenseValues<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::Float64(v) => v.len(),
            Self::Int64(v) => v.len(),
        }
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The values of one read view's features in a response, in place: value of
/// feature `c`, row `r` at `values[c * n_rows + r]` (see
/// [`OnlineResponse::view_values`]). A null slot holds an unspecified value;
/// check [`DenseBlock::is_valid`].
#[derive(Debug, Clone, Copy)]
pub struct DenseBlock<'a> {
    values: DenseValues<'a>,
    n_rows: usize,
    features: &'a [String],
    validity: Option<&'a NullBuffer>,
}

impl<'a> DenseBlock<'a> {
    /// All values, column-major (`features().len() * n_rows()`).
    pub fn values(&self) -> DenseValues<'a> {
        self.values
    }

    /// Number of rows (entities).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Output column names of the view's features, in block order.
    pub fn features(&self) -> &'a [String] {
        self.features
    }

    /// Validity of every value, column-major like [`DenseBlock::values`]
    /// (`None`: every value is present).
    pub fn validity(&self) -> Option<&'a NullBuffer> {
        self.validity
    }

    /// Whether feature `c` has a value in row `row`.
    ///
    /// # Panics
    /// When `c` or `row` is out of range.
    pub fn is_valid(&self, c: usize, row: usize) -> bool {
        assert!(
            c < self.features.len() && row < self.n_rows,
            "cell out of range"
        );
        self.validity
            .is_none_or(|v| v.is_valid(c * self.n_rows + row))
    }
}

/// The values of one output column, in place (see [`OnlineResponse::column`]).
/// A null slot holds an unspecified value; check [`DenseColumn::is_valid`].
#[derive(Debug, Clone)]
pub struct DenseColumn<'a> {
    values: DenseValues<'a>,
    nulls: Option<NullBuffer>,
}

impl<'a> DenseColumn<'a> {
    /// One value per row.
    pub fn values(&self) -> DenseValues<'a> {
        self.values
    }

    /// Validity per row (`None`: every row has a value).
    pub fn nulls(&self) -> Option<&NullBuffer> {
        self.nulls.as_ref()
    }

    /// Whether row `row` has a value.
    ///
    /// # Panics
    /// When `row` is out of range.
    pub fn is_valid(&self, row: usize) -> bool {
        assert!(row < self.values.len(), "row out of range");
        self.nulls.as_ref().is_none_or(|n| n.is_valid(row))
    }
}

/// `words` as values of `kind`.
fn dense_values(kind: DenseKind, words: &arrow_buffer::Buffer) -> DenseValues<'_> {
    match kind {
        DenseKind::Float64 => DenseValues::Float64(words.typed_data::<f64>()),
        DenseKind::Int64 => DenseValues::Int64(words.typed_data::<i64>()),
    }
}

impl OnlineResponse {
    /// The request's columns, then one column per feature, in output order.
    ///
    /// Built during the request, or on the first call when the request did
    /// not need the arrays itself (see the type's docs); later calls return
    /// the same batch.
    pub fn batch(&self) -> &RecordBatch {
        self.batch.get_or_init(|| self.build_batch())
    }

    /// [`OnlineResponse::batch`], owned.
    pub fn into_batch(self) -> RecordBatch {
        let _ = self.batch();
        let Self { batch, .. } = self;
        batch
            .into_inner()
            .unwrap_or_else(|| unreachable!("batch built above"))
    }

    /// The batch of a response served without arrays: every output is a
    /// plain 8-byte column of a read view's slab. Small responses take the
    /// arrays from the prepared request's pool, as the request would have.
    fn build_batch(&self) -> RecordBatch {
        let plan = &self.plan;
        let mut scratch = (self.rows.n <= COLUMN_POOL_MAX_ROWS).then(|| plan.take_scratch());
        if let Some(s) = &mut scratch
            && s.pools.len() < plan.views.len()
        {
            s.pools.resize_with(plan.views.len(), ColumnPool::new);
        }
        let mut cols = Vec::with_capacity(self.entity_cols.len() + plan.outputs.len());
        cols.extend(self.entity_cols.iter().cloned());
        for o in &plan.outputs {
            let col = match o.source {
                Source::View { view, col } => {
                    let v = &plan.views[view];
                    match (
                        self.slabs.get(view).and_then(Option::as_ref),
                        v.index.wide_col(col),
                    ) {
                        (Some(slab), Some(c)) => {
                            let slot = scratch
                                .as_mut()
                                .and_then(|s| pool_slot(&mut s.pools[view], &v.index, c));
                            slab.wide_array(&v.index, col, c, slot)
                        }
                        _ => unreachable!("an unbuilt batch has every output in a slab"),
                    }
                }
                Source::OnDemand { .. } => {
                    unreachable!("an unbuilt batch has no on-demand output")
                }
            };
            cols.push(col);
        }
        if let Some(s) = scratch {
            plan.put_scratch(s);
        }
        // Same schema, columns and row count as the request checked when it
        // decided not to build them (internal invariant).
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(self.rows.n)),
        )
        .unwrap_or_else(|e| unreachable!("lazily built batch: {e}"))
    }

    /// The values of plain view `view`'s features, in place: one block, no
    /// Arrow arrays built. `None` when the view is not read by this request,
    /// when its features are not all float64 (or all int64) — e.g. a string
    /// feature —, when one of its features is output twice or is only an
    /// on-demand input, or when a `Default` fallback replaced a value in this
    /// response (the block holds values before fallbacks; read
    /// [`OnlineResponse::column`] or [`OnlineResponse::batch`] then).
    pub fn view_values(&self, view: &str) -> Option<DenseBlock<'_>> {
        let vi = self.plan.views.iter().position(|v| v.name == view)?;
        let (kind, names) = self.plan.views[vi].dense.as_ref()?;
        let slab = self.slabs.get(vi)?.as_ref()?;
        if self.imputed_in(vi) {
            return None;
        }
        let n = slab.len();
        let values = match dense_values(*kind, slab.words()) {
            DenseValues::Float64(v) => DenseValues::Float64(v.get(..names.len() * n)?),
            DenseValues::Int64(v) => DenseValues::Int64(v.get(..names.len() * n)?),
        };
        Some(DenseBlock {
            values,
            n_rows: n,
            features: names,
            validity: slab.nulls(),
        })
    }

    /// The values of output column `name` (after fallbacks, as in
    /// [`OnlineResponse::batch`]), in place when not built yet. `None` when
    /// there is no such output or it is not float64 or int64.
    pub fn column(&self, name: &str) -> Option<DenseColumn<'_>> {
        let oi = self.plan.outputs.iter().position(|o| o.name == name)?;
        if self.batch.get().is_none()
            && let Source::View { view, col } = self.plan.outputs[oi].source
            && let Some(slab) = self.slabs.get(view).and_then(Option::as_ref)
        {
            let index = &self.plan.views.get(view)?.index;
            let kind = match index.value_type(col)? {
                ValueType::Float64 => DenseKind::Float64,
                ValueType::Int64 => DenseKind::Int64,
                _ => return None,
            };
            let c = index.wide_col(col)?;
            let (n, at) = (slab.len(), c * slab.len());
            let values = match dense_values(kind, slab.words()) {
                DenseValues::Float64(v) => DenseValues::Float64(v.get(at..at + n)?),
                DenseValues::Int64(v) => DenseValues::Int64(v.get(at..at + n)?),
            };
            let nulls = slab
                .nulls()
                .filter(|_| slab.has_null(c))
                .map(|b| b.slice(at, n));
            return Some(DenseColumn { values, nulls });
        }
        let batch = self.batch();
        let col = batch.column(batch.num_columns() - self.plan.outputs.len() + oi);
        let values = match col.data_type() {
            DataType::Float64 => DenseValues::Float64(
                col.as_primitive_opt::<arrow_array::types::Float64Type>()?
                    .values(),
            ),
            DataType::Int64 => DenseValues::Int64(
                col.as_primitive_opt::<arrow_array::types::Int64Type>()?
                    .values(),
            ),
            _ => return None,
        };
        Some(DenseColumn {
            values,
            nulls: col.logical_nulls(),
        })
    }

    /// Whether the Arrow batch has been built (tests of the lazy path).
    #[cfg(test)]
    pub(super) fn batch_built(&self) -> bool {
        self.batch.get().is_some()
    }

    /// Whether a `Default` fallback replaced a value of plain view `vi`.
    fn imputed_in(&self, vi: usize) -> bool {
        self.imputed > 0
            && self.raw_nulls.iter().any(|(oi, _)| {
                let o = &self.plan.outputs[*oi];
                matches!(o.source, Source::View { view, .. } if view == vi)
                    && matches!(o.fallback, Fallback::Default(_))
            })
    }

    /// Status and event time of output column `name`.
    pub fn feature(&self, name: &str) -> Option<FeatureMetadata<'_>> {
        self.plan
            .outputs
            .iter()
            .position(|o| o.name == name)
            .map(|i| FeatureMetadata { resp: self, i })
    }

    /// Status and event time of every feature column, in output order.
    pub fn features(&self) -> impl ExactSizeIterator<Item = FeatureMetadata<'_>> + '_ {
        (0..self.plan.outputs.len()).map(move |i| FeatureMetadata { resp: self, i })
    }

    /// Number of rows (entities).
    pub fn num_rows(&self) -> usize {
        self.rows.n
    }

    /// Validity of output `i` before fallbacks (`None`: valid in every row).
    fn raw_nulls(&self, i: usize) -> Option<&NullBuffer> {
        self.raw_nulls
            .binary_search_by_key(&i, |(o, _)| *o)
            .ok()
            .map(|k| &self.raw_nulls[k].1)
    }
}

/// The dense plan of plain view `vi` (see [`ReadView::dense`]).
fn dense_plan(
    vi: usize,
    index: &DecoderIndex,
    outputs: &[Output],
) -> Option<(DenseKind, Vec<String>)> {
    let kind = match index.value_type(0)? {
        ValueType::Float64 => DenseKind::Float64,
        ValueType::Int64 => DenseKind::Int64,
        _ => return None,
    };
    let mut names = Vec::with_capacity(index.num_columns());
    for i in 0..index.num_columns() {
        let same = matches!(
            (kind, index.value_type(i)?),
            (DenseKind::Float64, ValueType::Float64) | (DenseKind::Int64, ValueType::Int64)
        );
        if !same || index.wide_col(i) != Some(i) {
            return None;
        }
        let mut outs = outputs
            .iter()
            .filter(|o| matches!(o.source, Source::View { view, col } if (view, col) == (vi, i)));
        match (outs.next(), outs.next()) {
            (Some(o), None) => names.push(o.name.clone()),
            _ => return None,
        }
    }
    Some((kind, names))
}

/// Status and event time of one feature of an [`OnlineResponse`], per row.
#[derive(Debug, Clone, Copy)]
pub struct FeatureMetadata<'a> {
    resp: &'a OnlineResponse,
    i: usize,
}

impl FeatureMetadata<'_> {
    fn out(&self) -> &Output {
        &self.resp.plan.outputs[self.i]
    }

    /// Output column name.
    pub fn name(&self) -> &str {
        &self.out().name
    }

    /// The feature.
    pub fn feature(&self) -> &FeatureRef {
        &self.out().feature
    }

    /// Status of row `row`.
    ///
    /// # Panics
    /// When `row` is out of range.
    pub fn status(&self, row: usize) -> FeatureStatus {
        status_of(
            self.out(),
            &self.resp.rows,
            self.resp.raw_nulls(self.i),
            row,
        )
    }

    /// Status per row.
    pub fn statuses(&self) -> Vec<FeatureStatus> {
        let nulls = self.resp.raw_nulls(self.i);
        (0..self.resp.num_rows())
            .map(|r| status_of(self.out(), &self.resp.rows, nulls, r))
            .collect()
    }

    /// Event time of the stored row at `row` (`None` when not found; on-demand
    /// outputs have none).
    ///
    /// # Panics
    /// When `row` is out of range.
    pub fn event_timestamp(&self, row: usize) -> Option<DateTime<Utc>> {
        match self.out().source {
            Source::OnDemand { .. } => None,
            Source::View { view, .. } => self.resp.rows.event_ts(view, row).map(from_micros),
        }
    }

    /// Event time per row.
    pub fn event_timestamps(&self) -> Vec<Option<DateTime<Utc>>> {
        (0..self.resp.num_rows())
            .map(|r| self.event_timestamp(r))
            .collect()
    }
}

/// A selection resolved against the registry once, for many requests:
/// [`FeatureStore::prepare`], then [`FeatureStore::get_prepared`]. Cheap to
/// clone and share. When the registry changes it is re-resolved on the next
/// request (transparently).
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    selection: Arc<FeatureSelection>,
    full_feature_names: bool,
    current: Arc<RwLock<Arc<Prepared>>>,
}

impl PreparedRequest {
    /// The selection.
    pub fn selection(&self) -> &FeatureSelection {
        &self.selection
    }

    /// The output column names, in order.
    pub fn output_names(&self) -> Vec<String> {
        self.get().outputs.iter().map(|o| o.name.clone()).collect()
    }

    fn get(&self) -> Arc<Prepared> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Column `col` of read view `view`.
    View { view: usize, col: usize },
    /// Output `col` of on-demand view `od`.
    OnDemand { od: usize, col: usize },
}

#[derive(Debug)]
struct Output {
    name: String,
    feature: FeatureRef,
    source: Source,
    fallback: Fallback,
    field: FieldRef,
    /// The `Default` fallback as a one-value array.
    default: Option<ArrayRef>,
    /// No later output reads the same view column: the response takes the
    /// decoded column instead of sharing it.
    last_use: bool,
}

#[derive(Debug)]
struct ReadView {
    name: String,
    group: usize,
    index: Arc<DecoderIndex>,
    /// The view's ttl in microseconds.
    ttl: Option<i64>,
    /// Dense access ([`OnlineResponse::view_values`]): set when every
    /// requested column is float64 (or every one int64) and is exactly one
    /// output; the output names in slab column order.
    dense: Option<(DenseKind, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DenseKind {
    Float64,
    Int64,
}

/// The aggregation features of one view read by a selection.
#[derive(Debug)]
struct AggView {
    name: String,
    group: usize,
    aggs: Vec<crate::agg::OnlineAgg>,
}

#[derive(Debug)]
struct PreparedOnDemand {
    def: crate::model::OnDemandView,
    func: OnDemandFunction,
    /// (input name, view, column) of each input feature.
    inputs: Vec<(String, usize, usize)>,
    request_fields: Vec<(String, DataType)>,
}

/// The resolved form of a selection at one registry version.
#[derive(Debug)]
pub(crate) struct Prepared {
    version: u64,
    /// Distinct join-key sets; views on the same entities share one encoding.
    key_groups: Vec<Vec<JoinKey>>,
    views: Vec<ReadView>,
    /// Aggregation views ([semantics §11](crate::docs::semantics)); in
    /// [`Source::View`] they follow the plain views (index `views.len() + i`).
    agg_views: Vec<AggView>,
    on_demand: Vec<PreparedOnDemand>,
    outputs: Vec<Output>,
    /// Deprecated views read by this selection.
    deprecated: Vec<String>,
    /// Per distinct output view (or on-demand view): its name and its
    /// `fstore_features_served_total` keys, built once.
    served: Vec<(String, [metrics::Key; 6])>,
    /// Per output: its index in `served`.
    served_of: Vec<usize>,
    /// Per read view (plain, then aggregation): its index in `served`
    /// (`None`: no output of its own, only on-demand inputs).
    view_served: Vec<Option<usize>>,
    /// Plain views only, all columns 8 bytes wide: a request whose values
    /// have no null builds no arrays until [`OnlineResponse::batch`].
    lazy_ok: bool,
    /// Output schema for the last entity schema seen.
    schema: RwLock<Option<(SchemaRef, SchemaRef)>>,
    /// Working memory of finished small requests, reused by the next ones.
    scratch: [ScratchShard; SCRATCH_SHARDS],
}

/// One shard of a prepared request's [`Scratch`] pool, alone on its cache
/// lines: each thread takes and returns working memory in its own shard, so
/// threads serving at once do not pass one lock's line between cores.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ScratchShard(Mutex<Vec<Scratch>>);

/// Shards of the [`Scratch`] pool (threads beyond this share them).
const SCRATCH_SHARDS: usize = 8;

/// This thread's shard of the [`Scratch`] pools (assigned round-robin).
fn scratch_shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SCRATCH_SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Requests with at most this many rows take their working memory (keys,
/// slots, decoder state) from the prepared request's pool and give it back;
/// larger ones allocate their own (amortized over the rows), so the pool never
/// holds large buffers.
const SCRATCH_MAX_ROWS: usize = 128;

/// Requests with at most this many rows also reuse the output arrays of
/// 8-byte columns ([`crate::codec::PooledColumn`]); each pooled array keeps
/// its last response's values buffer alive, so only small ones are pooled.
const COLUMN_POOL_MAX_ROWS: usize = 16;

/// Most pooled [`Scratch`]es per shard of a prepared request's pool (about one
/// per request in flight at once; each holds a few KB to a few tens of KB:
/// keys of up to [`SCRATCH_MAX_ROWS`] rows, arrays of up to
/// [`COLUMN_POOL_MAX_ROWS`]).
const SCRATCH_POOL: usize = 64 / SCRATCH_SHARDS;

/// Per-request working memory of [`FeatureStore::serve`], kept between
/// requests so a small request allocates little beyond its response.
#[derive(Debug, Default)]
struct Scratch {
    /// Per key group, per row: the encoded entity key.
    encoded: Vec<Vec<Vec<u8>>>,
    key_cols: Vec<ArrayRef>,
    /// Backend keys; the first `used` are this request's (view names and key
    /// buffers are overwritten in place).
    keys: Vec<OnlineKey>,
    /// Per (view, row), view-major: the index of its key in `keys`.
    slots: Vec<usize>,
    decoders: Vec<DecoderScratch>,
    /// Per read view: its 8-byte output arrays, reused when the response
    /// that held them is gone.
    pools: Vec<ColumnPool>,
    /// Per read view: the decoded columns (the response takes them, and the
    /// rest are emptied after every request, so the pooled arrays are held
    /// only by the response).
    view_cols: Vec<Vec<Option<ArrayRef>>>,
    /// Per distinct served view: counts by status.
    served: Vec<[u64; 6]>,
    /// Per read view: counts of its row statuses.
    row_counts: Vec<[u64; 7]>,
    /// Per read view: whether a decoded column may hold a null.
    view_nulls: Vec<bool>,
    /// Per read view: its outputs with a value in every row.
    full_outputs: Vec<u64>,
}

/// Writes key `used` of `keys` (reusing its buffers) and counts it.
fn set_key(keys: &mut Vec<OnlineKey>, used: &mut usize, view: &str, entity_key: &[u8]) {
    if let Some(k) = keys.get_mut(*used) {
        if k.view != view {
            k.view.clear();
            k.view.push_str(view);
        }
        k.entity_key.clear();
        k.entity_key.extend_from_slice(entity_key);
    } else {
        keys.push(OnlineKey {
            view: view.to_owned(),
            entity_key: entity_key.to_vec(),
        });
    }
    *used += 1;
}

impl Prepared {
    fn new(
        store: &FeatureStore,
        snap: &RegistrySnapshot,
        sel: &FeatureSelection,
        full: bool,
    ) -> Result<Self> {
        let defs: &Definitions = &snap.state.definitions;
        let plan = RequestPlan::new(defs, sel)?;
        let mut key_groups: Vec<Vec<JoinKey>> = Vec::new();
        let mut views = Vec::with_capacity(plan.views.len());
        for (rv, feats) in &plan.views {
            let fields: Vec<_> = feats
                .iter()
                .filter_map(|f| rv.view.feature(f).cloned())
                .collect();
            let mut jk = rv.join_keys.clone();
            jk.sort_by(|a, b| a.name.cmp(&b.name));
            let group = match key_groups.iter().position(|g| *g == jk) {
                Some(g) => g,
                None => {
                    key_groups.push(jk);
                    key_groups.len() - 1
                }
            };
            views.push(ReadView {
                name: rv.name().to_owned(),
                group,
                index: Arc::new(DecoderIndex::new(&fields, &rv.view.features)),
                ttl: rv.view.ttl.map(duration_micros),
                dense: None,
            });
        }
        let mut agg_views = Vec::with_capacity(plan.aggs.len());
        for (rv, names) in &plan.aggs {
            let mut jk = rv.join_keys.clone();
            jk.sort_by(|a, b| a.name.cmp(&b.name));
            let group = match key_groups.iter().position(|g| *g == jk) {
                Some(g) => g,
                None => {
                    key_groups.push(jk);
                    key_groups.len() - 1
                }
            };
            agg_views.push(AggView {
                name: rv.name().to_owned(),
                group,
                aggs: crate::agg::OnlineAgg::of_view(rv, Some(names))?,
            });
        }
        // (read view, column) of a plain or aggregation feature.
        let view_col = |r: &FeatureRef| -> Result<(usize, usize)> {
            let plain = plan.views.iter().enumerate().find_map(|(vi, (v, feats))| {
                (v.name() == r.view)
                    .then(|| feats.iter().position(|f| *f == r.feature))
                    .flatten()
                    .map(|c| (vi, c))
            });
            let agg = || {
                agg_views.iter().enumerate().find_map(|(ai, av)| {
                    (av.name == r.view)
                        .then(|| av.aggs.iter().position(|a| a.agg.name == r.feature))
                        .flatten()
                        .map(|c| (views.len() + ai, c))
                })
            };
            plain
                .or_else(agg)
                .ok_or_else(|| Error::invalid(format!("feature '{r}' was not planned")))
        };
        let mut on_demand = Vec::with_capacity(plan.on_demand.len());
        for o in &plan.on_demand {
            let func = store.on_demand_fn(&o.name)?.clone();
            func.check(o)?;
            let inputs = o
                .inputs
                .iter()
                .map(|r| view_col(r).map(|(v, c)| (r.feature.clone(), v, c)))
                .collect::<Result<_>>()?;
            on_demand.push(PreparedOnDemand {
                def: o.clone(),
                func,
                inputs,
                request_fields: o
                    .request_fields
                    .iter()
                    .map(|f| (f.name.clone(), f.value_type.to_arrow()))
                    .collect(),
            });
        }
        let mut outputs = Vec::with_capacity(plan.refs.len());
        for r in &plan.refs {
            let field = match defs.field(r) {
                Some(f) => f.clone(),
                // aggregation features have no fallback policy (null = no value)
                None => {
                    let (view, col) = view_col(r)?;
                    let a = view
                        .checked_sub(views.len())
                        .and_then(|ai| agg_views.get(ai))
                        .and_then(|av| av.aggs.get(col))
                        .ok_or_else(|| Error::not_found("feature", r.to_string()))?;
                    crate::model::FeatureField::new(&r.feature, a.output_type())
                }
            };
            let source = match plan.on_demand.iter().position(|o| o.name == r.view) {
                Some(od) => {
                    let col = plan.on_demand[od]
                        .outputs
                        .iter()
                        .position(|f| f.name == r.feature)
                        .ok_or_else(|| Error::not_found("feature", r.to_string()))?;
                    Source::OnDemand { od, col }
                }
                None => {
                    let (view, col) = view_col(r)?;
                    Source::View { view, col }
                }
            };
            let default = match &field.fallback {
                Fallback::Default(d) => Some(one_value(&field.value_type, d)),
                _ => None,
            };
            let name = output_name(r, full);
            outputs.push(Output {
                field: Arc::new(ArrowField::new(&name, field.value_type.to_arrow(), true)),
                name,
                feature: r.clone(),
                source,
                fallback: field.fallback.clone(),
                default,
                last_use: true,
            });
        }
        for i in 0..outputs.len() {
            if let Source::View { view, col } = outputs[i].source {
                outputs[i].last_use = !outputs[i + 1..].iter().any(|o| {
                    matches!(o.source, Source::View { view: v, col: c } if (v, c) == (view, col))
                });
            }
        }
        check_unique_names(outputs.iter().map(|o| o.name.as_str()))?;
        for (vi, v) in views.iter_mut().enumerate() {
            v.dense = dense_plan(vi, &v.index, &outputs);
        }
        // Requests on plain views only, every column 8 bytes wide, may leave
        // the arrays unbuilt (see `OnlineResponse::batch`).
        let lazy_ok = on_demand.is_empty()
            && agg_views.is_empty()
            && views
                .iter()
                .all(|v| (0..v.index.num_columns()).all(|i| v.index.wide_col(i).is_some()));
        let deprecated = plan
            .view_names()
            .into_iter()
            .filter(|v| {
                defs.feature_views
                    .get(v)
                    .is_some_and(|fv| fv.deprecation.is_some())
            })
            .collect();
        let mut served: Vec<(String, [metrics::Key; 6])> = Vec::new();
        let mut served_of = Vec::with_capacity(outputs.len());
        for o in &outputs {
            let view = &o.feature.view;
            let i = match served.iter().position(|(v, _)| v == view) {
                Some(i) => i,
                None => {
                    let labels = FeatureStatus::ALL.map(FeatureStatus::as_str);
                    served.push((view.clone(), crate::telemetry::served_keys(view, labels)));
                    served.len() - 1
                }
            };
            served_of.push(i);
        }
        let view_served = views
            .iter()
            .map(|v| &v.name)
            .chain(agg_views.iter().map(|v| &v.name))
            .map(|name| served.iter().position(|(v, _)| v == name))
            .collect();
        Ok(Self {
            version: snap.version,
            served,
            served_of,
            view_served,
            key_groups,
            views,
            agg_views,
            on_demand,
            outputs,
            deprecated,
            lazy_ok,
            schema: RwLock::new(None),
            scratch: Default::default(),
        })
    }

    /// Working memory from the pool (or a new one).
    fn take_scratch(&self) -> Scratch {
        self.scratch[scratch_shard()]
            .0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    /// Gives working memory back to the pool (unless it is full).
    fn put_scratch(&self, s: Scratch) {
        if let Ok(mut v) = self.scratch[scratch_shard()].0.lock()
            && v.len() < SCRATCH_POOL
        {
            v.push(s);
        }
    }

    /// The output schema for requests whose entity columns are `entities`.
    fn schema(&self, entities: &SchemaRef) -> Result<SchemaRef> {
        if let Ok(g) = self.schema.read()
            && let Some((e, out)) = g.as_ref()
            && (Arc::ptr_eq(e, entities) || e == entities)
        {
            return Ok(Arc::clone(out));
        }
        let fields: Vec<FieldRef> = entities
            .fields()
            .iter()
            .cloned()
            .chain(self.outputs.iter().map(|o| Arc::clone(&o.field)))
            .collect();
        check_unique_names(fields.iter().map(|f| f.name().as_str()))?;
        let out = Arc::new(Schema::new(fields));
        if let Ok(mut g) = self.schema.write() {
            *g = Some((Arc::clone(entities), Arc::clone(&out)));
        }
        Ok(out)
    }
}

fn one_value(t: &crate::model::ValueType, v: &Value) -> ArrayRef {
    let mut b = ColumnBuilder::new(t);
    b.push_value(v);
    b.finish()
}

type ReadOutcome = (Vec<Option<OnlineRow>>, Option<Vec<bool>>);

/// The prepared-request cache of [`FeatureStore::get_online_features`]: by
/// [`fingerprint`], the selections and their prepared forms (short names,
/// full names).
pub(crate) type PreparedCache = RwLock<HashMap<u64, Vec<PreparedEntry>>>;

pub(crate) type PreparedEntry = (FeatureSelection, [Option<Arc<Prepared>>; 2]);

/// A cheap hash of a selection (its kind, length, first and last reference):
/// hashing every reference of a 100-feature selection on each request costs
/// more than the rest of the lookup. Entries compare the full selection.
fn fingerprint(sel: &FeatureSelection) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match sel {
        FeatureSelection::Service(s) => (0u8, s).hash(&mut h),
        FeatureSelection::Refs(r) => (1u8, r.len(), r.first(), r.last()).hash(&mut h),
    }
    h.finish()
}

/// Entries kept in the prepared-request cache before it is cleared.
const PREPARED_CACHE_CAPACITY: usize = 256;

impl FeatureStore {
    /// One `read_tiles` call for every aggregation view and entity of a request
    /// ([semantics §11](crate::docs::semantics)), under the online timeout.
    async fn read_agg_tiles(&self, keys: &[OnlineKey]) -> Result<Vec<Vec<crate::online::Tile>>> {
        let backend = self.online.backend();
        let opts = ReadOptions::default().with_timeout(self.online_timeout);
        let read = self.online.read_tiles(keys, &opts);
        match self
            .under_online_timeout("tile read", keys.len(), read)
            .await
        {
            Ok(t) if t.len() == keys.len() => Ok(t),
            Ok(t) => Err(Error::backend_msg(
                backend,
                format!(
                    "read_tiles returned {} entries for {} keys",
                    t.len(),
                    keys.len()
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// `read` (an online read of `n` keys) under the online timeout: when the
    /// store ends reads at `ReadOptions::timeout` itself
    /// ([`crate::OnlineCapabilities::enforces_read_timeout`]) no timer is
    /// added here (one per read is enough), else `tokio::time::timeout`.
    /// Either way running out is [`Error::Timeout`] naming the limit.
    async fn under_online_timeout<T>(
        &self,
        what: &str,
        n: usize,
        read: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.online_timeout;
        let res = if self.online_enforces_timeout {
            read.await
        } else {
            match tokio::time::timeout(limit, read).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::Timeout {
                        backend: self.online.backend(),
                        message: format!("online {what} of {n} keys exceeded {limit:?}"),
                    });
                }
            }
        };
        res.map_err(|e| match e {
            Error::Timeout { backend, message } => Error::Timeout {
                backend,
                message: format!(
                    "online {what} of {n} keys timed out (online timeout {limit:?}): {message}"
                ),
            },
            other => other,
        })
    }

    /// One online read with timeout, circuit breaker and last-known-good
    /// fallback. The second value, when the cache answered, says per key
    /// whether the cache had it.
    async fn read_online(&self, keys: &[OnlineKey]) -> Result<ReadOutcome> {
        let backend = self.online.backend();
        let allowed = self.breaker.as_ref().is_none_or(|b| b.allow());
        let err = if allowed {
            let ticket = self.lkg.as_ref().map(|c| c.ticket());
            let opts = ReadOptions::default().with_timeout(self.online_timeout);
            let read = self.online.read(keys, &opts);
            let res = match self.under_online_timeout("read", keys.len(), read).await {
                Ok(rows) if rows.len() == keys.len() => Ok(rows),
                Ok(rows) => Err(Error::backend_msg(
                    backend,
                    format!("read returned {} rows for {} keys", rows.len(), keys.len()),
                )),
                Err(e) => Err(e),
            };
            match res {
                Ok(rows) => {
                    if let Some(b) = &self.breaker {
                        b.success();
                    }
                    if let (Some(c), Some(t)) = (&self.lkg, ticket) {
                        c.remember(t, keys, &rows);
                    }
                    return Ok((rows, None));
                }
                Err(e) => {
                    if let Some(b) = &self.breaker
                        && counts_against_backend(&e, keys.len())
                    {
                        b.failure();
                    }
                    e
                }
            }
        } else {
            Error::Unavailable {
                backend,
                message: "circuit breaker open after repeated online read failures".into(),
            }
        };
        match &self.lkg {
            Some(c) if err.is_retryable() => {
                tracing::warn!(backend, error = %err, "online read failed; serving last-known-good values");
                let cached = c.lookup(keys);
                let hit = cached.iter().map(Option::is_some).collect();
                Ok((cached.into_iter().map(Option::flatten).collect(), Some(hit)))
            }
            _ => Err(err),
        }
    }

    /// The registry snapshot for serving. Past the cache ttl the cached
    /// snapshot is still served while one background task refreshes it, so a
    /// slow registry never sits on the request path (a zero ttl, or no cached
    /// snapshot yet, reads it inline).
    async fn serving_snapshot(&self) -> Result<Arc<RegistrySnapshot>> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|(at, s)| (at.elapsed(), Arc::clone(s))));
        match cached {
            Some((age, s)) if age < self.registry_ttl => Ok(s),
            Some((_, s)) if !self.registry_ttl.is_zero() => {
                if let Ok(rt) = tokio::runtime::Handle::try_current()
                    && !self.refreshing.swap(true, Ordering::AcqRel)
                {
                    let registry = Arc::clone(&self.registry);
                    let cache = Arc::clone(&self.cache);
                    let refreshing = Arc::clone(&self.refreshing);
                    rt.spawn(async move {
                        match registry.snapshot().await {
                            Ok(s) => super::remember_in(&cache, &s),
                            Err(e) => {
                                tracing::warn!(error = %e, "background registry refresh failed")
                            }
                        }
                        refreshing.store(false, Ordering::Release);
                    });
                }
                Ok(s)
            }
            _ => self.snapshot().await,
        }
    }

    /// The prepared form of `sel` at the current registry version, from the
    /// store's cache.
    async fn prepared_for(&self, sel: &FeatureSelection, full: bool) -> Result<Arc<Prepared>> {
        let slot = usize::from(full);
        let fp = fingerprint(sel);
        let cached = |version: u64| {
            let m = self.prepared.read().ok()?;
            m.get(&fp)
                .and_then(|v| v.iter().find(|(s, _)| s == sel))
                .and_then(|(_, e)| e[slot].as_ref())
                .filter(|p| p.version == version)
                .map(Arc::clone)
        };
        // A fresh snapshot's version from the cache's atomics: the common
        // case touches neither the snapshot lock nor its reference count.
        if let Some(p) = self
            .cache
            .fresh_version(self.registry_ttl)
            .and_then(&cached)
        {
            return Ok(p);
        }
        let snap = self.serving_snapshot().await?;
        if let Some(p) = cached(snap.version) {
            return Ok(p);
        }
        let p = Arc::new(Prepared::new(self, &snap, sel, full)?);
        if let Ok(mut m) = self.prepared.write() {
            if m.len() >= PREPARED_CACHE_CAPACITY && !m.contains_key(&fp) {
                m.clear();
            }
            let bucket = m.entry(fp).or_default();
            match bucket.iter_mut().find(|(s, _)| s == sel) {
                Some((_, e)) => e[slot] = Some(Arc::clone(&p)),
                None => {
                    let mut e: [Option<Arc<Prepared>>; 2] = [None, None];
                    e[slot] = Some(Arc::clone(&p));
                    bucket.push((sel.clone(), e));
                }
            }
        }
        Ok(p)
    }

    /// Resolves `features` once (views, join keys, decoders, fallbacks,
    /// on-demand wiring, output names) for repeated
    /// [`FeatureStore::get_prepared`] calls. [`FeatureStore::get_online_features`]
    /// does the same through a cache keyed by the selection; a prepared
    /// request also skips that lookup and the selection's clone per request.
    ///
    /// # Errors
    /// As [`FeatureStore::get_online_features`] for an unknown or clashing
    /// selection or a missing on-demand function.
    pub async fn prepare(
        &self,
        features: &FeatureSelection,
        full_feature_names: bool,
    ) -> Result<PreparedRequest> {
        let p = self.prepared_for(features, full_feature_names).await?;
        Ok(PreparedRequest {
            selection: Arc::new(features.clone()),
            full_feature_names,
            current: Arc::new(RwLock::new(p)),
        })
    }

    /// Serves a prepared request for the rows of `entities` at `now`
    /// (default: the current time). Same semantics and errors as
    /// [`FeatureStore::get_online_features`].
    ///
    /// # Errors
    /// As [`FeatureStore::get_online_features`].
    pub async fn get_prepared(
        &self,
        prepared: &PreparedRequest,
        entities: &RecordBatch,
        now: Option<DateTime<Utc>>,
    ) -> Result<OnlineResponse> {
        let p = self.current_plan(prepared).await?;
        self.serve(p, entities, now).await
    }

    /// The same as [`FeatureStore::get_prepared`], kept for its callers: every
    /// request now leaves the Arrow arrays unbuilt when it does not need them
    /// itself (no null, missing or expired value; no on-demand or aggregation
    /// feature; every column 8 bytes wide) until [`OnlineResponse::batch`] is
    /// called, so values read through [`OnlineResponse::view_values`] /
    /// [`OnlineResponse::column`] never pay for them, and a batch built on
    /// that call reuses the prepared request's arrays as the request would
    /// have.
    ///
    /// # Errors
    /// As [`FeatureStore::get_online_features`].
    pub async fn get_prepared_dense(
        &self,
        prepared: &PreparedRequest,
        entities: &RecordBatch,
        now: Option<DateTime<Utc>>,
    ) -> Result<OnlineResponse> {
        self.get_prepared(prepared, entities, now).await
    }

    /// The plan of `prepared` at the current registry version.
    async fn current_plan(&self, prepared: &PreparedRequest) -> Result<Arc<Prepared>> {
        let mut p = prepared.get();
        if self.cache.fresh_version(self.registry_ttl) == Some(p.version) {
            return Ok(p);
        }
        let snap = self.serving_snapshot().await?;
        if p.version != snap.version {
            p = Arc::new(Prepared::new(
                self,
                &snap,
                &prepared.selection,
                prepared.full_feature_names,
            )?);
            if let Ok(mut g) = prepared.current.write()
                && g.version < p.version
            {
                *g = Arc::clone(&p);
            }
        }
        Ok(p)
    }

    /// Serves the latest features of many entities from the online store, in as
    /// few backend round trips as the backend allows (one `read` call for every
    /// view and entity; duplicate entities are read once).
    ///
    /// TTL is enforced by event time at `now`; fallbacks are applied to values
    /// that are absent (`Default` imputes and is counted, `Required` fails); a
    /// `Stale` value from the last-known-good cache is a value. On-demand views
    /// run on the raw (not imputed) values, as in training.
    ///
    /// The values are decoded once per view into a column-major block;
    /// Arrow arrays are built during the request only when it needs them
    /// (see [`OnlineResponse`]), else on the first [`OnlineResponse::batch`]
    /// call (which the `online` operation's duration then does not include).
    ///
    /// The selection is resolved once per registry version and cached
    /// ([`FeatureStore::prepare`] makes that explicit). A request carries at most
    /// [`super::FeatureStoreBuilder::with_max_online_entities`] rows (default
    /// [`DEFAULT_MAX_ONLINE_ENTITIES`]); split larger ones.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming a missing or uncastable key column, a
    /// name clash, or a request over the entity limit;
    /// [`Error::RequiredFeatureMissing`]; [`Error::Timeout`] past the store's
    /// online timeout; [`Error::Unavailable`] while the circuit breaker is
    /// open; backend failures. With a last-known-good cache, retryable
    /// failures are answered from the cache instead (statuses `Stale` /
    /// `Unavailable`).
    pub async fn get_online_features(&self, req: &OnlineRequest) -> Result<OnlineResponse> {
        let span = tracing::debug_span!(
            "fstore.online",
            entities = req.entities.num_rows(),
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        crate::telemetry::operation("online", span, async {
            self.check_entity_count(req.entities.num_rows())?;
            let p = self
                .prepared_for(&req.features, req.full_feature_names)
                .await?;
            self.serve(p, &req.entities, req.now).await
        })
        .await
    }

    fn check_entity_count(&self, n: usize) -> Result<()> {
        if n > self.max_online_entities {
            return Err(Error::invalid(format!(
                "online request has {n} entities; the maximum is {} \
                 (FeatureStoreBuilder::with_max_online_entities): split the request",
                self.max_online_entities
            )));
        }
        Ok(())
    }

    /// The hot path: encode keys, one read, decode into columns, fallbacks.
    async fn serve(
        &self,
        p: Arc<Prepared>,
        entities: &RecordBatch,
        now: Option<DateTime<Utc>>,
    ) -> Result<OnlineResponse> {
        let n = entities.num_rows();
        self.check_entity_count(n)?;
        if !p.deprecated.is_empty() {
            self.note_deprecated_names(&p.deprecated);
        }
        let now = to_micros(now.unwrap_or_else(Utc::now));
        let small = n <= SCRATCH_MAX_ROWS;
        let reuse_columns = n <= COLUMN_POOL_MAX_ROWS;
        let mut scratch = if small {
            p.take_scratch()
        } else {
            Scratch::default()
        };
        let Scratch {
            encoded,
            key_cols,
            keys,
            slots,
            decoders,
            pools,
            view_cols,
            served,
            row_counts,
            view_nulls,
            full_outputs,
        } = &mut scratch;

        // Keys: one encoding per join-key group (sorted by name when
        // prepared), one backend key per distinct (view, entity).
        if encoded.len() < p.key_groups.len() {
            encoded.resize_with(p.key_groups.len(), Vec::new);
        }
        for (g, out) in p.key_groups.iter().zip(encoded.iter_mut()) {
            encode_sorted_keys_into(entities, g, key_cols, out)?;
        }
        key_cols.clear();
        let mut used = 0;
        slots.clear();
        for v in &p.views {
            let enc = &encoded[v.group];
            if n == 1 {
                slots.push(used);
                set_key(keys, &mut used, &v.name, &enc[0]);
            } else {
                let mut dedup: HashMap<&[u8], usize> = HashMap::with_capacity(n);
                for k in enc {
                    let idx = *dedup.entry(k.as_slice()).or_insert_with(|| {
                        set_key(keys, &mut used, &v.name, k);
                        used - 1
                    });
                    slots.push(idx);
                }
            }
        }
        let keys = &keys[..used];
        // Aggregation views: one tile read, keys deduplicated the same way.
        let mut tile_keys: Vec<OnlineKey> = Vec::new();
        let mut tile_slots: Vec<Vec<usize>> = Vec::with_capacity(p.agg_views.len());
        for v in &p.agg_views {
            let mut dedup: HashMap<&[u8], usize> = HashMap::with_capacity(n);
            let s = encoded[v.group]
                .iter()
                .map(|k| {
                    *dedup.entry(k.as_slice()).or_insert_with(|| {
                        tile_keys.push(OnlineKey {
                            view: v.name.clone(),
                            entity_key: k.clone(),
                        });
                        tile_keys.len() - 1
                    })
                })
                .collect();
            tile_slots.push(s);
        }
        let (rows, from_cache) = if keys.is_empty() && !tile_keys.is_empty() {
            (Vec::new(), None)
        } else {
            self.read_online(keys).await?
        };
        let tiles = if tile_keys.is_empty() {
            Vec::new()
        } else {
            self.read_agg_tiles(&tile_keys).await?
        };

        // Decode straight into the columns; one status per (view, row).
        let read_views = p.views.len() + p.agg_views.len();
        let mut out_rows = Rows {
            n,
            status: Vec::with_capacity(read_views * n),
            event_ts: Vec::with_capacity(read_views * n),
        };
        if view_cols.len() < read_views {
            view_cols.resize_with(read_views, Vec::new);
        }
        if decoders.len() < p.views.len() {
            decoders.resize_with(p.views.len(), DecoderScratch::default);
        }
        if pools.len() < p.views.len() {
            pools.resize_with(p.views.len(), ColumnPool::new);
        }
        let mut slabs: Vec<Option<Slab>> = Vec::with_capacity(p.views.len());
        view_nulls.clear();
        view_nulls.resize(read_views, true);
        for (vi, v) in p.views.iter().enumerate() {
            let cutoff = v.ttl.map(|t| now.saturating_sub(t));
            let mut dec = PayloadDecoder::with_scratch(
                Arc::clone(&v.index),
                n,
                std::mem::take(&mut decoders[vi]),
            );
            for &i in &slots[vi * n..(vi + 1) * n] {
                let row = rows[i].as_ref();
                let expired = matches!((row, cutoff), (Some(r), Some(c)) if r.event_ts < c);
                let cached = from_cache.as_ref().map(|c| c[i]);
                out_rows.status.push(match (cached, row) {
                    (Some(false), _) => RowStatus::Unavailable,
                    (Some(true), None) => RowStatus::StaleAbsent,
                    (None, None) => RowStatus::NotFound,
                    (_, Some(_)) if expired => RowStatus::Expired,
                    (Some(true), Some(_)) => RowStatus::Stale,
                    (None, Some(_)) => RowStatus::Found,
                });
                out_rows.event_ts.push(row.map(|r| r.event_ts));
                let payload = if expired {
                    None
                } else {
                    row.map(|r| &r.payload[..])
                };
                dec.push_row(payload)
                    .map_err(|e| payload_context(e, &v.name, &keys[i].entity_key))?;
            }
            let dec = if p.lazy_ok {
                match dec.finish_slab() {
                    Ok((slab, scratch)) => {
                        decoders[vi] = scratch;
                        view_nulls[vi] = slab.nulls().is_some();
                        slabs.push(Some(slab));
                        continue;
                    }
                    Err(dec) => dec,
                }
            } else {
                dec
            };
            let pool = reuse_columns.then_some(&mut pools[vi]);
            let cols = &mut view_cols[vi];
            let slab;
            (decoders[vi], view_nulls[vi], slab) = dec.finish_into(|c| cols.push(Some(c)), pool);
            slabs.push(slab);
        }
        // Values without a null need no fallback: the arrays wait for
        // `OnlineResponse::batch`. Otherwise they are built now.
        let lazy = p.lazy_ok && slabs.iter().all(Option::is_some) && !view_nulls.contains(&true);
        if p.lazy_ok && !lazy {
            for (vi, ((v, slab), cols)) in p
                .views
                .iter()
                .zip(&slabs)
                .zip(view_cols.iter_mut())
                .enumerate()
            {
                if let Some(slab) = slab
                    && cols.is_empty()
                {
                    for i in 0..v.index.num_columns() {
                        let c = v.index.wide_col(i).ok_or_else(|| {
                            Error::invalid(format!("view '{}': column {i} is not 8 bytes", v.name))
                        })?;
                        let slot = reuse_columns
                            .then(|| pool_slot(&mut pools[vi], &v.index, c))
                            .flatten();
                        cols.push(Some(slab.wide_array(&v.index, i, c, slot)));
                    }
                }
            }
        }

        // Aggregation features: window(now) merged from the tiles.
        for (ai, (v, slot)) in p.agg_views.iter().zip(&tile_slots).enumerate() {
            out_rows.status.extend(slot.iter().map(|&i| {
                if tiles[i].is_empty() {
                    RowStatus::NotFound
                } else {
                    RowStatus::Found
                }
            }));
            out_rows.event_ts.extend(std::iter::repeat_n(None, n));
            let cols = &mut view_cols[p.views.len() + ai];
            for a in &v.aggs {
                let values = slot
                    .iter()
                    .map(|&i| a.value_at(&tiles[i], now))
                    .collect::<Result<Vec<_>>>()?;
                cols.push(Some(crate::agg::column_of(a, &values)));
            }
        }

        // On-demand views on the raw values.
        let mut od_cols: Vec<Vec<ArrayRef>> = Vec::with_capacity(p.on_demand.len());
        for o in &p.on_demand {
            let mut inputs = Vec::with_capacity(o.inputs.len() + o.request_fields.len());
            for (name, v, c) in &o.inputs {
                inputs.push((name.clone(), decoded(view_cols, *v, *c, name)?));
            }
            for (name, t) in &o.request_fields {
                let col = entities.column_by_name(name).ok_or_else(|| {
                    Error::invalid(format!(
                        "on-demand view '{}' needs request field '{name}' in the request",
                        o.def.name
                    ))
                })?;
                inputs.push((name.clone(), cast_column(col, name, t)?));
            }
            let input = input_batch(inputs, n)?;
            od_cols.push(o.func.run(&o.def, &input)?);
        }

        // Output columns with fallbacks; values served counted by view and
        // status ([`crate::telemetry::FEATURES_SERVED`]) on the way.
        row_counts.clear();
        row_counts.extend((0..read_views).map(|v| {
            let mut k = [0u64; 7];
            for st in out_rows.of_view(v) {
                k[*st as usize] += 1;
            }
            k
        }));
        served.clear();
        served.resize(p.served.len(), [0; 6]);
        full_outputs.clear();
        full_outputs.resize(read_views, 0);
        // an unbuilt batch keeps only the request's columns here
        let out_cols = if lazy { 0 } else { p.outputs.len() };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(entities.num_columns() + out_cols);
        cols.extend(entities.columns().iter().cloned());
        let mut raw_nulls = Vec::new();
        let mut imputed = 0u64;
        if lazy {
            // no null anywhere: every output has a value in every row
            for o in &p.outputs {
                if let Source::View { view, .. } = o.source {
                    full_outputs[view] += 1;
                }
            }
        } else {
            for (oi, o) in p.outputs.iter().enumerate() {
                let col = match o.source {
                    Source::View { view, col } if o.last_use => view_cols
                        .get_mut(view)
                        .and_then(|v| v.get_mut(col))
                        .and_then(Option::take)
                        .ok_or_else(|| missing_column(&o.feature))?,
                    Source::View { view, col } => {
                        decoded(view_cols, view, col, &o.feature.to_string())?
                    }
                    Source::OnDemand { od, col } => Arc::clone(&od_cols[od][col]),
                };
                let missing = match o.source {
                    Source::View { view, .. } if !view_nulls[view] => 0,
                    _ => col.logical_null_count(),
                };
                let nulls = if missing > 0 {
                    col.logical_nulls()
                } else {
                    None
                };
                let mut out = col;
                if missing > 0 {
                    match (&o.fallback, &o.default) {
                        (Fallback::Default(_), Some(d)) => {
                            let valid = nulls
                                .as_ref()
                                .map(|b| BooleanArray::new(b.inner().clone(), None));
                            if let Some(mask) = valid {
                                out = arrow_select::zip::zip(&mask, &out, &Scalar::new(d))?;
                                imputed += missing as u64;
                                crate::telemetry::record_imputations(
                                    &o.feature.view,
                                    missing as u64,
                                );
                            }
                        }
                        (Fallback::Required, _) => {
                            let row = nulls
                                .as_ref()
                                .and_then(|b| (0..n).find(|r| b.is_null(*r)))
                                .unwrap_or(0);
                            let resp_status = status_of(o, &out_rows, nulls.as_ref(), row);
                            return Err(Error::RequiredFeatureMissing {
                                feature: o.feature.to_string(),
                                row,
                                status: resp_status.to_string(),
                            });
                        }
                        _ => {}
                    }
                }
                match o.source {
                    // counted per view below
                    Source::View { view, .. } if missing == 0 => full_outputs[view] += 1,
                    _ => {
                        let c =
                            served_counts(o, &out_rows, row_counts, nulls.as_ref(), missing as u64);
                        served[p.served_of[oi]]
                            .iter_mut()
                            .zip(c)
                            .for_each(|(a, x)| *a += x);
                    }
                }
                if let Some(b) = nulls {
                    raw_nulls.push((oi, b));
                }
                cols.push(out);
            }
        }
        // An output with a value in every row has its view's row statuses.
        for ((k, rc), s) in full_outputs
            .iter()
            .zip(row_counts.iter())
            .zip(&p.view_served)
        {
            if let (1.., Some(s)) = (*k, s) {
                let st = |r: RowStatus| rc[r as usize] * k;
                let c = [
                    st(RowStatus::Found),
                    0,
                    st(RowStatus::NotFound),
                    st(RowStatus::Expired),
                    st(RowStatus::Stale) + st(RowStatus::StaleAbsent),
                    st(RowStatus::Unavailable),
                ];
                served[*s].iter_mut().zip(c).for_each(|(a, x)| *a += x);
            }
        }
        // The response holds the only other references to pooled arrays.
        view_cols.iter_mut().for_each(Vec::clear);
        if imputed > 0 {
            self.metrics
                .imputations
                .fetch_add(imputed, Ordering::Relaxed);
        }
        for ((_, keys), c) in p.served.iter().zip(served.iter()) {
            for (key, k) in keys.iter().zip(c) {
                crate::telemetry::add_to(key, *k);
            }
        }
        if small {
            p.put_scratch(scratch);
        }
        let schema = p.schema(&entities.schema())?;
        let batch = OnceLock::new();
        if !lazy {
            let b = RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                cols,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?;
            cols = Vec::new();
            let _ = batch.set(b);
        }
        Ok(OnlineResponse {
            batch,
            schema,
            entity_cols: cols,
            slabs,
            imputed,
            plan: p,
            rows: out_rows,
            raw_nulls,
        })
    }
}

/// The values of output `o` in a response by status (in
/// [`FeatureStatus::ALL`] order): derived from its view's row status counts
/// `row_counts` and its count of nulls before fallbacks (row by row only when
/// the last-known-good cache answered).
fn served_counts(
    o: &Output,
    rows: &Rows,
    row_counts: &[[u64; 7]],
    nulls: Option<&NullBuffer>,
    nulls_n: u64,
) -> [u64; 6] {
    let mut c = [0u64; 6];
    let n = rows.n as u64;
    match o.source {
        Source::OnDemand { .. } => {
            c[1] = nulls_n;
            c[0] = n - nulls_n;
        }
        Source::View { view, .. } => {
            let rc = row_counts[view];
            let (found, not_found, expired, stale, stale_absent, unavailable) = (
                rc[RowStatus::Found as usize],
                rc[RowStatus::NotFound as usize],
                rc[RowStatus::Expired as usize],
                rc[RowStatus::Stale as usize],
                rc[RowStatus::StaleAbsent as usize],
                rc[RowStatus::Unavailable as usize],
            );
            if stale == 0 {
                // rows without a value are null; the other nulls are NullValue
                let null_values =
                    nulls_n.saturating_sub(not_found + expired + stale_absent + unavailable);
                c[0] = found.saturating_sub(null_values);
                c[1] = null_values;
                c[2] = not_found;
                c[3] = expired;
                c[4] = stale_absent;
                c[5] = unavailable;
            } else {
                for row in 0..rows.n {
                    c[status_of(o, rows, nulls, row) as usize] += 1;
                }
            }
        }
    }
    c
}

/// Decoded column `col` of read view `view`, shared (an `InvalidInput` naming
/// `what` if it is missing, which a prepared request rules out).
fn decoded(
    view_cols: &[Vec<Option<ArrayRef>>],
    view: usize,
    col: usize,
    what: &str,
) -> Result<ArrayRef> {
    view_cols
        .get(view)
        .and_then(|v| v.get(col))
        .and_then(Option::as_ref)
        .map(Arc::clone)
        .ok_or_else(|| Error::invalid(format!("feature '{what}' was not decoded")))
}

fn missing_column(f: &FeatureRef) -> Error {
    Error::invalid(format!("feature '{f}' was not decoded"))
}

/// The status of output `o` at `row`, from its view's row status and the
/// validity of its value before fallbacks.
fn status_of(o: &Output, rows: &Rows, nulls: Option<&NullBuffer>, row: usize) -> FeatureStatus {
    let valid = nulls.is_none_or(|b| b.is_valid(row));
    match o.source {
        Source::OnDemand { .. } if valid => FeatureStatus::Present,
        Source::OnDemand { .. } => FeatureStatus::NullValue,
        Source::View { view, .. } => match rows.status(view, row) {
            RowStatus::Found if valid => FeatureStatus::Present,
            RowStatus::Stale if valid => FeatureStatus::Stale,
            RowStatus::Found | RowStatus::Stale => FeatureStatus::NullValue,
            RowStatus::StaleAbsent => FeatureStatus::Stale,
            RowStatus::NotFound => FeatureStatus::NotFound,
            RowStatus::Expired => FeatureStatus::Expired,
            RowStatus::Unavailable => FeatureStatus::Unavailable,
        },
    }
}

/// Whether a failed read should count against the circuit breaker: only
/// retryable backend failures (not the caller's mistakes, such as invalid
/// input), and not timeouts of requests too large to say anything about the
/// backend's health.
fn counts_against_backend(e: &Error, keys: usize) -> bool {
    match e {
        Error::Timeout { .. } => keys <= BREAKER_MAX_COUNTED_KEYS,
        Error::Conflict(_) => false,
        e => e.is_retryable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_counts_only_retryable_backend_failures() {
        let unavailable = Error::Unavailable {
            backend: "x",
            message: "down".into(),
        };
        let timeout = Error::Timeout {
            backend: "x",
            message: "slow".into(),
        };
        assert!(counts_against_backend(&unavailable, 1));
        assert!(counts_against_backend(&timeout, 10));
        assert!(!counts_against_backend(
            &timeout,
            BREAKER_MAX_COUNTED_KEYS + 1
        ));
        assert!(!counts_against_backend(&Error::invalid("key too long"), 1));
        assert!(!counts_against_backend(
            &Error::not_found("feature", "v:f"),
            1
        ));
    }
}
