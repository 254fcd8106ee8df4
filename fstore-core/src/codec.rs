//! The two byte formats every online adapter shares, defined once here:
//! the entity key and the feature-row payload. Adapters store these bytes
//! opaquely; parity across backends follows from using one codec.
//!
//! # Entity key, version 1
//!
//! ```text
//! u8  version (= 1)
//! u8  number of join keys
//! per join key, in ascending name order:
//!   u8  name length, name bytes (UTF-8)
//!   u8  type tag: 2 = int32, 3 = int64, 6 = string, 7 = bytes
//!   value: int32 as 4 bytes big-endian, int64 as 8 bytes big-endian,
//!          string/bytes as u32 big-endian length + bytes
//! ```
//! Keys are typed and length-prefixed, so `(1, 23)` and `(12, 3)` never collide,
//! and the same values under different key names are different keys.
//!
//! # Feature-row payload, version 1
//!
//! ```text
//! u8  version (= 1)
//! u16 little-endian number of entries
//! per feature: u8 name length, name bytes, u8 tag, value
//!   tag 0 = null (no value bytes), 1 bool (1 byte), 2 int32 (4 LE), 3 int64 (8 LE),
//!   4 float32 (4 LE), 5 float64 (8 LE), 6 string and 7 bytes (u32 LE length + bytes),
//!   8 timestamp (i64 LE UTC microseconds),
//!   0x40 | t = list of t: u32 LE element count, then per element u8 tag (0 or t) + value
//! ```
//! Entries carry their names, so adding a feature to a view keeps old rows
//! readable (the new feature reads as null) and reads can project any subset.
//!
//! # Aggregation tile state, version 1
//!
//! The third shared format: the intermediate state of one hop tile of an
//! aggregation feature ([`crate::Tile::state`]), versioned and carrying a
//! fingerprint of the feature's definition. Its layout is documented with the
//! engine that writes it, in [`crate::agg`] ("Tile state bytes").

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, ListArray, PrimitiveArray, RecordBatch,
    StringArray,
    cast::AsArray,
    types::{
        ArrowPrimitiveType, Float32Type, Float64Type, Int32Type, Int64Type,
        TimestampMicrosecondType,
    },
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_cast::CastOptions;
use arrow_schema::{DataType, Field};

use crate::error::{Error, Result};
use crate::model::{FeatureField, JoinKey, Value, ValueType};
use crate::time::UTC;

/// Version byte of the entity-key layout.
pub const ENTITY_KEY_VERSION: u8 = 1;
/// Version byte of the feature-row payload layout.
pub const PAYLOAD_VERSION: u8 = 1;

const T_NULL: u8 = 0;
const T_BOOL: u8 = 1;
const T_I32: u8 = 2;
const T_I64: u8 = 3;
const T_F32: u8 = 4;
const T_F64: u8 = 5;
const T_STR: u8 = 6;
const T_BYTES: u8 = 7;
const T_TS: u8 = 8;
const T_LIST: u8 = 0x40;

fn scalar_tag(t: &ValueType) -> u8 {
    match t {
        ValueType::Bool => T_BOOL,
        ValueType::Int32 => T_I32,
        ValueType::Int64 => T_I64,
        ValueType::Float32 => T_F32,
        ValueType::Float64 => T_F64,
        ValueType::String => T_STR,
        ValueType::Bytes => T_BYTES,
        ValueType::Timestamp => T_TS,
        ValueType::List(inner) => T_LIST | scalar_tag(inner),
    }
}

/// Casts `array` (column `column`) to `target`, failing with an error that names
/// the column and both types instead of producing nulls.
pub(crate) fn cast_column(array: &ArrayRef, column: &str, target: &DataType) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(Arc::clone(array));
    }
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, target, &opts).map_err(|e| {
        Error::invalid(format!(
            "column '{column}' has type {} which cannot be converted to the declared type {target}: {e}",
            array.data_type()
        ))
    })
}

/// Casts `array` (column `column` of `source`, e.g. a data file) to `target`
/// without turning any value into null: a value that does not fit is an error
/// naming the source, the column and the first such row. Arrow's default
/// ("safe") cast would silently give null there.
///
/// # Errors
/// [`Error::InvalidInput`] naming source, column, row and both types.
pub fn cast_checked(
    array: &ArrayRef,
    target: &DataType,
    column: &str,
    source: &str,
) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(Arc::clone(array));
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    match arrow_cast::cast_with_options(array, target, &strict) {
        Ok(out) => Ok(out),
        Err(e) => {
            // Find the first row that does not convert (the lenient cast gives
            // null there), so the error can say where the bad value is.
            let lenient = arrow_cast::cast(array, target).ok();
            let row = lenient
                .and_then(|l| (0..array.len()).find(|i| !array.is_null(*i) && l.is_null(*i)));
            let at = row.map_or_else(String::new, |r| format!(" at row {r}"));
            Err(Error::invalid(format!(
                "{source}: column '{column}' has a value{at} that does not fit {target} \
                 (stored as {}): {e}",
                array.data_type()
            )))
        }
    }
}

/// True when every value of `from` converts to `key` exactly and the
/// conversion can be undone: integer widenings (int8/16/32, uint8/16/32 → int64;
/// int8/16, uint8/16 → int32) and other layouts of strings and bytes. Floats,
/// narrowings, uint64 → int64, booleans, timestamps and strings ↔ numbers are
/// not: a float key `1.7` must not serve entity `1` ([semantics §5](crate::docs::semantics)).
pub(crate) fn lossless_key_cast(from: &DataType, key: &ValueType) -> bool {
    use DataType as D;
    let strings = |d: &D| matches!(d, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    let binaries = |d: &D| {
        matches!(
            d,
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
        )
    };
    match (from, key) {
        (
            D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 | D::UInt32 | D::Int64,
            ValueType::Int64,
        )
        | (D::Int8 | D::Int16 | D::UInt8 | D::UInt16 | D::Int32, ValueType::Int32) => true,
        (d, ValueType::String) if strings(d) => true,
        (d, ValueType::Bytes) if binaries(d) => true,
        (D::Dictionary(_, v), ValueType::String) => strings(v),
        (D::Dictionary(_, v), ValueType::Bytes) => binaries(v),
        _ => false,
    }
}

/// Casts a join-key column to its declared key type, accepting only lossless
/// widenings ([`lossless_key_cast`]).
///
/// # Errors
/// [`Error::InvalidInput`] naming the column and both types.
pub(crate) fn cast_key_column(array: &ArrayRef, column: &str, key: &ValueType) -> Result<ArrayRef> {
    let target = key.to_arrow();
    if array.data_type() == &target {
        return Ok(Arc::clone(array));
    }
    if !lossless_key_cast(array.data_type(), key) {
        return Err(Error::invalid(format!(
            "join key column '{column}' has type {}, the entity declares {key} ({target}); \
             keys are only converted by lossless widenings (smaller integers to int32/int64, \
             any string or binary layout)",
            array.data_type()
        )));
    }
    cast_column(array, column, &target)
}

/// Encodes the entity key of every row of `batch` for a view with `join_keys`.
///
/// Key columns are looked up by name and converted to the declared type by
/// lossless widenings only (an `int32` request column for an `int64` key is
/// fine; `1.7` or `"abc"` for an `int64` key is not).
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for a missing column, a type that
/// is not a lossless widening of the key type (naming both types), or a null key
/// (with the row).
pub fn encode_entity_keys(batch: &RecordBatch, join_keys: &[JoinKey]) -> Result<Vec<Vec<u8>>> {
    let mut sorted: Vec<&JoinKey> = join_keys.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::with_capacity(batch.num_rows());
    encode_sorted_keys_into(batch, &sorted, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// [`encode_entity_keys`] for join keys already sorted by name, into `out`
/// (one key per row; the buffers already in `out` are reused) with `cols` as
/// working memory: no allocation once both are large enough.
pub(crate) fn encode_sorted_keys_into<K: std::borrow::Borrow<JoinKey>>(
    batch: &RecordBatch,
    sorted: &[K],
    cols: &mut Vec<ArrayRef>,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    cols.clear();
    for k in sorted {
        let k = k.borrow();
        let col = batch
            .column_by_name(&k.name)
            .ok_or_else(|| Error::invalid(format!("join key column '{}' is missing", k.name)))?;
        let col = cast_key_column(col, &k.name, &k.value_type)?;
        if col.null_count() > 0 {
            let row = (0..col.len()).find(|i| col.is_null(*i)).unwrap_or(0);
            return Err(Error::invalid(format!(
                "join key column '{}' is null at row {row}",
                k.name
            )));
        }
        cols.push(col);
    }
    let n = u8::try_from(sorted.len())
        .map_err(|_| Error::invalid("an entity key has more than 255 join keys"))?;
    let rows = batch.num_rows();
    out.truncate(rows);
    for row in 0..rows {
        if row == out.len() {
            out.push(Vec::with_capacity(16 * sorted.len()));
        }
        let buf = &mut out[row];
        buf.clear();
        buf.push(ENTITY_KEY_VERSION);
        buf.push(n);
        for (k, col) in sorted.iter().zip(cols.iter()) {
            let k = k.borrow();
            push_name(buf, &k.name)?;
            match &k.value_type {
                ValueType::Int32 => {
                    buf.push(T_I32);
                    buf.extend_from_slice(
                        &col.as_primitive::<Int32Type>().value(row).to_be_bytes(),
                    );
                }
                ValueType::Int64 => {
                    buf.push(T_I64);
                    buf.extend_from_slice(
                        &col.as_primitive::<Int64Type>().value(row).to_be_bytes(),
                    );
                }
                ValueType::String => {
                    buf.push(T_STR);
                    push_be_bytes(buf, col.as_string::<i32>().value(row).as_bytes(), &k.name)?;
                }
                ValueType::Bytes => {
                    buf.push(T_BYTES);
                    push_be_bytes(buf, col.as_binary::<i32>().value(row), &k.name)?;
                }
                other => {
                    return Err(Error::invalid(format!(
                        "join key '{}' has type {other}; join keys must be int32, int64, string or bytes",
                        k.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Encodes one entity key from typed values (`(name, value)` pairs in any order).
///
/// # Errors
/// [`Error::InvalidInput`] for a value type that cannot be a key.
pub fn encode_entity_key(values: &[(&str, Value)]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(&str, Value)> = values.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut buf = vec![ENTITY_KEY_VERSION];
    buf.push(
        u8::try_from(sorted.len())
            .map_err(|_| Error::invalid("an entity key has more than 255 join keys"))?,
    );
    for (name, v) in sorted {
        push_name(&mut buf, name)?;
        match v {
            Value::Int32(x) => {
                buf.push(T_I32);
                buf.extend_from_slice(&x.to_be_bytes());
            }
            Value::Int64(x) => {
                buf.push(T_I64);
                buf.extend_from_slice(&x.to_be_bytes());
            }
            Value::String(s) => {
                buf.push(T_STR);
                push_be_bytes(&mut buf, s.as_bytes(), name)?;
            }
            Value::Bytes(b) => {
                buf.push(T_BYTES);
                push_be_bytes(&mut buf, b, name)?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "join key '{name}': {other:?} cannot be a key value"
                )));
            }
        }
    }
    Ok(buf)
}

/// Decodes an entity key into `(name, value)` pairs (ascending name order).
///
/// # Errors
/// [`Error::InvalidInput`] for bytes that are not a version-1 entity key.
pub fn decode_entity_key(bytes: &[u8]) -> Result<Vec<(String, Value)>> {
    let mut r = Reader::new(bytes, "entity key");
    if r.u8()? != ENTITY_KEY_VERSION {
        return Err(Error::invalid("entity key: unknown version"));
    }
    let n = r.u8()?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.name()?.to_owned();
        let v = match r.u8()? {
            T_I32 => Value::Int32(i32::from_be_bytes(r.array()?)),
            T_I64 => Value::Int64(i64::from_be_bytes(r.array()?)),
            T_STR => {
                let len = u32::from_be_bytes(r.array()?) as usize;
                Value::String(
                    String::from_utf8(r.take(len)?.to_vec())
                        .map_err(|_| Error::invalid("entity key: string is not UTF-8"))?,
                )
            }
            T_BYTES => {
                let len = u32::from_be_bytes(r.array()?) as usize;
                Value::Bytes(r.take(len)?.to_vec())
            }
            t => return Err(Error::invalid(format!("entity key: unknown tag {t}"))),
        };
        out.push((name, v));
    }
    if !r.done() {
        // One key, one encoding: trailing bytes would make two byte strings
        // stand for the same key.
        return Err(Error::invalid("entity key: trailing bytes"));
    }
    Ok(out)
}

/// A readable rendering of an entity key for error messages (`driver_id=1001`).
pub fn display_entity_key(bytes: &[u8]) -> String {
    match decode_entity_key(bytes) {
        Ok(pairs) => pairs
            .iter()
            .map(|(k, v)| match v {
                Value::Int32(x) => format!("{k}={x}"),
                Value::Int64(x) => format!("{k}={x}"),
                Value::String(s) => format!("{k}={s:?}"),
                other => format!("{k}={other:?}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => format!("<{} undecodable bytes>", bytes.len()),
    }
}

fn push_name(buf: &mut Vec<u8>, name: &str) -> Result<()> {
    let len = u8::try_from(name.len())
        .map_err(|_| Error::invalid(format!("name '{name}' is longer than 255 bytes")))?;
    buf.push(len);
    buf.extend_from_slice(name.as_bytes());
    Ok(())
}

fn push_be_bytes(buf: &mut Vec<u8>, b: &[u8], what: &str) -> Result<()> {
    let len = u32::try_from(b.len())
        .map_err(|_| Error::invalid(format!("value of '{what}' is larger than 4 GiB")))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(b);
    Ok(())
}

fn push_le_bytes(buf: &mut Vec<u8>, b: &[u8], what: &str) -> Result<()> {
    let len = u32::try_from(b.len())
        .map_err(|_| Error::invalid(format!("value of '{what}' is larger than 4 GiB")))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(b);
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Self { b, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::invalid(format!("{}: truncated bytes", self.what))),
        }
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// A name's bytes, not yet checked to be UTF-8 (see [`DecoderIndex::lookup`]).
    fn name_bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u8()? as usize;
        self.take(len)
    }
    fn name(&mut self) -> Result<&'a str> {
        let len = self.u8()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| Error::invalid(format!("{}: name is not UTF-8", self.what)))
    }
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

/// Encodes the feature columns `features` of every row of `batch` as payloads.
///
/// Columns must already have the declared types (see
/// [`crate::adapter::normalize_batch`]).
///
/// # Errors
/// [`Error::InvalidInput`] naming the feature for a missing column or a column of
/// the wrong type.
pub fn encode_payloads(batch: &RecordBatch, features: &[FeatureField]) -> Result<Vec<Vec<u8>>> {
    let n = u16::try_from(features.len())
        .map_err(|_| Error::invalid("a view has more than 65535 features"))?;
    let mut cols = Vec::with_capacity(features.len());
    for f in features {
        let col = batch
            .column_by_name(&f.name)
            .ok_or_else(|| Error::invalid(format!("feature column '{}' is missing", f.name)))?;
        if col.data_type() != &f.value_type.to_arrow() {
            return Err(Error::invalid(format!(
                "feature column '{}' has type {}, the view declares {}",
                f.name,
                col.data_type(),
                f.value_type
            )));
        }
        cols.push(col);
    }
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut buf = Vec::with_capacity(8 + 16 * features.len());
        buf.push(PAYLOAD_VERSION);
        buf.extend_from_slice(&n.to_le_bytes());
        for (f, col) in features.iter().zip(&cols) {
            push_name(&mut buf, &f.name)?;
            encode_value(&mut buf, col.as_ref(), &f.value_type, row, &f.name)?;
        }
        out.push(buf);
    }
    Ok(out)
}

fn encode_value(
    buf: &mut Vec<u8>,
    col: &dyn Array,
    t: &ValueType,
    row: usize,
    name: &str,
) -> Result<()> {
    if col.is_null(row) {
        buf.push(T_NULL);
        return Ok(());
    }
    buf.push(scalar_tag(t));
    match t {
        ValueType::Bool => buf.push(u8::from(col.as_boolean().value(row))),
        ValueType::Int32 => {
            buf.extend_from_slice(&col.as_primitive::<Int32Type>().value(row).to_le_bytes())
        }
        ValueType::Int64 => {
            buf.extend_from_slice(&col.as_primitive::<Int64Type>().value(row).to_le_bytes())
        }
        ValueType::Float32 => {
            buf.extend_from_slice(&col.as_primitive::<Float32Type>().value(row).to_le_bytes())
        }
        ValueType::Float64 => {
            buf.extend_from_slice(&col.as_primitive::<Float64Type>().value(row).to_le_bytes())
        }
        ValueType::String => {
            push_le_bytes(buf, col.as_string::<i32>().value(row).as_bytes(), name)?
        }
        ValueType::Bytes => push_le_bytes(buf, col.as_binary::<i32>().value(row), name)?,
        ValueType::Timestamp => buf.extend_from_slice(
            &col.as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        ValueType::List(inner) => {
            let list = col.as_list::<i32>();
            let values = list.value(row);
            let len = u32::try_from(values.len())
                .map_err(|_| Error::invalid(format!("list in '{name}' is too long")))?;
            buf.extend_from_slice(&len.to_le_bytes());
            for i in 0..values.len() {
                encode_value(buf, values.as_ref(), inner, i, name)?;
            }
        }
    }
    Ok(())
}

/// Builds one Arrow column of a declared type from decoded payload values.
#[derive(Debug)]
pub(crate) enum ColumnBuilder {
    Bool(Vec<Option<bool>>),
    Int32(Vec<Option<i32>>),
    Int64(Vec<Option<i64>>),
    Float32(Vec<Option<f32>>),
    Float64(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
    Ts(Vec<Option<i64>>),
    List {
        inner_type: ValueType,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        child: Box<Self>,
    },
}

impl ColumnBuilder {
    pub(crate) fn new(t: &ValueType) -> Self {
        match t {
            ValueType::Bool => Self::Bool(Vec::new()),
            ValueType::Int32 => Self::Int32(Vec::new()),
            ValueType::Int64 => Self::Int64(Vec::new()),
            ValueType::Float32 => Self::Float32(Vec::new()),
            ValueType::Float64 => Self::Float64(Vec::new()),
            ValueType::String => Self::Str(Vec::new()),
            ValueType::Bytes => Self::Bytes(Vec::new()),
            ValueType::Timestamp => Self::Ts(Vec::new()),
            ValueType::List(inner) => Self::List {
                inner_type: (**inner).clone(),
                offsets: vec![0],
                valid: Vec::new(),
                child: Box::new(Self::new(inner)),
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Bool(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Int64(v) | Self::Ts(v) => v.len(),
            Self::Float32(v) => v.len(),
            Self::Float64(v) => v.len(),
            Self::Str(v) => v.len(),
            Self::Bytes(v) => v.len(),
            Self::List { valid, .. } => valid.len(),
        }
    }

    /// Reserves room for `n` more values.
    pub(crate) fn reserve(&mut self, n: usize) {
        match self {
            Self::Bool(v) => v.reserve(n),
            Self::Int32(v) => v.reserve(n),
            Self::Int64(v) | Self::Ts(v) => v.reserve(n),
            Self::Float32(v) => v.reserve(n),
            Self::Float64(v) => v.reserve(n),
            Self::Str(v) => v.reserve(n),
            Self::Bytes(v) => v.reserve(n),
            Self::List { offsets, valid, .. } => {
                offsets.reserve(n);
                valid.reserve(n);
            }
        }
    }

    pub(crate) fn push_null(&mut self) {
        match self {
            Self::Bool(v) => v.push(None),
            Self::Int32(v) => v.push(None),
            Self::Int64(v) | Self::Ts(v) => v.push(None),
            Self::Float32(v) => v.push(None),
            Self::Float64(v) => v.push(None),
            Self::Str(v) => v.push(None),
            Self::Bytes(v) => v.push(None),
            Self::List { offsets, valid, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                valid.push(false);
            }
        }
    }

    /// Appends a [`Value`] (a default). The caller checked `Value::matches`.
    pub(crate) fn push_value(&mut self, v: &Value) {
        match (self, v) {
            (Self::Bool(b), Value::Bool(x)) => b.push(Some(*x)),
            (Self::Int32(b), Value::Int32(x)) => b.push(Some(*x)),
            (Self::Int64(b), Value::Int64(x)) | (Self::Ts(b), Value::Timestamp(x)) => {
                b.push(Some(*x))
            }
            (Self::Float32(b), Value::Float32(x)) => b.push(Some(*x)),
            (Self::Float64(b), Value::Float64(x)) => b.push(Some(*x)),
            (Self::Str(b), Value::String(x)) => b.push(Some(x.clone())),
            (Self::Bytes(b), Value::Bytes(x)) => b.push(Some(x.clone())),
            (
                Self::List {
                    offsets,
                    valid,
                    child,
                    ..
                },
                Value::List(items),
            ) => {
                for i in items {
                    match i {
                        Some(v) => child.push_value(v),
                        None => child.push_null(),
                    }
                }
                offsets.push(i32::try_from(child.len()).unwrap_or(i32::MAX));
                valid.push(true);
            }
            (me, _) => me.push_null(),
        }
    }

    /// Decodes one value (after its tag) from `r`.
    fn push_encoded(&mut self, tag: u8, r: &mut Reader<'_>, feature: &str) -> Result<()> {
        if tag == T_NULL {
            self.push_null();
            return Ok(());
        }
        let mismatch = |me: &Self| {
            Error::invalid(format!(
                "stored value of feature '{feature}' has type tag {tag} but the view declares {}; \
                 the view's type changed: re-materialize it",
                me.type_name()
            ))
        };
        match self {
            Self::Bool(b) if tag == T_BOOL => b.push(Some(r.u8()? != 0)),
            Self::Int32(b) if tag == T_I32 => b.push(Some(i32::from_le_bytes(r.array()?))),
            Self::Int64(b) if tag == T_I64 => b.push(Some(i64::from_le_bytes(r.array()?))),
            Self::Ts(b) if tag == T_TS => b.push(Some(i64::from_le_bytes(r.array()?))),
            Self::Float32(b) if tag == T_F32 => b.push(Some(f32::from_le_bytes(r.array()?))),
            Self::Float64(b) if tag == T_F64 => b.push(Some(f64::from_le_bytes(r.array()?))),
            Self::Str(b) if tag == T_STR => {
                let len = u32::from_le_bytes(r.array()?) as usize;
                let s = std::str::from_utf8(r.take(len)?).map_err(|_| {
                    Error::invalid(format!("stored value of '{feature}' is not UTF-8"))
                })?;
                b.push(Some(s.to_owned()));
            }
            Self::Bytes(b) if tag == T_BYTES => {
                let len = u32::from_le_bytes(r.array()?) as usize;
                b.push(Some(r.take(len)?.to_vec()));
            }
            Self::List {
                inner_type,
                offsets,
                valid,
                child,
            } if tag == T_LIST | scalar_tag(inner_type) => {
                let elem = scalar_tag(inner_type);
                let n = u32::from_le_bytes(r.array()?);
                for _ in 0..n {
                    let t = r.u8()?;
                    // Elements are scalars or null: checked here, so decoding
                    // never recurses on what the wire says.
                    if t != T_NULL && (t != elem || !is_scalar_tag(t)) {
                        return Err(Error::invalid(format!(
                            "stored list of feature '{feature}' has an element with tag {t}; \
                             elements must be {} or null",
                            child.type_name()
                        )));
                    }
                    child.push_encoded(t, r, feature)?;
                }
                offsets.push(
                    i32::try_from(child.len()).map_err(|_| {
                        Error::invalid(format!("list column '{feature}' too large"))
                    })?,
                );
                valid.push(true);
            }
            me => return Err(mismatch(me)),
        }
        Ok(())
    }

    fn type_name(&self) -> String {
        match self {
            Self::Bool(_) => "bool".into(),
            Self::Int32(_) => "int32".into(),
            Self::Int64(_) => "int64".into(),
            Self::Float32(_) => "float32".into(),
            Self::Float64(_) => "float64".into(),
            Self::Str(_) => "string".into(),
            Self::Bytes(_) => "bytes".into(),
            Self::Ts(_) => "timestamp".into(),
            Self::List { inner_type, .. } => format!("list<{inner_type}>"),
        }
    }

    pub(crate) fn finish(self) -> ArrayRef {
        match self {
            Self::Bool(v) => Arc::new(BooleanArray::from(v)),
            Self::Int32(v) => Arc::new(primitive::<Int32Type>(&v)),
            Self::Int64(v) => Arc::new(primitive::<Int64Type>(&v)),
            Self::Float32(v) => Arc::new(primitive::<Float32Type>(&v)),
            Self::Float64(v) => Arc::new(primitive::<Float64Type>(&v)),
            Self::Str(v) => Arc::new(StringArray::from(v)),
            Self::Bytes(v) => Arc::new(BinaryArray::from_iter(v)),
            Self::Ts(v) => Arc::new(primitive::<TimestampMicrosecondType>(&v).with_timezone(UTC)),
            Self::List {
                inner_type,
                offsets,
                valid,
                child,
            } => {
                let field = Arc::new(Field::new("item", inner_type.to_arrow(), true));
                let nulls = NullBuffer::from(valid);
                Arc::new(ListArray::new(
                    field,
                    OffsetBuffer::new(offsets.into()),
                    child.finish(),
                    Some(nulls),
                ))
            }
        }
    }
}

/// What a [`PayloadDecoder`] needs to know about its features, built once
/// per (view, requested features) and shared by every request that reads
/// them (serving prepares it; see `store/serving.rs`).
#[derive(Debug)]
pub(crate) struct DecoderIndex {
    names: Vec<String>,
    types: Vec<ValueType>,
    by_name: HashMap<String, usize>,
    /// The stored entry order the writer uses (the view's features): entry
    /// `k` of a payload is usually `stored[k].0`, so the name is compared
    /// with that one first and the hash lookup runs only on a mismatch.
    stored: Vec<(String, Option<usize>)>,
    /// Where each requested column goes when the row count is known.
    sinks: Vec<Sink>,
    /// Number of [`Sink::Wide`] columns.
    wide_cols: usize,
    /// The UTC time zone of timestamp columns, shared (no allocation per column).
    tz: Arc<str>,
    /// The expected payload layout when every stored feature is 8 bytes wide
    /// and every requested one goes to the shared slab (see
    /// [`PayloadDecoder::push_template`]); `None` otherwise.
    template: Option<Template>,
}

/// The payload layout of a view whose features are all 8 bytes wide (see
/// [`PayloadDecoder::push_template`]).
#[derive(Debug)]
struct Template {
    /// The entries in the writer's order.
    entries: Vec<TemplateEntry>,
    /// The whole payload of a row with a value in every entry, value bytes
    /// zeroed: such a row is checked in one pass over its bytes.
    image: Vec<u8>,
    /// Per byte of `image`: `0xFF` where a payload must equal it (version,
    /// entry count, lengths, names, tags), `0` for value bytes.
    mask: Vec<u8>,
    /// Per requested entry: the offset of its 8 value bytes in the payload
    /// and its slab column.
    values: Vec<(usize, usize)>,
}

/// One payload entry as the writer lays it out for a view whose features are
/// all 8 bytes wide: the name's length byte and bytes, then `tag` and 8 value
/// bytes (or [`T_NULL`] and nothing).
#[derive(Debug)]
struct TemplateEntry {
    /// Length byte + name bytes.
    header: Box<[u8]>,
    /// The one value tag accepted besides `T_NULL`: the declared type's.
    tag: u8,
    /// The slab column of a requested feature (`None`: not requested).
    col: Option<usize>,
}

impl DecoderIndex {
    /// The value type of requested column `i`.
    pub(crate) fn value_type(&self, i: usize) -> Option<&ValueType> {
        self.types.get(i)
    }

    /// The slab column of requested column `i` (`None`: not 8 bytes wide).
    pub(crate) fn wide_col(&self, i: usize) -> Option<usize> {
        match self.sinks.get(i)? {
            Sink::Wide(c) => Some(*c),
            Sink::Builder(_) => None,
        }
    }

    /// Number of requested columns.
    pub(crate) fn num_columns(&self) -> usize {
        self.types.len()
    }

    /// `requested`: the output columns, in order; `stored_order`: the view's
    /// features as written (a hint only: any order decodes correctly).
    pub(crate) fn new(requested: &[FeatureField], stored_order: &[FeatureField]) -> Self {
        let by_name: HashMap<String, usize> = requested
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let (mut wide_cols, mut builders) = (0, 0);
        let sinks: Vec<Sink> = requested
            .iter()
            .map(|f| {
                if wide_tag(&f.value_type).is_some() {
                    wide_cols += 1;
                    Sink::Wide(wide_cols - 1)
                } else {
                    builders += 1;
                    Sink::Builder(builders - 1)
                }
            })
            .collect();
        let template = Self::template(requested, stored_order, &by_name, &sinks);
        Self {
            template,
            names: requested.iter().map(|f| f.name.clone()).collect(),
            types: requested.iter().map(|f| f.value_type.clone()).collect(),
            stored: stored_order
                .iter()
                .map(|f| (f.name.clone(), by_name.get(&f.name).copied()))
                .collect(),
            by_name,
            sinks,
            wide_cols,
            tz: Arc::from(UTC),
        }
    }

    /// The template of [`DecoderIndex::template`]: only when every stored
    /// feature is 8 bytes wide with a distinct name of at most 255 bytes,
    /// every requested feature is 8 bytes wide, and a requested feature that
    /// is stored is declared with the stored type's tag.
    fn template(
        requested: &[FeatureField],
        stored: &[FeatureField],
        by_name: &HashMap<String, usize>,
        sinks: &[Sink],
    ) -> Option<Template> {
        if stored.len() > usize::from(u16::MAX)
            || sinks.iter().any(|s| matches!(s, Sink::Builder(_)))
        {
            return None;
        }
        let mut names = std::collections::HashSet::with_capacity(stored.len());
        stored
            .iter()
            .map(|f| {
                let len = u8::try_from(f.name.len()).ok()?;
                if !names.insert(f.name.as_str()) {
                    return None;
                }
                let stored_tag = wide_tag(&f.value_type)?;
                let (tag, col) = match by_name.get(&f.name) {
                    Some(&i) => match sinks[i] {
                        Sink::Wide(c) => (wide_tag(&requested[i].value_type)?, Some(c)),
                        Sink::Builder(_) => return None,
                    },
                    None => (stored_tag, None),
                };
                let mut header = Vec::with_capacity(1 + f.name.len());
                header.push(len);
                header.extend_from_slice(f.name.as_bytes());
                Some(TemplateEntry {
                    header: header.into(),
                    tag,
                    col,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Template::new)
    }

    /// The requested column of the `k`-th payload entry, named `name`: the
    /// expected name is compared byte for byte (bytes equal to a `String` are
    /// UTF-8), anything else is checked to be UTF-8 and looked up by name.
    fn lookup(&self, k: usize, name: &[u8]) -> Result<Option<usize>> {
        match self.stored.get(k) {
            Some((n, i)) if same_bytes(n.as_bytes(), name) => Ok(*i),
            _ => {
                let name = std::str::from_utf8(name)
                    .map_err(|_| Error::invalid("feature payload: name is not UTF-8"))?;
                Ok(self.by_name.get(name).copied())
            }
        }
    }
}

impl Template {
    fn new(entries: Vec<TemplateEntry>) -> Self {
        let count = u16::try_from(entries.len()).unwrap_or(u16::MAX);
        let mut image = vec![PAYLOAD_VERSION];
        image.extend_from_slice(&count.to_le_bytes());
        let mut values = Vec::new();
        for e in &entries {
            image.extend_from_slice(&e.header);
            image.push(e.tag);
            if let Some(c) = e.col {
                values.push((image.len(), c));
            }
            image.extend_from_slice(&[0; 8]);
        }
        let mut mask = vec![0xFF; image.len()];
        let mut at = 3;
        for e in &entries {
            at += e.header.len() + 1;
            mask[at..at + 8].fill(0);
            at += 8;
        }
        Self {
            entries,
            image,
            mask,
            values,
        }
    }

    /// Whether `p` is laid out exactly as [`Template::image`] (any value
    /// bytes): one branch-free pass over the bytes.
    fn matches_image(&self, p: &[u8]) -> bool {
        p.len() == self.image.len()
            && p.iter()
                .zip(&self.image)
                .zip(&self.mask)
                .fold(0u8, |acc, ((a, b), m)| acc | ((a ^ b) & m))
                == 0
    }
}

/// `a == b` for short names, compared inline (a `memcmp` call per payload
/// entry costs more than the comparison itself).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The payload tag of an 8-byte fixed-width type (int64, float64, timestamp).
fn wide_tag(t: &ValueType) -> Option<u8> {
    match t {
        ValueType::Int64 => Some(T_I64),
        ValueType::Float64 => Some(T_F64),
        ValueType::Timestamp => Some(T_TS),
        _ => None,
    }
}

/// Where a requested feature's values go.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// Column `usize` of the shared 8-byte slab (int64, float64, timestamp).
    Wide(usize),
    /// Its own builder.
    Builder(usize),
}

/// The output array of one 8-byte column, kept between requests: when the
/// previous response holding it is gone (the pool holds the only reference),
/// the next request overwrites it in place instead of allocating a new
/// `Arc<dyn Array>`. One slot per 8-byte column of the view.
#[derive(Debug, Default)]
pub(crate) struct PooledColumn {
    f64: Option<Arc<PrimitiveArray<Float64Type>>>,
    i64: Option<Arc<PrimitiveArray<Int64Type>>>,
    ts: Option<Arc<PrimitiveArray<TimestampMicrosecondType>>>,
}

/// Output arrays of a view's 8-byte columns, reused between requests.
pub(crate) type ColumnPool = Vec<PooledColumn>;

/// The slot of slab column `c` of `index` in `pool` (grown to one slot per
/// 8-byte column of `index` when shorter).
pub(crate) fn pool_slot<'a>(
    pool: &'a mut ColumnPool,
    index: &DecoderIndex,
    c: usize,
) -> Option<&'a mut PooledColumn> {
    if pool.len() < index.wide_cols {
        pool.resize_with(index.wide_cols, PooledColumn::default);
    }
    pool.get_mut(c)
}

/// `a` in `slot`'s allocation when nobody else holds it, else in a new one.
fn pooled<T: ArrowPrimitiveType>(
    slot: &mut Option<Arc<PrimitiveArray<T>>>,
    a: PrimitiveArray<T>,
) -> ArrayRef {
    let arc = match slot.take() {
        Some(mut s) => match Arc::get_mut(&mut s) {
            Some(m) => {
                *m = a;
                s
            }
            None => Arc::new(a),
        },
        None => Arc::new(a),
    };
    *slot = Some(Arc::clone(&arc));
    arc
}

/// A decoder's per-request working memory, handed back by
/// [`PayloadDecoder::finish_into`] for the next request.
#[derive(Debug, Default)]
pub(crate) struct DecoderScratch {
    seen: Vec<bool>,
    wide_valid: Vec<bool>,
}

/// Decodes payloads into Arrow columns of the requested features.
///
/// With the row count known up front ([`PayloadDecoder::with_index`]),
/// 8-byte values of every column land in one shared buffer (column-major),
/// which the columns then slice: one allocation for all of them instead of
/// several per column.
#[derive(Debug)]
pub(crate) struct PayloadDecoder {
    index: Arc<DecoderIndex>,
    builders: Vec<ColumnBuilder>,
    /// Wide values; `wide_valid[c * rows + r]` says whether set.
    wide: Vec<u64>,
    wide_valid: Vec<bool>,
    rows: usize,
    row: usize,
    seen: Vec<bool>,
}

impl PayloadDecoder {
    /// A decoder on a prepared index for exactly `rows` rows (`0`: any number,
    /// without the shared buffer).
    pub(crate) fn with_index(index: Arc<DecoderIndex>, rows: usize) -> Self {
        Self::with_scratch(index, rows, DecoderScratch::default())
    }

    /// [`PayloadDecoder::with_index`] on the working memory of an earlier
    /// decoder (no allocation for it once it is large enough).
    pub(crate) fn with_scratch(
        index: Arc<DecoderIndex>,
        rows: usize,
        scratch: DecoderScratch,
    ) -> Self {
        let DecoderScratch {
            mut seen,
            mut wide_valid,
        } = scratch;
        let builders = index
            .types
            .iter()
            .zip(&index.sinks)
            .filter(|(_, s)| rows == 0 || matches!(s, Sink::Builder(_)))
            .map(|(t, _)| {
                let mut c = ColumnBuilder::new(t);
                c.reserve(rows);
                c
            })
            .collect();
        let wide_len = if rows > 0 { index.wide_cols * rows } else { 0 };
        seen.clear();
        seen.resize(index.types.len(), false);
        wide_valid.clear();
        wide_valid.resize(wide_len, false);
        Self {
            seen,
            builders,
            wide: vec![0; wide_len],
            wide_valid,
            index,
            rows,
            row: 0,
        }
    }

    /// Where column `i` goes: the index's layout, or every column in its own
    /// builder when the row count is not known.
    fn sink(&self, i: usize) -> Sink {
        if self.rows == 0 {
            Sink::Builder(i)
        } else {
            self.index.sinks[i]
        }
    }

    /// Appends one row: `None` (no row) or a payload; a feature the payload
    /// lacks reads as null.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a corrupt payload, a stored type that
    /// differs from the declared one, or more rows than the decoder was made for.
    pub(crate) fn push_row(&mut self, payload: Option<&[u8]>) -> Result<()> {
        if self.rows > 0 && self.row >= self.rows {
            return Err(Error::invalid(format!(
                "feature payload: more than {} rows decoded",
                self.rows
            )));
        }
        if let Some(p) = payload
            && self.rows > 0
            && self.push_template(p)
        {
            self.row += 1;
            return Ok(());
        }
        self.seen.iter_mut().for_each(|s| *s = false);
        if let Some(p) = payload {
            let mut r = Reader::new(p, "feature payload");
            if r.u8()? != PAYLOAD_VERSION {
                return Err(Error::invalid("feature payload: unknown version"));
            }
            let n = u16::from_le_bytes(r.array()?);
            for k in 0..usize::from(n) {
                let name = r.name_bytes()?;
                let tag = r.u8()?;
                match self.index.lookup(k, name)? {
                    Some(i) if !self.seen[i] => {
                        let name = self.index.names[i].as_str();
                        self.seen[i] = true;
                        match self.sink(i) {
                            Sink::Builder(b) => self.builders[b].push_encoded(tag, &mut r, name)?,
                            Sink::Wide(c) => {
                                if tag == T_NULL {
                                    continue;
                                }
                                let declared = &self.index.types[i];
                                if Some(tag) != wide_tag(declared) {
                                    return Err(Error::invalid(format!(
                                        "stored value of feature '{name}' has type tag {tag} but the view declares {declared}; \
                                         the view's type changed: re-materialize it"
                                    )));
                                }
                                let at = c * self.rows + self.row;
                                self.wide[at] = u64::from_le_bytes(r.array()?);
                                self.wide_valid[at] = true;
                            }
                        }
                    }
                    _ => skip_value(tag, &mut r)?,
                }
            }
            if !r.done() {
                return Err(Error::invalid("feature payload: trailing bytes"));
            }
        }
        for i in 0..self.seen.len() {
            if let Sink::Builder(b) = self.sink(i)
                && !self.seen[i]
            {
                self.builders[b].push_null();
            }
        }
        self.row += 1;
        Ok(())
    }

    /// The fast path of [`PayloadDecoder::push_row`] for views of 8-byte
    /// features written in the view's order (what the writer does). A row
    /// with a value in every entry is checked against [`Template::image`] in
    /// one pass and its value bytes copied. Otherwise each
    /// entry's length, name and tag are compared with the expected bytes and
    /// its 8 value bytes copied. Any difference (another order, a missing or
    /// extra entry, another tag, truncated or trailing bytes) undoes this
    /// row's writes and returns `false`, and the full decoder reads the row:
    /// whatever it accepts, the result is the full decoder's.
    fn push_template(&mut self, p: &[u8]) -> bool {
        let Some(t) = self.index.template.as_ref() else {
            return false;
        };
        let (rows, row) = (self.rows, self.row);
        if t.matches_image(p) {
            for &(at, c) in &t.values {
                if let Some(v) = p.get(at..at + 8).and_then(|v| <[u8; 8]>::try_from(v).ok()) {
                    self.wide[c * rows + row] = u64::from_le_bytes(v);
                    self.wide_valid[c * rows + row] = true;
                }
            }
            return true;
        }
        let t = &t.entries;
        let [PAYLOAD_VERSION, n0, n1, ..] = *p else {
            return false;
        };
        if usize::from(u16::from_le_bytes([n0, n1])) != t.len() {
            return false;
        }
        let (wide, valid) = (&mut self.wide, &mut self.wide_valid);
        let mut pos = 3;
        let mut ok = true;
        for e in t {
            let h = e.header.len();
            ok = match p.get(pos..pos + h + 1) {
                Some(b) if same_bytes(&b[..h], &e.header) => {
                    pos += h + 1;
                    match b[h] {
                        T_NULL => true,
                        tag if tag == e.tag => match p.get(pos..pos + 8) {
                            Some(v) => {
                                if let Some(c) = e.col {
                                    let mut a = [0u8; 8];
                                    a.copy_from_slice(v);
                                    wide[c * rows + row] = u64::from_le_bytes(a);
                                    valid[c * rows + row] = true;
                                }
                                pos += 8;
                                true
                            }
                            None => false,
                        },
                        _ => false,
                    }
                }
                _ => false,
            };
            if !ok {
                break;
            }
        }
        if ok && pos == p.len() {
            return true;
        }
        // undo this row's writes: the full decoder starts from a clean row
        for c in t.iter().filter_map(|e| e.col) {
            wide[c * rows + row] = 0;
            valid[c * rows + row] = false;
        }
        false
    }

    /// The columns, in requested order, with as many rows as were pushed.
    pub(crate) fn finish(self) -> Vec<ArrayRef> {
        let mut out = Vec::with_capacity(self.index.types.len());
        let _ = self.finish_into(|c| out.push(c), None);
        out
    }

    /// Gives the columns, in requested order, to `out`; 8-byte columns reuse
    /// the arrays of `pool` where nobody else holds them (see [`PooledColumn`];
    /// `pool` is grown to one slot per 8-byte column). Returns the
    /// working memory for the next decoder and whether any column may hold
    /// a null (`false`: none does).
    pub(crate) fn finish_into(
        self,
        mut out: impl FnMut(ArrayRef),
        mut pool: Option<&mut ColumnPool>,
    ) -> (DecoderScratch, bool, Option<Slab>) {
        if let Some(p) = pool.as_deref_mut()
            && p.len() < self.index.wide_cols
        {
            p.resize_with(self.index.wide_cols, PooledColumn::default);
        }
        let all_wide = self.rows > 0 && self.builders.is_empty();
        let index = Arc::clone(&self.index);
        let stride = self.rows;
        let builders_empty = self.builders.is_empty();
        let (slab, mut builders, scratch) = self.split();
        let may_have_nulls = slab.nulls.is_some() || !builders_empty;
        for i in 0..index.types.len() {
            let sink = if stride == 0 {
                Sink::Builder(i)
            } else {
                index.sinks[i]
            };
            match sink {
                Sink::Builder(_) => {
                    if let Some(c) = builders.next() {
                        out(c.finish());
                    }
                }
                Sink::Wide(c) => {
                    let slot = pool.as_deref_mut().map(|p| &mut p[c]);
                    out(slab.wide_array(&index, i, c, slot));
                }
            }
        }
        (scratch, may_have_nulls, all_wide.then_some(slab))
    }

    /// For a decoder whose every requested column is 8 bytes wide (and a
    /// known row count): the decoded slab itself, no arrays built.
    /// Gives the decoder back unchanged when a column is not 8 bytes wide or
    /// the row count was not known.
    pub(crate) fn finish_slab(self) -> std::result::Result<(Slab, DecoderScratch), Self> {
        if self.rows == 0 || !self.builders.is_empty() {
            return Err(self);
        }
        let (slab, _, scratch) = self.split();
        Ok((slab, scratch))
    }

    /// The slab, the builders and the working memory.
    fn split(self) -> (Slab, std::vec::IntoIter<ColumnBuilder>, DecoderScratch) {
        let len = self.row;
        let stride = self.rows;
        let wide_cols = self.index.wide_cols;
        let col_nulls = |c: usize| self.wide_valid[c * stride..c * stride + len].contains(&false);
        let has_null: Vec<bool> = if stride > 0 && (0..wide_cols).any(col_nulls) {
            (0..wide_cols).map(col_nulls).collect()
        } else {
            Vec::new()
        };
        // One validity bitmap for the slab, sliced by the columns with a
        // null (the others have none).
        let nulls = (!has_null.is_empty()).then(|| NullBuffer::from(&self.wide_valid[..]));
        let slab = Slab {
            wide: arrow_buffer::Buffer::from_vec(self.wide),
            nulls,
            has_null,
            stride,
            len,
        };
        let scratch = DecoderScratch {
            seen: self.seen,
            wide_valid: self.wide_valid,
        };
        (slab, self.builders.into_iter(), scratch)
    }
}

/// The decoded 8-byte values of one view's requested columns, column-major
/// (`wide[c * stride + r]`), and their validity when any is null.
#[derive(Debug, Clone)]
pub(crate) struct Slab {
    wide: arrow_buffer::Buffer,
    /// Validity of the whole slab (`None`: every value is present).
    nulls: Option<NullBuffer>,
    /// Per slab column: whether it holds a null (empty when none does).
    has_null: Vec<bool>,
    stride: usize,
    len: usize,
}

impl Slab {
    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The raw 8-byte words of every column (column-major, `len()` rows each).
    pub(crate) fn words(&self) -> &arrow_buffer::Buffer {
        &self.wide
    }

    /// Validity of every column (column-major), `None` when all are valid.
    pub(crate) fn nulls(&self) -> Option<&NullBuffer> {
        self.nulls.as_ref()
    }

    /// Whether slab column `c` holds a null.
    pub(crate) fn has_null(&self, c: usize) -> bool {
        self.has_null.get(c).copied().unwrap_or(false)
    }

    /// The array of requested column `i` (slab column `c`) of `index`, in
    /// `slot`'s allocation when given and free.
    pub(crate) fn wide_array(
        &self,
        index: &DecoderIndex,
        i: usize,
        c: usize,
        slot: Option<&mut PooledColumn>,
    ) -> ArrayRef {
        let (len, at) = (self.len, c * self.stride);
        let nulls = self
            .nulls
            .as_ref()
            .filter(|_| self.has_null(c))
            .map(|n| n.slice(at, len));
        let values = self.wide.slice_with_length(at * 8, len * 8);
        match (&index.types[i], slot) {
            (ValueType::Float64, Some(s)) => {
                pooled(&mut s.f64, PrimitiveArray::new(values.into(), nulls))
            }
            (ValueType::Float64, None) => {
                Arc::new(PrimitiveArray::<Float64Type>::new(values.into(), nulls))
            }
            (ValueType::Timestamp, slot) => {
                let a = PrimitiveArray::<TimestampMicrosecondType>::new(values.into(), nulls)
                    .with_timezone(Arc::clone(&index.tz));
                match slot {
                    Some(s) => pooled(&mut s.ts, a),
                    None => Arc::new(a),
                }
            }
            (_, Some(s)) => pooled(&mut s.i64, PrimitiveArray::new(values.into(), nulls)),
            (_, None) => Arc::new(PrimitiveArray::<Int64Type>::new(values.into(), nulls)),
        }
    }
}

/// A primitive array from optional values: one values buffer, and a validity
/// bitmap only when something is null (fewer allocations than `From<Vec<Option>>`,
/// which matters on the serving path: one call per output column).
fn primitive<T: ArrowPrimitiveType>(v: &[Option<T::Native>]) -> PrimitiveArray<T> {
    let nulls = v
        .iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from_iter(v.iter().map(Option::is_some)));
    let values: Vec<T::Native> = v.iter().map(|x| x.unwrap_or_default()).collect();
    PrimitiveArray::new(values.into(), nulls)
}

/// True for the tags of the scalar types (what a list element may be, besides null).
fn is_scalar_tag(tag: u8) -> bool {
    (T_BOOL..=T_TS).contains(&tag)
}

/// Skips one scalar value (after its tag).
fn skip_scalar(tag: u8, r: &mut Reader<'_>) -> Result<()> {
    match tag {
        T_NULL => {}
        T_BOOL => {
            r.take(1)?;
        }
        T_I32 | T_F32 => {
            r.take(4)?;
        }
        T_I64 | T_F64 | T_TS => {
            r.take(8)?;
        }
        T_STR | T_BYTES => {
            let len = u32::from_le_bytes(r.array()?) as usize;
            r.take(len)?;
        }
        t => return Err(Error::invalid(format!("feature payload: unknown tag {t}"))),
    }
    Ok(())
}

/// Skips one value (after its tag) without recursion: a list's elements must be
/// scalars or null ([semantics §4](crate::docs::semantics)), so a corrupt run of nested list tags is an
/// error at the first element, never a deep stack.
fn skip_value(tag: u8, r: &mut Reader<'_>) -> Result<()> {
    if tag & T_LIST == 0 {
        return skip_scalar(tag, r);
    }
    let elem = tag & !T_LIST;
    if !is_scalar_tag(elem) {
        return Err(Error::invalid(format!(
            "feature payload: list tag {tag:#x} does not name a scalar element type"
        )));
    }
    let n = u32::from_le_bytes(r.array()?);
    for _ in 0..n {
        let et = r.u8()?;
        if et != T_NULL && et != elem {
            return Err(Error::invalid(format!(
                "feature payload: list element tag {et} in a list of tag {elem} \
                 (elements must be scalars of the list's type, or null)"
            )));
        }
        skip_scalar(et, r)?;
    }
    Ok(())
}

/// Adds the view and the entity key to a payload decoding error, so a corrupt
/// stored value can be found and repaired.
pub(crate) fn payload_context(e: Error, view: &str, entity_key: &[u8]) -> Error {
    match e {
        Error::InvalidInput(m) => Error::invalid(format!(
            "feature view '{view}', entity {}: {m}",
            display_entity_key(entity_key)
        )),
        other => other,
    }
}

/// Decodes payloads into one Arrow column per requested feature (declared types).
/// `None` rows give nulls.
///
/// # Errors
/// [`Error::InvalidInput`] for corrupt payloads or stored types that differ from
/// the declared ones.
pub fn decode_payloads(
    payloads: &[Option<&[u8]>],
    features: &[FeatureField],
) -> Result<Vec<ArrayRef>> {
    let mut dec = PayloadDecoder::with_index(
        Arc::new(DecoderIndex::new(features, features)),
        payloads.len(),
    );
    for p in payloads {
        dec.push_row(*p)?;
    }
    Ok(dec.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use arrow_array::{Float64Array, Int32Array, Int64Array, TimestampMicrosecondArray};
    use arrow_schema::Schema;

    #[test]
    fn checked_casts_name_source_column_and_row() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1),
            None,
            Some(i64::MAX),
            Some(2),
        ]));
        let err = cast_checked(&a, &DataType::Int32, "amount", "part-0001.parquet")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("part-0001.parquet") && err.contains("'amount'") && err.contains("row 2"),
            "{err}"
        );
        let ok = cast_checked(&a.slice(0, 2), &DataType::Int32, "amount", "f").unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ok.is_null(1));
    }

    #[test]
    fn composite_keys_do_not_collide() {
        let a = encode_entity_key(&[("a", Value::Int64(1)), ("b", Value::Int64(23))]).unwrap();
        let b = encode_entity_key(&[("a", Value::Int64(12)), ("b", Value::Int64(3))]).unwrap();
        assert_ne!(a, b);
        let s1 = encode_entity_key(&[
            ("a", Value::String("1".into())),
            ("b", Value::String("23".into())),
        ])
        .unwrap();
        let s2 = encode_entity_key(&[
            ("a", Value::String("12".into())),
            ("b", Value::String("3".into())),
        ])
        .unwrap();
        assert_ne!(s1, s2);
        // key order does not matter; names do
        let c = encode_entity_key(&[("b", Value::Int64(23)), ("a", Value::Int64(1))]).unwrap();
        assert_eq!(a, c);
        let d = encode_entity_key(&[("x", Value::Int64(1)), ("b", Value::Int64(23))]).unwrap();
        assert_ne!(a, d);
        assert_eq!(display_entity_key(&a), "a=1,b=23");
    }

    #[test]
    fn batch_keys_are_cast_and_match_value_keys() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![7, 8]))]).unwrap();
        let keys = encode_entity_keys(&batch, &[JoinKey::new("id", ValueType::Int64)]).unwrap();
        assert_eq!(
            keys[0],
            encode_entity_key(&[("id", Value::Int64(7))]).unwrap()
        );
        let err =
            encode_entity_keys(&batch, &[JoinKey::new("other", ValueType::Int64)]).unwrap_err();
        assert!(err.to_string().contains("'other'"), "{err}");
    }

    #[test]
    fn bad_key_cast_and_null_key_are_named() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![Some("x"), None]))],
        )
        .unwrap();
        let err = encode_entity_keys(&batch, &[JoinKey::new("id", ValueType::Int64)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'id'") && err.contains("Int64"), "{err}");
        let err = encode_entity_keys(&batch, &[JoinKey::new("id", ValueType::String)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'id'") && err.contains("row 1"), "{err}");
    }

    #[test]
    fn wide_columns_share_one_buffer_and_keep_types_nulls_and_order() {
        let features = vec![
            FeatureField::new("a", ValueType::Int64),
            FeatureField::new("b", ValueType::Float64),
            FeatureField::new("t", ValueType::Timestamp),
        ];
        let schema = Arc::new(Schema::new(
            features
                .iter()
                .map(FeatureField::to_arrow)
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow_array::Int64Array::from(vec![Some(-3), None])),
                Arc::new(Float64Array::from(vec![Some(2.5), Some(-0.0)])),
                Arc::new(TimestampMicrosecondArray::from(vec![None, Some(9)]).with_timezone(UTC)),
            ],
        )
        .unwrap();
        let payloads = encode_payloads(&batch, &features).unwrap();
        // requested in another order than stored, with a missing row between
        let req = vec![
            features[2].clone(),
            features[0].clone(),
            features[1].clone(),
        ];
        let refs: Vec<Option<&[u8]>> = vec![Some(&payloads[0]), None, Some(&payloads[1])];
        let cols = decode_payloads(&refs, &req).unwrap();
        let t = cols[0].as_primitive::<TimestampMicrosecondType>();
        assert_eq!(cols[0].data_type(), &ValueType::Timestamp.to_arrow());
        assert_eq!((t.is_null(0), t.is_null(1), t.value(2)), (true, true, 9));
        let a = cols[1].as_primitive::<Int64Type>();
        assert_eq!((a.value(0), a.is_null(1), a.is_null(2)), (-3, true, true));
        let b = cols[2].as_primitive::<Float64Type>();
        assert_eq!((b.value(0), b.is_null(1), b.value(2)), (2.5, true, -0.0));
        assert!(b.value(2).is_sign_negative());
        assert_eq!(b.null_count(), 1);
        // a stored int64 read as float64 is refused, naming the feature
        let wrong = vec![FeatureField::new("a", ValueType::Float64)];
        let err = decode_payloads(&[Some(&payloads[0])], &wrong).unwrap_err();
        assert!(err.to_string().contains("'a'"), "{err}");
    }

    #[test]
    fn payload_round_trip_with_nulls_lists_and_projection() {
        let features = vec![
            FeatureField::new("f", ValueType::Float64),
            FeatureField::new("s", ValueType::String),
            FeatureField::new("e", ValueType::list(ValueType::Float32)),
            FeatureField::new("t", ValueType::Timestamp),
        ];
        let mut lb = ListBuilder::new(Float32Builder::new());
        lb.values().append_value(1.5);
        lb.values().append_null();
        lb.append(true);
        lb.append(false);
        let schema = Arc::new(Schema::new(
            features
                .iter()
                .map(FeatureField::to_arrow)
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![Some(1.0), None])),
                Arc::new(StringArray::from(vec![Some("a"), Some("")])),
                Arc::new(lb.finish()),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(-5), None]).with_timezone(UTC)),
            ],
        )
        .unwrap();
        let payloads = encode_payloads(&batch, &features).unwrap();
        let refs: Vec<Option<&[u8]>> = vec![Some(&payloads[0]), None, Some(&payloads[1])];
        let cols = decode_payloads(&refs, &features).unwrap();
        let f = cols[0].as_primitive::<Float64Type>();
        assert_eq!((f.value(0), f.is_null(1), f.is_null(2)), (1.0, true, true));
        let s = cols[1].as_string::<i32>();
        assert_eq!((s.value(0), s.is_null(1), s.value(2)), ("a", true, ""));
        let l = cols[2].as_list::<i32>();
        let first = l.value(0);
        let first = first.as_primitive::<Float32Type>();
        assert_eq!(
            (first.len(), first.value(0), first.is_null(1)),
            (2, 1.5, true)
        );
        assert!(l.is_null(1) && l.is_null(2));
        assert_eq!(
            cols[3].as_primitive::<TimestampMicrosecondType>().value(0),
            -5
        );
        // projection and added features: unknown names read as null
        let proj = vec![
            FeatureField::new("s", ValueType::String),
            FeatureField::new("new", ValueType::Int64),
        ];
        let cols = decode_payloads(&[Some(&payloads[0])], &proj).unwrap();
        assert_eq!(cols[0].as_string::<i32>().value(0), "a");
        assert!(cols[1].is_null(0));
        // a type change is an error naming the feature
        let wrong = vec![FeatureField::new("f", ValueType::Int64)];
        let err = decode_payloads(&[Some(&payloads[0])], &wrong)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'f'"), "{err}");
        // truncated payloads are InvalidInput errors, never a panic nor a value
        for cut in 0..payloads[0].len() {
            match decode_payloads(&[Some(&payloads[0][..cut])], &features) {
                Err(Error::InvalidInput(_)) => {}
                other => panic!("payload cut at {cut} bytes must be InvalidInput, got {other:?}"),
            }
        }
    }
}

/// No-panic properties of the wire decoders ([semantics §10](crate::docs::semantics)): any bytes give `Ok`
/// or `InvalidInput`, never a panic, a deep stack or an allocation out of
/// proportion to the input. 10,000 cases each; every case is a few hundred
/// bytes, so the whole module runs in seconds in a debug build.
#[cfg(test)]
mod decode_props {
    use super::*;
    use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
    use arrow_array::{
        Float32Array, Float64Array, Int32Array, Int64Array, TimestampMicrosecondArray,
    };
    use arrow_schema::Schema;
    use proptest::prelude::*;

    const CASES: u32 = 10_000;

    fn features() -> Vec<FeatureField> {
        vec![
            FeatureField::new("b", ValueType::Bool),
            FeatureField::new("i", ValueType::Int32),
            FeatureField::new("l", ValueType::Int64),
            FeatureField::new("f", ValueType::Float32),
            FeatureField::new("d", ValueType::Float64),
            FeatureField::new("s", ValueType::String),
            FeatureField::new("y", ValueType::Bytes),
            FeatureField::new("t", ValueType::Timestamp),
            FeatureField::new("ls", ValueType::list(ValueType::String)),
            FeatureField::new("lf", ValueType::list(ValueType::Float32)),
        ]
    }

    /// Feature sets a reader may ask with: everything, a projection, and one
    /// whose declared types differ from the stored ones.
    fn readers() -> Vec<Vec<FeatureField>> {
        let all = features();
        let proj = vec![
            all[5].clone(),
            all[9].clone(),
            FeatureField::new("new", ValueType::Int64),
        ];
        let wrong: Vec<FeatureField> = all
            .iter()
            .map(|f| FeatureField::new(&f.name, ValueType::list(ValueType::Int64)))
            .collect();
        vec![all, proj, wrong]
    }

    fn valid_payloads() -> Vec<Vec<u8>> {
        let fs = features();
        let mut ls = ListBuilder::new(StringBuilder::new());
        ls.values().append_value("x");
        ls.values().append_null();
        ls.append(true);
        ls.append(false);
        ls.append(true);
        let mut lf = ListBuilder::new(Float32Builder::new());
        lf.values().append_value(1.5);
        lf.append(true);
        lf.append(true);
        lf.append(false);
        let schema = Arc::new(Schema::new(
            fs.iter().map(FeatureField::to_arrow).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
                Arc::new(Int32Array::from(vec![Some(-1), Some(7), None])),
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(3)])),
                Arc::new(Float32Array::from(vec![Some(0.5), None, Some(f32::NAN)])),
                Arc::new(Float64Array::from(vec![None, Some(2.5), Some(-0.0)])),
                Arc::new(StringArray::from(vec![Some("héllo"), Some(""), None])),
                Arc::new(BinaryArray::from_iter(vec![
                    Some(b"\x00\xff".to_vec()),
                    None,
                    Some(vec![]),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1), None, Some(-5)])
                        .with_timezone(UTC),
                ),
                Arc::new(ls.finish()),
                Arc::new(lf.finish()),
            ],
        )
        .expect("fixture batch");
        encode_payloads(&batch, &fs).expect("fixture payloads")
    }

    fn valid_keys() -> Vec<Vec<u8>> {
        vec![
            encode_entity_key(&[("id", Value::Int64(-3))]).unwrap(),
            encode_entity_key(&[("a", Value::Int32(1)), ("b", Value::String("zz".into()))])
                .unwrap(),
            encode_entity_key(&[("k", Value::Bytes(vec![0, 1, 2]))]).unwrap(),
        ]
    }

    /// The property for one payload: `Ok` with output no larger than a small
    /// multiple of the input, or `InvalidInput`.
    fn check_payload(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        for fs in readers() {
            match decode_payloads(&[Some(bytes)], &fs) {
                Ok(cols) => {
                    prop_assert_eq!(cols.len(), fs.len());
                    let mem: usize = cols.iter().map(|c| c.get_array_memory_size()).sum();
                    prop_assert!(
                        mem <= 16_384 + 256 * bytes.len(),
                        "{} bytes decoded into {} bytes of arrays",
                        bytes.len(),
                        mem
                    );
                }
                Err(Error::InvalidInput(_)) => {}
                Err(other) => prop_assert!(false, "not InvalidInput: {other}"),
            }
        }
        Ok(())
    }

    fn check_key(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        match decode_entity_key(bytes) {
            Ok(pairs) => {
                prop_assert!(pairs.len() <= 255);
                let size: usize = pairs
                    .iter()
                    .map(|(n, v)| {
                        n.len()
                            + match v {
                                Value::String(s) => s.len(),
                                Value::Bytes(b) => b.len(),
                                _ => 8,
                            }
                    })
                    .sum();
                prop_assert!(size <= 8 * bytes.len());
                // A key that decodes re-encodes to the same bytes.
                let back: Vec<(&str, Value)> =
                    pairs.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
                if let Ok(re) = encode_entity_key(&back) {
                    let sorted_unique = pairs.windows(2).all(|w| w[0].0 < w[1].0);
                    if sorted_unique {
                        prop_assert_eq!(re, bytes.to_vec());
                    }
                }
            }
            Err(Error::InvalidInput(_)) => {}
            Err(other) => prop_assert!(false, "not InvalidInput: {other}"),
        }
        let _ = display_entity_key(bytes);
        Ok(())
    }

    /// Random edits of a valid encoding: byte overwrites, truncation, insertion.
    fn mutate(
        base: &[u8],
        edits: &[(usize, u8)],
        cut: Option<usize>,
        insert: Option<(usize, Vec<u8>)>,
    ) -> Vec<u8> {
        let mut b = base.to_vec();
        for (pos, byte) in edits {
            if !b.is_empty() {
                let i = pos % b.len();
                b[i] = *byte;
            }
        }
        if let Some((pos, bytes)) = insert {
            let i = pos % (b.len() + 1);
            b.splice(i..i, bytes);
        }
        if let Some(c) = cut {
            b.truncate(c % (b.len() + 1));
        }
        b
    }

    /// Bytes biased towards the interesting tags, lengths and version bytes.
    fn wire_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => any::<u8>(),
            2 => 0u8..=8,
            2 => (0u8..=8).prop_map(|t| t | T_LIST),
            1 => Just(0xff),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn arbitrary_payload_bytes_never_panic(
            body in proptest::collection::vec(wire_byte(), 0..96),
            prefix in any::<bool>(),
            n in 0u16..4,
        ) {
            let mut bytes = Vec::new();
            if prefix {
                bytes.push(PAYLOAD_VERSION);
                bytes.extend_from_slice(&n.to_le_bytes());
            }
            bytes.extend_from_slice(&body);
            check_payload(&bytes)?;
        }

        #[test]
        fn mutated_payloads_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), wire_byte()), 0..4),
            cut in proptest::option::weighted(0.3, any::<usize>()),
            insert in proptest::option::weighted(0.3, (any::<usize>(), proptest::collection::vec(wire_byte(), 1..6))),
        ) {
            let payloads = valid_payloads();
            let bytes = mutate(&payloads[which], &edits, cut, insert);
            check_payload(&bytes)?;
        }

        #[test]
        fn arbitrary_entity_key_bytes_never_panic(
            body in proptest::collection::vec(wire_byte(), 0..64),
            prefix in any::<bool>(),
            n in 0u8..4,
        ) {
            let mut bytes = Vec::new();
            if prefix {
                bytes.push(ENTITY_KEY_VERSION);
                bytes.push(n);
            }
            bytes.extend_from_slice(&body);
            check_key(&bytes)?;
        }

        #[test]
        fn mutated_entity_keys_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), wire_byte()), 0..4),
            cut in proptest::option::weighted(0.3, any::<usize>()),
            insert in proptest::option::weighted(0.3, (any::<usize>(), proptest::collection::vec(wire_byte(), 1..6))),
        ) {
            let keys = valid_keys();
            let bytes = mutate(&keys[which], &edits, cut, insert);
            check_key(&bytes)?;
        }
    }

    /// A view of 8-byte features only (the template fast path's case).
    fn wide_features() -> Vec<FeatureField> {
        vec![
            FeatureField::new("l", ValueType::Int64),
            FeatureField::new("d", ValueType::Float64),
            FeatureField::new("t", ValueType::Timestamp),
            FeatureField::new("d2", ValueType::Float64),
        ]
    }

    /// Payloads of [`wide_features`] as the writer encodes them: three rows
    /// with a null each, then one with every value.
    fn wide_payloads() -> Vec<Vec<u8>> {
        let fs = wide_features();
        let schema = Arc::new(Schema::new(
            fs.iter().map(FeatureField::to_arrow).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(i64::MIN),
                    None,
                    Some(3),
                    Some(-1),
                ])),
                Arc::new(Float64Array::from(vec![
                    None,
                    Some(2.5),
                    Some(-0.0),
                    Some(0.5),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1), None, Some(-5), Some(7)])
                        .with_timezone(UTC),
                ),
                Arc::new(Float64Array::from(vec![
                    Some(f64::NAN),
                    Some(1e300),
                    None,
                    Some(f64::MIN_POSITIVE),
                ])),
            ],
        )
        .expect("fixture batch");
        encode_payloads(&batch, &fs).expect("fixture payloads")
    }

    /// Requests a reader of [`wide_features`] may make: everything, a
    /// projection in another order with a feature that is not stored, and
    /// one declaring another 8-byte type (so every stored tag mismatches).
    fn wide_readers() -> Vec<Vec<FeatureField>> {
        let all = wide_features();
        vec![
            all.clone(),
            vec![
                all[3].clone(),
                FeatureField::new("new", ValueType::Int64),
                all[0].clone(),
            ],
            vec![
                FeatureField::new("l", ValueType::Float64),
                FeatureField::new("d", ValueType::Int64),
            ],
        ]
    }

    /// Decodes `rows` with a decoder whose template is kept or removed.
    fn decode_rows(
        rows: &[Option<&[u8]>],
        requested: &[FeatureField],
        template: bool,
    ) -> Result<Vec<ArrayRef>> {
        let mut index = DecoderIndex::new(requested, &wide_features());
        if !template {
            index.template = None;
        }
        let mut dec = PayloadDecoder::with_index(Arc::new(index), rows.len());
        for r in rows {
            dec.push_row(*r)?;
        }
        Ok(dec.finish())
    }

    /// The property: with and without the template, the same columns (by
    /// value, nulls included) or both an `InvalidInput`; and the full
    /// decoder's own property ([`check_payload`]'s) holds.
    fn check_template(rows: &[Option<&[u8]>]) -> std::result::Result<(), TestCaseError> {
        for fs in wide_readers() {
            let fast = decode_rows(rows, &fs, true);
            let full = decode_rows(rows, &fs, false);
            match (fast, full) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a.len(), fs.len());
                    for (x, y) in a.iter().zip(&b) {
                        prop_assert_eq!(x.to_data(), y.to_data());
                    }
                }
                (Err(Error::InvalidInput(_)), Err(Error::InvalidInput(_))) => {}
                (a, b) => prop_assert!(false, "template {a:?} vs full decoder {b:?}"),
            }
        }
        Ok(())
    }

    /// The template is built for an all-8-byte view and takes what the
    /// writer writes (so the property below reaches it), in every row; it
    /// is not built when a stored or requested feature is not 8 bytes wide.
    /// A row with every value passes the one-pass image check; rows with a
    /// null take the entry-by-entry path.
    #[test]
    fn template_takes_what_the_writer_writes() {
        for fs in wide_readers() {
            let index = Arc::new(DecoderIndex::new(&fs, &wide_features()));
            assert!(index.template.is_some(), "{fs:?}");
            let payloads = wide_payloads();
            let mut dec = PayloadDecoder::with_index(index, payloads.len());
            for (i, p) in payloads.iter().enumerate() {
                let reader_types_match = fs[..2] != wide_readers()[2][..];
                let t = dec.index.template.as_ref().expect("template");
                assert_eq!(
                    t.matches_image(p),
                    reader_types_match && i == 3,
                    "{fs:?} row {i}"
                );
                assert_eq!(dec.push_template(p), reader_types_match, "{fs:?}");
                dec.row += 1;
            }
        }
        let mixed = features();
        assert!(DecoderIndex::new(&mixed[2..3], &mixed).template.is_none());
        assert!(
            DecoderIndex::new(&mixed[5..6], &wide_features())
                .template
                .is_none()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// [semantics §10](crate::docs::semantics) through the fast path: corrupt payloads of an
        /// all-8-byte view (edits, truncation, insertion, in any row of a
        /// request beside valid rows) decode exactly as the full decoder
        /// decodes them, or are an `InvalidInput`.
        #[test]
        fn template_decodes_like_the_full_decoder(
            which in 0usize..4,
            at_row in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), wire_byte()), 0..4),
            cut in proptest::option::weighted(0.3, any::<usize>()),
            insert in proptest::option::weighted(0.3, (any::<usize>(), proptest::collection::vec(wire_byte(), 1..6))),
        ) {
            let payloads = wide_payloads();
            let bad = mutate(&payloads[which], &edits, cut, insert);
            let mut rows: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
            rows.push(None);
            rows[at_row] = Some(&bad);
            check_template(&rows)?;
            check_payload(&bad)?;
        }
    }

    #[test]
    fn valid_payloads_decode() {
        for p in valid_payloads() {
            decode_payloads(&[Some(&p)], &features()).unwrap();
        }
    }

    /// ~500 KB of nested list tags under a name nobody asked for (the skip path)
    /// and under a requested list feature: an error, not a stack overflow.
    #[test]
    fn deeply_nested_list_tags_are_an_error_not_a_stack_overflow() {
        for (name, tag) in [
            ("zz", T_LIST | T_LIST | T_F32),
            ("zz", T_LIST | T_F32),
            ("lf", T_LIST | T_F32),
        ] {
            let mut p = vec![PAYLOAD_VERSION, 1, 0, 2];
            p.extend_from_slice(name.as_bytes());
            for _ in 0..100_000 {
                p.push(tag);
                p.extend_from_slice(&1u32.to_le_bytes());
            }
            let err = decode_payloads(&[Some(&p)], &features()).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        }
        // A list claiming 4 billion elements in a few bytes: truncated, at once.
        let mut p = vec![PAYLOAD_VERSION, 1, 0, 2, b'l', b'f', T_LIST | T_F32];
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        p.extend_from_slice(&[T_F32, 0, 0, 0, 0]);
        assert!(matches!(
            decode_payloads(&[Some(&p)], &features()),
            Err(Error::InvalidInput(_))
        ));
    }

    /// A corrupt value in the online store fails the read with an error naming
    /// the view and the entity key.
    #[tokio::test]
    async fn corrupt_stored_value_names_view_and_entity_key() {
        use crate::online::{OnlineRow, OnlineStore, WriteOptions};
        use crate::store::{FeatureSelection, FeatureStore, OnlineRequest};
        use crate::testkit::{entity_batch, test_definitions};
        let online = Arc::new(crate::memory::InMemoryOnlineStore::new());
        let store = FeatureStore::builder()
            .with_online(Arc::clone(&online) as Arc<crate::online::DynOnlineStore>)
            .build()
            .unwrap();
        let (defs, rv) = test_definitions("corrupt_v", None);
        store.apply(&defs, Default::default()).await.unwrap();
        let mut bad = vec![PAYLOAD_VERSION, 1, 0, 2, b'z', b'z'];
        for _ in 0..1000 {
            bad.push(T_LIST | T_LIST | T_I32);
            bad.extend_from_slice(&1u32.to_le_bytes());
        }
        let key = encode_entity_key(&[("user_id", Value::Int64(4242))]).unwrap();
        online
            .write(
                &rv,
                vec![OnlineRow {
                    entity_key: key,
                    event_ts: 1,
                    created_ts: Some(1),
                    payload: bad.into(),
                }],
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        let err = store
            .get_online_features(
                &OnlineRequest::new(
                    FeatureSelection::refs(["corrupt_v:score"]).unwrap(),
                    entity_batch(&[4242]),
                )
                .with_now(crate::time::from_micros(2)),
            )
            .await
            .unwrap_err();
        let m = err.to_string();
        assert!(
            matches!(err, Error::InvalidInput(_))
                && m.contains("'corrupt_v'")
                && m.contains("user_id=4242"),
            "{m}"
        );
    }
}
