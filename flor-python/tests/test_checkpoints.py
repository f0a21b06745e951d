"""Checkpoints: in-place restore, RNG capture, unpicklable objects and
corrupt blobs."""

import json

import pytest

from conftest import dataframe, query, run_python, run_script, write_script

OBJS = """
class Plain:
    def __init__(self):
        self.a = 0
        self.hist = []

class Model:
    def __init__(self):
        self.weights = [0.0, 0.0]
        self.loads = 0
    def state_dict(self):
        return {"weights": list(self.weights)}
    def load_state_dict(self, sd):
        self.weights = list(sd["weights"])
        self.loads += 1
"""

TRAIN = """
import json
import numpy as np
import flordb as flor
from objs import Model, Plain

d = {"step": 0}
lst = []
arr = np.zeros(3)
plain = Plain()
model = Model()

def snapshot():
    return {"d": dict(d), "lst": list(lst), "arr": arr.tolist(), "plain": [plain.a, list(plain.hist)],
            "model": list(model.weights)}

with flor.checkpointing(d=d, lst=lst, arr=arr, plain=plain, model=model):
    for epoch in flor.loop("epoch", range(3)):
        d["step"] = epoch
        lst.append(epoch)
        arr += 1
        plain.a = epoch * 2
        plain.hist.append(epoch)
        model.weights = [float(epoch), float(-epoch)]
        flor.log("x", epoch)
final = snapshot()
flor.commit()

# Later, in the same process: mess the objects up, then restore them in place.
tstamp = flor.query("SELECT tstamp FROM runs")["tstamp"].iloc[0]
ids = {n: id(o) for n, o in [("d", d), ("lst", lst), ("arr", arr), ("plain", plain), ("model", model)]}
d.clear(); d["junk"] = 1
lst[:] = [99]
arr[:] = -5
plain.a = -1; plain.hist = ["x"]; plain.extra = True
model.weights = [7.0, 7.0]
for name, obj in [("d", d), ("lst", lst), ("arr", arr), ("plain", plain), ("model", model)]:
    assert flor.load_checkpoint(tstamp, name, into=obj) is obj, name
assert {n: id(o) for n, o in [("d", d), ("lst", lst), ("arr", arr), ("plain", plain), ("model", model)]} == ids
assert not hasattr(plain, "extra")
assert model.loads == 1
print("FINAL " + json.dumps(final))
print("RESTORED " + json.dumps(snapshot()))
"""

EXPECTED_FINAL = {
    "d": {"step": 2},
    "lst": [0, 1, 2],
    "arr": [3.0, 3.0, 3.0],
    "plain": [4, [0, 1, 2]],
    "model": [2.0, -2.0],
}


def _tagged(stdout, tag):
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith(tag + " ")]
    return json.loads(line[len(tag) + 1 :])


def test_load_checkpoint_restores_in_place_in_the_same_process(repo):
    write_script(repo, OBJS, "objs.py")
    p = run_script(repo, TRAIN)
    assert _tagged(p.stdout, "FINAL") == EXPECTED_FINAL
    assert _tagged(p.stdout, "RESTORED") == EXPECTED_FINAL
    # No new run was started by the queries and loads after commit().
    assert len(query(repo, "SELECT * FROM runs")) == 1


def test_load_checkpoint_in_a_later_process(repo):
    write_script(repo, OBJS, "objs.py")
    run_script(repo, TRAIN)
    restore = """
    import json
    import numpy as np
    import flordb as flor
    from objs import Model, Plain

    (tstamp,) = list(flor.query("SELECT tstamp FROM runs")["tstamp"])
    d = {"other": 1}; lst = [9, 9]; arr = np.full(3, -1.0); plain = Plain(); model = Model()
    objs = {"d": d, "lst": lst, "arr": arr, "plain": plain, "model": model}
    for name, obj in objs.items():
        before = id(obj)
        assert flor.load_checkpoint(tstamp, name, into=obj) is obj
        assert id(obj) == before
    out = {"d": d, "lst": lst, "arr": arr.tolist(), "plain": [plain.a, plain.hist], "model": model.weights}
    print("RESTORED " + json.dumps(out))

    # Without `into`, the stored state itself.
    assert flor.load_checkpoint(tstamp, "d") == {"step": 2}
    assert flor.load_checkpoint(tstamp, "model") == {"weights": [2.0, -2.0]}

    # Without a name, all objects of the last checkpoint (and the RNG state).
    every = flor.load_checkpoint(tstamp)
    print("NAMES " + json.dumps(sorted(every)))
    assert every["lst"] == [0, 1, 2]
    assert every["arr"].tolist() == [3.0, 3.0, 3.0]
    assert isinstance(every["plain"], Plain) and every["plain"].hist == [0, 1, 2]

    # An unknown name is a FlorError naming it.
    try:
        flor.load_checkpoint(tstamp, "no_such_object")
    except flor.FlorError as e:
        print("UNKNOWN " + json.dumps(str(e)))
    try:
        flor.load_checkpoint("1999-01-01T00:00:00.000000", "d")
    except flor.FlorError as e:
        print("NORUN " + json.dumps(str(e)))
    """
    p = run_script(repo, restore, name="restore.py")
    assert _tagged(p.stdout, "RESTORED") == EXPECTED_FINAL
    assert _tagged(p.stdout, "NAMES") == ["__rng__", "arr", "d", "lst", "model", "plain"]
    assert "no_such_object" in _tagged(p.stdout, "UNKNOWN")
    assert "1999-01-01T00:00:00.000000" in _tagged(p.stdout, "NORUN")
    assert len(query(repo, "SELECT * FROM runs")) == 1


RNG_TRAIN = """
import random
import numpy as np
import flordb as flor

random.seed(1)
np.random.seed(2)
state = {"x": 0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(4)):
        flor.log("py_first", random.random())
        flor.log("np_first", float(np.random.rand()))
        for step in flor.loop("step", range(2)):
            random.random()
            np.random.rand(3)
            state["x"] += 1
flor.log("py_after", random.random())
flor.log("np_after", float(np.random.rand()))
"""

RNG_CHECK = """
import json, os, pickle, random
import numpy as np
import flordb
import flordb as flor

(tstamp,) = [r["tstamp"] for r in flor.query("SELECT tstamp FROM runs")]

def draws(state):
    random.seed(12345)
    np.random.seed(12345)
    flordb._set_rng_state(state)
    return [random.random(), float(np.random.rand())]

out = {"last": draws(flor.load_checkpoint(tstamp, "__rng__")),
       "all": draws(flor.load_checkpoint(tstamp)["__rng__"])}
rows = flor.query(
    "SELECT l.loop_iteration AS epoch, c.digest AS digest FROM checkpoints c "
    "JOIN loops l ON l.tstamp = c.tstamp AND l.ctx_id = c.ctx_id "
    "WHERE c.name = '__rng__' ORDER BY epoch")
out["per_epoch"] = {r["epoch"]: draws(pickle.loads(flordb._flor.object_bytes(os.getcwd(), r["digest"])))
                    for r in rows}
print(json.dumps(out))
"""


def test_rng_checkpoint_restores_identical_sequences(repo):
    run_script(repo, RNG_TRAIN)
    firsts = {r["epoch"]: [r["py_first"], r["np_first"]] for r in dataframe(repo, "py_first", "np_first")}
    assert sorted(firsts) == [0, 1, 2, 3]
    (after,) = dataframe(repo, "py_after", "np_after")
    p = run_python(repo, RNG_CHECK, hide_pandas=True)
    out = json.loads(p.stdout)
    per_epoch = {int(k): v for k, v in out["per_epoch"].items()}
    assert sorted(per_epoch) == [0, 1, 2, 3]
    # The state saved at the end of epoch e gives exactly epoch e+1's first draws...
    for e in range(3):
        assert per_epoch[e] == firsts[e + 1], e
    # ...and the last one the draws the run made after its loop.
    assert per_epoch[3] == [after["py_after"], after["np_after"]]
    assert out["last"] == out["all"] == per_epoch[3]


@pytest.mark.parametrize(
    "bad",
    [
        "lambda x: x",
        "{'fn': lambda x: x, 'n': list(range(1000))}",
        "threading.Lock()",
        "socket.socket()",
    ],
    ids=["lambda", "dict-with-lambda", "lock", "socket"],
)
def test_unpicklable_checkpoint_is_a_florerror_naming_it(repo, bad):
    src = f"""
    import socket, threading
    import flordb as flor
    good = {{"a": 1}}
    bad_obj = {bad}
    try:
        with flor.checkpointing(good=good, bad_obj=bad_obj):
            for epoch in flor.loop("epoch", range(3)):
                flor.log("loss", epoch)
        print("NO ERROR")
    except flor.FlorError as e:
        print("ERR", e)
    flor.log("after", 1)
    """
    p = run_script(repo, src)
    (err,) = [ln for ln in p.stdout.splitlines() if ln.startswith("ERR ")]
    assert "bad_obj" in err
    assert "NO ERROR" not in p.stdout
    # Nothing half-written: the loop's first epoch, the later log, and the
    # objects saved before the failure are all there; the bad one is not.
    assert [r["loss"] for r in dataframe(repo, "loss")] == [0]
    (run,) = dataframe(repo)
    assert run["after"] == 1
    names = [r["name"] for r in query(repo, "SELECT name FROM checkpoints")]
    assert "bad_obj" not in names
    assert query(repo, "SELECT status FROM runs") == [{"status": "finished"}]
    tmp = repo / ".flor" / "objects" / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir()), "partial object left behind"


def test_unpicklable_checkpoint_uncaught_fails_the_run_keeping_records(repo):
    src = """
    import threading
    import flordb as flor
    lock = threading.Lock()
    with flor.checkpointing(my_lock=lock):
        for epoch in flor.loop("epoch", range(3)):
            flor.log("loss", epoch)
    """
    p = run_script(repo, src, check=False)
    assert p.returncode != 0
    assert "FlorError" in p.stderr and "my_lock" in p.stderr
    assert query(repo, "SELECT status FROM runs") == [{"status": "failed"}]
    assert [r["loss"] for r in dataframe(repo, "loss")] == [0]


CORRUPT_TRAIN = """
import flordb as flor
victim = {"payload": list(range(2000))}
other = {"payload": "fine"}
with flor.checkpointing(victim=victim, other=other):
    for epoch in flor.loop("epoch", range(2)):
        victim["payload"].append(epoch)
        flor.log("loss", epoch / 2)
"""


def _blob(repo, digest):
    return repo / ".flor" / "objects" / digest[:2] / digest[2:]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bitflip", "other-blob", "missing"])
def test_corrupt_blob_is_a_clear_error_and_loses_nothing_else(repo, damage):
    run_script(repo, CORRUPT_TRAIN)
    (tstamp,) = [r["tstamp"] for r in query(repo, "SELECT tstamp FROM runs")]
    digests = {
        r["name"]: r["digest"]
        for r in query(repo, "SELECT name, digest FROM checkpoints ORDER BY ctx_id")  # last wins
    }
    path = _blob(repo, digests["victim"])
    data = path.read_bytes()
    assert len(data) > 16
    if damage == "garbage":
        path.write_bytes(b"this is not a zstd frame at all")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    elif damage == "other-blob":
        path.write_bytes(_blob(repo, digests["other"]).read_bytes())
    else:
        path.unlink()

    p = run_python(
        repo,
        f"""
        import json
        import flordb as flor
        out = {{}}
        try:
            flor.load_checkpoint({tstamp!r}, "victim")
            out["victim"] = "no error"
        except flor.FlorError as e:
            out["victim"] = str(e)
        try:
            flor.load_checkpoint({tstamp!r})
            out["all"] = "no error"
        except flor.FlorError as e:
            out["all"] = str(e)
        out["other"] = flor.load_checkpoint({tstamp!r}, "other")
        print(json.dumps(out))
        """,
        hide_pandas=True,
    )
    out = json.loads(p.stdout)
    for key in ["victim", "all"]:
        msg = out[key]
        assert digests["victim"] in msg, msg
        if damage == "missing":
            assert "not in the object store" in msg, msg
        else:
            assert "corrupt" in msg, msg
    assert out["other"] == {"payload": "fine"}
    # The run's values are all still queryable.
    assert [r["loss"] for r in dataframe(repo, "loss")] == [0.0, 0.5]
    assert query(repo, "SELECT status FROM runs") == [{"status": "finished"}]


INTERVAL = """
import sys
import flordb as flor
flor.set_ckpt_interval(float(sys.argv[1]))
state = {"n": 0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        state["n"] += 1
        flor.log("n", state["n"])
"""


@pytest.mark.parametrize("seconds, expected", [("3600", 1), ("0", 3)])
def test_set_ckpt_interval_limits_checkpoints(repo, seconds, expected):
    run_script(repo, INTERVAL, seconds)
    rows = query(repo, "SELECT name FROM checkpoints WHERE name = 'state'")
    assert len(rows) == expected
    (tstamp,) = [r["tstamp"] for r in query(repo, "SELECT tstamp FROM runs")]
    p = run_python(repo, f"import flordb as flor; print(flor.load_checkpoint({tstamp!r}, 'state'))")
    assert p.stdout.strip() == str({"n": expected})


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf"])
def test_set_ckpt_interval_rejects_bad_values_at_once(repo, seconds):
    src = """
    import sys
    import flordb as flor
    try:
        flor.set_ckpt_interval(float(sys.argv[1]))
        print("accepted")
    except flor.FlorError as e:
        print("ERR", e)
    """
    p = run_script(repo, src, seconds)
    assert p.stdout.startswith("ERR ") and "interval" in p.stdout
    # No run was started by the call: the only run is the one its printed
    # line made (automatic capture of output), holding that line alone.
    assert query(repo, "SELECT * FROM logs") == []
    assert [r["value"] for r in query(repo, "SELECT value FROM outputs")] == [p.stdout.strip()]


def test_resume_from_a_previous_runs_checkpoint(repo):
    write_script(repo, OBJS, "objs.py")
    run_script(repo, TRAIN)
    resume = """
    import sys
    import flordb as flor
    from objs import Model
    model = Model()
    prev = flor.query("SELECT tstamp FROM runs ORDER BY tstamp")["tstamp"].iloc[0]
    flor.load_checkpoint(prev, "model", into=model)
    start = flor.arg("start", 0)
    with flor.checkpointing(model=model):
        for epoch in flor.loop("epoch", range(2)):
            model.weights = [w + 1 for w in model.weights]
            flor.log("w0", model.weights[0])
    """
    run_script(repo, resume, name="resume.py")
    runs = query(repo, "SELECT filename, status FROM runs ORDER BY tstamp")
    assert runs == [{"filename": "train.py", "status": "finished"}, {"filename": "resume.py", "status": "finished"}]
    assert [r["w0"] for r in dataframe(repo, "w0")] == [3.0, 4.0]


def test_nested_checkpointing_unregisters_exactly_its_own_objects(repo):
    # numpy arrays under one name: `==` between them is elementwise, so the
    # context manager must not compare objects by equality.
    src = """
    import numpy as np
    import flordb as flor
    a, b = np.zeros(3), np.ones(3)
    with flor.checkpointing(w=a):
        with flor.checkpointing(w=b, extra=np.arange(4)):
            for e in flor.loop("epoch", range(1)):
                flor.log("x", e)
        for r in flor.loop("round", range(1)):
            flor.log("y", r)
    for t in flor.loop("after", range(1)):
        flor.log("z", t)
    print("ok")
    """
    p = run_script(repo, src)
    assert p.stdout.splitlines()[-1] == "ok"
    rows = query(
        repo,
        "SELECT l.loop_name AS loop, c.name AS name FROM checkpoints c "
        "JOIN loops l ON l.tstamp = c.tstamp AND l.ctx_id = c.ctx_id ",
    )
    by_loop = {}
    for r in rows:
        by_loop.setdefault(r["loop"], []).append(r["name"])
    assert sorted(by_loop["epoch"]) == ["__rng__", "extra", "w", "w"]
    assert sorted(by_loop["round"]) == ["__rng__", "w"]
    assert "after" not in by_loop


def test_large_states_stream_with_little_extra_memory(repo):
    """Checkpointing streams: a 96 MiB numpy array (handed over by pickle as a
    PickleBuffer) and a large dict cost far less than 1.5x their size in extra
    peak memory, and come back intact."""
    out = run_script(
        repo,
        """
        import json, resource, sys
        import numpy as np
        import flordb as flor

        arr = np.arange(12_000_000, dtype=np.float64)  # 96 MiB
        big = {"rows": [float(i) for i in range(1_000_000)]}
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with flor.checkpointing(arr=arr, big=big):
            for e in flor.loop("epoch", range(1)):
                flor.log("x", 1)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        flor.commit()
        tstamp = flor.query("SELECT tstamp FROM runs")
        tstamp = tstamp["tstamp"][0] if hasattr(tstamp, "columns") else tstamp[0]["tstamp"]
        arr[:] = 0
        big["rows"] = []
        flor.load_checkpoint(tstamp, "arr", into=arr)
        flor.load_checkpoint(tstamp, "big", into=big)
        sys.stdout.write("@@" + json.dumps({
            "extra": (peak - base) * 1024,
            "arr_ok": bool((arr == np.arange(12_000_000, dtype=np.float64)).all()),
            "big_ok": big["rows"][-1] == 999_999.0 and len(big["rows"]) == 1_000_000,
        }))
        """,
    ).stdout
    r = json.loads(out.split("@@", 1)[1])
    assert r["arr_ok"] and r["big_ok"]
    state = 12_000_000 * 8
    assert r["extra"] < 1.5 * state, f"extra peak {r['extra'] / 2**20:.0f} MiB for a {state / 2**20:.0f} MiB array"


# Random generator objects (what `flor lint` tells users to checkpoint): their
# state lives outside `__dict__`, so they are restored through their own API.
GENERATORS = """
import json
import random

import numpy as np
import flordb as flor

rng = np.random.default_rng(1)
rs = np.random.RandomState(2)
r = random.Random(3)
with flor.checkpointing(rng=rng, rs=rs, r=r):
    for epoch in flor.loop("epoch", range(2)):
        flor.log("draw", float(rng.random() + rs.rand() + r.random()))
flor.commit()
print("AFTER " + json.dumps([float(rng.random()), float(rs.rand()), r.random()]))
"""

RESTORE = """
import json
import random

import numpy as np
import flordb as flor

(row,) = flor.query("SELECT tstamp FROM runs")
tstamp = row["tstamp"]
rng, rs, r = np.random.default_rng(99), np.random.RandomState(99), random.Random(99)
ids = [id(rng), id(rs), id(r)]
for name, obj in (("rng", rng), ("rs", rs), ("r", r)):
    assert flor.load_checkpoint(tstamp, name, into=obj) is obj
assert ids == [id(rng), id(rs), id(r)]
print(json.dumps([float(rng.random()), float(rs.rand()), r.random()]))
"""


def test_checkpointed_generators_are_restored_in_place(repo):
    p = run_script(repo, GENERATORS)
    (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith("AFTER ")]
    after = json.loads(line[len("AFTER ") :])
    restored = json.loads(run_python(repo, RESTORE, hide_pandas=True).stdout)
    # The last checkpoint's state gives exactly the draws the run made next.
    assert restored == after
