//! Time rules ([semantics §3](crate::docs::semantics)): every timestamp is an instant, normalised to UTC
//! microseconds at the boundary; naive timestamps are rejected unless the caller
//! opts in; null timestamps are errors that name the column, the count and the
//! first row.
//!
//! Unit conversion is exact or refused: seconds and milliseconds are
//! multiplied with overflow checks (a value beyond what microseconds can hold,
//! about ±292,000 years, is an error naming the column and row, never a
//! saturated instant), and nanoseconds that do not divide evenly are **floored**
//! to the microsecond (towards the past, also for instants before 1970).
//! Flooring is monotone, so `a <= b` in nanoseconds implies `a <= b` in
//! microseconds: a row at or before a spine time stays at or before it.

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

/// `v` in `unit` as microseconds: exact for seconds/milliseconds (`None` on
/// overflow), floored for nanoseconds.
fn to_micros_unit(v: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => v.checked_mul(1_000_000),
        TimeUnit::Millisecond => v.checked_mul(1_000),
        TimeUnit::Microsecond => Some(v),
        TimeUnit::Nanosecond => Some(v.div_euclid(1_000)),
    }
}

/// Converts every value, failing on the first that overflows (naming the
/// column, the row and the value). Null slots (whatever their stored value)
/// are not checked and come out as 0.
fn convert_all(array: &dyn Array, unit: TimeUnit, column: &str) -> Result<Vec<i64>> {
    let raw = raw_values(array, unit);
    let mut out = Vec::with_capacity(raw.len());
    for (row, v) in raw.iter().enumerate() {
        if array.is_null(row) {
            out.push(0);
            continue;
        }
        match to_micros_unit(*v, unit) {
            Some(m) => out.push(m),
            None => {
                let unit_name = match unit {
                    TimeUnit::Second => "seconds",
                    _ => "milliseconds",
                };
                return Err(Error::invalid(format!(
                    "timestamp column '{column}' row {row}: {v} {unit_name} since the epoch \
                     is outside the range of microsecond timestamps (about ±292,000 years)"
                )));
            }
        }
    }
    Ok(out)
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
/// Seconds and milliseconds convert exactly; nanoseconds are floored to the
/// microsecond (see the module docs).
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for a non-timestamp or naive type
/// (see [`check_timestamp_type`]), for any null (with the count and first row),
/// or for a value that overflows microseconds (with the row).
pub fn timestamp_micros(array: &dyn Array, column: &str, assume_utc: bool) -> Result<Vec<i64>> {
    let unit = check_timestamp_type(array.data_type(), column, assume_utc)?;
    reject_nulls(array, column, "timestamp")?;
    convert_all(array, unit, column)
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
/// As [`timestamp_micros`] (overflow is checked on non-null values only).
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
    let values = convert_all(array, unit, column)?;
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

    /// Overflowing seconds/milliseconds are an error naming column and row, not
    /// a saturated instant; the largest exact values still convert.
    #[test]
    fn unit_overflow_is_an_error_naming_column_and_row() {
        use arrow_array::TimestampMillisecondArray;
        let max_s = i64::MAX / 1_000_000;
        let s = TimestampSecondArray::from(vec![Some(0), None, Some(max_s), Some(max_s + 1)])
            .with_timezone("UTC");
        for err in [
            normalize_timestamp_array(&s, "ev", false, true).unwrap_err(),
            timestamp_micros(&s.slice(2, 2), "ev", false).unwrap_err(),
        ] {
            let m = err.to_string();
            assert!(m.contains("'ev'") && m.contains("outside the range"), "{m}");
        }
        assert!(
            normalize_timestamp_array(&s, "ev", false, true)
                .unwrap_err()
                .to_string()
                .contains("row 3")
        );
        assert_eq!(
            timestamp_micros(&s.slice(2, 1), "ev", false).unwrap(),
            vec![max_s * 1_000_000]
        );
        let ms = TimestampMillisecondArray::from(vec![i64::MIN / 1_000 - 1]).with_timezone("UTC");
        assert!(
            timestamp_micros(&ms, "c", false)
                .unwrap_err()
                .to_string()
                .contains("row 0")
        );
        let ms = TimestampMillisecondArray::from(vec![i64::MIN / 1_000]).with_timezone("UTC");
        assert_eq!(
            timestamp_micros(&ms, "c", false).unwrap(),
            vec![i64::MIN / 1_000 * 1_000]
        );
    }

    /// Nanoseconds are floored (documented): monotone, also before 1970.
    #[test]
    fn nanoseconds_are_floored_monotonically() {
        let vals = vec![
            i64::MIN,
            -1_001,
            -1_000,
            -999,
            -1,
            0,
            1,
            999,
            1_000,
            1_999,
            i64::MAX,
        ];
        let a = TimestampNanosecondArray::from(vals.clone()).with_timezone("UTC");
        let got = timestamp_micros(&a, "t", false).unwrap();
        assert_eq!(got[1..10], [-2, -1, -1, -1, 0, 0, 0, 1, 1]);
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
        for (ns, us) in vals.iter().zip(&got) {
            let (ns, us) = (i128::from(*ns), i128::from(*us));
            assert!(us * 1_000 <= ns && ns - us * 1_000 < 1_000, "{ns} -> {us}");
        }
    }
}
