//! SQL scalar expressions over event fields (HELPER A implements this file).

use crate::fields::{FieldId, FieldRegistry};
use crate::value::Value;

/// A compiled scalar expression. Field references are resolved to slots of a
/// [`FieldRegistry`] at parse time, so evaluation reads a flat `&[Value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Field(FieldId),
    Literal(Value),
}

/// An expression that does not parse or uses something unsupported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What is wrong, for the user.
    pub message: String,
}

/// An expression that failed on one event (e.g. `'a' + 1`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// What is wrong, for the user.
    pub message: String,
}

impl Expr {
    /// Parses `text` as a SQL scalar expression, interning every field path it reads.
    pub fn parse(text: &str, fields: &mut FieldRegistry) -> Result<Expr, ExprError> {
        let _ = (text, fields);
        todo!()
    }

    /// An expression that is just the field `id`.
    pub fn field(id: FieldId) -> Expr {
        Expr { node: Node::Field(id) }
    }

    /// A constant expression.
    pub fn literal(v: Value) -> Expr {
        Expr { node: Node::Literal(v) }
    }

    /// Evaluates the expression against one decoded event.
    pub fn eval(&self, event: &[Value]) -> Result<Value, EvalError> {
        match &self.node {
            Node::Field(id) => Ok(event[id.index()].clone()),
            Node::Literal(v) => Ok(v.clone()),
        }
    }
}

/// An aggregate function, as written in an aggregate view column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// `count(*)`: rows.
    CountStar,
    /// `count(x)`: rows where `x` is not null.
    Count,
    /// `sum(x)`.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `avg(x)`.
    Avg,
}

/// Parses an aggregate column expression such as `count(*)` or `sum(payload.amount)`.
/// The argument is `None` only for `count(*)`.
pub fn parse_aggregate(
    text: &str,
    fields: &mut FieldRegistry,
) -> Result<(AggFn, Option<Expr>), ExprError> {
    let _ = (text, fields);
    todo!()
}
