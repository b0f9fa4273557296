//! `projector query`: SQL against a running instance over HTTP.

use anyhow::{Context, Result, anyhow};
use projector_engine::{OutputFormat, render};
use std::io::{Read, Write};
use std::process::ExitCode;

pub(crate) fn query(url: &str, format: OutputFormat, partial: bool, sql: &str) -> Result<ExitCode> {
    let wire = match format {
        OutputFormat::Table | OutputFormat::Arrow => "arrow",
        OutputFormat::Json => "json",
        OutputFormat::Csv => "csv",
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let endpoint = format!(
        "{}/sql?format={wire}{}",
        url.trim_end_matches('/'),
        if partial { "&partial=true" } else { "" }
    );
    let mut resp = agent
        .post(&endpoint)
        .header("content-type", "text/plain")
        .send(sql)
        .map_err(|e| anyhow!("cannot reach {url}: {e} (is `projector run` serving there?)"))?;
    let status = resp.status();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .context("reading the response")?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = v["error"]["code"].as_str().unwrap_or("http.error");
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("error: {code}: {message}");
        return Ok(ExitCode::from(1));
    }
    // Only with --partial: the partitions no instance answered for.
    let header = |name: &str| {
        resp.headers()
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
