"""Files a script saves (torch.save, numpy.save) and the files it loads in
setup: kept per run by content, listed by flor.checkpoints, loadable with
flor.load_checkpoint, and answered from the record in a replay.

Real torch is not installed here: the torch path is tested with a small
stand-in module named ``torch`` (save/load through pickle) placed next to
the scripts. numpy is real.
"""

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import flor_eval, git, run_python, run_script, write_script

SLOW = 300

# A stand-in for torch: what flordb touches (save, load, the RNG calls of
# its checkpoints), through pickle.
FAKE_TORCH = """
import pickle

class _Cuda:
    @staticmethod
    def is_available():
        return False

cuda = _Cuda()

def save(obj, f, **kwargs):
    if hasattr(f, "write"):
        pickle.dump(obj, f)
    else:
        with open(f, "wb") as out:
            pickle.dump(obj, out)

def load(f, map_location=None, weights_only=None, mmap=None):
    if hasattr(f, "read"):
        return pickle.load(f)
    with open(f, "rb") as inp:
        return pickle.load(inp)

def get_rng_state():
    return b""

def set_rng_state(state):
    pass
"""

# Trains a numpy "model" for 3 epochs, resuming from ckpt.npy with
# --resume, saving it at the end of every epoch (the same bytes twice in a
# row at the last epoch: no change in epoch 2).
TRAIN_NP = """
import sys
import numpy as np
import flordb as flor

w = np.arange(4, dtype=np.float64) * 0.5
if "--resume" in sys.argv:
    w = np.load("ckpt.npy")
for epoch in flor.loop("epoch", range(3)):
    if epoch < 2:
        w = w * 1.5 + 0.25
    flor.log("w", float(w.sum()))
    np.save("ckpt", w)
"""

# The newest version: a new statement that reads the state the loop runs on.
NEWEST_NP = TRAIN_NP.replace(
    '    flor.log("w", float(w.sum()))\n',
    '    flor.log("w", float(w.sum()))\n    flor.log("w_again", float(w.sum()))\n',
)


def _tstamps(repo):
    rows = flor_eval(repo, "flor.query('SELECT tstamp FROM runs ORDER BY tstamp')")
    return [r["tstamp"] for r in rows]


def _kept(repo, tstamp):
    return flor_eval(repo, f"flor.checkpoints({tstamp!r})")


def _object_files(repo, digest):
    return list((repo / ".flor" / "objects" / digest[:2]).glob(digest[2:] + "*"))


@functools.lru_cache(maxsize=None)
def _flor_bin():
    if os.environ.get("FLOR_BIN"):
        return os.environ["FLOR_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or Path(__file__).resolve().parents[2] / "target")
    return str(target / "debug" / "flor")


def _flor(repo, *args, check=True, env=None):
    p = subprocess.run(
        [_flor_bin(), *args], cwd=repo, capture_output=True, text=True, timeout=SLOW, env=env
    )
    if check:
        assert p.returncode == 0, f"flor {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _setup(repo):
    (repo / ".gitignore").write_text("*.npy\n*.npz\n*.pth\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore outputs")


def test_saved_files_are_listed_loadable_and_stored_once(repo):
    _setup(repo)
    run_script(repo, TRAIN_NP)
    (t,) = _tstamps(repo)
    rows = _kept(repo, t)
    files = [r for r in rows if r["kind"] == "file"]
    assert [(r["name"], r["path"], r["iteration"], r["format"]) for r in files] == [
        ("ckpt.npy", "ckpt.npy", i, "numpy.save") for i in range(3)
    ]
    # Epoch 2 saved the same bytes as epoch 1: one object for both.
    assert files[1]["digest"] == files[2]["digest"] != files[0]["digest"]
    assert len(_object_files(repo, files[1]["digest"])) == 1
    assert files[2]["bytes"] == (repo / "ckpt.npy").stat().st_size
    assert not [r for r in rows if r["kind"] == "load"]
    # The kept bytes load back as the array the run saved last.
    got = flor_eval(repo, f"flor.load_checkpoint({t!r}, 'ckpt.npy').tolist()")
    import numpy as np

    assert got == np.load(repo / "ckpt.npy").tolist()
    # The only kept file of a run without checkpointed objects: no name needed.
    assert flor_eval(repo, f"flor.load_checkpoint({t!r}).tolist()") == got
    # A name it does not have: the error names the run and what it has.
    p = run_python(repo, f"import flordb as flor; flor.load_checkpoint({t!r}, 'model')", check=False)
    assert p.returncode != 0 and t in p.stderr and "ckpt.npy" in p.stderr, p.stderr


def test_torch_save_and_setup_load_with_torch_imported_after_flordb(repo):
    _setup(repo)
    write_script(repo, FAKE_TORCH, name="torch.py")
    git(repo, "add", "torch.py")
    git(repo, "commit", "-q", "-m", "fake torch")
    script = """
    import sys
    import flordb as flor
    import torch  # after flordb: wrapped by flordb's import hook

    state = {"w": [1.0, 2.0]}
    if "--resume" in sys.argv:
        state = torch.load("ckpt.pth", weights_only=True)
    for epoch in flor.loop("epoch", range(2)):
        state = {"w": [x * 2 for x in state["w"]]}
        flor.log("w0", state["w"][0])
        torch.save(state, "ckpt.pth")
    """
    run_script(repo, script)
    run_script(repo, script, "--resume")
    first, second = _tstamps(repo)
    rows = _kept(repo, second)
    load = [r for r in rows if r["kind"] == "load"]
    assert [(r["name"], r["iteration"], r["format"], r["stored"]) for r in load] == [
        ("ckpt.pth", None, "torch.load", "whole")
    ]
    # The second run loaded exactly what the first one saved last: no new object.
    saved_by_first = [r for r in _kept(repo, first) if r["kind"] == "file"]
    assert load[0]["digest"] == saved_by_first[-1]["digest"]
    assert flor_eval(repo, f"flor.load_checkpoint({first!r}, 'ckpt.pth')") == {"w": [4.0, 8.0]}
    assert flor_eval(repo, f"flor.load_checkpoint({second!r}, 'ckpt.pth')") == {"w": [16.0, 32.0]}


@pytest.mark.parametrize("isolation", ["auto", "copy"])
def test_a_replay_starts_from_the_bytes_the_run_resumed_from(repo, isolation):
    _setup(repo)
    (repo / ".flor").mkdir(exist_ok=True)
    (repo / ".flor" / "config.toml").write_text(f'[replay]\nisolation = "{isolation}"\n')
    run_script(repo, TRAIN_NP)
    run_script(repo, TRAIN_NP, "--resume")  # resumes from the first run's ckpt.npy
    run_script(repo, TRAIN_NP, "--resume")  # overwrites ckpt.npy again
    a, b, c = _tstamps(repo)
    after_forward = (repo / "ckpt.npy").read_bytes()
    rows = flor_eval(repo, "flor.dataframe('w')")
    forward = sorted((r["tstamp"], r["epoch"], r["w"]) for r in rows)
    write_script(repo, NEWEST_NP)
    out = _flor(repo, "replay", "--apply", "w_again", "--yes", "--jobs", "1").stdout
    assert "FAILED" not in out, out
    assert isolation == "auto" or f"isolation: {isolation}" in out, out
    rows = flor_eval(repo, "flor.dataframe('w', 'w_again')")
    got = sorted((r["tstamp"], r["epoch"], r["w_again"]) for r in rows)
    # Every run's replay, b's included (its ckpt.npy on disk now holds c's
    # end state), recomputed exactly the values its forward run logged.
    assert got == forward
    assert len({t for t, _, _ in got}) == 3
    # The replay's saves went to its private folder: the user's file is as
    # the last forward run left it.
    assert (repo / "ckpt.npy").read_bytes() == after_forward
    # and the replay kept no copies.
    assert [r["kind"] for r in _kept(repo, b)].count("file") == 3


def test_a_changed_setup_load_kept_by_digest_only_is_refused(repo):
    _setup(repo)
    (repo / ".flor").mkdir(exist_ok=True)
    (repo / ".flor" / "config.toml").write_text("[checkpoints]\nkeep_loads_mb = 0\n")
    # A data file no flor run wrote.
    run_python(repo, "import numpy as np; np.save('data.npy', np.arange(5.0))")
    script = """
    import numpy as np
    import flordb as flor

    data = np.load("data.npy")
    for epoch in flor.loop("epoch", range(2)):
        flor.log("s", float(data.sum()) * (epoch + 1))
    """
    run_script(repo, script)
    (t,) = _tstamps(repo)
    (load,) = [r for r in _kept(repo, t) if r["kind"] == "load"]
    assert (load["name"], load["stored"]) == ("data.npy", "missing")
    digest = flor_eval(repo, "flor._flor.file_digest('data.npy')[0]")
    assert load["digest"] == digest
    # The CLI shows its kind; its object was never stored, which is not damage.
    listed = json.loads(_flor(repo, "--format", "json", "checkpoints", "ls").stdout)
    assert [(r["checkpoint"], r["kind"], r["stored"]) for r in listed] == [("load:data.npy", "load", "digest-only")]
    verify = _flor(repo, "checkpoints", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The file changes; a replay cannot know what it held: the plan skips
    # the run, saying why, before anything runs (the dry run too).
    run_python(repo, "import numpy as np; np.save('data.npy', np.arange(6.0))")
    write_script(repo, script.replace('    flor.log("s"', '    flor.log("s2", 1)\n    flor.log("s"'))
    for args in (("--dry-run",), ("--yes", "--jobs", "1")):
        p = _flor(repo, "replay", "--apply", "s2", *args, check=False)
        text = p.stdout + p.stderr
        assert "data.npy" in text and "keep_loads_mb" in text and "other contents" in text, text
        assert "Nothing to replay" in text, text
    print(text)
    p = run_python(repo, "import flordb as flor; flor.dataframe('s2')", check=False)
    assert "no run logged `s2`" in p.stderr, p.stderr



def test_a_setup_load_the_run_never_made_is_refused_unless_asked_to_read_the_disk(repo):
    _setup(repo)
    # The forward run loads nothing in setup; its replay would (an
    # environment-dependent resume block), and cannot know what the file
    # held when the run started.
    run_python(repo, "import numpy as np; np.save('ckpt.npy', np.ones(3))")
    script = """
    import os
    import numpy as np
    import flordb as flor

    w = np.zeros(3)
    if os.environ.get("RESUME"):
        w = np.load("ckpt.npy")
    for epoch in flor.loop("epoch", range(2)):
        flor.log("w", float(w.sum()) + epoch)
    """
    run_script(repo, script)
    newest = script.replace('    flor.log("w"', '    flor.log("w2", float(w.sum()))\n    flor.log("w"')
    write_script(repo, newest)
    env = dict(os.environ, RESUME="1")
    p = _flor(repo, "replay", "--apply", "w2", "--yes", "--jobs", "1", check=False, env=env)
    text = p.stdout + p.stderr
    assert p.returncode != 0, text
    assert "'ckpt.npy'" in text and "did not record" in text and "FLOR_REPLAY_SETUP_LOADS=disk" in text, text
    # Asked to, the replay reads the file as it is now.
    env["FLOR_REPLAY_SETUP_LOADS"] = "disk"
    _flor(repo, "replay", "--apply", "w2", "--yes", "--jobs", "1", env=env)
    assert [r["w2"] for r in flor_eval(repo, "flor.dataframe('w2')")] == [3.0, 3.0]


# Checkpointed objects and a file saved in some iterations only: the file
# records are no restore points, so the replay restores from the
# checkpoints and recomputes the recorded values bit for bit.
TRAIN_CKPT = """
import numpy as np
import flordb as flor

state = {"w": np.arange(3, dtype=np.float64)}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(4)):
        for step in flor.loop("step", range(3)):
            state["w"] = state["w"] * 1.25 + step
        flor.log("w", float(state["w"].sum()))
        if epoch % 2 == 1:
            np.savez("snap.npz", w=state["w"])
"""


def test_files_saved_in_some_iterations_leave_the_restore_points_alone(repo):
    _setup(repo)
    run_script(repo, TRAIN_CKPT)
    (t,) = _tstamps(repo)
    rows = _kept(repo, t)
    assert [(r["kind"], r["iteration"]) for r in rows if r["kind"] == "file"] == [("file", 1), ("file", 3)]
    assert [r["iteration"] for r in rows if r["name"] == "state"] == [0, 1, 2, 3]
    forward = sorted((r["epoch"], r["w"]) for r in flor_eval(repo, "flor.dataframe('w')"))
    write_script(repo, TRAIN_CKPT.replace('        flor.log("w",', '        flor.log("w_again", float(state["w"].sum()))\n        flor.log("w",'))
    out = _flor(repo, "replay", "--apply", "w_again", "--yes", "--jobs", "2").stdout
    assert "FAILED" not in out, out
    got = sorted((r["epoch"], r["w_again"]) for r in flor_eval(repo, "flor.dataframe('w_again')"))
    assert got == forward
    loaded = flor_eval(repo, f"flor.load_checkpoint({t!r}, 'snap.npz')['w'].tolist()")
    assert loaded == __import__("numpy").load(repo / "snap.npz")["w"].tolist()
