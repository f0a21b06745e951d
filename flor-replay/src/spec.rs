//! The orchestrator↔worker protocol: a [`SegmentSpec`] says everything one
//! replay process must do, and nothing about the host it was planned on.
//!
//! It names code by commit (plus the propagated script's text),
//! checkpoints by digest and the forward run's loop positions by span, so
//! that any [`Executor`](crate::Executor) — local processes today, a cluster
//! tomorrow — can run it; what a worker needs from *its* host (where to write
//! records, where the checkpoint objects are) is the executor's business and
//! reaches the worker separately ([`crate::worker`]).
//!
//! The JSON form is versioned ([`SPEC_VERSION`]); a front end (the Python
//! `flordb` module reads it directly) refuses a version it does not know.
//!
//! ```json
//! {
//!   "version": 2,
//!   "run": { "projid": "proj", "tstamp": "2026-01-02T03:04:05.000006", "filename": "train.py", "argv": ["train.py"], ... },
//!   "code": { "commit": "<sha>", "script": "train.py", "source": "<the old script with the statements carried in>" },
//!   "names": ["grad_norm"],
//!   "outer_loop": "epoch",
//!   "segment": { "index": 0, "steps": [{ "iteration": 0, "restore": null, "record": true, "skip_nested": true }],
//!                "record_setup": true, "teardown": false, "final_restore": null, "estimate_secs": 1.2 },
//!   "checkpoints": { "0": [{ "name": "model", "digest": "<blake3>", "format": "pickle", "bytes": 1024 }] },
//!   "contexts": [{ "first_ctx": 0, "count": 1, "parent": null, "name": "epoch", "first_iteration": 0 }],
//!   "check": ["loss"]
//! }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flor_core::select::{IterFilter, IterSelect, SpanRef};
use flor_core::store::LoopSpan;
use flor_core::{ContextMap, LoopCtx, RunMeta};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::segments::Segment;

/// The protocol version this crate writes and reads.
pub const SPEC_VERSION: u32 = 2;

/// One stored object of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Object name (`model`, `__rng__`, ...).
    pub name: String,
    /// BLAKE3 digest in the object store.
    pub digest: String,
    /// Serializer format.
    pub format: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// The code a segment runs: a snapshot commit, the script inside it, and
/// the script's text with the statements carried in (what actually runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRef {
    /// The run's code snapshot commit (full sha).
    pub commit: String,
    /// The script's path inside the commit, `/`-separated.
    pub script: String,
    /// The propagated script.
    pub source: String,
}

/// Consecutive iterations of one loop in the forward run, for placing
/// replayed values at the same positions (see [`ContextMap`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSpan {
    /// Context id of the first iteration.
    pub first_ctx: u32,
    /// Number of iterations (contexts `first_ctx .. first_ctx + count`).
    pub count: u32,
    /// The enclosing iteration's context (`None`: an outermost loop).
    pub parent: Option<u32>,
    /// Loop name.
    pub name: String,
    /// Iteration index of the first one.
    pub first_iteration: u64,
}

impl ContextSpan {
    /// The spans of `loops` (iterated values are not needed to place values
    /// and are left out, so consecutive iterations always merge).
    pub fn compress(loops: &[LoopCtx]) -> Vec<ContextSpan> {
        let unvalued: Vec<LoopCtx> = loops.iter().map(|l| LoopCtx { value: None, ..l.clone() }).collect();
        LoopSpan::compress(&unvalued)
            .into_iter()
            .map(|s| ContextSpan {
                first_ctx: s.first_ctx,
                count: s.count,
                parent: s.parent,
                name: s.name.to_string(),
                first_iteration: s.first_iteration,
            })
            .collect()
    }
}

/// What one replay process does. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSpec {
    /// [`SPEC_VERSION`] when written by this crate.
    pub version: u32,
    /// The run, as recorded (identity, interpreter, command line).
    pub run: RunMeta,
    /// The code to run.
    pub code: CodeRef,
    /// The names to record.
    pub names: Vec<String>,
    /// Name of the run's outermost loop.
    pub outer_loop: Option<String>,
    /// Which outer iterations to execute, and how.
    pub segment: Segment,
    /// The checkpoints this segment restores, by the outer iteration at
    /// whose end they were taken.
    pub checkpoints: BTreeMap<u64, Vec<CheckpointRef>>,
    /// The forward run's loop iterations.
    pub contexts: Vec<ContextSpan>,
    /// Names the forward run recorded that this segment records again, for
    /// the orchestrator to compare with the recorded values (divergence
    /// detection, [`crate::check`]).
    #[serde(default)]
    pub check: Vec<String>,
    /// `flor replay --iter` selections (`LOOP=SPEC`): the worker records
    /// values only in the forward run's iterations they keep
    /// ([`SegmentSpec::iter_filter`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iters: Vec<String>,
    /// `flor replay --override KEY=VALUE`: what `flor.arg(KEY, ...)`
    /// returns in this replay instead of the recorded value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, String>,
}

impl SegmentSpec {
    /// Reads a spec file, refusing other protocol versions.
    pub fn read(path: &Path) -> Result<SegmentSpec> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        SegmentSpec::from_json(&bytes, path)
    }

    /// Parses a spec (`path` names it in errors).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<SegmentSpec> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            version: u32,
        }
        let bad = |e: serde_json::Error| Error::BadSpec { path: path.to_owned(), message: e.to_string() };
        let v: Version = serde_json::from_slice(bytes).map_err(bad)?;
        if v.version != SPEC_VERSION {
            return Err(Error::SpecVersion { path: path.to_owned(), found: v.version, expected: SPEC_VERSION });
        }
        serde_json::from_slice(bytes).map_err(bad)
    }

    /// The spec as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data (strings, numbers, maps with integer keys): cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Writes the spec to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()).map_err(|e| Error::io("write", path, e))
    }

    /// Which of the forward run's iterations record values under
    /// [`SegmentSpec::iters`] (a filter keeping everything without).
    pub fn iter_filter(&self, path: &Path) -> Result<IterFilter> {
        let iters = self
            .iters
            .iter()
            .map(|s| s.parse::<IterSelect>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::BadSpec { path: path.to_owned(), message: e.to_string() })?;
        let spans: Vec<SpanRef<'_>> = self
            .contexts
            .iter()
            .map(|c| SpanRef {
                first_ctx: c.first_ctx,
                count: c.count,
                parent: c.parent,
                name: &c.name,
                first_iteration: c.first_iteration,
            })
            .collect();
        Ok(IterFilter::new(&iters, &spans))
    }

    /// Where the forward run's iterations are, for a replay recorder.
    pub fn context_map(&self) -> ContextMap {
        let mut names: BTreeMap<&str, Arc<str>> = BTreeMap::new();
        let mut loops = Vec::new();
        for s in &self.contexts {
            let name = names.entry(&s.name).or_insert_with(|| Arc::from(s.name.as_str())).clone();
            for i in 0..s.count {
                loops.push(LoopCtx {
                    ctx: s.first_ctx + i,
                    parent: s.parent,
                    name: name.clone(),
                    iteration: s.first_iteration + u64::from(i),
                    value: None,
                });
            }
        }
        ContextMap::new(loops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(ctx: u32, parent: Option<u32>, name: &str, iteration: u64) -> LoopCtx {
        LoopCtx { ctx, parent, name: name.into(), iteration, value: Some(iteration.to_string()) }
    }

    #[test]
    fn context_spans_merge_valued_iterations_and_expand_to_the_same_map() {
        let mut loops = Vec::new();
        let mut ctx = 0;
        for e in 0..3 {
            let ectx = ctx;
            loops.push(l(ctx, None, "epoch", e));
            ctx += 1;
            for s in 0..50 {
                loops.push(l(ctx, Some(ectx), "step", s));
                ctx += 1;
            }
        }
        let spans = ContextSpan::compress(&loops);
        assert_eq!(spans.len(), 6, "{spans:?}");
        let spec = SegmentSpec {
            version: SPEC_VERSION,
            run: RunMeta::new("p", "2026-01-01T00:00:00.000001", "t.py"),
            code: CodeRef { commit: "c".into(), script: "t.py".into(), source: String::new() },
            names: vec![],
            outer_loop: None,
            segment: Segment {
                index: 0,
                steps: vec![],
                record_setup: true,
                teardown: false,
                final_restore: None,
                estimate_secs: 0.0,
            },
            checkpoints: BTreeMap::new(),
            contexts: spans,
            check: vec![],
            iters: vec![],
            overrides: BTreeMap::new(),
        };
        let map = spec.context_map();
        let want = ContextMap::new(loops.iter().cloned());
        assert_eq!(map.len(), want.len());
        for x in &loops {
            assert_eq!(map.get(x.parent, &x.name, x.iteration), Some(x.ctx));
        }
    }

    #[test]
    fn other_versions_are_refused_with_both_numbers() {
        let err = SegmentSpec::from_json(br#"{"version": 1, "root": "/x"}"#, Path::new("seg-0.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("version 1") && msg.contains("version 2"), "{msg}");
        let err = SegmentSpec::from_json(b"{oops", Path::new("seg-0.json")).unwrap_err();
        assert!(matches!(err, Error::BadSpec { .. }), "{err:?}");
    }
}
