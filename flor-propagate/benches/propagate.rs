//! Propagation time per file: one `flor.log` carried from a generated
//! training script of about 500 and 3,000 lines into an older version of it
//! (renamed variables, removed and added lines).

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flor_propagate::{python, LanguagePropagator, Outcome};

/// A training script of about `lines` lines: many stage functions, each
/// with a PyTorch-style loop. The newest version (`new = true`) logs the
/// gradient norm in the middle stage; in the old one the optimizer is
/// called `opt` throughout, every fifth stage lacks its print and every
/// seventh has a comment in its loop.
fn script(lines: usize, new: bool) -> String {
    let mut s = String::from(
        "import flordb as flor\nimport torch\nimport torch.nn as nn\nfrom torch.utils.data import DataLoader\n\nfrom data import load_dataset\nfrom model import Net\n\n",
    );
    // About 18.5 lines per stage, its call included.
    let stages = lines * 10 / 185;
    for i in 0..stages {
        let opt = if new { "optimizer" } else { "opt" };
        let _ = write!(
            s,
            "\ndef stage_{i}(model, loader, {opt}, epochs={e}):\n    criterion = nn.CrossEntropyLoss()\n    total = 0.0\n    for epoch in flor.loop(\"epoch_{i}\", range(epochs)):\n        model.train()\n        for x, y in loader:\n            {opt}.zero_grad()\n            out = model(x) * {scale}\n            loss = criterion(out, y)\n            loss.backward()\n",
            e = 3 + i % 7,
            scale = 1.0 + i as f64 / 1000.0
        );
        if new && i == stages / 2 {
            let _ = writeln!(
                s,
                "            flor.log(\"grad_norm\", torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())"
            );
        }
        if !new && i % 7 == 0 {
            s.push_str("            # step\n");
        }
        let _ = write!(s, "            {opt}.step()\n            total += loss.item()\n");
        if new || i % 5 != 0 {
            let _ = writeln!(s, "        print(\"stage {i} epoch\", epoch, total / (epoch + 1))");
        }
        let _ = writeln!(s, "        flor.log(\"total_{i}\", total)\n    return total\n");
    }
    s.push_str("\nif __name__ == \"__main__\":\n    model = Net(128)\n    loader = DataLoader(load_dataset()[0], batch_size=32)\n");
    for i in 0..stages {
        let _ = writeln!(s, "    stage_{i}(model, loader, torch.optim.SGD(model.parameters(), lr=0.01))");
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("propagate");
    for lines in [500, 3000] {
        let (new, old) = (script(lines, true), script(lines, false));
        let at = python().log_statement_lines(&new, &["grad_norm"]).expect("parses");
        let p = python().propagate(&new, &at, &old).expect("propagates");
        let Outcome::Placed { line, .. } = p.outcomes[0] else { panic!("{:?}", p.outcomes) };
        assert_eq!(p.source.lines().nth(line - 2).map(str::trim), Some("loss.backward()"));
        let name = format!("{}_lines", new.lines().count());
        // For scripts/propagate_vs_flordb.py --timing-only: the same pair as files.
        if let Some(dir) = std::env::var_os("FLOR_PROPAGATE_BENCH_DUMP") {
            let case = std::path::Path::new(&dir).join(format!("generated-{name}"));
            std::fs::create_dir_all(&case).expect("dump folder");
            std::fs::write(case.join("new.py"), &new).expect("write");
            std::fs::write(case.join("old.py"), &old).expect("write");
            let spec = format!(
                "{{\"description\": \"bench pair\", \"lines\": [{}], \"expect\": [{{\"outcome\": \"placed\"}}]}}\n",
                at[0]
            );
            std::fs::write(case.join("spec.json"), spec).expect("write");
            std::fs::write(case.join("expected.py"), &p.source).expect("write");
        }
        group.bench_function(&name, |b| b.iter(|| python().propagate(black_box(&new), &at, black_box(&old))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
