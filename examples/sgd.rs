//! Linear regression by stochastic gradient descent, in plain Rust, recorded
//! with flor: hyper-parameters through `arg`, nested `epoch`/`step` loops,
//! logged losses and weights, and a checkpoint of the model (and its random
//! number generator) at the end of every epoch.
//!
//! Run it inside a git repository:
//!
//! ```text
//! cargo run --release --example sgd -- --kwargs lr=0.05 epochs=5
//! flor dataframe epoch_loss w b
//! ```

use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything needed to resume training: parameters and the RNG state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Model {
    w: f64,
    b: f64,
    rng: u64,
}

/// xorshift64*: small, deterministic, good enough for shuffling.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn uniform(state: &mut u64) -> f64 {
    (next(state) >> 11) as f64 / (1u64 << 53) as f64
}

fn main() -> ExitCode {
    match train() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sgd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn train() -> flor::Result<()> {
    let run = flor::Run::builder().filename("sgd.rs").start()?;
    let lr: f64 = run.arg("lr", 0.05)?;
    let epochs: usize = run.arg("epochs", 5)?;
    let batch: usize = run.arg("batch_size", 32)?;
    let samples: usize = run.arg("samples", 1024)?;
    let seed: u64 = run.arg("seed", 7)?;
    // Only for tests that need a run to be slow (e.g. to kill it mid-epoch).
    let pause_ms: u64 = run.arg("pause_ms", 0)?;

    // Synthetic data: y = 3x - 1 + noise.
    let mut rng = seed.max(1);
    let data: Vec<(f64, f64)> = (0..samples)
        .map(|_| {
            let x = uniform(&mut rng) * 2.0 - 1.0;
            (x, 3.0 * x - 1.0 + (uniform(&mut rng) - 0.5) * 0.2)
        })
        .collect();
    let steps = samples.div_ceil(batch.max(1));

    let mut model = Model { w: 0.0, b: 0.0, rng };
    run.checkpointed_loop("epoch", 0..epochs, "model", &mut model, |m, _epoch| {
        let mut total = 0.0;
        for _step in run.loop_over("step", 0..steps) {
            let (mut gw, mut gb, mut loss) = (0.0, 0.0, 0.0);
            for _ in 0..batch {
                let (x, y) = data[(next(&mut m.rng) % samples as u64) as usize];
                let err = m.w * x + m.b - y;
                gw += 2.0 * err * x;
                gb += 2.0 * err;
                loss += err * err;
            }
            let n = batch as f64;
            m.w -= lr * gw / n;
            m.b -= lr * gb / n;
            total += run.log("loss", loss / n);
            if pause_ms > 0 {
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
        }
        run.log("epoch_loss", total / steps as f64);
        run.log("w", m.w);
        run.log("b", m.b);
        Ok(())
    })?;
    let summary = run.finish()?;
    println!("sgd: run {} finished: w={:.4} b={:.4}", summary.meta.tstamp, model.w, model.b);
    Ok(())
}
