//! Segments: which outer iterations of one run a replay executes, which it
//! skips by restoring a checkpoint, how they split into independent pieces
//! (each starts from the checkpoint before it) and what they should cost.
//! Pure computation over a [`RunProfile`]; tested without processes or git.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Where a replayed statement sits in the script, in the order of how much
/// of a run it makes execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Before the first loop: only the setup executes.
    Setup,
    /// After the loops: the last checkpoint is restored, then the teardown runs.
    Teardown,
    /// Inside the outer loop, outside nested loops: every outer iteration
    /// runs, with its nested loops skipped by restoring the checkpoint taken
    /// at the iteration's end.
    Outer,
    /// Inside a nested loop: every outer iteration runs in full.
    Inner,
}

impl Level {
    /// How the plan shows it.
    pub fn describe(self) -> &'static str {
        match self {
            Level::Setup => "before the first loop (setup only)",
            Level::Teardown => "after the loops (restore the last checkpoint, run the teardown)",
            Level::Outer => "inside the outer loop (nested loops skipped by checkpoint restore)",
            Level::Inner => "inside a nested loop (outer iterations run in full)",
        }
    }
}

/// What the forward run recorded that planning needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunProfile {
    /// Name of the outermost loop (`None`: the run never entered a loop).
    pub outer_loop: Option<String>,
    /// Seconds of each outer iteration, by index (0..n).
    pub iteration_secs: Vec<f64>,
    /// Seconds spent in nested loops inside each outer iteration.
    pub nested_secs: Vec<f64>,
    /// Setup seconds (before the first loop).
    pub setup_secs: f64,
    /// Teardown seconds (after the last loop).
    pub teardown_secs: f64,
    /// Outer iterations with a checkpoint at their end, with the bytes
    /// stored for them (all objects together).
    pub checkpoints: BTreeMap<u64, u64>,
}

impl RunProfile {
    /// Number of outer iterations.
    pub fn iterations(&self) -> u64 {
        self.iteration_secs.len() as u64
    }
}

/// How one outer iteration is executed in a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Outer-loop iteration index.
    pub iteration: u64,
    /// Restore the checkpoint taken at the end of this iteration before
    /// this one starts (the state the forward run had at that point).
    pub restore: Option<u64>,
    /// Record the applied names during this iteration (`false`: it only
    /// rebuilds state for a later one).
    pub record: bool,
    /// Skip the nested loops, restoring this iteration's own end-of-iteration
    /// checkpoint in their place.
    pub skip_nested: bool,
}

/// A contiguous piece of one run's replay, executed by one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Position of the segment within its run (0-based).
    pub index: usize,
    /// The outer iterations it executes, in order (the others are skipped).
    pub steps: Vec<Step>,
    /// Run the setup statements' records (the first segment only).
    pub record_setup: bool,
    /// Run past the loops: restore `final_restore` (when set) and execute
    /// the teardown, recording its statements.
    pub teardown: bool,
    /// The checkpoint to restore when the outer loop ends, before the
    /// teardown (`None`: the state the steps leave is already right).
    pub final_restore: Option<u64>,
    /// Estimated seconds.
    pub estimate_secs: f64,
}

/// Assumptions of the cost model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Seconds to start a replay process (interpreter, imports).
    pub process_secs: f64,
    /// Seconds per restored checkpoint, fixed part.
    pub restore_secs: f64,
    /// Bytes per second read, decompressed and loaded when restoring.
    pub restore_bytes_per_sec: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel { process_secs: 0.15, restore_secs: 0.002, restore_bytes_per_sec: 200e6 }
    }
}

impl CostModel {
    fn restore(&self, profile: &RunProfile, iteration: u64) -> f64 {
        let bytes = profile.checkpoints.get(&iteration).copied().unwrap_or(0);
        self.restore_secs + bytes as f64 / self.restore_bytes_per_sec
    }
}

/// Why a run cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `--iter` keeps none of the outer loop's iterations of this run.
    #[error("the --iter selection keeps none of its {iterations} outer iterations")]
    NothingSelected {
        /// The run's outer iterations.
        iterations: u64,
    },
    /// The statements sit in a loop but the run never entered one.
    #[error("the run recorded no loop iterations, so statements inside loops have nothing to replay")]
    NoIterations,
    /// The outer loop's iteration indexes (set explicitly with
    /// `flor.iteration(name, index)`) run far beyond its iterations: a
    /// plan covers iterations `0..=max_index`, and memory and time are
    /// bounded by the run's records, not by an index written in them.
    #[error(
        "the outer loop `{name}` has {iterations} iterations with indexes up to {max_index}, too sparse \
         to plan (a plan covers iterations 0 to the largest index; at most {limit} for this run)"
    )]
    SparseIterations {
        /// The outer loop.
        name: String,
        /// Its iterations.
        iterations: usize,
        /// Their largest index.
        max_index: u64,
        /// The largest index planned for this run.
        limit: u64,
    },
}

/// The replay of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// Where the statements sit (the deepest of them).
    pub level: Level,
    /// Whether any statement sits after the loops.
    pub teardown: bool,
    /// The segments, in iteration order.
    pub segments: Vec<Segment>,
    /// Estimated seconds, all segments together.
    pub estimate_secs: f64,
    /// Seconds the forward run took (setup + iterations + teardown).
    pub forward_secs: f64,
}

/// Plans the replay of one run for statements at `levels`, split into at
/// most `max_segments` segments (each boundary needs a checkpoint).
pub fn plan_run(
    profile: &RunProfile,
    levels: &[Level],
    max_segments: usize,
    cost: &CostModel,
) -> Result<RunPlan, PlanError> {
    plan_run_selected(profile, levels, max_segments, cost, None)
}

/// [`plan_run`] recording only the outer iterations in `selected`
/// (`flor replay --iter OUTER=SPEC`, resolved for this run; `None`: all):
/// an iteration runs when it is selected or when a later selected one
/// needs the state it leaves (no checkpoint in between); the others are
/// skipped by restoring the checkpoint before the next one that runs.
pub fn plan_run_selected(
    profile: &RunProfile,
    levels: &[Level],
    max_segments: usize,
    cost: &CostModel,
    selected: Option<&BTreeSet<u64>>,
) -> Result<RunPlan, PlanError> {
    let teardown = levels.contains(&Level::Teardown);
    let level = levels.iter().copied().max().unwrap_or(Level::Setup);
    let forward_secs =
        profile.setup_secs + profile.iteration_secs.iter().fold(0.0, |a, b| a + b) + profile.teardown_secs;
    let in_loops = matches!(level, Level::Outer | Level::Inner);
    let nothing_selected = selected.is_some_and(|s| !s.iter().any(|&i| i < profile.iterations()));
    let segments =
        if !in_loops || (nothing_selected && levels.iter().any(|l| matches!(l, Level::Setup | Level::Teardown))) {
            vec![setup_segment(profile, teardown, cost)]
        } else if nothing_selected {
            return Err(PlanError::NothingSelected { iterations: profile.iterations() });
        } else {
            loop_segments(profile, level, teardown, max_segments, cost, selected)?
        };
    let estimate_secs = segments.iter().map(|s| s.estimate_secs).fold(0.0, |a, b| a + b);
    Ok(RunPlan { level, teardown, segments, estimate_secs, forward_secs })
}

/// Seconds of outer iteration `i` in the forward run.
fn full_secs(profile: &RunProfile, i: u64) -> f64 {
    profile.iteration_secs.get(i as usize).copied().unwrap_or(0.0)
}

/// Seconds the nested loops of outer iteration `i` took.
fn nested_secs(profile: &RunProfile, i: u64) -> f64 {
    profile.nested_secs.get(i as usize).copied().unwrap_or(0.0)
}

/// The one segment of a replay whose statements sit before or after the
/// loops: the setup, and for a teardown statement the iterations after the
/// last checkpoint (from its restore) and the teardown.
fn setup_segment(profile: &RunProfile, teardown: bool, cost: &CostModel) -> Segment {
    let n = profile.iterations();
    let full = |i: u64| full_secs(profile, i);
    // No iteration records anything: restore the last checkpoint (or,
    // without one, run every iteration silently to rebuild the state).
    let mut seg = Segment {
        index: 0,
        steps: Vec::new(),
        record_setup: true,
        teardown,
        final_restore: None,
        estimate_secs: cost.process_secs + profile.setup_secs,
    };
    if teardown && n > 0 {
        let last = n - 1;
        // The latest checkpoint, then the iterations after it silently.
        let from = profile.checkpoints.keys().next_back().copied();
        let start = from.map_or(0, |c| c + 1);
        for i in start..n {
            seg.steps.push(Step {
                iteration: i,
                restore: if i == start { from } else { None },
                record: false,
                skip_nested: false,
            });
            seg.estimate_secs += full(i);
        }
        if seg.steps.is_empty() {
            seg.final_restore = Some(last);
            seg.estimate_secs += cost.restore(profile, last);
        } else if let Some(c) = from {
            seg.estimate_secs += cost.restore(profile, c);
        }
        seg.estimate_secs += profile.teardown_secs;
    }
    seg
}

/// The outer iterations a replay executes, in order, each with whether it
/// records: all of them without a selection; with one, each selected
/// iteration and the ones before it back to the nearest checkpoint (they
/// rebuild its state), plus, for a teardown, the ones after the last
/// checkpoint (none when the last iteration has one: it is restored).
fn needed_iterations(profile: &RunProfile, teardown: bool, selected: Option<&BTreeSet<u64>>) -> BTreeMap<u64, bool> {
    let n = profile.iterations();
    let Some(selected) = selected else {
        return (0..n).map(|i| (i, true)).collect();
    };
    let has_ckpt = |i: u64| profile.checkpoints.contains_key(&i);
    // The first iteration that must run to reach iteration `i`'s start.
    let start = |i: u64| (0..i).rev().find(|&j| has_ckpt(j)).map_or(0, |j| j + 1);
    let mut needed = BTreeMap::new();
    for &i in selected.iter().filter(|&&i| i < n) {
        for m in start(i)..=i {
            needed.insert(m, selected.contains(&m));
        }
    }
    let last_needed = needed.keys().next_back().copied();
    if teardown && n > 0 && last_needed != Some(n - 1) && !has_ckpt(n - 1) {
        for m in start(n).max(last_needed.map_or(0, |l| l + 1))..n {
            needed.insert(m, selected.contains(&m));
        }
    }
    needed
}

/// The segments of a replay whose statements sit inside the loops: the
/// needed outer iterations ([`needed_iterations`]; nested loops skipped by
/// restore at [`Level::Outer`]), cut where a checkpoint allows into at most
/// `max_segments` pieces of balanced estimated cost. A segment may jump
/// over iterations it does not need, restoring the checkpoint before the
/// next one.
fn loop_segments(
    profile: &RunProfile,
    level: Level,
    teardown: bool,
    max_segments: usize,
    cost: &CostModel,
    selected: Option<&BTreeSet<u64>>,
) -> Result<Vec<Segment>, PlanError> {
    let n = profile.iterations();
    if n == 0 {
        return Err(PlanError::NoIterations);
    }
    let full = |i: u64| full_secs(profile, i);
    let nested = |i: u64| nested_secs(profile, i);
    let has_ckpt = |i: u64| profile.checkpoints.contains_key(&i);
    let needed: Vec<(u64, bool)> = needed_iterations(profile, teardown, selected).into_iter().collect();
    let m = needed.len();
    // Where a segment may start: at a position whose iteration can be
    // reached by restoring the checkpoint before it.
    let starts: Vec<usize> = (1..m).filter(|&p| has_ckpt(needed[p].0 - 1)).collect();
    let step_cost = |i: u64| {
        if level == Level::Outer && has_ckpt(i) {
            (full(i) - nested(i)).max(0.0) + cost.restore(profile, i)
        } else {
            full(i)
        }
    };
    // Cut where the running cost is closest to equal shares (a tiny
    // weight per iteration balances by count when times are ~0).
    let weight = |p: usize| step_cost(needed[p].0) + 1e-9;
    let mut prefix = vec![0.0; m + 1];
    for p in 0..m {
        prefix[p + 1] = prefix[p] + weight(p);
    }
    let total = prefix[m];
    let wanted = max_segments.clamp(1, m.max(1));
    let mut cuts = BTreeSet::new();
    let mut prev = 0;
    for j in 1..wanted {
        let target = total * j as f64 / wanted as f64;
        let best = starts
            .iter()
            .copied()
            .filter(|&s| s > prev)
            .min_by(|&a, &b| (prefix[a] - target).abs().total_cmp(&(prefix[b] - target).abs()));
        if let Some(s) = best {
            cuts.insert(s);
            prev = s;
        }
    }
    let mut bounds: Vec<usize> = std::iter::once(0).chain(cuts.iter().copied()).collect();
    bounds.push(m);
    let last_runs_to_end = needed.last().is_some_and(|&(i, _)| i == n - 1);
    let mut segments = Vec::new();
    for (k, w) in bounds.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        let mut seg = Segment {
            index: k,
            steps: Vec::new(),
            record_setup: k == 0,
            teardown: teardown && b == m,
            final_restore: None,
            estimate_secs: cost.process_secs + profile.setup_secs,
        };
        for p in a..b {
            let (i, record) = needed[p];
            // The first step of a segment, or one after a jump, starts from
            // the checkpoint before it.
            let jumped = if p == a { i > 0 } else { needed[p - 1].0 + 1 != i };
            let restore = jumped.then(|| i - 1);
            if let Some(r) = restore {
                seg.estimate_secs += cost.restore(profile, r);
            }
            seg.steps.push(Step { iteration: i, restore, record, skip_nested: level == Level::Outer && has_ckpt(i) });
            seg.estimate_secs += step_cost(i);
        }
        if seg.teardown {
            if !last_runs_to_end {
                seg.final_restore = Some(n - 1);
                seg.estimate_secs += cost.restore(profile, n - 1);
            }
            seg.estimate_secs += profile.teardown_secs;
        }
        segments.push(seg);
    }
    Ok(segments)
}

/// The time `jobs` workers need for tasks of these durations, longest first
/// onto the least loaded worker.
pub fn makespan(durations: &[f64], jobs: usize) -> f64 {
    let mut sorted: Vec<f64> = durations.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut load = vec![0.0f64; jobs.max(1)];
    for d in sorted {
        if let Some(min) = load.iter_mut().min_by(|a, b| a.total_cmp(b)) {
            *min += d;
        }
    }
    load.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(n: u64, ckpts: &[u64]) -> RunProfile {
        RunProfile {
            outer_loop: Some("epoch".into()),
            iteration_secs: vec![1.0; n as usize],
            nested_secs: vec![0.9; n as usize],
            setup_secs: 0.5,
            teardown_secs: 0.25,
            checkpoints: ckpts.iter().map(|&i| (i, 1000)).collect(),
        }
    }

    fn no_cost() -> CostModel {
        CostModel { process_secs: 0.0, restore_secs: 0.0, restore_bytes_per_sec: f64::INFINITY }
    }

    #[test]
    fn outer_level_skips_nested_loops_where_a_checkpoint_allows() {
        let p = profile(4, &[0, 1, 3]);
        let plan = plan_run(&p, &[Level::Outer], 1, &no_cost()).unwrap();
        assert_eq!(plan.segments.len(), 1);
        let s = &plan.segments[0];
        assert_eq!(
            s.steps.iter().map(|s| (s.iteration, s.skip_nested, s.record, s.restore)).collect::<Vec<_>>(),
            vec![(0, true, true, None), (1, true, true, None), (2, false, true, None), (3, true, true, None)]
        );
        // setup + 3 × (1.0 - 0.9) + 1 full iteration
        assert!((plan.estimate_secs - (0.5 + 0.3 + 1.0)).abs() < 1e-9, "{}", plan.estimate_secs);
        assert!(!s.teardown);
    }

    #[test]
    fn inner_level_splits_at_checkpoints_into_concurrent_segments() {
        let p = profile(8, &[0, 1, 2, 3, 4, 5, 6, 7]);
        let plan = plan_run(&p, &[Level::Inner, Level::Outer], 2, &no_cost()).unwrap();
        assert_eq!(plan.level, Level::Inner);
        assert_eq!(plan.segments.len(), 2);
        let first: Vec<u64> = plan.segments[0].steps.iter().map(|s| s.iteration).collect();
        let second: Vec<u64> = plan.segments[1].steps.iter().map(|s| s.iteration).collect();
        assert_eq!(first, vec![0, 1, 2, 3]);
        assert_eq!(second, vec![4, 5, 6, 7]);
        assert_eq!(plan.segments[1].steps[0].restore, Some(3));
        assert!(plan.segments[0].record_setup && !plan.segments[1].record_setup);
        assert!(plan.segments.iter().flat_map(|s| &s.steps).all(|s| s.record && !s.skip_nested));
    }

    #[test]
    fn segments_only_start_after_a_checkpoint() {
        let p = profile(6, &[4]);
        let plan = plan_run(&p, &[Level::Inner], 4, &no_cost()).unwrap();
        let starts: Vec<u64> = plan.segments.iter().map(|s| s.steps[0].iteration).collect();
        assert_eq!(starts, vec![0, 5]);
        // Every iteration is executed exactly once across segments.
        let all: Vec<u64> = plan.segments.iter().flat_map(|s| s.steps.iter().map(|s| s.iteration)).collect();
        assert_eq!(all, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn teardown_restores_the_last_checkpoint_or_rebuilds_state() {
        let p = profile(5, &[0, 1, 2, 3, 4]);
        let plan = plan_run(&p, &[Level::Teardown], 2, &no_cost()).unwrap();
        assert_eq!(plan.segments.len(), 1);
        assert_eq!(plan.segments[0].final_restore, Some(4));
        assert!(plan.segments[0].steps.is_empty() && plan.segments[0].teardown);

        let p = profile(5, &[2]);
        let plan = plan_run(&p, &[Level::Teardown], 2, &no_cost()).unwrap();
        let s = &plan.segments[0];
        assert_eq!(
            s.steps.iter().map(|s| (s.iteration, s.restore, s.record)).collect::<Vec<_>>(),
            vec![(3, Some(2), false), (4, None, false)]
        );
        assert_eq!(s.final_restore, None);
    }

    #[test]
    fn setup_level_runs_no_iteration() {
        let plan = plan_run(&profile(3, &[]), &[Level::Setup], 4, &no_cost()).unwrap();
        assert_eq!(plan.segments.len(), 1);
        assert!(plan.segments[0].steps.is_empty() && !plan.segments[0].teardown);
        assert!((plan.estimate_secs - 0.5).abs() < 1e-9);
    }

    #[test]
    fn loops_without_iterations_are_an_error() {
        assert_eq!(plan_run(&profile(0, &[]), &[Level::Inner], 1, &no_cost()), Err(PlanError::NoIterations));
    }

    fn sel(its: &[u64]) -> BTreeSet<u64> {
        its.iter().copied().collect()
    }

    fn steps(plan: &RunPlan) -> Vec<Vec<(u64, Option<u64>, bool)>> {
        plan.segments.iter().map(|s| s.steps.iter().map(|s| (s.iteration, s.restore, s.record)).collect()).collect()
    }

    #[test]
    fn a_selection_with_checkpoints_everywhere_runs_only_the_selected_iterations() {
        let p = profile(10, &(0..10).collect::<Vec<_>>());
        let plan = plan_run_selected(&p, &[Level::Inner], 1, &no_cost(), Some(&sel(&[9]))).unwrap();
        assert_eq!(steps(&plan), vec![vec![(9, Some(8), true)]]);
        // The estimate follows: one iteration instead of ten (plus setup).
        assert!((plan.estimate_secs - 1.5).abs() < 1e-9, "{}", plan.estimate_secs);
        // Non-consecutive selections jump inside one segment, restoring before each jump.
        let plan = plan_run_selected(&p, &[Level::Inner], 1, &no_cost(), Some(&sel(&[0, 3, 4, 7]))).unwrap();
        assert_eq!(steps(&plan), vec![vec![(0, None, true), (3, Some(2), true), (4, None, true), (7, Some(6), true)]]);
        // ... or split across workers at any restorable start.
        let plan = plan_run_selected(&p, &[Level::Inner], 2, &no_cost(), Some(&sel(&[0, 3, 4, 7]))).unwrap();
        assert_eq!(
            steps(&plan),
            vec![vec![(0, None, true), (3, Some(2), true)], vec![(4, Some(3), true), (7, Some(6), true)]]
        );
    }

    #[test]
    fn a_selection_without_checkpoints_runs_the_iterations_before_it_silently() {
        let p = profile(6, &[1]);
        let plan = plan_run_selected(&p, &[Level::Outer], 3, &no_cost(), Some(&sel(&[4]))).unwrap();
        // From the checkpoint after iteration 1: 2 and 3 rebuild the state, 4 records.
        assert_eq!(steps(&plan), vec![vec![(2, Some(1), false), (3, None, false), (4, None, true)]]);
        // Without any checkpoint, from the start.
        let p = profile(4, &[]);
        let plan = plan_run_selected(&p, &[Level::Inner], 2, &no_cost(), Some(&sel(&[2]))).unwrap();
        assert_eq!(steps(&plan), vec![vec![(0, None, false), (1, None, false), (2, None, true)]]);
    }

    #[test]
    fn a_selection_keeps_the_teardown_right() {
        // The last iteration has a checkpoint: restored before the teardown.
        let p = profile(5, &[0, 1, 2, 3, 4]);
        let plan = plan_run_selected(&p, &[Level::Inner, Level::Teardown], 1, &no_cost(), Some(&sel(&[1]))).unwrap();
        assert_eq!(steps(&plan), vec![vec![(1, Some(0), true)]]);
        assert!(plan.segments[0].teardown);
        assert_eq!(plan.segments[0].final_restore, Some(4));
        // It has none: the iterations after the last checkpoint run silently.
        let p = profile(5, &[1]);
        let plan = plan_run_selected(&p, &[Level::Inner, Level::Teardown], 1, &no_cost(), Some(&sel(&[0]))).unwrap();
        assert_eq!(steps(&plan), vec![vec![(0, None, true), (2, Some(1), false), (3, None, false), (4, None, false)]]);
        assert_eq!(plan.segments[0].final_restore, None);
    }

    #[test]
    fn a_selection_of_nothing_is_refused_unless_setup_or_teardown_record() {
        let p = profile(3, &[0, 1, 2]);
        let none = sel(&[]);
        assert_eq!(
            plan_run_selected(&p, &[Level::Inner], 1, &no_cost(), Some(&none)),
            Err(PlanError::NothingSelected { iterations: 3 })
        );
        // Indices past the run's iterations select nothing either.
        assert!(plan_run_selected(&p, &[Level::Inner], 1, &no_cost(), Some(&sel(&[7]))).is_err());
        let plan = plan_run_selected(&p, &[Level::Setup, Level::Inner], 1, &no_cost(), Some(&none)).unwrap();
        assert!(plan.segments[0].steps.is_empty() && plan.segments[0].record_setup);
        // Without a selection, the same as plan_run.
        let all = plan_run_selected(&p, &[Level::Inner], 2, &no_cost(), None).unwrap();
        assert_eq!(all, plan_run(&p, &[Level::Inner], 2, &no_cost()).unwrap());
    }

    #[test]
    fn makespan_balances_longest_first() {
        assert_eq!(makespan(&[4.0, 3.0, 3.0, 2.0], 2), 6.0);
        assert_eq!(makespan(&[1.0, 1.0], 1), 2.0);
        assert_eq!(makespan(&[], 3), 0.0);
    }
}
