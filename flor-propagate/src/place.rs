//! Placement: where each statement goes in the old tree, how it is renamed,
//! and the text edit of the old source.
//!
//! A statement goes after its nearest preceding sibling that has a partner
//! in the old tree, else before its nearest following one, else first in the
//! partner of its block. Identifiers are renamed by majority vote over the
//! mapped identifier pairs outside the propagated statements. The old file
//! is edited as text at byte offsets (its formatting and comments are kept),
//! with the indentation of the target block, and the result must parse.

use std::collections::{HashMap, HashSet};

use flor_core::propagate::{EditedAnchor, Outcome, PropagateError, Propagation, Side};

use crate::gumtree::{match_trees, Mapping, Params};
use crate::python::{Python, BUILTINS};
use crate::similar::{header_leaves, similarity, Profile, LOW_SIMILARITY, MIN_SIMILARITY};
use crate::tree::{Interner, Role, Tree, NONE};

/// Where a statement goes: after or before a statement of the old tree.
#[derive(Clone, Copy)]
enum At {
    After(u32),
    Before(u32),
}

/// The edited neighbour of an inserted statement (see [`EditedAnchor`]),
/// its old line still in the old source's numbering.
struct Edited {
    side: Side,
    new_line: usize,
    new_text: String,
    old_line: usize,
    old_text: String,
    similarity: f64,
    rival: Option<(usize, String)>,
}

/// How much less similar than its partner an unmatched old sibling of a
/// compound statement may be and still make the partner a guess
/// ([`Ctx::rival`]).
const RIVAL_MARGIN: f64 = 0.1;

/// Set (to anything) to print, on stderr, the statements around each
/// carried statement and their counterparts: what placement decided from.
const DEBUG_ENV: &str = "FLOR_PROPAGATE_DEBUG";

/// A compound statement whose counterpart is a guess ([`Ctx::rival`]).
struct Rival {
    new: u32,
    old: u32,
    other: u32,
    similarity: f64,
}

/// What [`Ctx::around`] found.
struct Around {
    /// The nearest neighbour before with a counterpart: (new, old, its
    /// similarity when edited).
    earlier: Option<(u32, u32, Option<f64>)>,
    /// The nearest neighbour after with a counterpart.
    later: Option<(u32, u32, Option<f64>)>,
    /// The old block.
    block: u32,
    /// The edited statement holding the block, when the block was found
    /// through it.
    edit: Option<(u32, f64)>,
    /// The old statements without a counterpart between the two.
    gap: Vec<u32>,
}

/// One statement's plan before the edit is applied.
enum Plan {
    Insert { offset: usize, text: String, renames: Vec<(String, String)>, edited: Option<Edited> },
    Present { line: usize },
    Fail { reason: String },
}

struct Ctx<'a> {
    py: &'a Python,
    t1: &'a Tree,
    t2: &'a Tree,
    m: &'a Mapping,
    interner: &'a Interner,
    new_source: &'a str,
    old_source: &'a str,
    requested: &'a [bool],
}

/// Propagates the statements at `lines` of `new_source` into `old_source`.
pub(crate) fn propagate(
    py: &Python,
    params: Params,
    limit: usize,
    new_source: &str,
    lines: &[usize],
    old_source: &str,
) -> Result<Propagation, PropagateError> {
    // Parsing is most of the time: parse the two sources side by side.
    let (ts1, ts2) = std::thread::scope(|scope| {
        let new = scope.spawn(|| py.parse(new_source, "new"));
        let old = py.parse(old_source, "old");
        (new.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), old)
    });
    let (ts1, ts2) = (ts1?, ts2?);
    let mut interner = Interner::default();
    let t1 = Tree::build(&ts1, new_source, &py.grammar, &mut interner, limit, "new")?;
    let t2 = Tree::build(&ts2, old_source, &py.grammar, &mut interner, limit, "old")?;
    for (t, which, src) in [(&t1, "new", new_source), (&t2, "old", old_source)] {
        if let Some(b) = (0..t.len() as u32).find(|&i| t.node(i).kind == py.block_kind && t.children(i).is_empty()) {
            // tree-sitter accepts `for x in y:` at the end of a file; Python does not.
            let p = crate::python::point_at(src, t.node(b).start);
            let message = "expected an indented block".to_string();
            return Err(PropagateError::Unparsable { which, line: p.row + 1, column: p.column + 1, message });
        }
    }
    let stmts = lines
        .iter()
        .map(|&line| find_statement(py, &t1, line).ok_or(PropagateError::NoStatement { which: "new", line }))
        .collect::<Result<Vec<_>, _>>()?;
    let mut requested = vec![false; t1.len()];
    for &s in &stmts {
        for x in t1.subtree(s) {
            requested[x as usize] = true;
        }
    }
    let m = match_trees(&t1, &t2, params, &py.kinds, &requested);
    let ctx = Ctx { py, t1: &t1, t2: &t2, m: &m, interner: &interner, new_source, old_source, requested: &requested };
    let renames = ctx.vote();
    let old_names: HashSet<u32> = t2.nodes.iter().filter(|n| n.is_identifier).map(|n| n.label).collect();
    let defined: HashSet<u32> = stmts.iter().flat_map(|&s| ctx.targets(s)).collect();
    let mut plans: Vec<Plan> = stmts.iter().map(|&s| ctx.plan(s, &renames, &old_names, &defined)).collect();
    apply(py, &ts2, old_source, &stmts, &mut plans)
}

/// The outermost statement starting on `line` (1-based).
fn find_statement(py: &Python, t: &Tree, line: usize) -> Option<u32> {
    let row = line.checked_sub(1)?;
    (0..t.len() as u32).find(|&i| {
        let n = t.node(i);
        n.row == row && py.is_statement(n.kind) && n.parent != NONE && py.is_block(t.node(n.parent).kind)
    })
}

impl Ctx<'_> {
    fn text1(&self, i: u32) -> &str {
        let n = self.t1.node(i);
        self.new_source.get(n.start..n.end).unwrap_or("")
    }

    fn text2(&self, i: u32) -> &str {
        let n = self.t2.node(i);
        self.old_source.get(n.start..n.end).unwrap_or("")
    }

    fn renamable(&self, t: &Tree, i: u32) -> bool {
        let n = t.node(i);
        n.is_identifier && !matches!(n.role, Role::Attribute | Role::KeywordName)
    }

    /// Majority vote per identifier of the new tree over its mapped
    /// partners, outside the propagated statements.
    fn vote(&self) -> HashMap<u32, u32> {
        let mut counts: HashMap<u32, HashMap<u32, u32>> = HashMap::new();
        for a in 0..self.t1.len() as u32 {
            if self.requested[a as usize] || !self.renamable(self.t1, a) {
                continue;
            }
            if let Some(b) = self.m.partner(a) {
                if self.renamable(self.t2, b) {
                    *counts.entry(self.t1.node(a).label).or_default().entry(self.t2.node(b).label).or_insert(0) += 1;
                }
            }
        }
        counts
            .into_iter()
            .filter_map(|(from, tos)| {
                let best = tos.iter().max_by(|x, y| {
                    x.1.cmp(y.1)
                        .then((*x.0 == from).cmp(&(*y.0 == from)))
                        .then(self.interner.text(*y.0).cmp(self.interner.text(*x.0)))
                })?;
                (*best.0 != from).then_some((from, *best.0))
            })
            .collect()
    }

    /// Whether identifier `i` of the new tree is bound by its statement
    /// (assignment or loop target, comprehension variable).
    fn is_target(&self, i: u32, stmt: u32) -> bool {
        let mut x = i;
        while x != NONE && x != stmt {
            if self.t1.node(x).role == Role::Target {
                return true;
            }
            x = self.t1.parent(x);
        }
        false
    }

    /// Labels of the names that statement `s` binds.
    fn targets(&self, s: u32) -> Vec<u32> {
        self.t1
            .subtree(s)
            .filter(|&i| self.renamable(self.t1, i) && self.is_target(i, s))
            .map(|i| self.t1.node(i).label)
            .collect()
    }

    /// Leaf labels of a statement of the new tree after renames.
    fn tokens1(&self, s: u32, renames: &HashMap<u32, u32>) -> Vec<u32> {
        self.t1
            .subtree(s)
            .filter(|&i| self.t1.children(i).is_empty())
            .map(|i| {
                let l = self.t1.node(i).label;
                if self.renamable(self.t1, i) {
                    renames.get(&l).copied().unwrap_or(l)
                } else {
                    l
                }
            })
            .collect()
    }

    fn tokens2(&self, s: u32) -> Vec<u32> {
        self.t2.subtree(s).filter(|&i| self.t2.children(i).is_empty()).map(|i| self.t2.node(i).label).collect()
    }

    /// The block of the old tree that corresponds to block `p` of the new one.
    fn block_partner(&self, p: u32) -> Option<u32> {
        if let Some(b) = self.m.partner(p) {
            return self.py.is_block(self.t2.node(b).kind).then_some(b);
        }
        let g = self.t1.parent(p);
        let g2 = self.m.partner(g)?;
        let kind = self.t1.node(p).kind;
        let idx = self.t1.children(g).iter().filter(|&&c| self.t1.node(c).kind == kind).position(|&c| c == p)?;
        self.t2.children(g2).iter().copied().filter(|&c| self.t2.node(c).kind == kind).nth(idx)
    }

    /// The partner of sibling statement `x`, when it is a statement in a
    /// block. A propagated statement counts only when the old version
    /// already has it (it is context then, not new code).
    fn statement_partner(&self, x: u32) -> Option<u32> {
        let y = self.m.partner(x)?;
        if self.requested[x as usize] && self.tokens2(y) != self.tokens1(x, &HashMap::new()) {
            return None;
        }
        let n = self.t2.node(y);
        (self.py.is_statement(n.kind) && n.parent != NONE && self.py.is_block(self.t2.node(n.parent).kind)).then_some(y)
    }

    fn line2(&self, y: u32) -> usize {
        self.t2.node(y).row + 1
    }

    fn plan(&self, s: u32, renames: &HashMap<u32, u32>, old_names: &HashSet<u32>, defined: &HashSet<u32>) -> Plan {
        let tokens = self.tokens1(s, renames);
        if let Some(y) = self.m.partner(s) {
            if self.tokens2(y) == tokens {
                return Plan::Present { line: self.line2(y) };
            }
        }
        let (at, edited) = match self.locate(s, renames) {
            Ok(found) => found,
            Err(reason) => return Plan::Fail { reason },
        };
        let anchor = match at {
            At::After(y) | At::Before(y) => y,
        };
        let rival = self.rival(anchor);
        let block = self.t2.parent(anchor);
        if let Some(&c) = self.t2.children(block).iter().find(|&&c| self.tokens2(c) == tokens) {
            return Plan::Present { line: self.line2(c) };
        }
        if let Some(reason) = self.unbound(s, renames, old_names, defined) {
            return Plan::Fail { reason };
        }
        let old = self.old_source;
        let node = self.t2.node(anchor);
        let (offset, indent, lead) = match at {
            At::After(_) => {
                let indent = line_indent(old, node.start);
                match old[node.end..].find('\n') {
                    Some(k) => (node.end + k + 1, indent, false),
                    None => (old.len(), indent, true),
                }
            }
            At::Before(_) => {
                let start = old[..node.start].rfind('\n').map_or(0, |k| k + 1);
                if !old[start..node.start].chars().all(|c| c == ' ' || c == '\t') {
                    return Plan::Fail {
                        reason: format!(
                            "no room: line {} of the old version holds its block on one line",
                            self.line2(anchor)
                        ),
                    };
                }
                (start, &old[start..node.start], false)
            }
        };
        let (text, applied) = self.render(s, renames, indent);
        let nl = if old.contains("\r\n") { "\r\n" } else { "\n" };
        let text = if lead { format!("{nl}{indent}{text}{nl}") } else { format!("{indent}{text}{nl}") };
        let edited = match (rival, edited) {
            (Some(r), _) => Some(Edited {
                side: Side::Within,
                new_line: self.t1.node(r.new).row + 1,
                new_text: first_line(self.text1(r.new)),
                old_line: self.line2(r.old),
                old_text: first_line(self.text2(r.old)),
                similarity: r.similarity,
                rival: Some((self.line2(r.other), first_line(self.text2(r.other)))),
            }),
            (None, Some((x, similarity))) => Some(Edited {
                side: match at {
                    At::After(_) => Side::After,
                    At::Before(_) => Side::Before,
                },
                new_line: self.t1.node(x).row + 1,
                new_text: first_line(self.text1(x)),
                old_line: self.line2(anchor),
                old_text: first_line(self.text2(anchor)),
                similarity,
                rival: None,
            }),
            (None, None) => None,
        };
        Plan::Insert { offset, text, renames: applied, edited }
    }

    /// Whether the placement at old statement `y` is a guess: a compound
    /// statement around `y` (a function, a loop) whose new counterpart
    /// resembles an old sibling of it about as much, and that sibling has
    /// no counterpart of its own (one new function that replaced two old
    /// ones: either could be meant).
    fn rival(&self, y: u32) -> Option<Rival> {
        let raw1 = |i: u32| self.t1.node(i).label;
        let raw2 = |i: u32| self.t2.node(i).label;
        let mut c2 = self.t2.parent(y);
        while c2 != NONE {
            let holder = self.t2.parent(c2);
            let kind = self.t2.node(c2).kind;
            let c1 = self.m.m2[c2 as usize];
            if holder != NONE && c1 != NONE && self.py.is_statement(kind) && self.py.is_block(self.t2.node(holder).kind)
            {
                let p1 = Profile::of(self.t1, c1, &self.py.kinds, &raw1);
                let own = similarity(&p1, &Profile::of(self.t2, c2, &self.py.kinds, &raw2));
                let rival = self.t2.children(holder).iter().copied().find(|&r| {
                    r != c2
                        && self.t2.node(r).kind == kind
                        && self.m.m2[r as usize] == NONE
                        && similarity(&p1, &Profile::of(self.t2, r, &self.py.kinds, &raw2)) >= own - RIVAL_MARGIN
                });
                if let Some(other) = rival {
                    return Some(Rival { new: c1, old: c2, other, similarity: own });
                }
            }
            c2 = holder;
        }
        None
    }

    /// A name the statement reads that the old version never defines (nor
    /// the statement itself, another propagated statement or Python).
    fn unbound(
        &self,
        s: u32,
        renames: &HashMap<u32, u32>,
        old_names: &HashSet<u32>,
        defined: &HashSet<u32>,
    ) -> Option<String> {
        let locals: HashSet<u32> = self.targets(s).into_iter().collect();
        for i in self.t1.subtree(s) {
            if !self.renamable(self.t1, i) || self.is_target(i, s) {
                continue;
            }
            let l = self.t1.node(i).label;
            let l = renames.get(&l).copied().unwrap_or(l);
            let name = self.interner.text(l);
            if !old_names.contains(&l) && !locals.contains(&l) && !defined.contains(&l) && !BUILTINS.contains(&name) {
                return Some(format!("unbound name: `{name}` is not defined in the old version"));
            }
        }
        None
    }

    /// Where statement `s` goes in the old tree, and, when the neighbour it
    /// was placed by was edited since, that neighbour and its similarity.
    ///
    /// In order: after the counterpart of the statement right before it
    /// (identical, edited, or found by similarity around it); before the
    /// counterpart of the statement right after it; then, between the
    /// counterparts of the nearest neighbours that have identical ones:
    /// right there when the old version has nothing in between (the
    /// neighbours in between are new code), else after (before) the old
    /// statement in between most like the neighbour before (after) it; else
    /// it is ambiguous. A statement alone in its block goes first in the
    /// block's counterpart.
    fn locate(&self, s: u32, renames: &HashMap<u32, u32>) -> Result<(At, Option<(u32, f64)>), String> {
        let p = self.t1.parent(s);
        let siblings = self.t1.children(p);
        let pos = siblings.iter().position(|&c| c == s).unwrap_or(0);
        let context = |x: &&u32| !self.requested[**x as usize] || self.statement_partner(**x).is_some();
        let before: Vec<u32> = siblings[..pos].iter().rev().filter(context).copied().collect();
        let after: Vec<u32> = siblings[pos + 1..].iter().filter(context).copied().collect();
        if std::env::var_os(DEBUG_ENV).is_some() {
            self.debug_block(p);
        }
        let prev = before.first().map(|&x| (x, self.counterpart(x, renames)));
        let next = after.first().map(|&x| (x, self.counterpart(x, renames)));
        let mut tied = None;
        if let Some((x, Some((y, sim)))) = prev {
            match self.m.tie.get(&x) {
                None => return Ok((At::After(y), sim.map(|v| (x, v)))),
                Some(&rival) => tied = Some((x, y, rival)),
            }
        }
        // Before the statement right after it, when nothing before it has
        // to be found first (the one before is not new code either).
        if let (None | Some((_, Some(_))), Some((x, Some((y, sim))))) = (prev, next) {
            if !self.m.tie.contains_key(&x) {
                return Ok((At::Before(y), sim.map(|v| (x, v))));
            }
        }
        if let Some((x, y, rival)) = tied {
            return Err(format!(
                "ambiguous: the statement before it (line {}) matches lines {} and {} of the old version equally well",
                self.t1.node(x).row + 1,
                self.line2(y),
                self.line2(rival)
            ));
        }
        let no_context = || {
            format!(
                "no mapped context for `{}`: neither its block nor any statement beside it has a counterpart in the old version",
                first_line(self.text1(s))
            )
        };
        if before.is_empty() && after.is_empty() {
            return match self.block_counterpart(p, renames, 0) {
                Some((b, edit)) if !self.t2.children(b).is_empty() => Ok((At::Before(self.t2.children(b)[0]), edit)),
                _ => Err(no_context()),
            };
        }
        let around = self.around(p, &before, &after, renames, 0).ok_or_else(no_context)?;
        let gap = &around.gap;
        if gap.is_empty() {
            // Nothing in between: the neighbours in between are new code.
            return match (around.earlier, around.later) {
                (Some((x, y, sim)), _) => Ok((At::After(y), sim.map(|v| (x, v)))),
                (None, Some((x, y, sim))) => Ok((At::Before(y), sim.map(|v| (x, v)))),
                (None, None) => match self.t2.children(around.block).first() {
                    Some(&first) => Ok((At::Before(first), around.edit)),
                    None => Err(no_context()),
                },
            };
        }
        // The old version has statements where the unplaced neighbours
        // stand: the most similar one stands in, however little (the
        // outcome says how much); a lone one of the same kind stands in
        // whatever its similarity.
        for (x, after_it) in before.first().map(|&x| (x, true)).into_iter().chain(after.first().map(|&x| (x, false))) {
            if let Some((y, sim)) = self.stand_in(x, gap, renames, after_it) {
                return Ok((if after_it { At::After(y) } else { At::Before(y) }, Some((x, sim))));
            }
        }
        let (first, last) = (gap[0], gap[gap.len() - 1]);
        let neighbour = before.first().or(after.first()).map_or(0, |&x| self.t1.node(x).row + 1);
        Err(format!(
            "ambiguous: the statement beside it (line {neighbour}) has no counterpart in the old version, where lines {}-{} stand in its place and none resembles it",
            self.line2(first),
            self.t2.node(last).row + 1 + self.text2(last).matches('\n').count()
        ))
    }

    /// For `FLOR_PROPAGATE_DEBUG`: the statements of new block `p` and of
    /// its counterpart with their partners, on stderr.
    fn debug_block(&self, p: u32) {
        for &x in self.t1.children(p) {
            let y = self.m.partner(x).map(|y| (self.line2(y), first_line(self.text2(y))));
            eprintln!("flor-propagate: new line {} `{}` -> {y:?}", self.t1.node(x).row + 1, first_line(self.text1(x)));
        }
        for &y in self.block_partner(p).map(|b| self.t2.children(b)).unwrap_or(&[]) {
            let x = self.m.m2[y as usize];
            let x = (x != NONE).then(|| (self.t1.node(x).row + 1, first_line(self.text1(x))));
            eprintln!("flor-propagate: old line {} `{}` <- {x:?}", self.line2(y), first_line(self.text2(y)));
        }
    }

    /// The old statement of `gap` most like `x`, when at least
    /// [`LOW_SIMILARITY`] alike, or the gap's only statement when it is of
    /// `x`'s kind; on equal similarity the one nearest the side `x` is on.
    fn stand_in(&self, x: u32, gap: &[u32], renames: &HashMap<u32, u32>, after_it: bool) -> Option<(u32, f64)> {
        let px = self.profile1(x, renames);
        let lone = gap.len() == 1 && self.t2.node(gap[0]).kind == self.t1.node(x).kind;
        gap.iter()
            .map(|&y| (similarity(&px, &self.profile2(y)), y))
            .filter(|&(sim, _)| lone || sim >= LOW_SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0).then(if after_it { b.1.cmp(&a.1) } else { a.1.cmp(&b.1) }))
            .map(|(sim, y)| (y, sim))
    }

    /// The old surroundings of a statement of new block `p` whose context
    /// neighbours are `before` (nearest first) and `after`: the
    /// counterparts of the nearest neighbours that have one, and the old
    /// statements without a counterpart between them (from the block's
    /// start or to its end where one is missing), in the old block that
    /// holds them. `None` when no old block is known.
    fn around(&self, p: u32, before: &[u32], after: &[u32], renames: &HashMap<u32, u32>, depth: u32) -> Option<Around> {
        let bound = |xs: &[u32]| {
            xs.iter().find_map(|&x| {
                let y = self.statement_partner(x)?;
                let exact = self.requested[x as usize] || self.same_header(x, y, renames);
                Some((x, y, (!exact).then(|| similarity(&self.profile1(x, renames), &self.profile2(y)))))
            })
        };
        let (earlier, later) = (bound(before), bound(after));
        let (block, edit) = match (earlier, later) {
            (Some((_, y, _)), _) | (None, Some((_, y, _))) => (self.t2.parent(y), None),
            (None, None) => self.block_counterpart(p, renames, depth)?,
        };
        let children = self.t2.children(block);
        let start = earlier.and_then(|(_, y, _)| children.iter().position(|&c| c == y)).map_or(0, |k| k + 1);
        let end = later.and_then(|(_, y, _)| children.iter().position(|&c| c == y)).unwrap_or(children.len());
        let gap = children[start..end.max(start)].iter().copied().filter(|&y| self.m.m2[y as usize] == NONE).collect();
        Some(Around { earlier, later, block, edit, gap })
    }

    /// The old block that corresponds to new block `p`: its partner, else
    /// the block at the same place in the old counterpart of the statement
    /// that holds it, found like a neighbour's: its partner, the most
    /// similar old statement around it, or the one standing where it
    /// stands. With the holding statement and its similarity when that was
    /// edited.
    #[allow(clippy::type_complexity)]
    fn block_counterpart(&self, p: u32, renames: &HashMap<u32, u32>, depth: u32) -> Option<(u32, Option<(u32, f64)>)> {
        if let Some(b) = self.block_partner(p) {
            return Some((b, None));
        }
        if depth >= 8 {
            return None;
        }
        // The path from the statement holding the block down to it.
        let mut path = Vec::new();
        let mut c = p;
        while c != NONE && !(self.py.is_statement(self.t1.node(c).kind) && c != p) {
            path.push(c);
            c = self.t1.parent(c);
        }
        if c == NONE {
            return None;
        }
        let holder = self.t1.parent(c);
        if holder == NONE || !self.py.is_block(self.t1.node(holder).kind) {
            return None;
        }
        let (c2, sim) = match self.counterpart(c, renames) {
            Some(found) => found,
            None => {
                let siblings = self.t1.children(holder);
                let pos = siblings.iter().position(|&x| x == c)?;
                let context = |x: &&u32| !self.requested[**x as usize];
                let before: Vec<u32> = siblings[..pos].iter().rev().filter(context).copied().collect();
                let after: Vec<u32> = siblings[pos + 1..].iter().filter(context).copied().collect();
                let around = self.around(holder, &before, &after, renames, depth + 1)?;
                let (y, sim) = self.stand_in(c, &around.gap, renames, true)?;
                (y, Some(sim))
            }
        };
        let mut y = c2;
        for &x in path.iter().rev() {
            let kind = self.t1.node(x).kind;
            let parent = self.t1.parent(x);
            let idx =
                self.t1.children(parent).iter().filter(|&&o| self.t1.node(o).kind == kind).position(|&o| o == x)?;
            y = self.t2.children(y).iter().copied().filter(|&o| self.t2.node(o).kind == kind).nth(idx)?;
        }
        self.py.is_block(self.t2.node(y).kind).then_some((y, sim.map(|v| (c, v))))
    }

    /// The old counterpart of context statement `x` of the new tree: its
    /// partner, `None` beside it when identical (up to renames; a compound
    /// statement by its header), else with their similarity; failing that,
    /// the most similar old statement found around it ([`Ctx::search`]).
    #[allow(clippy::type_complexity)]
    fn counterpart(&self, x: u32, renames: &HashMap<u32, u32>) -> Option<(u32, Option<f64>)> {
        if let Some(y) = self.statement_partner(x) {
            if self.requested[x as usize] || self.same_header(x, y, renames) {
                return Some((y, None));
            }
            let px = self.profile1(x, renames);
            let sim = similarity(&px, &self.profile2(y));
            // The matcher pairs edited statements by their matched parts,
            // which a run of look-alike statements can shift by one
            // (`self.layer3 = ...(layers[2])` with the old `self.layer2 =
            // ...(layers[2])`): a clearly more similar old sibling with
            // more of its assignment targets, that no other statement has
            // unchanged, wins.
            let better = self.t2.children(self.t2.parent(y)).iter().copied().filter(|&o| {
                let other = self.m.m2[o as usize];
                o != y
                    && self.t2.node(o).kind == self.t1.node(x).kind
                    && (other == NONE || other == x || !self.same_header(other, o, renames))
            });
            let py = self.profile2(y);
            let best = better
                .map(|o| (self.profile2(o), o))
                .filter(|(po, _)| px.target_dice(po) > px.target_dice(&py))
                .map(|(po, o)| (similarity(&px, &po), o))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((s2, o)) = best.filter(|&(s2, _)| s2 >= MIN_SIMILARITY && s2 > sim + 0.05) {
                return Some((o, Some(s2)));
            }
            if sim >= MIN_SIMILARITY / 2.0 {
                return Some((y, Some(sim)));
            }
        }
        self.search(x, renames).map(|(y, sim)| (y, Some(sim)))
    }

    /// Whether the headers of `x` (new) and `y` (old) are the same up to
    /// renames, each of which the mapping must show somewhere outside `x`
    /// too: a rename seen only in the pair itself (`has_sklearn = True`
    /// with `has_apex = True`) says nothing about it being the same statement.
    fn same_header(&self, x: u32, y: u32, renames: &HashMap<u32, u32>) -> bool {
        let k = &self.py.kinds;
        if header_leaves(self.t1, x, k, &|i| self.label1(i, renames))
            != header_leaves(self.t2, y, k, &|i| self.t2.node(i).label)
        {
            return false;
        }
        let used: HashSet<(u32, u32)> = self
            .t1
            .subtree(x)
            .filter(|&i| self.renamable(self.t1, i))
            .filter_map(|i| {
                let l = self.t1.node(i).label;
                renames.get(&l).map(|&to| (l, to))
            })
            .collect();
        used.iter().all(|&(from, to)| {
            (0..self.t1.len() as u32).any(|a| {
                !self.t1.contains(x, a)
                    && self.t1.node(a).label == from
                    && self.renamable(self.t1, a)
                    && self.m.partner(a).is_some_and(|b| self.t2.node(b).label == to)
            })
        })
    }

    /// Label of node `i` of the new tree after renames.
    fn label1(&self, i: u32, renames: &HashMap<u32, u32>) -> u32 {
        let l = self.t1.node(i).label;
        if self.renamable(self.t1, i) {
            renames.get(&l).copied().unwrap_or(l)
        } else {
            l
        }
    }

    fn profile1(&self, x: u32, renames: &HashMap<u32, u32>) -> Profile {
        Profile::of(self.t1, x, &self.py.kinds, &|i| self.label1(i, renames))
    }

    fn profile2(&self, y: u32) -> Profile {
        Profile::of(self.t2, y, &self.py.kinds, &|i| self.t2.node(i).label)
    }

    /// The old statement most similar to `x` (of the new tree), which has
    /// no counterpart, searched in the counterpart of the nearest enclosing
    /// node that has one, then further out with a higher bar. `None` when
    /// nothing is similar enough, or two candidates are about as similar
    /// (ambiguous: better no anchor than a wrong one).
    fn search(&self, x: u32, renames: &HashMap<u32, u32>) -> Option<(u32, f64)> {
        let px = self.profile1(x, renames);
        let mut region = self.t1.parent(x);
        let mut bar = MIN_SIMILARITY;
        let mut searched = NONE;
        while region != NONE {
            let old = match self.m.partner(region) {
                Some(b) => Some(b),
                None if self.py.is_block(self.t1.node(region).kind) => self.block_partner(region),
                None => None,
            };
            if let Some(r) = old.filter(|&r| searched == NONE || (r != searched && self.t2.contains(r, searched))) {
                let mut best: Vec<(f64, u32)> = Vec::new();
                for y in self.t2.subtree(r) {
                    let n = self.t2.node(y);
                    let in_block = n.parent != NONE && self.py.is_block(self.t2.node(n.parent).kind);
                    if !self.py.is_statement(n.kind) || !in_block || (searched != NONE && self.t2.contains(searched, y))
                    {
                        continue;
                    }
                    if self.m.m2[y as usize] != NONE && self.m.m2[y as usize] != x {
                        continue;
                    }
                    let sim = similarity(&px, &self.profile2(y));
                    if sim >= bar {
                        best.push((sim, y));
                    }
                }
                best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                match best[..] {
                    [] => {}
                    [(sim, y)] => return Some((y, sim)),
                    [(sim, y), (second, _), ..] => return (sim - second >= 0.05).then_some((y, sim)),
                }
                searched = r;
                bar = MIN_SIMILARITY + 0.1;
            }
            region = self.t1.parent(region);
        }
        None
    }

    /// The statement's text with renames applied and continuation lines
    /// re-indented to `indent`.
    fn render(&self, s: u32, renames: &HashMap<u32, u32>, indent: &str) -> (String, Vec<(String, String)>) {
        let n = self.t1.node(s);
        let src = self.new_source;
        let mut out = String::new();
        let mut applied: Vec<(String, String)> = Vec::new();
        let mut at = n.start;
        for i in self.t1.subtree(s) {
            if !self.renamable(self.t1, i) {
                continue;
            }
            let node = self.t1.node(i);
            if let Some(&to) = renames.get(&node.label) {
                out.push_str(&src[at..node.start]);
                let (from, to) = (self.interner.text(node.label), self.interner.text(to));
                out.push_str(to);
                at = node.end;
                if !applied.iter().any(|(f, _)| f == from) {
                    applied.push((from.to_string(), to.to_string()));
                }
            }
        }
        out.push_str(&src[at..n.end]);
        let own = line_indent(src, n.start);
        let mut lines = out.split('\n');
        let mut text = lines.next().unwrap_or("").to_string();
        for line in lines {
            text.push('\n');
            match line.strip_prefix(own) {
                Some(rest) if !own.is_empty() || !line.is_empty() => {
                    text.push_str(indent);
                    text.push_str(rest);
                }
                _ => text.push_str(line),
            }
        }
        (text, applied)
    }
}

/// The first line of a statement's text, trimmed.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

/// The whitespace that starts the line holding byte `at`.
fn line_indent(src: &str, at: usize) -> &str {
    let start = src[..at].rfind('\n').map_or(0, |k| k + 1);
    let line = &src[start..];
    let end = line.find(|c: char| c != ' ' && c != '\t').unwrap_or(line.len());
    &line[..end.min(at - start)]
}

/// Applies the insertions; any whose result would not parse fails instead.
fn apply(
    py: &Python,
    before: &tree_sitter::Tree,
    old: &str,
    stmts: &[u32],
    plans: &mut [Plan],
) -> Result<Propagation, PropagateError> {
    let (source, lines, edits) = splice(old, stmts, plans);
    let source = if edits.is_empty() || py.reparses(before, &source, &edits) {
        source
    } else {
        for plan in plans.iter_mut() {
            if let Plan::Insert { offset, text, .. } = plan {
                let mut one = old.to_string();
                one.insert_str(*offset, text);
                if !py.parses(&one) {
                    *plan = Plan::Fail { reason: "inserting it here would not parse".into() };
                }
            }
        }
        let (source, lines, _) = splice(old, stmts, plans);
        if !py.parses(&source) {
            for plan in plans.iter_mut() {
                if matches!(plan, Plan::Insert { .. }) {
                    *plan = Plan::Fail { reason: "the statements together would not parse".into() };
                }
            }
            return Ok(finish(old.to_string(), old, plans, &[]));
        }
        return Ok(finish(source, old, plans, &lines));
    };
    Ok(finish(source, old, plans, &lines))
}

/// The old source with every insertion applied, the output line of each
/// plan's statement (0 for plans that insert nothing), and the insertions
/// as (offset in the output, length), in order.
fn splice(old: &str, stmts: &[u32], plans: &[Plan]) -> (String, Vec<usize>, Vec<(usize, usize)>) {
    let mut order: Vec<usize> = (0..plans.len()).filter(|&k| matches!(plans[k], Plan::Insert { .. })).collect();
    let key = |k: usize| match &plans[k] {
        Plan::Insert { offset, .. } => (*offset, stmts[k]),
        _ => (0, 0),
    };
    order.sort_by_key(|&k| key(k));
    let mut out = String::with_capacity(old.len() + 256);
    let mut lines = vec![0usize; plans.len()];
    let mut at = 0;
    let mut line = 1;
    let mut edits = Vec::new();
    for k in order {
        if let Plan::Insert { offset, text, .. } = &plans[k] {
            let chunk = &old[at..*offset];
            line += chunk.matches('\n').count();
            out.push_str(chunk);
            at = *offset;
            let lead = text.starts_with('\n') || text.starts_with("\r\n");
            lines[k] = line + usize::from(lead);
            line += text.matches('\n').count();
            edits.push((out.len(), text.len()));
            out.push_str(text);
        }
    }
    out.push_str(&old[at..]);
    (out, lines, edits)
}

/// The outcomes. Every line is one of the output: a statement already
/// present moves down by the lines inserted before it.
fn finish(source: String, old: &str, plans: &mut [Plan], lines: &[usize]) -> Propagation {
    let inserted: Vec<(usize, usize)> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Insert { offset, text, .. } => Some((*offset, text.matches('\n').count())),
            _ => None,
        })
        .collect();
    let in_output = |line: usize| {
        let start = old.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum::<usize>();
        line + inserted.iter().filter(|&&(offset, _)| offset <= start).map(|&(_, n)| n).sum::<usize>()
    };
    let outcomes = plans
        .iter_mut()
        .enumerate()
        .map(|(k, plan)| match plan {
            Plan::Insert { renames, edited, .. } => {
                let line = lines.get(k).copied().unwrap_or(0);
                let renames = std::mem::take(renames);
                match edited.take() {
                    None => Outcome::Placed { line, renames },
                    Some(e) => Outcome::Approximate {
                        line,
                        renames,
                        anchor: EditedAnchor {
                            side: e.side,
                            new_line: e.new_line,
                            new_text: e.new_text,
                            old_line: in_output(e.old_line),
                            old_text: e.old_text,
                            similarity: (e.similarity * 100.0).round().clamp(0.0, 100.0) as u8,
                            rival: e.rival.map(|(line, text)| (in_output(line), text)),
                        },
                    },
                }
            }
            Plan::Present { line } => Outcome::AlreadyPresent { line: in_output(*line) },
            Plan::Fail { reason } => Outcome::Failed { reason: std::mem::take(reason) },
        })
        .collect();
    Propagation { source, outcomes }
}
