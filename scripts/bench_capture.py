#!/usr/bin/env python3
"""Benchmark of automatic output capture (issue 18): what capturing a
script's printed lines costs the script.

One script (TRAIN_PY below): a loop of N steps, each ~40 us of pure-Python
work and one `print` of a short line, stdout redirected to a file. It runs
as a fresh process per measurement, in these variants:

- none:    the script without flor (no import);
- ours:    `import flordb` (our module), capture on with its defaults (the
           first 10,000 lines recorded, the rest shown only);
- ours-all: ours with `flor.set_capture(max_records=N)`: every line recorded;
- ours-off: ours with FLOR_CAPTURE=0 (the hooks not installed);
- ref:     `import flordb` of the reference package (FlorDB 4, its own venv,
           defaults: 10,000 lines recorded);
- ref-none: the reference venv's interpreter without flor (its baseline).

Every round runs each variant once, the order rotating from round to round
(no variant always first); each variant's ratio is taken against the
baseline of the same round (ref against ref-none, the others against none),
and the median over rounds is reported. Two times per process: the loop
alone (perf_counter around it, inside the script: import and the commit at
exit excluded) and the whole process (start to exit, as the driver sees it).
The per-line cost is (loop time - baseline loop time) / N.

A second measurement: the same loop with no work (prints back to back),
ours-all against ours-off, one process each, alternating.

A third, robust to a shared machine whose speed drifts by tens of percent
from one process to the next: paired blocks in one process (PAIRED_PY).
Blocks of N/40 steps alternate in ABBA order between the standard streams
unhooked (plain Python printing, as without flor) and hooked with every line
recorded; each ABBA group gives captured / plain, and the added cost per
line, both on the training thread's own CPU time (`time.thread_time`: what
capture costs the thread that prints, whatever the worker thread and other
processes do) and on wall time; medians over all groups, with quartiles.
It runs once with the ~40 us of work per step and once with no work
(2 x micro-steps prints back to back, where the per-line cost is not lost
in the work's noise).

Each variant runs in its own temporary git repository (one commit). Uses
only the standard library.

Usage: python3 scripts/bench_capture.py [--ours PY] [--ref PY] [--steps N]
       [--rounds R] [--json FILE] [--paired-only]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HOME = os.path.expanduser("~")
DEFAULT_OURS = os.path.join(HOME, ".cache", "flor", "venv", "bin", "python")
DEFAULT_REF = os.path.join(HOME, ".cache", "flor", "flordb-ref-venv", "bin", "python")

TRAIN_PY = """\
import os, sys, time
MODE = os.environ["BENCH_MODE"]
N = int(os.environ["BENCH_STEPS"])
K = int(os.environ["BENCH_WORK"])
if MODE != "none":
    import flordb as flor
    if MODE == "all":
        flor.set_capture(max_records=N + 10)

def work(i):
    s = 0
    for k in range(K):
        s += (k ^ i) & 7
    return s

t0 = time.perf_counter()
for i in range(N):
    s = work(i)
    print(f"step {i} loss {s / 7:.4f}")
t1 = time.perf_counter()
sys.stderr.write(f"@@LOOP {t1 - t0!r}\\n")
"""

# Paired blocks in one process (robust to a shared machine's drifting
# speed): blocks of S steps alternate, ABBA, between the standard streams
# unhooked (plain Python printing: what a script without flor does) and
# hooked with capture on, every line recorded.
PAIRED_PY = """\
import os, sys, time
import flordb as flor
from flordb import _flor
N = int(os.environ["BENCH_STEPS"])
K = int(os.environ["BENCH_WORK"])
B = int(os.environ["BENCH_BLOCKS"])
flor.set_capture(max_records=N + 10)
print("start")  # starts the run

def work(i):
    s = 0
    for k in range(K):
        s += (k ^ i) & 7
    return s

def block(n, base):
    c0, t0 = time.thread_time(), time.perf_counter()
    for i in range(base, base + n):
        s = work(i)
        print(f"step {i} loss {s / 7:.4f}")
    wall.append(time.perf_counter() - t0)
    return time.thread_time() - c0  # the training thread's own CPU time

S = N // (2 * B)
plain, captured, wall = [], [], []
for b in range(2 * B):
    cap = b % 4 in (1, 2)  # plain, cap, cap, plain, ...
    if not cap:
        _flor.capture_off()
    t = block(S, b * S)
    (captured if cap else plain).append(t)
    if not cap:
        _flor.capture_hook(sys.stdout, 0)
        _flor.capture_hook(sys.stderr, 1)
sys.stderr.write(f"@@PAIRED {plain!r} {captured!r} {S}\\n")
sys.stderr.write(f"@@WALL {wall!r}\\n")
"""

CALIBRATE_PY = """\
import sys, time
K = int(sys.argv[1])
def work(i):
    s = 0
    for k in range(K):
        s += (k ^ i) & 7
    return s
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    for i in range(2000):
        work(i)
    best = min(best, (time.perf_counter() - t0) / 2000)
print(best)
"""


def git_repo(root, name):
    path = os.path.join(root, name)
    os.makedirs(path)
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init", "--allow-empty"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env)
    with open(os.path.join(path, "train.py"), "w") as f:
        f.write(TRAIN_PY)
    return path


def calibrate(python, target_us):
    """Iterations of the work loop that take about ``target_us``."""
    k = 200
    for _ in range(4):
        per = float(subprocess.run([python, "-c", CALIBRATE_PY, str(k)], capture_output=True, text=True, check=True).stdout)
        k = max(1, round(k * target_us * 1e-6 / per))
    return k


def run(python, repo, mode, steps, work, extra_env=None):
    env = dict(os.environ, BENCH_MODE=mode, BENCH_STEPS=str(steps), BENCH_WORK=str(work))
    env.pop("PYTHONUNBUFFERED", None)  # stdout to a file is block-buffered, as a training job's log usually is
    env.update(extra_env or {})
    out_path = os.path.join(repo, "stdout.txt")
    with open(out_path, "w") as out:
        t0 = time.perf_counter()
        p = subprocess.run([python, "train.py"], cwd=repo, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{mode} in {repo} failed ({p.returncode}):\n{p.stderr}")
    with open(out_path) as f:
        lines = sum(1 for line in f if line.startswith("step "))  # FlorDB adds notices of its own
    if lines != steps:
        raise SystemExit(f"{mode}: {lines} step lines printed, expected {steps}")
    loop = float(p.stderr.rsplit("@@LOOP ", 1)[1].split()[0])
    return loop, wall


VARIANTS = {
    # name: (interpreter key, BENCH_MODE, extra env, baseline)
    "none": ("ours", "none", {}, None),
    "ours": ("ours", "flor", {}, "none"),
    "ours-all": ("ours", "all", {}, "none"),
    "ours-off": ("ours", "flor", {"FLOR_CAPTURE": "0"}, "none"),
    "ref-none": ("ref", "none", {}, None),
    "ref": ("ref", "flor", {}, "ref-none"),
}


def report_paired(paired, steps, what):
    """Prints (and returns) the paired blocks' figures: the training
    thread's CPU time and the wall time, captured / plain per ABBA group."""
    out = {}
    for label, pi, ci in (("training-thread CPU time", 0, 1), ("wall time", 3, 4)):
        ratios, costs = [], []
        for run in paired:
            plain_t, cap_t, size = run[pi], run[ci], run[2]
            for i in range(0, len(plain_t) - 1, 2):  # each ABBA group: 2 plain, 2 captured blocks
                p2, c2 = plain_t[i] + plain_t[i + 1], cap_t[i] + cap_t[i + 1]
                ratios.append(c2 / p2)
                costs.append((c2 - p2) / (2 * size) * 1e9)
        q = statistics.quantiles(ratios, n=4)
        out[label] = {"ratio": statistics.median(ratios), "q1": q[0], "q3": q[2], "ns_per_line": statistics.median(costs)}
        print(
            f"Paired blocks, {what}, {label} ({len(ratios)} ABBA groups of 4 x {steps // 40:,} steps): captured / plain = "
            f"{statistics.median(ratios):.4f} (quartiles {q[0]:.4f}-{q[2]:.4f}), {statistics.median(costs):.0f} ns "
            f"added per captured line"
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", default=DEFAULT_OURS)
    ap.add_argument("--ref", default=DEFAULT_REF)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work-us", type=float, default=40.0)
    ap.add_argument("--micro-steps", type=int, default=200_000)
    ap.add_argument("--json")
    ap.add_argument("--paired-only", action="store_true", help="only the paired in-process blocks")
    a = ap.parse_args()
    pythons = {"ours": a.ours, "ref": a.ref}
    variants = {k: v for k, v in VARIANTS.items() if os.path.exists(pythons[v[0]])}
    work = calibrate(a.ours, a.work_us)
    root = tempfile.mkdtemp(prefix="bench-capture-")
    try:
        repos = {name: git_repo(root, name) for name in variants}
        times = {name: [] for name in variants}
        names = list(variants)
        for r in range(0 if a.paired_only else a.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                key, mode, env, _ = variants[name]
                times[name].append(run(pythons[key], repos[name], mode, a.steps, work, env))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        # Per-line cost on the training thread: prints back to back.
        micro = {"ours-all": [], "ours-off": []}
        for r in range(0 if a.paired_only else a.rounds):
            for name in (["ours-all", "ours-off"] if r % 2 == 0 else ["ours-off", "ours-all"]):
                _, mode, env, _ = VARIANTS[name]
                micro[name].append(run(a.ours, repos[name], mode, a.micro_steps, 0, env)[0])
        paired, paired_micro = [], []
        for r, (k, steps) in enumerate([(work, a.steps)] * a.rounds + [(0, a.micro_steps * 2)] * a.rounds):
            env = dict(os.environ, BENCH_STEPS=str(steps), BENCH_WORK=str(k), BENCH_BLOCKS="20")
            env.pop("PYTHONUNBUFFERED", None)
            with open(os.path.join(repos["ours"], "paired.py"), "w") as f:
                f.write(PAIRED_PY)
            with open(os.path.join(repos["ours"], "stdout.txt"), "w") as out:
                p = subprocess.run([a.ours, "paired.py"], cwd=repos["ours"], stdout=out, stderr=subprocess.PIPE, text=True, env=env)
            if p.returncode != 0:
                raise SystemExit(f"paired run failed:\n{p.stderr}")
            plain_s, cap_s = p.stderr.split("@@PAIRED ", 1)[1].split("\n", 1)[0].rsplit("] ", 1)[0].split("] [")
            plain_t = [float(x) for x in plain_s.strip("[").split(",")]
            cap_t = [float(x) for x in cap_s.strip("[]").split(",")]
            walls = [float(x) for x in p.stderr.split("@@WALL ", 1)[1].split("\n", 1)[0].strip("[]").split(",")]
            # walls are in block order: plain, cap, cap, plain, ...
            wp = [w for b, w in enumerate(walls) if b % 4 not in (1, 2)]
            wc = [w for b, w in enumerate(walls) if b % 4 in (1, 2)]
            (paired if k else paired_micro).append((plain_t, cap_t, steps // 40, wp, wc))
        if a.paired_only:
            report_paired(paired, a.steps, "~%g us of work per step" % a.work_us)
            return report_paired(paired_micro, a.micro_steps * 2, "no work: prints back to back")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result = {"steps": a.steps, "rounds": a.rounds, "work_iterations": work, "variants": {}}
    print(f"\n{a.steps:,} steps, ~{a.work_us:g} us of work and one print per step; {a.rounds} rounds; medians\n")
    print("| variant | loop (s) | loop vs baseline | whole process (s) | process vs baseline | added per line (us) |")
    print("|---|---|---|---|---|---|")
    for name, (_, _, _, base) in variants.items():
        loops = [t[0] for t in times[name]]
        walls = [t[1] for t in times[name]]
        row = {"loop_s": statistics.median(loops), "wall_s": statistics.median(walls)}
        if base is not None:
            lr = [t[0] / b[0] for t, b in zip(times[name], times[base])]
            wr = [t[1] / b[1] for t, b in zip(times[name], times[base])]
            per = [(t[0] - b[0]) / a.steps * 1e6 for t, b in zip(times[name], times[base])]
            row.update(loop_ratio=statistics.median(lr), wall_ratio=statistics.median(wr), per_line_us=statistics.median(per))
            print(
                f"| {name} (vs {base}) | {row['loop_s']:.3f} | {row['loop_ratio']:.3f} | {row['wall_s']:.3f} | "
                f"{row['wall_ratio']:.3f} | {row['per_line_us']:.2f} |"
            )
        else:
            print(f"| {name} | {row['loop_s']:.3f} | 1 | {row['wall_s']:.3f} | 1 | |")
        result["variants"][name] = row
    per = [(c - o) / a.micro_steps * 1e9 for c, o in zip(micro["ours-all"], micro["ours-off"])]
    result["micro_ns_per_line"] = statistics.median(per)
    print(
        f"\nPrints back to back ({a.micro_steps:,}, no work): capture adds {statistics.median(per):.0f} ns per "
        f"captured line (median of {a.rounds} paired runs; off: {statistics.median(micro['ours-off']) / a.micro_steps * 1e9:.0f} "
        f"ns per print, all lines recorded: {statistics.median(micro['ours-all']) / a.micro_steps * 1e9:.0f} ns)"
    )
    result["paired"] = report_paired(paired, a.steps, "~%g us of work per step" % a.work_us)
    result["paired_no_work"] = report_paired(paired_micro, a.micro_steps * 2, "no work: prints back to back")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
