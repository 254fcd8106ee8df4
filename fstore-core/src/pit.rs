//! The pure point-in-time join ([semantics §5](crate::docs::semantics)): no I/O, deterministic, independent of
//! batch boundaries and input row order.

mod keys;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{
    Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array, cast::AsArray, new_null_array,
};
use arrow_schema::{DataType, Field, FieldRef, Schema, TimeUnit};

use crate::error::{Error, Result};
use crate::time::{check_timestamp_type, duration_micros, reject_nulls, timestamp_micros};
use keys::{KeyIndex, NONE};

/// One feature view's input to [`point_in_time_join`].
#[derive(Debug, Clone)]
pub struct PitView<'a> {
    /// View name (used for `view__feature` output names and in errors).
    pub name: String,
    /// Join-key column names. Each must exist, with the same type, in the spine and
    /// in every feature batch. Keys are compared by typed value.
    pub join_keys: Vec<String>,
    /// Event-timestamp column of the feature batches.
    pub event_timestamp_column: String,
    /// Optional created-timestamp column of the feature batches (tie-break, cutoff).
    pub created_timestamp_column: Option<String>,
    /// Lookback window; `None` = unbounded. Inclusive at both ends.
    pub ttl: Option<Duration>,
    /// The requested features, in output order, with their output types.
    /// Every feature batch must carry each of these columns with this type.
    pub features: Vec<Field>,
    /// The feature rows. Row order across the slice (batch 0 first) is the
    /// "write order" used as the last tie-break.
    pub batches: &'a [RecordBatch],
}

/// Options of [`point_in_time_join`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PitOptions {
    /// Name output columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// Only rows with `created_ts <= t` are candidates (no backfill leakage).
    /// Views without a created-timestamp column are unaffected.
    pub created_cutoff: bool,
    /// Interpret naive timestamp columns as UTC instead of rejecting them.
    pub assume_utc: bool,
}

impl PitOptions {
    /// Sets [`PitOptions::full_feature_names`].
    pub fn with_full_feature_names(mut self, v: bool) -> Self {
        self.full_feature_names = v;
        self
    }
    /// Sets [`PitOptions::created_cutoff`].
    pub fn with_created_cutoff(mut self, v: bool) -> Self {
        self.created_cutoff = v;
        self
    }
    /// Sets [`PitOptions::assume_utc`].
    pub fn with_assume_utc(mut self, v: bool) -> Self {
        self.assume_utc = v;
        self
    }
}

/// Joins each spine row with, per view, the latest feature row at or before the
/// spine row's timestamp ([semantics §5](crate::docs::semantics)).
///
/// For spine row r with key k and time t, and view v with ttl T: candidates are v's
/// rows with key k and `event_ts <= t` and, if T is set, `event_ts >= t - T`; with
/// [`PitOptions::created_cutoff`] also `created_ts <= t`. The chosen row has the
/// greatest `(event_ts, created_ts)`, ties going to the row written last. No
/// candidate, or a null key in the spine, gives nulls.
///
/// Output: one batch, exactly one row per spine row in spine order, every spine
/// column (as given), then each view's requested features in order.
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for: an empty `spine` slice, a missing
/// column, a key type mismatch (naming both types), naive or null timestamps
/// ([semantics §3](crate::docs::semantics)), a feature column whose type differs from the declared one, an
/// output name clash.
pub fn point_in_time_join(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<RecordBatch> {
    join_tuned(
        spine,
        spine_timestamp_column,
        views,
        options,
        &Tuning::default(),
    )
}

/// Where a join spent its time (wall clock, summed over views), from
/// [`point_in_time_join_profiled`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JoinProfile {
    /// Concatenating the spine, validating, indexing its keys (dense ids) and
    /// sorting each key's spine rows by time.
    pub spine_index: Duration,
    /// Looking up the feature rows' key ids (key densification).
    pub key_lookup: Duration,
    /// Slotting feature rows and the running maximum per key.
    pub slotting: Duration,
    /// Gathering the chosen rows' feature values into the output columns.
    pub gather: Duration,
}

/// [`point_in_time_join`], also returning where it spent its time (for
/// profiling; the result is the same).
///
/// # Errors
/// As [`point_in_time_join`].
pub fn point_in_time_join_profiled(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<(RecordBatch, JoinProfile)> {
    let tuning = Tuning {
        profile: Some(std::sync::Mutex::new(JoinProfile::default())),
        ..Tuning::default()
    };
    let out = join_tuned(spine, spine_timestamp_column, views, options, &tuning)?;
    let profile = tuning
        .profile
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    Ok((out, profile))
}

/// The thresholds of the join's fast paths. Production always uses
/// [`Tuning::default`]; tests lower them so small inputs reach the mid-buffer
/// flush and the threaded path (the result must not depend on them).
#[derive(Debug)]
pub(crate) struct Tuning {
    /// Feature rows buffered before a partitioning pass.
    part_chunk: usize,
    /// Total rows (spine + feature) from which views are joined in parallel.
    parallel_work: usize,
    /// Upper bound on threads (the number of cores by default).
    max_threads: usize,
    /// Feature rows per key-lookup task.
    piece_rows: usize,
    /// Where the time went, when asked for.
    profile: Option<std::sync::Mutex<JoinProfile>>,
    /// Which paths ran (tests only).
    #[cfg(test)]
    log: PathLog,
}

impl Tuning {
    /// Adds `d` to one field of the profile, if one is kept.
    fn record(&self, field: fn(&mut JoinProfile) -> &mut Duration, d: Duration) {
        if let Some(p) = &self.profile
            && let Ok(mut p) = p.lock()
        {
            *field(&mut p) += d;
        }
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            part_chunk: PART_CHUNK,
            parallel_work: PARALLEL_WORK,
            max_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            piece_rows: PIECE_ROWS,
            profile: None,
            #[cfg(test)]
            log: PathLog::default(),
        }
    }
}

/// What a tuned join did, so a test can check it reached the path it targets.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct PathLog {
    /// Largest key-id partitioning shift used by any view.
    max_shift: std::sync::atomic::AtomicU32,
    /// Partitioning passes run because the buffer was full (not the final one).
    mid_flushes: AtomicUsize,
    /// Joins that ran views on more than one thread.
    threaded: AtomicUsize,
    /// Views whose slotting was split into more than one key-id range.
    id_splits: AtomicUsize,
    /// Views slotted as one range by one worker while other workers ran
    /// other views' tasks (several views, several threads).
    pooled_whole: AtomicUsize,
}

/// [`point_in_time_join`] with explicit thresholds.
fn join_tuned(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
    tuning: &Tuning,
) -> Result<RecordBatch> {
    let spine_batch = concat_spine(spine)?;
    let fields = output_fields(spine_batch.schema_ref(), views, options)?;
    let (rows, chosen) = choose(&spine_batch, spine_timestamp_column, views, options, tuning)?;
    let threads = threads_for(views, spine_batch.num_rows(), tuning);
    let started = Instant::now();
    let per_view = gather(views, &rows, &chosen, threads)?;
    tuning.record(|p| &mut p.gather, started.elapsed());
    let mut columns: Vec<ArrayRef> = spine_batch.columns().to_vec();
    columns.extend(per_view.into_iter().flatten());
    let out_schema = Arc::new(Schema::new_with_metadata(
        fields,
        spine_batch.schema_ref().metadata().clone(),
    ));
    Ok(RecordBatch::try_new_with_options(
        out_schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(spine_batch.num_rows())),
    )?)
}

/// The chosen feature rows of [`point_in_time_join`], without gathering any
/// feature value: for each view, one entry per spine row (in spine order), the
/// global index of the chosen row across the view's batches (batch 0 first),
/// null where the join gives nulls. For late materialization: read the keys
/// and times, choose, then read the feature values of just the chosen rows.
///
/// The views' [`PitView::features`] are not used (they may be empty, and the
/// batches need only the join-key and timestamp columns).
///
/// # Errors
/// As [`point_in_time_join`], except output name clashes (there are no
/// output columns).
pub fn point_in_time_rows(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<Vec<UInt32Array>> {
    rows_tuned(
        spine,
        spine_timestamp_column,
        views,
        options,
        &Tuning::default(),
    )
}

/// [`point_in_time_rows`], also returning where it spent its time (the
/// profile's `gather` stays zero).
///
/// # Errors
/// As [`point_in_time_rows`].
pub fn point_in_time_rows_profiled(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<(Vec<UInt32Array>, JoinProfile)> {
    let tuning = Tuning {
        profile: Some(std::sync::Mutex::new(JoinProfile::default())),
        ..Tuning::default()
    };
    let rows = rows_tuned(spine, spine_timestamp_column, views, options, &tuning)?;
    let profile = tuning
        .profile
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    Ok((rows, profile))
}

/// [`point_in_time_rows`] with explicit thresholds.
fn rows_tuned(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
    tuning: &Tuning,
) -> Result<Vec<UInt32Array>> {
    let views: Vec<PitView<'_>> = views
        .iter()
        .map(|v| PitView {
            features: Vec::new(),
            ..v.clone()
        })
        .collect();
    let spine_batch = concat_spine(spine)?;
    let (_, chosen) = choose(
        &spine_batch,
        spine_timestamp_column,
        &views,
        options,
        tuning,
    )?;
    Ok(chosen
        .into_iter()
        .map(|c| c.into_iter().map(|g| (g != NONE).then_some(g)).collect())
        .collect())
}

/// Validates the inputs, indexes the spine and picks each view's row per
/// spine row ([`NONE`]: none).
fn choose<'b>(
    spine_batch: &RecordBatch,
    spine_timestamp_column: &str,
    views: &[PitView<'b>],
    options: &PitOptions,
    tuning: &Tuning,
) -> Result<(Vec<ViewRows<'b>>, Vec<Vec<u32>>)> {
    let started = Instant::now();
    let n_spine = spine_batch.num_rows();
    if n_spine >= NONE as usize {
        return Err(Error::invalid(format!(
            "the spine has {n_spine} rows; at most {} are supported",
            NONE - 1
        )));
    }
    let schema = spine_batch.schema();
    let ts = Arc::clone(column(spine_batch, spine_timestamp_column).map_err(|_| {
        Error::invalid(format!(
            "the spine has no timestamp column '{spine_timestamp_column}'"
        ))
    })?);
    let spine_t = timestamp_micros(ts.as_ref(), spine_timestamp_column, options.assume_utc)
        .map_err(|e| context(e, "spine"))?;
    for v in views {
        validate_view(v, &schema, options)?;
    }

    // One key index (and grouping of spine rows) per distinct join-key list.
    let mut groups: Vec<SpineGroup> = Vec::new();
    let mut group_of = Vec::with_capacity(views.len());
    for v in views {
        let g = match groups.iter().position(|g| g.keys == v.join_keys) {
            Some(g) => g,
            None => {
                groups.push(SpineGroup::build(spine_batch, &v.join_keys, &spine_t)?);
                groups.len() - 1
            }
        };
        group_of.push(g);
    }

    tuning.record(|p| &mut p.spine_index, started.elapsed());
    let ctx = JoinCtx {
        spine_t: &spine_t,
        options,
        tuning,
    };
    run_views(views, &groups, &group_of, &ctx)
}

/// Threads for a join of `views` with `n_spine` spine rows: all cores (up to
/// the tuning's bound) from [`PARALLEL_WORK`] rows, else one.
fn threads_for(views: &[PitView<'_>], n_spine: usize, tuning: &Tuning) -> usize {
    let work: usize = views
        .iter()
        .flat_map(|v| v.batches.iter().map(|b| b.num_rows()))
        .sum::<usize>()
        + n_spine;
    if work >= tuning.parallel_work {
        tuning.max_threads.max(1)
    } else {
        1
    }
}

/// Prefixes an [`Error::InvalidInput`] message with where it happened.
fn context(e: Error, ctx: &str) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{ctx}: {m}")),
        other => other,
    }
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch
        .schema_ref()
        .index_of(name)
        .map(|i| batch.column(i))
        .map_err(|_| Error::invalid(format!("column '{name}' not found")))
}

fn concat_spine(spine: &[RecordBatch]) -> Result<RecordBatch> {
    let first = spine.first().ok_or_else(|| {
        Error::invalid("the spine has no batches (pass at least one, possibly empty, batch)")
    })?;
    if spine.len() == 1 {
        return Ok(first.clone());
    }
    for (i, b) in spine.iter().enumerate().skip(1) {
        if b.schema_ref().fields() != first.schema_ref().fields() {
            return Err(Error::invalid(format!(
                "spine batch {i} has a different schema from spine batch 0"
            )));
        }
    }
    Ok(arrow_select::concat::concat_batches(
        first.schema_ref(),
        spine,
    )?)
}

fn output_name(view: &PitView<'_>, feature: &Field, options: &PitOptions) -> String {
    if options.full_feature_names {
        format!("{}__{}", view.name, feature.name())
    } else {
        feature.name().clone()
    }
}

fn output_fields(
    spine: &Schema,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<Vec<FieldRef>> {
    let mut fields: Vec<FieldRef> = spine.fields().iter().cloned().collect();
    let mut seen: HashSet<String> = spine.fields().iter().map(|f| f.name().clone()).collect();
    for v in views {
        for f in &v.features {
            let name = output_name(v, f, options);
            if !seen.insert(name.clone()) {
                return Err(Error::invalid(format!(
                    "output column name '{name}' (feature '{}' of view '{}') clashes with a \
                     spine column or another requested feature; use full_feature_names",
                    f.name(),
                    v.name
                )));
            }
            fields.push(Arc::new(
                Field::new(name, f.data_type().clone(), true).with_metadata(f.metadata().clone()),
            ));
        }
    }
    Ok(fields)
}

fn validate_view(v: &PitView<'_>, spine: &Schema, options: &PitOptions) -> Result<()> {
    let mut spine_key_types: Vec<&DataType> = Vec::with_capacity(v.join_keys.len());
    for k in &v.join_keys {
        let f = spine.field_with_name(k).map_err(|_| {
            Error::invalid(format!(
                "join key '{k}' of view '{}' is not a spine column",
                v.name
            ))
        })?;
        keys::check_key_type(f.data_type(), k)
            .map_err(|e| context(e, &format!("view '{}'", v.name)))?;
        spine_key_types.push(f.data_type());
    }
    for (bi, b) in v.batches.iter().enumerate() {
        let bs = b.schema_ref();
        let get = |name: &str, role: &str| {
            bs.field_with_name(name).map_err(|_| {
                Error::invalid(format!(
                    "view '{}': {role} column '{name}' is missing from feature batch {bi}",
                    v.name
                ))
            })
        };
        for (k, st) in v.join_keys.iter().zip(&spine_key_types) {
            let ft = get(k, "join-key")?.data_type();
            if ft != *st {
                return Err(Error::invalid(format!(
                    "join key '{k}' type mismatch: the spine has {st}, view '{}' has {ft} \
                     (feature batch {bi})",
                    v.name
                )));
            }
        }
        let ctx = || format!("view '{}', feature batch {bi}", v.name);
        let ev = &v.event_timestamp_column;
        check_timestamp_type(
            get(ev, "event-timestamp")?.data_type(),
            ev,
            options.assume_utc,
        )
        .map_err(|e| context(e, &ctx()))?;
        if let Some(cr) = &v.created_timestamp_column {
            check_timestamp_type(
                get(cr, "created-timestamp")?.data_type(),
                cr,
                options.assume_utc,
            )
            .map_err(|e| context(e, &ctx()))?;
        }
        for f in &v.features {
            let bt = get(f.name(), "feature")?.data_type();
            if bt != f.data_type() {
                return Err(Error::invalid(format!(
                    "view '{}': feature column '{}' has type {bt} in feature batch {bi} but is \
                     declared as {}",
                    v.name,
                    f.name(),
                    f.data_type()
                )));
            }
        }
    }
    Ok(())
}

/// The spine's rows grouped by join-key id, each group sorted by time.
#[derive(Debug)]
struct SpineGroup {
    keys: Vec<String>,
    index: KeyIndex,
    /// Spine rows with a non-null key, grouped by id, each group sorted by time.
    order: Vec<u32>,
    /// Group `id` is `order[start[id]..start[id + 1]]`.
    start: Vec<u32>,
    /// The spine time of each row of `order` (read sequentially by the merge).
    order_t: Vec<i64>,
}

impl SpineGroup {
    fn build(spine: &RecordBatch, keys: &[String], spine_t: &[i64]) -> Result<Self> {
        let cols = keys
            .iter()
            .map(|k| column(spine, k).cloned())
            .collect::<Result<Vec<_>>>()?;
        let n = spine.num_rows();
        let index = if cols.is_empty() {
            KeyIndex::constant(n)
        } else {
            KeyIndex::build(&cols, keys)?
        };
        let (order, start) = bucket_by_id(&index.ids, index.n_ids);
        let mut order = order;
        for w in start.windows(2) {
            order[w[0] as usize..w[1] as usize].sort_unstable_by_key(|&r| spine_t[r as usize]);
        }
        let order_t = order.iter().map(|&r| spine_t[r as usize]).collect();
        Ok(Self {
            keys: keys.to_vec(),
            index,
            order,
            start,
            order_t,
        })
    }
}

/// Counting sort of row indices by id (rows with id [`NONE`] left out); rows keep
/// their relative order inside a bucket.
fn bucket_by_id(ids: &[u32], n_ids: usize) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; n_ids + 1];
    for &id in ids {
        if id != NONE {
            start[id as usize + 1] += 1;
        }
    }
    for i in 0..n_ids {
        start[i + 1] += start[i];
    }
    let mut cursor = start.clone();
    let mut order = vec![0u32; start[n_ids] as usize];
    for (r, &id) in ids.iter().enumerate() {
        if id != NONE {
            let c = &mut cursor[id as usize];
            order[*c as usize] = r as u32;
            *c += 1;
        }
    }
    (order, start)
}

struct JoinCtx<'a> {
    spine_t: &'a [i64],
    options: &'a PitOptions,
    tuning: &'a Tuning,
}

/// Picks, for every view, the chosen global feature row of each spine row
/// ([`NONE`]: none); also returns the views' rows as read (for the gather).
///
/// # Algorithm
/// A feature row with key id `k`, event `e` and created `c` becomes *available*
/// at time `a = e` (or `a = max(e, c)` with the created cutoff): it is a candidate
/// for spine row (k, t) iff `a <= t` (and the ttl holds). The spine rows of key
/// `k` are sorted by t (`group`); a binary search finds the first of them with
/// `t >= a`, and the row is kept in that slot if it outranks the slot's current
/// row by `(event, created)` (rows arrive in write order, so a tie goes to the
/// later row). A running maximum over each key's slots then gives, for every
/// spine row, the greatest `(event, created, write order)` among the rows
/// available at its t; the ttl is checked on that row alone (every other
/// candidate has an earlier event). Rows are slotted in chunks of up to
/// [`PART_CHUNK`], each chunk stably partitioned by key-id range first
/// ([`Partitioner`]) so the random accesses of a partition stay in cache. Cost:
/// O(F log k + S), memory O(S + F/8 + PART_CHUNK); feature values are never
/// copied.
///
/// # Parallelism
/// With enough work, every phase runs the tasks of all views together on all
/// cores, so no core waits for a view to finish: key ids are looked up by
/// pieces of rows; each view's key ids are split into contiguous ranges holding
/// about as many spine rows each — as many ranges as its share of all rows
/// calls for ([`ranges_for`]: a view holding most rows gets one per thread, one
/// of several comparable views one or two) — and a queue hands the
/// (view, range) tasks out largest first; a key's slots all lie in one range,
/// so each task slots the rows of its own keys (reading its view's pieces in
/// write order, so ties resolve as on one thread) and runs the running maximum
/// over them, with no sharing. Each worker reuses its buffers from task to
/// task (fresh ones cost a page fault per 4 KiB). The output columns are
/// gathered one feature per task.
fn run_views<'b>(
    views: &[PitView<'b>],
    groups: &[SpineGroup],
    group_of: &[usize],
    ctx: &JoinCtx<'_>,
) -> Result<(Vec<ViewRows<'b>>, Vec<Vec<u32>>)> {
    let threads = threads_for(views, ctx.spine_t.len(), ctx.tuning);
    #[cfg(test)]
    if threads > 1 {
        ctx.tuning.log.threaded.fetch_add(1, Ordering::Relaxed);
    }
    let rows = views
        .iter()
        .map(|v| prepare_view(v, ctx.options))
        .collect::<Result<Vec<_>>>()?;

    // Key ids, by pieces of at most `piece_rows` rows of every view, in parallel.
    let started = Instant::now();
    let piece_rows = ctx.tuning.piece_rows.max(1);
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    for (vi, v) in views.iter().enumerate() {
        for (bi, b) in v.batches.iter().enumerate() {
            let mut s = 0;
            while s < b.num_rows() {
                let len = piece_rows.min(b.num_rows() - s);
                spans.push((vi, bi, s, len));
                s += len;
            }
        }
    }
    let pieces: Vec<Piece> = par_map::<_, Error>(spans.len(), threads, |i| {
        let (vi, bi, start, len) = spans[i];
        let key_cols = &rows[vi].key_cols[bi];
        let ids = if key_cols.is_empty() {
            vec![0; len]
        } else {
            let cols: Vec<ArrayRef> = key_cols.iter().map(|c| c.slice(start, len)).collect();
            let refs: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
            groups[group_of[vi]]
                .index
                .lookup(&refs, &views[vi].join_keys)?
        };
        Ok(Piece {
            view: vi,
            batch: bi,
            start,
            ids,
        })
    })?;
    drop(spans);
    ctx.tuning.record(|p| &mut p.key_lookup, started.elapsed());
    let started = Instant::now();

    // Per view: its pieces (contiguous, in write order) and its key-id ranges.
    let mut sorted_chosen: Vec<Vec<u32>> = views
        .iter()
        .zip(group_of)
        .map(|(_, &g)| vec![NONE; groups[g].order.len()])
        .collect();
    let weights: Vec<usize> = rows
        .iter()
        .zip(group_of)
        .map(|(r, &g)| r.total + groups[g].order.len())
        .collect();
    let all: usize = weights.iter().sum();
    let mut jobs: Vec<Job<'_, '_>> = Vec::new();
    let mut first_piece = 0;
    for (vi, out) in sorted_chosen.iter_mut().enumerate() {
        let group = &groups[group_of[vi]];
        let n_ids = group.index.n_ids;
        let n_pieces = pieces[first_piece..].partition_point(|p| p.view == vi);
        let my_pieces = &pieces[first_piece..first_piece + n_pieces];
        first_piece += n_pieces;
        let n_ranges = ranges_for(weights[vi], all, threads, n_ids);
        let n_slots = group.order.len();
        let mut bounds: Vec<usize> = (0..=n_ranges)
            .map(|j| {
                let target = n_slots * j / n_ranges;
                group.start[..n_ids]
                    .partition_point(|&s| (s as usize) < target)
                    .min(n_ids)
            })
            .collect();
        bounds[n_ranges] = n_ids;
        bounds.dedup();
        #[cfg(test)]
        {
            let log = &ctx.tuning.log;
            if bounds.len() > 2 {
                log.id_splits.fetch_add(1, Ordering::Relaxed);
            } else if threads > 1 && views.len() > 1 {
                log.pooled_whole.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Rows are buffered and partitioned by key-id range before slotting, so
        // each partition's slots, spine times and group starts stay cache-resident.
        let shift = (usize::BITS - n_ids.leading_zeros()).saturating_sub(PART_BITS);
        let plan = SlotPlan {
            rows: &rows[vi],
            group,
            pieces: my_pieces,
            ttl: views[vi].ttl.map(duration_micros),
            cutoff: ctx.options.created_cutoff && views[vi].created_timestamp_column.is_some(),
            shift,
            n_parts: (n_ids >> shift) + 1,
        };
        #[cfg(test)]
        ctx.tuning
            .log
            .max_shift
            .fetch_max(plan.shift, Ordering::Relaxed);
        // Per range: its spine slots, as disjoint mutable slices.
        let mut rest: &mut [u32] = out;
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            let len = (group.start[hi] - group.start[lo]) as usize;
            let (mine, after) = std::mem::take(&mut rest).split_at_mut(len);
            rest = after;
            let size = rows[vi].total / (bounds.len() - 1) + len;
            jobs.push(Job {
                plan,
                lo,
                hi,
                out: mine,
                size,
            });
        }
    }
    // Largest first, so the last tasks to finish are small ones.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.size));
    let _mid_flushes = run_jobs(jobs, threads, ctx.tuning);
    drop(pieces);
    #[cfg(test)]
    ctx.tuning
        .log
        .mid_flushes
        .fetch_add(_mid_flushes, Ordering::Relaxed);

    let chosen: Vec<Vec<u32>> = sorted_chosen
        .into_iter()
        .zip(group_of)
        .map(|(sorted, &g)| {
            let mut chosen = vec![NONE; ctx.spine_t.len()];
            for (&row, &seq) in groups[g].order.iter().zip(&sorted) {
                chosen[row as usize] = seq;
            }
            chosen
        })
        .collect();
    ctx.tuning.record(|p| &mut p.slotting, started.elapsed());
    Ok((rows, chosen))
}

/// How many key-id ranges a view's slotting is split into: none on one thread;
/// otherwise about twice its share of all rows (`weight / all`) times the
/// threads, at least one and at most one per thread (and per key). A view
/// holding most of the rows is split across every thread; of several
/// comparable views each gets one or two ranges, so the queue can balance them.
fn ranges_for(weight: usize, all: usize, threads: usize, n_ids: usize) -> usize {
    if threads <= 1 || all == 0 {
        return 1;
    }
    (2 * threads * weight)
        .div_ceil(all)
        .clamp(1, threads)
        .min(n_ids.max(1))
}

/// One view's feature rows as the join reads them: row offsets of its batches,
/// key columns and times (validated up front).
struct ViewRows<'b> {
    /// Global row index of each batch's first row, plus the total.
    offsets: Vec<usize>,
    /// Number of feature rows.
    total: usize,
    key_cols: Vec<Vec<ArrayRef>>,
    times: Vec<Times<'b>>,
}

fn prepare_view<'b>(view: &PitView<'b>, options: &PitOptions) -> Result<ViewRows<'b>> {
    let where_ = |bi: usize| format!("view '{}', feature batch {bi}", view.name);
    let mut offsets = Vec::with_capacity(view.batches.len() + 1);
    let mut total = 0usize;
    let mut key_cols: Vec<Vec<ArrayRef>> = Vec::with_capacity(view.batches.len());
    let mut times_: Vec<Times<'b>> = Vec::with_capacity(view.batches.len());
    for (bi, batch) in view.batches.iter().enumerate() {
        offsets.push(total);
        total += batch.num_rows();
        if total >= NONE as usize {
            return Err(Error::invalid(format!(
                "view '{}' has more than {} feature rows",
                view.name,
                NONE - 1
            )));
        }
        key_cols.push(
            view.join_keys
                .iter()
                .map(|k| column(batch, k).cloned())
                .collect::<Result<Vec<ArrayRef>>>()?,
        );
        times_.push(times(view, batch, options).map_err(|e| context(e, &where_(bi)))?);
    }
    offsets.push(total);
    Ok(ViewRows {
        offsets,
        total,
        key_cols,
        times: times_,
    })
}

/// What every slotting task of one view shares.
#[derive(Clone, Copy)]
struct SlotPlan<'a, 'b> {
    rows: &'a ViewRows<'b>,
    group: &'a SpineGroup,
    /// The view's pieces, in write order.
    pieces: &'a [Piece],
    ttl: Option<i64>,
    cutoff: bool,
    shift: u32,
    n_parts: usize,
}

/// One slotting task: the key ids `lo..hi` of one view and their spine slots.
struct Job<'a, 'b> {
    plan: SlotPlan<'a, 'b>,
    lo: usize,
    hi: usize,
    out: &'a mut [u32],
    /// Rough cost (feature rows of the range, estimated, plus its slots).
    size: usize,
}

/// A worker's buffers, reused from task to task.
#[derive(Default)]
struct Scratch {
    buf: Vec<Pending>,
    sorted: Vec<Pending>,
    best: Vec<Best>,
}

/// Runs the slotting tasks on up to `threads` threads, handing them out in
/// order; returns the number of mid-buffer flushes.
fn run_jobs(jobs: Vec<Job<'_, '_>>, threads: usize, tuning: &Tuning) -> usize {
    let threads = threads.min(jobs.len()).max(1);
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let worker = || {
        let mut scratch = Scratch::default();
        let mut flushes = 0;
        loop {
            let job = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .next();
            let Some(job) = job else { break };
            flushes += slot_range(job, tuning, &mut scratch);
        }
        flushes
    };
    if threads == 1 {
        return worker();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .sum()
    })
}

/// Slots the feature rows of keys `job.lo..job.hi` and runs the running maximum
/// over their spine rows, writing the chosen global row of each slot into
/// `job.out`; returns the number of mid-buffer flushes.
fn slot_range(job: Job<'_, '_>, tuning: &Tuning, scratch: &mut Scratch) -> usize {
    let Job {
        plan,
        lo,
        hi,
        out,
        size: _,
    } = job;
    let SlotPlan {
        rows,
        group,
        pieces,
        ttl,
        cutoff,
        shift,
        n_parts,
    } = plan;
    let base = group.start[lo] as usize;
    let Scratch { buf, sorted, best } = std::mem::take(scratch);
    let mut best = best;
    best.clear();
    best.resize(out.len(), Best::EMPTY);
    let mut part = Partitioner::new(n_parts, shift, tuning.part_chunk, buf, sorted);
    let mut place = |p: &Pending| {
        let id = p.id as usize;
        let (start, end) = (group.start[id] as usize, group.start[id + 1] as usize);
        let spine_times = &group.order_t[start..end];
        let (Some(&lo_t), Some(&hi_t)) = (spine_times.first(), spine_times.last()) else {
            return;
        };
        let (event, created) = (p.event, p.created);
        let avail = if cutoff { event.max(created) } else { event };
        // cheap filter: never available, or too old for every spine row of k
        if avail > hi_t || ttl.is_some_and(|d| event < lo_t.saturating_sub(d)) {
            return;
        }
        let slot = &mut best[start - base + spine_times.partition_point(|&t| t < avail)];
        // An empty slot (`Best::EMPTY`, the least times) takes any row.
        if (event, created) >= (slot.event, slot.created) {
            *slot = Best {
                event,
                created,
                seq: p.seq,
            };
        }
    };
    // Key ids `lo..hi` (NONE, u32::MAX, wraps above every range).
    let (lo32, width) = (lo as u32, (hi - lo) as u32);
    for piece in pieces {
        let (events, created) = &rows.times[piece.batch];
        let base_seq = (rows.offsets[piece.batch] + piece.start) as u32;
        let ids = &piece.ids[..];
        let events = &events[piece.start..piece.start + ids.len()];
        let keep = |id: u32| id.wrapping_sub(lo32) < width;
        match created {
            None => part.append(
                ids.len(),
                |i| {
                    let p = Pending {
                        id: ids[i],
                        seq: base_seq + i as u32,
                        event: events[i],
                        created: i64::MIN,
                    };
                    (p, keep(p.id))
                },
                &mut place,
            ),
            Some(created) => {
                let created = &created[piece.start..piece.start + ids.len()];
                part.append(
                    ids.len(),
                    |i| {
                        let p = Pending {
                            id: ids[i],
                            seq: base_seq + i as u32,
                            event: events[i],
                            created: created[i],
                        };
                        (p, keep(p.id))
                    },
                    &mut place,
                );
            }
        }
    }
    part.flush(&mut place);
    let flushes = part.mid_flushes();
    let (buf, sorted) = part.into_buffers();
    // Running maximum over each key's spine rows (in time order), ttl check.
    for id in lo..hi {
        let (start, end) = (group.start[id] as usize, group.start[id + 1] as usize);
        let mut cur = Best::EMPTY;
        for p in start..end {
            let b = best[p - base];
            if b.rank() > cur.rank() {
                cur = b;
            }
            let t = group.order_t[p];
            if cur.seq != NONE && ttl.is_none_or(|d| cur.event >= t.saturating_sub(d)) {
                out[p - base] = cur.seq;
            }
        }
    }
    *scratch = Scratch { buf, sorted, best };
    flushes
}

/// `f` over `0..n` on up to `threads` scoped threads (each takes the next index
/// until none is left); results in index order, the first error (lowest index)
/// wins, a panic in `f` is resumed on the caller. The join's own task pool,
/// public so that callers doing the join's I/O (e.g. reading and placing
/// feature columns) share it.
///
/// # Errors
/// The first `Err` that `f` returned.
pub fn par_map<R: Send, E: Send + From<Error>>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> std::result::Result<R, E> + Sync,
) -> std::result::Result<Vec<R>, E> {
    let threads = threads.min(n).max(1);
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<std::result::Result<R, E>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        mine.push((i, f(i)));
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(mine) => {
                    for (i, r) in mine {
                        slots[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::invalid("internal: a task did not run").into())))
        .collect()
}

/// The best feature row seen so far for one slot: its rank `(event, created,
/// seq)` where `seq` is the global row index (write order); `seq == NONE` is empty.
#[derive(Debug, Clone, Copy)]
struct Best {
    event: i64,
    created: i64,
    seq: u32,
}

impl Best {
    const EMPTY: Self = Self {
        event: i64::MIN,
        created: i64::MIN,
        seq: NONE,
    };

    #[inline]
    fn rank(&self) -> (i64, i64, u32) {
        // `seq` NONE (u32::MAX) must rank lowest: shift so NONE wraps to 0.
        (self.event, self.created, self.seq.wrapping_add(1))
    }
}

/// Key-id partitions of the slotting pass: `2^PART_BITS` of them (at most).
const PART_BITS: u32 = 6;
/// Feature rows buffered before a partitioning pass.
const PART_CHUNK: usize = 1 << 19;
/// Total rows (spine + feature rows of every view) from which each view is
/// joined on several threads.
const PARALLEL_WORK: usize = 200_000;
/// Feature rows per key-lookup task.
const PIECE_ROWS: usize = 1 << 16;

/// A feature row waiting to be slotted: key id, global row index, times.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    id: u32,
    seq: u32,
    event: i64,
    created: i64,
}

/// Buffers [`Pending`] rows and hands them out grouped by `id >> shift`, each
/// group in arrival order (a stable counting sort), so the write-order tie-break
/// is unchanged and each group's random accesses stay within a small id range.
///
/// Rows are appended without a branch per row ([`Partitioner::append`]): every
/// candidate is written at the end of the buffer and the end moves only for
/// the rows kept, so a range test that is true for about half the rows (a view
/// split into key-id ranges) costs no mispredicted branches.
struct Partitioner {
    shift: u32,
    /// Rows buffered before a partitioning pass.
    chunk: usize,
    /// Passes run because the buffer was full (tests only).
    #[cfg(test)]
    mid_flushes: usize,
    /// `buf[..len]` are the buffered rows; `buf.len()` is the room written so
    /// far (grown as needed, never beyond `chunk`, reused across tasks).
    buf: Vec<Pending>,
    len: usize,
    /// The partitioned copy of `buf[..len]` (its first `len` entries).
    sorted: Vec<Pending>,
    cursor: Vec<usize>,
}

impl Partitioner {
    /// A partitioner reusing `buf` and `sorted` as its buffers (their contents
    /// are overwritten).
    fn new(
        n_parts: usize,
        shift: u32,
        chunk: usize,
        buf: Vec<Pending>,
        sorted: Vec<Pending>,
    ) -> Self {
        Self {
            shift,
            chunk: chunk.max(1),
            #[cfg(test)]
            mid_flushes: 0,
            buf,
            len: 0,
            sorted,
            cursor: vec![0; n_parts + 1],
        }
    }

    /// The buffers, for reuse by the next partitioner.
    fn into_buffers(self) -> (Vec<Pending>, Vec<Pending>) {
        (self.buf, self.sorted)
    }

    /// Passes run because the buffer was full (counted in tests only).
    fn mid_flushes(&self) -> usize {
        #[cfg(test)]
        return self.mid_flushes;
        #[cfg(not(test))]
        0
    }

    /// Offers the candidates `row(0..n)` in order: `row(i)` gives the row and
    /// whether to keep it. Kept rows are buffered (a full buffer is
    /// partitioned and placed first); the others are dropped.
    #[inline]
    fn append(
        &mut self,
        n: usize,
        mut row: impl FnMut(usize) -> (Pending, bool),
        place: &mut impl FnMut(&Pending),
    ) {
        let mut i = 0;
        while i < n {
            if self.len >= self.chunk {
                #[cfg(test)]
                {
                    self.mid_flushes += 1;
                }
                self.flush(place);
            }
            let take = (n - i).min(self.chunk - self.len);
            let need = self.len + take;
            if self.buf.len() < need {
                let grown = need.max(2 * self.buf.len()).min(self.chunk);
                self.buf.resize(grown, Pending::default());
            }
            let mut len = self.len;
            let room = &mut self.buf[..need];
            for j in i..i + take {
                let (p, keep) = row(j);
                room[len] = p;
                len += usize::from(keep);
            }
            self.len = len;
            i += take;
        }
    }

    fn flush(&mut self, place: &mut impl FnMut(&Pending)) {
        let rows = &self.buf[..self.len];
        if self.cursor.len() <= 2 {
            rows.iter().for_each(&mut *place);
            self.len = 0;
            return;
        }
        self.cursor.iter_mut().for_each(|c| *c = 0);
        for p in rows {
            self.cursor[(p.id >> self.shift) as usize + 1] += 1;
        }
        for i in 1..self.cursor.len() {
            self.cursor[i] += self.cursor[i - 1];
        }
        if self.sorted.len() < rows.len() {
            self.sorted.resize(rows.len(), Pending::default());
        }
        for p in rows {
            let c = &mut self.cursor[(p.id >> self.shift) as usize];
            self.sorted[*c] = *p;
            *c += 1;
        }
        self.sorted[..rows.len()].iter().for_each(&mut *place);
        self.len = 0;
    }
}

/// A run of feature rows whose key ids were looked up together.
struct Piece {
    /// View index.
    view: usize,
    /// Batch index.
    batch: usize,
    /// First row of the piece in its batch.
    start: usize,
    /// Key id of each row ([`NONE`]: null key or not in the spine).
    ids: Vec<u32>,
}

/// Timestamps of `a` in UTC microseconds, borrowed when already in microseconds.
fn micros<'b>(a: &'b dyn Array, column: &str, assume_utc: bool) -> Result<Cow<'b, [i64]>> {
    if let DataType::Timestamp(TimeUnit::Microsecond, _) = a.data_type() {
        check_timestamp_type(a.data_type(), column, assume_utc)?;
        reject_nulls(a, column, "timestamp")?;
        return Ok(Cow::Borrowed(
            a.as_primitive::<TimestampMicrosecondType>().values(),
        ));
    }
    Ok(Cow::Owned(timestamp_micros(a, column, assume_utc)?))
}

type Times<'b> = (Cow<'b, [i64]>, Option<Cow<'b, [i64]>>);

/// Event (and created, if any) timestamps of one feature batch in UTC micros.
fn times<'b>(
    view: &PitView<'_>,
    batch: &'b RecordBatch,
    options: &PitOptions,
) -> Result<Times<'b>> {
    let ev = &view.event_timestamp_column;
    let events = micros(column(batch, ev)?.as_ref(), ev, options.assume_utc)?;
    let created = match &view.created_timestamp_column {
        Some(cr) => Some(micros(column(batch, cr)?.as_ref(), cr, options.assume_utc)?),
        None => None,
    };
    Ok((events, created))
}

/// Builds every view's output columns from the chosen global row per spine
/// row (`chosen[view]`), one feature per task on up to `threads` threads.
fn gather(
    views: &[PitView<'_>],
    rows: &[ViewRows<'_>],
    chosen: &[Vec<u32>],
    threads: usize,
) -> Result<Vec<Vec<ArrayRef>>> {
    let indices: Vec<Vec<(usize, usize)>> = par_map::<_, Error>(views.len(), threads, |vi| {
        let null_source = views[vi].batches.len();
        let offsets = &rows[vi].offsets;
        Ok(chosen[vi]
            .iter()
            .map(|&g| {
                if g == NONE {
                    (null_source, 0)
                } else {
                    let g = g as usize;
                    let b = offsets.partition_point(|&o| o <= g).saturating_sub(1);
                    (b, g - offsets[b])
                }
            })
            .collect())
    })?;
    let tasks: Vec<(usize, usize)> = views
        .iter()
        .enumerate()
        .flat_map(|(vi, v)| (0..v.features.len()).map(move |fi| (vi, fi)))
        .collect();
    let mut columns = par_map::<_, Error>(tasks.len(), threads, |i| {
        let (vi, fi) = tasks[i];
        let view = &views[vi];
        let f = &view.features[fi];
        let null = new_null_array(f.data_type(), 1);
        let mut sources = view
            .batches
            .iter()
            .map(|b| column(b, f.name()).map(|c| c.as_ref()))
            .collect::<Result<Vec<&dyn Array>>>()?;
        sources.push(null.as_ref());
        Ok(arrow_select::interleave::interleave(
            &sources,
            &indices[vi],
        )?)
    })?
    .into_iter();
    Ok(views
        .iter()
        .map(|v| columns.by_ref().take(v.features.len()).collect())
        .collect())
}
