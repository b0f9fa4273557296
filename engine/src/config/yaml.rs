//! The spanned YAML tree and typed accessors that record errors instead of stopping.
//!
//! The tree is saphyr's [`MarkedYaml`], built here from saphyr-parser's events rather
//! than by saphyr's loader, for three reasons:
//! - `${VAR}` values: each scalar's stand-ins are replaced by their values before the
//!   scalar's type is decided (see [`super::env`]), so a value is never YAML text.
//! - Duplicate keys: saphyr's loader stops at the first. Here each duplicate is kept
//!   under a stand-in key (which the walker reports as `config.duplicate_key` and
//!   ignores), so a file with any number of duplicates is parsed once.
//! - Aliases: an alias is a copy of its anchor's subtree, so a few bytes of file can
//!   stand for gigabytes (a 1 MiB string aliased 3,000 times is 3 GiB). The bytes that
//!   anchors and aliases copy are counted as they are met, from sizes kept per node, and
//!   the copy that would cross [`COPY_BUDGET`] is refused before it is made.

use super::env::Substituted;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, Yaml, YamlData};
use saphyr_parser::{Event, Parser, Span, Tag};
use std::borrow::Cow;
use std::collections::HashMap;

/// A node of the parsed pipeline file.
pub(crate) type Node = MarkedYaml<'static>;

/// At most this many bytes of tree may be copies made for anchors and aliases. A
/// pipeline file repeats a few small blocks; this is thousands of times that, and small
/// enough that a hostile file cannot take the process's memory.
const COPY_BUDGET: u64 = 16 << 20;

/// What a node costs besides its text: its own size (children are counted apart).
const NODE_COST: u64 = std::mem::size_of::<Node>() as u64;

/// Marks the stand-in key under which a duplicate key's value is kept.
const DUP_MARK: char = '\u{E000}';

/// One problem, positioned in the substituted text (char indices).
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub(crate) code: &'static str,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) path: String,
    pub(crate) message: String,
}

/// A duplicate key, kept aside: its mapping holds its value under a stand-in key.
#[derive(Debug, Clone)]
pub(crate) struct Dup {
    /// The key as written.
    key: Node,
    /// Char index of the first occurrence of the key (the one that is used).
    first_at: usize,
}

/// The outcome of parsing.
pub(crate) struct Parsed {
    /// The single document, if the text parsed.
    pub(crate) root: Option<Node>,
    /// The duplicate keys, by stand-in number.
    dups: Vec<Dup>,
}

/// Parses `sub.text`, resolving `${VAR}` stand-ins in scalars with `lookup` (which
/// records substitution problems in `sub`), and pushing syntax problems into `issues`.
pub(crate) fn parse(
    sub: &mut Substituted,
    lookup: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) -> Parsed {
    let text = std::mem::take(&mut sub.text);
    let mut b = Builder {
        sub,
        lookup,
        text: &text,
        docs: Vec::new(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        copied: 0,
        dups: Vec::new(),
        stopped: None,
    };
    let mut failed = None;
    for event in Parser::new_from_str(&text) {
        match event {
            Ok((ev, span)) => b.event(ev, span),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        if b.stopped.is_some() {
            break;
        }
    }
    let Builder {
        docs,
        dups,
        stopped,
        ..
    } = b;
    sub.text = text;
    let none = |dups| Parsed { root: None, dups };
    if let Some(issue) = stopped {
        issues.push(issue);
        return none(Vec::new());
    }
    if let Some(e) = failed {
        // A syntax error wins over duplicates: nothing else is checked.
        let at = e.marker().index();
        issues.push(Issue {
            code: "config.yaml_syntax",
            start: at,
            end: at,
            path: String::new(),
            message: e.info().to_string(),
        });
        return none(Vec::new());
    }
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
            message: "a pipeline file holds exactly one YAML document (remove '---')".into(),
        });
        return none(Vec::new());
    }
    Parsed { root, dups }
}

/// A copy that anchors and aliases make.
#[derive(Clone, Copy)]
enum Copied {
    /// An anchored node is copied when it is complete (aliases copy that copy).
    Anchor,
    /// Each alias is a copy of its anchor's node.
    Alias,
}

/// A collection being built.
struct Frame {
    node: Node,
    /// Its anchor id (0: none).
    anchor: usize,
    tag: Option<Cow<'static, Tag>>,
    /// In a mapping: the key whose value comes next (`None`: a key comes next).
    key: Option<Node>,
    /// Bytes of the node and of its children so far.
    cost: u64,
}

/// Builds the tree from parser events (as saphyr's loader does, see the module doc).
struct Builder<'a> {
    sub: &'a mut Substituted,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The text being parsed (`sub.text`, moved out while `sub` is borrowed mutably).
    text: &'a str,
    docs: Vec<Node>,
    stack: Vec<Frame>,
    /// Each anchor's node and its cost in bytes.
    anchors: HashMap<usize, (Node, u64)>,
    /// Bytes copied for anchors and aliases so far.
    copied: u64,
    dups: Vec<Dup>,
    /// The problem that stopped the build.
    stopped: Option<Issue>,
}

impl Builder<'_> {
    fn event(&mut self, ev: Event<'_>, span: Span) {
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {}
            Event::DocumentEnd => {
                let doc = match self.stack.pop() {
                    Some(frame) => frame.node,
                    // An empty document.
                    None => Node::from_bare_yaml(Yaml::BadValue).with_span(span),
                };
                self.docs.push(doc);
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(Yaml::Sequence(Vec::new()), anchor, tag, span)
            }
            Event::MappingStart(anchor, tag) => {
                self.open(Yaml::Mapping(Default::default()), anchor, tag, span)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return; // the parser pairs starts and ends
                };
                let mut node = frame.node.with_end_marker(span.start);
                if let Some(tag) = frame.tag.filter(|t| !t.is_yaml_core_schema()) {
                    node = node.into_tagged(tag);
                }
                self.insert(node, frame.cost, frame.anchor);
            }
            Event::Scalar(text, style, anchor, tag) => {
                let within = span.start.index()..span.end.index();
                let value: Cow<'static, str> = match self.sub.resolve(&text, within, self.lookup) {
                    Some(resolved) => Cow::Owned(resolved),
                    None => Cow::Owned(text.into_owned()),
                };
                let cost = NODE_COST + value.len() as u64;
                let tag = tag.map(|t| Cow::Owned(t.into_owned()));
                let node = MarkedYaml::value_from_cow_and_metadata(value, style, tag.as_ref())
                    .with_span(span);
                self.insert(node, cost, anchor);
            }
            Event::Alias(id) => {
                let Some(cost) = self.anchors.get(&id).map(|(_, cost)| *cost) else {
                    // The parser refuses an unknown alias; kept as saphyr's loader does.
                    let bad = Node::from_bare_yaml(Yaml::BadValue).with_span(span);
                    self.insert(bad, NODE_COST, 0);
                    return;
                };
                // Charged before the copy is made: a refused copy is never allocated.
                if !self.charge(cost, span, Copied::Alias) {
                    return;
                }
                let node = self.anchors[&id].0.clone().with_span(span);
                self.insert(node, cost, 0);
            }
        }
    }

    fn open(&mut self, bare: Yaml<'static>, anchor: usize, tag: Option<Cow<'_, Tag>>, span: Span) {
        self.stack.push(Frame {
            node: Node::from_bare_yaml(bare).with_start_marker(span.start),
            anchor,
            tag: tag.map(|t| Cow::Owned(t.into_owned())),
            key: None,
            cost: NODE_COST,
        });
    }

    /// Counts `cost` more copied bytes for the anchor or alias at `span`; false (and the
    /// build stops) when that would cross the budget.
    fn charge(&mut self, cost: u64, span: Span, copy: Copied) -> bool {
        if self.copied.saturating_add(cost) <= COPY_BUDGET {
            self.copied += cost;
            return true;
        }
        let start = span.start.index();
        let what = match copy {
            Copied::Alias => {
                let name: String = self
                    .text
                    .chars()
                    .skip(start)
                    .take(span.end.index().saturating_sub(start))
                    .collect();
                format!("the alias '{}'", name.trim())
            }
            Copied::Anchor => "the anchored value here (kept for its aliases)".to_string(),
        };
        let message = format!(
            "{what} copies {}, which with the copies before it is more than the {} that \
             anchors and aliases may copy: repeat a smaller value, or repeat it fewer times",
            human(cost),
            human(COPY_BUDGET)
        );
        self.stopped = Some(Issue {
            code: "config.alias_too_large",
            start,
            end: start,
            path: self.path(),
            message,
        });
        false
    }

    /// The key path where the next node goes.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match &frame.node.data {
                YamlData::Sequence(items) => path = format!("{path}[{}]", items.len()),
                YamlData::Mapping(_) => {
                    if let Some(key) = &frame.key {
                        path = join(&path, &scalar_text(key));
                    }
                }
                _ => {}
            }
        }
        path
    }

    /// Adds a finished node (of `cost` bytes) to its parent, or makes it the document.
    fn insert(&mut self, node: Node, cost: u64, anchor: usize) {
        if anchor > 0 {
            // Aliases copy this copy (so that later changes to the tree don't show).
            if !self.charge(cost, node.span, Copied::Anchor) {
                return;
            }
            self.anchors.insert(anchor, (node.clone(), cost));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.stack.push(Frame {
                node,
                anchor,
                tag: None,
                key: None,
                cost,
            });
            return;
        };
        parent.cost = parent.cost.saturating_add(cost);
        match &mut parent.node.data {
            YamlData::Sequence(items) => items.push(node),
            YamlData::Mapping(map) => match parent.key.take() {
                None => parent.key = Some(node),
                Some(key) => match map.get_key_value(&key) {
                    None => {
                        map.insert(key, node);
                    }
                    Some((first, _)) => {
                        let first_at = first.span.start.index();
                        let mut name = format!("{DUP_MARK}{}", self.dups.len());
                        while map.contains_key(&dup_key(&name, key.span)) {
                            name.insert(0, DUP_MARK);
                        }
                        map.insert(dup_key(&name, key.span), node);
                        self.dups.push(Dup { key, first_at });
                    }
                },
            },
            _ => {}
        }
    }
}

/// The stand-in key `name` at `span`.
fn dup_key(name: &str, span: Span) -> Node {
    MarkedYaml {
        span,
        data: YamlData::Value(Scalar::String(Cow::Owned(name.to_string()))),
    }
}

/// A scalar's text, for a key path.
fn scalar_text(node: &Node) -> String {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => s.to_string(),
        YamlData::Value(Scalar::Integer(i)) => i.to_string(),
        YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
        YamlData::Value(Scalar::Null) => "null".into(),
        _ => "?".into(),
    }
}

/// `bytes` for a message: "1.5 MiB".
fn human(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// Carries the text, the recorded problems and the duplicate keys while the tree is
/// walked.
pub(crate) struct Ctx<'a> {
    sub: &'a Substituted,
    chars: Vec<char>,
    dups: &'a [Dup],
    /// Problems found so far.
    pub(crate) issues: Vec<Issue>,
}

impl<'a> Ctx<'a> {
    /// A context over the substituted text.
    pub(crate) fn new(sub: &'a Substituted, parsed: &'a Parsed, issues: Vec<Issue>) -> Self {
        Ctx {
            sub,
            chars: sub.text.chars().collect(),
            dups: &parsed.dups,
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

    /// The source text of a scalar node (for non-string keys), with `${VAR}` values.
    fn raw(&self, node: &Node) -> String {
        let (s, e) = (
            node.span.start.index(),
            node.span.end.index().min(self.chars.len()),
        );
        self.chars
            .get(s..e)
            .map(|c| self.sub.render(c))
            .unwrap_or_default()
            .trim()
            .into()
    }

    /// The key of a mapping entry as text; `None` (after an error) for a collection key.
    fn key_text(&mut self, key: &Node, path: &str) -> Option<String> {
        let text = self.key_name(key);
        if text.is_none() {
            self.wrong_type(key, path, "a string key");
        }
        text
    }

    /// The entries of a mapping, in file order, without duplicate keys (which are
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
            if self.dup(k).is_some() {
                continue; // reported by `report_all_duplicates`
            }
            let Some(name) = self.key_text(k, path) else {
                continue;
            };
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

    /// Walks every mapping and sequence to report duplicate keys anywhere (also under
    /// keys the typed walk does not visit).
    pub(crate) fn report_all_duplicates(&mut self, node: &Node, path: &str) {
        match &node.data {
            YamlData::Mapping(map) => {
                for (k, v) in map.iter() {
                    if let Some(dup) = self.dup(k) {
                        let line = self.sub.line_col(dup.first_at).0;
                        let (key_path, message) = match self.key_name(&dup.key) {
                            Some(name) => (
                                join(path, &name),
                                format!(
                                    "duplicate key '{name}' (first defined on line {line}, which is used)"
                                ),
                            ),
                            None => (
                                path.to_string(),
                                format!(
                                    "duplicate key: {} that is also the key on line {line}, which is used",
                                    kind(&dup.key)
                                ),
                            ),
                        };
                        self.error("config.duplicate_key", k, &key_path, message);
                    } else if let Some(name) = self.key_name(k) {
                        self.report_all_duplicates(v, &join(path, &name));
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

    /// The key of a mapping entry as text (`None` for a collection key); the second
    /// value is true for a duplicate key, whose text is the duplicate's.
    fn key_text_quiet(&self, key: &Node) -> Option<(String, bool)> {
        match self.dup(key) {
            Some(dup) => self.key_name(&dup.key).map(|n| (n, true)),
            None => self.key_name(key).map(|n| (n, false)),
        }
    }

    /// A scalar key's text.
    fn key_name(&self, key: &Node) -> Option<String> {
        match &key.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(_) => Some(self.raw(key)),
            _ => None,
        }
    }

    /// The duplicate whose value `key` (a stand-in key) holds, if it is one.
    fn dup(&self, key: &Node) -> Option<&'a Dup> {
        let YamlData::Value(Scalar::String(s)) = &key.data else {
            return None;
        };
        let n: usize = s
            .strip_prefix(DUP_MARK)?
            .trim_start_matches(DUP_MARK)
            .parse()
            .ok()?;
        // The span check tells a stand-in from a key that merely looks like one.
        let dups: &'a [Dup] = self.dups;
        dups.get(n)
            .filter(|d| d.key.span.start.index() == key.span.start.index())
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
    fn duplicate_keys_are_kept_aside_and_syntax_errors_win() {
        let parse_text = |text: &str| {
            let mut sub = super::super::env::substitute(text);
            let mut issues = Vec::new();
            let parsed = parse(&mut sub, &|_| None, &mut issues);
            (parsed, issues)
        };
        let (parsed, issues) = parse_text("a: 1\nb:\n  c: 1\n  c: 2\n  'c': 3\n  d: [\na: 2\n");
        // A syntax error wins over duplicates.
        assert!(parsed.dups.is_empty());
        assert!(parsed.root.is_none());
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].code, "config.yaml_syntax");

        let (parsed, issues) = parse_text("a: 1\nb:\n  c: 1\n  c: 2\n  'c': 3\na: 2\n");
        assert!(issues.is_empty());
        let dups: Vec<(String, usize, usize)> = parsed
            .dups
            .iter()
            .map(|d| (scalar_text(&d.key), d.key.span.start.index(), d.first_at))
            .collect();
        assert_eq!(
            dups,
            vec![
                ("c".to_string(), 17, 10),
                ("c".to_string(), 24, 10),
                ("a".to_string(), 31, 0)
            ]
        );
        // Each value is kept, under a stand-in key, in file order.
        let Some(YamlData::Mapping(root)) = parsed.root.map(|r| r.data) else {
            panic!("a mapping");
        };
        assert_eq!(root.len(), 3);
    }
}
