"""Real JAX: a flax/optax training run checkpointed as ``flor.pytree``,
every checkpoint restored bit for bit, and a hindsight replay of the run
that reproduces its values bit for bit.

Needs jax, flax and optax (``scripts/test.sh`` installs them); without them
the tests are skipped, except under CI, where they fail. The replay test
runs the ``flor`` binary (``FLOR_BIN``, else the workspace's debug build,
built when missing).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import TIMEOUT, dataframe, git, query, run_python, run_script, write_script

if not os.environ.get("CI"):
    for _module in ("jax", "flax", "optax"):
        pytest.importorskip(_module)

SLOW = 10 * TIMEOUT  # jax's first compilations take seconds on a loaded 2-core machine

# Written into the test repository: a description of a pytree that tells
# every difference -- per leaf its path, Python type, dtype, shape, weak
# type and bytes (typed PRNG keys: implementation and key data), and the
# key order of every dict.
DESCRIBE = """
import jax
import numpy as np


def order(tree):
    if isinstance(tree, dict):
        return [[str(k), order(v)] for k, v in tree.items()]
    if isinstance(tree, (list, tuple)):
        return [type(tree).__name__, [order(v) for v in tree]]
    return None


def describe(tree):
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        p = jax.tree_util.keystr(path)
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))
            leaves.append([p, "key", str(jax.random.key_impl(leaf)), list(leaf.shape), data.tobytes().hex()])
        elif hasattr(leaf, "dtype"):
            weak = bool(getattr(leaf, "weak_type", False))
            raw = np.asarray(leaf).tobytes().hex()
            leaves.append([p, type(leaf).__name__, str(leaf.dtype), list(np.shape(leaf)), raw, weak])
        else:
            leaves.append([p, type(leaf).__name__, repr(leaf)])
    return {"structure": str(jax.tree_util.tree_structure(tree)), "order": order(tree), "leaves": leaves}
"""

TRAIN = """
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flordb as flor
from jaxdesc import describe


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(4)(x)


data = np.random.RandomState(0)
X = data.standard_normal((192, 8)).astype(np.float32)
Y = (X @ data.standard_normal((8, 4)).astype(np.float32)).argmax(1)

model = MLP()
tx = optax.adam(1e-2)
key, init_key = jax.random.split(jax.random.key(0))
params = model.init(init_key, X[:1], train=False)["params"]
# The training state, the PRNG key with it; the loop updates the dict in place.
state = {"params": params, "opt_state": tx.init(params), "key": key, "step": 0, "lr_scale": 1.0,
         "best": np.float32(0.0), "history": np.zeros(4, np.float64)}


@jax.jit
def train_step(params, opt_state, key, x, y):
    def loss_fn(p):
        logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


epochs = []
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(4)):
        state["key"], perm_key = jax.random.split(state["key"])
        perm = np.asarray(jax.random.permutation(perm_key, len(X)))
        for i in flor.loop("step", range(0, len(X), 48)):
            idx = perm[i : i + 48]
            state["key"], drop = jax.random.split(state["key"])
            state["params"], state["opt_state"], loss = train_step(
                state["params"], state["opt_state"], drop, X[idx], Y[idx])
            state["step"] += 1
            flor.log("loss", float(loss))
        acc = float((model.apply({"params": state["params"]}, X, train=False).argmax(1) == Y).mean())
        state["best"] = max(state["best"], np.float32(acc))
        state["history"][epoch] = acc
        flor.log("acc", acc)
        epochs.append(describe(state))
with open("epochs.json", "w") as f:
    json.dump(epochs, f)
"""

# The newest version: one statement per step, one per epoch.
NEWEST = TRAIN.replace(
    '            flor.log("loss", float(loss))\n',
    '            flor.log("loss", float(loss))\n'
    '            flor.log("drop_bits", int(jax.random.bits(drop, dtype=jnp.uint32)))\n',
).replace(
    '        flor.log("acc", acc)\n',
    '        flor.log("acc", acc)\n'
    '        flor.log("w_norm", float(jnp.linalg.norm(state["params"]["Dense_0"]["kernel"])))\n',
)

CHECK = """
import json, os
import flordb
import flordb as flor
from jaxdesc import describe

(tstamp,) = [r["tstamp"] for r in flor.query("SELECT tstamp FROM runs")]
rows = flor.query(
    "SELECT l.loop_iteration AS epoch, c.digest AS digest, c.format AS format FROM checkpoints c "
    "JOIN loops l ON l.tstamp = c.tstamp AND l.ctx_id = c.ctx_id "
    "WHERE c.name = 'state' ORDER BY epoch")
out = {"formats": sorted({r["format"] for r in rows}),
       "per_epoch": [describe(flordb._load_bytes(flordb._flor.object_bytes(os.getcwd(), r["digest"]), r["format"]))
                     for r in rows]}
# The last checkpoint, through the public API: as a value, and in place.
out["last"] = describe(flor.load_checkpoint(tstamp, "state"))
target = {"stale": 1}
same = flor.load_checkpoint(tstamp, "state", into=target) is target
out["into"] = describe(target) if same else None
out["rng_format"] = [r["format"] for r in flor.query("SELECT format FROM checkpoints WHERE name = '__rng__'")]
print("@@" + json.dumps(out))
"""


def _setup(repo):
    write_script(repo, DESCRIBE, name="jaxdesc.py")


def test_flax_training_state_is_stored_as_flor_pytree_and_restored_bit_for_bit(repo):
    _setup(repo)
    run_script(repo, TRAIN, timeout=SLOW)
    recorded = json.loads((repo / "epochs.json").read_text())
    assert len(recorded) == 4
    out = json.loads(run_python(repo, CHECK, hide_pandas=True).stdout.rsplit("@@", 1)[1])
    assert out["formats"] == ["flor.pytree"]
    assert set(out["rng_format"]) == {"pickle"}  # plain Python state keeps its format
    # Every epoch's checkpoint is that epoch's state: each leaf's type,
    # dtype, shape, weak type and bytes, the typed key and its impl, the
    # Python scalars, the numpy scalar and array, and the dicts' key order.
    assert out["per_epoch"] == recorded
    assert out["last"] == recorded[-1]
    assert out["into"] == recorded[-1]
    kinds = {leaf[0]: leaf[1:3] for leaf in recorded[-1]["leaves"]}
    assert kinds["['key']"] == ["key", "threefry2x32"]
    assert kinds["['params']['Dense_0']['kernel']"] == ["ArrayImpl", "float32"]
    assert kinds["['opt_state'][0].count"] == ["ArrayImpl", "int32"]
    assert kinds["['step']"][0] == "int" and kinds["['lr_scale']"][0] == "float"
    assert kinds["['best']"] == ["float32", "float32"] and kinds["['history']"] == ["ndarray", "float64"]
    # The states differ from epoch to epoch (the comparison above means something).
    assert len({json.dumps(e) for e in recorded}) == 4


def _flor_bin():
    """The flor binary: FLOR_BIN, else the workspace's debug build (built
    with cargo when missing)."""
    if os.environ.get("FLOR_BIN"):
        return os.environ["FLOR_BIN"]
    root = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    path = target / "debug" / "flor"
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "flor"], cwd=root, check=True, timeout=3600)
    return str(path)


def _flor(repo, *args):
    p = subprocess.run([_flor_bin(), *args], cwd=repo, capture_output=True, text=True, timeout=SLOW)
    assert p.returncode == 0, f"flor {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _values(repo, *names):
    rows = dataframe(repo, *names)
    return sorted(
        (r["epoch"], -1 if r.get("step") is None else r["step"], *(r.get(n) for n in names)) for r in rows
    )


def test_replay_of_a_flax_run_reproduces_its_values_bit_for_bit(repo, tmp_path):
    _setup(repo)
    run_script(repo, TRAIN, timeout=SLOW)
    # The newest version of the script gains a step-level and an
    # epoch-level statement; the replay computes them from the checkpoints.
    write_script(repo, NEWEST)
    out = _flor(repo, "replay", "--apply", "drop_bits,w_norm", "--yes", "--jobs", "2")
    assert "FAILED" not in out and "DIVERGED" not in out, out
    # The old statements re-ran from the restored state and recomputed
    # exactly what the run recorded.
    assert "match the recorded ones bit for bit" in out, out
    # The recovered values are exactly a forward run's of the newest version.
    forward = tmp_path / "forward"
    forward.mkdir()
    git(forward, "init", "-q", "-b", "main")
    write_script(forward, DESCRIBE, name="jaxdesc.py")
    run_script(forward, NEWEST, timeout=SLOW)
    got = _values(repo, "drop_bits", "w_norm")
    want = _values(forward, "drop_bits", "w_norm")
    assert got == want
    assert len({r[:3] for r in got if r[2] is not None}) == 16  # 4 epochs x 4 steps
    assert len({(r[0], r[3]) for r in got if r[3] is not None}) == 4  # one per epoch
    flagged = query(repo, "SELECT count(*) AS n FROM logs WHERE diverged = 1")
    assert flagged == [{"n": 0}]
