"""What `flor.log` prints: FlorDB's line, with Python's own text for values."""

import math
import random
import struct

from flordb import _flor

from conftest import run_script


def _floats():
    rng = random.Random(7)
    fixed = [0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1.5, 100.0, 1e-4, 1e-5, 1.5e-5, 0.00012345, 123456789.0,
             1e15, 1e16, 1e17, 1.2345e16, 9999999999999998.0, 1e22, 1e-300, 5e-324, 1.7976931348623157e308,
             math.pi, -math.e, 2.0 ** 60, 0.30000000000000004, float("inf"), float("-inf"), float("nan")]
    randoms = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    scaled = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-12, 20) for _ in range(20000)]
    return fixed + randoms + scaled


def test_floats_print_as_python_repr():
    for f in _floats():
        assert _flor.py_float_repr(f) == repr(f), f


def test_printed_lines_match_flordb_format(repo):
    out = run_script(
        repo,
        """
        import flordb as flor
        flor.log("lr", 0.001)
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", ["a", "b"]):
                print("user line", e, s)
                flor.log("loss", 1e-05 * (e + 1))
            flor.log("acc", e == 1)
        for x in flor.loop("batch", [(1, 2)]):
            flor.log("big", 2 ** 80)
            flor.log("list", [1, 2.5])
        """,
    ).stdout
    assert out.splitlines() == [
        "lr: 0.001",
        "user line 0 a",
        "epoch: 0, step: a, loss: 1e-05",
        "user line 0 b",
        "epoch: 0, step: b, loss: 1e-05",
        "epoch: 0, acc: False",
        "user line 1 a",
        "epoch: 1, step: a, loss: 2e-05",
        "user line 1 b",
        "epoch: 1, step: b, loss: 2e-05",
        "epoch: 1, acc: True",
        "batch: 0, big: 1208925819614629174706176",
        "batch: 0, list: [1, 2.5]",
    ]


def test_log_follows_a_replaced_stdout(repo):
    out = run_script(
        repo,
        """
        import contextlib, io, sys
        import flordb as flor
        flor.log("a", 1)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            flor.log("b", 2)
        flor.log("c", 3)
        print("captured:", buf.getvalue().strip())
        """,
    ).stdout
    assert out.splitlines() == ["a: 1", "c: 3", "captured: b: 2"]


def test_batched_lines_keep_their_place_among_every_kind_of_write(repo):
    """Log lines are handed to a redirected stdout in blocks; whatever else
    writes to stdout (print, write, writelines, flush, an exception) still
    sees them in order, and the stream is restored when the run ends."""
    p = run_script(
        repo,
        """
        import sys
        import flordb as flor
        for e in flor.loop("epoch", range(2)):
            for s in flor.loop("step", range(3)):
                flor.log("a", s)
                if s == 1:
                    print("print", e, s, flush=True)
                    sys.stdout.write("write\\n")
                    sys.stdout.writelines(["lines\\n"])
            flor.log("b", e)
        for s in flor.loop("more", range(2000)):
            flor.log("c", s)  # more than one block
        flor.log("last", 1)
        flor.commit()
        # (the stream's `write` is flor's capture hook, not the batching one)
        print("restored", sys.stdout.write.__name__ == "write", "flush" not in vars(sys.stdout))
        flor.log("again", 2)
        raise SystemExit("boom")
        """,
        check=False,
    )
    lines = p.stdout.splitlines()
    assert lines[:12] == [
        "epoch: 0, step: 0, a: 0",
        "epoch: 0, step: 1, a: 1",
        "print 0 1",
        "write",
        "lines",
        "epoch: 0, step: 2, a: 2",
        "epoch: 0, b: 0",
        "epoch: 1, step: 0, a: 0",
        "epoch: 1, step: 1, a: 1",
        "print 1 1",
        "write",
        "lines",
    ]
    assert lines[12:14] == ["epoch: 1, step: 2, a: 2", "epoch: 1, b: 1"]
    assert lines[14:2014] == [f"more: {s}, c: {s}" for s in range(2000)]
    assert lines[2014:] == ["last: 1", "restored True True", "again: 2"]
    assert p.returncode == 1 and "boom" in p.stderr
