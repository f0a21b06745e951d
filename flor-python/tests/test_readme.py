"""FlorDB's README-style usage runs unchanged and is queryable."""

import json
import subprocess

import pytest

from conftest import PYTHON, dataframe, flor_eval, git, query, run_python, run_script

README_SCRIPT = """
import flordb as flor

class Net:
    def __init__(self):
        self.w = 1.0
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, sd):
        self.w = sd["w"]

net = Net()
optimizer = {"momentum": 0.9}
lr = flor.arg("lr", 1e-3)
epochs = flor.arg("epochs", 2)

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        for step in flor.loop("step", range(3)):
            loss = flor.log("loss", 1.0 / (1 + epoch * 3 + step))
            assert loss == 1.0 / (1 + epoch * 3 + step)  # log returns its value
            net.w -= lr * loss
        flor.log("w", net.w)
print("done", flush=True)
"""


def expected_loss(epoch, step):
    return 1.0 / (1 + epoch * 3 + step)


def test_readme_example_prints_like_flordb(repo):
    p = run_script(repo, README_SCRIPT, "--kwargs", "lr=0.5", "epochs=3")
    lines = p.stdout.splitlines()
    loss_lines = [ln for ln in lines if "loss:" in ln]
    assert loss_lines == [
        f"epoch: {e}, step: {s}, loss: {expected_loss(e, s)}" for e in range(3) for s in range(3)
    ]
    assert "epoch: 0, step: 1, loss: 0.5" in lines
    assert sum(ln.startswith("epoch: ") and ", w: " in ln for ln in lines) == 3
    assert lines[-1] == "done"


def test_readme_dataframe_columns_rows_and_values(repo):
    run_script(repo, README_SCRIPT, "--kwargs", "lr=0.5", "epochs=3")

    cols = flor_eval(repo, "list(flor.dataframe('lr', 'loss').columns)", pandas=True)
    assert cols == ["projid", "tstamp", "filename", "epoch", "step", "lr", "loss"]
    assert flor_eval(repo, "type(flor.dataframe('lr', 'loss')).__name__", pandas=True) == "DataFrame"

    rows = dataframe(repo, "lr", "loss")
    assert len(rows) == 9
    assert {r["projid"] for r in rows} == {"proj"}
    assert {r["filename"] for r in rows} == {"train.py"}
    assert len({r["tstamp"] for r in rows}) == 1
    assert [(r["epoch"], r["step"]) for r in rows] == [(e, s) for e in range(3) for s in range(3)]
    assert all(r["lr"] == 0.5 for r in rows)
    for r in rows:
        assert r["loss"] == pytest.approx(expected_loss(r["epoch"], r["step"]))

    # An epoch-level value repeats on every step row of its epoch.
    rows = dataframe(repo, "w", "loss")
    w_by_epoch = {}
    for r in rows:
        w_by_epoch.setdefault(r["epoch"], set()).add(r["w"])
    assert all(len(v) == 1 for v in w_by_epoch.values()) and len(w_by_epoch) == 3


def test_dataframe_can_add_the_diverged_flag(repo):
    run_script(repo, README_SCRIPT, "--kwargs", "lr=0.5", "epochs=2")
    cols = flor_eval(repo, "list(flor.dataframe('w', diverged=True).columns)", pandas=True)
    assert cols == ["projid", "tstamp", "filename", "epoch", "w", "diverged"]
    flags = flor_eval(repo, "[bool(x) for x in flor.dataframe('w', diverged=True)['diverged']]", pandas=True)
    assert flags == [False, False], "forward values never diverge"
    assert "diverged" not in flor_eval(repo, "list(flor.dataframe('w').columns)", pandas=True)


def test_dataframe_without_names_is_one_row_per_run(repo):
    run_script(repo, README_SCRIPT, "--kwargs", "lr=0.5", "epochs=1")
    run_script(repo, README_SCRIPT, "--kwargs", "epochs=2")
    rows = dataframe(repo)
    assert len(rows) == 2
    assert len({r["tstamp"] for r in rows}) == 2
    by_epochs = {r["epochs"]: r for r in rows}
    assert by_epochs[1]["lr"] == 0.5
    assert by_epochs[2]["lr"] == 1e-3
    assert {"projid", "tstamp", "filename", "lr", "epochs"} <= set(rows[0])
    # Two runs, 1 + 2 epochs of 3 steps.
    assert len(dataframe(repo, "loss")) == 9


def test_automatic_commit_at_exit(repo):
    run_script(repo, README_SCRIPT)
    runs = query(repo, "SELECT tstamp, filename, status, commit_sha FROM runs")
    assert len(runs) == 1
    assert runs[0]["status"] == "finished"
    assert runs[0]["filename"] == "train.py"
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/runs/").split()
    assert len(refs) == 1
    # The record file was published into the run's ref and left .flor/runs/.
    assert not list((repo / ".flor" / "runs").glob("*.jsonl"))
    files = git(repo, "ls-tree", "-r", "--name-only", refs[0]).split()
    assert "train.py" in files
    assert any(f.startswith(".flor/records/") and f.endswith(".jsonl") for f in files)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ([], {"i": 1, "f": 1.5, "b": False, "s": "x"}),
        (["i=5", "f=2", "b=true", "s=hello"], {"i": 5, "f": 2.0, "b": True, "s": "hello"}),
        (["b=1", "f=1e-3", "i=-7", "s=12"], {"i": -7, "f": 0.001, "b": True, "s": "12"}),
        (["b=False", "s=a b"], {"i": 1, "f": 1.5, "b": False, "s": "a b"}),
    ],
)
def test_arg_kwargs_coerced_to_the_default_type(repo, kwargs, expected):
    src = """
    import json
    import flordb as flor
    vals = {"i": flor.arg("i", 1), "f": flor.arg("f", 1.5), "b": flor.arg("b", False), "s": flor.arg("s", "x")}
    print(json.dumps({k: [v, type(v).__name__] for k, v in vals.items()}))
    """
    args = ["--kwargs", *kwargs] if kwargs else []
    p = run_script(repo, src, *args)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert {k: v for k, (v, _) in got.items()} == expected
    assert {k: t for k, (_, t) in got.items()} == {"i": "int", "f": "float", "b": "bool", "s": "str"}
    # Recorded as run-level args with their types.
    (row,) = dataframe(repo)
    assert {k: row[k] for k in expected} == expected


def test_iteration_context_manager(repo):
    src = """
    import flordb as flor
    for i in [0, 2, 4]:
        with flor.iteration("epoch", i, None):
            for s in flor.loop("step", range(2)):
                flor.log("loss", i * 10 + s)
            flor.log("acc", i / 10)
    """
    p = run_script(repo, src)
    assert "epoch: 2, step: 1, loss: 21" in p.stdout.splitlines()
    assert "epoch: 4, acc: 0.4" in p.stdout.splitlines()
    rows = dataframe(repo, "loss", "acc")
    assert [(r["epoch"], r["step"], r["loss"], r["acc"]) for r in rows] == [
        (i, s, i * 10 + s, i / 10) for i in [0, 2, 4] for s in range(2)
    ]


def test_checkpointing_records_every_outer_iteration(repo):
    run_script(repo, README_SCRIPT, "--kwargs", "epochs=3")
    cps = query(
        repo,
        "SELECT l.loop_iteration AS epoch, c.name AS name, c.format AS format FROM checkpoints c "
        "JOIN loops l ON l.tstamp = c.tstamp AND l.ctx_id = c.ctx_id ORDER BY epoch, name",
    )
    assert [(c["epoch"], c["name"]) for c in cps] == [
        (e, n) for e in range(3) for n in ["__rng__", "model", "optimizer"]
    ]
    fmt = {c["name"]: c["format"] for c in cps}
    assert fmt["model"] == "pickle.state_dict"
    assert fmt["optimizer"] == "pickle"


def test_commit_then_more_logging_starts_a_new_run(repo):
    src = """
    import flordb as flor
    lr = flor.arg("lr", 0.1)
    for e in flor.loop("epoch", range(2)):
        flor.log("loss", e)
    flor.log("final", "first")
    flor.commit()
    print("RUNS", len(flor.query("SELECT * FROM runs")), flush=True)
    for e in flor.loop("epoch", range(3)):
        flor.log("loss", 10 + e)
    flor.log("final", "second")
    """
    p = run_script(repo, src)
    assert "RUNS 1" in p.stdout
    assert "final: first" in p.stdout.splitlines()
    runs = query(repo, "SELECT tstamp, status FROM runs ORDER BY tstamp")
    assert [r["status"] for r in runs] == ["finished", "finished"]
    t1, t2 = runs[0]["tstamp"], runs[1]["tstamp"]
    assert t1 != t2
    rows = dataframe(repo, "loss")
    assert [(r["tstamp"], r["epoch"], r["loss"]) for r in rows] == [
        (t1, 0, 0),
        (t1, 1, 1),
        (t2, 0, 10),
        (t2, 1, 11),
        (t2, 2, 12),
    ]
    per_run = {r["tstamp"]: r for r in dataframe(repo)}
    assert per_run[t1]["final"] == "first" and per_run[t2]["final"] == "second"
    assert per_run[t1]["lr"] == 0.1
    assert len(git(repo, "for-each-ref", "refs/flor/runs/").splitlines()) == 2


def test_query_sql(repo):
    run_script(repo, README_SCRIPT, "--kwargs", "epochs=2")
    rows = query(
        repo,
        "SELECT value_name, kind, COUNT(*) AS n FROM logs WHERE kind IN ('log', 'arg') "
        "GROUP BY value_name, kind ORDER BY value_name",
    )
    assert rows == [
        {"value_name": "epochs", "kind": "arg", "n": 1},
        {"value_name": "loss", "kind": "log", "n": 6},
        {"value_name": "lr", "kind": "arg", "n": 1},
        {"value_name": "w", "kind": "log", "n": 2},
    ]
    assert query(repo, "SELECT COUNT(*) AS n FROM loops WHERE loop_name = 'step'") == [{"n": 6}]
    # Errors surface as flor.FlorError, and the store is read-only.
    p = run_python(
        repo,
        """
        import flordb as flor
        for sql in ["SELEC nonsense", "DELETE FROM runs"]:
            try:
                flor.query(sql)
            except flor.FlorError as e:
                print("FlorError:", e)
            else:
                print("no error for", sql)
        print(len(flor.query("SELECT * FROM runs")))
        """,
    )
    out = p.stdout.splitlines()
    assert out[0].startswith("FlorError:") and out[1].startswith("FlorError:"), p.stdout
    assert out[2] == "1"


def test_without_pandas_dataframe_returns_list_of_dicts(repo):
    run_script(repo, README_SCRIPT, "--kwargs", "epochs=2")
    p = run_python(
        repo,
        """
        import sys
        sys.modules["pandas"] = None
        import json
        import flordb as flor
        df = flor.dataframe("lr", "loss")
        q = flor.query("SELECT tstamp, status FROM runs")
        print(json.dumps({"df_type": type(df).__name__, "row_types": sorted({type(r).__name__ for r in df}),
                          "df": df, "q_type": type(q).__name__, "q": q,
                          "empty": flor.query("SELECT * FROM runs WHERE 0")}))
        """,
    )
    out = json.loads(p.stdout)
    assert out["df_type"] == "list" and out["row_types"] == ["dict"]
    assert len(out["df"]) == 6
    assert list(out["df"][0]) == ["projid", "tstamp", "filename", "epoch", "step", "lr", "loss"]
    assert out["df"][1]["loss"] == pytest.approx(0.5)
    assert out["q_type"] == "list" and out["q"][0]["status"] == "finished"
    assert out["empty"] == []


def test_logged_value_types_round_trip(repo):
    src = """
    import numpy as np
    import flordb as flor
    for epoch in flor.loop("epoch", range(1)):
        flor.log("f32", np.float32(0.5))
        flor.log("i64", np.int64(7))
        flor.log("arr", np.arange(3))
        flor.log("nested", {"a": [1, 2], "b": "c"})
        flor.log("flag", True)
        flor.log("text", "hi")
        flor.log("inf", float("inf"))
        flor.log("big", 2**70)
    """
    run_script(repo, src)
    p = run_python(
        repo,
        """
        import json, math, flordb as flor
        (row,) = flor.dataframe("f32", "i64", "arr", "nested", "flag", "text", "inf", "big")
        print(json.dumps({k: [repr(v), type(v).__name__] for k, v in row.items()}))
        """,
        hide_pandas=True,
    )
    row = json.loads(p.stdout)
    assert row["f32"] == ["0.5", "float"]
    assert row["i64"] == ["7", "int"]
    assert row["arr"] == ["[0, 1, 2]", "list"]
    assert row["nested"] == [repr({"a": [1, 2], "b": "c"}), "dict"]
    assert row["flag"] == ["True", "bool"]
    assert row["text"] == ["'hi'", "str"]
    assert row["inf"] == ["inf", "float"]
    assert row["big"][0].strip("'") == str(2**70)  # beyond i64: kept exactly, as text


def test_log_none_is_kept(repo):
    src = """
    import flordb as flor
    for epoch in flor.loop("epoch", range(2)):
        flor.log("maybe", None)
        flor.log("x", epoch)
    """
    run_script(repo, src)
    p = run_python(
        repo,
        """
        import flordb as flor
        print(flor.dataframe("maybe", "x"))
        """,
        hide_pandas=True,
    )
    assert "unreadable" not in p.stderr, p.stderr
    assert "'maybe': None" in p.stdout


def test_script_in_a_subfolder_run_from_outside_the_repo(repo, tmp_path):
    (repo / "src").mkdir()
    src = """
    import flordb as flor
    for epoch in flor.loop("epoch", range(2)):
        flor.log("loss", epoch)
    """
    run_script(repo, src, name="src/train.py")  # from the repository root
    p = subprocess.run(
        [PYTHON, str(repo / "src" / "train.py")], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["proj"]  # nothing written where it ran
    runs = query(repo, "SELECT filename, status FROM runs")
    assert runs == [{"filename": "src/train.py", "status": "finished"}] * 2
    assert len(dataframe(repo, "loss")) == 4


def test_query_while_recording_sees_the_run_running(repo):
    src = """
    import flordb as flor
    for epoch in flor.loop("epoch", range(3)):
        flor.log("loss", epoch)
        if epoch == 1:
            print("MID", list(flor.query("SELECT status FROM runs")["status"]),
                  len(flor.dataframe("loss")), flush=True)
    """
    p = run_script(repo, src)
    assert "MID ['running'] 1" in p.stdout  # epoch 0 is on disk, epoch 1 not yet
    assert query(repo, "SELECT status FROM runs") == [{"status": "finished"}]
    assert len(dataframe(repo, "loss")) == 3
