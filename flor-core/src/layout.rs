//! Where a project keeps what: the names of flor's git refs and of the record
//! files inside a run's commits. Plain strings, shared by the crates that
//! write them (the facade's ingestion, replay) so the conventions live once.

/// Prefix of the refs holding runs (`refs/flor/runs/<run id>`).
pub const RUNS_REF_PREFIX: &str = "refs/flor/runs/";

/// Folder, inside a run's commit, holding its record files.
pub const RECORDS_DIR: &str = ".flor/records";

/// The ref of run `run_id` (see [`crate::record::RunMeta::run_id`]).
///
/// ```
/// assert_eq!(flor_core::layout::ref_for("2026-01-02T03-04-05.000006"), "refs/flor/runs/2026-01-02T03-04-05.000006");
/// ```
pub fn ref_for(run_id: &str) -> String {
    format!("{RUNS_REF_PREFIX}{run_id}")
}

/// The label under which a run's forward record file is tracked in the
/// store, identical for the local file and its copy in git (so ingestion
/// resumes where it stopped whichever copy it reads).
pub fn label_for(run_id: &str) -> String {
    format!("{run_id}.jsonl")
}

/// The path, inside the run's commit, of its forward record file.
pub fn records_path(run_id: &str) -> String {
    format!("{RECORDS_DIR}/{}", label_for(run_id))
}

/// The name of run `run_id`'s extraction file: the values `flor capture
/// --extract` read out of its captured output ([`crate::record::Source::Extract`]).
/// One per run; a new extraction replaces it.
///
/// ```
/// assert_eq!(flor_core::layout::extract_label("R"), "R.extract.jsonl");
/// ```
pub fn extract_label(run_id: &str) -> String {
    format!("{run_id}.extract.jsonl")
}

/// The path, inside the run's commit, of its extraction file.
pub fn extract_path(run_id: &str) -> String {
    format!("{RECORDS_DIR}/{}", extract_label(run_id))
}

/// The name of the `k`-th segment file of the `n`-th replay of run `run_id`
/// (`n` counts the run's replays from 1, so names sort chronologically).
///
/// ```
/// use flor_core::layout::{replay_label, replay_number};
/// let label = replay_label("R", 3, 1);
/// assert_eq!(label, "R.replay-000003-1.jsonl");
/// assert_eq!(replay_number(&label), Some(3));
/// assert_eq!(replay_number("R.jsonl"), None);
/// ```
pub fn replay_label(run_id: &str, n: u64, k: usize) -> String {
    format!("{run_id}.replay-{n:06}-{k}.jsonl")
}

/// The replay number `n` of a replay file label, when it is one.
pub fn replay_number(label: &str) -> Option<u64> {
    let rest = label.rsplit_once(".replay-")?.1;
    rest.split('-').next()?.parse().ok()
}

/// The segment number `k` of a replay file label, when it is one.
pub fn replay_segment(label: &str) -> Option<u64> {
    label.rsplit_once(".replay-")?.1.strip_suffix(".jsonl")?.rsplit('-').next()?.parse().ok()
}

/// The first line number of the records of replay `n`'s segment `k`: line
/// numbers order a run's records within a source, so each replay file gets
/// its own range, `(n * 1024 + k) << 32` (later replays order after earlier
/// ones). Forward files start at 0.
///
/// ```
/// use flor_core::layout::{replay_line_base, replay_of_line};
/// let base = replay_line_base(3, 1);
/// assert_eq!(replay_of_line(base + 17), 3);
/// assert_eq!(replay_of_line(17), 0, "a forward record");
/// ```
pub fn replay_line_base(n: u64, k: u64) -> u64 {
    (((n & 0xF_FFFF) << 10) | (k & 0x3FF)) << 32
}

/// The replay number of a record's line number ([`replay_line_base`]);
/// 0 for forward records. Stores use it to tie records to their replay's
/// divergence check (in SQL: `line >> 42`).
pub fn replay_of_line(line: u64) -> u64 {
    line >> 42
}
