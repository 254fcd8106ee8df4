//! Value types and scalar values.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::timestamp_type;

/// The type of a feature value or join key ([semantics §4](crate::docs::semantics)).
///
/// Serialised as a string: `bool`, `int32`, `int64`, `float32`, `float64`,
/// `string`, `bytes`, `timestamp`, or `list<T>` for a scalar `T`
/// (embeddings are `list<float32>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum ValueType {
    /// Boolean.
    Bool,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// UTF-8 string.
    String,
    /// Opaque bytes.
    Bytes,
    /// An instant, stored as UTC microseconds.
    Timestamp,
    /// A list of a scalar type.
    List(Box<Self>),
}

impl ValueType {
    /// A list of `inner`.
    pub fn list(inner: Self) -> Self {
        Self::List(Box::new(inner))
    }

    /// The Arrow type fstore uses for this value type (timestamps are
    /// `Timestamp(Microsecond, "UTC")`, lists are `List<item>`).
    pub fn to_arrow(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::String => DataType::Utf8,
            Self::Bytes => DataType::Binary,
            Self::Timestamp => timestamp_type(),
            Self::List(inner) => {
                DataType::List(Arc::new(Field::new("item", inner.to_arrow(), true)))
            }
        }
    }

    /// The value type of an Arrow type, if fstore supports it. Any timestamp unit
    /// or zone maps to [`ValueType::Timestamp`]; `LargeUtf8`/`Utf8View` map to string.
    pub fn from_arrow(dt: &DataType) -> Option<Self> {
        Some(match dt {
            DataType::Boolean => Self::Bool,
            DataType::Int32 => Self::Int32,
            DataType::Int64 => Self::Int64,
            DataType::Float32 => Self::Float32,
            DataType::Float64 => Self::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::String,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Self::Bytes,
            DataType::Timestamp(_, _) => Self::Timestamp,
            DataType::List(f) | DataType::LargeList(f) => {
                let inner = Self::from_arrow(f.data_type())?;
                if inner.is_list() {
                    return None;
                }
                Self::list(inner)
            }
            _ => return None,
        })
    }

    /// True for `list<…>`.
    pub fn is_list(&self) -> bool {
        matches!(self, Self::List(_))
    }

    /// True for the types a join key may have: int32, int64, string, bytes.
    pub fn is_key_type(&self) -> bool {
        matches!(self, Self::Int32 | Self::Int64 | Self::String | Self::Bytes)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::Int32 => f.write_str("int32"),
            Self::Int64 => f.write_str("int64"),
            Self::Float32 => f.write_str("float32"),
            Self::Float64 => f.write_str("float64"),
            Self::String => f.write_str("string"),
            Self::Bytes => f.write_str("bytes"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::List(inner) => write!(f, "list<{inner}>"),
        }
    }
}

impl FromStr for ValueType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        Ok(match s {
            "bool" => Self::Bool,
            "int32" => Self::Int32,
            "int64" => Self::Int64,
            "float32" => Self::Float32,
            "float64" => Self::Float64,
            "string" => Self::String,
            "bytes" => Self::Bytes,
            "timestamp" => Self::Timestamp,
            _ => {
                if let Some(inner) = s.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
                    let inner: Self = inner.parse()?;
                    if inner.is_list() {
                        return Err(Error::invalid(format!(
                            "value type '{s}': nested lists are not supported"
                        )));
                    }
                    Self::list(inner)
                } else {
                    return Err(Error::invalid(format!("unknown value type '{s}'")));
                }
            }
        })
    }
}

impl TryFrom<String> for ValueType {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ValueType> for String {
    fn from(v: ValueType) -> Self {
        v.to_string()
    }
}

/// A single typed value: a feature default, or a join-key value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Value {
    /// Boolean.
    Bool(bool),
    /// 32-bit integer.
    Int32(i32),
    /// 64-bit integer.
    Int64(i64),
    /// 32-bit float.
    Float32(f32),
    /// 64-bit float.
    Float64(f64),
    /// String.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Instant as UTC microseconds since the epoch.
    Timestamp(i64),
    /// List of values of one scalar type (`None` = null element).
    List(Vec<Option<Self>>),
}

impl Value {
    /// True when this value can be stored in a column of type `t`.
    pub fn matches(&self, t: &ValueType) -> bool {
        match (self, t) {
            (Self::Bool(_), ValueType::Bool)
            | (Self::Int32(_), ValueType::Int32)
            | (Self::Int64(_), ValueType::Int64)
            | (Self::Float32(_), ValueType::Float32)
            | (Self::Float64(_), ValueType::Float64)
            | (Self::String(_), ValueType::String)
            | (Self::Bytes(_), ValueType::Bytes)
            | (Self::Timestamp(_), ValueType::Timestamp) => true,
            (Self::List(items), ValueType::List(inner)) => items
                .iter()
                .all(|i| i.as_ref().is_none_or(|v| v.matches(inner))),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_type_round_trips_through_string_and_arrow() {
        for t in [
            ValueType::Bool,
            ValueType::Int32,
            ValueType::Int64,
            ValueType::Float32,
            ValueType::Float64,
            ValueType::String,
            ValueType::Bytes,
            ValueType::Timestamp,
            ValueType::list(ValueType::Float32),
            ValueType::list(ValueType::String),
        ] {
            assert_eq!(t.to_string().parse::<ValueType>().unwrap(), t);
            assert_eq!(ValueType::from_arrow(&t.to_arrow()).unwrap(), t);
        }
        assert!("list<list<int32>>".parse::<ValueType>().is_err());
        assert!(
            "decimal"
                .parse::<ValueType>()
                .unwrap_err()
                .to_string()
                .contains("decimal")
        );
    }
}
