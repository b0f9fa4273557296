//! Arrow values to Postgres rows, and Postgres parameters to values the engine binds.
//!
//! Each Arrow type is sent as its Postgres twin (`query/pg_catalog.rs`'s
//! `pg_type_of`), in the format the client asked for per column, text or binary;
//! types Postgres has no twin for (decimals, unsigned 64-bit integers, intervals,
//! structs, ...) are sent as text, formatted as the HTTP API's CSV shows them.

use crate::serve::query::pg_catalog::pg_type_of;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Field, Float16Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, Schema, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use datafusion::common::ScalarValue;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use std::sync::Arc;

/// The Postgres type a column of Arrow type `t` is sent as.
pub(crate) fn pg_type(t: &DataType) -> Type {
    Type::from_oid(pg_type_of(t).0).unwrap_or(Type::TEXT)
}

/// The fields of a result with `schema`, each in the format `format` asks for
/// (`None`: text).
pub(crate) fn fields(schema: &Schema, format: Option<&Format>) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let format = format.map_or(FieldFormat::Text, |fm| fm.format_for(i));
            FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()), format)
        })
        .collect()
}

/// Text columns called `names` (answers built here: `SHOW`, empty catalogs).
pub(crate) fn text_fields(names: &[String], format: Option<&Format>) -> Vec<FieldInfo> {
    let schema = Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    fields(&schema, format)
}

/// The rows of `batches` as `DataRow`s of `fields`.
pub(crate) fn rows(
    fields: Arc<Vec<FieldInfo>>,
    batches: Vec<RecordBatch>,
) -> PgWireResult<Vec<PgWireResult<DataRow>>> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    let mut encoder = DataRowEncoder::new(fields.clone());
    let options = FormatOptions::default().with_null("");
    for batch in &batches {
        let formatters: Vec<Option<ArrayFormatter<'_>>> = batch
            .columns()
            .iter()
            .map(|c| {
                (pg_type_of(c.data_type()).0 == 25 && !is_text(c.data_type()))
                    .then(|| ArrayFormatter::try_new(c.as_ref(), &options))
                    .transpose()
            })
            .collect::<Result<_, _>>()
            .map_err(api)?;
        for row in 0..batch.num_rows() {
            for (column, formatter) in batch.columns().iter().zip(&formatters) {
                value(&mut encoder, column, row, formatter.as_ref())?;
            }
            out.push(Ok(encoder.take_row()));
        }
    }
    Ok(out)
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn api(e: impl std::error::Error + Send + Sync + 'static) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// Encodes the value at `row` of `a` (through `text` when it is sent as text).
fn value(
    enc: &mut DataRowEncoder,
    a: &ArrayRef,
    row: usize,
    text: Option<&ArrayFormatter<'_>>,
) -> PgWireResult<()> {
    // A NullArray (`SELECT NULL`) keeps no validity bits: its rows are null all the same.
    if a.is_null(row) || a.data_type() == &DataType::Null {
        return enc.encode_field(&None::<i64>);
    }
    if let Some(f) = text {
        return enc.encode_field(&f.value(row).to_string());
    }
    match a.data_type() {
        DataType::Boolean => enc.encode_field(&a.as_boolean().value(row)),
        DataType::Int8 => enc.encode_field(&(a.as_primitive::<Int8Type>().value(row) as i16)),
        DataType::UInt8 => enc.encode_field(&(a.as_primitive::<UInt8Type>().value(row) as i16)),
        DataType::Int16 => enc.encode_field(&a.as_primitive::<Int16Type>().value(row)),
        DataType::UInt16 => enc.encode_field(&(a.as_primitive::<UInt16Type>().value(row) as i32)),
        DataType::Int32 => enc.encode_field(&a.as_primitive::<Int32Type>().value(row)),
        DataType::UInt32 => enc.encode_field(&(a.as_primitive::<UInt32Type>().value(row) as i64)),
        DataType::Int64 => enc.encode_field(&a.as_primitive::<Int64Type>().value(row)),
        DataType::Float16 => enc.encode_field(&a.as_primitive::<Float16Type>().value(row).to_f32()),
        DataType::Float32 => enc.encode_field(&a.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => enc.encode_field(&a.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => enc.encode_field(&a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => enc.encode_field(&a.as_string::<i64>().value(row)),
        DataType::Utf8View => enc.encode_field(&a.as_string_view().value(row)),
        DataType::Binary => enc.encode_field(&a.as_binary::<i32>().value(row)),
        DataType::LargeBinary => enc.encode_field(&a.as_binary::<i64>().value(row)),
        DataType::BinaryView => enc.encode_field(&a.as_binary_view().value(row)),
        DataType::Date32 => enc.encode_field(&a.as_primitive::<Date32Type>().value_as_date(row)),
        DataType::Date64 => enc.encode_field(&a.as_primitive::<Date64Type>().value_as_date(row)),
        DataType::Timestamp(unit, tz) => {
            let naive = timestamp(a, *unit, row);
            match tz {
                None => enc.encode_field(&naive),
                Some(_) => enc.encode_field(
                    &naive.map(|t| DateTime::<Utc>::from_naive_utc_and_offset(t, Utc)),
                ),
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => enc.encode_field(&time(a, row)),
        DataType::List(_) | DataType::LargeList(_) => list(enc, a, row),
        other => Err(PgWireError::ApiError(
            format!("a column of type {other} cannot be sent").into(),
        )),
    }
}

fn timestamp(a: &ArrayRef, unit: TimeUnit, row: usize) -> Option<NaiveDateTime> {
    match unit {
        TimeUnit::Second => a
            .as_primitive::<TimestampSecondType>()
            .value_as_datetime(row),
        TimeUnit::Millisecond => a
            .as_primitive::<TimestampMillisecondType>()
            .value_as_datetime(row),
        TimeUnit::Microsecond => a
            .as_primitive::<TimestampMicrosecondType>()
            .value_as_datetime(row),
        TimeUnit::Nanosecond => a
            .as_primitive::<TimestampNanosecondType>()
            .value_as_datetime(row),
    }
}

fn time(a: &ArrayRef, row: usize) -> Option<NaiveTime> {
    match a.data_type() {
        DataType::Time32(TimeUnit::Second) => {
            a.as_primitive::<Time32SecondType>().value_as_time(row)
        }
        DataType::Time32(_) => a.as_primitive::<Time32MillisecondType>().value_as_time(row),
        DataType::Time64(TimeUnit::Microsecond) => {
            a.as_primitive::<Time64MicrosecondType>().value_as_time(row)
        }
        _ => a.as_primitive::<Time64NanosecondType>().value_as_time(row),
    }
}

/// A list value as a Postgres array of its element type.
fn list(enc: &mut DataRowEncoder, a: &ArrayRef, row: usize) -> PgWireResult<()> {
    let items = match a.data_type() {
        DataType::LargeList(_) => a.as_list::<i64>().value(row),
        _ => a.as_list::<i32>().value(row),
    };
    // The element type the array is sent with (pg_type_of), as one Arrow type.
    let target = match pg_type_of(a.data_type()).0 {
        1000 => DataType::Boolean,
        1005 => DataType::Int16,
        1007 => DataType::Int32,
        1016 => DataType::Int64,
        1021 => DataType::Float32,
        1022 => DataType::Float64,
        _ => DataType::Utf8,
    };
    let items = arrow::compute::cast(&items, &target).map_err(api)?;
    macro_rules! send {
        ($t:ty, $get:expr) => {{
            let v: Vec<Option<$t>> = (0..items.len())
                .map(|i| (!items.is_null(i)).then(|| $get(i)))
                .collect();
            enc.encode_field(&v)
        }};
    }
    match target {
        DataType::Boolean => send!(bool, |i| items.as_boolean().value(i)),
        DataType::Int16 => send!(i16, |i| items.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => send!(i32, |i| items.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => send!(i64, |i| items.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => send!(f32, |i| items.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => send!(f64, |i| items.as_primitive::<Float64Type>().value(i)),
        _ => send!(String, |i| items.as_string::<i32>().value(i).to_string()),
    }
}

/// Bytes from hex digits (`None`: an odd count or a non-hex digit).
fn unhex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

/// Refuses format codes that do not fit `n` values (`what`: parameters or result
/// columns): Postgres takes none, one for all, or one each (SQLSTATE 08P01).
pub(crate) fn formats_fit(format: &Format, n: usize, what: &str) -> PgWireResult<()> {
    match format {
        Format::Individual(codes) if codes.len() != n => {
            Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "08P01".into(),
                format!("{} format codes for {n} {what}", codes.len()),
            ))))
        }
        _ => Ok(()),
    }
}

/// The error a parameter that cannot be read gets (SQLSTATE 22P02).
fn bad_parameter(i: usize, why: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "22P02".into(),
        format!("parameter ${}: {why}", i + 1),
    )))
}

/// Parameter `i`, sent as `bytes` (`None`: NULL) in text or binary form with Postgres
/// type `sent`, as a value of `target` (the type the plan wants, if it says).
pub(crate) fn parameter(
    i: usize,
    bytes: Option<&[u8]>,
    binary: bool,
    sent: &Type,
    target: Option<&DataType>,
) -> PgWireResult<ScalarValue> {
    use postgres_types::FromSql;
    let target = target.cloned().unwrap_or(DataType::Utf8);
    let Some(bytes) = bytes else {
        return ScalarValue::try_from(&target).map_err(|e| bad_parameter(i, e));
    };
    let value = if !binary {
        let text = std::str::from_utf8(bytes).map_err(|e| bad_parameter(i, e))?;
        if matches!(
            target,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        ) && let Some(hex) = text.strip_prefix("\\x")
        {
            // bytea's text form.
            let bytes = unhex(hex).ok_or_else(|| bad_parameter(i, "not a bytea in hex"))?;
            return ScalarValue::Binary(Some(bytes))
                .cast_to(&target)
                .map_err(|e| bad_parameter(i, e));
        }
        return ScalarValue::try_from_string(text.to_string(), &target)
            .map_err(|_| bad_parameter(i, format!("'{text}' is not a valid {target}")));
    } else {
        let read = |e: Box<dyn std::error::Error + Sync + Send>| bad_parameter(i, e);
        match *sent {
            Type::BOOL => ScalarValue::Boolean(Some(bool::from_sql(sent, bytes).map_err(read)?)),
            Type::INT2 => ScalarValue::Int16(Some(i16::from_sql(sent, bytes).map_err(read)?)),
            Type::INT4 => ScalarValue::Int32(Some(i32::from_sql(sent, bytes).map_err(read)?)),
            Type::INT8 => ScalarValue::Int64(Some(i64::from_sql(sent, bytes).map_err(read)?)),
            Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_sql(sent, bytes).map_err(read)?)),
            Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_sql(sent, bytes).map_err(read)?)),
            Type::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
            Type::DATE => {
                let d = NaiveDate::from_sql(sent, bytes).map_err(read)?;
                ScalarValue::Date32(Some(
                    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32,
                ))
            }
            Type::TIMESTAMP => {
                let t = NaiveDateTime::from_sql(sent, bytes).map_err(read)?;
                ScalarValue::TimestampMicrosecond(Some(t.and_utc().timestamp_micros()), None)
            }
            Type::TIMESTAMPTZ => {
                let t = DateTime::<Utc>::from_sql(sent, bytes).map_err(read)?;
                ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
            }
            // Text types, and what the client left to the server: the bytes as text.
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                let text = std::str::from_utf8(bytes).map_err(|e| bad_parameter(i, e))?;
                ScalarValue::Utf8(Some(text.to_string()))
            }
            _ => {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "0A000".into(),
                    format!(
                        "parameter ${}: {sent} in binary is not supported; send it as text",
                        i + 1
                    ),
                ))));
            }
        }
    };
    value
        .cast_to(&target)
        .map_err(|_| bad_parameter(i, format!("a {sent} cannot be used as a {target}")))
}
