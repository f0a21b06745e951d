//! The cost of `log` as a training loop feels it, amortized: encoding the
//! record, the lock on the run handle, and the writes to the record file
//! (every outer iteration and every 1 MiB).
//!
//! Each sample records into a fresh run (started and discarded outside the
//! timing) whose record file lives on tmpfs when the machine has one: at
//! millions of calls per second, a file on disk would measure the disk's
//! write bandwidth (≈45 bytes per record) rather than the call.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flor_core::args::Kwargs;
use flor_core::{Recorder, RunMeta, Value};

fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    let ok = Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "git init failed");
    dir
}

/// Times `iters` calls of `body` inside the outer loop of a fresh run.
fn in_fresh_run(dir: &Path, iters: u64, mut body: impl FnMut(&flor::Run, u64)) -> Duration {
    let run = flor::Run::builder().dir(dir).argv(["bench"]).filename("bench.rs").start().expect("start run");
    let mut outer = run.loop_over("epoch", 0..1);
    outer.next();
    let t = Instant::now();
    for i in 0..iters {
        body(&run, i);
    }
    let elapsed = t.elapsed();
    drop(outer);
    run.discard().expect("discard run");
    elapsed
}

fn bench_log(c: &mut Criterion) {
    let dir = scratch();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(1));
    g.bench_function("run_log_f64", |b| {
        b.iter_custom(|iters| {
            in_fresh_run(dir.path(), iters, |run, i| {
                black_box(run.log("loss", black_box(i as f64 * 0.001)));
            })
        })
    });
    g.bench_function("run_log_int", |b| {
        b.iter_custom(|iters| {
            in_fresh_run(dir.path(), iters, |run, i| {
                black_box(run.log("step", black_box(i as i64)));
            })
        })
    });
    g.bench_function("step_iteration_with_one_log", |b| {
        b.iter_custom(|iters| {
            let run = flor::Run::builder().dir(dir.path()).argv(["bench"]).start().expect("start run");
            let mut outer = run.loop_over("epoch", 0..1);
            outer.next();
            let t = Instant::now();
            for _ in run.loop_over("step", 0..iters) {
                run.log("loss", black_box(0.5));
            }
            let elapsed = t.elapsed();
            drop(outer);
            run.discard().expect("discard run");
            elapsed
        })
    });
    g.finish();

    // The engine alone (no handle lock), for reference.
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.bench_function("recorder_log_f64", |b| {
        b.iter_custom(|iters| {
            let path = dir.path().join("engine.jsonl");
            let _ = std::fs::remove_file(&path);
            let meta = RunMeta::new("b", flor_core::time::now_iso(), "b");
            let mut rec = Recorder::create(&path, meta, Kwargs::default(), None).expect("recorder");
            let t = Instant::now();
            for i in 0..iters {
                rec.log(black_box("loss"), &Value::Float(black_box(i as f64 * 0.001)));
            }
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_log);
criterion_main!(benches);
