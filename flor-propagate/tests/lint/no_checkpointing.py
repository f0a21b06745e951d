"""Without flor.checkpointing, replay runs every iteration from the start:
a seeded generator draws the same numbers again, so it needs no checkpoint.
A generator without a seed still differs on every run."""
import numpy as np

import flordb as flor

rng = np.random.default_rng(42)
other = np.random.default_rng()  # expect: flor::unseeded-randomness
w = np.zeros(3)

for epoch in flor.loop("epoch", range(4)):
    w += rng.normal(size=3) + other.normal(size=3)
    flor.log("w0", float(w[0]))
