"""numpy generators made before the loop: checkpointed, made per
iteration, used only in setup, or drawn from in the loop (directly or
through a function)."""
import numpy as np
from numpy.random import RandomState

import flordb as flor

seed = flor.arg("seed", 0)
rng = np.random.default_rng(seed)  # expect: flor::uncheckpointed-generator
kept = np.random.default_rng(seed + 1)
setup_only = np.random.default_rng(seed + 2)
noise = RandomState(seed + 3)  # expect: flor::uncheckpointed-generator
data = setup_only.normal(size=(100, 4))
w = np.zeros(4)


def augment(x):
    return x + noise.normal(scale=0.01, size=x.shape)


with flor.checkpointing(w=w, rng_state=kept):
    for epoch in flor.loop("epoch", range(10)):
        order = rng.permutation(len(data))
        jitter = kept.normal()
        fresh = np.random.default_rng([seed, epoch])
        for i in flor.loop("step", order[:10]):
            x = augment(data[i])
            w -= 0.01 * (x + fresh.normal())
        flor.log("w0", float(w[0]))
