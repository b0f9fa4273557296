//! Parsing and compiling: SQL text to the expression tree of [`Expr`](super::Expr).
//!
//! sqlparser reads the text into its AST; [`compile`] turns the supported subset of that
//! AST into a [`Node`] tree, interning every field path into the [`FieldRegistry`] and
//! folding operators whose operands are all constants.

use std::sync::Arc;

use sqlparser::ast::{
    self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart,
    UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::eval::eval_node;
use super::{BinOp, ExprError, Func, Node, UnOp};
use crate::fields::FieldRegistry;
use crate::value::Value;

/// Deepest expression tree [`Expr::parse`](super::Expr::parse) accepts (bounds the
/// recursion of compile, eval and drop).
pub(super) const MAX_DEPTH: usize = 256;

/// What [`Expr::parse`](super::Expr::parse) supports, for error messages.
pub(super) const SUPPORTED: &str = "only field paths, literals, arithmetic, comparisons, \
                                    AND/OR/NOT, ||, IS [NOT] NULL, CASE, CAST, \
                                    coalesce, lower, upper, trim, length, replace, substr \
                                    and tumble(time, 'size') are supported";

/// Parses `text` as exactly one SQL expression (trailing input is an error).
pub(super) fn parse_sql(text: &str) -> Result<ast::Expr, ExprError> {
    let dialect = GenericDialect {};
    let invalid = |source| ExprError::Syntax {
        text: text.to_string(),
        source,
    };
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(invalid)?;
    let expr = parser.parse_expr().map_err(invalid)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError::TrailingInput {
            text: text.to_string(),
            token: next.token.to_string(),
            line: next.span.start.line,
            column: next.span.start.column,
        });
    }
    Ok(expr)
}

fn unsupported(e: &ast::Expr) -> ExprError {
    ExprError::Unsupported {
        expr: e.to_string(),
    }
}

/// Compiles `e`, found `depth` levels deep in the expression, into a tree.
pub(super) fn compile(
    e: &ast::Expr,
    fields: &mut FieldRegistry,
    depth: usize,
) -> Result<Node, ExprError> {
    if depth > MAX_DEPTH {
        return Err(ExprError::TooDeep);
    }
    let d = depth + 1;
    let mut sub = |x: &ast::Expr| compile(x, fields, d).map(Box::new);
    let node = match e {
        ast::Expr::Function(f) if is_function(f, "tumble") => {
            return compile_tumble(e, f, fields, d);
        }
        ast::Expr::Function(f) if Func::ALL.iter().any(|(_, name, ..)| is_function(f, name)) => {
            return compile_call(e, f, fields, d);
        }
        ast::Expr::Trim { .. } | ast::Expr::Substring { .. } | ast::Expr::Cast { .. } => {
            return compile_special(e, fields, d);
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
            if let Some(Err(_)) = crate::fields::KafkaField::parse(&path) {
                return Err(ExprError::UnknownKafkaField { path });
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

/// `TRIM(x)`, `SUBSTRING(x FROM a [FOR n])` and `CAST(x AS t)`, which sqlparser reads
/// as syntax of their own. Apart from [`compile`] so that its frame, which recursion
/// multiplies, stays small.
#[inline(never)]
fn compile_special(e: &ast::Expr, fields: &mut FieldRegistry, d: usize) -> Result<Node, ExprError> {
    let mut sub = |x: &ast::Expr| compile(x, fields, d).map(Box::new);
    let node = match e {
        ast::Expr::Trim {
            trim_where: None,
            trim_what: None,
            expr,
            trim_characters: None,
        } => Node::Call(Func::Trim, vec![*sub(expr)?]),
        ast::Expr::Substring {
            expr,
            substring_from: Some(from),
            substring_for,
            ..
        } => {
            let mut args = vec![*sub(expr)?, *sub(from)?];
            if let Some(n) = substring_for {
                args.push(*sub(n)?);
            }
            Node::Call(Func::Substr, args)
        }
        ast::Expr::Cast {
            kind,
            expr,
            data_type,
            ..
        } => {
            let to = cast_type(&data_type.to_string()).ok_or_else(|| ExprError::CastType {
                expr: e.to_string(),
                to: data_type.to_string(),
            })?;
            let lenient = matches!(kind, ast::CastKind::TryCast | ast::CastKind::SafeCast);
            Node::Cast(sub(expr)?, to, lenient)
        }
        _ => return Err(unsupported(e)),
    };
    Ok(fold(node))
}

/// The arguments of a plain call `f(a, b, ...)`: `None` for a call with `DISTINCT`,
/// `FILTER`, `OVER`, clauses or parameters, which no scalar function here takes.
fn plain_args(f: &ast::Function) -> Option<&[FunctionArg]> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let plain = list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && f.filter.is_none()
        && f.over.is_none()
        && matches!(f.parameters, FunctionArguments::None);
    plain.then_some(&list.args[..])
}

/// The column type a SQL type name casts to.
fn cast_type(name: &str) -> Option<crate::value::ColumnType> {
    use crate::value::ColumnType as T;
    let upper = name.to_ascii_uppercase();
    let base = upper.split(['(', ' ']).next().unwrap_or("");
    Some(match base {
        "BIGINT" | "INT" | "INTEGER" | "INT64" | "INT8" | "SMALLINT" => T::Int64,
        "DOUBLE" | "FLOAT" | "FLOAT64" | "FLOAT8" | "REAL" | "NUMERIC" | "DECIMAL" => T::Float64,
        "VARCHAR" | "TEXT" | "STRING" | "CHAR" => T::String,
        "BOOLEAN" | "BOOL" => T::Bool,
        "TIMESTAMP" => T::Timestamp,
        _ => return None,
    })
}

/// A scalar function call ([`Func`]): plain arguments, in the function's count.
fn compile_call(
    e: &ast::Expr,
    f: &ast::Function,
    fields: &mut FieldRegistry,
    depth: usize,
) -> Result<Node, ExprError> {
    let (func, _, min, max, usage) = *Func::ALL
        .iter()
        .find(|(_, name, ..)| is_function(f, name))
        .expect("checked by the caller");
    let bad = || ExprError::FunctionUsage {
        expr: e.to_string(),
        usage,
    };
    let args = plain_args(f)
        .filter(|a| (min..=max).contains(&a.len()))
        .ok_or_else(bad)?;
    let args = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => compile(x, fields, depth),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(fold(Node::Call(func, args)))
}

/// `tumble(time, 'size')`: `size` is a duration literal (`10s`, `1m`, `500ms`, humantime
/// syntax), at least 1ms and a whole number of milliseconds.
fn compile_tumble(
    e: &ast::Expr,
    f: &ast::Function,
    fields: &mut FieldRegistry,
    depth: usize,
) -> Result<Node, ExprError> {
    let usage = || ExprError::TumbleUsage {
        expr: e.to_string(),
    };
    let Some(
        [
            FunctionArg::Unnamed(FunctionArgExpr::Expr(time)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(size)),
        ],
    ) = plain_args(f)
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
    let bad_size = |source| ExprError::TumbleSize {
        expr: e.to_string(),
        size: size.clone(),
        source,
    };
    let d = humantime::parse_duration(size).map_err(|err| bad_size(Some(err)))?;
    let size_ms = i64::try_from(d.as_millis())
        .ok()
        .filter(|ms| d.subsec_nanos() % 1_000_000 == 0 && *ms >= 1)
        .ok_or_else(|| bad_size(None))?;
    Ok(Node::Tumble {
        time: Box::new(compile(time, fields, depth)?),
        size_ms,
    })
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
        Node::Call(_, args) => args.iter().all(lit),
        Node::Cast(e, ..) => lit(e),
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
            .map_err(|source| ExprError::InvalidNumber {
                text: text.to_string(),
                expr: e.to_string(),
                source,
            })
    };
    if text.contains(['.', 'e', 'E']) {
        return float();
    }
    match text.parse::<i64>() {
        Ok(i) => Ok(Value::Int(i)),
        Err(_) => float(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;
    use crate::expr::tests::{ev, parse_err, s};

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
        assert_eq!(div.eval(&[]).unwrap_err().to_string(), "division by zero");
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
    fn unsupported_constructs() {
        for text in [
            "foo(x)",
            "x IN (1, 2)",
            "x BETWEEN 1 AND 2",
            "x LIKE 'a%'",
            "TRIM(BOTH 'x' FROM y)",
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
