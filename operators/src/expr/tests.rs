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
