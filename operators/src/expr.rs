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

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    ObjectNamePart, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

use crate::fields::{FieldId, FieldRegistry};
use crate::value::Value;

/// Deepest expression tree [`Expr::parse`] accepts (bounds the recursion of compile,
/// eval and drop).
const MAX_DEPTH: usize = 256;

/// What [`Expr::parse`] supports, for error messages.
const SUPPORTED: &str = "only field paths, literals, arithmetic, comparisons, AND/OR/NOT, ||, \
                         IS [NOT] NULL, CASE and tumble(time, 'size') are supported";

/// What [`parse_aggregate`] supports, for error messages.
const SUPPORTED_AGGREGATES: &str =
    "supported aggregates are count(*), count(x), sum(x), min(x), max(x) and avg(x)";

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

/// An expression that does not parse or uses something unsupported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What is wrong, for the user.
    pub message: String,
}

impl ExprError {
    fn new(message: impl Into<String>) -> Self {
        ExprError {
            message: message.into(),
        }
    }
}

/// An expression that failed on one event (e.g. `'a' + 1`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// What is wrong, for the user.
    pub message: String,
}

impl EvalError {
    #[cold]
    fn new(message: String) -> Self {
        EvalError { message }
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
        let ast = parse_sql(text)?;
        Ok(Expr {
            node: compile(&ast, fields, 0)?,
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
        eval_node(&self.node, event).map(Cow::into_owned)
    }

    /// Evaluates the expression as a condition: NULL counts as false, a non-bool value
    /// is an error.
    pub fn eval_bool(&self, event: &[Value]) -> Result<bool, EvalError> {
        match &*eval_node(&self.node, event)? {
            Value::Bool(b) => Ok(*b),
            Value::Null => Ok(false),
            other => Err(EvalError::new(format!(
                "expected a bool condition, found {} {other}",
                other.kind()
            ))),
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

impl AggFn {
    /// The function's SQL name (`count` for both [`AggFn::CountStar`] and [`AggFn::Count`]).
    pub fn name(self) -> &'static str {
        match self {
            AggFn::CountStar | AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
        }
    }
}

/// Parses an aggregate column expression such as `count(*)` or `sum(payload.amount)`.
/// The argument is `None` only for `count(*)`.
pub fn parse_aggregate(
    text: &str,
    fields: &mut FieldRegistry,
) -> Result<(AggFn, Option<Expr>), ExprError> {
    let ast = parse_sql(text)?;
    let mut ast = &ast;
    while let ast::Expr::Nested(inner) = ast {
        ast = inner;
    }
    let ast::Expr::Function(f) = ast else {
        return Err(ExprError::new(format!(
            "expected an aggregate such as count(*), sum(x), min(x), max(x), avg(x), found `{text}`"
        )));
    };
    let bad = |why: &str| ExprError::new(format!("unsupported aggregate `{f}`: {why}"));
    let name = match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => id.value.to_ascii_lowercase(),
        _ => return Err(bad(SUPPORTED_AGGREGATES)),
    };
    let agg = match name.as_str() {
        "count" => AggFn::Count,
        "sum" => AggFn::Sum,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "avg" => AggFn::Avg,
        _ => return Err(bad(SUPPORTED_AGGREGATES)),
    };
    if f.filter.is_some() {
        return Err(bad(
            "FILTER (WHERE ...) is not supported; filter the view instead",
        ));
    }
    if f.over.is_some() {
        return Err(bad("window functions (OVER) are not supported"));
    }
    if f.uses_odbc_syntax
        || f.null_treatment.is_some()
        || !f.within_group.is_empty()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(bad(SUPPORTED_AGGREGATES));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(bad(SUPPORTED_AGGREGATES));
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(bad("DISTINCT is not supported"));
    }
    if !list.clauses.is_empty() {
        return Err(bad(
            "clauses such as ORDER BY inside the call are not supported",
        ));
    }
    let [arg] = list.args.as_slice() else {
        return Err(bad(&format!(
            "{name} takes exactly one argument; {SUPPORTED_AGGREGATES}"
        )));
    };
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if agg == AggFn::Count => {
            Ok((AggFn::CountStar, None))
        }
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok((
            agg,
            Some(Expr {
                node: compile(e, fields, 1)?,
            }),
        )),
        _ => Err(bad(SUPPORTED_AGGREGATES)),
    }
}

// ---------------------------------------------------------------------------------------
// Parsing and compiling
// ---------------------------------------------------------------------------------------

/// Parses `text` as exactly one SQL expression (trailing input is an error).
fn parse_sql(text: &str) -> Result<ast::Expr, ExprError> {
    let dialect = GenericDialect {};
    let invalid = |e: ParserError| {
        let why = match e {
            ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
            ParserError::RecursionLimitExceeded => "expression is nested too deeply".to_string(),
        };
        ExprError::new(format!("invalid expression `{text}`: {why}"))
    };
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(invalid)?;
    let expr = parser.parse_expr().map_err(invalid)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError::new(format!(
            "invalid expression `{text}`: unexpected `{}` after the end of the expression \
             at line {}, column {}",
            next.token, next.span.start.line, next.span.start.column
        )));
    }
    Ok(expr)
}

fn unsupported(e: &ast::Expr) -> ExprError {
    ExprError::new(format!("unsupported expression `{e}`: {SUPPORTED}"))
}

fn compile(e: &ast::Expr, fields: &mut FieldRegistry, depth: usize) -> Result<Node, ExprError> {
    if depth > MAX_DEPTH {
        return Err(ExprError::new(format!(
            "expression is nested too deeply (more than {MAX_DEPTH} levels)"
        )));
    }
    let d = depth + 1;
    let mut sub = |x: &ast::Expr| compile(x, fields, d).map(Box::new);
    let node = match e {
        ast::Expr::Function(f) if is_function(f, "tumble") => {
            return compile_tumble(e, f, fields, d);
        }
        ast::Expr::Identifier(_)
        | ast::Expr::CompoundIdentifier(_)
        | ast::Expr::CompoundFieldAccess { .. }
        | ast::Expr::Function(_) => {
            let mut segments = Vec::new();
            if !field_path(e, &mut segments) {
                return Err(unsupported(e));
            }
            let path = segments.join(".");
            if let Some(Err(why)) = crate::fields::KafkaField::parse(&path) {
                return Err(ExprError::new(why));
            }
            return Ok(Node::Field(fields.intern(&path)));
        }
        ast::Expr::Value(v) => return Ok(Node::Literal(literal(&v.value, e)?)),
        ast::Expr::Nested(inner) => return compile(inner, fields, d),
        ast::Expr::UnaryOp { op, expr } => {
            let op = match op {
                UnaryOperator::Minus => {
                    // `-9223372036854775808` must stay an integer.
                    if let ast::Expr::Value(v) = &**expr
                        && let ast::Value::Number(n, _) = &v.value
                    {
                        return Ok(Node::Literal(number(&format!("-{n}"), e)?));
                    }
                    UnOp::Neg
                }
                UnaryOperator::Plus => UnOp::Plus,
                UnaryOperator::Not => UnOp::Not,
                _ => return Err(unsupported(e)),
            };
            Node::Unary(op, sub(expr)?)
        }
        ast::Expr::BinaryOp { left, op, right } => {
            let op = binary_op(op).ok_or_else(|| unsupported(e))?;
            let (l, r) = (sub(left)?, sub(right)?);
            match op {
                Logic::And => Node::And(l, r),
                Logic::Or => Node::Or(l, r),
                Logic::Op(op) => Node::Binary(op, l, r),
            }
        }
        ast::Expr::IsNull(x) => Node::IsNull {
            expr: sub(x)?,
            negated: false,
        },
        ast::Expr::IsNotNull(x) => Node::IsNull {
            expr: sub(x)?,
            negated: true,
        },
        ast::Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let operand = operand.as_deref().map(&mut sub).transpose()?;
            let whens = conditions
                .iter()
                .map(|w| Ok((*sub(&w.condition)?, *sub(&w.result)?)))
                .collect::<Result<Vec<_>, ExprError>>()?;
            let otherwise = else_result.as_deref().map(&mut sub).transpose()?;
            return Ok(Node::Case {
                operand,
                whens,
                otherwise,
            });
        }
        _ => return Err(unsupported(e)),
    };
    Ok(fold(node))
}

/// True when `f` is a call of the function `name` (case-insensitive, unqualified) with
/// an argument list.
fn is_function(f: &ast::Function, name: &str) -> bool {
    matches!(&f.name.0[..], [ObjectNamePart::Identifier(id)] if id.value.eq_ignore_ascii_case(name))
        && matches!(f.args, FunctionArguments::List(_))
}

/// `tumble(time, 'size')`: `size` is a duration literal (`10s`, `1m`, `500ms`, humantime
/// syntax), at least 1ms and a whole number of milliseconds.
fn compile_tumble(
    e: &ast::Expr,
    f: &ast::Function,
    fields: &mut FieldRegistry,
    depth: usize,
) -> Result<Node, ExprError> {
    let usage = || {
        ExprError::new(format!(
            "`{e}`: tumble takes a time and a window size literal, e.g. tumble(date_time, '10s')"
        ))
    };
    let FunctionArguments::List(list) = &f.args else {
        return Err(usage());
    };
    if list.duplicate_treatment.is_some()
        || !list.clauses.is_empty()
        || f.filter.is_some()
        || f.over.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(usage());
    }
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(time)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(size)),
    ] = &list.args[..]
    else {
        return Err(usage());
    };
    let size = match size {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s,
            _ => return Err(usage()),
        },
        _ => return Err(usage()),
    };
    let size_ms = humantime::parse_duration(size)
        .ok()
        .filter(|d| d.subsec_nanos() % 1_000_000 == 0)
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms >= 1)
        .ok_or_else(|| {
            ExprError::new(format!(
                "`{e}`: bad window size '{size}': expected a duration of whole milliseconds, \
                 at least 1ms, like '10s', '1m' or '500ms'"
            ))
        })?;
    Ok(Node::Tumble {
        time: Box::new(compile(time, fields, depth)?),
        size_ms,
    })
}

/// The start of the tumbling window of `size_ms` that holds `v` (epoch ms or RFC 3339).
fn tumble(v: &Value, size_ms: i64) -> Result<Value, EvalError> {
    let ms = match v {
        Value::Null => return Ok(Value::Null),
        Value::Int(i) => *i,
        Value::Float(f) if f.fract() == 0.0 && (-9.2e18..9.2e18).contains(f) => *f as i64,
        Value::Str(s) => match crate::value::parse_timestamp_millis(s) {
            Some(ms) => ms,
            None => {
                return Err(EvalError::new(format!(
                    "tumble: '{s}' is not an RFC 3339 timestamp"
                )));
            }
        },
        other => {
            return Err(EvalError::new(format!(
                "tumble: expected a timestamp (epoch milliseconds or RFC 3339), found {} {other}",
                other.kind()
            )));
        }
    };
    // Floor, not truncation: windows before 1970 start before their events too.
    Ok(Value::Int(ms - ms.rem_euclid(size_ms)))
}

/// Collects the segments of a field path (`a`, `a.b.c`, `"Quoted".b`). Keywords that
/// sqlparser reads as niladic functions (`user`, `payload.current_date`) count as
/// segments too. False when `e` is not a plain path.
fn field_path<'e>(e: &'e ast::Expr, segments: &mut Vec<&'e str>) -> bool {
    match e {
        ast::Expr::Identifier(id) => segments.push(&id.value),
        // `$kafka.key`: sqlparser reads `$kafka` as a placeholder.
        ast::Expr::Value(v)
            if segments.is_empty()
                && matches!(&v.value, ast::Value::Placeholder(p) if p == crate::fields::KAFKA_ROOT) =>
        {
            segments.push(crate::fields::KAFKA_ROOT);
        }
        ast::Expr::CompoundIdentifier(ids) => segments.extend(ids.iter().map(|i| i.value.as_str())),
        ast::Expr::Function(f)
            if matches!(f.args, FunctionArguments::None)
                && matches!(f.parameters, FunctionArguments::None)
                && f.filter.is_none()
                && f.over.is_none()
                && f.null_treatment.is_none()
                && f.within_group.is_empty()
                && !f.uses_odbc_syntax =>
        {
            for part in &f.name.0 {
                match part {
                    ObjectNamePart::Identifier(id) => segments.push(&id.value),
                    ObjectNamePart::Function(_) => return false,
                }
            }
        }
        ast::Expr::CompoundFieldAccess { root, access_chain } => {
            if !field_path(root, segments) {
                return false;
            }
            for access in access_chain {
                match access {
                    ast::AccessExpr::Dot(x) if field_path(x, segments) => {}
                    _ => return false,
                }
            }
        }
        _ => return false,
    }
    true
}

/// A supported sqlparser binary operator.
enum Logic {
    And,
    Or,
    Op(BinOp),
}

fn binary_op(op: &BinaryOperator) -> Option<Logic> {
    Some(Logic::Op(match op {
        BinaryOperator::And => return Some(Logic::And),
        BinaryOperator::Or => return Some(Logic::Or),
        BinaryOperator::Plus => BinOp::Add,
        BinaryOperator::Minus => BinOp::Sub,
        BinaryOperator::Multiply => BinOp::Mul,
        BinaryOperator::Divide => BinOp::Div,
        BinaryOperator::Modulo => BinOp::Mod,
        BinaryOperator::Eq => BinOp::Eq,
        BinaryOperator::NotEq => BinOp::NotEq,
        BinaryOperator::Lt => BinOp::Lt,
        BinaryOperator::LtEq => BinOp::LtEq,
        BinaryOperator::Gt => BinOp::Gt,
        BinaryOperator::GtEq => BinOp::GtEq,
        BinaryOperator::StringConcat => BinOp::Concat,
        _ => return None,
    }))
}

/// Replaces an operator node whose operands are all constants by its value (when it
/// evaluates without error: `1 / 0` stays, and fails per event).
fn fold(node: Node) -> Node {
    let lit = |n: &Node| matches!(n, Node::Literal(_));
    let constant = match &node {
        Node::Unary(_, e) | Node::IsNull { expr: e, .. } => lit(e),
        Node::Binary(_, l, r) | Node::And(l, r) | Node::Or(l, r) => lit(l) && lit(r),
        _ => false,
    };
    if constant && let Ok(v) = eval_node(&node, &[]) {
        return Node::Literal(v.into_owned());
    }
    node
}

fn literal(v: &ast::Value, e: &ast::Expr) -> Result<Value, ExprError> {
    Ok(match v {
        ast::Value::Number(n, _) => number(&n.to_string(), e)?,
        ast::Value::SingleQuotedString(s)
        | ast::Value::EscapedStringLiteral(s)
        | ast::Value::UnicodeStringLiteral(s)
        | ast::Value::TripleSingleQuotedString(s) => Value::Str(Arc::from(s.as_str())),
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        _ => return Err(unsupported(e)),
    })
}

fn number(text: &str, e: &ast::Expr) -> Result<Value, ExprError> {
    let float = || {
        text.parse::<f64>()
            .map(Value::Float)
            .map_err(|_| ExprError::new(format!("invalid number `{text}` in `{e}`")))
    };
    if text.contains(['.', 'e', 'E']) {
        return float();
    }
    match text.parse::<i64>() {
        Ok(i) => Ok(Value::Int(i)),
        Err(_) => float(),
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

fn eval_node<'a>(node: &'a Node, event: &'a [Value]) -> Result<Cow<'a, Value>, EvalError> {
    Ok(match node {
        Node::Field(id) => Cow::Borrowed(&event[id.index()]),
        Node::Literal(v) => Cow::Borrowed(v),
        Node::Unary(op, e) => {
            let v = eval_node(e, event)?;
            match (op, &*v) {
                (_, Value::Null) => v,
                (UnOp::Neg, Value::Int(i)) => match i.checked_neg() {
                    Some(n) => Cow::Owned(Value::Int(n)),
                    None => return Err(EvalError::new(format!("integer overflow: -({i})"))),
                },
                (UnOp::Neg, Value::Float(f)) => Cow::Owned(Value::Float(-f)),
                (UnOp::Plus, Value::Int(_) | Value::Float(_)) => v,
                (UnOp::Not, Value::Bool(b)) => Cow::Owned(Value::Bool(!b)),
                (UnOp::Neg, other) => return Err(cannot_apply("-", other)),
                (UnOp::Plus, other) => return Err(cannot_apply("+", other)),
                (UnOp::Not, other) => return Err(cannot_apply("NOT", other)),
            }
        }
        Node::Binary(op, l, r) => {
            let l = eval_node(l, event)?;
            let r = eval_node(r, event)?;
            Cow::Owned(binary(*op, &l, &r)?)
        }
        Node::And(l, r) => {
            let a = truth("AND", &*eval_node(l, event)?)?;
            if a == Some(false) {
                return Ok(Cow::Owned(Value::Bool(false)));
            }
            let b = truth("AND", &*eval_node(r, event)?)?;
            Cow::Owned(match (a, b) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            })
        }
        Node::Or(l, r) => {
            let a = truth("OR", &*eval_node(l, event)?)?;
            if a == Some(true) {
                return Ok(Cow::Owned(Value::Bool(true)));
            }
            let b = truth("OR", &*eval_node(r, event)?)?;
            Cow::Owned(match (a, b) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            })
        }
        Node::IsNull { expr, negated } => {
            Cow::Owned(Value::Bool(eval_node(expr, event)?.is_null() != *negated))
        }
        Node::Case {
            operand,
            whens,
            otherwise,
        } => {
            match operand {
                None => {
                    for (cond, result) in whens {
                        let c = eval_node(cond, event)?;
                        match &*c {
                            Value::Bool(true) => return eval_node(result, event),
                            Value::Bool(false) | Value::Null => {}
                            other => {
                                return Err(EvalError::new(format!(
                                    "CASE WHEN condition must be a bool, found {} {other}",
                                    other.kind()
                                )));
                            }
                        }
                    }
                }
                Some(operand) => {
                    let v = eval_node(operand, event)?;
                    for (when, result) in whens {
                        let w = eval_node(when, event)?;
                        if compare(BinOp::Eq, &v, &w)? == Value::Bool(true) {
                            return eval_node(result, event);
                        }
                    }
                }
            }
            match otherwise {
                Some(e) => eval_node(e, event)?,
                None => Cow::Owned(Value::Null),
            }
        }
        Node::Tumble { time, size_ms } => Cow::Owned(tumble(&*eval_node(time, event)?, *size_ms)?),
    })
}

/// The truth value of an `AND`/`OR` operand: `None` for NULL.
#[inline]
fn truth(op: &str, v: &Value) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        other => Err(cannot_apply(op, other)),
    }
}

#[cold]
fn cannot_apply(op: &str, v: &Value) -> EvalError {
    EvalError::new(format!("cannot apply {op} to {} {v}", v.kind()))
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    match op {
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => arith(op, l, r),
        BinOp::Concat => concat(l, r),
        BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
            compare(op, l, r)
        }
    }
}

fn arith(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    match (l, r) {
        (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
        (Value::Int(a), Value::Int(b)) => int_arith(op, *a, *b),
        (Value::Int(a), Value::Float(b)) => float_arith(op, *a as f64, *b),
        (Value::Float(a), Value::Int(b)) => float_arith(op, *a, *b as f64),
        (Value::Float(a), Value::Float(b)) => float_arith(op, *a, *b),
        (Value::Int(_) | Value::Float(_), other) | (other, _) => {
            Err(cannot_apply(op.symbol(), other))
        }
    }
}

#[cold]
fn division_by_zero() -> EvalError {
    EvalError::new("division by zero".to_string())
}

fn int_arith(op: BinOp, a: i64, b: i64) -> Result<Value, EvalError> {
    let result = match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div if b == 0 => return Err(division_by_zero()),
        BinOp::Div => a.checked_div(b),
        BinOp::Mod if b == 0 => return Err(division_by_zero()),
        // i64::MIN % -1 is 0 (checked_rem would call it an overflow).
        BinOp::Mod => Some(a.wrapping_rem(b)),
        _ => unreachable!("not an arithmetic operator"),
    };
    match result {
        Some(v) => Ok(Value::Int(v)),
        None => Err(EvalError::new(format!(
            "integer overflow: {a} {} {b}",
            op.symbol()
        ))),
    }
}

fn float_arith(op: BinOp, a: f64, b: f64) -> Result<Value, EvalError> {
    Ok(Value::Float(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div | BinOp::Mod if b == 0.0 => return Err(division_by_zero()),
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        _ => unreachable!("not an arithmetic operator"),
    }))
}

/// Compares an integer with a float exactly (no rounding of large integers).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^63 is exactly representable; every i64 is below it and at or above -2^63.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_63 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)),
        o => Some(o),
    }
}

fn compare(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    let ord = match (l, r) {
        (Value::Null, _) | (_, Value::Null) => return Ok(Value::Null),
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::Float(b)) => cmp_int_float(*a, *b),
        (Value::Float(a), Value::Int(b)) => cmp_int_float(*b, *a).map(Ordering::reverse),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::Str(a), Value::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => {
            return Err(EvalError::new(format!(
                "cannot compare {} {l} with {} {r}",
                l.kind(),
                r.kind()
            )));
        }
    };
    // An unordered pair (NaN) is unequal to everything.
    let Some(o) = ord else {
        return Ok(Value::Bool(op == BinOp::NotEq));
    };
    Ok(Value::Bool(match op {
        BinOp::Eq => o.is_eq(),
        BinOp::NotEq => o.is_ne(),
        BinOp::Lt => o.is_lt(),
        BinOp::LtEq => o.is_le(),
        BinOp::Gt => o.is_gt(),
        BinOp::GtEq => o.is_ge(),
        _ => unreachable!("not a comparison operator"),
    }))
}

/// `||`: concatenates two strings; a number or bool next to a string is rendered as
/// text (as PostgreSQL does). Two non-strings are an error.
fn concat(l: &Value, r: &Value) -> Result<Value, EvalError> {
    fn push(out: &mut String, v: &Value) {
        match v {
            Value::Str(s) => out.push_str(s),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Null | Value::Nested { .. } => {}
        }
    }
    match (l, r) {
        (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
        (Value::Nested { .. }, _) | (_, Value::Nested { .. }) => Err(EvalError::new(format!(
            "cannot apply || to {} {l} and {} {r}",
            l.kind(),
            r.kind()
        ))),
        (Value::Str(_), _) | (_, Value::Str(_)) => {
            let mut s = String::with_capacity(32);
            push(&mut s, l);
            push(&mut s, r);
            Ok(Value::Str(Arc::from(s)))
        }
        _ => Err(EvalError::new(format!(
            "cannot apply || to {} {l} and {} {r}",
            l.kind(),
            r.kind()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    /// Parses `text` and evaluates it against fields given as `(path, value)`.
    fn eval_with(text: &str, event: &[(&str, Value)]) -> Result<Value, EvalError> {
        let mut fields = FieldRegistry::new();
        for (p, _) in event {
            fields.intern(p);
        }
        let e = Expr::parse(text, &mut fields).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut slots = vec![Value::Null; fields.len()];
        for (p, v) in event {
            slots[fields.get(p).unwrap().index()] = v.clone();
        }
        e.eval(&slots)
    }

    fn ev(text: &str) -> Value {
        eval_with(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn eval_err(text: &str) -> String {
        match eval_with(text, &[]) {
            Ok(v) => panic!("{text}: expected an error, got {v:?}"),
            Err(e) => e.message,
        }
    }

    fn parse_err(text: &str) -> String {
        match Expr::parse(text, &mut FieldRegistry::new()) {
            Ok(e) => panic!("{text}: expected an error, got {e:?}"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn literals() {
        assert_eq!(ev("42"), Value::Int(42));
        assert_eq!(ev("-5"), Value::Int(-5));
        assert_eq!(ev("-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(
            ev("9223372036854775808"),
            Value::Float(9223372036854775808.0)
        );
        assert_eq!(ev("1.5"), Value::Float(1.5));
        assert_eq!(ev("1e3"), Value::Float(1000.0));
        assert_eq!(ev("'it''s'"), s("it's"));
        assert_eq!(ev("TRUE"), Value::Bool(true));
        assert_eq!(ev("false"), Value::Bool(false));
        assert_eq!(ev("NULL"), Value::Null);
        assert_eq!(ev("(((7)))"), Value::Int(7));
    }

    #[test]
    fn constants_are_folded() {
        let mut f = FieldRegistry::new();
        assert_eq!(
            Expr::parse("-5", &mut f).unwrap().as_literal(),
            Some(&Value::Int(-5))
        );
        assert_eq!(
            Expr::parse("1 + 2 * 3", &mut f).unwrap().as_literal(),
            Some(&Value::Int(7))
        );
        assert_eq!(
            Expr::parse("'a' || 'b'", &mut f).unwrap().as_literal(),
            Some(&s("ab"))
        );
        // Errors are not folded: they fail per event instead.
        let div = Expr::parse("1 / 0", &mut f).unwrap();
        assert_eq!(div.as_literal(), None);
        assert_eq!(div.eval(&[]).unwrap_err().message, "division by zero");
        assert!(f.is_empty());
    }

    #[test]
    fn kafka_metadata_paths() {
        let mut f = FieldRegistry::new();
        let k = Expr::parse("$kafka.key", &mut f).unwrap();
        let h = Expr::parse("$kafka.headers.\"trace-id\"", &mut f).unwrap();
        Expr::parse("$kafka.timestamp + 1", &mut f).unwrap();
        assert_eq!(k.as_field(), f.get("$kafka.key"));
        assert_eq!(h.as_field(), f.get("$kafka.headers.trace-id"));
        assert_eq!(
            f.kafka_fields(),
            [
                (0, crate::fields::KafkaField::Key),
                (1, crate::fields::KafkaField::Header("trace-id".into())),
                (2, crate::fields::KafkaField::Timestamp),
            ]
        );
        let e = Expr::parse("$kafka.value", &mut f).unwrap_err().to_string();
        assert!(e.contains("unknown Kafka field '$kafka.value'"), "{e}");
        // The decoder leaves metadata slots alone: a JSON key "$kafka" is not read.
        let d = crate::decode::JsonDecoder::new(&f);
        let mut out = vec![Value::Null; d.slots()];
        d.decode(br#"{"$kafka":{"key":"json"}}"#, &mut out).unwrap();
        assert!(out.iter().all(Value::is_null));
    }

    #[test]
    fn field_paths_are_interned() {
        let mut f = FieldRegistry::new();
        let a = Expr::parse("payload.amount", &mut f).unwrap();
        let b = Expr::parse("payload.amount + 1", &mut f).unwrap();
        let c = Expr::parse("eventType", &mut f).unwrap();
        let d = Expr::parse("a.b.c", &mut f).unwrap();
        let q = Expr::parse("\"payload\".\"Amount\"", &mut f).unwrap();
        assert_eq!(a.as_field(), f.get("payload.amount"));
        assert_eq!(c.as_field(), f.get("eventType"));
        assert_eq!(d.as_field(), f.get("a.b.c"));
        assert_eq!(q.as_field(), f.get("payload.Amount"));
        assert_eq!(b.as_field(), None);
        assert_eq!(
            f.paths(),
            ["payload.amount", "eventType", "a.b.c", "payload.Amount"]
        );
        assert_eq!(Expr::parse("payload.amount", &mut f).unwrap(), a);
        assert_eq!(Expr::field(f.get("eventType").unwrap()), c);
        assert_eq!(
            Expr::literal(Value::Int(1)).as_literal(),
            Some(&Value::Int(1))
        );
    }

    #[test]
    fn keywords_as_field_names() {
        let names = [
            "timestamp",
            "version",
            "value",
            "type",
            "key",
            "date",
            "user",
            "time",
            "current_timestamp",
            "current_user",
            "Status",
            "end",
        ];
        for name in names {
            for path in [
                name.to_string(),
                format!("{name}.x.{name}"),
                format!("x.{name}.y"),
            ] {
                let mut f = FieldRegistry::new();
                let e = Expr::parse(&path, &mut f).unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(e.as_field(), f.get(&path), "{path}");
                assert_eq!(f.len(), 1, "{path}");
            }
            let mut f = FieldRegistry::new();
            let e = Expr::parse(&format!("payload.{name} > 1"), &mut f)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(f.get(&format!("payload.{name}")).is_some(), "{e:?}");
        }
        // Some keywords need quotes at the start of a path.
        let mut f = FieldRegistry::new();
        let e = Expr::parse("\"interval\" + payload.interval", &mut f).unwrap();
        assert_eq!(e.as_field(), None);
        assert_eq!(f.paths(), ["interval", "payload.interval"]);
        assert!(Expr::parse("user(1)", &mut f).is_err());
    }

    #[test]
    fn arithmetic() {
        let ev_amount = |text: &str, v: Value| eval_with(text, &[("payload.amount", v)]).unwrap();
        assert_eq!(
            ev_amount("payload.amount * 2", Value::Int(21)),
            Value::Int(42)
        );
        assert_eq!(
            ev_amount("payload.amount * 2", Value::Float(1.25)),
            Value::Float(2.5)
        );
        assert_eq!(ev_amount("-payload.amount", Value::Int(3)), Value::Int(-3));
        assert_eq!(
            ev_amount("+payload.amount", Value::Float(3.5)),
            Value::Float(3.5)
        );
        assert_eq!(ev_amount("payload.amount + 1", Value::Null), Value::Null);
        assert_eq!(ev("7 / 2"), Value::Int(3));
        assert_eq!(ev("-7 / 2"), Value::Int(-3));
        assert_eq!(ev("7 % 3"), Value::Int(1));
        assert_eq!(ev("-7 % 3"), Value::Int(-1));
        assert_eq!(ev("7.0 / 2"), Value::Float(3.5));
        assert_eq!(ev("1 + 0.5"), Value::Float(1.5));
        assert_eq!(ev("10 - 2 - 3"), Value::Int(5));
        assert_eq!(ev("2 + 3 * 4"), Value::Int(14));
        assert_eq!(ev("(2 + 3) * 4"), Value::Int(20));
        assert_eq!(ev("5.5 % 2"), Value::Float(1.5));
        assert_eq!(ev("NULL - 1"), Value::Null);
        assert_eq!(ev("-NULL"), Value::Null);
        assert_eq!(
            eval_with("-9223372036854775808 % -1", &[]).unwrap(),
            Value::Int(0)
        );
    }

    #[test]
    fn arithmetic_errors() {
        assert_eq!(eval_err("1 / 0"), "division by zero");
        assert_eq!(eval_err("1 % 0"), "division by zero");
        assert_eq!(eval_err("1.0 / 0"), "division by zero");
        assert_eq!(eval_err("1 / 0.0"), "division by zero");
        assert_eq!(eval_err("1.5 % 0.0"), "division by zero");
        assert!(eval_err("9223372036854775807 + 1").contains("integer overflow"));
        assert!(eval_err("-9223372036854775808 - 1").contains("integer overflow"));
        assert!(eval_err("4611686018427387904 * 2").contains("integer overflow"));
        assert!(eval_err("-9223372036854775808 / -1").contains("integer overflow"));
        let m = eval_with("-x", &[("x", Value::Int(i64::MIN))])
            .unwrap_err()
            .message;
        assert!(m.contains("integer overflow"), "{m}");
        assert_eq!(eval_err("-'abc'"), "cannot apply - to string 'abc'");
        assert_eq!(eval_err("'abc' + 1"), "cannot apply + to string 'abc'");
        assert_eq!(eval_err("1 * TRUE"), "cannot apply * to bool true");
        assert_eq!(eval_err("+'x'"), "cannot apply + to string 'x'");
    }

    #[test]
    fn comparisons() {
        assert_eq!(ev("1 < 2"), Value::Bool(true));
        assert_eq!(ev("2 <= 2"), Value::Bool(true));
        assert_eq!(ev("3 > 4"), Value::Bool(false));
        assert_eq!(ev("3 >= 4"), Value::Bool(false));
        assert_eq!(ev("1 = 1.0"), Value::Bool(true));
        assert_eq!(ev("1 <> 1.5"), Value::Bool(true));
        assert_eq!(ev("1 != 1"), Value::Bool(false));
        assert_eq!(ev("1.5 > 1"), Value::Bool(true));
        assert_eq!(
            ev("9007199254740993 > 9007199254740992.0"),
            Value::Bool(true)
        );
        assert_eq!(
            ev("9223372036854775807 < 9223372036854775808"),
            Value::Bool(true)
        );
        assert_eq!(ev("'abc' < 'abd'"), Value::Bool(true));
        assert_eq!(ev("'B' < 'a'"), Value::Bool(true));
        assert_eq!(ev("'x' = 'x'"), Value::Bool(true));
        assert_eq!(ev("FALSE < TRUE"), Value::Bool(true));
        assert_eq!(ev("NULL = NULL"), Value::Null);
        assert_eq!(ev("1 < NULL"), Value::Null);
        let event = [("eventType", s("MoneyDeposited"))];
        assert_eq!(
            eval_with("eventType = 'MoneyDeposited'", &event).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval_with("eventType <> 'Other'", &event).unwrap(),
            Value::Bool(true)
        );
        let nan = [("x", Value::Float(f64::NAN))];
        assert_eq!(eval_with("x = x", &nan).unwrap(), Value::Bool(false));
        assert_eq!(eval_with("x <> 1", &nan).unwrap(), Value::Bool(true));
        assert_eq!(eval_with("x < 1", &nan).unwrap(), Value::Bool(false));
    }

    #[test]
    fn int_float_comparison_is_exact() {
        let two_63 = i64::MAX as f64; // rounds up to 2^63
        for (i, f, expected) in [
            (0i64, 0.0f64, Some(Ordering::Equal)),
            (0, -0.0, Some(Ordering::Equal)),
            (0, -0.5, Some(Ordering::Greater)),
            (-1, -0.5, Some(Ordering::Less)),
            (3, 3.0000001, Some(Ordering::Less)),
            (-3, -3.0000001, Some(Ordering::Greater)),
            (1 << 53, 9007199254740992.0, Some(Ordering::Equal)),
            ((1 << 53) + 1, 9007199254740992.0, Some(Ordering::Greater)),
            (i64::MAX, two_63, Some(Ordering::Less)),
            (i64::MIN, -two_63, Some(Ordering::Equal)),
            (i64::MIN, -1e19, Some(Ordering::Greater)),
            (i64::MAX, 1e19, Some(Ordering::Less)),
            (5, f64::INFINITY, Some(Ordering::Less)),
            (5, f64::NEG_INFINITY, Some(Ordering::Greater)),
            (1, f64::NAN, None),
        ] {
            assert_eq!(cmp_int_float(i, f), expected, "{i} vs {f}");
            let (l, r) = (Value::Int(i), Value::Float(f));
            let lt = compare(BinOp::Lt, &l, &r).unwrap();
            assert_eq!(
                lt,
                Value::Bool(expected == Some(Ordering::Less)),
                "{i} < {f}"
            );
            let gt = compare(BinOp::Gt, &r, &l).unwrap();
            assert_eq!(
                gt,
                Value::Bool(expected == Some(Ordering::Less)),
                "{f} > {i}"
            );
            let eq = compare(BinOp::Eq, &r, &l).unwrap();
            assert_eq!(
                eq,
                Value::Bool(expected == Some(Ordering::Equal)),
                "{f} = {i}"
            );
        }
    }

    #[test]
    fn comparison_errors() {
        assert_eq!(
            eval_err("'abc' = 1"),
            "cannot compare string 'abc' with integer 1"
        );
        assert_eq!(
            eval_err("TRUE < 1.5"),
            "cannot compare bool true with float 1.5"
        );
    }

    #[test]
    fn logic_is_three_valued() {
        let cases = [
            ("TRUE AND TRUE", Value::Bool(true)),
            ("TRUE AND FALSE", Value::Bool(false)),
            ("FALSE AND NULL", Value::Bool(false)),
            ("NULL AND FALSE", Value::Bool(false)),
            ("TRUE AND NULL", Value::Null),
            ("NULL AND NULL", Value::Null),
            ("FALSE OR FALSE", Value::Bool(false)),
            ("TRUE OR NULL", Value::Bool(true)),
            ("NULL OR TRUE", Value::Bool(true)),
            ("FALSE OR NULL", Value::Null),
            ("NULL OR NULL", Value::Null),
            ("NOT TRUE", Value::Bool(false)),
            ("NOT NULL", Value::Null),
            ("NOT (1 > 2)", Value::Bool(true)),
            ("1 < 2 AND 2 < 3 OR FALSE", Value::Bool(true)),
        ];
        for (text, expected) in cases {
            assert_eq!(ev(text), expected, "{text}");
        }
        // Short-circuit: the right side is not evaluated when the left decides.
        assert_eq!(ev("FALSE AND 1 / 0 = 1"), Value::Bool(false));
        assert_eq!(ev("TRUE OR 1 / 0 = 1"), Value::Bool(true));
        let guard = [("x", Value::Int(0))];
        assert_eq!(
            eval_with("x <> 0 AND 10 / x > 1", &guard).unwrap(),
            Value::Bool(false)
        );
    }

    #[test]
    fn logic_errors() {
        assert_eq!(eval_err("NOT 1"), "cannot apply NOT to integer 1");
        assert_eq!(eval_err("1 AND TRUE"), "cannot apply AND to integer 1");
        assert_eq!(eval_err("TRUE AND 'x'"), "cannot apply AND to string 'x'");
        assert_eq!(eval_err("FALSE OR 2.5"), "cannot apply OR to float 2.5");
    }

    #[test]
    fn is_null() {
        let event = [("a", Value::Null), ("b", Value::Int(1))];
        assert_eq!(eval_with("a IS NULL", &event).unwrap(), Value::Bool(true));
        assert_eq!(eval_with("b IS NULL", &event).unwrap(), Value::Bool(false));
        assert_eq!(
            eval_with("a IS NOT NULL", &event).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(
            eval_with("b IS NOT NULL", &event).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval_with("(a + 1) IS NULL", &event).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(ev("NULL IS NULL"), Value::Bool(true));
    }

    #[test]
    fn concat() {
        assert_eq!(ev("'a' || 'b' || 'c'"), s("abc"));
        assert_eq!(ev("'v' || 7"), s("v7"));
        assert_eq!(ev("1.5 || 'x'"), s("1.5x"));
        assert_eq!(ev("'is ' || TRUE"), s("is true"));
        assert_eq!(ev("'a' || NULL"), Value::Null);
        let event = [("aggregateId", s("acc-1")), ("version", Value::Int(3))];
        assert_eq!(
            eval_with("aggregateId || '@' || version", &event).unwrap(),
            s("acc-1@3")
        );
        assert_eq!(
            eval_err("1 || 2"),
            "cannot apply || to integer 1 and integer 2"
        );
    }

    #[test]
    fn case() {
        let kind = |amount: i64| {
            eval_with(
                "CASE WHEN amount > 100 THEN 'big' WHEN amount > 10 THEN 'medium' ELSE 'small' END",
                &[("amount", Value::Int(amount))],
            )
            .unwrap()
        };
        assert_eq!(kind(500), s("big"));
        assert_eq!(kind(50), s("medium"));
        assert_eq!(kind(5), s("small"));
        assert_eq!(ev("CASE WHEN NULL THEN 1 END"), Value::Null);
        assert_eq!(
            ev("CASE WHEN FALSE THEN 1 WHEN TRUE THEN 2 END"),
            Value::Int(2)
        );
        assert_eq!(
            ev("CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END"),
            s("two")
        );
        assert_eq!(
            ev("CASE NULL WHEN NULL THEN 'null' ELSE 'other' END"),
            s("other")
        );
        assert_eq!(
            eval_err("CASE WHEN 1 THEN 2 END"),
            "CASE WHEN condition must be a bool, found integer 1"
        );
        assert_eq!(
            eval_err("CASE 'a' WHEN 1 THEN 2 END"),
            "cannot compare string 'a' with integer 1"
        );
    }

    #[test]
    fn eval_bool_treats_null_as_false() {
        let mut f = FieldRegistry::new();
        let e = Expr::parse("amount > 10", &mut f).unwrap();
        assert!(e.eval_bool(&[Value::Int(11)]).unwrap());
        assert!(!e.eval_bool(&[Value::Int(1)]).unwrap());
        assert!(!e.eval_bool(&[Value::Null]).unwrap());
        let e = Expr::parse("amount", &mut f).unwrap();
        assert!(e.eval_bool(&[Value::Bool(true)]).unwrap());
        let err = e.eval_bool(&[Value::Int(1)]).unwrap_err().message;
        assert_eq!(err, "expected a bool condition, found integer 1");
    }

    #[test]
    fn field_eval_shares_strings() {
        let mut f = FieldRegistry::new();
        let e = Expr::parse("eventType", &mut f).unwrap();
        let event = [s("MoneyDeposited")];
        let (Value::Str(a), Value::Str(b)) = (&event[0], e.eval(&event).unwrap()) else {
            panic!("not strings");
        };
        assert!(Arc::ptr_eq(a, &b));
    }

    #[test]
    fn unsupported_constructs() {
        for text in [
            "foo(x)",
            "x IN (1, 2)",
            "x BETWEEN 1 AND 2",
            "x LIKE 'a%'",
            "CAST(x AS INT)",
            "a & b",
            "(SELECT 1)",
            "x[1]",
            "?",
            "~x",
        ] {
            let m = parse_err(text);
            assert!(m.starts_with("unsupported expression `"), "{text}: {m}");
            assert!(m.contains(SUPPORTED), "{text}: {m}");
        }
        assert_eq!(
            parse_err("foo(x)"),
            format!("unsupported expression `foo(x)`: {SUPPORTED}")
        );
    }

    #[test]
    fn parse_errors() {
        for text in ["a b", "1; drop", "1 +", "", "(a", "a = = b", "'open"] {
            let m = parse_err(text);
            assert!(
                m.starts_with(&format!("invalid expression `{text}`: ")),
                "{text}: {m}"
            );
        }
        assert!(parse_err("a b").contains("unexpected `b`"));
        assert!(parse_err("1; drop").contains("unexpected `;`"));
    }

    #[test]
    fn deep_expressions_are_rejected_not_overflowed() {
        let chain = vec!["1"; 2000].join(" + ");
        let m = parse_err(&chain);
        assert!(m.contains("nested too deeply"), "{m}");
        let nested = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        let m = parse_err(&nested);
        assert!(m.contains("nested too deeply"), "{m}");
        // A moderately long chain is fine.
        assert_eq!(ev(&vec!["1"; 100].join(" + ")), Value::Int(100));
    }

    #[test]
    fn aggregates() {
        let mut f = FieldRegistry::new();
        assert_eq!(
            parse_aggregate("count(*)", &mut f).unwrap(),
            (AggFn::CountStar, None)
        );
        assert_eq!(
            parse_aggregate("COUNT( * )", &mut f).unwrap(),
            (AggFn::CountStar, None)
        );
        assert!(f.is_empty());
        let (agg, e) = parse_aggregate("sum(payload.amount)", &mut f).unwrap();
        assert_eq!(agg, AggFn::Sum);
        assert_eq!(e.unwrap().as_field(), f.get("payload.amount"));
        let (agg, e) = parse_aggregate("count(customer)", &mut f).unwrap();
        assert_eq!(agg, AggFn::Count);
        assert_eq!(e.unwrap().as_field(), f.get("customer"));
        assert_eq!(parse_aggregate("Min(x)", &mut f).unwrap().0, AggFn::Min);
        assert_eq!(parse_aggregate("MAX(x)", &mut f).unwrap().0, AggFn::Max);
        let (agg, e) = parse_aggregate("avg(price * qty)", &mut f).unwrap();
        assert_eq!(agg, AggFn::Avg);
        let e = e.unwrap();
        let mut slots = vec![Value::Null; f.len()];
        slots[f.get("price").unwrap().index()] = Value::Float(2.5);
        slots[f.get("qty").unwrap().index()] = Value::Int(4);
        assert_eq!(e.eval(&slots).unwrap(), Value::Float(10.0));
        assert_eq!(AggFn::CountStar.name(), "count");
        assert_eq!(AggFn::Avg.name(), "avg");
    }

    #[test]
    fn aggregate_errors() {
        let err = |text: &str| {
            parse_aggregate(text, &mut FieldRegistry::new())
                .unwrap_err()
                .message
        };
        for text in ["x", "x + 1", "'count(*)'", "1"] {
            assert!(
                err(text).starts_with(
                    "expected an aggregate such as count(*), sum(x), min(x), max(x), avg(x)"
                ),
                "{text}: {}",
                err(text)
            );
        }
        for (text, needle) in [
            ("count(DISTINCT x)", "DISTINCT"),
            ("count(x) FILTER (WHERE x > 1)", "FILTER"),
            ("sum(x) OVER (PARTITION BY y)", "OVER"),
            ("sum(x, y)", "exactly one argument"),
            ("sum()", "exactly one argument"),
            ("median(x)", SUPPORTED_AGGREGATES),
            ("sum(*)", SUPPORTED_AGGREGATES),
            ("pg_catalog.sum(x)", SUPPORTED_AGGREGATES),
        ] {
            let m = err(text);
            assert!(m.starts_with("unsupported aggregate `"), "{text}: {m}");
            assert!(m.contains(needle), "{text}: {m}");
        }
        assert!(err("sum(foo(x))").starts_with("unsupported expression `foo(x)`"));
        assert!(err("sum(x) y").starts_with("invalid expression `sum(x) y`"));
        assert!(err("sum(").starts_with("invalid expression `sum(`"));
    }

    #[test]
    fn tumble_gives_the_window_start() {
        let t = |text: &str, v: Value| eval_with(text, &[("t", v)]);
        assert_eq!(t("tumble(t, '10s')", Value::Int(0)).unwrap(), Value::Int(0));
        assert_eq!(
            t("tumble(t, '10s')", Value::Int(9_999)).unwrap(),
            Value::Int(0)
        );
        assert_eq!(
            t("tumble(t, '10s')", Value::Int(10_000)).unwrap(),
            Value::Int(10_000)
        );
        assert_eq!(
            t("TUMBLE(t, '1m')", Value::Int(1_767_225_659_999)).unwrap(),
            Value::Int(1_767_225_600_000)
        );
        // Floor, not truncation, before the epoch.
        assert_eq!(
            t("tumble(t, '10s')", Value::Int(-1)).unwrap(),
            Value::Int(-10_000)
        );
        assert_eq!(
            t("tumble(t, '500ms')", Value::Float(1_250.0)).unwrap(),
            Value::Int(1_000)
        );
        assert_eq!(
            t("tumble(t, '1h')", s("2026-01-01T10:59:59.999Z")).unwrap(),
            Value::Int(1_767_261_600_000)
        );
        assert_eq!(t("tumble(t, '10s')", Value::Null).unwrap(), Value::Null);
        // It nests like any expression.
        assert_eq!(
            t("tumble(t + 5000, '10s') + 1", Value::Int(6_000)).unwrap(),
            Value::Int(10_001)
        );
        for bad in [s("yesterday"), Value::Bool(true), Value::Float(1.5)] {
            let e = t("tumble(t, '10s')", bad.clone()).unwrap_err().message;
            assert!(e.starts_with("tumble:"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tumble_needs_a_time_and_a_size_literal() {
        for (text, needle) in [
            ("tumble(t)", "takes a time and a window size literal"),
            (
                "tumble(t, '10s', 1)",
                "takes a time and a window size literal",
            ),
            ("tumble(t, 10)", "takes a time and a window size literal"),
            ("tumble(t, size)", "takes a time and a window size literal"),
            ("tumble(t, '10 parsecs')", "bad window size '10 parsecs'"),
            ("tumble(t, '0s')", "bad window size '0s'"),
            ("tumble(t, '1us')", "bad window size '1us'"),
            (
                "tumble(DISTINCT t, '1s')",
                "takes a time and a window size literal",
            ),
            ("hop(t, '1s')", "unsupported expression"),
        ] {
            let m = parse_err(text);
            assert!(m.contains(needle), "{text}: {m}");
        }
    }
}
