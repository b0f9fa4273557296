//! Logical plans of recent queries, so a repeated query is not parsed and planned again.
//!
//! A query's text is the key. Key lookups repeat with a different key each time, so
//! string literals compared with `=` in the `WHERE` clause are first replaced with
//! placeholders (`account_id = 'a-17'` → `account_id = $1`): one plan serves every key,
//! and the literal is bound into a copy of it. Only that shape is parameterised (no
//! nested `SELECT` after the `WHERE`, no `EXPLAIN`), so neither result column names nor
//! printed plans ever show a placeholder;
//! a plan that cannot take the parameter (its type differs) is remembered as such and
//! the query is planned from its text as before. Plans hold no data: views are read when
//! the plan runs, from the epoch the query pinned.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use std::collections::HashMap;
use std::sync::Mutex;

/// Plans kept; when full the cache starts over (queries from one application repeat a
/// few shapes, so a simple bound is enough).
const ENTRIES: usize = 256;

/// What the cache knows of a query shape.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// Its plan (with placeholders if the text was parameterised).
    Plan(LogicalPlan),
    /// The parameterised shape does not plan or bind: plan such queries from their text.
    Unparameterisable,
}

/// Recent plans by query shape.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    plans: Mutex<HashMap<String, Cached>>,
}

impl PlanCache {
    /// What is cached for `shape`.
    pub(crate) fn get(&self, shape: &str) -> Option<Cached> {
        self.plans
            .lock()
            .expect("plan cache lock")
            .get(shape)
            .cloned()
    }

    /// Remembers `cached` for `shape`.
    pub(crate) fn put(&self, shape: String, cached: Cached) {
        let mut plans = self.plans.lock().expect("plan cache lock");
        if plans.len() >= ENTRIES {
            plans.clear();
        }
        plans.insert(shape, cached);
    }
}

/// The text with every string literal that follows `=` in the `WHERE` clause replaced by
/// `$1`, `$2`, ... and those literals in order; `None` when there are none (or the text
/// does not tokenize, or has a `SELECT` nested after its `WHERE`).
pub(crate) fn parameterise(sql: &str) -> Option<(String, Vec<ScalarValue>)> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    // Plain queries only: EXPLAIN prints its plan as planned, placeholders and all.
    let first = tokens.iter().find(|t| !matches!(t, Token::Whitespace(_)));
    if !matches!(first, Some(Token::Word(w)) if w.keyword == Keyword::SELECT) {
        return None;
    }
    let mut in_where = false;
    let mut last: Option<&Token> = None;
    let mut params = Vec::new();
    let mut text = String::with_capacity(sql.len());
    for token in &tokens {
        if let Token::Word(w) = token {
            match w.keyword {
                Keyword::WHERE => in_where = true,
                Keyword::SELECT if in_where => return None,
                Keyword::GROUP
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::HAVING
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::WINDOW
                | Keyword::QUALIFY => in_where = false,
                _ => {}
            }
        }
        match token {
            Token::SingleQuotedString(s) if in_where && last == Some(&Token::Eq) => {
                params.push(ScalarValue::Utf8(Some(s.clone())));
                text.push_str(&format!("${}", params.len()));
            }
            other => text.push_str(&other.to_string()),
        }
        if !matches!(token, Token::Whitespace(_)) {
            last = Some(token);
        }
    }
    (!params.is_empty()).then_some((text, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.into()))
    }

    #[test]
    fn string_literals_compared_with_eq_in_where_become_placeholders() {
        assert_eq!(
            parameterise("SELECT * FROM accounts WHERE account_id = 'a-17'"),
            Some((
                "SELECT * FROM accounts WHERE account_id = $1".into(),
                vec![utf8("a-17")]
            ))
        );
        assert_eq!(
            parameterise(
                "select owner from accounts where account_id='it''s' and owner = 'x' order by 1 limit 5"
            ),
            Some((
                "select owner from accounts where account_id=$1 and owner = $2 order by 1 limit 5"
                    .into(),
                vec![utf8("it's"), utf8("x")]
            ))
        );
    }

    #[test]
    fn other_literals_and_shapes_are_left_alone() {
        // Not after `=`, not in WHERE, in a select list, or with a nested query.
        assert_eq!(
            parameterise("SELECT * FROM accounts WHERE 'a' = account_id"),
            None
        );
        assert_eq!(
            parameterise("SELECT * FROM accounts WHERE owner LIKE 'a%'"),
            None
        );
        assert_eq!(parameterise("SELECT owner = 'a' FROM accounts"), None);
        assert_eq!(
            parameterise("SELECT count(*) FROM accounts GROUP BY owner HAVING owner = 'x'"),
            None
        );
        assert_eq!(
            parameterise("SELECT * FROM a WHERE k IN (SELECT k FROM b WHERE v = 'x')"),
            None
        );
        assert_eq!(
            parameterise("SELECT * FROM accounts WHERE balance = 5"),
            None
        );
        assert_eq!(parameterise("SELECT 'unterminated"), None);
        assert_eq!(
            parameterise("EXPLAIN SELECT * FROM accounts WHERE account_id = 'a'"),
            None
        );
    }
}
