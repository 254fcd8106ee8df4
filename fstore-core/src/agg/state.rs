//! Intermediate states of the aggregation functions (the contents of one hop
//! tile), their event fold (`add`), their merge, their final value and their
//! byte encoding. Both paths — the offline engine and online serving — use
//! exactly this code.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use super::sketch::Hll;
use crate::error::{Error, Result};
use crate::model::{AggFunction, Aggregation, Value, ValueType};

/// Version byte of the tile-state encoding (see the `agg` module docs).
pub const TILE_STATE_VERSION: u8 = 1;

/// One event's value, as the function needs it.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    /// Null (ignored by every function).
    Null,
    /// Present (for `count`).
    Some,
    /// Integer value.
    I(i64),
    /// Float value.
    F(f64),
    /// Hash of the value (`approx_count_distinct`).
    H(u64),
    /// The value itself (`first`, `last`, `last_n`).
    V(Value),
}

/// A value with its ordering key `(event_ts, created_ts)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stamped {
    pub(crate) ts: i64,
    pub(crate) created: i64,
    pub(crate) v: Value,
}

impl Stamped {
    fn key(&self) -> (i64, i64) {
        (self.ts, self.created)
    }
}

/// An intermediate state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Count(i64),
    SumI(Option<i64>),
    SumF(Option<f64>),
    Mean { n: i64, sum: f64, int_sum: i128 },
    MinI(Option<i64>),
    MaxI(Option<i64>),
    MinF(Option<f64>),
    MaxF(Option<f64>),
    Var { n: i64, mean: f64, m2: f64 },
    First(Option<Stamped>),
    Last(Option<Stamped>),
    LastN { cap: u32, items: Vec<Stamped> },
    Distinct(Hll),
}

/// An int64 sum overflowed.
#[derive(Debug)]
pub(crate) struct Overflow;

fn is_int(t: &ValueType) -> bool {
    matches!(t, ValueType::Int32 | ValueType::Int64)
}

impl State {
    /// The empty state of `f` over a column of type `input`.
    pub(crate) fn new(f: AggFunction, input: &ValueType) -> Self {
        let int = is_int(input);
        match f {
            AggFunction::Count => Self::Count(0),
            AggFunction::Sum if int => Self::SumI(None),
            AggFunction::Sum => Self::SumF(None),
            AggFunction::Mean => Self::Mean {
                n: 0,
                sum: 0.0,
                int_sum: 0,
            },
            AggFunction::Min if int => Self::MinI(None),
            AggFunction::Max if int => Self::MaxI(None),
            AggFunction::Min => Self::MinF(None),
            AggFunction::Max => Self::MaxF(None),
            AggFunction::VarPop | AggFunction::StddevPop => Self::Var {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggFunction::First => Self::First(None),
            AggFunction::Last => Self::Last(None),
            AggFunction::LastN(n) => Self::LastN {
                cap: n,
                items: Vec::new(),
            },
            AggFunction::ApproxCountDistinct => Self::Distinct(Hll::default()),
            // AggFunction is non_exhaustive only towards other crates.
        }
    }

    /// Folds one event in. Events of one state are added in write order
    /// (offline: sorted by `(event_ts, created_ts, row)`), so on an ordering
    /// tie the later one counts as later.
    pub(crate) fn add(&mut self, ev: &Ev, ts: i64, created: i64) -> Result<(), Overflow> {
        match (self, ev) {
            (_, Ev::Null) => {}
            (Self::Count(n), _) => *n += 1,
            (Self::SumI(s), Ev::I(x)) => *s = Some(s.unwrap_or(0).checked_add(*x).ok_or(Overflow)?),
            (Self::SumF(s), Ev::F(x)) => *s = Some(s.unwrap_or(0.0) + x),
            (Self::Mean { n, int_sum, .. }, Ev::I(x)) => {
                *n += 1;
                *int_sum += i128::from(*x);
            }
            (Self::Mean { n, sum, .. }, Ev::F(x)) => {
                *n += 1;
                *sum += x;
            }
            (Self::MinI(m), Ev::I(x)) => *m = Some(m.map_or(*x, |m| m.min(*x))),
            (Self::MaxI(m), Ev::I(x)) => *m = Some(m.map_or(*x, |m| m.max(*x))),
            (Self::MinF(m), Ev::F(x)) => *m = Some(m.map_or(*x, |m| m.min(*x))),
            (Self::MaxF(m), Ev::F(x)) => *m = Some(m.map_or(*x, |m| m.max(*x))),
            (Self::Var { n, mean, m2 }, Ev::I(_) | Ev::F(_)) => {
                let x = match ev {
                    Ev::I(i) => *i as f64,
                    Ev::F(f) => *f,
                    _ => 0.0,
                };
                *n += 1;
                let d = x - *mean;
                *mean += d / *n as f64;
                *m2 += d * (x - *mean);
            }
            (Self::First(s), Ev::V(v))
                if s.as_ref().is_none_or(|old| (ts, created) < old.key()) =>
            {
                *s = Some(Stamped {
                    ts,
                    created,
                    v: v.clone(),
                });
            }
            (Self::Last(s), Ev::V(v))
                if s.as_ref().is_none_or(|old| (ts, created) >= old.key()) =>
            {
                *s = Some(Stamped {
                    ts,
                    created,
                    v: v.clone(),
                });
            }
            (Self::LastN { cap, items }, Ev::V(v)) => {
                // newest first; a tie counts the new (later-written) one as newer
                let pos = items.partition_point(|it| it.key() > (ts, created));
                if pos < *cap as usize {
                    items.insert(
                        pos,
                        Stamped {
                            ts,
                            created,
                            v: v.clone(),
                        },
                    );
                    items.truncate(*cap as usize);
                }
            }
            (Self::Distinct(h), Ev::H(x)) => h.insert(*x),
            // Events are extracted for the state's own function (see `extract`).
            _ => {}
        }
        Ok(())
    }

    /// Merges `o`, whose events were written after this state's.
    pub(crate) fn merge(&mut self, o: &Self) -> Result<(), Overflow> {
        match (self, o) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::SumI(a), Self::SumI(Some(b))) => {
                *a = Some(a.unwrap_or(0).checked_add(*b).ok_or(Overflow)?);
            }
            (Self::SumF(a), Self::SumF(Some(b))) => *a = Some(a.unwrap_or(0.0) + b),
            (
                Self::Mean { n, sum, int_sum },
                Self::Mean {
                    n: n2,
                    sum: s2,
                    int_sum: i2,
                },
            ) => {
                *n += n2;
                *sum += s2;
                *int_sum += i2;
            }
            (Self::MinI(a), Self::MinI(b)) => *a = opt2(*a, *b, i64::min),
            (Self::MaxI(a), Self::MaxI(b)) => *a = opt2(*a, *b, i64::max),
            (Self::MinF(a), Self::MinF(b)) => *a = opt2(*a, *b, f64::min),
            (Self::MaxF(a), Self::MaxF(b)) => *a = opt2(*a, *b, f64::max),
            (
                Self::Var { n, mean, m2 },
                Self::Var {
                    n: nb,
                    mean: mb,
                    m2: m2b,
                },
            ) if *nb > 0 => {
                if *n == 0 {
                    (*n, *mean, *m2) = (*nb, *mb, *m2b);
                } else {
                    let na = *n as f64;
                    let nbf = *nb as f64;
                    let tot = na + nbf;
                    let d = mb - *mean;
                    *mean += d * nbf / tot;
                    *m2 += m2b + d * d * na * nbf / tot;
                    *n += nb;
                }
            }
            (Self::First(a), Self::First(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|x| b.key() < x.key())
                {
                    *a = Some(b.clone());
                }
            }
            (Self::Last(a), Self::Last(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|x| b.key() >= x.key())
                {
                    *a = Some(b.clone());
                }
            }
            (Self::LastN { cap, items }, Self::LastN { items: b, .. }) if !b.is_empty() => {
                let mut out = Vec::with_capacity((items.len() + b.len()).min(*cap as usize));
                let (mut i, mut j) = (0, 0);
                while out.len() < *cap as usize && (i < items.len() || j < b.len()) {
                    // b is later-written: on a tie it is the newer one
                    let take_b = match (items.get(i), b.get(j)) {
                        (Some(x), Some(y)) => y.key() >= x.key(),
                        (None, Some(_)) => true,
                        _ => false,
                    };
                    if take_b {
                        out.push(b[j].clone());
                        j += 1;
                    } else {
                        out.push(items[i].clone());
                        i += 1;
                    }
                }
                *items = out;
            }
            (Self::Distinct(a), Self::Distinct(b)) => a.merge(b),
            // States of one feature always have one kind (decode checks it).
            _ => {}
        }
        Ok(())
    }

    /// The function's value (`None` = null).
    pub(crate) fn finish(&self, f: AggFunction) -> Option<Value> {
        match self {
            Self::Count(n) => Some(Value::Int64(*n)),
            Self::SumI(s) | Self::MinI(s) | Self::MaxI(s) => s.map(Value::Int64),
            Self::SumF(s) | Self::MinF(s) | Self::MaxF(s) => s.map(Value::Float64),
            // one of the two sums is always 0 (a column is integer or float)
            Self::Mean { n, sum, int_sum } => {
                (*n > 0).then(|| Value::Float64((*int_sum as f64 + sum) / *n as f64))
            }
            Self::Var { n, m2, .. } => (*n > 0).then(|| {
                let var = (m2 / *n as f64).max(0.0);
                Value::Float64(if f == AggFunction::StddevPop {
                    var.sqrt()
                } else {
                    var
                })
            }),
            Self::First(s) | Self::Last(s) => s.as_ref().map(|s| s.v.clone()),
            Self::LastN { items, .. } => (!items.is_empty())
                .then(|| Value::List(items.iter().map(|s| Some(s.v.clone())).collect())),
            Self::Distinct(h) => (!h.is_empty()).then(|| Value::Int64(h.estimate())),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Self::Count(_) => 1,
            Self::SumI(_) => 2,
            Self::SumF(_) => 3,
            Self::Mean { .. } => 4,
            Self::MinI(_) => 5,
            Self::MaxI(_) => 6,
            Self::MinF(_) => 7,
            Self::MaxF(_) => 8,
            Self::Var { .. } => 9,
            Self::First(_) => 10,
            Self::Last(_) => 11,
            Self::LastN { .. } => 12,
            Self::Distinct(_) => 13,
        }
    }

    /// The tile bytes of this state (layout in the `agg` module docs).
    pub(crate) fn encode(&self, fingerprint: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(TILE_STATE_VERSION);
        out.extend_from_slice(&fingerprint.to_le_bytes());
        out.push(self.tag());
        let opt_i = |out: &mut Vec<u8>, v: &Option<i64>| match v {
            Some(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_le_bytes());
            }
            None => out.push(0),
        };
        let opt_f = |out: &mut Vec<u8>, v: &Option<f64>| match v {
            Some(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_le_bytes());
            }
            None => out.push(0),
        };
        match self {
            Self::Count(n) => out.extend_from_slice(&n.to_le_bytes()),
            Self::SumI(s) | Self::MinI(s) | Self::MaxI(s) => opt_i(&mut out, s),
            Self::SumF(s) | Self::MinF(s) | Self::MaxF(s) => opt_f(&mut out, s),
            Self::Mean { n, sum, int_sum } => {
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&int_sum.to_le_bytes());
            }
            Self::Var { n, mean, m2 } => {
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&mean.to_le_bytes());
                out.extend_from_slice(&m2.to_le_bytes());
            }
            Self::First(s) | Self::Last(s) => match s {
                Some(s) => {
                    out.push(1);
                    encode_stamped(&mut out, s);
                }
                None => out.push(0),
            },
            Self::LastN { cap, items } => {
                out.extend_from_slice(&cap.to_le_bytes());
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for s in items {
                    encode_stamped(&mut out, s);
                }
            }
            Self::Distinct(h) => h.encode(&mut out),
        }
        out
    }

    /// Decodes tile bytes written for a feature whose current definition has
    /// `fingerprint` and whose empty state is `empty`.
    ///
    /// # Errors
    /// [`Error::AggregationDefinitionMismatch`] when the tile was written by
    /// another definition; [`Error::InvalidInput`] naming `feature` for
    /// corrupt bytes (bad version, kind, truncation, oversized lists).
    pub(crate) fn decode(
        bytes: &[u8],
        fingerprint: u64,
        empty: &Self,
        feature: &str,
    ) -> Result<Self> {
        let what = "aggregation tile";
        let mut r = Reader::new(bytes, what);
        let bad = |m: String| Error::invalid(format!("{what} of '{feature}': {m}"));
        let v = r.u8().map_err(|_| bad("empty".into()))?;
        if v != TILE_STATE_VERSION {
            return Err(bad(format!("unknown tile version {v}")));
        }
        let stored = u64::from_le_bytes(r.array().map_err(|e| bad(e.to_string()))?);
        if stored != fingerprint {
            return Err(Error::AggregationDefinitionMismatch {
                feature: feature.to_owned(),
                stored,
                current: fingerprint,
            });
        }
        let tag = r.u8().map_err(|e| bad(e.to_string()))?;
        if tag != empty.tag() {
            return Err(bad(format!("tile kind {tag}, expected {}", empty.tag())));
        }
        let res: Result<Self> = (|| {
            Ok(match empty {
                Self::Count(_) => Self::Count(r.i64()?),
                Self::SumI(_) => Self::SumI(r.opt_i64()?),
                Self::MinI(_) => Self::MinI(r.opt_i64()?),
                Self::MaxI(_) => Self::MaxI(r.opt_i64()?),
                Self::SumF(_) => Self::SumF(r.opt_f64()?),
                Self::MinF(_) => Self::MinF(r.opt_f64()?),
                Self::MaxF(_) => Self::MaxF(r.opt_f64()?),
                Self::Mean { .. } => Self::Mean {
                    n: r.i64()?,
                    sum: r.f64()?,
                    int_sum: i128::from_le_bytes(r.array()?),
                },
                Self::Var { .. } => Self::Var {
                    n: r.i64()?,
                    mean: r.f64()?,
                    m2: r.f64()?,
                },
                Self::First(_) | Self::Last(_) => {
                    let s = match r.u8()? {
                        0 => None,
                        1 => Some(decode_stamped(&mut r)?),
                        t => return Err(Error::invalid(format!("presence byte {t}"))),
                    };
                    if matches!(empty, Self::First(_)) {
                        Self::First(s)
                    } else {
                        Self::Last(s)
                    }
                }
                Self::LastN { cap, .. } => {
                    let stored_cap = u32::from_le_bytes(r.array()?);
                    let n = u32::from_le_bytes(r.array()?);
                    if stored_cap != *cap || n > *cap {
                        return Err(Error::invalid(format!(
                            "last_n tile holds {n} of cap {stored_cap}, expected cap {cap}"
                        )));
                    }
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(decode_stamped(&mut r)?);
                    }
                    Self::LastN { cap: *cap, items }
                }
                Self::Distinct(_) => Self::Distinct(Hll::decode(&mut r)?),
            })
        })();
        let s = res.map_err(|e| bad(e.to_string()))?;
        if !r.done() {
            return Err(bad("trailing bytes".into()));
        }
        Ok(s)
    }
}

fn opt2<T: Copy>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn encode_stamped(out: &mut Vec<u8>, s: &Stamped) {
    out.extend_from_slice(&s.ts.to_le_bytes());
    out.extend_from_slice(&s.created.to_le_bytes());
    encode_value(out, &s.v);
}

fn decode_stamped(r: &mut Reader<'_>) -> Result<Stamped> {
    let ts = r.i64()?;
    let created = r.i64()?;
    let v = decode_value(r)?;
    Ok(Stamped { ts, created, v })
}

/// Canonical bytes of a scalar value: the payload tag (see `codec`) and the
/// value, little-endian; strings and bytes with a u32 LE length.
pub(crate) fn encode_value(out: &mut Vec<u8>, v: &Value) {
    let mut bytes = |tag: u8, b: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    match v {
        Value::String(s) => bytes(6, s.as_bytes()),
        Value::Bytes(b) => bytes(7, b),
        Value::Bool(b) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        Value::Int32(x) => {
            out.push(2);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Int64(x) => {
            out.push(3);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Float32(x) => {
            out.push(4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Float64(x) => {
            out.push(5);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Timestamp(x) => {
            out.push(8);
            out.extend_from_slice(&x.to_le_bytes());
        }
        // Aggregation inputs are scalar (validated); lists never reach here.
        Value::List(_) => out.push(0),
    }
}

fn decode_value(r: &mut Reader<'_>) -> Result<Value> {
    Ok(match r.u8()? {
        1 => Value::Bool(r.u8()? != 0),
        2 => Value::Int32(i32::from_le_bytes(r.array()?)),
        3 => Value::Int64(r.i64()?),
        4 => Value::Float32(f32::from_le_bytes(r.array()?)),
        5 => Value::Float64(r.f64()?),
        6 => {
            let n = u32::from_le_bytes(r.array()?) as usize;
            let s = std::str::from_utf8(r.take(n)?)
                .map_err(|_| Error::invalid("string value is not UTF-8"))?;
            Value::String(s.to_owned())
        }
        7 => {
            let n = u32::from_le_bytes(r.array()?) as usize;
            Value::Bytes(r.take(n)?.to_vec())
        }
        8 => Value::Timestamp(r.i64()?),
        t => return Err(Error::invalid(format!("unknown value tag {t}"))),
    })
}

/// A bounds-checked reader over stored bytes: never panics, never allocates
/// more than the bytes it has.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8], what: &'static str) -> Self {
        Self { b, pos: 0, what }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|e| *e <= self.b.len()) {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::invalid(format!("{}: truncated bytes", self.what))),
        }
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn opt_i64(&mut self) -> Result<Option<i64>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.i64()?),
        })
    }
    fn opt_f64(&mut self) -> Result<Option<f64>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.f64()?),
        })
    }
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

/// The fingerprint of an aggregation definition stored in each tile: xxHash64
/// of `v1|column|input type|function|window µs|hop µs`.
pub(crate) fn fingerprint(a: &Aggregation, input: &ValueType) -> u64 {
    let s = format!(
        "v1|{}|{input}|{}|{}|{}",
        a.column,
        a.function,
        a.window.map_or(-1, |w| w.as_micros() as i128),
        a.effective_hop().as_micros()
    );
    Hll::hash(s.as_bytes())
}

fn value_at(col: &dyn Array, t: &ValueType, i: usize) -> Option<Value> {
    if col.is_null(i) {
        return None;
    }
    Some(match t {
        ValueType::Bool => Value::Bool(col.as_boolean().value(i)),
        ValueType::Int32 => Value::Int32(col.as_primitive::<Int32Type>().value(i)),
        ValueType::Int64 => Value::Int64(col.as_primitive::<Int64Type>().value(i)),
        ValueType::Float32 => Value::Float32(col.as_primitive::<Float32Type>().value(i)),
        ValueType::Float64 => Value::Float64(col.as_primitive::<Float64Type>().value(i)),
        ValueType::String => Value::String(col.as_string::<i32>().value(i).to_owned()),
        ValueType::Bytes => Value::Bytes(col.as_binary::<i32>().value(i).to_vec()),
        ValueType::Timestamp => {
            Value::Timestamp(col.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        ValueType::List(_) => return None,
    })
}

/// The events of `col` (already in the view's declared type `t`) as `f` needs them.
///
/// # Errors
/// [`Error::InvalidInput`] naming `column` when its Arrow type is not `t`'s.
pub(crate) fn extract(
    col: &ArrayRef,
    column: &str,
    t: &ValueType,
    f: AggFunction,
) -> Result<Vec<Ev>> {
    let expected = t.to_arrow();
    if col.data_type() != &expected {
        return Err(Error::invalid(format!(
            "aggregation input column '{column}' has type {}, expected {expected}",
            col.data_type()
        )));
    }
    let n = col.len();
    let nulls = col.logical_nulls();
    let valid = |i: usize| nulls.as_ref().is_none_or(|b| b.is_valid(i));
    let out = match f {
        AggFunction::Count => (0..n)
            .map(|i| if valid(i) { Ev::Some } else { Ev::Null })
            .collect(),
        AggFunction::First | AggFunction::Last | AggFunction::LastN(_) => (0..n)
            .map(|i| value_at(col.as_ref(), t, i).map_or(Ev::Null, Ev::V))
            .collect(),
        AggFunction::ApproxCountDistinct => {
            let mut buf = Vec::new();
            (0..n)
                .map(|i| match value_at(col.as_ref(), t, i) {
                    Some(v) => {
                        buf.clear();
                        encode_value(&mut buf, &v);
                        Ev::H(Hll::hash(&buf))
                    }
                    None => Ev::Null,
                })
                .collect()
        }
        _ => match col.data_type() {
            DataType::Int32 => {
                let a = col.as_primitive::<Int32Type>();
                (0..n)
                    .map(|i| {
                        if valid(i) {
                            Ev::I(i64::from(a.value(i)))
                        } else {
                            Ev::Null
                        }
                    })
                    .collect()
            }
            DataType::Int64 => {
                let a = col.as_primitive::<Int64Type>();
                (0..n)
                    .map(|i| {
                        if valid(i) {
                            Ev::I(a.value(i))
                        } else {
                            Ev::Null
                        }
                    })
                    .collect()
            }
            DataType::Float32 => {
                let a = col.as_primitive::<Float32Type>();
                (0..n)
                    .map(|i| {
                        if valid(i) {
                            Ev::F(f64::from(a.value(i)))
                        } else {
                            Ev::Null
                        }
                    })
                    .collect()
            }
            DataType::Float64 => {
                let a = col.as_primitive::<Float64Type>();
                (0..n)
                    .map(|i| {
                        if valid(i) {
                            Ev::F(a.value(i))
                        } else {
                            Ev::Null
                        }
                    })
                    .collect()
            }
            other => {
                return Err(Error::invalid(format!(
                    "aggregation input column '{column}': {f} needs a numeric column, got {other}"
                )));
            }
        },
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_states(input: &ValueType) -> Vec<(AggFunction, State)> {
        [
            AggFunction::Count,
            AggFunction::Sum,
            AggFunction::Mean,
            AggFunction::Min,
            AggFunction::Max,
            AggFunction::VarPop,
            AggFunction::StddevPop,
            AggFunction::First,
            AggFunction::Last,
            AggFunction::LastN(3),
            AggFunction::ApproxCountDistinct,
        ]
        .into_iter()
        .map(|f| (f, State::new(f, input)))
        .collect()
    }

    fn ev_for(f: AggFunction, x: i64) -> Ev {
        match f {
            AggFunction::Count => Ev::Some,
            AggFunction::First | AggFunction::Last | AggFunction::LastN(_) => {
                Ev::V(Value::Int64(x))
            }
            AggFunction::ApproxCountDistinct => Ev::H(Hll::hash(&x.to_le_bytes())),
            _ => Ev::I(x),
        }
    }

    #[test]
    fn merge_of_split_folds_equals_one_fold_and_bytes_round_trip() {
        let t = ValueType::Int64;
        let events: Vec<(i64, i64)> = vec![(1, 5), (2, -3), (2, 7), (5, 7), (9, 0), (9, 2)];
        for (f, empty) in all_states(&t) {
            let mut whole = empty.clone();
            for (ts, x) in &events {
                whole.add(&ev_for(f, *x), *ts, 0).unwrap();
            }
            for split in 0..=events.len() {
                let (mut a, mut b) = (empty.clone(), empty.clone());
                for (ts, x) in &events[..split] {
                    a.add(&ev_for(f, *x), *ts, 0).unwrap();
                }
                for (ts, x) in &events[split..] {
                    b.add(&ev_for(f, *x), *ts, 0).unwrap();
                }
                a.merge(&b).unwrap();
                let (x, y) = (a.finish(f), whole.finish(f));
                match (&x, &y) {
                    (Some(Value::Float64(p)), Some(Value::Float64(q))) => {
                        assert!((p - q).abs() <= 1e-9 * p.abs().max(q.abs()), "{f} {p} {q}")
                    }
                    _ => assert_eq!(x, y, "{f} split {split}"),
                }
            }
            let fp = 0xfeed;
            let bytes = whole.encode(fp);
            assert_eq!(
                State::decode(&bytes, fp, &empty, "v:f").unwrap(),
                whole,
                "{f}"
            );
            let e = State::decode(&bytes, fp + 1, &empty, "v:f").unwrap_err();
            assert!(
                matches!(e, Error::AggregationDefinitionMismatch { .. }),
                "{e}"
            );
            for cut in 0..bytes.len() {
                assert!(
                    State::decode(&bytes[..cut], fp, &empty, "v:f").is_err(),
                    "{f} cut {cut}"
                );
            }
        }
        // ties: first keeps the earlier write, last and last_n take the later one
        let mut last = State::new(AggFunction::Last, &t);
        let mut first = State::new(AggFunction::First, &t);
        let mut ln = State::new(AggFunction::LastN(2), &t);
        for x in [1, 2, 3] {
            last.add(&Ev::V(Value::Int64(x)), 10, 0).unwrap();
            first.add(&Ev::V(Value::Int64(x)), 10, 0).unwrap();
            ln.add(&Ev::V(Value::Int64(x)), 10, 0).unwrap();
        }
        assert_eq!(last.finish(AggFunction::Last), Some(Value::Int64(3)));
        assert_eq!(first.finish(AggFunction::First), Some(Value::Int64(1)));
        assert_eq!(
            ln.finish(AggFunction::LastN(2)),
            Some(Value::List(vec![
                Some(Value::Int64(3)),
                Some(Value::Int64(2))
            ]))
        );
    }

    #[test]
    fn int_sum_overflow_is_an_error_and_empty_states_follow_sql() {
        let mut s = State::new(AggFunction::Sum, &ValueType::Int64);
        s.add(&Ev::I(i64::MAX), 0, 0).unwrap();
        assert!(s.add(&Ev::I(1), 0, 0).is_err());
        let mut other = State::new(AggFunction::Sum, &ValueType::Int64);
        other.add(&Ev::I(1), 0, 0).unwrap();
        assert!(s.merge(&other).is_err());
        for (f, empty) in all_states(&ValueType::Float64) {
            let mut st = empty.clone();
            st.add(&Ev::Null, 0, 0).unwrap();
            let want = (f == AggFunction::Count).then_some(Value::Int64(0));
            assert_eq!(st.finish(f), want, "{f}");
        }
    }
}
