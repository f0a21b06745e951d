"""A small training script (pure Python): mini-batch SGD of a linear model.

Version 1 of the demo's script. `flor.arg` declares hyper-parameters,
`flor.loop` the epoch and step loops, `flor.log` what to record, and
`flor.checkpointing` what to checkpoint at the end of every epoch.
"""
import random

import flordb as flor

lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 5)
seed = flor.arg("seed", 0)

random.seed(seed)
true_w = [random.uniform(-1, 1) for _ in range(8)]
data = []
for _ in range(64):
    x = [random.gauss(0, 1) for _ in range(8)]
    data.append((x, sum(a * b for a, b in zip(true_w, x)) + random.gauss(0, 0.1)))
weights = [0.0] * 8

with flor.checkpointing(weights=weights, data=data):
    for epoch in flor.loop("epoch", range(epochs)):
        random.shuffle(data)
        total = 0.0
        for i in flor.loop("step", range(0, len(data), 8)):
            batch = data[i : i + 8]
            grad = [0.0] * 8
            for x, y in batch:
                err = sum(w * xi for w, xi in zip(weights, x)) - y
                total += err * err
                for j in range(8):
                    grad[j] += 2 * err * x[j] / len(batch)
            for j in range(8):
                weights[j] -= lr * grad[j]
            flor.log("loss", total / (i + len(batch)))
        flor.log("epoch_loss", total / len(data))
