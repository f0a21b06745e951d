//! Divergence detection: a replayed iteration re-executes the old `flor.log`
//! statements too, and what they recompute must be what the forward run
//! recorded, bit for bit. Workers record those values along with the new
//! ones ([`SegmentSpec::check`](crate::SegmentSpec::check)); before a run's
//! segments are attached, [`check_run`] compares them with the forward
//! records, removes them from the segment files, and ends each file with a
//! `check` line ([`ReplayCheck`]) that stores turn into the `diverged` flag.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use flor_core::check::{same_value, Difference, ReplayCheck};
use flor_core::layout::{records_path, ref_for};
use flor_core::record::{parse_lines, LineEncoder, LoopCtx, Parsed, RecordKind};
use flor_core::{RunMeta, Value};

use crate::error::Result;

/// What usually makes a replay diverge, for the summary.
pub const CAUSES: &str = "usual causes: state the loop changes but `flor.checkpointing` does not hold \
    (a model, optimizer, scheduler or data iterator left out), randomness not captured (a generator \
    object not checkpointed; flor restores the global random/numpy/torch states only), data that \
    changed since the run, or nondeterministic kernels (GPU atomics, cuDNN autotuning)";

/// Which names a run's replay compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckNames {
    /// Names the forward run recorded that the replay recomputes and
    /// compares.
    pub compared: Vec<String>,
    /// Names the forward run recorded that the user excluded
    /// (`--no-check`).
    pub excluded: Vec<String>,
}

impl CheckNames {
    /// The names to compare for a run that logged `logged`, replaying
    /// `applied`, with `excluded` left out on request.
    pub fn of(logged: &BTreeSet<String>, applied: &[String], excluded: &[String]) -> CheckNames {
        let mut out = CheckNames::default();
        for name in logged.iter().filter(|n| !applied.contains(n)) {
            if excluded.contains(name) {
                out.excluded.push(name.clone());
            } else {
                out.compared.push(name.clone());
            }
        }
        out
    }
}

/// The forward run's recorded values of the compared names, by position.
struct Recorded {
    values: HashMap<(Option<u32>, Arc<str>), Vec<Value>>,
    loops: HashMap<u32, LoopCtx>,
}

impl Recorded {
    fn of(parsed: Parsed, compared: &[String]) -> Recorded {
        let mut values: HashMap<(Option<u32>, Arc<str>), Vec<Value>> = HashMap::new();
        for r in parsed.records {
            if r.kind == RecordKind::Log && compared.iter().any(|n| **n == *r.name) {
                values.entry((r.ctx, r.name)).or_default().push(r.value);
            }
        }
        Recorded { values, loops: parsed.loops.into_iter().map(|l| (l.ctx, l)).collect() }
    }

    /// `epoch 3, step 10` (`run level` outside loops).
    fn position(&self, ctx: Option<u32>) -> String {
        let mut parts = Vec::new();
        let mut at = ctx;
        while let Some(c) = at {
            let Some(l) = self.loops.get(&c) else { break };
            parts.push(format!("{} {}", l.name, l.iteration));
            if parts.len() > 64 {
                break; // a malformed parent chain
            }
            at = l.parent;
        }
        if parts.is_empty() {
            return "run level".to_owned();
        }
        parts.reverse();
        parts.join(", ")
    }
}

/// Compares the values `segments` (one run's replay record files, in
/// segment order) recomputed for `names.compared` with what the forward
/// run `meta` recorded (read from its git ref in `root`). Returns each
/// segment's file with those values removed and its `check` line appended,
/// and the checks.
pub fn check_run(
    root: &Path,
    meta: &RunMeta,
    names: &CheckNames,
    recovered: &[String],
    segments: Vec<Vec<u8>>,
) -> Result<(Vec<Vec<u8>>, Vec<ReplayCheck>)> {
    let recorded = if names.compared.is_empty() {
        Recorded { values: HashMap::new(), loops: HashMap::new() }
    } else {
        let id = meta.run_id();
        let bytes = flor_git::read_file_at(root, &ref_for(&id), &records_path(&id))?;
        Recorded::of(parse_lines(&bytes, 1), &names.compared)
    };
    let mut seen: HashMap<(Option<u32>, Arc<str>), usize> = HashMap::new();
    let mut files = Vec::with_capacity(segments.len());
    let mut checks = Vec::with_capacity(segments.len());
    for bytes in segments {
        let (file, check) = check_segment(&recorded, names, recovered, &bytes, &mut seen);
        files.push(file);
        checks.push(check);
    }
    Ok((files, checks))
}

/// One segment: compares, filters and appends the `check` line. `seen`
/// counts the values compared so far at each position (a name logged
/// twice in one iteration is compared occurrence by occurrence).
fn check_segment(
    recorded: &Recorded,
    names: &CheckNames,
    recovered: &[String],
    bytes: &[u8],
    seen: &mut HashMap<(Option<u32>, Arc<str>), usize>,
) -> (Vec<u8>, ReplayCheck) {
    let parsed = parse_lines(bytes, 1);
    let mut check = ReplayCheck {
        names: Vec::new(),
        recovered: recovered.to_vec(),
        excluded: names.excluded.clone(),
        output: Some(output_digest(bytes)),
        ..ReplayCheck::default()
    };
    let mut drop_lines: BTreeSet<u64> = BTreeSet::new();
    let mut compared_names: BTreeSet<&str> = BTreeSet::new();
    for r in &parsed.records {
        if r.kind != RecordKind::Log || !names.compared.iter().any(|n| **n == *r.name) {
            continue;
        }
        drop_lines.insert(r.line);
        let key = (r.ctx, r.name.clone());
        let k = seen.entry(key.clone()).or_insert(0);
        let want = recorded.values.get(&key).and_then(|v| v.get(*k));
        *k += 1;
        check.compared += 1;
        compared_names.insert(&r.name);
        if want.is_some_and(|w| same_value(w, &r.value)) {
            continue;
        }
        check.differing += 1;
        if check.first.is_none() {
            check.first = Some(Difference {
                name: r.name.to_string(),
                ctx: r.ctx,
                at: recorded.position(r.ctx),
                recorded: want.map_or_else(|| "(none)".to_owned(), text),
                replayed: text(&r.value),
            });
        }
    }
    check.names = compared_names.into_iter().map(str::to_owned).collect();
    let mut out = Vec::with_capacity(bytes.len());
    let mut line = 0u64;
    for chunk in bytes[..parsed.consumed].split_inclusive(|&b| b == b'\n') {
        line += 1;
        if !drop_lines.contains(&line) {
            out.extend_from_slice(chunk);
        }
    }
    let mut enc = LineEncoder::new();
    enc.check(&check);
    out.extend_from_slice(&enc.buf);
    (out, check)
}

/// The digest [`ReplayCheck::output`] holds for a worker's file.
pub fn output_digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A value as the summary shows it: floats always with their point
/// (`0.0`, not `0`), so that a float is not mistaken for an int.
fn text(v: &Value) -> String {
    match v {
        Value::Float(f) => format!("{f:?}"),
        other => other.to_string(),
    }
}

/// The values a segment file holds for the replayed names (its records
/// minus those kept for checking).
pub fn replayed_values(bytes: &[u8], compared: &[String]) -> usize {
    parse_lines(bytes, 1).records.iter().filter(|r| !compared.iter().any(|n| **n == *r.name)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flor_core::record::Source;

    fn forward() -> Parsed {
        let mut e = LineEncoder::new();
        e.header(&RunMeta::new("p", "2026-01-02T03:04:05.000006", "t.py"), Source::Forward);
        e.record(RecordKind::Log, None, "setup_x", &Value::Int(1));
        e.iter(0, None, "epoch", 0, None);
        e.iter(1, Some(0), "step", 0, None);
        e.record(RecordKind::Log, Some(1), "loss", &Value::Float(0.5));
        e.record(RecordKind::Log, Some(0), "acc", &Value::Float(0.9));
        e.record(RecordKind::Log, Some(0), "acc", &Value::Float(0.95));
        parse_lines(&e.buf, 1)
    }

    fn replay(values: &[(Option<u32>, &str, Value)]) -> Vec<u8> {
        let mut e = LineEncoder::new();
        e.header(&RunMeta::new("p", "2026-01-02T03:04:05.000006", "t.py"), Source::Replay);
        for (ctx, name, v) in values {
            e.record(RecordKind::Log, *ctx, name, v);
        }
        e.buf
    }

    fn names() -> CheckNames {
        let logged: BTreeSet<String> = ["acc", "loss", "setup_x", "time"].iter().map(|s| s.to_string()).collect();
        CheckNames::of(&logged, &["grad".to_owned()], &["time".to_owned()])
    }

    #[test]
    fn names_compared_exclude_the_replayed_and_the_excluded() {
        let n = names();
        assert_eq!(n.compared, ["acc", "loss", "setup_x"]);
        assert_eq!(n.excluded, ["time"]);
    }

    #[test]
    fn equal_values_pass_and_are_removed_from_the_file() {
        let rec = Recorded::of(forward(), &names().compared);
        let bytes = replay(&[
            (Some(1), "loss", Value::Float(0.5)),
            (Some(1), "grad", Value::Float(3.0)),
            (Some(0), "acc", Value::Float(0.9)),
            (Some(0), "acc", Value::Float(0.95)),
        ]);
        let (out, check) = check_segment(&rec, &names(), &["grad".to_owned()], &bytes, &mut HashMap::new());
        assert_eq!((check.compared, check.differing), (3, 0));
        assert_eq!(check.names, ["acc", "loss"]);
        assert!(!check.diverged());
        let p = parse_lines(&out, 1);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let kept: Vec<&str> = p.records.iter().map(|r| &*r.name).collect();
        assert_eq!(kept, ["grad"], "only the replayed name is kept");
        assert_eq!(p.checks.len(), 1);
        assert_eq!(p.checks[0].recovered, ["grad"]);
        assert_eq!(p.checks[0].excluded, ["time"]);
    }

    #[test]
    fn the_first_difference_is_named_with_its_position() {
        let rec = Recorded::of(forward(), &names().compared);
        let bytes = replay(&[
            (Some(1), "loss", Value::Float(0.5)),
            (Some(0), "acc", Value::Float(0.9)),
            (Some(0), "acc", Value::Float(0.96)),
            (Some(0), "acc", Value::Float(0.97)),
        ]);
        let (_, check) = check_segment(&rec, &names(), &[], &bytes, &mut HashMap::new());
        assert_eq!((check.compared, check.differing), (4, 2), "the second acc differs, the third has no counterpart");
        let d = check.first.expect("a difference");
        assert_eq!((d.name.as_str(), d.at.as_str()), ("acc", "epoch 0"));
        assert_eq!((d.recorded.as_str(), d.replayed.as_str()), ("0.95", "0.96"));
    }

    #[test]
    fn positions_read_as_loop_chains() {
        let rec = Recorded::of(forward(), &[]);
        assert_eq!(rec.position(Some(1)), "epoch 0, step 0");
        assert_eq!(rec.position(None), "run level");
    }
}
