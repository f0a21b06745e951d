import flordb as flor
import jax
import jax.numpy as jnp
import optax

from data import batches
from model import init_params, loss_fn

params = init_params(jax.random.PRNGKey(0))
tx = optax.sgd(flor.arg("lr", 1e-2))
opt_state = tx.init(params)
for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
    it = iter(batches(128))
    while True:
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        flor.log("grad_norm", float(optax.global_norm(grads)))
        flor.log("loss", float(loss))
