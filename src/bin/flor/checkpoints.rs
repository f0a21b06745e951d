//! `flor checkpoints pack | ls | inspect | verify | gc`, and the packing
//! every other command does on its own.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use flor::checkpoints::{
    human_bytes, GcOptions, ObjectInfo, PackOptions, PackProgress, PackReport, StoredAs, VerifyProblem,
};
use flor::core::formats::FormatRegistry;
use flor::core::kept::{StoredKind, NOT_KEPT_SUFFIX};
use flor::core::tensors::IndexStatus;
use flor::{Project, Table, Value};

use super::{emit_table, Format};

/// Exit status of `flor checkpoints verify` when an object is damaged or
/// missing.
const EXIT_DAMAGED: u8 = 7;

#[derive(Subcommand, Debug)]
pub(crate) enum CheckpointsCommand {
    /// Pack the checkpoints of finished runs that are still stored whole,
    /// and store their tensor statistics.
    ///
    /// Does at once what every flor command does a part of: each
    /// checkpoint object a format describes is cut into chunks (tensors
    /// stored once across checkpoints and runs), and its tensors'
    /// statistics (l2, mean, std, min, max, nonfinite, delta_l2 against
    /// the run's previous checkpoint of the same name) go to the `tensors`
    /// view. Prints what it did and the object store's size before and
    /// after.
    Pack {
        /// Look at every checkpoint again, not only those waiting: objects
        /// no format claimed (after installing a plugin), missing objects
        /// (after copying .flor/objects in).
        #[arg(long)]
        all: bool,
    },
    /// List checkpoints: run, name, iteration, format, bytes, stored
    /// bytes, whether packed, whole or missing, tensors.
    Ls {
        /// Only this run (its tstamp, or the start of it).
        #[arg(value_name = "RUN")]
        run: Option<String>,
    },
    /// Show one checkpoint object: how it is stored, its format and the
    /// plugin that cut it, its chunks, its tensors with their statistics.
    ///
    /// Name the object by its digest (or the start of it), or by run,
    /// checkpoint name and iteration (default: the run's last checkpoint
    /// of that name).
    #[command(
        after_help = "Examples:\n  flor checkpoints inspect 3f9a2c\n  flor checkpoints inspect 2026-03-01T10:00 model 4"
    )]
    Inspect {
        /// A digest (or the start of one), or a run's tstamp.
        #[arg(value_name = "DIGEST|RUN")]
        target: String,
        /// With a run: the checkpoint's name.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// With a run: the iteration of its loop that the checkpoint ends.
        #[arg(value_name = "ITER")]
        iteration: Option<u64>,
    },
    /// Read every stored object and check its digest; look for every
    /// object a run names.
    ///
    /// Prints each damaged object (with the chunk at fault) and each
    /// missing one (with the runs that name it). Exit status 7 when there
    /// is any.
    Verify,
    /// Delete the objects and chunks no run names, and what was derived
    /// from them.
    ///
    /// Keeps every object named by a record file of a run ref in git
    /// (refs/flor/runs/*, replay records included) or of a run still
    /// recording, and every chunk their manifests list; deletes the rest,
    /// their tensor indexes, and temporary files left by killed processes.
    /// Files modified within the grace period are kept.
    Gc {
        /// Report what would be deleted; delete nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Keep unnamed files modified within the last SECS seconds
        /// (a run writes an object before the record that names it).
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        grace: u64,
    },
}

/// The formats packing uses: the native ones and the plugins' of the
/// project at `start`, loaded the first time they are needed.
pub(crate) fn formats_of(start: PathBuf) -> impl FnOnce() -> Arc<FormatRegistry> + Send + 'static {
    move || match flor::plugins::load(&start, &flor::plugins::Options::default()) {
        Ok(plugins) => {
            super::report_plugin_failures(&plugins);
            flor::plugins::formats(&plugins)
        }
        Err(e) => {
            eprintln!(
                "flor: warning: framework plugins not loaded, so only checkpoints in native formats are packed: {e}"
            );
            FormatRegistry::shared_native()
        }
    }
}

/// Shows `flor: packing checkpoints: done/total` on a terminal's stderr
/// once the work has taken a second.
fn progress_line() -> impl FnMut(&PackProgress) {
    let terminal = io::stderr().is_terminal();
    let mut shown = false;
    move |p: &PackProgress| {
        if !terminal || (p.elapsed < Duration::from_secs(1) && !shown) {
            return;
        }
        shown = true;
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\rflor: packing checkpoints: {}/{} ({} read, {:.1} s)",
            p.done,
            p.total,
            human_bytes(p.read_bytes),
            p.elapsed.as_secs_f64()
        );
        if p.done == p.total {
            let _ = writeln!(err);
        }
    }
}

/// The packing every command does after syncing, within the configured
/// budget. Never fails the command: a failure is a note.
pub(crate) fn automatically(project: &mut Project) {
    match project.pack_checkpoints_automatically(&mut progress_line()) {
        Ok(report) => {
            if report.packed > 0 {
                eprintln!(
                    "flor: packed {} checkpoint object(s) ({} -> {}){}",
                    report.packed,
                    human_bytes(report.bytes_before),
                    human_bytes(report.bytes_after),
                    if report.waiting > 0 {
                        format!("; {} checkpoint(s) wait for the next commands", report.waiting)
                    } else {
                        String::new()
                    }
                );
            }
            print_notes(&report);
        }
        Err(e) => eprintln!("flor: note: checkpoint packing stopped: {e}"),
    }
}

/// After `flor rebuild`: the `tensors` view back from the tensor indexes
/// (and a bounded part of any other work), and the missing objects named.
pub(crate) fn after_rebuild(project: &mut Project) {
    match project.pack_checkpoints_automatically(&mut progress_line()) {
        Ok(report) => {
            eprintln!(
                "flor: tensors of {} checkpoint(s) restored{}",
                report.checkpoints,
                if report.waiting > 0 {
                    format!("; {} more wait for packing (`flor checkpoints pack`)", report.waiting)
                } else {
                    String::new()
                }
            );
            print_notes(&report);
        }
        Err(e) => eprintln!("flor: note: the tensors view was not restored: {e}"),
    }
}

fn print_notes(report: &PackReport) {
    for note in &report.notes {
        eprintln!("flor: note: {note}");
    }
    if let Some(note) = report.missing_note() {
        eprintln!("flor: note: {note}");
    }
}

/// Runs one `flor checkpoints` command.
pub(crate) fn run(
    project: &mut Project,
    action: &CheckpointsCommand,
    format: Format,
    output: Option<&Path>,
) -> flor::Result<ExitCode> {
    match action {
        CheckpointsCommand::Pack { all } => pack(project, *all),
        CheckpointsCommand::Ls { run } => {
            let table = ls_table(project, run.as_deref())?;
            emit_table(table, format, output)?;
            Ok(ExitCode::SUCCESS)
        }
        CheckpointsCommand::Inspect { target, name, iteration } => {
            let digest = match name {
                Some(name) => project.find_checkpoint(target, name, *iteration)?.digest,
                None => target.clone(),
            };
            let info = project.object_info(&digest)?;
            if format == Format::Table && output.is_none() {
                print!("{}", inspect_text(&info));
            }
            let table = tensors_table(&info);
            if format != Format::Table || output.is_some() || table.row_count() > 0 {
                emit_table(table, format, output)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CheckpointsCommand::Verify => verify(project),
        CheckpointsCommand::Gc { dry_run, grace } => {
            let r = project.gc_objects(&GcOptions { dry_run: *dry_run, grace: Duration::from_secs(*grace) })?;
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            println!(
                "{verb} {} object and chunk file(s) ({}), {} tensor index file(s) ({}), {} temporary file(s) ({})",
                r.deleted,
                human_bytes(r.deleted_bytes),
                r.deleted_indexes,
                human_bytes(r.deleted_index_bytes),
                r.deleted_temp,
                human_bytes(r.deleted_temp_bytes)
            );
            println!(
                "kept {} file(s) ({}): the {} stored object(s) runs name, their chunks, and {} recent file(s) nothing \
                 names",
                r.kept,
                human_bytes(r.kept_bytes),
                r.referenced - r.missing,
                r.recent
            );
            if r.missing > 0 {
                eprintln!("flor: note: {} object(s) runs name are not stored (`flor checkpoints verify`)", r.missing);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The object store's size on disk.
fn store_size(project: &Project) -> u64 {
    project.objects().stored_files().map(|f| f.iter().map(|f| f.stored_bytes).sum()).unwrap_or(0)
}

fn pack(project: &mut Project, all: bool) -> flor::Result<ExitCode> {
    let before = store_size(project);
    let started = Instant::now();
    let r = project.pack_checkpoints(&PackOptions { budget: None, all }, &mut progress_line())?;
    let after = store_size(project);
    println!(
        "looked at {} object(s) in {:.1} s: {} packed ({} -> {}), {} packed already, {} in no format flor knows, {} \
         kept whole",
        r.objects,
        started.elapsed().as_secs_f64(),
        r.packed,
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after),
        r.already_packed,
        r.not_claimed,
        r.kept_whole.len()
    );
    for (digest, why) in &r.kept_whole {
        println!("  kept whole: {digest}: {why}");
    }
    println!("stored the tensors of {} checkpoint(s) ({} tensors)", r.checkpoints, r.tensors);
    println!("object store: {} -> {}", human_bytes(before), human_bytes(after));
    print_notes(&r);
    Ok(ExitCode::SUCCESS)
}

fn ls_table(project: &Project, run: Option<&str>) -> flor::Result<Table> {
    let entries = project.checkpoint_entries(run)?;
    let mut t = Table::with_columns([
        "tstamp",
        "checkpoint",
        "kind",
        "loop",
        "iteration",
        "format",
        "bytes",
        "stored_bytes",
        "stored",
        "packed_as",
        "tensors",
        "digest",
    ]);
    let mut missing = 0;
    for c in entries {
        // A setup load kept by digest only never had an object (flor_core::kept).
        let kept = !c.format.ends_with(NOT_KEPT_SUFFIX);
        missing += usize::from(kept && c.stored == StoredAs::Missing);
        let kind = StoredKind::of_name(&c.name).0.as_str();
        let stored = if kept { c.stored.as_str() } else { "digest-only" };
        let packed_as = match &c.stored {
            StoredAs::Chunked { format, chunks, .. } => Some(Value::from(format!("{format} ({chunks} chunks)"))),
            _ => None,
        };
        t.push_row(vec![
            Some(Value::from(c.tstamp)),
            Some(Value::from(c.name)),
            Some(Value::from(kind)),
            c.iteration.as_ref().map(|(l, _)| Value::from(l.clone())),
            c.iteration.map(|(_, i)| Value::from(i)),
            Some(Value::from(c.format)),
            Some(Value::from(c.bytes)),
            c.stored.stored_bytes().map(Value::from),
            Some(Value::from(stored)),
            packed_as,
            c.tensors.map(|n| Value::from(n as u64)),
            Some(Value::from(c.digest)),
        ]);
    }
    if missing > 0 {
        eprintln!("flor: note: {missing} checkpoint object(s) are not in .flor/objects (a clone without them?)");
    }
    Ok(t)
}

fn inspect_text(info: &ObjectInfo) -> String {
    let mut s = format!("object   {}\n", info.digest);
    match &info.stored {
        StoredAs::Missing => s.push_str("stored   missing (not in .flor/objects)\n"),
        StoredAs::Whole { stored_bytes } => s.push_str(&format!("stored   whole, {}\n", human_bytes(*stored_bytes))),
        StoredAs::Chunked { format, chunks, stored_bytes } => {
            s.push_str(&format!("stored   packed by {format}: {chunks} chunks, {}\n", human_bytes(*stored_bytes)))
        }
        StoredAs::Damaged { what } => s.push_str(&format!("stored   damaged: {what}\n")),
    }
    if let Some(m) = &info.manifest {
        s.push_str(&format!("bytes    {}\n", m.bytes));
        if let Some(p) = &m.plugin {
            s.push_str(&format!("plugin   {} {} ({})\n", p.plugin, p.version, p.digest));
        }
        for (i, c) in m.chunks.iter().enumerate() {
            s.push_str(&format!("chunk {i:>3}  {}  {} bytes\n", c.digest, c.bytes));
        }
    }
    if let Some(ix) = &info.index {
        match (&ix.format, &ix.status) {
            (Some(f), IndexStatus::Indexed) => s.push_str(&format!("format   {f}\n")),
            (Some(f), _) => s.push_str(&format!("format   {f}, which could not describe it\n")),
            (None, _) => s.push_str("format   none of flor's formats claims it\n"),
        }
        if let (None, Some(p)) = (&info.manifest, &ix.plugin) {
            s.push_str(&format!("plugin   {} {} ({})\n", p.plugin, p.version, p.digest));
        }
        if let Some(note) = &ix.note {
            s.push_str(&format!("note     {note}\n"));
        }
    }
    for c in &info.checkpoints {
        let at = c.iteration.as_ref().map(|(l, i)| format!(", {l} {i}")).unwrap_or_default();
        s.push_str(&format!("used by  run {}, checkpoint `{}`{at} ({})\n", c.tstamp, c.name, c.format));
    }
    s
}

fn tensors_table(info: &ObjectInfo) -> Table {
    let mut t = Table::with_columns([
        "tensor",
        "dtype",
        "shape",
        "bytes",
        "chunk",
        "l2",
        "mean",
        "std",
        "min",
        "max",
        "nonfinite",
    ]);
    let Some(ix) = &info.index else { return t };
    for x in &ix.tensors {
        let shape = format!("[{}]", x.shape.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
        let st = x.stats;
        t.push_row(vec![
            Some(Value::from(x.name.clone())),
            Some(Value::from(x.dtype.clone())),
            Some(Value::from(shape)),
            Some(Value::from(x.bytes)),
            x.chunk.as_ref().map(|c| Value::from(c[..12].to_owned())),
            st.map(|s| Value::Float(s.l2)),
            st.and_then(|s| s.mean).map(Value::Float),
            st.and_then(|s| s.std).map(Value::Float),
            st.and_then(|s| s.min).map(Value::Float),
            st.and_then(|s| s.max).map(Value::Float),
            st.map(|s| Value::from(s.nonfinite)),
        ]);
    }
    t
}

fn verify(project: &Project) -> flor::Result<ExitCode> {
    let terminal = io::stderr().is_terminal();
    let report = project.verify_objects(&mut |done, total| {
        if terminal {
            eprint!("\rflor: verifying objects: {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
    })?;
    let (mut damaged, mut missing) = (0, 0);
    for p in &report.problems {
        match p {
            VerifyProblem::Damaged { digest, what } => {
                damaged += 1;
                println!("damaged  {digest}: {what}");
            }
            VerifyProblem::Missing { digest, named_by } => {
                missing += 1;
                println!("missing  {digest}: named by {}", named_by.join("; "));
            }
        }
    }
    println!(
        "checked {} object(s), {}: {damaged} damaged, {missing} missing",
        report.objects,
        human_bytes(report.bytes)
    );
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DAMAGED) })
}
