//! `upcast:`: steps that bring old versions of events to the newest shape before any
//! view sees them (see `projector_operators::upcast`).
//!
//! ```yaml
//! upcast:
//!   version: schemaVersion          # events without it are version 1
//!   steps:
//!     FundsDeposited:               # event type, as written
//!       1: { type: MoneyDeposited, set: { payload.amount_cents: "amt * 100" } }
//!     MoneyDeposited:
//!       2: { set: { payload.amount: "payload.amount_cents / 100" } }
//!     Heartbeat:
//!       1: drop
//! ```
//!
//! A rename's paths are resolved once every expression of the pipeline is compiled
//! ([`resolve_renames`]): renaming `data` to `payload` moves every path the pipeline
//! reads under `payload` from its counterpart under `data`.

use super::compile::field_path;
use super::views::expression;
use super::yaml::{Ctx, Node};
use projector_operators::fields::FieldRegistry;
use projector_operators::upcast::{Step, Upcasters};
use saphyr::{Scalar, YamlData};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The keys of `upcast:`.
const KEYS: &[&str] = &["version", "steps"];
/// The keys of a step.
const STEP_KEYS: &[&str] = &["rename", "set", "default", "type"];

/// The renames of every step, as paths (from, to), until [`resolve_renames`].
pub(super) type Renames = Vec<(Arc<str>, i64, Vec<(String, String)>)>;

/// Reads `upcast:`; the renames are returned apart, for [`resolve_renames`].
pub(super) fn upcast(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
    event_type: usize,
) -> Option<(Upcasters, Renames)> {
    let rec = ctx.record(node, path, KEYS)?;
    let mut ok = true;
    let version_path = match rec.get("version") {
        Some(e) => field_path(ctx, e.value, &e.path),
        None => None,
    };
    ok &= rec.get("version").is_none() || version_path.is_some();
    let mut steps: HashMap<Arc<str>, BTreeMap<i64, Step>> = HashMap::new();
    let mut renames = Renames::new();
    let types = rec.require(ctx, "steps")?;
    for t in ctx.entries(types.value, &types.path, false)? {
        let ty: Arc<str> = t.name.as_str().into();
        let Some(versions) = ctx.entries(t.value, &t.path, false) else {
            ok = false;
            continue;
        };
        for v in versions {
            let version = match v.name.parse::<i64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    let message = format!(
                        "'{}' is not a schema version: use the version the step starts \
                         from, an integer from 1",
                        v.name
                    );
                    ctx.error("config.invalid_value", v.key, &v.path, message);
                    ok = false;
                    continue;
                }
            };
            match step(ctx, v.value, &v.path, fields) {
                Some((s, r)) => {
                    if !r.is_empty() {
                        renames.push((ty.clone(), version, r));
                    }
                    steps.entry(ty.clone()).or_default().insert(version, s);
                }
                None => ok = false,
            }
        }
    }
    if !ok {
        return None;
    }
    let version = version_path.as_deref().map(|p| fields.intern(p).index());
    Some((
        Upcasters {
            version,
            event_type,
            steps,
            version_path: version_path.unwrap_or_default(),
        },
        renames,
    ))
}

/// One step: `drop`, or `{rename, set, default, type}`.
fn step(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
) -> Option<(Step, Vec<(String, String)>)> {
    if let YamlData::Value(Scalar::String(s)) = &node.data {
        if &**s == "drop" {
            return Some((
                Step {
                    drop: true,
                    ..Step::default()
                },
                Vec::new(),
            ));
        }
        let message = format!("'{s}' is not a step: use drop, or a mapping of {STEP_KEYS:?}");
        ctx.error("config.invalid_value", node, path, message);
        return None;
    }
    let rec = ctx.record(node, path, STEP_KEYS)?;
    let mut ok = true;
    let mut out = Step::default();
    let mut renames = Vec::new();
    if let Some(e) = rec.get("rename") {
        for r in ctx.entries(e.value, &e.path, false)? {
            let from_ok = super::compile::check_field_path(ctx, r.key, &r.path, &r.name);
            match field_path(ctx, r.value, &r.path) {
                Some(to) if from_ok && (r.name == to || r.name.starts_with(&format!("{to}."))) => {
                    let message = format!(
                        "'{}' lies under '{to}': a rename moves a field out from under \
                         another, not into itself",
                        r.name
                    );
                    ctx.error("config.invalid_value", r.key, &r.path, message);
                    ok = false;
                }
                Some(to) if from_ok => renames.push((r.name.clone(), to)),
                _ => ok = false,
            }
        }
    }
    for (key, into) in [("set", &mut out.set), ("default", &mut out.defaults)] {
        let Some(e) = rec.get(key) else { continue };
        let Some(entries) = ctx.entries(e.value, &e.path, false) else {
            ok = false;
            continue;
        };
        for a in entries {
            let path_ok = super::compile::check_field_path(ctx, a.key, &a.path, &a.name);
            match expression(ctx, a.value, &a.path, fields) {
                Some(x) if path_ok => into.push((fields.intern(&a.name).index(), x)),
                _ => ok = false,
            }
        }
    }
    if let Some(e) = rec.get("type") {
        match ctx.string(e.value, &e.path) {
            Some(t) if !t.is_empty() => out.new_type = Some(t.as_str().into()),
            Some(_) => {
                let message = "an empty event type".to_string();
                ctx.error("config.invalid_value", e.value, &e.path, message);
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some((out, renames))
}

/// Turns every step's renames into slot moves, for every path the pipeline reads under
/// each new name (interning its counterpart under the old one, which may itself be the
/// new name of an earlier step's rename: repeated until nothing new appears).
/// Fails (with the reason) when renames feed into each other without end.
pub(super) fn resolve_renames(
    upcasters: &mut Upcasters,
    renames: &Renames,
    fields: &mut FieldRegistry,
) -> Result<(), String> {
    let mut seen = 0;
    let mut rounds = 0;
    while seen != fields.len() {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(format!(
                "these renames keep producing new paths from each other ({} fields after \
                 {MAX_ROUNDS} rounds): a rename's old path should not lie under a new one",
                fields.len()
            ));
        }
        seen = fields.len();
        let paths: Vec<String> = fields.paths().to_vec();
        for (_, _, pairs) in renames {
            for (from, to) in pairs {
                for p in &paths {
                    let rest = match p.strip_prefix(to.as_str()) {
                        Some("") => "",
                        Some(r) if r.starts_with('.') => r,
                        _ => continue,
                    };
                    fields.intern(&format!("{from}{rest}"));
                }
            }
        }
    }
    for (ty, version, pairs) in renames {
        let Some(step) = upcasters.steps.get_mut(ty).and_then(|s| s.get_mut(version)) else {
            continue;
        };
        for (from, to) in pairs {
            for (slot, p) in fields.paths().iter().enumerate() {
                let rest = match p.strip_prefix(to.as_str()) {
                    Some("") => "",
                    Some(r) if r.starts_with('.') => r,
                    _ => continue,
                };
                if let Some(src) = fields.get(&format!("{from}{rest}")) {
                    step.renames.push((src.index(), slot));
                }
            }
        }
    }
    Ok(())
}

/// Rounds of [`resolve_renames`] before giving up.
const MAX_ROUNDS: usize = 16;
