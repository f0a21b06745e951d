import random

import flordb as flor

random.seed(0)
data = [(random.random(), random.random()) for _ in range(5)]
params = {"w": 0.0, "b": 0.0}
velocity = {"w": 0.0}  # momentum: state the loop changes, NOT checkpointed

with flor.checkpointing(params=params):
    for epoch in flor.loop("epoch", range(3)):
        for x, y in flor.loop("step", data):
            err = params["w"] * x + params["b"] - y
            velocity["w"] = 0.9 * velocity["w"] + err * x
            params["w"] -= 0.1 * velocity["w"]
            params["b"] -= 0.1 * err
            flor.log("loss", err * err)
        flor.log("speed", velocity["w"])
