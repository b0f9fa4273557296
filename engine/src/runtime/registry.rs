//! The schema registry over HTTP (the Confluent REST API): writer schemas by id, and a
//! subject's latest version for the reader's schema when the pipeline has no file.
//!
//! A schema the registry does not have makes the record bad; a registry that cannot
//! be reached does not: requests are retried for `registry.retry` (30 s by default;
//! the ingest thread waits, so the source waits too), then the pipeline stops, and a
//! restart resumes from its checkpoint.

use crate::config::{RegistryAuth, RegistryConfig};
use base64::Engine as _;
use projector_operators::decode::{
    RegisteredSchema, SchemaError, SchemaKind, SchemaReference, SchemaSource,
};
use std::time::Duration;

/// A Confluent-compatible schema registry.
pub(crate) struct HttpRegistry {
    base: String,
    /// How long transient failures are retried before the registry counts as down.
    retry: Duration,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRegistry")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpRegistry {
    pub(crate) fn new(config: &RegistryConfig) -> Self {
        let authorization = config.auth.as_ref().map(|a| match a {
            RegistryAuth::Basic { username, password } => {
                let pair = format!("{username}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            RegistryAuth::Bearer(token) => format!("Bearer {token}"),
        });
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        HttpRegistry {
            base: config.url.clone(),
            retry: config.retry,
            authorization,
            agent,
        }
    }

    /// GET `path` as JSON: a 404 is `NotFound`; connection failures and 5xx are retried,
    /// then `Unavailable`; other statuses (401, 403) are `Unavailable` at once (the
    /// configuration is wrong, not the record).
    fn get(&self, path: &str) -> Result<serde_json::Value, SchemaError> {
        let url = format!("{}{path}", self.base);
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            let mut req = self
                .agent
                .get(&url)
                .header("Accept", "application/vnd.schemaregistry.v1+json");
            if let Some(a) = &self.authorization {
                req = req.header("Authorization", a);
            }
            let failure = match req.call() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    match status {
                        200 => {
                            return serde_json::from_str(&body).map_err(|e| {
                                SchemaError::Unavailable(format!("{url}: not JSON: {e}"))
                            });
                        }
                        404 => return Err(SchemaError::NotFound(registry_message(&body))),
                        500..=599 => format!("{url}: HTTP {status}: {}", registry_message(&body)),
                        _ => {
                            return Err(SchemaError::Unavailable(format!(
                                "{url}: HTTP {status}: {}",
                                registry_message(&body)
                            )));
                        }
                    }
                }
                Err(e) => format!("{url}: {e}"),
            };
            if started.elapsed() + wait > self.retry {
                return Err(SchemaError::Unavailable(failure));
            }
            tracing::warn!(%failure, "schema registry; retrying");
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// The latest version of `subject`; `Ok(None)` when the subject does not exist.
    pub(crate) fn latest(&self, subject: &str) -> Result<Option<RegisteredSchema>, String> {
        let path = format!("/subjects/{}/versions/latest", encode(subject));
        match self.get(&path) {
            Ok(v) => schema_of(&v).map(Some),
            Err(SchemaError::NotFound(_)) => Ok(None),
            Err(SchemaError::Unavailable(why)) => Err(why),
        }
    }
}

impl SchemaSource for HttpRegistry {
    fn by_id(&self, id: u32) -> Result<RegisteredSchema, SchemaError> {
        let v = self.get(&format!("/schemas/ids/{id}"))?;
        schema_of(&v).map_err(SchemaError::NotFound)
    }

    fn by_subject(&self, subject: &str, version: i64) -> Result<RegisteredSchema, SchemaError> {
        let v = self.get(&format!("/subjects/{}/versions/{version}", encode(subject)))?;
        schema_of(&v).map_err(SchemaError::NotFound)
    }
}

/// The registry's `message` in an error body, or the body.
fn registry_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn schema_of(v: &serde_json::Value) -> Result<RegisteredSchema, String> {
    let text = v["schema"]
        .as_str()
        .ok_or("the registry's answer has no schema")?
        .to_string();
    let kind = match v["schemaType"].as_str().unwrap_or("AVRO") {
        "AVRO" => SchemaKind::Avro,
        "PROTOBUF" => SchemaKind::Protobuf,
        "JSON" => SchemaKind::Json,
        other => return Err(format!("unknown schemaType '{other}'")),
    };
    let mut references = Vec::new();
    for r in v["references"].as_array().into_iter().flatten() {
        let (Some(name), Some(subject), Some(version)) = (
            r["name"].as_str(),
            r["subject"].as_str(),
            r["version"].as_i64(),
        ) else {
            return Err(format!("a reference without name, subject or version: {r}"));
        };
        references.push(SchemaReference {
            name: name.to_string(),
            subject: subject.to_string(),
            version,
        });
    }
    if kind == SchemaKind::Avro && !references.is_empty() {
        return Err("Avro schemas with references to other subjects are not supported yet".into());
    }
    Ok(RegisteredSchema {
        kind,
        text,
        references,
    })
}

/// Percent-encodes a path segment (subjects may hold `/`, `:` and the like).
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
