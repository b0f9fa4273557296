//! Aggregate views: group-by columns and partial aggregates.

use super::table::typed_expression;
use super::{check_identifier, column_type, expression};
use crate::config::yaml::{Ctx, Entry, Node};
use projector_operators::aggregate::{AggColumn, AggregateSpec, GroupColumn};
use projector_operators::expr::{AggFn, Expr, parse_aggregate};
use projector_operators::fields::FieldRegistry;
use projector_operators::value::ColumnType;
use saphyr::{Scalar, YamlData};

pub(super) fn aggregate(
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
pub(super) fn typed_columns<T>(
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
    // The argument's type, when the fields it reads are declared (`fields:`): an
    // integer sum stays an integer, a min of strings is a string.
    let inferred = arg
        .as_ref()
        .and_then(|a| a.static_type(&|id| fields.declared_type(id)));
    let (allowed, default): (&[ColumnType], ColumnType) = match func {
        AggFn::CountStar | AggFn::Count => (&[ColumnType::Int64], ColumnType::Int64),
        AggFn::Avg => (&[ColumnType::Float64], ColumnType::Float64),
        AggFn::Sum => (
            &[ColumnType::Int64, ColumnType::Float64],
            match inferred {
                Some(ColumnType::Int64) => ColumnType::Int64,
                _ => ColumnType::Float64,
            },
        ),
        AggFn::Min | AggFn::Max => (&[], inferred.unwrap_or(ColumnType::Float64)),
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
