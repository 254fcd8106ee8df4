//! The numeric fast path of the offline engine ([semantics §11](crate::docs::semantics)):
//! `count` (any column) and `sum`, `mean`, `min`, `max` (integer and float
//! columns).
//!
//! Features sharing one input column and one hop form a *set*: per key group,
//! the set's hop tiles are built once as plain accumulators (no `State` enum,
//! no per-event `Ev`), and every window of the set is merged from them per
//! spine row. The window bounds, the created-time cutoff (a tile holding an
//! event created after `t` is folded event by event) and the fold and merge
//! operations are those of the generic path (`State::add` / `State::merge`),
//! applied in the same order, so the results are bit-identical: integer sums
//! are checked the same way (an int64 overflow inside a tile or while merging
//! is an error), float sums add the same values in the same order, `min` and
//! `max` keep the first value and then apply `f64::min` / `f64::max`. The
//! tests compare both paths on large random histories.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

use super::{History, floor_to, overflow};
use crate::error::{Error, Result};
use crate::model::{AggFunction, Aggregation, ValueType};
use crate::time::duration_micros;

/// Whether `f` over a column of type `input` runs on the fast path.
pub(super) fn eligible(f: AggFunction, input: &ValueType) -> bool {
    match f {
        AggFunction::Count => true,
        AggFunction::Sum | AggFunction::Mean | AggFunction::Min | AggFunction::Max => {
            numeric(input).is_some()
        }
        _ => false,
    }
}

/// `Some(true)` for integer columns, `Some(false)` for float columns.
fn numeric(input: &ValueType) -> Option<bool> {
    match input {
        ValueType::Int32 | ValueType::Int64 => Some(true),
        ValueType::Float32 | ValueType::Float64 => Some(false),
        _ => None,
    }
}

/// An input column in the history's sorted order.
#[derive(Default)]
struct Column {
    valid: Vec<bool>,
    /// Values of an integer column (empty otherwise, or when only counted).
    ints: Vec<i64>,
    /// Values of a float column (empty otherwise, or when only counted).
    floats: Vec<f64>,
}

impl Column {
    fn extract(
        h: &History,
        batches: &[RecordBatch],
        a: &Aggregation,
        input: &ValueType,
        values: bool,
    ) -> Result<Self> {
        let mut valid = Vec::new();
        let mut ints = Vec::new();
        let mut floats = Vec::new();
        let expected = input.to_arrow();
        for b in batches {
            let col = b.column_by_name(&a.column).ok_or_else(|| {
                Error::invalid(format!(
                    "event history is missing column '{}' (input of aggregation feature '{}')",
                    a.column, a.name
                ))
            })?;
            let col = if col.data_type() != &expected {
                crate::codec::cast_column(col, &a.column, &expected)?
            } else {
                Arc::clone(col)
            };
            match col.logical_nulls() {
                Some(n) => valid.extend(n.iter()),
                None => valid.extend(std::iter::repeat_n(true, col.len())),
            }
            if !values {
                continue;
            }
            match col.data_type() {
                DataType::Int32 => ints.extend(
                    col.as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .map(|x| i64::from(*x)),
                ),
                DataType::Int64 => ints.extend_from_slice(col.as_primitive::<Int64Type>().values()),
                DataType::Float32 => floats.extend(
                    col.as_primitive::<Float32Type>()
                        .values()
                        .iter()
                        .map(|x| f64::from(*x)),
                ),
                DataType::Float64 => {
                    floats.extend_from_slice(col.as_primitive::<Float64Type>().values());
                }
                other => {
                    return Err(Error::invalid(format!(
                        "aggregation input column '{}' has type {other}, expected a number",
                        a.column
                    )));
                }
            }
        }
        Ok(Self {
            valid: gather(&h.row, &valid),
            ints: gather(&h.row, &ints),
            floats: gather(&h.row, &floats),
        })
    }
}

/// `v` permuted to the history's sorted order (`v[rows[p]]` at `p`; empty
/// when `v` is), on all cores for large histories.
fn gather<T: Copy + Default + Send + Sync>(rows: &[u32], v: &[T]) -> Vec<T> {
    if v.is_empty() {
        return Vec::new();
    }
    let mut out = vec![T::default(); rows.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = rows.len().div_ceil(threads).max(1 << 12);
    std::thread::scope(|s| {
        for (o, r) in out.chunks_mut(per).zip(rows.chunks(per)) {
            s.spawn(move || {
                for (x, &i) in o.iter_mut().zip(r) {
                    *x = v[i as usize];
                }
            });
        }
    });
    out
}

/// One output column in sorted spine order.
enum Out {
    I(Vec<i64>, Vec<bool>),
    F(Vec<f64>, Vec<bool>),
}

/// The accumulator of a set: the intermediate values of all its functions.
trait Acc: Copy + Default + Send + Sync {
    /// Folds the event at sorted position `p` (nulls ignored).
    fn add(&mut self, c: &Column, p: usize);
    /// Merges `o`, whose events were written after this one's.
    fn merge(&mut self, o: &Self);
    /// Writes the value of `f` at `j`; `Err` for an int64 sum overflow.
    fn write(&self, f: AggFunction, out: &mut Out, j: usize) -> Result<(), ()>;
    /// Whether an int64 sum overflowed while folding or merging.
    fn overflowed(&self) -> bool {
        false
    }
}

/// `count` only (any column).
#[derive(Clone, Copy, Default)]
struct CountAcc {
    n: i64,
}

impl Acc for CountAcc {
    fn add(&mut self, c: &Column, p: usize) {
        self.n += i64::from(c.valid[p]);
    }
    fn merge(&mut self, o: &Self) {
        self.n += o.n;
    }
    fn write(&self, _f: AggFunction, out: &mut Out, j: usize) -> Result<(), ()> {
        if let Out::I(v, ok) = out {
            v[j] = self.n;
            ok[j] = true;
        }
        Ok(())
    }
}

/// Integer column: `State::{Count, SumI, Mean, MinI, MaxI}` at once.
#[derive(Clone, Copy, Default)]
struct IntAcc {
    n: i64,
    sum: i64,
    overflow: bool,
    wide: i128,
    min: i64,
    max: i64,
}

impl Acc for IntAcc {
    fn add(&mut self, c: &Column, p: usize) {
        if !c.valid[p] {
            return;
        }
        let x = c.ints[p];
        if self.n == 0 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        match self.sum.checked_add(x) {
            Some(s) => self.sum = s,
            None => self.overflow = true,
        }
        self.wide += i128::from(x);
    }
    fn merge(&mut self, o: &Self) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            (self.min, self.max) = (o.min, o.max);
        } else {
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.n += o.n;
        match self.sum.checked_add(o.sum) {
            Some(s) => self.sum = s,
            None => self.overflow = true,
        }
        self.overflow |= o.overflow;
        self.wide += o.wide;
    }
    fn write(&self, f: AggFunction, out: &mut Out, j: usize) -> Result<(), ()> {
        let some = self.n > 0;
        match (f, out) {
            (AggFunction::Count, Out::I(v, ok)) => (v[j], ok[j]) = (self.n, true),
            (AggFunction::Sum, Out::I(v, ok)) => {
                if self.overflow {
                    return Err(());
                }
                (v[j], ok[j]) = (self.sum, some);
            }
            (AggFunction::Min, Out::I(v, ok)) => (v[j], ok[j]) = (self.min, some),
            (AggFunction::Max, Out::I(v, ok)) => (v[j], ok[j]) = (self.max, some),
            // as State::finish: (int_sum as f64 + float sum) / n, float sum 0 here
            (AggFunction::Mean, Out::F(v, ok)) if some => {
                (v[j], ok[j]) = ((self.wide as f64 + 0.0) / self.n as f64, true);
            }
            _ => {}
        }
        Ok(())
    }
    fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// Float column: `State::{Count, SumF, Mean, MinF, MaxF}` at once. The sum
/// starts at `0.0` and adds the same values in the same order as `SumF` and
/// `Mean` (whose sums are therefore equal).
#[derive(Clone, Copy, Default)]
struct FloatAcc {
    n: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc for FloatAcc {
    fn add(&mut self, c: &Column, p: usize) {
        if !c.valid[p] {
            return;
        }
        let x = c.floats[p];
        if self.n == 0 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        self.sum += x;
    }
    fn merge(&mut self, o: &Self) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            (self.min, self.max) = (o.min, o.max);
        } else {
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.n += o.n;
        self.sum += o.sum;
    }
    fn write(&self, f: AggFunction, out: &mut Out, j: usize) -> Result<(), ()> {
        let some = self.n > 0;
        match (f, out) {
            (AggFunction::Count, Out::I(v, ok)) => (v[j], ok[j]) = (self.n, true),
            (AggFunction::Sum, Out::F(v, ok)) => (v[j], ok[j]) = (self.sum, some),
            (AggFunction::Min, Out::F(v, ok)) => (v[j], ok[j]) = (self.min, some),
            (AggFunction::Max, Out::F(v, ok)) => (v[j], ok[j]) = (self.max, some),
            // as State::finish: (int_sum as f64 + float sum) / n, int sum 0 here
            (AggFunction::Mean, Out::F(v, ok)) if some => {
                (v[j], ok[j]) = ((0.0 + self.sum) / self.n as f64, true);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Features sharing one input column and one hop.
struct Set {
    column: usize,
    r: i64,
    /// Distinct windows (µs; `None` = lifetime).
    windows: Vec<Option<i64>>,
    /// `(feature index in the request, output slot, function, index into windows)`.
    feats: Vec<(usize, usize, AggFunction, usize)>,
}

/// One group's tiles of a set, in reused buffers.
struct Tiles<A> {
    start: Vec<i64>,
    acc: Vec<A>,
    lo: Vec<usize>,
    hi: Vec<usize>,
    max_created: Vec<i64>,
}

impl<A: Acc> Tiles<A> {
    fn new() -> Self {
        Self {
            start: Vec::new(),
            acc: Vec::new(),
            lo: Vec::new(),
            hi: Vec::new(),
            max_created: Vec::new(),
        }
    }

    fn fill(&mut self, h: &History, c: &Column, r: i64, g: usize) {
        self.start.clear();
        self.acc.clear();
        self.lo.clear();
        self.hi.clear();
        self.max_created.clear();
        let mut cur = i64::MIN;
        for p in h.off[g]..h.off[g + 1] {
            let s = floor_to(h.ts[p], r);
            if self.start.is_empty() || s != cur {
                cur = s;
                self.start.push(s);
                self.acc.push(A::default());
                self.lo.push(p);
                self.hi.push(p);
                self.max_created.push(i64::MIN);
            }
            let k = self.start.len() - 1;
            self.acc[k].add(c, p);
            self.hi[k] = p + 1;
            self.max_created[k] = self.max_created[k].max(h.created(p));
        }
    }
}

/// What a chunk of sorted spine rows computed: one column per fast feature
/// (positions relative to the chunk) and each feature's first error.
struct ChunkOut {
    outs: Vec<Out>,
    errors: Vec<Option<Error>>,
}

/// The fast features `fast` (indices into `aggs`) per spine row, in spine
/// order. `order` holds the spine rows with a known key, sorted by
/// `(group, t)`; `spine_groups[i]` is row `i`'s group.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    view_name: &str,
    aggs: &[(Aggregation, ValueType)],
    fast: &[usize],
    h: &History,
    batches: &[RecordBatch],
    spine_ts: &[i64],
    spine_groups: &[Option<u32>],
    order: &[u32],
    cutoff: bool,
) -> Result<Vec<(usize, ArrayRef)>> {
    // sets by (column, hop); columns extracted once
    let mut col_index: HashMap<&str, usize> = HashMap::new();
    let mut col_specs: Vec<(usize, bool)> = Vec::new(); // (first feature, values needed)
    let mut sets: Vec<Set> = Vec::new();
    for (slot, &k) in fast.iter().enumerate() {
        let (a, _) = &aggs[k];
        let ci = *col_index.entry(a.column.as_str()).or_insert_with(|| {
            col_specs.push((k, false));
            col_specs.len() - 1
        });
        col_specs[ci].1 |= a.function != AggFunction::Count;
        let r = duration_micros(a.effective_hop()).max(1);
        let w = a.window.map(duration_micros);
        let si = match sets.iter().position(|s| s.column == ci && s.r == r) {
            Some(si) => si,
            None => {
                sets.push(Set {
                    column: ci,
                    r,
                    windows: Vec::new(),
                    feats: Vec::new(),
                });
                sets.len() - 1
            }
        };
        let s = &mut sets[si];
        let wi = match s.windows.iter().position(|x| *x == w) {
            Some(wi) => wi,
            None => {
                s.windows.push(w);
                s.windows.len() - 1
            }
        };
        s.feats.push((k, slot, a.function, wi));
    }
    let columns: Vec<Column> = col_specs
        .iter()
        .map(|&(k, values)| Column::extract(h, batches, &aggs[k].0, &aggs[k].1, values))
        .collect::<Result<_>>()?;

    // chunks of sorted rows, cut at group boundaries
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let target = order.len().div_ceil(threads * 8).max(1024);
    let mut bounds = vec![0usize];
    let mut j = 0;
    while j < order.len() {
        let mut e = (j + target).min(order.len());
        while e < order.len()
            && spine_groups[order[e] as usize] == spine_groups[order[e - 1] as usize]
        {
            e += 1;
        }
        bounds.push(e);
        j = e;
    }
    // times and groups in sorted order: the row loops read them sequentially
    let ord_ts: Vec<i64> = order.iter().map(|&i| spine_ts[i as usize]).collect();
    let ord_g: Vec<u32> = order
        .iter()
        .map(|&i| spine_groups[i as usize].unwrap_or(u32::MAX))
        .collect();
    let chunk = |range: std::ops::Range<usize>| -> ChunkOut {
        let rows = SortedRows {
            row: &order[range.clone()],
            ts: &ord_ts[range.clone()],
            group: &ord_g[range],
        };
        let n = rows.row.len();
        let mut out = ChunkOut {
            outs: fast
                .iter()
                .map(|&k| {
                    let a = &aggs[k].0;
                    // values over no event: count 0, the others null
                    if float_output(&aggs[k]) {
                        Out::F(vec![0.0; n], vec![false; n])
                    } else {
                        Out::I(vec![0; n], vec![a.function == AggFunction::Count; n])
                    }
                })
                .collect(),
            errors: fast.iter().map(|_| None).collect(),
        };
        for set in &sets {
            let c = &columns[set.column];
            let k0 = set.feats[0].0;
            let ctx = SetRun {
                view_name,
                aggs,
                set,
                c,
                h,
                cutoff,
            };
            if set.feats.iter().all(|f| f.2 == AggFunction::Count) || !col_specs[set.column].1 {
                ctx.run::<CountAcc>(&rows, &mut out);
            } else if numeric(&aggs[k0].1) == Some(true) {
                ctx.run::<IntAcc>(&rows, &mut out);
            } else {
                ctx.run::<FloatAcc>(&rows, &mut out);
            }
        }
        out
    };
    let ranges: Vec<std::ops::Range<usize>> = bounds.windows(2).map(|b| b[0]..b[1]).collect();
    let results: Vec<ChunkOut> = if threads > 1 && ranges.len() > 1 {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut done: Vec<(usize, ChunkOut)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.min(ranges.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(r) = ranges.get(i) else { break };
                            mine.push((i, chunk(r.clone())));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        if done.len() != ranges.len() {
            return Err(Error::invalid(format!(
                "aggregations of view '{view_name}': worker thread panicked"
            )));
        }
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, c)| c).collect()
    } else {
        ranges.iter().map(|r| chunk(r.clone())).collect()
    };

    // first error per feature in sorted order (as the generic path)
    let mut first_err: Vec<Option<Error>> = fast.iter().map(|_| None).collect();
    let mut results = results;
    for c in &mut results {
        for (f, e) in first_err.iter_mut().zip(c.errors.iter_mut()) {
            if f.is_none() {
                *f = e.take();
            }
        }
    }
    if let Some(e) = first_err.iter_mut().find_map(Option::take) {
        return Err(e);
    }
    let n = spine_ts.len();
    // rows without a known key keep the value over no event (count 0, others null)
    let build = |i: usize| -> ArrayRef {
        let k = fast[i];
        let chunks = results.iter().map(|c| &c.outs[i]).zip(bounds.windows(2));
        if float_output(&aggs[k]) {
            let (mut v, mut ok) = (vec![0.0; n], vec![false; n]);
            for (c, r) in chunks {
                if let Out::F(cv, cok) = c {
                    for (j, &row) in order[r[0]..r[1]].iter().enumerate() {
                        (v[row as usize], ok[row as usize]) = (cv[j], cok[j]);
                    }
                }
            }
            Arc::new(Float64Array::new(v.into(), nulls(ok)))
        } else {
            let is_count = aggs[k].0.function == AggFunction::Count;
            let (mut v, mut ok) = (vec![0i64; n], vec![is_count; n]);
            for (c, r) in chunks {
                if let Out::I(cv, cok) = c {
                    for (j, &row) in order[r[0]..r[1]].iter().enumerate() {
                        (v[row as usize], ok[row as usize]) = (cv[j], cok[j]);
                    }
                }
            }
            Arc::new(Int64Array::new(v.into(), nulls(ok)))
        }
    };
    // the columns are independent: built on all cores
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut built: Vec<(usize, ArrayRef)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(fast.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= fast.len() {
                            break;
                        }
                        mine.push((i, build(i)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    if built.len() != fast.len() {
        return Err(Error::invalid(format!(
            "aggregations of view '{view_name}': worker thread panicked"
        )));
    }
    built.sort_by_key(|(i, _)| *i);
    Ok(built.into_iter().map(|(i, col)| (fast[i], col)).collect())
}

fn float_output((a, input): &(Aggregation, ValueType)) -> bool {
    a.function.output_type(input) == ValueType::Float64
}

fn nulls(ok: Vec<bool>) -> Option<NullBuffer> {
    let b = NullBuffer::from(ok);
    (b.null_count() > 0).then_some(b)
}

/// One set over chunks of sorted spine rows.
struct SetRun<'a> {
    view_name: &'a str,
    aggs: &'a [(Aggregation, ValueType)],
    set: &'a Set,
    c: &'a Column,
    h: &'a History,
    cutoff: bool,
}

/// A chunk of spine rows in `(group, t)` order: spine row, time, group.
struct SortedRows<'a> {
    row: &'a [u32],
    ts: &'a [i64],
    group: &'a [u32],
}

impl SetRun<'_> {
    fn run<A: Acc>(&self, rows: &SortedRows<'_>, out: &mut ChunkOut) {
        let (set, h, c, cutoff) = (self.set, self.h, self.c, self.cutoff);
        let r = set.r;
        let mut tiles: Tiles<A> = Tiles::new();
        let mut tiled = usize::MAX;
        // Cursors: rows of a group come by ascending t, so every bound below
        // (head, tail of each window, t) only moves forward within a group.
        let nw = set.windows.len();
        let (mut a1, mut e1) = (0usize, 0usize);
        let (mut a0, mut e0) = (vec![0usize; nw], vec![0usize; nw]);
        let fold = |acc: &mut A, from: usize, to: usize, t: i64| {
            for p in from..to {
                if cutoff && h.created(p) > t {
                    continue;
                }
                acc.add(c, p);
            }
        };
        for (j, (&t, &g)) in rows.ts.iter().zip(rows.group).enumerate() {
            let g = g as usize;
            if g != tiled {
                tiles.fill(h, c, r, g);
                tiled = g;
                (a1, e1) = (0, h.off[g]);
                a0.fill(0);
                e0.fill(h.off[g]);
                // as the generic path: an overflow in any tile of the group
                if tiles.acc.iter().any(A::overflowed) {
                    for &(k, s, f, _) in &set.feats {
                        if f == AggFunction::Sum && out.errors[s].is_none() {
                            let a = &self.aggs[k].0;
                            out.errors[s] =
                                Some(overflow(self.view_name, a, "within one hop tile"));
                        }
                    }
                }
            }
            let head = floor_to(t, r);
            let end = h.off[g + 1];
            while a1 < tiles.start.len() && tiles.start[a1] < head {
                a1 += 1;
            }
            while e1 < end && h.ts[e1] <= t {
                e1 += 1;
            }
            for (wi, w) in set.windows.iter().enumerate() {
                let lo = w.map_or(i64::MIN, |w| floor_to(t.saturating_sub(w), r));
                while a0[wi] < tiles.start.len() && tiles.start[a0[wi]] < lo {
                    a0[wi] += 1;
                }
                let from = head.max(lo);
                while e0[wi] < end && h.ts[e0[wi]] < from {
                    e0[wi] += 1;
                }
                let mut acc = A::default();
                for k in a0[wi]..a1 {
                    if cutoff && tiles.max_created[k] > t {
                        fold(&mut acc, tiles.lo[k], tiles.hi[k], t);
                    } else {
                        acc.merge(&tiles.acc[k]);
                    }
                }
                fold(&mut acc, e0[wi], e1, t);
                for &(k, s, f, fw) in &set.feats {
                    if fw != wi || out.errors[s].is_some() {
                        continue;
                    }
                    if acc.write(f, &mut out.outs[s], j).is_err() {
                        let a = &self.aggs[k].0;
                        let i = rows.row[j];
                        out.errors[s] =
                            Some(overflow(self.view_name, a, &format!("at spine row {i}")));
                    }
                }
            }
        }
    }
}
