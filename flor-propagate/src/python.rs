//! Python specifics: the tree-sitter-python grammar, which node kinds are
//! statements and blocks, parse errors with positions, the incremental
//! reparse. (flor's own API in Python syntax is `flor_api`.)

use flor_core::propagate::PropagateError;
use tree_sitter::{InputEdit, Language, Node, Parser, Point};

use crate::similar::Kinds;
use crate::tree::Grammar;

/// Statement node kinds (children of `module` and `block`).
const STATEMENTS: &[&str] = &[
    "expression_statement",
    "return_statement",
    "if_statement",
    "for_statement",
    "while_statement",
    "with_statement",
    "try_statement",
    "function_definition",
    "class_definition",
    "decorated_definition",
    "pass_statement",
    "import_statement",
    "import_from_statement",
    "future_import_statement",
    "assert_statement",
    "delete_statement",
    "raise_statement",
    "global_statement",
    "nonlocal_statement",
    "break_statement",
    "continue_statement",
    "print_statement",
    "exec_statement",
    "match_statement",
    "type_alias_statement",
];

/// Names a statement may use without the old version defining them.
pub(crate) const BUILTINS: &[&str] = &[
    "flor",
    "print",
    "len",
    "range",
    "enumerate",
    "zip",
    "sum",
    "min",
    "max",
    "abs",
    "round",
    "float",
    "int",
    "str",
    "bool",
    "list",
    "dict",
    "tuple",
    "set",
    "sorted",
    "reversed",
    "any",
    "all",
    "isinstance",
    "getattr",
    "hasattr",
    "type",
    "repr",
    "map",
    "filter",
    "iter",
    "next",
    "open",
    "format",
    "divmod",
    "pow",
    "hash",
    "id",
    "vars",
    "locals",
    "globals",
    "object",
    "super",
    "self",
    "None",
    "True",
    "False",
    "Exception",
    "ValueError",
];

/// The tree-sitter grammar and the kind ids the propagator looks at.
pub(crate) struct Python {
    pub language: Language,
    pub grammar: Grammar,
    statement_kinds: Vec<u16>,
    /// What statement similarity looks at.
    pub kinds: Kinds,
    pub module_kind: u16,
    pub block_kind: u16,
}

impl Python {
    pub(crate) fn new() -> Self {
        let language: Language = tree_sitter_python::LANGUAGE.into();
        let id = |k: &str| language.id_for_node_kind(k, true);
        let field = |f: &str| language.field_id_for_name(f).map(|f| f.get());
        let grammar = Grammar {
            identifier_kind: id("identifier"),
            attribute_field: field("attribute"),
            name_field: field("name"),
            keyword_argument_kind: id("keyword_argument"),
            left_field: field("left"),
            binding_kinds: ["assignment", "augmented_assignment", "for_statement", "for_in_clause"]
                .iter()
                .map(|k| id(k))
                .collect(),
            quote_kinds: vec![id("string_start"), id("string_end")],
        };
        let statement_kinds: Vec<u16> = STATEMENTS.iter().map(|k| id(k)).filter(|&k| k != 0).collect();
        let kinds = Kinds {
            statements: statement_kinds.clone(),
            block: id("block"),
            expression_statement: id("expression_statement"),
            call: id("call"),
            attribute: id("attribute"),
        };
        Python { statement_kinds, kinds, module_kind: id("module"), block_kind: id("block"), grammar, language }
    }

    pub(crate) fn is_statement(&self, kind: u16) -> bool {
        self.statement_kinds.contains(&kind)
    }

    pub(crate) fn is_block(&self, kind: u16) -> bool {
        kind == self.block_kind || kind == self.module_kind
    }

    /// Parses `source`; a syntax error becomes [`PropagateError::Unparsable`]
    /// naming `which` source and the position of the first error.
    pub(crate) fn parse(&self, source: &str, which: &'static str) -> Result<tree_sitter::Tree, PropagateError> {
        let tree = self.parse_lenient(source).ok_or_else(|| PropagateError::Unparsable {
            which,
            line: 1,
            column: 1,
            message: "the parser gave up".into(),
        })?;
        if let Some((line, column, message)) = first_error(tree.root_node()) {
            return Err(PropagateError::Unparsable { which, line, column, message });
        }
        Ok(tree)
    }

    /// Parses without judging the result.
    pub(crate) fn parse_lenient(&self, source: &str) -> Option<tree_sitter::Tree> {
        let mut parser = Parser::new();
        parser.set_language(&self.language).ok()?;
        parser.parse(source, None)
    }

    /// Whether `source` parses without errors.
    pub(crate) fn parses(&self, source: &str) -> bool {
        self.parse_lenient(source).is_some_and(|t| !t.root_node().has_error())
    }

    /// Whether `output` parses without errors, where `output` is the source
    /// of `before` with text inserted at `inserts` (byte offset in `output`,
    /// length), in increasing order. Reparses incrementally from `before`.
    pub(crate) fn reparses(&self, before: &tree_sitter::Tree, output: &str, inserts: &[(usize, usize)]) -> bool {
        let mut tree = before.clone();
        for &(start, len) in inserts {
            let start_position = point_at(output, start);
            tree.edit(&InputEdit {
                start_byte: start,
                old_end_byte: start,
                new_end_byte: start + len,
                start_position,
                old_end_position: start_position,
                new_end_position: point_at(output, start + len),
            });
        }
        let mut parser = Parser::new();
        if parser.set_language(&self.language).is_err() {
            return false;
        }
        parser.parse(output, Some(&tree)).is_some_and(|t| !t.root_node().has_error())
    }
}

/// Row and column (in bytes) of byte `at` of `src`.
pub(crate) fn point_at(src: &str, at: usize) -> Point {
    let before = &src.as_bytes()[..at.min(src.len())];
    let row = before.iter().filter(|&&b| b == b'\n').count();
    let column = before.iter().rev().position(|&b| b == b'\n').unwrap_or(before.len());
    Point { row, column }
}

/// The first `ERROR` or `MISSING` node: 1-based line and column, and what it is.
fn first_error(root: Node) -> Option<(usize, usize, String)> {
    if !root.has_error() {
        return None;
    }
    let mut cursor = root.walk();
    loop {
        let node = cursor.node();
        if node.is_error() || node.is_missing() {
            let p = node.start_position();
            let message =
                if node.is_missing() { format!("missing `{}`", node.kind()) } else { "unexpected syntax".to_string() };
            return Some((p.row + 1, p.column + 1, message));
        }
        if node.has_error() && cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return Some((1, 1, "syntax error".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_reparse_agrees_with_a_full_parse() {
        let py = Python::new();
        let old = "for x in y:\n    a = 1\n    b = 2\n";
        let before = py.parse(old, "old").unwrap();
        let good = "for x in y:\n    a = 1\n    c = a\n    b = 2\n";
        assert!(py.reparses(&before, good, &[(24, 10)]));
        let bad = "for x in y:\n    a = 1\n    c = (\n    b = 2\n";
        assert!(!py.reparses(&before, bad, &[(24, 10)]));
        assert!(py.parses(good) && !py.parses(bad));
    }

    #[test]
    fn points_count_bytes_from_the_line_start() {
        assert_eq!(point_at("ab\ncd", 4), Point { row: 1, column: 1 });
        assert_eq!(point_at("ab", 0), Point { row: 0, column: 0 });
    }
}
