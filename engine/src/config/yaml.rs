//! The spanned YAML tree and typed accessors that record errors instead of stopping.
//!
//! Parsing uses saphyr's [`MarkedYaml`]. Its loader refuses duplicate keys (and stops
//! there), so a duplicate is renamed in the text (its first character is replaced by a
//! private-use character, which keeps every position) and the text parsed again; the
//! walker then reports each renamed key as `config.duplicate_key` and ignores it.

use super::env::Substituted;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A node of the parsed pipeline file.
pub(crate) type Node = MarkedYaml<'static>;

/// First private-use character used to rename duplicate keys.
const DUP_BASE: u32 = 0xE000;
/// At most this many duplicate keys are renamed (and reparses done).
const MAX_DUPLICATES: u32 = 200;

/// One problem, positioned in the substituted text (char indices).
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub(crate) code: &'static str,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) path: String,
    pub(crate) message: String,
}

/// The outcome of parsing.
pub(crate) struct Parsed {
    /// The single document, if the text parsed.
    pub(crate) root: Option<Node>,
    /// The original first character of each renamed duplicate key, by rename number.
    renamed: Vec<char>,
}

/// Parses `text` (already substituted), pushing syntax problems into `issues`.
pub(crate) fn parse(text: &str, issues: &mut Vec<Issue>) -> Parsed {
    let mut chars: Vec<char> = text.chars().collect();
    let mut renamed = Vec::new();
    loop {
        let src: String = chars.iter().collect();
        match MarkedYaml::load_from_str(&src) {
            Ok(docs) => {
                let mut docs = docs.into_iter();
                let root = docs.next();
                if let Some(extra) = docs.next() {
                    // Which document was meant is unclear: check none of them.
                    let at = extra.span.start.index();
                    issues.push(Issue {
                        code: "config.yaml_syntax",
                        start: at,
                        end: at,
                        path: String::new(),
                        message: "a pipeline file holds exactly one YAML document (remove '---')"
                            .into(),
                    });
                    return Parsed {
                        root: None,
                        renamed,
                    };
                }
                return Parsed { root, renamed };
            }
            Err(e) => {
                let at = e.marker().index();
                if e.info() == "duplicated key in mapping"
                    && (renamed.len() as u32) < MAX_DUPLICATES
                {
                    if let Some(pos) = rename_position(&chars, at) {
                        renamed.push(chars[pos]);
                        chars[pos] = char::from_u32(DUP_BASE + renamed.len() as u32 - 1)
                            .expect("private-use character");
                        continue;
                    }
                    issues.push(Issue {
                        code: "config.duplicate_key",
                        start: at,
                        end: at,
                        path: String::new(),
                        message: "duplicate key in mapping".into(),
                    });
                    return Parsed {
                        root: None,
                        renamed,
                    };
                }
                issues.push(Issue {
                    code: "config.yaml_syntax",
                    start: at,
                    end: at,
                    path: String::new(),
                    message: e.info().to_string(),
                });
                return Parsed {
                    root: None,
                    renamed,
                };
            }
        }
    }
}

/// Where to put the rename mark of a duplicate key starting at `at`: its first character
/// (after the quote for a quoted key), if that is safe.
fn rename_position(chars: &[char], at: usize) -> Option<usize> {
    let c = *chars.get(at)?;
    let pos = match c {
        '\'' | '"' => at + 1,
        '!' | '&' | '*' | '?' | '[' | '{' | '|' | '>' => return None,
        _ => at,
    };
    let first = *chars.get(pos)?;
    if pos != at && (first == c || first == '\\') || first.is_whitespace() {
        return None;
    }
    Some(pos)
}

/// Carries the text, the recorded problems and the duplicate-key renames while the tree is
/// walked.
pub(crate) struct Ctx<'a> {
    sub: &'a Substituted,
    chars: Vec<char>,
    renamed: Vec<char>,
    /// Problems found so far.
    pub(crate) issues: Vec<Issue>,
}

impl<'a> Ctx<'a> {
    /// A context over the substituted text.
    pub(crate) fn new(sub: &'a Substituted, parsed: &Parsed, issues: Vec<Issue>) -> Self {
        Ctx {
            sub,
            chars: sub.text.chars().collect(),
            renamed: parsed.renamed.clone(),
            issues,
        }
    }

    /// The substitution (for positions).
    pub(crate) fn substituted(&self) -> &Substituted {
        self.sub
    }

    /// Records a problem at `node`.
    pub(crate) fn error(&mut self, code: &'static str, node: &Node, path: &str, message: String) {
        self.issues.push(Issue {
            code,
            start: node.span.start.index(),
            end: node.span.end.index(),
            path: path.to_string(),
            message,
        });
    }

    /// `config.invalid_type` at `node`: "expected X, found Y".
    pub(crate) fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let message = format!("expected {expected}, found {}", kind(node));
        self.error("config.invalid_type", node, path, message);
    }

    /// The source text of a scalar node (for non-string keys).
    fn raw(&self, node: &Node) -> String {
        let (s, e) = (
            node.span.start.index(),
            node.span.end.index().min(self.chars.len()),
        );
        self.chars
            .get(s..e)
            .map(|c| c.iter().collect::<String>())
            .unwrap_or_default()
            .trim()
            .into()
    }

    /// The key of a mapping entry as text; `None` (after an error) for a collection key.
    /// The second value is true for a renamed duplicate.
    fn key_text(&mut self, key: &Node, path: &str) -> Option<(String, bool)> {
        let text = self.key_text_quiet(key);
        if text.is_none() {
            self.wrong_type(key, path, "a string key");
        }
        text
    }

    /// The entries of a mapping, in file order, without renamed duplicates (which are
    /// reported). `None` (after an error) if `node` is not a mapping. With `null_is_empty`,
    /// a null node counts as an empty mapping.
    pub(crate) fn entries<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        null_is_empty: bool,
    ) -> Option<Vec<Entry<'n>>> {
        let map = match &node.data {
            YamlData::Mapping(m) => m,
            YamlData::Value(Scalar::Null) if null_is_empty => return Some(Vec::new()),
            _ => {
                self.wrong_type(node, path, "a mapping");
                return None;
            }
        };
        let mut out: Vec<Entry<'n>> = Vec::new();
        for (k, v) in map.iter() {
            let Some((name, dup)) = self.key_text(k, path) else {
                continue;
            };
            if dup {
                continue; // reported by `report_all_duplicates`
            }
            let key_path = join(path, &name);
            out.push(Entry {
                name,
                path: key_path,
                key: k,
                value: v,
            });
        }
        Some(out)
    }

    /// A mapping with a fixed set of keys: reports unknown keys (with a suggestion).
    pub(crate) fn record<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Record<'n>> {
        let entries = self.entries(node, path, false)?;
        for e in &entries {
            if !allowed.contains(&e.name.as_str()) {
                let message = unknown_message("key", &e.name, allowed.iter().copied());
                self.error("config.unknown_field", e.key, &e.path, message);
            }
        }
        Some(Record {
            node,
            path: path.to_string(),
            entries,
        })
    }

    /// Walks every mapping and sequence to report renamed duplicate keys anywhere (also
    /// under keys the typed walk does not visit).
    pub(crate) fn report_all_duplicates(&mut self, node: &Node, path: &str) {
        match &node.data {
            YamlData::Mapping(map) => {
                for (k, v) in map.iter() {
                    let Some((name, dup)) = self.key_text_quiet(k) else {
                        continue;
                    };
                    let key_path = join(path, &name);
                    if dup {
                        let first = map
                            .iter()
                            .find(|(fk, _)| {
                                self.key_text_quiet(fk)
                                    .is_some_and(|(n, d)| !d && n == name)
                            })
                            .map(|(fk, _)| fk.span.start.index());
                        let message = match first {
                            Some(i) => format!(
                                "duplicate key '{name}' (first defined on line {}, which is used)",
                                self.sub.line_col(i).0
                            ),
                            None => format!("duplicate key '{name}'"),
                        };
                        self.error("config.duplicate_key", k, &key_path, message);
                    } else {
                        self.report_all_duplicates(v, &key_path);
                    }
                }
            }
            YamlData::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.report_all_duplicates(item, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    /// `end` moved past following blanks and `:`, so that an empty value (whose span sits
    /// right after its key) covers the place where its text would have been.
    pub(crate) fn extended_end(&self, end: usize) -> usize {
        end + self.chars.get(end..).map_or(0, |rest| {
            rest.iter()
                .take_while(|c| matches!(c, ' ' | '\t' | ':'))
                .count()
        })
    }

    /// The key path of the innermost node at char index `at`.
    pub(crate) fn path_at(&self, node: &Node, at: usize, path: &str) -> String {
        let contains =
            |n: &Node| n.span.start.index() <= at && at <= self.extended_end(n.span.end.index());
        match &node.data {
            YamlData::Mapping(map) => {
                for (k, v) in map.iter() {
                    let Some((name, _)) = self.key_text_quiet(k) else {
                        continue;
                    };
                    if contains(v) {
                        return self.path_at(v, at, &join(path, &name));
                    }
                    if k.span.start.index() <= at && at <= k.span.end.index() {
                        return join(path, &name);
                    }
                }
                path.to_string()
            }
            YamlData::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if contains(item) {
                        return self.path_at(item, at, &format!("{path}[{i}]"));
                    }
                }
                path.to_string()
            }
            _ => path.to_string(),
        }
    }

    fn key_text_quiet(&self, key: &Node) -> Option<(String, bool)> {
        match &key.data {
            YamlData::Value(Scalar::String(s)) => {
                let mut it = s.chars();
                if let Some(first) = it.next() {
                    let n = (first as u32).wrapping_sub(DUP_BASE) as usize;
                    if let Some(orig) = self.renamed.get(n) {
                        return Some((format!("{orig}{}", it.as_str()), true));
                    }
                }
                Some((s.to_string(), false))
            }
            YamlData::Value(_) => Some((self.raw(key), false)),
            _ => None,
        }
    }

    /// A string scalar.
    pub(crate) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// A name or path: a string, or a number/boolean taken as written.
    pub(crate) fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_) | Scalar::Boolean(_)) => {
                Some(self.raw(node))
            }
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(crate) fn integer(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        match &node.data {
            YamlData::Value(Scalar::Integer(i)) if (min..=max).contains(i) => Some(*i),
            YamlData::Value(Scalar::Integer(i)) => {
                let message = if max == i64::MAX {
                    format!("{i} is out of range: must be at least {min}")
                } else {
                    format!("{i} is out of range: must be between {min} and {max}")
                };
                self.error("config.invalid_value", node, path, message);
                None
            }
            _ => {
                self.wrong_type(node, path, "an integer");
                None
            }
        }
    }

    /// A boolean.
    pub(crate) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.data {
            YamlData::Value(Scalar::Boolean(b)) => Some(*b),
            _ => {
                self.wrong_type(node, path, "a boolean (true or false)");
                None
            }
        }
    }

    /// A string that must be one of `allowed`.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        allowed: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(node, path)?;
        if let Some((_, v)) = allowed.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let message = unknown_message("value", &s, allowed.iter().map(|(n, _)| *n));
        self.error("config.invalid_value", node, path, message);
        None
    }
}

/// One entry of a mapping.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'n> {
    /// The key as text.
    pub(crate) name: String,
    /// Key path of the entry.
    pub(crate) path: String,
    /// The key node.
    pub(crate) key: &'n Node,
    /// The value node.
    pub(crate) value: &'n Node,
}

/// A mapping with known keys.
pub(crate) struct Record<'n> {
    /// The mapping node (missing keys are reported here).
    pub(crate) node: &'n Node,
    /// Its key path.
    pub(crate) path: String,
    entries: Vec<Entry<'n>>,
}

impl<'n> Record<'n> {
    /// The entry `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&Entry<'n>> {
        self.entries.iter().find(|e| e.name == key)
    }

    /// The entry `key`; reports `config.missing_field` when absent.
    pub(crate) fn require(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<&Entry<'n>> {
        let e = self.get(key);
        if e.is_none() {
            let message = format!("missing required key '{key}'");
            ctx.error(
                "config.missing_field",
                self.node,
                &join(&self.path, key),
                message,
            );
        }
        e
    }

    /// True if `key` is present.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// The key path of `key` under `path`.
pub(crate) fn join(path: &str, key: &str) -> String {
    let quoted = key.is_empty()
        || key
            .chars()
            .any(|c| c == '.' || c == '[' || c == ']' || c == '"' || c.is_whitespace());
    let key = if quoted {
        format!("{key:?}")
    } else {
        key.to_string()
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// "a mapping", "a string", ... for error messages.
pub(crate) fn kind(node: &Node) -> &'static str {
    match &node.data {
        YamlData::Mapping(_) => "a mapping",
        YamlData::Sequence(_) => "a sequence",
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a float",
        YamlData::Value(Scalar::String(_)) => "a string",
        YamlData::Tagged(..) => "a tagged value",
        YamlData::Representation(..) | YamlData::Alias(_) | YamlData::BadValue => {
            "an invalid value"
        }
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let lev = strsim::levenshtein(&lower, &c.to_lowercase());
            let jw = strsim::jaro_winkler(&lower, &c.to_lowercase());
            (c, lev, jw)
        })
        .filter(|(c, lev, jw)| *jw > 0.8 || (*lev <= 2 && *lev < c.chars().count().max(2)))
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
}

/// "unknown key 'ad' (did you mean 'add'?)", or a list of what is allowed.
pub(crate) fn unknown_message<'c>(
    what: &str,
    word: &str,
    allowed: impl Iterator<Item = &'c str> + Clone,
) -> String {
    match suggest(word, allowed.clone()) {
        Some(s) => format!("unknown {what} '{word}' (did you mean '{s}'?)"),
        None => {
            let list: Vec<&str> = allowed.collect();
            if list.is_empty() {
                format!("unknown {what} '{word}'")
            } else {
                format!(
                    "unknown {what} '{word}' (expected one of: {})",
                    list.join(", ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("ad", ["set", "add", "delete"]), Some("add"));
        assert_eq!(suggest("ballance", ["owner", "balance"]), Some("balance"));
        assert_eq!(suggest("x", ["id", "type"]), None);
        assert_eq!(suggest("zzzzzz", ["name", "source"]), None);
        assert_eq!(suggest("on_eror", ["on_error", "format"]), Some("on_error"));
    }

    #[test]
    fn key_paths() {
        assert_eq!(join("", "views"), "views");
        assert_eq!(join("views[0].fold.on", "*"), "views[0].fold.on.*");
        assert_eq!(join("a", "b.c"), "a.\"b.c\"");
    }

    #[test]
    fn duplicate_keys_are_renamed_and_syntax_errors_win() {
        let mut issues = Vec::new();
        let text = "a: 1\nb:\n  c: 1\n  c: 2\n  'c': 3\n  d: [\na: 2\n";
        let parsed = parse(text, &mut issues);
        // A syntax error wins over duplicates.
        assert!(parsed.renamed.is_empty());
        assert!(parsed.root.is_none());
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].code, "config.yaml_syntax");

        let mut issues = Vec::new();
        let text = "a: 1\nb:\n  c: 1\n  c: 2\n  'c': 3\na: 2\n";
        let parsed = parse(text, &mut issues);
        assert!(issues.is_empty());
        assert_eq!(parsed.renamed, vec!['c', 'c', 'a']);
    }
}
