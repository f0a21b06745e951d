//! Which objects runs name, garbage collection of the others, and
//! verification of the whole object store.
//!
//! References come from git, not from the query database: every record
//! file (forward and replay) in the tip of every ref under
//! `refs/flor/runs/`, plus the record files in `.flor/runs/` (runs still
//! recording, or not yet published) and `.flor/broken/`. Every line that
//! mentions a `"digest"` is read leniently: a checkpoint line the record
//! reader would refuse still keeps its object, and a line that is not JSON
//! keeps any digest it holds; a setup load recorded by digest only
//! ([`flor_core::kept`]) names no object. Chunks are kept by following the manifests of
//! everything kept, recursively.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use flor_core::kept::NOT_KEPT_SUFFIX;
use flor_core::layout::{RECORDS_DIR, RUNS_REF_PREFIX};
use flor_core::objects::ObjectStore;
use flor_core::tensors::TensorIndexes;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::project::Project;

/// What [`Project::gc_objects`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Files modified more recently than this are kept even when nothing
    /// names them (a run writes an object before the record that names it;
    /// a pack writes chunks before their manifest; a writer that finds an
    /// object stored already marks it as used).
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { dry_run: false, grace: Duration::from_secs(3600) }
    }
}

/// What [`Project::gc_objects`] did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Objects the runs name.
    pub referenced: usize,
    /// Of those, objects not in the store.
    pub missing: usize,
    /// Store files kept (named objects, their chunks, recent files).
    pub kept: usize,
    /// Their size.
    pub kept_bytes: u64,
    /// Of those, files nothing names, kept for being recent.
    pub recent: usize,
    /// Object and chunk files deleted.
    pub deleted: usize,
    /// Their size.
    pub deleted_bytes: u64,
    /// Tensor index and delta files deleted (their objects are gone).
    pub deleted_indexes: usize,
    /// Their size.
    pub deleted_index_bytes: u64,
    /// Temporary files deleted (left by killed processes).
    pub deleted_temp: usize,
    /// Their size.
    pub deleted_temp_bytes: u64,
}

/// A problem [`Project::verify_objects`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyProblem {
    /// A stored object whose bytes are wrong (or a chunk of it missing or
    /// wrong).
    Damaged {
        /// The object.
        digest: String,
        /// What is wrong (names the chunk).
        what: String,
    },
    /// An object runs name that is not stored.
    Missing {
        /// The object.
        digest: String,
        /// Who names it (`run <id>, checkpoint `model``).
        named_by: Vec<String>,
    },
}

/// What [`Project::verify_objects`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Objects read and checked (each chunk is checked as part of the
    /// objects that hold it).
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// What is wrong, damaged objects first.
    pub problems: Vec<VerifyProblem>,
}

impl Project {
    /// The objects the runs name (see the module docs), each with who
    /// names it.
    pub fn referenced_objects(&self) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        let reader = flor_git::RepoReader::open(self.root())?;
        for (refname, target) in reader.ref_targets(RUNS_REF_PREFIX)? {
            let run = refname.strip_prefix(RUNS_REF_PREFIX).unwrap_or(&refname);
            let Some(sha) = reader.commit_of(&target) else {
                return Err(unreadable(&refname, "it names no commit"));
            };
            let files = reader.read_dir_at(&sha, RECORDS_DIR).map_err(|e| unreadable(&refname, &e.to_string()))?;
            for (_, bytes) in files {
                scan_records(&bytes, &format!("run {run}"), &mut out);
            }
        }
        for dir in [self.runs_dir(), self.flor_dir().join("broken")] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &dir, e)),
            };
            for entry in entries {
                let path = entry.map_err(|e| Error::io("list", &dir, e))?.path();
                if path.extension().is_some_and(|x| x == "jsonl") {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
                    scan_records(&bytes, &format!("record file {}", path.display()), &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Deletes the object and chunk files no run names (following
    /// manifests), the tensor indexes of deleted objects, and temporary
    /// files, sparing files modified within `options.grace`. Reads no
    /// query database. A named object whose manifest cannot be read stops
    /// it before anything is deleted (its chunks cannot be told apart).
    pub fn gc_objects(&self, options: &GcOptions) -> Result<GcReport> {
        let objects = self.objects();
        let named = self.referenced_objects()?;
        let files = objects.stored_files()?;
        let cutoff = SystemTime::now().checked_sub(options.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let recent = |m: Option<SystemTime>| m.is_none_or(|m| m > cutoff);
        let mut report = GcReport { dry_run: options.dry_run, referenced: named.len(), ..GcReport::default() };
        report.missing = named.keys().filter(|d| !objects.contains(d)).count();
        let needed = closure(objects, named.keys().cloned())?;
        let recent_files = files.iter().filter(|f| recent(f.modified) && !needed.contains(&f.digest));
        let keep = closure(objects, needed.iter().cloned().chain(recent_files.map(|f| f.digest.clone())))?;
        for f in &files {
            if keep.contains(&f.digest) {
                report.kept += 1;
                report.kept_bytes += f.stored_bytes;
                report.recent += usize::from(!needed.contains(&f.digest));
                continue;
            }
            // Looked at again just before: a writer may have marked it.
            if !options.dry_run {
                let now = objects.stored_file(&f.digest)?;
                if now.is_none_or(|m| recent(m.modified)) {
                    report.kept += 1;
                    report.recent += 1;
                    continue;
                }
                objects.remove_file(&f.digest)?;
            }
            report.deleted += 1;
            report.deleted_bytes += f.stored_bytes;
        }
        let stored: HashSet<&str> = files.iter().map(|f| f.digest.as_str()).collect();
        let gone = |d: &str| !keep.contains(d) || !stored.contains(d);
        for ix in TensorIndexes::new(objects).files()? {
            if gone(&ix.digest) || ix.prev.as_deref().is_some_and(gone) {
                if !options.dry_run {
                    remove(&ix.path)?;
                }
                report.deleted_indexes += 1;
                report.deleted_index_bytes += ix.bytes;
            }
        }
        for (path, bytes, modified) in objects.temp_files()? {
            if !recent(modified) {
                if !options.dry_run {
                    remove(&path)?;
                }
                report.deleted_temp += 1;
                report.deleted_temp_bytes += bytes;
            }
        }
        Ok(report)
    }

    /// Reads every stored object and checks its digest (a chunked one's
    /// chunks too), and looks for every object the runs name. `progress`
    /// gets `(done, total)` objects.
    pub fn verify_objects(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<VerifyReport> {
        let objects = self.objects();
        let files = objects.stored_files()?;
        let mut problems = Vec::new();
        let mut chunks: HashSet<String> = HashSet::new();
        let mut whole = Vec::new();
        let mut chunked = Vec::new();
        for f in &files {
            match objects.manifest(&f.digest) {
                Ok(Some(m)) => {
                    chunks.extend(m.chunks.into_iter().map(|c| c.digest));
                    chunked.push(f.digest.clone());
                }
                Ok(None) => whole.push(f.digest.clone()),
                Err(flor_core::Error::MissingObject { .. }) => {} // deleted meanwhile
                Err(e) => problems.push(VerifyProblem::Damaged { digest: f.digest.clone(), what: e.to_string() }),
            }
        }
        // Chunks are checked through the objects that hold them.
        whole.retain(|d| !chunks.contains(d));
        let todo: Vec<String> = chunked.into_iter().chain(whole).collect();
        let mut report = VerifyReport::default();
        for (k, batch) in todo.chunks(16).enumerate() {
            let results: Vec<(String, std::result::Result<u64, String>)> = batch
                .par_iter()
                .map(|d| (d.clone(), objects.get_with(d, |r| io::copy(r, &mut io::sink())).map_err(|e| e.to_string())))
                .collect();
            for (digest, r) in results {
                match r {
                    Ok(bytes) => {
                        report.objects += 1;
                        report.bytes += bytes;
                    }
                    Err(what) => problems.push(VerifyProblem::Damaged { digest, what }),
                }
            }
            progress((k * 16 + batch.len()).min(todo.len()), todo.len());
        }
        let mut missing: Vec<(String, Vec<String>)> =
            self.referenced_objects()?.into_iter().filter(|(d, _)| !objects.contains(d)).collect();
        missing.sort();
        problems.extend(missing.into_iter().map(|(digest, named_by)| VerifyProblem::Missing { digest, named_by }));
        report.problems = problems;
        Ok(report)
    }
}

/// The objects to keep: `roots` and, through their manifests, their chunks
/// (recursively). A root that is not stored is skipped; one whose manifest
/// cannot be read is an error.
fn closure(objects: &ObjectStore, roots: impl Iterator<Item = String>) -> Result<HashSet<String>> {
    let mut keep: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = roots.collect();
    while let Some(d) = todo.pop() {
        if !keep.insert(d.clone()) {
            continue;
        }
        match objects.manifest(&d) {
            Ok(Some(m)) => todo.extend(m.chunks.into_iter().map(|c| c.digest)),
            Ok(None) | Err(flor_core::Error::MissingObject { .. }) => {}
            Err(e) => {
                return Err(Error::Core(flor_core::Error::Checkpoint {
                    name: d.clone(),
                    message: format!(
                        "garbage collection stopped, nothing was deleted: {e} (its chunks cannot be told \
                         apart from garbage; see `flor checkpoints verify`)"
                    ),
                }))
            }
        }
    }
    Ok(keep)
}

/// The error for a run ref whose records cannot be read (garbage
/// collection must not guess what it names).
fn unreadable(refname: &str, why: &str) -> Error {
    Error::BadRecordFile {
        file: refname.to_owned(),
        message: format!("cannot read its record files ({why}); nothing was deleted"),
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Adds the digests `bytes` (a record file) names to `out`, as named by
/// `origin`.
fn scan_records(bytes: &[u8], origin: &str, out: &mut HashMap<String, Vec<String>>) {
    let finder = memchr::memmem::Finder::new(b"\"digest\"");
    for line in bytes.split(|&b| b == b'\n') {
        if finder.find(line).is_none() {
            continue;
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let digest = parsed.as_ref().and_then(|v| v.get("digest")).and_then(|d| d.as_str());
        let fmt = parsed.as_ref().and_then(|v| v.get("fmt")).and_then(|f| f.as_str());
        if digest.is_some() && fmt.is_some_and(|f| f.ends_with(NOT_KEPT_SUFFIX)) {
            continue; // a setup load recorded by digest only: its bytes were never stored
        }
        match digest {
            Some(d) if is_digest(d) => {
                let name = parsed.as_ref().and_then(|v| v.get("n")).and_then(|n| n.as_str()).unwrap_or("?");
                out.entry(d.to_owned()).or_default().push(format!("{origin}, checkpoint `{name}`"));
            }
            // Not a line the reader would take: keep whatever it names.
            _ => {
                for d in hex_runs(line) {
                    out.entry(d).or_default().push(format!("{origin} (an unreadable line)"));
                }
            }
        }
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Every run of exactly 64 lowercase hex characters in `line`.
fn hex_runs(line: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
    let mut i = 0;
    while i < line.len() {
        if !hex(&line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < line.len() && hex(&line[i]) {
            i += 1;
        }
        if i - start == 64 {
            out.push(String::from_utf8_lossy(&line[start..i]).into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_name_their_objects_leniently() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        let text = format!(
            "{{\"k\":\"run\"}}\n{{\"k\":\"ckpt\",\"n\":\"model\",\"digest\":\"{a}\",\"bytes\":3}}\n\
             {{\"k\":\"log\",\"n\":\"x\",\"v\":\"digest\"}}\n\
             {{\"k\":\"ckpt\",\"digest\":\"{b}\",\"bytes\":3,  BROKEN\n\
             {{\"k\":\"ckpt\",\"digest\":\"{c}c\"}}\n"
        );
        let mut out = HashMap::new();
        scan_records(text.as_bytes(), "run r", &mut out);
        let mut names: Vec<&String> = out.keys().collect();
        names.sort();
        assert_eq!(names, [&a, &b]);
        assert_eq!(out[&a], ["run r, checkpoint `model`"]);
        assert_eq!(out[&b], ["run r (an unreadable line)"]);
    }

    /// A setup load kept by digest only never had its bytes stored:
    /// `flor objects verify` must not call it missing. A kept one names
    /// its object like any checkpoint.
    #[test]
    fn digest_only_loads_name_no_object() {
        let a = "a".repeat(64);
        let d = "d".repeat(64);
        let text = format!(
            "{{\"k\":\"ckpt\",\"n\":\"load:big.npy\",\"digest\":\"{d}\",\"bytes\":3,\"fmt\":\"numpy.load+digest-only\"}}\n\
             {{\"k\":\"ckpt\",\"n\":\"load:ckpt.pth\",\"digest\":\"{a}\",\"bytes\":3,\"fmt\":\"torch.load\"}}\n"
        );
        let mut out = HashMap::new();
        scan_records(text.as_bytes(), "run r", &mut out);
        assert_eq!(out.keys().collect::<Vec<_>>(), [&a]);
    }
}
