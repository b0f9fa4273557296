//! `projector query`: SQL against a running instance over HTTP.

use anyhow::{Context, Result, anyhow};
use projector_engine::{OutputFormat, render};
use std::io::{Read, Write};
use std::process::ExitCode;

/// How `projector query` reaches the instance.
pub(crate) struct Connection<'a> {
    /// Its base URL.
    pub(crate) url: &'a str,
    /// A bearer token, when the pipeline has `auth:`.
    pub(crate) token: Option<&'a str>,
    /// Certificate authorities (PEM file) for an HTTPS instance, besides the system's.
    pub(crate) ca: Option<&'a std::path::Path>,
}

impl Connection<'_> {
    /// An HTTP agent for the instance (its CA when given); statuses are not errors.
    pub(crate) fn agent(&self) -> Result<ureq::Agent> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(ca) = self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(anyhow!("{} holds no PEM certificate", ca.display()));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(config.build().into())
    }
}

/// The status and body of the answer to a request `sent` to `url`.
pub(crate) fn answer(
    url: &str,
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(ureq::http::StatusCode, Vec<u8>, ureq::http::HeaderMap)> {
    let mut resp =
        sent.map_err(|e| anyhow!("cannot reach {url}: {e} (is `projector run` serving there?)"))?;
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .context("reading the response")?;
    Ok((resp.status(), body, resp.headers().clone()))
}

/// Prints an error answer (`{"error": {"code", "message"}}`) as `error: code: message`.
pub(crate) fn print_error(body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("http.error");
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    eprintln!("error: {code}: {message}");
}

pub(crate) fn query(
    conn: &Connection<'_>,
    format: OutputFormat,
    partial: bool,
    sql: &str,
) -> Result<ExitCode> {
    let url = conn.url;
    let wire = match format {
        OutputFormat::Table | OutputFormat::Arrow => "arrow",
        OutputFormat::Json => "json",
        OutputFormat::Rows => "rows",
        OutputFormat::Csv => "csv",
    };
    let agent = conn.agent()?;
    let endpoint = format!(
        "{}/sql?format={wire}{}",
        url.trim_end_matches('/'),
        if partial { "&partial=true" } else { "" }
    );
    let mut request = agent.post(&endpoint).header("content-type", "text/plain");
    if let Some(token) = conn.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (status, body, headers) = answer(url, request.send(sql))?;
    if !status.is_success() {
        print_error(&body);
        return Ok(ExitCode::from(1));
    }
    // Only with --partial: the partitions no instance answered for.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let partial = header("x-projector-missing-partitions").map(|missing| {
        let covered = header("x-projector-partitions").unwrap_or_default();
        format!(
            "note: partial answer covering {covered} partitions: no instance answered for \
             {missing}, whose rows are not included"
        )
    });
    let mut stdout = std::io::stdout().lock();
    if format == OutputFormat::Table {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        stdout.write_all(&render(&schema, &batches, OutputFormat::Table)?)?;
    } else {
        stdout.write_all(&body)?;
        if format == OutputFormat::Json {
            stdout.write_all(b"\n")?;
        }
    }
    if let Some(note) = partial {
        stdout.flush()?;
        eprintln!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}
