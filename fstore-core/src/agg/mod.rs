//! Window aggregations ([semantics §11](crate::docs::semantics)): one engine for both paths.
//!
//! An aggregation feature `(column, function, window W, hop r)` at time `t`
//! covers the entity's events with `floor_r(t − W) <= event_ts <= t` (a
//! sawtooth window: the head is exact, the tail hops by `r`; `W = None` is a
//! lifetime window). Events are folded into **hop tiles** — the intermediate
//! state of the function over `[k·r, (k+1)·r)` — and a window is the merge of
//! its whole tiles plus the exact head.
//!
//! * Offline ([`aggregate`]): per key, events are sorted once by
//!   `(event_ts, created_ts, row)`, tiles are built in one pass, and each
//!   spine row `(k, t)` merges the tiles in `[floor_r(t − W), floor_r(t))`
//!   (binary search) and folds the head events in `[floor_r(t), t]`. With the
//!   created-time cutoff, a tile holding an event created after `t` is folded
//!   event by event instead. `count`, `sum`, `mean`, `min` and `max` over
//!   numeric columns take a fast path (`fast.rs`): the features sharing one
//!   column and hop are computed together from plain accumulators, with the
//!   same fold and merge operations in the same order (bit-identical results).
//! * Online: materialization writes the same tiles; push merges delta tiles
//!   into the stored ones; a read at `now` merges the tiles in
//!   `[floor_r(now − W), floor_r(now)]`. The head tile holds every event of
//!   the current hop, so a read at `now` equals the offline value at `now`
//!   when no event later than `now` was written (the parity property).
//!
//! The fold, the merge and the final value are the same code on both paths
//! (`state.rs`): integer results are exact, float sums/means/variances may
//! differ by summation order ([semantics §11](crate::docs::semantics): relative 1e-9).
//!
//! # Tile state bytes, version 1
//!
//! ```text
//! u8   version (= 1)
//! u64  LE definition fingerprint: xxHash64 of "v1|column|input type|function|window µs|hop µs"
//!      (a tile written by another definition is refused: Error::AggregationDefinitionMismatch)
//! u8   kind: 1 count, 2 int sum, 3 float sum, 4 mean, 5 int min, 6 int max, 7 float min,
//!      8 float max, 9 var/stddev, 10 first, 11 last, 12 last_n, 13 approx_count_distinct
//! then, all little-endian:
//!   count            i64 n
//!   sum/min/max      u8 present, i64 or f64 value
//!   mean             i64 n, f64 float sum, i128 integer sum
//!   var/stddev       i64 n, f64 mean, f64 m2 (Welford; tiles merge with Chan's formula)
//!   first/last       u8 present, then i64 event_ts, i64 created_ts, value
//!   last_n           u32 n (cap), u32 len (<= n), len × (i64 event_ts, i64 created_ts, value), newest first
//!   approx distinct  u8 0 + u16 len + len × u64 sorted hashes (exact, len <= 256)
//!                    | u8 1 + 4096 HyperLogLog registers
//! value: u8 tag (payload tags: 1 bool, 2 int32, 3 int64, 4 float32, 5 float64,
//!        6 string, 7 bytes, 8 timestamp) + bytes (string/bytes: u32 LE length first)
//! ```
//! A missing created time is stored as `i64::MIN`. Adapters store these bytes
//! opaquely under `(view, entity key, feature, tile start)`
//! ([`crate::Tile`]).

mod fast;
mod sketch;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{Field, Schema};

use crate::codec::{ColumnBuilder, cast_key_column, encode_entity_keys, encode_sorted_keys_into};
use crate::error::{Error, Result};
use crate::model::{AggFunction, Aggregation, JoinKey, ResolvedView, Value, ValueType};
use crate::online::{Tile, TileWrite};
use crate::time::{duration_micros, timestamp_micros};

pub use state::TILE_STATE_VERSION;
use state::{Ev, State};

/// One view's event history and the aggregation features to compute over it.
#[derive(Debug, Clone)]
pub struct AggView<'a> {
    /// View name (used in errors).
    pub name: String,
    /// The view's join keys.
    pub join_keys: Vec<JoinKey>,
    /// Event-time column of the batches.
    pub event_timestamp_column: String,
    /// Created-time column (tie-break and cutoff), if any.
    pub created_timestamp_column: Option<String>,
    /// The aggregation features with the declared type of their input column.
    pub aggregations: Vec<(Aggregation, ValueType)>,
    /// The event history (join keys, event time, optional created time, input columns).
    pub batches: &'a [RecordBatch],
}

impl<'a> AggView<'a> {
    /// The aggregation features `names` of a resolved view, over `batches`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a name that is not an aggregation feature of the
    /// view, [`Error::InvalidInput`] for one whose input column is not a feature.
    pub fn from_view(
        rv: &ResolvedView,
        names: &[String],
        batches: &'a [RecordBatch],
    ) -> Result<Self> {
        let mut aggregations = Vec::with_capacity(names.len());
        for n in names {
            let a = rv.view.aggregation(n).ok_or_else(|| {
                Error::not_found("aggregation feature", format!("{}:{n}", rv.name()))
            })?;
            aggregations.push((a.clone(), input_type(rv, a)?));
        }
        Ok(Self {
            name: rv.name().to_owned(),
            join_keys: rv.join_keys.clone(),
            event_timestamp_column: rv.view.event_timestamp_column.clone(),
            created_timestamp_column: rv.view.created_timestamp_column.clone(),
            aggregations,
            batches,
        })
    }
}

fn input_type(rv: &ResolvedView, a: &Aggregation) -> Result<ValueType> {
    rv.view
        .feature(&a.column)
        .map(|f| f.value_type.clone())
        .ok_or_else(|| {
            Error::invalid(format!(
                "aggregation feature '{}:{}': column '{}' is not a feature of the view",
                rv.name(),
                a.name,
                a.column
            ))
        })
}

/// Options of [`aggregate`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AggOptions {
    /// Only events with `created_ts <= t` count for spine time `t` ([semantics §5](crate::docs::semantics)).
    pub created_cutoff: bool,
    /// Treat naive timestamps as UTC instead of rejecting them.
    pub assume_utc: bool,
    /// Compute `count`, `sum`, `mean`, `min`, `max` on the numeric fast path
    /// (default `true`; the results are the same either way — `false` exists
    /// so tests can compare both paths).
    pub fast_path: bool,
}

impl Default for AggOptions {
    fn default() -> Self {
        Self {
            created_cutoff: false,
            assume_utc: false,
            fast_path: true,
        }
    }
}

impl AggOptions {
    /// Sets `fast_path`.
    pub fn with_fast_path(mut self, v: bool) -> Self {
        self.fast_path = v;
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
}

/// murmur3's 64-bit finaliser as the hasher of integer keys (no untrusted-input
/// concern in a batch computation; SipHash is needlessly slow here).
#[derive(Default, Clone, Copy)]
struct MixHasher(u64);

impl std::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 ^= v as u64;
    }
}

type MixBuild = std::hash::BuildHasherDefault<MixHasher>;

fn floor_to(t: i64, r: i64) -> i64 {
    t.div_euclid(r).saturating_mul(r)
}

/// Events sorted by `(key group, event_ts, created_ts, row)`.
struct History {
    groups: HashMap<Vec<u8>, u32>,
    /// With a single integer join key: its values' groups (the same groups
    /// as `groups`, without encoding keys).
    int_groups: Option<HashMap<i64, u32, MixBuild>>,
    ts: Vec<i64>,
    created: Vec<i64>,
    row: Vec<u32>,
    /// Sorted positions of group `g`: `off[g]..off[g + 1]`.
    off: Vec<usize>,
}

impl History {
    fn build(
        batches: &[RecordBatch],
        join_keys: &[JoinKey],
        ev_col: &str,
        created_col: Option<&str>,
        assume_utc: bool,
    ) -> Result<Self> {
        let mut groups: HashMap<Vec<u8>, u32> = HashMap::new();
        // per event in row order: group, event time, created time
        let mut grp: Vec<u32> = Vec::new();
        let mut ts: Vec<i64> = Vec::new();
        let mut created: Vec<i64> = Vec::new();
        let mut sorted_keys: Vec<&JoinKey> = join_keys.iter().collect();
        sorted_keys.sort_by(|a, b| a.name.cmp(&b.name));
        let (mut cols, mut keys) = (Vec::new(), Vec::new());
        // one integer join key: events are grouped by its value, the key bytes
        // are encoded once per group at the end
        let int_key = match join_keys {
            [k] if matches!(k.value_type, ValueType::Int32 | ValueType::Int64) => Some(k),
            _ => None,
        };
        let mut int_groups: HashMap<i64, u32, MixBuild> = HashMap::default();
        let mut distinct: Vec<i64> = Vec::new();
        for b in batches {
            if let Some(k) = int_key {
                let col = b.column_by_name(&k.name).ok_or_else(|| {
                    Error::invalid(format!("join key column '{}' is missing", k.name))
                })?;
                let col = cast_key_column(col, &k.name, &k.value_type)?;
                if col.null_count() > 0 {
                    let row = (0..col.len()).find(|i| col.is_null(*i)).unwrap_or(0);
                    return Err(Error::invalid(format!(
                        "join key column '{}' is null at row {row}",
                        k.name
                    )));
                }
                grp.reserve(col.len());
                let mut push = |v: i64| {
                    let next = int_groups.len() as u32;
                    let g = *int_groups.entry(v).or_insert_with(|| {
                        distinct.push(v);
                        next
                    });
                    grp.push(g);
                };
                if let Some(a) = col.as_primitive_opt::<Int32Type>() {
                    a.values().iter().for_each(|v| push(i64::from(*v)));
                } else {
                    col.as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .for_each(|v| push(*v));
                }
            } else {
                // key buffers are reused across batches: no allocation per event
                encode_sorted_keys_into(b, &sorted_keys, &mut cols, &mut keys)?;
                grp.reserve(b.num_rows());
                for k in &keys[..b.num_rows()] {
                    let g = match groups.get(k.as_slice()) {
                        Some(g) => *g,
                        None => {
                            let g = groups.len() as u32;
                            groups.insert(k.clone(), g);
                            g
                        }
                    };
                    grp.push(g);
                }
            }
            let col = b.column_by_name(ev_col).ok_or_else(|| {
                Error::invalid(format!(
                    "event history is missing event timestamp column '{ev_col}'"
                ))
            })?;
            ts.extend(timestamp_micros(col.as_ref(), ev_col, assume_utc)?);
            // without a created column every event's is i64::MIN (filled below)
            if let Some(c) = created_col {
                let col = b.column_by_name(c).ok_or_else(|| {
                    Error::invalid(format!(
                        "event history is missing created timestamp column '{c}'"
                    ))
                })?;
                created.extend(timestamp_micros(col.as_ref(), c, assume_utc)?);
            }
        }
        if let Some(k) = int_key {
            let col: ArrayRef = if k.value_type == ValueType::Int32 {
                Arc::new(Int32Array::from_iter_values(
                    distinct.iter().map(|v| *v as i32),
                ))
            } else {
                Arc::new(Int64Array::from(distinct))
            };
            let schema = Schema::new(vec![Field::new(&k.name, col.data_type().clone(), false)]);
            let b = RecordBatch::try_new(Arc::new(schema), vec![col])?;
            groups = encode_entity_keys(&b, join_keys)?
                .into_iter()
                .zip(0u32..)
                .collect();
        }
        if u32::try_from(grp.len()).is_err() {
            return Err(Error::invalid("event history has more than 2^32 rows"));
        }
        // Counting sort by group, then each group by (event_ts, created_ts,
        // row), on all cores: each thread sorts a contiguous run of rows by
        // group into its own buffer; then each thread takes a range of groups,
        // gathers each group's records from every run (in row order), sorts
        // them and writes its disjoint slice of the output.
        let n = grp.len();
        let n_groups = groups.len();
        let threads = if n >= 1 << 12 {
            std::thread::available_parallelism().map_or(1, |t| t.get())
        } else {
            1
        };
        let per = n.div_ceil(threads).max(1);
        let has_created = !created.is_empty();
        type Rec = (i64, i64, u32);
        let run = |rows: std::ops::Range<usize>| -> (Vec<usize>, Vec<Rec>) {
            let mut off = vec![0usize; n_groups + 1];
            for g in &grp[rows.clone()] {
                off[*g as usize + 1] += 1;
            }
            for g in 0..n_groups {
                off[g + 1] += off[g];
            }
            let mut next = off.clone();
            let mut recs: Vec<Rec> = vec![(0, 0, 0); rows.len()];
            for row in rows {
                let p = &mut next[grp[row] as usize];
                let c = if has_created { created[row] } else { i64::MIN };
                recs[*p] = (ts[row], c, row as u32);
                *p += 1;
            }
            (off, recs)
        };
        let ranges: Vec<std::ops::Range<usize>> = (0..threads)
            .map(|t| (t * per).min(n)..((t + 1) * per).min(n))
            .filter(|r| !r.is_empty())
            .collect();
        let runs: Vec<(Vec<usize>, Vec<Rec>)> = if ranges.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = ranges
                    .iter()
                    .map(|r| {
                        let r = r.clone();
                        s.spawn(move || run(r))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join())
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .map_err(|_| Error::invalid("event history: worker thread panicked"))?
        } else {
            ranges.iter().map(|r| run(r.clone())).collect()
        };
        drop((grp, ts, created));
        let mut off = vec![0usize; n_groups + 1];
        for g in 0..n_groups {
            off[g + 1] = off[g] + runs.iter().map(|(o, _)| o[g + 1] - o[g]).sum::<usize>();
        }
        let (mut out_ts, mut out_created, mut out_row) =
            (vec![0i64; n], vec![0i64; n], vec![0u32; n]);
        let sort_groups =
            |gs: std::ops::Range<usize>, ts: &mut [i64], created: &mut [i64], row: &mut [u32]| {
                let base = off[gs.start];
                let mut buf: Vec<Rec> = Vec::new();
                for g in gs {
                    buf.clear();
                    for (o, recs) in &runs {
                        buf.extend_from_slice(&recs[o[g]..o[g + 1]]);
                    }
                    buf.sort_unstable();
                    let at = off[g] - base;
                    for (j, r) in buf.iter().enumerate() {
                        (ts[at + j], created[at + j], row[at + j]) = (r.0, r.1, r.2);
                    }
                }
            };
        // groups cut into ranges of about equal events
        let mut cuts = vec![0usize];
        for t in 1..threads {
            let c = off.partition_point(|o| *o < t * per).min(n_groups);
            if c > *cuts.last().unwrap_or(&0) {
                cuts.push(c);
            }
        }
        cuts.push(n_groups);
        cuts.dedup();
        if cuts.len() > 2 {
            let mut parts = Vec::new();
            let (mut ts_r, mut cr_r, mut row_r) =
                (&mut out_ts[..], &mut out_created[..], &mut out_row[..]);
            for w in cuts.windows(2) {
                let len = off[w[1]] - off[w[0]];
                let (a, b) = std::mem::take(&mut ts_r).split_at_mut(len);
                let (c, d) = std::mem::take(&mut cr_r).split_at_mut(len);
                let (e, f) = std::mem::take(&mut row_r).split_at_mut(len);
                (ts_r, cr_r, row_r) = (b, d, f);
                parts.push((w[0]..w[1], a, c, e));
            }
            std::thread::scope(|s| {
                for (gs, a, c, e) in parts {
                    s.spawn(|| sort_groups(gs, a, c, e));
                }
            });
        } else {
            sort_groups(0..n_groups, &mut out_ts, &mut out_created, &mut out_row);
        }
        Ok(Self {
            groups,
            int_groups: int_key.map(|_| int_groups),
            ts: out_ts,
            created: out_created,
            row: out_row,
            off,
        })
    }

    fn n_groups(&self) -> usize {
        self.off.len() - 1
    }
}

/// The hop tiles of one feature over a [`History`]: per group, ascending.
struct Tiles {
    start: Vec<i64>,
    state: Vec<State>,
    /// Sorted event positions of the tile.
    lo: Vec<usize>,
    hi: Vec<usize>,
    max_created: Vec<i64>,
    off: Vec<usize>,
}

fn overflow(view: &str, a: &Aggregation, at: &str) -> Error {
    Error::invalid(format!(
        "aggregation feature '{view}:{}': int64 sum overflows {at}",
        a.name
    ))
}

impl Tiles {
    fn new() -> Self {
        Self {
            start: Vec::new(),
            state: Vec::new(),
            lo: Vec::new(),
            hi: Vec::new(),
            max_created: Vec::new(),
            off: Vec::new(),
        }
    }

    /// The tiles of every group. `evs` in sorted order (`evs[p]` is the
    /// event at sorted position `p`).
    fn build(
        h: &History,
        evs: &[Ev],
        empty: &State,
        r: i64,
        view: &str,
        a: &Aggregation,
    ) -> Result<Self> {
        let mut t = Self::new();
        t.fill(h, evs, empty, r, view, a, 0..h.n_groups())?;
        Ok(t)
    }

    /// Replaces the contents (keeping the buffers) with the tiles of
    /// `groups`; `off` is then relative to `groups.start`.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn fill(
        &mut self,
        h: &History,
        evs: &[Ev],
        empty: &State,
        r: i64,
        view: &str,
        a: &Aggregation,
        groups: std::ops::Range<usize>,
    ) -> Result<()> {
        let t = self;
        t.start.clear();
        t.state.clear();
        t.lo.clear();
        t.hi.clear();
        t.max_created.clear();
        t.off.clear();
        t.off.push(0);
        for g in groups {
            let mut cur = i64::MIN;
            for p in h.off[g]..h.off[g + 1] {
                let s = floor_to(h.ts[p], r);
                if t.start.len() == *t.off.last().unwrap_or(&0) || s != cur {
                    cur = s;
                    t.start.push(s);
                    t.state.push(empty.clone());
                    t.lo.push(p);
                    t.hi.push(p);
                    t.max_created.push(i64::MIN);
                }
                let k = t.start.len() - 1;
                t.state[k]
                    .add(&evs[p], h.ts[p], h.created[p])
                    .map_err(|_| overflow(view, a, "within one hop tile"))?;
                t.hi[k] = p + 1;
                t.max_created[k] = t.max_created[k].max(h.created[p]);
            }
            t.off.push(t.start.len());
        }
        Ok(())
    }
}

/// Aggregation features per spine row ([semantics §11](crate::docs::semantics)), in spine order: one
/// array per entry of `view.aggregations`, as long as the spine.
///
/// Pure: no I/O, deterministic, independent of batch boundaries; event order
/// only breaks exact `(event_ts, created_ts)` ties (`first`/`last`/`last_n`:
/// the later row counts as later). A spine row with a null key gets the
/// values over no event (`count` 0, others null).
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for a missing key or timestamp
/// column, a null or naive timestamp ([semantics §3](crate::docs::semantics)), an input column of the wrong
/// type; naming the feature and spine row for an int64 sum overflow.
pub fn aggregate(
    spine: &[RecordBatch],
    timestamp_column: &str,
    view: &AggView<'_>,
    opts: &AggOptions,
) -> Result<Vec<ArrayRef>> {
    // spine keys and times; a single integer key is looked up by value
    let int_key = match view.join_keys.as_slice() {
        [k] if matches!(k.value_type, ValueType::Int32 | ValueType::Int64) => Some(k),
        _ => None,
    };
    let mut spine_ts: Vec<i64> = Vec::new();
    let mut spine_keys: Vec<Option<Vec<u8>>> = Vec::new();
    let mut spine_ints: Vec<Option<i64>> = Vec::new();
    for b in spine {
        let col = b.column_by_name(timestamp_column).ok_or_else(|| {
            Error::invalid(format!(
                "spine is missing timestamp column '{timestamp_column}'"
            ))
        })?;
        spine_ts.extend(timestamp_micros(
            col.as_ref(),
            timestamp_column,
            opts.assume_utc,
        )?);
        if let Some(k) = int_key {
            let col = b.column_by_name(&k.name).ok_or_else(|| {
                Error::invalid(format!("spine is missing join key column '{}'", k.name))
            })?;
            let col = cast_key_column(col, &k.name, &k.value_type)?;
            if let Some(a) = col.as_primitive_opt::<Int32Type>() {
                spine_ints.extend(a.iter().map(|v| v.map(i64::from)));
            } else {
                spine_ints.extend(col.as_primitive::<Int64Type>().iter());
            }
        } else {
            spine_keys.extend(spine_key_bytes(b, &view.join_keys)?);
        }
    }
    let h = History::build(
        view.batches,
        &view.join_keys,
        &view.event_timestamp_column,
        view.created_timestamp_column.as_deref(),
        opts.assume_utc,
    )?;
    let spine_groups: Vec<Option<u32>> = match &h.int_groups {
        Some(m) => spine_ints
            .iter()
            .map(|v| v.and_then(|v| m.get(&v).copied()))
            .collect(),
        None => spine_keys
            .iter()
            .map(|k| k.as_ref().and_then(|k| h.groups.get(k).copied()))
            .collect(),
    };
    drop((spine_keys, spine_ints));
    let cutoff = opts.created_cutoff && view.created_timestamp_column.is_some();

    // Spine rows with a key, sorted by (group, t): consecutive rows share a
    // group's tiles and events (cache-friendly); results go back to spine order.
    let mut order: Vec<u32> = (0..spine_ts.len() as u32)
        .filter(|&i| spine_groups[i as usize].is_some())
        .collect();
    order.sort_unstable_by_key(|&i| (spine_groups[i as usize], spine_ts[i as usize]));

    // Numeric functions take the fast path (same results, see `fast`).
    let (fast_feats, generic): (Vec<usize>, Vec<usize>) =
        (0..view.aggregations.len()).partition(|&k| {
            let (a, input) = &view.aggregations[k];
            opts.fast_path && fast::eligible(a.function, input)
        });
    let mut results: Vec<Option<Result<ArrayRef>>> =
        (0..view.aggregations.len()).map(|_| None).collect();
    if !fast_feats.is_empty() {
        for (k, col) in fast::run(
            &view.name,
            &view.aggregations,
            &fast_feats,
            &h,
            view.batches,
            &spine_ts,
            &spine_groups,
            &order,
            cutoff,
        )? {
            results[k] = Some(Ok(col));
        }
    }

    // Each input column is extracted once per kind of event the functions
    // need, in sorted event order, and shared by the features using it.
    let mut events: HashMap<(String, u8), Vec<Ev>> = HashMap::new();
    for (a, input) in generic.iter().map(|&k| &view.aggregations[k]) {
        let key = (a.column.clone(), ev_kind(a.function));
        if let std::collections::hash_map::Entry::Vacant(e) = events.entry(key) {
            e.insert(sorted_events(&h, &extract_all(view.batches, a, input)?));
        }
    }

    let one = |(a, input): &(Aggregation, ValueType)| -> Result<ArrayRef> {
        let evs = &events[&(a.column.clone(), ev_kind(a.function))];
        let empty = State::new(a.function, input);
        let r = duration_micros(a.effective_hop()).max(1);
        let w = a.window.map(duration_micros);
        // One group at a time (spine rows are sorted by group): its tiles are
        // built into reused buffers that stay in cache; groups without spine
        // rows are never tiled.
        let mut tiles = Tiles::new();
        let mut tiled = usize::MAX;
        let empty_value = empty.finish(a.function);
        let mut values: Vec<Option<Value>> = vec![empty_value; spine_ts.len()];
        for &i in &order {
            let i = i as usize;
            let t = spine_ts[i];
            let Some(g) = spine_groups[i] else { continue };
            let g = g as usize;
            if g != tiled {
                tiles.fill(&h, evs, &empty, r, &view.name, a, g..g + 1)?;
                tiled = g;
            }
            let mut st = empty.clone();
            let lo = w.map_or(i64::MIN, |w| floor_to(t.saturating_sub(w), r));
            let head = floor_to(t, r);
            let a0 = tiles.start.partition_point(|s| *s < lo);
            let a1 = tiles.start.partition_point(|s| *s < head);
            #[allow(clippy::needless_range_loop)]
            let fold = |st: &mut State, from: usize, to: usize| -> Result<()> {
                for p in from..to {
                    if cutoff && h.created[p] > t {
                        continue;
                    }
                    st.add(&evs[p], h.ts[p], h.created[p])
                        .map_err(|_| overflow(&view.name, a, &format!("at spine row {i}")))?;
                }
                Ok(())
            };
            for k in a0..a1 {
                if cutoff && tiles.max_created[k] > t {
                    fold(&mut st, tiles.lo[k], tiles.hi[k])?;
                } else {
                    st.merge(&tiles.state[k])
                        .map_err(|_| overflow(&view.name, a, &format!("at spine row {i}")))?;
                }
            }
            let ev_ts = &h.ts[h.off[g]..h.off[g + 1]];
            let e0 = h.off[g] + ev_ts.partition_point(|x| *x < head.max(lo));
            let e1 = h.off[g] + ev_ts.partition_point(|x| *x <= t);
            fold(&mut st, e0, e1)?;
            values[i] = st.finish(a.function);
        }
        let mut b = ColumnBuilder::new(&a.function.output_type(input));
        for v in &values {
            match v {
                Some(v) => b.push_value(v),
                None => b.push_null(),
            }
        }
        Ok(b.finish())
    };

    // Features are independent: computed on all cores when the work is large
    // enough; errors are reported in feature order (deterministic).
    let n_aggs = view.aggregations.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(generic.len());
    if threads > 1 && spine_ts.len().saturating_mul(generic.len()) >= 1 << 16 {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: Vec<Vec<(usize, Result<ArrayRef>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&k) = generic.get(i) else {
                                break;
                            };
                            mine.push((k, one(&view.aggregations[k])));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (k, r) in done.into_iter().flatten() {
            results[k] = Some(r);
        }
    } else {
        for &k in &generic {
            results[k] = Some(one(&view.aggregations[k]));
        }
    }
    let mut out = Vec::with_capacity(n_aggs);
    for (k, r) in results.into_iter().enumerate() {
        out.push(r.unwrap_or_else(|| {
            Err(Error::invalid(format!(
                "aggregation feature '{}:{}': worker thread panicked",
                view.name, view.aggregations[k].0.name
            )))
        })?);
    }
    Ok(out)
}

/// Encoded entity keys of a spine batch; `None` where any key is null.
fn spine_key_bytes(b: &RecordBatch, keys: &[JoinKey]) -> Result<Vec<Option<Vec<u8>>>> {
    let mut valid = vec![true; b.num_rows()];
    for k in keys {
        let col = b.column_by_name(&k.name).ok_or_else(|| {
            Error::invalid(format!("spine is missing join key column '{}'", k.name))
        })?;
        if let Some(n) = col.logical_nulls() {
            for (i, v) in valid.iter_mut().enumerate() {
                *v &= n.is_valid(i);
            }
        }
    }
    if valid.iter().all(|v| *v) {
        return Ok(encode_entity_keys(b, keys)?.into_iter().map(Some).collect());
    }
    let mask = BooleanArray::from(valid.clone());
    let kept = arrow_select::filter::filter_record_batch(b, &mask)?;
    let mut enc = encode_entity_keys(&kept, keys)?.into_iter();
    Ok(valid
        .iter()
        .map(|v| if *v { enc.next() } else { None })
        .collect())
}

/// The kind of event values a function folds (functions of one kind over one
/// column share the extracted events).
fn ev_kind(f: AggFunction) -> u8 {
    match f {
        AggFunction::Count => 0,
        AggFunction::First | AggFunction::Last | AggFunction::LastN(_) => 1,
        AggFunction::ApproxCountDistinct => 2,
        _ => 3,
    }
}

/// `evs` (in row order) permuted to the history's sorted order.
fn sorted_events(h: &History, evs: &[Ev]) -> Vec<Ev> {
    h.row.iter().map(|&r| evs[r as usize].clone()).collect()
}

fn extract_all(batches: &[RecordBatch], a: &Aggregation, input: &ValueType) -> Result<Vec<Ev>> {
    let mut evs = Vec::new();
    for b in batches {
        let col = b.column_by_name(&a.column).ok_or_else(|| {
            Error::invalid(format!(
                "event history is missing column '{}' (input of aggregation feature '{}')",
                a.column, a.name
            ))
        })?;
        let col = if col.data_type() != &input.to_arrow() {
            crate::codec::cast_column(col, &a.column, &input.to_arrow())?
        } else {
            Arc::clone(col)
        };
        evs.extend(state::extract(&col, &a.column, input, a.function)?);
    }
    Ok(evs)
}

/// One aggregation feature of a view, ready for the online path.
#[derive(Debug, Clone)]
pub(crate) struct OnlineAgg {
    pub(crate) agg: Aggregation,
    input: ValueType,
    fp: u64,
    empty: State,
    r: i64,
    w: Option<i64>,
    /// `view:feature`, for errors.
    label: String,
}

impl OnlineAgg {
    /// Every aggregation feature of `rv` (or only `names`).
    pub(crate) fn of_view(rv: &ResolvedView, names: Option<&[String]>) -> Result<Vec<Self>> {
        rv.view
            .aggregations
            .iter()
            .filter(|a| names.is_none_or(|n| n.contains(&a.name)))
            .map(|a| {
                let input = input_type(rv, a)?;
                Ok(Self {
                    fp: state::fingerprint(a, &input),
                    empty: State::new(a.function, &input),
                    r: duration_micros(a.effective_hop()).max(1),
                    w: a.window.map(duration_micros),
                    label: format!("{}:{}", rv.name(), a.name),
                    agg: a.clone(),
                    input,
                })
            })
            .collect()
    }

    fn expires_at(&self, start: i64) -> i64 {
        self.w.map_or(i64::MAX, |w| {
            start
                .saturating_add(w)
                .saturating_add(self.r.saturating_mul(2))
        })
    }

    /// The value at `now` from an entity's stored tiles (any order, any features).
    ///
    /// # Errors
    /// [`Error::AggregationDefinitionMismatch`] for a tile written by another
    /// definition; [`Error::InvalidInput`] for corrupt tile bytes or an int64
    /// sum overflow.
    pub(crate) fn value_at(&self, tiles: &[Tile], now: i64) -> Result<Option<Value>> {
        let lo = self
            .w
            .map_or(i64::MIN, |w| floor_to(now.saturating_sub(w), self.r));
        let head = floor_to(now, self.r);
        let mut mine: Vec<&Tile> = tiles
            .iter()
            .filter(|t| t.feature == self.agg.name && t.start >= lo && t.start <= head)
            .collect();
        mine.sort_by_key(|t| t.start);
        let mut st = self.empty.clone();
        for t in mine {
            let s = State::decode(&t.state, self.fp, &self.empty, &self.label)?;
            st.merge(&s).map_err(|_| {
                Error::invalid(format!(
                    "aggregation feature '{}': int64 sum overflows",
                    self.label
                ))
            })?;
        }
        Ok(st.finish(self.agg.function))
    }

    /// The Arrow output type.
    pub(crate) fn output_type(&self) -> ValueType {
        self.agg.function.output_type(&self.input)
    }
}

/// The merge function handed to [`crate::OnlineStore::merge_tiles`].
pub(crate) fn tile_merger(
    aggs: &[OnlineAgg],
) -> impl Fn(&str, &[u8], &[u8]) -> Result<Vec<u8>> + Send + Sync + use<> {
    let by_name: HashMap<String, OnlineAgg> = aggs
        .iter()
        .map(|a| (a.agg.name.clone(), a.clone()))
        .collect();
    move |feature: &str, stored: &[u8], delta: &[u8]| {
        let a = by_name.get(feature).ok_or_else(|| {
            Error::invalid(format!("tile of unknown aggregation feature '{feature}'"))
        })?;
        let mut s = State::decode(stored, a.fp, &a.empty, &a.label)?;
        let d = State::decode(delta, a.fp, &a.empty, &a.label)?;
        s.merge(&d).map_err(|_| {
            Error::invalid(format!(
                "aggregation feature '{}': int64 sum overflows",
                a.label
            ))
        })?;
        Ok(s.encode(a.fp))
    }
}

/// The tiles of every entity in `batches` (canonical event rows), for the
/// online store.
///
/// Per feature, only tiles from the one holding `from` to the one holding
/// `until` (both included) and not yet expired at `expire_before` (per
/// entity: the given value, or the entity's newest event time) are returned.
pub(crate) fn build_tile_writes(
    rv: &ResolvedView,
    aggs: &[OnlineAgg],
    batches: &[RecordBatch],
    from: Option<i64>,
    until: Option<i64>,
    expire_before: Option<i64>,
) -> Result<Vec<TileWrite>> {
    let h = History::build(
        batches,
        &rv.join_keys,
        &rv.view.event_timestamp_column,
        rv.view.created_timestamp_column.as_deref(),
        false,
    )?;
    let mut keys: Vec<(&Vec<u8>, u32)> = h.groups.iter().map(|(k, g)| (k, *g)).collect();
    keys.sort_by_key(|(_, g)| *g);
    let mut writes: Vec<TileWrite> = keys
        .iter()
        .map(|(k, g)| {
            let g = *g as usize;
            let newest = if h.off[g + 1] > h.off[g] {
                h.ts[h.off[g + 1] - 1]
            } else {
                i64::MIN
            };
            TileWrite {
                entity_key: (*k).clone(),
                tiles: Vec::new(),
                expire_before: expire_before.unwrap_or(newest),
            }
        })
        .collect();
    for a in aggs {
        let evs = sorted_events(&h, &extract_all(batches, &a.agg, &a.input)?);
        let tiles = Tiles::build(&h, &evs, &a.empty, a.r, rv.name(), &a.agg)?;
        let keep_from = from.map_or(i64::MIN, |f| floor_to(f, a.r));
        let keep_until = until.map_or(i64::MAX, |u| floor_to(u, a.r));
        for (g, w) in writes.iter_mut().enumerate() {
            for k in tiles.off[g]..tiles.off[g + 1] {
                let start = tiles.start[k];
                let expires_at = a.expires_at(start);
                if start < keep_from || start > keep_until || expires_at <= w.expire_before {
                    continue;
                }
                w.tiles.push(Tile {
                    feature: a.agg.name.clone(),
                    start,
                    expires_at,
                    state: tiles.state[k].encode(a.fp),
                });
            }
        }
    }
    writes.retain(|w| !w.tiles.is_empty());
    Ok(writes)
}

/// The earliest event time materialization must read to rebuild every tile
/// holding an event in `(start, end]`: the start of the tile holding `start`,
/// over all features (`None` = from the beginning).
pub(crate) fn rebuild_from(aggs: &[OnlineAgg], start: Option<i64>) -> Option<i64> {
    start.map(|s| aggs.iter().map(|a| floor_to(s, a.r)).min().unwrap_or(s))
}

/// The Arrow output column of `values` for a feature.
pub(crate) fn column_of(a: &OnlineAgg, values: &[Option<Value>]) -> ArrayRef {
    let mut b = ColumnBuilder::new(&a.output_type());
    for v in values {
        match v {
            Some(v) => b.push_value(v),
            None => b.push_null(),
        }
    }
    b.finish()
}

#[cfg(test)]
pub(crate) mod tests;
