//! Statements from the SDK's Python scanner (no parser: the guest carries
//! no tree-sitter). Its logical lines (strings opaque, comments dropped,
//! brackets and backslashes joined) are split at `;`, and a compound
//! statement's inline body (`for x in y: f(x)`) becomes a statement of its
//! own, indented one column deeper than its header.

use flor_plugin_sdk::python;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An identifier or keyword.
    Name,
    /// An operator or delimiter.
    Op,
    /// A string literal (any prefix, any quotes).
    Str,
    /// A number.
    Num,
}

/// One token and where it starts (1-based line, column in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    pub(crate) kind: Kind,
    pub(crate) text: String,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

impl Tok {
    /// Whether this is the operator or keyword `s`.
    pub(crate) fn is(&self, s: &str) -> bool {
        matches!(self.kind, Kind::Op | Kind::Name) && self.text == s
    }
}

/// A statement: its tokens and its indentation (tabs to multiples of 8).
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub(crate) indent: u32,
    pub(crate) toks: Vec<Tok>,
}

impl Stmt {
    /// Whether it starts with the keyword `kw`.
    pub(crate) fn starts(&self, kw: &str) -> bool {
        self.toks.first().is_some_and(|t| t.kind == Kind::Name && t.text == kw)
    }

    /// Whether it opens a block (ends with `:`).
    pub(crate) fn is_header(&self) -> bool {
        self.toks.last().is_some_and(|t| t.is(":"))
            && self.toks.first().is_some_and(|t| COMPOUND.contains(&t.text.as_str()))
    }
}

/// Keywords that start a compound statement.
const COMPOUND: [&str; 12] =
    ["for", "while", "if", "elif", "else", "with", "try", "except", "finally", "def", "class", "async"];

/// The statements of a Python source text: the SDK scanner's logical
/// lines, split at `;` and after compound headers.
pub(crate) fn statements(src: &str) -> Vec<Stmt> {
    let mut out = Vec::new();
    for line in python::logical_lines(src) {
        let toks = line
            .tokens
            .iter()
            .map(|t| Tok {
                kind: match t.kind {
                    python::Kind::Name => Kind::Name,
                    python::Kind::Number => Kind::Num,
                    python::Kind::String => Kind::Str,
                    python::Kind::Op => Kind::Op,
                },
                text: t.text.to_owned(),
                line: t.line,
                col: t.column,
            })
            .collect();
        split(toks, line.indent, &mut out);
    }
    out
}

/// Splits a logical line at top-level `;` and after a compound header's `:`.
fn split(toks: Vec<Tok>, indent: u32, out: &mut Vec<Stmt>) {
    let mut depth = 0usize;
    let mut cur: Vec<Tok> = Vec::new();
    let mut indent_now = indent;
    for t in toks {
        let top = depth == 0;
        match t.text.as_str() {
            "(" | "[" | "{" if t.kind == Kind::Op => depth += 1,
            ")" | "]" | "}" if t.kind == Kind::Op => depth = depth.saturating_sub(1),
            _ => {}
        }
        if top && t.is(";") {
            if !cur.is_empty() {
                out.push(Stmt { indent: indent_now, toks: std::mem::take(&mut cur) });
            }
            continue;
        }
        let ends_header = top
            && t.is(":")
            && cur.first().is_some_and(|f| COMPOUND.contains(&f.text.as_str()) && f.kind == Kind::Name)
            && !cur.iter().any(|x| x.is("lambda"));
        cur.push(t);
        if ends_header {
            out.push(Stmt { indent: indent_now, toks: std::mem::take(&mut cur) });
            indent_now += 1;
        }
    }
    if !cur.is_empty() {
        out.push(Stmt { indent: indent_now, toks: cur });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<(u32, String)> {
        statements(src)
            .iter()
            .map(|s| (s.indent, s.toks.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ")))
            .collect()
    }

    #[test]
    fn strings_comments_and_continuations() {
        let src =
            "x = f(a,  # comment ( [\n  'b)', \"\"\"c\n)\"\"\") ; y = 2\nfor i in r: g(i)\n\tz = rb'\\'' \\\n  + 1\n";
        let got = texts(src);
        assert_eq!(got[0], (0, "x = f ( a , 'b)' , \"\"\"c\n)\"\"\" )".to_string()));
        assert_eq!(got[1], (0, "y = 2".to_string()));
        assert_eq!(got[2], (0, "for i in r :".to_string()));
        assert_eq!(got[3], (1, "g ( i )".to_string()));
        assert_eq!(got[4], (8, "z = rb'\\'' + 1".to_string()));
    }

    #[test]
    fn positions_are_one_based_characters() {
        let st = statements("a = 1\n  é = 'x' ; bb = 3\n");
        let bb = st[2].toks.first().unwrap();
        assert_eq!((bb.line, bb.col), (2, 13));
    }

    #[test]
    fn unterminated_strings_and_odd_bytes_do_not_panic() {
        for src in ["'abc", "\"\"\"abc", "x = (", ")))", "\\", "a\\\r\nb", "1e+5 .5 0x_f", "\u{feff}x=1"] {
            let _ = statements(src);
        }
    }
}
