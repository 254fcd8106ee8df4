//! Helpers for adapter authors (and the facade): batch validation against a
//! view, the entity-key and payload codecs, and conversion of feature rows
//! into [`OnlineRow`]s. Users of fstore rarely need this module.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::DataType;

use crate::codec::cast_column;
use crate::error::{Error, Result};
use crate::model::{ResolvedView, ValueType};
use crate::online::OnlineRow;
use crate::time::{normalize_timestamp_array, timestamp_micros};

pub use crate::agg::TILE_STATE_VERSION;
pub use crate::codec::cast_checked;
pub use crate::codec::{
    ENTITY_KEY_VERSION, PAYLOAD_VERSION, decode_entity_key, decode_payloads, display_entity_key,
    encode_entity_key, encode_entity_keys, encode_payloads,
};
pub use crate::registry::{parse_registry_document, registry_document};

fn widening_ok(from: &DataType, to: &ValueType) -> bool {
    matches!(
        (from, to),
        (DataType::Int32, ValueType::Int64)
            | (DataType::Float32 | DataType::Int32, ValueType::Float64)
    )
}

/// Validates `batch` against the view and returns it in the canonical schema
/// ([`ResolvedView::arrow_schema`]): join keys cast to their declared types,
/// timestamps normalised to UTC microseconds, features in declared order and
/// types. Columns the view does not know are not carried over.
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for: a missing key, timestamp or
/// feature column; a null key (with the row); null, naive or non-timestamp
/// event/created timestamps ([semantics §3](crate::docs::semantics)); a feature whose type differs from the
/// declared one and is not a lossless widening (int32→int64, int32/float32→float64,
/// any string or timestamp flavour).
pub fn normalize_batch(
    view: &ResolvedView,
    batch: &RecordBatch,
    assume_utc: bool,
) -> Result<RecordBatch> {
    let v = &view.view;
    let get = |name: &str, what: &str| -> Result<&ArrayRef> {
        batch.column_by_name(name).ok_or_else(|| {
            Error::invalid(format!(
                "feature view '{}': {what} column '{name}' is missing from the batch",
                v.name
            ))
        })
    };
    let mut cols: Vec<ArrayRef> = Vec::new();
    for k in &view.join_keys {
        let col = get(&k.name, "join key")?;
        let col = crate::codec::cast_key_column(col, &k.name, &k.value_type)?;
        crate::time::reject_nulls(col.as_ref(), &k.name, "join key")?;
        cols.push(col);
    }
    let ev = get(&v.event_timestamp_column, "event timestamp")?;
    cols.push(normalize_timestamp_array(
        ev.as_ref(),
        &v.event_timestamp_column,
        assume_utc,
        false,
    )?);
    if let Some(c) = &v.created_timestamp_column {
        let col = get(c, "created timestamp")?;
        cols.push(normalize_timestamp_array(
            col.as_ref(),
            c,
            assume_utc,
            false,
        )?);
    }
    for f in &v.features {
        let col = get(&f.name, "feature")?;
        let target = f.value_type.to_arrow();
        let out = if col.data_type() == &target {
            Arc::clone(col)
        } else if f.value_type == ValueType::Timestamp {
            normalize_timestamp_array(col.as_ref(), &f.name, assume_utc, true)?
        } else if ValueType::from_arrow(col.data_type()).as_ref() == Some(&f.value_type)
            || widening_ok(col.data_type(), &f.value_type)
        {
            cast_column(col, &f.name, &target)?
        } else {
            return Err(Error::invalid(format!(
                "feature view '{}': feature column '{}' has type {}, the view declares {}",
                v.name,
                f.name,
                col.data_type(),
                f.value_type
            )));
        };
        cols.push(out);
    }
    Ok(RecordBatch::try_new(view.arrow_schema(), cols)?)
}

/// Converts a batch already in the canonical schema (see [`normalize_batch`])
/// into one [`OnlineRow`] per row.
///
/// # Errors
/// [`Error::InvalidInput`] for a batch that is not canonical.
pub fn to_online_rows(view: &ResolvedView, batch: &RecordBatch) -> Result<Vec<OnlineRow>> {
    let v = &view.view;
    let keys = encode_entity_keys(batch, &view.join_keys)?;
    let ev_col = batch
        .column_by_name(&v.event_timestamp_column)
        .ok_or_else(|| {
            Error::invalid(format!(
                "event timestamp column '{}' missing",
                v.event_timestamp_column
            ))
        })?;
    let ev = timestamp_micros(ev_col.as_ref(), &v.event_timestamp_column, false)?;
    let created = match &v.created_timestamp_column {
        Some(c) => {
            let col = batch
                .column_by_name(c)
                .ok_or_else(|| Error::invalid(format!("created timestamp column '{c}' missing")))?;
            Some(timestamp_micros(col.as_ref(), c, false)?)
        }
        None => None,
    };
    let payloads = encode_payloads(batch, &v.features)?;
    Ok(keys
        .into_iter()
        .zip(payloads)
        .enumerate()
        .map(|(i, (entity_key, payload))| OnlineRow {
            entity_key,
            event_ts: ev[i],
            created_ts: created.as_ref().map(|c| c[i]),
            payload: payload.into(),
        })
        .collect())
}
