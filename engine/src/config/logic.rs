//! What shapes each view's state, as `path = value` lines: every checkpoint records
//! them, and a restore compares them with the running pipeline's, so that a view is
//! never resumed on state that other logic built.
//!
//! ```text
//!  pipeline YAML ─▶ per view: its own keys (views[i].*, but `retain`) + the envelope,
//!                   fields, format, on_tombstone, upcast, dedup, topics' own settings,
//!                   declared types
//!               ─▶ sorted lines "fold.on.MoneyDeposited.add.balance = \"payload.amount\""
//!  checkpoint manifest: extra.logic = { view: [lines] }
//!  restore: stored ≠ running ─▶ `checkpoint.logic_changed`, with the changed lines
//! ```
//!
//! The lines come from the YAML as written (after `${VAR}` substitution), so a change
//! that means the same (an explicit default) still counts as a change: the check errs
//! towards never resuming on other logic's state. Comments, formatting and key order
//! do not count. A table's `retain` is left out: a changed retention applies from the
//! next event (see the state codec).

use super::yaml::Node;
use saphyr::{Scalar, YamlData};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Every view's logic, as sorted `path = value` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logic {
    /// View name → its lines.
    pub views: BTreeMap<String, Vec<String>>,
    /// Views whose change the user accepts (`--accept-logic-change`): resumed on the
    /// state the old logic built, and recorded with the new logic from then on.
    pub accepted: std::collections::BTreeSet<String>,
}

/// How one view's logic differs from what a checkpoint recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicChange {
    /// The view.
    pub view: String,
    /// What changed, one entry per path: `path: old → new` (`(none)` where one side
    /// has no such path); or that the view is new or gone.
    pub lines: Vec<String>,
}

impl Logic {
    /// The lines of every view of the pipeline whose root mapping is `top`, with the
    /// types `declared` (path, type name) that the pipeline gives event fields.
    pub(crate) fn of(top: &Node, declared: &[(String, &'static str)]) -> Logic {
        let mut shared = Vec::new();
        for key in [
            "envelope",
            "fields",
            "format",
            "on_tombstone",
            "upcast",
            "dedup",
        ] {
            if let Some(node) = top.data.as_mapping_get(key) {
                flatten(node, key, &mut shared);
            }
        }
        if let Some(source) = top.data.as_mapping_get("source") {
            // What the events are, not where they come from: brokers, group and
            // client properties may change freely, and the topics are in the names of
            // the units checkpoints belong to (a changed set is refused apart, as
            // `checkpoint.topics_changed`); a topic's own format and envelope count.
            if let Some(node) = source.data.as_mapping_get("type") {
                flatten(node, "source.type", &mut shared);
            }
            if let Some(YamlData::Sequence(topics)) =
                source.data.as_mapping_get("topics").map(|t| &t.data)
            {
                for (i, t) in topics.iter().enumerate() {
                    for key in ["format", "envelope"] {
                        if let Some(node) = t.data.as_mapping_get(key) {
                            flatten(node, &format!("source.topics[{i}].{key}"), &mut shared);
                        }
                    }
                }
            }
        }
        for (path, ty) in declared {
            shared.push(format!("types.{path} = {ty}"));
        }
        let mut views = BTreeMap::new();
        let Some(YamlData::Sequence(items)) = top.data.as_mapping_get("views").map(|v| &v.data)
        else {
            return Logic {
                views,
                accepted: Default::default(),
            };
        };
        for item in items {
            let Some(name) = item
                .data
                .as_mapping_get("name")
                .and_then(|n| n.data.as_str())
            else {
                continue;
            };
            let mut lines = shared.clone();
            if let YamlData::Mapping(m) = &item.data {
                for (k, v) in m.iter() {
                    let Some(key) = k.data.as_str() else { continue };
                    if key != "name" {
                        flatten(v, key, &mut lines);
                    }
                }
            }
            lines.retain(|l| !l.starts_with("table.retain"));
            lines.sort();
            views.insert(name.to_string(), lines);
        }
        Logic {
            views,
            accepted: Default::default(),
        }
    }

    /// The `version:` of `view`, as written (`None`: it has none).
    pub fn version_of(&self, view: &str) -> Option<String> {
        self.views
            .get(view)?
            .iter()
            .find_map(|l| l.strip_prefix("version = "))
            .map(|v| v.trim_matches('"').to_string())
    }

    /// As a checkpoint's manifest keeps it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.views).expect("strings serialize")
    }

    /// From a checkpoint's manifest (`None`: not there, or not in this shape).
    pub fn from_json(value: &serde_json::Value) -> Option<Logic> {
        serde_json::from_value(value.clone())
            .ok()
            .map(|views| Logic {
                views,
                accepted: Default::default(),
            })
    }

    /// How the views of `self` (the running pipeline) differ from `stored` (what a
    /// checkpoint recorded), view by view; empty when nothing changed.
    pub fn changes_from(&self, stored: &Logic) -> Vec<LogicChange> {
        let mut out = Vec::new();
        for (view, now) in &self.views {
            if self.accepted.contains(view) {
                continue;
            }
            let lines = match stored.views.get(view) {
                None => vec!["a new view".to_string()],
                Some(before) if before == now => continue,
                Some(before) => diff(before, now),
            };
            out.push(LogicChange {
                view: view.clone(),
                lines,
            });
        }
        for view in stored.views.keys() {
            if !self.views.contains_key(view) {
                out.push(LogicChange {
                    view: view.clone(),
                    lines: vec!["removed from the pipeline".to_string()],
                });
            }
        }
        out
    }
}

/// `path: old → new` for every path whose value differs.
fn diff(before: &[String], now: &[String]) -> Vec<String> {
    let split = |lines: &[String]| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            let (path, value) = l.split_once(" = ").unwrap_or((l, ""));
            m.entry(path.to_string())
                .or_default()
                .push(value.to_string());
        }
        m
    };
    let (a, b) = (split(before), split(now));
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    let show = |v: Option<&Vec<String>>| v.map_or("(none)".to_string(), |v| v.join(", "));
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| format!("{p}: {} → {}", show(a.get(p)), show(b.get(p))))
        .collect()
}

/// Appends `node`'s leaves as `prefix.path = value` lines.
fn flatten(node: &Node, prefix: &str, out: &mut Vec<String>) {
    match &node.data {
        YamlData::Mapping(m) => {
            if m.is_empty() {
                out.push(format!("{prefix} = {{}}"));
            }
            for (k, v) in m.iter() {
                let key = scalar(k).unwrap_or_else(|| "?".into());
                flatten(v, &format!("{prefix}.{key}"), out);
            }
        }
        YamlData::Sequence(items) => {
            if items.is_empty() {
                out.push(format!("{prefix} = []"));
            }
            for (i, v) in items.iter().enumerate() {
                flatten(v, &format!("{prefix}[{i}]"), out);
            }
        }
        YamlData::Tagged(_, inner) => flatten(inner, prefix, out),
        _ => {
            let mut line = format!("{prefix} = ");
            match &node.data {
                YamlData::Value(Scalar::String(s)) => {
                    line.push_str(&serde_json::to_string(&**s).expect("a string"))
                }
                _ => {
                    let _ = write!(line, "{}", scalar(node).unwrap_or_else(|| "?".into()));
                }
            }
            out.push(line);
        }
    }
}

/// A scalar's text (strings as they are).
fn scalar(node: &Node) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Value(Scalar::Null) => Some("~".into()),
        _ => None,
    }
}
