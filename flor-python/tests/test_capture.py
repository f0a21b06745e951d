"""Automatic capture of output: what a script prints and logs is recorded as
Output records (channels io::stdout, io::stderr, io::log::<level>), one per
line, at the loop position where the line was written."""

import importlib.util
import os
import subprocess

import pytest

from conftest import PYTHON, TIMEOUT, run_on_tty, query, run_python, run_script, write_script


def outputs(repo):
    """Every captured line as (channel, position, text), in record order
    within a channel; position: ``"epoch=0/step=1"`` ('' at run level)."""
    loops = {r["ctx_id"]: r for r in query(repo, "SELECT ctx_id, parent_ctx_id, loop_name, loop_iteration FROM loops")}

    def where(ctx):
        parts = []
        while ctx is not None:
            row = loops[ctx]
            parts.append(f"{row['loop_name']}={row['loop_iteration']}")
            ctx = row["parent_ctx_id"]
        return "/".join(reversed(parts))

    rows = query(repo, "SELECT tstamp, ctx_id, name, value FROM outputs")
    return [(r["name"], where(r["ctx_id"]), r["value"]) for r in rows]


def runs(repo):
    return query(repo, "SELECT tstamp, status FROM runs ORDER BY tstamp")


def on(channel, rows):
    return [(pos, text) for name, pos, text in rows if name == channel]


def test_prints_and_logging_land_at_their_loop_positions(repo):
    p = run_script(
        repo,
        """
        import logging, sys
        import flordb as flor
        print("setup line")
        logging.basicConfig(format="%(levelname)s %(message)s")
        log = logging.getLogger("train")
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(2)):
                print("batch", e, s)
                sys.stderr.write(f"err {e} {s}\\n")
            log.warning("epoch %d done", e)
            logging.error("root says %d", e)
        print("teardown")
        """,
    )
    # The user's output is untouched.
    assert p.stdout.splitlines() == ["setup line", "batch 0 0", "batch 0 1", "batch 1 0", "batch 1 1", "teardown"]
    assert "WARNING epoch 0 done" in p.stderr and "ERROR root says 1" in p.stderr
    rows = outputs(repo)
    assert on("io::stdout", rows) == [
        ("", "setup line"),
        ("epoch=0/step=0", "batch 0 0"),
        ("epoch=0/step=1", "batch 0 1"),
        ("epoch=1/step=0", "batch 1 0"),
        ("epoch=1/step=1", "batch 1 1"),
        ("", "teardown"),
    ]
    assert on("io::stderr", rows) == [(f"epoch={e}/step={s}", f"err {e} {s}") for e in range(2) for s in range(2)]
    # A logger's name prefixes its message; the root logger's does not.
    assert on("io::log::warning", rows) == [("epoch=0", "train: epoch 0 done"), ("epoch=1", "train: epoch 1 done")]
    assert on("io::log::error", rows) == [("epoch=0", "root says 0"), ("epoch=1", "root says 1")]
    assert {r["status"] for r in runs(repo)} == {"finished"}


def test_flor_log_lines_are_values_not_output(repo):
    """flor.log prints its line; the line is recorded once, as a value."""
    p = run_script(
        repo,
        """
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(300)):
                flor.log("loss", s / 4)
            print("user", e)
        flor.log("final", 1)
        """,
    )
    assert "epoch: 1, step: 299, loss: 74.75" in p.stdout.splitlines()
    assert outputs(repo) == [("io::stdout", "epoch=0", "user 0"), ("io::stdout", "epoch=1", "user 1")]


def test_a_logging_record_reaching_a_stream_handler_is_captured_once(repo):
    p = run_script(
        repo,
        """
        import logging, sys
        import flordb as flor
        log = logging.getLogger("data")
        log.addHandler(logging.StreamHandler(sys.stderr))
        log.addHandler(logging.StreamHandler(sys.stdout))
        log.setLevel(logging.INFO)
        log.info("loaded %d rows\\nfrom two files\\n", 10)
        log.debug("not shown, not captured")
        logging.getLogger().warning("root warning")  # no handler: the last-resort one prints it
        """,
    )
    assert p.stdout.count("loaded 10 rows") == 1 and p.stderr.count("loaded 10 rows") == 1
    assert "root warning" in p.stderr
    assert outputs(repo) == [
        ("io::log::info", "", "data: loaded 10 rows"),
        ("io::log::info", "", "from two files"),
        ("io::log::warning", "", "root warning"),
    ]


def test_line_handling(repo):
    """Repaints keep the last, blank lines are skipped, a repeat at the same
    position is kept once, an unfinished line is the run's last."""
    run_script(
        repo,
        """
        import sys
        import flordb as flor
        sys.stdout.write("progress 10%\\rprogress 50%")
        sys.stdout.write("\\rprogress 100%\\n")
        print("")
        print("   ")
        print("windows line", end="\\r\\n")
        print("trailing spaces   ")
        print("a\\nb", "c", sep="|")
        for e in flor.loop("epoch", range(2)):
            print("same")
            print("same")
        print("no newline at exit", end="")
        """,
    )
    assert outputs(repo) == [
        ("io::stdout", "", "progress 100%"),
        ("io::stdout", "", "windows line"),
        ("io::stdout", "", "trailing spaces"),
        ("io::stdout", "", "a"),
        ("io::stdout", "", "b|c"),
        ("io::stdout", "epoch=0", "same"),
        ("io::stdout", "epoch=1", "same"),
        ("io::stdout", "", "no newline at exit"),
    ]


def test_line_and_record_limits(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        flor.set_capture(max_line=8, max_records=4)
        print("x" * 8)
        print("é" * 20)
        for i in range(10):
            print("line", i)
        """,
    )
    assert p.stdout.splitlines()[2:] == [f"line {i}" for i in range(10)], "every line is shown"
    assert outputs(repo) == [
        ("io::stdout", "", "x" * 8),
        ("io::stdout", "", "é" * 8 + " ...[flor: line truncated]"),
        ("io::stdout", "", "line 0"),
        ("io::stdout", "", "line 1"),
    ]
    # One notice, on stderr, not itself captured.
    assert p.stderr.count("captured 4 lines of output") == 1, p.stderr
    assert "max_records" in p.stderr


def test_set_capture(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        print("kept")
        flor.set_capture(False)
        print("not kept")
        flor.set_capture(True, extract=True)
        print("kept again")
        for bad in ({"max_line": 0}, {"max_records": -1}, {"max_line": 1.5}):
            try:
                flor.set_capture(**bad)
            except (flor.FlorError, TypeError) as e:
                print("refused:", type(e).__name__)
        """,
    )
    assert "flor capture --extract" in p.stderr
    assert p.stdout.count("refused:") == 3
    assert [t for _, _, t in outputs(repo)][:2] == ["kept", "kept again"]


def test_an_import_only_script_is_a_run(repo):
    p = run_script(repo, 'import flordb\nprint("hello")\nprint("world")\n')
    assert p.stdout == "hello\nworld\n"
    assert [r["status"] for r in runs(repo)] == ["finished"]
    assert outputs(repo) == [("io::stdout", "", "hello"), ("io::stdout", "", "world")]


def test_no_capture_where_no_run_belongs(repo, monkeypatch):
    # `python -c`: an ad-hoc command is not a run.
    run_python(repo, 'import flordb\nprint("hello")')
    # FLOR_CAPTURE=0 (also false, no): nothing captured, no run started.
    write_script(repo, 'import flordb\nprint("hello")\n')
    for off in ("0", "false", "No"):
        env = dict(os.environ, FLOR_CAPTURE=off)
        p = subprocess.run([PYTHON, "train.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0 and p.stdout == "hello\n", p.stderr
    assert runs(repo) == []
    # With FLOR_CAPTURE=0 a run that logs records its values and no output.
    write_script(repo, 'import sys\nimport flordb as flor\nflor.log("x", 1)\nprint("hi")\nprint(sys.stdout.write is sys.__stdout__.write)\n')
    env = dict(os.environ, FLOR_CAPTURE="0")
    p = subprocess.run([PYTHON, "train.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert len(runs(repo)) == 1 and outputs(repo) == []


def test_config_keys(repo):
    flor_dir = repo / ".flor"
    flor_dir.mkdir()
    (flor_dir / "config.toml").write_text("[capture]\nmax_records = 2\nmax_line = 8\n")
    run_script(repo, 'import flordb\nfor i in range(4):\n    print(i, "line number")\n')
    assert outputs(repo) == [("io::stdout", "", f"{i} line n ...[flor: line truncated]") for i in range(2)]
    # flor.set_capture wins over the file.
    run_script(repo, 'import flordb as flor\nflor.set_capture(max_records=3, max_line=100)\nfor i in range(4):\n    print("x", i)\n')
    last = max(r["tstamp"] for r in runs(repo))
    texts = [r["value"] for r in query(repo, "SELECT tstamp, value FROM outputs") if r["tstamp"] == last]
    assert texts == ["x 0", "x 1", "x 2"]
    # enabled = false: an import-only script leaves no run behind.
    (flor_dir / "config.toml").write_text("[capture]\nenabled = false\n")
    before = len(runs(repo))
    run_script(repo, 'import flordb\nprint("hello")\n')
    assert len(runs(repo)) == before
    # A wrong value is reported with the file, the line and the key; the
    # script's output is still shown.
    (flor_dir / "config.toml").write_text("[capture]\nmax_line = lots\n")
    p = run_script(repo, 'import flordb\nprint("hello")\n')
    assert p.stdout == "hello\n"
    assert "config.toml" in p.stderr and "line 2" in p.stderr and "max_line" in p.stderr, p.stderr
    (flor_dir / "config.toml").write_text("")
    assert len(runs(repo)) == before


def test_a_crash_keeps_the_lines_before_it(repo):
    p = run_script(
        repo,
        """
        import flordb as flor
        for e in flor.loop("epoch", range(3)):
            print("epoch", e, "ok")
            if e == 1:
                print("half a line", end="")
                raise RuntimeError("diverged")
        """,
        check=False,
    )
    assert p.returncode == 1 and "diverged" in p.stderr
    assert [r["status"] for r in runs(repo)] == ["failed"]
    rows = outputs(repo)
    assert on("io::stdout", rows) == [("epoch=0", "epoch 0 ok"), ("epoch=1", "epoch 1 ok"), ("", "half a line")]
    # The traceback went to stderr, which is captured too.
    assert ("", "RuntimeError: diverged") in on("io::stderr", rows)


def test_streams_stay_the_standard_objects(repo):
    p = run_script(
        repo,
        """
        import io, sys
        import flordb
        print(sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__)
        print(sys.stdout.fileno(), sys.stdout.isatty(), type(sys.stdout).__name__)
        sys.stdout.writelines(["a\\n", "b\\n"])
        buf = io.StringIO()
        print("to a buffer", file=buf)
        """,
    )
    assert p.stdout.splitlines()[:2] == ["True True", "1 False TextIOWrapper"]
    assert [t for _, _, t in outputs(repo)] == ["True True", "1 False TextIOWrapper", "a", "b"]


def test_a_stream_refusing_the_hook_gets_a_proxy(repo):
    """A sys.stdout that refuses a `write` attribute (here: __slots__) is
    wrapped instead."""
    run_script(
        repo,
        """
        import sys

        class Slotted:
            __slots__ = ("inner",)
            def __init__(self, inner):
                self.inner = inner
            def write(self, s):
                return self.inner.write(s)
            def flush(self):
                self.inner.flush()

        sys.stdout = Slotted(sys.stdout)
        import flordb
        print("through a proxy")
        """,
    )
    assert outputs(repo) == [("io::stdout", "", "through a proxy")]


@pytest.mark.skipif(importlib.util.find_spec("tqdm") is None, reason="tqdm not installed")
def test_on_a_terminal_the_bar_and_log_lines_are_not_output(repo):
    """On a terminal flor's progress bar (stderr) and its log lines (above
    the bar) are shown; only the user's own print is captured."""
    write_script(
        repo,
        """
        import flordb as flor
        for e in flor.loop("epoch", range(3)):
            print("user line", e)
            flor.log("loss", e / 2)
        """,
    )
    tty = run_on_tty(repo)
    assert "epoch: 100%" in tty and "epoch: 2, loss: 1.0" in tty, tty
    assert outputs(repo) == [("io::stdout", f"epoch={e}", f"user line {e}") for e in range(3)]


def test_a_script_that_only_reads_and_prints_leaves_no_run(repo):
    run_script(repo, 'import flordb as flor\nflor.log("loss", 0.5)\nprint("trained")\n')
    assert len(runs(repo)) == 1
    # Reads and prints: the printed lines start a run that is dropped at exit.
    p = run_script(repo, 'import flordb as flor\nprint(flor.dataframe("loss").to_dict("records"))\n')
    assert "0.5" in p.stdout
    assert len(runs(repo)) == 1
    # Prints after ending its run: no second run.
    run_script(repo, 'import flordb as flor\nflor.log("loss", 0.25)\nflor.commit()\nprint("done")\n')
    assert len(runs(repo)) == 2
    # Reads, then records: a run like any other, its output kept.
    run_script(repo, 'import flordb as flor\nflor.query("SELECT * FROM runs")\nprint("next")\nflor.log("loss", 0.1)\n')
    assert len(runs(repo)) == 3
    assert [t for _, _, t in outputs(repo)] == ["trained", "next"]
