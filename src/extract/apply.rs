//! `flor capture --extract`: the values [the rules](super) read out of a
//! run's captured lines, written as the run's extraction file
//! ([`flor_core::layout::extract_label`], source [`Source::Extract`]) and
//! attached to its ref beside its forward and replay files, so they are
//! data of the run like any other: a `flor rebuild` or another clone reads
//! them back, and both engines pivot them.
//!
//! What the file holds, per run (its forward file read from the ref):
//!
//! * each captured line's measures at the line's loop position;
//! * where the line names a loop index its position does not have
//!   (`epoch 3 | loss: 0.5` printed outside any `flor.loop`, or inside a
//!   `flor.loop` of another name), an iteration of its own nested in the
//!   line's position (FlorDB's extra ctx segment), declared in the file
//!   with ids numbered on from the forward file's; an index naming a loop
//!   the position already has is the recorded one and adds nothing;
//! * a measure named like a loop of its position is dropped (it would
//!   collide with that loop's column), and of two lines giving one name at
//!   one position the later wins.
//!
//! Extracted values rank below logged and replayed ones
//! ([`Source::rank`]): a `flor.log` of the same name at the same position
//! is what a table shows. Runs still being recorded are skipped (their
//! forward file grows, so ids after it are not free yet).
//!
//! Re-running replaces each run's file. A file whose bytes do not change
//! is not written again; when a file already ingested changes (new rules,
//! a new flor), the query database is rebuilt from git, since a store
//! cannot forget a file's rows one by one.

use std::collections::{BTreeSet, HashMap};

use flor_core::layout::{extract_label, extract_path, label_for, ref_for, RECORDS_DIR};
use flor_core::record::{LineEncoder, RecordReader};
use flor_core::{LoopCtx, RecordKind, RunMeta, RunStatus, Source, Value};

use super::extract_fields;
use crate::{Project, Result, SyncReport};

/// What [`Project::extract`] did.
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    /// Runs whose captured output was read.
    pub runs: usize,
    /// Runs whose extraction file was written (new or changed).
    pub written: usize,
    /// Runs whose extraction file was already what the rules give.
    pub unchanged: usize,
    /// Values in the runs' extraction files now.
    pub values: u64,
    /// Loop iterations the files add (indexes printed outside a loop of
    /// that name).
    pub iterations: u64,
    /// The extracted names, sorted.
    pub names: Vec<String>,
    /// Runs skipped because they are still being recorded (tstamps).
    pub running: Vec<String>,
    /// Whether the query database was rebuilt (an ingested file changed).
    pub rebuilt: bool,
    /// The sync (or rebuild) that ingested the files.
    pub sync: SyncReport,
}

/// A value's place: its loop position and name.
type Slot = (Option<u32>, String);

/// One run's derived extraction.
#[derive(Debug, Default)]
struct Derived {
    /// The extraction file's bytes (`None`: nothing to write).
    bytes: Option<Vec<u8>>,
    values: u64,
    iterations: u64,
    names: BTreeSet<String>,
}

impl Project {
    /// Reads every finished run's captured lines with [the rules](super),
    /// writes what they give as each run's extraction file on its ref
    /// (replacing an earlier one), and ingests them, so the names are
    /// columns of [`Project::dataframe`] in either engine. See the
    /// [module docs](self).
    pub fn extract(&mut self) -> Result<ExtractReport> {
        self.sync()?;
        let mut report = ExtractReport::default();
        let mut names = BTreeSet::new();
        let mut changed_ingested = false;
        let reader = flor_git::RepoReader::open(self.root())?;
        for row in self.runs()? {
            if row.meta.status == RunStatus::Running {
                report.running.push(row.meta.tstamp.clone());
                continue;
            }
            let run_id = row.meta.run_id();
            let refname = ref_for(&run_id);
            let Some(tip) = reader.commit_of(&refname) else { continue };
            let files = reader.read_dir_at(&tip, RECORDS_DIR)?;
            let file = |label: &str| files.iter().find(|(p, _)| p.rsplit('/').next() == Some(label));
            let Some((_, forward)) = file(&label_for(&run_id)) else { continue };
            let previous = file(&extract_label(&run_id)).map(|(_, b)| b.as_slice());
            let derived = derive(&row.meta, forward);
            report.runs += usize::from(derived.bytes.is_some());
            let bytes = match (derived.bytes, previous) {
                (Some(b), _) => b,
                // Nothing to read now, but an earlier extraction to replace.
                (None, Some(_)) => header_only(&row.meta),
                (None, None) => continue,
            };
            report.values += derived.values;
            report.iterations += derived.iterations;
            names.extend(derived.names);
            if previous == Some(bytes.as_slice()) {
                report.unchanged += 1;
                continue;
            }
            let ingested = previous.is_some() && self.store()?.file_progress(&extract_label(&run_id))?.is_some();
            changed_ingested |= ingested;
            let path = extract_path(&run_id);
            let message = format!("flor capture --extract: {} values read out of captured output", derived.values);
            flor_git::attach_files(self.root(), &refname, &[(path.as_str(), bytes.as_slice())], &message)?;
            report.written += 1;
        }
        report.names = names.into_iter().collect();
        if changed_ingested {
            report.rebuilt = true;
            report.sync = self.rebuild()?;
        } else {
            report.sync = self.sync()?;
        }
        Ok(report)
    }
}

/// An extraction file with no values: what replaces an earlier extraction
/// when the rules now read nothing.
fn header_only(meta: &RunMeta) -> Vec<u8> {
    let mut enc = LineEncoder::new();
    enc.header(meta, Source::Extract);
    enc.buf
}

/// The extraction file of the run whose forward record file is `forward`
/// (see the [module docs](self)); no bytes when its lines give nothing.
fn derive(meta: &RunMeta, forward: &[u8]) -> Derived {
    let mut reader = RecordReader::new();
    let parsed = reader.read(forward);
    let next_id = reader.into_contexts().next_id();
    let Ok(first_new) = u32::try_from(next_id) else { return Derived::default() };
    let mut loops: HashMap<u32, LoopCtx> = parsed.loops.into_iter().map(|l| (l.ctx, l)).collect();
    // (parent, loop, iteration) -> the iteration the file declares.
    let mut added: HashMap<(Option<u32>, String, u64), u32> = HashMap::new();
    let mut order: Vec<u32> = Vec::new();
    // (position, name) -> (first appearance, value): the later line wins.
    let mut values: HashMap<Slot, (usize, f64)> = HashMap::new();
    for rec in &parsed.records {
        let (RecordKind::Output, Value::Text(text)) = (rec.kind, &rec.value) else { continue };
        let fields = extract_fields(text);
        if fields.is_empty() {
            continue;
        }
        let mut enclosing = ancestors(&loops, rec.ctx);
        let mut ctx = rec.ctx;
        if let Some((index, iteration)) = &fields.index {
            if !enclosing.contains(index) {
                let key = (rec.ctx, index.clone(), *iteration);
                let next = first_new.saturating_add(order.len() as u32);
                let id = *added.entry(key).or_insert(next);
                if id == next {
                    if next == u32::MAX {
                        continue; // ids exhausted (reserved id): not representable
                    }
                    order.push(id);
                    let name = std::sync::Arc::from(index.as_str());
                    loops.insert(id, LoopCtx { ctx: id, parent: rec.ctx, name, iteration: *iteration, value: None });
                }
                ctx = Some(id);
                enclosing.insert(index.clone());
            }
        }
        for (name, value) in fields.measures {
            if enclosing.contains(&name) {
                continue;
            }
            let first = values.len();
            values.entry((ctx, name)).and_modify(|v| v.1 = value).or_insert((first, value));
        }
    }
    if values.is_empty() {
        return Derived::default();
    }
    let mut enc = LineEncoder::new();
    enc.header(meta, Source::Extract);
    for id in &order {
        let l = &loops[id];
        enc.iter(l.ctx, l.parent, &l.name, l.iteration, None);
    }
    let mut rows: Vec<(Slot, (usize, f64))> = values.into_iter().collect();
    rows.sort_by_key(|(_, (first, _))| *first);
    let mut names = BTreeSet::new();
    for ((ctx, name), (_, value)) in &rows {
        enc.record(RecordKind::Log, *ctx, name, &Value::Float(*value));
        names.insert(name.clone());
    }
    Derived { bytes: Some(enc.buf), values: rows.len() as u64, iterations: order.len() as u64, names }
}

/// The loop names of position `ctx` and the positions enclosing it.
fn ancestors(loops: &HashMap<u32, LoopCtx>, mut ctx: Option<u32>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Parents are declared before their children, so the chain ends; the
    // bound guards against a file that says otherwise.
    for _ in 0..=flor_core::record::MAX_DEPTH {
        let Some(l) = ctx.and_then(|c| loops.get(&c)) else { break };
        names.insert(l.name.to_string());
        ctx = l.parent;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(lines: &[&str]) -> Vec<u8> {
        let mut e = LineEncoder::new();
        e.header(&RunMeta::new("p", "2026-01-02T03:04:05.000006", "train.py"), Source::Forward);
        for l in lines {
            e.buf.extend_from_slice(l.as_bytes());
            e.buf.push(b'\n');
        }
        e.buf
    }

    fn read(bytes: &[u8], fwd: &[u8]) -> flor_core::record::Parsed {
        let mut r = RecordReader::new();
        r.read(fwd);
        let p = RecordReader::new().with_forward(std::sync::Arc::new(r.into_contexts())).read(bytes);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p
    }

    #[test]
    fn printed_indexes_become_iterations_and_loop_names_are_not_measures() {
        let fwd = forward(&[
            r#"{"k":"out","n":"io::stdout","vs":"starting: lr=0.01"}"#,
            r#"{"k":"iter","c":0,"l":"epoch","it":0}"#,
            r#"{"k":"out","c":0,"n":"io::stdout","vs":"epoch 0 | loss: 0.9"}"#,
            r#"{"k":"out","c":0,"n":"io::stdout","vs":"step 4 | loss: 0.7 epoch=0"}"#,
            r#"{"k":"out","c":0,"n":"io::stdout","vs":"step 4 | loss: 0.6"}"#,
            r#"{"k":"iter","c":1,"l":"epoch","it":1}"#,
            r#"{"k":"out","c":1,"n":"io::stdout","vs":"nothing here"}"#,
        ]);
        let meta = RunMeta::new("p", "2026-01-02T03:04:05.000006", "train.py");
        let d = derive(&meta, &fwd);
        let bytes = d.bytes.expect("values");
        let p = read(&bytes, &fwd);
        // `step 4` is not a loop of the position: an iteration of its own,
        // numbered after the forward file's, nested in epoch 0.
        assert_eq!(p.loops.len(), 1);
        assert_eq!(
            (p.loops[0].ctx, p.loops[0].parent, p.loops[0].name.as_ref(), p.loops[0].iteration),
            (2, Some(0), "step", 4)
        );
        let got: Vec<(Option<u32>, &str, Value)> =
            p.records.iter().map(|r| (r.ctx, r.name.as_ref(), r.value.clone())).collect();
        assert_eq!(
            got,
            vec![
                (None, "lr", Value::Float(0.01)),
                (Some(0), "loss", Value::Float(0.9)),
                // The later line at one position wins; `epoch=0` names a loop
                // of the position, so it is no measure.
                (Some(2), "loss", Value::Float(0.6)),
            ]
        );
        assert_eq!((d.values, d.iterations), (3, 1));
    }

    #[test]
    fn a_run_without_metrics_in_its_output_gives_no_file() {
        let fwd = forward(&[r#"{"k":"out","n":"io::stdout","vs":"hello"}"#, r#"{"k":"log","n":"x","vi":1}"#]);
        let meta = RunMeta::new("p", "2026-01-02T03:04:05.000006", "train.py");
        assert!(derive(&meta, &fwd).bytes.is_none());
    }
}
