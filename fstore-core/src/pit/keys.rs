//! Join-key indexing: maps the spine's distinct join-key tuples to dense `u32` ids
//! and looks feature rows up in that map.
//!
//! Keys are compared by typed value. A single integer key takes a fast path (a
//! dense lookup table when the spine's key range is compact, else a hash map on the
//! `i64` value). Any other key (composite, strings, binary, …) is hashed column by
//! column over the typed values and every hash hit is confirmed with a typed
//! equality check, so `(1, 23)` and `(12, 3)` never collide.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use arrow_array::{Array, ArrayRef, cast::AsArray, types::*};
use arrow_buffer::NullBuffer;
use arrow_ord::ord::{DynComparator, make_comparator};
use arrow_schema::{DataType, SortOptions};

use crate::error::{Error, Result};

/// "No id": null key component, or a key absent from the spine.
pub(super) const NONE: u32 = u32::MAX;

/// murmur3's 64-bit finaliser: a cheap, well-mixed hash of one word.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Hasher for integer keys and pre-computed hashes (std's SipHash is needlessly
/// slow here and there is no untrusted-input DoS concern in a batch join).
#[derive(Default, Clone, Copy)]
pub(super) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fmix64(self.0 ^ hash_bytes(bytes));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = fmix64(self.0 ^ v);
    }
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
}

type MixBuild = BuildHasherDefault<MixHasher>;

const K: u64 = 0x9e37_79b9_7f4a_7c15;

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    fmix64(h)
}

/// Integer key values as `i64` (bit-cast for `UInt64`: only equality matters), or
/// `None` when the type is not an integer type.
fn int_values(a: &dyn Array) -> Option<Cow<'_, [i64]>> {
    fn widen<T: ArrowPrimitiveType>(a: &dyn Array, f: impl Fn(T::Native) -> i64) -> Cow<'_, [i64]> {
        Cow::Owned(
            a.as_primitive::<T>()
                .values()
                .iter()
                .map(|v| f(*v))
                .collect(),
        )
    }
    Some(match a.data_type() {
        DataType::Int64 => Cow::Borrowed(a.as_primitive::<Int64Type>().values()),
        DataType::Int32 => widen::<Int32Type>(a, i64::from),
        DataType::Int16 => widen::<Int16Type>(a, i64::from),
        DataType::Int8 => widen::<Int8Type>(a, i64::from),
        DataType::UInt32 => widen::<UInt32Type>(a, i64::from),
        DataType::UInt16 => widen::<UInt16Type>(a, i64::from),
        DataType::UInt8 => widen::<UInt8Type>(a, i64::from),
        DataType::UInt64 => widen::<UInt64Type>(a, |v| v as i64),
        _ => return None,
    })
}

/// Mixes one key column's typed values into the per-row hashes.
fn hash_column(a: &dyn Array, column: &str, hashes: &mut [u64]) -> Result<()> {
    fn mix(h: &mut u64, v: u64) {
        *h = fmix64(h.rotate_left(29) ^ v);
    }
    if let Some(vals) = int_values(a) {
        for (h, v) in hashes.iter_mut().zip(vals.iter()) {
            mix(h, fmix64(*v as u64));
        }
        return Ok(());
    }
    macro_rules! bytes {
        ($arr:expr) => {{
            let arr = $arr;
            for (i, h) in hashes.iter_mut().enumerate() {
                let v: &[u8] = arr.value(i).as_ref();
                mix(h, hash_bytes(v));
            }
        }};
    }
    match a.data_type() {
        DataType::Utf8 => bytes!(a.as_string::<i32>()),
        DataType::LargeUtf8 => bytes!(a.as_string::<i64>()),
        DataType::Utf8View => bytes!(a.as_string_view()),
        DataType::Binary => bytes!(a.as_binary::<i32>()),
        DataType::LargeBinary => bytes!(a.as_binary::<i64>()),
        DataType::BinaryView => bytes!(a.as_binary_view()),
        DataType::FixedSizeBinary(_) => bytes!(a.as_fixed_size_binary()),
        DataType::Boolean => {
            let b = a.as_boolean();
            for (i, h) in hashes.iter_mut().enumerate() {
                mix(h, u64::from(b.value(i)));
            }
        }
        DataType::Date32 => {
            for (h, v) in hashes
                .iter_mut()
                .zip(a.as_primitive::<Date32Type>().values())
            {
                mix(h, fmix64(*v as u64));
            }
        }
        DataType::Date64 => {
            for (h, v) in hashes
                .iter_mut()
                .zip(a.as_primitive::<Date64Type>().values())
            {
                mix(h, fmix64(*v as u64));
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "join key column '{column}' has unsupported type {other} \
                 (supported: integers, booleans, dates, strings, binary)"
            )));
        }
    }
    Ok(())
}

/// Checks that a key type is supported, so errors surface before any work.
pub(super) fn check_key_type(dt: &DataType, column: &str) -> Result<()> {
    let probe = arrow_array::new_empty_array(dt);
    hash_column(probe.as_ref(), column, &mut [])
}

/// How spine keys are looked up.
#[derive(Debug)]
enum Index {
    /// Single integer key with a compact range: `table[v - min]` is the id.
    Dense { min: i64, max: i64, table: Vec<u32> },
    /// Single integer key, sparse range.
    Hashed(HashMap<i64, u32, MixBuild>),
    /// Two integer key columns.
    Pair(HashMap<(i64, i64), u32, MixBuild>),
    /// Anything else: hash of the typed values → first id of a chain of ids with
    /// that hash (`next`), each confirmed against its representative spine row.
    Generic {
        heads: HashMap<u64, u32, MixBuild>,
        next: Vec<u32>,
        rep: Vec<u32>,
        spine_cols: Vec<ArrayRef>,
    },
}

/// The spine's join keys mapped to dense ids.
#[derive(Debug)]
pub(super) struct KeyIndex {
    index: Index,
    /// One id per spine row; [`NONE`] for rows with a null key component.
    pub(super) ids: Vec<u32>,
    /// Number of distinct non-null spine keys.
    pub(super) n_ids: usize,
}

fn combined_nulls(cols: &[&dyn Array]) -> Option<NullBuffer> {
    NullBuffer::union_many(cols.iter().map(|c| c.nulls()))
}

fn comparators(left: &[&dyn Array], right: &[ArrayRef]) -> Result<Vec<DynComparator>> {
    left.iter()
        .zip(right)
        .map(|(l, r)| Ok(make_comparator(*l, r.as_ref(), SortOptions::default())?))
        .collect()
}

#[inline]
fn all_equal(cmps: &[DynComparator], i: usize, j: usize) -> bool {
    cmps.iter().all(|c| c(i, j).is_eq())
}

impl KeyIndex {
    /// Builds the index over the spine's key columns (`names` only for errors).
    pub(super) fn build(cols: &[ArrayRef], names: &[String]) -> Result<Self> {
        let n = cols.first().map_or(0, |c| c.len());
        let refs: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let nulls = combined_nulls(&refs);
        let valid = |i: usize| nulls.as_ref().is_none_or(|nb| nb.is_valid(i));
        let mut ids = vec![NONE; n];
        let mut n_ids: u32 = 0;

        if let [single] = refs.as_slice()
            && let Some(vals) = int_values(*single)
        {
            let (mut min, mut max) = (i64::MAX, i64::MIN);
            for (i, v) in vals.iter().enumerate() {
                if valid(i) {
                    min = min.min(*v);
                    max = max.max(*v);
                }
            }
            let range = (max as i128) - (min as i128);
            let dense_limit = (4 * n as i128).max(1 << 16);
            if min <= max && range < dense_limit {
                let mut table = vec![NONE; (range + 1) as usize];
                for (i, v) in vals.iter().enumerate() {
                    if valid(i) {
                        let slot = &mut table[(v - min) as usize];
                        if *slot == NONE {
                            *slot = n_ids;
                            n_ids += 1;
                        }
                        ids[i] = *slot;
                    }
                }
                return Ok(Self {
                    index: Index::Dense { min, max, table },
                    ids,
                    n_ids: n_ids as usize,
                });
            }
            let mut map: HashMap<i64, u32, MixBuild> = HashMap::default();
            for (i, v) in vals.iter().enumerate() {
                if valid(i) {
                    ids[i] = *map.entry(*v).or_insert_with(|| {
                        n_ids += 1;
                        n_ids - 1
                    });
                }
            }
            return Ok(Self {
                index: Index::Hashed(map),
                ids,
                n_ids: n_ids as usize,
            });
        }

        if let [a, b] = refs.as_slice()
            && let (Some(a), Some(b)) = (int_values(*a), int_values(*b))
        {
            let mut map: HashMap<(i64, i64), u32, MixBuild> = HashMap::default();
            for (i, pair) in a.iter().zip(b.iter()).enumerate() {
                if valid(i) {
                    ids[i] = *map.entry((*pair.0, *pair.1)).or_insert_with(|| {
                        n_ids += 1;
                        n_ids - 1
                    });
                }
            }
            return Ok(Self {
                index: Index::Pair(map),
                ids,
                n_ids: n_ids as usize,
            });
        }

        let mut hashes = vec![0u64; n];
        for (c, name) in refs.iter().zip(names) {
            hash_column(*c, name, &mut hashes)?;
        }
        let cmps = comparators(&refs, cols)?;
        let mut heads: HashMap<u64, u32, MixBuild> = HashMap::default();
        let mut next: Vec<u32> = Vec::new();
        let mut rep: Vec<u32> = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            if !valid(i) {
                continue;
            }
            let head = heads.get(h).copied().unwrap_or(NONE);
            let mut cur = head;
            while cur != NONE && !all_equal(&cmps, rep[cur as usize] as usize, i) {
                cur = next[cur as usize];
            }
            if cur == NONE {
                cur = n_ids;
                n_ids += 1;
                next.push(head);
                rep.push(i as u32);
                heads.insert(*h, cur);
            }
            ids[i] = cur;
        }
        Ok(Self {
            index: Index::Generic {
                heads,
                next,
                rep,
                spine_cols: cols.to_vec(),
            },
            ids,
            n_ids: n_ids as usize,
        })
    }

    /// The spine key id of every row of a feature batch's key columns ([`NONE`] when
    /// a component is null or the key is not in the spine). Types were checked.
    pub(super) fn lookup(&self, cols: &[&dyn Array], names: &[String]) -> Result<Vec<u32>> {
        let n = cols.first().map_or(0, |c| c.len());
        let nulls = combined_nulls(cols);
        let valid = |i: usize| nulls.as_ref().is_none_or(|nb| nb.is_valid(i));
        match &self.index {
            Index::Dense { min, max, table } => {
                let vals = cols
                    .first()
                    .and_then(|c| int_values(*c))
                    .ok_or_else(|| Error::invalid("join key type changed"))?;
                Ok(vals
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        if v >= *min && v <= *max && valid(i) {
                            table[(v - min) as usize]
                        } else {
                            NONE
                        }
                    })
                    .collect())
            }
            Index::Hashed(map) => {
                let vals = cols
                    .first()
                    .and_then(|c| int_values(*c))
                    .ok_or_else(|| Error::invalid("join key type changed"))?;
                Ok(vals
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if valid(i) {
                            map.get(v).copied().unwrap_or(NONE)
                        } else {
                            NONE
                        }
                    })
                    .collect())
            }
            Index::Pair(map) => {
                let (Some(a), Some(b)) = (
                    cols.first().and_then(|c| int_values(*c)),
                    cols.get(1).and_then(|c| int_values(*c)),
                ) else {
                    return Err(Error::invalid("join key type changed"));
                };
                Ok(a.iter()
                    .zip(b.iter())
                    .enumerate()
                    .map(|(i, (x, y))| {
                        if valid(i) {
                            map.get(&(*x, *y)).copied().unwrap_or(NONE)
                        } else {
                            NONE
                        }
                    })
                    .collect())
            }
            Index::Generic {
                heads,
                next,
                rep,
                spine_cols,
            } => {
                let mut hashes = vec![0u64; n];
                for (c, name) in cols.iter().zip(names) {
                    hash_column(*c, name, &mut hashes)?;
                }
                let cmps = comparators(cols, spine_cols)?;
                Ok(hashes
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        if !valid(i) {
                            return NONE;
                        }
                        let mut cur = heads.get(h).copied().unwrap_or(NONE);
                        while cur != NONE && !all_equal(&cmps, i, rep[cur as usize] as usize) {
                            cur = next[cur as usize];
                        }
                        cur
                    })
                    .collect())
            }
        }
    }
}

impl KeyIndex {
    /// A view with no join keys: every spine row has the same (only) key, id 0.
    pub(super) fn constant(n: usize) -> Self {
        Self {
            index: Index::Dense {
                min: 0,
                max: -1,
                table: Vec::new(),
            },
            ids: vec![0; n],
            n_ids: usize::from(n > 0),
        }
    }
}
