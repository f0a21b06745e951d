#!/usr/bin/env python3
"""Compatibility suite: the same FlorDB 4 scripts and notebook cells under
the `flordb` package from PyPI (the reference) and under ours, compared on
what a user sees.

Both packages are imported as `flordb`, so each runs in its own virtualenv:
ours (`--ours PYTHON`, default the interpreter running this script) and the
reference's throwaway venv (`--ref-venv`, default
~/.cache/flor/flordb-compat-venv, created with `pip install flordb==4.0.1`
when missing or broken and reused otherwise; see scripts/bench_vs_flordb.py,
whose venv handling this reuses). Ours needs the `flor` command for replays
(`--flor-bin`, default $FLOR_BIN, else target/debug/flor of the shared
target directory).

Every case runs in a fresh temporary git repository per package: its steps
(script runs, notebook cells run one by one through IPython's
InteractiveShell, edits, `python -m flordb ...` commands with an answer on
stdin), then a probe that reads back the views the case compares:

- `stdout`: the lines the steps printed;
- `dataframe:NAMES`: `flor.dataframe(*NAMES)`: same columns, same values
  (cells compared as the text Python prints for them);
- `io:CHANNEL`: `flor.io(CHANNEL)` rows (skipped, with the reason shown,
  while our module has no `flor.io`).

Where the packages differ on purpose, the difference is an entry of
DIFFERENCES (what differs and why) with a rule the comparison applies: a
line only one side prints, a column only one side has, values the
reference keeps as text. A difference no entry explains fails the case; an
entry no case used is reported as stale. `--readme` prints the README's
"Coming from FlorDB" table, made from the same entries.

Uses only the standard library: run it with any python3.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_vs_flordb as bench  # noqa: E402  (its venv handling)

DEFAULT_REF_VENV = os.path.join(os.path.expanduser("~"), ".cache", "flor", "flordb-compat-venv")
REF_SPEC = "flordb==4.0.1"
TIMEOUT = 120  # seconds per step


# --- The cases -----------------------------------------------------------------


@dataclass
class Step:
    """One thing a user does: `run` a script (`args`), run notebook `cells`,
    `edit` a file (`path`, `text`, left uncommitted), or run `python ARGS`
    with `stdin` (ours: `flor FLOR` instead, when given). `compare`:
    whether its stdout is part of the `stdout` view."""

    kind: str
    args: list = field(default_factory=list)
    cells: list = field(default_factory=list)
    path: str = ""
    text: str = ""
    stdin: str = ""
    compare: bool = True
    flor: list = field(default_factory=list)  # ours runs `flor ARGS` instead, when given


@dataclass
class Case:
    name: str
    doc: str
    files: dict
    steps: list
    views: list
    needs: tuple = ()  # features of our module: "io"


TRAIN = """\
import flordb as flor

lr = flor.arg("lr", 0.5)
epochs = flor.arg("epochs", 2)
for epoch in flor.loop("epoch", range(epochs)):
    for step in flor.loop("step", range(3)):
        loss = lr / (1 + epoch * 3 + step)
        flor.log("loss", loss)
    flor.log("acc", 0.5 + epoch / 10)
    print("epoch", epoch, "done")
print("finished")
"""

TYPES = """\
import flordb as flor

name = flor.arg("name", "baseline")
for epoch in flor.loop("epoch", range(2)):
    flor.log("count", epoch * 7)
    flor.log("ratio", epoch / 3)
    flor.log("flag", epoch == 1)
    flor.log("label", f"e{epoch}")
flor.log("final", 3)
"""

ITERATION = """\
import flordb as flor

for i in range(3):
    with flor.iteration("epoch", i, i * 10):
        flor.log("x", i * i)
"""

RETIRED = """\
import flordb as flor

state = {"w": 1}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(2)):
        state["w"] += epoch
        flor.log("w", state["w"])
flor.restore("ckpt.pth")
flor.restore("ckpt.pth")
print("w", state["w"])
"""

OUTPUT = """\
import logging
import sys

import flordb as flor

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
for epoch in flor.loop("epoch", range(2)):
    print(f"epoch {epoch} loss: {0.5 / (epoch + 1)}")
    logging.warning("slow epoch %d", epoch)
print("done")
"""

PRINTED = """\
import flordb as flor

lr = 0.01
print(f"starting: lr={lr}")
for epoch in range(3):
    print(f"epoch {epoch} | loss: {1.0 / (epoch + 1):.4f} acc={0.5 + epoch / 10}")
print("final accuracy: 0.93")
"""

REPLAY_V1 = """\
import flordb as flor

lr = flor.arg("lr", 0.1)
w = 1.0
for epoch in flor.loop("epoch", range(3)):
    w = w * (1 - lr)
    flor.log("w", w)
"""
REPLAY_V2 = REPLAY_V1 + '    flor.log("w2", w * w)\n'

CASES = [
    Case(
        "loops",
        "nested flor.loop with flor.log and flor.arg defaults",
        {"train.py": TRAIN},
        [Step("run")],
        ["stdout", ("dataframe", ["loss"]), ("dataframe", ["acc", "lr"]), ("dataframe", ["lr", "epochs"])],
    ),
    Case(
        "kwargs",
        "--kwargs overriding flor.arg, two runs",
        {"train.py": TRAIN},
        [Step("run"), Step("run", ["--kwargs", "lr=0.25", "epochs=1"])],
        ["stdout", ("dataframe", ["lr", "epochs", "acc"])],
    ),
    Case(
        "types",
        "ints, floats, bools and text logged and read back",
        {"train.py": TYPES},
        [Step("run")],
        ["stdout", ("dataframe", ["count", "ratio", "flag", "label"]), ("dataframe", ["name", "final"])],
    ),
    Case(
        "iteration",
        "flor.iteration for loops flor cannot wrap",
        {"train.py": ITERATION},
        [Step("run")],
        ["stdout", ("dataframe", ["x"])],
    ),
    Case(
        "loop_values",
        "flor.loop over values that are not indices",
        {"train.py": "import flordb as flor\n\nfor opt in flor.loop('opt', ['sgd', 'adam']):\n    flor.log('score', len(opt))\n"},
        [Step("run")],
        ["stdout", ("dataframe", ["score"])],
    ),
    Case(
        "retired",
        "flor.checkpointing and flor.restore in an old script",
        {"train.py": RETIRED},
        [Step("run")],
        ["stdout", ("dataframe", ["w"])],
    ),
    Case(
        "query",
        "flor.query over the logs table, as FlorDB's SQL spells it",
        {"train.py": TRAIN},
        [Step("run")],
        [
            ("query", "SELECT value_name, value FROM logs WHERE value_name IN ('loss', 'acc') ORDER BY value_name, value"),
            ("query", "SELECT DISTINCT value_name, value_type FROM logs WHERE value_name = 'loss'"),
        ],
    ),
    Case(
        "notebook",
        "notebook cells, one run per cell that logged",
        {},
        [
            Step(
                "cells",
                cells=[
                    "import flordb as flor",
                    "for i in flor.loop('i', range(3)):\n    flor.log('sq', i * i)",
                    "print(bool(flor.output_buffer))",
                    "flor.log('note', 'hello')",
                    "print(len(flor.dataframe('sq')))",
                ],
            )
        ],
        ["stdout", ("dataframe", ["sq"]), ("dataframe", ["note"])],
    ),
    Case(
        "output",
        "print and logging lines captured per loop position",
        {"train.py": OUTPUT},
        [Step("run")],
        ["stdout", ("io", "io::stdout"), ("io", "io::log::warning")],
        needs=("io",),
    ),
    Case(
        "extract",
        "metrics printed by a script with no flor.loop, read into the metric table by `flor capture --extract`",
        {"train.py": PRINTED},
        [
            Step("run"),
            Step("python", ["-m", "flordb", "capture", "--extract"], compare=False,
                 flor=["capture", "--extract"]),
        ],
        ["stdout", ("dataframe", ["loss", "acc"]), ("dataframe", ["lr", "accuracy"])],
        needs=("io",),
    ),
    Case(
        "replay",
        "a statement added after the run, replayed with `python -m flordb replay --apply` answered y",
        {"train.py": REPLAY_V1},
        [
            Step("run"),
            Step("edit", path="train.py", text=REPLAY_V2),
            Step("python", ["-m", "flordb", "replay", "--apply", "w2"], stdin="y\n", compare=False),
        ],
        ["stdout", ("dataframe", ["w", "w2"])],
    ),
    Case(
        "replay_cli",
        "the same replay through each package's own command: `flor replay --apply w2 --yes` for ours",
        {"train.py": REPLAY_V1},
        [
            Step("run"),
            Step("edit", path="train.py", text=REPLAY_V2),
            Step("python", ["-m", "flordb", "replay", "--apply", "w2"], stdin="y\n", compare=False,
                 flor=["replay", "--apply", "w2", "--yes"]),
        ],
        ["stdout", ("dataframe", ["w", "w2"])],
    ),
    Case(
        "replay_flor",
        "the script-side spelling: `python train.py --replay_flor --apply w2` replays the latest run",
        {"train.py": REPLAY_V1},
        [
            Step("run"),
            Step("edit", path="train.py", text=REPLAY_V2),
            Step("run", ["--replay_flor", "--apply", "w2"], compare=False),
        ],
        ["stdout", ("dataframe", ["w2"])],
    ),
    Case(
        "replay_api",
        "flor.replay(['w2']) from a notebook cell, answered y",
        {"train.py": REPLAY_V1},
        [
            Step("run"),
            Step("edit", path="train.py", text=REPLAY_V2),
            Step("cells", cells=["import flordb as flor", "df = flor.replay(['w2'])"], stdin="y\n", compare=False),
        ],
        ["stdout", ("dataframe", ["w2"])],
    ),
]


# --- Deliberate differences ------------------------------------------------------


@dataclass
class Difference:
    """One way we differ from FlorDB 4 on purpose. `rule`: what the
    comparison forgives -- `ref_line`/`ours_line` (a regex: stdout lines
    only that side prints), `ref_column`/`ours_column` (a dataframe column
    only that side has), `text_values` (the reference keeps logged values as
    text), `tstamp` (its tstamp is a datetime), `replay_stdout` (what a
    replay command prints)."""

    id: str
    what: str
    reason: str
    rule: dict
    cases: tuple = ("*",)

    def applies(self, case):
        return "*" in self.cases or case in self.cases


DIFFERENCES = [
    Difference(
        "no-branch-switch",
        "FlorDB creates and switches to a `flor.branch` branch and commits your files after every run.",
        "flor never switches branches or commits to yours: a run's code snapshot goes under refs/flor/runs/*, "
        "your branch, index and files stay as they were.",
        {"ref_line": r"^Created and switched to new branch: |^Switched to branch "},
    ),
    Difference(
        "no-commit-line",
        "FlorDB prints `Run committed successfully.` when a run ends.",
        "flor prints nothing of its own at the end of a run; `flor runs` lists the runs.",
        {"ref_line": r"^Run committed successfully\.$|^$"},
    ),
    Difference(
        "args-not-printed",
        "FlorDB prints a `name: value` line for every flor.arg.",
        "flor prints only flor.log lines; the args of every run are in flor.dataframe() (no names) and `flor runs`.",
        {"ref_line": r"^(lr|epochs|name): "},
    ),
    Difference(
        "no-source-column",
        "FlorDB's dataframe has a `source` column (forward or replay).",
        "a value a replay fills in lands in the row of the run and loop position it belongs to, next to the "
        "recorded ones; `flor.dataframe(..., diverged=True)` shows where a replay recomputed a recorded value "
        "differently.",
        {"ref_column": "source", "merge_rows": True},
    ),
    Difference(
        "typed-values",
        "FlorDB returns logged values as text (`'0.5'`).",
        "flor keeps the type a value was logged with (0.5 is a float, 3 an int, True a bool); the suite compares "
        "the text Python prints for each.",
        {"text_values": True},
    ),
    Difference(
        "tstamp-text",
        "FlorDB's `tstamp` column is a datetime.",
        "flor's is the run's ISO-8601 text (what `flor runs` and `--where \"tstamp = '...'\"` use); the suite "
        "compares runs by their order.",
        {"tstamp": True},
    ),
    Difference(
        "notebook-filename",
        "FlorDB names a notebook's runs after the interpreter's first argument (`ipykernel_launcher.py` under "
        "Jupyter, `-c` here).",
        "flor names them `interactive`: the same name in every front end.",
        {"values_of": "filename"},
        ("notebook", "replay_api"),
    ),
    Difference(
        "logs-value-type",
        "FlorDB's `logs.value_type` is the record's category (1 a log, 2 captured output, 3 a timing).",
        "flor's `logs.value_type` is the value's type (`int`, `float`, `str`, ...) and `logs.kind` the category "
        "(`log`, `arg`, `output`, `timing`): a FlorDB query filtering on `value_type = 1` filters on `kind = 'log'` "
        "here (`flor.VALUE_TYPE_LOG` is 1 in both, for `flor.output_buffer` records).",
        {"values_of": "value_type"},
        ("query",),
    ),
    Difference(
        "checkpointing-kept",
        "FlorDB 4 retired flor.checkpointing and flor.set_ckpt_interval (they print that they do nothing).",
        "flor keeps them working: a replay restores the checkpoints they take and replays only the iterations "
        "it needs instead of recomputing from iteration 0.",
        {"ref_line": r"^FLOR: flor\.(checkpointing|set_ckpt_interval)\("},
        ("retired",),
    ),
    Difference(
        "restore-note-on-stderr",
        "Both retire flor.restore with a one-time note: FlorDB prints it on stdout, flor on stderr.",
        "flor's own notes go to stderr, so a script's stdout holds only what the script printed.",
        {"ref_line": r"^FLOR: flor\.restore\("},
        ("retired",),
    ),
    Difference(
        "replay-plan",
        "The replay commands print different plans and progress (FlorDB: its schedule and `entering`/`applying` "
        "lines; flor: `flor replay`'s plan per code version with its estimate).",
        "flor replays each run in its own copy of its code version, from its checkpoints, several runs at a "
        "time; what is replayed and what it costs is shown before the [y/N] question.",
        {"replay_stdout": True},
        ("replay", "replay_cli", "replay_api", "replay_flor"),
    ),
]


def readme_section():
    """The README's "Coming from FlorDB" table (one row per DIFFERENCES entry)."""
    rows = ["| What differs | Why |", "| --- | --- |"]
    for d in DIFFERENCES:
        rows.append(f"| {d.what} | {d.reason} |")
    return "\n".join(rows) + "\n"


# --- Running one case under one package ----------------------------------------

# The probe: reads back the views a case compares, as JSON (cells as the text
# Python prints for them, with the Python type of each).
PROBE = r"""
import json, math, os
import flordb as flor
spec = json.loads(os.environ["COMPAT_VIEWS"])

def cell(v):
    if v is None:
        return None, "none"
    try:
        import pandas as pd
        if v is pd.NA or v is pd.NaT:
            return None, "none"
        if isinstance(v, pd.Timestamp):
            return v.isoformat(), "datetime"
    except ImportError:
        pass
    if isinstance(v, float) and math.isnan(v):
        return None, "none"
    item = getattr(v, "item", None)
    if callable(item) and getattr(v, "ndim", 1) == 0:
        v = item()
    return str(v), type(v).__name__

out = {"has_io": hasattr(flor, "io")}
for key, (kind, arg) in spec.items():
    try:
        if kind == "dataframe":
            df = flor.dataframe(*arg)
        elif kind == "query":
            df = flor.query(arg)
        else:
            df = flor.io(arg) if arg else flor.io()
        rows = [[cell(v) for v in row] for row in df.itertuples(index=False)]
        out[key] = {"columns": [str(c) for c in df.columns], "rows": rows}
    except Exception as e:
        out[key] = {"error": f"{type(e).__name__}: {e}"}
print("@@COMPAT@@" + json.dumps(out))
"""

# Notebook cells, one by one, through IPython's InteractiveShell (as
# Jupyter runs them: post_run_cell events fire after each).
NOTEBOOK = r"""
import json, os, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
for cell in json.loads(os.environ["COMPAT_CELLS"]):
    result = shell.run_cell(cell)
    sys.stdout.flush()
    if not result.success:
        sys.exit(1)
"""


def key_of(view):
    """A view's name in reports: `stdout`, `dataframe:a,b`, `io:CHANNEL`, `query:SQL`."""
    return view if isinstance(view, str) else f"{view[0]}:{','.join(view[1]) if isinstance(view[1], list) else view[1]}"


class Package:
    """One implementation: its interpreter and environment."""

    def __init__(self, label, python, env):
        self.label, self.python, self.env = label, python, env


def run_step(pkg, repo, step):
    """Runs one step; returns (stdout, stderr) or raises RuntimeError."""
    if step.kind == "edit":
        with open(os.path.join(repo, step.path), "w") as f:
            f.write(step.text)
        return "", ""
    env = dict(pkg.env)
    if step.kind == "run":
        cmd = [pkg.python, "train.py", *step.args]
    elif step.kind == "cells":
        cmd = [pkg.python, "-c", NOTEBOOK]
        env["COMPAT_CELLS"] = json.dumps(step.cells)
    elif step.flor and pkg.label == "ours":
        cmd = [env["FLOR_BIN"], *step.flor]
    else:
        cmd = [pkg.python, *step.args]
    p = subprocess.run(cmd, cwd=repo, env=env, input=step.stdin, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])[:80]} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout, p.stderr


def make_repo(root, case, label):
    repo = os.path.join(root, f"{case.name}-{label}", "proj")
    os.makedirs(repo)
    bench.run(["git", "init", "-q", "-b", "main", repo])
    bench.run(["git", "-C", repo, "config", "user.name", "compat"])
    bench.run(["git", "-C", repo, "config", "user.email", "compat@example.com"])
    for name, text in case.files.items():
        with open(os.path.join(repo, name), "w") as f:
            f.write(text)
    with open(os.path.join(repo, "README"), "w") as f:
        f.write("compat\n")
    bench.run(["git", "-C", repo, "add", "."])
    bench.run(["git", "-C", repo, "commit", "-qm", "init"])
    return repo


def run_case(pkg, case, root):
    """Runs `case` under `pkg`: {"stdout": [lines], VIEW: {...}} or {"error"}."""
    repo = make_repo(root, case, pkg.label)
    lines = []
    try:
        for step in case.steps:
            out, _ = run_step(pkg, repo, step)
            if step.compare:
                lines += out.splitlines()
        views = {key_of(v): [v[0], v[1]] for v in case.views if not isinstance(v, str)}
        env = dict(pkg.env, COMPAT_VIEWS=json.dumps(views))
        p = subprocess.run(
            [pkg.python, "-c", PROBE], cwd=repo, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        if "@@COMPAT@@" not in p.stdout:
            raise RuntimeError(f"the probe failed:\n{p.stderr[-2000:]}")
        result = json.loads(p.stdout.rsplit("@@COMPAT@@", 1)[1])
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    result["stdout"] = [line.rstrip() for line in lines]
    return result


# --- Comparing -----------------------------------------------------------------


def strip_lines(lines, rules, used):
    kept = []
    for line in lines:
        hit = next((d for d, pat in rules if re.search(pat, line)), None)
        if hit is None:
            kept.append(line)
        else:
            used.add(hit)
    return kept


def merge_rows(cols, rows, names):
    """Rows that differ only in the columns dropped before (FlorDB's
    `source`: a forward and a replay row of one loop position) as one row,
    each named value taken from the row that has it."""
    keys = [i for i, c in enumerate(cols) if c not in names]
    merged = {}
    for r in rows:
        k = json.dumps([r[i] for i in keys])
        if k not in merged:
            merged[k] = r
        else:
            merged[k] = [a if a[0] is not None else b for a, b in zip(merged[k], r)]
    return list(merged.values())


def normal_frame(frame, diffs, side, used, names):
    """Columns and rows with the forgiven differences taken out: columns only
    one side has dropped (and the rows they told apart merged), values of
    columns not compared blanked, tstamps as run ordinals."""
    cols, rows = list(frame["columns"]), [list(r) for r in frame["rows"]]
    for d in diffs:
        col = d.rule.get(f"{side}_column")
        if col in cols:
            i = cols.index(col)
            used.add(d.id)
            cols.pop(i)
            for r in rows:
                r.pop(i)
            if d.rule.get("merge_rows"):
                rows = merge_rows(cols, rows, names)
        col = d.rule.get("values_of")
        if col in cols:
            i = cols.index(col)
            if len({json.dumps(r[i]) for r in rows}) > 0:
                used.add(d.id)
            for r in rows:
                r[i] = ["*", "*"]
    if "tstamp" in cols:
        i = cols.index("tstamp")
        order = sorted({r[i][0] for r in rows if r[i][0] is not None})
        for r in rows:
            if r[i][1] == "datetime" or side == "ours":
                tag = next((d.id for d in diffs if d.rule.get("tstamp")), None)
                if tag and r[i][1] == "datetime":
                    used.add(tag)
            r[i] = [f"run {order.index(r[i][0])}" if r[i][0] is not None else None, "run"]
    return cols, rows


def compare_frames(ref, ours, diffs, used, names):
    if "error" in ref or "error" in ours:
        return [f"reference: {ref.get('error', 'ok')}; ours: {ours.get('error', 'ok')}"]
    rcols, rrows = normal_frame(ref, diffs, "ref", used, names)
    ocols, orows = normal_frame(ours, diffs, "ours", used, names)
    problems = []
    if rcols != ocols:
        return [f"columns: reference {rcols}, ours {ocols}"]
    text_ok = next((d.id for d in diffs if d.rule.get("text_values")), None)
    for r, o in zip(sorted(rrows, key=str), sorted(orows, key=str)):
        for col, (rv, rt), (ov, ot) in zip(rcols, r, o):
            if rv != ov:
                problems.append(f"{col}: reference {rv!r}, ours {ov!r}")
            elif rt != ot and rt == "str" and text_ok:
                used.add(text_ok)
            elif rt != ot and rv is not None:
                problems.append(f"{col}: reference {rv!r} is a {rt}, ours a {ot}")
    if len(rrows) != len(orows):
        problems.append(f"rows: reference {len(rrows)}, ours {len(orows)}")
    return problems[:10]


def compare_case(case, ref, ours):
    """(status, problems, used difference ids)."""
    if "error" in ref or "error" in ours:
        return "error", [f"reference: {ref.get('error', 'ok')}", f"ours: {ours.get('error', 'ok')}"], set()
    diffs = [d for d in DIFFERENCES if d.applies(case.name)]
    used, problems = set(), []
    for d in diffs:
        if d.rule.get("replay_stdout"):
            used.add(d.id)  # the replay steps' output is left out of `stdout`
    for view in case.views:
        key = key_of(view)
        if view == "stdout":
            r = strip_lines(ref["stdout"], [(d.id, d.rule["ref_line"]) for d in diffs if "ref_line" in d.rule], used)
            o = strip_lines(ours["stdout"], [(d.id, d.rule["ours_line"]) for d in diffs if "ours_line" in d.rule], used)
            if r != o:
                problems.append(f"stdout: reference {r}, ours {o}")
        else:
            names = view[1] if view[0] == "dataframe" else []
            problems += [f"{key}: {p}" for p in compare_frames(ref[key], ours[key], diffs, used, names)]
    return ("same" if not problems else "differs"), problems, used


# --- Driver --------------------------------------------------------------------


def default_flor_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "flor", "target")
    return os.environ.get("FLOR_BIN") or os.path.join(target, "debug", "flor")


def packages(a):
    env = bench.clean_env()
    for k in [k for k in env if k.startswith("GIT_") or k.startswith("FLOR_")]:
        env.pop(k)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    t = time.perf_counter()
    ref_python, info, created = bench.ensure_ref_venv(a.ref_venv, a.ref_spec, bench.py_info(a.ours)["base"])
    setup = time.perf_counter() - t
    if info["version"] != a.ref_spec.split("==")[-1] and "==" in a.ref_spec:
        sys.exit(f"{a.ref_venv} has flordb {info['version']}, not {a.ref_spec}")
    path = lambda py: os.path.dirname(py) + os.pathsep + env.get("PATH", "")  # noqa: E731
    ref = Package("ref", ref_python, dict(env, PATH=path(ref_python)))
    ours = Package("ours", a.ours, dict(env, PATH=path(a.ours), FLOR_BIN=a.flor_bin))
    return ref, ours, {"venv_created": created, "venv_setup_s": round(setup, 1), "ref_version": info["version"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", default=sys.executable, help="python with our flordb (default: this one)")
    ap.add_argument("--ref-venv", default=DEFAULT_REF_VENV, help="the reference's venv (default %(default)s)")
    ap.add_argument("--ref-spec", default=REF_SPEC, help="pip requirement for the reference (default %(default)s)")
    ap.add_argument("--flor-bin", default=default_flor_bin(), help="the flor command (default %(default)s)")
    ap.add_argument("--case", action="append", help="run only this case (repeatable)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--readme", action="store_true", help="print the README's table of differences and exit")
    ap.add_argument("--setup", action="store_true", help="create (or check) the reference venv and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    a = ap.parse_args()
    if a.readme:
        sys.stdout.write(readme_section())
        return 0
    t0 = time.perf_counter()
    ref, ours, setup = packages(a)
    if a.setup:
        print(f"{ref.python}: flordb {setup['ref_version']} ({'created' if setup['venv_created'] else 'reused'}, "
              f"{setup['venv_setup_s']} s)")
        return 0
    root = tempfile.mkdtemp(prefix="flor-compat.")
    results, used_all, ran = [], set(), set()
    try:
        for case in CASES:
            if a.case and case.name not in a.case:
                continue
            t = time.perf_counter()
            o = run_case(ours, case, root)
            if "io" in case.needs and "error" not in o and not o.get("has_io"):
                results.append({"case": case.name, "status": "skipped", "problems": [
                    "needs flor.io, which our module does not have yet (captured output: another part of issue 18)"
                ]})
                continue
            r = run_case(ref, case, root)
            status, problems, used = compare_case(case, r, o)
            used_all |= used
            ran.add(case.name)
            results.append({"case": case.name, "status": status, "problems": problems,
                            "differences": sorted(used), "seconds": round(time.perf_counter() - t, 1)})
    finally:
        if a.keep:
            print(f"repositories kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    # An entry is stale when every case it names ran and none needed it.
    stale = [d.id for d in DIFFERENCES if ran and d.id not in used_all and ("*" in d.cases or set(d.cases) <= ran)]
    if a.case:
        stale = []  # a partial run cannot tell
    for res in results:
        print(f"{res['case']:12} {res['status']:8} {', '.join(res.get('differences', []))}")
        for p in res["problems"]:
            print("    " + p)
    if stale:
        print("stale differences (no case needed them): " + ", ".join(stale))
    total = round(time.perf_counter() - t0, 1)
    print(f"{len(results)} cases in {total} s (reference venv: {'created' if setup['venv_created'] else 'reused'}, "
          f"{setup['venv_setup_s']} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": results, "stale": stale, "seconds": total, **setup}, f, indent=2)
    bad = [r for r in results if r["status"] in ("differs", "error")]
    return 1 if bad or stale else 0


if __name__ == "__main__":
    sys.exit(main())
