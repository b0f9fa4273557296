//! SQL scalar expressions over event fields.
//!
//! An expression such as `payload.amount * 2` or `eventType = 'MoneyDeposited' AND
//! version > 1` is parsed once with `sqlparser` and compiled into a small private tree
//! whose field references are slots of a [`FieldRegistry`]. Evaluation then reads a
//! decoded event (`&[Value]`) and allocates only when it produces a new string.
//!
//! Semantics follow SQL: NULL propagates through arithmetic, comparisons, `||` and
//! `NOT`; `AND`/`OR` use three-valued logic. Integer arithmetic is checked (overflow is
//! an [`EvalError`]), any float operand makes the result a float, and division or
//! modulo by zero is an error.
//!
//! This module holds [`Expr`] and the tree it compiles to; the work is done in:
//!
//! - `compile`: sqlparser's AST to the tree (field paths, literals, constant folding,
//!   `tumble`),
//! - `eval`: the tree against one decoded event,
//! - `aggregate`: aggregate view columns such as `sum(x)` ([`parse_aggregate`]),
//! - `error`: what parsing ([`ExprError`]) and evaluation ([`EvalError`]) report.

mod aggregate;
mod compile;
mod error;
mod eval;

use std::borrow::Cow;

use crate::fields::{FieldId, FieldRegistry};
use crate::value::Value;

pub use self::aggregate::{AggFn, parse_aggregate};
pub use self::error::{AggregateIssue, EvalError, ExprError};

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
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    IsNull {
        expr: Box<Node>,
        negated: bool,
    },
    Case {
        /// `CASE <operand> WHEN <value> ...` (simple form) when present.
        operand: Option<Box<Node>>,
        whens: Vec<(Node, Node)>,
        otherwise: Option<Box<Node>>,
    },
    /// `tumble(time, 'size')`: the start (epoch ms) of the tumbling window of `size_ms`
    /// milliseconds, aligned to the Unix epoch, that holds `time`.
    Tumble {
        time: Box<Node>,
        size_ms: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnOp {
    Neg,
    Plus,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Concat,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::Concat => "||",
        }
    }
}

impl Expr {
    /// Parses `text` as a SQL scalar expression, interning every field path it reads.
    ///
    /// Supported: field paths (`version`, `payload.amount`, `"quoted".segments`),
    /// literals (integers, floats, `'strings'`, `TRUE`/`FALSE`, `NULL`), unary `-`/`+`/
    /// `NOT`, `+ - * / %`, `= <> != < <= > >=`, `AND`, `OR`, `||`, `IS [NOT] NULL`,
    /// parentheses and `CASE ... END`. Literal-only subtrees are folded to constants.
    pub fn parse(text: &str, fields: &mut FieldRegistry) -> Result<Expr, ExprError> {
        let ast = compile::parse_sql(text)?;
        Ok(Expr {
            node: compile::compile(&ast, fields, 0)?,
        })
    }

    /// An expression that is just the field `id`.
    pub fn field(id: FieldId) -> Expr {
        Expr {
            node: Node::Field(id),
        }
    }

    /// A constant expression.
    pub fn literal(v: Value) -> Expr {
        Expr {
            node: Node::Literal(v),
        }
    }

    /// The field this expression reads, when it is nothing but a field reference.
    pub fn as_field(&self) -> Option<FieldId> {
        match &self.node {
            Node::Field(id) => Some(*id),
            _ => None,
        }
    }

    /// The value of this expression, when it is a constant.
    pub fn as_literal(&self) -> Option<&Value> {
        match &self.node {
            Node::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// Evaluates the expression against one decoded event.
    ///
    /// `event` must have a slot for every field of the registry the expression was
    /// parsed with (it panics otherwise).
    pub fn eval(&self, event: &[Value]) -> Result<Value, EvalError> {
        eval::eval_node(&self.node, event).map(Cow::into_owned)
    }

    /// Evaluates the expression as a condition: NULL counts as false, a non-bool value
    /// is an error.
    pub fn eval_bool(&self, event: &[Value]) -> Result<bool, EvalError> {
        match &*eval::eval_node(&self.node, event)? {
            Value::Bool(b) => Ok(*b),
            Value::Null => Ok(false),
            other => Err(EvalError::NotABool {
                found: other.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
