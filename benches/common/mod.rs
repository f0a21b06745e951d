//! Synthetic record files shared by the benches.

use flor_core::record::{parse_lines, LineEncoder, Parsed};
use flor_core::store::{FileProgress, IngestBatch};
use flor_core::Store;
use flor_core::{RecordKind, RunMeta, RunStatus, Source, Value};

/// A finished run's record file: `epochs` × `steps` iterations, one `loss`
/// per step, an `arg` and an epoch-level value.
pub(crate) fn record_file(run: usize, epochs: usize, steps: usize) -> (RunMeta, Vec<u8>) {
    let meta = RunMeta {
        status: RunStatus::Finished,
        ..RunMeta::new("bench", flor_core::time::iso_from_micros(1_800_000_000_000_000 + run as i64), "train.py")
    };
    let mut e = LineEncoder::new();
    e.header(&meta, Source::Forward);
    e.record(RecordKind::Arg, None, "lr", &Value::Float(0.01 * run as f64));
    let mut ctx = 0u32;
    for ep in 0..epochs {
        let ectx = ctx;
        ctx += 1;
        e.iter(ectx, None, "epoch", ep as u64, None);
        for st in 0..steps {
            e.iter(ctx, Some(ectx), "step", st as u64, None);
            e.record(RecordKind::Log, Some(ctx), "loss", &Value::Float(1.0 / (1.0 + (ep * steps + st) as f64)));
            ctx += 1;
        }
        e.record(RecordKind::Log, Some(ectx), "acc", &Value::Float(ep as f64 / epochs as f64));
    }
    (meta, e.buf)
}

/// Parses a whole record file and ingests it as one batch under `label`.
pub(crate) fn ingest(store: &mut dyn Store, label: &str, bytes: &[u8]) {
    ingest_parsed(store, label, &parse_lines(bytes, 1));
}

/// Ingests a parsed record file as one batch under `label`.
pub(crate) fn ingest_parsed(store: &mut dyn Store, label: &str, p: &Parsed) {
    let (meta, source) = p.header.clone().expect("header");
    store
        .ingest(&IngestBatch {
            run: &meta,
            source,
            file: label,
            progress: FileProgress { offset: p.consumed as u64, lines: p.lines },
            loops: &p.loops,
            records: &p.records,
            checkpoints: &p.checkpoints,
            checks: &[],
        })
        .expect("ingest");
}

/// Ingests parsed files as `0.jsonl`, `1.jsonl`, ..., one batch each, in
/// one ingestion group when `grouped` (as `flor`'s sync does).
#[allow(dead_code)] // not every bench that includes this module uses it
pub(crate) fn ingest_files(store: &mut dyn Store, parsed: &[Parsed], grouped: bool) {
    if grouped {
        store.begin_group().expect("begin a group");
    }
    for (i, p) in parsed.iter().enumerate() {
        ingest_parsed(store, &format!("{i}.jsonl"), p);
    }
    if grouped {
        store.end_group(true).expect("end a group");
    }
}

/// This process's peak resident memory (VmHWM) in MiB; NaN where unknown.
#[allow(dead_code)] // not every bench that includes this module uses it
pub(crate) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
