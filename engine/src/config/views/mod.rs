//! `views:`: fold, aggregate and table views, their columns, handlers and expressions.

mod aggregate;
mod fold;
mod table;

use super::yaml::{Ctx, Node, join};
use projector_operators::expr::Expr;
use projector_operators::fields::FieldRegistry;
use projector_operators::value::{ColumnType, Value};
use projector_operators::view::{ViewKind, ViewSpec};
use saphyr::{Scalar, YamlData};

/// `views:`: a non-empty sequence of views with unique names. `has_time` says whether
/// the envelope maps `timestamp` (`None` when the envelope itself was wrong): a table's
/// `retain.age` needs it.
pub(crate) fn views(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
    has_time: Option<bool>,
) -> Option<Vec<ViewSpec>> {
    let YamlData::Sequence(items) = &node.data else {
        ctx.wrong_type(node, path, "a sequence of views");
        return None;
    };
    if items.is_empty() {
        let message = "at least one view is required".to_string();
        ctx.error("config.invalid_value", node, path, message);
        return None;
    }
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut out = Some(Vec::with_capacity(items.len()));
    for (i, item) in items.iter().enumerate() {
        let v = view(
            ctx,
            item,
            &format!("{path}[{i}]"),
            i,
            fields,
            &mut names,
            has_time,
        );
        out = out.zip(v).map(|(mut all, v)| {
            all.push(v);
            all
        });
    }
    out
}

pub(super) fn view(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    index: usize,
    fields: &mut FieldRegistry,
    names: &mut Vec<(String, usize)>,
    has_time: Option<bool>,
) -> Option<ViewSpec> {
    const KINDS: [&str; 3] = ["fold", "aggregate", "table"];
    let rec = ctx.record(
        node,
        path,
        &["name", "version", "fold", "aggregate", "table"],
    )?;
    if let Some(e) = rec.get("version") {
        // Only recorded (in the logic checkpoints keep): a new version is rebuilt.
        let ok = match &e.value.data {
            YamlData::Value(saphyr::Scalar::Integer(n)) => *n >= 0,
            YamlData::Value(saphyr::Scalar::String(s)) => {
                !s.is_empty()
                    && s.len() <= 32
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            _ => false,
        };
        if !ok {
            let message =
                "a view's version is a number, or up to 32 letters, digits and '_'".to_string();
            ctx.error("config.invalid_value", e.value, &e.path, message);
        }
    }
    let name = rec.require(ctx, "name").and_then(|e| {
        let name = identifier(ctx, e.value, &e.path, "view name")?;
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
            let message = format!("view name '{name}' is already used by views[{first}]");
            ctx.error("config.invalid_value", e.value, &e.path, message);
            return None;
        }
        names.push((name.clone(), index));
        Some(name)
    });
    let present: Vec<&str> = KINDS.iter().copied().filter(|k| rec.has(k)).collect();
    let kind = match present[..] {
        [] => {
            let message = "a view needs 'fold', 'aggregate' or 'table'".to_string();
            ctx.error("config.missing_field", node, &join(path, "fold"), message);
            None
        }
        [one] => {
            let e = rec.get(one).expect("present");
            match one {
                "fold" => fold::fold(ctx, e.value, &e.path, fields).map(ViewKind::Fold),
                "aggregate" => {
                    aggregate::aggregate(ctx, e.value, &e.path, fields).map(ViewKind::Aggregate)
                }
                _ => table::table(ctx, e.value, &e.path, fields, has_time).map(ViewKind::Table),
            }
        }
        [first, second, ..] => {
            let e = rec.get(second).expect("present");
            let message = format!(
                "a view is one of 'fold', 'aggregate' or 'table'; this one has '{first}' and '{second}'"
            );
            ctx.error("config.invalid_value", e.key, &e.path, message);
            None
        }
    };
    Some(ViewSpec {
        name: name?,
        kind: kind?,
    })
}

/// True for `[A-Za-z_][A-Za-z0-9_]*`.
fn is_sql_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A view or column name: an SQL identifier.
pub(super) fn identifier(ctx: &mut Ctx<'_>, node: &Node, path: &str, what: &str) -> Option<String> {
    let name = ctx.text(node, path)?;
    check_identifier(ctx, node, path, what, &name).then_some(name)
}

/// Reports `name` unless it is an SQL identifier.
pub(super) fn check_identifier(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    what: &str,
    name: &str,
) -> bool {
    if is_sql_identifier(name) {
        return true;
    }
    let message =
        format!("invalid {what} '{name}': use letters, digits and '_', not starting with a digit");
    ctx.error("config.invalid_value", node, path, message);
    false
}

/// A column type name.
pub(crate) fn column_type(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<ColumnType> {
    ctx.choice(node, path, &ColumnType::ALL)
}

/// A YAML scalar as a value (for defaults).
pub(super) fn scalar_value(node: &Node) -> Option<Value> {
    match &node.data {
        YamlData::Value(Scalar::Null) => Some(Value::Null),
        YamlData::Value(Scalar::Boolean(b)) => Some(Value::Bool(*b)),
        YamlData::Value(Scalar::Integer(i)) => Some(Value::Int(*i)),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(Value::Float(f.0)),
        YamlData::Value(Scalar::String(s)) => Some(Value::Str(s.as_ref().into())),
        _ => None,
    }
}

/// An expression: a string is parsed as SQL; a number, boolean or null is a literal.
pub(super) fn expression(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
) -> Option<Expr> {
    if let YamlData::Value(Scalar::String(s)) = &node.data {
        return match Expr::parse(s, fields) {
            Ok(e) => Some(e),
            Err(e) => {
                let message = e.to_string();
                ctx.error("config.bad_expression", node, path, message);
                None
            }
        };
    }
    match scalar_value(node) {
        Some(v) => Some(Expr::literal(v)),
        None => {
            ctx.wrong_type(node, path, "an expression (a string, number or boolean)");
            None
        }
    }
}
