//! Decoding rows both backends read the same way: the `flor_runs` and
//! `flor_checkpoints` tables, loop context ids, and the "unusable database"
//! error.

use flor_core::store::RunRow;
use flor_core::{CheckpointMeta, RunMeta, RunStatus, StoreError, StoreResult};

/// The query both backends list runs with; its columns are [`RawRun`]'s.
pub(crate) const RUNS_SQL: &str = "SELECT run, projid, tstamp, filename, argv, interpreter, host, pid, commit_sha, \
                                   status, ended, nrecords FROM flor_runs ORDER BY tstamp, projid";

/// One row of [`RUNS_SQL`], as the engine returned it.
pub(crate) struct RawRun {
    pub key: i64,
    pub projid: String,
    pub tstamp: String,
    pub filename: String,
    /// JSON array of strings.
    pub argv: String,
    pub interpreter: String,
    pub host: String,
    pub pid: i64,
    pub commit: Option<String>,
    pub status: String,
    pub ended: Option<String>,
    pub records: i64,
}

/// A [`RawRun`] from a row of [`RUNS_SQL`] of either engine (their row
/// types differ but both read a column with `get(index)`); evaluates to
/// the engine's `Result<RawRun>`.
macro_rules! raw_run {
    ($row:expr) => {{
        let r = $row;
        (|| {
            Ok($crate::rows::RawRun {
                key: r.get(0)?,
                projid: r.get(1)?,
                tstamp: r.get(2)?,
                filename: r.get(3)?,
                argv: r.get(4)?,
                interpreter: r.get(5)?,
                host: r.get(6)?,
                pid: r.get(7)?,
                commit: r.get(8)?,
                status: r.get(9)?,
                ended: r.get(10)?,
                records: r.get(11)?,
            })
        })()
    }};
}
pub(crate) use raw_run;

impl RawRun {
    /// The run, or an "unusable database" error naming the bad column of the
    /// database `label`.
    pub(crate) fn decode(self, label: &str) -> StoreResult<RunRow> {
        let tstamp = self.tstamp;
        let argv: Vec<String> = serde_json::from_str(&self.argv)
            .map_err(|e| unusable(label, &format!("run {tstamp} has a malformed argv ({e})")))?;
        let status = RunStatus::parse(&self.status)
            .ok_or_else(|| unusable(label, &format!("run {tstamp} has an unknown status {:?}", self.status)))?;
        Ok(RunRow {
            key: self.key,
            meta: RunMeta {
                projid: self.projid,
                tstamp,
                filename: self.filename,
                argv,
                interpreter: self.interpreter,
                host: self.host,
                pid: self.pid as u32,
                commit: self.commit,
                status,
                ended: self.ended,
            },
            records: self.records as u64,
        })
    }
}

/// The query both backends list a run's checkpoints with (bound: the run
/// key); its columns are [`RawCheckpoint`]'s.
pub(crate) const CHECKPOINTS_SQL: &str =
    "SELECT line, ctx, name, digest, bytes, format FROM flor_checkpoints WHERE run = ? ORDER BY source, line";

/// One row of [`CHECKPOINTS_SQL`]: line, context, name, digest, bytes,
/// format.
pub(crate) type RawCheckpoint = (i64, Option<i64>, String, String, i64, String);

/// The checkpoint of a [`RawCheckpoint`] of the database `label`.
pub(crate) fn decode_checkpoint(label: &str, raw: RawCheckpoint) -> StoreResult<CheckpointMeta> {
    let (line, ctx, name, digest, bytes, format) = raw;
    Ok(CheckpointMeta { line: line as u64, ctx: ctx_of(label, ctx)?, name, digest, bytes: bytes as u64, format })
}

/// A stored loop context id, or an "unusable database" error when it does
/// not fit.
pub(crate) fn ctx_of(label: &str, ctx: Option<i64>) -> StoreResult<Option<u32>> {
    match ctx {
        None => Ok(None),
        Some(c) => {
            u32::try_from(c).map(Some).map_err(|_| unusable(label, &format!("a loop context id {c} is out of range")))
        }
    }
}

/// The database `label` cannot be used (`message` says why).
pub(crate) fn unusable(label: &str, message: &str) -> StoreError {
    StoreError::Unusable { path: label.to_owned(), message: message.to_owned() }
}

/// A damaged database file (see [`StoreError::Damaged`]).
pub(crate) fn damaged(label: &str, message: String) -> StoreError {
    StoreError::Damaged { path: label.to_owned(), message }
}

/// A run's command line as the JSON array both engines store in `argv`.
pub(crate) fn argv_json(backend: &'static str, m: &RunMeta) -> StoreResult<String> {
    serde_json::to_string(&m.argv).map_err(|e| StoreError::Backend {
        backend,
        message: format!("encode the argv of run {}: {e}", m.tstamp),
        source: Some(Box::new(e)),
    })
}
