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
use crate::value::{ColumnType, Value};

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
    /// A scalar function: `coalesce(a, b, ...)`, `lower(s)`, ...
    Call(Func, Vec<Node>),
    /// `CAST(x AS type)` (`x::type`); with `true`, `TRY_CAST`: null where the value
    /// does not convert.
    Cast(Box<Node>, ColumnType, bool),
}

/// The scalar functions, for upcasting fields (see [`Node::Call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    /// The first argument that is not null.
    Coalesce,
    Lower,
    Upper,
    Trim,
    /// Characters in a string.
    Length,
    /// `replace(s, from, to)`.
    Replace,
    /// `substr(s, start[, count])`, 1-based, in characters.
    Substr,
}

impl Func {
    /// Every function: name, and the argument counts it takes (inclusive).
    const ALL: [(Func, &'static str, usize, usize, &'static str); 7] = [
        (
            Func::Coalesce,
            "coalesce",
            1,
            usize::MAX,
            "coalesce takes one or more values",
        ),
        (Func::Lower, "lower", 1, 1, "lower takes one string"),
        (Func::Upper, "upper", 1, 1, "upper takes one string"),
        (Func::Trim, "trim", 1, 1, "trim takes one string"),
        (Func::Length, "length", 1, 1, "length takes one string"),
        (
            Func::Replace,
            "replace",
            3,
            3,
            "replace takes a string, what to replace and its replacement",
        ),
        (
            Func::Substr,
            "substr",
            2,
            3,
            "substr takes a string, a 1-based start and optionally a length",
        ),
    ];

    fn name(self) -> &'static str {
        Func::ALL
            .iter()
            .find(|(f, ..)| *f == self)
            .map_or("?", |(_, n, ..)| n)
    }
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

    /// The type the expression's values have when the fields it reads have the types
    /// `field_type` gives, as far as that can be told before running it: field
    /// references, literals, unary `-`/`+`, `+ - * %` (int64 with int64 is int64, a
    /// float64 operand makes float64), `||` (string) and `CASE` whose branches agree.
    /// `None` when it cannot be told, or when no field it reads has a known type (an
    /// expression of literals alone keeps the column's default).
    pub fn static_type(
        &self,
        field_type: &dyn Fn(FieldId) -> Option<ColumnType>,
    ) -> Option<ColumnType> {
        let mut typed_field = false;
        let ty = node_type(&self.node, field_type, &mut typed_field)?;
        typed_field.then_some(ty)
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

fn node_type(
    node: &Node,
    field_type: &dyn Fn(FieldId) -> Option<ColumnType>,
    typed_field: &mut bool,
) -> Option<ColumnType> {
    use ColumnType::{Float64, Int64};
    let mut ty = |n: &Node| node_type(n, field_type, typed_field);
    match node {
        Node::Field(id) => {
            let t = field_type(*id)?;
            *typed_field = true;
            Some(t)
        }
        Node::Literal(v) => match v {
            Value::Int(_) => Some(Int64),
            Value::Float(_) => Some(Float64),
            Value::Str(_) => Some(ColumnType::String),
            Value::Bool(_) => Some(ColumnType::Bool),
            _ => None,
        },
        Node::Unary(UnOp::Neg | UnOp::Plus, x) => ty(x).filter(|t| t.is_numeric()),
        Node::Unary(UnOp::Not, _) => Some(ColumnType::Bool),
        Node::Binary(op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Mod), a, b) => {
            let (a, b) = (ty(a)?, ty(b)?);
            match (a, b) {
                (Int64, Int64) => Some(Int64),
                (Int64 | Float64, Int64 | Float64) if *op != BinOp::Mod => Some(Float64),
                _ => None,
            }
        }
        Node::Binary(BinOp::Concat, _, _) => Some(ColumnType::String),
        Node::Cast(_, to, _) => Some(*to),
        Node::Call(Func::Length, _) => Some(Int64),
        Node::Call(Func::Lower | Func::Upper | Func::Trim | Func::Replace | Func::Substr, _) => {
            Some(ColumnType::String)
        }
        Node::Case {
            whens, otherwise, ..
        } => {
            let mut out: Option<ColumnType> = None;
            for then in whens.iter().map(|(_, t)| t).chain(otherwise.as_deref()) {
                let t = ty(then)?;
                if out.is_some_and(|o| o != t) {
                    return None;
                }
                out = Some(t);
            }
            out
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
