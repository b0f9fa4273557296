//! Tests of [`Expr`]'s own API, and the helpers the tests of every part of `expr` share.

use std::sync::Arc;

use super::*;

pub(super) fn s(v: &str) -> Value {
    Value::Str(Arc::from(v))
}

/// Parses `text` and evaluates it against fields given as `(path, value)`.
pub(super) fn eval_with(text: &str, event: &[(&str, Value)]) -> Result<Value, EvalError> {
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

pub(super) fn ev(text: &str) -> Value {
    eval_with(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub(super) fn eval_err(text: &str) -> String {
    match eval_with(text, &[]) {
        Ok(v) => panic!("{text}: expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn parse_err(text: &str) -> String {
    match Expr::parse(text, &mut FieldRegistry::new()) {
        Ok(e) => panic!("{text}: expected an error, got {e:?}"),
        Err(e) => e.to_string(),
    }
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
fn eval_bool_treats_null_as_false() {
    let mut f = FieldRegistry::new();
    let e = Expr::parse("amount > 10", &mut f).unwrap();
    assert!(e.eval_bool(&[Value::Int(11)]).unwrap());
    assert!(!e.eval_bool(&[Value::Int(1)]).unwrap());
    assert!(!e.eval_bool(&[Value::Null]).unwrap());
    let e = Expr::parse("amount", &mut f).unwrap();
    assert!(e.eval_bool(&[Value::Bool(true)]).unwrap());
    let err = e.eval_bool(&[Value::Int(1)]).unwrap_err().to_string();
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
fn functions_for_upcasting() {
    let event = [
        ("old", Value::Null),
        ("new", s(" Alice ")),
        ("n", Value::Int(3)),
    ];
    let e = |t: &str| eval_with(t, &event).unwrap_or_else(|err| panic!("{t}: {err}"));
    assert_eq!(e("coalesce(old, new)"), s(" Alice "));
    assert_eq!(e("coalesce(old, NULL)"), Value::Null);
    assert_eq!(e("coalesce(n, old)"), Value::Int(3));
    assert_eq!(e("lower(trim(new))"), s("alice"));
    assert_eq!(e("UPPER(new)"), s(" ALICE "));
    assert_eq!(e("length(new)"), Value::Int(7));
    assert_eq!(e("replace(new, 'A', 'Ma')"), s(" Malice "));
    assert_eq!(e("substr('héllo', 2, 3)"), s("éll"));
    assert_eq!(e("substr('hello', 3)"), s("llo"));
    assert_eq!(
        e("substr('hello', 0, 2)"),
        s("h"),
        "SQL: a start before 1 eats the count"
    );
    assert_eq!(e("lower(old)"), Value::Null, "null in, null out");
    // Casts: text that spells the type, numbers both ways, floats truncated.
    assert_eq!(e("CAST('42' AS BIGINT) + n"), Value::Int(45));
    assert_eq!(e("CAST(n AS DOUBLE)"), Value::Float(3.0));
    assert_eq!(e("CAST(n AS VARCHAR) || 'x'"), s("3x"));
    assert_eq!(e("CAST(2.7 AS INT)"), Value::Int(2));
    assert_eq!(e("CAST(-2.7 AS BIGINT)"), Value::Int(-2));
    assert_eq!(e("CAST('true' AS BOOLEAN)"), Value::Bool(true));
    assert_eq!(e("CAST(old AS BIGINT)"), Value::Null);
    assert_eq!(
        e("TRY_CAST('x' AS BIGINT)"),
        Value::Null,
        "null where it does not convert"
    );
    assert_eq!(e("TRY_CAST('7' AS BIGINT)"), Value::Int(7));
    assert_eq!(e("'5'::BIGINT"), Value::Int(5));
    assert_eq!(e("replace(new, '', 'x')"), s(" Alice "), "as Postgres");
    assert_eq!(
        eval_err("CAST('x' AS BIGINT)"),
        "cannot cast string 'x' to int64"
    );
    assert_eq!(
        eval_err("lower(1)"),
        "lower: expected a string, found integer 1"
    );
    assert!(parse_err("lower(1, 2)").contains("lower takes one string"));
    assert!(parse_err("coalesce()").contains("one or more"));
    assert!(parse_err("CAST(1 AS BLOB)").contains("cannot cast to BLOB"));
    assert!(
        parse_err("nosuch(1)").contains("coalesce"),
        "the list names the functions"
    );
}
