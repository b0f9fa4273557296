//! Table views: one row per matching event, retained by count or age.

use super::aggregate::typed_columns;
use super::{column_type, expression};
use crate::config::yaml::{Ctx, Entry, Node, join};
use projector_operators::expr::Expr;
use projector_operators::fields::FieldRegistry;
use projector_operators::table::{Retain, TableColumn, TableSpec};
use projector_operators::value::ColumnType;
use saphyr::YamlData;

pub(super) fn table(
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
pub(super) fn retain(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    has_time: Option<bool>,
) -> Option<Retain> {
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
            let age = crate::config::compile::duration(ctx, e.value, &e.path).and_then(|d| {
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
pub(super) fn typed_expression(
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
