//! Rendering query results: table, JSON, JSON rows by position, CSV, Arrow IPC.

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
    /// `{"columns": [{"name", "type"}], "rows": [[...], ...]}`: values by position, so
    /// that duplicate, integer-like or no rows at all keep every column (the console).
    Rows,
    /// CSV with a header row.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl OutputFormat {
    /// Parses `table|json|rows|csv|arrow`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "table" => Some(OutputFormat::Table),
            "json" => Some(OutputFormat::Json),
            "rows" => Some(OutputFormat::Rows),
            "csv" => Some(OutputFormat::Csv),
            "arrow" => Some(OutputFormat::Arrow),
            _ => None,
        }
    }

    /// The media type of a response in this format (a table is sent as JSON).
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json | OutputFormat::Rows | OutputFormat::Table => "application/json",
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
    if format == OutputFormat::Table {
        let text = if batches.is_empty() {
            arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema.clone())])?
        } else {
            arrow::util::pretty::pretty_format_batches(batches)?
        };
        let mut out = text.to_string().into_bytes();
        out.push(b'\n');
        return Ok(out);
    }
    let mut chunks = Chunks::new(schema.clone(), batches.to_vec(), format);
    let first = chunks.next().transpose()?.unwrap_or_default();
    let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut out = Vec::with_capacity(first.len().max(size + 4096));
    out.extend_from_slice(&first);
    for chunk in chunks {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Renders batches in `format` one batch at a time, so that a large answer is sent
/// while it is rendered instead of being rendered whole first. The chunks, joined,
/// are what [`render`] returns (which see); `Table` comes as one chunk.
pub fn render_chunks(schema: SchemaRef, batches: Vec<RecordBatch>, format: OutputFormat) -> Chunks {
    Chunks::new(schema, batches, format)
}

/// The chunks of a rendered answer ([`render_chunks`]).
pub struct Chunks {
    schema: SchemaRef,
    batches: std::vec::IntoIter<RecordBatch>,
    format: OutputFormat,
    /// Nothing rendered yet.
    start: bool,
    /// The end is rendered.
    done: bool,
    /// Rows rendered so far (JSON needs a comma before the next).
    rows: usize,
    /// The Arrow IPC writer, across batches.
    ipc: Option<arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Chunks {
    fn new(schema: SchemaRef, batches: Vec<RecordBatch>, format: OutputFormat) -> Self {
        Chunks {
            schema,
            batches: batches.into_iter(),
            format,
            start: true,
            done: false,
            rows: 0,
            ipc: None,
        }
    }

    fn first(&mut self) -> Result<Vec<u8>, ArrowError> {
        match self.format {
            OutputFormat::Table => {
                let batches: Vec<RecordBatch> = self.batches.by_ref().collect();
                self.done = true;
                render(&self.schema, &batches, OutputFormat::Table)
            }
            OutputFormat::Json => Ok(b"[".to_vec()),
            OutputFormat::Rows => {
                let columns: Vec<serde_json::Value> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                let mut out = br#"{"columns":"#.to_vec();
                serde_json::to_writer(&mut out, &columns)
                    .map_err(|e| ArrowError::JsonError(e.to_string()))?;
                out.extend_from_slice(br#","rows":["#);
                Ok(out)
            }
            OutputFormat::Csv => {
                // The header, from an empty batch.
                let mut out = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out)
                    .write(&RecordBatch::new_empty(self.schema.clone()))?;
                Ok(out)
            }
            OutputFormat::Arrow => {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)?;
                let out = std::mem::take(w.get_mut());
                self.ipc = Some(w);
                Ok(out)
            }
        }
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        match self.format {
            OutputFormat::Table => Ok(Vec::new()),
            OutputFormat::Json => {
                let mut out = Vec::new();
                if batch.num_rows() == 0 {
                    return Ok(out);
                }
                if self.rows > 0 {
                    out.push(b',');
                }
                let mut w = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, JsonArray>(&mut out);
                w.write(batch)?;
                w.finish()?;
                drop(w);
                // One batch's array, `[...]`: its rows join the answer's array.
                out.pop();
                out.remove(usize::from(self.rows > 0));
                self.rows += batch.num_rows();
                Ok(out)
            }
            OutputFormat::Rows => {
                let options = arrow::json::writer::EncoderOptions::default();
                let schema = batch.schema();
                let mut encoders = schema
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| arrow::json::writer::make_encoder(f, c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out = Vec::with_capacity(batch.get_array_memory_size() + 64);
                for row in 0..batch.num_rows() {
                    if self.rows > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    for (i, e) in encoders.iter_mut().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        if e.is_null(row) {
                            out.extend_from_slice(b"null");
                        } else {
                            e.encode(row, &mut out);
                        }
                    }
                    out.push(b']');
                    self.rows += 1;
                }
                Ok(out)
            }
            OutputFormat::Csv => {
                let mut out = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut out)
                    .write(batch)?;
                Ok(out)
            }
            OutputFormat::Arrow => {
                let w = self
                    .ipc
                    .as_mut()
                    .expect("the writer, made by the first chunk");
                // Sized up front: growing a buffer of megabytes by doubling copies it
                // over and over (a scan between instances is all Arrow).
                w.get_mut().reserve(batch.get_array_memory_size() + 1024);
                w.write(batch)?;
                Ok(std::mem::take(w.get_mut()))
            }
        }
    }

    fn end(&mut self) -> Result<Vec<u8>, ArrowError> {
        match self.format {
            OutputFormat::Json => Ok(b"]".to_vec()),
            OutputFormat::Rows => Ok(b"]}".to_vec()),
            OutputFormat::Arrow => {
                let w = self
                    .ipc
                    .as_mut()
                    .expect("the writer, made by the first chunk");
                w.finish()?;
                Ok(std::mem::take(w.get_mut()))
            }
            OutputFormat::Table | OutputFormat::Csv => Ok(Vec::new()),
        }
    }
}

impl Iterator for Chunks {
    type Item = Result<Vec<u8>, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.start {
            self.start = false;
            return Some(self.first());
        }
        if self.done {
            return None;
        }
        match self.batches.next() {
            Some(batch) => Some(self.batch(&batch)),
            None => {
                self.done = true;
                Some(self.end())
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_keep_every_column_by_position() {
        // Two columns named alike, one named like an integer, NULLs, two batches.
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("id", DataType::Utf8, true),
            Field::new("2", DataType::Int64, true),
        ]));
        let batch = |ids: Vec<Option<i64>>, names: Vec<Option<&str>>, twos: Vec<Option<i64>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(names)),
                    Arc::new(Int64Array::from(twos)),
                ],
            )
            .expect("batch")
        };
        let batches = [
            batch(vec![Some(1)], vec![Some("a\"b")], vec![None]),
            batch(
                vec![None, Some(3)],
                vec![None, Some("c")],
                vec![Some(2), Some(4)],
            ),
        ];
        let out = render(&schema, &batches, OutputFormat::Rows).expect("rendered");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({
                "columns": [
                    {"name": "id", "type": "Int64"},
                    {"name": "id", "type": "Utf8"},
                    {"name": "2", "type": "Int64"},
                ],
                "rows": [[1, "a\"b", null], [null, null, 2], [3, "c", 4]],
            })
        );
        // No rows: the columns still.
        let out = render(&schema, &[], OutputFormat::Rows).expect("rendered");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["rows"], serde_json::json!([]));
        assert_eq!(v["columns"].as_array().map(Vec::len), Some(3));
    }
}
