//! The arena tree the matcher works on: a tree-sitter tree converted once
//! into flat vectors in preorder, with each node's subtree size, height and
//! *shape* (an interned structural id: two subtrees have the same shape
//! exactly when they are isomorphic — same kinds, same labels, same
//! children — so comparing shapes is comparing subtrees, with no hash
//! collisions).
//!
//! Only named nodes are kept; comments and other extras are dropped, so
//! comments never affect matching. Leaves are labelled with their text;
//! inner nodes with their anonymous operator tokens (`+`, `and`, `+=`), so
//! `a + b` and `a - b` are different shapes.

use std::collections::HashMap;

use flor_core::propagate::PropagateError;

/// "No node" in the index vectors.
pub(crate) const NONE: u32 = u32::MAX;

/// Default cap on the nodes of one tree; beyond it propagation fails with
/// [`PropagateError::TooLarge`] instead of using unbounded time and memory.
/// About 100 nodes per line of typical Python: roughly 20,000 lines.
pub const DEFAULT_MAX_NODES: usize = 2_000_000;

/// Environment variable that overrides [`DEFAULT_MAX_NODES`].
pub const MAX_NODES_ENV: &str = "FLOR_PROPAGATE_MAX_NODES";

/// The node limit in force (the environment override when it parses).
pub fn max_nodes() -> usize {
    std::env::var(MAX_NODES_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_NODES)
}

/// FxHash (the rustc hasher): the maps here are keyed by small integers and
/// short strings, where SipHash's DoS resistance buys nothing and costs a
/// tenth of the matching time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// Labels and shapes shared by the two trees being matched, so that equal
/// ids mean equal content across them.
#[derive(Default)]
pub(crate) struct Interner {
    labels: FxHashMap<Box<str>, u32>,
    label_text: Vec<Box<str>>,
    shapes: FxHashMap<Vec<u32>, u32>,
}

impl Interner {
    pub(crate) fn label(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.labels.get(text) {
            return id;
        }
        let id = self.label_text.len() as u32;
        self.label_text.push(text.into());
        self.labels.insert(text.into(), id);
        id
    }

    pub(crate) fn text(&self, label: u32) -> &str {
        self.label_text.get(label as usize).map_or("", |s| s)
    }

    fn shape(&mut self, key: &[u32]) -> u32 {
        if let Some(&id) = self.shapes.get(key) {
            return id;
        }
        let id = self.shapes.len() as u32;
        self.shapes.insert(key.to_vec(), id);
        id
    }
}

/// Which syntactic position a node holds in its parent, for the few that
/// matter to renaming and binding.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Other,
    /// `attr` in `x.attr`: a field name, never renamed.
    Attribute,
    /// `name` in `f(name=...)`: a keyword, never renamed.
    KeywordName,
    /// The target side of an assignment or `for`.
    Target,
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: u16,
    /// Interned label, or [`NONE`] for inner nodes without operator tokens.
    pub label: u32,
    pub parent: u32,
    first_child: u32,
    child_count: u32,
    /// Nodes in the subtree, itself included.
    pub size: u32,
    /// 1 for a leaf.
    pub height: u32,
    pub shape: u32,
    pub start: usize,
    pub end: usize,
    /// 0-based row of the first byte.
    pub row: usize,
    pub role: Role,
    pub is_identifier: bool,
}

/// A syntax tree in preorder: a node's descendants are the `size - 1`
/// nodes right after it.
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    children: Vec<u32>,
}

/// What the converter needs to know about the grammar.
pub(crate) struct Grammar {
    pub identifier_kind: u16,
    pub attribute_field: Option<u16>,
    pub name_field: Option<u16>,
    pub keyword_argument_kind: u16,
    pub left_field: Option<u16>,
    /// Kinds whose `left` child is bound (assignments, `for`, comprehension
    /// `for`), unlike the `left` operand of `a + b`.
    pub binding_kinds: Vec<u16>,
    /// The opening and closing quotes of a string literal: labelled without
    /// the quote characters (`'a'` and `"a"` are the same string; an
    /// `f"..."` keeps its `f`).
    pub quote_kinds: Vec<u16>,
}

const PUNCTUATION: &[&str] = &["(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "\"", "'"];

impl Tree {
    /// Converts `ts` (parsed from `source`) into an arena tree, failing when
    /// it has more than `max_nodes` nodes.
    pub(crate) fn build(
        ts: &tree_sitter::Tree,
        source: &str,
        grammar: &Grammar,
        interner: &mut Interner,
        max_nodes: usize,
        which: &str,
    ) -> Result<Tree, PropagateError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut ops: Vec<Option<String>> = Vec::new();
        let mut cursor = ts.walk();
        // Stack of the arena index of the nearest kept ancestor per depth.
        let mut stack: Vec<u32> = Vec::new();
        let mut parent_kind_stack: Vec<u16> = Vec::new();
        loop {
            let node = cursor.node();
            let parent = stack.last().copied().unwrap_or(NONE);
            let mut descend = false;
            if node.is_extra() {
                // comments, line continuations: not part of the structure
            } else if node.is_named() {
                if nodes.len() >= max_nodes {
                    return Err(PropagateError::TooLarge(format!(
                        "the {which} source has more than {max_nodes} syntax nodes (limit set by {MAX_NODES_ENV})"
                    )));
                }
                let field = cursor.field_id().map(|f| f.get());
                let parent_kind = parent_kind_stack.last().copied().unwrap_or(u16::MAX);
                let role = if field.is_some() && field == grammar.attribute_field {
                    Role::Attribute
                } else if field.is_some() && field == grammar.name_field && parent_kind == grammar.keyword_argument_kind
                {
                    Role::KeywordName
                } else if field.is_some() && field == grammar.left_field && grammar.binding_kinds.contains(&parent_kind)
                {
                    Role::Target
                } else {
                    Role::Other
                };
                nodes.push(Node {
                    kind: node.kind_id(),
                    label: NONE,
                    parent,
                    first_child: 0,
                    child_count: 0,
                    size: 1,
                    height: 1,
                    shape: 0,
                    start: node.start_byte(),
                    end: node.end_byte(),
                    row: node.start_position().row,
                    role,
                    is_identifier: node.kind_id() == grammar.identifier_kind,
                });
                ops.push(None);
                descend = true;
            } else if parent != NONE {
                let k = node.kind();
                if !PUNCTUATION.contains(&k) && node.child_count() == 0 {
                    let slot = &mut ops[parent as usize];
                    let s = slot.get_or_insert_with(String::new);
                    s.push_str(k);
                    s.push(' ');
                }
            }
            if descend && cursor.goto_first_child() {
                stack.push(nodes.len() as u32 - 1);
                parent_kind_stack.push(node.kind_id());
                continue;
            }
            if !descend && node.is_named() && !node.is_extra() {
                // unreachable: named nodes always descend
            }
            // Next sibling, or climb.
            loop {
                if cursor.goto_next_sibling() {
                    break;
                }
                if !cursor.goto_parent() {
                    return Ok(Self::finish(nodes, ops, source, grammar, interner));
                }
                // Leaving a node: pop it when it was kept.
                let left = cursor.node();
                if left.is_named() && !left.is_extra() {
                    stack.pop();
                    parent_kind_stack.pop();
                }
            }
        }
    }

    fn finish(
        mut nodes: Vec<Node>,
        ops: Vec<Option<String>>,
        source: &str,
        grammar: &Grammar,
        interner: &mut Interner,
    ) -> Tree {
        let n = nodes.len();
        // Children lists, in order, via counting.
        let mut counts = vec![0u32; n];
        for node in &nodes {
            if node.parent != NONE {
                counts[node.parent as usize] += 1;
            }
        }
        let mut offset = 0u32;
        for (i, node) in nodes.iter_mut().enumerate() {
            node.first_child = offset;
            node.child_count = counts[i];
            offset += counts[i];
        }
        let mut children = vec![0u32; offset as usize];
        let mut fill = vec![0u32; n];
        for i in 0..n {
            let p = nodes[i].parent;
            if p != NONE {
                let p = p as usize;
                children[(nodes[p].first_child + fill[p]) as usize] = i as u32;
                fill[p] += 1;
            }
        }
        // Labels.
        for (i, op) in ops.into_iter().enumerate() {
            let node = &nodes[i];
            let label = if node.child_count == 0 {
                let text = source.get(node.start..node.end).unwrap_or("");
                let text = if grammar.quote_kinds.contains(&node.kind) { text.trim_matches(['"', '\'']) } else { text };
                Some(interner.label(text))
            } else {
                op.map(|s| interner.label(&s))
            };
            nodes[i].label = label.unwrap_or(NONE);
        }
        // Size, height, shape bottom-up (children follow parents in preorder).
        let mut key = Vec::new();
        for i in (0..n).rev() {
            let (first, count) = (nodes[i].first_child as usize, nodes[i].child_count as usize);
            let mut size = 1;
            let mut height = 0;
            key.clear();
            key.push(nodes[i].kind as u32);
            key.push(nodes[i].label);
            for &c in &children[first..first + count] {
                let c = &nodes[c as usize];
                size += c.size;
                height = height.max(c.height);
                key.push(c.shape);
            }
            nodes[i].size = size;
            nodes[i].height = height + 1;
            nodes[i].shape = interner.shape(&key);
        }
        Tree { nodes, children }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    pub(crate) fn children(&self, i: u32) -> &[u32] {
        let n = &self.nodes[i as usize];
        &self.children[n.first_child as usize..(n.first_child + n.child_count) as usize]
    }

    pub(crate) fn parent(&self, i: u32) -> u32 {
        self.nodes[i as usize].parent
    }

    /// Whether `d` is `a` or inside it.
    pub(crate) fn contains(&self, a: u32, d: u32) -> bool {
        d >= a && d < a + self.nodes[a as usize].size
    }

    /// The subtree of `i`, `i` first.
    pub(crate) fn subtree(&self, i: u32) -> std::ops::Range<u32> {
        i..i + self.nodes[i as usize].size
    }

    /// Indices in postorder (children left to right before their parent).
    pub(crate) fn postorder(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len());
        if self.nodes.is_empty() {
            return out;
        }
        let mut stack: Vec<(u32, bool)> = vec![(0, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                out.push(i);
            } else {
                stack.push((i, true));
                for &c in self.children(i).iter().rev() {
                    stack.push((c, false));
                }
            }
        }
        out
    }
}
