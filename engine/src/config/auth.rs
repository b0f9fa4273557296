//! `auth:`: the bearer tokens that may query, each with the views it may read, and
//! the token instances of the pipeline present to each other.
//!
//! ```yaml
//! auth:
//!   tokens:
//!     - name: dashboards
//!       sha256: 5e88489…            # the token's SHA-256, in hex (`projector token`)
//!       views: [accounts]
//!     - name: ops
//!       token: ${OPS_TOKEN}         # the token itself, from the environment
//!       views: ["*"]
//!     - name: batch
//!       token_file: /run/secrets/batch-token
//!       views: [accounts, volume_by_type]
//!   cluster_token: ${PROJECTOR_CLUSTER_TOKEN}
//! ```
//!
//! Tokens are kept only as their SHA-256; a presented token is hashed and compared.

use super::yaml::{Ctx, Node, join, suggest};
use saphyr::YamlData;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

/// What `auth:` says.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The tokens that may query.
    pub tokens: Vec<TokenGrant>,
    /// The token instances send each other (`cluster_token:`), if set.
    pub cluster_token: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &self.tokens)
            .field("cluster_token", &self.cluster_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// One token and what it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// Its name, for logs and errors (never the token).
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// The views it may read.
    pub views: ViewGrant,
}

/// The views a token may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewGrant {
    /// Every view (`views: ["*"]`).
    All,
    /// These views only.
    Only(BTreeSet<String>),
}

impl ViewGrant {
    /// Whether the grant covers `view`.
    pub fn allows(&self, view: &str) -> bool {
        match self {
            ViewGrant::All => true,
            ViewGrant::Only(views) => views.contains(view),
        }
    }
}

/// SHA-256 of `token`.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Shortest token accepted: guessing one must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

/// Compiles `auth:`; `views` are the pipeline's view names, `dir` the pipeline file's
/// directory (for relative `token_file`s).
pub(crate) fn auth(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    views: &[String],
    dir: &Path,
) -> Option<AuthConfig> {
    let rec = ctx.record(node, path, &["tokens", "cluster_token"])?;
    let tokens = rec.require(ctx, "tokens").and_then(|e| {
        let YamlData::Sequence(items) = &e.value.data else {
            ctx.wrong_type(e.value, &e.path, "a list of tokens");
            return None;
        };
        if items.is_empty() {
            let message = "at least one token is required (or leave out 'auth:')".into();
            ctx.error("config.invalid_value", e.value, &e.path, message);
            return None;
        }
        let mut out = Some(Vec::new());
        let mut names = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{}[{i}]", e.path);
            let grant = token(ctx, item, &item_path, views, dir);
            if let Some(g) = &grant
                && !names.insert(g.name.clone())
            {
                let message = format!("a second token named '{}'", g.name);
                ctx.error(
                    "config.invalid_value",
                    item,
                    &join(&item_path, "name"),
                    message,
                );
                out = None;
            }
            out = out.zip(grant).map(|(mut v, g)| {
                v.push(g);
                v
            });
        }
        out
    });
    let cluster_token = match rec.get("cluster_token") {
        Some(e) => secret(ctx, e.value, &e.path).map(Some),
        None => Some(None),
    };
    Some(AuthConfig {
        tokens: tokens?,
        cluster_token: cluster_token?,
    })
}

/// A token given in the file: long enough, no surrounding blanks.
fn secret(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let t = ctx.text(node, path)?;
    check_secret(ctx, node, path, t)
}

fn check_secret(ctx: &mut Ctx<'_>, node: &Node, path: &str, t: String) -> Option<String> {
    let t = t.trim().to_string();
    if t.len() < MIN_TOKEN_LEN {
        let message = format!(
            "a token of {} characters is too short: use at least {MIN_TOKEN_LEN} \
             (`projector token` makes one)",
            t.len()
        );
        ctx.error("config.invalid_value", node, path, message);
        return None;
    }
    Some(t)
}

fn token(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    views: &[String],
    dir: &Path,
) -> Option<TokenGrant> {
    let rec = ctx.record(
        node,
        path,
        &["name", "sha256", "token", "token_file", "views"],
    )?;
    let name = rec
        .require(ctx, "name")
        .and_then(|e| ctx.text(e.value, &e.path));
    let given: Vec<&str> = ["sha256", "token", "token_file"]
        .into_iter()
        .filter(|k| rec.has(k))
        .collect();
    let sha256 = match given.as_slice() {
        ["sha256"] => {
            let e = rec.get("sha256").expect("checked");
            let text = ctx.text(e.value, &e.path)?;
            match unhex(text.trim()) {
                Some(h) => Some(h),
                None => {
                    let message =
                        "expected the token's SHA-256 as 64 hex digits (`projector token`)".into();
                    ctx.error("config.invalid_value", e.value, &e.path, message);
                    None
                }
            }
        }
        ["token"] => {
            let e = rec.get("token").expect("checked");
            secret(ctx, e.value, &e.path).map(|t| hash_token(&t))
        }
        ["token_file"] => {
            let e = rec.get("token_file").expect("checked");
            let file = ctx.text(e.value, &e.path)?;
            let full = dir.join(&file);
            match std::fs::read_to_string(&full) {
                Ok(t) => check_secret(ctx, e.value, &e.path, t).map(|t| hash_token(&t)),
                Err(err) => {
                    let message = format!("cannot read the token file {}: {err}", full.display());
                    ctx.error("config.invalid_value", e.value, &e.path, message);
                    None
                }
            }
        }
        _ => {
            let message = if given.is_empty() {
                "give the token as one of 'sha256', 'token' or 'token_file'".to_string()
            } else {
                format!("give the token once: {} are all set", given.join(", "))
            };
            ctx.error("config.invalid_value", node, path, message);
            None
        }
    };
    let grant = rec.require(ctx, "views").and_then(|e| {
        let YamlData::Sequence(items) = &e.value.data else {
            ctx.wrong_type(e.value, &e.path, "a list of view names (or [\"*\"])");
            return None;
        };
        let mut only = BTreeSet::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{}[{i}]", e.path);
            let Some(v) = ctx.text(item, &p) else {
                ok = false;
                continue;
            };
            if v == "*" {
                return Some(ViewGrant::All);
            }
            if !views.contains(&v) {
                let message = match suggest(&v, views.iter().map(String::as_str)) {
                    Some(s) => format!("no view named '{v}' (did you mean '{s}'?)"),
                    None => format!("no view named '{v}'"),
                };
                ctx.error("config.invalid_value", item, &p, message);
                ok = false;
            }
            only.insert(v);
        }
        if matches!(&e.value.data, YamlData::Sequence(s) if s.is_empty()) {
            let message = "a token that may read no view: list some, or [\"*\"] for all".into();
            ctx.error("config.invalid_value", e.value, &e.path, message);
            return None;
        }
        ok.then_some(ViewGrant::Only(only))
    });
    Some(TokenGrant {
        name: name?,
        sha256: sha256?,
        views: grant?,
    })
}
