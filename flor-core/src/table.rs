//! Query results: a small columnar table with terminal, CSV and JSON output.

use std::io::{self, Write};

use crate::value::Value;

/// One named column; `None` cells are SQL `NULL` / missing values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// One cell per row.
    pub values: Vec<Option<Value>>,
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
        Table { columns: names.into_iter().map(|n| Column { name: n.into(), values: Vec::new() }).collect() }
    }

    /// Number of rows.
    pub fn row_count(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
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
            c.values.push(v);
        }
    }

    /// Cell at (row, column index).
    pub fn cell(&self, row: usize, col: usize) -> Option<&Value> {
        self.columns.get(col)?.values.get(row)?.as_ref()
    }

    /// Rows as vectors of cells (convenient in tests; copies the data).
    pub fn rows(&self) -> Vec<Vec<Option<Value>>> {
        (0..self.row_count()).map(|r| self.columns.iter().map(|c| c.values[r].clone()).collect()).collect()
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
            .map(|c| {
                c.values.iter().map(|v| clip(&v.as_ref().map(display_cell).unwrap_or_default(), max_width)).collect()
            })
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .zip(&rendered)
            .map(|(c, cells)| cells.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(c.name.chars().count()))
            .collect();
        let numeric: Vec<bool> = self
            .columns
            .iter()
            .map(|c| c.values.iter().flatten().all(|v| matches!(v, Value::Int(_) | Value::Float(_))))
            .collect();
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
                if let Some(v) = &c.values[r] {
                    out.write_all(csv_field(&display_cell(v)).as_bytes())?;
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
                obj.insert(c.name.clone(), c.values[r].as_ref().map_or(serde_json::Value::Null, Value::to_json));
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
