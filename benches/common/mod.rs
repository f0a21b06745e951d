//! Synthetic record files shared by the benches.

use flor_core::record::{parse_lines, LineEncoder};
use flor_core::store::{FileProgress, IngestBatch};
use flor_core::Store;
use flor_core::{RecordKind, RunMeta, RunStatus, Source, Value};

/// A finished run's record file: `epochs` × `steps` iterations, one `loss`
/// per step, an `arg` and an epoch-level value.
pub fn record_file(run: usize, epochs: usize, steps: usize) -> (RunMeta, Vec<u8>) {
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
pub fn ingest(store: &mut dyn Store, label: &str, bytes: &[u8]) {
    let p = parse_lines(bytes, 1);
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
        })
        .expect("ingest");
}
