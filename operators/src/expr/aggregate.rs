//! Aggregate view columns: `count(*)`, `count(x)`, `sum(x)`, `min(x)`, `max(x)` and
//! `avg(x)`, parsed into an [`AggFn`] and the [`Expr`] of its argument.

use sqlparser::ast::ObjectNamePart;
use sqlparser::ast::{self, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments};

use super::compile::{compile, parse_sql};
use super::{AggregateIssue, Expr, ExprError};
use crate::fields::FieldRegistry;

/// What [`parse_aggregate`] supports, for error messages.
pub(super) const SUPPORTED_AGGREGATES: &str =
    "supported aggregates are count(*), count(x), sum(x), min(x), max(x) and avg(x)";

/// An aggregate function, as written in an aggregate view column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// `count(*)`: rows.
    CountStar,
    /// `count(x)`: rows where `x` is not null.
    Count,
    /// `sum(x)`.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `avg(x)`.
    Avg,
}

impl AggFn {
    /// The function's SQL name (`count` for both [`AggFn::CountStar`] and [`AggFn::Count`]).
    pub fn name(self) -> &'static str {
        match self {
            AggFn::CountStar | AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
        }
    }
}

/// Parses an aggregate column expression such as `count(*)` or `sum(payload.amount)`.
/// The argument is `None` only for `count(*)`.
pub fn parse_aggregate(
    text: &str,
    fields: &mut FieldRegistry,
) -> Result<(AggFn, Option<Expr>), ExprError> {
    let ast = parse_sql(text)?;
    let mut ast = &ast;
    while let ast::Expr::Nested(inner) = ast {
        ast = inner;
    }
    let ast::Expr::Function(f) = ast else {
        return Err(ExprError::NotAnAggregate {
            text: text.to_string(),
        });
    };
    let bad = |issue| ExprError::UnsupportedAggregate {
        call: f.to_string(),
        issue,
    };
    let name = match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => id.value.to_ascii_lowercase(),
        _ => return Err(bad(AggregateIssue::Unsupported)),
    };
    let agg = match name.as_str() {
        "count" => AggFn::Count,
        "sum" => AggFn::Sum,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "avg" => AggFn::Avg,
        _ => return Err(bad(AggregateIssue::Unsupported)),
    };
    if f.filter.is_some() {
        return Err(bad(AggregateIssue::Filter));
    }
    if f.over.is_some() {
        return Err(bad(AggregateIssue::Over));
    }
    if f.uses_odbc_syntax
        || f.null_treatment.is_some()
        || !f.within_group.is_empty()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(bad(AggregateIssue::Unsupported));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(bad(AggregateIssue::Unsupported));
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(bad(AggregateIssue::Distinct));
    }
    if !list.clauses.is_empty() {
        return Err(bad(AggregateIssue::Clauses));
    }
    let [arg] = list.args.as_slice() else {
        return Err(bad(AggregateIssue::Arity { name }));
    };
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if agg == AggFn::Count => {
            Ok((AggFn::CountStar, None))
        }
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok((
            agg,
            Some(Expr {
                node: compile(e, fields, 1)?,
            }),
        )),
        _ => Err(bad(AggregateIssue::Unsupported)),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn aggregates() {
        let mut f = FieldRegistry::new();
        assert_eq!(
            parse_aggregate("count(*)", &mut f).unwrap(),
            (AggFn::CountStar, None)
        );
        assert_eq!(
            parse_aggregate("COUNT( * )", &mut f).unwrap(),
            (AggFn::CountStar, None)
        );
        assert!(f.is_empty());
        let (agg, e) = parse_aggregate("sum(payload.amount)", &mut f).unwrap();
        assert_eq!(agg, AggFn::Sum);
        assert_eq!(e.unwrap().as_field(), f.get("payload.amount"));
        let (agg, e) = parse_aggregate("count(customer)", &mut f).unwrap();
        assert_eq!(agg, AggFn::Count);
        assert_eq!(e.unwrap().as_field(), f.get("customer"));
        assert_eq!(parse_aggregate("Min(x)", &mut f).unwrap().0, AggFn::Min);
        assert_eq!(parse_aggregate("MAX(x)", &mut f).unwrap().0, AggFn::Max);
        let (agg, e) = parse_aggregate("avg(price * qty)", &mut f).unwrap();
        assert_eq!(agg, AggFn::Avg);
        let e = e.unwrap();
        let mut slots = vec![Value::Null; f.len()];
        slots[f.get("price").unwrap().index()] = Value::Float(2.5);
        slots[f.get("qty").unwrap().index()] = Value::Int(4);
        assert_eq!(e.eval(&slots).unwrap(), Value::Float(10.0));
        assert_eq!(AggFn::CountStar.name(), "count");
        assert_eq!(AggFn::Avg.name(), "avg");
    }

    #[test]
    fn aggregate_errors() {
        let err = |text: &str| {
            parse_aggregate(text, &mut FieldRegistry::new())
                .unwrap_err()
                .to_string()
        };
        for text in ["x", "x + 1", "'count(*)'", "1"] {
            assert!(
                err(text).starts_with(
                    "expected an aggregate such as count(*), sum(x), min(x), max(x), avg(x)"
                ),
                "{text}: {}",
                err(text)
            );
        }
        for (text, needle) in [
            ("count(DISTINCT x)", "DISTINCT"),
            ("count(x) FILTER (WHERE x > 1)", "FILTER"),
            ("sum(x) OVER (PARTITION BY y)", "OVER"),
            ("sum(x, y)", "exactly one argument"),
            ("sum()", "exactly one argument"),
            ("median(x)", SUPPORTED_AGGREGATES),
            ("sum(*)", SUPPORTED_AGGREGATES),
            ("pg_catalog.sum(x)", SUPPORTED_AGGREGATES),
        ] {
            let m = err(text);
            assert!(m.starts_with("unsupported aggregate `"), "{text}: {m}");
            assert!(m.contains(needle), "{text}: {m}");
        }
        assert!(err("sum(foo(x))").starts_with("unsupported expression `foo(x)`"));
        assert!(err("sum(x) y").starts_with("invalid expression `sum(x) y`"));
        assert!(err("sum(").starts_with("invalid expression `sum(`"));
    }
}
