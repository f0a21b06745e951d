//! What a forward run recorded that replay needs: its [`RunProfile`] (outer
//! iterations, their timings, which ended with a checkpoint), the
//! checkpoints themselves, and where its loop iterations are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use flor_core::layout::{records_path, ref_for};
use flor_core::record::{parse_lines, Parsed, RecordKind};
use flor_core::{RunMeta, Value};

use crate::error::Result;
use crate::segments::{PlanError, RunProfile};
use crate::spec::{CheckpointRef, ContextSpan};

/// A forward run, as replay sees it.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    /// Timings and checkpointed iterations, for planning.
    pub profile: RunProfile,
    /// The objects of each checkpointed outer iteration (iterations that
    /// lack an object the run checkpointed elsewhere are left out).
    pub checkpoints: BTreeMap<u64, Vec<CheckpointRef>>,
    /// Where its loop iterations are.
    pub contexts: Vec<ContextSpan>,
    /// The names it logged (`log` records), which a replay can check.
    pub logged: BTreeSet<String>,
}

impl Forward {
    /// Reads run `run`'s forward record file from its git ref in the
    /// repository at `root`.
    pub fn read(root: &Path, run: &RunMeta) -> Result<Forward> {
        let id = run.run_id();
        let bytes = flor_git::read_file_at(root, &ref_for(&id), &records_path(&id))?;
        Ok(Forward::of(&parse_lines(&bytes, 1))?)
    }

    /// The replay view of parsed forward records.
    pub fn of(parsed: &Parsed) -> Result<Forward, PlanError> {
        let (profile, checkpoints) = profile_of(parsed)?;
        let logged = parsed.records.iter().filter(|r| r.kind == RecordKind::Log).map(|r| r.name.to_string()).collect();
        Ok(Forward { profile, checkpoints, contexts: ContextSpan::compress(&parsed.loops), logged })
    }
}

/// How far beyond the record file's line count the outer loop's largest
/// iteration index may go (a run resumed at a late epoch starts there).
const SPARSE_SLACK: u64 = 1 << 20;

/// The planning profile and checkpoints of a forward run's records. The
/// profile's tables are indexed by outer iteration index, so an index far
/// beyond the records' size ([`PlanError::SparseIterations`]) is refused.
pub fn profile_of(parsed: &Parsed) -> Result<(RunProfile, BTreeMap<u64, Vec<CheckpointRef>>), PlanError> {
    let mut profile = RunProfile::default();
    let outer_loop = parsed.loops.iter().find(|l| l.parent.is_none()).map(|l| l.name.clone());
    let mut outer_index: HashMap<u32, u64> = HashMap::new();
    if let Some(name) = &outer_loop {
        for l in parsed.loops.iter().filter(|l| l.parent.is_none() && &l.name == name) {
            outer_index.insert(l.ctx, l.iteration);
        }
    }
    let max_index = outer_index.values().copied().max();
    let limit = parsed.lines.saturating_add(SPARSE_SLACK);
    if let (Some(name), Some(max_index)) = (&outer_loop, max_index.filter(|&m| m >= limit)) {
        return Err(PlanError::SparseIterations {
            name: name.to_string(),
            iterations: outer_index.len(),
            max_index,
            limit: limit - 1,
        });
    }
    let n = max_index.map_or(0, |m| m + 1) as usize;
    profile.outer_loop = outer_loop.map(|n| n.to_string());
    profile.iteration_secs = vec![0.0; n];
    profile.nested_secs = vec![0.0; n];
    for r in parsed.records.iter().filter(|r| r.kind == RecordKind::Timing) {
        let secs = match r.value {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            _ => continue,
        };
        let at = r.ctx.and_then(|c| outer_index.get(&c)).map(|&i| i as usize);
        match (&*r.name, at) {
            ("setup", None) => profile.setup_secs = secs,
            ("teardown", None) => profile.teardown_secs = secs,
            ("iteration", Some(i)) => profile.iteration_secs[i] = secs,
            (name, Some(i)) if name.starts_with("loop:") => profile.nested_secs[i] += secs,
            _ => {}
        }
    }
    let checkpoints = complete_checkpoints(parsed, &outer_index);
    for (i, objs) in &checkpoints {
        profile.checkpoints.insert(*i, objs.iter().map(|c| c.bytes).sum());
    }
    Ok((profile, checkpoints))
}

/// The checkpoints per outer iteration, keeping only the iterations that
/// have every object the run ever checkpointed (the last one of a name
/// within an iteration wins).
fn complete_checkpoints(parsed: &Parsed, outer_index: &HashMap<u32, u64>) -> BTreeMap<u64, Vec<CheckpointRef>> {
    let mut ckpts: BTreeMap<u64, BTreeMap<String, CheckpointRef>> = BTreeMap::new();
    for c in &parsed.checkpoints {
        if let Some(&i) = c.ctx.and_then(|ctx| outer_index.get(&ctx)) {
            ckpts.entry(i).or_default().insert(
                c.name.clone(),
                CheckpointRef {
                    name: c.name.clone(),
                    digest: c.digest.clone(),
                    format: c.format.clone(),
                    bytes: c.bytes,
                },
            );
        }
    }
    let all: BTreeSet<&String> = ckpts.values().flat_map(|m| m.keys()).collect();
    ckpts
        .iter()
        .filter(|(_, objs)| objs.len() == all.len())
        .map(|(i, objs)| (*i, objs.values().cloned().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flor_core::record::{LineEncoder, RecordReader};

    fn forward(indexes: &[u64]) -> Parsed {
        let mut e = LineEncoder::new();
        for (ctx, &it) in indexes.iter().enumerate() {
            e.iter(ctx as u32, None, "epoch", it, None);
        }
        RecordReader::new().read(&e.buf)
    }

    #[test]
    fn a_resumed_run_plans_from_iteration_zero() {
        let f = Forward::of(&forward(&[5000, 5001])).unwrap();
        assert_eq!(f.profile.iteration_secs.len(), 5002);
    }

    /// An explicit index far beyond the records (`flor.iteration("epoch",
    /// 10**12)`) would size the plan's tables by it: refused, with why.
    #[test]
    fn an_index_far_beyond_the_records_is_refused() {
        let e = Forward::of(&forward(&[0, 1_000_000_000_000])).unwrap_err();
        assert!(matches!(e, PlanError::SparseIterations { iterations: 2, max_index: 1_000_000_000_000, .. }));
        assert!(e.to_string().contains("too sparse to plan"), "{e}");
    }
}
