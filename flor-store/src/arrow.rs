//! Query results as Arrow record batches: the exchange format between the
//! store and every consumer (the Python front, Parquet and Arrow IPC output).
//!
//! [`into_record_batch`] consumes a [`Table`] and moves its typed columns
//! into Arrow buffers without copying a cell:
//!
//! | flor column | Arrow array |
//! |---|---|
//! | [`ColumnData::Int`] | `Int64`, the values vector and the validity words moved |
//! | [`ColumnData::Float`] | `Float64`, the same (NaN stays NaN) |
//! | [`ColumnData::Dict`] | `Dictionary(Int32, V)`: the keys are the codes (one buffer for every column sharing them), [`Dict::NULL`](flor_core::table::Dict::NULL) a null key; `V` is the entries' type as below |
//! | [`ColumnData::Values`] | the narrowest type holding every cell exactly (below) |
//!
//! A column of general values (and a dictionary's entries) becomes
//! `Int64` when every cell is an integer, `Float64` when the cells are
//! floats, or floats and integers that a float holds exactly (|i| <= 2^53),
//! `Boolean`, `Utf8` for text, `Utf8` with the field metadata
//! `flor.type = json` for JSON documents (their text), and `Null` when every
//! cell is NULL. Any other mix (text and numbers, ...) becomes `Utf8` of each
//! value's display text, the text `flor dataframe` prints, with the field
//! metadata `flor.mixed = true`, so that a consumer knows the cells had
//! several types.
//!
//! Dictionary keys are `Int32`, not `UInt32`: pyarrow before 23 refuses to
//! turn unsigned dictionary indices into a pandas `Categorical`, and signed
//! 32-bit keys are what pyarrow, pandas and polars all read. A code is below
//! 2^31 (a dictionary that large is refused: [`Error::DictionaryTooLarge`]),
//! so the codes' bytes are the keys' bytes.
//!
//! Every field is nullable. Field names are the table's column names.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, NullArray, RecordBatch,
    RecordBatchOptions, StringArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use flor_core::table::{Column, ColumnData, Nullable};
use flor_core::{Table, Value};

/// Field metadata key naming a column's flor type where Arrow's type does
/// not say it (`json`: the `Utf8` cells are JSON documents).
pub const FLOR_TYPE_KEY: &str = "flor.type";
/// Field metadata key set to `true` on a `Utf8` column holding the display
/// text of cells of several types (text and numbers, ...).
pub const FLOR_MIXED_KEY: &str = "flor.mixed";

/// Why a table cannot become a record batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A dictionary column has more distinct entries than an `Int32` key
    /// can address.
    #[error("column {column:?} has {entries} dictionary entries; Arrow's Int32 keys address at most 2^31 - 1")]
    DictionaryTooLarge {
        /// The column's name.
        column: String,
        /// Its number of dictionary entries.
        entries: usize,
    },
    /// Arrow refused the arrays (columns of different lengths, ...).
    #[error("cannot build an Arrow record batch: {0}")]
    Arrow(#[from] ArrowError),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Arrow schema of `table`: the types [`into_record_batch`] gives its
/// columns, with the same field metadata.
pub fn schema_of(table: &Table) -> SchemaRef {
    Arc::new(Schema::new(table.columns.iter().map(field_of).collect::<Vec<_>>()))
}

/// The field of one column (see the module documentation for the types).
fn field_of(column: &Column) -> Field {
    let (data_type, meta) = match &column.data {
        ColumnData::Int(_) => (DataType::Int64, None),
        ColumnData::Float(_) => (DataType::Float64, None),
        ColumnData::Values(cells) => {
            let kind = Kind::of(cells.iter().flatten());
            (kind.data_type(), kind.metadata())
        }
        ColumnData::Dict { dict, .. } => {
            let kind = Kind::of(dict.iter());
            (DataType::Dictionary(Box::new(DataType::Int32), Box::new(kind.data_type())), kind.metadata())
        }
    };
    let field = Field::new(column.name.clone(), data_type, true);
    match meta {
        Some((k, v)) => field.with_metadata(HashMap::from([(k.to_owned(), v.to_owned())])),
        None => field,
    }
}

/// Converts `table` into one record batch, consuming it. Typed columns move
/// their buffers (no cell is copied); dictionary columns that share their
/// codes share one key buffer; general values are converted cell by cell.
/// A table without columns gives a batch without columns.
///
/// # Errors
/// [`Error::DictionaryTooLarge`] for a dictionary of 2^31 entries or more,
/// [`Error::Arrow`] if the columns differ in length.
pub fn into_record_batch(table: Table) -> Result<RecordBatch> {
    let schema = schema_of(&table);
    let rows = table.row_count();
    let mut columns = table.columns;
    let mut keys = SharedKeys::take_codes(&mut columns);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, column) in columns.into_iter().enumerate() {
        arrays.push(match column.data {
            ColumnData::Int(cells) => Arc::new(primitive::<Int64Type>(cells)),
            ColumnData::Float(cells) => Arc::new(primitive::<Float64Type>(cells)),
            ColumnData::Values(cells) => values_array(&cells),
            ColumnData::Dict { dict, .. } => {
                if i32::try_from(dict.len()).is_err() {
                    return Err(Error::DictionaryTooLarge { column: column.name, entries: dict.len() });
                }
                let values = values_array(&dict.into_iter().map(Some).collect::<Vec<_>>());
                Arc::new(DictionaryArray::<Int32Type>::try_new(keys.keys(i, values.len()), values)?)
            }
        });
    }
    Ok(RecordBatch::try_new_with_options(schema, arrays, &RecordBatchOptions::new().with_row_count(Some(rows)))?)
}

/// Record batches of at most `rows` rows each (at least 1), slicing `batch`
/// without copying: the pieces share its buffers. A batch of no rows gives
/// no piece.
pub fn batches(batch: &RecordBatch, rows: usize) -> impl Iterator<Item = RecordBatch> + '_ {
    let step = rows.max(1);
    let total = batch.num_rows();
    (0..total).step_by(step).map(move |start| batch.slice(start, step.min(total - start)))
}

/// A primitive array owning `cells`' values and validity words.
fn primitive<T>(cells: Nullable<T::Native>) -> arrow_array::PrimitiveArray<T>
where
    T: arrow_array::ArrowPrimitiveType,
    T::Native: Default,
{
    let len = cells.len();
    let (values, valid) = cells.into_parts();
    arrow_array::PrimitiveArray::new(ScalarBuffer::from(values), null_buffer(valid, len))
}

/// The validity words of a [`Nullable`] as Arrow's null buffer (`None` when
/// no cell is NULL). Arrow's bitmaps are least-significant-bit first, as are
/// the words on a little-endian machine, so the words are reinterpreted, not
/// rewritten.
fn null_buffer(mut valid: Vec<u64>, len: usize) -> Option<NullBuffer> {
    if cfg!(target_endian = "big") {
        valid.iter_mut().for_each(|w| *w = w.to_le());
    }
    let nulls = NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(valid), 0, len));
    (nulls.null_count() > 0).then_some(nulls)
}

/// The codes of a table's dictionary columns as Arrow buffers: one buffer
/// per distinct codes vector, shared by every column that shares the
/// vector (a pivot's `projid`, `tstamp` and `filename`).
struct SharedKeys {
    /// The buffer of each dictionary column, by column index.
    of_column: HashMap<usize, Buffer>,
    /// Keys already built, by buffer address and dictionary size.
    built: HashMap<(usize, usize), Int32Array>,
}

impl SharedKeys {
    /// Takes the codes out of `columns`' dictionary columns (leaving empty
    /// codes behind). Each distinct vector is moved into its buffer when
    /// nothing outside the table holds it, else copied once.
    fn take_codes(columns: &mut [Column]) -> SharedKeys {
        let mut by_addr: HashMap<usize, Arc<Vec<u32>>> = HashMap::new();
        let mut addr_of: Vec<(usize, usize)> = Vec::new();
        for (i, column) in columns.iter_mut().enumerate() {
            if let ColumnData::Dict { codes, .. } = &mut column.data {
                let codes = std::mem::take(codes);
                let addr = Arc::as_ptr(&codes) as usize;
                addr_of.push((i, addr));
                // A second holder of the same vector is dropped here, so
                // that the first is its table's only owner.
                by_addr.entry(addr).or_insert(codes);
            }
        }
        let buffers: HashMap<usize, Buffer> = by_addr
            .into_iter()
            .map(|(addr, codes)| {
                let owned = Arc::try_unwrap(codes).unwrap_or_else(|shared| shared.as_ref().clone());
                (addr, Buffer::from_vec(owned))
            })
            .collect();
        let of_column = addr_of.into_iter().map(|(i, addr)| (i, buffers[&addr].clone())).collect();
        SharedKeys { of_column, built: HashMap::new() }
    }

    /// The keys of dictionary column `column` over a dictionary of
    /// `entries` entries: its codes, with a null key where a code is
    /// [`Dict::NULL`](flor_core::table::Dict::NULL) (or past the dictionary: [`Table::cell`] reads that as
    /// NULL too). Codes below 2^31 read the same as `i32`; a NULL code reads
    /// as -1 under its null bit.
    fn keys(&mut self, column: usize, entries: usize) -> Int32Array {
        let buffer = self.of_column.remove(&column).unwrap_or_else(|| Buffer::from_vec(Vec::<u32>::new()));
        let id = (buffer.as_ptr() as usize, entries);
        self.built
            .entry(id)
            .or_insert_with(|| {
                let len = buffer.len() / std::mem::size_of::<u32>();
                let valid = validity_of(buffer.typed_data::<u32>(), entries);
                Int32Array::new(ScalarBuffer::new(buffer, 0, len), valid)
            })
            .clone()
    }
}

/// Null buffer of dictionary codes: a code is valid below `entries`.
fn validity_of(codes: &[u32], entries: usize) -> Option<NullBuffer> {
    let limit = u32::try_from(entries).unwrap_or(u32::MAX);
    if codes.iter().all(|&c| c < limit) {
        return None;
    }
    Some(NullBuffer::new(BooleanBuffer::from_iter(codes.iter().map(|&c| c < limit))))
}

/// What a column of general values holds (over its non-NULL cells).
#[derive(Default, Clone, Copy)]
struct Kind {
    ints: bool,
    /// Some integer a float cannot hold exactly.
    wide_int: bool,
    floats: bool,
    bools: bool,
    texts: bool,
    jsons: bool,
}

/// Integers up to this magnitude are exact as `f64`.
const F64_EXACT_INT: i64 = 1 << 53;

/// The Arrow form a [`Kind`] maps to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Null,
    Int,
    Float,
    Bool,
    Text,
    Json,
    Mixed,
}

impl Kind {
    fn of<'a>(cells: impl Iterator<Item = &'a Value>) -> Kind {
        let mut k = Kind::default();
        for v in cells {
            match v {
                Value::Int(i) => {
                    k.ints = true;
                    k.wide_int |= i.unsigned_abs() > F64_EXACT_INT as u64;
                }
                Value::Float(_) => k.floats = true,
                Value::Bool(_) => k.bools = true,
                Value::Text(_) => k.texts = true,
                Value::Json(_) => k.jsons = true,
            }
        }
        k
    }

    fn target(self) -> Target {
        let numbers = self.ints || self.floats;
        let others = [numbers, self.bools, self.texts, self.jsons].iter().filter(|&&b| b).count();
        match others {
            0 => Target::Null,
            1 if self.ints && !self.floats => Target::Int,
            1 if self.floats && (!self.ints || !self.wide_int) => Target::Float,
            1 if self.bools => Target::Bool,
            1 if self.texts => Target::Text,
            1 if self.jsons => Target::Json,
            _ => Target::Mixed,
        }
    }

    fn data_type(self) -> DataType {
        match self.target() {
            Target::Null => DataType::Null,
            Target::Int => DataType::Int64,
            Target::Float => DataType::Float64,
            Target::Bool => DataType::Boolean,
            Target::Text | Target::Json | Target::Mixed => DataType::Utf8,
        }
    }

    fn metadata(self) -> Option<(&'static str, &'static str)> {
        match self.target() {
            Target::Json => Some((FLOR_TYPE_KEY, "json")),
            Target::Mixed => Some((FLOR_MIXED_KEY, "true")),
            _ => None,
        }
    }
}

/// The Arrow array of general values (see the module documentation).
fn values_array(cells: &[Option<Value>]) -> ArrayRef {
    let target = Kind::of(cells.iter().flatten()).target();
    match target {
        Target::Null => Arc::new(NullArray::new(cells.len())),
        Target::Int => Arc::new(
            cells
                .iter()
                .map(|c| match c {
                    Some(Value::Int(i)) => Some(*i),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        Target::Float => Arc::new(
            cells
                .iter()
                .map(|c| match c {
                    Some(Value::Float(f)) => Some(*f),
                    Some(Value::Int(i)) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        Target::Bool => Arc::new(
            cells
                .iter()
                .map(|c| match c {
                    Some(Value::Bool(b)) => Some(*b),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        ),
        Target::Text | Target::Json => Arc::new(
            cells
                .iter()
                .map(|c| match c {
                    Some(Value::Text(s) | Value::Json(s)) => Some(&**s),
                    _ => None,
                })
                .collect::<StringArray>(),
        ),
        Target::Mixed => Arc::new(cells.iter().map(|c| c.as_ref().map(Value::to_string)).collect::<StringArray>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use flor_core::table::Dict;

    /// The flor value of an Arrow cell, read back through the field's type
    /// and metadata (what a consumer of the batch sees).
    fn cell(field: &Field, array: &dyn Array, row: usize) -> Option<Value> {
        if array.is_null(row) || array.data_type() == &DataType::Null {
            return None;
        }
        let meta = field.metadata();
        Some(match array.data_type() {
            DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(row)),
            DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
            DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
            DataType::Utf8 => {
                let s = array.as_string::<i32>().value(row);
                if meta.get(FLOR_TYPE_KEY).map(String::as_str) == Some("json") {
                    Value::Json(s.into())
                } else {
                    Value::Text(s.into())
                }
            }
            DataType::Dictionary(..) => {
                let d = array.as_dictionary::<Int32Type>();
                let key = d.keys().value(row) as usize;
                return cell(field, d.values().as_ref(), key);
            }
            other => panic!("unexpected type {other}"),
        })
    }

    /// What the Arrow cell must equal: the table's cell, widened as the
    /// column's Arrow type says (ints in a float column as floats, mixed
    /// cells as their display text).
    fn expected(field: &Field, v: Option<Value>) -> Option<Value> {
        let v = v?;
        if field.metadata().get(FLOR_MIXED_KEY).is_some() {
            return Some(Value::Text(v.to_string().into()));
        }
        let float_column = matches!(field.data_type(), DataType::Float64)
            || matches!(field.data_type(), DataType::Dictionary(_, v) if **v == DataType::Float64);
        Some(match v {
            Value::Int(i) if float_column => Value::Float(i as f64),
            v => v,
        })
    }

    fn same(a: &Option<Value>, b: &Option<Value>) -> bool {
        match (a, b) {
            (Some(Value::Float(x)), Some(Value::Float(y))) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            _ => a == b,
        }
    }

    /// Converts `table` and checks every cell against `Table::cell`.
    fn round_trip(table: Table) -> RecordBatch {
        let schema = schema_of(&table);
        let batch = into_record_batch(table.clone()).unwrap();
        assert_eq!(batch.schema(), schema, "schema_of agrees with the batch");
        assert_eq!(batch.num_rows(), table.row_count());
        assert_eq!(batch.num_columns(), table.columns.len());
        for (c, column) in table.columns.iter().enumerate() {
            let field = schema.field(c);
            assert_eq!(field.name(), &column.name);
            for r in 0..table.row_count() {
                let got = cell(field, batch.column(c).as_ref(), r);
                let want = expected(field, table.cell(r, c));
                assert!(same(&got, &want), "column {} row {r}: {got:?} != {want:?}", column.name);
            }
        }
        batch
    }

    fn values(name: &str, cells: Vec<Option<Value>>) -> Column {
        Column::new(name, cells)
    }

    #[test]
    fn typed_columns_round_trip_with_nulls_and_nan() {
        let ints: Nullable<i64> = (0..200).map(|i| (i % 7 != 3).then_some(i * 1_000_003 - 5)).collect();
        let floats: Nullable<f64> = (0..200)
            .map(|i| match i % 5 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(f64::INFINITY),
                3 => Some(-0.0),
                _ => Some(i as f64 / 3.0),
            })
            .collect();
        let table = Table {
            columns: vec![
                Column { name: "i".into(), data: ColumnData::Int(ints) },
                Column { name: "f".into(), data: ColumnData::Float(floats) },
            ],
        };
        let batch = round_trip(table);
        assert_eq!(batch.column(0).data_type(), &DataType::Int64);
        assert_eq!(batch.column(0).null_count(), 29);
        let f = batch.column(1).as_primitive::<Float64Type>();
        assert!(f.value(1).is_nan(), "NaN stays NaN");
        assert_eq!(f.null_count(), 40);
    }

    #[test]
    fn a_column_without_nulls_has_no_null_buffer() {
        let table = Table {
            columns: vec![Column { name: "x".into(), data: ColumnData::Float(Nullable::from_values(vec![1.0; 130])) }],
        };
        let batch = round_trip(table);
        assert!(batch.column(0).nulls().is_none());
    }

    #[test]
    fn typed_buffers_are_moved_not_copied() {
        let mut values = Vec::with_capacity(1001);
        values.extend(0..1000i64);
        let addr = values.as_ptr() as usize;
        let mut cells = Nullable::from_values(values);
        cells.push(None);
        let table = Table { columns: vec![Column { name: "i".into(), data: ColumnData::Int(cells) }] };
        let batch = into_record_batch(table).unwrap();
        let array = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(array.values().inner().as_ptr() as usize, addr);
        assert_eq!((array.len(), array.null_count()), (1001, 1));
        assert!(array.is_null(1000) && array.value(999) == 999);
    }

    #[test]
    fn dictionary_columns_share_their_keys_and_null_codes_are_null() {
        let codes = Arc::new(vec![0, 1, 1, Dict::NULL, 2, 0, 7]);
        let text = |xs: &[&str]| xs.iter().map(|s| Value::from(*s)).collect::<Vec<_>>();
        let table = Table {
            columns: vec![
                Column {
                    name: "projid".into(),
                    data: ColumnData::Dict { dict: text(&["p", "p", "q"]), codes: Arc::clone(&codes) },
                },
                Column {
                    name: "tstamp".into(),
                    data: ColumnData::Dict { dict: text(&["t0", "t1", "t2"]), codes: Arc::clone(&codes) },
                },
                Column {
                    name: "epoch".into(),
                    data: ColumnData::Dict {
                        dict: vec![Value::Int(3), Value::Float(0.5), Value::Int(-1)],
                        codes: Arc::clone(&codes),
                    },
                },
                Column {
                    name: "mixed".into(),
                    data: ColumnData::Dict { dict: vec![Value::Int(3), Value::from("x"), Value::Bool(true)], codes },
                },
            ],
        };
        let batch = round_trip(table);
        let keys: Vec<_> = (0..4).map(|c| batch.column(c).as_dictionary::<Int32Type>().keys().clone()).collect();
        assert_eq!(
            batch.schema().field(0).data_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        );
        assert_eq!(keys[0].null_count(), 2, "the NULL code and the code past the dictionary");
        for k in &keys[1..] {
            assert_eq!(k.values().inner().as_ptr(), keys[0].values().inner().as_ptr(), "one key buffer");
        }
        assert_eq!(
            batch.schema().field(2).data_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Float64))
        );
        assert_eq!(batch.schema().field(3).metadata().get(FLOR_MIXED_KEY).map(String::as_str), Some("true"));
    }

    #[test]
    fn codes_owned_by_the_table_are_moved() {
        let codes = Arc::new(vec![0, Dict::NULL, 1]);
        let addr = codes.as_ptr() as usize;
        let column = |name: &str, codes| Column {
            name: name.into(),
            data: ColumnData::Dict { dict: vec![Value::from("a"), Value::from("b")], codes },
        };
        let table = Table { columns: vec![column("x", Arc::clone(&codes)), column("y", codes)] };
        let batch = into_record_batch(table).unwrap();
        for c in 0..2 {
            let keys = batch.column(c).as_dictionary::<Int32Type>().keys().clone();
            assert_eq!(keys.values().as_ptr() as usize, addr, "column {c}: the codes are moved, not copied");
        }
    }

    #[test]
    fn codes_held_outside_the_table_are_copied() {
        let codes = Arc::new(vec![1, Dict::NULL, 0]);
        let table = Table {
            columns: vec![Column {
                name: "d".into(),
                data: ColumnData::Dict { dict: vec![Value::from("a"), Value::from("b")], codes: Arc::clone(&codes) },
            }],
        };
        round_trip(table);
        assert_eq!(*codes, [1, Dict::NULL, 0], "the other holder's codes are untouched");
    }

    #[test]
    fn general_values_take_the_narrowest_exact_type() {
        let int = |i: i64| Some(Value::Int(i));
        let float = |f: f64| Some(Value::Float(f));
        let table = Table {
            columns: vec![
                values("ints", vec![int(1), None, int(-4)]),
                values("floats", vec![float(1.5), float(f64::NAN), None]),
                values("numbers", vec![int(2), float(0.25), None]),
                values("wide", vec![int(i64::MAX), float(0.25), None]),
                values("bools", vec![Some(Value::Bool(true)), None, Some(Value::Bool(false))]),
                values("texts", vec![Some(Value::from("a,\"b\"\n")), Some(Value::from("é")), None]),
                values(
                    "jsons",
                    vec![Some(Value::json("{\"a\": [1, 2]}").unwrap()), None, Some(Value::json("3").unwrap())],
                ),
                values("mixed", vec![Some(Value::from("x")), int(3), Some(Value::Bool(false))]),
                values("nulls", vec![None, None, None]),
            ],
        };
        let batch = round_trip(table);
        let schema = batch.schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        use DataType::*;
        assert_eq!(types, [&Int64, &Float64, &Float64, &Utf8, &Boolean, &Utf8, &Utf8, &Utf8, &Null]);
        let meta = |c: usize, k: &str| schema.field(c).metadata().get(k).cloned();
        assert_eq!(meta(3, FLOR_MIXED_KEY).as_deref(), Some("true"), "an int a float cannot hold");
        assert_eq!(meta(6, FLOR_TYPE_KEY).as_deref(), Some("json"));
        assert_eq!(meta(7, FLOR_MIXED_KEY).as_deref(), Some("true"));
        assert_eq!(meta(5, FLOR_MIXED_KEY), None);
        assert_eq!(batch.column(8).len(), 3);
    }

    #[test]
    fn empty_tables_convert() {
        let batch = round_trip(Table::with_columns(["a", "b"]));
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(batch.schema().field(0).data_type(), &DataType::Null);
        let none = round_trip(Table::default());
        assert_eq!((none.num_rows(), none.num_columns()), (0, 0));
        assert_eq!(batches(&none, 10).count(), 0);
    }

    #[test]
    fn batches_slice_without_copying() {
        let table =
            Table { columns: vec![Column { name: "i".into(), data: ColumnData::Int((0..25).map(Some).collect()) }] };
        let batch = into_record_batch(table).unwrap();
        let pieces: Vec<RecordBatch> = batches(&batch, 10).collect();
        assert_eq!(pieces.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [10, 10, 5]);
        let first = batch.column(0).as_primitive::<Int64Type>().values().as_ptr();
        let third = pieces[2].column(0).as_primitive::<Int64Type>();
        assert_eq!(third.value(0), 20);
        assert_eq!(third.values().as_ptr(), first.wrapping_add(20), "a slice shares the buffer");
        assert_eq!(batches(&batch, 0).count(), 25, "at least one row per piece");
    }
}
