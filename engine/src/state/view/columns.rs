//! Building Arrow columns from operator values.

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use projector_operators::value::{ColumnType, Value};
use std::sync::Arc;

/// The Arrow type of a view column.
pub(crate) fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

/// An Arrow builder for one column type, fed with [`Value`]s already coerced to it.
#[derive(Debug)]
pub(crate) enum ColumnBuilder {
    /// `string`.
    Str(StringBuilder),
    /// `int64`.
    Int(Int64Builder),
    /// `float64`.
    Float(Float64Builder),
    /// `bool`.
    Bool(BooleanBuilder),
    /// `timestamp`.
    Ts(TimestampMillisecondBuilder),
}

impl ColumnBuilder {
    /// A builder for `rows` values of type `ty`.
    pub(crate) fn new(ty: ColumnType, rows: usize) -> Self {
        Self::with_bytes(ty, rows, rows * 16)
    }

    /// A builder for `rows` values of type `ty`, strings taking `bytes` bytes in all.
    pub(crate) fn with_bytes(ty: ColumnType, rows: usize, bytes: usize) -> Self {
        match ty {
            ColumnType::String => ColumnBuilder::Str(StringBuilder::with_capacity(rows, bytes)),
            ColumnType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Float64 => ColumnBuilder::Float(Float64Builder::with_capacity(rows)),
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Timestamp => ColumnBuilder::Ts(
                TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    /// Appends one value; a value of another kind than the column's is appended as null
    /// (operators coerce before storing, so that does not happen).
    pub(crate) fn append(&mut self, v: &Value) {
        match (self, v) {
            (ColumnBuilder::Str(b), Value::Str(s)) => b.append_value(s),
            (ColumnBuilder::Str(b), _) => b.append_null(),
            (ColumnBuilder::Int(b), Value::Int(i)) => b.append_value(*i),
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Float(b), Value::Float(f)) => b.append_value(*f),
            (ColumnBuilder::Float(b), Value::Int(i)) => b.append_value(*i as f64),
            (ColumnBuilder::Float(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::Ts(b), Value::Int(i)) => b.append_value(*i),
            (ColumnBuilder::Ts(b), _) => b.append_null(),
        }
    }

    /// Appends a string (to a string column; anything else gets a null).
    pub(crate) fn append_str(&mut self, s: &str) {
        match self {
            ColumnBuilder::Str(b) => b.append_value(s),
            other => other.append(&Value::Null),
        }
    }

    /// The finished column.
    pub(crate) fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Str(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(mut b) => Arc::new(b.finish()),
        }
    }
}
