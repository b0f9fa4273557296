//! The loader against hostile input: alias bombs, huge comment blocks, thousands of
//! duplicate keys and `${VAR}` values written to inject YAML.
//!
//! The inputs are sized so that the naive behaviour (cloning every alias, quadratic
//! scans, a reparse per duplicate, values pasted into the text) runs out of memory, runs
//! for minutes or gives a wrong answer; no test asserts a duration.

use super::*;
use std::fmt::Write as _;

/// A valid pipeline; tests append top-level keys.
const BASE: &str = "name: t
source: { type: generator, scenario: bank }
envelope: { id: id, type: type, key: key }
views:
  - name: v
    fold:
      on: { A: delete }
";

fn load_errors(text: &str, vars: &[(&str, &str)]) -> Vec<ConfigError> {
    match super::tests::load_env(text, vars) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

fn loaded(text: &str, vars: &[(&str, &str)]) -> PipelineConfig {
    match super::tests::load_env(text, vars) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid pipeline, got:\n{e}"),
    }
}

#[test]
fn an_alias_bomb_is_refused_before_it_is_expanded() {
    // A 1 MiB scalar aliased 50,000 times: 50 GiB if every alias were cloned, far more
    // than the machine has, in a file of 1.3 MB. It stays under a budget that counts
    // nodes (50,000 aliases of one node each).
    let aliases = 50_000;
    let mut text = String::from(BASE);
    text.push_str("big: &big ");
    text.push_str(&"x".repeat(1 << 20));
    text.push_str("\nmany:\n");
    let first_alias_line = text.lines().count() + 1;
    for _ in 0..aliases {
        text.push_str("  - *big\n");
    }
    let errs = load_errors(&text, &[]);
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    let e = &errs[0];
    assert_eq!(e.code, "config.alias_too_large", "{e}");
    // The error names the alias that crossed the budget: one of the first few dozen, so
    // no more than that many copies of the scalar were ever made.
    assert!(
        e.line >= first_alias_line && e.line < first_alias_line + 64,
        "{e} (first alias on line {first_alias_line})"
    );
    assert_eq!(e.column, 5, "{e}");
    assert!(e.path.starts_with("many["), "{e}");
    assert!(e.message.contains("*big"), "{e}");
}

#[test]
fn nested_aliases_are_counted_by_their_expanded_size() {
    // "Billion laughs": each level aliases the one before ten times; nine levels would
    // be 10^9 copies of a 1 KiB string.
    let mut text = String::from(BASE);
    let _ = writeln!(text, "l0: &l0 {}", "y".repeat(1024));
    for level in 1..10 {
        let prev = level - 1;
        let items = vec![format!("*l{prev}"); 10].join(", ");
        let _ = writeln!(text, "l{level}: &l{level} [{items}]");
    }
    let errs = load_errors(&text, &[]);
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    assert_eq!(errs[0].code, "config.alias_too_large", "{}", errs[0]);
    // 10^4 KiB fits the budget: the level that crosses it is l5 (or l4).
    assert!((12..=13).contains(&errs[0].line), "{}", errs[0]);
}

#[test]
fn small_aliases_still_work() {
    let text = "name: t
source: { type: generator, scenario: bank }
envelope: &env { id: id, type: type, key: key }
views:
  - name: v
    fold:
      on: &on { A: delete }
  - name: w
    fold:
      on: *on
spare: *env
";
    let errs = load_errors(text, &[]);
    // The alias is expanded (the view loads); only the unknown key is reported.
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    assert_eq!(
        (errs[0].code, errs[0].line, errs[0].path.as_str()),
        ("config.unknown_field", 11, "spare")
    );
    let c = loaded(&text.replace("spare: *env\n", ""), &[]);
    assert_eq!(c.views.len(), 2);
}

#[test]
fn a_long_run_of_comments_loads() {
    // 200,000 comment lines (some with references, which are not substituted in
    // comments): a scan per line over the rest of the file, or per character over all
    // comments, would take hours here.
    let mut text = String::from("# header\n");
    for i in 0..200_000 {
        let _ = writeln!(
            text,
            "# comment {i}: ${{NOT_SET}} and 'quotes' \"too\" # more"
        );
    }
    text.push_str(BASE);
    text.push_str("state_dir: ${DIR} # trailing ${NOT_SET}\n");
    let c = loaded(&text, &[("DIR", "/var/lib/p")]);
    assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/p")));
    // Positions after the comments still map back to the file.
    let errs = load_errors(&text.replace("${DIR}", "${UNSET}"), &[]);
    assert_eq!(
        errs.iter()
            .map(|e| (e.code, e.line, e.column, e.path.as_str()))
            .collect::<Vec<_>>(),
        vec![("config.env_unset", 200_009, 12, "state_dir")]
    );
}

#[test]
fn thousands_of_duplicate_keys_are_each_reported() {
    // 2,000 duplicates, in a file of 50,000 lines: one reparse per duplicate would parse
    // the file 2,000 times.
    let mut text = String::from("name: t\n");
    for _ in 0..1_000 {
        text.push_str("name: again\n");
    }
    text.push_str(
        "source: { type: generator, scenario: bank }
envelope: { id: id, type: type, key: key }
views:
  - name: v
    fold:
      columns:
",
    );
    let columns_line = text.lines().count() + 1;
    for i in 0..1_000 {
        let _ = writeln!(text, "        c{i}: int64\n        c{i}: string");
    }
    text.push_str("      on: { A: delete }\nfiller:\n");
    for i in 0..46_000 {
        let _ = writeln!(text, "  k{i}: v");
    }
    let errs = load_errors(&text, &[]);
    let dups: Vec<&ConfigError> = errs
        .iter()
        .filter(|e| e.code == "config.duplicate_key")
        .collect();
    assert_eq!(dups.len(), 2_000);
    for (i, e) in dups[..1_000].iter().enumerate() {
        assert_eq!((e.line, e.column, e.path.as_str()), (i + 2, 1, "name"));
        assert_eq!(
            e.message,
            "duplicate key 'name' (first defined on line 1, which is used)"
        );
    }
    for (i, e) in dups[1_000..].iter().enumerate() {
        let line = columns_line + 2 * i + 1;
        let path = format!("views[0].fold.columns.c{i}");
        assert_eq!(
            (e.line, e.column, e.path.as_str()),
            (line, 9, path.as_str())
        );
        assert_eq!(
            e.message,
            format!(
                "duplicate key 'c{i}' (first defined on line {}, which is used)",
                line - 1
            )
        );
    }
    // The rest is checked, with the first of each key: only `filler` is unknown.
    let others: Vec<String> = errs
        .iter()
        .filter(|e| e.code != "config.duplicate_key")
        .map(ToString::to_string)
        .collect();
    assert_eq!(others.len(), 1, "{others:#?}");
    assert!(others[0].contains("config.unknown_field"), "{others:#?}");
}

#[test]
fn duplicates_that_cannot_be_renamed_in_the_text_are_reported_too() {
    // Complex, anchored, aliased and escaped keys: a rename in the text cannot mark these.
    let text = format!(
        "{BASE}x: &k {{ a: 1, a: 2 }}\ny: {{ a: 1, \"\\u0061\": 2, [1]: 3, [1]: 4, b: 5, &n b: 6 }}\nz: *k\n"
    );
    let errs = load_errors(&text, &[]);
    let dups: Vec<(usize, usize, &str)> = errs
        .iter()
        .filter(|e| e.code == "config.duplicate_key")
        .map(|e| (e.line, e.column, e.path.as_str()))
        .collect();
    assert_eq!(
        dups,
        vec![
            (8, 15, "x.a"),
            // The copy made for the alias: the same key, reached by another path.
            (8, 15, "z.a"),
            (9, 12, "y.a"),
            (9, 33, "y"),
            (9, 47, "y.b")
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
}

/// Values that are YAML syntax in one place or another.
const HOSTILE: &[&str] = &[
    "x\"\nevil: 1\n#",
    "x'\nevil: 1\n#",
    "it's: a: b",
    "# not a comment",
    "a # b",
    "{x: 1}",
    "- y",
    "[1, 2]",
    "back\\slash \\n \\\" \\u0041",
    "*alias &anchor !!int",
    "line1\nline2\n  indented: 3\n",
    "  spaced  ",
    "---\n...\n",
    "|\n  block",
    "%YAML 1.2",
    "${OTHER} $$ ${",
    "\u{F0000} stand-in look-alike \u{10FFFD}",
];

#[test]
fn values_are_scalars_wherever_the_reference_is() {
    let contexts: &[(&str, &str, &str)] = &[
        ("plain", "state_dir: ${V}\n", ""),
        ("single-quoted", "state_dir: '${V}'\n", ""),
        ("double-quoted", "state_dir: \"${V}\"\n", ""),
        (
            "inside a string",
            "state_dir: \"pre ${V} post\"\n",
            "pre | post",
        ),
        ("literal block", "state_dir: |-\n  ${V}\n", ""),
        (
            "flow mapping",
            "registry: { url: 'http://r', auth: { username: u, password: ${V} } }\n",
            "",
        ),
        (
            "flow sequence",
            "registry: { url: 'http://r', auth: { username: [${V}], password: p } }\n",
            "",
        ),
    ];
    for value in HOSTILE {
        for (what, line, wrap) in contexts {
            let text = format!("{BASE}{line}");
            let vars = [("V", *value), ("OTHER", "no")];
            let expected = match wrap.split_once('|') {
                Some((pre, post)) => format!("{pre}{value}{post}"),
                None => value.to_string(),
            };
            if what.starts_with("flow sequence") {
                // A sequence where a string belongs: the one error is about that, and
                // the value is a single item.
                let errs = load_errors(&text, &vars);
                assert_eq!(errs.len(), 1, "{what} {value:?}: {}", ConfigErrors(errs));
                assert_eq!(errs[0].code, "config.invalid_type", "{what} {value:?}");
                assert_eq!(errs[0].message, "expected a string, found a sequence");
                continue;
            }
            let c = match super::tests::load_env(&text, &vars) {
                Ok(c) => c,
                Err(e) => panic!("{what} {value:?}: {e}"),
            };
            if what.starts_with("flow mapping") {
                match c.registry.and_then(|r| r.auth) {
                    Some(RegistryAuth::Basic { username, password }) => {
                        assert_eq!(username, "u", "{what} {value:?}");
                        assert_eq!(password, expected, "{what} {value:?}");
                    }
                    other => panic!("{what} {value:?}: {other:?}"),
                }
            } else {
                assert_eq!(
                    c.state_dir,
                    Some(PathBuf::from(&expected)),
                    "{what} {value:?}"
                );
            }
        }
    }
}

#[test]
fn a_quoted_reference_cannot_add_keys() {
    // The case from the report: the documented advice (quote the reference) held only
    // while values had no quote and no line break.
    let text = format!(
        "{BASE}registry:\n  url: http://r\n  auth:\n    username: \"${{USER}}\"\n    password: \"${{PW}}\"\n"
    );
    let c = loaded(&text, &[("USER", "u"), ("PW", "x\"\nevil: 1\n#")]);
    match c.registry.and_then(|r| r.auth) {
        Some(RegistryAuth::Basic { password, .. }) => assert_eq!(password, "x\"\nevil: 1\n#"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reference_as_a_key_is_one_key() {
    for value in HOSTILE {
        let text = format!("{BASE}${{V}}: 1\n");
        let errs = load_errors(&text, &[("V", value)]);
        assert_eq!(errs.len(), 1, "{value:?}: {}", ConfigErrors(errs.clone()));
        let e = &errs[0];
        assert_eq!(
            (e.code, e.line, e.column),
            ("config.unknown_field", 8, 1),
            "{e}"
        );
        // The key's text is the value, which the error shows as the reference.
        assert!(!e.message.contains(value), "{e}");
        assert!(e.message.contains("${V}"), "{e}");
    }
}

#[test]
fn plain_values_are_typed_quoted_ones_are_strings() {
    let text = format!("{BASE}workers: ${{W}}\npublish_interval: ${{P}}\n");
    let c = loaded(&text, &[("W", "7"), ("P", "2s")]);
    assert_eq!(c.workers, Some(7));
    // Quoted, the number is a string: the type error names the reference's place.
    let text = format!("{BASE}workers: \"${{W}}\"\n");
    let errs = load_errors(&text, &[("W", "7")]);
    assert_eq!(
        errs.iter()
            .map(|e| (e.code, e.line, e.column, e.message.as_str()))
            .collect::<Vec<_>>(),
        vec![(
            "config.invalid_type",
            8,
            10,
            "expected an integer, found a string"
        )]
    );
    // A number where text is read is taken as written (here: as the value was written).
    let text = format!(
        "{BASE}registry: {{ url: 'http://r', auth: {{ username: ${{U}}, password: ${{PW}} }} }}\n"
    );
    let c = loaded(&text, &[("U", "0x1F"), ("PW", "007")]);
    match c.registry.and_then(|r| r.auth) {
        Some(RegistryAuth::Basic { username, password }) => {
            assert_eq!((username.as_str(), password.as_str()), ("0x1F", "007"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn substitution_errors_keep_their_positions() {
    // Unset, required, malformed, in comments, in quotes, after a multi-line value.
    let text = format!(
        "{BASE}state_dir: \"a ${{LONG}} b ${{UNSET}}\" # ${{NOPE}}\nworkers: ${{W:?say how many}}\n\
         publish_interval: '${{1X}}'\n# ${{ unterminated in a comment\ncheckpoint: {{ keep: ${{K }} }}\n"
    );
    let errs = load_errors(&text, &[("LONG", "line\nbreak: \"x\"\n")]);
    assert_eq!(
        errs.iter()
            .map(|e| (e.code, e.line, e.column, e.path.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("config.env_unset", 8, 25, "state_dir"),
            ("config.env_unset", 9, 10, "workers"),
            ("config.invalid_value", 10, 20, "publish_interval"),
            ("config.invalid_value", 12, 21, "checkpoint.keep"),
        ],
        "{}",
        ConfigErrors(errs.clone())
    );
    assert_eq!(
        errs[1].message,
        "environment variable 'W' is not set or empty: say how many"
    );
}
