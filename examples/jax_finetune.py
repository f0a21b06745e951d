"""Fine-tuning with a frozen backbone, in JAX (flax + optax), recorded by flor.

A "pretrained" backbone (a 3-layer MLP, fixed seed: about 99 % of the
parameters) stays frozen; a linear head is trained with optax's adam for
10 epochs on a synthetic 10-class problem. The whole training state --
backbone, head, optimizer state and the PRNG key -- is one dict under
`flor.checkpointing`, updated in place, so flor stores it as `flor.pytree`
every epoch and a hindsight replay restores it exactly. The storage
benchmark (BENCHMARKS.md) runs this script: the frozen tensors are the same
bytes in every epoch's checkpoint.

    python examples/jax_finetune.py [--kwargs epochs=10 width=512 lr=0.01]
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flordb as flor

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
