"""`flor.loop` semantics: nesting, early exits, errors, and the progress bar."""

import importlib.util
import os
import subprocess

import pytest

from conftest import PYTHON, TIMEOUT, run_on_tty, dataframe, query, run_script, write_script


def test_break_and_exceptions_leave_the_loop_cleanly(repo):
    out = run_script(
        repo,
        """
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(10)):
                if s == 2:
                    break
                flor.log("a", s)
            try:
                for s in flor.loop("inner", iter(range(5))):
                    if s == 1:
                        raise KeyError("boom")
            except KeyError:
                pass
            flor.log("after", e)
        flor.log("end", 1)
        """,
    ).stdout
    assert out.splitlines() == [
        "epoch: 0, step: 0, a: 0",
        "epoch: 0, step: 1, a: 1",
        "epoch: 0, after: 0",
        "epoch: 1, step: 0, a: 0",
        "epoch: 1, step: 1, a: 1",
        "epoch: 1, after: 1",
        "end: 1",
    ]
    rows = dataframe(repo, "a", "after")
    # FlorDB's pivot: the epoch-level value beside each step of its epoch.
    assert [(r["epoch"], r["step"], r["a"], r["after"]) for r in rows] == [
        (0, 0, 0, 0), (0, 1, 1, 0), (1, 0, 0, 1), (1, 1, 1, 1)
    ]
    assert query(repo, "SELECT status FROM runs") == [{"status": "finished"}]


def test_loop_over_generators_and_errors_from_the_iterable(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        def gen():
            yield "x"
            yield "y"
            raise ValueError("the data loader broke")
        try:
            for v in flor.loop("batch", gen()):
                flor.log("v", v)
        except ValueError as e:
            print("caught:", e)
        try:
            flor.loop("bad", 42)
        except TypeError as e:
            print("TypeError")
        flor.log("still", True)
        """,
    ).stdout
    assert p.splitlines() == ["batch: x, v: x", "batch: y, v: y", "caught: the data loader broke", "TypeError", "still: True"]


def test_nonzero_sys_exit_marks_the_run_failed(repo):
    p = run_script(
        repo,
        """
        import sys
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            flor.log("x", e)
        sys.exit(3)
        """,
        check=False,
    )
    assert p.returncode == 3
    assert query(repo, "SELECT status FROM runs") == [{"status": "failed"}]
    assert [r["x"] for r in dataframe(repo, "x")] == [0, 1]


def test_zero_sys_exit_is_a_finished_run(repo):
    run_script(
        repo,
        """
        import sys
        import flordb as flor
        flor.log("x", 1)
        sys.exit(0)
        """,
    )
    assert query(repo, "SELECT status FROM runs") == [{"status": "finished"}]


@pytest.mark.skipif(importlib.util.find_spec("tqdm") is None, reason="tqdm not installed")
def test_progress_bar_on_a_terminal(repo):
    """On a terminal the outermost loop shows a tqdm bar, and log lines print
    above it; redirected, there is no bar."""
    script = """
    import flordb as flor
    for e in flor.loop("epoch", range(3)):
        for s in flor.loop("step", range(2)):
            pass
        flor.log("loss", e / 2)
    """
    write_script(repo, script)
    tty = run_on_tty(repo)
    assert "epoch: 100%" in tty and "3/3" in tty, tty
    for e in range(3):
        assert f"epoch: {e}, loss: {e / 2}" in tty
    redirected = run_script(repo, script)
    assert "%" not in redirected.stdout + redirected.stderr
    assert redirected.stdout.splitlines() == [f"epoch: {e}, loss: {e / 2}" for e in range(3)]


@pytest.mark.skipif(importlib.util.find_spec("IPython") is None, reason="IPython not installed")
def test_ipython_commits_after_each_cell_that_logged(repo):
    code = """
    import json
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell("import flordb as flor")
    shell.run_cell("for e in flor.loop('epoch', range(2)):\\n    flor.log('x', e)")
    shell.run_cell("flor.log('y', 5)")
    shell.run_cell("r = flor.query('SELECT tstamp, status FROM runs ORDER BY tstamp')")
    print("@@" + json.dumps(shell.user_ns["r"].to_dict(orient="records")))
    """
    p = subprocess.run(
        [PYTHON, "-c", __import__("textwrap").dedent(code)], cwd=repo, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert p.returncode == 0, p.stderr
    import json

    runs = json.loads(p.stdout.split("@@", 1)[1])
    # One run per cell that logged, each committed when its cell ended.
    assert [r["status"] for r in runs] == ["finished", "finished"]
