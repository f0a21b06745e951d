//! A small Python scanner for `lint`: tokens with their line and column,
//! grouped into logical lines (bracketed continuations and `\` joins
//! followed), with comments dropped and strings kept as single opaque
//! tokens, so a check never matches text inside a string or a comment.
//! Plugins cannot use tree-sitter (no C in the guest); this is enough for
//! the token-level idioms framework checks look for.
//!
//! ```
//! use flor_plugin_sdk::python::{logical_lines, Kind};
//! let lines = logical_lines("x = f(1,\n      'a # b')  # c\nif x:\n    y = 2\n");
//! assert_eq!(lines.len(), 3);
//! assert_eq!(lines[0].tokens.iter().map(|t| t.text).collect::<Vec<_>>(), ["x", "=", "f", "(", "1", ",", "'a # b'", ")"]);
//! assert_eq!(lines[0].tokens[6].kind, Kind::String);
//! assert_eq!((lines[2].indent, lines[2].tokens[0].line, lines[2].tokens[0].column), (4, 4, 5));
//! ```

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or keyword (`torch`, `for`, `True`).
    Name,
    /// A numeric literal (`0`, `1e-3`, `0x1f`).
    Number,
    /// A string literal, prefix and quotes included (`f"{x}"`), however
    /// many lines it spans.
    String,
    /// An operator or delimiter (`=`, `(`, `**=`, `.`).
    Op,
}

/// One token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// What it is.
    pub kind: Kind,
    /// Its text in the source.
    pub text: &'a str,
    /// 1-based line of its first character.
    pub line: u32,
    /// 1-based column of its first character, in characters.
    pub column: u32,
}

impl Token<'_> {
    /// Whether it is the name `name`.
    pub fn is_name(&self, name: &str) -> bool {
        self.kind == Kind::Name && self.text == name
    }

    /// Whether it is the operator `op`.
    pub fn is_op(&self, op: &str) -> bool {
        self.kind == Kind::Op && self.text == op
    }
}

/// A logical line: one statement's tokens (a compound statement's header,
/// like `for x in y:`, ends at its `:` only when the body follows on later
/// lines; `if x: y()` is one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// Its indentation in columns (a tab advances to the next multiple of 8).
    pub indent: u32,
    /// Its tokens, never empty.
    pub tokens: Vec<Token<'a>>,
}

impl Line<'_> {
    /// Whether it starts with the keyword `kw` (`for`, `while`, `with`, `def`).
    pub fn starts_with(&self, kw: &str) -> bool {
        self.tokens.first().is_some_and(|t| t.is_name(kw))
            || (self.tokens.first().is_some_and(|t| t.is_name("async"))
                && self.tokens.get(1).is_some_and(|t| t.is_name(kw)))
    }
}

const OPS3: [&str; 5] = ["**=", "//=", ">>=", "<<=", "..."];
const OPS2: [&str; 19] =
    ["->", ":=", "==", "!=", "<=", ">=", "**", "//", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "@=", "<<", ">>"];

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    line: u32,
    column: u32,
    depth: u32,
}

impl<'a> Lexer<'a> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }

    fn byte(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.src.len(), |&(b, _)| b)
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek(0) {
            self.i += 1;
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
    }

    fn token(&mut self, kind: Kind, start: usize, line: u32, column: u32) -> Token<'a> {
        let text = &self.src[self.byte(start)..self.byte(self.i)];
        Token { kind, text, line, column }
    }

    /// Moves past a string whose opening quote is at the position.
    fn string(&mut self) {
        let Some(q) = self.peek(0) else { return };
        let triple = self.peek(1) == Some(q) && self.peek(2) == Some(q);
        let n = if triple { 3 } else { 1 };
        (0..n).for_each(|_| self.bump());
        while let Some(c) = self.peek(0) {
            if c == '\\' {
                // Raw or not, a backslash keeps the next character (a quote
                // included) inside the string.
                self.bump();
                self.bump();
            } else if c == q && (!triple || (self.peek(1) == Some(q) && self.peek(2) == Some(q))) {
                (0..n).for_each(|_| self.bump());
                return;
            } else if c == '\n' && !triple {
                return; // unterminated: ends at the line's end
            } else {
                self.bump();
            }
        }
    }

    /// The indentation of the physical line starting at the position; moves past it.
    fn indent(&mut self) -> u32 {
        let mut width = 0;
        while let Some(c) = self.peek(0) {
            match c {
                ' ' => width += 1,
                '\t' => width = (width / 8 + 1) * 8,
                '\x0c' => width = 0,
                _ => break,
            }
            self.bump();
        }
        width
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        let c = self.peek(0)?;
        let (start, line, column) = (self.i, self.line, self.column);
        if c.is_alphabetic() || c == '_' {
            while self.peek(0).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                self.bump();
            }
            let word = self.src[self.byte(start)..self.byte(self.i)].to_ascii_lowercase();
            let prefix = matches!(word.as_str(), "r" | "b" | "u" | "f" | "rb" | "br" | "fr" | "rf" | "t" | "tr" | "rt");
            if prefix && matches!(self.peek(0), Some('\'' | '"')) {
                self.string();
                return Some(self.token(Kind::String, start, line, column));
            }
            return Some(self.token(Kind::Name, start, line, column));
        }
        if c.is_ascii_digit() || (c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit())) {
            while let Some(d) = self.peek(0) {
                let exp_sign = matches!(d, '+' | '-')
                    && self.i > start
                    && matches!(self.chars[self.i - 1].1, 'e' | 'E')
                    && !self.src[self.byte(start)..].starts_with("0x");
                if d.is_alphanumeric() || d == '_' || d == '.' || exp_sign {
                    self.bump();
                } else {
                    break;
                }
            }
            return Some(self.token(Kind::Number, start, line, column));
        }
        if c == '\'' || c == '"' {
            self.string();
            return Some(self.token(Kind::String, start, line, column));
        }
        let rest = &self.src[self.byte(self.i)..];
        let len = if OPS3.iter().any(|o| rest.starts_with(o)) {
            3
        } else if OPS2.iter().any(|o| rest.starts_with(o)) {
            2
        } else {
            1
        };
        (0..len).for_each(|_| self.bump());
        match c {
            '(' | '[' | '{' => self.depth += 1,
            ')' | ']' | '}' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Some(self.token(Kind::Op, start, line, column))
    }
}

/// The logical lines of a Python source, in order. Never fails: text that
/// is not valid Python still scans (an unterminated string ends at its
/// line's end, stray brackets are tolerated).
pub fn logical_lines(src: &str) -> Vec<Line<'_>> {
    let mut lx = Lexer { src, chars: src.char_indices().collect(), i: 0, line: 1, column: 1, depth: 0 };
    let mut out = Vec::new();
    let mut current: Option<Line<'_>> = None;
    let mut at_line_start = true;
    while lx.peek(0).is_some() {
        if at_line_start && lx.depth == 0 && current.is_none() {
            let indent = lx.indent();
            current = Some(Line { indent, tokens: Vec::new() });
            at_line_start = false;
            continue;
        }
        at_line_start = false;
        match lx.peek(0) {
            Some('#') => {
                while lx.peek(0).is_some_and(|c| c != '\n') {
                    lx.bump();
                }
            }
            Some('\\')
                if matches!(lx.peek(1), Some('\n')) || (lx.peek(1) == Some('\r') && lx.peek(2) == Some('\n')) =>
            {
                while lx.peek(0) != Some('\n') {
                    lx.bump();
                }
                lx.bump();
            }
            Some('\n') => {
                lx.bump();
                at_line_start = true;
                if lx.depth == 0 {
                    if let Some(l) = current.take().filter(|l| !l.tokens.is_empty()) {
                        out.push(l);
                    }
                }
            }
            Some(c) if c.is_whitespace() => lx.bump(),
            _ => {
                if let Some(t) = lx.next_token() {
                    current.get_or_insert(Line { indent: 0, tokens: Vec::new() }).tokens.push(t);
                }
            }
        }
    }
    out.extend(current.filter(|l| !l.tokens.is_empty()));
    out
}

/// The dotted name starting at token `i` (`torch.backends.cudnn`), and
/// the index after it; `None` when token `i` is not a name.
pub fn dotted(tokens: &[Token<'_>], i: usize) -> Option<(String, usize)> {
    let first = tokens.get(i).filter(|t| t.kind == Kind::Name)?;
    let mut name = first.text.to_owned();
    let mut j = i + 1;
    while tokens.get(j).is_some_and(|t| t.is_op(".")) && tokens.get(j + 1).is_some_and(|t| t.kind == Kind::Name) {
        name.push('.');
        name.push_str(tokens[j + 1].text);
        j += 2;
    }
    Some((name, j))
}

/// Whether token `i` starts a dotted name (it is not an attribute of
/// something before it).
pub fn starts_dotted(tokens: &[Token<'_>], i: usize) -> bool {
    tokens.get(i).is_some_and(|t| t.kind == Kind::Name) && !(i > 0 && tokens[i - 1].is_op("."))
}

/// The index of the bracket closing the one at `open`.
pub fn closing(tokens: &[Token<'_>], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        if t.kind != Kind::Op {
            continue;
        }
        match t.text {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// One argument of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg<'t, 'a> {
    /// Its keyword (`shuffle` in `shuffle=True`), if any.
    pub keyword: Option<&'a str>,
    /// Its value's tokens.
    pub value: &'t [Token<'a>],
}

/// The arguments of the call whose `(` is token `open` (split at the
/// commas outside nested brackets), or `None` when it is not closed in
/// these tokens.
pub fn call_args<'t, 'a>(tokens: &'t [Token<'a>], open: usize) -> Option<Vec<Arg<'t, 'a>>> {
    let close = closing(tokens, open)?;
    let inner = &tokens[open + 1..close];
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for j in 0..=inner.len() {
        let t = inner.get(j);
        match t {
            Some(t) if t.kind == Kind::Op && matches!(t.text, "(" | "[" | "{") => depth += 1,
            Some(t) if t.kind == Kind::Op && matches!(t.text, ")" | "]" | "}") => depth = depth.saturating_sub(1),
            Some(t) if !(depth == 0 && t.is_op(",")) => {}
            _ => {
                let part = &inner[start..j];
                start = j + 1;
                if part.is_empty() {
                    continue;
                }
                let keyword =
                    (part.len() > 1 && part[0].kind == Kind::Name && part[1].is_op("=")).then_some(part[0].text);
                let value = if keyword.is_some() { &part[2..] } else { part };
                out.push(Arg { keyword, value });
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(l: &Line<'_>) -> Vec<String> {
        l.tokens.iter().map(|t| t.text.to_owned()).collect()
    }

    #[test]
    fn strings_and_comments_are_opaque() {
        let src = "a = '''x = 1\n# not a comment\n'''  # torch.backends.cudnn.benchmark = True\nb = r'\\'' + \"q\\\"\" + f\"{c}\"\n";
        let lines = logical_lines(src);
        assert_eq!(lines.len(), 2);
        assert_eq!(texts(&lines[0]), ["a", "=", "'''x = 1\n# not a comment\n'''"]);
        assert_eq!(texts(&lines[1]), ["b", "=", "r'\\''", "+", "\"q\\\"\"", "+", "f\"{c}\""]);
        assert_eq!((lines[1].tokens[0].line, lines[1].tokens[0].column), (4, 1));
    }

    #[test]
    fn brackets_and_backslashes_join_lines_and_indents_are_measured() {
        let src = "for i in range(\n  3):\n\tx = 1 + \\\n  2\n    \n  # c\n\n  y = {'a': [1,\n 2]}\n";
        let lines = logical_lines(src);
        assert_eq!(lines.iter().map(|l| l.indent).collect::<Vec<_>>(), [0, 8, 2]);
        assert_eq!(texts(&lines[1]), ["x", "=", "1", "+", "2"]);
        assert_eq!((lines[2].tokens[0].line, lines[2].tokens[0].column), (8, 3));
        assert!(lines[0].starts_with("for"));
    }

    #[test]
    fn numbers_operators_and_unicode_columns() {
        let lines = logical_lines("é = 1e-3**2 // 0x1F >>= ...\nz=.5\n");
        assert_eq!(texts(&lines[0]), ["é", "=", "1e-3", "**", "2", "//", "0x1F", ">>=", "..."]);
        assert_eq!(lines[0].tokens[1].column, 3);
        assert_eq!(texts(&lines[1]), ["z", "=", ".5"]);
    }

    #[test]
    fn unterminated_input_still_scans() {
        let lines = logical_lines("x = 'abc\ny = (1,\n");
        assert_eq!(texts(&lines[0]), ["x", "=", "'abc"]);
        assert_eq!(texts(&lines[1]), ["y", "=", "(", "1", ","]);
    }

    #[test]
    fn dotted_names_and_call_arguments() {
        let line = &logical_lines("DataLoader(ds, batch_size=f(a, b), shuffle=True,)\n")[0];
        assert_eq!(dotted(&line.tokens, 0), Some(("DataLoader".to_owned(), 1)));
        let args = call_args(&line.tokens, 1).unwrap();
        assert_eq!(args.len(), 3);
        assert_eq!((args[0].keyword, args[0].value.len()), (None, 1));
        assert_eq!((args[1].keyword, args[1].value.len()), (Some("batch_size"), 6));
        assert_eq!((args[2].keyword, args[2].value[0].text), (Some("shuffle"), "True"));
        let chain = &logical_lines("torch.backends.cudnn.benchmark = True")[0];
        assert_eq!(dotted(&chain.tokens, 0).unwrap(), ("torch.backends.cudnn.benchmark".to_owned(), 7));
        assert!(!starts_dotted(&chain.tokens, 2));
        assert_eq!(closing(&line.tokens, 1), Some(line.tokens.len() - 1));
        assert_eq!(call_args(&logical_lines("f(")[0].tokens, 1), None);
    }
}
