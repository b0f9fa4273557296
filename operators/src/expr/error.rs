//! What goes wrong with an expression: [`ExprError`] when it is parsed (a pipeline that
//! does not load), [`EvalError`] when it is evaluated (one bad record).
//!
//! Each kind of failure is a variant that keeps what it is about, and the error that
//! caused it where there is one (sqlparser's, a number's, a duration's, a timestamp's).
//! The `Display` text is the message users see.

use std::fmt;
use std::num::ParseFloatError;
use std::sync::Arc;

use sqlparser::parser::ParserError;

use super::aggregate::SUPPORTED_AGGREGATES;
use super::compile::{MAX_DEPTH, SUPPORTED};
use crate::fields::KafkaField;
use crate::value::Value;

/// An expression that does not parse or uses something unsupported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    /// sqlparser cannot read the text.
    #[error("invalid expression `{text}`: {}", syntax_reason(.source))]
    Syntax {
        /// The expression, as written.
        text: String,
        /// sqlparser's error.
        source: ParserError,
    },
    /// Something follows a complete expression.
    #[error(
        "invalid expression `{text}`: unexpected `{token}` after the end of the expression \
         at line {line}, column {column}"
    )]
    TrailingInput {
        /// The expression, as written.
        text: String,
        /// The first token after the expression.
        token: String,
        /// Its line (from 1).
        line: u64,
        /// Its column (from 1).
        column: u64,
    },
    /// A construct outside the supported subset of SQL.
    #[error("unsupported expression `{expr}`: {}", SUPPORTED)]
    Unsupported {
        /// The construct, as sqlparser renders it.
        expr: String,
    },
    /// The expression tree is deeper than the compiler follows.
    #[error("expression is nested too deeply (more than {} levels)", MAX_DEPTH)]
    TooDeep,
    /// A `$kafka` path that names no piece of record metadata.
    #[error("{}", KafkaField::unknown(path))]
    UnknownKafkaField {
        /// The path, as interned.
        path: String,
    },
    /// A number literal that is not a number.
    #[error("invalid number `{text}` in `{expr}`")]
    InvalidNumber {
        /// The literal.
        text: String,
        /// The expression it is part of.
        expr: String,
        /// Why it does not parse as a float.
        source: ParseFloatError,
    },
    /// `tumble` called with other than a time and a window size literal.
    #[error(
        "`{expr}`: tumble takes a time and a window size literal, e.g. tumble(date_time, '10s')"
    )]
    TumbleUsage {
        /// The call.
        expr: String,
    },
    /// A call of a scalar function with the wrong number of arguments (or other than
    /// plain ones).
    #[error("`{expr}`: {usage}")]
    FunctionUsage {
        /// The call.
        expr: String,
        /// How the function is called.
        usage: &'static str,
    },
    /// A `CAST` to a type that is not a column type.
    #[error("`{expr}`: cannot cast to {to}: use BIGINT, DOUBLE, VARCHAR, BOOLEAN or TIMESTAMP")]
    CastType {
        /// The cast.
        expr: String,
        /// The type asked for.
        to: String,
    },
    /// A `tumble` window size that is not a duration of whole milliseconds, at least 1ms.
    #[error(
        "`{expr}`: bad window size '{size}': expected a duration of whole milliseconds, \
         at least 1ms, like '10s', '1m' or '500ms'"
    )]
    TumbleSize {
        /// The call.
        expr: String,
        /// The size, as written.
        size: String,
        /// Why it is not a duration; `None` when it is one, but not of whole
        /// milliseconds or shorter than 1ms.
        source: Option<humantime::DurationError>,
    },
    /// An aggregate column that is not a function call.
    #[error(
        "expected an aggregate such as count(*), sum(x), min(x), max(x), avg(x), found `{text}`"
    )]
    NotAnAggregate {
        /// The column expression, as written.
        text: String,
    },
    /// An aggregate call outside the supported forms.
    #[error("unsupported aggregate `{call}`: {issue}")]
    UnsupportedAggregate {
        /// The call, as sqlparser renders it.
        call: String,
        /// What is not supported.
        issue: AggregateIssue,
    },
}

/// sqlparser's reason, without its prefix.
fn syntax_reason(e: &ParserError) -> &str {
    match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
        ParserError::RecursionLimitExceeded => "expression is nested too deeply",
    }
}

/// Why an aggregate call is not supported (see [`ExprError::UnsupportedAggregate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateIssue {
    /// Not one of the supported functions, or a form of call they do not take.
    Unsupported,
    /// `FILTER (WHERE ...)`.
    Filter,
    /// A window function (`OVER`).
    Over,
    /// `DISTINCT`.
    Distinct,
    /// Clauses such as `ORDER BY` inside the call.
    Clauses,
    /// Other than exactly one argument.
    Arity {
        /// The function (lower case).
        name: String,
    },
}

impl fmt::Display for AggregateIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateIssue::Unsupported => f.write_str(SUPPORTED_AGGREGATES),
            AggregateIssue::Filter => {
                f.write_str("FILTER (WHERE ...) is not supported; filter the view instead")
            }
            AggregateIssue::Over => f.write_str("window functions (OVER) are not supported"),
            AggregateIssue::Distinct => f.write_str("DISTINCT is not supported"),
            AggregateIssue::Clauses => {
                f.write_str("clauses such as ORDER BY inside the call are not supported")
            }
            AggregateIssue::Arity { name } => {
                write!(
                    f,
                    "{name} takes exactly one argument; {SUPPORTED_AGGREGATES}"
                )
            }
        }
    }
}

/// An expression that failed on one event (e.g. `'a' + 1`).
///
/// Values are kept as found; the message shows each with its kind (`string 'a'`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Division or modulo by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// `-x` of the smallest integer.
    #[error("integer overflow: -({value})")]
    NegOverflow {
        /// The operand.
        value: i64,
    },
    /// Integer `+ - * /` whose result does not fit in an int64.
    #[error("integer overflow: {left} {op} {right}")]
    Overflow {
        /// The left operand.
        left: i64,
        /// The operator (`+`, `-`, `*` or `/`).
        op: &'static str,
        /// The right operand.
        right: i64,
    },
    /// An operator applied to a value of a kind it does not take.
    #[error("cannot apply {op} to {} {operand}", .operand.kind())]
    CannotApply {
        /// The operator (`-`, `NOT`, `AND`, `+`, ...).
        op: &'static str,
        /// The offending operand.
        operand: Value,
    },
    /// `||` of two values that are not strings, or of an object or array.
    #[error("cannot apply || to {} {left} and {} {right}", .left.kind(), .right.kind())]
    CannotConcat {
        /// The left operand.
        left: Value,
        /// The right operand.
        right: Value,
    },
    /// A comparison of values of kinds that do not compare.
    #[error("cannot compare {} {left} with {} {right}", .left.kind(), .right.kind())]
    CannotCompare {
        /// The left operand.
        left: Value,
        /// The right operand.
        right: Value,
    },
    /// A `CASE WHEN` condition that is not a bool.
    #[error("CASE WHEN condition must be a bool, found {} {found}", .found.kind())]
    CaseCondition {
        /// The condition's value.
        found: Value,
    },
    /// A condition ([`Expr::eval_bool`](super::Expr::eval_bool)) that is not a bool.
    #[error("expected a bool condition, found {} {found}", .found.kind())]
    NotABool {
        /// The condition's value.
        found: Value,
    },
    /// A function given an argument of a kind it does not take.
    #[error("{func}: expected {expected}, found {} {found}", .found.kind())]
    BadArgument {
        /// The function.
        func: &'static str,
        /// What it takes.
        expected: &'static str,
        /// The argument's value.
        found: Value,
    },
    /// A `CAST` of a value that does not convert.
    #[error("cannot cast {} {found} to {to}", .found.kind())]
    Cast {
        /// The value.
        found: Value,
        /// The type.
        to: crate::value::ColumnType,
    },
    /// A `tumble` time given as a string that is not an RFC 3339 timestamp.
    #[error("tumble: '{text}' is not an RFC 3339 timestamp")]
    TumbleNotRfc3339 {
        /// The string.
        text: Arc<str>,
        /// chrono's error.
        source: chrono::ParseError,
    },
    /// A `tumble` time that is neither epoch milliseconds nor a string.
    #[error(
        "tumble: expected a timestamp (epoch milliseconds or RFC 3339), found {} {found}",
        .found.kind()
    )]
    TumbleNotATimestamp {
        /// The time's value.
        found: Value,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;
    use crate::fields::FieldRegistry;
    use std::error::Error as _;

    fn parse(text: &str) -> ExprError {
        Expr::parse(text, &mut FieldRegistry::new()).unwrap_err()
    }

    #[test]
    fn parse_errors_are_typed_and_keep_their_sources() {
        let e = parse("a b");
        assert!(matches!(e, ExprError::TrailingInput { ref token, .. } if token == "b"));
        let e = parse("1 +");
        assert!(matches!(e, ExprError::Syntax { .. }), "{e:?}");
        assert!(e.source().unwrap().is::<ParserError>());
        let e = parse("tumble(t, 'soon')");
        assert!(
            e.source().unwrap().is::<humantime::DurationError>(),
            "{e:?}"
        );
        let e = parse("tumble(t, '1us')");
        assert!(
            matches!(e, ExprError::TumbleSize { source: None, .. }),
            "{e:?}"
        );
        assert_eq!(
            parse("$kafka.nope").to_string(),
            KafkaField::parse("$kafka.nope").unwrap().unwrap_err()
        );
        let e = super::super::parse_aggregate("sum(x, y)", &mut FieldRegistry::new()).unwrap_err();
        assert_eq!(
            e,
            ExprError::UnsupportedAggregate {
                call: "sum(x, y)".into(),
                issue: AggregateIssue::Arity { name: "sum".into() },
            }
        );
    }

    #[test]
    fn eval_errors_are_typed_and_keep_their_values() {
        let mut f = FieldRegistry::new();
        let e = Expr::parse("'a' < 1", &mut f)
            .unwrap()
            .eval(&[])
            .unwrap_err();
        assert_eq!(
            e,
            EvalError::CannotCompare {
                left: Value::Str("a".into()),
                right: Value::Int(1),
            }
        );
        let e = Expr::parse("tumble(t, '1s')", &mut f).unwrap();
        let err = e.eval(&[Value::Str("soon".into())]).unwrap_err();
        assert!(err.source().unwrap().is::<chrono::ParseError>(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "tumble: 'soon' is not an RFC 3339 timestamp"
        );
    }
}
