"""A run killed with SIGKILL keeps every record of its completed outer
iterations, and the next flordb call marks it failed."""

import os
import queue
import signal
import threading
import time

import pytest

from conftest import dataframe, git, query, run_python, start_script

KILL_AT = 3  # the epoch during which the process is killed

LOOP_SCRIPT = """
import time
import flordb as flor
K = {k}
state = {{"epoch": -1}}
lr = flor.arg("lr", 0.1)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(10)):
        print(f"EPOCH {{epoch}}", flush=True)
        for step in flor.loop("step", range(3)):
            flor.log("loss", epoch * 10 + step)
            time.sleep(0.01 if epoch < K else 30)
        state["epoch"] = epoch
        flor.log("acc", epoch)
"""

ITERATION_SCRIPT = """
import time
import flordb as flor
K = {k}
lr = flor.arg("lr", 0.1)
for epoch in range(10):
    with flor.iteration("epoch", epoch, None):
        print(f"EPOCH {{epoch}}", flush=True)
        for step in flor.loop("step", range(3)):
            flor.log("loss", epoch * 10 + step)
            time.sleep(0.01 if epoch < K else 30)
        flor.log("acc", epoch)
"""


def wait_for_line(proc, wanted, timeout=20.0):
    """Reads the process's stdout (in a thread, so that a line buffered in
    the pipe's reader is never missed) until the line ``wanted``."""
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
            if line.rstrip("\n") == wanted:
                return
        lines.put(None)  # EOF

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            proc.kill()
            proc.wait()
            raise AssertionError(f"never saw {wanted!r}; stdout so far: {seen}; stderr: {proc.stderr.read()}")
        seen.append(line)
        if line == wanted:
            return seen


@pytest.mark.parametrize("script", [LOOP_SCRIPT, ITERATION_SCRIPT], ids=["loop", "iteration"])
def test_sigkill_keeps_completed_epochs_and_marks_run_failed(repo, script):
    proc = start_script(repo, script.format(k=KILL_AT))
    try:
        wait_for_line(proc, f"EPOCH {KILL_AT}")
        # While it runs, its record file is on disk under .flor/runs/.
        assert list((repo / ".flor" / "runs").glob("*")), "no record file while the run is recording"
        assert query(repo, "SELECT status FROM runs") == [{"status": "running"}]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # The next flordb call notices the dead process and marks the run failed.
    p = run_python(
        repo,
        """
        import json, flordb as flor
        print(json.dumps(flor.query("SELECT status FROM runs")))
        """,
        hide_pandas=True,
    )
    assert p.stdout.strip() == '[{"status": "failed"}]'
    assert "marked failed" in p.stderr
    assert query(repo, "SELECT status FROM runs") == [{"status": "failed"}]

    rows = dataframe(repo, "lr", "loss")
    assert [(r["epoch"], r["step"], r["loss"]) for r in rows] == [
        (e, s, e * 10 + s) for e in range(KILL_AT) for s in range(3)
    ]
    assert all(r["lr"] == 0.1 for r in rows)
    acc = dataframe(repo, "acc")
    assert [r["acc"] for r in acc] == list(range(KILL_AT))

    # Its records were published to git like a finished run's.
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/runs/").split()
    assert len(refs) == 1
    files = git(repo, "ls-tree", "-r", "--name-only", refs[0]).split()
    assert any(f.startswith(".flor/records/") for f in files)


def test_sigkill_checkpoints_of_completed_epochs_are_loadable(repo):
    proc = start_script(repo, LOOP_SCRIPT.format(k=KILL_AT))
    try:
        wait_for_line(proc, f"EPOCH {KILL_AT}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    p = run_python(
        repo,
        """
        import flordb as flor
        (tstamp,) = [r["tstamp"] for r in flor.query("SELECT tstamp FROM runs")]
        print(flor.load_checkpoint(tstamp, "state"))
        """,
        hide_pandas=True,
    )
    assert p.stdout.strip() == str({"epoch": KILL_AT - 1})
