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

pub(crate) fn conform(col: &ArrayRef, target: &DataType, name: &str) -> CoreResult<ArrayRef> {
    if col.data_type() == target {
        return Ok(Arc::clone(col));
    }
    arrow_cast::cast(col.as_ref(), target).map_err(|e| {
        fstore_core::Error::backend(
            BACKEND,
            format!(
                "column '{name}': cannot read {} as {target}",
                col.data_type()
            ),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
