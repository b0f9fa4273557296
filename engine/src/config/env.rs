//! `${VAR}` substitution, done so that a value can only ever be text inside one scalar.
//!
//! Forms: `${VAR}`, `${VAR:-default}` (default when unset or empty), `${VAR:?message}`
//! (an error with that message when unset or empty) and `$$` (a literal `$`). A `$`
//! followed by anything else is kept as is. References inside YAML comments are left alone.
//!
//! Values are never pasted into the YAML text: a value holding a quote, a line break or
//! `: ` would then add keys, even inside the quotes one would put around the reference.
//! Instead [`substitute`] replaces each reference with a stand-in: three private-use
//! characters, which are plain text in any YAML context (unquoted, quoted, flow, block
//! scalars), and the loader replaces the stand-ins in each scalar with their values
//! ([`Substituted::resolve`]), before the scalar's type is decided. Variables are only
//! read then, so a reference in a comment, which the parser drops, is never looked up:
//! the parser, not a guess at YAML quoting, decides what is a comment. (That guess, a
//! scan per character over every comment, also made comment-heavy files quadratic.)
//!
//! Positions in the text with stand-ins differ from the file's, so [`Substituted`] keeps
//! a map from them back to lines and columns of the file.

/// A problem found while substituting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvIssue {
    /// Error code.
    pub(crate) code: &'static str,
    /// Char index in the substituted text of the reference's stand-in.
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
    /// Char index of the reference's stand-in in the substituted text.
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

/// What a stand-in stands for.
#[derive(Debug)]
enum Stand {
    /// A reference, or why it is malformed.
    Ref(Result<Reference, String>),
    /// A character of the file that happens to be a stand-in character: it stands for
    /// itself, so that no file text is mistaken for a reference.
    Literal(char),
}

/// One stand-in in the substituted text.
#[derive(Debug)]
struct StandIn {
    stand: Stand,
    /// The reference as written.
    reference: String,
    /// Its char index in the substituted text.
    at: usize,
    /// Its value, once resolved.
    value: Option<String>,
}

/// The result of substitution.
#[derive(Debug)]
pub(crate) struct Substituted {
    /// The text to parse, with a stand-in for each reference.
    pub(crate) text: String,
    /// Every reference resolved to a non-empty value.
    pub(crate) uses: Vec<VarUse>,
    /// Every problem.
    pub(crate) issues: Vec<EnvIssue>,
    stand_ins: Vec<StandIn>,
    segments: Vec<Segment>,
    /// Char index of the start of each line of the original text.
    line_starts: Vec<usize>,
    orig_len: usize,
}

/// A stand-in is this character and two digits, three chars in all. They are
/// private-use characters of plane 15, which YAML takes as plain text anywhere; the file's
/// own characters of that range are replaced by stand-ins too (each standing for itself),
/// so that no text of the file is mistaken for a reference.
const MARK: char = '\u{F0000}';
/// The digits: U+F0001 to U+FFFFD (the plane's last two code points are noncharacters).
const DIGITS: (u32, u32) = (0xF_0001, 0xF_FFFD);
const BASE: usize = (DIGITS.1 - DIGITS.0 + 1) as usize;
/// How many stand-ins there can be: over four billion, more than a file can hold.
const MAX_STAND_INS: usize = BASE * BASE;
/// The length of a stand-in, in chars.
const STAND_IN_LEN: usize = 3;

/// Stand-in number `n`.
fn stand_in(n: usize) -> Option<[char; STAND_IN_LEN]> {
    if n >= MAX_STAND_INS {
        return None;
    }
    let digit = |d: usize| char::from_u32(DIGITS.0 + u32::try_from(d).ok()?);
    Some([MARK, digit(n / BASE)?, digit(n % BASE)?])
}

/// Whether `c` is one of the characters stand-ins are made of.
fn is_reserved(c: char) -> bool {
    (u32::from(MARK)..=DIGITS.1).contains(&u32::from(c))
}

/// The number of the stand-in at the start of `chars`, if one starts there.
fn stand_in_at(chars: &[char]) -> Option<usize> {
    let digit = |c: char| {
        let c = u32::from(c);
        (DIGITS.0..=DIGITS.1)
            .contains(&c)
            .then(|| (c - DIGITS.0) as usize)
    };
    match chars {
        [MARK, hi, lo, ..] => Some(digit(*hi)? * BASE + digit(*lo)?),
        _ => None,
    }
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

    /// `scalar` (the text of a scalar parsed from the chars `within` of the substituted
    /// text) with its stand-ins replaced by their values, reading variables with `lookup`;
    /// `None` when it holds no stand-in.
    ///
    /// Each stand-in is in one place of the text, so it is resolved (and its problems
    /// recorded) once, when the parser hands over the scalar that holds it. A stand-in
    /// character that is not in `within` came from an escape (`"\U000F0000"`) and is
    /// kept as it is.
    pub(crate) fn resolve(
        &mut self,
        scalar: &str,
        within: std::ops::Range<usize>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        if !scalar.contains(MARK) {
            return None;
        }
        let chars: Vec<char> = scalar.chars().collect();
        let mut out = String::with_capacity(scalar.len());
        let mut i = 0;
        while i < chars.len() {
            let n = stand_in_at(&chars[i..]).filter(|&n| {
                self.stand_ins
                    .get(n)
                    .is_some_and(|s| within.contains(&s.at))
            });
            match n {
                Some(n) => {
                    out.push_str(self.value(n, lookup));
                    i += STAND_IN_LEN;
                }
                None => {
                    out.push(chars[i]);
                    i += 1;
                }
            }
        }
        Some(out)
    }

    /// `chars` (a piece of the substituted text) with the stand-ins resolved so far
    /// replaced by their values: a scalar as written, after substitution.
    pub(crate) fn render(&self, chars: &[char]) -> String {
        let mut out = String::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            match stand_in_at(&chars[i..]).and_then(|n| self.stand_ins.get(n)) {
                Some(s) => {
                    out.push_str(s.value.as_deref().unwrap_or_default());
                    i += STAND_IN_LEN;
                }
                None => {
                    out.push(chars[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// The value of stand-in `n`, looked up the first time.
    fn value(&mut self, n: usize, lookup: &dyn Fn(&str) -> Option<String>) -> &str {
        if self.stand_ins[n].value.is_none() {
            let value = self.look_up(n, lookup);
            self.stand_ins[n].value = Some(value);
        }
        self.stand_ins[n].value.as_deref().unwrap_or_default()
    }

    fn look_up(&mut self, n: usize, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let s = &self.stand_ins[n];
        let at = s.at;
        let r = match &s.stand {
            Stand::Literal(c) => return c.to_string(),
            Stand::Ref(Err(message)) => {
                self.issues.push(EnvIssue {
                    code: "config.invalid_value",
                    at,
                    message: message.clone(),
                });
                return String::new();
            }
            Stand::Ref(Ok(r)) => r,
        };
        let found = lookup(&r.name);
        let set = found.as_deref().is_some_and(|v| !v.is_empty());
        let (value, from_env) = match (&r.op, set) {
            (Op::Plain, _) if found.is_some() => (found, true),
            (Op::Plain, _) => {
                let message = format!(
                    "environment variable '{}' is not set (use ${{{}:-default}} for a default)",
                    r.name, r.name
                );
                self.issues.push(EnvIssue {
                    code: "config.env_unset",
                    at,
                    message,
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
                self.issues.push(EnvIssue {
                    code: "config.env_unset",
                    at,
                    message,
                });
                (None, false)
            }
        };
        let value = value.unwrap_or_default();
        if !value.is_empty() {
            self.uses.push(VarUse {
                reference: self.stand_ins[n].reference.clone(),
                value: value.clone(),
                from_env,
                start: at,
                end: at + STAND_IN_LEN,
            });
        }
        value
    }
}

/// Replaces the `${...}` references in `text` with stand-ins (and `$$` with `$`); the
/// variables are read later, per scalar, by [`Substituted::resolve`].
pub(crate) fn substitute(text: &str) -> Substituted {
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
        stand_ins: Vec::new(),
        segments: Vec::new(),
        line_starts,
        orig_len: chars.len(),
    };
    let mut out_len = 0usize; // chars written
    let mut i = 0usize;
    let mut literal_open = false;
    // The next `}` or line break at or after `i`: where a reference can end. Kept from one
    // reference to the next, so that a line of many unterminated `${` is not scanned to
    // its end once per `${`.
    let mut stop = 0usize;
    let mut capped = false;
    while i < chars.len() {
        let c = chars[i];
        let reference = c == '$' && i + 1 < chars.len() && matches!(chars[i + 1], '$' | '{');
        let look_alike = is_reserved(c);
        if !reference && !look_alike {
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
        out.segments.push(Segment {
            subst: out_len,
            orig: i,
            literal: false,
        });
        if reference && chars[i + 1] == '$' {
            out.text.push('$');
            out_len += 1;
            i += 2;
            continue;
        }
        let (stand, next) = if look_alike {
            (Stand::Literal(c), i + 1)
        } else {
            if stop < i + 2 {
                stop = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '}' || c == '\n')
                    .map_or(chars.len(), |p| i + 2 + p);
            }
            let close = (stop < chars.len() && chars[stop] == '}').then_some(stop);
            let (r, next) = parse_reference(&chars, i, close);
            (Stand::Ref(r), next)
        };
        match stand_in(out.stand_ins.len()) {
            Some(stand_in) => {
                out.stand_ins.push(StandIn {
                    stand,
                    reference: chars[i..next].iter().collect(),
                    at: out_len,
                    value: None,
                });
                out.text.extend(stand_in);
                out_len += STAND_IN_LEN;
            }
            None if capped => {} // replaced by nothing
            None => {
                capped = true;
                out.issues.push(EnvIssue {
                    code: "config.invalid_value",
                    at: out_len,
                    message: format!(
                        "more than {MAX_STAND_INS} `${{...}}` references: this one and every \
                         later one are ignored; split the file or use fewer references"
                    ),
                });
            }
        }
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

/// Parses the reference starting with `${` at `start`, whose closing `}` is at `close`
/// (`None`: a line break or the end of the text comes first); returns it (or an error
/// message) and the index after it.
fn parse_reference(
    chars: &[char],
    start: usize,
    close: Option<usize>,
) -> (Result<Reference, String>, usize) {
    const FORMS: &str = "use ${NAME}, ${NAME:-default} or ${NAME:?message}";
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `text` substituted, with every stand-in resolved (as if each were in a scalar), and
    /// the text with the values in place of the stand-ins.
    fn sub(text: &str, vars: &[(&str, &str)]) -> (Substituted, String) {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = substitute(text);
        let with_stand_ins = s.text.clone();
        let all = 0..s.text.chars().count();
        let _ = s.resolve(&with_stand_ins, all, &move |n| vars.get(n).cloned());
        let chars: Vec<char> = with_stand_ins.chars().collect();
        let rendered = s.render(&chars);
        (s, rendered)
    }

    #[test]
    fn plain_default_and_dollar() {
        let (s, text) = sub(
            "a: ${A}\nb: ${B:-dflt}\nc: $$x $y\nd: ${E:-e}\n",
            &[("A", "va"), ("E", "")],
        );
        assert_eq!(text, "a: va\nb: dflt\nc: $x $y\nd: e\n");
        assert!(s.issues.is_empty());
        assert_eq!(s.uses.len(), 3);
        assert!(s.uses[0].from_env && !s.uses[1].from_env);
    }

    #[test]
    fn set_but_empty_plain_is_empty() {
        let (s, text) = sub("a: '${A}'\n", &[("A", "")]);
        assert_eq!(text, "a: ''\n");
        assert!(s.issues.is_empty());
    }

    #[test]
    fn required_and_unset() {
        let (s, text) = sub("a: ${A:?give me A}\nbb: ${B}\nc: ${C:?}\n", &[]);
        assert_eq!(text, "a: \nbb: \nc: \n");
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
        let (ok, text) = sub("a: ${A:?give me A}\n", &[("A", "x")]);
        assert_eq!(text, "a: x\n");
        assert!(ok.issues.is_empty());
    }

    #[test]
    fn malformed_references() {
        let (s, _) = sub("a: ${1X}\nb: ${X-y}\nc: ${X\nd: ${}\n", &[("X", "v")]);
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
        let (s, text) = sub(
            "k: ${LONG_NAME}x ${B} $$z\nnext: 1\n",
            &[("LONG_NAME", "ab"), ("B", "q")],
        );
        assert_eq!(text, "k: abx q $z\nnext: 1\n");
        // Positions in the text with stand-ins (three chars per reference).
        let with_stand_ins: Vec<char> = s.text.chars().collect();
        let at = |needle: char| with_stand_ins.iter().position(|&c| c == needle).unwrap();
        let (first, second) = (s.stand_ins[0].at, s.stand_ins[1].at);
        assert_eq!(s.line_col(first), (1, 4)); // ${LONG_NAME}
        assert_eq!(s.line_col(first + 2), (1, 4)); // inside the stand-in: the reference
        assert_eq!(s.line_col(at('x')), (1, 16));
        assert_eq!(s.line_col(second), (1, 18)); // ${B}
        assert_eq!(s.line_col(at('z')), (1, 25));
        assert_eq!(s.line_col(at('n')), (2, 1));
        assert_eq!(s.line_col(at('1')), (2, 7));
        assert_eq!(
            (s.uses[0].start, s.uses[0].end),
            (first, first + STAND_IN_LEN)
        );
    }

    #[test]
    fn unresolved_references_are_never_looked_up() {
        // A reference the parser drops (in a comment) is never resolved: no lookup, no
        // error. Here the scalar holds the second and third references only.
        let mut s = substitute("# ${NOPE}\na: \"x # ${A}\n  # ${A}\" # ${NOPE} ${\n");
        let p = |n: usize| stand_in(n).unwrap().iter().collect::<String>();
        let within = s.stand_ins[1].at..s.stand_ins[2].at + STAND_IN_LEN;
        let lookup = |n: &str| (n == "A").then(|| "v".to_string());
        let value = s.resolve(&format!("x # {} # {}", p(1), p(2)), within.clone(), &lookup);
        assert_eq!(value.as_deref(), Some("x # v # v"));
        assert!(s.issues.is_empty());
        assert_eq!(s.uses.len(), 2);
        // A stand-in from elsewhere (written as escapes) is kept as it is.
        let value = s.resolve(&format!("{}{}", p(0), p(1)), within, &lookup);
        assert_eq!(value, Some(format!("{}v", p(0))));
        assert!(s.issues.is_empty());
    }

    #[test]
    fn look_alike_characters_stand_for_themselves() {
        let text = "a: \u{F0000}${A}\u{F0001}\u{FFFFD}\u{F0000}\n";
        let (s, rendered) = sub(text, &[("A", "\u{F0002}")]);
        assert_eq!(
            rendered,
            "a: \u{F0000}\u{F0002}\u{F0001}\u{FFFFD}\u{F0000}\n"
        );
        assert_eq!(s.uses.len(), 1);
        assert_eq!(s.uses[0].reference, "${A}");
    }

    #[test]
    fn many_unterminated_references_are_linear() {
        // Each `${` without `}` on its line is an error; finding that must not scan the
        // rest of the line once per `${` (200,000 of them here).
        let line = "${".repeat(200_000);
        let (s, rendered) = sub(&line, &[]);
        assert_eq!(s.stand_ins.len(), 200_000);
        assert_eq!(s.issues.len(), 200_000);
        assert_eq!(s.line_col(s.issues[199_999].at), (1, 399_999));
        assert!(rendered.is_empty());
    }

    #[test]
    fn stand_in_numbering_round_trips() {
        for n in [0, 1, BASE - 1, BASE, BASE + 1, MAX_STAND_INS - 1] {
            let chars = stand_in(n).unwrap();
            assert!(chars.iter().all(|&c| is_reserved(c)));
            assert_eq!(stand_in_at(&chars), Some(n), "{n}");
        }
        assert_eq!(stand_in(MAX_STAND_INS), None);
        assert_eq!(stand_in_at(&['a', 'b', 'c']), None);
        assert_eq!(stand_in_at(&[MARK, MARK, 'c']), None);
        assert!(!is_reserved('\u{FFFFE}')); // a noncharacter
    }
}
