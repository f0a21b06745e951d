//! User queries (`Store::query`) on DuckDB: the read-only rule (the shared
//! lexical pre-check, DuckDB's own writing verbs, a transaction rolled back
//! after every query), result columns from Arrow batches, and
//! [`write_parquet`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use duckdb::arrow::array::{Array, ArrayRef, AsArray};
use duckdb::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use duckdb::Connection;
use flor_core::store::{StoreError, StoreResult};
use flor_core::table::{Column, ColumnData, Dict, Nullable, Table};
use flor_core::value::Value;

use super::{fail, string_at, DuckStore, BACKEND};
use crate::limit::Watchdog;
use crate::readonly;

/// Statements DuckDB has beyond SQLite's that change the database, the
/// connection or the file system; refused in user queries before they run
/// (the transaction rolled back after every user query is the backstop).
const DUCKDB_WRITE_VERBS: &[&str] = &[
    "SET",
    "RESET",
    "CALL",
    "COPY",
    "INSTALL",
    "LOAD",
    "EXPORT",
    "IMPORT",
    "CHECKPOINT",
    "FORCE",
    "USE",
    "START",
    "ABORT",
    "TRUNCATE",
    "MERGE",
    "UPSERT",
    "COMMENT",
    "DETACH",
    "ATTACH",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
];

/// Pragmas that only report something.
const DUCKDB_INFO_PRAGMAS: &[&str] =
    &["TABLE_INFO", "SHOW_TABLES", "SHOW_TABLES_EXPANDED", "SHOW", "VERSION", "PLATFORM", "DATABASE_SIZE"];

impl DuckStore {
    /// Runs one user query: the lexical pre-check plus DuckDB's own writing
    /// verbs, then the query inside a transaction that is rolled back,
    /// interrupted after `limit` ([`StoreError::TimedOut`]).
    pub(super) fn run_query(&self, sql: &str, limit: Option<Duration>) -> StoreResult<Table> {
        if self.group.is_some() {
            return Err(self.in_group("run a query"));
        }
        let shape = readonly::shape(sql);
        if shape.empty {
            return Err(StoreError::Query { backend: BACKEND, message: "the query is empty".into() });
        }
        let verb = shape.verb.as_deref().unwrap_or("");
        let pragma_ok = verb == "PRAGMA" && !sql.contains('=') && {
            let words = readonly::shape(sql.trim_start().get(6..).unwrap_or(""));
            words.verb.as_deref().is_some_and(|w| DUCKDB_INFO_PRAGMAS.contains(&w))
        };
        if shape.writes || DUCKDB_WRITE_VERBS.contains(&verb) || (verb == "PRAGMA" && !pragma_ok) {
            return Err(StoreError::NotReadOnly { sql: sql.to_owned() });
        }
        if shape.trailing {
            return Err(StoreError::Query {
                backend: BACKEND,
                message: "only one statement per query is allowed (remove the text after the first `;`)".into(),
            });
        }
        // Every user query runs in a transaction that is rolled back.
        self.conn.execute_batch("BEGIN TRANSACTION").map_err(|e| self.fail("run a query", e))?;
        let handle = self.conn.interrupt_handle();
        let watchdog = Watchdog::start(limit, move || handle.interrupt());
        let result = self.query_in_tx(sql);
        // Stopped before the rollback: no interrupt can reach it.
        let fired = watchdog.stop();
        let rollback = self.conn.execute_batch("ROLLBACK");
        if fired {
            // An interrupt that came as the query ended may fail the
            // rollback: once more.
            if rollback.is_err() {
                self.conn.execute_batch("ROLLBACK").map_err(|e| self.fail("end a query", e))?;
            }
            return Err(StoreError::TimedOut { backend: BACKEND, limit: limit.unwrap_or_default() });
        }
        let table = result?;
        rollback.map_err(|e| self.fail("end a query", e))?;
        Ok(table)
    }

    /// Runs `sql` (already checked) and reads its Arrow batches.
    fn query_in_tx(&self, sql: &str) -> StoreResult<Table> {
        let query_error = |e: duckdb::Error| match e {
            duckdb::Error::DuckDBFailure(err, msg) => {
                StoreError::Query { backend: BACKEND, message: msg.unwrap_or_else(|| err.to_string()) }
            }
            e => self.fail("run a query", e),
        };
        let mut st = self.conn.prepare(sql).map_err(query_error)?;
        let arrow = st.query_arrow([]).map_err(query_error)?;
        let schema = arrow.get_schema();
        let mut cols: Vec<Cells> = schema.fields().iter().map(|f| Cells::for_type(f.data_type())).collect();
        for batch in arrow {
            for (c, a) in cols.iter_mut().zip(batch.columns()) {
                c.extend(a)?;
            }
        }
        Ok(Table {
            columns: schema
                .fields()
                .iter()
                .zip(cols)
                .map(|(f, c)| Column { name: f.name().clone(), data: c.finish() })
                .collect(),
        })
    }
}

/// Builds one result column from Arrow arrays in the compact form its type
/// allows (integers, floats, dictionary-encoded text); anything else as
/// general values.
enum Cells {
    Int(Nullable<i64>),
    Float(Nullable<f64>),
    Text { dict: Vec<Value>, index: HashMap<Arc<str>, u32>, codes: Vec<u32> },
    Values(Vec<Option<Value>>),
}

impl Cells {
    fn for_type(t: &DataType) -> Cells {
        match t {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Cells::Int(Nullable::new()),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => Cells::Int(Nullable::new()),
            DataType::Float32 | DataType::Float64 => Cells::Float(Nullable::new()),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Cells::Text { dict: Vec::new(), index: HashMap::new(), codes: Vec::new() }
            }
            _ => Cells::Values(Vec::new()),
        }
    }

    fn extend(&mut self, a: &ArrayRef) -> StoreResult<()> {
        let n = a.len();
        match self {
            Cells::Int(v) => {
                macro_rules! ints {
                    ($($t:ty),*) => {{
                        $(if let Some(p) = a.as_primitive_opt::<$t>() {
                            v.extend((0..n).map(|i| (!p.is_null(i)).then(|| p.value(i) as i64)));
                            return Ok(());
                        })*
                    }};
                }
                ints!(Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type);
            }
            Cells::Float(v) => {
                if let Some(p) = a.as_primitive_opt::<Float64Type>() {
                    v.extend((0..n).map(|i| (!p.is_null(i)).then(|| p.value(i))));
                    return Ok(());
                }
                if let Some(p) = a.as_primitive_opt::<Float32Type>() {
                    v.extend((0..n).map(|i| (!p.is_null(i)).then(|| f64::from(p.value(i)))));
                    return Ok(());
                }
            }
            Cells::Text { dict, index, codes } => {
                for i in 0..n {
                    if a.is_null(i) {
                        codes.push(Dict::NULL);
                        continue;
                    }
                    let s = string_at(a, i).unwrap_or("");
                    let code = match index.get(s) {
                        Some(&c) => c,
                        None => {
                            let s: Arc<str> = s.into();
                            let c = dict.len() as u32;
                            dict.push(Value::Text(Arc::clone(&s)));
                            index.insert(s, c);
                            c
                        }
                    };
                    codes.push(code);
                }
                return Ok(());
            }
            Cells::Values(v) => {
                for i in 0..n {
                    v.push(cell(a, i)?);
                }
                return Ok(());
            }
        }
        // A type this form does not expect: general values from here on.
        let data = std::mem::replace(self, Cells::Values(Vec::new())).finish();
        *self = Cells::Values((0..data.len()).map(|r| data.get(r)).collect());
        self.extend(a)
    }

    fn finish(self) -> ColumnData {
        match self {
            Cells::Int(c) => ColumnData::Int(c),
            Cells::Float(c) => ColumnData::Float(c),
            Cells::Text { dict, codes, .. } => ColumnData::Dict { dict, codes: Arc::new(codes) },
            Cells::Values(c) => ColumnData::Values(c),
        }
    }
}

/// One cell of any Arrow type as a [`Value`]: numbers as numbers (decimals
/// and 128-bit integers as the nearest float when they do not fit an
/// `i64`), booleans as booleans, a union as its member, anything else
/// (dates, lists, structs, blobs) as its DuckDB text.
fn cell(a: &ArrayRef, i: usize) -> StoreResult<Option<Value>> {
    if a.is_null(i) {
        return Ok(None);
    }
    macro_rules! ints {
        ($($t:ty),*) => {{
            $(if let Some(p) = a.as_primitive_opt::<$t>() {
                return Ok(Some(Value::Int(p.value(i) as i64)));
            })*
        }};
    }
    ints!(Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type);
    if let Some(p) = a.as_primitive_opt::<UInt64Type>() {
        let x = p.value(i);
        return Ok(Some(i64::try_from(x).map_or(Value::Float(x as f64), Value::Int)));
    }
    if let Some(p) = a.as_primitive_opt::<Float64Type>() {
        return Ok(Some(Value::Float(p.value(i))));
    }
    if let Some(p) = a.as_primitive_opt::<Float32Type>() {
        return Ok(Some(Value::Float(f64::from(p.value(i)))));
    }
    if let Some(b) = a.as_boolean_opt() {
        return Ok(Some(Value::Bool(b.value(i))));
    }
    if let Some(s) = string_at(a, i) {
        return Ok(Some(Value::Text(s.into())));
    }
    match a.data_type() {
        DataType::Union(..) => {
            let u = a.as_union();
            let child = u.child(u.type_id(i));
            return cell(child, u.value_offset(i));
        }
        DataType::Decimal128(_, scale) => {
            let v = a.as_primitive::<duckdb::arrow::datatypes::Decimal128Type>().value(i);
            if *scale == 0 {
                if let Ok(x) = i64::try_from(v) {
                    return Ok(Some(Value::Int(x)));
                }
            }
            return Ok(Some(Value::Float(v as f64 / 10f64.powi(i32::from(*scale)))));
        }
        DataType::Null => return Ok(None),
        _ => {}
    }
    let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()).map_err(|e| StoreError::Backend {
        backend: BACKEND,
        message: format!("cannot show a cell of type {}: {e}", a.data_type()),
        source: Some(Box::new(e)),
    })?;
    Ok(Some(Value::Text(f.value(i).to_string().into())))
}

/// The DuckDB type a result column is written with: the narrowest that
/// holds every cell (mixed columns as text).
fn column_type(data: &ColumnData) -> &'static str {
    let kinds = |cells: &mut dyn Iterator<Item = &Value>| {
        let (mut int, mut float, mut boolean, mut text) = (false, false, false, false);
        for v in cells {
            match v {
                Value::Int(_) => int = true,
                Value::Float(_) => float = true,
                Value::Bool(_) => boolean = true,
                Value::Text(_) | Value::Json(_) => text = true,
            }
        }
        match (int, float, boolean, text) {
            (_, _, false, false) if float => "DOUBLE",
            (true, false, false, false) => "BIGINT",
            (false, false, true, false) => "BOOLEAN",
            _ => "VARCHAR",
        }
    };
    match data {
        ColumnData::Int(_) => "BIGINT",
        ColumnData::Float(_) => "DOUBLE",
        ColumnData::Dict { dict, .. } => kinds(&mut dict.iter()),
        ColumnData::Values(v) => kinds(&mut v.iter().flatten()),
    }
}

/// A cell as the DuckDB value of its column's type (see [`column_type`]).
fn duck_value(ty: &str, cell: Option<Value>) -> duckdb::types::Value {
    use duckdb::types::Value as D;
    match (ty, cell) {
        (_, None) => D::Null,
        ("BIGINT", Some(Value::Int(i))) => D::BigInt(i),
        ("DOUBLE", Some(Value::Float(f))) => D::Double(f),
        ("DOUBLE", Some(Value::Int(i))) => D::Double(i as f64),
        ("BOOLEAN", Some(Value::Bool(b))) => D::Boolean(b),
        (_, Some(Value::Text(s) | Value::Json(s))) => D::Text(s.to_string()),
        (_, Some(v)) => D::Text(v.to_string()),
    }
}

/// Writes `table` to a Parquet file at `path` (replacing it), through a
/// private in-memory DuckDB: integer columns as `INT64`, float columns as
/// `DOUBLE`, booleans as `BOOLEAN`, text, JSON and mixed columns as strings.
/// Repeated column names get a `_2`, `_3`, ... suffix.
pub fn write_parquet(table: &Table, path: &Path) -> crate::Result<()> {
    let label = path.display().to_string();
    let err = |op: &'static str| {
        let label = label.clone();
        move |e: duckdb::Error| fail(&label, op, e)
    };
    let conn = Connection::open_in_memory().map_err(err("open an in-memory database"))?;
    let mut names: Vec<String> = Vec::new();
    for c in &table.columns {
        let mut name = c.name.clone();
        let mut k = 2;
        while names.contains(&name) {
            name = format!("{}_{k}", c.name);
            k += 1;
        }
        names.push(name);
    }
    let types: Vec<&str> = table.columns.iter().map(|c| column_type(&c.data)).collect();
    let cols: Vec<String> = names.iter().zip(&types).map(|(n, t)| format!("{} {t}", quote_ident(n))).collect();
    if cols.is_empty() {
        return Err(crate::Error::Store(StoreError::Query {
            backend: BACKEND,
            message: "a table without columns cannot be written as Parquet".into(),
        }));
    }
    conn.execute_batch(&format!("CREATE TABLE t ({})", cols.join(", "))).map_err(err("create the export table"))?;
    {
        let mut app = conn.appender("t").map_err(err("fill the export table"))?;
        for r in 0..table.row_count() {
            let row = table.columns.iter().zip(&types).map(|(c, t)| duck_value(t, c.get(r)));
            app.append_row(duckdb::appender_params_from_iter(row)).map_err(err("fill the export table"))?;
        }
        app.flush().map_err(err("fill the export table"))?;
    }
    // COPY takes its file name as a literal: quoted, never spliced raw.
    conn.execute_batch(&format!("COPY t TO {} (FORMAT PARQUET)", quote_literal(&label)))
        .map_err(err("write the Parquet file"))?;
    Ok(())
}

/// `"name"`, with inner quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'`, with inner quotes doubled.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
