//! Time rules ([semantics §3](crate::docs::semantics)): every timestamp is an instant, normalised to UTC
//! microseconds at the boundary; naive timestamps are rejected unless the caller
//! opts in; null timestamps are errors that name the column, the count and the
//! first row.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, TimestampMicrosecondArray, cast::AsArray, types::*};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// The timezone string fstore writes on every timestamp column it produces.
pub const UTC: &str = "UTC";

/// The Arrow type fstore normalises every timestamp to.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// Microseconds since the Unix epoch of an instant.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The instant at `micros` microseconds since the Unix epoch (saturating at chrono's range).
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// Duration in microseconds, saturating.
pub fn duration_micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Checks that `dt` is a timestamp type fstore accepts for `column`.
///
/// # Errors
/// [`Error::InvalidInput`] naming the column when the type is not a timestamp, or
/// is a naive timestamp (`Timestamp(_, None)`) and `assume_utc` is false.
pub fn check_timestamp_type(dt: &DataType, column: &str, assume_utc: bool) -> Result<TimeUnit> {
    match dt {
        DataType::Timestamp(unit, Some(_)) => Ok(*unit),
        DataType::Timestamp(unit, None) if assume_utc => Ok(*unit),
        DataType::Timestamp(_, None) => Err(Error::invalid(format!(
            "column '{column}' is a naive timestamp ({dt}) with no time zone; \
             fstore refuses to guess the zone. Give it a zone, or opt in with assume_utc"
        ))),
        other => Err(Error::invalid(format!(
            "column '{column}' must be a timestamp with a time zone, found {other}"
        ))),
    }
}

fn to_micros_unit(v: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v.div_euclid(1_000),
    }
}

/// Errors if `array` has nulls, naming the column, the null count and the first null row.
pub fn reject_nulls(array: &dyn Array, column: &str, what: &str) -> Result<()> {
    let nulls = array.null_count();
    if nulls == 0 {
        return Ok(());
    }
    let first = (0..array.len()).find(|i| array.is_null(*i)).unwrap_or(0);
    Err(Error::invalid(format!(
        "{what} column '{column}' has {nulls} null value(s), first at row {first}; \
         rows are never dropped silently"
    )))
}

/// Returns the timestamps of `array` as UTC microseconds, one per row.
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for a non-timestamp or naive type
/// (see [`check_timestamp_type`]) or for any null (with the count and first row).
pub fn timestamp_micros(array: &dyn Array, column: &str, assume_utc: bool) -> Result<Vec<i64>> {
    let unit = check_timestamp_type(array.data_type(), column, assume_utc)?;
    reject_nulls(array, column, "timestamp")?;
    Ok(raw_values(array, unit)
        .iter()
        .map(|v| to_micros_unit(*v, unit))
        .collect())
}

fn raw_values(array: &dyn Array, unit: TimeUnit) -> &[i64] {
    match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
    }
}

/// Normalises a timestamp column to `Timestamp(Microsecond, "UTC")`.
///
/// With `allow_nulls = false`, nulls are an error (event/created timestamps);
/// with `true` they are kept (timestamp-typed feature values).
///
/// # Errors
/// As [`timestamp_micros`].
pub fn normalize_timestamp_array(
    array: &dyn Array,
    column: &str,
    assume_utc: bool,
    allow_nulls: bool,
) -> Result<ArrayRef> {
    let unit = check_timestamp_type(array.data_type(), column, assume_utc)?;
    if !allow_nulls {
        reject_nulls(array, column, "timestamp")?;
    }
    if array.data_type() == &timestamp_type() {
        return Ok(arrow_array::make_array(array.to_data()));
    }
    let values: Vec<i64> = raw_values(array, unit)
        .iter()
        .map(|v| to_micros_unit(*v, unit))
        .collect();
    let out =
        TimestampMicrosecondArray::new(values.into(), array.nulls().cloned()).with_timezone(UTC);
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{TimestampNanosecondArray, TimestampSecondArray};

    #[test]
    fn naive_is_rejected_with_column_name() {
        let a = TimestampSecondArray::from(vec![1, 2]);
        let err = timestamp_micros(&a, "event_ts", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("event_ts") && err.contains("naive"), "{err}");
        assert_eq!(
            timestamp_micros(&a, "event_ts", true).unwrap(),
            vec![1_000_000, 2_000_000]
        );
    }

    #[test]
    fn nulls_name_count_and_first_row() {
        let a = TimestampSecondArray::from(vec![Some(1), None, Some(3), None]).with_timezone("UTC");
        let err = timestamp_micros(&a, "ts", false).unwrap_err().to_string();
        assert!(
            err.contains("'ts'") && err.contains("2 null") && err.contains("row 1"),
            "{err}"
        );
    }

    #[test]
    fn any_zone_and_unit_is_normalised_to_utc_micros() {
        let a = TimestampNanosecondArray::from(vec![-1_500, 2_999]).with_timezone("+05:00");
        assert_eq!(timestamp_micros(&a, "t", false).unwrap(), vec![-2, 2]);
        let n = normalize_timestamp_array(&a, "t", false, false).unwrap();
        assert_eq!(n.data_type(), &timestamp_type());
    }
}
