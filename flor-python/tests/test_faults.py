"""Faults seen from a Python training script: the disk filling up while it
records, and a read-only ``.flor`` folder. (The Rust side's fault tests,
with the query database, replay and killed processes, are in
``tests/faults.rs``.)

A small tmpfs or a read-only bind mount needs root (CI runs as root);
elsewhere the tests fall back to ``RLIMIT_FSIZE`` and permission bits."""

import os
import resource
import signal
import subprocess

import pytest

from conftest import PYTHON, TIMEOUT, _fail_message, dataframe, git, query, write_script

TRAIN = """
import flordb as flor
state = {"w": 0.0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(100000)):
        for step in flor.loop("step", range(64)):
            state["w"] += 0.5
            flor.log("loss", state["w"])
        flor.log("w", state["w"])
"""

SHORT = """
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    flor.log("w", epoch)
"""


def _sh(cmd):
    return subprocess.run(["sh", "-c", cmd], capture_output=True).returncode == 0


def _committed(repo, source):
    write_script(repo, source)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")


def _limit_file_size():
    # 64 KiB per file; a write past it fails with EFBIG instead of a signal.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


def test_a_full_disk_raises_a_clear_error_and_keeps_every_flushed_epoch(repo):
    _committed(repo, TRAIN)
    runs = repo / ".flor" / "runs"
    runs.mkdir(parents=True)
    mounted = os.geteuid() == 0 and _sh(f"mount -t tmpfs -o size=64k flor-test '{runs}'")
    try:
        p = subprocess.run(
            [PYTHON, "train.py"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            preexec_fn=None if mounted else _limit_file_size,
        )
        assert p.returncode != 0, _fail_message("train.py", p)
        (record_file,) = list(runs.iterdir())
        cause = "No space left on device" if mounted else "File too large"
        assert "FlorError" in p.stderr and cause in p.stderr and str(record_file) in p.stderr, p.stderr
        data = record_file.read_bytes()
        assert data.endswith(b"\n"), "a failed write is cut back to the last whole line"
        flushed = data.count(b'"n":"loss"')
        assert flushed >= 64 and flushed % 64 == 0, flushed
        if mounted:
            assert _sh(f"mount -o remount,size=16m '{runs}'")  # space again
        assert [r["status"] for r in query(repo, "SELECT status FROM runs")] == ["failed"]
        rows = query(repo, "SELECT count(*) AS n, count(DISTINCT ctx_id) AS d FROM logs WHERE value_name = 'loss'")
        assert rows == [{"n": flushed, "d": flushed}], "every flushed record, once"
        assert len(dataframe(repo, "w")) == flushed // 64
    finally:
        if mounted:
            _sh(f"umount '{runs}' || umount -l '{runs}'")


def test_a_read_only_flor_folder_raises_a_clear_error_and_changes_nothing(repo):
    _committed(repo, SHORT)
    subprocess.run([PYTHON, "train.py"], cwd=repo, check=True, capture_output=True, timeout=TIMEOUT)
    flor_dir = repo / ".flor"
    refs = git(repo, "for-each-ref", "refs/flor")
    files = sorted(str(p) for p in flor_dir.rglob("*"))
    if os.geteuid() == 0:
        made = _sh(f"mount --bind '{flor_dir}' '{flor_dir}'")
        if made and not _sh(f"mount -o remount,bind,ro '{flor_dir}'"):
            _sh(f"umount '{flor_dir}'")
            made = False
        undo = f"umount '{flor_dir}' || umount -l '{flor_dir}'"
    else:
        made = _sh(f"chmod -R a-w '{flor_dir}'")
        undo = f"chmod -R u+w '{flor_dir}'"
    if not made:
        pytest.skip("cannot make .flor read-only here (no read-only bind mount, no chmod)")
    try:
        p = subprocess.run([PYTHON, "train.py"], cwd=repo, capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode != 0, _fail_message("train.py", p)
        assert "FlorError" in p.stderr and f"{flor_dir / 'runs'} is not writable" in p.stderr, p.stderr
        assert git(repo, "for-each-ref", "refs/flor") == refs, "no snapshot ref left behind"
        assert sorted(str(p) for p in flor_dir.rglob("*")) == files
    finally:
        _sh(undo)
    assert len(query(repo, "SELECT * FROM runs")) == 1
