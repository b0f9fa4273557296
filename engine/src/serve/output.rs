//! Rendering query results: table, JSON, CSV, Arrow IPC.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::writer::{JsonArray, WriterBuilder};

/// Result formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table (CLI default).
    #[default]
    Table,
    /// A JSON array of row objects (HTTP default).
    Json,
    /// CSV with a header row.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl OutputFormat {
    /// Parses `table|json|csv|arrow`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "table" => Some(OutputFormat::Table),
            "json" => Some(OutputFormat::Json),
            "csv" => Some(OutputFormat::Csv),
            "arrow" => Some(OutputFormat::Arrow),
            _ => None,
        }
    }

    /// The media type of a response in this format (a table is sent as JSON).
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json | OutputFormat::Table => "application/json",
            OutputFormat::Csv => "text/csv",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// Renders batches in `format`. JSON is one array on one line (no trailing newline);
/// nulls are written explicitly.
pub fn render(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    match format {
        OutputFormat::Table => {
            let text = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                    schema.clone(),
                )])?
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?
            };
            out.extend_from_slice(text.to_string().as_bytes());
            out.push(b'\n');
        }
        OutputFormat::Json => {
            let mut w = WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Arrow => {
            // Sized up front: growing a buffer of megabytes by doubling copies it over
            // and over (a scan between instances is all Arrow).
            let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
            out.reserve(size + 4096);
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(out)
}

/// The batches of an Arrow IPC stream (what [`render`] writes for
/// [`OutputFormat::Arrow`]), their buffers pointing into `body` rather than copied.
pub fn read_arrow(body: bytes::Bytes) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut buffer = arrow::buffer::Buffer::from(body);
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    let mut out = Vec::new();
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            out.push(batch);
        }
    }
    decoder.finish()?;
    Ok(out)
}
