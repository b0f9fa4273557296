//! Evaluation: the expression tree against one decoded event.
//!
//! Values are borrowed from the event or the tree where they can be (a field, a
//! literal), so evaluation allocates only when it produces a new string. NULL
//! propagates, `AND`/`OR` are three-valued and short-circuit, integer arithmetic is
//! checked.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use super::{BinOp, EvalError, Func, Node, UnOp};
use crate::value::{ColumnType, Value};

/// Evaluates `node` against one decoded event, borrowing what it can (a field's or a
/// literal's value).
pub(super) fn eval_node<'a>(
    node: &'a Node,
    event: &'a [Value],
) -> Result<Cow<'a, Value>, EvalError> {
    Ok(match node {
        Node::Field(id) => Cow::Borrowed(&event[id.index()]),
        Node::Literal(v) => Cow::Borrowed(v),
        Node::Unary(op, e) => {
            let v = eval_node(e, event)?;
            match (op, &*v) {
                (_, Value::Null) => v,
                (UnOp::Neg, Value::Int(i)) => match i.checked_neg() {
                    Some(n) => Cow::Owned(Value::Int(n)),
                    None => return Err(EvalError::NegOverflow { value: *i }),
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
                                return Err(EvalError::CaseCondition {
                                    found: other.clone(),
                                });
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
        Node::Call(..) | Node::Cast(..) => return eval_function(node, event),
    })
}

/// [`Node::Call`] and [`Node::Cast`]: apart from [`eval_node`] so that its frame, which
/// recursion multiplies, stays small.
#[inline(never)]
fn eval_function<'a>(node: &'a Node, event: &'a [Value]) -> Result<Cow<'a, Value>, EvalError> {
    Ok(match node {
        Node::Call(Func::Coalesce, args) => {
            for a in args {
                let v = eval_node(a, event)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Cow::Owned(Value::Null)
        }
        Node::Call(func, args) => {
            let values = args
                .iter()
                .map(|a| eval_node(a, event))
                .collect::<Result<Vec<_>, _>>()?;
            Cow::Owned(call(*func, &values)?)
        }
        Node::Cast(x, to, lenient) => {
            let v = eval_node(x, event)?;
            match v.coerce_declared(*to) {
                Ok(c) => Cow::Owned(c),
                // A float to an integer: SQL truncates toward zero.
                Err(_) => match (&*v, to) {
                    (Value::Float(f), ColumnType::Int64)
                        if f.is_finite() && f.trunc().abs() < 9.2e18 =>
                    {
                        Cow::Owned(Value::Int(f.trunc() as i64))
                    }
                    _ if *lenient => Cow::Owned(Value::Null),
                    _ => {
                        return Err(EvalError::Cast {
                            found: v.into_owned(),
                            to: *to,
                        });
                    }
                },
            }
        }
        _ => unreachable!("only calls and casts"),
    })
}

/// A string function of `args` (null in, null out).
fn call(func: Func, args: &[Cow<'_, Value>]) -> Result<Value, EvalError> {
    if args.iter().any(|a| a.is_null()) {
        return Ok(Value::Null);
    }
    let text = |i: usize| -> Result<&str, EvalError> {
        match &*args[i] {
            Value::Str(s) => Ok(s),
            other => Err(EvalError::BadArgument {
                func: func.name(),
                expected: "a string",
                found: other.clone(),
            }),
        }
    };
    let int = |i: usize| -> Result<i64, EvalError> {
        match &*args[i] {
            Value::Int(n) => Ok(*n),
            other => Err(EvalError::BadArgument {
                func: func.name(),
                expected: "an integer",
                found: other.clone(),
            }),
        }
    };
    let s = |t: String| Value::Str(Arc::from(t));
    Ok(match func {
        Func::Coalesce => unreachable!("evaluated lazily by eval_node"),
        Func::Lower => s(text(0)?.to_lowercase()),
        Func::Upper => s(text(0)?.to_uppercase()),
        Func::Trim => s(text(0)?.trim().to_string()),
        Func::Length => Value::Int(text(0)?.chars().count() as i64),
        // As Postgres: replacing the empty string changes nothing.
        Func::Replace if text(1)?.is_empty() => s(text(0)?.to_string()),
        Func::Replace => s(text(0)?.replace(text(1)?, text(2)?)),
        Func::Substr => {
            let chars = text(0)?.chars();
            // SQL: 1-based; a start before 1 eats into the count.
            let start = int(1)?;
            let skip = usize::try_from(start.saturating_sub(1)).unwrap_or(0);
            let count = match args.get(2) {
                None => usize::MAX,
                Some(_) => {
                    let n = int(2)?;
                    let end = start.saturating_add(n);
                    usize::try_from(end.saturating_sub(start.max(1))).unwrap_or(0)
                }
            };
            s(chars.skip(skip).take(count).collect())
        }
    })
}

/// The start of the tumbling window of `size_ms` that holds `v` (epoch ms or RFC 3339).
fn tumble(v: &Value, size_ms: i64) -> Result<Value, EvalError> {
    let ms = match v {
        Value::Null => return Ok(Value::Null),
        Value::Int(i) => *i,
        Value::Float(f) if f.fract() == 0.0 && (-9.2e18..9.2e18).contains(f) => *f as i64,
        Value::Str(s) => match crate::value::parse_rfc3339_millis(s) {
            Ok(ms) => ms,
            Err(source) => {
                return Err(EvalError::TumbleNotRfc3339 {
                    text: s.clone(),
                    source,
                });
            }
        },
        other => {
            return Err(EvalError::TumbleNotATimestamp {
                found: other.clone(),
            });
        }
    };
    // Floor, not truncation: windows before 1970 start before their events too.
    Ok(Value::Int(ms - ms.rem_euclid(size_ms)))
}

/// The truth value of an `AND`/`OR` operand: `None` for NULL.
#[inline]
fn truth(op: &'static str, v: &Value) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        other => Err(cannot_apply(op, other)),
    }
}

#[cold]
fn cannot_apply(op: &'static str, v: &Value) -> EvalError {
    EvalError::CannotApply {
        op,
        operand: v.clone(),
    }
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
    EvalError::DivisionByZero
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
        None => Err(EvalError::Overflow {
            left: a,
            op: op.symbol(),
            right: b,
        }),
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
        _ => return Err(cannot_compare(l, r)),
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
        (Value::Nested { .. }, _) | (_, Value::Nested { .. }) => Err(cannot_concat(l, r)),
        (Value::Str(_), _) | (_, Value::Str(_)) => {
            let mut s = String::with_capacity(32);
            push(&mut s, l);
            push(&mut s, r);
            Ok(Value::Str(Arc::from(s)))
        }
        _ => Err(cannot_concat(l, r)),
    }
}

#[cold]
fn cannot_compare(l: &Value, r: &Value) -> EvalError {
    EvalError::CannotCompare {
        left: l.clone(),
        right: r.clone(),
    }
}

#[cold]
fn cannot_concat(l: &Value, r: &Value) -> EvalError {
    EvalError::CannotConcat {
        left: l.clone(),
        right: r.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::tests::{ev, eval_err, eval_with, s};

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
            .to_string();
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
            let e = t("tumble(t, '10s')", bad.clone()).unwrap_err().to_string();
            assert!(e.starts_with("tumble:"), "{bad:?}: {e}");
        }
    }
}
