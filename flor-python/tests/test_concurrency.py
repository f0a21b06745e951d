"""Two scripts recording in one repository at the same time both keep all
their records."""

import subprocess

import pytest

from conftest import PYTHON, TIMEOUT, dataframe, git, query, write_script

SCRIPT = """
import os, sys, time
import flordb as flor

me, peer = sys.argv[1], sys.argv[2]
open(f"ready-{{me}}", "w").close()
deadline = time.time() + 20
while not os.path.exists(f"ready-{{peer}}"):  # both record at the same time
    assert time.time() < deadline, "peer never started"
    time.sleep(0.005)

tag = flor.arg("tag", "none")
state = {{"n": 0}}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range({epochs})):
        for step in flor.loop("step", range(3)):
            flor.log("loss", {base} + epoch * 10 + step)
            state["n"] += 1
            time.sleep(0.005)
        flor.log("acc", {base} + epoch)
"""

EPOCHS = 6


@pytest.mark.parametrize("same_file", [False, True], ids=["two-scripts", "same-script-twice"])
def test_concurrent_runs_keep_all_records(repo, same_file):
    if same_file:
        write_script(repo, SCRIPT.format(epochs=EPOCHS, base="int(flor.arg('base', 0))"), "train.py")
        cmds = [
            [PYTHON, "train.py", "a", "b", "--kwargs", "tag=a", "base=0"],
            [PYTHON, "train.py", "b", "a", "--kwargs", "tag=b", "base=1000"],
        ]
    else:
        write_script(repo, SCRIPT.format(epochs=EPOCHS, base=0), "a.py")
        write_script(repo, SCRIPT.format(epochs=EPOCHS, base=1000), "b.py")
        cmds = [
            [PYTHON, "a.py", "a", "b", "--kwargs", "tag=a"],
            [PYTHON, "b.py", "b", "a", "--kwargs", "tag=b"],
        ]
    # The query database exists before they start (see the next test for a
    # race on its creation).
    assert query(repo, "SELECT * FROM runs") == []
    procs = [subprocess.Popen(c, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err

    runs = query(repo, "SELECT tstamp, filename, status FROM runs")
    assert len(runs) == 2 and len({r["tstamp"] for r in runs}) == 2
    assert all(r["status"] == "finished" for r in runs)

    by_tag = {}
    for r in dataframe(repo, "tag", "loss", "acc"):
        by_tag.setdefault(r["tag"], []).append(r)
    assert sorted(by_tag) == ["a", "b"]
    for tag, base in [("a", 0), ("b", 1000)]:
        rows = by_tag[tag]
        assert len({r["tstamp"] for r in rows}) == 1
        assert [(r["epoch"], r["step"], r["loss"], r["acc"]) for r in rows] == [
            (e, s, base + e * 10 + s, base + e) for e in range(EPOCHS) for s in range(3)
        ]
    n = query(repo, "SELECT tstamp, COUNT(*) AS n FROM checkpoints WHERE name = 'state' GROUP BY tstamp")
    assert [r["n"] for r in n] == [EPOCHS, EPOCHS]
    assert len(git(repo, "for-each-ref", "refs/flor/runs/").splitlines()) == 2
    assert not list((repo / ".flor" / "runs").glob("*.jsonl"))


FIRST_RUN = """
import os, sys, time
me = sys.argv[1]
open(f"ready-{me}", "w").close()
deadline = time.time() + 20
while len([f for f in os.listdir(".") if f.startswith("ready-")]) < 2:
    assert time.time() < deadline, "peer never started"
    time.sleep(0.001)
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", epoch)
"""


def test_concurrent_first_runs_in_a_fresh_repository(tmp_path):
    """Two runs starting at the same instant in a repository that has no
    query database yet (racy: a few fresh repositories are tried)."""
    for trial in range(4):
        repo = tmp_path / f"proj{trial}"
        repo.mkdir()
        git(repo, "init", "-q")
        write_script(repo, FIRST_RUN)
        procs = [
            subprocess.Popen([PYTHON, "train.py", name], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for name in "ab"
        ]
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err
        assert [r["status"] for r in query(repo, "SELECT status FROM runs")] == ["finished"] * 2
        assert len(dataframe(repo, "loss")) == 4


STAMPEDE = """
import os, sys, time
me, n = sys.argv[1], int(sys.argv[2])
open(f"ready-{me}", "w").close()
deadline = time.time() + 30
while not os.path.exists("go"):  # released together by one barrier
    assert time.time() < deadline, "never released"
    time.sleep(0.0005)
import flordb as flor
tag = flor.arg("tag", "none")
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", int(me) * 10 + epoch)
"""


def test_twenty_runs_started_by_one_barrier_all_record_publish_and_query(repo):
    """Twenty processes start their runs at the same instant, three times
    over: every one starts, publishes under its own ref and is queryable (the
    loser of a ref race used to die on git's lock file)."""
    import time

    n, rounds = 20, 3
    write_script(repo, STAMPEDE)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    for r in range(rounds):
        for f in repo.glob("ready-*"):
            f.unlink()
        (repo / "go").unlink(missing_ok=True)
        procs = [
            subprocess.Popen(
                [PYTHON, "train.py", str(r * n + i), str(n), "--kwargs", f"tag={r}-{i}"],
                cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for i in range(n)
        ]
        deadline = time.time() + TIMEOUT
        while len(list(repo.glob("ready-*"))) < n and time.time() < deadline:
            time.sleep(0.005)
        (repo / "go").touch()
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, f"round {r}, run {i}: {err}"

    total = n * rounds
    runs = query(repo, "SELECT tstamp, status FROM runs")
    assert len(runs) == total and len({x["tstamp"] for x in runs}) == total
    assert all(x["status"] == "finished" for x in runs)
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/runs/").split()
    assert sorted(x.removeprefix("refs/flor/runs/") for x in refs) == sorted(
        x["tstamp"].replace(":", "-") for x in runs
    )
    rows = dataframe(repo, "tag", "loss")
    got = sorted((x["tag"], x["loss"]) for x in rows)
    want = sorted((f"{r}-{i}", (r * n + i) * 10 + e) for r in range(rounds) for i in range(n) for e in range(2))
    assert got == want
    assert not list((repo / ".flor" / "runs").glob("*.jsonl"))
