"""Real JAX: a flax/optax training run checkpointed as ``flor.pytree``,
every checkpoint restored bit for bit, and a hindsight replay of the run
that reproduces its values bit for bit.

Needs jax, flax and optax (``scripts/test.sh`` installs them); without them
the tests are skipped, except under CI, where they fail. The replay test
runs the ``flor`` binary (``FLOR_BIN``, else the workspace's debug build,
which it brings up to date with cargo).
"""

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import TIMEOUT, dataframe, git, query, run_python, run_script, write_script

if not os.environ.get("CI"):
    for _module in ("jax", "flax", "optax"):
        pytest.importorskip(_module)

# Where cargo and rustup live, read before the tests isolate HOME.
_RUSTUP_HOME = os.environ.get("RUSTUP_HOME") or os.path.expanduser("~/.rustup")
_CARGO_HOME = os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo")

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


@functools.lru_cache(maxsize=None)
def _flor_bin():
    """The flor binary: FLOR_BIN, else the workspace's debug build, brought
    up to date with cargo (a no-op after `cargo test --workspace`)."""
    if os.environ.get("FLOR_BIN"):
        return os.environ["FLOR_BIN"]
    root = Path(__file__).resolve().parents[2]
    # The tests' HOME is an empty folder: cargo and rustup keep their own.
    env = dict(os.environ, RUSTUP_HOME=_RUSTUP_HOME, CARGO_HOME=_CARGO_HOME)
    subprocess.run(["cargo", "build", "--quiet", "--bin", "flor"], cwd=root, env=env, check=True, timeout=3600)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    return str(target / "debug" / "flor")


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


ROUND_TRIP = """
import collections, io, json
import jax, jax.numpy as jnp, ml_dtypes, numpy as np
from flax import struct
from flax.core import FrozenDict
from flordb import _Stream, _pytree
from jaxdesc import describe

Pair = collections.namedtuple("Pair", "left right")

@struct.dataclass
class Train:
    params: dict
    step: int
    name: str = struct.field(pytree_node=False, default="run")

tree = {
    "z_first": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3),
    "a_second": {"weak": jnp.asarray(1.5), "f16": jnp.ones(3, jnp.float16), "i8": jnp.arange(4, dtype=jnp.int8),
                 "bool": jnp.asarray([True, False]), "c64": jnp.asarray([1 + 2j], jnp.complex64)},
    "keys": [jax.random.key(1), jax.random.key(2, impl="rbg"), jax.random.split(jax.random.key(3), 3),
             jax.random.PRNGKey(4)],
    "numpy": (np.arange(5, dtype=">i4"), np.ones((0, 3), np.float32), np.float32(2.5), np.int64(-7),
              np.asarray(7, ml_dtypes.float8_e4m3fn), np.arange(4, dtype=ml_dtypes.int4)),
    "scalars": Pair(left=[1, -(1 << 70), 0.1, float("nan"), True], right=None),
    "frozen": FrozenDict({"b": jnp.ones(2), "a": jnp.zeros(2)}),
    "state": Train(params={"w": jnp.ones((2, 2))}, step=3, name="custom"),
}

class Buf:
    def __init__(self):
        self.b = bytearray()
    def write(self, d):
        self.b += d
        return len(d)

planned = _pytree.plan(tree)
buf = Buf()
_pytree.write(planned, _Stream(buf))
data = bytes(buf.b)
back = _pytree.load(data)
head = json.loads(data[16 : 16 + int.from_bytes(data[8:16], "little")])
out = {
    "same": describe(back) == describe(tree),
    "order": list(back) == list(tree) and list(back["a_second"]) == list(tree["a_second"]),
    "types": [type(back["state"]).__name__, back["state"].name, type(back["frozen"]).__name__,
              type(back["scalars"]).__name__],
    "aligned": all(leaf["offset"] % 64 == 0 for leaf in head["leaves"]),
    "end": head["leaves"][-1]["offset"] + head["leaves"][-1]["length"] == len(data),
    "dtypes": {leaf["path"]: leaf["dtype"] for leaf in head["leaves"]},
    "kinds": sorted({leaf["kind"] for leaf in head["leaves"]}),
    "impls": sorted({leaf.get("impl", "") for leaf in head["leaves"]}),
    "not_trees": [_pytree.plan(x) is None for x in
                  ({"a": 1, "b": 2.0}, ["text", np.ones(2)], {"f": print, "w": np.ones(2)}, np.ones(2).tolist(),
                   {"obj": object(), "w": jnp.ones(2)}, {"s": {1, 2}, "w": jnp.ones(1)})],
}
errors = []
for bad in (data[:100], b"FLORTREE" + (10**9).to_bytes(8, "little"), data.replace(b'"version":1', b'"version":9', 1)):
    try:
        _pytree.load(bad)
    except _pytree.FormatError as e:
        errors.append(str(e))
out["errors"] = errors
print("@@" + json.dumps(out))
"""


def test_every_leaf_kind_round_trips_through_flor_pytree_exactly(repo):
    _setup(repo)
    out = json.loads(run_python(repo, ROUND_TRIP).stdout.rsplit("@@", 1)[1])
    assert out["same"] and out["order"], out
    assert out["types"] == ["Train", "custom", "FrozenDict", "Pair"]
    assert out["aligned"] and out["end"]
    d = out["dtypes"]
    assert d["z_first"] == "bf16" and d["a_second/weak"] == "f32" and d["a_second/c64"] == "c64"
    assert d["numpy/0"] == "i32"  # big-endian on disk as little-endian, restored as >i4 (same = True above)
    assert d["numpy/4"] == "f8_e4m3" and d["numpy/5"] == "int4"  # a type flor has no statistics for: numpy's name
    assert d["scalars/left/0"] == "i64" and d["scalars/left/1"] == "pyint" and d["scalars/left/4"] == "bool"
    assert d["keys/1"] == "u32" and d["state/params/w"] == "f32"
    assert out["kinds"] == ["bool", "float", "int", "jax", "key", "npscalar", "numpy"]
    assert out["impls"] == ["", "rbg", "threefry2x32"]
    assert out["not_trees"] == [True] * 6  # no array, a string, a function, no array, an object, a set
    assert len(out["errors"]) == 3
    assert "past the end" in out["errors"][1] and "newer flordb" in out["errors"][2]


FORMATS = """
import sys
import numpy as np
import flordb as flor

if "--jax" in sys.argv:
    import jax.numpy as jnp
plain = {"step": 0, "name": "x"}
items = [1, 2]
arr = np.zeros(3)
with flor.checkpointing(plain=plain, items=items, arr=arr):
    for epoch in flor.loop("epoch", range(2)):
        plain["step"] += 1
        arr += 1
"""


@pytest.mark.parametrize("with_jax", [False, True])
def test_plain_objects_keep_pickle_and_arrays_take_flor_pytree_only_with_jax(repo, with_jax):
    run_script(repo, FORMATS, *(["--jax"] if with_jax else []), timeout=SLOW)
    rows = query(repo, "SELECT DISTINCT name, format FROM checkpoints ORDER BY name")
    formats = {r["name"]: r["format"] for r in rows}
    assert formats["plain"] == "pickle" and formats["items"] == "pickle" and formats["__rng__"] == "pickle"
    assert formats["arr"] == ("flor.pytree" if with_jax else "pickle")
    restore = """
    import numpy as np
    import flordb as flor
    (t,) = [r["tstamp"] for r in flor.query("SELECT tstamp FROM runs")]
    arr = np.full(3, -1.0)
    assert flor.load_checkpoint(t, "arr", into=arr) is arr
    print(arr.tolist(), flor.load_checkpoint(t, "plain"))
    """
    assert run_python(repo, restore, hide_pandas=True).stdout.strip() == "[2.0, 2.0, 2.0] {'step': 2, 'name': 'x'}"


TRAIN_STATE = """
import json
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

import flordb as flor
from jaxdesc import describe


def fresh():
    model = nn.Dense(3)
    params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    return {"train": train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(0.1)),
            "key": jax.random.key(1)}


@jax.jit
def step(ts, key):
    x = jax.random.normal(key, (8, 4))
    grads = jax.grad(lambda p: (ts.apply_fn({"params": p}, x) ** 2).mean())(ts.params)
    return ts.apply_gradients(grads=grads)


box = fresh()  # a TrainState holds optax's functions: not picklable, kept in a dict the loop updates
with flor.checkpointing(box=box):
    for epoch in flor.loop("epoch", range(3)):
        box["key"], sub = jax.random.split(box["key"])
        box["train"] = step(box["train"], sub)
        flor.log("w0", float(box["train"].params["kernel"][0, 0]))
final = describe(box)
flor.commit()

(t,) = flor.query("SELECT tstamp FROM runs")["tstamp"].tolist()
try:
    flor.load_checkpoint(t, "box")
    refused = None
except flor.FlorError as e:
    refused = str(e)
target = fresh()
same = flor.load_checkpoint(t, "box", into=target) is target
print("@@" + json.dumps({"refused": refused, "same": same, "final": final, "restored": describe(target),
                         "format": flor.query("SELECT DISTINCT format FROM checkpoints WHERE name = 'box'")["format"].tolist()}))
"""


def test_a_flax_train_state_restores_into_an_object_of_its_structure(repo):
    _setup(repo)
    out = json.loads(run_script(repo, TRAIN_STATE, timeout=SLOW).stdout.rsplit("@@", 1)[1])
    assert out["format"] == ["flor.pytree"]
    assert "into=obj" in out["refused"] and "TrainState" in out["refused"]
    assert out["same"]
    # Leaves and dict orders; the static data (optax's functions) is the target's own.
    assert out["restored"]["leaves"] == out["final"]["leaves"]
    assert out["restored"]["order"] == out["final"]["order"]
    assert any(leaf[0] == "['train'].step" and leaf[1] == "ArrayImpl" for leaf in out["final"]["leaves"])


# Reads each packed checkpoint of the run back (the verified bytes of the
# object, joined from its chunks), finds every tensor through the
# flor.pytree header, and computes its statistics with numpy, in float64,
# independently of flor; prints them with the tensors view's rows.
TENSOR_STATS = """
import json, os, struct
import numpy as np
import flordb
import flordb as flor

DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "u32": np.uint32, "i64": np.int64,
          "u8": np.uint8, "bool": np.bool_, "f16": np.float16}
cks = flor.query("SELECT ctx_id, digest FROM checkpoints WHERE name = 'state' ORDER BY ctx_id")
want, previous = [], {}
for c in cks:
    data = flordb._flor.object_bytes(os.getcwd(), c["digest"])
    (hlen,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + hlen])
    current = {}
    for leaf in header["leaves"]:
        if leaf["dtype"] not in DTYPES:
            continue
        x = np.frombuffer(data[leaf["offset"]:leaf["offset"] + leaf["length"]], dtype=DTYPES[leaf["dtype"]])
        v = x.astype(np.float64)
        finite = v[np.isfinite(v)]
        row = {"ctx_id": c["ctx_id"], "tensor": leaf["path"], "dtype": leaf["dtype"], "bytes": leaf["length"],
               "nonfinite": int(v.size - finite.size)}
        if finite.size:
            row.update(l2=float(np.sqrt(np.sum(finite * finite))), mean=float(finite.mean()),
                       std=float(finite.std()), min=float(finite.min()), max=float(finite.max()))
        if leaf["path"] in previous and previous[leaf["path"]].shape == v.shape:
            d = v - previous[leaf["path"]]
            row["delta_l2"] = float(np.sqrt(np.sum(d * d)))
        current[leaf["path"]] = v
        want.append(row)
    previous = current
got = flor.query("SELECT ctx_id, tensor, dtype, bytes, l2, mean, std, min, max, nonfinite, delta_l2 "
                 "FROM tensors WHERE checkpoint = 'state' ORDER BY ctx_id, tensor")
print("@@" + json.dumps({"want": want, "got": got}))
"""


def _close(a, b, rel):
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


# The same training with a frozen 256 KiB embedding in the state: large
# enough to be cut into chunks, and the same in every checkpoint.
FROZEN = '"history": np.zeros(4, np.float64)'
TRAIN_FROZEN = TRAIN.replace(FROZEN, FROZEN + ', "embed": data.standard_normal((256, 256)).astype(np.float32)')


def test_packed_flax_checkpoints_have_exact_tensor_statistics_and_still_replay_bit_for_bit(repo):
    _setup(repo)
    assert TRAIN_FROZEN != TRAIN
    run_script(repo, TRAIN_FROZEN, timeout=SLOW)
    out = _flor(repo, "checkpoints", "pack", "--all")
    ls = _flor(repo, "--format", "json", "checkpoints", "ls")
    state = [r for r in json.loads(ls) if r["checkpoint"] == "state"]
    # Cut by the jax plugin; the frozen embedding's chunk is stored once.
    assert len(state) == 4 and all(r["stored"] == "packed" for r in state), ls
    assert all(r["packed_as"].startswith("flor.pytree (") and r["tensors"] > 10 for r in state), ls
    one = state[0]["bytes"]
    assert one > 256 * 1024
    # On disk (objects and chunks; compressed), the four checkpoints take
    # less than two whole ones: the embedding is stored once.
    objects = repo / ".flor" / "objects"
    stored = sum(f.stat().st_size for d in objects.iterdir() if len(d.name) == 2 for f in d.iterdir())
    assert stored < 2 * one, (stored, one)
    stats = json.loads(run_python(repo, TENSOR_STATS, hide_pandas=True).stdout.rsplit("@@", 1)[1])
    want = {(r["ctx_id"], r["tensor"]): r for r in stats["want"]}
    got = {(r["ctx_id"], r["tensor"]): r for r in stats["got"]}
    assert set(got) == set(want), (sorted(set(got) ^ set(want)), out)
    assert any(t.startswith("params/Dense_0/kernel") for _, t in want)
    for k, w in want.items():
        g = got[k]
        assert (g["dtype"], g["bytes"], g["nonfinite"]) == (w["dtype"], w["bytes"], w["nonfinite"]), (k, g, w)
        for stat in ("min", "max"):  # to the last bit
            assert g[stat] == w.get(stat), (k, stat, g[stat], w.get(stat))
        for stat in ("l2", "mean", "std", "delta_l2"):
            if w.get(stat) is None:
                assert g[stat] is None, (k, stat, g[stat])
            else:
                assert _close(g[stat], w[stat], 1e-12), (k, stat, g[stat], w[stat])
    # Replaying from the packed checkpoints recomputes the recorded values
    # bit for bit.
    write_script(repo, NEWEST.replace(FROZEN, FROZEN + ', "embed": data.standard_normal((256, 256)).astype(np.float32)'))
    out = _flor(repo, "replay", "--apply", "drop_bits,w_norm", "--yes", "--jobs", "2")
    assert "FAILED" not in out and "DIVERGED" not in out, out
    assert "match the recorded ones bit for bit" in out, out
