//! Who is asking: bearer tokens on every route but `/health` and the console's assets,
//! and the cluster's token on `/cluster/scan`.
//!
//! ```text
//!  request ─▶ guard ─┬─ /health ................................. open (probes)
//!                    ├─ /, /console/* ........................... open (the page and
//!                    │      its script hold no data; what they read is guarded below)
//!                    ├─ /cluster/scan: cluster_token ............ else 401
//!                    └─ the rest: a token of `auth.tokens` ...... else 401
//!                         └─▶ Caller::User(grant) ─▶ /sql checks every view the plan
//!                                                    reads (joins, subqueries) ─▶ 403
//! ```
//!
//! Without `auth:` every route is open, which `projector run` allows on a loopback
//! address only (or with `--insecure`). Tokens are compared as SHA-256 digests.

use crate::config::{AuthConfig, ViewGrant, hash_token};
use crate::serve::http::error_response;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// The checks of one instance.
#[derive(Debug, Default)]
pub struct Auth {
    /// `auth:` of the pipeline, if it has one.
    config: Option<AuthConfig>,
    /// SHA-256 of the cluster token.
    cluster: Option<[u8; 32]>,
}

/// Who a request comes from, as the guard found (a request extension).
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// A token of `auth.tokens`: may read the views of its grant.
    User {
        /// What it may read.
        grant: ViewGrant,
    },
    /// Anyone: the pipeline has no `auth:`.
    Anyone,
}

impl Caller {
    /// The views the caller may read (`None`: all).
    pub(crate) fn grant(&self) -> Option<&ViewGrant> {
        match self {
            Caller::User { grant, .. } => Some(grant),
            Caller::Anyone => None,
        }
    }
}

impl Auth {
    /// The checks `config` asks for (`None`: everything open).
    pub fn new(config: Option<&AuthConfig>) -> Self {
        Auth {
            cluster: config
                .and_then(|c| c.cluster_token.as_deref())
                .map(hash_token),
            config: config.cloned(),
        }
    }

    /// Whether requests need a token.
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// What `token` may read, if it is one of the pipeline's tokens.
    pub(crate) fn grant_of(&self, token: &str) -> Option<ViewGrant> {
        match self.user(token)? {
            Caller::User { grant } => Some(grant),
            Caller::Anyone => None,
        }
    }

    fn user(&self, token: &str) -> Option<Caller> {
        let config = self.config.as_ref()?;
        let digest = hash_token(token);
        config.tokens.iter().find(|t| t.sha256 == digest).map(|t| {
            tracing::debug!(token = %t.name, "authenticated");
            Caller::User {
                grant: t.views.clone(),
            }
        })
    }
}

/// The error answer of a refused request (401s also say how to authenticate).
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = error_response(status, code, message);
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = "Bearer realm=\"projector\"".parse()
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    // The refused request's body is never read, so the connection cannot carry another
    // request: say so, or a client that pools connections sends its next request on
    // one the server is closing ("peer disconnected").
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The guard in front of every route (axum middleware).
pub(crate) async fn guard(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || crate::serve::console::is_asset(path) {
        return next.run(req).await;
    }
    if path.starts_with("/cluster/") {
        return match (&auth.cluster, bearer(&req)) {
            (None, _) if !auth.enabled() => next.run(req).await,
            (None, _) => refuse(
                StatusCode::UNAUTHORIZED,
                "auth.no_cluster_token",
                "this instance takes no requests from other instances: the pipeline's \
                 auth has no cluster_token",
            ),
            (Some(expected), Some(token)) if hash_token(token) == *expected => next.run(req).await,
            (Some(_), _) => refuse(
                StatusCode::UNAUTHORIZED,
                "auth.bad_cluster_token",
                "requests between instances need the pipeline's cluster_token",
            ),
        };
    }
    let caller = if !auth.enabled() {
        Caller::Anyone
    } else {
        match bearer(&req) {
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "auth.missing_token",
                    "send a token: Authorization: Bearer <token>",
                );
            }
            Some(token) => match auth.user(token) {
                Some(c) => c,
                None => {
                    return refuse(
                        StatusCode::UNAUTHORIZED,
                        "auth.bad_token",
                        "the token is not one of this pipeline's",
                    );
                }
            },
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}
