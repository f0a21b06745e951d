//! flor's Python API as the syntax tree shows it: which names a script
//! binds to `flordb`, which calls are `flor.log`, `flor.loop` and
//! `flor.iteration`, the script's log statements
//! ([`LanguagePropagator::log_statements`](flor_core::propagate::LanguagePropagator::log_statements))
//! and the flor loops around a statement
//! ([`LanguagePropagator::loop_scope`](flor_core::propagate::LanguagePropagator::loop_scope)).
//!
//! Everything is read from tree-sitter's tree, never from the text: a call
//! in a comment or a string is no call, a header over several lines is one
//! header, indentation (tabs or spaces) does not matter. Whatever the tree
//! cannot settle (a loop built outside a loop header, a name that is not a
//! literal, a statement in a function called from who knows where) makes the
//! scope [`LoopScope::Dynamic`], never a guess.

use std::collections::HashMap;

use flor_core::propagate::{LogStatement, LoopScope, PropagateError};
use tree_sitter::Node;

use crate::python::Python;

/// How the single source of these questions is named in errors.
pub(crate) const WHICH: &str = "input";

/// The module flor's Python front end is imported as.
const MODULE: &str = "flordb";

/// The name scripts use when they do not import [`MODULE`] themselves.
const CONVENTIONAL_ALIAS: &str = "flor";

/// Calls that consume an iterable at once: a `flor.loop` inside one runs
/// all its iterations before the `for` body starts.
const EAGER: &[&str] = &["list", "tuple", "sorted", "set", "frozenset", "dict", "sum", "max", "min", "any", "all"];

/// Expressions whose inside runs later or elsewhere than the header.
const DEFERRING: &[&str] =
    &["lambda", "list_comprehension", "set_comprehension", "dictionary_comprehension", "generator_expression"];

/// Compound statements: a call in their header is not a statement of its own.
const COMPOUND: &[&str] = &[
    "if_statement",
    "for_statement",
    "while_statement",
    "with_statement",
    "try_statement",
    "function_definition",
    "class_definition",
    "decorated_definition",
    "match_statement",
];

/// The functions of flordb this crate looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Log,
    Loop,
    Iteration,
    Checkpointing,
}

impl Api {
    /// Every function, by its name in flordb.
    const ALL: [(&'static str, Api); 4] =
        [("log", Api::Log), ("loop", Api::Loop), ("iteration", Api::Iteration), ("checkpointing", Api::Checkpointing)];

    fn named(name: &str) -> Option<Api> {
        Api::ALL.iter().find(|(n, _)| *n == name).map(|&(_, api)| api)
    }
}

/// Source text of `node`, or empty.
pub(crate) fn text<'s>(node: Node, src: &'s [u8]) -> &'s str {
    node.utf8_text(src).unwrap_or("")
}

/// Every node of the tree under `root`, in preorder.
pub(crate) fn preorder(root: Node) -> Vec<Node> {
    let mut out = Vec::new();
    let mut cursor = root.walk();
    loop {
        out.push(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return out;
            }
        }
    }
}

/// The names a script binds to flordb: module aliases (`import flordb as
/// flor`, `import flordb`) and imported functions (`from flordb import log`).
pub(crate) struct Bindings {
    modules: Vec<String>,
    functions: Vec<(String, Api)>,
}

impl Bindings {
    pub(crate) fn of(nodes: &[Node], src: &[u8]) -> Bindings {
        let squeeze = |n: Node| text(n, src).split_whitespace().collect::<String>();
        let mut b = Bindings { modules: Vec::new(), functions: Vec::new() };
        let mut imported = false;
        for &node in nodes {
            match node.kind() {
                "import_statement" => {
                    let mut c = node.walk();
                    for name in node.children_by_field_name("name", &mut c) {
                        match name.kind() {
                            "dotted_name" if squeeze(name) == MODULE => {
                                imported = true;
                                b.modules.push(MODULE.into());
                            }
                            "aliased_import" => {
                                let target = name.child_by_field_name("name").map(squeeze);
                                if let (Some(MODULE), Some(alias)) =
                                    (target.as_deref(), name.child_by_field_name("alias"))
                                {
                                    imported = true;
                                    b.modules.push(text(alias, src).into());
                                }
                            }
                            _ => {}
                        }
                    }
                }
                "import_from_statement" => {
                    if node.child_by_field_name("module_name").map(squeeze).as_deref() != Some(MODULE) {
                        continue;
                    }
                    imported = true;
                    let mut c = node.walk();
                    for child in node.named_children(&mut c) {
                        if child.kind() == "wildcard_import" {
                            b.functions.extend(Api::ALL.iter().map(|&(name, api)| (name.to_string(), api)));
                        }
                    }
                    let mut c = node.walk();
                    for name in node.children_by_field_name("name", &mut c) {
                        let (function, local) = match name.kind() {
                            "dotted_name" => (squeeze(name), squeeze(name)),
                            "aliased_import" => (
                                name.child_by_field_name("name").map(squeeze).unwrap_or_default(),
                                name.child_by_field_name("alias").map(|a| text(a, src).to_string()).unwrap_or_default(),
                            ),
                            _ => continue,
                        };
                        if let Some(api) = Api::named(&function) {
                            b.functions.push((local, api));
                        }
                    }
                }
                _ => {}
            }
        }
        if !imported {
            b.modules.push(CONVENTIONAL_ALIAS.into());
        }
        b
    }

    /// Which flordb function `expr` names (`flor.loop`, or `loop` after
    /// `from flordb import loop`).
    fn api(&self, expr: Node, src: &[u8]) -> Option<Api> {
        match expr.kind() {
            "attribute" => {
                let object = expr.child_by_field_name("object")?;
                if object.kind() != "identifier" || !self.modules.iter().any(|m| m == text(object, src)) {
                    return None;
                }
                Api::named(text(expr.child_by_field_name("attribute")?, src))
            }
            "identifier" => {
                let name = text(expr, src);
                self.functions.iter().find(|(local, _)| local == name).map(|&(_, api)| api)
            }
            _ => None,
        }
    }

    /// Which flordb function `call` calls.
    pub(crate) fn called(&self, call: Node, src: &[u8]) -> Option<Api> {
        if call.kind() != "call" {
            return None;
        }
        self.api(call.child_by_field_name("function")?, src)
    }
}

/// The name argument of a flor call: first positional argument or `name=`.
enum NameArg {
    Literal(String),
    /// Not a string literal: its source text.
    Other(String),
    Missing,
}

fn name_arg(call: Node, src: &[u8]) -> NameArg {
    let Some(args) = call.child_by_field_name("arguments") else { return NameArg::Missing };
    if args.kind() != "argument_list" {
        return NameArg::Other(text(args, src).into());
    }
    let mut keyword = None;
    let mut splat = None;
    let mut c = args.walk();
    for arg in args.named_children(&mut c) {
        match arg.kind() {
            "comment" => {}
            "keyword_argument" => {
                if arg.child_by_field_name("name").is_some_and(|n| text(n, src) == "name") {
                    keyword = arg.child_by_field_name("value");
                }
            }
            "dictionary_splat" => splat = Some(arg),
            "list_splat" => return NameArg::Other(text(arg, src).into()),
            _ => return literal_or_text(arg, src),
        }
    }
    match (keyword, splat) {
        (Some(value), _) => literal_or_text(value, src),
        (None, Some(s)) => NameArg::Other(text(s, src).into()),
        (None, None) => NameArg::Missing,
    }
}

fn literal_or_text(node: Node, src: &[u8]) -> NameArg {
    match string_literal(node, src) {
        Some(s) => NameArg::Literal(s),
        None => NameArg::Other(text(node, src).split_whitespace().collect::<Vec<_>>().join(" ")),
    }
}

/// The value of a string literal without run-time parts: `"loss"`,
/// `'loss'`, `r"a\b"`, `"a" "b"`, `f"loss"`; `None` for f-strings with
/// fields, bytes, and escapes other than the common ones.
fn string_literal(node: Node, src: &[u8]) -> Option<String> {
    match node.kind() {
        "concatenated_string" => {
            let mut out = String::new();
            let mut c = node.walk();
            for part in node.named_children(&mut c) {
                if part.kind() != "comment" {
                    out += &string_literal(part, src)?;
                }
            }
            Some(out)
        }
        "parenthesized_expression" => {
            let mut c = node.walk();
            let inner: Vec<Node> = node.named_children(&mut c).filter(|n| n.kind() != "comment").collect();
            match inner[..] {
                [only] => string_literal(only, src),
                _ => None,
            }
        }
        "string" => {
            let mut out = String::new();
            let (mut raw, mut format) = (false, false);
            let mut c = node.walk();
            for part in node.children(&mut c) {
                match part.kind() {
                    "string_start" => {
                        let prefix = text(part, src).trim_end_matches(['"', '\'']).to_ascii_lowercase();
                        if prefix.contains('b') || prefix.contains('t') {
                            return None; // bytes, template strings
                        }
                        raw = prefix.contains('r');
                        format = prefix.contains('f');
                    }
                    "string_content" => {
                        let t = text(part, src);
                        let t = if format { t.replace("{{", "{").replace("}}", "}") } else { t.to_string() };
                        out += &(if raw { Some(t) } else { unescape(&t) })?;
                    }
                    "string_end" => {}
                    _ => return None, // interpolation
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// Python's common escapes; `None` for the others (`\x41`, `\N{...}`).
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\n' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The simple statement a `flor.log` call is part of (the call runs when
/// the statement does): `None` inside a lambda, or in a compound
/// statement's header.
fn enclosing_simple_statement<'t>(py: &Python, call: Node<'t>) -> Option<Node<'t>> {
    let mut n = call;
    loop {
        n = n.parent()?;
        if n.kind() == "lambda" {
            return None;
        }
        if py.is_statement(n.kind_id()) {
            let in_block = n.parent().is_some_and(|p| py.is_block(p.kind_id()));
            return (!COMPOUND.contains(&n.kind()) && in_block).then_some(n);
        }
    }
}

/// See [`LanguagePropagator::log_statements`](flor_core::propagate::LanguagePropagator::log_statements).
pub(crate) fn log_statements(py: &Python, source: &str, names: &[&str]) -> Result<Vec<LogStatement>, PropagateError> {
    let tree = py.parse(source, WHICH)?;
    let src = source.as_bytes();
    let nodes = preorder(tree.root_node());
    let bindings = Bindings::of(&nodes, src);
    let mut out: Vec<LogStatement> = Vec::new();
    for &call in &nodes {
        if bindings.called(call, src) != Some(Api::Log) {
            continue;
        }
        let Some(statement) = enclosing_simple_statement(py, call) else { continue };
        let NameArg::Literal(name) = name_arg(call, src) else { continue };
        if !names.is_empty() && !names.contains(&name.as_str()) {
            continue;
        }
        let found = LogStatement { line: statement.start_position().row + 1, name };
        if !out.contains(&found) {
            out.push(found);
        }
    }
    out.sort_by_key(|s| s.line); // stable: a statement's names stay in call order
    Ok(out)
}

/// A recognized flor loop header: a `for` statement whose iterable calls
/// `flor.loop`, or a `with` statement whose context manager is
/// `flor.iteration`.
struct Header {
    /// Byte range of the header's statement.
    start: usize,
    end: usize,
    /// The loop's name, or why it is not known.
    name: Result<String, String>,
}

/// The flor loops of a script.
struct Loops {
    /// By the id of the `for`/`with` statement.
    headers: HashMap<usize, Header>,
    /// Uses of `flor.loop`/`flor.iteration` outside any header: the reason
    /// every scope is dynamic.
    unrecognized: Option<String>,
}

impl Loops {
    fn of(py: &Python, nodes: &[Node], src: &[u8], bindings: &Bindings) -> Loops {
        let mut loops = Loops { headers: HashMap::new(), unrecognized: None };
        for &node in nodes {
            if !matches!(node.kind(), "attribute" | "identifier") {
                continue;
            }
            let Some(api @ (Api::Loop | Api::Iteration)) = bindings.api(node, src) else { continue };
            let line = node.start_position().row + 1;
            let shown = text(node, src).split_whitespace().collect::<String>();
            let parent = node.parent();
            let call = parent.filter(|p| p.kind() == "call" && p.child_by_field_name("function") == Some(node));
            let Some(call) = call else {
                if is_reference(node) {
                    loops.unrecognize(format!(
                        "`{shown}` at line {line} is used other than called in a loop header, so the syntax does not \
                         show which statements its loop repeats"
                    ));
                }
                continue;
            };
            let header = match api {
                Api::Loop => for_header(py, call, src),
                _ => with_header(call),
            };
            let header = match header {
                Ok(h) => h,
                Err(how) => {
                    loops.unrecognize(format!(
                        "`{shown}(...)` at line {line} is {how}, so the syntax does not show which statements its \
                         loop repeats"
                    ));
                    continue;
                }
            };
            let name = match name_arg(call, src) {
                NameArg::Literal(name) => Ok(name),
                NameArg::Other(t) => Err(format!("the loop at line {line} is named by `{t}`, not a string literal")),
                NameArg::Missing => Err(format!("the loop at line {line} has no name")),
            };
            match loops.headers.get_mut(&header.id()) {
                Some(h) => {
                    h.name = Err(format!("the loop header at line {line} calls flor's loops more than once"));
                }
                None => {
                    let range = header.byte_range();
                    loops.headers.insert(header.id(), Header { start: range.start, end: range.end, name });
                }
            }
        }
        loops
    }

    fn unrecognize(&mut self, reason: String) {
        self.unrecognized.get_or_insert(reason);
    }
}

/// The flor loops of a script (see [`Loops`]): each header statement (`for`
/// or `with`) with its loop's name when the syntax shows it, in source
/// order.
pub(crate) fn flor_loops<'t>(
    py: &Python,
    nodes: &[Node<'t>],
    src: &[u8],
    bindings: &Bindings,
) -> Vec<(Node<'t>, Option<String>)> {
    let loops = Loops::of(py, nodes, src, bindings);
    nodes.iter().filter_map(|n| loops.headers.get(&n.id()).map(|h| (*n, h.name.as_ref().ok().cloned()))).collect()
}

/// Whether an identifier or attribute naming a flordb function is a use of
/// it (not an import, an attribute name of something else, a keyword).
pub(crate) fn is_reference(node: Node) -> bool {
    is_reference_under(node, node.parent())
}

/// [`is_reference`] with `node`'s parent known (tree-sitter's
/// `Node::parent` walks down from the root each time).
pub(crate) fn is_reference_under(node: Node, parent: Option<Node>) -> bool {
    let Some(parent) = parent else { return true };
    if matches!(parent.kind(), "dotted_name" | "aliased_import" | "import_from_statement" | "import_statement") {
        return false;
    }
    let is_field = |f: &str| parent.child_by_field_name(f) == Some(node);
    match parent.kind() {
        "attribute" => !is_field("attribute"),
        "keyword_argument" => !is_field("name"),
        "function_definition" | "class_definition" | "parameters" | "default_parameter" => false,
        _ => true,
    }
}

/// The `for` statement whose iterable holds `call` (`for e in
/// flor.loop(...)`, `for i, b in enumerate(flor.loop(...))`), or how the
/// call is used instead.
fn for_header<'t>(py: &Python, call: Node<'t>, src: &[u8]) -> Result<Node<'t>, &'static str> {
    let mut n = call;
    loop {
        let Some(parent) = n.parent() else { return Err("not the iterable of a `for` statement") };
        if parent.kind() == "for_statement" {
            return if parent.child_by_field_name("right") == Some(n) {
                Ok(parent)
            } else {
                Err("not the iterable of a `for` statement")
            };
        }
        if DEFERRING.contains(&parent.kind()) {
            return Err("inside a lambda or comprehension");
        }
        if parent.kind() == "call"
            && parent.child_by_field_name("function").is_some_and(|f| EAGER.contains(&text(f, src)))
        {
            return Err("consumed at once by the call around it");
        }
        if py.is_statement(parent.kind_id()) || py.is_block(parent.kind_id()) {
            return Err("not the iterable of a `for` statement");
        }
        n = parent;
    }
}

/// The `with` statement whose context manager is `call` (`with
/// flor.iteration(...)`, `... as it`), or how the call is used instead.
pub(crate) fn with_header(call: Node) -> Result<Node, &'static str> {
    const HOW: &str = "not the context manager of a `with` statement";
    let mut n = call;
    loop {
        let parent = n.parent().ok_or(HOW)?;
        match parent.kind() {
            "as_pattern" | "parenthesized_expression" => n = parent,
            "with_item" if parent.child_by_field_name("value") == Some(n) => {
                let clause = parent.parent().filter(|c| c.kind() == "with_clause").ok_or(HOW)?;
                return clause.parent().filter(|s| s.kind() == "with_statement").ok_or(HOW);
            }
            _ => return Err(HOW),
        }
    }
}

/// The statement starting at `line` (1-based): the first in preorder whose
/// parent is a block, as propagation counts statements.
fn statement_at<'t>(py: &Python, nodes: &[Node<'t>], line: usize) -> Option<Node<'t>> {
    let row = line.checked_sub(1)?;
    nodes.iter().copied().find(|n| {
        n.start_position().row == row
            && py.is_statement(n.kind_id())
            && n.parent().is_some_and(|p| py.is_block(p.kind_id()))
    })
}

/// See [`LanguagePropagator::loop_scope`](flor_core::propagate::LanguagePropagator::loop_scope).
pub(crate) fn loop_scope(py: &Python, source: &str, line: usize) -> Result<LoopScope, PropagateError> {
    let tree = py.parse(source, WHICH)?;
    let src = source.as_bytes();
    let nodes = preorder(tree.root_node());
    let statement = statement_at(py, &nodes, line).ok_or(PropagateError::NoStatement { which: WHICH, line })?;
    let bindings = Bindings::of(&nodes, src);
    let loops = Loops::of(py, &nodes, src, &bindings);
    if let Some(reason) = loops.unrecognized {
        return Ok(LoopScope::Dynamic { reason });
    }
    // Innermost first, up to the first function boundary.
    let mut names: Vec<String> = Vec::new();
    let mut cur = statement;
    while let Some(parent) = cur.parent() {
        let in_body = parent.child_by_field_name("body") == Some(cur);
        match parent.kind() {
            "function_definition" | "lambda" => {
                if names.is_empty() {
                    let name = parent.child_by_field_name("name").map_or("<lambda>", |n| text(n, src));
                    let at = parent.start_position().row + 1;
                    return Ok(LoopScope::Dynamic {
                        reason: format!("inside function `{name}` (line {at}), which may be called from any loop"),
                    });
                }
                break;
            }
            "for_statement" | "with_statement" | "while_statement" if in_body => {
                match loops.headers.get(&parent.id()) {
                    Some(h) => match &h.name {
                        Ok(name) => names.push(name.clone()),
                        Err(reason) => return Ok(LoopScope::Dynamic { reason: reason.clone() }),
                    },
                    // A plain loop that also runs a flor loop: a statement of
                    // it outside that flor loop runs between its iterations.
                    None if names.is_empty() && parent.kind() != "with_statement" => {
                        let range = parent.byte_range();
                        if loops.headers.values().any(|h| range.start <= h.start && h.end <= range.end) {
                            let (kind, at) = (
                                &parent.kind()[..parent.kind().len() - "_statement".len()],
                                parent.start_position().row + 1,
                            );
                            return Ok(LoopScope::Dynamic {
                            reason: format!(
                                "inside the `{kind}` loop at line {at}, which also runs a flor loop: the statement runs \
                                 between that loop's iterations"
                            ),
                        });
                        }
                    }
                    None => {}
                }
            }
            _ => {}
        }
        cur = parent;
    }
    names.reverse();
    let before = loops.headers.values().any(|h| h.start < statement.start_byte());
    Ok(LoopScope::Static { after_first_loop: !names.is_empty() || before, loops: names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(expr: &str) -> Option<String> {
        let py = Python::new();
        let source = format!("x = {expr}\n");
        let tree = py.parse(&source, "new").unwrap();
        let nodes = preorder(tree.root_node());
        let right = nodes.iter().find(|n| n.kind() == "assignment").unwrap().child_by_field_name("right").unwrap();
        string_literal(right, source.as_bytes())
    }

    #[test]
    fn string_literals_and_what_is_not_one() {
        assert_eq!(literal("\"loss\"").as_deref(), Some("loss"));
        assert_eq!(literal("'loss'").as_deref(), Some("loss"));
        assert_eq!(literal("\"\"\"loss\"\"\"").as_deref(), Some("loss"));
        assert_eq!(literal("r'a\\b'").as_deref(), Some("a\\b"));
        assert_eq!(literal("'it\\'s'").as_deref(), Some("it's"));
        assert_eq!(literal("\"a\" 'b'").as_deref(), Some("ab"));
        assert_eq!(literal("(\"a\")").as_deref(), Some("a"));
        assert_eq!(literal("f\"loss\"").as_deref(), Some("loss"));
        assert_eq!(literal("f\"{{x}}\"").as_deref(), Some("{x}"));
        assert_eq!(literal("f\"loss_{i}\""), None);
        assert_eq!(literal("b\"loss\""), None);
        assert_eq!(literal("'\\x41'"), None);
        assert_eq!(literal("name"), None);
        assert_eq!(literal("\"a\" + \"b\""), None);
    }
}
