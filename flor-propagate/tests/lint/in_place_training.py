"""The shape of flor's demo: seeded global randomness, state changed in
place, a helper that updates its arguments. Nothing to report."""
import random

import flordb as flor


def train_step(state, x, y, lr):
    pred = state["w"] * x + state["b"]
    err = pred - y + random.gauss(0, 0.01)
    state["w"] -= lr * err * x
    state["b"] -= lr * err
    return err


seed = flor.arg("seed", 0)
lr = flor.arg("lr", 0.05)
random.seed(seed)
data = [(random.random(), random.random()) for _ in range(6)]
state = {"w": 0.0, "b": 0.0}
params = [0.0] * 8

with flor.checkpointing(state=state, data=data, params=params):
    for epoch in flor.loop("epoch", range(4)):
        random.shuffle(data)
        for x, y in flor.loop("step", data):
            err = train_step(state, x, y, lr)
            flor.log("loss", err * err)
        for j in range(len(params)):
            params[j] -= lr * params[j]
        total = 0.0
        for x, y in flor.loop("eval", data[:3]):
            total += (state["w"] * x + state["b"] - y) ** 2
        flor.log("eval", total)
