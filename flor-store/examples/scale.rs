//! Measures the SQLite backend at the target scale: RUNS (default 1,000) runs
//! × epoch(10) × step(100), one `loss` per step (1,000,000 value rows and
//! 1,010,000 loop contexts, stored as 20,000 spans), then
//! `dataframe(["loss"])`, its primitives, and SQL over the views.
//!
//! `cargo run -p flor-store --release --example scale [RUNS]`
//!
//! With `FLOR_SCALE_DIR=DIR` the database is kept in DIR and reused by later
//! runs (to profile the queries alone).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use flor_core::store::{FileProgress, IngestBatch, Store, ValueFilter};
use flor_core::{LoopCtx, Record, RecordKind, RunMeta, RunStatus, Source, Value};
use flor_store::SqliteStore;

type Batch = (RunMeta, Vec<LoopCtx>, Vec<Record>);

fn batches(runs: usize) -> Vec<Batch> {
    let (epoch, step, loss): (Arc<str>, Arc<str>, Arc<str>) = ("epoch".into(), "step".into(), "loss".into());
    (0..runs)
        .map(|r| {
            let meta = RunMeta {
                status: RunStatus::Finished,
                ..RunMeta::new("p", format!("2026-01-01T00:00:00.{r:06}"), "train.py")
            };
            let (mut loops, mut records, mut line, mut ctx) = (Vec::new(), Vec::new(), 1u64, 0u32);
            for e in 0..10u64 {
                let ec = ctx;
                ctx += 1;
                line += 1;
                loops.push(LoopCtx { ctx: ec, parent: None, name: epoch.clone(), iteration: e, value: None });
                for st in 0..100u64 {
                    let sc = ctx;
                    ctx += 1;
                    line += 1;
                    loops.push(LoopCtx { ctx: sc, parent: Some(ec), name: step.clone(), iteration: st, value: None });
                    line += 1;
                    let value = Value::Float((r as u64 * 1000 + e * 100 + st) as f64 / 7.0);
                    records.push(Record { line, ctx: Some(sc), kind: RecordKind::Log, name: loss.clone(), value });
                }
            }
            (meta, loops, records)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let keep = std::env::var_os("FLOR_SCALE_DIR").map(PathBuf::from);
    let dir =
        keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("flor-store-scale-{}", std::process::id())));
    let path = dir.join("flor.db");
    let reuse = keep.is_some() && path.exists();
    let mut s = SqliteStore::open(&path)?;
    if !reuse {
        let batches = batches(runs);
        let total: usize = batches.iter().map(|b| b.2.len()).sum();
        let t0 = Instant::now();
        for (r, (meta, loops, records)) in batches.iter().enumerate() {
            let file = format!("run{r}");
            s.ingest(&IngestBatch {
                run: meta,
                source: Source::Forward,
                file: &file,
                progress: FileProgress { offset: 1, lines: 1 },
                loops,
                records,
                checkpoints: &[],
                checks: &[],
            })?;
        }
        let dt = t0.elapsed().as_secs_f64();
        let loops: usize = batches.iter().map(|b| b.1.len()).sum();
        println!(
            "ingest: {total} records (+ {loops} loop iterations) in {dt:.2} s = {:.0} records/s",
            total as f64 / dt
        );
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let bytes = size(path.clone()) + size(dir.join("flor.db-wal"));
        println!("database size: {:.1} MiB", bytes as f64 / 1048576.0);
    }

    for _ in 0..3 {
        let t = Instant::now();
        let keys: Vec<i64> = s.runs()?.iter().map(|r| r.key).collect();
        let t_runs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut n = 0usize;
        s.scan_values(ValueFilter::Names(&["loss"]), &mut |_| n += 1)?;
        let t_values = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (mut m, mut iterations) = (0usize, 0u64);
        s.scan_loops(&keys, &mut |_, span| {
            m += 1;
            iterations += u64::from(span.count);
        })?;
        let t_loops = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let df = s.dataframe(&["loss"])?;
        let t_df = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let generic = flor_core::pivot::dataframe(&s, &["loss"])?;
        let t_generic = t.elapsed().as_secs_f64();
        assert_eq!(df.row_count(), generic.row_count());
        println!(
            "runs() {t_runs:.3} s | scan_values {n} rows {t_values:.3} s | scan_loops {m} spans ({iterations} \
             iterations) {t_loops:.3} s | \
             dataframe([loss]) {} rows {t_df:.3} s (shared pivot {t_generic:.3} s)",
            df.row_count()
        );
    }
    let t = Instant::now();
    let names = s.names()?;
    println!("names(): {} names in {:.3} s", names.len(), t.elapsed().as_secs_f64());
    for sql in [
        "SELECT count(*), avg(value) FROM logs WHERE value_name = 'loss'",
        "SELECT tstamp, max(value) FROM logs WHERE value_name = 'loss' GROUP BY tstamp ORDER BY 2 DESC LIMIT 3",
        "SELECT count(*) FROM loops WHERE loop_name = 'epoch'",
        "SELECT count(*) FROM loops WHERE parent_ctx_id = 0",
        "SELECT count(*) FROM loops",
        "SELECT * FROM loops",
        "SELECT * FROM loops WHERE tstamp = '2026-01-01T00:00:00.000500'",
        "SELECT tstamp, count(*) FROM loops GROUP BY tstamp",
        "SELECT l.loop_iteration, g.value FROM logs g JOIN loops l ON l.tstamp = g.tstamp AND l.ctx_id = g.ctx_id \
         WHERE g.tstamp = '2026-01-01T00:00:00.000500' AND g.value_name = 'loss'",
        "SELECT count(*) FROM logs g JOIN loops l ON l.tstamp = g.tstamp AND l.ctx_id = g.ctx_id \
         WHERE g.value_name = 'loss'",
        "SELECT count(*) FROM loops s JOIN loops e ON e.tstamp = s.tstamp AND e.ctx_id = s.parent_ctx_id",
    ] {
        let t = Instant::now();
        let rows = s.query(sql)?.row_count();
        println!("query {sql:?}: {rows} rows in {:.3} s", t.elapsed().as_secs_f64());
    }
    drop(s);
    if keep.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
