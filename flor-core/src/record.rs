//! The data model of a run and its record file (JSON lines).
//!
//! A record file starts with one header line (`"k":"run"`) naming the run,
//! then one line per event, in the order they happened:
//!
//! | `k`    | meaning                                  | fields |
//! |--------|------------------------------------------|--------|
//! | `run`  | header: run identity                     | [`RunMeta`] fields, `format`, `source` |
//! | `iter` | a loop iteration began                   | `c` context id, `p` parent context, `l` loop name, `it` index from 0, `val` optional value text |
//! | `log`  | a logged value                           | `c` (absent: run level), `n` name, one typed value key |
//! | `arg`  | a hyper-parameter                        | `n`, typed value |
//! | `time` | wall time in seconds                     | `c`, `n` (`setup`, `iteration`, `loop:NAME`, `teardown`), `vf` |
//! | `out`  | captured output                          | `c`, `n` (`stdout`/`stderr`), `vs` |
//! | `ckpt` | a checkpoint was stored                  | `c`, `n`, `digest`, `bytes`, `fmt` |
//! | `end`  | the run ended                            | `status`, `ended` |
//! | `check`| a replay segment's divergence check (last line of a replay file) | [`ReplayCheck`] fields: `compared`, `differing`, `names`, `recovered`, `excluded`, `first` |
//!
//! Typed value keys: `vi` integer, `vf` float, `vx` non-finite float
//! (`"NaN"`, `"inf"`, `"-inf"`), `vb` bool, `vs` text, `vj` JSON.
//! Unknown keys are ignored, so newer writers stay readable.
//!
//! Reading ([`parse_lines`], [`RecordReader`]) treats a file as untrusted
//! input (a crashed process, someone else's pushed ref, a damaged disk):
//! every line is checked against the limits and the rules of [`read`]
//! (contexts declared before use, ids that fit the file), and a line that
//! breaks one is reported ([`LineError`]) and skipped, the rest kept.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::check::ReplayCheck;
use crate::value::{nonfinite_name, Value};

pub mod read;

pub use read::{
    parse_lines, Contexts, LineError, Parsed, RecordReader, LOOP_TIMING_PREFIX, MAX_DEPTH, MAX_LINE_BYTES,
    MAX_LOOP_NAME_BYTES, MAX_NAME_BYTES,
};

/// Version of the record-file format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// Lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The process is (or was last seen) recording.
    Running,
    /// The run ended normally.
    Finished,
    /// The run ended with an error, a panic, or was killed.
    Failed,
}

impl RunStatus {
    /// Lowercase name as stored (`running`, `finished`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        }
    }

    /// Parses [`RunStatus::as_str`].
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "finished" => RunStatus::Finished,
            "failed" => RunStatus::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a record comes from: the original run, a hindsight replay of it,
/// or a reading of its captured output (`flor capture --extract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Logged while the run originally executed.
    #[default]
    Forward,
    /// Recovered later by replaying the run.
    Replay,
    /// Read out of the run's captured output (`name: value` in a printed
    /// line). Ranks below both: a logged or replayed value at the same
    /// position and name wins ([`Source::rank`]).
    Extract,
}

impl Source {
    /// A small stable integer code, the same in every store. Extracted
    /// values are `-1`, so stores that order a position's values by
    /// `(source, line)` and keep the last rank them first.
    pub fn code(self) -> i64 {
        match self {
            Source::Forward => 0,
            Source::Replay => 1,
            Source::Extract => -1,
        }
    }

    /// Inverse of [`Source::code`].
    pub fn from_code(code: i64) -> Option<Source> {
        match code {
            0 => Some(Source::Forward),
            1 => Some(Source::Replay),
            -1 => Some(Source::Extract),
            _ => None,
        }
    }

    /// Which of several values at one position and name a table shows: the
    /// highest rank (then the latest line). Extracted 0, forward 1, replay 2.
    pub fn rank(self) -> u8 {
        match self {
            Source::Extract => 0,
            Source::Forward => 1,
            Source::Replay => 2,
        }
    }

    /// Lowercase name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Forward => "forward",
            Source::Replay => "replay",
            Source::Extract => "extract",
        }
    }
}

/// Identity and metadata of one run. `(projid, tstamp)` identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Project id: the repository folder name.
    pub projid: String,
    /// Start time, ISO-8601 UTC with microseconds; unique within a project.
    pub tstamp: String,
    /// The script (or program) that ran, relative to the repository root.
    pub filename: String,
    /// The full command line, program first.
    pub argv: Vec<String>,
    /// The interpreter or executable that ran the script.
    pub interpreter: String,
    /// Host name of the machine.
    pub host: String,
    /// Process id while recording.
    pub pid: u32,
    /// The git commit holding the run's code snapshot, when there is one.
    #[serde(default)]
    pub commit: Option<String>,
    /// Lifecycle state.
    pub status: RunStatus,
    /// When the run ended, if it has.
    #[serde(default)]
    pub ended: Option<String>,
}

impl RunMeta {
    /// A `running` run of `filename` in project `projid` started at
    /// `tstamp`, with the command line `[filename]` and no host, pid or
    /// commit yet: a starting point for embedders, tests and benches.
    pub fn new(projid: impl Into<String>, tstamp: impl Into<String>, filename: impl Into<String>) -> RunMeta {
        let filename = filename.into();
        RunMeta {
            projid: projid.into(),
            tstamp: tstamp.into(),
            argv: vec![filename.clone()],
            interpreter: String::new(),
            filename,
            host: String::new(),
            pid: 0,
            commit: None,
            status: RunStatus::Running,
            ended: None,
        }
    }

    /// The run id: the timestamp in a form safe for file and ref names
    /// (`2026-11-26T18-38-57.123456`).
    pub fn run_id(&self) -> String {
        run_id_of(&self.tstamp)
    }
}

/// The run id for a timestamp (see [`RunMeta::run_id`]).
pub fn run_id_of(tstamp: &str) -> String {
    tstamp.replace(':', "-")
}

/// The timestamp for a run id (inverse of [`run_id_of`]).
pub fn tstamp_of_run_id(id: &str) -> Option<String> {
    let b = id.as_bytes();
    if b.len() != 26 || b[13] != b'-' || b[16] != b'-' {
        return None;
    }
    let mut s = id.to_owned();
    s.replace_range(13..14, ":");
    s.replace_range(16..17, ":");
    crate::time::micros_from_iso(&s).map(|_| s)
}

/// What a value record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// `log(name, value)`.
    Log,
    /// `arg(name, default)`: a hyper-parameter.
    Arg,
    /// Wall-clock seconds (setup, iteration, loop, teardown).
    Timing,
    /// Captured stdout/stderr text.
    Output,
}

impl RecordKind {
    /// The name used in the database (`log`, `arg`, `timing`, `output`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Log => "log",
            RecordKind::Arg => "arg",
            RecordKind::Timing => "timing",
            RecordKind::Output => "output",
        }
    }

    /// A small stable integer code, the same in every store.
    pub fn code(self) -> i64 {
        match self {
            RecordKind::Log => 0,
            RecordKind::Arg => 1,
            RecordKind::Timing => 2,
            RecordKind::Output => 3,
        }
    }

    /// Inverse of [`RecordKind::code`].
    pub fn from_code(code: i64) -> Option<RecordKind> {
        Some(match code {
            0 => RecordKind::Log,
            1 => RecordKind::Arg,
            2 => RecordKind::Timing,
            3 => RecordKind::Output,
            _ => return None,
        })
    }

    /// Parses [`RecordKind::as_str`].
    pub fn parse(s: &str) -> Option<RecordKind> {
        Some(match s {
            "log" => RecordKind::Log,
            "arg" => RecordKind::Arg,
            "timing" => RecordKind::Timing,
            "output" => RecordKind::Output,
            _ => return None,
        })
    }

    fn line_key(self) -> &'static str {
        match self {
            RecordKind::Log => "log",
            RecordKind::Arg => "arg",
            RecordKind::Timing => "time",
            RecordKind::Output => "out",
        }
    }
}

/// One loop iteration: a node of the run's loop-context tree.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopCtx {
    /// Context id, unique within the run, assigned in execution order from 0.
    pub ctx: u32,
    /// The enclosing iteration's context, `None` for an outermost loop.
    pub parent: Option<u32>,
    /// Loop name (`epoch`, `step`, ...).
    pub name: Arc<str>,
    /// Iteration index from 0.
    pub iteration: u64,
    /// Optional text of the iterated value.
    pub value: Option<String>,
}

/// A value record: `log`, `arg`, timing or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Line number in its record file (1-based); orders records of a run.
    pub line: u64,
    /// Loop context, `None` at run level.
    pub ctx: Option<u32>,
    /// What kind of record.
    pub kind: RecordKind,
    /// Name given by the program.
    pub name: Arc<str>,
    /// The value.
    pub value: Value,
}

/// Metadata of one stored checkpoint (its bytes live in the object store).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// Line number in its record file.
    pub line: u64,
    /// The outer-loop iteration at whose end it was taken.
    pub ctx: Option<u32>,
    /// Name of the checkpointed object.
    pub name: String,
    /// BLAKE3 digest (hex) of the uncompressed bytes.
    pub digest: String,
    /// Uncompressed size in bytes.
    pub bytes: u64,
    /// Serializer format (`bincode`, `pickle`, ...).
    pub format: String,
}

/// The `end` line: how and when the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    /// Final status.
    pub status: RunStatus,
    /// End time.
    pub ended: String,
}

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    k: String,
    format: u32,
    #[serde(default)]
    source: Source,
    #[serde(flatten)]
    meta: RunMeta,
}

#[derive(Serialize, Deserialize)]
struct CheckLine {
    k: String,
    #[serde(flatten)]
    check: ReplayCheck,
}

#[derive(Serialize, Deserialize)]
struct EndLine {
    k: String,
    #[serde(flatten)]
    end: RunEnd,
}

/// Appends record lines to a byte buffer. Hot paths (`iter`, value records)
/// are written by hand; rare lines go through serde.
#[derive(Debug, Default)]
pub struct LineEncoder {
    /// The encoded, not yet persisted bytes (whole lines only).
    pub buf: Vec<u8>,
}

impl LineEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header line.
    pub fn header(&mut self, meta: &RunMeta, source: Source) {
        let line = HeaderLine { k: "run".into(), format: FORMAT_VERSION, source, meta: meta.clone() };
        // Serializing plain strings and numbers cannot fail.
        if serde_json::to_writer(&mut self.buf, &line).is_ok() {
            self.buf.push(b'\n');
        }
    }

    /// An `iter` line.
    pub fn iter(&mut self, ctx: u32, parent: Option<u32>, loop_name: &str, iteration: u64, value: Option<&str>) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"k\":\"iter\",\"c\":");
        push_int(b, ctx as i64);
        if let Some(p) = parent {
            b.extend_from_slice(b",\"p\":");
            push_int(b, p as i64);
        }
        b.extend_from_slice(b",\"l\":");
        push_str(b, loop_name);
        b.extend_from_slice(b",\"it\":");
        push_int(b, iteration as i64);
        if let Some(v) = value {
            b.extend_from_slice(b",\"val\":");
            push_str(b, v);
        }
        b.extend_from_slice(b"}\n");
    }

    /// A value line (`log`, `arg`, `time`, `out`).
    pub fn record(&mut self, kind: RecordKind, ctx: Option<u32>, name: &str, value: &Value) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"k\":\"");
        b.extend_from_slice(kind.line_key().as_bytes());
        b.push(b'"');
        if let Some(c) = ctx {
            b.extend_from_slice(b",\"c\":");
            push_int(b, c as i64);
        }
        b.extend_from_slice(b",\"n\":");
        push_str(b, name);
        match value {
            Value::Int(i) => {
                b.extend_from_slice(b",\"vi\":");
                push_int(b, *i);
            }
            Value::Float(f) if f.is_finite() => {
                b.extend_from_slice(b",\"vf\":");
                let mut r = ryu::Buffer::new();
                b.extend_from_slice(r.format_finite(*f).as_bytes());
            }
            Value::Float(f) => {
                b.extend_from_slice(b",\"vx\":\"");
                b.extend_from_slice(nonfinite_name(*f).as_bytes());
                b.push(b'"');
            }
            Value::Bool(v) => b.extend_from_slice(if *v { b",\"vb\":true" } else { b",\"vb\":false" }),
            Value::Text(s) => {
                b.extend_from_slice(b",\"vs\":");
                push_str(b, s);
            }
            Value::Json(s) => {
                b.extend_from_slice(b",\"vj\":");
                b.extend_from_slice(s.as_bytes());
            }
        }
        b.extend_from_slice(b"}\n");
    }

    /// A value line of a finite float whose shortest text (`ryu`'s
    /// `format_finite`) the caller already has: the same line as
    /// [`LineEncoder::record`] with `Value::Float`, without formatting twice.
    pub fn record_float_text(&mut self, kind: RecordKind, ctx: Option<u32>, name: &str, text: &str) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"k\":\"");
        b.extend_from_slice(kind.line_key().as_bytes());
        b.push(b'"');
        if let Some(c) = ctx {
            b.extend_from_slice(b",\"c\":");
            push_int(b, c as i64);
        }
        b.extend_from_slice(b",\"n\":");
        push_str(b, name);
        b.extend_from_slice(b",\"vf\":");
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(b"}\n");
    }

    /// A `ckpt` line.
    pub fn checkpoint(&mut self, ctx: Option<u32>, name: &str, digest: &str, bytes: u64, format: &str) {
        let mut v = serde_json::json!({"k": "ckpt", "n": name, "digest": digest, "bytes": bytes, "fmt": format});
        if let (Some(c), Some(obj)) = (ctx, v.as_object_mut()) {
            obj.insert("c".into(), c.into());
        }
        if serde_json::to_writer(&mut self.buf, &v).is_ok() {
            self.buf.push(b'\n');
        }
    }

    /// A `check` line: what a replay segment's divergence check found
    /// ([`crate::check`]).
    pub fn check(&mut self, check: &ReplayCheck) {
        let line = CheckLine { k: "check".into(), check: check.clone() };
        if serde_json::to_writer(&mut self.buf, &line).is_ok() {
            self.buf.push(b'\n');
        }
    }

    /// The `end` line.
    pub fn end(&mut self, end: &RunEnd) {
        let line = EndLine { k: "end".into(), end: end.clone() };
        if serde_json::to_writer(&mut self.buf, &line).is_ok() {
            self.buf.push(b'\n');
        }
    }
}

fn push_int(b: &mut Vec<u8>, i: i64) {
    let mut f = itoa::Buffer::new();
    b.extend_from_slice(f.format(i).as_bytes());
}

/// Appends `s` as a JSON string literal.
pub fn push_str(b: &mut Vec<u8>, s: &str) {
    b.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                b.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                b.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        b.extend_from_slice(&bytes[start..i]);
        b.extend_from_slice(esc);
        start = i + 1;
    }
    b.extend_from_slice(&bytes[start..]);
    b.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RunMeta {
        RunMeta {
            projid: "p".into(),
            tstamp: "2026-01-02T03:04:05.000006".into(),
            filename: "train.py".into(),
            argv: vec!["train.py".into(), "--kwargs".into(), "lr=0.1".into()],
            interpreter: "python3".into(),
            host: "h".into(),
            pid: 7,
            commit: None,
            status: RunStatus::Running,
            ended: None,
        }
    }

    #[test]
    fn roundtrip_every_kind() {
        let mut e = LineEncoder::new();
        e.header(&meta(), Source::Forward);
        e.record(RecordKind::Arg, None, "lr", &Value::Float(0.1));
        e.iter(0, None, "epoch", 0, Some("a\"b"));
        e.iter(1, Some(0), "step", 3, None);
        let vals = [
            Value::Int(-3),
            Value::Float(1e-300),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Bool(true),
            Value::Text("tab\tnl\n\u{1} \u{e9}".into()),
            Value::json("{\"a\":[1,2]}").unwrap(),
            Value::json("null").unwrap(),
        ];
        for v in &vals {
            e.record(RecordKind::Log, Some(1), "x\\y", v);
        }
        e.record(RecordKind::Timing, Some(1), "iteration", &Value::Float(0.5));
        e.checkpoint(Some(0), "model", &"ab".repeat(32), 10, "bincode");
        e.end(&RunEnd { status: RunStatus::Finished, ended: "2026-01-02T03:04:06.000000".into() });
        let p = parse_lines(&e.buf, 1);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.consumed, e.buf.len());
        assert_eq!(p.header.unwrap().0, meta());
        assert_eq!(p.loops.len(), 2);
        assert_eq!(p.loops[0].value.as_deref(), Some("a\"b"));
        assert_eq!(p.loops[1].parent, Some(0));
        let logged: Vec<_> = p.records.iter().filter(|r| r.kind == RecordKind::Log).collect();
        assert_eq!(logged.len(), vals.len());
        for (r, v) in logged.iter().zip(&vals) {
            assert_eq!(&*r.name, "x\\y");
            match (v, &r.value) {
                (Value::Float(a), Value::Float(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(&r.value, v),
            }
        }
        assert_eq!(p.checkpoints[0].format, "bincode");
        assert_eq!(p.end.unwrap().status, RunStatus::Finished);
    }

    #[test]
    fn floats_are_bit_exact() {
        let mut e = LineEncoder::new();
        let xs = [0.1 + 0.2, 1.0 / 3.0, f64::MIN_POSITIVE, 5e-324, 1.7976931348623157e308, -0.0];
        for x in xs {
            e.record(RecordKind::Log, None, "x", &Value::Float(x));
        }
        let p = parse_lines(&e.buf, 1);
        for (r, x) in p.records.iter().zip(xs) {
            match r.value {
                Value::Float(y) => assert_eq!(y.to_bits(), x.to_bits()),
                _ => panic!("not a float"),
            }
        }
    }

    #[test]
    fn bad_lines_are_reported_and_others_kept() {
        let text = b"{\"k\":\"log\",\"n\":\"a\",\"vi\":1}\nnot json\n{\"k\":\"log\",\"n\":\"b\"}\n{\"k\":\"zap\"}\n{\"k\":\"log\",\"n\":\"c\",\"vi\":3}\n{\"k\":\"log\",\"n\"";
        let p = parse_lines(text, 10);
        assert_eq!(p.records.len(), 2);
        let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![11, 12, 13]);
        assert!(p.errors[1].message.contains("no value"));
        assert!(p.errors[2].message.contains("unknown record kind"));
        // The partial last line is not consumed.
        assert_eq!(p.lines, 5);
        assert!(p.consumed < text.len());
    }

    #[test]
    fn run_ids() {
        let id = run_id_of("2026-01-02T03:04:05.000006");
        assert_eq!(id, "2026-01-02T03-04-05.000006");
        assert_eq!(tstamp_of_run_id(&id).as_deref(), Some("2026-01-02T03:04:05.000006"));
        assert_eq!(tstamp_of_run_id("nope"), None);
    }

    #[test]
    fn preformatted_float_lines_equal_value_lines() {
        for f in [0.0, -0.0, 1.5, -2.25e-7, 1e22, 123456.789, f64::MIN_POSITIVE, f64::MAX] {
            let mut a = LineEncoder::new();
            a.record(RecordKind::Log, Some(3), "loss", &Value::Float(f));
            let mut b = LineEncoder::new();
            b.record_float_text(RecordKind::Log, Some(3), "loss", ryu::Buffer::new().format_finite(f));
            assert_eq!(a.buf, b.buf, "{f}");
        }
    }
}
