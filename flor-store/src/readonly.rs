//! A small lexical pre-check of user SQL, done before SQLite compiles it:
//! statement boundaries and leading keywords. It is one of three guards (with
//! the authorizer and `sqlite3_stmt_readonly`); its job is to give clear
//! answers (`NotReadOnly` for `DELETE FROM some_view`, a plain message for a
//! second statement) rather than to be the last line of defence.

/// What the scanner found in a SQL text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Whether the first statement starts with a keyword that writes or
    /// changes the connection (`INSERT`, `ATTACH`, `BEGIN`, ...).
    pub writes: bool,
    /// Whether anything but whitespace and comments follows the first
    /// statement's terminating `;`.
    pub trailing: bool,
    /// Whether there is no statement at all.
    pub empty: bool,
    /// The statement's first keyword after any `EXPLAIN [QUERY PLAN]`
    /// prefix, upper-cased (engines add their own writing verbs).
    #[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
    pub verb: Option<String>,
}

const WRITE_KEYWORDS: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "CREATE",
    "DROP",
    "ALTER",
    "ATTACH",
    "DETACH",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
];

/// Scans `sql`. Never fails: anything it does not understand is left to the
/// engine.
pub(crate) fn shape(sql: &str) -> Shape {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut words: Vec<String> = Vec::new();
    let mut end_of_first = None;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = b[i + 2..].windows(2).position(|w| w == b"*/").map_or(b.len(), |p| i + 2 + p + 2);
            }
            b'\'' | b'"' | b'`' => i = skip_quoted(b, i, c),
            b'[' => i = b[i..].iter().position(|&c| c == b']').map_or(b.len(), |p| i + p + 1),
            b';' => {
                end_of_first = Some(i + 1);
                break;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                    i += 1;
                }
                if words.len() < 4 {
                    words.push(sql[start..i].to_ascii_uppercase());
                }
            }
            _ => i += 1,
        }
    }
    let trailing = end_of_first.is_some_and(|e| has_content(&b[e..]));
    // The statement's verb, after any EXPLAIN [QUERY PLAN] prefix.
    let mut verb = words.iter().map(String::as_str);
    let mut first = verb.next();
    if first == Some("EXPLAIN") {
        first = verb.next();
        if first == Some("QUERY") {
            verb.next();
            first = verb.next();
        }
    }
    let writes = first.is_some_and(|w| WRITE_KEYWORDS.contains(&w));
    Shape { writes, trailing, empty: words.is_empty() && !has_content(b), verb: first.map(str::to_owned) }
}

fn skip_quoted(b: &[u8], start: usize, q: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Whether `b` holds anything but whitespace, comments and semicolons.
fn has_content(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() || c == b';' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = b[i + 2..].windows(2).position(|w| w == b"*/").map_or(b.len(), |p| i + 2 + p + 2);
            }
            _ => return true,
        }
    }
    false
}

/// Pragmas that only report something; allowed in user queries (also through
/// their table-valued forms such as `pragma_table_info('logs')`).
pub(crate) fn informational_pragma(name: &str, value: Option<&str>) -> bool {
    const WITH_ARGUMENT: &[&str] =
        &["table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list"];
    const WITHOUT_ARGUMENT: &[&str] = &[
        "collation_list",
        "compile_options",
        "database_list",
        "encoding",
        "freelist_count",
        "function_list",
        "module_list",
        "page_count",
        "page_size",
        "pragma_list",
        "schema_version",
        "user_version",
    ];
    let name = name.to_ascii_lowercase();
    WITH_ARGUMENT.contains(&name.as_str()) || (value.is_none() && WITHOUT_ARGUMENT.contains(&name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert!(!shape("SELECT 1").writes);
        assert!(!shape("  with x as (select 1) select * from x").writes);
        assert!(shape("delete from runs").writes);
        assert!(shape("/* hi */ -- there\n  INSERT INTO t VALUES (1)").writes);
        assert!(shape("EXPLAIN QUERY PLAN DELETE FROM t").writes);
        assert!(!shape("EXPLAIN QUERY PLAN SELECT 1").writes);
        assert!(shape("attach 'x' as y").writes);
        assert!(!shape("select 'delete' from t").writes);
    }

    #[test]
    fn statements() {
        assert!(!shape("SELECT 1;").trailing);
        assert!(!shape("SELECT 1; -- done\n /* really */ ;").trailing);
        assert!(shape("SELECT 1; SELECT 2").trailing);
        assert!(!shape("SELECT ';' AS \"a;b\", [c;d] FROM t").trailing);
        assert!(shape("SELECT 'it''s'; DROP TABLE t").trailing);
        assert!(shape("  -- nothing\n").empty);
        assert!(!shape("SELECT 1").empty);
    }

    #[test]
    fn pragmas() {
        assert!(informational_pragma("table_info", Some("logs")));
        assert!(informational_pragma("user_version", None));
        assert!(!informational_pragma("user_version", Some("3")));
        assert!(!informational_pragma("writable_schema", Some("1")));
        assert!(!informational_pragma("journal_mode", None));
    }
}
