//! User queries (`Store::query`) on SQLite: the read-only rule (lexical
//! pre-check, authorizer, `stmt.readonly()`), engine errors as
//! [`StoreError::Query`], and result columns in their most compact form.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flor_core::store::{StoreError, StoreResult};
use flor_core::table::{Column, ColumnData, Dict, Nullable, Table};
use flor_core::value::Value;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::ErrorCode;

use super::{as_text, SqliteStore, BACKEND};
use crate::readonly;

impl SqliteStore {
    /// Runs one user query: the lexical pre-check, then compiled and run
    /// under the read-only authorizer, refused unless `stmt.readonly()`,
    /// and stopped after `limit` ([`StoreError::TimedOut`]).
    pub(super) fn run_query(&self, sql: &str, limit: Option<Duration>) -> StoreResult<Table> {
        let shape = readonly::shape(sql);
        if shape.empty {
            return Err(StoreError::Query { backend: BACKEND, message: "the query is empty".into() });
        }
        if shape.writes {
            return Err(StoreError::NotReadOnly { sql: sql.to_owned() });
        }
        if shape.trailing {
            return Err(StoreError::Query {
                backend: BACKEND,
                message: "only one statement per query is allowed (remove the text after the first `;`)".into(),
            });
        }
        let _guard = Restrict::new(&self.restricted);
        let armed = self.deadline.arm(limit);
        match self.run_restricted(sql) {
            Err(_) if armed.passed() => {
                Err(StoreError::TimedOut { backend: BACKEND, limit: limit.unwrap_or_default() })
            }
            answer => answer,
        }
    }

    /// Compiles and runs a checked user query (see [`SqliteStore::run_query`]).
    fn run_restricted(&self, sql: &str) -> StoreResult<Table> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.query_error(sql, e))?;
        if !st.readonly() {
            return Err(StoreError::NotReadOnly { sql: sql.to_owned() });
        }
        let names: Vec<String> = st.column_names().map(str::to_owned).collect();
        let mut cells: Vec<Cells> = names.iter().map(|_| Cells::Nulls(0)).collect();
        let mut rows = st.query([]).map_err(|e| self.query_error(sql, e))?;
        while let Some(r) = rows.next().map_err(|e| self.query_error(sql, e))? {
            for (i, col) in cells.iter_mut().enumerate() {
                col.push(r.get_ref(i).map_err(|e| self.query_error(sql, e))?);
            }
        }
        Ok(Table { columns: names.into_iter().zip(cells).map(|(name, c)| Column { name, data: c.finish() }).collect() })
    }

    fn query_error(&self, sql: &str, e: rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::SqlInputError { error, msg, offset, .. } if error.code == ErrorCode::Unknown => {
                StoreError::Query { backend: BACKEND, message: format!("{msg} (at byte {offset} of the query)") }
            }
            rusqlite::Error::SqliteFailure(error, _) if error.code == ErrorCode::AuthorizationForStatementDenied => {
                StoreError::NotReadOnly { sql: sql.to_owned() }
            }
            rusqlite::Error::SqliteFailure(error, msg)
                if matches!(
                    error.code,
                    ErrorCode::Unknown | ErrorCode::TypeMismatch | ErrorCode::TooBig | ErrorCode::ConstraintViolation
                ) =>
            {
                StoreError::Query { backend: BACKEND, message: msg.unwrap_or_else(|| error.to_string()) }
            }
            rusqlite::Error::MultipleStatement => StoreError::Query {
                backend: BACKEND,
                message: "only one statement per query is allowed (remove the text after the first `;`)".into(),
            },
            rusqlite::Error::Empty => StoreError::Query { backend: BACKEND, message: "the query is empty".into() },
            e => self.fail("run a query", e),
        }
    }
}

/// Sets the read-only flag for the authorizer while alive.
pub(super) struct Restrict<'a>(&'a AtomicBool);

impl<'a> Restrict<'a> {
    fn new(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::SeqCst);
        Restrict(flag)
    }
}

impl Drop for Restrict<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The authorizer: everything while unrestricted; only reads while a user
/// query is being compiled or run. SQLite calls it before a statement takes
/// effect, even for pragmas that act at compile time.
pub(super) fn authorize(restricted: &AtomicBool, ctx: AuthContext<'_>) -> Authorization {
    if !restricted.load(Ordering::SeqCst) {
        return Authorization::Allow;
    }
    match ctx.action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Function { .. } | AuthAction::Recursive => {
            Authorization::Allow
        }
        AuthAction::Pragma { pragma_name, pragma_value }
            if readonly::informational_pragma(pragma_name, pragma_value) =>
        {
            Authorization::Allow
        }
        _ => Authorization::Deny,
    }
}

/// A query result cell: SQLite's storage class decides the type (blobs come
/// back as hex text).
fn cell(v: ValueRef<'_>) -> Option<Value> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(Value::Int(i)),
        ValueRef::Real(f) => Some(Value::Float(f)),
        ValueRef::Text(t) => Some(Value::Text(String::from_utf8_lossy(t).into())),
        ValueRef::Blob(b) => Some(Value::Text(hex(b).into())),
    }
}

/// Builds one column of a query result in the most compact form its cells
/// allow: integers or floats as typed columns, text dictionary-encoded
/// (query results repeat `tstamp`, names, ...), anything mixed as general
/// values. Every form reads back exactly the cells [`cell`] gives.
enum Cells {
    /// Only NULLs so far.
    Nulls(usize),
    Int(Nullable<i64>),
    Float(Nullable<f64>),
    Text {
        dict: Vec<Value>,
        index: HashMap<Arc<str>, u32>,
        codes: Vec<u32>,
    },
    Values(Vec<Option<Value>>),
}

impl Cells {
    fn push(&mut self, v: ValueRef<'_>) {
        loop {
            match (&mut *self, v) {
                (Cells::Nulls(n), ValueRef::Null) => *n += 1,
                (Cells::Int(c), ValueRef::Null) => c.push(None),
                (Cells::Int(c), ValueRef::Integer(i)) => c.push(Some(i)),
                (Cells::Float(c), ValueRef::Null) => c.push(None),
                (Cells::Float(c), ValueRef::Real(f)) => c.push(Some(f)),
                (Cells::Text { codes, .. }, ValueRef::Null) => codes.push(Dict::NULL),
                (Cells::Text { dict, index, codes }, ValueRef::Text(_) | ValueRef::Blob(_)) => {
                    let text = match v {
                        ValueRef::Blob(b) => Cow::Owned(hex(b)),
                        _ => as_text(v),
                    };
                    let code = match index.get(&*text) {
                        Some(&code) => code,
                        None => {
                            let s: Arc<str> = text.into();
                            let code = dict.len() as u32;
                            dict.push(Value::Text(Arc::clone(&s)));
                            index.insert(s, code);
                            code
                        }
                    };
                    codes.push(code);
                }
                (Cells::Values(c), v) => c.push(cell(v)),
                // The first non-NULL cell picks the form; then push it.
                (Cells::Nulls(n), ValueRef::Integer(_)) => {
                    *self = Cells::Int(Nullable::nulls(*n));
                    continue;
                }
                (Cells::Nulls(n), ValueRef::Real(_)) => {
                    *self = Cells::Float(Nullable::nulls(*n));
                    continue;
                }
                (Cells::Nulls(n), ValueRef::Text(_) | ValueRef::Blob(_)) => {
                    *self = Cells::Text { dict: Vec::new(), index: HashMap::new(), codes: vec![Dict::NULL; *n] };
                    continue;
                }
                // A cell of another type: general values from here on.
                (_, _) => {
                    let data = std::mem::replace(self, Cells::Nulls(0)).finish();
                    *self = Cells::Values((0..data.len()).map(|r| data.get(r)).collect());
                    continue;
                }
            }
            return;
        }
    }

    fn finish(self) -> ColumnData {
        match self {
            Cells::Nulls(n) => ColumnData::Values(vec![None; n]),
            Cells::Int(c) => ColumnData::Int(c),
            Cells::Float(c) => ColumnData::Float(c),
            Cells::Text { dict, codes, .. } => ColumnData::Dict { dict, codes: Arc::new(codes) },
            Cells::Values(c) => ColumnData::Values(c),
        }
    }
}

/// Upper-case hex, like SQLite's `hex()`.
pub(super) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(DIGITS[(c >> 4) as usize] as char);
        s.push(DIGITS[(c & 15) as usize] as char);
    }
    s
}
