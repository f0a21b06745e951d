//! Text for a terminal: the plan before a replay, the summary after it,
//! and one progress bar per worker while it runs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;

use flor_core::propagate::{LoopScope, Outcome};

use flor_core::check::ReplayCheck;

use crate::check::CAUSES;
use crate::execute::Summary;
use crate::executor::TaskProgress;
use crate::plan::{short, Plan, RunReplay, StatementPlan};

impl Plan {
    /// The plan as text: per code version the statements' fate, where they
    /// run, its source checks' findings, the propagated diff and the runs
    /// with their segments and estimates; then the skipped runs and the
    /// totals.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Replay plan for {}", self.names.join(", "));
        if !self.iters.is_empty() {
            let sel: Vec<String> = self.iters.iter().map(|i| i.to_string()).collect();
            let _ = writeln!(
                s,
                "  iterations: --iter {} (values are recorded in those iterations only)",
                sel.join(" --iter ")
            );
        }
        if !self.overrides.is_empty() {
            let o: Vec<String> = self.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ =
                writeln!(s, "  overrides: {} (flor.arg returns these instead of the recorded values)", o.join(", "));
        }
        for (i, v) in self.versions.iter().enumerate() {
            let runs: Vec<&RunReplay> = self.runs.iter().filter(|r| r.version == i).collect();
            let _ = writeln!(
                s,
                "\nversion {} of {} ({} run{})",
                short(&v.commit),
                v.script,
                runs.len(),
                plural(runs.len())
            );
            for st in &v.statements {
                let _ = writeln!(s, "  line {} of the newest version: {}", st.new_line, statement_text(st));
            }
            if let Some(f) = &v.failure {
                let _ = writeln!(s, "  skipped: {f}");
            }
            if !v.findings.is_empty() {
                let _ = writeln!(s, "  source checks (replayed values may differ from the recorded ones):");
                for f in &v.findings {
                    let _ = writeln!(s, "    line {}: {}[{}]: {}", f.line, f.severity, f.code, f.message);
                }
            }
            for l in v.diff.lines() {
                let _ = writeln!(s, "    {l}");
            }
            for r in runs {
                let steps: usize = r.plan.segments.iter().map(|s| s.steps.len()).sum();
                let recording: usize = r.plan.segments.iter().flat_map(|s| &s.steps).filter(|s| s.record).count();
                let segs = r.plan.segments.len();
                let selected = if self.iters.is_empty() || recording == steps {
                    String::new()
                } else {
                    format!(" ({recording} recording)")
                };
                let _ = writeln!(
                    s,
                    "  run {} ({}): {} outer iteration{}{selected} to execute in {} segment{}; estimated {:.2} s (the original run took {:.2} s)",
                    r.meta.tstamp,
                    kwargs_text(&r.meta.argv),
                    steps,
                    plural(steps),
                    segs,
                    plural(segs),
                    r.plan.estimate_secs,
                    r.plan.forward_secs
                );
            }
        }
        for (t, why) in &self.skipped {
            let _ = writeln!(s, "\nrun {t}: skipped: {why}");
        }
        let approximate = self
            .versions
            .iter()
            .flat_map(|v| &v.statements)
            .filter(|st| matches!(st.outcome, Outcome::Approximate { .. }))
            .count();
        if approximate > 0 {
            let _ = writeln!(
                s,
                "\n{approximate} statement{} placed next to code edited since (\"an edited counterpart\" above): \
                 the most similar old statement stood in for its neighbour; read the diff before replaying",
                plural(approximate)
            );
        }
        s.push_str(&self.check_text());
        match (&self.executor, &self.isolation) {
            (Some(e), _) => {
                let _ = writeln!(s, "\nexecutor: {e}");
            }
            (None, Some(i)) => {
                let _ = writeln!(s, "\nisolation: {}", i.describe());
            }
            (None, None) => {}
        }
        let _ = writeln!(
            s,
            "\n{} run{} to replay; estimated {:.2} s of work, {:.2} s with {} worker{}",
            self.runs.len(),
            plural(self.runs.len()),
            self.total_secs,
            self.makespan_secs,
            self.jobs,
            plural(self.jobs)
        );
        s
    }
}

impl Plan {
    /// The plan's divergence-check paragraph.
    fn check_text(&self) -> String {
        let mut compared = BTreeSet::new();
        let mut excluded = BTreeSet::new();
        for i in 0..self.runs.len() {
            let names = self.check_names(i).unwrap_or_default();
            compared.extend(names.compared);
            excluded.extend(names.excluded);
        }
        if self.runs.is_empty() {
            return String::new();
        }
        let mut s = String::from("\ndivergence check: ");
        if compared.is_empty() {
            s.push_str("the runs recorded no other value to compare with");
        } else {
            let names: Vec<String> = compared.into_iter().collect();
            let _ = write!(
                s,
                "recomputed values of {} are compared with the recorded ones, bit for bit; a difference {}",
                names.join(", "),
                if self.strict {
                    "fails the run's replay (--strict)"
                } else {
                    "flags the run's replayed values `diverged`"
                }
            );
        }
        if !excluded.is_empty() {
            let names: Vec<String> = excluded.into_iter().collect();
            let _ = write!(s, " (not compared: {})", names.join(", "));
        }
        s.push('\n');
        s
    }
}

/// One statement's line of the plan.
fn statement_text(st: &StatementPlan) -> String {
    let what = st.outcome.to_string();
    let level = st.level.map(|l| format!("; {}", l.describe())).unwrap_or_default();
    let note = match &st.scope {
        Some(LoopScope::Dynamic { reason }) => format!("\n    (runs anywhere: {reason})"),
        _ => String::new(),
    };
    format!("{what}{level}{note}")
}

impl Summary {
    /// The summary as text: per run the values recovered and the time
    /// against the estimate, or why it failed; then the plan's skipped runs.
    pub fn render(&self, plan: &Plan) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nReplay summary ({:.2} s wall clock; estimated {:.2} s with {} worker{}):",
            self.wall_secs,
            plan.makespan_secs,
            plan.jobs,
            plural(plan.jobs)
        );
        for r in &self.runs {
            let _ = match &r.failure {
                None => writeln!(
                    s,
                    "  run {}: {} value{} recovered; {:.2} s of work (estimated {:.2} s)",
                    r.tstamp,
                    r.values,
                    plural(r.values as usize),
                    r.actual_secs,
                    r.estimate_secs
                ),
                Some(f) => writeln!(s, "  run {}: FAILED: {f}", r.tstamp),
            };
            if let Some(c) = &r.check {
                s.push_str(&check_line(c));
            }
        }
        for (t, why) in &plan.skipped {
            let _ = writeln!(s, "  run {t}: skipped: {why}");
        }
        if self.runs.iter().any(|r| r.check.as_ref().is_some_and(ReplayCheck::diverged)) {
            let _ = writeln!(
                s,
                "\nA diverged replay recomputed a recorded value differently, so its new values may not be what \
                 the run would have logged; they are kept and flagged (`diverged` in the logs view, \
                 `flor dataframe --diverged`). {}. `--strict` makes a divergence fail the run; \
                 `--no-check NAME` leaves out values that cannot repeat (times, timestamps).",
                CAUSES
            );
        }
        s
    }
}

/// A run's divergence-check line of the summary.
fn check_line(c: &ReplayCheck) -> String {
    if c.compared == 0 {
        return "    check: nothing could be checked (the replayed iterations recomputed no recorded value)\n".into();
    }
    let names = c.names.join(", ");
    match &c.first {
        Some(d) if c.diverged() => format!(
            "    check: DIVERGED: {} of {} recomputed value{} of {names} differ from the recorded ones; first: {} at {}: recorded {}, replayed {}\n",
            c.differing,
            c.compared,
            plural(c.compared as usize),
            d.name,
            d.at,
            d.recorded,
            d.replayed
        ),
        _ => format!(
            "    check: {} recomputed value{} of {names} match the recorded ones bit for bit\n",
            c.compared,
            plural(c.compared as usize)
        ),
    }
}

/// One progress bar per worker on a terminal, redrawn in place.
#[derive(Debug, Default)]
pub struct ProgressBars {
    drawn: usize,
}

impl ProgressBars {
    /// Bars that have drawn nothing yet.
    pub fn new() -> ProgressBars {
        ProgressBars::default()
    }

    /// Removes the bars drawn last (before printing a line above them).
    pub fn erase(&mut self, err: &mut dyn Write) {
        for _ in 0..self.drawn {
            let _ = write!(err, "\x1b[1A\x1b[2K");
        }
        self.drawn = 0;
    }

    /// Draws one line per worker; `label` names a busy worker's segment.
    pub fn draw(
        &mut self,
        err: &mut dyn Write,
        workers: &[Option<TaskProgress>],
        label: &dyn Fn(&TaskProgress) -> String,
    ) {
        for (w, slot) in workers.iter().enumerate() {
            let line = match slot {
                None => format!("worker {:>2}  idle", w + 1),
                Some(p) => {
                    let width = 20;
                    let filled = (p.done * width).checked_div(p.total).unwrap_or(width);
                    format!(
                        "worker {:>2} [{}{}] {}/{} iterations  {}  {:.1} s",
                        w + 1,
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        p.done,
                        p.total,
                        label(p),
                        p.secs
                    )
                }
            };
            let _ = writeln!(err, "{line}");
        }
        self.drawn = workers.len();
    }
}

/// `""` for one, `"s"` otherwise.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The `--kwargs` part of a command line, or "no arguments".
fn kwargs_text(argv: &[String]) -> String {
    let k: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    if k.is_empty() {
        "no arguments".into()
    } else {
        k.join(" ")
    }
}

/// The lines added by a propagation, with two lines of context.
pub(crate) fn excerpt(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Inserted lines only: walk both, b has extra lines.
    let mut added = Vec::new();
    let (mut i, mut j) = (0, 0);
    while j < b.len() {
        if i < a.len() && a[i] == b[j] {
            i += 1;
        } else {
            added.push(j);
        }
        j += 1;
    }
    let mut out = String::new();
    let mut shown = BTreeSet::new();
    for &k in &added {
        for c in k.saturating_sub(2)..(k + 3).min(b.len()) {
            shown.insert(c);
        }
    }
    let mut prev: Option<usize> = None;
    for k in shown {
        if prev.is_some_and(|p| k > p + 1) {
            out.push_str("...\n");
        }
        let mark = if added.contains(&k) { '+' } else { ' ' };
        let _ = writeln!(out, "{mark} {:>4} | {}", k + 1, b[k]);
        prev = Some(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_inserted_lines() {
        let e = excerpt("a\nb\nc\nd\n", "a\nb\nX\nc\nd\n");
        assert!(e.contains("+    3 | X"), "{e}");
        assert!(e.contains("     2 | b"), "{e}");
    }
}
