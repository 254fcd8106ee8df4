//! The pure point-in-time join (DESIGN §5): no I/O, deterministic, independent of
//! batch boundaries and input row order.

mod keys;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{
    Array, ArrayRef, RecordBatch, RecordBatchOptions, cast::AsArray, new_null_array,
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
/// spine row's timestamp (DESIGN §5).
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
/// (DESIGN §3), a feature column whose type differs from the declared one, an
/// output name clash.
pub fn point_in_time_join(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<RecordBatch> {
    let spine_batch = concat_spine(spine)?;
    let n_spine = spine_batch.num_rows();
    if n_spine >= NONE as usize {
        return Err(Error::invalid(format!(
            "the spine has {n_spine} rows; at most {} are supported",
            NONE - 1
        )));
    }
    let schema = spine_batch.schema();
    let ts = column(&spine_batch, spine_timestamp_column)
        .map_err(|_| {
            Error::invalid(format!(
                "the spine has no timestamp column '{spine_timestamp_column}'"
            ))
        })?
        .clone();
    let spine_t = timestamp_micros(ts.as_ref(), spine_timestamp_column, options.assume_utc)
        .map_err(|e| context(e, "spine"))?;

    let fields = output_fields(&schema, views, options)?;
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
                groups.push(SpineGroup::build(&spine_batch, &v.join_keys, &spine_t)?);
                groups.len() - 1
            }
        };
        group_of.push(g);
    }

    let ctx = JoinCtx {
        spine_t: &spine_t,
        options,
    };
    let per_view = run_views(views, &groups, &group_of, &ctx)?;
    let mut columns: Vec<ArrayRef> = spine_batch.columns().to_vec();
    columns.extend(per_view.into_iter().flatten());
    let out_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new_with_options(
        out_schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n_spine)),
    )?)
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
        Ok(Self {
            keys: keys.to_vec(),
            index,
            order,
            start,
        })
    }

    fn rows(&self, id: usize) -> &[u32] {
        &self.order[self.start[id] as usize..self.start[id + 1] as usize]
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
}

/// Runs [`join_view`] for every view, in parallel when there is enough work.
fn run_views(
    views: &[PitView<'_>],
    groups: &[SpineGroup],
    group_of: &[usize],
    ctx: &JoinCtx<'_>,
) -> Result<Vec<Vec<ArrayRef>>> {
    let work: usize = views
        .iter()
        .flat_map(|v| v.batches.iter().map(|b| b.num_rows()))
        .sum::<usize>()
        + ctx.spine_t.len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if work >= 200_000 {
        cores.min(views.len())
    } else {
        1
    };
    if threads <= 1 {
        return views
            .iter()
            .zip(group_of)
            .map(|(v, &g)| join_view(v, &groups[g], ctx))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Vec<ArrayRef>>>> = (0..views.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= views.len() {
                            break;
                        }
                        mine.push((i, join_view(&views[i], &groups[group_of[i]], ctx)));
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(mine) => {
                    for (i, r) in mine {
                        results[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::invalid("internal: a view was not joined"))))
        .collect()
}

/// A feature row that survived the cheap filter: its times and global row index.
#[derive(Debug, Clone, Copy, Default)]
struct Cand {
    event: i64,
    created: i64,
    seq: u32,
}

/// Joins one view: returns its feature columns, one row per spine row.
fn join_view(view: &PitView<'_>, group: &SpineGroup, ctx: &JoinCtx<'_>) -> Result<Vec<ArrayRef>> {
    let spine_t = ctx.spine_t;
    let options = ctx.options;
    let ttl = view.ttl.map(duration_micros);
    let cutoff = options.created_cutoff && view.created_timestamp_column.is_some();
    let n_ids = group.index.n_ids;
    let where_ = |bi: usize| format!("view '{}', feature batch {bi}", view.name);

    // The time window of each key: [min(t) - ttl, max(t)] over its spine rows.
    let window: Vec<(i64, i64)> = (0..n_ids)
        .map(|id| {
            let rows = group.rows(id);
            let lo = rows.first().map_or(i64::MAX, |&r| spine_t[r as usize]);
            let hi = rows.last().map_or(i64::MIN, |&r| spine_t[r as usize]);
            (ttl.map_or(i64::MIN, |d| lo.saturating_sub(d)), hi)
        })
        .collect();

    // Pass 1: key ids of the feature rows inside their key's window; count per key.
    let mut offsets = Vec::with_capacity(view.batches.len() + 1);
    let mut total = 0usize;
    let mut batch_ids: Vec<Vec<u32>> = Vec::with_capacity(view.batches.len());
    let mut bstart = vec![0u32; n_ids + 1];
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
        let key_cols = view
            .join_keys
            .iter()
            .map(|k| column(batch, k).map(|c| c.as_ref()))
            .collect::<Result<Vec<&dyn Array>>>()?;
        let mut ids = if key_cols.is_empty() {
            vec![0; batch.num_rows()]
        } else {
            group.index.lookup(&key_cols, &view.join_keys)?
        };
        let (events, created) = times(view, batch, options).map_err(|e| context(e, &where_(bi)))?;
        for (i, id) in ids.iter_mut().enumerate() {
            if *id == NONE || *id as usize >= n_ids {
                *id = NONE;
                continue;
            }
            let (lo, hi) = window[*id as usize];
            let e = events[i];
            let keep =
                e <= hi && e >= lo && !(cutoff && created.as_ref().is_some_and(|c| c[i] > hi));
            if keep {
                bstart[*id as usize + 1] += 1;
            } else {
                *id = NONE;
            }
        }
        batch_ids.push(ids);
    }
    offsets.push(total);
    for i in 0..n_ids {
        bstart[i + 1] += bstart[i];
    }

    // Pass 2: scatter the survivors into per-key buckets (counting sort), then sort
    // each bucket by (event, created, write order).
    let mut cursor = bstart.clone();
    let mut cands = vec![Cand::default(); bstart[n_ids] as usize];
    for (bi, (batch, ids)) in view.batches.iter().zip(&batch_ids).enumerate() {
        if ids.iter().all(|&id| id == NONE) {
            continue;
        }
        let (events, created) = times(view, batch, options).map_err(|e| context(e, &where_(bi)))?;
        let base = offsets[bi];
        for (i, &id) in ids.iter().enumerate() {
            if id != NONE {
                let c = &mut cursor[id as usize];
                cands[*c as usize] = Cand {
                    event: events[i],
                    created: created.as_ref().map_or(i64::MIN, |c| c[i]),
                    seq: (base + i) as u32,
                };
                *c += 1;
            }
        }
    }
    drop(batch_ids);

    // Merge each key's spine rows (sorted by t) with its bucket.
    let mut chosen = vec![NONE; spine_t.len()];
    for id in 0..n_ids {
        let bucket = &mut cands[bstart[id] as usize..bstart[id + 1] as usize];
        if bucket.is_empty() {
            continue;
        }
        bucket.sort_unstable_by_key(|c| (c.event, c.created, c.seq));
        let mut p = 0;
        for &r in group.rows(id) {
            let t = spine_t[r as usize];
            while p < bucket.len() && bucket[p].event <= t {
                p += 1;
            }
            let lo = ttl.map_or(i64::MIN, |d| t.saturating_sub(d));
            // Walk back from the last row with event <= t: without a created cutoff
            // the first step decides; with one, skip rows created after t.
            for c in bucket[..p].iter().rev() {
                if c.event < lo {
                    break;
                }
                if !cutoff || c.created <= t {
                    chosen[r as usize] = c.seq;
                    break;
                }
            }
        }
    }
    drop(cands);

    gather(view, &chosen, &offsets)
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

/// Builds the view's output columns from the chosen global row per spine row.
fn gather(view: &PitView<'_>, chosen: &[u32], offsets: &[usize]) -> Result<Vec<ArrayRef>> {
    let null_source = view.batches.len();
    let indices: Vec<(usize, usize)> = chosen
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
        .collect();
    view.features
        .iter()
        .map(|f| {
            let null = new_null_array(f.data_type(), 1);
            let mut sources = view
                .batches
                .iter()
                .map(|b| column(b, f.name()).map(|c| c.as_ref()))
                .collect::<Result<Vec<&dyn Array>>>()?;
            sources.push(null.as_ref());
            Ok(arrow_select::interleave::interleave(&sources, &indices)?)
        })
        .collect()
}
