//! `${VAR}` substitution in the raw pipeline text, before YAML parsing.
//!
//! Forms: `${VAR}`, `${VAR:-default}` (default when unset or empty), `${VAR:?message}`
//! (an error with that message when unset or empty) and `$$` (a literal `$`). A `$`
//! followed by anything else is kept as is. References inside YAML comments are left alone.
//!
//! The substituted text has different positions than the file, so [`Substituted`] keeps a
//! map from positions in the substituted text back to lines and columns of the file.

/// A problem found while substituting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvIssue {
    /// Error code.
    pub(crate) code: &'static str,
    /// Char index in the substituted text where the reference was (it is replaced by nothing).
    pub(crate) at: usize,
    /// What is wrong (never contains a variable's value).
    pub(crate) message: String,
}

/// One variable reference that was replaced by a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VarUse {
    /// The reference as written in the file, e.g. `${DB_PASSWORD}`.
    pub(crate) reference: String,
    /// The value that replaced it.
    pub(crate) value: String,
    /// True when the value came from the environment (not from a `:-` default).
    pub(crate) from_env: bool,
    /// Char range of the value in the substituted text.
    pub(crate) start: usize,
    /// End (exclusive) of that range.
    pub(crate) end: usize,
}

/// A piece of the substituted text and where it came from.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// First char index in the substituted text.
    subst: usize,
    /// First char index in the original text.
    orig: usize,
    /// True when copied verbatim (positions map one to one); false for a replaced reference.
    literal: bool,
}

/// The result of substitution.
#[derive(Debug, Clone)]
pub(crate) struct Substituted {
    /// The text to parse.
    pub(crate) text: String,
    /// Every reference replaced by a value.
    pub(crate) uses: Vec<VarUse>,
    /// Every problem.
    pub(crate) issues: Vec<EnvIssue>,
    segments: Vec<Segment>,
    /// Char index of the start of each line of the original text.
    line_starts: Vec<usize>,
    orig_len: usize,
}

impl Substituted {
    /// Maps a char index of the substituted text to a char index of the original text.
    pub(crate) fn original_index(&self, at: usize) -> usize {
        let mut i = self.segments.partition_point(|s| s.subst <= at);
        if i == 0 {
            return at.min(self.orig_len);
        }
        // A reference replaced by nothing shares its start with the next segment: the
        // position is the reference's.
        while i >= 2 && self.segments[i - 2].subst == at && self.segments[i - 1].subst == at {
            i -= 1;
        }
        let seg = self.segments[i - 1];
        if seg.literal {
            (seg.orig + (at - seg.subst)).min(self.orig_len)
        } else {
            seg.orig
        }
    }

    /// 1-based line and column (in chars) in the original text of a char index of the
    /// substituted text.
    pub(crate) fn line_col(&self, at: usize) -> (usize, usize) {
        let orig = self.original_index(at);
        let line = self.line_starts.partition_point(|&s| s <= orig).max(1);
        (line, orig - self.line_starts[line - 1] + 1)
    }
}

/// Substitutes the process environment into `text`.
#[cfg(test)]
pub(crate) fn substitute_env(text: &str) -> Substituted {
    substitute(text, &|name| std::env::var(name).ok())
}

/// Substitutes `${...}` references in `text`, reading variables with `lookup`.
pub(crate) fn substitute(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Substituted {
    let chars: Vec<char> = text.chars().collect();
    let mut line_starts = vec![0];
    line_starts.extend(
        chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '\n')
            .map(|(i, _)| i + 1),
    );
    let mut out = Substituted {
        text: String::with_capacity(text.len()),
        uses: Vec::new(),
        issues: Vec::new(),
        segments: Vec::new(),
        line_starts,
        orig_len: chars.len(),
    };
    let comments = comment_starts(&chars);
    let mut out_len = 0usize; // chars written
    let mut i = 0usize;
    let mut literal_open = false;
    while i < chars.len() {
        let c = chars[i];
        let in_comment = comments.iter().any(|&(start, end)| i >= start && i < end);
        if c != '$' || in_comment || i + 1 >= chars.len() || !matches!(chars[i + 1], '$' | '{') {
            if !literal_open {
                out.segments.push(Segment {
                    subst: out_len,
                    orig: i,
                    literal: true,
                });
                literal_open = true;
            }
            out.text.push(c);
            out_len += 1;
            i += 1;
            continue;
        }
        literal_open = false;
        if chars[i + 1] == '$' {
            out.segments.push(Segment {
                subst: out_len,
                orig: i,
                literal: false,
            });
            out.text.push('$');
            out_len += 1;
            i += 2;
            continue;
        }
        // `${`
        let (reference, next) = parse_reference(&chars, i);
        out.segments.push(Segment {
            subst: out_len,
            orig: i,
            literal: false,
        });
        let written = match reference {
            Err(message) => {
                out.issues.push(EnvIssue {
                    code: "config.invalid_value",
                    at: out_len,
                    message,
                });
                String::new()
            }
            Ok(r) => {
                let found = lookup(&r.name);
                let set = found.as_deref().is_some_and(|v| !v.is_empty());
                let (value, from_env) = match (&r.op, set) {
                    (Op::Plain, _) if found.is_some() => (found, true),
                    (Op::Plain, _) => {
                        out.issues.push(EnvIssue {
                            code: "config.env_unset",
                            at: out_len,
                            message: format!(
                                "environment variable '{}' is not set (use ${{{}:-default}} for a default)",
                                r.name, r.name
                            ),
                        });
                        (None, false)
                    }
                    (_, true) => (found, true),
                    (Op::Default(d), false) => (Some(d.clone()), false),
                    (Op::Require(m), false) => {
                        let message = if m.is_empty() {
                            format!("environment variable '{}' is not set or empty", r.name)
                        } else {
                            format!("environment variable '{}' is not set or empty: {m}", r.name)
                        };
                        out.issues.push(EnvIssue {
                            code: "config.env_unset",
                            at: out_len,
                            message,
                        });
                        (None, false)
                    }
                };
                let value = value.unwrap_or_default();
                if !value.is_empty() {
                    out.uses.push(VarUse {
                        reference: chars[i..next].iter().collect(),
                        value: value.clone(),
                        from_env,
                        start: out_len,
                        end: out_len + value.chars().count(),
                    });
                }
                value
            }
        };
        out_len += written.chars().count();
        out.text.push_str(&written);
        i = next;
    }
    out
}

#[derive(Debug)]
enum Op {
    Plain,
    Default(String),
    Require(String),
}

#[derive(Debug)]
struct Reference {
    name: String,
    op: Op,
}

/// Parses the reference starting with `${` at `start`; returns it (or an error message)
/// and the index after it.
fn parse_reference(chars: &[char], start: usize) -> (Result<Reference, String>, usize) {
    const FORMS: &str = "use ${NAME}, ${NAME:-default} or ${NAME:?message}";
    let close = chars[start..]
        .iter()
        .position(|&c| c == '}' || c == '\n')
        .map(|p| start + p)
        .filter(|&p| chars[p] == '}');
    let Some(close) = close else {
        return (
            Err(format!("unterminated variable reference '${{' ({FORMS})")),
            start + 2,
        );
    };
    let body = &chars[start + 2..close];
    let name_len = body
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
        .count();
    let name: String = body[..name_len].iter().collect();
    let rest: String = body[name_len..].iter().collect();
    let bad = || {
        Err(format!(
            "invalid variable reference '${{{}}}' ({FORMS})",
            body.iter().collect::<String>()
        ))
    };
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return (bad(), close + 1);
    }
    let op = if rest.is_empty() {
        Op::Plain
    } else if let Some(d) = rest.strip_prefix(":-") {
        Op::Default(d.to_string())
    } else if let Some(m) = rest.strip_prefix(":?") {
        Op::Require(m.to_string())
    } else {
        return (bad(), close + 1);
    };
    (Ok(Reference { name, op }), close + 1)
}

/// Char ranges of YAML comments (from `#` to the end of its line), found with a per-line
/// approximation of YAML quoting.
fn comment_starts(chars: &[char]) -> Vec<(usize, usize)> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let line_end = chars[i..]
            .iter()
            .position(|&c| c == '\n')
            .map_or(chars.len(), |p| i + p);
        let mut q = Quote::None;
        let mut j = i;
        while j < line_end {
            let c = chars[j];
            let after_space = j == i || matches!(chars[j - 1], ' ' | '\t');
            match q {
                Quote::None => {
                    let opener = j == i || matches!(chars[j - 1], ' ' | '\t' | '[' | '{' | ',');
                    if c == '#' && after_space {
                        ranges.push((j, line_end));
                        break;
                    } else if c == '\'' && opener {
                        q = Quote::Single;
                    } else if c == '"' && opener {
                        q = Quote::Double;
                    }
                }
                Quote::Single => {
                    if c == '\'' {
                        if j + 1 < line_end && chars[j + 1] == '\'' {
                            j += 1;
                        } else {
                            q = Quote::None;
                        }
                    }
                }
                Quote::Double => {
                    if c == '\\' {
                        j += 1;
                    } else if c == '"' {
                        q = Quote::None;
                    }
                }
            }
            j += 1;
        }
        i = line_end + 1;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sub(text: &str, vars: &[(&str, &str)]) -> Substituted {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        substitute(text, &move |n| vars.get(n).cloned())
    }

    #[test]
    fn plain_default_and_dollar() {
        let s = sub(
            "a: ${A}\nb: ${B:-dflt}\nc: $$x $y\nd: ${E:-e}\n",
            &[("A", "va"), ("E", "")],
        );
        assert_eq!(s.text, "a: va\nb: dflt\nc: $x $y\nd: e\n");
        assert!(s.issues.is_empty());
        assert_eq!(s.uses.len(), 3);
        assert!(s.uses[0].from_env && !s.uses[1].from_env);
    }

    #[test]
    fn set_but_empty_plain_is_empty() {
        let s = sub("a: '${A}'\n", &[("A", "")]);
        assert_eq!(s.text, "a: ''\n");
        assert!(s.issues.is_empty());
    }

    #[test]
    fn required_and_unset() {
        let s = sub("a: ${A:?give me A}\nbb: ${B}\nc: ${C:?}\n", &[]);
        assert_eq!(s.text, "a: \nbb: \nc: \n");
        assert_eq!(s.issues.len(), 3);
        assert_eq!(s.issues[0].code, "config.env_unset");
        assert_eq!(
            s.issues[0].message,
            "environment variable 'A' is not set or empty: give me A"
        );
        assert_eq!(s.line_col(s.issues[0].at), (1, 4));
        assert!(s.issues[1].message.contains("'B'"));
        assert_eq!(s.line_col(s.issues[1].at), (2, 5));
        assert_eq!(s.line_col(s.issues[2].at), (3, 4));
        let ok = sub("a: ${A:?give me A}\n", &[("A", "x")]);
        assert_eq!(ok.text, "a: x\n");
        assert!(ok.issues.is_empty());
    }

    #[test]
    fn malformed_references() {
        let s = sub("a: ${1X}\nb: ${X-y}\nc: ${X\nd: ${}\n", &[("X", "v")]);
        let codes: Vec<_> = s
            .issues
            .iter()
            .map(|i| (i.code, s.line_col(i.at)))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("config.invalid_value", (1, 4)),
                ("config.invalid_value", (2, 4)),
                ("config.invalid_value", (3, 4)),
                ("config.invalid_value", (4, 4)),
            ]
        );
    }

    #[test]
    fn positions_map_back_to_the_file() {
        let s = sub(
            "k: ${LONG_NAME}x ${B} $$z\nnext: 1\n",
            &[("LONG_NAME", "ab"), ("B", "q")],
        );
        assert_eq!(s.text, "k: abx q $z\nnext: 1\n");
        let at = |needle: &str| s.text.find(needle).unwrap(); // ASCII: bytes == chars
        assert_eq!(s.line_col(at("ab")), (1, 4)); // start of ${LONG_NAME}
        assert_eq!(s.line_col(at("b")), (1, 4)); // inside the value: the reference
        assert_eq!(s.line_col(at("x")), (1, 16));
        assert_eq!(s.line_col(at("q")), (1, 18));
        assert_eq!(s.line_col(at("z")), (1, 25));
        assert_eq!(s.line_col(at("next")), (2, 1));
        assert_eq!(s.line_col(at("1")), (2, 7));
    }

    #[test]
    fn comments_are_left_alone() {
        let s = sub(
            "# ${NOPE}\na: 1 # ${NOPE}\nb: '# ${A}' # ${NOPE}\nc: x#${A}\nd: it's ${A} # ${NOPE}\n",
            &[("A", "v")],
        );
        assert!(s.issues.is_empty(), "{:?}", s.issues);
        assert_eq!(
            s.text,
            "# ${NOPE}\na: 1 # ${NOPE}\nb: '# v' # ${NOPE}\nc: x#v\nd: it's v # ${NOPE}\n"
        );
    }

    #[test]
    fn process_environment_is_read() {
        // PATH is set in any test environment; its value is not asserted on.
        let s = substitute_env("p: ${PATH}\n");
        assert!(s.issues.is_empty());
        assert!(s.uses[0].from_env);
    }
}
