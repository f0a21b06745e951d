//! The cost of `log` as a training loop feels it, amortized: encoding the
//! record, the lock on the run handle, and the writes to the record file
//! (every outer iteration and every 1 MiB).

use std::process::Command;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flor_core::args::Kwargs;
use flor_core::{Recorder, RunMeta, RunStatus, Value};

fn bench_log(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "git init failed");
    let run = flor::Run::builder().dir(dir.path()).argv(["bench"]).filename("bench.rs").start().expect("start run");

    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(1));
    let mut outer = run.loop_over("epoch", 0..u64::MAX);
    outer.next();
    {
        let mut x = 0.0f64;
        g.bench_function("run_log_f64", |b| {
            b.iter(|| {
                x += 1.0;
                run.log("loss", black_box(x))
            })
        });
    }
    g.bench_function("run_log_int", |b| b.iter(|| run.log("step", black_box(7i64))));
    g.bench_function("iteration_with_one_log", |b| {
        let mut steps = run.loop_over("step", 0..u64::MAX);
        b.iter(|| {
            black_box(steps.next());
            run.log("loss", black_box(0.5))
        })
    });
    drop(outer);
    g.finish();
    run.finish().expect("finish");

    // The engine alone (no handle lock), for reference.
    let path = dir.path().join("engine.jsonl");
    let meta = RunMeta {
        projid: "b".into(),
        tstamp: flor_core::time::now_iso(),
        filename: "b".into(),
        argv: vec![],
        interpreter: String::new(),
        host: String::new(),
        pid: 0,
        commit: None,
        status: RunStatus::Running,
        ended: None,
    };
    let mut rec = Recorder::create(&path, meta, Kwargs::default(), None).expect("recorder");
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let v = Value::Float(0.25);
    g.bench_function("recorder_log_f64", |b| b.iter(|| rec.log(black_box("loss"), black_box(&v))));
    g.finish();
}

criterion_group!(benches, bench_log);
criterion_main!(benches);
