//! Filtering rows of a table with a user's SQL predicate (`flor replay
//! --where 'lr > 0.01 AND epochs >= 5'`).
//!
//! The table is loaded into a private in-memory SQLite database, its column
//! names quoted as identifiers and its cells bound as parameters; the
//! predicate is the only text the user supplies, and it runs as the `WHERE`
//! clause of one read-only `SELECT` (a second statement, a write or a
//! syntax error is reported, naming the predicate). A predicate is at most
//! [`MAX_PREDICATE_BYTES`] long with parentheses nested at most
//! [`MAX_PREDICATE_DEPTH`] deep, and [`filter_rows_within`] stops it after
//! a time limit (a subquery can run for ever).

use std::time::Duration;

use flor_core::{StoreError, StoreResult, Table, Value};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;

use crate::limit::Deadline;

const BACKEND: &str = "sqlite";

/// The longest predicate accepted, in bytes (64 KiB).
pub const MAX_PREDICATE_BYTES: usize = 64 << 10;

/// The deepest nesting of parentheses accepted in a predicate.
pub const MAX_PREDICATE_DEPTH: usize = 64;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn bad(predicate: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Query { backend: BACKEND, message: format!("in the predicate `{predicate}`: {message}") }
}

/// Why `predicate` is not one self-contained expression within the limits:
/// too long, parentheses nested too deep, or parentheses that do not
/// balance outside its quoted strings and identifiers (it could close the
/// `WHERE (...)` it sits in), a statement separator or a comment.
fn check_shape(predicate: &str) -> Result<(), String> {
    if predicate.len() > MAX_PREDICATE_BYTES {
        return Err(format!("{} bytes long; at most {MAX_PREDICATE_BYTES}", predicate.len()));
    }
    if max_depth(predicate).is_some_and(|d| d > MAX_PREDICATE_DEPTH) {
        return Err(format!("parentheses nested more than {MAX_PREDICATE_DEPTH} deep"));
    }
    if !self_contained(predicate) {
        return Err("one expression expected: unbalanced parentheses or quotes, a `;` or a comment".into());
    }
    Ok(())
}

/// The deepest nesting of parentheses outside quotes (`None`: unbalanced).
fn max_depth(predicate: &str) -> Option<usize> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    for c in predicate.chars() {
        match quote {
            Some(q) if c == q || (q == '[' && c == ']') => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' | '[' => quote = Some(c),
                '(' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' => depth = depth.checked_sub(1)?,
                _ => {}
            },
        }
    }
    Some(deepest)
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
/// its column names (a `NULL` result counts as false). No time limit: see
/// [`filter_rows_within`].
pub fn filter_rows(table: &Table, predicate: &str) -> StoreResult<Vec<bool>> {
    filter_rows_within(table, predicate, None)
}

/// [`filter_rows`], the predicate stopped after `limit` (`None`: no limit)
/// with [`StoreError::TimedOut`].
pub fn filter_rows_within(table: &Table, predicate: &str, limit: Option<Duration>) -> StoreResult<Vec<bool>> {
    check_shape(predicate).map_err(|m| bad(predicate, m))?;
    let backend = |e: rusqlite::Error| StoreError::Backend {
        backend: BACKEND,
        message: format!("cannot evaluate a predicate: {e}"),
        source: Some(Box::new(e)),
    };
    let mut conn = Connection::open_in_memory().map_err(backend)?;
    let deadline = Deadline::install(&mut conn).map_err(backend)?;
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
    conn.pragma_update(None, "query_only", true).map_err(backend)?;
    let armed = deadline.arm(limit);
    match select_rows(&conn, predicate, table.row_count()) {
        Err(_) if armed.passed() => Err(StoreError::TimedOut { backend: BACKEND, limit: limit.unwrap_or_default() }),
        answer => answer,
    }
}

/// The rows of table `t` in `conn` (of `rows` rows) that `predicate` keeps.
fn select_rows(conn: &Connection, predicate: &str, rows: usize) -> StoreResult<Vec<bool>> {
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
    let mut keep = vec![false; rows];
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
    fn long_deep_and_endless_predicates_are_clear_errors() {
        let long = format!("lr > 0 OR {}", "lr > 1 OR ".repeat(MAX_PREDICATE_BYTES / 10) + "lr > 2");
        let e = filter_rows(&table(), &long).unwrap_err().to_string();
        assert!(e.contains("bytes long; at most 65536"), "{}", &e[e.len() - 80..]);
        let deep = format!("{}lr > 0{}", "(".repeat(MAX_PREDICATE_DEPTH + 1), ")".repeat(MAX_PREDICATE_DEPTH + 1));
        let e = filter_rows(&table(), &deep).unwrap_err().to_string();
        assert!(e.contains("nested more than 64 deep"), "{}", &e[e.len() - 80..]);
        let ok = format!("{}lr > 0{}", "(".repeat(MAX_PREDICATE_DEPTH), ")".repeat(MAX_PREDICATE_DEPTH));
        assert_eq!(filter_rows(&table(), &ok).unwrap(), vec![true, true, false]);
        let endless = "lr > (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c)";
        let started = std::time::Instant::now();
        match filter_rows_within(&table(), endless, Some(Duration::from_millis(200))) {
            Err(e @ StoreError::TimedOut { .. }) => assert!(e.to_string().contains("time limit (0.2 s)"), "{e}"),
            other => panic!("expected a time-out, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn bad_predicates_are_clear_errors() {
        for p in ["lr >", "nope > 1", "1); DROP TABLE t; --", "1) UNION SELECT 1 --x"] {
            let e = filter_rows(&table(), p).unwrap_err().to_string();
            assert!(e.contains("predicate"), "{p}: {e}");
        }
    }
}
