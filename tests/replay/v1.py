import random

import flordb as flor

seed = flor.arg("seed", 0)
lr = flor.arg("lr", 0.1)
epochs = flor.arg("epochs", 3)
random.seed(seed)
data = [(random.random(), random.random()) for _ in range(6)]
params = {"w": 0.0, "b": 0.0}

with flor.checkpointing(params=params, data=data):
    for epoch in flor.loop("epoch", range(epochs)):
        random.shuffle(data)
        for x, y in flor.loop("step", data):
            pred = params["w"] * x + params["b"]
            err = pred - y + random.gauss(0, 0.01)
            params["w"] -= lr * err * x
            params["b"] -= lr * err
            flor.log("loss", err * err)
        flor.log("w", params["w"])
