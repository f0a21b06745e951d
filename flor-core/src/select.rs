//! Selections: which runs and which loop iterations a question is about.
//!
//! One syntax for every front end (`flor dataframe --where/--iter`,
//! `flor.dataframe(..., where=..., iter=...)`, `flor replay --where`):
//!
//! * `where`: a SQL predicate over a run's run-level columns (`projid`,
//!   `tstamp`, `filename` and the values it recorded outside loops, such as
//!   its args), e.g. `lr > 0.05 AND optimizer = 'adam'`. The front end
//!   resolves it to a set of runs ([`PivotFilter::runs`]) before the store
//!   is asked anything else.
//! * `iter`: `LOOP=SPEC` ([`IterSelect`]), SPEC one of `all`, `last`,
//!   `none`, or a comma-separated list of iteration indices and ranges
//!   (`0,3,5-7`), e.g. `epoch=last`. A row inside an iteration of LOOP is
//!   kept when that iteration is selected (`last`: the last iteration of
//!   LOOP inside the same enclosing iteration); rows outside LOOP are kept.
//!
//! [`PivotFilter`] is what a store receives: both parts resolved, applied
//! before the pivot (the runs' records are never read for runs outside the
//! set; records of unselected iterations are dropped as they are scanned).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::store::RunKey;

/// Which iterations of a loop a selection keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IterSpec {
    /// Every iteration.
    All,
    /// The last iteration inside each enclosing iteration (each run, for
    /// an outermost loop).
    Last,
    /// No iteration.
    None,
    /// These iteration indices (from 0), as inclusive ranges.
    Indices(Vec<(u64, u64)>),
}

impl IterSpec {
    /// Whether iteration `it` is kept, `last` being the last iteration of
    /// the loop inside the same enclosing iteration.
    pub fn keeps(&self, it: u64, last: u64) -> bool {
        match self {
            IterSpec::All => true,
            IterSpec::Last => it == last,
            IterSpec::None => false,
            IterSpec::Indices(r) => r.iter().any(|&(a, b)| a <= it && it <= b),
        }
    }
}

/// `LOOP=SPEC`: the iterations of one loop a selection keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterSelect {
    /// The loop's name (as in `flor.loop("epoch", ...)`).
    pub loop_name: String,
    /// Which of its iterations.
    pub spec: IterSpec,
}

/// A malformed selection: what was given and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad iteration selection {given:?}: {why} (expected LOOP=SPEC, SPEC one of all, last, none, or indices such as 0,3,5-7)")]
pub struct BadSelection {
    /// The text given.
    pub given: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for IterSelect {
    type Err = BadSelection;

    fn from_str(s: &str) -> Result<IterSelect, BadSelection> {
        let bad = |why: &str| BadSelection { given: s.to_owned(), why: why.to_owned() };
        let (name, spec) = s.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("no loop name before `=`"));
        }
        let spec = match spec.trim().to_ascii_lowercase().as_str() {
            "all" => IterSpec::All,
            "last" => IterSpec::Last,
            "none" => IterSpec::None,
            "" => return Err(bad("no SPEC after `=`")),
            list => {
                let mut ranges = Vec::new();
                for part in list.split(',').map(str::trim) {
                    let num = |t: &str| t.trim().parse::<u64>().map_err(|_| bad(&format!("{t:?} is not an index")));
                    let r = match part.split_once('-') {
                        Some((a, b)) => (num(a)?, num(b)?),
                        None => (num(part)?, num(part)?),
                    };
                    if r.0 > r.1 {
                        return Err(bad(&format!("the range {part} is empty")));
                    }
                    ranges.push(r);
                }
                IterSpec::Indices(ranges)
            }
        };
        Ok(IterSelect { loop_name: name.to_owned(), spec })
    }
}

impl fmt::Display for IterSelect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.loop_name)?;
        match &self.spec {
            IterSpec::All => f.write_str("all"),
            IterSpec::Last => f.write_str("last"),
            IterSpec::None => f.write_str("none"),
            IterSpec::Indices(r) => {
                for (i, (a, b)) in r.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    if a == b {
                        write!(f, "{a}")?;
                    } else {
                        write!(f, "{a}-{b}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A selection as a user writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// A SQL predicate over run-level columns (see the module docs).
    pub where_clause: Option<String>,
    /// Loop iterations to keep.
    pub iters: Vec<IterSelect>,
}

impl Selection {
    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.where_clause.is_none() && self.iters.is_empty()
    }
}

/// A selection resolved for a store: the runs (by key; `None`: all) and
/// the loop iterations to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PivotFilter {
    /// The runs to answer for; `None`: every run.
    pub runs: Option<Vec<RunKey>>,
    /// Loop iterations to keep.
    pub iters: Vec<IterSelect>,
}

impl PivotFilter {
    /// Whether it keeps everything.
    pub fn is_empty(&self) -> bool {
        self.runs.is_none() && self.iters.is_empty()
    }

    /// Whether run `key` is selected.
    pub fn keeps_run(&self, key: RunKey) -> bool {
        self.runs.as_ref().is_none_or(|r| r.contains(&key))
    }
}

/// One loop span of a run as [`IterFilter`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct SpanRef<'a> {
    /// Context id of its first iteration.
    pub first_ctx: u32,
    /// Iterations.
    pub count: u32,
    /// Enclosing context (`None`: outermost).
    pub parent: Option<u32>,
    /// Loop name.
    pub name: &'a str,
    /// Iteration index of the first context.
    pub first_iteration: u64,
}

/// Per span: how its contexts fare under the selection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// Every context kept.
    Kept,
    /// Every context dropped.
    Dropped,
    /// Its loop is selected: decided per iteration, by this selection
    /// (index into `iters`), the loop's last iteration inside the parent
    /// being `last`.
    PerIteration { select: usize, last: u64 },
}

/// One run's loop iterations under a list of [`IterSelect`]s: which
/// contexts are kept. Built once per run from its spans.
#[derive(Debug, Default)]
pub struct IterFilter {
    /// Spans sorted by first context: (first_ctx, count, first_iteration, fate).
    spans: Vec<(u32, u32, u64, Fate)>,
    specs: Vec<IterSpec>,
}

impl IterFilter {
    /// The filter of one run whose loop spans are `spans` (any order).
    pub fn new(iters: &[IterSelect], spans: &[SpanRef<'_>]) -> IterFilter {
        let mut sorted: Vec<&SpanRef<'_>> = spans.iter().collect();
        sorted.sort_by_key(|s| s.first_ctx);
        // The last iteration of each loop inside each enclosing context.
        let mut last: HashMap<(&str, Option<u32>), u64> = HashMap::new();
        for s in &sorted {
            let end = s.first_iteration + u64::from(s.count.max(1)) - 1;
            let e = last.entry((s.name, s.parent)).or_insert(end);
            *e = (*e).max(end);
        }
        let mut out = IterFilter { spans: Vec::with_capacity(sorted.len()), specs: Vec::new() };
        out.specs = iters.iter().map(|i| i.spec.clone()).collect();
        for s in &sorted {
            let fate = match iters.iter().rposition(|i| i.loop_name == s.name) {
                Some(select) => Fate::PerIteration { select, last: last[&(s.name, s.parent)] },
                None => Fate::Kept,
            };
            out.spans.push((s.first_ctx, s.count, s.first_iteration, fate));
        }
        // Ancestors first (a parent context is below its children's):
        // a span inside a dropped context is dropped.
        let parents: Vec<Option<u32>> = sorted.iter().map(|s| s.parent).collect();
        for (i, parent) in parents.into_iter().enumerate() {
            if let Some(p) = parent {
                if !out.keeps(p) {
                    out.spans[i].3 = Fate::Dropped;
                }
            }
        }
        out
    }

    /// Whether context `ctx` (`None`: run level) is kept.
    pub fn keeps(&self, ctx: u32) -> bool {
        let i = match self.spans.partition_point(|s| s.0 <= ctx).checked_sub(1) {
            Some(i) => i,
            None => return true,
        };
        let (first, count, first_it, fate) = self.spans[i];
        if ctx - first >= count {
            return true; // outside every span
        }
        match fate {
            Fate::Kept => true,
            Fate::Dropped => false,
            Fate::PerIteration { select, last } => self.specs[select].keeps(first_it + u64::from(ctx - first), last),
        }
    }

    /// Whether it keeps every context.
    pub fn keeps_all(&self) -> bool {
        self.spans.iter().all(|s| s.3 == Fate::Kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> IterSelect {
        s.parse().unwrap()
    }

    #[test]
    fn specs_parse_and_print() {
        assert_eq!(sel("epoch=last").spec, IterSpec::Last);
        assert_eq!(sel(" epoch = ALL ").spec, IterSpec::All);
        assert_eq!(sel("step=none").spec, IterSpec::None);
        assert_eq!(sel("step=0,3,5-7").spec, IterSpec::Indices(vec![(0, 0), (3, 3), (5, 7)]));
        assert_eq!(sel("step=0,3,5-7").to_string(), "step=0,3,5-7");
        for bad in ["epoch", "=last", "epoch=", "epoch=x", "epoch=3-1", "epoch=-1"] {
            let e = bad.parse::<IterSelect>().unwrap_err();
            assert!(e.to_string().contains("LOOP=SPEC"), "{bad}: {e}");
        }
    }

    /// Two epochs of three steps each, then an `eval` loop: contexts
    /// 0 (epoch 0), 1-3 (steps), 4 (epoch 1), 5-7 (steps), 8-9 (eval).
    fn spans() -> Vec<SpanRef<'static>> {
        let s = |first_ctx, count, parent, name, first_iteration| SpanRef {
            first_ctx,
            count,
            parent,
            name,
            first_iteration,
        };
        vec![
            s(0, 1, None, "epoch", 0),
            s(1, 3, Some(0), "step", 0),
            s(4, 1, None, "epoch", 1),
            s(5, 3, Some(4), "step", 0),
            s(8, 2, None, "eval", 0),
        ]
    }

    fn kept(iters: &[&str]) -> Vec<u32> {
        let iters: Vec<IterSelect> = iters.iter().map(|s| sel(s)).collect();
        let f = IterFilter::new(&iters, &spans());
        (0..12).filter(|&c| f.keeps(c)).collect()
    }

    #[test]
    fn loops_select_their_iterations_and_what_they_hold() {
        assert_eq!(kept(&[]), (0..12).collect::<Vec<_>>());
        assert_eq!(kept(&["epoch=last"]), vec![4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(kept(&["epoch=0"]), vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(kept(&["step=last"]), vec![0, 3, 4, 7, 8, 9, 10, 11]);
        assert_eq!(kept(&["epoch=last", "step=0"]), vec![4, 5, 8, 9, 10, 11]);
        assert_eq!(kept(&["epoch=none"]), vec![8, 9, 10, 11]);
        assert_eq!(kept(&["eval=all", "nothing=none"]), (0..12).collect::<Vec<_>>());
    }
}
