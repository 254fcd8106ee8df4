//! The key layout (documented in the crate docs) and the version encoding the
//! newest-wins script compares.

use fstore_core::{Error, Result};

use crate::config::BACKEND;

/// Length of a stored version: 8 bytes event time + 8 bytes created time,
/// both big-endian with the sign bit flipped (so byte order = numeric order),
/// then 1 byte "created time present".
pub(crate) const VERSION_LEN: usize = 17;

/// Escape byte for the entity key inside the hash tag.
const ESC: u8 = 0x01;

/// `<prefix>:{<entity key, escaped>}`. Inside the braces `}` is written as
/// `0x01 0x02` and `0x01` as `0x01 0x01`, so the hash tag always spans the whole
/// entity key and two different keys never map to the same Redis key.
pub(crate) fn hash_key(prefix: &str, entity_key: &[u8]) -> Vec<u8> {
    // Exact capacity: a full `Vec` becomes a `Bytes` without another allocation.
    let escaped = entity_key
        .iter()
        .filter(|&&b| b == b'}' || b == ESC)
        .count();
    let mut k = Vec::with_capacity(prefix.len() + entity_key.len() + escaped + 3);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(b":{");
    for &b in entity_key {
        match b {
            b'}' => k.extend_from_slice(&[ESC, 0x02]),
            ESC => k.extend_from_slice(&[ESC, ESC]),
            _ => k.push(b),
        }
    }
    k.push(b'}');
    k
}

/// The `SCAN MATCH` pattern of every key of `prefix` (glob characters of the
/// prefix escaped).
pub(crate) fn scan_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str(":{*");
    p
}

/// Hash field holding the version of `view` (`t:<view>`).
pub(crate) fn version_field(view: &str) -> String {
    field("t:", view)
}

/// Hash field holding the payload of `view` (`p:<view>`).
pub(crate) fn payload_field(view: &str) -> String {
    field("p:", view)
}

/// `tag` then `view`, at exact capacity (a full `String` becomes a fred key
/// without another allocation).
fn field(tag: &str, view: &str) -> String {
    let mut f = String::with_capacity(tag.len() + view.len());
    f.push_str(tag);
    f.push_str(view);
    f
}

fn flip(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Encodes `(event_ts, created_ts)` so that byte order equals
/// [`fstore_core::OnlineRow::version`] order on the first 16 bytes (a missing
/// created time compares like `i64::MIN`, exactly as in core).
pub(crate) fn encode_version(event_ts: i64, created_ts: Option<i64>) -> [u8; VERSION_LEN] {
    let mut out = [0u8; VERSION_LEN];
    out[..8].copy_from_slice(&flip(event_ts));
    out[8..16].copy_from_slice(&flip(created_ts.unwrap_or(i64::MIN)));
    out[16] = u8::from(created_ts.is_some());
    out
}

/// Decodes a stored version.
pub(crate) fn decode_version(
    b: &[u8],
    what: impl FnOnce() -> String,
) -> Result<(i64, Option<i64>)> {
    // A corrupt stored value is named like core's payload errors.
    let corrupt = |why: &str| {
        Error::invalid(format!(
            "{BACKEND}: corrupt version field at {}: {why}",
            what()
        ))
    };
    if b.len() != VERSION_LEN {
        return Err(corrupt(&format!(
            "{} bytes, expected {VERSION_LEN}",
            b.len()
        )));
    }
    let mut ev = [0u8; 8];
    ev.copy_from_slice(&b[..8]);
    let mut cr = [0u8; 8];
    cr.copy_from_slice(&b[8..16]);
    let created = match b[16] {
        0 => None,
        1 => Some(unflip(cr)),
        x => return Err(corrupt(&format!("flag byte {x}"))),
    };
    Ok((unflip(ev), created))
}

/// Milliseconds since the epoch at which Redis may drop a row with `event_ts`
/// (µs) of a view with `ttl`, plus `grace`: the first millisecond at which core
/// also calls the row expired, rounded up. `None` when that is past Redis'
/// range (then the key gets no expiry).
pub(crate) fn expire_at_ms(event_ts: i64, ttl_us: i64, grace_us: i64) -> Option<i64> {
    let at_us = event_ts.checked_add(ttl_us)?.checked_add(grace_us)?;
    // ceil(at_us / 1000): Redis deletes a key once now_ms > at_ms, core calls a
    // row expired once now_us > event_ts + ttl.
    let ms = at_us.div_euclid(1_000) + i64::from(at_us.rem_euclid(1_000) != 0);
    // Year 9999: Redis rejects expiries that overflow its internal arithmetic.
    (ms <= 253_402_300_799_999).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fstore_core::OnlineRow;
    use proptest::prelude::*;

    fn row(event_ts: i64, created_ts: Option<i64>) -> OnlineRow {
        OnlineRow {
            entity_key: vec![],
            event_ts,
            created_ts,
            payload: Default::default(),
        }
    }

    fn any_created() -> impl Strategy<Value = Option<i64>> {
        prop_oneof![
            Just(None),
            Just(Some(i64::MIN)),
            Just(Some(i64::MAX)),
            any::<i64>().prop_map(Some)
        ]
    }

    fn any_ts() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0i64),
            Just(-1i64),
            any::<i64>()
        ]
    }

    proptest! {
        /// The script's bytewise `>=` on the first 16 bytes equals `OnlineRow::supersedes`.
        #[test]
        fn byte_order_is_supersedes(a in any_ts(), ac in any_created(), b in any_ts(), bc in any_created()) {
            let (va, vb) = (encode_version(a, ac), encode_version(b, bc));
            prop_assert_eq!(va[..16] >= vb[..16], row(a, ac).supersedes(&row(b, bc)));
            prop_assert_eq!(decode_version(&va, String::new).unwrap(), (a, ac));
        }

        #[test]
        fn keys_are_injective(a in proptest::collection::vec(any::<u8>(), 0..12), b in proptest::collection::vec(any::<u8>(), 0..12)) {
            prop_assert_eq!(hash_key("p", &a) == hash_key("p", &b), a == b);
            let k = hash_key("p", &a);
            // The hash tag is exactly the escaped entity key.
            let open = k.iter().position(|&c| c == b'{').unwrap();
            let close = k[open..].iter().position(|&c| c == b'}').unwrap() + open;
            prop_assert_eq!(close, k.len() - 1);
        }
    }

    #[test]
    fn expiry_rounds_up_and_caps() {
        assert_eq!(expire_at_ms(1_000, 1_000, 0), Some(2));
        assert_eq!(expire_at_ms(1_001, 1_000, 0), Some(3));
        assert_eq!(expire_at_ms(-1_500, 0, 0), Some(-1));
        assert_eq!(expire_at_ms(i64::MAX - 5, 10, 0), None);
        assert_eq!(expire_at_ms(300_000_000_000_000_000, 0, 0), None);
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(scan_pattern("a*b"), "a\\*b:{*");
        assert!(decode_version(&[0; 3], || "k".into()).is_err());
    }
}
