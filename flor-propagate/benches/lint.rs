//! Source-check time per script ([`LanguagePropagator::lint`], what a
//! starting run pays once per script version and `flor lint` per file): a
//! generated training script of about 300 and 3,000 lines (stage functions
//! with checkpointed flor loops, module-level generators drawn from through
//! helpers), and a wide one with many generators and many functions (the
//! shape that makes the generator check do the most work).

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flor_propagate::{python, LanguagePropagator};

/// About `lines` lines: per stage a generator, a helper drawing from it and
/// a function with a checkpointed loop that rebinds its weights.
fn script(lines: usize) -> String {
    let mut s = String::from("import numpy as np\nimport flordb as flor\n\nnp.random.seed(0)\n");
    // About 17 lines per stage.
    for i in 0..lines / 17 {
        let _ = write!(
            s,
            "\nrng_{i} = np.random.default_rng({i})\n\n\ndef noise_{i}(x):\n    return x + rng_{i}.normal(size=x.shape)\n\n\ndef stage_{i}(w, data, lr=0.1):\n    with flor.checkpointing(w=w):\n        for epoch in flor.loop(\"epoch_{i}\", range(3)):\n            for x in flor.loop(\"step_{i}\", data):\n                g = noise_{i}(x) * w\n                w = w - lr * g\n                flor.log(\"g_{i}\", float(g.sum()))\n    return w\n"
        );
    }
    s
}

/// `generators` module-level generators, `functions` helpers each drawing
/// from one, and one checkpointed loop calling every helper.
fn wide(generators: usize, functions: usize) -> String {
    let mut s = String::from("import random\nimport flordb as flor\n\n");
    for g in 0..generators {
        let _ = writeln!(s, "r{g} = random.Random({g})");
    }
    for f in 0..functions {
        let _ = writeln!(s, "\ndef f{f}():\n    return r{}.random()\n", f % generators);
    }
    s.push_str("\nstate = {}\nwith flor.checkpointing(state=state):\n    for e in flor.loop(\"epoch\", range(3)):\n");
    for f in 0..functions {
        let _ = writeln!(s, "        state[{f}] = f{f}()");
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lint");
    for lines in [300, 3000] {
        let s = script(lines);
        let stages = lines / 17;
        let found = python().lint(&s).expect("parses");
        // Per stage: the rebound `w` and the generator drawn through its helper.
        assert_eq!(found.len(), 2 * stages, "{found:?}");
        group.bench_function(format!("{}_lines", s.lines().count()), |b| b.iter(|| python().lint(black_box(&s))));
    }
    let s = wide(200, 400);
    assert_eq!(python().lint(&s).expect("parses").len(), 200);
    group.bench_function(format!("wide_200_generators_400_functions_{}_lines", s.lines().count()), |b| {
        b.iter(|| python().lint(black_box(&s)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
