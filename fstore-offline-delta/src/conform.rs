//! Type conformance: view names as directories, and columns read back from
//! Parquet cast to the canonical types (Delta round-trips some types loosely).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use crate::config::BACKEND;

type CoreResult<T> = fstore_core::Result<T>;

/// Validates a view name for use as a directory under the root.
pub(crate) fn check_view_name(name: &str) -> CoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.starts_with("_fstore")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(fstore_core::Error::invalid(format!(
            "{BACKEND}: feature view name '{name}' cannot name a Delta table directory \
             (use ASCII letters, digits, '_', '-', '.'; not starting with '.' or '_fstore')"
        )))
    }
}

/// Compares types the way Delta round-trips them (list item names and
/// timestamp zone spellings may differ).
pub(crate) fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (
            DataType::List(x) | DataType::LargeList(x),
            DataType::List(y) | DataType::LargeList(y),
        ) => same_type(x.data_type(), y.data_type()),
        (DataType::Timestamp(u1, _), DataType::Timestamp(u2, _)) => u1 == u2,
        (
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
        ) => true,
        (
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView,
        ) => true,
        _ => a == b,
    }
}

/// Casts a column read from `source` (a data file, or the batch being written)
/// to its canonical type. Checked: a value that does not fit is an error
/// naming the source, the column and the row — never a silent null (Arrow's
/// default cast), which would serve and train on a value that was never there.
pub(crate) fn conform(
    col: &ArrayRef,
    target: &DataType,
    name: &str,
    source: impl FnOnce() -> String,
) -> CoreResult<ArrayRef> {
    if col.data_type() == target {
        return Ok(Arc::clone(col));
    }
    fstore_core::adapter::cast_checked(col, target, name, &format!("{BACKEND}: {}", source()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_do_not_fit_name_file_column_and_row() {
        let col: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![
            Some(1),
            None,
            Some(1 << 40),
        ]));
        let err = conform(&col, &DataType::Int32, "trips", || {
            "file 'part-1.parquet'".into()
        })
        .unwrap_err();
        let m = err.to_string();
        assert!(
            matches!(err, fstore_core::Error::InvalidInput(_))
                && m.contains("part-1.parquet")
                && m.contains("'trips'")
                && m.contains("row 2"),
            "{m}"
        );
        // Values that fit still convert; nulls stay null.
        let ok = conform(&col.slice(0, 2), &DataType::Int32, "trips", String::new).unwrap();
        assert_eq!((ok.len(), ok.is_null(1)), (2, true));
    }

    #[test]
    fn view_names_are_checked() {
        for ok in ["driver_stats", "v-1.2", "A"] {
            check_view_name(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", ".hidden", "_fstore_registry", "spa ce"] {
            let e = check_view_name(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }
}
