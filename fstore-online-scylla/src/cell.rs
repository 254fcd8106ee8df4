//! One cell holding the version and the payload of a row.
//!
//! Cassandra and ScyllaDB settle two writes of a partition with **equal**
//! write timestamps cell by cell, keeping the greater *value* of each cell.
//! With the version in its own columns and the payload in another, two
//! writers that plan the same timestamp could leave the payload of one and the
//! version of the other (a torn row). fstore therefore stores the row in one
//! `payload` cell:
//!
//! ```text
//! u8   0xF5 (marks this layout; core payloads start with their version, 1)
//! u64  event_ts  big-endian with the sign bit flipped (sorts like the i64)
//! u64  created_ts (or i64::MIN when the view has none), same encoding
//! u8   1 when created_ts is set, 0 when not
//! ...  the core payload (fstore_core::adapter::encode_payloads)
//! ```
//!
//! A tie is then decided once, for the whole row, by comparing these bytes:
//! the greater `(event_ts, created_ts)` wins — newest-wins, also between
//! racers — and equal versions resolve to the same bytes on every replica.
//! The `event_ts`/`created_ts` columns are still written (for tools and older
//! readers) but never trusted when the cell carries the version.

/// First byte of a version-carrying cell.
pub(crate) const MARKER: u8 = 0xF5;
const HEADER: usize = 1 + 8 + 8 + 1;

fn ord(x: i64) -> [u8; 8] {
    ((x as u64) ^ (1 << 63)).to_be_bytes()
}

fn unord(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// The cell for a row.
pub(crate) fn encode(event_ts: i64, created_ts: Option<i64>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(MARKER);
    out.extend_from_slice(&ord(event_ts));
    out.extend_from_slice(&ord(created_ts.unwrap_or(i64::MIN)));
    out.push(u8::from(created_ts.is_some()));
    out.extend_from_slice(payload);
    out
}

/// What a cell holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cell<'a> {
    /// Version and payload from the cell.
    Versioned {
        event_ts: i64,
        created_ts: Option<i64>,
        payload: &'a [u8],
    },
    /// A cell written before this layout: the payload only (the version is
    /// in the row's columns).
    Legacy(&'a [u8]),
}

/// Splits a stored cell.
///
/// # Errors
/// A message for a cell that starts with the marker but is malformed.
pub(crate) fn decode(cell: &[u8]) -> Result<Cell<'_>, String> {
    if cell.first() != Some(&MARKER) {
        return Ok(Cell::Legacy(cell));
    }
    if cell.len() < HEADER {
        return Err(format!(
            "stored row cell is truncated ({} bytes)",
            cell.len()
        ));
    }
    let mut e = [0u8; 8];
    e.copy_from_slice(&cell[1..9]);
    let mut c = [0u8; 8];
    c.copy_from_slice(&cell[9..17]);
    let created = unord(c);
    let created_ts = match cell[17] {
        1 => Some(created),
        0 if created == i64::MIN => None,
        f => return Err(format!("stored row cell has an invalid created flag {f}")),
    };
    Ok(Cell::Versioned {
        event_ts: unord(e),
        created_ts,
        payload: &cell[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(e: i64, c: Option<i64>) -> (i64, i64) {
        (e, c.unwrap_or(i64::MIN))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// The bytes sort like the versions: a tie on the write timestamp goes
        /// to the newer version, for the whole row at once.
        #[test]
        fn cells_sort_like_versions(
            a in (any::<i64>(), proptest::option::of(any::<i64>()), proptest::collection::vec(any::<u8>(), 0..8)),
            b in (any::<i64>(), proptest::option::of(any::<i64>()), proptest::collection::vec(any::<u8>(), 0..8)),
        ) {
            let (ca, cb) = (encode(a.0, a.1, &a.2), encode(b.0, b.1, &b.2));
            let (va, vb) = (version(a.0, a.1), version(b.0, b.1));
            if va < vb {
                prop_assert!(ca < cb);
            } else if va > vb {
                prop_assert!(ca > cb);
            }
            prop_assert_eq!(
                decode(&ca).unwrap(),
                Cell::Versioned { event_ts: a.0, created_ts: a.1, payload: &a.2[..] }
            );
        }
    }

    #[test]
    fn legacy_and_malformed_cells() {
        assert_eq!(decode(&[1, 2, 3]).unwrap(), Cell::Legacy(&[1, 2, 3]));
        assert!(decode(&[MARKER, 0, 0]).is_err());
        let mut c = encode(5, Some(6), b"p");
        c[17] = 7;
        assert!(decode(&c).is_err());
        let mut c = encode(5, Some(6), b"p");
        c[17] = 0;
        assert!(
            decode(&c).is_err(),
            "flag 0 with a created time is malformed"
        );
    }
}
