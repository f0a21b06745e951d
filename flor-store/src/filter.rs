//! Filtering rows of a table with a user's SQL predicate (`flor replay
//! --where 'lr > 0.01 AND epochs >= 5'`).
//!
//! The table is loaded into a private in-memory SQLite database, its column
//! names quoted as identifiers and its cells bound as parameters; the
//! predicate is the only text the user supplies, and it runs as the `WHERE`
//! clause of one read-only `SELECT` (a second statement, a write or a
//! syntax error is reported, naming the predicate).

use flor_core::{StoreError, StoreResult, Table, Value};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;

const BACKEND: &str = "sqlite";

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn bad(predicate: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Query { backend: BACKEND, message: format!("in the predicate `{predicate}`: {message}") }
}

/// Whether the parentheses of `predicate` balance outside its quoted
/// strings and identifiers (so it cannot close the `WHERE (...)` it sits in),
/// with no statement separator or comment.
fn self_contained(predicate: &str) -> bool {
    let mut depth = 0i64;
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    for c in predicate.chars() {
        match quote {
            Some(q) if c == q || (q == '[' && c == ']') => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' | '[' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return false;
                    }
                }
                ';' => return false,
                '-' if prev == '-' => return false,
                '*' if prev == '/' => return false,
                _ => {}
            },
        }
        prev = c;
    }
    depth == 0 && quote.is_none()
}

/// Which rows of `table` satisfy `predicate`, a SQL boolean expression over
/// its column names (a `NULL` result counts as false).
pub fn filter_rows(table: &Table, predicate: &str) -> StoreResult<Vec<bool>> {
    let backend = |e: rusqlite::Error| StoreError::Backend {
        backend: BACKEND,
        message: format!("cannot evaluate a predicate: {e}"),
        source: Some(Box::new(e)),
    };
    let conn = Connection::open_in_memory().map_err(backend)?;
    let names = table.column_names();
    let cols: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
    let mut create = String::from("CREATE TABLE t (flor_row INTEGER PRIMARY KEY");
    for c in &cols {
        create.push_str(", ");
        create.push_str(c);
    }
    create.push(')');
    conn.execute(&create, []).map_err(backend)?;
    let placeholders: Vec<String> = (1..=cols.len() + 1).map(|i| format!("?{i}")).collect();
    let insert = format!(
        "INSERT INTO t (flor_row{}{}) VALUES ({})",
        if cols.is_empty() { "" } else { ", " },
        cols.join(", "),
        placeholders.join(", ")
    );
    {
        let mut stmt = conn.prepare(&insert).map_err(backend)?;
        for r in 0..table.row_count() {
            let mut params: Vec<Sql> = vec![Sql::Integer(r as i64)];
            for c in 0..cols.len() {
                params.push(match table.cell(r, c) {
                    None => Sql::Null,
                    Some(Value::Int(i)) => Sql::Integer(i),
                    Some(Value::Float(f)) => Sql::Real(f),
                    Some(Value::Bool(b)) => Sql::Integer(i64::from(b)),
                    Some(Value::Text(s)) | Some(Value::Json(s)) => Sql::Text(s.to_string()),
                });
            }
            stmt.execute(rusqlite::params_from_iter(params)).map_err(backend)?;
        }
    }
    if !self_contained(predicate) {
        return Err(bad(predicate, "one expression expected: unbalanced parentheses or quotes, a `;` or a comment"));
    }
    conn.pragma_update(None, "query_only", true).map_err(backend)?;
    let sql = format!("SELECT flor_row FROM t WHERE ({predicate})");
    let (mut stmt, tail) = match conn.prepare(&sql) {
        Ok(s) => (s, ""),
        Err(rusqlite::Error::MultipleStatement) => {
            return Err(bad(predicate, "one expression expected, not statements"))
        }
        Err(e) => return Err(bad(predicate, e)),
    };
    if !tail.is_empty() || !stmt.readonly() {
        return Err(bad(predicate, "one read-only expression expected"));
    }
    let mut keep = vec![false; table.row_count()];
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(|e| bad(predicate, e))?;
    for r in rows {
        let r = r.map_err(|e| bad(predicate, e))?;
        if let Some(k) = usize::try_from(r).ok().and_then(|i| keep.get_mut(i)) {
            *k = true;
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flor_core::table::Column;

    fn table() -> Table {
        Table {
            columns: vec![
                Column::new(
                    "tstamp",
                    vec![Some(Value::Text("a".into())), Some(Value::Text("b".into())), Some(Value::Text("c".into()))],
                ),
                Column::new("lr", vec![Some(Value::Float(0.1)), Some(Value::Float(0.001)), None]),
                Column::new("my \"odd\" col", vec![Some(Value::Int(5)), Some(Value::Int(3)), Some(Value::Int(9))]),
            ],
        }
    }

    #[test]
    fn predicates_select_rows() {
        assert_eq!(filter_rows(&table(), "lr > 0.01").unwrap(), vec![true, false, false]);
        assert_eq!(filter_rows(&table(), "\"my \"\"odd\"\" col\" >= 5").unwrap(), vec![true, false, true]);
        assert_eq!(filter_rows(&table(), "lr IS NULL OR tstamp = 'b'").unwrap(), vec![false, true, true]);
    }

    #[test]
    fn bad_predicates_are_clear_errors() {
        for p in ["lr >", "nope > 1", "1); DROP TABLE t; --", "1) UNION SELECT 1 --x"] {
            let e = filter_rows(&table(), p).unwrap_err().to_string();
            assert!(e.contains("predicate"), "{p}: {e}");
        }
    }
}
