//! Streamed output of query results: CSV, JSON, Parquet and Arrow IPC
//! (cargo feature `export`, part of the default `cli`; the Python module
//! builds without it, so no Parquet or IPC writer is linked there).
//!
//! Every format is written piece by piece, [`BATCH_ROWS`] rows at a time,
//! into the output; no format's whole text or file is built in memory.
//! [`write`] consumes the result [`Table`]:
//!
//! * Parquet and Arrow IPC convert it once into an Arrow record batch
//!   ([`flor_store::arrow::into_record_batch`], no copy of the typed columns)
//!   and hand its zero-copy slices to the `parquet` crate's `ArrowWriter`
//!   (Snappy, a row group per [`ROW_GROUP_ROWS`] rows) or to `arrow-ipc`'s
//!   `StreamWriter` (an IPC *stream*: dictionaries once, then batches).
//! * CSV is written from the same slices, byte for byte the text of
//!   [`Table::write_csv`].
//! * JSON is written from the table's columns in the same row ranges, byte
//!   for byte the text of [`Table::write_json`]: Arrow's types merge what
//!   JSON tells apart (an integer and a float in one column, `true` and the
//!   text `"True"` in a column of mixed values), so the JSON writer reads
//!   the cells' own types.

use std::io::{self, Write};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use flor_core::table::{ColumnData, Nullable};
use flor_core::{Table, Value};
use flor_store::arrow::{batches, into_record_batch};

/// Rows per piece written (a slice of the record batch, or a row range of
/// the table for JSON).
pub const BATCH_ROWS: usize = 65_536;

/// Rows per Parquet row group (the last one holds the rest).
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// An output format of [`write`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row (as [`Table::write_csv`]).
    Csv,
    /// A JSON array of row objects (as [`Table::write_json`]).
    Json,
    /// An Apache Parquet file, Snappy-compressed.
    Parquet,
    /// An Arrow IPC stream (the streaming format, not the file format).
    Arrow,
}

impl Format {
    /// Whether the output is binary (not for a terminal).
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Parquet | Format::Arrow)
    }

    /// The format's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing the output failed.
    #[error("cannot write {format} output: {source}")]
    Io {
        /// The format being written.
        format: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The table could not become an Arrow record batch.
    #[error(transparent)]
    Arrow(#[from] flor_store::arrow::Error),
    /// The Parquet writer failed (it also reports the output's I/O errors).
    #[error("cannot write Parquet output: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The Arrow IPC writer failed (it also reports the output's I/O errors).
    #[error("cannot write Arrow IPC output: {0}")]
    Ipc(#[source] arrow_schema::ArrowError),
}

impl Error {
    /// Whether the reader of the output went away (`flor ... | head`): not
    /// worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            Error::Parquet(parquet::errors::ParquetError::External(e))
            | Error::Ipc(arrow_schema::ArrowError::ExternalError(e)) => {
                e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }
            Error::Ipc(arrow_schema::ArrowError::IoError(_, e)) => e.kind() == io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes `table` to `out` in `format`, piece by piece, consuming the
/// table. `out` is written through a buffer of its own and flushed at the
/// end.
pub fn write(table: Table, format: Format, out: impl Write + Send) -> Result<()> {
    let io_err = |source| Error::Io { format: format.name(), source };
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    match format {
        Format::Json => write_json(&table, &mut out).map_err(io_err)?,
        Format::Csv => write_csv(&into_record_batch(table)?, &mut out).map_err(io_err)?,
        Format::Parquet => write_parquet(&into_record_batch(table)?, &mut out)?,
        Format::Arrow => write_arrow_stream(&into_record_batch(table)?, &mut out)?,
    }
    out.flush().map_err(io_err)
}

/// Writes `batch` as a Parquet file (Snappy compression, a row group per
/// [`ROW_GROUP_ROWS`] rows, the Arrow schema embedded so that readers get
/// back dictionary columns and field metadata).
pub fn write_parquet(batch: &RecordBatch, out: impl Write + Send) -> Result<()> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(props))?;
    for piece in batches(batch, BATCH_ROWS) {
        writer.write(&piece)?;
    }
    writer.close()?;
    Ok(())
}

/// Writes `batch` as an Arrow IPC stream: the schema, each dictionary once,
/// then one record batch message per [`BATCH_ROWS`] rows.
pub fn write_arrow_stream(batch: &RecordBatch, out: impl Write) -> Result<()> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(out, &batch.schema()).map_err(Error::Ipc)?;
    for piece in batches(batch, BATCH_ROWS) {
        writer.write(&piece).map_err(Error::Ipc)?;
    }
    writer.finish().map_err(Error::Ipc)
}

/// Writes `batch` as RFC 4180 CSV with a header row, the text of
/// [`Table::write_csv`] for the table it was converted from: NULL is an
/// empty field, floats as flor prints them (`0.5`, `3`, `NaN`, `inf`),
/// booleans `True`/`False`, text quoted when it holds a comma, a quote or a
/// line break or starts or ends with a space.
pub fn write_csv(batch: &RecordBatch, out: &mut dyn Write) -> io::Result<()> {
    let schema = batch.schema();
    let mut buf = Vec::with_capacity(1 << 20);
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        csv_text(&mut buf, f.name());
    }
    buf.push(b'\n');
    // A dictionary's entries are rendered once for the whole output (the
    // slices share the dictionary).
    let dicts: Vec<Option<Vec<Vec<u8>>>> = batch
        .columns()
        .iter()
        .map(|c| {
            c.as_dictionary_opt::<Int32Type>().map(|d| {
                let values = d.values();
                (0..values.len())
                    .map(|k| {
                        let mut b = Vec::new();
                        csv_cell(&mut b, values.as_ref(), k);
                        b
                    })
                    .collect()
            })
        })
        .collect();
    for piece in batches(batch, BATCH_ROWS) {
        let columns: Vec<&ArrayRef> = piece.columns().iter().collect();
        for r in 0..piece.num_rows() {
            for (c, array) in columns.iter().enumerate() {
                if c > 0 {
                    buf.push(b',');
                }
                match (&dicts[c], array.as_dictionary_opt::<Int32Type>()) {
                    (Some(rendered), Some(d)) => {
                        if d.is_valid(r) {
                            buf.extend_from_slice(&rendered[d.keys().value(r) as usize]);
                        }
                    }
                    _ => csv_cell(&mut buf, array.as_ref(), r),
                }
            }
            buf.push(b'\n');
        }
        out.write_all(&buf)?;
        buf.clear();
    }
    out.write_all(&buf)?;
    out.flush()
}

/// One CSV field: cell `row` of `array` (nothing for NULL).
fn csv_cell(buf: &mut Vec<u8>, array: &dyn Array, row: usize) {
    if array.is_null(row) {
        return;
    }
    match array.data_type() {
        DataType::Int64 => {
            buf.extend_from_slice(itoa::Buffer::new().format(array.as_primitive::<Int64Type>().value(row)).as_bytes())
        }
        DataType::Float64 => display_float(buf, array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => buf.extend_from_slice(if array.as_boolean().value(row) { b"True" } else { b"False" }),
        DataType::Utf8 => csv_text(buf, array.as_string::<i32>().value(row)),
        DataType::Dictionary(..) => {
            if let Some(d) = array.as_dictionary_opt::<Int32Type>() {
                csv_cell(buf, d.values().as_ref(), d.keys().value(row) as usize);
            }
        }
        // `Null` columns (every cell NULL) and types flor never produces.
        _ => {}
    }
}

/// A float as [`Value`]'s display writes it: ryu's shortest text without a
/// trailing `.0`, `NaN`, `inf`, `-inf`.
fn display_float(buf: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let mut b = ryu::Buffer::new();
        let s = b.format_finite(f);
        buf.extend_from_slice(s.strip_suffix(".0").unwrap_or(s).as_bytes());
    } else {
        buf.extend_from_slice(flor_core::value::nonfinite_name(f).as_bytes());
    }
}

/// A text CSV field, quoted (quotes doubled) when it holds a comma, a quote
/// or a line break, or starts or ends with a space.
fn csv_text(buf: &mut Vec<u8>, s: &str) {
    let quote = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if !quote {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    buf.push(b'"');
    for part in s.split('"').enumerate() {
        if part.0 > 0 {
            buf.extend_from_slice(b"\"\"");
        }
        buf.extend_from_slice(part.1.as_bytes());
    }
    buf.push(b'"');
}

/// Writes `table` as a JSON array of row objects, the text of
/// [`Table::write_json`]: the same keys in the same order (a name that
/// several columns share appears once, with the last column's cell, as in a
/// JSON map), NULL as `null`, non-finite floats as the strings `"NaN"`,
/// `"inf"`, `"-inf"`.
pub fn write_json(table: &Table, out: &mut dyn Write) -> io::Result<()> {
    // The key order and the column behind each key, exactly as the
    // `serde_json::Map` of `Table::write_json` has them (sorted keys or
    // insertion order, depending on serde_json's features in this build).
    let mut order = serde_json::Map::new();
    for (i, c) in table.columns.iter().enumerate() {
        order.insert(c.name.clone(), serde_json::Value::from(i));
    }
    let keys: Vec<(Vec<u8>, JsonColumn)> = order
        .iter()
        .map(|(name, i)| {
            let i = i.as_u64().map_or(0, |i| i as usize);
            let mut key = serde_json::to_vec(name).unwrap_or_default();
            key.push(b':');
            (key, JsonColumn::of(&table.columns[i].data))
        })
        .collect();
    let rows = table.row_count();
    let mut buf = Vec::with_capacity(1 << 20);
    buf.push(b'[');
    for start in (0..rows).step_by(BATCH_ROWS) {
        for r in start..rows.min(start + BATCH_ROWS) {
            if r > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"\n  {");
            for (k, (key, column)) in keys.iter().enumerate() {
                if k > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(key);
                column.write(&mut buf, r);
            }
            buf.push(b'}');
        }
        out.write_all(&buf)?;
        buf.clear();
    }
    buf.extend_from_slice(if rows > 0 { b"\n]\n" } else { b"]\n" });
    out.write_all(&buf)?;
    out.flush()
}

/// A column's cells as JSON text.
enum JsonColumn<'a> {
    Int(&'a Nullable<i64>),
    Float(&'a Nullable<f64>),
    Values(&'a [Option<Value>]),
    /// Each dictionary entry's JSON text, rendered once.
    Dict(Vec<Vec<u8>>, Arc<Vec<u32>>),
}

impl<'a> JsonColumn<'a> {
    fn of(data: &'a ColumnData) -> JsonColumn<'a> {
        match data {
            ColumnData::Int(n) => JsonColumn::Int(n),
            ColumnData::Float(n) => JsonColumn::Float(n),
            ColumnData::Values(v) => JsonColumn::Values(v),
            ColumnData::Dict { dict, codes } => JsonColumn::Dict(
                dict.iter()
                    .map(|v| {
                        let mut b = Vec::new();
                        json_value(&mut b, v);
                        b
                    })
                    .collect(),
                Arc::clone(codes),
            ),
        }
    }

    fn write(&self, buf: &mut Vec<u8>, row: usize) {
        let null = |buf: &mut Vec<u8>| buf.extend_from_slice(b"null");
        match self {
            JsonColumn::Int(n) => match n.get(row) {
                Some(i) => buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
                None => null(buf),
            },
            JsonColumn::Float(n) => match n.get(row) {
                Some(f) => json_float(buf, f),
                None => null(buf),
            },
            JsonColumn::Values(v) => match v.get(row).and_then(Option::as_ref) {
                Some(v) => json_value(buf, v),
                None => null(buf),
            },
            JsonColumn::Dict(rendered, codes) => match codes.get(row).and_then(|&c| rendered.get(c as usize)) {
                Some(text) => buf.extend_from_slice(text),
                None => null(buf),
            },
        }
    }
}

/// A value as `serde_json` writes [`Value::to_json`].
fn json_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) => json_float(buf, *f),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        // Writing into a vector cannot fail.
        Value::Text(s) => serde_json::to_writer(&mut *buf, &**s).unwrap_or(()),
        Value::Json(_) => serde_json::to_writer(&mut *buf, &v.to_json()).unwrap_or(()),
    }
}

/// A float as `serde_json` writes one (its own shortest form, `1e+300`),
/// non-finite ones as strings.
fn json_float(buf: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        // Writing into a vector cannot fail.
        serde_json::to_writer(&mut *buf, &f).unwrap_or(());
    } else {
        buf.push(b'"');
        buf.extend_from_slice(flor_core::value::nonfinite_name(f).as_bytes());
        buf.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flor_core::table::{Column, Dict};

    /// A table with every column form and the cells text formats trip on.
    fn every_form(rows: usize) -> Table {
        let texts = ["plain", "a,b", "say \"hi\"", "two\nlines", "cr\r", " lead", "trail ", "ünïcødé ✓", "", "tab\t"];
        let floats = [0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 3.0, -0.0, 1e-7, 1e300, 1.0 / 3.0];
        let codes: Arc<Vec<u32>> =
            Arc::new((0..rows).map(|r| if r % 11 == 4 { Dict::NULL } else { (r % 3) as u32 }).collect());
        let run_dict = |p: &str| (0..3).map(|i| Value::from(format!("{p}{i}"))).collect::<Vec<_>>();
        let mixed = |r: usize| match r % 6 {
            0 => Some(Value::Int(r as i64)),
            1 => Some(Value::Float(0.25)),
            2 => Some(Value::Bool(r % 4 == 1)),
            3 => Some(Value::from(texts[r % texts.len()])),
            4 => Some(Value::json(r#"{"b": [1, 2.5, null], "a": "x,y"}"#).unwrap()),
            _ => None,
        };
        Table {
            columns: vec![
                Column {
                    name: "projid".into(),
                    data: ColumnData::Dict { dict: run_dict("p"), codes: Arc::clone(&codes) },
                },
                Column { name: "tstamp".into(), data: ColumnData::Dict { dict: run_dict("t,"), codes } },
                Column {
                    name: "epoch".into(),
                    data: ColumnData::Int((0..rows).map(|r| (r % 5 != 2).then_some(r as i64 - 3)).collect()),
                },
                Column {
                    name: "loss".into(),
                    data: ColumnData::Float(
                        (0..rows).map(|r| (r % 7 != 0).then_some(floats[r % floats.len()])).collect(),
                    ),
                },
                Column::new(
                    "note, \"quoted\"",
                    (0..rows).map(|r| (r % 4 != 0).then(|| Value::from(texts[r % texts.len()]))).collect(),
                ),
                Column::new(
                    "lr",
                    (0..rows).map(|r| Some(if r % 2 == 0 { Value::Int(1) } else { Value::Float(0.001) })).collect(),
                ),
                Column::new("flag", (0..rows).map(|r| (r % 3 != 0).then_some(Value::Bool(r % 2 == 0))).collect()),
                Column::new("mixed", (0..rows).map(mixed).collect()),
                Column::new(
                    "cfg",
                    (0..rows).map(|r| (r % 2 == 0).then(|| Value::json(r#"{"z": 1, "a": [true]}"#).unwrap())).collect(),
                ),
                Column::new("empty", vec![None; rows]),
                Column {
                    name: "dict_mixed".into(),
                    data: ColumnData::Dict {
                        dict: vec![Value::Int(7), Value::from("x y "), Value::Float(f64::NAN)],
                        codes: Arc::new(
                            (0..rows as u32).map(|r| if r % 5 == 0 { Dict::NULL } else { r % 3 }).collect(),
                        ),
                    },
                },
                Column::new("lr", (0..rows).map(|r| Some(Value::Int(r as i64))).collect()),
            ],
        }
    }

    fn text_of(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_and_json_are_the_tables_own_text() {
        for rows in [0, 1, 2, 37, BATCH_ROWS + 3] {
            let table = every_form(rows);
            let csv_before = text_of(|o| table.write_csv(o).unwrap());
            let json_before = text_of(|o| table.write_json(o).unwrap());
            let csv_after = text_of(|o| write(table.clone(), Format::Csv, o).unwrap());
            let json_after = text_of(|o| write(table.clone(), Format::Json, o).unwrap());
            assert!(csv_before == csv_after, "CSV differs at {rows} rows:\n{csv_before:.2000}\n---\n{csv_after:.2000}");
            if let Some(at) = json_before.bytes().zip(json_after.bytes()).position(|(a, b)| a != b) {
                panic!(
                    "JSON differs at {rows} rows, byte {at}: {:?} vs {:?}",
                    &json_before[at.saturating_sub(80)..],
                    &json_after[at.saturating_sub(80)..at + 40]
                );
            }
            assert_eq!(json_before, json_after, "JSON at {rows} rows");
        }
        let none = Table::default();
        assert_eq!(text_of(|o| write(none.clone(), Format::Csv, o).unwrap()), text_of(|o| none.write_csv(o).unwrap()));
        assert_eq!(
            text_of(|o| write(none.clone(), Format::Json, o).unwrap()),
            text_of(|o| none.write_json(o).unwrap())
        );
    }
}
