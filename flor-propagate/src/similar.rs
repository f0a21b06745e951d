//! How alike two statements are, for the statements GumTree leaves
//! unmatched because they were edited: `total += F.nll_loss(out, y,
//! reduction="sum").item()` against `total += F.nll_loss(out, y,
//! size_average=False).data[0]`, `scaler.step(optimizer)` against
//! `optimizer.step()`.
//!
//! A statement is reduced to a [`Profile`] (its leaf labels split by
//! role: assignment targets, the operator, called names, the rest) and two
//! profiles are compared by the Dice similarity of those multisets,
//! weighted by what identifies a statement: an assignment by its targets
//! first, a call by the names it calls. Compound statements (`for`, `if`,
//! `with`, ...) are compared by their header and their body separately, so
//! that an `if` whose condition resembles another's but whose body has
//! nothing in common is not taken for it.

use crate::tree::{Role, Tree, NONE};

/// Smallest [`similarity`] for two statements to be taken for the same
/// statement edited.
pub(crate) const MIN_SIMILARITY: f64 = 0.5;

/// Smallest [`similarity`] for an old statement to stand in for an edited
/// one when it is the only place left for it (between the counterparts of
/// its unchanged neighbours); the outcome reports the similarity.
pub(crate) const LOW_SIMILARITY: f64 = 0.2;

/// The node kinds the comparison looks at.
#[derive(Clone, Debug)]
pub(crate) struct Kinds {
    /// Statement kinds (children of blocks).
    pub statements: Vec<u16>,
    /// `block` (the body of a compound statement).
    pub block: u16,
    /// `expression_statement`.
    pub expression_statement: u16,
    /// `call`.
    pub call: u16,
    /// `attribute` (`a.b`).
    pub attribute: u16,
}

impl Kinds {
    pub(crate) fn is_statement(&self, kind: u16) -> bool {
        self.statements.contains(&kind)
    }
}

/// What a statement is made of, as sorted label multisets.
#[derive(Clone, Debug, Default)]
pub(crate) struct Profile {
    /// The statement's kind; for an expression statement the kind of the
    /// expression (assignment, augmented assignment, call, ...).
    kind: (u16, u16),
    /// The operator of an (augmented) assignment.
    op: u32,
    /// Leaves of assignment targets.
    targets: Vec<u32>,
    /// Names of called functions and methods (`f` in `f(x)`, `step` in
    /// `opt.step()`).
    calls: Vec<u32>,
    /// Leaves outside the targets and outside nested blocks.
    header: Vec<u32>,
    /// Leaves inside nested blocks (the body of a compound statement).
    body: Vec<u32>,
    compound: bool,
}

impl Profile {
    /// The profile of statement `s` of `t`, each leaf label passed through
    /// `label` (renames).
    pub(crate) fn of(t: &Tree, s: u32, kinds: &Kinds, label: &dyn Fn(u32) -> u32) -> Profile {
        let node = t.node(s);
        let inner = if node.kind == kinds.expression_statement {
            t.children(s).first().map_or(u16::MAX, |&c| t.node(c).kind)
        } else {
            u16::MAX
        };
        let mut p = Profile { kind: (node.kind, inner), op: NONE, ..Profile::default() };
        if inner != u16::MAX {
            if let Some(&e) = t.children(s).first() {
                p.op = t.node(e).label;
            }
        }
        // Walk the subtree once, knowing for each node whether it is under
        // a target and under a nested block.
        let mut flags = vec![(false, false); node.size as usize];
        for x in t.subtree(s) {
            let parent = t.parent(x);
            let (in_target, in_body) =
                if x == s || parent == NONE { (false, false) } else { flags[(parent - s) as usize] };
            let n = t.node(x);
            let in_target = x != s && (in_target || n.role == Role::Target);
            let in_body = x != s && (in_body || n.kind == kinds.block);
            if n.kind == kinds.block && x != s {
                p.compound = true;
            }
            if t.children(x).is_empty() {
                let l = label(x);
                if in_body {
                    p.body.push(l);
                } else if in_target {
                    p.targets.push(l);
                } else {
                    p.header.push(l);
                }
            } else {
                flags[(x - s) as usize] = (in_target, in_body);
            }
            if n.kind == kinds.call && !in_body {
                if let Some(&f) = t.children(x).first() {
                    let callee =
                        if t.node(f).kind == kinds.attribute { t.children(f).last().copied() } else { Some(f) };
                    if let Some(c) = callee.filter(|&c| t.children(c).is_empty()) {
                        p.calls.push(label(c));
                    }
                }
            }
        }
        for v in [&mut p.targets, &mut p.calls, &mut p.header, &mut p.body] {
            v.sort_unstable();
        }
        p
    }

    /// Whether the statement holds a block (`for`, `if`, `def`, ...).
    pub(crate) fn is_compound(&self) -> bool {
        self.compound
    }

    /// Dice similarity of the assignment targets of two statements.
    pub(crate) fn target_dice(&self, other: &Profile) -> f64 {
        dice(&self.targets, &other.targets)
    }

    /// Whether the statement is made of nothing that can be compared (`pass`).
    fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.header.is_empty() && self.body.is_empty()
    }
}

/// Dice similarity of two sorted multisets; 0 when both are empty.
pub(crate) fn dice(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

/// How alike two statements are, from 0 (nothing in common, or different
/// kinds) to 1 (the same leaves in the same roles).
///
/// - Different kinds (an assignment and a call, a `for` and a `while`)
///   are never alike.
/// - An assignment is identified by its targets (`total += ...` is not
///   `hits += ...` however alike the right sides): targets weigh 0.4, the
///   called names 0.3, the other leaves 0.3; with no target in common (a
///   renamed variable) at most 0.6, for right sides of three leaves or more.
/// - A call statement by the names it calls (0.3) and its leaves (0.7).
/// - A compound statement by its header and its body, half each.
pub(crate) fn similarity(a: &Profile, b: &Profile) -> f64 {
    if a.kind != b.kind || a.compound != b.compound || a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a.compound {
        return 0.5 * dice(&a.header, &b.header) + 0.5 * dice(&a.body, &b.body);
    }
    if !a.targets.is_empty() || !b.targets.is_empty() {
        if a.op != b.op {
            return 0.0;
        }
        let rest = dice(&a.header, &b.header);
        let targets = dice(&a.targets, &b.targets);
        if targets == 0.0 {
            // A renamed target: only when the right sides are substantial
            // and alike (`x = 0` is not `y = 0`).
            return if a.header.len().min(b.header.len()) >= 3 {
                0.6 * (0.5 * calls_dice(a, b) + 0.5 * rest)
            } else {
                0.0
            };
        }
        return 0.4 * targets + 0.3 * calls_dice(a, b) + 0.3 * rest;
    }
    if !a.calls.is_empty() || !b.calls.is_empty() {
        return 0.3 * calls_dice(a, b) + 0.7 * dice(&a.header, &b.header);
    }
    dice(&a.header, &b.header)
}

/// Dice of the called names; 1 when neither calls anything.
fn calls_dice(a: &Profile, b: &Profile) -> f64 {
    if a.calls.is_empty() && b.calls.is_empty() {
        1.0
    } else {
        dice(&a.calls, &b.calls)
    }
}

/// The leaves of statement `s` outside nested blocks (its header), for
/// telling whether an anchor is unchanged: a `for` whose body was edited
/// is still the same `for` to place a statement after.
pub(crate) fn header_leaves(t: &Tree, s: u32, kinds: &Kinds, label: &dyn Fn(u32) -> u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut skip_until = 0u32;
    for x in t.subtree(s) {
        if x < skip_until {
            continue;
        }
        if x != s && t.node(x).kind == kinds.block {
            skip_until = x + t.node(x).size;
            continue;
        }
        if t.children(x).is_empty() {
            out.push(label(x));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::Python;
    use crate::tree::{Interner, DEFAULT_MAX_NODES};

    /// Similarity of the first statements of `a` and `b`.
    fn sim(a: &str, b: &str) -> f64 {
        let py = Python::new();
        let mut interner = Interner::default();
        let mut profile = |src: &str| {
            let ts = py.parse(src, "input").expect("parses");
            let t = Tree::build(&ts, src, &py.grammar, &mut interner, DEFAULT_MAX_NODES, "input").expect("builds");
            let s = t.children(0)[0];
            Profile::of(&t, s, &py.kinds, &|i| t.node(i).label)
        };
        let (pa, pb) = (profile(a), profile(b));
        similarity(&pa, &pb)
    }

    #[test]
    fn an_edited_statement_is_more_like_its_old_self_than_its_neighbours() {
        let new = "total += F.nll_loss(out, y, reduction='sum').item()";
        let own = sim(new, "total += F.nll_loss(out, y, size_average=False).data[0]");
        assert!(own >= MIN_SIMILARITY, "{own}");
        // Another accumulator with a similar right side is not it.
        let other = sim(new, "hits += pred.eq(y.view_as(pred)).sum().item()");
        assert!(other < MIN_SIMILARITY && other < own / 2.0, "{other} vs {own}");
        // Another operator is not it.
        assert_eq!(sim(new, "total = F.nll_loss(out, y, size_average=False).data[0]"), 0.0);
    }

    #[test]
    fn calls_are_compared_by_what_they_call() {
        let step = sim("scaler.step(optimizer)", "optimizer.step()");
        assert!(step >= MIN_SIMILARITY, "{step}");
        assert!(sim("scaler.step(optimizer)", "optimizer.zero_grad()") < step);
        assert!(sim("scaler.scale(loss).backward()", "loss.backward()") >= MIN_SIMILARITY);
        // A call and an assignment are different kinds of statement.
        assert_eq!(sim("loss.backward()", "loss = criterion(out, y)"), 0.0);
    }

    #[test]
    fn quotes_do_not_matter_and_renamed_targets_need_a_substantial_right_side() {
        assert_eq!(sim("print('epoch done')", "print(\"epoch done\")"), 1.0);
        assert_eq!(sim("x = 0", "y = 0"), 0.0);
        let renamed = sim("att = q @ k.transpose(-2, -1) * scale", "scores = q @ k.transpose(-2, -1) * scale");
        assert!((0.5..=0.6).contains(&renamed), "{renamed}");
    }

    #[test]
    fn compound_statements_need_a_like_header_and_a_like_body() {
        let accumulate = "if (i + 1) % accum == 0:\n    scaler.step(optimizer)\n    scaler.update()\n";
        let report = "if (i + 1) % 100 == 0:\n    print(epoch, i, loss.item())\n";
        assert!(sim(accumulate, report) < MIN_SIMILARITY);
        let loop_new = "for x, y in loader:\n    loss = step(x, y)\n";
        let loop_old = "for x, y in DataLoader(data):\n    loss = step(x, y)\n";
        assert!(sim(loop_new, loop_old) >= MIN_SIMILARITY);
    }
}
