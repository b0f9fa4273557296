//! Refuses SQL whose expressions nest too deep, before anything parses it into a tree.
//!
//! `SELECT 1+1+…+1` with 2,000 terms, or a 2,000-term `OR` chain of key lookups, parses
//! without recursion (operators of one precedence are read in a loop) into a tree
//! 2,000 levels deep; planning, optimising and even dropping that tree then recurse once
//! per level, and a thread's stack overflowed, which aborts the whole process. So the
//! depth is bounded from the tokens, which need no recursion: within one parenthesised
//! group, operators and keywords between two commas chain at most one level each, and a
//! group nests inside its parent's level; so do subscripts (`a[1][2]…`), the tables of
//! a comma join and the CTEs of a `WITH`, while the branches of a `CASE` stand side by
//! side. The bound is meant never to be below the tree's depth, and is close to it for
//! the chains above.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Deepest expression nesting a query may have (by [`nesting_bound`]). Query threads
/// have stack for many times this; ordinary queries stay far below it, and a long
/// list of alternatives fits in `IN (...)`, which does not nest.
pub(crate) const MAX_NESTING: usize = 500;

/// An upper bound of how deep the expressions of `sql` nest; `None` when `sql` does not
/// tokenize (the parser then reports the error, before building any tree).
pub(crate) fn nesting_bound(sql: &str) -> Option<usize> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    // Per open group: the most chained tokens in one of its comma-separated items so
    // far, those in the current item, the deepest group closed inside it, and whether
    // its commas chain (between FROM or WITH and the next clause: each table of a
    // comma join, each CTE, nests the plan one level deeper).
    struct Group {
        best: usize,
        current: usize,
        inner: usize,
        commas_chain: bool,
    }
    let depth = |g: &Group| g.best.max(g.current) + g.inner + 1;
    let open = || Group {
        best: 0,
        current: 0,
        inner: 0,
        commas_chain: false,
    };
    let mut stack = vec![open()];
    for token in &tokens {
        let nested = stack.len() > 1;
        let g = stack.last_mut().expect("the outermost group");
        match token {
            // A subscript follows its value (`a[1][2]…` nests once per subscript).
            Token::LBracket => {
                g.current += 1;
                stack.push(open());
            }
            Token::LParen | Token::LBrace => stack.push(open()),
            // An unbalanced close is the parser's error to report.
            Token::RParen | Token::RBracket | Token::RBrace if nested => {
                let closed = stack.pop().expect("more than one group");
                let d = depth(&closed);
                let parent = stack.last_mut().expect("the outermost group");
                parent.inner = parent.inner.max(d);
            }
            Token::Comma if g.commas_chain => g.current += 1,
            Token::Comma | Token::SemiColon => {
                g.best = g.best.max(g.current);
                g.current = 0;
            }
            Token::Word(w) => match w.keyword {
                Keyword::FROM | Keyword::WITH => {
                    g.commas_chain = true;
                    g.current += 1;
                }
                Keyword::SELECT
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::WINDOW
                | Keyword::QUALIFY => {
                    g.commas_chain = false;
                    g.current += 1;
                }
                // A CASE's branches are side by side, not nested.
                Keyword::WHEN | Keyword::THEN | Keyword::ELSE => {
                    g.best = g.best.max(g.current);
                    g.current = 0;
                }
                Keyword::NoKeyword => {}
                _ => g.current += 1,
            },
            t if chains(t) => g.current += 1,
            _ => {}
        }
    }
    // Groups left open are closed by the end of the text.
    while stack.len() > 1 {
        let closed = stack.pop().expect("more than one group");
        let d = depth(&closed);
        let parent = stack.last_mut().expect("the outermost group");
        parent.inner = parent.inner.max(d);
    }
    Some(depth(&stack[0]))
}

/// Whether a token can add a level to an expression: an operator or a keyword, not a
/// name, a literal, a separator or white space.
fn chains(token: &Token) -> bool {
    match token {
        Token::Whitespace(_)
        | Token::Period
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::DollarQuotedString(_)
        | Token::EOF => false,
        Token::Word(w) => w.keyword != Keyword::NoKeyword,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_of_one_operator_is_as_deep_as_it_is_long() {
        let sql = format!("SELECT {}", vec!["1"; 2000].join("+"));
        let d = nesting_bound(&sql).unwrap();
        assert!((1999..2010).contains(&d), "{d}");
        let ors: Vec<String> = (0..2000).map(|i| format!("id = 'k{i}'")).collect();
        let sql = format!("SELECT * FROM accounts WHERE {}", ors.join(" OR "));
        assert!(nesting_bound(&sql).unwrap() >= 2000);
    }

    #[test]
    fn lists_and_ordinary_queries_are_shallow() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("'k{i}'")).collect();
        let sql = format!(
            "SELECT * FROM accounts WHERE account_id IN ({})",
            keys.join(", ")
        );
        assert!(
            nesting_bound(&sql).unwrap() < 20,
            "an IN list does not nest"
        );
        let sql = "SELECT owner, sum(balance) AS b FROM accounts WHERE balance > 10 AND \
                   deposits < 3 GROUP BY owner ORDER BY b DESC LIMIT 10";
        assert!(nesting_bound(sql).unwrap() < 40);
    }

    #[test]
    fn parentheses_add_their_parents_level() {
        let open = "(".repeat(300);
        let close = ")".repeat(300);
        let d = nesting_bound(&format!("SELECT {open}1{close}")).unwrap();
        assert!(d >= 300, "{d}");
        // Unbalanced text still gets a bound (the parser reports it).
        assert!(nesting_bound(&format!("SELECT {open}1")).unwrap() >= 300);
        assert!(nesting_bound("SELECT 1)))").is_some());
    }

    #[test]
    fn subscripts_comma_joins_and_ctes_chain_and_case_branches_do_not() {
        let slices = "[1:1]".repeat(2000);
        assert!(nesting_bound(&format!("SELECT [1]{slices}")).unwrap() > 2000);
        let tables: Vec<String> = (0..2000).map(|i| format!("v t{i}")).collect();
        let sql = format!("SELECT count(*) FROM {}", tables.join(", "));
        assert!(nesting_bound(&sql).unwrap() > 2000);
        let ctes: Vec<String> = (1..2000)
            .map(|i| format!("t{i} AS (SELECT * FROM t{})", i - 1))
            .collect();
        let sql = format!(
            "WITH t0 AS (SELECT 1), {} SELECT * FROM t1999",
            ctes.join(", ")
        );
        assert!(nesting_bound(&sql).unwrap() > 2000);
        let branches: String = (0..1000)
            .map(|i| format!(" WHEN account_id = 'k{i}' THEN 'v{i}'"))
            .collect();
        let sql = format!("SELECT CASE{branches} ELSE 'none' END FROM accounts");
        assert!(nesting_bound(&sql).unwrap() < 20);
        // A select list after a FROM's commas: its commas are separators again.
        let sql = "SELECT a FROM x, y WHERE a IN (1, 2, 3) GROUP BY a, b, c";
        assert!(nesting_bound(sql).unwrap() < 20);
    }
}
