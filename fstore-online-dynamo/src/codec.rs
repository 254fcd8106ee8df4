//! The item layout (see the crate docs, "Item layout") and its limits.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use fstore_core::adapter::display_entity_key;
use fstore_core::{Error, OnlineRow, Result};

/// A DynamoDB item or key.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Partition key (B): core's entity-key bytes.
pub(crate) const PK: &str = "pk";
/// Sort key (S): the feature view name.
pub(crate) const SK: &str = "sk";
/// Encoded feature values (B).
pub(crate) const PAYLOAD: &str = "payload";
/// Event time, UTC microseconds (N).
pub(crate) const EVENT_TS: &str = "event_ts";
/// Created time, UTC microseconds (N); absent = no created time.
pub(crate) const CREATED_TS: &str = "created_ts";
/// DynamoDB TTL attribute: epoch seconds (N) = ceil(event time + view ttl).
pub(crate) const EXPIRES_AT: &str = "expires_at";

/// DynamoDB's item size limit.
pub(crate) const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's partition key size limit.
pub(crate) const MAX_PK_BYTES: usize = 2048;
/// DynamoDB's sort key size limit.
pub(crate) const MAX_SK_BYTES: usize = 1024;
/// BatchGetItem's key limit.
pub(crate) const MAX_BATCH_GET: usize = 100;
/// BatchWriteItem's request limit.
pub(crate) const MAX_BATCH_WRITE: usize = 25;

/// The primary key of (entity, view).
pub(crate) fn key(entity_key: &[u8], view: &str) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::B(Blob::new(entity_key))),
        (SK.to_owned(), AttributeValue::S(view.to_owned())),
    ])
}

/// The DynamoDB TTL value for a row: the first whole second at or after
/// `event_ts + ttl`. Rounding up means DynamoDB never deletes a row that core
/// would still serve (core calls a row expired when `event_ts < now - ttl`).
/// `None` (no expiry attribute) for views without ttl or out-of-range sums.
pub(crate) fn expiry_secs(event_ts: i64, ttl: Option<Duration>) -> Option<i64> {
    let ttl = i64::try_from(ttl?.as_micros()).ok()?;
    let end = event_ts.checked_add(ttl)?;
    let secs = end.div_euclid(1_000_000);
    Some(if end.rem_euclid(1_000_000) == 0 {
        secs
    } else {
        secs + 1
    })
}

/// DynamoDB's size of a number attribute value, rounded up (the documented
/// size is about one byte per two significant digits plus one; we count one
/// byte per character plus one).
fn number_size(n: i64) -> usize {
    n.to_string().len() + 1
}

/// An upper bound of the stored size of the item for `row` (attribute names
/// count, as in DynamoDB's own accounting).
pub(crate) fn item_size(row: &OnlineRow, view: &str, expiry: Option<i64>) -> usize {
    let mut n = PK.len() + row.entity_key.len() + SK.len() + view.len();
    n += PAYLOAD.len() + row.payload.len();
    n += EVENT_TS.len() + number_size(row.event_ts);
    if let Some(c) = row.created_ts {
        n += CREATED_TS.len() + number_size(c);
    }
    if let Some(x) = expiry {
        n += EXPIRES_AT.len() + number_size(x);
    }
    n
}

/// Rejects a view name DynamoDB cannot store as a sort key.
pub(crate) fn check_view_name(view: &str) -> Result<()> {
    if view.is_empty() {
        return Err(Error::invalid("feature view name is empty"));
    }
    if view.len() > MAX_SK_BYTES {
        return Err(Error::invalid(format!(
            "feature view name '{view}' is {} bytes; DynamoDB sort keys hold at most {MAX_SK_BYTES}",
            view.len()
        )));
    }
    Ok(())
}

/// Rejects an entity key DynamoDB cannot store as a partition key.
pub(crate) fn check_entity_key(entity_key: &[u8], view: &str) -> Result<()> {
    if entity_key.is_empty() {
        return Err(Error::invalid(format!(
            "feature view '{view}': empty entity key"
        )));
    }
    if entity_key.len() > MAX_PK_BYTES {
        return Err(Error::invalid(format!(
            "feature view '{view}', entity {}: the encoded entity key is {} bytes; DynamoDB partition keys hold at most {MAX_PK_BYTES}",
            display_entity_key(entity_key),
            entity_key.len()
        )));
    }
    Ok(())
}

/// Rejects a row whose item would exceed DynamoDB's limits, naming entity and view.
pub(crate) fn check_row(row: &OnlineRow, view: &str, expiry: Option<i64>) -> Result<()> {
    check_entity_key(&row.entity_key, view)?;
    let size = item_size(row, view, expiry);
    if size > MAX_ITEM_BYTES {
        return Err(Error::invalid(format!(
            "feature view '{view}', entity {}: the item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte item limit (payload {} bytes)",
            display_entity_key(&row.entity_key),
            row.payload.len()
        )));
    }
    Ok(())
}

/// The item stored for `row` of `view`.
pub(crate) fn to_item(row: &OnlineRow, view: &str, expiry: Option<i64>) -> Item {
    let mut item = key(&row.entity_key, view);
    item.insert(
        PAYLOAD.to_owned(),
        AttributeValue::B(Blob::new(&row.payload[..])),
    );
    item.insert(
        EVENT_TS.to_owned(),
        AttributeValue::N(row.event_ts.to_string()),
    );
    if let Some(c) = row.created_ts {
        item.insert(CREATED_TS.to_owned(), AttributeValue::N(c.to_string()));
    }
    if let Some(x) = expiry {
        item.insert(EXPIRES_AT.to_owned(), AttributeValue::N(x.to_string()));
    }
    item
}

fn number(item: &Item, name: &str) -> std::result::Result<Option<i64>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(s)) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|e| format!("attribute '{name}' = {s:?} is not a 64-bit integer: {e}")),
        Some(other) => Err(format!("attribute '{name}' is not a number: {other:?}")),
    }
}

/// The stored version `(event_ts, created_ts or i64::MIN)` of an item, as in
/// [`OnlineRow::version`].
pub(crate) fn version(item: &Item) -> std::result::Result<(i64, i64), String> {
    let ev = number(item, EVENT_TS)?.ok_or_else(|| format!("attribute '{EVENT_TS}' is missing"))?;
    Ok((ev, number(item, CREATED_TS)?.unwrap_or(i64::MIN)))
}

/// Decodes a stored item into (view, row); the payload's buffer moves into
/// the row (no copy).
pub(crate) fn from_item(mut item: Item) -> std::result::Result<(String, OnlineRow), String> {
    let entity_key = match item.get(PK) {
        Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
        other => return Err(format!("attribute '{PK}' is not binary: {other:?}")),
    };
    let view = match item.get(SK) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => return Err(format!("attribute '{SK}' is not a string: {other:?}")),
    };
    let event_ts =
        number(&item, EVENT_TS)?.ok_or_else(|| format!("attribute '{EVENT_TS}' is missing"))?;
    let created_ts = number(&item, CREATED_TS)?;
    let payload = match item.remove(PAYLOAD) {
        Some(AttributeValue::B(b)) => b.into_inner(),
        other => return Err(format!("attribute '{PAYLOAD}' is not binary: {other:?}")),
    };
    Ok((
        view,
        OnlineRow {
            entity_key,
            event_ts,
            created_ts,
            payload: payload.into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: usize) -> OnlineRow {
        OnlineRow {
            entity_key: vec![1, 2, 3],
            event_ts: 1_700_000_000_000_000,
            created_ts: Some(-5),
            payload: vec![7; payload].into(),
        }
    }

    #[test]
    fn items_roundtrip() {
        let r = row(10);
        let item = to_item(&r, "v", Some(3));
        let (view, back) = from_item(item.clone()).unwrap();
        assert_eq!(view, "v");
        assert_eq!(back, r);
        assert_eq!(version(&item).unwrap(), r.version());
        let none = OnlineRow {
            created_ts: None,
            ..r
        };
        assert_eq!(version(&to_item(&none, "v", None)).unwrap(), none.version());
    }

    #[test]
    fn expiry_rounds_up_and_never_before_core() {
        let s = Some(Duration::from_secs(10));
        assert_eq!(expiry_secs(1_000_000, s), Some(11));
        assert_eq!(expiry_secs(1_000_001, s), Some(12));
        assert_eq!(expiry_secs(-1, s), Some(10));
        assert_eq!(expiry_secs(5, None), None);
        assert_eq!(expiry_secs(i64::MAX, s), None);
        for ev in [-3_000_001_i64, -1, 0, 1, 999_999, 1_234_567_891] {
            let x = expiry_secs(ev, Some(Duration::from_millis(1500))).unwrap();
            assert!(x * 1_000_000 >= ev + 1_500_000, "{ev}");
            assert!(x * 1_000_000 < ev + 1_500_000 + 1_000_000, "{ev}");
        }
    }

    #[test]
    fn oversized_items_name_entity_and_view() {
        assert!(check_row(&row(1000), "v", None).is_ok());
        let err = check_row(&row(MAX_ITEM_BYTES), "my_view", Some(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("my_view") && err.contains("entity"), "{err}");
        assert!(check_view_name("").is_err());
        assert!(check_view_name(&"x".repeat(MAX_SK_BYTES + 1)).is_err());
        assert!(check_entity_key(&[], "v").is_err());
        assert!(check_entity_key(&vec![1; MAX_PK_BYTES + 1], "v").is_err());
    }

    #[test]
    fn malformed_items_are_errors() {
        let mut item = to_item(&row(1), "v", None);
        item.insert(EVENT_TS.into(), AttributeValue::N("1.5".into()));
        assert!(from_item(item.clone()).is_err());
        item.insert(EVENT_TS.into(), AttributeValue::S("1".into()));
        assert!(version(&item).is_err());
        item.remove(PK);
        assert!(from_item(item.clone()).is_err());
    }
}

#[cfg(test)]
mod decode_props {
    use super::*;

    /// Item 2: stored attributes of any bytes (binary attributes as given,
    /// string and number attributes as their lossy UTF-8) decode to a row or a
    /// named error (the adapter reports it naming the key), never a panic.
    #[test]
    fn stored_items_never_panic() {
        let seeds = vec![b"1700000000000000".to_vec(), b"-1".to_vec(), vec![1, 0, 0]];
        fstore_core::testkit::decoder_never_panics(
            "dynamo item",
            &seeds,
            fstore_core::testkit::DECODER_CASES,
            |b| {
                let text = String::from_utf8_lossy(b).into_owned();
                let mut item = Item::new();
                item.insert(PK.to_owned(), AttributeValue::B(b.to_vec().into()));
                item.insert(SK.to_owned(), AttributeValue::S(text.clone()));
                item.insert(PAYLOAD.to_owned(), AttributeValue::B(b.to_vec().into()));
                item.insert(EVENT_TS.to_owned(), AttributeValue::N(text.clone()));
                if b.len() % 2 == 0 {
                    item.insert(CREATED_TS.to_owned(), AttributeValue::N(text));
                }
                let _ = version(&item);
                match from_item(item) {
                    Ok((_, row)) => {
                        let _ = fstore_core::adapter::decode_payloads(
                            &[Some(&row.payload)],
                            &[fstore_core::FeatureField::new(
                                "x",
                                fstore_core::ValueType::Int64,
                            )],
                        );
                        Ok(())
                    }
                    Err(m) => Err(fstore_core::Error::invalid(m)),
                }
            },
        );
    }
}
