"""A small training script (pure Python): mini-batch SGD of a linear model.

The newest version (version 3 with one more statement, not committed in the demo) of the demo's script. `flor.arg` declares hyper-parameters,
`flor.loop` the epoch and step loops, `flor.log` what to record, and
`flor.checkpointing` what to checkpoint at the end of every epoch.
"""
import random

import flordb as flor

lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 5)
seed = flor.arg("seed", 0)

def sgd_step(params, batch, lr):
    """One step on `batch`; returns the summed squared error."""
    grad = [0.0] * len(params)
    sq = 0.0
    for x, y in batch:
        err = sum(w * xi for w, xi in zip(params, x)) - y
        sq += err * err
        for j in range(len(params)):
            grad[j] += 2 * err * x[j] / len(batch)
    for j in range(len(params)):
        params[j] -= lr * grad[j]
    return sq, grad


random.seed(seed)
true_w = [random.uniform(-1, 1) for _ in range(8)]
data = []
for _ in range(64):
    x = [random.gauss(0, 1) for _ in range(8)]
    data.append((x, sum(a * b for a, b in zip(true_w, x)) + random.gauss(0, 0.1)))
params = [0.0] * 8

with flor.checkpointing(params=params, data=data):
    for epoch in flor.loop("epoch", range(epochs)):
        random.shuffle(data)
        total = 0.0
        for i in flor.loop("step", range(0, len(data), 8)):
            batch = data[i : i + 8]
            sq, grad = sgd_step(params, batch, lr)
            total += sq
            flor.log("loss", total / (i + len(batch)))
            flor.log("grad_norm", sum(g * g for g in grad) ** 0.5)
        flor.log("epoch_loss", total / len(data))
