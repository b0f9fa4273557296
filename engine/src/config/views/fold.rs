//! Fold views: one row per key, written by `set` / `add` / `delete` handlers per
//! event type.

use super::{check_identifier, column_type, expression, identifier, scalar_value};
use crate::config::yaml::{Ctx, Entry, Node, join, unknown_message};
use projector_operators::fields::FieldRegistry;
use projector_operators::fold::{ColumnSpec, FoldSpec, Handler};
use projector_operators::projection::FastMap;
use projector_operators::value::{ColumnType, Value};
use saphyr::{Scalar, YamlData};

/// A fold column as far as it could be read: its type is `None` if that was wrong.
struct FoldColumn {
    name: String,
    ty: Option<ColumnType>,
    default: Option<Value>,
}

pub(super) fn fold(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
) -> Option<FoldSpec> {
    let rec = ctx.record(node, path, &["key_column", "columns", "on"])?;
    let key_column = match rec.get("key_column") {
        Some(e) => identifier(ctx, e.value, &e.path, "key column name"),
        None => Some("key".to_string()),
    };
    let (columns, columns_ok) = match rec.get("columns") {
        Some(e) => fold_columns(ctx, e.value, &e.path, key_column.as_deref()),
        None => (Vec::new(), true),
    };
    let on = rec.require(ctx, "on").and_then(|e| {
        let entries = ctx.entries(e.value, &e.path, false)?;
        let mut ok = true;
        let mut handlers = FastMap::default();
        let mut star = None;
        for entry in &entries {
            let h = handler(ctx, entry, &columns, key_column.as_deref(), fields);
            match h {
                Some(h) if entry.name == "*" => star = Some(h),
                Some(h) => {
                    handlers.insert(entry.name.clone(), h);
                }
                None => ok = false,
            }
        }
        ok.then_some((handlers, star))
    });
    let (handlers, star) = on?;
    if !columns_ok {
        return None;
    }
    let columns = columns
        .into_iter()
        .map(|c| {
            Some(ColumnSpec {
                name: c.name,
                ty: c.ty?,
                default: c.default,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(FoldSpec {
        key_column: key_column?,
        columns,
        handlers,
        star,
        parked_column: false,
    })
}

/// `columns:` of a fold; the bool is false if anything was wrong.
fn fold_columns(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    key_column: Option<&str>,
) -> (Vec<FoldColumn>, bool) {
    let Some(entries) = ctx.entries(node, path, true) else {
        return (Vec::new(), false);
    };
    let mut ok = true;
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        if !check_identifier(ctx, e.key, &e.path, "column name", &e.name) {
            ok = false;
            continue;
        }
        if Some(e.name.as_str()) == key_column {
            let message = format!(
                "column '{}' has the name of the key column (set key_column to rename that)",
                e.name
            );
            ctx.error("config.invalid_value", e.key, &e.path, message);
            ok = false;
            continue;
        }
        let (ty, default) = match &e.value.data {
            YamlData::Mapping(_) => {
                let Some(rec) = ctx.record(e.value, &e.path, &["type", "default"]) else {
                    ok = false;
                    out.push(FoldColumn {
                        name: e.name.clone(),
                        ty: None,
                        default: None,
                    });
                    continue;
                };
                let ty = rec
                    .require(ctx, "type")
                    .and_then(|t| column_type(ctx, t.value, &t.path));
                let default = match (rec.get("default"), ty) {
                    (Some(d), Some(ty)) => default_value(ctx, d.value, &d.path, ty),
                    (Some(_), None) | (None, _) => Some(None),
                };
                ok &= default.is_some();
                (ty, default.flatten())
            }
            YamlData::Value(Scalar::String(_)) => (column_type(ctx, e.value, &e.path), None),
            _ => {
                ctx.wrong_type(e.value, &e.path, "a type name or a mapping {type, default}");
                (None, None)
            }
        };
        ok &= ty.is_some();
        out.push(FoldColumn {
            name: e.name.clone(),
            ty,
            default,
        });
    }
    (out, ok)
}

/// A column default coerced to the column type; `Some(None)` for null.
fn default_value(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    ty: ColumnType,
) -> Option<Option<Value>> {
    let Some(v) = scalar_value(node) else {
        ctx.wrong_type(node, path, "a number, string, boolean or null");
        return None;
    };
    match v.coerce(ty) {
        Ok(Value::Null) => Some(None),
        Ok(v) => Some(Some(v)),
        Err(e) => {
            let message = format!("default {v} does not fit the column type: {e}");
            ctx.error("config.invalid_value", node, path, message);
            None
        }
    }
}

fn handler(
    ctx: &mut Ctx<'_>,
    entry: &Entry<'_>,
    columns: &[FoldColumn],
    key_column: Option<&str>,
    fields: &mut FieldRegistry,
) -> Option<Handler> {
    let (node, path) = (entry.value, entry.path.as_str());
    match &node.data {
        YamlData::Value(Scalar::String(s)) if s == "delete" => {
            return Some(Handler {
                delete: true,
                ..Handler::default()
            });
        }
        YamlData::Value(Scalar::String(s)) => {
            let message = format!(
                "{}: a handler is 'delete' or a mapping with set, add and delete",
                unknown_message("handler", s, ["delete"].into_iter())
            );
            ctx.error("config.invalid_value", node, path, message);
            return None;
        }
        YamlData::Mapping(_) => {}
        _ => {
            ctx.wrong_type(node, path, "'delete' or a mapping with set, add and delete");
            return None;
        }
    }
    let rec = ctx.record(node, path, &["set", "add", "delete"])?;
    let mut ok = true;
    let mut set = Vec::new();
    let mut add = Vec::new();
    for (op, out) in [("set", &mut set), ("add", &mut add)] {
        let Some(e) = rec.get(op) else { continue };
        let Some(assignments) = ctx.entries(e.value, &e.path, true) else {
            ok = false;
            continue;
        };
        for a in &assignments {
            let column = target_column(ctx, a, columns, key_column);
            let not_numeric = column.filter(|_| op == "add").and_then(|i| {
                let c = &columns[i];
                c.ty.filter(|t| !t.is_numeric())
                    .map(|ty| (c.name.as_str(), ty))
            });
            if let Some((name, ty)) = not_numeric {
                let message = format!("add needs an int64 or float64 column; '{name}' is {ty}");
                ctx.error("config.invalid_value", a.key, &a.path, message);
                ok = false;
            }
            let expr = expression(ctx, a.value, &a.path, fields);
            match (column, expr) {
                (Some(i), Some(expr)) => out.push((i, expr)),
                _ => ok = false,
            }
        }
    }
    for (i, _) in &add {
        if set.iter().any(|(j, _)| j == i) {
            let e = rec.get("add").expect("add present");
            let message = format!(
                "column '{}' is both set and added in one handler; use one of them",
                columns[*i].name
            );
            ctx.error(
                "config.invalid_value",
                e.key,
                &join(&e.path, &columns[*i].name),
                message,
            );
            ok = false;
        }
    }
    let delete = match rec.get("delete") {
        Some(e) => match ctx.boolean(e.value, &e.path) {
            Some(true) if rec.has("set") || rec.has("add") => {
                let message = "delete cannot be combined with set or add".to_string();
                ctx.error("config.invalid_value", e.value, &e.path, message);
                None
            }
            d => d,
        },
        None => Some(false),
    };
    let delete = delete?;
    ok.then_some(Handler { set, add, delete })
}

/// The index of the column an assignment writes to.
fn target_column(
    ctx: &mut Ctx<'_>,
    a: &Entry<'_>,
    columns: &[FoldColumn],
    key_column: Option<&str>,
) -> Option<usize> {
    if let Some(i) = columns.iter().position(|c| c.name == a.name) {
        return Some(i);
    }
    if Some(a.name.as_str()) == key_column {
        let message = format!(
            "'{}' is the key column: it holds the envelope key and cannot be assigned",
            a.name
        );
        ctx.error("config.invalid_value", a.key, &a.path, message);
        return None;
    }
    let message = unknown_message("column", &a.name, columns.iter().map(|c| c.name.as_str()));
    ctx.error("config.unknown_column", a.key, &a.path, message);
    None
}
