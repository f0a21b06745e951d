#!/usr/bin/env python3
"""Side-by-side benchmark: our `flordb` module (flor's Rust engine) against
the reference `flordb` package from PyPI.

Both are imported as `flordb`, so each runs in its own virtualenv:

- ours: the venv where flor-python is installed (default
  /root/.cache/flor/venv; `--ours PYTHON` for another interpreter);
- the reference: a throwaway venv (default ~/.cache/flor/flordb-ref-venv),
  created with `pip install flordb` when missing or broken and reused
  otherwise, on the same base interpreter as ours.

Every measurement runs one training script (TRAIN_PY below) as a subprocess
in a fresh temporary git repository (branch `main`, one commit), stdout and
stderr redirected to files: both implementations print a line per
`flor.log`. The two implementations are interleaved; medians are reported.
Each flor run is checked afterwards: one printed line and one durable record
(ours: its query database over the run refs; the reference: its committed
run JSONL) per logged value.

(a) `flor.log` per call. Inside `flor.loop("epoch")`, every epoch times
    three blocks of S steps (their order rotating): a bare `range` loop, a
    `flor.loop("step_nolog")` loop without logging, and a `flor.loop("step")`
    loop with one `flor.log` per step. Per call: (log - nolog) / S; median
    over all epochs of all runs.
(b) A training loop: mini-batch SGD of a linear model in pure Python
    (~30-40 us of work per step), one `flor.log("loss")` per step.
    - paired: in one process, every epoch runs S steps with no flor
      (bare `range`, no log) and S steps inside `flor.loop`s with a log per
      step, in 2K blocks of S/K steps in ABBA order (plain, flor, flor,
      plain, ...; K=4); flor's time includes its end-of-epoch work (from the
      last block to the next epoch). Overhead: median over all epochs of
      flor / plain - 1. Blocks close in time see the same machine speed,
      which matters on a shared machine where the speed of whole runs
      wanders by +-30%; the ABBA order keeps either kind from always
      running first.
    - whole runs: a 100,000-step run with flor against the identical script
      with no flor at all (no import), as processes timed by this driver
      (interpreter start, import, loop, the run's commit at exit); overhead
      is the median over adjacent pairs.

Prints a Markdown table (for BENCHMARKS.md) and writes JSON with `--json`.
Uses only the standard library: run it with any python3.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

DEFAULT_OURS = "/root/.cache/flor/venv/bin/python"
DEFAULT_REF_VENV = os.path.join(os.path.expanduser("~"), ".cache", "flor", "flordb-ref-venv")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

# The training script. Mode and sizes come from the environment, not the
# command line: the reference parses sys.argv itself at import.
TRAIN_PY = textwrap.dedent(
    '''
    import json, os, random, time

    now = time.perf_counter
    cpu = time.process_time  # every thread of the process (flor's worker too)
    t0 = now()
    MODE = os.environ["BENCH_MODE"]  # calls | work | work_plain | work_paired
    E = int(os.environ["BENCH_E"])
    S = int(os.environ["BENCH_S"])
    if MODE != "work_plain":
        import flordb as flor
    res = {"mode": MODE, "epochs": E, "steps_per_epoch": S, "import_s": now() - t0}

    if MODE == "calls":
        def plain():
            for s in range(S):
                v = s * 0.5

        def nolog():
            for s in flor.loop("step_nolog", range(S)):
                v = s * 0.5

        def logged():
            for s in flor.loop("step", range(S)):
                flor.log("x", s * 0.5)

        blocks = [("plain", plain), ("nolog", nolog), ("log", logged)]
        rows = []
        for e in flor.loop("epoch", range(E)):
            row = {}
            for name, block in blocks[e % 3:] + blocks[:e % 3]:
                t, c = now(), cpu()
                block()
                row[name] = now() - t
                row[name + "_cpu"] = cpu() - c
            rows.append(row)
        res["epochs_s"] = rows
    else:
        # Mini-batch SGD of a linear model, pure Python.
        rng = random.Random(0)
        D, B, NX = 32, 6, 1024
        xs = [[rng.gauss(0, 1) for _ in range(D)] for _ in range(NX)]
        w_true = [rng.gauss(0, 1) for _ in range(D)]
        ys = [sum(a * b for a, b in zip(x, w_true)) + rng.gauss(0, 0.1) for x in xs]
        w = [0.0] * D
        lr = 0.01

        def step(i):
            g = [0.0] * D
            loss = 0.0
            base = (i * B) % (NX - B)
            for k in range(base, base + B):
                x = xs[k]
                err = sum([a * b for a, b in zip(w, x)]) - ys[k]
                loss += err * err
                g = [gj + err * xj for gj, xj in zip(g, x)]
            c = lr / B
            for j in range(D):
                w[j] -= c * g[j]
            return loss / B

        i = 0
        t = now()
        if MODE == "work":
            for e in flor.loop("epoch", range(E)):
                for s in flor.loop("step", range(S)):
                    loss = step(i)
                    i += 1
                    flor.log("loss", loss)
        elif MODE == "work_plain":
            for e in range(E):
                for s in range(S):
                    loss = step(i)
                    i += 1
        else:  # work_paired
            # Per epoch, K blocks of S/K steps of each kind in ABBA order
            # (plain, flor, flor, plain, ...), so that neither kind always
            # runs first; each flor block is a whole inner flor.loop. The time
            # from the last block's end to the next epoch's first block
            # (flor's end-of-epoch work) is counted as flor's.
            K = int(os.environ.get("BENCH_K", "4"))
            n = S // K

            def plain_block():
                global i
                for s in range(n):
                    step(i)
                    i += 1

            def flor_block():
                global i
                for s in flor.loop("step", range(n)):
                    loss = step(i)
                    i += 1
                    flor.log("loss", loss)

            rows = []
            last_end = None
            for e in flor.loop("epoch", range(E)):
                first, first_cpu = now(), cpu()
                if rows:
                    rows[-1]["flor"] += first - last_end
                    rows[-1]["flor_cpu"] += first_cpu - last_cpu
                row = {"plain": 0.0, "flor": 0.0, "plain_cpu": 0.0, "flor_cpu": 0.0}
                for k in range(2 * K):
                    kind = "plain" if (k % 4) in (0, 3) else "flor"
                    t0, c0 = now(), cpu()
                    (plain_block if kind == "plain" else flor_block)()
                    row[kind] += now() - t0
                    row[kind + "_cpu"] += cpu() - c0
                last_end, last_cpu = now(), cpu()
                rows.append(row)
            rows[-1]["flor"] += now() - last_end
            rows[-1]["flor_cpu"] += cpu() - last_cpu
            res["epochs_s"] = rows
            loss = step(i)
        res["loop_s"] = now() - t
        res["final_loss"] = loss

    with open(os.environ["BENCH_RESULT"], "w") as f:
        json.dump(res, f)
    '''
).lstrip()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def clean_env():
    env = dict(os.environ)
    for k in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP", "FLOR_CAPTURE"):
        env.pop(k, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def py_info(python):
    """flordb's version and location under `python`. Imported inside a
    throwaway git repository: the reference refuses to import outside one."""
    probe = tempfile.mkdtemp(prefix="flor-bench-probe.")
    try:
        run(["git", "init", "-q", probe])
        return _py_info(python, probe)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _py_info(python, cwd):
    out = run(
        [
            python,
            "-c",
            "import sys, json, importlib.metadata as m, flordb;"
            "print(json.dumps({'version': m.version('flordb'), 'file': flordb.__file__,"
            " 'python': sys.version.split()[0], 'base': sys._base_executable}))",
        ],
        env=clean_env(),
        cwd=cwd,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def ensure_ref_venv(venv, spec, base_python):
    """The reference venv: reused when its flordb imports, rebuilt when it
    does not; refused when it holds this repository's flordb."""
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        try:
            info = py_info(python)
            if os.path.realpath(info["file"]).startswith(REPO_ROOT + os.sep):
                sys.exit(f"{venv} holds this repository's flordb, not the reference; pass another --ref-venv")
            log(f"reusing reference venv {venv} (flordb {info['version']})")
            return python, info, False
        except subprocess.CalledProcessError as e:
            log(f"reference venv {venv} unusable ({e.stderr.strip()[-500:]}); rebuilding it")
        except (ValueError, KeyError) as e:
            log(f"reference venv {venv} unusable ({e}); rebuilding it")
        if not os.path.exists(os.path.join(venv, "pyvenv.cfg")):
            sys.exit(f"{venv} is not a virtualenv; not touching it")
        shutil.rmtree(venv)
    log(f"creating reference venv {venv} with {base_python} and `pip install {spec}`")
    run([base_python, "-m", "venv", venv])
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec], env=clean_env())
    return python, py_info(python), True


def make_repo(root, name):
    """A fresh git repository with train.py committed on branch main."""
    repo = os.path.join(root, name)
    os.makedirs(repo)
    run(["git", "init", "-q", "-b", "main", repo])
    # The reference commits through `git` itself: give the throwaway repo an identity.
    run(["git", "-C", repo, "config", "user.name", "b"])
    run(["git", "-C", repo, "config", "user.email", "b@b"])
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write(TRAIN_PY)
    run(["git", "-C", repo, "add", "train.py"])
    run(["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "train.py"])
    return repo


class Runner:
    def __init__(self, root, keep):
        self.root = root
        self.keep = keep
        self.n = 0

    def once(self, impl, python, mode, epochs, steps):
        """One subprocess run; returns the script's figures plus wall_s and
        the checks of what it recorded."""
        self.n += 1
        tag = f"{self.n:03d}-{impl}-{mode}"
        repo = make_repo(self.root, tag)
        result = os.path.join(self.root, tag + ".json")
        out_path = os.path.join(self.root, tag + ".stdout")
        err_path = os.path.join(self.root, tag + ".stderr")
        env = clean_env()
        env.update(BENCH_MODE=mode, BENCH_E=str(epochs), BENCH_S=str(steps), BENCH_RESULT=result)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t = time.perf_counter()
            rc = subprocess.call([python, "train.py"], cwd=repo, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            wall = time.perf_counter() - t
        if rc != 0 or not os.path.exists(result):
            with open(err_path, errors="replace") as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"{impl} {mode} failed (exit {rc}); stderr tail:\n{tail}")
        with open(result) as f:
            res = json.load(f)
        res["wall_s"] = wall
        if mode != "work_plain":
            name = "x" if mode == "calls" else "loss"
            n_logs = epochs * steps
            res["printed_lines"] = count_lines(out_path, f"{name}: ")
            res["recorded_logs"] = recorded(impl, python, repo, name)
            if res["printed_lines"] < n_logs or res["recorded_logs"] != n_logs:
                raise RuntimeError(
                    f"{impl} {mode}: expected {n_logs} logs of {name!r}, printed "
                    f"{res['printed_lines']}, recorded {res['recorded_logs']} (repo kept at {repo})"
                )
        if not self.keep:
            shutil.rmtree(repo)
            for p in (result, out_path, err_path):
                os.remove(p)
        return res


def count_lines(path, needle):
    n = 0
    with open(path, "rb") as f:
        nb = needle.encode()
        for line in f:
            if nb in line:
                n += 1
    return n


def recorded(impl, python, repo, name):
    """How many values of `name` the run left in its durable records."""
    if impl == "ours":
        # Through its query database, after checking the run ref is in git.
        code = (
            "import flordb;"
            f"r = flordb.query(\"SELECT COUNT(*) AS n FROM logs WHERE value_name = '{name}' AND kind = 'log'\");"
            "print(int(r['n'][0]) if hasattr(r, 'columns') else int(r[0]['n']))"
        )
        refs = run(["git", "-C", repo, "for-each-ref", "refs/flor/runs/"]).stdout.strip()
        if not refs:
            return -1
        return int(run([python, "-c", code], cwd=repo, env=clean_env()).stdout.strip().splitlines()[-1])
    # The reference: its run JSONL, which it commits to git on a flor.* branch.
    subjects = run(["git", "-C", repo, "log", "--all", "--format=%s"]).stdout
    if "FLOR::Auto-commit::" not in subjects:
        return -1
    runs_dir = os.path.join(repo, ".flor", "runs")
    n = 0
    for fn in os.listdir(runs_dir):
        if fn.endswith(".jsonl"):
            with open(os.path.join(runs_dir, fn)) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("name") == name and rec.get("type") == 1:
                        n += 1
    return n


def median(xs):
    return statistics.median(list(xs))


def split(n, epochs):
    if n % epochs:
        sys.exit(f"{n} steps are not a multiple of {epochs} epochs")
    return epochs, n // epochs


def figures(n_calls, calls, steps, work, paired):
    f = {"calls": n_calls, "steps": steps}
    # (a): one sample per epoch of every run.
    ep = [row for r in calls for row in r["epochs_s"]]
    s = calls[0]["steps_per_epoch"]
    f["log_us"] = median((row["log"] - row["nolog"]) / s * 1e6 for row in ep)
    f["loop_iter_us"] = median((row["nolog"] - row["plain"]) / s * 1e6 for row in ep)
    f["logged_step_us"] = median((row["log"] - row["plain"]) / s * 1e6 for row in ep)
    f["log_cpu_us"] = median((row["log_cpu"] - row["nolog_cpu"]) / s * 1e6 for row in ep)
    f["import_s"] = median(r["import_s"] for r in calls)
    # (b) paired blocks: one sample per epoch of every run.
    ep = [row for r in paired for row in r["epochs_s"]]
    s = paired[0]["steps_per_epoch"]
    f["paired_steps"] = sum(r["epochs"] * r["steps_per_epoch"] for r in paired)
    f["paired_overhead_pct"] = median((row["flor"] / row["plain"] - 1) * 100 for row in ep)
    f["paired_per_step_us"] = median((row["flor"] - row["plain"]) / s * 1e6 for row in ep)
    f["paired_cpu_pct"] = median((row["flor_cpu"] / row["plain_cpu"] - 1) * 100 for row in ep)
    f["paired_work_us"] = median(row["plain"] / s * 1e6 for row in ep)
    # (b) whole runs: one sample per adjacent (no flor, flor) pair.
    pairs = list(zip(work["work_plain"], work["work"]))
    for what in ("loop", "wall"):
        k = what + "_s"
        f[f"{what}_overhead_pct"] = median((fl[k] / pl[k] - 1) * 100 for pl, fl in pairs)
        f[f"plain_{what}_s"] = median(pl[k] for pl, _ in pairs)
        f[f"flor_{what}_s"] = median(fl[k] for _, fl in pairs)
    f["whole_per_step_us"] = median((fl["loop_s"] - pl["loop_s"]) / steps * 1e6 for pl, fl in pairs)
    # What flor adds to a process outside its training loop: import and the
    # run's commit at exit (interpreter start and data set-up cancel out).
    f["outside_loop_s"] = median((fl["wall_s"] - fl["loop_s"]) - (pl["wall_s"] - pl["loop_s"]) for pl, fl in pairs)
    f["work_us_per_step"] = f["plain_loop_s"] / steps * 1e6
    return f


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=DEFAULT_OURS, help="python with our flordb installed (default %(default)s)")
    ap.add_argument("--ref-venv", default=DEFAULT_REF_VENV, help="the reference's venv, created if missing (default %(default)s)")
    ap.add_argument("--ref-spec", default="flordb", help="pip requirement for the reference (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="runs of (a) and of (b) paired (default %(default)s)")
    ap.add_argument("--work-reps", type=int, default=4, help="pairs of whole runs in (b); the order alternates (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of (a) and (b) paired; whole runs use 10 (default %(default)s)")
    ap.add_argument("--calls", type=int, default=100_000, help="flor.log calls per run in (a), ours (default %(default)s)")
    ap.add_argument("--ref-calls", type=int, default=10_000, help="flor.log calls per run in (a), reference (default %(default)s)")
    ap.add_argument("--steps", type=int, default=100_000,
                    help="logged steps per run in (b), whole runs and paired (default %(default)s)")
    ap.add_argument("--ref-steps", type=int, default=None,
                    help="the same for the reference (default: --steps, fewer when a run would exceed --ref-max-seconds)")
    ap.add_argument("--ref-max-seconds", type=float, default=120.0, help="longest projected reference run in (b) (default %(default)s)")
    ap.add_argument("--only", choices=["ours", "ref"], help="measure one implementation only")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repositories and outputs")
    a = ap.parse_args()
    command = "python3 scripts/bench_vs_flordb.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    t_total = time.perf_counter()

    impls = {}
    if a.only != "ref":
        info = py_info(a.ours)
        impls["ours"] = {"python": a.ours, "info": info}
        log(f"ours: {a.ours} -> flordb {info['version']} at {info['file']}")
    if a.only != "ours":
        base = impls["ours"]["info"]["base"] if "ours" in impls else sys.executable
        t = time.perf_counter()
        python, info, created = ensure_ref_venv(a.ref_venv, a.ref_spec, base)
        info["venv_created"] = created
        info["venv_setup_s"] = time.perf_counter() - t
        impls["ref"] = {"python": python, "info": info}
        log(f"reference: {python} -> flordb {info['version']} (python {info['python']})")
    t_measure = time.perf_counter()

    root = tempfile.mkdtemp(prefix="flor-bench-vs-flordb.")
    runner = Runner(root, a.keep)
    log(f"temporary repositories under {root}")
    ncalls = {"ours": a.calls, "ref": a.ref_calls}

    # (a) per-call cost.
    calls = {k: [] for k in impls}
    for rep in range(a.reps):
        for impl, d in impls.items():
            e, s = split(ncalls[impl], a.epochs)
            r = runner.once(impl, d["python"], "calls", e, s)
            calls[impl].append(r)
            lg = median((x["log"] - x["nolog"]) / s * 1e6 for x in r["epochs_s"])
            lp = median((x["nolog"] - x["plain"]) / s * 1e6 for x in r["epochs_s"])
            log(f"(a) {impl} run {rep + 1}: log {lg:.2f} us/call, flor.loop {lp:.2f} us/iteration, process {r['wall_s']:.1f} s")

    # (b) the reference's step count is cut to fit --ref-max-seconds.
    steps = {"ours": a.steps, "ref": a.steps}
    ref_note = None
    if "ref" in impls:
        if a.ref_steps is not None:
            steps["ref"] = a.ref_steps
        else:
            per_step = median((x["log"] - x["plain"]) / (r["steps_per_epoch"]) for r in calls["ref"] for x in r["epochs_s"])
            per_step += 40e-6  # the work
            projected = a.steps * per_step
            if projected > a.ref_max_seconds:
                unit = a.epochs * 1000
                steps["ref"] = max(unit, int(a.ref_max_seconds / per_step) // unit * unit)
                ref_note = (f"a reference run of {a.steps:,} steps was projected at {projected:.0f} s, "
                            f"so the reference's runs in (b) have {steps['ref']:,} steps")
                log(ref_note)

    paired = {k: [] for k in impls}
    for rep in range(a.reps):
        for impl, d in impls.items():
            e, s = split(steps[impl], a.epochs)
            r = runner.once(impl, d["python"], "work_paired", e, s)
            paired[impl].append(r)
            ov = median((x["flor"] / x["plain"] - 1) * 100 for x in r["epochs_s"])
            log(f"(b) paired {impl} run {rep + 1}: flor {ov:+.1f}% over plain, process {r['wall_s']:.1f} s")

    work = {k: {"work": [], "work_plain": []} for k in impls}
    for rep in range(a.work_reps):
        for impl, d in impls.items():
            e, s = split(steps[impl], 10)
            for mode in ("work_plain", "work") if rep % 2 == 0 else ("work", "work_plain"):
                work[impl][mode].append(runner.once(impl, d["python"], mode, e, s))
            p, f = work[impl]["work_plain"][-1], work[impl]["work"][-1]
            log(f"(b) whole {impl} pair {rep + 1}: loop {p['loop_s']:.2f} s plain vs {f['loop_s']:.2f} s flor "
                f"({(f['loop_s'] / p['loop_s'] - 1) * 100:+.1f}%), process {p['wall_s']:.2f} vs {f['wall_s']:.2f} s "
                f"({(f['wall_s'] / p['wall_s'] - 1) * 100:+.1f}%)")

    fig = {impl: figures(ncalls[impl], calls[impl], steps[impl], work[impl], paired[impl]) for impl in impls}
    total = time.perf_counter() - t_total
    md = table(fig, impls, a, command, ref_note, total)
    print(md)
    if a.json:
        out = {
            "command": command,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
            "reps": a.reps,
            "work_reps": a.work_reps,
            "implementations": {k: {"python": v["python"], **v["info"]} for k, v in impls.items()},
            "figures": fig,
            "ratios_ref_over_ours": ratios(fig),
            "ref_note": ref_note,
            "units": "*_us: microseconds; *_pct: percent; *_s: seconds; all wall-clock (perf_counter)",
            "raw": {"calls": calls, "paired": paired, "whole": work},
            "stdout": "redirected to a file per run (both implementations print one line per flor.log)",
            "total_s": total,
            "measure_s": time.perf_counter() - t_measure,
            "markdown": md,
        }
    finish(a, out if a.json else None, root, total)


def finish(a, out, root, total):
    """Writes `out` to `a.json` (when given), removes the scratch folder
    `root` unless `a.keep`, and says how long the whole took."""
    if out is not None:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
        log(f"JSON written to {a.json}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    log(f"done in {total:.0f} s")


RATIO_KEYS = ["log_us", "log_cpu_us", "paired_cpu_pct", "loop_iter_us", "logged_step_us", "paired_overhead_pct", "paired_per_step_us",
              "loop_overhead_pct", "whole_per_step_us", "wall_overhead_pct", "outside_loop_s", "import_s"]


def ratios(fig):
    if "ours" not in fig or "ref" not in fig:
        return {}
    out = {}
    for k in RATIO_KEYS:
        o, r = fig["ours"][k], fig["ref"][k]
        # No ratio where ours is within noise of zero (or below).
        out[k] = r / o if o > 0 and r > 0 else None
    return out


def table(fig, impls, a, command, ref_note, total):
    cols = [k for k in ("ours", "ref") if k in fig]
    head = {"ours": f"flor (our `flordb` {impls['ours']['info']['version']})" if "ours" in impls else "",
            "ref": f"`flordb` {impls['ref']['info']['version']} (PyPI)" if "ref" in impls else ""}
    both = len(cols) == 2
    rat = ratios(fig)
    o = fig.get("ours")

    def us(v):
        return f"{v:,.2f} µs" if abs(v) < 10 else f"{v:,.0f} µs"

    def pct(v):
        return f"{v:+.1f}%"

    def sec(v):
        return f"{v:.2f} s"

    def row(label, key, fmt, target=None):
        line = f"| {label} | " + " | ".join(fmt(fig[c][key]) for c in cols)
        if both:
            r = rat.get(key)
            line += " | " + ("—" if r is None else f"{r:,.0f}×" if r >= 10 else f"{r:.1f}×")
        if target and o is not None:
            limit, ok = target
            line += f" | {limit} " + ("✔" if ok(o[key]) else "✘")
        else:
            line += " | "
        return line + " |"

    def info(label, fn):
        return f"| {label} | " + " | ".join(fn(fig[c]) for c in cols) + (" | " if both else "") + " | |"

    lines = [
        "| measurement | " + " | ".join(head[c] for c in cols) + (" | reference / ours" if both else "") + " | target (ours) |",
        "|---|" + "---|" * len(cols) + ("---|" if both else "") + "---|",
        row("(a) `flor.log` per call (loop with log − same loop without)", "log_us", us, ("≤ 1 µs", lambda v: v <= 1)),
        row("(a) `flor.log` per call in CPU time of every thread (flor's worker too)", "log_cpu_us", us),
        row("(a) `flor.loop` per iteration (over a bare `range`)", "loop_iter_us", us),
        row("(a) logged step in all (loop iteration + log)", "logged_step_us", us),
        info("(a) logged steps per run × runs", lambda f: f"{f['calls']:,} × {a.reps}"),
        row("(b) paired: training-loop overhead, flor vs no flor", "paired_overhead_pct", pct, ("≤ 2%", lambda v: v <= 2)),
        row("(b) paired: the same per step", "paired_per_step_us", us),
        row("(b) paired: CPU time of every thread, flor vs no flor", "paired_cpu_pct", pct),
        info("(b) paired: logged steps (+ as many without flor); work per step",
             lambda f: f"{f['paired_steps']:,}; {f['paired_work_us']:.0f} µs"),
        row("(b) whole runs: training-loop overhead", "loop_overhead_pct", pct),
        row("(b) whole runs: process overhead (start, import, loop, commit at exit)", "wall_overhead_pct", pct),
        info("(b) whole runs: steps; loop no flor → flor; process no flor → flor",
             lambda f: f"{f['steps']:,}; {f['plain_loop_s']:.2f} → {f['flor_loop_s']:.2f} s; "
                       f"{f['plain_wall_s']:.2f} → {f['flor_wall_s']:.2f} s"),
        row("(b) whole runs: process time flor adds outside the loop (import, commit at exit)", "outside_loop_s", sec),
        row("`import flordb`", "import_s", sec),
    ]
    py = next(iter(impls.values()))["info"]["python"]
    notes = [
        "",
        f"Command: `{command}` (total {total:.0f} s; same figures in the JSON it writes). {os.cpu_count()} CPUs, "
        f"CPython {py}, both venvs on the same interpreter. Wall-clock medians; the implementations interleaved; "
        "every run a fresh process in a fresh git repository, stdout and stderr redirected to files (both print "
        "a line per `flor.log`). (a): blocks of bare `v = s * 0.5` steps inside `flor.loop(\"epoch\")`, "
        f"median over {a.epochs} epochs × {a.reps} runs. (b): mini-batch SGD (batch 6) of a 32-feature linear model "
        "in pure Python, one `flor.log(\"loss\", loss)` per step; \"paired\" times 4 no-flor and 4 flor blocks "
        f"in ABBA order in every epoch of one process ({a.epochs} epochs × {a.reps} runs; flor's end-of-epoch work "
        "counted; CPU rows: process time of every thread); "
        f"\"whole runs\" are {a.work_reps} pairs of processes (10 epochs), the flor script against the same script "
        "without `import flordb`. Every flor run checked: one printed line and one durable record per log.",
    ]
    if ref_note:
        notes += ["", f"Note: {ref_note}."]
    return "\n".join(lines + notes)


if __name__ == "__main__":
    main()
