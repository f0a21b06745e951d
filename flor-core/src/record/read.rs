//! Reading record files as untrusted input.
//!
//! Record files come from crashed processes, from other people's pushed
//! `refs/flor/*` and from disks; nothing in them is assumed. Every line is
//! checked, and a line that breaks a rule is reported as a [`LineError`]
//! (its line number and what is wrong) and skipped; every other line is
//! kept. The rules:
//!
//! * **Limits.** A line holds at most [`MAX_LINE_BYTES`]; a name (`n`) at
//!   most [`MAX_NAME_BYTES`], a loop name (`l`) at most
//!   [`MAX_LOOP_NAME_BYTES`] (its whole-loop timing is named
//!   `loop:NAME`); loops nest at most [`MAX_DEPTH`] deep; an iteration
//!   index fits a signed 64-bit integer (the stores' integers).
//! * **A context is declared before it is used.** A forward record file
//!   declares each loop iteration by its `iter` line. A line with a context
//!   (`c`) must name one declared by an earlier `iter` line of the same
//!   file, and so must an `iter` line's parent (`p`). A replay record file
//!   declares none: its `iter` lines are refused and its contexts must be
//!   iterations of its run's forward file ([`RecordReader::with_forward`]).
//!   An extraction file (`flor capture --extract`) may use its forward
//!   file's contexts and declare iterations of its own (the positions
//!   a printed `epoch 3 |` names), numbered on from the forward file's.
//! * **Ids fit the file.** The writer ([`crate::Recorder`]) numbers a run's
//!   iterations 0, 1, 2, ... in execution order and writes each `iter` line
//!   as its iteration begins, so ids increase strictly down the file and
//!   the `iter` line of context `c` has the header and `c` other `iter`
//!   lines above it. A declaration that breaks either is refused. A context
//!   id is therefore smaller than the number of lines read, and whatever is
//!   sized by context ids (a store's tables, the pivot) grows with the
//!   file, not with a number written in it.
//! * **Shape.** The header (`run`) only on line 1, once; the kind `k`
//!   written without escapes (as every writer does: it lets
//!   [`RecordReader::skip`] find the declarations of a span without parsing
//!   every line).
//!
//! A file is read in spans (a live run's file grows between reads; large
//! files are read in chunks): a [`RecordReader`] carries what earlier spans
//! declared, and [`RecordReader::skip`] learns it again, quickly, for a
//! span that an earlier session already read. [`parse_lines`] reads one
//! span with a fresh reader.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    CheckLine, CheckpointMeta, EndLine, HeaderLine, LoopCtx, Record, RecordKind, RunEnd, RunMeta, Source,
    FORMAT_VERSION,
};
use crate::check::ReplayCheck;
use crate::value::Value;

/// The longest record line read, in bytes (64 MiB). A longer line is
/// reported and skipped.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// The longest name (`n`) of a value, timing, output or checkpoint, in
/// bytes (4 KiB).
pub const MAX_NAME_BYTES: usize = 4096;

/// The prefix of a whole loop's timing name (`loop:epoch`).
pub const LOOP_TIMING_PREFIX: &str = "loop:";

/// The longest loop name (`l`), in bytes: `loop:NAME`, its timing's name,
/// must fit [`MAX_NAME_BYTES`].
pub const MAX_LOOP_NAME_BYTES: usize = MAX_NAME_BYTES - LOOP_TIMING_PREFIX.len();

/// The deepest loop nesting (an outermost loop's iterations are at depth
/// 1). The recorder refuses to open a loop deeper than this.
pub const MAX_DEPTH: usize = 64;

/// How much of an offending text an error message quotes.
const QUOTE_CHARS: usize = 80;

/// A line of a record file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// Everything read from a span of a record file.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    /// The header, when the span contains it.
    pub header: Option<(RunMeta, Source)>,
    /// Loop iterations, in file order.
    pub loops: Vec<LoopCtx>,
    /// Value records, in file order.
    pub records: Vec<Record>,
    /// Checkpoints, in file order.
    pub checkpoints: Vec<CheckpointMeta>,
    /// The `end` line, when present.
    pub end: Option<RunEnd>,
    /// Divergence checks (`check` lines of replay files), in file order.
    pub checks: Vec<ReplayCheck>,
    /// Lines that could not be read (the others are kept).
    pub errors: Vec<LineError>,
    /// Bytes consumed: only whole lines (ending in `\n`) are read.
    pub consumed: usize,
    /// Number of whole lines consumed.
    pub lines: u64,
}

/// The loop iterations a forward record file declared (its `iter` lines),
/// as far as it has been read: the contexts its later lines, and its run's
/// replay files, may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contexts {
    /// Per context id, its nesting depth (1: an outermost loop's
    /// iteration); 0 where no iteration has that id. Ids are smaller than
    /// the number of lines read, so this never outgrows the file.
    depth: Vec<u8>,
    /// Number of declared contexts.
    count: usize,
}

impl Contexts {
    /// Whether an iteration with context id `ctx` was declared.
    pub fn contains(&self, ctx: u32) -> bool {
        self.depth(ctx).is_some()
    }

    /// The nesting depth of context `ctx` (1: an outermost loop's
    /// iteration), when declared.
    pub fn depth(&self, ctx: u32) -> Option<usize> {
        self.depth.get(ctx as usize).copied().filter(|&d| d != 0).map(usize::from)
    }

    /// Number of declared contexts.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none was declared.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The smallest id the next declaration may take (one more than the
    /// largest declared; an extraction file numbers its own from here).
    pub fn next_id(&self) -> u64 {
        self.depth.len() as u64
    }

    /// Checks the declaration `l`, on a line with `room` lines other than
    /// the header above it, and records it.
    fn declare(&mut self, l: &LoopCtx, room: u64) -> Result<(), String> {
        let ctx = u64::from(l.ctx);
        if l.ctx == u32::MAX {
            return Err(format!("context id {} is reserved", l.ctx));
        }
        if ctx < self.next_id() {
            return Err(if self.contains(l.ctx) {
                format!("context {} is declared twice", l.ctx)
            } else {
                format!("context ids increase down the file, but {} comes after {}", l.ctx, self.next_id() - 1)
            });
        }
        if ctx > room {
            return Err(format!(
                "context id {} does not fit the file: a run numbers its iterations from 0 in the order \
                 they begin, so this line can declare context {room} at most",
                l.ctx
            ));
        }
        let depth = match l.parent {
            None => 1,
            Some(p) => match self.depth(p) {
                Some(d) => d + 1,
                None => return Err(format!("parent context {p} is not declared by an earlier `iter` line")),
            },
        };
        if depth > MAX_DEPTH {
            return Err(format!("loops nested {depth} deep; at most {MAX_DEPTH}"));
        }
        self.depth.resize(ctx as usize, 0);
        self.depth.push(depth as u8);
        self.count += 1;
        Ok(())
    }
}

/// Reads one record file span by span, checking each line against the
/// rules of the [module docs](self) and what the lines before it declared.
///
/// ```
/// use flor_core::record::{LineEncoder, RecordReader};
/// let mut e = LineEncoder::new();
/// e.iter(0, None, "epoch", 0, None);
/// e.iter(4_000_000_000, None, "epoch", 1, None); // cannot be: refused
/// let mut reader = RecordReader::new();
/// let parsed = reader.read(&e.buf);
/// assert_eq!(parsed.loops.len(), 1);
/// assert_eq!(parsed.errors[0].line, 2);
/// ```
#[derive(Debug, Clone)]
pub struct RecordReader {
    contexts: Contexts,
    /// For a replay or extraction file: its run's forward contexts.
    forward: Option<Arc<Contexts>>,
    /// For an extraction file: the forward file's next context id, where
    /// the file's own declarations start.
    extends: u64,
    /// From the header; forward until one is read.
    source: Source,
    /// Whether line 1 was a header.
    header: bool,
    next_line: u64,
    key_base: u64,
}

impl Default for RecordReader {
    fn default() -> Self {
        RecordReader::new()
    }
}

impl RecordReader {
    /// A reader at the start (line 1) of a file.
    pub fn new() -> RecordReader {
        RecordReader {
            contexts: Contexts::default(),
            forward: None,
            extends: 0,
            source: Source::Forward,
            header: false,
            next_line: 1,
            key_base: 0,
        }
    }

    /// Checks the contexts of a replay or extraction file's lines against `forward`, the
    /// contexts of its run's forward record file. Without it, a replay
    /// file's contexts are not checked (there is nothing to check them
    /// against); ingestion always gives it.
    pub fn with_forward(mut self, forward: Arc<Contexts>) -> RecordReader {
        self.forward = Some(forward);
        self
    }

    /// Numbers the records read as `base +` their line ([`Record::line`],
    /// [`CheckpointMeta::line`], [`ReplayCheck::line`]: a store's key), so a run's replay files
    /// get line ranges of their own. Errors keep the line in the file.
    pub fn with_line_keys(mut self, base: u64) -> RecordReader {
        self.key_base = base;
        self
    }

    /// The line number the next line read will have.
    pub fn next_line(&self) -> u64 {
        self.next_line
    }

    /// Forward or replay, as the header said (forward before one is read).
    pub fn source(&self) -> Source {
        self.source
    }

    /// The contexts declared so far.
    pub fn contexts(&self) -> &Contexts {
        &self.contexts
    }

    /// The contexts declared so far, for the run's replay files
    /// ([`RecordReader::with_forward`]).
    pub fn into_contexts(self) -> Contexts {
        self.contexts
    }

    /// Reads the whole lines of `bytes`, the next span of the file. A
    /// trailing partial line is left unconsumed ([`Parsed::consumed`]).
    pub fn read(&mut self, bytes: &[u8]) -> Parsed {
        let mut out = Parsed::default();
        let mut names = Interner::default();
        let mut pos = 0usize;
        while let Some(nl) = memchr::memchr(b'\n', &bytes[pos..]) {
            let raw = &bytes[pos..pos + nl];
            pos += nl + 1;
            let line = self.next_line;
            self.next_line += 1;
            out.lines += 1;
            if raw.iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            if let Err(message) = self.line(raw, line, &mut out, &mut names) {
                out.errors.push(LineError { line, message });
            }
        }
        out.consumed = pos;
        out
    }

    /// Moves past the whole lines of `bytes`, a span read before (by an
    /// earlier session), learning its declarations as [`RecordReader::read`]
    /// would, without keeping its records or reporting its errors. Only
    /// the header and the lines that can be `iter` lines are parsed.
    /// Returns the bytes consumed.
    pub fn skip(&mut self, bytes: &[u8]) -> usize {
        let mut scratch = Parsed::default();
        let mut names = Interner::default();
        let mut pos = 0usize;
        while let Some(nl) = memchr::memchr(b'\n', &bytes[pos..]) {
            let raw = &bytes[pos..pos + nl];
            pos += nl + 1;
            let line = self.next_line;
            self.next_line += 1;
            if line == 1 || may_declare(raw) {
                let _ = self.line(raw, line, &mut scratch, &mut names);
                scratch.loops.clear();
                scratch.records.clear();
                scratch.checkpoints.clear();
            }
        }
        pos
    }

    fn line(&mut self, raw: &[u8], line: u64, out: &mut Parsed, names: &mut Interner) -> Result<(), String> {
        if raw.len() > MAX_LINE_BYTES {
            return Err(format!("the line is {} bytes long; at most {MAX_LINE_BYTES}", raw.len()));
        }
        let l: Line<'_> = serde_json::from_slice(raw).map_err(|e| format!("not a record: {e}"))?;
        if matches!(l.k, Cow::Owned(_)) {
            return Err("the record kind (`k`) is written with escapes".into());
        }
        match l.k.as_ref() {
            "iter" => self.iter(l, line, out, names),
            "log" | "arg" | "time" | "out" => self.value(l, line, out, names),
            "ckpt" => self.checkpoint(l, line, out, names),
            "run" => self.header(raw, line, out),
            "end" => {
                let e: EndLine = serde_json::from_slice(raw).map_err(|e| format!("bad end record: {e}"))?;
                out.end = Some(e.end);
                Ok(())
            }
            "check" => {
                let c: CheckLine = serde_json::from_slice(raw).map_err(|e| format!("bad check record: {e}"))?;
                out.checks.push(ReplayCheck { line: self.key_base + line, ..c.check });
                Ok(())
            }
            other => Err(format!("unknown record kind {}", quoted(other))),
        }
    }

    fn iter(&mut self, l: Line<'_>, line: u64, out: &mut Parsed, names: &mut Interner) -> Result<(), String> {
        if self.source == Source::Replay {
            return Err("a replay record file declares no loop iterations (its lines use its run's)".into());
        }
        let ctx = l.c.ok_or("`iter` record without a context id (`c`)")?;
        let name = l.l.as_deref().ok_or("`iter` record without a loop name (`l`)")?;
        check_len("the loop name (`l`)", name, MAX_LOOP_NAME_BYTES)?;
        let iteration = l.it.ok_or("`iter` record without an iteration (`it`)")?;
        if i64::try_from(iteration).is_err() {
            return Err(format!("iteration index {iteration} is out of range (at most {})", i64::MAX));
        }
        let lc = LoopCtx { ctx, parent: l.p, name: names.get(name), iteration, value: l.val };
        // Lines above this one, the header excepted: at most that many
        // contexts were declared before it.
        let room = line.saturating_sub(1 + u64::from(self.header)) + self.extends;
        self.contexts.declare(&lc, room)?;
        out.loops.push(lc);
        Ok(())
    }

    fn value(&mut self, l: Line<'_>, line: u64, out: &mut Parsed, names: &mut Interner) -> Result<(), String> {
        let kind = match l.k.as_ref() {
            "log" => RecordKind::Log,
            "arg" => RecordKind::Arg,
            "time" => RecordKind::Timing,
            _ => RecordKind::Output,
        };
        let value = l.value()?;
        let name = need_name(&l, names)?;
        self.check_ctx(l.c)?;
        out.records.push(Record { line: self.key_base + line, ctx: l.c, kind, name, value });
        Ok(())
    }

    fn checkpoint(&mut self, l: Line<'_>, line: u64, out: &mut Parsed, names: &mut Interner) -> Result<(), String> {
        let name = need_name(&l, names)?.to_string();
        let digest = l.digest.ok_or("`ckpt` record without a digest")?;
        if digest.len() != 64 || !digest.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`ckpt` digest {} is not a BLAKE3 hex digest", quoted(&digest)));
        }
        let format = l.fmt.unwrap_or_default();
        check_len("the checkpoint format (`fmt`)", &format, MAX_NAME_BYTES)?;
        self.check_ctx(l.c)?;
        out.checkpoints.push(CheckpointMeta {
            line: self.key_base + line,
            ctx: l.c,
            name,
            digest,
            bytes: l.bytes.unwrap_or(0),
            format,
        });
        Ok(())
    }

    fn header(&mut self, raw: &[u8], line: u64, out: &mut Parsed) -> Result<(), String> {
        let h: HeaderLine = serde_json::from_slice(raw).map_err(|e| format!("bad run header: {e}"))?;
        if h.format > FORMAT_VERSION {
            return Err(format!(
                "record format {} is newer than this flor understands ({FORMAT_VERSION}); upgrade flor",
                h.format
            ));
        }
        if crate::time::micros_from_iso(&h.meta.tstamp).is_none() {
            return Err(format!("run header has a malformed tstamp {}", quoted(&h.meta.tstamp)));
        }
        if self.header || out.header.is_some() {
            return Err("a second run header in one file".into());
        }
        if line != 1 {
            return Err("a run header is only valid on the file's first line".into());
        }
        self.header = true;
        self.source = h.source;
        if let (Source::Extract, Some(forward)) = (h.source, &self.forward) {
            self.contexts = Contexts::clone(forward);
            self.extends = forward.next_id();
        }
        out.header = Some((h.meta, h.source));
        Ok(())
    }

    /// Whether a line may use context `c` (see the module docs).
    fn check_ctx(&self, c: Option<u32>) -> Result<(), String> {
        let Some(c) = c else { return Ok(()) };
        match (self.source, &self.forward) {
            (Source::Forward | Source::Extract, _) if self.contexts.contains(c) => Ok(()),
            (Source::Forward | Source::Extract, _) => {
                Err(format!("context {c} is not declared by an earlier `iter` line"))
            }
            (Source::Replay, Some(f)) if f.contains(c) => Ok(()),
            (Source::Replay, Some(_)) => {
                Err(format!("context {c} is not a loop iteration of the run's forward record file"))
            }
            (Source::Replay, None) => Ok(()),
        }
    }
}

/// Whether `raw` can be an `iter` line. The writer's lines start with
/// `{"k":"<kind>"`; a line in any other form is one only if it holds the
/// bytes `"iter"` (a kind written with escapes is refused).
fn may_declare(raw: &[u8]) -> bool {
    match raw.strip_prefix(b"{\"k\":\"") {
        Some(rest) => rest.starts_with(b"iter\""),
        None => memchr::memmem::find(raw, b"\"iter\"").is_some(),
    }
}

fn need_name(l: &Line<'_>, names: &mut Interner) -> Result<Arc<str>, String> {
    match &l.n {
        Some(n) => {
            check_len("the name (`n`)", n, MAX_NAME_BYTES)?;
            Ok(names.get(n))
        }
        None => Err(format!("`{}` record without a name (`n`)", l.k)),
    }
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes long; at most {max}", s.len()));
    }
    Ok(())
}

/// `s` quoted for an error message, cut after [`QUOTE_CHARS`] characters.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    k: Cow<'a, str>,
    c: Option<u32>,
    p: Option<u32>,
    #[serde(borrow)]
    n: Option<Cow<'a, str>>,
    #[serde(borrow)]
    l: Option<Cow<'a, str>>,
    it: Option<u64>,
    val: Option<String>,
    vi: Option<i64>,
    vf: Option<f64>,
    #[serde(borrow)]
    vx: Option<Cow<'a, str>>,
    vb: Option<bool>,
    #[serde(borrow)]
    vs: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    vj: Option<&'a RawValue>,
    digest: Option<String>,
    bytes: Option<u64>,
    fmt: Option<String>,
}

/// A JSON value that is present, `null` included (plain `Option` would read
/// `"vj":null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

impl Line<'_> {
    fn value(&self) -> Result<Value, String> {
        let mut found = None;
        let mut count = 0;
        if let Some(i) = self.vi {
            found = Some(Value::Int(i));
            count += 1;
        }
        if let Some(f) = self.vf {
            found = Some(Value::Float(f));
            count += 1;
        }
        if let Some(x) = &self.vx {
            let f = match x.as_ref() {
                "NaN" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => return Err(format!("`vx` must be \"NaN\", \"inf\" or \"-inf\", found {}", quoted(other))),
            };
            found = Some(Value::Float(f));
            count += 1;
        }
        if let Some(b) = self.vb {
            found = Some(Value::Bool(b));
            count += 1;
        }
        if let Some(s) = &self.vs {
            found = Some(Value::Text(s.as_ref().into()));
            count += 1;
        }
        if let Some(j) = self.vj {
            found = Some(Value::Json(j.get().into()));
            count += 1;
        }
        match (count, found) {
            (1, Some(v)) => Ok(v),
            (0, _) => Err("record has no value (one of vi, vf, vx, vb, vs, vj)".into()),
            _ => Err("record has more than one value key".into()),
        }
    }
}

/// Interns names so a file's many records share one allocation per name.
#[derive(Default)]
struct Interner(std::collections::HashMap<String, Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = s.into();
        self.0.insert(s.to_owned(), a.clone());
        a
    }
}

/// Reads the whole lines of `bytes`, a span of a record file whose first
/// line is line number `first_line`, with a fresh [`RecordReader`]: a span
/// that starts after line 1 can use no context declared before it (read
/// such spans with one reader). A trailing partial line is left
/// unconsumed. Lines that cannot be read are reported in
/// [`Parsed::errors`]; the others are kept.
pub fn parse_lines(bytes: &[u8], first_line: u64) -> Parsed {
    let mut reader = RecordReader { next_line: first_line, ..RecordReader::new() };
    reader.read(bytes)
}

#[cfg(test)]
mod tests;
