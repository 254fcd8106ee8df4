//! The one sketch behind `approx_count_distinct`: HyperLogLog with 2^12
//! registers over xxHash64 (seed 0) of each value's canonical bytes.
//!
//! * **Sparse** while the union holds at most [`SPARSE_MAX`] distinct hashes:
//!   the sorted hashes themselves, so small counts are exact (up to 64-bit
//!   hash collisions).
//! * **Dense** above: 4096 one-byte registers (index = top 12 bits, value =
//!   leading zeros of the rest + 1); the estimate is the classic HLL estimate
//!   with linear counting below 2.5·m.
//!
//! The state is a function of the *set* of hashes inserted, whatever the
//! order of inserts and merges (sparse → dense conversion inserts every held
//! hash; register max is commutative), so the offline and online paths give
//! the same number for the same events.

use crate::error::{Error, Result};

const P: u32 = 12;
const M: usize = 1 << P;
/// Largest number of hashes kept exactly before switching to registers.
pub(crate) const SPARSE_MAX: usize = 256;

/// A HyperLogLog sketch (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hll {
    /// Sorted, distinct hashes.
    Sparse(Vec<u64>),
    /// Registers.
    Dense(Box<[u8]>),
}

impl Default for Hll {
    fn default() -> Self {
        Self::Sparse(Vec::new())
    }
}

fn register(regs: &mut [u8], h: u64) {
    let idx = (h >> (64 - P)) as usize;
    let w = (h << P) | (1 << (P - 1));
    let rho = (w.leading_zeros() + 1) as u8;
    if regs[idx] < rho {
        regs[idx] = rho;
    }
}

impl Hll {
    /// Hash of a value's canonical bytes.
    pub(crate) fn hash(bytes: &[u8]) -> u64 {
        twox_hash::XxHash64::oneshot(0, bytes)
    }

    fn densify(hashes: &[u64]) -> Box<[u8]> {
        let mut regs = vec![0u8; M].into_boxed_slice();
        for h in hashes {
            register(&mut regs, *h);
        }
        regs
    }

    /// Adds a hash.
    pub(crate) fn insert(&mut self, h: u64) {
        match self {
            Self::Sparse(v) => {
                if let Err(pos) = v.binary_search(&h) {
                    v.insert(pos, h);
                    if v.len() > SPARSE_MAX {
                        *self = Self::Dense(Self::densify(v));
                    }
                }
            }
            Self::Dense(regs) => register(regs, h),
        }
    }

    /// Union with `other`.
    pub(crate) fn merge(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Self::Dense(a), Self::Dense(b)) => {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x = (*x).max(*y);
                }
            }
            (Self::Dense(a), Self::Sparse(b)) => {
                for h in b {
                    register(a, *h);
                }
            }
            (Self::Sparse(a), Self::Dense(b)) => {
                let mut regs = b.clone();
                for h in a.iter() {
                    register(&mut regs, *h);
                }
                *self = Self::Dense(regs);
            }
            (Self::Sparse(a), Self::Sparse(b)) => {
                let mut out = Vec::with_capacity(a.len() + b.len());
                let (mut i, mut j) = (0, 0);
                while i < a.len() || j < b.len() {
                    let next = match (a.get(i), b.get(j)) {
                        (Some(x), Some(y)) if x == y => {
                            i += 1;
                            j += 1;
                            *x
                        }
                        (Some(x), Some(y)) if x < y => {
                            i += 1;
                            *x
                        }
                        (_, Some(y)) => {
                            j += 1;
                            *y
                        }
                        (Some(x), None) => {
                            i += 1;
                            *x
                        }
                        (None, None) => break,
                    };
                    out.push(next);
                }
                *self = if out.len() > SPARSE_MAX {
                    Self::Dense(Self::densify(&out))
                } else {
                    Self::Sparse(out)
                };
            }
        }
    }

    /// True when nothing was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Sparse(v) if v.is_empty())
    }

    /// The estimated number of distinct values.
    pub(crate) fn estimate(&self) -> i64 {
        match self {
            Self::Sparse(v) => v.len() as i64,
            Self::Dense(regs) => {
                let m = M as f64;
                let mut sum = 0.0;
                let mut zeros = 0usize;
                for r in regs.iter() {
                    sum += (-f64::from(*r)).exp2();
                    if *r == 0 {
                        zeros += 1;
                    }
                }
                let alpha = 0.7213 / (1.0 + 1.079 / m);
                let e = alpha * m * m / sum;
                let e = if e <= 2.5 * m && zeros > 0 {
                    m * (m / zeros as f64).ln()
                } else {
                    e
                };
                e.round() as i64
            }
        }
    }

    /// Appends the encoding: `u8 0` + `u16 LE n` + n × `u64 LE` (sparse), or
    /// `u8 1` + 4096 register bytes (dense).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sparse(v) => {
                out.push(0);
                out.extend_from_slice(&(v.len() as u16).to_le_bytes());
                for h in v {
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
            Self::Dense(regs) => {
                out.push(1);
                out.extend_from_slice(regs);
            }
        }
    }

    /// Decodes [`Hll::encode`]'s bytes from `r`.
    pub(crate) fn decode(r: &mut super::state::Reader<'_>) -> Result<Self> {
        match r.u8()? {
            0 => {
                let n = u16::from_le_bytes(r.array()?) as usize;
                if n > SPARSE_MAX {
                    return Err(Error::invalid(format!(
                        "{}: sparse sketch of {n} hashes (max {SPARSE_MAX})",
                        r.what
                    )));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(u64::from_le_bytes(r.array()?));
                }
                if v.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::invalid(format!(
                        "{}: sparse sketch hashes are not sorted",
                        r.what
                    )));
                }
                Ok(Self::Sparse(v))
            }
            1 => Ok(Self::Dense(r.take(M)?.to_vec().into_boxed_slice())),
            t => Err(Error::invalid(format!(
                "{}: unknown sketch mode {t}",
                r.what
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_when_small_close_when_large_and_order_independent() {
        let hashes: Vec<u64> = (0..20_000u64)
            .map(|i| Hll::hash(&i.to_le_bytes()))
            .collect();
        let mut small = Hll::default();
        for h in &hashes[..200] {
            small.insert(*h);
            small.insert(*h);
        }
        assert_eq!(small.estimate(), 200);
        let mut big = Hll::default();
        for h in &hashes {
            big.insert(*h);
        }
        let e = big.estimate() as f64;
        assert!((e - 20_000.0).abs() / 20_000.0 < 0.05, "{e}");
        // Merging partitions in any order gives the same state as one pass.
        for split in [1, 150, 256, 257, 5_000] {
            let (mut a, mut b) = (Hll::default(), Hll::default());
            for h in &hashes[..split] {
                a.insert(*h);
            }
            for h in &hashes[split..] {
                b.insert(*h);
            }
            let mut ab = a.clone();
            ab.merge(&b);
            b.merge(&a);
            assert_eq!(ab, big, "split {split}");
            assert_eq!(b, big, "split {split}");
        }
        let mut near = Hll::default();
        for h in &hashes[..300] {
            near.insert(*h);
        }
        let mut one_by_one = Hll::default();
        for h in &hashes[..300] {
            let mut x = Hll::default();
            x.insert(*h);
            one_by_one.merge(&x);
        }
        assert_eq!(near, one_by_one);
    }
}
