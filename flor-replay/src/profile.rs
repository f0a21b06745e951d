//! What a forward run recorded that replay needs: its [`RunProfile`] (outer
//! iterations, their timings, which ended with a checkpoint), the
//! checkpoints themselves, and where its loop iterations are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use flor_core::kept::{StoredKind, NOT_KEPT_SUFFIX};
use flor_core::layout::{records_path, ref_for};
use flor_core::record::{parse_lines, Parsed, RecordKind};
use flor_core::{RunMeta, Value};

use crate::error::Result;
use crate::segments::{PlanError, RunProfile};
use crate::spec::{CheckpointRef, ContextSpan, LoadRef};

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
    /// The files it loaded in setup, in order.
    pub loads: Vec<LoadRef>,
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
        Ok(Forward {
            profile,
            checkpoints,
            contexts: ContextSpan::compress(&parsed.loops),
            logged,
            loads: loads_of(parsed),
        })
    }
}

/// The files a forward run loaded in setup (run-level `load:` records), in
/// the order it loaded them.
fn loads_of(parsed: &Parsed) -> Vec<LoadRef> {
    parsed
        .checkpoints
        .iter()
        .filter(|c| c.ctx.is_none())
        .filter_map(|c| match StoredKind::of_name(&c.name) {
            (StoredKind::Load, path) => Some(LoadRef {
                path: path.to_owned(),
                digest: c.digest.clone(),
                bytes: c.bytes,
                format: c.format.strip_suffix(NOT_KEPT_SUFFIX).unwrap_or(&c.format).to_owned(),
                kept: c.kept(),
            }),
            _ => None,
        })
        .collect()
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
    // Kept files and setup loads are not restore points (flor_core::kept).
    for c in parsed.checkpoints.iter().filter(|c| c.kind() == StoredKind::Object) {
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

    /// Files saved inside the loop and setup loads are `ckpt` lines too,
    /// but not restore points: an iteration that saved a file and has no
    /// checkpointed object is not one, and one that has every object still
    /// is although only some iterations saved files. Setup loads come out
    /// in order, a digest-only one marked as not kept.
    #[test]
    fn kept_files_and_loads_are_not_restore_points() {
        let d = |c: char| c.to_string().repeat(64);
        let mut e = LineEncoder::new();
        e.checkpoint(None, "load:ckpt.pth", &d('a'), 10, "torch.load");
        e.checkpoint(None, "load:/data/big.npy", &d('b'), 99, "numpy.load+digest-only");
        for ctx in 0..3u32 {
            e.iter(ctx, None, "epoch", u64::from(ctx), None);
            if ctx < 2 {
                e.checkpoint(Some(ctx), "model", &d('c'), 5, "pickle");
            }
            if ctx > 0 {
                e.checkpoint(Some(ctx), "file:ckpt.pth", &d('d'), 7, "torch.save");
            }
        }
        let f = Forward::of(&RecordReader::new().read(&e.buf)).unwrap();
        assert_eq!(f.checkpoints.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert!(f.checkpoints.values().flatten().all(|c| c.name == "model"));
        assert_eq!(f.profile.checkpoints.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        let loads: Vec<(&str, bool, &str)> = f.loads.iter().map(|l| (&*l.path, l.kept, &*l.format)).collect();
        assert_eq!(loads, vec![("ckpt.pth", true, "torch.load"), ("/data/big.npy", false, "numpy.load")]);
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
