"""Deferred training steps: what a training loop's `flor.log` and `flor.loop`
steps record and print is exactly what immediate calls would have written,
in the same order, whether the batches of steps are applied by flor's worker
thread (the default with more than one CPU) or on the training thread
(`FLOR_STEP_THREAD=0`)."""

import json
import math

import pytest

from conftest import flor_eval, run_script

# More steps per loop than one batch (256), logs of ints, floats (finite and
# not), bools and text (text takes the immediate path), loop items that are
# ints, floats, bools and objects, user output between the lines, a name first
# logged in the middle of a loop, and a replaced stdout.
SCRIPT = """
import contextlib, io, sys
import flordb as flor

for e in flor.loop("epoch", range(2)):
    for s in flor.loop("step", range(700)):
        flor.log("loss", 1.0 / (s + 1) + e)
        if s % 7 == 0:
            flor.log("n", s * 3 - 5)
        if s == 300:
            print("user", e, s)
            flor.log("late", float("inf") if e == 0 else float("nan"))
            flor.log("word", "text")
            flor.log("flag", True)
        if s == 500:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                flor.log("hidden", 1e-07)
            flor.log("seen", buf.getvalue().strip())
    for lr in flor.loop("lr", [0.5, 1e-05, 2.0 ** 70]):
        flor.log("x", lr * 2)
    for b in flor.loop("b", [True, False]):
        flor.log("y", -0.0 if b else 1e16)
    for o in flor.loop("o", [(1, 2), None]):
        flor.log("z", 7)
    flor.log("acc", 0.25 * e)
"""


def _expected_lines():
    lines = []
    for e in range(2):
        for s in range(700):
            p = f"epoch: {e}, step: {s}, "
            lines.append(p + f"loss: {1.0 / (s + 1) + e!r}")
            if s % 7 == 0:
                lines.append(p + f"n: {s * 3 - 5}")
            if s == 300:
                lines.append(f"user {e} {s}")
                lines.append(p + ("late: inf" if e == 0 else "late: nan"))
                lines.append(p + "word: text")
                lines.append(p + "flag: True")
            if s == 500:
                lines.append(p + f"seen: {p}hidden: 1e-07")
        for lr in [0.5, 1e-05, 2.0**70]:
            lines.append(f"epoch: {e}, lr: {lr!r}, x: {lr * 2!r}")
        for b in [True, False]:
            lines.append(f"epoch: {e}, b: {b}, y: {(-0.0 if b else 1e16)!r}")
        for i in range(2):
            lines.append(f"epoch: {e}, o: {i}, z: 7")
        lines.append(f"epoch: {e}, acc: {0.25 * e!r}")
    return lines


@pytest.mark.parametrize("thread", ["1", "0"])
def test_deferred_steps_print_and_record_as_immediate_calls(repo, monkeypatch, thread):
    monkeypatch.setenv("FLOR_STEP_THREAD", thread)
    out = run_script(repo, SCRIPT).stdout
    assert out.splitlines() == _expected_lines()

    rows = flor_eval(repo, 'flor.dataframe("loss", "n", "late")')
    steps = [r for r in rows if r.get("step") is not None]
    assert len(steps) == 2 * 700
    by_pos = {(r["epoch"], r["step"]): r for r in steps}
    for e in range(2):
        for s in range(700):
            r = by_pos[(e, s)]
            assert r["loss"] == 1.0 / (s + 1) + e
            assert r["n"] == (s * 3 - 5 if s % 7 == 0 else None)
    late0, late1 = by_pos[(0, 300)]["late"], by_pos[(1, 300)]["late"]
    assert late0 == math.inf and late1 != late1  # inf, nan

    items = flor_eval(repo, 'flor.dataframe("x", "y", "z")')
    assert [(r["epoch"], r["lr"], r["x"]) for r in items if r.get("x") is not None] == [
        (e, i, lr * 2) for e in range(2) for i, lr in enumerate([0.5, 1e-05, 2.0**70])
    ]
    assert [(r["b"], r["y"]) for r in items if r.get("y") is not None] == [(0, -0.0), (1, 1e16)] * 2
    assert [(r["o"], r["z"]) for r in items if r.get("z") is not None] == [(0, 7), (1, 7)] * 2


def test_worker_and_training_thread_record_the_same(repo, monkeypatch):
    for thread in ["1", "0"]:
        monkeypatch.setenv("FLOR_STEP_THREAD", thread)
        run_script(repo, SCRIPT)
    names = '"loss", "n", "late", "word", "flag", "seen", "x", "y", "z", "acc"'
    rows = flor_eval(repo, f"flor.dataframe({names})")
    runs = {}
    for r in rows:
        runs.setdefault(r.pop("tstamp"), []).append(json.dumps(r, sort_keys=True))
    assert len(runs) == 2
    a, b = runs.values()
    assert len(a) > 1400 and a == b


def test_fork_while_steps_are_in_flight(repo):
    """A fork (multiprocessing workers, a DataLoader) in the middle of a
    training loop neither hangs nor loses records, in parent or child."""
    out = run_script(
        repo,
        """
        import multiprocessing as mp
        import os
        import flordb as flor

        def square(x):
            return x * x

        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(600)):
                flor.log("v", s * 0.5)
                if s == 400:
                    with mp.get_context("fork").Pool(2) as pool:
                        flor.log("sq", sum(pool.map(square, range(10))))
                    pid = os.fork()
                    if pid == 0:
                        os._exit(0)
                    os.waitpid(pid, 0)
        print("done")
        """,
        timeout=120,
    ).stdout
    assert out.splitlines()[-1] == "done"
    rows = flor_eval(repo, 'flor.dataframe("v", "sq")')
    vs = [(r["epoch"], r["step"], r["v"]) for r in rows if r.get("v") is not None]
    assert vs == [(e, s, s * 0.5) for e in range(2) for s in range(600)]
    assert [r["sq"] for r in rows if r.get("sq") is not None] == [285, 285]


def test_log_takes_its_arguments_like_a_python_function(repo):
    out = run_script(
        repo,
        """
        import flordb as flor

        marker = object()
        assert flor.log("o", marker) is marker
        assert flor.log(name="a", value=1) == 1
        assert flor.log("b", value=2.5) == 2.5
        for call, args, kwargs in [
            ("missing value", ("a",), {}),
            ("missing name", (), {"value": 1}),
            ("too many", ("a", 1, 2), {}),
            ("not str", (1, 2), {}),
            ("twice", ("a", 1), {"name": "x"}),
            ("unknown", ("a",), {"valu": 1}),
        ]:
            try:
                flor.log(*args, **kwargs)
            except TypeError as e:
                print(call, "->", e)
            else:
                print(call, "-> no error")
        print(flor.log.__doc__.splitlines()[0])
        """,
    ).stdout.splitlines()
    assert out[0].startswith("o: <object object at")
    assert out[1:3] == ["a: 1", "b: 2.5"]
    assert out[3:9] == [
        "missing value -> log() missing required argument 'value' (pos 2)",
        "missing name -> log() missing required argument 'name' (pos 1)",
        "too many -> log() takes 2 positional arguments but 3 were given",
        "not str -> log() argument 'name' must be str, not int",
        "twice -> log() got multiple values for argument 'name'",
        "unknown -> log() got an unexpected keyword argument 'valu'",
    ]
    assert out[9].startswith("Records `value` under `name`")
