//! Scalar values and column types shared by every operator.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A scalar value read from an event field or held in a view column.
///
/// Timestamps are held as [`Value::Int`] milliseconds since the Unix epoch once they
/// have been coerced to a `timestamp` column.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// SQL NULL: a missing field, JSON `null`, or an unset column.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string (shared, so that copying it into state is cheap).
    Str(Arc<str>),
    /// A JSON object (`array: false`) or array (`array: true`) found at a field path.
    ///
    /// Only its presence is kept: it is not null (`IS NULL` is false), but it converts
    /// to no column type, key or event type, so an event that uses one in a view is a
    /// bad record. An event that merely carries one in a field no handler reads is fine.
    Nested {
        /// True for an array, false for an object.
        array: bool,
    },
}

impl Value {
    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Nested { array: false } => "object",
            Value::Nested { array: true } => "array",
        }
    }

    /// Converts the value to the representation a column of type `ty` holds.
    ///
    /// Null stays null. Integers widen to floats; floats with no fractional part narrow to
    /// integers; timestamps accept epoch milliseconds or RFC 3339 strings. Anything else
    /// is a [`TypeError`].
    pub fn coerce(&self, ty: ColumnType) -> Result<Value, TypeError> {
        let err = || TypeError {
            expected: ty,
            found: self.kind(),
            value: self.to_string(),
        };
        Ok(match (ty, self) {
            (_, Value::Null) => Value::Null,
            (ColumnType::String, Value::Str(_)) => self.clone(),
            (ColumnType::String, Value::Int(i)) => Value::Str(i.to_string().into()),
            (ColumnType::String, Value::Float(f)) => Value::Str(f.to_string().into()),
            (ColumnType::String, Value::Bool(b)) => Value::Str(b.to_string().into()),
            (ColumnType::Int64, Value::Int(_)) => self.clone(),
            // 2^63 itself does not fit: `i64::MAX as f64` rounds up to it.
            (ColumnType::Int64, Value::Float(f))
                if f.fract() == 0.0 && *f >= -TWO_POW_63 && *f < TWO_POW_63 =>
            {
                Value::Int(*f as i64)
            }
            (ColumnType::Float64, Value::Float(_)) => self.clone(),
            (ColumnType::Float64, Value::Int(i)) => Value::Float(*i as f64),
            (ColumnType::Bool, Value::Bool(_)) => self.clone(),
            (ColumnType::Timestamp, Value::Int(_)) => self.clone(),
            (ColumnType::Timestamp, Value::Float(f)) if f.fract() == 0.0 => Value::Int(*f as i64),
            (ColumnType::Timestamp, Value::Str(s)) => match parse_timestamp_millis(s) {
                Some(ms) => Value::Int(ms),
                None => return Err(err()),
            },
            _ => return Err(err()),
        })
    }

    /// Converts an event field's value to the type the pipeline declares for it
    /// (`fields:`): as [`Value::coerce`], and text that spells a value of the type is
    /// that value (`"42"` is 42 for int64, `"true"` true for bool, `"1700000000000"`
    /// epoch milliseconds for timestamp), since headers and CloudEvents binary
    /// attributes carry nothing but text.
    pub fn coerce_declared(&self, ty: ColumnType) -> Result<Value, TypeError> {
        if let Value::Str(s) = self {
            let t = s.trim();
            let parsed = match ty {
                ColumnType::Int64 | ColumnType::Timestamp => t.parse::<i64>().ok().map(Value::Int),
                ColumnType::Float64 => t
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Float),
                ColumnType::Bool => match t {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                ColumnType::String => None,
            };
            if let Some(v) = parsed {
                return Ok(v);
            }
        }
        self.coerce(ty)
    }
}

/// 2^63 as a float: the first integer above `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Parses an RFC 3339 timestamp into milliseconds since the Unix epoch.
pub fn parse_timestamp_millis(s: &str) -> Option<i64> {
    parse_rfc3339_millis(s).ok()
}

/// [`parse_timestamp_millis`], with chrono's error when `s` is not RFC 3339.
pub(crate) fn parse_rfc3339_millis(s: &str) -> Result<i64, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis())
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            // Bitwise, so that Value can be a hash key (NaN equals NaN here).
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Nested { array: a }, Value::Nested { array: b }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Nested { array } => array.hash(state),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "'{s}'"),
            Value::Nested { array: false } => f.write_str("{...}"),
            Value::Nested { array: true } => f.write_str("[...]"),
        }
    }
}

/// The type of a view column, as written in the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `string`: UTF-8 text.
    String,
    /// `int64`: 64-bit signed integer.
    Int64,
    /// `float64`: 64-bit float.
    Float64,
    /// `bool`: boolean.
    Bool,
    /// `timestamp`: milliseconds since the Unix epoch, UTC (accepts epoch ms or RFC 3339).
    Timestamp,
}

impl ColumnType {
    /// Every type, with the name used in pipeline files.
    pub const ALL: [(&'static str, ColumnType); 5] = [
        ("string", ColumnType::String),
        ("int64", ColumnType::Int64),
        ("float64", ColumnType::Float64),
        ("bool", ColumnType::Bool),
        ("timestamp", ColumnType::Timestamp),
    ];

    /// Looks a type up by its pipeline-file name.
    pub fn from_name(name: &str) -> Option<ColumnType> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// The pipeline-file name of the type.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// True for the types `add` can work on.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int64 | ColumnType::Float64)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that does not fit the column it is written to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected {expected}, found {found} {value}")]
pub struct TypeError {
    /// The column's type.
    pub expected: ColumnType,
    /// The kind of value found.
    pub found: &'static str,
    /// The value, rendered.
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_follows_the_column_type() {
        assert_eq!(
            Value::Int(3).coerce(ColumnType::Float64),
            Ok(Value::Float(3.0))
        );
        assert_eq!(
            Value::Float(3.0).coerce(ColumnType::Int64),
            Ok(Value::Int(3))
        );
        assert!(Value::Float(3.5).coerce(ColumnType::Int64).is_err());
        assert!(
            Value::Float(i64::MAX as f64)
                .coerce(ColumnType::Int64)
                .is_err()
        );
        assert_eq!(
            Value::Float(i64::MIN as f64).coerce(ColumnType::Int64),
            Ok(Value::Int(i64::MIN))
        );
        assert!(Value::Str("x".into()).coerce(ColumnType::Int64).is_err());
        assert_eq!(
            Value::Str("1970-01-01T00:00:01Z".into()).coerce(ColumnType::Timestamp),
            Ok(Value::Int(1000))
        );
        assert_eq!(Value::Null.coerce(ColumnType::Bool), Ok(Value::Null));
        let object = Value::Nested { array: false };
        for (_, ty) in ColumnType::ALL {
            assert!(object.coerce(ty).is_err(), "an object is no {ty}");
        }
    }

    #[test]
    fn declared_fields_also_take_text_that_spells_the_type() {
        let text = |s: &str| Value::Str(s.into());
        assert_eq!(
            text(" 42 ").coerce_declared(ColumnType::Int64),
            Ok(Value::Int(42))
        );
        assert_eq!(
            text("2.5").coerce_declared(ColumnType::Float64),
            Ok(Value::Float(2.5))
        );
        assert_eq!(
            text("true").coerce_declared(ColumnType::Bool),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            text("1000").coerce_declared(ColumnType::Timestamp),
            Ok(Value::Int(1000))
        );
        assert_eq!(
            text("1970-01-01T00:00:01Z").coerce_declared(ColumnType::Timestamp),
            Ok(Value::Int(1000))
        );
        assert_eq!(
            text("42").coerce_declared(ColumnType::String),
            Ok(text("42"))
        );
        assert_eq!(
            Value::Int(7).coerce_declared(ColumnType::Int64),
            Ok(Value::Int(7))
        );
        assert!(text("4.5").coerce_declared(ColumnType::Int64).is_err());
        assert!(text("NaN").coerce_declared(ColumnType::Float64).is_err());
        assert!(text("yes").coerce_declared(ColumnType::Bool).is_err());
        assert!(
            Value::Float(2.5)
                .coerce_declared(ColumnType::Int64)
                .is_err()
        );
    }
}
