import random

import flordb as flor

seed = flor.arg("seed", 0)
random.seed(seed)
data = [random.random() for _ in range(4)]

for epoch in flor.loop("epoch", range(2)):
    for x in flor.loop("step", data):
        flor.log("loss", x * 2)
