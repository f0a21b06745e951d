//! Query results: a small columnar table with terminal, CSV and JSON output.

use std::io::{self, Write};
use std::sync::Arc;

use crate::value::Value;

/// How a column stores its cells. Large results (a pivot over millions of
/// values) use the compact forms; every form reads back the same cells.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// Any values, one `Option<Value>` per cell (`None` is NULL).
    Values(Vec<Option<Value>>),
    /// Integers (`None` is NULL).
    Int(Nullable<i64>),
    /// Floats (`None` is NULL; NaN stays NaN).
    Float(Nullable<f64>),
    /// Dictionary-encoded: cell `i` is `dict[codes[i]]`, [`Dict::NULL`] is NULL.
    /// Used for columns that repeat few distinct values (`tstamp`).
    Dict {
        /// The distinct values.
        dict: Vec<Value>,
        /// One code per cell, shared between columns with the same codes
        /// (a pivot's `projid`, `tstamp` and `filename` are all by run).
        codes: Arc<Vec<u32>>,
    },
}

/// Cells of one primitive type: a value and a validity bit per cell (8
/// bytes and a bit, where `Vec<Option<f64>>` takes 16: a 10M-row pivot's
/// numeric columns are half the memory, and half the memory to write).
///
/// Reads and writes `Option<T>`, `None` being NULL.
#[derive(Clone, Default)]
pub struct Nullable<T> {
    /// One value per cell (the default value under a NULL).
    values: Vec<T>,
    /// Bit `i % 64` of word `i / 64` set: cell `i` holds `values[i]`.
    valid: Vec<u64>,
}

impl<T: Copy + Default> Nullable<T> {
    /// No cells.
    pub fn new() -> Nullable<T> {
        Nullable { values: Vec::new(), valid: Vec::new() }
    }

    /// No cells, with room for `n`.
    pub fn with_capacity(n: usize) -> Nullable<T> {
        Nullable::from_values(Vec::with_capacity(n))
    }

    /// The cells `values`, none NULL (the vector's spare room is kept).
    pub fn from_values(values: Vec<T>) -> Nullable<T> {
        let mut valid = vec![0u64; values.len().div_ceil(64)];
        set_bits(&mut valid, 0, values.len());
        Nullable { values, valid }
    }

    /// `n` NULL cells.
    pub fn nulls(n: usize) -> Nullable<T> {
        Nullable { values: vec![T::default(); n], valid: vec![0; n.div_ceil(64)] }
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The cell at `i` (`None`: NULL or out of range).
    pub fn get(&self, i: usize) -> Option<T> {
        let v = *self.values.get(i)?;
        (self.valid[i / 64] >> (i % 64) & 1 == 1).then_some(v)
    }

    /// Appends a cell.
    pub fn push(&mut self, cell: Option<T>) {
        let i = self.values.len();
        if i.is_multiple_of(64) {
            self.valid.push(0);
        }
        match cell {
            Some(v) => {
                self.values.push(v);
                self.valid[i / 64] |= 1 << (i % 64);
            }
            None => self.values.push(T::default()),
        }
    }

    /// Appends `n` copies of `cell`.
    pub fn push_n(&mut self, cell: Option<T>, n: usize) {
        let start = self.values.len();
        self.values.resize(start + n, cell.unwrap_or_default());
        self.valid.resize((start + n).div_ceil(64), 0);
        if cell.is_some() {
            set_bits(&mut self.valid, start, start + n);
        }
    }

    /// Appends NULLs up to `n` cells (none if there are as many already).
    pub fn pad_to(&mut self, n: usize) {
        if n > self.len() {
            self.push_n(None, n - self.len());
        }
    }

    /// The values and the validity words, for handing the cells to another
    /// columnar format without copying them: `values[i]` is cell `i` when
    /// bit `i % 64` of word `i / 64` is set (least significant bit first;
    /// the default value under a NULL). Bits past the last cell are clear.
    pub fn into_parts(self) -> (Vec<T>, Vec<u64>) {
        (self.values, self.valid)
    }

    /// The cells in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<T>> + '_ {
        (0..self.values.len()).map(|i| self.get(i))
    }
}

/// Sets bits `start..end` of `words`.
fn set_bits(words: &mut [u64], start: usize, end: usize) {
    let mut i = start;
    while i < end {
        if i.is_multiple_of(64) && end - i >= 64 {
            words[i / 64] = u64::MAX;
            i += 64;
        } else {
            words[i / 64] |= 1 << (i % 64);
            i += 1;
        }
    }
}

impl<T: Copy + Default> Extend<Option<T>> for Nullable<T> {
    fn extend<I: IntoIterator<Item = Option<T>>>(&mut self, cells: I) {
        let cells = cells.into_iter();
        self.values.reserve(cells.size_hint().0);
        for c in cells {
            self.push(c);
        }
    }
}

impl<T: Copy + Default> FromIterator<Option<T>> for Nullable<T> {
    fn from_iter<I: IntoIterator<Item = Option<T>>>(cells: I) -> Self {
        let mut n = Nullable::new();
        n.extend(cells);
        n
    }
}

impl<T: Copy + Default> From<Vec<Option<T>>> for Nullable<T> {
    fn from(cells: Vec<Option<T>>) -> Self {
        cells.into_iter().collect()
    }
}

/// Equal when the cells are (NULL equals NULL; a float NaN equals no
/// value, as with `Option<f64>`).
impl<T: Copy + Default + PartialEq> PartialEq for Nullable<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Copy + Default + std::fmt::Debug> std::fmt::Debug for Nullable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Constants for [`ColumnData::Dict`].
pub struct Dict;

impl Dict {
    /// The code of a NULL cell.
    pub const NULL: u32 = u32::MAX;
}

impl Default for ColumnData {
    fn default() -> Self {
        ColumnData::Values(Vec::new())
    }
}

impl ColumnData {
    /// Number of cells.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Values(v) => v.len(),
            ColumnData::Int(v) => v.len(),
            ColumnData::Float(v) => v.len(),
            ColumnData::Dict { codes, .. } => codes.len(),
        }
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell at `row` (`None`: NULL or out of range).
    pub fn get(&self, row: usize) -> Option<Value> {
        match self {
            ColumnData::Values(v) => v.get(row)?.clone(),
            ColumnData::Int(v) => v.get(row).map(Value::Int),
            ColumnData::Float(v) => v.get(row).map(Value::Float),
            ColumnData::Dict { dict, codes } => dict.get(*codes.get(row)? as usize).cloned(),
        }
    }

    /// Whether every non-NULL cell is a number.
    pub fn is_numeric(&self) -> bool {
        match self {
            ColumnData::Int(_) | ColumnData::Float(_) => true,
            ColumnData::Values(v) => v.iter().flatten().all(|v| matches!(v, Value::Int(_) | Value::Float(_))),
            ColumnData::Dict { dict, .. } => dict.iter().all(|v| matches!(v, Value::Int(_) | Value::Float(_))),
        }
    }

    /// Appends a cell, widening a typed column to [`ColumnData::Values`]
    /// when the cell does not fit its type.
    pub fn push(&mut self, cell: Option<Value>) {
        match (&mut *self, cell) {
            (ColumnData::Values(v), c) => v.push(c),
            (ColumnData::Int(v), None) => v.push(None),
            (ColumnData::Int(v), Some(Value::Int(i))) => v.push(Some(i)),
            (ColumnData::Float(v), None) => v.push(None),
            (ColumnData::Float(v), Some(Value::Float(f))) => v.push(Some(f)),
            (ColumnData::Dict { codes, .. }, None) => Arc::make_mut(codes).push(Dict::NULL),
            (ColumnData::Dict { dict, codes }, Some(c)) => match dict.iter().position(|d| *d == c) {
                Some(i) => Arc::make_mut(codes).push(i as u32),
                None => {
                    dict.push(c);
                    Arc::make_mut(codes).push((dict.len() - 1) as u32);
                }
            },
            (_, c) => {
                let mut all: Vec<Option<Value>> = (0..self.len()).map(|r| self.get(r)).collect();
                all.push(c);
                *self = ColumnData::Values(all);
            }
        }
    }
}

/// One named column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The cells.
    pub data: ColumnData,
}

impl Column {
    /// A column of general values.
    pub fn new(name: impl Into<String>, values: Vec<Option<Value>>) -> Column {
        Column { name: name.into(), data: ColumnData::Values(values) }
    }

    /// The cell at `row`.
    pub fn get(&self, row: usize) -> Option<Value> {
        self.data.get(row)
    }

    /// All cells, in row order.
    pub fn cells(&self) -> impl Iterator<Item = Option<Value>> + '_ {
        (0..self.data.len()).map(|r| self.data.get(r))
    }
}

/// A result table (columnar). Every column has the same number of cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// The columns, in display order.
    pub columns: Vec<Column>,
}

impl Table {
    /// A table with the given column names and no rows.
    pub fn with_columns<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Table {
        Table { columns: names.into_iter().map(|n| Column::new(n, Vec::new())).collect() }
    }

    /// Number of rows.
    pub fn row_count(&self) -> usize {
        self.columns.first().map_or(0, |c| c.data.len())
    }

    /// Column names in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The column with this name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Appends a row; `row` must have one cell per column.
    ///
    /// # Panics
    /// If the row's length differs from the number of columns (a programming
    /// error in the caller, never caused by data).
    pub fn push_row(&mut self, row: Vec<Option<Value>>) {
        assert_eq!(row.len(), self.columns.len(), "row width must match the table");
        for (c, v) in self.columns.iter_mut().zip(row) {
            c.data.push(v);
        }
    }

    /// Cell at (row, column index).
    pub fn cell(&self, row: usize, col: usize) -> Option<Value> {
        self.columns.get(col)?.get(row)
    }

    /// Rows as vectors of cells (convenient in tests; copies the data).
    pub fn rows(&self) -> Vec<Vec<Option<Value>>> {
        (0..self.row_count()).map(|r| self.columns.iter().map(|c| c.get(r)).collect()).collect()
    }

    /// Writes an aligned text table: numbers right-aligned, text left-aligned,
    /// `NULL` cells empty. Cells longer than `max_width` characters are cut
    /// with `…`.
    pub fn write_aligned(&self, w: &mut dyn Write, max_width: usize) -> io::Result<()> {
        let rows = self.row_count();
        let max_width = max_width.max(4);
        let rendered: Vec<Vec<String>> = self
            .columns
            .iter()
            .map(|c| c.cells().map(|v| clip(&v.as_ref().map(display_cell).unwrap_or_default(), max_width)).collect())
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .zip(&rendered)
            .map(|(c, cells)| cells.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(c.name.chars().count()))
            .collect();
        let numeric: Vec<bool> = self.columns.iter().map(|c| c.data.is_numeric()).collect();
        let mut line = String::new();
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            pad(&mut line, &c.name, widths[i], numeric[i]);
        }
        writeln!(w, "{}", line.trim_end())?;
        for r in 0..rows {
            line.clear();
            for (i, cells) in rendered.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                pad(&mut line, &cells[r], widths[i], numeric[i]);
            }
            writeln!(w, "{}", line.trim_end())?;
        }
        Ok(())
    }

    /// Writes RFC 4180 CSV with a header row; `NULL` is an empty field.
    pub fn write_csv(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut out = io::BufWriter::new(w);
        let names: Vec<String> = self.columns.iter().map(|c| csv_field(&c.name)).collect();
        writeln!(out, "{}", names.join(","))?;
        for r in 0..self.row_count() {
            for (i, c) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                if let Some(v) = c.get(r) {
                    out.write_all(csv_field(&display_cell(&v)).as_bytes())?;
                }
            }
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Writes a JSON array with one object per row (`NULL` as `null`;
    /// non-finite floats as the strings `"NaN"`, `"inf"`, `"-inf"`).
    pub fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut out = io::BufWriter::new(w);
        out.write_all(b"[")?;
        for r in 0..self.row_count() {
            let mut obj = serde_json::Map::new();
            for c in &self.columns {
                obj.insert(c.name.clone(), c.get(r).as_ref().map_or(serde_json::Value::Null, Value::to_json));
            }
            if r > 0 {
                out.write_all(b",")?;
            }
            out.write_all(b"\n  ")?;
            serde_json::to_writer(&mut out, &obj)?;
        }
        out.write_all(if self.row_count() > 0 { b"\n]\n" } else { b"]\n" })?;
        out.flush()
    }
}

fn display_cell(v: &Value) -> String {
    v.to_string()
}

fn clip(s: &str, max: usize) -> String {
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() <= max {
        return s;
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

fn pad(line: &mut String, s: &str, width: usize, right: bool) {
    let n = s.chars().count();
    if right {
        line.extend(std::iter::repeat_n(' ', width - n));
        line.push_str(s);
    } else {
        line.push_str(s);
        line.extend(std::iter::repeat_n(' ', width - n));
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::with_columns(["name", "loss"]);
        t.push_row(vec![Some(Value::from("a,b")), Some(Value::Float(0.5))]);
        t.push_row(vec![Some(Value::from("say \"hi\"")), None]);
        t
    }

    #[test]
    fn csv_quotes() {
        let mut out = Vec::new();
        sample().write_csv(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "name,loss\n\"a,b\",0.5\n\"say \"\"hi\"\"\",\n");
    }

    #[test]
    fn json_rows() {
        let mut out = Vec::new();
        sample().write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["loss"], 0.5);
        assert!(v[1]["loss"].is_null());
    }

    #[test]
    fn nullable_cells_read_back() {
        let mut n: Nullable<i64> = Nullable::with_capacity(4);
        for i in 0..200 {
            n.push((i % 3 != 0).then_some(i));
        }
        n.push_n(Some(7), 130);
        n.push_n(None, 5);
        n.pad_to(400);
        assert_eq!(n.len(), 400);
        for i in 0..200 {
            assert_eq!(n.get(i), (i % 3 != 0).then_some(i as i64), "cell {i}");
        }
        assert!((200..330).all(|i| n.get(i) == Some(7)));
        assert!((330..400).all(|i| n.get(i).is_none()));
        assert_eq!(n.get(400), None);
        let v: Vec<Option<i64>> = n.iter().collect();
        assert_eq!(Nullable::from(v), n);
        assert_eq!(Nullable::from_values(vec![1.5, 2.5]).iter().collect::<Vec<_>>(), vec![Some(1.5), Some(2.5)]);
        assert_eq!(Nullable::<f64>::nulls(70).iter().flatten().count(), 0);
        assert_ne!(Nullable::from(vec![Some(1), None]), Nullable::from(vec![Some(1), Some(0)]));
    }

    #[test]
    fn typed_columns_widen_and_read_back() {
        let mut c = ColumnData::Float(Nullable::new());
        c.push(Some(Value::Float(1.5)));
        c.push(None);
        assert!(matches!(c, ColumnData::Float(_)));
        c.push(Some(Value::from("x")));
        assert_eq!(c, ColumnData::Values(vec![Some(Value::Float(1.5)), None, Some(Value::from("x"))]));
        let mut d = ColumnData::Dict { dict: Vec::new(), codes: Arc::default() };
        for v in ["a", "b", "a"] {
            d.push(Some(Value::from(v)));
        }
        d.push(None);
        assert_eq!(d.get(2), Some(Value::from("a")));
        assert_eq!(d.get(3), None);
        assert!(matches!(&d, ColumnData::Dict { dict, .. } if dict.len() == 2));
    }

    #[test]
    fn aligned_columns() {
        let mut out = Vec::new();
        sample().write_aligned(&mut out, 40).unwrap();
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "name      loss");
        assert_eq!(lines[1], "a,b        0.5");
        assert_eq!(lines[2], "say \"hi\"");
    }
}
