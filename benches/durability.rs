//! The cost of `durability = "os"` per outer iteration, against the default
//! `"process"`, measured in the same invocation.
//!
//! One outer iteration is what a training epoch asks of flor: 100 inner
//! steps with one logged float each (about 10 KB of records), written to
//! the record file when the iteration ends — with `os`, then fsynced — and,
//! in the `ckpt_1MiB` cases, a 1 MiB checkpoint that changes every
//! iteration (bincode, zstd; with `os`, fsynced with its folder before its
//! rename).
//!
//! The runs record into a folder under Cargo's target directory, on the
//! machine's real disk: on tmpfs an fsync costs nothing and the comparison
//! would say nothing.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flor::Durability;

const STEPS: u64 = 100;
const CKPT_FLOATS: usize = 1 << 18; // 1 MiB of f32

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the target's disk");
    let ok = Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "git init failed");
    dir
}

/// Times `iters` outer iterations of a fresh run (started and discarded
/// outside the timing).
fn epochs(dir: &Path, durability: Durability, iters: u64, ckpt: bool) -> Duration {
    let run = flor::Run::builder()
        .dir(dir)
        .argv(["bench"])
        .filename("bench.rs")
        .durability(durability)
        .start()
        .expect("start run");
    // Noise, so that the checkpoint does not compress away.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut state: Vec<f32> = (0..CKPT_FLOATS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32
        })
        .collect();
    let t = Instant::now();
    for epoch in run.loop_over("epoch", 0..iters) {
        for step in run.loop_over("step", 0..STEPS) {
            black_box(run.log("loss", black_box((epoch * STEPS + step) as f64 * 1e-3)));
        }
        if ckpt {
            state[(epoch as usize) % CKPT_FLOATS] += 1.0; // a new object every epoch
            run.checkpoint("state", &state).expect("checkpoint");
        }
    }
    let elapsed = t.elapsed();
    run.discard().expect("discard run");
    elapsed
}

fn bench_durability(c: &mut Criterion) {
    let dir = scratch();
    let mut g = c.benchmark_group("outer_iteration");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for (label, ckpt) in [("records", false), ("ckpt_1MiB", true)] {
        for durability in Durability::ALL {
            g.bench_function(format!("{durability}/{label}"), |b| {
                b.iter_custom(|iters| epochs(dir.path(), durability, iters, ckpt))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_durability);
criterion_main!(benches);
