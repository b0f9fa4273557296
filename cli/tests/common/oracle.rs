//! An independent model of `pipelines/bank-accounts.yaml`, written from
//! docs/pipeline-reference.md with plain `serde_json::Value`s.
//!
//! It shares no code with the engine's operators: it parses each record into a
//! `serde_json::Value`, checks the envelope, folds the `accounts` view and aggregates the
//! `volume_by_type` view exactly as the reference describes, and lists the bad records.
//!
//! Interpretations of the reference that the model makes (each is a documented rule,
//! applied literally):
//!
//! * A record is JSON text, so it must be UTF-8 everywhere (RFC 8259). Nesting depth is
//!   not limited: a valid record nested deeper than `serde_json::Value` can parse is
//!   validated without a depth limit and read with its deep parts replaced by empty
//!   containers of the same kind (nothing the pipeline reads lies that deep).
//! * Envelope checks come first, in this order: key (missing/null: `apply.missing_key`;
//!   not a string or an integer: `apply.bad_key`), type, version, timestamp. Then the
//!   version comparison: a record whose version is not newer is a duplicate, whatever its
//!   payload. Then the views, in file order; the first failing expression or conversion
//!   names the error.
//! * "Integer" follows the `int64` column rule: an integer, or a float without a fractional
//!   part that fits in 64 bits.
//! * A key is identified by its text: the integer `12345` is the key `"12345"`.
//! * Converting to `string` accepts strings, numbers and booleans; objects and arrays do
//!   not convert (`apply.type_mismatch`). `-x` of a non-number is an expression error
//!   (`apply.expression`), as is `-(i64::MIN)`; an `int64` add that overflows is
//!   `apply.overflow`.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// One row of the `accounts` view.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Account {
    /// The key column (`account_id`): the envelope key's text.
    pub(crate) account_id: String,
    /// `owner: string`.
    pub(crate) owner: Option<String>,
    /// `balance: {type: int64, default: 0}`.
    pub(crate) balance: Option<i64>,
    /// `deposits: {type: int64, default: 0}`.
    pub(crate) deposits: Option<i64>,
    /// `last_version: int64`.
    pub(crate) last_version: Option<i64>,
}

impl Account {
    /// A new row from the column defaults.
    fn new(account_id: &str) -> Self {
        Account {
            account_id: account_id.to_string(),
            owner: None,
            balance: Some(0),
            deposits: Some(0),
            last_version: None,
        }
    }

    /// The row as the engine's JSON output writes it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "account_id": self.account_id,
            "owner": self.owner,
            "balance": self.balance,
            "deposits": self.deposits,
            "last_version": self.last_version,
        })
    }
}

/// One row of the `volume_by_type` view.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Volume {
    /// `event_type` (group by `eventType`).
    pub(crate) event_type: String,
    /// `count(*)`.
    pub(crate) events: i64,
    /// `sum(payload.amount)`, null when no non-null amount.
    pub(crate) total: Option<f64>,
    /// `max(payload.amount)`.
    pub(crate) largest: Option<f64>,
    /// `avg(payload.amount)`.
    pub(crate) average: Option<f64>,
}

impl Volume {
    /// The row as the engine's JSON output writes it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "event_type": self.event_type,
            "events": self.events,
            "total": self.total,
            "largest": self.largest,
            "average": self.average,
        })
    }
}

/// A record that must go to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bad {
    /// Its offset in the partition.
    pub(crate) offset: u64,
    /// Its exact bytes.
    pub(crate) raw: Vec<u8>,
    /// The expected error code.
    pub(crate) code: &'static str,
}

/// What the pipeline must produce for an input.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expected {
    /// `accounts`, ordered by `account_id` (byte order).
    pub(crate) accounts: Vec<Account>,
    /// `volume_by_type`, ordered by `event_type`.
    pub(crate) volume: Vec<Volume>,
    /// The bad records, in input order.
    pub(crate) bad: Vec<Bad>,
    /// Records read (good and bad).
    pub(crate) read: u64,
    /// Events applied to the views.
    pub(crate) applied: u64,
    /// Events skipped as not newer than their key's last version.
    pub(crate) duplicates: u64,
}

impl Expected {
    /// `SELECT * FROM accounts ORDER BY account_id` as JSON rows.
    pub(crate) fn accounts_json(&self) -> Vec<Value> {
        self.accounts.iter().map(Account::to_json).collect()
    }

    /// `SELECT * FROM volume_by_type ORDER BY event_type` as JSON rows.
    pub(crate) fn volume_json(&self) -> Vec<Value> {
        self.volume.iter().map(Volume::to_json).collect()
    }
}

/// Running aggregates of one `volume_by_type` group.
#[derive(Debug, Clone, Default)]
struct Group {
    events: i64,
    sum: Option<f64>,
    max: Option<f64>,
    avg_sum: f64,
    avg_count: i64,
}

/// The whole state of the single partition.
#[derive(Debug, Default)]
struct State {
    /// Last applied version per key (kept when the row is deleted).
    versions: HashMap<String, i64>,
    /// `accounts` rows by key.
    rows: BTreeMap<String, Account>,
    /// `volume_by_type` groups by event type.
    groups: BTreeMap<String, Group>,
}

/// What happened to one record.
enum Outcome {
    Applied,
    Duplicate,
}

/// Computes the views and bad records for `records` (offset, raw bytes), in input order.
pub(crate) fn expected(records: &[(u64, Vec<u8>)]) -> Expected {
    let mut state = State::default();
    let mut out = Expected::default();
    for (offset, raw) in records {
        out.read += 1;
        match step(&mut state, raw) {
            Ok(Outcome::Applied) => out.applied += 1,
            Ok(Outcome::Duplicate) => out.duplicates += 1,
            Err(code) => out.bad.push(Bad {
                offset: *offset,
                raw: raw.clone(),
                code,
            }),
        }
    }
    out.accounts = state.rows.into_values().collect();
    out.volume = state
        .groups
        .into_iter()
        .map(|(event_type, g)| Volume {
            event_type,
            events: g.events,
            total: g.sum,
            largest: g.max,
            average: (g.avg_count > 0).then(|| g.avg_sum / g.avg_count as f64),
        })
        .collect();
    out
}

/// An integer in the `int64` sense: an integer, or a float without a fractional part in
/// range. `None` for anything else.
fn as_integer(v: &Value) -> Option<i64> {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f)).then_some(f as i64)
}

/// The value at a dotted path; missing is null.
fn field<'a>(obj: &'a Map<String, Value>, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    let mut segments = path.split('.');
    let mut cur = obj.get(segments.next().expect("non-empty path"));
    for s in segments {
        cur = cur.and_then(|v| v.as_object()).and_then(|o| o.get(s));
    }
    cur.unwrap_or(&NULL)
}

/// Converts to an `int64` column value (`None` is null).
fn to_int64(v: &Value) -> Result<Option<i64>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::Number(_) => as_integer(v).map(Some).ok_or("apply.type_mismatch"),
        _ => Err("apply.type_mismatch"),
    }
}

/// Converts to a `float64` column value.
fn to_float64(v: &Value) -> Result<Option<f64>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        _ => Err("apply.type_mismatch"),
    }
}

/// Converts to a `string` column value.
fn to_string_col(v: &Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        })),
        Value::Array(_) | Value::Object(_) => Err("apply.type_mismatch"),
    }
}

/// `-x` (SQL semantics: null stays null; integer negation is checked).
fn negate(v: &Value) -> Result<Value, &'static str> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.checked_neg().map(Value::from).ok_or("apply.expression"),
            None => Ok(json!(-n.as_f64().expect("a JSON number is a float"))),
        },
        _ => Err("apply.expression"),
    }
}

/// Applies one record, or says why it is bad.
fn step(state: &mut State, raw: &[u8]) -> Result<Outcome, &'static str> {
    // Decoding: UTF-8 JSON, one object.
    let text = std::str::from_utf8(raw).map_err(|_| "decode.invalid_json")?;
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        // Too deep for `Value` (or not JSON): `IgnoredAny` checks the syntax without a
        // depth limit.
        Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            serde_json::from_str(&prune_deep(text, 2)).map_err(|_| "decode.invalid_json")?
        }
        Err(_) => return Err("decode.invalid_json"),
    };
    let Value::Object(obj) = value else {
        return Err("decode.not_an_object");
    };

    // Envelope: key = aggregateId, type = eventType, version = version, timestamp = timestamp.
    let key = match field(&obj, "aggregateId") {
        Value::Null => return Err("apply.missing_key"),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => return Err("apply.bad_key"),
        },
        _ => return Err("apply.bad_key"),
    };
    let Value::String(event_type) = field(&obj, "eventType") else {
        return Err("apply.bad_event_type");
    };
    let version = as_integer(field(&obj, "version")).ok_or("apply.bad_version")?;
    match field(&obj, "timestamp") {
        Value::Null => {}
        v @ Value::Number(_) if as_integer(v).is_some() => {}
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {}
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {}
        _ => return Err("apply.bad_timestamp"),
    }
    if state
        .versions
        .get(&key)
        .is_some_and(|last| version <= *last)
    {
        return Ok(Outcome::Duplicate);
    }

    // Plan the `accounts` fold on a copy of the row.
    let mut row = state.rows.get(&key).cloned();
    let mut delete = false;
    {
        let r = || Account::new(&key);
        match event_type.as_str() {
            "AccountOpened" => {
                let owner = to_string_col(field(&obj, "payload.owner"))?;
                row.get_or_insert_with(r).owner = owner;
            }
            "MoneyDeposited" => {
                let amount = to_int64(field(&obj, "payload.amount"))?;
                let row = row.get_or_insert_with(r);
                add_int(&mut row.balance, amount)?;
                add_int(&mut row.deposits, Some(1))?;
            }
            "MoneyWithdrawn" => {
                let negated = negate(field(&obj, "payload.amount"))?;
                let amount = to_int64(&negated)?;
                add_int(&mut row.get_or_insert_with(r).balance, amount)?;
            }
            "AccountClosed" => delete = true,
            _ => {}
        }
        if !delete {
            // "*": { set: { last_version: version } }
            row.get_or_insert_with(r).last_version = Some(version);
        }
    }

    // Plan the `volume_by_type` aggregate.
    let group = if event_type != "AccountOpened" {
        let amount = to_float64(field(&obj, "payload.amount"))?;
        Some((event_type.clone(), amount))
    } else {
        None
    };

    // Commit.
    state.versions.insert(key.clone(), version);
    if delete {
        state.rows.remove(&key);
    } else if let Some(row) = row {
        state.rows.insert(key, row);
    }
    if let Some((event_type, amount)) = group {
        let g = state.groups.entry(event_type).or_default();
        g.events += 1;
        if let Some(a) = amount {
            g.sum = Some(g.sum.unwrap_or(0.0) + a);
            g.max = Some(g.max.map_or(a, |m| m.max(a)));
            g.avg_sum += a;
            g.avg_count += 1;
        }
    }
    Ok(Outcome::Applied)
}

/// Replaces every array or object nested deeper than `max_depth` (the record itself is
/// depth 1) by an empty one of the same kind. `text` must be valid JSON.
fn prune_deep(text: &str, max_depth: usize) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut depth = 0usize;
    let mut i = 0;
    // The index just after the string starting at `i`.
    let string_end = |mut i: usize| {
        i += 1;
        while b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = string_end(i);
                out.extend_from_slice(&b[i..end]);
                i = end;
                continue;
            }
            open @ (b'[' | b'{') if depth == max_depth => {
                let mut d = 0usize;
                loop {
                    match b[i] {
                        b'"' => {
                            i = string_end(i);
                            continue;
                        }
                        b'[' | b'{' => d += 1,
                        b']' | b'}' => {
                            d -= 1;
                            if d == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.extend_from_slice(if open == b'[' { b"[]" } else { b"{}" });
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            _ => {}
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("only ASCII was replaced")
}

/// `add`: a null column counts as 0, a null value adds nothing; overflow is an error.
fn add_int(column: &mut Option<i64>, value: Option<i64>) -> Result<(), &'static str> {
    if let Some(v) = value {
        *column = Some(column.unwrap_or(0).checked_add(v).ok_or("apply.overflow")?);
    }
    Ok(())
}
