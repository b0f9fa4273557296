//! `views:`: fold, aggregate and table views, their columns, handlers and expressions.

use super::yaml::{Ctx, Entry, Node, join, unknown_message};
use projector_operators::aggregate::{AggColumn, AggregateSpec, GroupColumn};
use projector_operators::expr::{AggFn, Expr, parse_aggregate};
use projector_operators::fields::FieldRegistry;
use projector_operators::fold::{ColumnSpec, FoldSpec, Handler};
use projector_operators::projection::FastMap;
use projector_operators::table::{Retain, TableColumn, TableSpec};
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

fn view(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    index: usize,
    fields: &mut FieldRegistry,
    names: &mut Vec<(String, usize)>,
    has_time: Option<bool>,
) -> Option<ViewSpec> {
    const KINDS: [&str; 3] = ["fold", "aggregate", "table"];
    let rec = ctx.record(node, path, &["name", "fold", "aggregate", "table"])?;
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
                "fold" => fold(ctx, e.value, &e.path, fields).map(ViewKind::Fold),
                "aggregate" => aggregate(ctx, e.value, &e.path, fields).map(ViewKind::Aggregate),
                _ => table(ctx, e.value, &e.path, fields, has_time).map(ViewKind::Table),
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
fn identifier(ctx: &mut Ctx<'_>, node: &Node, path: &str, what: &str) -> Option<String> {
    let name = ctx.text(node, path)?;
    check_identifier(ctx, node, path, what, &name).then_some(name)
}

/// Reports `name` unless it is an SQL identifier.
fn check_identifier(ctx: &mut Ctx<'_>, node: &Node, path: &str, what: &str, name: &str) -> bool {
    if is_sql_identifier(name) {
        return true;
    }
    let message =
        format!("invalid {what} '{name}': use letters, digits and '_', not starting with a digit");
    ctx.error("config.invalid_value", node, path, message);
    false
}

/// A column type name.
fn column_type(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<ColumnType> {
    ctx.choice(node, path, &ColumnType::ALL)
}

/// A YAML scalar as a value (for defaults).
fn scalar_value(node: &Node) -> Option<Value> {
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
fn expression(
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

// ---------------------------------------------------------------------------------------
// Fold views

/// A fold column as far as it could be read: its type is `None` if that was wrong.
struct FoldColumn {
    name: String,
    ty: Option<ColumnType>,
    default: Option<Value>,
}

fn fold(
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

// ---------------------------------------------------------------------------------------
// Table views

fn table(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
    has_time: Option<bool>,
) -> Option<TableSpec> {
    let rec = ctx.record(node, path, &["filter", "columns", "retain"])?;
    let filter = match rec.get("filter") {
        Some(e) => expression(ctx, e.value, &e.path, fields).map(Some),
        None => Some(None),
    };
    let columns = rec.require(ctx, "columns").and_then(|e| {
        let entries = ctx.entries(e.value, &e.path, true)?;
        if entries.is_empty() {
            let message =
                "a table view needs at least one column, e.g. {price: {expr: price, type: int64}}"
                    .to_string();
            ctx.error("config.invalid_value", e.value, &e.path, message);
            return None;
        }
        typed_columns(ctx, &entries, fields, &mut Vec::new(), |name, expr, ty| {
            TableColumn { name, expr, ty }
        })
    });
    let retain = match rec.get("retain") {
        Some(e) => retain(ctx, e.value, &e.path, has_time),
        None => Some(Retain::default()),
    };
    Some(TableSpec {
        filter: filter?,
        columns: columns?,
        retain: retain?,
    })
}

/// `retain: {rows: N, age: DURATION}`: at least one of the two.
fn retain(ctx: &mut Ctx<'_>, node: &Node, path: &str, has_time: Option<bool>) -> Option<Retain> {
    let rec = ctx.record(node, path, &["rows", "age"])?;
    if !rec.has("rows") && !rec.has("age") {
        let message = "retain needs 'rows' (a row count), 'age' (a duration) or both".to_string();
        ctx.error("config.missing_field", node, &join(path, "rows"), message);
        return None;
    }
    let rows = match rec.get("rows") {
        Some(e) => ctx
            .integer(e.value, &e.path, 1, i64::MAX)
            .map(|n| Some(n as u64)),
        None => Some(None),
    };
    let age_ms = match rec.get("age") {
        Some(e) => {
            let age = super::compile::duration(ctx, e.value, &e.path).and_then(|d| {
                if d.subsec_nanos() % 1_000_000 != 0 {
                    let message = "age must be a whole number of milliseconds".to_string();
                    ctx.error("config.invalid_value", e.value, &e.path, message);
                    return None;
                }
                i64::try_from(d.as_millis()).ok().or_else(|| {
                    let message = "age is too long".to_string();
                    ctx.error("config.invalid_value", e.value, &e.path, message);
                    None
                })
            });
            if has_time == Some(false) {
                let message = "retain.age drops rows by event time, but the envelope maps no \
                               'timestamp': add envelope.timestamp or use retain.rows"
                    .to_string();
                ctx.error("config.invalid_value", e.key, &e.path, message);
                return None;
            }
            age.map(Some)
        }
        None => Some(None),
    };
    Some(Retain {
        rows: rows?,
        age_ms: age_ms?,
    })
}

/// A column that is an expression: `name: EXPR` (a string column) or
/// `name: {expr: EXPR, type: T}`.
fn typed_expression(
    ctx: &mut Ctx<'_>,
    e: &Entry<'_>,
    fields: &mut FieldRegistry,
) -> Option<(Expr, ColumnType)> {
    match &e.value.data {
        YamlData::Mapping(_) => ctx
            .record(e.value, &e.path, &["expr", "type"])
            .and_then(|rec| {
                let expr = rec
                    .require(ctx, "expr")
                    .and_then(|x| expression(ctx, x.value, &x.path, fields));
                let ty = match rec.get("type") {
                    Some(t) => column_type(ctx, t.value, &t.path),
                    None => Some(ColumnType::String),
                };
                Some((expr?, ty?))
            }),
        _ => expression(ctx, e.value, &e.path, fields).map(|x| (x, ColumnType::String)),
    }
}

// ---------------------------------------------------------------------------------------
// Aggregate views

fn aggregate(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
) -> Option<AggregateSpec> {
    let rec = ctx.record(node, path, &["filter", "group_by", "columns"])?;
    let filter = match rec.get("filter") {
        Some(e) => expression(ctx, e.value, &e.path, fields).map(Some),
        None => Some(None),
    };
    let mut names: Vec<String> = Vec::new();
    let group_by = match rec.get("group_by") {
        Some(e) => group_by(ctx, e.value, &e.path, fields, &mut names),
        None => Some(Vec::new()),
    };
    let columns = rec
        .require(ctx, "columns")
        .and_then(|e| agg_columns(ctx, e.value, &e.path, fields, &mut names));
    Some(AggregateSpec {
        filter: filter?,
        group_by: group_by?,
        columns: columns?,
    })
}

/// Checks a group-by or aggregate column name: an identifier not used before in the view.
fn new_column_name(ctx: &mut Ctx<'_>, e: &Entry<'_>, names: &mut Vec<String>) -> bool {
    if !check_identifier(ctx, e.key, &e.path, "column name", &e.name) {
        return false;
    }
    if names.contains(&e.name) {
        let message = format!(
            "column '{}' is used twice in this view; names must be unique",
            e.name
        );
        ctx.error("config.invalid_value", e.key, &e.path, message);
        return false;
    }
    names.push(e.name.clone());
    true
}

fn group_by(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
    names: &mut Vec<String>,
) -> Option<Vec<GroupColumn>> {
    let entries = ctx.entries(node, path, true)?;
    typed_columns(ctx, &entries, fields, names, |name, expr, ty| GroupColumn {
        name,
        expr,
        ty,
    })
}

/// Columns given as `name: expression` (or `{expr, type}`) entries, built by `make`;
/// `None` if any name or expression is wrong (every one of them is reported).
fn typed_columns<T>(
    ctx: &mut Ctx<'_>,
    entries: &[Entry<'_>],
    fields: &mut FieldRegistry,
    names: &mut Vec<String>,
    make: impl Fn(String, Expr, ColumnType) -> T,
) -> Option<Vec<T>> {
    let mut out = Some(Vec::with_capacity(entries.len()));
    for e in entries {
        let name_ok = new_column_name(ctx, e, names);
        let col = typed_expression(ctx, e, fields)
            .filter(|_| name_ok)
            .map(|(expr, ty)| make(e.name.clone(), expr, ty));
        out = out.zip(col).map(|(mut all, c)| {
            all.push(c);
            all
        });
    }
    out
}

fn agg_columns(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
    names: &mut Vec<String>,
) -> Option<Vec<AggColumn>> {
    let entries = ctx.entries(node, path, true)?;
    if entries.is_empty() {
        let message =
            "an aggregate view needs at least one column, e.g. {events: 'count(*)'}".to_string();
        ctx.error("config.invalid_value", node, path, message);
        return None;
    }
    let mut out = Some(Vec::with_capacity(entries.len()));
    for e in &entries {
        let name_ok = new_column_name(ctx, e, names);
        let col = agg_column(ctx, e, fields).filter(|_| name_ok);
        out = out.zip(col).map(|(mut all, c)| {
            all.push(c);
            all
        });
    }
    out
}

fn agg_column(ctx: &mut Ctx<'_>, e: &Entry<'_>, fields: &mut FieldRegistry) -> Option<AggColumn> {
    const EXPECTED: &str = "an aggregate such as 'count(*)' or 'sum(payload.amount)'";
    let (expr_node, expr_path, ty) = match &e.value.data {
        YamlData::Mapping(_) => {
            let rec = ctx.record(e.value, &e.path, &["expr", "type"])?;
            let ty = match rec.get("type") {
                Some(t) => {
                    column_type(ctx, t.value, &t.path).map(|ty| Some((ty, t.value, t.path.clone())))
                }
                None => Some(None),
            };
            let x = rec.require(ctx, "expr")?;
            (x.value, x.path.clone(), ty)
        }
        _ => (e.value, e.path.clone(), Some(None)),
    };
    let YamlData::Value(Scalar::String(text)) = &expr_node.data else {
        ctx.wrong_type(expr_node, &expr_path, EXPECTED);
        return None;
    };
    let (func, arg) = match parse_aggregate(text, fields) {
        Ok(parsed) => parsed,
        Err(err) => {
            let message = err.to_string();
            ctx.error("config.bad_expression", expr_node, &expr_path, message);
            return None;
        }
    };
    let (allowed, default): (&[ColumnType], ColumnType) = match func {
        AggFn::CountStar | AggFn::Count => (&[ColumnType::Int64], ColumnType::Int64),
        AggFn::Avg => (&[ColumnType::Float64], ColumnType::Float64),
        AggFn::Sum => (
            &[ColumnType::Int64, ColumnType::Float64],
            ColumnType::Float64,
        ),
        AggFn::Min | AggFn::Max => (&[], ColumnType::Float64),
    };
    let ty = match ty? {
        None => default,
        Some((ty, _, _)) if allowed.is_empty() || allowed.contains(&ty) => ty,
        Some((ty, node, path)) => {
            let list: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
            let message = format!(
                "type {ty} is not allowed for {}: use {}",
                fn_name(func),
                list.join(" or ")
            );
            ctx.error("config.invalid_value", node, &path, message);
            return None;
        }
    };
    Some(AggColumn {
        name: e.name.clone(),
        func,
        arg,
        ty,
    })
}

fn fn_name(f: AggFn) -> &'static str {
    match f {
        AggFn::CountStar => "count(*)",
        AggFn::Count => "count",
        AggFn::Sum => "sum",
        AggFn::Min => "min",
        AggFn::Max => "max",
        AggFn::Avg => "avg",
    }
}
