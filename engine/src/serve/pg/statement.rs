//! What a Postgres client sends, sorted before it reaches the SQL engine.
//!
//! * Session statements drivers send on their own (`BEGIN`, `COMMIT`, `SET`, `RESET`,
//!   `DISCARD`, `DEALLOCATE`) are accepted and change nothing: every query reads the
//!   newest epoch, read-only. `SHOW` answers from the settings of
//!   `query/pg_catalog.rs`.
//! * Queries over `pg_catalog` are rewritten into what DataFusion plans: Postgres's
//!   `OPERATOR(pg_catalog.~)`, `COLLATE`, casts to `regclass` and friends, and
//!   schema-qualified function names become their plain forms; a scalar subquery that
//!   reads a catalog Projector keeps empty (defaults, collations, policies,
//!   inheritance, ...) becomes NULL, and a query that can only read such catalogs is
//!   answered with no rows without running.
//! * Everything else goes to the engine as it came, which refuses what is not a query.

use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType, Expr, JoinOperator, ObjectName, ObjectNamePart,
    Query, SelectItem, SetExpr, TableFactor, Value, Visit, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use std::ops::ControlFlow;

/// One statement, sorted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    /// A query for the engine, rewritten where it reads `pg_catalog`.
    Query(String),
    /// `BEGIN` or `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`, `ROLLBACK` or `ABORT`: the command tag.
    End(&'static str),
    /// A session statement that changes nothing here: its command tag.
    Accepted(String),
    /// `SHOW name`: the setting and its value.
    Show(String, String),
    /// A query that reads only catalogs Projector keeps empty: its column names.
    Empty(Vec<String>),
}

/// The catalogs Projector keeps empty: a query that needs a row of one of them has no
/// rows.
const EMPTY_CATALOGS: &[&str] = &[
    "pg_attrdef",
    "pg_collation",
    "pg_constraint",
    "pg_event_trigger",
    "pg_extension",
    "pg_foreign_table",
    "pg_index",
    "pg_inherits",
    "pg_partitioned_table",
    "pg_policy",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_rewrite",
    "pg_statistic_ext",
    "pg_trigger",
];

/// The statements of a simple query, split at the semicolons between them (not those
/// in strings, quoted names or comments). Text that does not tokenize is one statement,
/// so the engine reports its error.
pub(crate) fn split(sql: &str) -> Vec<String> {
    // The statements are cut out of the text as it came, never printed back from
    // tokens: printing unescapes (`'it''s'` would come back as `'it's'`, and a value a
    // client escaped would become SQL).
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return vec![sql.to_string()];
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    // Locations count lines and characters from 1.
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..]
            .char_indices()
            .nth(column)
            .map(|(i, _)| start + i)
    };
    let mut out = Vec::new();
    let mut from = 0;
    for t in tokens {
        if t.token == Token::SemiColon {
            let Some(at) = offset(t.span.start.line, t.span.start.column) else {
                return vec![sql.to_string()];
            };
            out.push(sql[from..at].to_string());
            from = at + 1;
        }
    }
    out.push(sql[from..].to_string());
    out.retain(|s| !s.trim().is_empty());
    out
}

/// Sorts one statement.
pub(crate) fn classify(sql: &str) -> Statement {
    let words: Vec<(Keyword, String)> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some((w.keyword, w.value)),
            _ => None,
        })
        .take(3)
        .collect();
    let tag = |n: usize| {
        words
            .iter()
            .take(n)
            .map(|(_, w)| w.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match words.first().map(|(k, _)| *k) {
        Some(Keyword::BEGIN | Keyword::START) => return Statement::Begin,
        Some(Keyword::COMMIT | Keyword::END) => return Statement::End("COMMIT"),
        Some(Keyword::ROLLBACK | Keyword::ABORT) => return Statement::End("ROLLBACK"),
        Some(Keyword::SET | Keyword::RESET | Keyword::DEALLOCATE | Keyword::UNLISTEN) => {
            return Statement::Accepted(tag(1));
        }
        Some(Keyword::DISCARD) => return Statement::Accepted(tag(2)),
        Some(Keyword::SHOW) => {
            let name = sql
                .trim()
                .trim_end_matches(';')
                .split_once(char::is_whitespace)
                .map(|(_, n)| n.trim().trim_matches('"').to_string())
                .unwrap_or_default();
            if name.eq_ignore_ascii_case("all") {
                return Statement::Query(
                    "SELECT name, setting FROM pg_catalog.pg_settings ORDER BY name".into(),
                );
            }
            return match crate::serve::query::pg_catalog::setting(&name) {
                Some(v) => Statement::Show(name, v.to_string()),
                // The engine's own error for an unknown setting.
                None => Statement::Query(sql.to_string()),
            };
        }
        _ => {}
    }
    // Parsing and printing a tree recurse as deep as it nests: the engine refuses what
    // nests too deep, before anything is parsed.
    if needs_rewrite(sql)
        && !crate::serve::query::nests_too_deep(sql)
        && let Some(s) = rewrite(sql)
    {
        return s;
    }
    Statement::Query(sql.to_string())
}

/// Whether `sql` may hold Postgres-only forms: it names `pg_catalog` (as psql and
/// drivers do), or uses `OPERATOR(...)`, `COLLATE` or a `reg*` cast. Other queries are
/// never parsed twice, nor printed back.
fn needs_rewrite(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    ["pg_catalog", "operator(", "::reg", "collate"]
        .iter()
        .any(|w| lower.contains(w))
}

/// `sql` in the forms DataFusion plans, or answered as empty; `None` when it does not
/// parse as one statement (the engine then reports why).
fn rewrite(sql: &str) -> Option<Statement> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let mut statement = statements.pop()?;
    if let ast::Statement::Query(q) = &statement
        && query_is_empty(q)
        && !aggregates(q)
    {
        return Some(Statement::Empty(columns(q)));
    }
    let _ = visit_expressions_mut(&mut statement, |e| {
        plain(e);
        ControlFlow::<()>::Continue(())
    });
    Some(Statement::Query(statement.to_string()))
}

/// Rewrites one Postgres-only form in place.
fn plain(e: &mut Expr) {
    match e {
        Expr::Function(f) => unqualify(&mut f.name),
        Expr::BinaryOp { op, .. } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op
                && let Some(plain) = parts.last().and_then(|o| operator(o))
            {
                *op = plain;
            }
        }
        Expr::Collate { expr, .. } => *e = (**expr).clone(),
        Expr::Cast {
            kind: CastKind::DoubleColon | CastKind::Cast,
            data_type,
            ..
        } => {
            if let Some(t) = plain_type(data_type) {
                *data_type = t;
            }
        }
        // A subquery with an aggregate gives a row even from no rows (`count` is 0).
        Expr::Subquery(q) if query_is_empty(q) && !aggregates(q) => {
            *e = Expr::Value(Value::Null.into())
        }
        _ => {}
    }
}

/// `pg_catalog.f` → `f`.
fn unqualify(name: &mut ObjectName) {
    if name.0.len() == 2
        && matches!(&name.0[0], ObjectNamePart::Identifier(i) if i.value.eq_ignore_ascii_case("pg_catalog"))
    {
        name.0.remove(0);
    }
}

/// The operator `OPERATOR(pg_catalog.op)` names.
fn operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "=" => BinaryOperator::Eq,
        "<>" | "!=" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        "||" => BinaryOperator::StringConcat,
        "~~" => return None,
        _ => return None,
    })
}

/// The type DataFusion knows for a Postgres catalog type: object identifiers and their
/// `reg*` names are numbers or text here.
fn plain_type(t: &DataType) -> Option<DataType> {
    let DataType::Custom(name, _) = t else {
        return None;
    };
    let last = match name.0.last()? {
        ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
        ObjectNamePart::Function(_) => return None,
    };
    Some(match last.as_str() {
        "oid" | "xid" | "cid" => DataType::BigInt(None),
        "int2" => DataType::SmallInt(None),
        "int4" => DataType::Int(None),
        "int8" => DataType::BigInt(None),
        "bool" => DataType::Boolean,
        "float4" => DataType::Real,
        "float8" => DataType::DoublePrecision,
        n if n.starts_with("reg") => DataType::Text,
        "text" | "name" | "char" | "varchar" | "bpchar" => DataType::Text,
        _ => return None,
    })
}

/// Whether every row `q` could give needs a row of an empty catalog: each `SELECT` of
/// it reads one, in its `FROM` or joined with an inner join.
fn query_is_empty(q: &Query) -> bool {
    body_is_empty(&q.body)
}

fn body_is_empty(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.from.iter().any(|from| {
            // A right or full join keeps the rows of what it joins.
            let kept = from.joins.iter().any(|j| {
                !matches!(
                    j.join_operator,
                    JoinOperator::Join(_)
                        | JoinOperator::Inner(_)
                        | JoinOperator::CrossJoin(_)
                        | JoinOperator::Left(_)
                        | JoinOperator::LeftOuter(_)
                        | JoinOperator::LeftSemi(_)
                        | JoinOperator::LeftAnti(_)
                        | JoinOperator::Semi(_)
                        | JoinOperator::Anti(_)
                )
            });
            (reads_empty(&from.relation) && !kept)
                || from.joins.iter().any(|j| {
                    matches!(
                        j.join_operator,
                        JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
                    ) && reads_empty(&j.relation)
                })
        }),
        SetExpr::SetOperation { left, right, .. } => body_is_empty(left) && body_is_empty(right),
        SetExpr::Query(q) => query_is_empty(q),
        _ => false,
    }
}

fn reads_empty(t: &TableFactor) -> bool {
    match t {
        TableFactor::Table { name, .. } => match name.0.last() {
            Some(ObjectNamePart::Identifier(i)) => {
                EMPTY_CATALOGS.contains(&i.value.to_ascii_lowercase().as_str())
            }
            _ => false,
        },
        TableFactor::Derived { subquery, .. } => query_is_empty(subquery),
        _ => false,
    }
}

/// Whether a `SELECT` of `q` aggregates without `GROUP BY` (and so has a row even
/// when it reads none).
fn aggregates(q: &Query) -> bool {
    fn select_aggregates(body: &SetExpr) -> bool {
        match body {
            SetExpr::Select(s) => {
                let grouped =
                    !matches!(&s.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
                !grouped
                    && s.projection.iter().any(|item| {
                        let e = match item {
                            SelectItem::UnnamedExpr(e)
                            | SelectItem::ExprWithAlias { expr: e, .. } => e,
                            _ => return false,
                        };
                        let mut finder = Aggregate {
                            depth: 0,
                            found: false,
                        };
                        let _ = e.visit(&mut finder);
                        finder.found
                    })
            }
            SetExpr::SetOperation { left, right, .. } => {
                select_aggregates(left) || select_aggregates(right)
            }
            SetExpr::Query(q) => select_aggregates(&q.body),
            _ => false,
        }
    }
    select_aggregates(&q.body)
}

/// Finds an aggregate call outside any subquery.
struct Aggregate {
    depth: usize,
    found: bool,
}

impl ast::Visitor for Aggregate {
    type Break = ();

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.depth == 0
            && let Expr::Function(f) = e
            && let Some(ObjectNamePart::Identifier(i)) = f.name.0.last()
            && AGGREGATES.contains(&i.value.to_ascii_lowercase().as_str())
        {
            self.found = true;
        }
        ControlFlow::Continue(())
    }
}

/// Aggregate functions catalog queries use.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
];

/// The column names of `q`'s result, as Postgres names them.
fn columns(q: &Query) -> Vec<String> {
    let mut body = &*q.body;
    loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = &q.body,
            _ => break,
        }
    }
    let SetExpr::Select(select) = body else {
        return vec!["?column?".into()];
    };
    select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            SelectItem::UnnamedExpr(e) => column_name(e),
            _ => "?column?".into(),
        })
        .collect()
}

fn column_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map_or("?column?".into(), |i| i.value.clone())
        }
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
            _ => "?column?".into(),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => column_name(expr),
        _ => "?column?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_strings() {
        assert_eq!(
            split("SELECT 'a;b'; SELECT 2 ;"),
            vec!["SELECT 'a;b'".to_string(), " SELECT 2 ".to_string()]
        );
        assert_eq!(split(";;"), Vec::<String>::new());
        // Escaped quotes stay escaped: a value never turns into SQL.
        assert_eq!(
            split("SELECT 'x'' OR ''1''=''1'; SELECT \"a\"\"b\", E'\\''"),
            vec![
                "SELECT 'x'' OR ''1''=''1'".to_string(),
                " SELECT \"a\"\"b\", E'\\''".to_string()
            ]
        );
    }

    #[test]
    fn session_statements_are_accepted() {
        assert_eq!(classify("begin"), Statement::Begin);
        assert_eq!(classify("START TRANSACTION READ ONLY"), Statement::Begin);
        assert_eq!(classify("ROLLBACK"), Statement::End("ROLLBACK"));
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            Statement::Accepted("SET".into())
        );
        assert_eq!(
            classify("DISCARD ALL"),
            Statement::Accepted("DISCARD ALL".into())
        );
        assert_eq!(
            classify("SHOW transaction isolation level"),
            Statement::Show(
                "transaction isolation level".into(),
                "read committed".into()
            )
        );
    }

    #[test]
    fn psql_describe_forms_become_plain() {
        let q = classify(
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname OPERATOR(pg_catalog.~) '^(accounts)$' COLLATE pg_catalog.default \
             AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
        );
        let Statement::Query(text) = q else {
            panic!("{q:?}")
        };
        assert!(text.contains("c.relname ~ '^(accounts)$'"), "{text}");
        assert!(text.contains(" pg_table_is_visible(c.oid)"), "{text}");
        assert!(!text.contains("COLLATE"), "{text}");
    }

    #[test]
    fn empty_catalogs_give_no_rows_and_null_subqueries() {
        assert_eq!(
            classify(
                "SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_class c, \
                 pg_catalog.pg_inherits i WHERE c.oid = i.inhparent ORDER BY inhseqno"
            ),
            Statement::Empty(vec!["oid".into()])
        );
        let Statement::Query(text) = classify(
            "SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) \
             FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) \
             FROM pg_catalog.pg_attribute a",
        ) else {
            panic!()
        };
        assert_eq!(
            text,
            "SELECT a.attname, NULL FROM pg_catalog.pg_attribute a"
        );
    }
}
