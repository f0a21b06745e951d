//! GumTree matching (Falleri et al., "Fine-grained and accurate source code
//! differencing", ASE 2014) over two [`Tree`]s.
//!
//! 1. **Top-down**: the two trees are opened level by level from the
//!    highest subtrees down; subtrees of equal height with the same shape
//!    (isomorphic) are matched whole when the shape is unique on both sides.
//!    Shapes that occur several times are kept as candidate pairs and
//!    decided afterwards by the Dice similarity of their parents, then of
//!    their grandparents and so on up to four levels, then by the closeness
//!    of their relative positions; a choice still tied after all that is
//!    recorded, so placement can report it as ambiguous; a candidate whose
//!    nearest matched context lies elsewhere is dropped. The first pass
//!    leaves candidates without any matched context undecided; a second
//!    pass over what is still unmatched decides them, and opens the ones
//!    that lost, with the context the first pass found. Only subtrees of height
//!    at least `min_height` are considered. Candidates are grouped by shape
//!    in a hash map, never compared pairwise across the whole file.
//! 2. **Bottom-up**: every unmatched inner node of the new tree with matched
//!    descendants is matched to the unmatched node of the same kind, among
//!    the ancestors of its descendants' partners, with the best Dice
//!    similarity, when that exceeds `min_dice`.
//! 3. **Recovery**: after a bottom-up match of two containers smaller than
//!    `max_recovery_size`, their unmatched children are matched by longest
//!    common subsequence of shapes, then of kind and label, then by kinds
//!    unique on both sides, recursively.
//! 4. **Gaps** (ours): in every matched pair of containers, whatever their
//!    size, the unmatched children between two consecutive matched children
//!    are aligned by longest common subsequence of kind and leaf similarity
//!    (Dice of their leaf labels at least one half, or a kind that occurs
//!    once among the children on both sides, such as a loop's body), then
//!    recovered as above. This matches `optimizer.step()` to `opt.step()` inside a long
//!    loop body, which plain GumTree leaves unmatched (no descendant of
//!    height 2 in common, container too large for recovery).

use std::collections::BTreeMap;

use crate::similar::{similarity, Kinds, Profile, MIN_SIMILARITY};
use crate::tree::{FxHashMap, Tree, NONE};

/// Matcher parameters; the defaults are FlorDB's.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Params {
    /// Smallest height of a subtree matched top-down (leaves have height 1).
    pub min_height: u32,
    /// Smallest Dice similarity for a bottom-up container match (exclusive).
    pub min_dice: f64,
    /// Containers at least this large (in nodes) get no recovery pass.
    pub max_recovery_size: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params { min_height: 2, min_dice: 0.5, max_recovery_size: 100 }
    }
}

/// When one shape occurs more often than this on both sides combined
/// (product of the counts), each of its new subtrees is only compared with
/// the [`NEAREST`] old ones around its relative position: bounds the
/// candidate list on generated or highly repetitive code.
const MAX_AMBIGUOUS_PAIRS: usize = 4096;

/// Old candidates considered per new subtree of a repeated shape when all
/// pairs would exceed [`MAX_AMBIGUOUS_PAIRS`].
const NEAREST: usize = 8;

/// Ancestor levels compared when deciding among isomorphic candidates.
const CONTEXT_LEVELS: usize = 4;

/// A one-to-one mapping between the nodes of two trees.
pub(crate) struct Mapping {
    pub m1: Vec<u32>,
    pub m2: Vec<u32>,
    /// For a top-down match that was chosen among equally good candidates:
    /// the other candidate in the old tree (the match is a guess).
    pub tie: FxHashMap<u32, u32>,
}

impl Mapping {
    fn new(n1: usize, n2: usize) -> Self {
        Mapping { m1: vec![NONE; n1], m2: vec![NONE; n2], tie: FxHashMap::default() }
    }

    pub(crate) fn partner(&self, a: u32) -> Option<u32> {
        match self.m1.get(a as usize) {
            Some(&b) if b != NONE => Some(b),
            _ => None,
        }
    }

    fn link(&mut self, a: u32, b: u32) {
        self.m1[a as usize] = b;
        self.m2[b as usize] = a;
    }

    /// Undoes the link of `a` and `b` (those two nodes only).
    fn unlink(&mut self, a: u32, b: u32) {
        self.m1[a as usize] = NONE;
        self.m2[b as usize] = NONE;
    }

    fn free1(&self, a: u32) -> bool {
        self.m1[a as usize] == NONE
    }

    fn free2(&self, b: u32) -> bool {
        self.m2[b as usize] == NONE
    }
}

struct Matcher<'a> {
    t1: &'a Tree,
    t2: &'a Tree,
    p: Params,
    m: Mapping,
    kinds: &'a Kinds,
    /// Nodes of `t1` in the statements being propagated: new code, matched
    /// only to an identical old statement, never to an edited one.
    requested: &'a [bool],
}

/// Matches `t1` (new) against `t2` (old); `requested` marks the nodes of
/// the statements being propagated.
pub(crate) fn match_trees(t1: &Tree, t2: &Tree, p: Params, kinds: &Kinds, requested: &[bool]) -> Mapping {
    let mut matcher = Matcher { t1, t2, p, m: Mapping::new(t1.len(), t2.len()), kinds, requested };
    if t1.len() > 0 && t2.len() > 0 {
        // Twice: candidates that lost in the first pass were never opened;
        // the second pass opens them and decides their descendants with the
        // context the first pass mapped.
        matcher.topdown(false);
        matcher.topdown(true);
        matcher.bottomup();
        matcher.gaps();
    }
    matcher.m
}

/// A max-heap of nodes by height.
struct HeightList(std::collections::BinaryHeap<(u32, std::cmp::Reverse<u32>)>);

impl HeightList {
    fn peek(&self) -> u32 {
        self.0.peek().map_or(0, |&(h, _)| h)
    }
    fn push(&mut self, t: &Tree, i: u32) {
        self.0.push((t.node(i).height, std::cmp::Reverse(i)));
    }
    fn pop_height(&mut self) -> Vec<u32> {
        let h = self.peek();
        let mut out = Vec::new();
        while self.peek() == h && h > 0 {
            if let Some((_, std::cmp::Reverse(i))) = self.0.pop() {
                out.push(i);
            }
        }
        out.sort_unstable();
        out
    }
    fn open(&mut self, t: &Tree, i: u32) {
        for &c in t.children(i) {
            self.push(t, c);
        }
    }
}

/// The candidate pairs of a top-down pass (new, old), and which nodes are
/// in any (those are not opened).
struct Candidates {
    pairs: Vec<(u32, u32)>,
    in1: Vec<bool>,
    in2: Vec<bool>,
}

impl Candidates {
    /// Adds the pair of `a` (new) and `b` (old).
    #[inline]
    fn add(&mut self, a: u32, b: u32) {
        self.pairs.push((a, b));
        self.in1[a as usize] = true;
        self.in2[b as usize] = true;
    }
}

impl Matcher<'_> {
    fn map_subtree(&mut self, a: u32, b: u32) {
        let size = self.t1.node(a).size;
        for k in 0..size {
            if self.m.free1(a + k) && self.m.free2(b + k) {
                self.m.link(a + k, b + k);
            }
        }
    }

    fn subtree_free1(&self, a: u32) -> bool {
        self.t1.subtree(a).all(|x| self.m.free1(x))
    }

    fn subtree_free2(&self, b: u32) -> bool {
        self.t2.subtree(b).all(|x| self.m.free2(x))
    }

    /// Dice similarity of `a` and `b`: the share of their descendants mapped
    /// to each other.
    fn dice(&self, a: u32, b: u32) -> f64 {
        if a == NONE || b == NONE {
            return 0.0;
        }
        let d1 = self.t1.node(a).size - 1;
        let d2 = self.t2.node(b).size - 1;
        if d1 + d2 == 0 {
            return 0.0;
        }
        let common =
            self.t1.subtree(a).skip(1).filter(|&x| self.m.partner(x).is_some_and(|y| self.t2.contains(b, y))).count();
        2.0 * common as f64 / (d1 + d2) as f64
    }

    /// How far apart the relative positions of `a` and `b` are (0 = same).
    fn position_gap(&self, a: u32, b: u32) -> f64 {
        (a as f64 / self.t1.len() as f64 - b as f64 / self.t2.len() as f64).abs()
    }

    /// One top-down pass; unless `last`, isomorphic candidates without any
    /// matched context are left for the next pass instead of guessed. In
    /// the last pass a shape unique among what is left is only a candidate
    /// too (unique in the remainder is weaker evidence than unique overall),
    /// and candidates whose context points elsewhere are never taken.
    fn topdown(&mut self, last: bool) {
        let candidates = self.topdown_candidates(last);
        self.decide(&candidates, last);
    }

    /// Opens both trees level by level from the highest subtrees down,
    /// matching each level by shape ([`Matcher::match_shapes`]); returns
    /// the candidate pairs left to decide.
    fn topdown_candidates(&mut self, last: bool) -> Vec<(u32, u32)> {
        let (t1, t2) = (self.t1, self.t2);
        let mut l1 = HeightList(Default::default());
        let mut l2 = HeightList(Default::default());
        l1.push(t1, 0);
        l2.push(t2, 0);
        let mut c = Candidates { pairs: Vec::new(), in1: vec![false; t1.len()], in2: vec![false; t2.len()] };
        loop {
            let (h1, h2) = (l1.peek(), l2.peek());
            if h1.max(h2) < self.p.min_height {
                break;
            }
            if h1 != h2 {
                if h1 > h2 {
                    for i in l1.pop_height() {
                        if self.m.free1(i) {
                            l1.open(t1, i);
                        }
                    }
                } else {
                    for i in l2.pop_height() {
                        if self.m.free2(i) {
                            l2.open(t2, i);
                        }
                    }
                }
                continue;
            }
            // Subtrees matched whole (in an earlier pass) are done.
            let hs1: Vec<u32> = l1.pop_height().into_iter().filter(|&a| self.m.free1(a)).collect();
            let hs2: Vec<u32> = l2.pop_height().into_iter().filter(|&b| self.m.free2(b)).collect();
            self.match_shapes(&hs1, &hs2, last, &mut c);
            for a in hs1 {
                if self.m.free1(a) && !c.in1[a as usize] {
                    l1.open(t1, a);
                }
            }
            for b in hs2 {
                if self.m.free2(b) && !c.in2[b as usize] {
                    l2.open(t2, b);
                }
            }
        }
        c.pairs
    }

    /// Matches the free subtrees of one height (`hs1` new, `hs2` old) by
    /// shape: a shape once on each side is mapped (unless `last`); pairs of
    /// a shape repeated on either side go to `c`.
    fn match_shapes(&mut self, hs1: &[u32], hs2: &[u32], last: bool, c: &mut Candidates) {
        let (t1, t2) = (self.t1, self.t2);
        let mut groups: BTreeMap<u32, (Vec<u32>, Vec<u32>)> = BTreeMap::new();
        for &a in hs1 {
            groups.entry(t1.node(a).shape).or_default().0.push(a);
        }
        for &b in hs2 {
            if let Some(g) = groups.get_mut(&t2.node(b).shape) {
                g.1.push(b);
            }
        }
        for (v1, v2) in groups.values() {
            if v2.is_empty() {
                continue;
            }
            if v1.len() == 1 && v2.len() == 1 && !last {
                self.map_subtree(v1[0], v2[0]);
            } else {
                // Every pair when there are few; otherwise each new
                // subtree against the old ones nearest its relative
                // position only (bounded work on repetitive code).
                let all = v1.len() * v2.len() <= MAX_AMBIGUOUS_PAIRS;
                for &a in v1 {
                    let near: &[u32] = if all {
                        v2
                    } else {
                        let at = v2.partition_point(|&b| (b as f64 / t2.len() as f64) < (a as f64 / t1.len() as f64));
                        let lo = at.saturating_sub(NEAREST / 2);
                        &v2[lo..(lo + NEAREST).min(v2.len())]
                    };
                    for &b in near {
                        c.add(a, b);
                    }
                }
            }
        }
    }

    /// Decides the top-down `candidates` by the similarity of their
    /// context, then by position; a pair still tied with another free one
    /// is recorded as a tie.
    fn decide(&mut self, candidates: &[(u32, u32)], last: bool) {
        // Decide the ambiguous candidates: best parent similarity first,
        // then grandparent and so on (the loop around a repeated statement
        // is often told apart only by its own header), then position.
        let mut cache: FxHashMap<(u32, u32), (f64, bool)> = FxHashMap::default();
        let mut scored: Vec<([f64; CONTEXT_LEVELS], f64, u32, u32)> = Vec::with_capacity(candidates.len());
        for &(a, b) in candidates {
            let (score, contradicted) = self.context_score(a, b, &mut cache);
            if !contradicted {
                scored.push((score, self.position_gap(a, b), a, b));
            }
        }
        let desc = |x: &[f64; CONTEXT_LEVELS], y: &[f64; CONTEXT_LEVELS]| {
            x.iter().zip(y).map(|(p, q)| q.total_cmp(p)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        };
        scored.sort_by(|x, y| desc(&x.0, &y.0).then(x.1.total_cmp(&y.1)).then(x.2.cmp(&y.2)).then(x.3.cmp(&y.3)));
        for (k, &(score, _, a, b)) in scored.iter().enumerate() {
            if !last && score.iter().all(|&d| d == 0.0) {
                continue;
            }
            if self.m.free1(a) && self.m.free2(b) && self.subtree_free1(a) && self.subtree_free2(b) {
                self.map_subtree(a, b);
                // Another still-free old candidate with the same score: a guess.
                let rival = scored[k + 1..]
                    .iter()
                    .take_while(|s| s.0 == score)
                    .find(|s| s.2 == a && s.3 != b && self.m.free2(s.3))
                    .map(|s| s.3);
                if let Some(r) = rival {
                    self.m.tie.insert(a, r);
                }
            }
        }
    }

    /// Dice similarity of the ancestors of `a` and `b`, level by level from
    /// their parents up, and whether the context contradicts the pair: at
    /// the first level where the new ancestor has matched descendants, none
    /// of them is matched into the old ancestor.
    fn context_score(
        &self,
        a: u32,
        b: u32,
        cache: &mut FxHashMap<(u32, u32), (f64, bool)>,
    ) -> ([f64; CONTEXT_LEVELS], bool) {
        let mut out = [0.0; CONTEXT_LEVELS];
        let mut contradicted = None;
        let (mut x, mut y) = (self.t1.parent(a), self.t2.parent(b));
        for slot in &mut out {
            if x == NONE || y == NONE {
                break;
            }
            let (dice, any) = *cache.entry((x, y)).or_insert_with(|| self.overlap(x, y));
            *slot = dice;
            if contradicted.is_none() && any {
                contradicted = Some(dice == 0.0);
            }
            x = self.t1.parent(x);
            y = self.t2.parent(y);
        }
        (out, contradicted.unwrap_or(false))
    }

    /// Dice similarity of `a` and `b`, and whether any descendant of `a` is
    /// matched at all.
    fn overlap(&self, a: u32, b: u32) -> (f64, bool) {
        let d1 = self.t1.node(a).size - 1;
        let d2 = self.t2.node(b).size - 1;
        let (mut any, mut common) = (false, 0usize);
        for x in self.t1.subtree(a).skip(1) {
            if let Some(y) = self.m.partner(x) {
                any = true;
                common += usize::from(self.t2.contains(b, y));
            }
        }
        let dice = if d1 + d2 == 0 { 0.0 } else { 2.0 * common as f64 / (d1 + d2) as f64 };
        (dice, any)
    }

    fn bottomup(&mut self) {
        let (t1, t2) = (self.t1, self.t2);
        let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
        for a in t1.postorder() {
            let na = t1.node(a);
            if !self.m.free1(a) || t1.children(a).is_empty() {
                continue;
            }
            counts.clear();
            for d in t1.subtree(a).skip(1) {
                if let Some(y) = self.m.partner(d) {
                    let mut up = t2.parent(y);
                    while up != NONE {
                        if t2.node(up).kind == na.kind && self.m.free2(up) {
                            *counts.entry(up).or_insert(0) += 1;
                        }
                        up = t2.parent(up);
                    }
                }
            }
            let d1 = na.size - 1;
            let best = counts
                .iter()
                .map(|(&b, &c)| {
                    let d2 = t2.node(b).size - 1;
                    (2.0 * c as f64 / (d1 + d2) as f64, b)
                })
                .max_by(|x, y| {
                    x.0.total_cmp(&y.0).then(self.position_gap(a, y.1).total_cmp(&self.position_gap(a, x.1)))
                });
            if let Some((dice, b)) = best {
                if dice > self.p.min_dice && self.plausible_statements(a, b) {
                    self.m.link(a, b);
                    if na.size.max(t2.node(b).size) < self.p.max_recovery_size {
                        self.recover(a, b);
                    }
                }
            }
        }
        // The roots always correspond when anything below them does.
        if self.m.free1(0) && self.m.free2(0) && t1.node(0).kind == t2.node(0).kind && self.dice(0, 0) > 0.0 {
            self.m.link(0, 0);
        }
    }

    /// Whether `a` and `b` may be matched bottom-up as far as the simple
    /// statements they are (or are the expression of) go: alike enough by
    /// [`similarity`]. Dice alone matches `args.dist_bn = ''` with a far
    /// away `output_dir = ''` through their one common string.
    fn plausible_statements(&self, a: u32, b: u32) -> bool {
        let statement = |t: &Tree, x: u32| {
            let k = t.node(x).kind;
            if self.kinds.is_statement(k) {
                return Some(x);
            }
            let p = t.parent(x);
            (p != NONE && t.node(p).kind == self.kinds.expression_statement).then_some(p)
        };
        let (Some(sa), Some(sb)) = (statement(self.t1, a), statement(self.t2, b)) else { return true };
        let pa = Profile::of(self.t1, sa, self.kinds, &|l| self.t1.node(l).label);
        if pa.is_compound() {
            return true;
        }
        let pb = Profile::of(self.t2, sb, self.kinds, &|l| self.t2.node(l).label);
        similarity(&pa, &pb) >= MIN_SIMILARITY / 2.0
    }

    fn gaps(&mut self) {
        let (t1, t2) = (self.t1, self.t2);
        for a in 0..t1.len() as u32 {
            let Some(b) = self.m.partner(a) else { continue };
            let (c1, c2) = (t1.children(a), t2.children(b));
            if c1.is_empty() || c2.is_empty() {
                continue;
            }
            // Split both child lists at the matched pairs that keep order,
            // except statements matched with an edited partner: those are
            // aligned again with the free ones around them (bottom-up pairs
            // an edited statement by its matched parts, which a run of
            // look-alike statements shifts by one).
            let mut gaps: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
            let mut g1 = Vec::new();
            let mut j = 0usize;
            for &x in c1 {
                let found = self.m.partner(x).and_then(|y| c2[j..].iter().position(|&c| c == y).map(|k| (y, k)));
                match found {
                    Some((y, _))
                        if self.kinds.is_statement(t1.node(x).kind) && t1.node(x).shape != t2.node(y).shape =>
                    {
                        g1.push(x)
                    }
                    Some((_, k)) => {
                        gaps.push((std::mem::take(&mut g1), c2[j..j + k].to_vec()));
                        j += k + 1;
                    }
                    None if self.m.free1(x) => g1.push(x),
                    None => {}
                }
            }
            gaps.push((g1, c2[j..].to_vec()));
            for (g1, g2) in gaps {
                self.realign(c1, c2, g1, g2);
            }
        }
    }

    /// Aligns the children `g1` (new) and `g2` (old) of one gap between
    /// identical pairs of two matched containers whose children are `c1`
    /// and `c2`.
    fn realign(&mut self, c1: &[u32], c2: &[u32], g1: Vec<u32>, g2: Vec<u32>) {
        let (t1, t2) = (self.t1, self.t2);
        let g2: Vec<u32> = g2.into_iter().filter(|&y| self.m.free2(y) || g1.contains(&self.m.m2[y as usize])).collect();
        let g1: Vec<u32> = g1.into_iter().filter(|&x| self.m.partner(x).is_none_or(|y| g2.contains(&y))).collect();
        if g1.is_empty() || g2.is_empty() || g1.len() * g2.len() > MAX_AMBIGUOUS_PAIRS {
            return;
        }
        // A child whose kind is unique among all children on both
        // sides holds the same role (the body of a matched `for`):
        // it corresponds whatever its content. Not so a statement:
        // the only `if` of two loop bodies may be unrelated, so
        // statements are paired by similarity (an edited statement
        // with its old self).
        let unique = |x: u32| {
            let k = t1.node(x).kind;
            c1.iter().filter(|&&c| t1.node(c).kind == k).count() == 1
                && c2.iter().filter(|&&c| t2.node(c).kind == k).count() == 1
        };
        let profiles = |t: &Tree, g: &[u32]| -> Vec<Option<Profile>> {
            g.iter()
                .map(|&x| {
                    self.kinds.is_statement(t.node(x).kind).then(|| Profile::of(t, x, self.kinds, &|l| t.node(l).label))
                })
                .collect()
        };
        let (p1, p2) = (profiles(t1, &g1), profiles(t2, &g2));
        // The alignment with the most similarity in all, not the
        // most pairs: in a run of near-identical statements (one
        // `write(...)` per tensor) each pairs with its own old self,
        // not with its neighbour's.
        let pairs = align(g1.len(), g2.len(), |i, j| {
            let (x, y) = (g1[i], g2[j]);
            if t1.node(x).kind != t2.node(y).kind {
                return None;
            }
            if self.requested[x as usize] {
                return (t1.node(x).shape == t2.node(y).shape).then_some(1.0);
            }
            // The pair the matcher made wins a tie.
            let kept = if self.m.partner(x) == Some(y) { 0.01 } else { 0.0 };
            match (&p1[i], &p2[j]) {
                (Some(a), Some(b)) => Some(similarity(a, b) + kept).filter(|&s| s >= MIN_SIMILARITY),
                _ => (unique(x) || self.leaf_dice(x, y) >= 0.5).then_some(1.0),
            }
        });
        let pairs: Vec<(u32, u32)> = pairs.into_iter().map(|(i, j)| (g1[i], g2[j])).collect();
        for &x in &g1 {
            if let Some(y) = self.m.partner(x) {
                if !pairs.contains(&(x, y)) {
                    self.m.unlink(x, y);
                }
            }
        }
        for (x, y) in pairs {
            if self.m.partner(x) == Some(y) {
                continue;
            }
            self.m.link(x, y);
            if t1.node(x).size.max(t2.node(y).size) < self.p.max_recovery_size {
                self.recover(x, y);
            }
        }
    }

    /// Whether two nodes of the same kind may be matched in recovery: leaves
    /// always (that is how renamed identifiers are found), inner nodes when
    /// at least half their leaves agree. Without this check recovery pairs
    /// unrelated statements of the same kind (a new `flor.log(...)` with an
    /// old `opt.step()`).
    fn alike(&self, a: u32, b: u32) -> bool {
        (self.t1.children(a).is_empty() && self.t2.children(b).is_empty()) || self.leaf_dice(a, b) >= 0.5
    }

    /// Dice similarity of the leaf labels of two subtrees (as multisets).
    fn leaf_dice(&self, a: u32, b: u32) -> f64 {
        let leaves = |t: &Tree, i: u32| -> Vec<u32> {
            let mut v: Vec<u32> = t.subtree(i).filter(|&x| t.children(x).is_empty()).map(|x| t.node(x).label).collect();
            v.sort_unstable();
            v
        };
        let (l1, l2) = (leaves(self.t1, a), leaves(self.t2, b));
        let (mut i, mut j, mut common) = (0, 0, 0);
        while i < l1.len() && j < l2.len() {
            match l1[i].cmp(&l2[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        if l1.is_empty() && l2.is_empty() {
            return 0.0;
        }
        2.0 * common as f64 / (l1.len() + l2.len()) as f64
    }

    fn recover(&mut self, a: u32, b: u32) {
        let (t1, t2) = (self.t1, self.t2);
        let free = |m: &Mapping, xs: &[u32], first: bool| -> Vec<u32> {
            xs.iter().copied().filter(|&x| if first { m.free1(x) } else { m.free2(x) }).collect()
        };
        // 1. Isomorphic children, in order.
        let c1 = free(&self.m, t1.children(a), true);
        let c2 = free(&self.m, t2.children(b), false);
        for (x, y) in lcs(&c1, &c2, |x, y| t1.node(x).shape == t2.node(y).shape) {
            if self.subtree_free1(x) && self.subtree_free2(y) {
                self.map_subtree(x, y);
            }
        }
        // 2. Same kind and label, in order.
        let c1 = free(&self.m, t1.children(a), true);
        let c2 = free(&self.m, t2.children(b), false);
        for (x, y) in lcs(&c1, &c2, |x, y| {
            let (nx, ny) = (t1.node(x), t2.node(y));
            nx.kind == ny.kind && nx.label == ny.label && !self.requested[x as usize] && self.alike(x, y)
        }) {
            self.m.link(x, y);
            self.recover(x, y);
        }
        // 3. Kinds that occur once among the free children on both sides.
        let c1 = free(&self.m, t1.children(a), true);
        let c2 = free(&self.m, t2.children(b), false);
        for &x in &c1 {
            let kind = t1.node(x).kind;
            if self.requested[x as usize] || c1.iter().filter(|&&o| t1.node(o).kind == kind).count() != 1 {
                continue;
            }
            let mut same = c2.iter().filter(|&&o| t2.node(o).kind == kind);
            if let (Some(&y), None) = (same.next(), same.next()) {
                if self.m.free2(y) && self.alike(x, y) {
                    self.m.link(x, y);
                    self.recover(x, y);
                }
            }
        }
    }
}

/// The order-keeping pairing of `0..n` with `0..m` with the largest total
/// weight, where `weight(i, j)` is `None` for pairs that may not be paired
/// (small inputs: `n * m` cells).
fn align(n: usize, m: usize, weight: impl Fn(usize, usize) -> Option<f64>) -> Vec<(usize, usize)> {
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let at = |i: usize, j: usize| i * (m + 1) + j;
    let mut w = vec![None; n * m];
    for i in 0..n {
        for j in 0..m {
            w[i * m + j] = weight(i, j);
        }
    }
    let mut t = vec![0.0f64; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let skip = t[at(i + 1, j)].max(t[at(i, j + 1)]);
            t[at(i, j)] = match w[i * m + j] {
                Some(v) => skip.max(t[at(i + 1, j + 1)] + v),
                None => skip,
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        match w[i * m + j] {
            Some(v) if t[at(i, j)] == t[at(i + 1, j + 1)] + v => {
                out.push((i, j));
                i += 1;
                j += 1;
            }
            _ if t[at(i, j)] == t[at(i + 1, j)] => i += 1,
            _ => j += 1,
        }
    }
    out
}

/// Longest common subsequence of `a` and `b` under `eq` (small inputs).
fn lcs(a: &[u32], b: &[u32], eq: impl Fn(u32, u32) -> bool) -> Vec<(u32, u32)> {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let mut t = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[at(i, j)] = if eq(a[i], b[j]) { t[at(i + 1, j + 1)] + 1 } else { t[at(i + 1, j)].max(t[at(i, j + 1)]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if eq(a[i], b[j]) {
            out.push((a[i], b[j]));
            i += 1;
            j += 1;
        } else if t[at(i + 1, j)] >= t[at(i, j + 1)] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}
