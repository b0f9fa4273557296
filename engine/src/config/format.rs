//! `format:` (json, avro, protobuf, raw, with a schema file and its framing) and
//! `registry:` (a Confluent-compatible schema registry and how to authenticate).
//! Schema files are read and compiled here, so `projector validate` finds their
//! mistakes; the registry is only reached when the pipeline runs.

use super::yaml::{Ctx, Node};
use super::{Format, FormatConfig, ReaderSchema, RegistryAuth, RegistryConfig};
use projector_operators::decode::{AvroSchema, Framing, compile_proto, descriptor_set};
use saphyr::YamlData;
use std::path::Path;
use std::sync::Arc;

/// How long requests to a registry that cannot be reached are retried, by default.
pub(crate) const DEFAULT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

const FORMATS: &[(&str, Format)] = &[
    ("json", Format::Json),
    ("avro", Format::Avro),
    ("protobuf", Format::Protobuf),
    ("raw", Format::Raw),
];

/// `format: NAME` or `format: {type, schema, message, framing}`.
pub(super) fn format(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    file: &Path,
    has_registry: bool,
) -> Option<FormatConfig> {
    if !matches!(node.data, YamlData::Mapping(_)) {
        let format = ctx.choice(node, path, FORMATS)?;
        let config = FormatConfig {
            format,
            ..FormatConfig::default()
        };
        return check_schema_source(ctx, node, path, config, has_registry);
    }
    let rec = ctx.record(node, path, &["type", "schema", "message", "framing"])?;
    let format = rec
        .require(ctx, "type")
        .and_then(|e| ctx.choice(e.value, &e.path, FORMATS))?;
    let framing = match rec.get("framing") {
        Some(e) => ctx.choice(
            e.value,
            &e.path,
            &[("confluent", Framing::Confluent), ("none", Framing::None)],
        )?,
        None => Framing::Confluent,
    };
    let message = match rec.get("message") {
        Some(e) if format != Format::Protobuf => {
            let why = "'message' names a Protobuf message: only with type: protobuf".to_string();
            ctx.error("config.invalid_value", e.key, &e.path, why);
            return None;
        }
        Some(e) => Some((ctx.text(e.value, &e.path)?, e)),
        None => None,
    };
    let schema = match rec.get("schema") {
        None => None,
        Some(e) => {
            let text = ctx.text(e.value, &e.path)?;
            let at = super::compile::resolve_source_path(&text, file);
            let schema = match format {
                Format::Avro => read_avro(&at),
                Format::Protobuf => read_protobuf(&at, message.as_ref().map(|(m, _)| m.as_str())),
                Format::Json | Format::Raw => Err(format!(
                    "a schema file is read for avro and protobuf records, not {}",
                    format.name()
                )),
            };
            match schema {
                Ok(s) => Some(s),
                Err(why) => {
                    ctx.error("config.invalid_value", e.value, &e.path, why);
                    return None;
                }
            }
        }
    };
    if let (Some((m, e)), None) = (&message, &schema) {
        let why = format!("message '{m}' needs the schema file it is in (format.schema)");
        ctx.error("config.invalid_value", e.key, &e.path, why);
        return None;
    }
    if framing == Framing::None && schema.is_none() {
        let why = "framing: none reads every record with the pipeline's schema: give format.schema"
            .to_string();
        ctx.error("config.invalid_value", node, path, why);
        return None;
    }
    let config = FormatConfig {
        format,
        schema,
        framing,
    };
    check_schema_source(ctx, node, path, config, has_registry)
}

/// Avro and Protobuf records need a schema: a file, or a registry.
fn check_schema_source(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    config: FormatConfig,
    has_registry: bool,
) -> Option<FormatConfig> {
    let binary = matches!(config.format, Format::Avro | Format::Protobuf);
    if binary && config.schema.is_none() && !has_registry {
        let why = format!(
            "{} records need a schema: a schema registry (registry: {{url: ...}}) or a schema \
             file (format: {{type: {}, schema: FILE}})",
            config.format.name(),
            config.format.name()
        );
        ctx.error("config.invalid_value", node, path, why);
        return None;
    }
    Some(config)
}

fn read_avro(at: &Path) -> Result<ReaderSchema, String> {
    let text = std::fs::read_to_string(at).map_err(|e| format!("{}: {e}", at.display()))?;
    let schema = AvroSchema::parse_str(&text)
        .map_err(|e| format!("{}: not an Avro schema: {e}", at.display()))?;
    Ok(ReaderSchema::Avro(Arc::new(schema)))
}

/// A `.proto` file (compiled now, with protox) or a descriptor set (`.pb`, `.desc`,
/// `.binpb`: `protoc --descriptor_set_out --include_imports`), and the message: the
/// one named, or the file's first.
fn read_protobuf(at: &Path, message: Option<&str>) -> Result<ReaderSchema, String> {
    let shown = at.display();
    let pool = if at.extension().is_some_and(|e| e == "proto") {
        let source = std::fs::read_to_string(at).map_err(|e| format!("{shown}: {e}"))?;
        let name = at
            .file_name()
            .map_or("schema.proto".into(), |n| n.to_string_lossy().into_owned());
        compile_proto(&name, &source).map_err(|e| format!("{shown}: {e}"))?
    } else {
        let bytes = std::fs::read(at).map_err(|e| format!("{shown}: {e}"))?;
        descriptor_set(&bytes).map_err(|e| format!("{shown}: not a descriptor set: {e}"))?
    };
    let names: Vec<String> = pool
        .all_messages()
        .filter(|m| !m.full_name().starts_with("google.protobuf."))
        .map(|m| m.full_name().to_string())
        .collect();
    let found = match message {
        Some(m) => pool.get_message_by_name(m).ok_or_else(|| {
            format!(
                "{shown} has no message '{m}' (it has: {}); give the full name, with the package",
                names.join(", ")
            )
        })?,
        None => {
            let first = names
                .first()
                .ok_or_else(|| format!("{shown} defines no message"))?;
            pool.get_message_by_name(first).expect("listed above")
        }
    };
    Ok(ReaderSchema::Protobuf(found))
}

/// `registry: {url, auth: {username, password} | {token}, retry}`.
pub(super) fn registry(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<RegistryConfig> {
    let rec = ctx.record(node, path, &["url", "auth", "retry"])?;
    let retry = match rec.get("retry") {
        Some(e) => super::compile::duration(ctx, e.value, &e.path),
        None => Some(DEFAULT_RETRY),
    };
    let url = rec.require(ctx, "url").and_then(|e| {
        let u = ctx.text(e.value, &e.path)?;
        match url::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                Some(u.trim_end_matches('/').to_string())
            }
            _ => {
                let why = format!("'{u}' is not an http(s) URL");
                ctx.error("config.invalid_value", e.value, &e.path, why);
                None
            }
        }
    });
    let auth = match rec.get("auth") {
        None => Some(None),
        Some(e) => {
            let a = ctx.record(e.value, &e.path, &["username", "password", "token"])?;
            let text = |ctx: &mut Ctx<'_>, k: &str| a.get(k).map(|e| ctx.text(e.value, &e.path));
            match (
                text(ctx, "username"),
                text(ctx, "password"),
                text(ctx, "token"),
            ) {
                (Some(u), Some(p), None) => Some(Some(RegistryAuth::Basic {
                    username: u?,
                    password: p?,
                })),
                (None, None, Some(t)) => Some(Some(RegistryAuth::Bearer(t?))),
                _ => {
                    let why = "give username and password (basic authentication), or token \
                               (a bearer token)"
                        .to_string();
                    ctx.error("config.invalid_value", e.value, &e.path, why);
                    None
                }
            }
        }
    };
    Some(RegistryConfig {
        url: url?,
        auth: auth?,
        retry: retry?,
    })
}
