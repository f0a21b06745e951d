"""examples/jax_finetune.py adapted for the `flordb` package (FlorDB
4.0.1 from PyPI), for the storage comparison in scripts/bench_plugins.sh.

FlorDB 4.0.1 retired `flor.checkpointing` (the block still runs, and
stores nothing): it keeps, per run, one copy of each file the script
writes with `torch.save`, replaced at every save. So this copy saves the
same training state (every leaf as a numpy array, named by its pytree path;
the PRNG key as its key data) with `torch.save` at the end of every epoch,
the idiom FlorDB 4 asks for. Model, data, optimizer and loop are those of
examples/jax_finetune.py, unchanged. `torch` is the benchmark's stand-in
(scripts/bench_plugins/torch_stub), which writes the bytes torch.save
writes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flordb as flor
import torch  # the stand-in: scripts/bench_plugins/torch_stub

epochs = flor.arg("epochs", 10)
width = flor.arg("width", 512)
lr = flor.arg("lr", 0.003)
batch = flor.arg("batch", 128)


class Backbone(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.gelu(nn.Dense(self.width)(x))
        return x


class Head(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.Dense(10)(h)


# Synthetic data: 10 classes, 64 features.
data = np.random.RandomState(0)
centers = data.standard_normal((10, 64)).astype(np.float32)
labels = data.randint(0, 10, size=4096)
features = centers[labels] + 3.0 * data.standard_normal((4096, 64)).astype(np.float32)

backbone, head = Backbone(width), Head()
key, backbone_key, head_key = jax.random.split(jax.random.key(0), 3)
backbone_params = backbone.init(backbone_key, features[:1])["params"]  # the "pretrained" weights
head_params = head.init(head_key, jnp.zeros((1, width)))["params"]
tx = optax.adam(lr)

# Frozen tensors first, the trained ones after: one dict, updated in place.
state = {"backbone": backbone_params, "head": head_params, "opt_state": tx.init(head_params), "key": key}

count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))  # noqa: E731
frozen = count(state["backbone"]) / (count(state["backbone"]) + count(state["head"]))
flor.log("frozen_fraction", frozen)


def flat(tree):
    """The state as torch.save would take it: {pytree path: numpy array}."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if jnp.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


@jax.jit
def train_step(head_params, opt_state, backbone_params, x, y):
    h = backbone.apply({"params": backbone_params}, x)  # frozen: no gradient flows into it

    def loss_fn(p):
        logits = head.apply({"params": p}, h)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(head_params)
    updates, opt_state = tx.update(grads, opt_state, head_params)
    return optax.apply_updates(head_params, updates), opt_state, loss


@jax.jit
def accuracy(head_params, backbone_params, x, y):
    logits = head.apply({"params": head_params}, backbone.apply({"params": backbone_params}, x))
    return (logits.argmax(-1) == y).mean()


with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(epochs)):
        state["key"], shuffle_key = jax.random.split(state["key"])
        order = np.asarray(jax.random.permutation(shuffle_key, len(features)))
        for i in flor.loop("step", range(0, len(features), batch)):
            idx = order[i : i + batch]
            state["head"], state["opt_state"], loss = train_step(
                state["head"], state["opt_state"], state["backbone"], features[idx], labels[idx]
            )
            flor.log("loss", float(loss))
        flor.log("acc", float(accuracy(state["head"], state["backbone"], features, labels)))
        torch.save(flat(state), "ckpt.pt")  # FlorDB 4 keeps a copy per run (the last save)
