//! Tests of the whole loader: the reference example, error collection, substitution.

use super::*;
use projector_connectors::generator::{GeneratorConfig, Scenario};
use projector_operators::aggregate::{AggColumn, AggregateSpec, GroupColumn};
use projector_operators::expr::{AggFn, Expr};
use projector_operators::fields::FieldId;
use projector_operators::fold::{ColumnSpec, FoldSpec, Handler};
use projector_operators::value::{ColumnType, Value};
use projector_operators::view::ViewKind;
use std::collections::HashMap;

/// The example at the top of docs/pipeline-reference.md: the doc's first ```yaml block,
/// read from the doc itself so that the tests check what users read.
fn documented_example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline-reference.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    first_yaml_block(&doc).to_string()
}

/// The first ```yaml block of a markdown file.
fn first_yaml_block(markdown: &str) -> &str {
    let start = markdown.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = markdown[start..].find("```").expect("closed block");
    &markdown[start..start + len]
}

/// A minimal valid pipeline, to which tests append one view.
const HEAD: &str = "name: t
source: { type: generator, scenario: bank }
envelope: { id: id, type: type, key: key }
views:
";

fn no_env(_: &str) -> Option<String> {
    None
}

/// Loads `text` with only the environment variables `vars` (also for hostile_tests.rs).
pub(super) fn load_env(text: &str, vars: &[(&str, &str)]) -> Result<PipelineConfig, ConfigErrors> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_with_env(text, Path::new("pipelines/x.yaml"), &move |n| {
        vars.get(n).cloned()
    })
}

fn load_ok(text: &str) -> PipelineConfig {
    match load_with_env(text, Path::new("pipelines/x.yaml"), &no_env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid pipeline, got:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load_with_env(text, Path::new("pipelines/x.yaml"), &no_env) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

/// (code, line, column, path) of every error.
fn summary(errs: &[ConfigError]) -> Vec<(&'static str, usize, usize, String)> {
    errs.iter()
        .map(|e| (e.code, e.line, e.column, e.path.clone()))
        .collect()
}

fn one_error(text: &str) -> ConfigError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    errs.into_iter().next().unwrap()
}

#[test]
fn the_reference_example_loads() {
    let c = load_ok(&documented_example());
    assert_eq!(c.file, PathBuf::from("pipelines/x.yaml"));
    assert_eq!(c.name, "bank-accounts");
    assert_eq!(
        c.source,
        SourceConfig::Generator(GeneratorConfig {
            scenario: Scenario::Bank,
            events: 1_000_000,
            keys: 10_000,
            seed: 42
        })
    );
    assert_eq!(c.format, Format::Json);
    assert_eq!(c.on_error, OnError::DeadLetter);
    assert_eq!(c.workers, Some(2));
    assert_eq!(c.publish_interval, Duration::from_millis(50));
    assert_eq!(c.state_dir, Some(PathBuf::from("state/bank")));

    // Envelope paths are interned first: key, type, version, timestamp. No view reads
    // the id, so it has no field and is not decoded.
    assert_eq!(
        &c.fields.paths()[..4],
        ["aggregateId", "eventType", "version", "timestamp"]
    );
    assert_eq!(c.envelope.key, FieldId(0));
    assert_eq!(c.envelope.event_type, FieldId(1));
    assert_eq!(c.envelope.id, None);
    assert_eq!(c.fields.get("eventId"), None);
    assert_eq!(c.envelope.version, Some(FieldId(2)));
    assert_eq!(c.envelope.timestamp, Some(FieldId(3)));
    assert!(c.fields.get("payload.amount").is_some());
    assert!(c.fields.get("payload.owner").is_some());

    // An event to evaluate the compiled expressions on.
    let mut event = vec![Value::Null; c.fields.len()];
    let slot = |p: &str| c.fields.get(p).unwrap().index();
    event[slot("payload.amount")] = Value::Int(25);
    event[slot("payload.owner")] = Value::Str("Ada".into());
    event[slot("version")] = Value::Int(7);
    event[slot("eventType")] = Value::Str("MoneyDeposited".into());

    assert_eq!(c.views.len(), 2);
    assert_eq!(c.views[0].name, "accounts");
    let ViewKind::Fold(f) = &c.views[0].kind else {
        panic!("fold expected")
    };
    assert_eq!(f.key_column, "account_id");
    let col = |name: &str, ty, default| ColumnSpec {
        name: name.into(),
        ty,
        default,
    };
    assert_eq!(
        f.columns,
        vec![
            col("owner", ColumnType::String, None),
            col("balance", ColumnType::Int64, Some(Value::Int(0))),
            col("deposits", ColumnType::Int64, Some(Value::Int(0))),
            col("last_version", ColumnType::Int64, None),
        ]
    );
    let mut types: Vec<&str> = f.handlers.keys().map(String::as_str).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "AccountClosed",
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn"
        ]
    );

    let opened = &f.handlers["AccountOpened"];
    assert!(opened.add.is_empty() && !opened.delete);
    assert_eq!(opened.set.len(), 1);
    assert_eq!(opened.set[0].0, 0);
    assert_eq!(
        opened.set[0].1.eval(&event).unwrap(),
        Value::Str("Ada".into())
    );

    let deposited = &f.handlers["MoneyDeposited"];
    assert!(deposited.set.is_empty() && !deposited.delete);
    let adds: Vec<(usize, Value)> = deposited
        .add
        .iter()
        .map(|(i, e)| (*i, e.eval(&event).unwrap()))
        .collect();
    assert_eq!(adds, vec![(1, Value::Int(25)), (2, Value::Int(1))]);

    let withdrawn = &f.handlers["MoneyWithdrawn"];
    assert_eq!(withdrawn.add.len(), 1);
    assert_eq!(withdrawn.add[0].0, 1);
    assert_eq!(withdrawn.add[0].1.eval(&event).unwrap(), Value::Int(-25));

    let closed = &f.handlers["AccountClosed"];
    assert!(closed.delete && closed.set.is_empty() && closed.add.is_empty());

    let star = f.star.as_ref().expect("'*' handler");
    assert_eq!(star.set.len(), 1);
    assert_eq!(star.set[0].0, 3);
    assert_eq!(star.set[0].1.eval(&event).unwrap(), Value::Int(7));

    assert_eq!(c.views[1].name, "volume_by_type");
    let ViewKind::Aggregate(a) = &c.views[1].kind else {
        panic!("aggregate expected")
    };
    let filter = a.filter.as_ref().expect("filter");
    assert_eq!(filter.eval(&event).unwrap(), Value::Bool(true));
    assert_eq!(a.group_by.len(), 1);
    assert_eq!(a.group_by[0].name, "event_type");
    assert_eq!(a.group_by[0].ty, ColumnType::String);
    assert_eq!(
        a.group_by[0].expr.eval(&event).unwrap(),
        Value::Str("MoneyDeposited".into())
    );
    let cols: Vec<(&str, AggFn, ColumnType, bool)> = a
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.func, c.ty, c.arg.is_some()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("events", AggFn::CountStar, ColumnType::Int64, false),
            ("total", AggFn::Sum, ColumnType::Float64, true),
            ("largest", AggFn::Max, ColumnType::Float64, true),
            ("average", AggFn::Avg, ColumnType::Float64, true),
        ]
    );
    assert_eq!(
        a.columns[1].arg.as_ref().unwrap().eval(&event).unwrap(),
        Value::Int(25)
    );
}

#[test]
fn defaults_apply() {
    let c = load_ok(&format!(
        "{HEAD}  - name: v\n    fold:\n      on: {{ A: delete }}\n"
    ));
    assert_eq!(c.format, Format::Json);
    assert_eq!(c.on_error, OnError::DeadLetter);
    assert_eq!(c.workers, None);
    assert_eq!(c.publish_interval, Duration::from_millis(50));
    assert_eq!(c.state_dir, None);
    assert_eq!(c.envelope.version, None);
    assert_eq!(c.envelope.timestamp, None);
    let SourceConfig::Generator(g) = &c.source else {
        panic!()
    };
    assert_eq!((g.events, g.keys, g.seed), (1_000_000, 10_000, 42));
    let ViewKind::Fold(f) = &c.views[0].kind else {
        panic!()
    };
    assert_eq!(f.key_column, "key");
    assert!(f.columns.is_empty());
    assert!(f.star.is_none());
}

#[test]
fn all_mistakes_are_reported_at_once() {
    let text = r#"name: bank
sorce: x
source:
  type: generator
  scenario: bank
  events: lots
on_error: explode
state_dir: ${STATE_ROOT}/bank
envelope:
  id: eventId
  type: eventType
  key: aggregateId
views:
  - name: accounts
    fold:
      columns:
        balance: { type: int64, default: 0 }
      on:
        MoneyDeposited:
          ad: { balance: payload.amount }
        MoneyWithdrawn:
          add: { ballance: -payload.amount }
        "*": { set: { balance: "payload.amount +" } }
"#;
    let errs = errors(text);
    assert_eq!(
        summary(&errs),
        vec![
            ("config.unknown_field", 2, 1, "sorce".to_string()),
            ("config.invalid_type", 6, 11, "source.events".to_string()),
            ("config.invalid_value", 7, 11, "on_error".to_string()),
            ("config.env_unset", 8, 12, "state_dir".to_string()),
            (
                "config.unknown_field",
                20,
                11,
                "views[0].fold.on.MoneyDeposited.ad".to_string()
            ),
            (
                "config.unknown_column",
                22,
                18,
                "views[0].fold.on.MoneyWithdrawn.add.ballance".to_string()
            ),
            (
                "config.bad_expression",
                23,
                32,
                "views[0].fold.on.*.set.balance".to_string()
            ),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    let msg = |i: usize| errs[i].message.as_str();
    assert_eq!(msg(0), "unknown key 'sorce' (did you mean 'source'?)");
    assert_eq!(msg(1), "expected an integer, found a string");
    assert_eq!(
        msg(2),
        "unknown value 'explode' (expected one of: dead_letter, skip, fail, park)"
    );
    assert!(msg(3).contains("'STATE_ROOT' is not set"), "{}", msg(3));
    assert_eq!(msg(4), "unknown key 'ad' (did you mean 'add'?)");
    assert_eq!(
        msg(5),
        "unknown column 'ballance' (did you mean 'balance'?)"
    );
    assert!(msg(6).contains("`payload.amount +`"), "{}", msg(6));
    assert_eq!(
        errs[4].to_string(),
        "config.unknown_field: pipelines/x.yaml:20:11 views[0].fold.on.MoneyDeposited.ad: \
         unknown key 'ad' (did you mean 'add'?)"
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let text = "name: ${PIPELINE_NAME}
source: { type: file, path: '${EVENTS}' }
envelope: { id: id, type: type, key: ${KEY} }
views:
  - name: v
    aggregate:
      filter: \"payload.x = ${PW}\"
      columns: { n: \"count(*)\" }
${SHORT}: 1
";
    let vars = [
        ("PIPELINE_NAME", "hunter2 secret!"),
        ("EVENTS", "ev"),
        ("KEY", "a..secret..b"),
        ("PW", "'s3cr3t"),
        ("SHORT", "pw"),
    ];
    let errs = load_env(text, &vars).unwrap_err().0;
    let all = ConfigErrors(errs.clone()).to_string();
    for (_, value) in vars.iter().filter(|(n, _)| *n != "EVENTS") {
        assert!(!all.contains(value), "{value:?} leaked in:\n{all}");
    }
    // The errors are still there, naming the reference instead.
    assert!(all.contains("${PIPELINE_NAME}"), "{all}");
    assert!(all.contains("${PW}"), "{all}");
}

#[test]
fn env_values_and_defaults_are_used() {
    let text = format!(
        "{HEAD}  - name: v\n    fold:\n      on: {{ A: delete }}\nworkers: ${{W:-3}}\nstate_dir: $${{HOME}}/${{D}}\n"
    );
    let c = load_env(&text, &[("D", "data")]).unwrap();
    assert_eq!(c.workers, Some(3));
    assert_eq!(c.state_dir, Some(PathBuf::from("${HOME}/data")));
    let c = load_env(&text, &[("D", "data"), ("W", "5")]).unwrap();
    assert_eq!(c.workers, Some(5));
}

#[test]
fn unset_variables_do_not_cause_follow_up_errors() {
    let text = format!(
        "{HEAD}  - name: v\n    fold:\n      on: {{ A: delete }}\nworkers: ${{W}}\npublish_interval: ${{P:?set P to a duration}}\n"
    );
    let errs = load_env(&text, &[]).unwrap_err().0;
    assert_eq!(
        summary(&errs),
        vec![
            ("config.env_unset", 8, 10, "workers".to_string()),
            ("config.env_unset", 9, 19, "publish_interval".to_string()),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(
        errs[1].message,
        "environment variable 'P' is not set or empty: set P to a duration"
    );
}

#[test]
fn the_envelope_id_has_a_field_only_when_a_view_reads_it() {
    let text = "name: t
source: { type: generator, scenario: bank }
envelope: { id: eventId, type: eventType, key: aggregateId }
views:
  - name: last_event
    fold:
      columns: { id: string }
      on: { '*': { set: { id: eventId } } }
";
    let c = load_ok(text);
    let id = c.fields.get("eventId").expect("the view reads the id");
    assert_eq!(c.envelope.id, Some(id));
}

#[test]
fn duplicate_keys_are_reported_and_the_rest_is_checked() {
    let text = "name: a
name: b
source: { type: generator, scenario: bank, seed: 1, seed: 2 }
envelope: { id: id, type: type, key: key }
views:
  - name: v
    fold:
      columns:
        x: string
        x: int64
      on: { A: { add: { x: 1 } } }
  - name: w
    fold: { on: { A: delete }, bogus: 1 }
";
    let errs = errors(text);
    assert_eq!(
        summary(&errs),
        vec![
            ("config.duplicate_key", 2, 1, "name".to_string()),
            ("config.duplicate_key", 3, 53, "source.seed".to_string()),
            (
                "config.duplicate_key",
                10,
                9,
                "views[0].fold.columns.x".to_string()
            ),
            (
                "config.invalid_value",
                11,
                25,
                "views[0].fold.on.A.add.x".to_string()
            ),
            (
                "config.unknown_field",
                13,
                32,
                "views[1].fold.bogus".to_string()
            ),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(
        errs[0].message,
        "duplicate key 'name' (first defined on line 1, which is used)"
    );
    assert_eq!(
        errs[3].message,
        "add needs an int64 or float64 column; 'x' is string"
    );
}

#[test]
fn yaml_syntax_errors_have_the_parser_position() {
    let e = one_error("name: a\nsource: [1, 2\nviews: 3\n");
    assert_eq!(e.code, "config.yaml_syntax");
    assert_eq!((e.line, e.column), (3, 6));
    let e = one_error("name: a\n  bad: 1\n");
    assert_eq!(e.code, "config.yaml_syntax");
    assert_eq!(e.line, 2);
}

#[test]
fn syntax_positions_account_for_substitution() {
    // The substituted value is longer than the reference: the position is still the file's.
    let text = "name: ${N}\nsource: [1, 2\nviews: 3\n";
    let errs = load_env(text, &[("N", "a-much-longer-name")])
        .unwrap_err()
        .0;
    assert_eq!(
        summary(&errs),
        vec![("config.yaml_syntax", 3, 6, "<root>".to_string())]
    );
}

#[test]
fn empty_and_non_mapping_documents() {
    let e = one_error("# nothing here\n");
    assert_eq!((e.code, e.line, e.column), ("config.invalid_type", 1, 1));
    let e = one_error("- a\n- b\n");
    assert_eq!(e.code, "config.invalid_type");
    assert_eq!(e.message, "expected a mapping, found a sequence");
    let e = one_error("a: 1\n---\nb: 2\n");
    assert_eq!(e.code, "config.yaml_syntax");
}

#[test]
fn missing_fields_are_reported_at_the_mapping() {
    let errs = errors("source:\n  type: file\nenvelope:\n  id: id\n  type: type\nviews: []\n");
    assert_eq!(
        summary(&errs),
        vec![
            ("config.missing_field", 1, 1, "name".to_string()),
            ("config.missing_field", 2, 3, "source.path".to_string()),
            ("config.missing_field", 4, 3, "envelope.key".to_string()),
            ("config.invalid_value", 6, 8, "views".to_string()),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(errs[0].message, "missing required key 'name'");
}

#[test]
fn source_kinds() {
    let with_source = |s: &str| {
        format!(
            "name: t\nsource: {s}\nenvelope: {{ id: id, type: type, key: key }}\nviews: [{{ name: v, fold: {{ on: {{ A: delete }} }} }}]\n"
        )
    };
    let c = load_ok(&with_source("{ type: file, path: events.ndjson }"));
    assert_eq!(
        c.source,
        SourceConfig::File(projector_connectors::file::FileConfig::new(
            "pipelines/events.ndjson"
        ))
    );
    let c = load_ok(&with_source("{ type: file, path: '-' }"));
    let SourceConfig::File(f) = &c.source else {
        panic!()
    };
    assert_eq!(f.path, PathBuf::from("-"));
    let c = load_ok(&with_source("{ type: file, path: /data/e.ndjson }"));
    let SourceConfig::File(f) = &c.source else {
        panic!()
    };
    assert_eq!(f.path, PathBuf::from("/data/e.ndjson"));
    let c = load_ok(&with_source(
        "{ type: generator, scenario: bank, events: 0, keys: 1, seed: 7 }",
    ));
    assert_eq!(
        c.source,
        SourceConfig::Generator(GeneratorConfig {
            scenario: Scenario::Bank,
            events: 0,
            keys: 1,
            seed: 7
        })
    );

    let errs = errors(&with_source("{ type: kafka }"));
    let paths: Vec<(&str, &str)> = errs.iter().map(|e| (e.code, e.path.as_str())).collect();
    assert_eq!(
        paths,
        [
            ("config.missing_field", "source.brokers"),
            ("config.missing_field", "source.topics")
        ]
    );
    let e = one_error(&with_source(
        "{ type: kafka, brokers: b:9092, topics: [t], properties: { enable.auto.commit: 'true' } }",
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        (
            "config.invalid_value",
            "source.properties.\"enable.auto.commit\""
        )
    );
    assert!(e.message.contains("checkpoints"), "{}", e.message);
    let e = one_error(&with_source(
        "{ type: kafka, brokers: b:9092, topics: [t], properties: { session.timout.ms: '6000' } }",
    ));
    assert_eq!(e.code, "config.unknown_field");
    assert!(
        e.message.contains("did you mean 'session.timeout.ms'"),
        "{}",
        e.message
    );
    let e = one_error(&with_source(
        "{ type: kafka, brokers: b:9092, topics: t, start_from: first }",
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "source.start_from")
    );
    let c = load_ok(&with_source(
        "{ type: kafka, brokers: 'b:9092', topics: [t1, t2], properties: { fetch.min.bytes: 1 } }",
    ));
    let SourceConfig::Kafka(k) = c.source else {
        panic!("a kafka source")
    };
    assert_eq!(k.topics, ["t1", "t2"]);
    assert_eq!(k.group_id, format!("projector-{}", c.name));
    assert_eq!(
        k.properties.get("fetch.min.bytes").map(String::as_str),
        Some("1")
    );
    let e = one_error(&with_source("{ path: x }"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.missing_field", "source.type")
    );
    let e = one_error(&with_source("{ type: generator, scenario: bank, path: x }"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.unknown_field", "source.path")
    );
    let e = one_error(&with_source("{ type: generator, scenario: bnak }"));
    assert_eq!(e.message, "unknown value 'bnak' (did you mean 'bank'?)");
    let e = one_error(&with_source("{ type: generator, scenario: bank, keys: 0 }"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "source.keys")
    );
    assert_eq!(
        e.message,
        "0 is out of range: must be between 1 and 100000000"
    );
    let e = one_error(&with_source(
        "{ type: generator, scenario: bank, keys: 100000000000 }",
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "source.keys")
    );
    let e = one_error(&with_source(
        "{ type: generator, scenario: bank, events: -1 }",
    ));
    assert_eq!(e.code, "config.invalid_value");
    let e = one_error(&with_source("generator"));
    assert_eq!(e.message, "expected a mapping, found a string");
}

#[test]
fn settings_are_checked() {
    let base = format!("{HEAD}  - name: v\n    fold:\n      on: {{ A: delete }}\n");
    let one = |extra: &str| one_error(&format!("{base}{extra}\n"));
    let e = one("workers: 0");
    assert_eq!((e.code, e.line, e.column), ("config.invalid_value", 8, 10));
    assert_eq!(e.message, "0 is out of range: must be between 1 and 256");
    assert_eq!(one("workers: 257").code, "config.invalid_value");
    assert_eq!(one("workers: two").code, "config.invalid_type");
    assert_eq!(one("publish_interval: 0ms").code, "config.invalid_value");
    assert_eq!(one("publish_interval: soon").code, "config.invalid_value");
    assert_eq!(one("publish_interval: 100").code, "config.invalid_type");
    assert_eq!(one("format: csv").code, "config.invalid_value");
    assert_eq!(one("name: x").code, "config.duplicate_key");
    let e = one_error(&base.replace("name: t", "name: 'bad name'"));
    assert_eq!((e.code, e.path.as_str()), ("config.invalid_value", "name"));
    let e = one("on_eror: skip");
    assert_eq!(
        e.message,
        "unknown key 'on_eror' (did you mean 'on_error'?)"
    );
    let c = load_ok(&format!(
        "{base}publish_interval: 2s\non_error: fail\nworkers: 256\n"
    ));
    assert_eq!(c.publish_interval, Duration::from_secs(2));
    assert_eq!(c.on_error, OnError::Fail);
    assert_eq!(c.workers, Some(256));
    let c = load_ok(&format!("{base}on_error: skip\n"));
    assert_eq!(c.on_error, OnError::Skip);
}

#[test]
fn envelope_paths_are_checked() {
    let text = "name: t
source: { type: generator, scenario: bank }
envelope: { id: '', type: 3, key: 'a..b', version: v, stamp: t }
views: [{ name: v, fold: { on: { A: delete } } }]
";
    let errs = errors(text);
    assert_eq!(
        summary(&errs),
        vec![
            ("config.invalid_value", 3, 17, "envelope.id".to_string()),
            ("config.invalid_type", 3, 27, "envelope.type".to_string()),
            ("config.invalid_value", 3, 35, "envelope.key".to_string()),
            ("config.unknown_field", 3, 55, "envelope.stamp".to_string()),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
}

#[test]
fn fold_views_are_checked() {
    let view = |v: &str| errors(&format!("{HEAD}  - name: v\n    fold:\n{v}"));
    let codes = |v: &str| {
        view(v)
            .iter()
            .map(|e| (e.code, e.path.clone(), e.message.clone()))
            .collect::<Vec<_>>()
    };
    // delete with set.
    let c =
        codes("      columns: { a: int64 }\n      on: { A: { set: { a: 1 }, delete: true } }\n");
    assert_eq!(c[0].0, "config.invalid_value");
    assert_eq!(c[0].1, "views[0].fold.on.A.delete");
    // A default that does not fit the column.
    let c = codes("      columns: { a: { type: int64, default: 'x' } }\n      on: { A: delete }\n");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, "config.invalid_value");
    assert_eq!(c[0].1, "views[0].fold.columns.a.default");
    // An unknown type, with a suggestion.
    let c = codes("      columns: { a: strng }\n      on: { A: delete }\n");
    assert_eq!(c[0].2, "unknown value 'strng' (did you mean 'string'?)");
    // A column named like the key column; a bad column name.
    let c = codes(
        "      key_column: id\n      columns: { id: string, 2x: int64 }\n      on: { A: delete }\n",
    );
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c.iter().all(|e| e.0 == "config.invalid_value"));
    // Setting the key column; an unknown handler word; a null handler.
    let c =
        codes("      columns: { a: int64 }\n      on: { A: { set: { key: 1 } }, B: remove, C: }\n");
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(c[0].1, "views[0].fold.on.A.set.key");
    assert_eq!(c[1].0, "config.invalid_value");
    assert!(c[1].2.starts_with("unknown handler 'remove'"), "{}", c[1].2);
    assert_eq!(c[2].0, "config.invalid_type");
    // Both set and add on one column.
    let c =
        codes("      columns: { a: int64 }\n      on: { A: { set: { a: 1 }, add: { a: 2 } } }\n");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, "views[0].fold.on.A.add.a");
    // `on` is required.
    let c = codes("      columns: { a: int64 }\n");
    assert_eq!(
        (c[0].0, c[0].1.as_str()),
        ("config.missing_field", "views[0].fold.on")
    );
    // An expression of the wrong YAML type.
    let c = codes("      columns: { a: int64 }\n      on: { A: { set: { a: [1] } } }\n");
    assert_eq!(c[0].0, "config.invalid_type");

    // Empty handlers, null defaults, literals of every kind.
    let ok = load_ok(&format!(
        "{HEAD}  - name: v\n    fold:\n      columns: {{ a: {{ type: float64, default: 1 }}, b: {{ type: string, default: null }}, c: bool, d: timestamp }}\n      on: {{ A: {{}}, B: {{ set: {{ b: null, c: true, d: 1.5 }} }}, C: {{ delete: false }} }}\n"
    ));
    let ViewKind::Fold(f) = &ok.views[0].kind else {
        panic!()
    };
    assert_eq!(f.columns[0].default, Some(Value::Float(1.0)));
    assert_eq!(f.columns[1].default, None);
    assert_eq!(f.handlers["A"], Default::default());
    assert_eq!(f.handlers["B"].set.len(), 3);
    assert!(!f.handlers["C"].delete);
}

#[test]
fn aggregate_views_are_checked() {
    let agg = |v: &str| format!("{HEAD}  - name: v\n    aggregate:\n{v}");
    let ok = load_ok(&agg(
        "      group_by: { k: { expr: payload.n, type: int64 } }\n      columns:\n        s: { expr: 'sum(payload.n)', type: int64 }\n        lo: { expr: 'min(payload.s)', type: string }\n        c: count(payload.n)\n",
    ));
    let ViewKind::Aggregate(a) = &ok.views[0].kind else {
        panic!()
    };
    assert!(a.filter.is_none());
    assert_eq!(a.group_by[0].ty, ColumnType::Int64);
    let tys: Vec<_> = a.columns.iter().map(|c| (c.func, c.ty)).collect();
    assert_eq!(
        tys,
        vec![
            (AggFn::Sum, ColumnType::Int64),
            (AggFn::Min, ColumnType::String),
            (AggFn::Count, ColumnType::Int64)
        ]
    );
    // No group_by: one global group.
    let ok = load_ok(&agg("      columns: { n: 'count(*)' }\n"));
    let ViewKind::Aggregate(a) = &ok.views[0].kind else {
        panic!()
    };
    assert!(a.group_by.is_empty());

    let errs = errors(&agg(
        "      group_by: { k: eventType }\n      columns:\n        k: count(*)\n        c: { expr: count(*), type: float64 }\n        a: { expr: avg(x), type: int64 }\n        s: { expr: sum(x), type: string }\n        bad: nosuch(x)\n        n: 3\n",
    ));
    assert_eq!(
        summary(&errs),
        vec![
            (
                "config.invalid_value",
                9,
                9,
                "views[0].aggregate.columns.k".to_string()
            ),
            (
                "config.invalid_value",
                10,
                36,
                "views[0].aggregate.columns.c.type".to_string()
            ),
            (
                "config.invalid_value",
                11,
                34,
                "views[0].aggregate.columns.a.type".to_string()
            ),
            (
                "config.invalid_value",
                12,
                34,
                "views[0].aggregate.columns.s.type".to_string()
            ),
            (
                "config.bad_expression",
                13,
                14,
                "views[0].aggregate.columns.bad".to_string()
            ),
            (
                "config.invalid_type",
                14,
                12,
                "views[0].aggregate.columns.n".to_string()
            ),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(
        errs[1].message,
        "type float64 is not allowed for count(*): use int64"
    );
    assert_eq!(
        errs[3].message,
        "type string is not allowed for sum: use int64 or float64"
    );

    let e = one_error(&agg("      columns: {}\n"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "views[0].aggregate.columns")
    );
    let e = one_error(&agg(
        "      filter: 'a +'\n      columns: { n: 'count(*)' }\n",
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.bad_expression", "views[0].aggregate.filter")
    );
}

#[test]
fn views_are_checked() {
    let errs = errors(&format!(
        "{HEAD}  - name: v\n    fold: {{ on: {{ A: delete }} }}\n  - name: v\n    fold: {{ on: {{ A: delete }} }}\n  - name: 1v\n  - fold: {{ on: {{ A: delete }} }}\n    aggregate: {{ columns: {{ n: 'count(*)' }} }}\n"
    ));
    assert_eq!(
        summary(&errs),
        vec![
            ("config.invalid_value", 7, 11, "views[1].name".to_string()),
            ("config.missing_field", 9, 5, "views[2].fold".to_string()),
            ("config.invalid_value", 9, 11, "views[2].name".to_string()),
            ("config.missing_field", 10, 5, "views[3].name".to_string()),
            (
                "config.invalid_value",
                11,
                5,
                "views[3].aggregate".to_string()
            ),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(errs[0].message, "view name 'v' is already used by views[0]");
    let e = one_error(&format!("{HEAD}  {{}}\n").replace("views:\n  {}", "views: {}"));
    assert_eq!(e.message, "expected a sequence of views, found a mapping");
}

#[test]
fn load_reads_files_and_resolves_relative_source_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "name: t\nsource: { type: file, path: in/events.ndjson }\nenvelope: { id: id, type: type, key: key }\nviews: [{ name: v, fold: { on: { A: delete } } }]\n",
    )
    .unwrap();
    let c = load(&file).unwrap();
    let SourceConfig::File(f) = &c.source else {
        panic!()
    };
    assert_eq!(f.path, dir.path().join("in/events.ndjson"));
    assert_eq!(c.file, file);

    let missing = dir.path().join("missing.yaml");
    let e = load(&missing).unwrap_err().0;
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].code, e[0].line, e[0].column), ("config.io", 1, 1));
    assert_eq!(e[0].file, missing.display().to_string());
}

#[test]
fn errors_name_the_file_as_given() {
    let e = load_str("name: [", Path::new("./some/dir/p.yaml"))
        .unwrap_err()
        .0;
    assert_eq!(e[0].file, "./some/dir/p.yaml");
}

#[test]
fn the_documented_example_is_the_tested_one() {
    // Every field, so a field added to the config fails to compile here until the
    // documented example is checked for it.
    let PipelineConfig {
        file,
        name,
        source,
        format,
        format_options,
        registry,
        on_error,
        max_held,
        text: _,
        on_tombstone,
        envelope,
        preset,
        id_paths,
        views,
        fields,
        workers,
        publish_interval,
        state_dir,
        checkpoint,
        dead_letter,
        auth,
        topics,
        logic,
        upcasters,
        dedup,
        query,
        watchdog,
    } = load_ok(&documented_example());
    assert_eq!(watchdog, crate::runtime::watchdog::DEFAULT_STALL_AFTER);
    assert!(upcasters.is_empty() && dedup.is_none());
    // Query limits have their own section of the reference (and tests in query.rs).
    assert_eq!(query, crate::serve::query::QueryLimits::default());
    assert_eq!(
        logic.views.keys().collect::<Vec<_>>(),
        ["accounts", "volume_by_type"]
    );
    // The reference's first example runs on loopback without tokens; `auth:` has its
    // own section and tests (`auth_*`).
    assert_eq!(auth, None);
    assert!(topics.is_empty());

    assert_eq!(file, PathBuf::from("pipelines/x.yaml"));
    assert_eq!(name, "bank-accounts");
    assert_eq!(
        source,
        SourceConfig::Generator(GeneratorConfig {
            scenario: Scenario::Bank,
            events: 1_000_000,
            keys: 10_000,
            seed: 42
        })
    );
    assert_eq!(format, Format::Json);
    assert!(format_options.schema.is_none() && registry.is_none());
    assert_eq!(on_error, OnError::DeadLetter);
    assert_eq!(max_held, crate::config::DEFAULT_MAX_HELD);
    assert_eq!(on_tombstone, OnTombstone::Ignore);
    assert_eq!(preset, None);
    assert_eq!(
        id_paths,
        IdPaths {
            id: "eventId".into(),
            correlation_id: None,
            causation_id: None
        }
    );
    assert_eq!(workers, Some(2));
    assert_eq!(publish_interval, Duration::from_millis(50));
    assert_eq!(state_dir, Some(PathBuf::from("state/bank")));
    assert_eq!(
        checkpoint,
        CheckpointConfig {
            store: None,
            interval: Duration::from_secs(1),
            keep: 3
        }
    );
    assert_eq!(dead_letter, None);

    // Every path read, in slot order: the envelope's (key, type, version, timestamp),
    // then the views' in file order. No view reads the id, so it has no slot (a dead
    // letter reads it from the record's bytes).
    let paths = [
        "aggregateId",
        "eventType",
        "version",
        "timestamp",
        "payload.owner",
        "payload.amount",
    ];
    assert_eq!(fields.paths(), paths);
    for (slot, path) in paths.iter().enumerate() {
        assert_eq!(fields.get(path), Some(FieldId(slot as u32)), "{path}");
    }
    assert_eq!(fields.get("eventId"), None);
    let [key, event_type, version, timestamp, owner, amount] = [0, 1, 2, 3, 4, 5].map(FieldId);
    assert_eq!(
        envelope,
        Envelope {
            id: None,
            event_type,
            key,
            version: Some(version),
            timestamp: Some(timestamp),
            correlation_id: None,
            causation_id: None,
        }
    );

    // The two expressions that are more than a field or a constant, compiled over the
    // same slots.
    let mut slots = FieldRegistry::new();
    for path in paths {
        slots.intern(path);
    }
    let minus_amount = Expr::parse("-payload.amount", &mut slots).unwrap();
    let not_opened = Expr::parse("eventType <> 'AccountOpened'", &mut slots).unwrap();
    assert_eq!(slots.paths(), paths, "they read no other field");

    let field = Expr::field;
    let col = |name: &str, ty, default| ColumnSpec {
        name: name.into(),
        ty,
        default,
    };
    let accounts = FoldSpec {
        key_column: "account_id".into(),
        columns: vec![
            col("owner", ColumnType::String, None),
            col("balance", ColumnType::Int64, Some(Value::Int(0))),
            col("deposits", ColumnType::Int64, Some(Value::Int(0))),
            col("last_version", ColumnType::Int64, None),
        ],
        handlers: [
            (
                "AccountOpened",
                Handler {
                    set: vec![(0, field(owner))],
                    ..Handler::default()
                },
            ),
            (
                "MoneyDeposited",
                Handler {
                    add: vec![(1, field(amount)), (2, Expr::literal(Value::Int(1)))],
                    ..Handler::default()
                },
            ),
            (
                "MoneyWithdrawn",
                Handler {
                    add: vec![(1, minus_amount)],
                    ..Handler::default()
                },
            ),
            (
                "AccountClosed",
                Handler {
                    delete: true,
                    ..Handler::default()
                },
            ),
        ]
        .into_iter()
        .map(|(event_type, handler)| (event_type.to_string(), handler))
        .collect(),
        star: Some(Handler {
            set: vec![(3, field(version))],
            ..Handler::default()
        }),
        parked_column: false,
    };
    let agg = |name: &str, func, arg, ty| AggColumn {
        name: name.into(),
        func,
        arg,
        ty,
    };
    let float_of_amount =
        |name: &str, func| agg(name, func, Some(field(amount)), ColumnType::Float64);
    let volume_by_type = AggregateSpec {
        filter: Some(not_opened),
        group_by: vec![GroupColumn {
            name: "event_type".into(),
            expr: field(event_type),
            ty: ColumnType::String,
        }],
        columns: vec![
            agg("events", AggFn::CountStar, None, ColumnType::Int64),
            float_of_amount("total", AggFn::Sum),
            float_of_amount("largest", AggFn::Max),
            float_of_amount("average", AggFn::Avg),
        ],
    };
    assert_eq!(
        views,
        vec![
            ViewSpec {
                name: "accounts".into(),
                kind: ViewKind::Fold(accounts),
            },
            ViewSpec {
                name: "volume_by_type".into(),
                kind: ViewKind::Aggregate(volume_by_type),
            },
        ]
    );
}

#[test]
fn the_shipped_pipelines_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut loaded = 0;
    for dir in [root.clone(), root.join("nexmark")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if is_yaml {
                // The secured example takes its password from the environment only.
                let text = std::fs::read_to_string(&path).unwrap();
                let env = |n: &str| match n {
                    "KAFKA_PASSWORD" => Some("a password".to_string()),
                    _ => std::env::var(n).ok(),
                };
                if let Err(e) = load_with_env(&text, &path, &env) {
                    panic!("{} does not load:\n{e}", path.display());
                }
                loaded += 1;
            }
        }
    }
    assert!(loaded >= 6, "only {loaded} pipelines found");
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "name: t\nsource: { type: generator, scenario: bank }\n\
                envelope: { id: \"ü→\", type: 3, key: k }\nviews: [{ name: v, fold: { on: { A: delete } } }]\n";
    let e = one_error(text);
    assert_eq!((e.code, e.line, e.column), ("config.invalid_type", 3, 29));
    // And after a substituted multi-byte value.
    let text = text.replace("\"ü→\"", "\"${U}\"");
    let errs = load_env(&text, &[("U", "ééééé")]).unwrap_err().0;
    assert_eq!(
        summary(&errs),
        vec![("config.invalid_type", 3, 31, "envelope.type".to_string())]
    );
}

#[test]
fn kafka_fields_and_a_dead_letter_topic() {
    let pipeline = |source: &str, key: &str, extra: &str| {
        format!(
            "name: t\nsource: {source}\n{extra}envelope: {{ id: id, type: type, key: '{key}' }}\n\
             views:\n  - name: v\n    fold:\n      columns: {{ trace: string }}\n      \
             on: {{ A: {{ set: {{ trace: '$kafka.headers.\"trace-id\"' }} }} }}\n"
        )
    };
    let kafka = "{ type: kafka, brokers: 'b:9092', topics: [t], properties: { client.id: c } }";
    let c = load_ok(&pipeline(kafka, "$kafka.key", ""));
    let SourceConfig::Kafka(k) = &c.source else {
        panic!("a kafka source")
    };
    assert!(k.with_metadata, "the source is asked for keys and headers");
    assert_eq!(c.dead_letter, None);
    let paths: Vec<&str> = c.fields.paths().iter().map(String::as_str).collect();
    assert!(paths.contains(&"$kafka.key") && paths.contains(&"$kafka.headers.trace-id"));

    // Another source has no Kafka metadata.
    let e = one_error(&pipeline("{ type: file, path: e.ndjson }", "key", ""));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "source")
    );
    assert!(e.message.contains("$kafka"), "{}", e.message);
    // An unknown Kafka field, in the envelope.
    let e = one_error(&pipeline(kafka, "$kafka.value", ""));
    assert_eq!(e.path, "envelope.key");
    assert!(
        e.message.contains("unknown Kafka field '$kafka.value'"),
        "{}",
        e.message
    );

    // A dead-letter topic: the source's brokers and client properties by default.
    let c = load_ok(&pipeline(kafka, "key", "dead_letter: { topic: t-dlq }\n"));
    let dlq = c.dead_letter.expect("a dead-letter topic");
    assert_eq!(
        (dlq.brokers.as_str(), dlq.topic.as_str()),
        ("b:9092", "t-dlq")
    );
    assert_eq!(
        dlq.properties.get("client.id").map(String::as_str),
        Some("c")
    );
    let file = "{ type: file, path: e.ndjson }";
    let e = one_error(
        &pipeline(file, "key", "dead_letter: { topic: dlq }\n")
            .replace("'$kafka.headers.\"trace-id\"'", "x"),
    );
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.missing_field", "dead_letter")
    );
    let c = load_ok(
        &pipeline(file, "key", "dead_letter: { topic: dlq, brokers: 'h:1' }\n")
            .replace("'$kafka.headers.\"trace-id\"'", "x"),
    );
    assert_eq!(c.dead_letter.map(|d| d.brokers), Some("h:1".to_string()));
    let e = one_error(&pipeline(
        kafka,
        "key",
        "on_error: skip\ndead_letter: { topic: dlq }\n",
    ));
    assert!(e.message.contains("on_error: dead_letter"), "{}", e.message);
    let e = one_error(&pipeline(kafka, "key", "dead_letter: { topic: 'a b' }\n"));
    assert_eq!(e.path, "dead_letter.topic");
}

#[test]
fn nexmark_source() {
    use projector_connectors::nexmark::{DEFAULT_BASE_TIME_MS, DEFAULT_RATE, NexmarkConfig};
    let with_source = |s: &str| {
        format!(
            "name: t\nsource: {s}\nenvelope: {{ id: event_id, type: kind, key: event_id }}\nviews: [{{ name: v, fold: {{ on: {{ bid: delete }} }} }}]\n"
        )
    };
    let c = load_ok(&with_source("{ type: nexmark }"));
    assert_eq!(
        c.source,
        SourceConfig::Nexmark(NexmarkConfig {
            events: 1_000_000,
            rate: DEFAULT_RATE,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            pregenerate: false,
        })
    );
    let c = load_ok(&with_source(
        "{ type: nexmark, events: 5, rate: 1000, base_time: '2026-01-01T00:00:10Z', pregenerate: true }",
    ));
    assert_eq!(
        c.source,
        SourceConfig::Nexmark(NexmarkConfig {
            events: 5,
            rate: 1_000,
            base_time_ms: DEFAULT_BASE_TIME_MS + 10_000,
            pregenerate: true,
        })
    );
    let c = load_ok(&with_source("{ type: nexmark, base_time: 0 }"));
    let SourceConfig::Nexmark(n) = c.source else {
        panic!()
    };
    assert_eq!(n.base_time_ms, 0);

    let errs = errors(&with_source(
        "{ type: nexmark, events: -1, rate: 0, base_time: yesterday, keys: 3 }",
    ));
    assert_eq!(
        summary(&errs),
        vec![
            ("config.invalid_value", 2, 34, "source.events".to_string()),
            ("config.invalid_value", 2, 44, "source.rate".to_string()),
            (
                "config.invalid_value",
                2,
                58,
                "source.base_time".to_string()
            ),
            ("config.unknown_field", 2, 69, "source.keys".to_string()),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(
        errs[1].message,
        "0 is out of range: must be between 1 and 1000000"
    );
    assert!(
        errs[2].message.starts_with("invalid base_time 'yesterday'"),
        "{}",
        errs[2].message
    );
    let e = one_error(&with_source("{ type: nexmark, base_time: [1] }"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_type", "source.base_time")
    );
}

#[test]
fn table_views_are_checked() {
    const TIMED: &str = "name: t
source: { type: nexmark, events: 10 }
envelope: { id: event_id, type: kind, key: event_id, timestamp: date_time }
views:
";
    let table = |v: &str| format!("{TIMED}  - name: v\n    table:\n{v}");
    let ok = load_ok(&table(
        "      filter: \"kind = 'bid'\"\n      columns:\n        auction: { expr: auction, type: int64 }\n        euros: { expr: 'price * 0.908', type: float64 }\n        channel: channel\n        at: { expr: date_time, type: timestamp }\n      retain: { rows: 100, age: 10m }\n",
    ));
    let ViewKind::Table(t) = &ok.views[0].kind else {
        panic!()
    };
    assert!(t.filter.is_some());
    let cols: Vec<_> = t.columns.iter().map(|c| (c.name.as_str(), c.ty)).collect();
    assert_eq!(
        cols,
        [
            ("auction", ColumnType::Int64),
            ("euros", ColumnType::Float64),
            ("channel", ColumnType::String),
            ("at", ColumnType::Timestamp),
        ]
    );
    assert_eq!(t.retain.rows, Some(100));
    assert_eq!(t.retain.age_ms, Some(600_000));
    let ok = load_ok(&table("      columns: { p: price }\n"));
    let ViewKind::Table(t) = &ok.views[0].kind else {
        panic!()
    };
    assert!(t.filter.is_none() && !t.retain.is_bounded());

    // Every mistake at once, each at its place.
    let errs = errors(&table(
        "      filter: 'kind ='\n      columns:\n        a: { expr: auction, type: int32 }\n        a: price\n        1b: price\n        c: { type: int64 }\n        d: [x]\n      retain: { rows: 0, age: soon, size: 3 }\n      order_by: x\n",
    ));
    assert_eq!(
        summary(&errs),
        vec![
            (
                "config.bad_expression",
                7,
                15,
                "views[0].table.filter".to_string()
            ),
            (
                "config.invalid_value",
                9,
                35,
                "views[0].table.columns.a.type".to_string()
            ),
            (
                "config.duplicate_key",
                10,
                9,
                "views[0].table.columns.a".to_string()
            ),
            (
                "config.invalid_value",
                11,
                9,
                "views[0].table.columns.1b".to_string()
            ),
            (
                "config.missing_field",
                12,
                12,
                "views[0].table.columns.c.expr".to_string()
            ),
            (
                "config.invalid_type",
                13,
                12,
                "views[0].table.columns.d".to_string()
            ),
            (
                "config.invalid_value",
                14,
                23,
                "views[0].table.retain.rows".to_string()
            ),
            (
                "config.invalid_value",
                14,
                31,
                "views[0].table.retain.age".to_string()
            ),
            (
                "config.unknown_field",
                14,
                37,
                "views[0].table.retain.size".to_string()
            ),
            (
                "config.unknown_field",
                15,
                7,
                "views[0].table.order_by".to_string()
            ),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );

    let e = one_error(&table("      columns: {}\n"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "views[0].table.columns")
    );
    let e = one_error(&table("      filter: 'true'\n"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.missing_field", "views[0].table.columns")
    );
    let e = one_error(&table("      columns: { p: price }\n      retain: {}\n"));
    assert_eq!(
        (e.code, e.path.as_str(), e.line),
        ("config.missing_field", "views[0].table.retain.rows", 8)
    );
    let e = one_error(&table(
        "      columns: { p: price }\n      retain: { age: 1500us }\n",
    ));
    assert_eq!(e.message, "age must be a whole number of milliseconds");
    // `age` needs an event time.
    let untimed = format!(
        "{HEAD}  - name: v\n    table:\n      columns: {{ p: price }}\n      retain: {{ rows: 5, age: 1m }}\n"
    );
    let e = one_error(&untimed);
    assert_eq!(
        (e.code, e.path.as_str(), e.line, e.column),
        ("config.invalid_value", "views[0].table.retain.age", 8, 26)
    );
    assert!(
        e.message.contains("envelope maps no 'timestamp'"),
        "{}",
        e.message
    );
    // One kind per view.
    let e = one_error(&format!(
        "{HEAD}  - name: v\n    fold: {{ on: {{ A: delete }} }}\n    table: {{ columns: {{ p: price }} }}\n"
    ));
    assert_eq!(
        (e.code, e.path.as_str(), e.line),
        ("config.invalid_value", "views[0].table", 7)
    );
    assert_eq!(
        e.message,
        "a view is one of 'fold', 'aggregate' or 'table'; this one has 'fold' and 'table'"
    );
}

#[test]
fn tumble_groups_an_aggregate_by_window() {
    let c = load_ok(&format!(
        "{HEAD}  - name: v\n    aggregate:\n      group_by: {{ window: {{ expr: \"tumble(date_time, '10s')\", type: timestamp }} }}\n      columns: {{ top: {{ expr: 'max(price)', type: int64 }} }}\n"
    ));
    let ViewKind::Aggregate(a) = &c.views[0].kind else {
        panic!()
    };
    assert_eq!(a.group_by[0].ty, ColumnType::Timestamp);
    let e = one_error(&format!(
        "{HEAD}  - name: v\n    aggregate:\n      group_by: {{ window: \"tumble(date_time, '10 parsecs')\" }}\n      columns: {{ n: 'count(*)' }}\n"
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        (
            "config.bad_expression",
            "views[0].aggregate.group_by.window"
        )
    );
    assert!(e.message.contains("bad window size"), "{}", e.message);
}

fn with_checkpoint(section: &str) -> String {
    let head = HEAD.replace("views:\n", &format!("checkpoint:\n{section}views:\n"));
    format!("{head}  - name: v\n    fold:\n      on: {{ A: delete }}\n")
}

#[test]
fn checkpoint_stores_are_checked() {
    let c = load_ok(&with_checkpoint(
        "  store: s3://bucket/bank\n  endpoint: http://127.0.0.1:9000\n  region: eu-west-1\n  keep: 5\n",
    ));
    assert_eq!(
        c.checkpoint.store,
        Some(crate::config::StoreConfig {
            url: "s3://bucket/bank".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: None,
        })
    );
    assert_eq!(c.checkpoint.keep, 5);
    let c = load_ok(&with_checkpoint("  store: file:///var/lib/projector\n"));
    assert!(c.checkpoint.store.as_ref().is_some_and(|s| s.is_file()));
    assert_eq!(
        load_ok(&with_checkpoint("  interval: 2s\n"))
            .checkpoint
            .store,
        None
    );

    let e = one_error(&with_checkpoint("  store: ftp://host/x\n"));
    assert_eq!(
        (e.code, e.line, e.column, e.path.as_str()),
        ("config.invalid_value", 5, 10, "checkpoint.store")
    );
    assert!(
        e.message.contains("unsupported scheme 'ftp'"),
        "{}",
        e.message
    );
    let e = one_error(&with_checkpoint("  store: bucket/prefix\n"));
    assert!(e.message.contains("is not a URL"), "{}", e.message);
    let e = one_error(&with_checkpoint("  store: s3:///prefix\n"));
    assert!(e.message.contains("names no bucket"), "{}", e.message);
    let e = one_error(&with_checkpoint("  endpoint: http://x:9000\n"));
    assert_eq!(e.path, "checkpoint.endpoint");
    assert!(e.message.contains("needs 'store:'"), "{}", e.message);
    let e = one_error(&with_checkpoint(
        "  store: file:///d\n  endpoint: http://x\n",
    ));
    assert_eq!(e.path, "checkpoint.endpoint");
    let e = one_error(&with_checkpoint("  stor: s3://b/p\n"));
    assert_eq!(e.code, "config.unknown_field");
    assert!(e.message.contains("did you mean 'store'"), "{}", e.message);
}

/// The bank example with `auth:` before its views.
fn with_auth(auth: &str) -> String {
    documented_example().replacen("views:", &format!("{auth}views:"), 1)
}

#[test]
fn auth_tokens_are_kept_hashed_with_their_grants() {
    let sha = crate::config::hex(&crate::config::hash_token("a-long-enough-token-1"));
    let c = load_ok(&with_auth(&format!(
        "auth:\n  tokens:\n    - {{name: app, sha256: {sha}, views: [accounts]}}\n    \
         - {{name: ops, token: another-long-token-2, views: [\"*\"]}}\n  \
         cluster_token: the-cluster-token-3\n"
    )));
    let auth = c.auth.expect("auth");
    assert_eq!(auth.tokens.len(), 2);
    assert_eq!(
        auth.tokens[0].sha256,
        crate::config::hash_token("a-long-enough-token-1")
    );
    assert!(auth.tokens[0].views.allows("accounts"));
    assert!(!auth.tokens[0].views.allows("volume_by_type"));
    assert_eq!(
        auth.tokens[1].sha256,
        crate::config::hash_token("another-long-token-2")
    );
    assert!(auth.tokens[1].views.allows("volume_by_type"));
    assert_eq!(auth.cluster_token.as_deref(), Some("the-cluster-token-3"));
    assert!(
        !format!("{auth:?}").contains("the-cluster-token-3"),
        "no secret in Debug"
    );
}

#[test]
fn auth_errors_name_the_key() {
    let e = one_error(&with_auth(
        "auth:\n  tokens:\n    - {name: app, token: a-long-enough-token, views: [acounts]}\n",
    ));
    assert_eq!(e.path, "auth.tokens[0].views[0]");
    assert!(
        e.message.contains("did you mean 'accounts'"),
        "{}",
        e.message
    );
    let e = one_error(&with_auth(
        "auth:\n  tokens:\n    - {name: app, token: short, views: [accounts]}\n",
    ));
    assert_eq!(e.path, "auth.tokens[0].token");
    assert!(e.message.contains("too short"), "{}", e.message);
    let e = one_error(&with_auth(
        "auth:\n  tokens:\n    - {name: app, sha256: abc, token: a-long-enough-token, views: [accounts]}\n",
    ));
    assert!(e.message.contains("give the token once"), "{}", e.message);
    let e = one_error(&with_auth(
        "auth:\n  tokens:\n    - {name: app, sha256: xyz, views: [accounts]}\n",
    ));
    assert_eq!(e.path, "auth.tokens[0].sha256");
    let e = one_error(&with_auth(
        "auth:\n  tokens:\n    - {name: a, token: a-long-enough-token, views: [accounts]}\n    \
         - {name: a, token: b-long-enough-token, views: [accounts]}\n",
    ));
    assert!(
        e.message.contains("a second token named 'a'"),
        "{}",
        e.message
    );
    let e = one_error(&with_auth(
        "auth:\n  tokens:\n    - {name: a, token_file: no/such/file, views: [accounts]}\n",
    ));
    assert!(
        e.message.contains("cannot read the token file"),
        "{}",
        e.message
    );
}

fn aggregate_types(c: &PipelineConfig) -> Vec<(String, ColumnType)> {
    c.views
        .iter()
        .flat_map(|v| match &v.kind {
            ViewKind::Aggregate(a) => a
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

const TYPED: &str = "name: t
source: { type: generator, scenario: bank }
fields:
  payload.amount: int64
  payload.rate: float64
  payload.note: string
envelope: { id: eventId, type: eventType, key: aggregateId }
views:
  - name: v
    aggregate:
      columns:
        total: 'sum(payload.amount)'
        scaled: 'sum(payload.amount * 2 - 1)'
        weighted: 'sum(payload.amount * payload.rate)'
        largest: 'max(payload.amount)'
        first_note: 'min(payload.note)'
        average: 'avg(payload.amount)'
        untyped: 'sum(payload.other)'
        forced: { expr: 'sum(payload.amount)', type: float64 }
";

#[test]
fn declared_field_types_decide_the_aggregate_types() {
    use ColumnType::*;
    let c = load_ok(TYPED);
    let want = [
        ("total", Int64),
        ("scaled", Int64),
        ("weighted", Float64),
        ("largest", Int64),
        ("first_note", String),
        ("average", Float64),
        ("untyped", Float64),
        ("forced", Float64),
    ];
    let got = aggregate_types(&c);
    let want: Vec<(std::string::String, ColumnType)> =
        want.iter().map(|(n, t)| (n.to_string(), *t)).collect();
    assert_eq!(got, want);
    // Declared and read: converted when decoded.
    let amount = c.fields.get("payload.amount").expect("read");
    assert_eq!(c.fields.declared_type(amount), Some(Int64));
    let slots: Vec<usize> = c.fields.declared_slots().iter().map(|(s, _)| *s).collect();
    assert_eq!(
        slots.len(),
        3,
        "amount, rate and note are read and declared"
    );
    // Without the declaration, sums are float64 as before.
    let untyped = TYPED.replace("  payload.amount: int64\n", "");
    assert_eq!(aggregate_types(&load_ok(&untyped))[0].1, Float64);
}

#[test]
fn a_declared_type_is_checked_with_its_position() {
    let e = one_error(&TYPED.replace("payload.amount: int64", "payload.amount: integer"));
    assert_eq!(
        (e.code, e.line, e.path.as_str()),
        ("config.invalid_value", 4, "fields.\"payload.amount\"")
    );
    assert!(e.message.contains("int64"), "{}", e.message);
    let e = one_error(&TYPED.replace("payload.amount: int64", "$kafka.nope: int64"));
    assert!(e.message.contains("unknown Kafka field"), "{}", e.message);
}

#[test]
fn presets_fill_the_envelope_and_on_tombstone_is_read() {
    let text = "name: t
source: { type: generator, scenario: bank }
on_tombstone: delete
envelope: { preset: debezium, version: version, correlation_id: payload.correlationId }
views:
  - name: v
    fold:
      columns: { amount: int64 }
      on: { MoneyDeposited: { set: { amount: payload.amount } } }
";
    let c = load_ok(text);
    assert_eq!(
        c.preset,
        Some(projector_operators::decode::Preset::Debezium)
    );
    assert_eq!(c.on_tombstone, OnTombstone::Delete);
    assert_eq!(c.fields.path(c.envelope.key), "aggregateid");
    assert_eq!(c.fields.path(c.envelope.event_type), "type");
    assert_eq!(c.id_paths.id, "id");
    assert_eq!(
        c.id_paths.correlation_id.as_deref(),
        Some("payload.correlationId")
    );
    // With a preset the ids are decoded for every event (the preset reads the whole
    // record anyway, and headers are gone by the time a dead letter is written).
    assert!(c.envelope.id.is_some() && c.envelope.correlation_id.is_some());
    // A path the pipeline gives wins over the preset's.
    let own = load_ok(&text.replace(
        "preset: debezium,",
        "preset: debezium, key: payload.accountId,",
    ));
    assert_eq!(own.fields.path(own.envelope.key), "payload.accountId");
    // Without a preset, the three are required as before.
    let e = errors(&text.replace("preset: debezium, ", ""));
    let missing: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(e.len(), 3, "{missing:?}");
    let e = one_error(&text.replace("preset: debezium", "preset: avro"));
    assert!(e.message.contains("cloudevents"), "{}", e.message);
    let e = one_error(&text.replace("on_tombstone: delete", "on_tombstone: drop"));
    assert_eq!(e.path, "on_tombstone");
}

/// A pipeline of `format` (a YAML value) with `top` more top-level lines.
fn formatted(format: &str, top: &str) -> String {
    format!(
        "name: t
source: {{ type: kafka, brokers: 'b:9092', topics: [t] }}
format: {format}
{top}envelope: {{ id: eventId, type: eventType, key: aggregateId }}
views:
  - name: v
    aggregate:
      columns: {{ total: 'sum(payload.amount)', last: 'max(timestamp)' }}
"
    )
}

fn schema_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines/schemas")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn binary_formats_need_a_schema_and_a_schema_file_types_the_fields() {
    // Without a registry or a schema file there is nothing to read the bodies with.
    let e = one_error(&formatted("avro", ""));
    assert_eq!(
        (e.code, e.line, e.path.as_str()),
        ("config.invalid_value", 3, "format")
    );
    assert!(e.message.contains("registry"), "{}", e.message);
    // A registry is enough (the writers' schemas come from it).
    let c = load_ok(&formatted(
        "protobuf",
        "registry: { url: 'http://sr:8081/' }\n",
    ));
    assert_eq!(c.format, Format::Protobuf);
    // A dead letter cannot read a binary record's id again as JSON: it is decoded.
    assert!(c.envelope.id.is_some());
    assert_eq!(load_ok(&formatted("json", "")).envelope.id, None);
    assert_eq!(
        c.registry.as_ref().map(|r| r.url.as_str()),
        Some("http://sr:8081")
    );
    // The shipped Avro schema types payload.amount (long) and timestamp.
    let avsc = schema_file("bank-event.avsc");
    let c = load_ok(&formatted(
        &format!("{{ type: avro, schema: '{avsc}' }}"),
        "",
    ));
    let types = aggregate_types(&c);
    assert_eq!(types[0].1, ColumnType::Int64, "sum of a long");
    assert_eq!(
        types[1].1,
        ColumnType::Timestamp,
        "max of a timestamp-millis"
    );
    // The same from the .proto (its first message), and a message named.
    let proto = schema_file("bank_event.proto");
    let c = load_ok(&formatted(
        &format!("{{ type: protobuf, schema: '{proto}' }}"),
        "",
    ));
    assert_eq!(aggregate_types(&c)[0].1, ColumnType::Int64);
    let named = format!("{{ type: protobuf, schema: '{proto}', message: bank.Payload }}");
    assert!(matches!(
        load_ok(&formatted(&named, "")).format_options.schema,
        Some(ReaderSchema::Protobuf(m)) if m.full_name() == "bank.Payload"
    ));
}

#[test]
fn format_mistakes_name_the_key() {
    let proto = schema_file("bank_event.proto");
    let e = one_error(&formatted(
        &format!("{{ type: protobuf, schema: '{proto}', message: Nope }}"),
        "",
    ));
    assert_eq!(e.path, "format.schema");
    assert!(
        e.message.contains("bank.BankEvent, bank.Payload"),
        "{}",
        e.message
    );
    let e = one_error(&formatted("{ type: avro, schema: /nonexistent.avsc }", ""));
    assert_eq!((e.line, e.path.as_str()), (3, "format.schema"));
    assert!(e.message.contains("/nonexistent.avsc"), "{}", e.message);
    let avsc = schema_file("bank-event.avsc");
    let e = one_error(&formatted(
        &format!("{{ type: protobuf, schema: '{avsc}' }}"),
        "",
    ));
    assert_eq!(e.path, "format.schema");
    let e = one_error(&formatted(
        "{ type: avro, framing: none }",
        "registry: { url: 'http://sr' }\n",
    ));
    assert!(e.message.contains("framing: none"), "{}", e.message);
    let e = one_error(&formatted("xml", ""));
    assert!(e.message.contains("protobuf"), "{}", e.message);
    let e = one_error(&formatted("raw", "registry: { url: 'ftp://x' }\n"));
    assert_eq!(e.path, "registry.url");
    let e = one_error(&formatted(
        "raw",
        "registry: { url: 'http://x', auth: { username: u } }\n",
    ));
    assert_eq!(e.path, "registry.auth");
    // A preset reads JSON records.
    let text = formatted("{ type: avro, schema: 'x' }", "").replace(
        "envelope: { id: eventId,",
        "envelope: { preset: debezium, id: eventId,",
    );
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.path == "format.schema"), "{errs:?}");
    let text =
        formatted("raw", "").replace("envelope: { id", "envelope: { preset: cloudevents, id");
    let e = one_error(&text);
    assert!(e.message.contains("reads JSON records"), "{}", e.message);
}

/// Orders and payments: two topics feeding one view, `payments` with the settings
/// `payments` adds, then `properties` (source lines).
fn two_topics(payments: &str, properties: &str) -> String {
    format!(
        "name: t
source:
  type: kafka
  brokers: 'b:9092'
  topics:
    - orders
    - {{ name: payments{payments} }}
{properties}envelope: {{ id: id, type: type, key: orderId, version: version }}
views:
  - name: orders
    fold:
      key_column: order_id
      columns: {{ total: {{ type: int64, default: 0 }}, paid: {{ type: int64, default: 0 }} }}
      on:
        OrderPlaced: {{ set: {{ total: amount }} }}
        PaymentReceived: {{ add: {{ paid: amount }} }}
"
    )
}

#[test]
fn topics_may_have_their_own_envelope_and_format() {
    let c = load_ok(&two_topics(
        ", format: json, envelope: { key: order.id, type: kind, version: ~, id: paymentId }",
        "",
    ));
    let SourceConfig::Kafka(k) = &c.source else {
        panic!("a kafka source")
    };
    assert_eq!(k.topics, ["orders", "payments"]);
    assert_eq!(c.topics.len(), 2);
    assert_eq!(c.topics[0].topic, "orders");
    assert!(c.topics[0].envelope.is_empty() && c.topics[0].format.is_none());
    let p = &c.topics[1];
    assert_eq!(p.format.as_ref().map(|f| f.format), Some(Format::Json));
    let slot = |role| {
        p.envelope
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, s)| s.map(|s| c.fields.path(s).to_string()))
    };
    assert_eq!(slot(EnvelopeRole::Key), Some(Some("order.id".into())));
    assert_eq!(slot(EnvelopeRole::Type), Some(Some("kind".into())));
    assert_eq!(slot(EnvelopeRole::Version), Some(None), "no versions");
    assert_eq!(slot(EnvelopeRole::Timestamp), None, "the pipeline's");
    // The pipeline's id is decoded: the topic's is copied into it.
    assert_eq!(c.envelope.id.map(|s| c.fields.path(s)), Some("id"));
    // Without settings of their own, topics have none.
    let plain = two_topics("", "");
    assert!(
        load_ok(&plain.replace("{ name: payments }", "payments"))
            .topics
            .is_empty()
    );
}

#[test]
fn a_role_only_one_topic_maps_is_absent_for_the_others() {
    let c = load_ok(
        &two_topics(", envelope: { correlation_id: meta.correlation }", "")
            .replace(", version: version", ""),
    );
    assert_eq!(
        c.envelope.correlation_id.map(|s| c.fields.path(s)),
        Some("meta.correlation")
    );
    assert_eq!(c.envelope.version, None);
    assert!(
        c.topics[0]
            .envelope
            .contains(&(EnvelopeRole::CorrelationId, None))
    );
}

#[test]
fn topic_settings_mistakes_name_the_key() {
    let e = one_error(&two_topics(", envelope: { key: ~ }", ""));
    assert_eq!(
        (e.code, e.line, e.path.as_str()),
        ("config.invalid_value", 7, "source.topics[1].envelope.key")
    );
    let e = one_error(&two_topics(", envelope: { key: 'a..b' }", ""));
    assert_eq!(e.path, "source.topics[1].envelope.key");
    let e = one_error(&two_topics(", envelope: { preset: debezium }", ""));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.unknown_field", "source.topics[1].envelope.preset")
    );
    let e = one_error(&two_topics(", format: xml", ""));
    assert_eq!(e.path, "source.topics[1].format");
    let e = one_error(&two_topics(", partitions: 3", ""));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.unknown_field", "source.topics[1].partitions")
    );
    let e = one_error(&two_topics("", "").replace("{ name: payments }", "orders"));
    assert_eq!((e.line, e.path.as_str()), (7, "source.topics[1]"));
    assert!(
        e.message.contains("'orders' is listed twice"),
        "{}",
        e.message
    );
    let e = one_error(&two_topics("", "").replace("{ name: payments }", "{ format: json }"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.missing_field", "source.topics[1].name")
    );
}

#[test]
fn several_topics_keep_the_range_assignor() {
    let text = two_topics(
        "",
        "  properties: { partition.assignment.strategy: cooperative-sticky }\n",
    );
    let e = one_error(&text);
    assert_eq!(
        (e.code, e.path.as_str()),
        (
            "config.invalid_value",
            "source.properties.\"partition.assignment.strategy\""
        )
    );
    assert!(e.message.contains("only 'range'"), "{}", e.message);
    assert!(
        load_ok(&text.replace("cooperative-sticky", "range"))
            .topics
            .is_empty()
    );
}

#[test]
fn logic_is_the_pipeline_as_written_without_layout_or_retention() {
    let text = load_ok(&documented_example()).logic;
    let accounts = &text.views["accounts"];
    assert!(
        accounts.contains(&"fold.on.MoneyDeposited.add.balance = \"payload.amount\"".to_string()),
        "{accounts:#?}"
    );
    assert!(accounts.iter().any(|l| l.starts_with("envelope.key = ")));
    assert!(
        accounts
            .iter()
            .all(|l| !l.starts_with("views") && !l.starts_with("name"))
    );
    // Only what shapes the state: not the workers, the interval or the brokers.
    let changed = documented_example()
        .replace("publish_interval: 50ms", "publish_interval: 70ms")
        .replace("workers: 2 ", "workers: 3 ");
    let again = load_ok(&changed).logic;
    assert_eq!(again.changes_from(&text), vec![]);
    let retyped =
        load_ok(&documented_example().replace("owner: string", "owner: { type: string }")).logic;
    let changes = retyped.changes_from(&text);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].view, "accounts");
    assert_eq!(
        changes[0].lines,
        [
            "fold.columns.owner: \"string\" → (none)",
            "fold.columns.owner.type: (none) → \"string\""
        ]
    );
    // A stored logic round-trips through the manifest's JSON.
    assert_eq!(Logic::from_json(&text.to_json()), Some(text.clone()));
    let mut fewer = text.clone();
    fewer.views.remove("accounts");
    let changes = text.changes_from(&fewer);
    assert_eq!(
        (changes[0].view.as_str(), changes[0].lines[0].as_str()),
        ("accounts", "a new view")
    );
}

/// The documented example with `upcast` (lines) before its views.
fn with_upcast(upcast: &str) -> String {
    documented_example().replacen("\nviews:", &format!("\nupcast:\n{upcast}views:"), 1)
}

#[test]
fn upcasters_are_read_and_their_mistakes_named() {
    let c = load_ok(&with_upcast(
        "  version: schemaVersion\n  steps:\n    FundsDeposited:\n      1: { type: MoneyDeposited, rename: { old: payload }, set: { payload.amount: \"CAST(amt AS BIGINT)\" } }\n    Ping:\n      1: drop\n",
    ));
    let u = &c.upcasters;
    assert_eq!(
        u.version.map(|s| c.fields.paths()[s].as_str()),
        Some("schemaVersion")
    );
    let step = &u.steps["FundsDeposited"][&1];
    assert_eq!(step.new_type.as_deref(), Some("MoneyDeposited"));
    assert!(u.steps["Ping"][&1].drop);
    // The rename moves every path the pipeline reads under `payload`.
    let moved: Vec<(&str, &str)> = step
        .renames
        .iter()
        .map(|&(a, b)| (c.fields.paths()[a].as_str(), c.fields.paths()[b].as_str()))
        .collect();
    assert!(
        moved.contains(&("old.amount", "payload.amount")),
        "{moved:?}"
    );
    assert!(moved.contains(&("old.owner", "payload.owner")), "{moved:?}");
    // Upcasters shape every view's state.
    assert!(
        c.logic.views["accounts"]
            .iter()
            .any(|l| l.starts_with("upcast.steps.Ping"))
    );

    let e = one_error(&with_upcast("  steps:\n    A:\n      zero: drop\n"));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.invalid_value", "upcast.steps.A.zero")
    );
    let e = one_error(&with_upcast("  steps:\n    A:\n      1: skip\n"));
    assert!(e.message.contains("not a step"), "{}", e.message);
    let e = one_error(&with_upcast(
        "  steps:\n    A:\n      1: { renam: { a: b } }\n",
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.unknown_field", "upcast.steps.A.1.renam")
    );
    let e = one_error(&with_upcast(
        "  steps:\n    A:\n      1: { set: { x: 'a +' } }\n",
    ));
    assert_eq!(
        (e.code, e.path.as_str()),
        ("config.bad_expression", "upcast.steps.A.1.set.x")
    );
    let e = one_error(&with_upcast("  version: 'a..b'\n  steps: {}\n"));
    assert_eq!(e.path, "upcast.version");
    let e = one_error(&with_upcast("  version: version\n  steps: {}\n"));
    assert_eq!((e.line, e.path.as_str()), (27, "upcast.version"));
    assert!(e.message.contains("version guard"), "{}", e.message);
}

#[test]
fn dedup_windows_and_their_mistakes() {
    use projector_operators::dedup::Window;
    let with =
        |d: &str| documented_example().replacen("\nviews:", &format!("\ndedup: {d}\nviews:"), 1);
    let c = load_ok(&with("{ by: id, window: 500 }"));
    assert_eq!(c.dedup, Some(Window::Count(500)));
    // The id is decoded for every event.
    assert_eq!(c.envelope.id.map(|s| c.fields.path(s)), Some("eventId"));
    assert!(c.logic.views["accounts"].contains(&"dedup.window = 500".to_string()));
    let c = load_ok(&with("{ window: 10m, limit: 50 }"));
    assert_eq!(
        c.dedup,
        Some(Window::Age {
            ms: 600_000,
            limit: 50
        })
    );
    let e = one_error(&with("{ window: 10, limit: 5 }"));
    assert_eq!(e.path, "dedup.limit");
    let e = one_error(&with("{ by: key, window: 10 }"));
    assert_eq!(e.path, "dedup.by");
    let e = one_error(&with("{ window: 0 }"));
    assert_eq!(e.path, "dedup.window");
    let untimed = with("{ window: 1h }").replace("  timestamp: timestamp", "");
    let e = one_error(&untimed);
    assert!(e.message.contains("event time"), "{}", e.message);
}

#[test]
fn mistakes_found_in_review_are_refused() {
    // A rename into a path under itself would feed itself without end.
    let e = one_error(&with_upcast(
        "  steps:\n    A:\n      1: { rename: { payload.data: payload } }\n",
    ));
    assert_eq!(e.path, "upcast.steps.A.1.rename.\"payload.data\"");
    assert!(e.message.contains("lies under 'payload'"), "{}", e.message);
    // A table's newest rows by offset mean nothing across topics.
    let text = two_topics("", "").replace(
        "views:\n",
        "views:\n  - name: log\n    table:\n      columns: { id: id }\n      retain: { rows: 10 }\n",
    );
    let e = one_error(&text);
    assert_eq!(e.path, "views[0].table.retain.rows");
    assert!(e.message.contains("retain by age"), "{}", e.message);
    // Only a table's own `retain` is left out of the logic, not every `retain` word.
    let text = documented_example().replace("last_version", "retained_version");
    let logic = load_ok(&text).logic;
    assert!(
        logic.views["accounts"]
            .iter()
            .any(|l| l.starts_with("fold.columns.retained_version")),
        "{:?}",
        logic.views["accounts"]
    );
}
