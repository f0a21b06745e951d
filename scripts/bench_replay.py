#!/usr/bin/env python3
"""Benchmarks of hindsight replay (`flor replay`), with the reference
`flordb` package from PyPI side by side on the multi-version scenario.

Every measurement runs in a fresh temporary git repository (branch `main`,
git configuration isolated: HOME points into the scratch folder,
GIT_CONFIG_NOSYSTEM=1, GIT_CONFIG_GLOBAL=/dev/null, identity in the
repository's own config). Scripts run as subprocesses with stdout and stderr
redirected to files.

1. Epoch-level statement. SGD_PY below: mini-batch SGD of a linear model in
   pure Python, E epochs x S steps (~0.3 s of work per epoch), one
   `flor.log("loss")` per step, the model, the data order and the RNG state
   checkpointed (`flor.checkpointing(model=..., order=...)`). Recorded once;
   then the working tree gains two statements (`w_norm` at epoch level after
   the inner loop, `sq_loss` inside the inner loop) and
   `flor replay --apply w_norm --yes --jobs 1 --force` runs `--reps` times.
   Reported: replay wall time against the original run's process time, and
   against the model "interpreter start + import + setup + E x checkpoint
   restore" whose parts are measured separately: the start and import by
   `python -c "import flordb"` in the repository, the setup and the restore
   (`pickle.loads` of the checkpointed objects' bytes, what flor's restore
   does besides reading the blob) inside the original run. The script also
   writes timestamps from inside every process (original and replayed, via
   BENCH_MARKS), so the replayed process' own setup and per-epoch time are
   reported too.
2. Checkpoint-based parallelism: `flor replay --apply sq_loss --yes --force`
   with `--jobs 1` and `--jobs 2`, interleaved (the order alternating), `--reps`
   times each; medians and every value.
3. Estimate vs actual on the acceptance scenario of tests/replay.rs made
   heavier: the five versions of tests/replay/v*.py and newest.py read from
   this repository and edited the same way in each (data of N points instead
   of 6; one `busy(x)` call of pure arithmetic, no RNG, at the top of every
   step; `def busy` after the imports), the same six runs and `--kwargs`.
   The plan's per-run estimates and total/makespan are parsed from
   `flor replay --apply abs_err,b_sq --dry-run --jobs 2`, the actual seconds
   from the summary of `flor replay --apply abs_err,b_sq --yes --jobs 2`;
   values checked with `flor --format json dataframe abs_err b_sq`.
4. The same scenario recorded with the reference `flordb` (its venv, default
   ~/.cache/flor/flordb-ref-venv) and replayed with
   `python -m flordb replay --apply abs_err,b_sq` (answering `y` to its
   prompt on stdin; its venv's bin first on PATH, since it starts the replayed
   script as `python`). Values counted in its SQLite database
   (`.flor/<repo>.db`, table logs, source 'replay'); git's state (branch, HEAD,
   status) before and after is reported for both implementations.

Prints Markdown (for BENCHMARKS.md) and writes JSON with `--json`. Standard
library only: run it with any python3.
"""

import argparse
import glob
import json
import os
import platform
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

DEFAULT_OURS = "/root/.cache/flor/venv/bin/python"
DEFAULT_FLOR = "/root/.cache/flor/target/release/flor"
DEFAULT_REF_VENV = os.path.join(os.path.expanduser("~"), ".cache", "flor", "flordb-ref-venv")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

# Parts 1 and 2. Sizes come from flor.arg (recorded with the run; replay
# gets the recorded values back). BENCH_MARKS, when set, names a folder where
# every process (the original run and each replay worker) appends JSON lines
# with timestamps.
SGD_PY = textwrap.dedent(
    '''
    import json, os, pickle, random, time

    T0 = time.time()
    now = time.perf_counter
    P0 = now()
    _marks_dir = os.environ.get("BENCH_MARKS")
    _marks = open(os.path.join(_marks_dir, f"{os.getpid()}.jsonl"), "a") if _marks_dir else None


    def mark(what, **kw):
        if _marks:
            _marks.write(json.dumps({"what": what, "t": now() - P0, "wall": time.time(), "t0": T0, **kw}) + "\\n")
            _marks.flush()


    import flordb as flor

    mark("imported")
    E = flor.arg("epochs", 8)
    S = flor.arg("steps", 400)
    seed = flor.arg("seed", 0)
    random.seed(seed)
    D, B, NX = 32, 64, 1024
    xs = [[random.gauss(0, 1) for _ in range(D)] for _ in range(NX)]
    w_true = [random.gauss(0, 1) for _ in range(D)]
    ys = [sum(a * b for a, b in zip(x, w_true)) + random.gauss(0, 0.1) for x in xs]
    model = {"w": [0.0] * D, "lr": 0.01}
    order = list(range(NX))


    def step(s):
        w = model["w"]
        g = [0.0] * D
        loss = 0.0
        base = (s * B) % (NX - B)
        for k in order[base:base + B]:
            x = xs[k]
            err = sum([a * b for a, b in zip(w, x)]) - ys[k]
            loss += err * err
            g = [gj + err * xj for gj, xj in zip(g, x)]
        c = model["lr"] / B
        for j in range(D):
            w[j] -= c * g[j]
        return loss / B


    mark("setup")
    with flor.checkpointing(model=model, order=order):
        for e in flor.loop("epoch", range(E)):
            random.shuffle(order)
            for s in flor.loop("step", range(S)):
                loss = step(s)
                flor.log("loss", loss)
            flor.log("w0", model["w"][0])
            mark("epoch", epoch=e)
    # What a restore of the checkpointed objects costs besides reading the
    # blob: pickle.loads of their bytes (timed here, in the original run).
    blobs = [pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL) for o in (model, order)]
    t = now()
    for _ in range(20):
        for b in blobs:
            pickle.loads(b)
    mark("end", restore_s=(now() - t) / 20, ckpt_bytes=sum(len(b) for b in blobs))
    '''
).lstrip()

# The statements the newest version gains (working tree, not committed).
SGD_NEWEST = SGD_PY.replace(
    '            flor.log("loss", loss)\n',
    '            flor.log("loss", loss)\n            flor.log("sq_loss", loss * loss)\n',
).replace(
    '        flor.log("w0", model["w"][0])\n',
    '        flor.log("w0", model["w"][0])\n'
    '        flor.log("w_norm", sum(v * v for v in model["w"]) ** 0.5)\n',
)
assert SGD_NEWEST.count("sq_loss") == 1 and SGD_NEWEST.count("w_norm") == 1

# Part 3/4: tests/replay.rs's runs: (version index, --kwargs).
ACCEPT_RUNS = [(0, []), (0, ["seed=1", "lr=0.2"]), (1, ["seed=2"]), (2, ["epochs=4"]), (3, ["seed=3"]), (4, [])]


def heavier(src, n_points, work):
    """A version of tests/replay made heavier the same way in every version."""
    step_line = '        for x, y in flor.loop("step", data):\n'
    assert src.count(step_line) == 1 and src.count("for _ in range(6)]") == 1
    src = src.replace("for _ in range(6)]", f"for _ in range({n_points})]")
    src = src.replace(step_line, step_line + "            busy(x)\n")
    busy = (
        "\n\ndef busy(x):\n"
        "    s = 0.0\n"
        f"    for i in range({work}):\n"
        "        s += x * i\n"
        "    return s\n"
    )
    imp = "import flordb as flor\n"
    assert src.count(imp) == 1
    return src.replace(imp, imp + busy)


def expected_accept(n_points):
    """Values a full replay of abs_err (every step) and b_sq (every epoch) recovers, per run."""
    out = []
    for v, kw in ACCEPT_RUNS:
        # Versions 1-4 default to 3 epochs, version 5 to 4.
        epochs = 4 if v == 4 or "epochs=4" in kw else 3
        out.append({"epochs": epochs, "abs_err": epochs * n_points, "b_sq": epochs})
    return out


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(list(xs))


class Env:
    def __init__(self, root):
        self.home = os.path.join(root, "home")
        os.makedirs(self.home, exist_ok=True)

    def env(self, extra_path=None, **kw):
        env = dict(os.environ)
        for k in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP", "FLOR_CAPTURE", "BENCH_MARKS"):
            env.pop(k, None)
        env.update(HOME=self.home, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", PYTHONDONTWRITEBYTECODE="1")
        if extra_path:
            env["PATH"] = extra_path + os.pathsep + env.get("PATH", "")
        env.update(kw)
        return env


def run(cmd, env, cwd=None, check=True, stdin=None, timeout=None):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, input=stdin, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(shlex.quote, cmd))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def timed(cmd, env, cwd, out_prefix, stdin_text=None, timeout=None):
    """Runs cmd with stdout/stderr to files; returns (rc, wall_s, stdout, stderr)."""
    with open(out_prefix + ".stdout", "w") as out, open(out_prefix + ".stderr", "w") as err:
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=err, timeout=timeout,
                               input=stdin_text, text=True if stdin_text is not None else None,
                               stdin=subprocess.DEVNULL if stdin_text is None else None)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        wall = time.perf_counter() - t
    with open(out_prefix + ".stdout", errors="replace") as f:
        so = f.read()
    with open(out_prefix + ".stderr", errors="replace") as f:
        se = f.read()
    return rc, wall, so, se


def make_repo(root, name, env):
    repo = os.path.join(root, name)
    os.makedirs(repo)
    run(["git", "init", "-q", "-b", "main", repo], env)
    run(["git", "-C", repo, "config", "user.name", "bench"], env)
    run(["git", "-C", repo, "config", "user.email", "bench@example.com"], env)
    return repo


def commit_file(repo, env, text, msg):
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write(text)
    run(["git", "-C", repo, "add", "train.py"], env)
    run(["git", "-C", repo, "commit", "-qm", msg], env)


def git_state(repo, env):
    g = lambda *a: run(["git", "-C", repo, *a], env, check=False).stdout.strip()
    return {
        "branch": g("symbolic-ref", "-q", "HEAD") or "(detached)",
        "head": g("rev-parse", "--short", "HEAD"),
        "status": g("status", "--porcelain", "--untracked-files=no"),
        "commits": int(g("rev-list", "--count", "HEAD") or 0),
    }


# --- parsing flor replay's output ------------------------------------------

PLAN_RUN = re.compile(
    r"^  run (\S+) \((.*?)\): (\d+) outer iterations? to execute in (\d+) segments?; "
    r"estimated ([\d.]+) s \(the original run took ([\d.]+) s\)", re.M)
PLAN_TOTAL = re.compile(r"^(\d+) runs? to replay; estimated ([\d.]+) s of work, ([\d.]+) s with (\d+) workers?", re.M)
SUM_HEAD = re.compile(r"^Replay summary \(([\d.]+) s wall clock; estimated ([\d.]+) s[^)]*\):", re.M)
SUM_RUN = re.compile(r"^  run (\S+): (\d+) values? recovered; ([\d.]+) s (?:of work )?\(estimated ([\d.]+) s\)", re.M)


def parse_plan(text):
    runs = [{"tstamp": m[0], "args": m[1], "outer": int(m[2]), "segments": int(m[3]),
             "estimate_s": float(m[4]), "original_s": float(m[5])} for m in PLAN_RUN.findall(text)]
    t = PLAN_TOTAL.search(text)
    total = {"runs": int(t[1]), "work_s": float(t[2]), "makespan_s": float(t[3]), "jobs": int(t[4])} if t else None
    return runs, total


def parse_summary(text):
    h = SUM_HEAD.search(text)
    head = {"wall_s": float(h[1]), "estimate_s": float(h[2])} if h else None
    runs = [{"tstamp": m[0], "values": int(m[1]), "actual_s": float(m[2]), "estimate_s": float(m[3])}
            for m in SUM_RUN.findall(text)]
    return head, runs


def read_marks(folder):
    out = {}
    for p in glob.glob(os.path.join(folder, "*.jsonl")):
        with open(p) as f:
            out[os.path.basename(p)[:-6]] = [json.loads(l) for l in f if l.strip()]
    return out


# --- parts 1 and 2 ---------------------------------------------------------

SPIN = "import time\nt = time.perf_counter()\ns = 0.0\nfor i in range({n}):\n    s += i * 0.5\nprint(time.perf_counter() - t)\n"


def capacity(python, n=6_000_000):
    """How much of a second core is free right now: one pure-Python spin
    alone, then two copies at once; 2 x alone / together (2.0: two idle
    cores; 1.0: no parallelism to be had)."""
    code = SPIN.format(n=n)
    t = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, capture_output=True)
    one = time.perf_counter() - t
    t = time.perf_counter()
    ps = [subprocess.Popen([python, "-c", code], stdout=subprocess.DEVNULL) for _ in range(2)]
    for p in ps:
        p.wait()
    two = time.perf_counter() - t
    return {"one_s": one, "two_s": two, "capacity": 2 * one / two}


class Ours:
    def __init__(self, a, envs, root):
        self.py, self.flor, self.envs, self.root = a.ours, a.flor, envs, root
        self.n = 0

    def flor_cmd(self, repo, args, tag, marks=None):
        self.n += 1
        env = self.envs.env(**({"BENCH_MARKS": marks} if marks else {}))
        rc, wall, so, se = timed([self.flor, *args], env, repo, os.path.join(self.root, f"{self.n:03d}-{tag}"))
        if rc != 0:
            raise RuntimeError(f"flor {' '.join(args)} failed ({rc}):\n{so[-3000:]}\n{se[-3000:]}")
        return wall, so, se


def part12(a, envs, root, ours):
    log("parts 1-2: recording the SGD run")
    repo = make_repo(root, "sgd", envs.env())
    commit_file(repo, envs.env(), SGD_PY, "sgd")
    marks = os.path.join(root, "marks-forward")
    os.makedirs(marks)
    rc, orig_wall, so, se = timed([a.ours, "train.py", "--kwargs", f"epochs={a.epochs}", f"steps={a.steps}"],
                                  envs.env(BENCH_MARKS=marks), repo, os.path.join(root, "sgd-forward"))
    if rc != 0:
        raise RuntimeError(f"SGD run failed ({rc}): {se[-3000:]}")
    fm = next(iter(read_marks(marks).values()))
    by = {m["what"]: m for m in fm}
    epochs_t = [m["t"] for m in fm if m["what"] == "epoch"]
    forward = {
        "process_s": orig_wall,
        "import_s": by["imported"]["t"],
        "setup_s": by["setup"]["t"] - by["imported"]["t"],
        "loop_s": epochs_t[-1] - by["setup"]["t"],
        "epoch_s": median(b - a_ for a_, b in zip([by["setup"]["t"]] + epochs_t[:-1], epochs_t)),
        "restore_s": by["end"]["restore_s"],
        "ckpt_bytes": by["end"]["ckpt_bytes"],
    }
    log(f"  original run: process {orig_wall:.2f} s, loop {forward['loop_s']:.2f} s, "
        f"{forward['epoch_s']:.3f} s per epoch, setup {forward['setup_s']:.3f} s")
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write(SGD_NEWEST)

    # Interpreter start + import flordb, in the repository.
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        run([a.ours, "-c", "import flordb"], envs.env(), cwd=repo)
        starts.append(time.perf_counter() - t)
    forward["start_import_s"] = median(starts)

    # Part 1.
    plan_wall, plan_text, _ = ours.flor_cmd(repo, ["replay", "--apply", "w_norm", "--jobs", "1", "--dry-run"], "plan-w_norm")
    plan1, total1 = parse_plan(plan_text)
    p1 = []
    for rep in range(a.reps):
        mk = os.path.join(root, f"marks-epoch-{rep}")
        os.makedirs(mk)
        w, so, se = ours.flor_cmd(repo, ["replay", "--apply", "w_norm", "--yes", "--jobs", "1", "--force"], "w_norm", marks=mk)
        head, runs = parse_summary(so)
        vals = runs[0]["values"] if runs else 0
        if vals != a.epochs:
            raise RuntimeError(f"w_norm replay recovered {vals} values, expected {a.epochs}:\n{so}\n{se[-2000:]}")
        inner = {}
        rm = read_marks(mk)
        if len(rm) == 1:
            m = next(iter(rm.values()))
            b = {x["what"]: x for x in m}
            ep = [x["t"] for x in m if x["what"] == "epoch"]
            inner = {"import_s": b["imported"]["t"], "setup_s": b["setup"]["t"] - b["imported"]["t"],
                     "epoch_s": median(y - x for x, y in zip([b["setup"]["t"]] + ep[:-1], ep)),
                     "loop_s": ep[-1] - b["setup"]["t"], "epochs_seen": len(ep)}
        p1.append({"wall_s": w, "summary_wall_s": head["wall_s"], "actual_s": runs[0]["actual_s"],
                   "estimate_s": runs[0]["estimate_s"], "values": vals, "process": inner})
        log(f"  (1) epoch-level replay {rep + 1}: {w:.2f} s wall ({runs[0]['actual_s']:.2f} s in the worker, "
            f"estimated {runs[0]['estimate_s']:.2f} s)")

    # Part 2, interleaved.
    plans2 = {}
    for j in (1, 2):
        _, t, _ = ours.flor_cmd(repo, ["replay", "--apply", "sq_loss", "--jobs", str(j), "--dry-run"], f"plan-sq_loss-j{j}")
        plans2[j] = parse_plan(t)
    p2 = {1: [], 2: []}
    caps = []
    for rep in range(a.reps):
        caps.append(capacity(a.ours))
        log(f"  CPU capacity probe: {caps[-1]['capacity']:.2f} (one spin {caps[-1]['one_s']:.2f} s, two at once {caps[-1]['two_s']:.2f} s)")
        for j in ((1, 2) if rep % 2 == 0 else (2, 1)):
            w, so, se = ours.flor_cmd(repo, ["replay", "--apply", "sq_loss", "--yes", "--jobs", str(j), "--force"], f"sq_loss-j{j}")
            head, runs = parse_summary(so)
            vals = runs[0]["values"] if runs else 0
            if vals != a.epochs * a.steps:
                raise RuntimeError(f"sq_loss replay recovered {vals} values, expected {a.epochs * a.steps}:\n{so}")
            p2[j].append({"wall_s": w, "summary_wall_s": head["wall_s"], "actual_s": runs[0]["actual_s"],
                          "estimate_s": runs[0]["estimate_s"], "makespan_estimate_s": head["estimate_s"], "values": vals})
            log(f"  (2) inner-loop replay, --jobs {j}, rep {rep + 1}: {w:.2f} s wall "
                f"(estimated {head['estimate_s']:.2f} s)")
    caps.append(capacity(a.ours))
    log(f"  CPU capacity probe: {caps[-1]['capacity']:.2f}")
    return {"forward": forward, "plan1": {"runs": plan1, "total": total1, "dry_run_wall_s": plan_wall}, "p1": p1, "capacity": caps,
            "plans2": {j: {"runs": r, "total": t} for j, (r, t) in plans2.items()}, "p2": p2}


# --- parts 3 and 4 ---------------------------------------------------------

def accept_sources(a):
    d = os.path.join(REPO_ROOT, "tests", "replay")
    vs = []
    for i in range(1, 6):
        with open(os.path.join(d, f"v{i}.py")) as f:
            vs.append(heavier(f.read(), a.points, a.work))
    with open(os.path.join(d, "newest.py")) as f:
        newest = heavier(f.read(), a.points, a.work)
    return vs, newest


def record_accept(python, repo, envs, root, tag, versions, extra_path=None):
    walls = []
    k = 0
    for v, src in enumerate(versions):
        commit_file(repo, envs.env(), src, f"version {v + 1}")
        while k < len(ACCEPT_RUNS) and ACCEPT_RUNS[k][0] == v:
            kw = ACCEPT_RUNS[k][1]
            cmd = [python, "train.py"] + (["--kwargs", *kw] if kw else [])
            rc, wall, so, se = timed(cmd, envs.env(extra_path=extra_path), repo, os.path.join(root, f"{tag}-run{k}"))
            if rc != 0:
                raise RuntimeError(f"{tag} run {k} failed ({rc}):\n{se[-3000:]}")
            walls.append(wall)
            k += 1
    return walls


def count_ours(a, envs, repo):
    p = run([a.flor, "--format", "json", "dataframe", "abs_err", "b_sq"], envs.env(), cwd=repo)
    rows = json.loads(p.stdout)
    per = {}
    for r in rows:
        d = per.setdefault(r["tstamp"], {"abs_err": 0, "b_sq": 0})
        for k in ("abs_err", "b_sq"):
            if r.get(k) is not None:
                d[k] += 1
    # b_sq is an epoch-level value: the dataframe repeats it on every step
    # row of its epoch; count distinct epochs instead.
    ep = {}
    for r in rows:
        if r.get("b_sq") is not None:
            ep.setdefault(r["tstamp"], set()).add(r["epoch"])
    for t, d in per.items():
        d["b_sq"] = len(ep.get(t, ()))
    # The values themselves, per run (in tstamp order), for part 4's comparison.
    vals = {}
    for r in rows:
        v = vals.setdefault(r["tstamp"], {})
        if r.get("abs_err") is not None:
            v[f"abs_err/{r['epoch']}/{r['step']}"] = r["abs_err"]
        if r.get("b_sq") is not None:
            v[f"b_sq/{r['epoch']}"] = r["b_sq"]
    return [per[t] for t in sorted(per)], [vals[t] for t in sorted(vals)]


def part3(a, envs, root, ours, versions, newest):
    log("part 3: recording the six runs (ours)")
    repo = make_repo(root, "accept-ours", envs.env())
    walls = record_accept(a.ours, repo, envs, root, "accept-ours", versions)
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write(newest)
    before = git_state(repo, envs.env())
    _, plan_text, _ = ours.flor_cmd(repo, ["replay", "--apply", "abs_err,b_sq", "--jobs", "2", "--dry-run"], "accept-plan")
    plan, total = parse_plan(plan_text)
    wall, so, se = ours.flor_cmd(repo, ["replay", "--apply", "abs_err,b_sq", "--yes", "--jobs", "2"], "accept-replay")
    head, runs = parse_summary(so)
    after = git_state(repo, envs.env())
    counts, values = count_ours(a, envs, repo)
    log(f"  replay {wall:.2f} s wall; estimated makespan {total['makespan_s']:.2f} s")
    cap = capacity(a.ours)
    # The same replay again with one worker (--force): estimates against
    # actual without the two workers competing for the cores.
    _, plan1_text, _ = ours.flor_cmd(repo, ["replay", "--apply", "abs_err,b_sq", "--jobs", "1", "--dry-run", "--force"], "accept-plan-j1")
    plan_j1, total_j1 = parse_plan(plan1_text)
    wall1, so1, _ = ours.flor_cmd(repo, ["replay", "--apply", "abs_err,b_sq", "--yes", "--jobs", "1", "--force"], "accept-replay-j1")
    head1, runs1 = parse_summary(so1)
    log(f"  replay --jobs 1 --force {wall1:.2f} s wall; estimated {total_j1['makespan_s']:.2f} s")
    return {"values": values, "capacity": cap, "j1": {"plan": plan_j1, "total": total_j1, "wall_s": wall1, "summary": head1, "runs": runs1},"record_walls": walls, "plan": plan, "total": total, "wall_s": wall, "summary": head, "runs": runs,
            "counts": counts, "git_before": before, "git_after": after, "plan_text": plan_text,
            "replay_stdout": so, "replay_stderr_tail": se[-4000:]}


def part4(a, envs, root, versions, newest, ref_python):
    log("part 4: recording the six runs (reference flordb)")
    bin_dir = os.path.dirname(ref_python)
    repo = make_repo(root, "accept-ref", envs.env())
    walls = record_accept(ref_python, repo, envs, root, "accept-ref", versions, extra_path=bin_dir)
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write(newest)
    before = git_state(repo, envs.env())
    log("  reference replay (answering y on stdin)")
    rc, wall, so, se = timed([ref_python, "-m", "flordb", "replay", "--apply", "abs_err,b_sq"],
                             envs.env(extra_path=bin_dir), repo, os.path.join(root, "accept-ref-replay"),
                             stdin_text="y\n", timeout=a.ref_timeout)
    after = git_state(repo, envs.env())
    db = os.path.join(repo, ".flor", "accept-ref.db")
    counts, db_error, ref_vals = {}, None, {}
    try:
        con = sqlite3.connect(db)
        for ts, name, *n in con.execute(
                "SELECT tstamp, value_name, COUNT(*), COUNT(DISTINCT ctx) FROM logs WHERE source = 'replay' "
                "AND value_name IN ('abs_err', 'b_sq') GROUP BY tstamp, value_name"):
            d = counts.setdefault(ts, {"abs_err": 0, "b_sq": 0, "rows": 0})
            d[name] = n[1]  # distinct loop positions
            d["rows"] += n[0]
        ref_vals = {}
        for ts, ctx, name, value in con.execute(
                "SELECT tstamp, ctx, value_name, value FROM logs WHERE source = 'replay' "
                "AND value_name IN ('abs_err', 'b_sq')"):
            pos = {c["name"]: c["iteration"] for c in json.loads(ctx)} if ctx else {}
            key = f"abs_err/{pos.get('epoch')}/{pos.get('step')}" if name == "abs_err" else f"b_sq/{pos.get('epoch')}"
            ref_vals.setdefault(ts, {})[key] = float(value)
        tstamps = [t for (t,) in con.execute("SELECT DISTINCT tstamp FROM logs WHERE source = 'forward' ORDER BY tstamp")]
        con.close()
    except sqlite3.Error as e:
        db_error = str(e)
        tstamps = []
    per_run = [counts.get(t, {"abs_err": 0, "b_sq": 0, "rows": 0}) for t in tstamps]
    values = [ref_vals.get(t, {}) for t in tstamps]
    printed = {"abs_err": len(re.findall(r"abs_err: ", so)), "b_sq": len(re.findall(r"b_sq: ", so))}
    notes = [re.sub(r"^.*?\? (?=entering)", "", l).strip() for l in so.splitlines()
             if re.match(r"(.*\? )?(entering|applying|Logging record|python train\.py|Checking out)", l)]
    entered = re.findall(r"^entering (\S+ ?\S*) ([0-9a-f]{40})", so, re.M)
    errors = [l for l in (so + "\n" + se).splitlines()
              if re.search(r"Exception|Error|error|FLOR: replay of|exited with code|Traceback", l)]
    log(f"  reference replay: exit {rc}, {wall:.2f} s, {sum(c['abs_err'] + c['b_sq'] for c in per_run)} values")
    return {"record_walls": walls, "rc": rc, "wall_s": wall, "per_run": per_run, "tstamps": tstamps,
            "db_error": db_error, "values": values, "entered": len(entered), "printed": printed, "notes": notes, "errors": errors[:30], "git_before": before,
            "git_after": after, "stdout_tail": so[-6000:], "stderr_tail": se[-6000:]}


# --- report ----------------------------------------------------------------

def fmt_all(xs):
    return ", ".join(f"{x:.2f}" for x in xs)


def report(a, res, command, total_s, info):
    L = []
    if "p12" in res:
        r = res["p12"]
        fw = r["forward"]
        walls = [x["wall_s"] for x in r["p1"]]
        model = fw["start_import_s"] + fw["setup_s"] + a.epochs * fw["restore_s"]
        med = median(walls)
        inner = [x["process"] for x in r["p1"] if x["process"]]
        L += [
            f"**1. Epoch-level statement** (`w_norm` after the inner loop; SGD in pure Python, {a.epochs} epochs × "
            f"{a.steps} steps, batch 64, 32 features; checkpointed: the model, the data order, the RNG state; "
            f"{fw['ckpt_bytes']:,} bytes pickled per epoch):",
            "",
            "| measurement | value |",
            "|---|---|",
            f"| original run, whole process (start, import, setup, loop, commit at exit) | {fw['process_s']:.2f} s |",
            f"| original run: setup / loop / per epoch (inside the process) | {fw['setup_s']:.3f} s / {fw['loop_s']:.2f} s / {fw['epoch_s']:.3f} s |",
            f"| `flor replay --apply w_norm --yes --jobs 1 --force`, wall (median of {len(walls)}; all) | **{med:.2f} s** ({fmt_all(walls)}) |",
            f"| replay / original run (process) | **{med / fw['process_s']:.2f}** ({fw['process_s'] / med:.1f}× faster) |",
            f"| model: start + import ({fw['start_import_s']:.3f} s) + setup ({fw['setup_s']:.3f} s) + {a.epochs} × restore ({fw['restore_s'] * 1e6:.0f} µs) | {model:.2f} s |",
            f"| replay / model | {med / model:.2f} (replay − model = {med - model:.2f} s: plan, materializing the version, the worker, publishing) |",
            f"| worker time in the summary (median); plan's estimate | {median(x['actual_s'] for x in r['p1']):.2f} s; {r['plan1']['runs'][0]['estimate_s']:.2f} s |",
            f"| `flor replay --apply w_norm --dry-run` alone (the plan: git, propagation, cost model) | {r['plan1']['dry_run_wall_s']:.2f} s |",
        ]
        if inner:
            L.append(f"| inside the replayed process: import / setup / per epoch (median) | "
                     f"{median(x['import_s'] for x in inner):.3f} s / {median(x['setup_s'] for x in inner):.3f} s / "
                     f"{median(x['epoch_s'] for x in inner) * 1e3:.1f} ms (epochs seen: {inner[0]['epochs_seen']}) |")
        L.append("")
        p2 = r["p2"]
        w1 = [x["wall_s"] for x in p2[1]]
        w2 = [x["wall_s"] for x in p2[2]]
        sp = [x / y for x, y in zip(w1, w2)]
        pl1, pl2 = r["plans2"][1], r["plans2"][2]
        L += [
            f"**2. Checkpoint-based parallelism** (`sq_loss` inside the inner loop: every epoch runs in full; "
            f"{a.epochs * a.steps:,} values per replay; `--force`, {a.reps} repetitions, the order alternating):",
            "",
            "| measurement | `--jobs 1` | `--jobs 2` | speedup |",
            "|---|---|---|---|",
            f"| wall, median | {median(w1):.2f} s | {median(w2):.2f} s | **{median(w1) / median(w2):.2f}×** (target ≥ 1.6×) |",
            f"| wall, every repetition | {fmt_all(w1)} | {fmt_all(w2)} | {', '.join(f'{s:.2f}×' for s in sp)} |",
            f"| segments (plan) | {pl1['runs'][0]['segments']} | {pl2['runs'][0]['segments']} | |",
            f"| plan's estimate (makespan) | {pl1['total']['makespan_s']:.2f} s | {pl2['total']['makespan_s']:.2f} s | {pl1['total']['makespan_s'] / pl2['total']['makespan_s']:.2f}× |",
            f"| worker seconds in the summary (sum over segments), median | {median(x['actual_s'] for x in p2[1]):.2f} s | {median(x['actual_s'] for x in p2[2]):.2f} s | |",
            f"| original run's loop, for scale | {fw['loop_s']:.2f} s | | |",
            f"| control: CPU capacity for 2 processes, before each pair and at the end (2.00 = two free cores) | | | "
            + ", ".join(f"{c['capacity']:.2f}" for c in r["capacity"]) + " |",
            f"| speedup ÷ capacity probed before its pair (1.00: all the parallelism the machine offered) | | | "
            + ", ".join(f"{x:.2f}" for x in (sp[i] / r["capacity"][i]["capacity"] for i in range(len(sp)))) + " |",
            "",
        ]
    if "p3" in res:
        r = res["p3"]
        exp = expected_accept(a.points)
        by_ts = {x["tstamp"]: x for x in r["runs"]}
        j1 = r["j1"]
        by_ts1 = {x["tstamp"]: x for x in j1["runs"]}
        est1 = {x["tstamp"]: x for x in j1["plan"]}
        L += [
            f"**3. Estimate vs actual** (tests/replay's five versions and six runs, heavier: {a.points} data points, "
            f"`busy(x)` = {a.work:,} multiply-adds per step; `abs_err` in the step loop, `b_sq` at epoch level; "
            "`flor replay --apply abs_err,b_sq --dry-run --jobs 2`, then `--yes --jobs 2`; then the same with `--jobs 1 --force` "
            "(one worker: no competition between the workers for the 2 cores)):",
            "",
            "| run | `--kwargs` | original run (process) | plan: outer its × segments | estimated | actual, `--jobs 2` | error | values (expected) | `--jobs 1`: estimated / actual / error |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        errs, errs1 = [], []
        for i, p in enumerate(r["plan"]):
            s = by_ts.get(p["tstamp"])
            c = r["counts"][i] if i < len(r["counts"]) else {"abs_err": 0, "b_sq": 0}
            e = exp[i]
            if s:
                err = (p["estimate_s"] - s["actual_s"]) / s["actual_s"] * 100
                errs.append(abs(err))
                act, es = f"{s['actual_s']:.2f} s", f"{err:+.0f}%"
            else:
                act, es = "—", "—"
            s1, p1_ = by_ts1.get(p["tstamp"]), est1.get(p["tstamp"])
            if s1 and p1_:
                e1 = (p1_["estimate_s"] - s1["actual_s"]) / s1["actual_s"] * 100
                errs1.append(abs(e1))
                c1 = f"{p1_['estimate_s']:.2f} / {s1['actual_s']:.2f} s / {e1:+.0f}%"
            else:
                c1 = "—"
            L.append(f"| {i + 1} | {p['args']} | {r['record_walls'][i]:.2f} s | {p['outer']} × {p['segments']} | "
                     f"{p['estimate_s']:.2f} s | {act} | {es} | {c['abs_err']} + {c['b_sq']} ({e['abs_err']} + {e['b_sq']}) | {c1} |")
        t = r["total"]
        head = r["summary"] or {}
        sum_act = sum(x["actual_s"] for x in r["runs"])
        L += [
            f"| total work | | {sum(r['record_walls']):.2f} s | | {t['work_s']:.2f} s | {sum_act:.2f} s | "
            f"{(t['work_s'] - sum_act) / sum_act * 100:+.0f}% | | {j1['total']['work_s']:.2f} / "
            f"{sum(x['actual_s'] for x in j1['runs']):.2f} s / "
            f"{(j1['total']['work_s'] - sum(x['actual_s'] for x in j1['runs'])) / sum(x['actual_s'] for x in j1['runs']) * 100:+.0f}% |",
            f"| makespan, 2 workers (summary's wall clock; the command's wall) | | | | {t['makespan_s']:.2f} s | "
            f"{head.get('wall_s', float('nan')):.2f} s; {r['wall_s']:.2f} s | "
            f"{(t['makespan_s'] - head.get('wall_s', float('nan'))) / head.get('wall_s', float('nan')) * 100:+.0f}% | | "
            f"wall: {j1['summary']['wall_s']:.2f} s; {j1['wall_s']:.2f} s |",
            "",
            f"Per-run estimate error with `--jobs 2`: median {median(errs):.0f}%, worst {max(errs):.0f}%; with `--jobs 1`: "
            f"median {median(errs1):.0f}%, worst {max(errs1):.0f}% (target within 25%). CPU capacity probe for 2 "
            f"processes right after the `--jobs 2` replay: {r['capacity']['capacity']:.2f} (2.00 = two free cores). "
            f"Git before → after the replay: HEAD {r['git_before']['head']} → {r['git_after']['head']}, "
            f"branch {r['git_before']['branch']} → {r['git_after']['branch']}, "
            f"status {'unchanged' if r['git_before']['status'] == r['git_after']['status'] else 'CHANGED'}.",
            "",
        ]
    if "p4" in res:
        r = res["p4"]
        o = res.get("p3")
        exp = expected_accept(a.points)
        e_abs = sum(x["abs_err"] for x in exp)
        e_b = sum(x["b_sq"] for x in exp)
        got_abs = sum(x["abs_err"] for x in r["per_run"])
        got_b = sum(x["b_sq"] for x in r["per_run"])
        L += [
            f"**4. Side by side with `flordb` {info.get('ref_version', '?')} (PyPI)** on the scenario of 3 "
            "(each recorded with its own package: six runs over the five committed versions):",
            "",
            "| measurement | flor (ours) | `flordb` " + info.get("ref_version", "?") + " |",
            "|---|---|---|",
        ]
        if o:
            oc = o["counts"]
            L += [
                f"| recording the six runs (processes, sum) | {sum(o['record_walls']):.2f} s | {sum(r['record_walls']):.2f} s |",
                f"| replay command | `flor replay --apply abs_err,b_sq --yes --jobs 2` | `python -m flordb replay --apply abs_err,b_sq` (+ `y`) |",
                f"| replay wall time | {o['wall_s']:.2f} s | {r['wall_s']:.2f} s (exit {r['rc']}) |",
                f"| runs with values recovered | {sum(1 for c in oc if c['abs_err'] or c['b_sq'])} of 6 | {sum(1 for c in r['per_run'] if c['abs_err'] or c['b_sq'])} of 6 |",
                f"| `abs_err` values (expected {e_abs}) | {sum(c['abs_err'] for c in oc)} | {got_abs} |",
                f"| `b_sq` values (expected {e_b}) | {sum(c['b_sq'] for c in oc)} | {got_b} |",
                f"| the reference's recovered values equal to ours at the same run and loop position (bit for bit) | — | "
                f"{sum(1 for i, rv in enumerate(r['values']) for k, v in rv.items() if i < len(o['values']) and o['values'][i].get(k) == v)}"
                f" of {sum(len(rv) for rv in r['values'])} |",
                f"| rows of `abs_err`/`b_sq` in the database (duplicates included) | {sum(c['abs_err'] + c['b_sq'] for c in oc)} | {sum(c['rows'] for c in r['per_run'])} |",
                f"| lines printed by the replayed scripts (`abs_err: ` / `b_sq: `) | — | {r['printed']['abs_err']} / {r['printed']['b_sq']} |",
                f"| per run `abs_err` + `b_sq` | {'; '.join(str(c['abs_err']) + '+' + str(c['b_sq']) for c in oc)} | "
                f"{'; '.join(str(c['abs_err']) + '+' + str(c['b_sq']) for c in r['per_run'])} |",
                f"| git after the replay: HEAD moved / branch / tracked files changed | "
                f"{'yes' if o['git_before']['head'] != o['git_after']['head'] else 'no'} / {o['git_after']['branch']} / "
                f"{'yes' if o['git_before']['status'] != o['git_after']['status'] else 'no'} | "
                f"{'yes (' + r['git_before']['head'] + ' → ' + r['git_after']['head'] + ', ' + str(r['git_after']['commits'] - r['git_before']['commits']) + ' commits added)' if r['git_before']['head'] != r['git_after']['head'] else 'no'} / "
                f"{r['git_before']['branch']} → {r['git_after']['branch']} / {'yes' if r['git_before']['status'] != r['git_after']['status'] else 'no'} |",
            ]
        L.append("")
        if r["notes"]:
            L += ["Reference replay, its progress lines:", "", "```"] + [l[:200] for l in r["notes"][:30]] + ["```", ""]
        if r["errors"]:
            L += ["Reference replay, error lines from its output (first ones):", "", "```"]
            L += [l[:300] for l in r["errors"][:12]]
            L += ["```", ""]
    py = info.get("python", "?")
    L += [
        f"Command: `{command}` (total {total_s:.0f} s; all figures from this one invocation, same figures in its JSON). "
        f"{os.cpu_count()} CPUs (shared; load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}), "
        f"CPython {py}, flor binary `{a.flor}` (built {info.get('flor_mtime')}), our `flordb` module's extension built "
        f"{info.get('module_so_mtime')}, repository at {info.get('head')}. Wall-clock seconds (perf_counter around each command); every "
        "measurement in a fresh git repository under an isolated git configuration.",
    ]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=DEFAULT_OURS, help="Python with our flordb module")
    ap.add_argument("--flor", default=DEFAULT_FLOR, help="the flor CLI binary")
    ap.add_argument("--ref-venv", default=DEFAULT_REF_VENV, help="venv with the reference flordb (must exist)")
    ap.add_argument("--epochs", type=int, default=8, help="parts 1-2: epochs")
    ap.add_argument("--steps", type=int, default=400, help="parts 1-2: steps per epoch (~0.7 ms each)")
    ap.add_argument("--reps", type=int, default=3, help="parts 1-2: repetitions")
    ap.add_argument("--points", type=int, default=150, help="parts 3-4: data points (steps per epoch)")
    ap.add_argument("--work", type=int, default=20000, help="parts 3-4: multiply-adds of busy() per step")
    ap.add_argument("--ref-timeout", type=int, default=300, help="part 4: seconds before the reference replay is stopped")
    ap.add_argument("--only", default="1234", help="which parts to run (e.g. 12, 34; 1 and 2 share a recording and run together, 4 reports beside 3 when both run)")
    ap.add_argument("--json", help="write every figure and raw output here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args()
    command = "python3 scripts/bench_replay.py" + ("".join(" " + shlex.quote(x) for x in sys.argv[1:]))
    t_total = time.perf_counter()
    for p in (a.ours, a.flor):
        if not os.path.exists(p):
            sys.exit(f"missing {p}")
    root = tempfile.mkdtemp(prefix="flor-bench-replay.")
    log(f"scratch folder {root}")
    envs = Env(root)
    info = {"python": run([a.ours, "-c", "import sys; print(sys.version.split()[0])"], envs.env()).stdout.strip()}
    info["head"] = run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], envs.env(), check=False).stdout.strip()
    info["flor_mtime"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(a.flor)))
    so = glob.glob(os.path.join(os.path.dirname(run([a.ours, "-c", "import flordb; print(flordb.__file__)"],
                                                    envs.env(), cwd=root).stdout.strip()), "_flor*.so"))
    info["module_so_mtime"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(so[0]))) if so else "?"
    ref_python = os.path.join(a.ref_venv, "bin", "python")
    if "4" in a.only:
        if not os.path.exists(ref_python):
            sys.exit(f"no reference venv at {a.ref_venv} (scripts/bench_vs_flordb.py creates it)")
        info["ref_version"] = run([ref_python, "-c", "import importlib.metadata as m; print(m.version('flordb'))"],
                                  envs.env()).stdout.strip()
    ours = Ours(a, envs, root)
    res = {}
    try:
        if "1" in a.only or "2" in a.only:
            res["p12"] = part12(a, envs, root, ours)
        if "3" in a.only or "4" in a.only:
            versions, newest = accept_sources(a)
            if "3" in a.only:
                res["p3"] = part3(a, envs, root, ours, versions, newest)
            if "4" in a.only:
                res["p4"] = part4(a, envs, root, versions, newest, ref_python)
    except Exception:
        log(f"failed; scratch folder kept at {root}")
        raise
    total = time.perf_counter() - t_total
    md = report(a, res, command, total, info)
    print(md)
    if a.json:
        out = {"command": command, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "loadavg_at_end": os.getloadavg()},
               "info": info, "args": vars(a), "results": res, "total_s": total, "markdown": md}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
        log(f"JSON written to {a.json}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    log(f"done in {total:.0f} s")


if __name__ == "__main__":
    main()
