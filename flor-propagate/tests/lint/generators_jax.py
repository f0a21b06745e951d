"""jax keys: carried through the loop by split-and-rebind (replay starts
again from the first key), or derived from the loop position (fine)."""
import jax
import jax.numpy as jnp
from jax import random as jr

import flordb as flor

key = jax.random.PRNGKey(0)
base = jr.key(1)
params = {"w": jnp.zeros(4)}

with flor.checkpointing(params=params):
    for epoch in flor.loop("epoch", range(3)):
        key, sub = jax.random.split(key)  # expect: flor::uncheckpointed-generator
        k = jr.fold_in(base, epoch)
        noise = jr.normal(k, (4,)) + jr.normal(sub, (4,))
        params["w"] = params["w"] - 0.1 * noise
        flor.log("w0", float(params["w"][0]))
