//! Refuses SQL whose expressions nest too deep, before anything parses it into a tree.
//!
//! `SELECT 1+1+…+1` with 2,000 terms, or a 2,000-term `OR` chain of key lookups, parses
//! without recursion (operators of one precedence are read in a loop) into a tree
//! 2,000 levels deep; planning, optimising and even dropping that tree then recurse once
//! per level, and a thread's stack overflowed, which aborts the whole process. So the
//! depth is bounded from the tokens, which need no recursion: within one parenthesised
//! group, operators and keywords between two commas chain at most one level each, and a
//! group nests inside its parent's level. The bound is never below the tree's depth, and
//! close to it for the chains above.

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
    // far, those in the current item, and the deepest group closed inside it.
    struct Group {
        best: usize,
        current: usize,
        inner: usize,
    }
    let depth = |g: &Group| g.best.max(g.current) + g.inner + 1;
    let mut stack = vec![Group {
        best: 0,
        current: 0,
        inner: 0,
    }];
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => stack.push(Group {
                best: 0,
                current: 0,
                inner: 0,
            }),
            // An unbalanced close is the parser's error to report.
            Token::RParen | Token::RBracket | Token::RBrace if stack.len() > 1 => {
                let closed = stack.pop().expect("more than one group");
                let d = depth(&closed);
                let parent = stack.last_mut().expect("the outermost group");
                parent.inner = parent.inner.max(d);
            }
            Token::Comma | Token::SemiColon => {
                let g = stack.last_mut().expect("the outermost group");
                g.best = g.best.max(g.current);
                g.current = 0;
            }
            t if chains(t) => stack.last_mut().expect("the outermost group").current += 1,
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
}
