"""One large checkpoint through `flor.checkpointing`, for the pack
throughput figure in scripts/bench_plugins.sh.

BENCH_FORMAT=pytree (default): a dict of numpy arrays with jax imported, so
the Python front stores it as `flor.pytree` (the JAX plugin lays it out).
BENCH_FORMAT=torch: an object with `state_dict`, stored with `torch.save`
(the benchmark's stand-in torch, scripts/bench_plugins/torch_stub, writes
torch.save's bytes; the pytorch plugin lays them out).

BENCH_LAYERS layers (default 24) of a 1024x1024 f32 weight and a 1024 f32
bias: 24 layers make 100.76 MB. The values are weights-like noise (uniform
in +-0.05), which zstd level 3 compresses by about 8 %. One epoch: one
checkpoint (and the small `__rng__` object the front adds).
"""

import collections
import os

import numpy as np

FORMAT = os.environ.get("BENCH_FORMAT", "pytree")
if FORMAT == "pytree":
    import jax  # noqa: F401  (the front writes flor.pytree only when jax is imported)
elif FORMAT == "torch":
    import torch  # noqa: F401  (the stand-in)
else:
    raise SystemExit(f"BENCH_FORMAT must be pytree or torch, not {FORMAT!r}")

import flordb as flor

layers = int(os.environ.get("BENCH_LAYERS", "24"))
width = 1024
rng = np.random.default_rng(0)


def weights(*shape):
    return rng.uniform(-0.05, 0.05, size=shape).astype(np.float32)


params = collections.OrderedDict()
for i in range(layers):
    params[f"layer{i}.weight"] = weights(width, width)
    params[f"layer{i}.bias"] = weights(width)


class Model:
    """What the front saves with torch.save: its state_dict."""

    def state_dict(self):
        return params


state = params if FORMAT == "pytree" else Model()
with flor.checkpointing(model=state):
    for epoch in flor.loop("epoch", range(1)):
        flor.log("bytes", sum(a.nbytes for a in params.values()))
