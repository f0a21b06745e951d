"""FlorDB 4's remaining API on our module: flor.replay (through the flor
command), flor.restore (retired), flor.output_buffer, the module constants,
`python -m flordb ...` and `python train.py --replay_flor ...`.

The command lines flordb builds are checked against a stand-in `flor`
(FLOR_BIN) that records its arguments; the end-to-end replay runs the real
binary (FLOR_BIN, as scripts/test.sh sets it)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PYTHON, TIMEOUT, dataframe, git, run_python, run_script, write_script

FAKE_FLOR = """\
#!{python}
import json, os, sys
with open(os.environ["FAKE_FLOR_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["replay", "--help"]:
    print(os.environ.get("FAKE_FLOR_HELP", "Usage: flor replay --apply NAMES"))
    sys.exit(0)
print(os.environ.get("FAKE_FLOR_PLAN", "Plan: 1 run of train.py"))
if "--dry-run" in sys.argv:
    print("Dry run: nothing was executed.")
    sys.exit(0)
print("Replayed 1 run.")
sys.stderr.write(os.environ.get("FAKE_FLOR_ERR", ""))
sys.exit(int(os.environ.get("FAKE_FLOR_RC", "0")))
"""

TRAIN = """\
import flordb as flor

lr = flor.arg("lr", 0.1)
w = 1.0
for epoch in flor.loop("epoch", range(3)):
    w = w * (1 - lr)
    flor.log("w", w)
print("forward body ran")
"""


@pytest.fixture
def fake_flor(tmp_path, monkeypatch):
    """A stand-in `flor` that records each call's arguments; returns a
    function giving the calls so far."""
    path = tmp_path / "fakeflor"
    path.write_text(FAKE_FLOR.format(python=PYTHON))
    path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FLOR_BIN", str(path))
    monkeypatch.setenv("FAKE_FLOR_LOG", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def test_output_buffer_lists_the_records_not_yet_committed(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("loss", 0.5 * epoch)
        logs = [r for r in flor.output_buffer if r.name == "loss"]
        print([(r.ctx, r.value, r.type) for r in logs])
        print(len(flor.output_buffer) >= 2, bool(flor.output_buffer), logs[0].projid, logs[0].filename)
        flor.commit()
        print(len(flor.output_buffer), bool(flor.output_buffer))
        try:
            flor.output_buffer.append(1)
        except AttributeError:
            print("read-only")
        """,
    )
    lines = [line for line in p.stdout.splitlines() if not line.startswith("epoch:")]
    assert lines == [
        "[([('epoch', 0)], 0.0, 1), ([('epoch', 1)], 0.5, 1)]",
        "True True proj train.py",
        "0 False",
        "read-only",
    ]


def test_restore_is_retired_and_says_so_once(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        flor.restore("ckpt.pth")
        flor.restore("ckpt.pth", "model")
        print("still running")
        """,
    )
    assert p.stdout.splitlines() == ["still running"]
    notes = [line for line in p.stderr.splitlines() if "flor.restore" in line]
    assert len(notes) == 1 and "does nothing" in notes[0]


def test_module_constants_name_the_project(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        print(flor.PROJID, flor.SCRIPTNAME)
        print(flor.CURRDIR)
        print(flor.FLORDIR, flor.RUNS_DIR, flor.OBJSTORE_DIR, flor.DB_PATH, sep="\\n")
        print(flor.VALUE_TYPE_LOG, flor.VALUE_TYPE_IO, flor.VALUE_TYPE_TIME)
        """,
    )
    root = os.path.realpath(repo)
    assert p.stdout.splitlines() == [
        "proj train.py",
        root,
        os.path.join(root, ".flor"),
        os.path.join(root, ".flor", "runs"),
        os.path.join(root, ".flor", "objects"),
        os.path.join(root, ".flor", "flor.db"),
        "1 2 3",
    ]


def test_constants_outside_a_repository_fail_only_when_read(tmp_path):
    p = subprocess.run(
        [PYTHON, "-c", "import flordb as flor\ntry:\n    flor.CURRDIR\nexcept flor.FlorError as e:\n    print('refused:', e)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert p.returncode == 0, p.stderr
    assert "refused:" in p.stdout and "not inside a git repository" in p.stdout


LOGS_GRAD = """\
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(2)):
    flor.log("grad", epoch)
    flor.log("acc", 0.5)
"""


def test_replay_passes_the_selection_to_flor_replay(repo, fake_flor):
    run_script(repo, LOGS_GRAD)
    code = """
        import flordb as flor
        flor.replay(["grad", "acc"], "lr > 0.1", {"epoch": "last"}, {"device": "cpu"}, jobs=2, yes=True)
        class IterSpec:  # FlorDB's shape
            kind, indices = "indices", (0, 3)
        flor.replay("grad", [("epoch", IterSpec())], "lr > 0.1", [("device", "cpu")], yes=True)
        flor.replay(["grad"], narrow_iters=[("step", "none")], where_clause="lr > 0", overrides=["device=cpu"], yes=True)
        flor.replay(["grad"], executor="ray", address="10.0.0.5:6379", yes=True)
        """
    run_python(repo, code)
    root = os.path.realpath(repo)
    calls = fake_flor()
    head = ["-C", root, "replay", "--apply"]
    assert calls == [
        head + ["grad,acc", "--where", "lr > 0.1", "--iter", "epoch=last", "--override", "device=cpu", "--jobs", "2", "--dry-run"],
        head + ["grad,acc", "--where", "lr > 0.1", "--iter", "epoch=last", "--override", "device=cpu", "--jobs", "2", "--yes"],
        head + ["grad", "--where", "lr > 0.1", "--iter", "epoch=0,3", "--override", "device=cpu", "--dry-run"],
        head + ["grad", "--where", "lr > 0.1", "--iter", "epoch=0,3", "--override", "device=cpu", "--yes"],
        head + ["grad", "--where", "lr > 0", "--iter", "step=none", "--override", "device=cpu", "--dry-run"],
        head + ["grad", "--where", "lr > 0", "--iter", "step=none", "--override", "device=cpu", "--yes"],
        head + ["grad", "--executor", "ray", "--address", "10.0.0.5:6379", "--dry-run"],
        head + ["grad", "--executor", "ray", "--address", "10.0.0.5:6379", "--yes"],
    ]


def test_replay_returns_the_applied_names_and_those_its_where_mentions(repo, fake_flor, monkeypatch):
    run_script(repo, LOGS_GRAD)
    monkeypatch.setenv("FAKE_FLOR_PLAN", "Replay plan for grad")
    p = run_python(
        repo,
        """
        import flordb as flor
        df = flor.replay(["@4"], where="lr > 0.05 AND acc > 0.1 AND filename <> 'grad'", yes=True)
        print(list(df.columns))
        """,
    )
    assert p.stdout.splitlines()[-1] == "['projid', 'tstamp', 'filename', 'epoch', 'grad', 'lr', 'acc']"


def test_replay_shows_the_plan_once_and_asks(repo, fake_flor):
    run_script(repo, LOGS_GRAD)
    code = "import flordb as flor\nprint('result:', flor.replay(['grad']))"
    for answer, replays in (("n\n", False), ("y\n", True)):
        p = subprocess.run(
            [PYTHON, "-c", code], cwd=repo, input=answer, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("Plan: 1 run of train.py") == 1
        assert "Dry run" not in p.stdout
        assert "Continue replay [y/N]? " in p.stdout
        assert ("Replayed 1 run." in p.stdout) == replays
        assert ("result: None" in p.stdout) == (not replays)
    assert [c[-1] for c in fake_flor()] == ["--dry-run", "--dry-run", "--yes"]


def test_replay_failure_raises_with_the_commands_message(repo, fake_flor, monkeypatch):
    monkeypatch.setenv("FAKE_FLOR_RC", "5")
    monkeypatch.setenv("FAKE_FLOR_ERR", "flor: run 2026-01-01T00:00:00 could not be replayed: boom\n")
    p = run_python(
        repo,
        "import flordb as flor\ntry:\n    flor.replay(['grad'], yes=True)\nexcept flor.FlorError as e:\n    print('FlorError:', e)",
    )
    assert "FlorError: flor replay failed:" in p.stdout
    assert "could not be replayed: boom" in p.stdout


def test_replay_fills_in_values_through_the_flor_binary(repo):
    if not os.environ.get("FLOR_BIN"):
        pytest.skip("FLOR_BIN (the flor binary) is not set; scripts/test.sh sets it")
    run_script(repo, TRAIN)
    write_script(repo, TRAIN.replace('    flor.log("w", w)\n', '    flor.log("w", w)\n    flor.log("w2", w * w)\n'))
    p = run_python(
        repo,
        "import flordb as flor\ndf = flor.replay(['w2'], yes=True)\nprint('W2', [round(v, 6) for v in df['w2']])",
    )
    assert "W2 [0.81, 0.6561, 0.531441]" in p.stdout
    assert [round(r["w2"], 6) for r in dataframe(repo, "w2")] == [0.81, 0.6561, 0.531441]


def _module(repo, *args, stdin=None):
    return subprocess.run(
        [PYTHON, "-m", "flordb", *args], cwd=repo, input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_python_m_flordb_runs_the_flor_equivalents(repo, fake_flor):
    for args in (["unpack"], ["query", "SELECT 1"], ["dataframe", "loss,acc"], ["capture", "--extract", "--limit", "5"]):
        p = _module(repo, *args)
        assert p.returncode == 0, p.stderr
        assert "flor: running: flor " in p.stderr
    p = _module(repo, "stat")
    assert p.returncode == 0, p.stderr
    assert [line.split(":")[0] for line in p.stdout.splitlines()[:5]] == [
        "architecture", "operating_system", "os_version", "python_version", "in_anaconda"
    ]
    assert fake_flor() == [
        ["rebuild"],
        ["query", "SELECT 1"],
        ["dataframe", "loss", "acc"],
        ["capture", "--extract", "--limit", "5"],
        ["runs"],
    ]


def test_python_m_flordb_replay_takes_both_spellings(repo, fake_flor):
    run_script(repo, LOGS_GRAD)
    p = _module(repo, "replay", "grad", "lr > 0", stdin="y\n")
    assert p.returncode == 0, p.stderr
    p = _module(repo, "replay", "--apply", "grad", "--iter", "epoch=last", "--override", "device=cpu", "--yes")
    assert p.returncode == 0, p.stderr
    root = os.path.realpath(repo)
    assert [c for c in fake_flor() if c[-1] == "--yes"] == [
        ["-C", root, "replay", "--apply", "grad", "--where", "lr > 0", "--yes"],
        ["-C", root, "replay", "--apply", "grad", "--iter", "epoch=last", "--override", "device=cpu", "--yes"],
    ]
    p = _module(repo, "replay", "grad", "--apply", "acc")
    assert p.returncode == 1 and "--where" in p.stderr


def test_replay_flor_replays_the_latest_run_through_flor(repo, fake_flor, monkeypatch):
    run_script(repo, TRAIN)
    run_script(repo, TRAIN, "--kwargs", "lr=0.2")
    latest = dataframe(repo)[-1]["tstamp"]
    monkeypatch.setenv("FAKE_FLOR_HELP", "--apply NAMES  --iter LOOP=SPEC")
    p = subprocess.run(
        [PYTHON, "train.py", "--replay_flor", "--apply", "w2", "--override", "device=cpu"],
        cwd=repo, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert p.returncode == 0, p.stderr
    assert "forward body ran" not in p.stdout  # the script's body does not run forward
    assert f"flor replay --script train.py --apply w2 --where \"tstamp = '{latest}'\"" in p.stdout
    assert fake_flor()[-1] == [
        "replay", "--script", "train.py", "--apply", "w2", "--where", f"tstamp = '{latest}'", "--force", "--yes",
        "--override", "device=cpu", "--iter", "epoch=last",
    ]
    assert len(dataframe(repo)) == 2  # no run recorded by the replaying process


@pytest.mark.parametrize(
    "args, says",
    [
        (["--replay_flor"], "needs --apply"),
        (["--replay_flor", "--apply", "w2", "--kwargs", "lr=0.3"], "--kwargs cannot be combined"),
    ],
)
def test_replay_flor_refusals_say_what_to_run(repo, fake_flor, args, says):
    run_script(repo, TRAIN)
    p = subprocess.run([PYTHON, "train.py", *args], cwd=repo, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 2
    assert says in p.stderr
    assert "forward body ran" not in p.stdout
