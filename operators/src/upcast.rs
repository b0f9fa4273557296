//! Upcasters: old versions of events brought to the newest shape before any view
//! sees them.
//!
//! ```text
//!  decoded event (type T, schema version v)
//!      └─ step T@v? ─ rename, set, default, type ─▶ version v+1 (type maybe T')
//!      └─ step T'@v+1? ─ ...                    ─▶ ... until no step: the newest
//!      └─ a step that says drop: the event is dropped
//! ```
//!
//! Events are flat slots ([`FieldRegistry`](crate::fields::FieldRegistry)): a rename
//! copies the slots of the old paths into those of the new ones (and clears the old),
//! for every path the pipeline reads under the new name.

use crate::expr::{EvalError, Expr};
use crate::value::{ColumnType, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One step: what turns an event of one type at one schema version into the next
/// version. Applied in this order: renames, sets, defaults, the type.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// (from slot, to slot): the value moves.
    pub renames: Vec<(usize, usize)>,
    /// (slot, expression): the slot takes the expression's value.
    pub set: Vec<(usize, Expr)>,
    /// (slot, expression): the slot takes the expression's value when it is null.
    pub defaults: Vec<(usize, Expr)>,
    /// The event's new type.
    pub new_type: Option<Arc<str>>,
    /// The event is dropped.
    pub drop: bool,
}

/// Every step, by event type and the schema version it starts from.
#[derive(Debug, Clone, Default)]
pub struct Upcasters {
    /// The slot of the schema version (`None`: every event is version 1).
    pub version: Option<usize>,
    /// The slot of the event type.
    pub event_type: usize,
    /// Type → version → step.
    pub steps: HashMap<Arc<str>, BTreeMap<i64, Step>>,
    /// The version field's path, for errors.
    pub version_path: String,
}

/// What upcasting did to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upcast {
    /// The event is in the newest shape (maybe it was already).
    Kept,
    /// A step dropped it.
    Dropped,
}

/// Why an event could not be upcast: a bad record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpcastError {
    /// The schema version is not an integer.
    #[error("the schema version '{path}' is {} {found}, not an integer", .found.kind())]
    BadVersion {
        /// The version field.
        path: String,
        /// Its value.
        found: Value,
    },
    /// An expression of a step failed.
    #[error("upcasting {event_type} from version {version}: {source}")]
    Failed {
        /// The event type the step is for.
        event_type: String,
        /// The version it starts from.
        version: i64,
        /// The expression's error.
        source: EvalError,
    },
}

impl UpcastError {
    /// The stable code of this kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            UpcastError::BadVersion { .. } => "upcast.bad_version",
            UpcastError::Failed { .. } => "upcast.failed",
        }
    }
}

/// The most steps one event goes through (each raises its version by one, so only a
/// huge version gap could reach it).
const MAX_STEPS: usize = 1_000;

impl Upcasters {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Brings `event` to the newest version, in place.
    pub fn apply(&self, event: &mut [Value]) -> Result<Upcast, UpcastError> {
        let Value::Str(mut ty) = event[self.event_type].clone() else {
            return Ok(Upcast::Kept); // the envelope reports a missing type
        };
        let Some(mut steps) = self.steps.get(&ty) else {
            return Ok(Upcast::Kept);
        };
        let mut version = match self.version.map(|s| &event[s]) {
            None | Some(Value::Null) => 1,
            Some(v) => match v.coerce_declared(ColumnType::Int64) {
                Ok(Value::Int(n)) => n,
                _ => {
                    return Err(UpcastError::BadVersion {
                        path: self.version_path.clone(),
                        found: v.clone(),
                    });
                }
            },
        };
        let mut applied = 0;
        while let Some(step) = steps.get(&version) {
            if step.drop {
                return Ok(Upcast::Dropped);
            }
            let failed = |source| UpcastError::Failed {
                event_type: ty.to_string(),
                version,
                source,
            };
            // All taken before any is written: one rename's source may be another's
            // target.
            let moved: Vec<Value> = step
                .renames
                .iter()
                .map(|&(from, _)| std::mem::take(&mut event[from]))
                .collect();
            for (&(_, to), v) in step.renames.iter().zip(moved) {
                event[to] = v;
            }
            for (slot, expr) in &step.set {
                event[*slot] = expr.eval(event).map_err(failed)?;
            }
            for (slot, expr) in &step.defaults {
                if event[*slot].is_null() {
                    event[*slot] = expr.eval(event).map_err(failed)?;
                }
            }
            if let Some(t) = &step.new_type {
                ty = t.clone();
                event[self.event_type] = Value::Str(t.clone());
            }
            version += 1;
            applied += 1;
            if applied >= MAX_STEPS {
                break;
            }
            match self.steps.get(&ty) {
                Some(s) => steps = s,
                None => break,
            }
        }
        if applied > 0
            && let Some(slot) = self.version
        {
            event[slot] = Value::Int(version);
        }
        Ok(Upcast::Kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::FieldRegistry;

    /// v1 `FundsDeposited {amt}` → v2 `MoneyDeposited {cents}` → v3 `{payload.amount}`;
    /// `Noise` is dropped.
    fn chain() -> (Upcasters, FieldRegistry) {
        let mut f = FieldRegistry::new();
        let (ty, v, amt, cents, amount) = (
            f.intern("type").index(),
            f.intern("v").index(),
            f.intern("amt").index(),
            f.intern("cents").index(),
            f.intern("payload.amount").index(),
        );
        let step1 = Step {
            set: vec![(cents, Expr::parse("amt * 100", &mut f).unwrap())],
            new_type: Some("MoneyDeposited".into()),
            ..Step::default()
        };
        let step2 = Step {
            renames: vec![(cents, amount)],
            set: vec![(amount, Expr::parse("payload.amount / 100", &mut f).unwrap())],
            defaults: vec![(amt, Expr::parse("0", &mut f).unwrap())],
            ..Step::default()
        };
        let mut steps: HashMap<Arc<str>, BTreeMap<i64, Step>> = HashMap::new();
        steps
            .entry("FundsDeposited".into())
            .or_default()
            .insert(1, step1);
        steps
            .entry("MoneyDeposited".into())
            .or_default()
            .insert(2, step2);
        steps.entry("Noise".into()).or_default().insert(
            1,
            Step {
                drop: true,
                ..Step::default()
            },
        );
        let _ = amt;
        (
            Upcasters {
                version: Some(v),
                event_type: ty,
                steps,
                version_path: "v".into(),
            },
            f,
        )
    }

    fn event(f: &FieldRegistry, fields: &[(&str, Value)]) -> Vec<Value> {
        let mut e = vec![Value::Null; f.len()];
        for (p, v) in fields {
            e[f.get(p).unwrap().index()] = v.clone();
        }
        e
    }

    #[test]
    fn steps_chain_across_types_and_versions() {
        let (u, f) = chain();
        let at = |e: &[Value], p: &str| e[f.get(p).unwrap().index()].clone();
        let mut e = event(
            &f,
            &[
                ("type", Value::Str("FundsDeposited".into())),
                ("amt", Value::Int(7)),
            ],
        );
        assert_eq!(u.apply(&mut e), Ok(Upcast::Kept));
        assert_eq!(at(&e, "type"), Value::Str("MoneyDeposited".into()));
        assert_eq!(at(&e, "payload.amount"), Value::Int(7));
        assert_eq!(at(&e, "cents"), Value::Null, "renamed away");
        assert_eq!(at(&e, "v"), Value::Int(3));
        // A v2 event starts at its own step; a v3 event is left alone.
        let mut e = event(
            &f,
            &[
                ("type", Value::Str("MoneyDeposited".into())),
                ("v", Value::Str("2".into())),
                ("cents", Value::Int(500)),
            ],
        );
        u.apply(&mut e).unwrap();
        assert_eq!(at(&e, "payload.amount"), Value::Int(5));
        let newest = event(
            &f,
            &[
                ("type", Value::Str("MoneyDeposited".into())),
                ("v", Value::Int(3)),
                ("payload.amount", Value::Int(9)),
            ],
        );
        let mut e = newest.clone();
        u.apply(&mut e).unwrap();
        assert_eq!(e, newest);
        let mut e = event(&f, &[("type", Value::Str("Noise".into()))]);
        assert_eq!(u.apply(&mut e), Ok(Upcast::Dropped));
    }

    #[test]
    fn a_failing_step_is_an_error_naming_it() {
        let (u, f) = chain();
        let mut e = event(
            &f,
            &[
                ("type", Value::Str("FundsDeposited".into())),
                ("amt", Value::Str("x".into())),
            ],
        );
        let err = u.apply(&mut e).unwrap_err();
        assert_eq!(err.code(), "upcast.failed");
        assert!(
            err.to_string()
                .starts_with("upcasting FundsDeposited from version 1: "),
            "{err}"
        );
        let mut e = event(
            &f,
            &[
                ("type", Value::Str("FundsDeposited".into())),
                ("v", Value::Str("one".into())),
            ],
        );
        assert_eq!(u.apply(&mut e).unwrap_err().code(), "upcast.bad_version");
    }
}
