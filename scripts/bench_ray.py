#!/usr/bin/env python3
"""Benchmark of `flor replay --executor ray` beside the local pool.

One scratch repository (git configuration isolated) with a pure-Python
training script: E epochs of ~W seconds of arithmetic each, a checkpoint
per epoch (`flor.checkpointing`), R runs recorded. The working tree gains
one epoch-level statement; each configuration replays it into a fresh
copy of the recorded repository (`cp -a`), in the same process of this
script, interleaved over `--reps` rounds:

- local pool, `--jobs 1` and `--jobs 2`;
- a local Ray cluster of 1 node (the head, one CPU) and of 2 nodes (head +
  a second node, one CPU each), both on 127.0.0.1, dashboard off, a small
  object store, usage stats off; started once each, stopped at the end
  (`ray stop --force`, whatever happens).

Reported: wall time of the whole `flor replay` command per configuration
(median and every value), the speed-up of 2 over 1 for each executor and
their ratio (target: Ray's speed-up >= 0.9x the local pool's), Ray's
overhead per segment ((Ray 1 node - local --jobs 1) / segments), and the
bytes shipped per segment (code archive once per run, checkpoint objects
per segment; from the driver's log). Values are checked equal across every
configuration. Prints Markdown; `--json FILE` writes the figures.

    python3 scripts/bench_ray.py --python ~/.cache/flor/venv/bin/python \\
        --flor ~/.cache/flor/target/debug/flor --reps 3
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SCRIPT = """\
import flordb as flor

def busy(x, n):
    for i in range(n):
        x = (x * 1.0000001 + 1e-9) % 1000.0
    return x

seed = flor.arg("seed", 0)
state = {{"w": 1.0 + seed}}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range({epochs})):
        state["w"] = busy(state["w"], {work})
        flor.log("w", state["w"])
"""


def log(msg):
    print(f"[bench_ray {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, cwd=None, env=None, check=True):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(ray, nodes):
    port = free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    common = ["--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", "100000000"]
    run([ray, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common], env=env)
    for _ in range(nodes - 1):
        run([ray, "start", "--address", f"127.0.0.1:{port}", *common], env=env)
    return f"127.0.0.1:{port}"


def stop_cluster(ray):
    run([ray, "stop", "--force"], check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="a Python with flordb and ray")
    ap.add_argument("--flor", required=True, help="the flor binary")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--work", type=int, default=1_500_000, help="loop steps of arithmetic per epoch")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    ray = os.path.join(os.path.dirname(a.python), "ray")
    root = tempfile.mkdtemp(prefix="flor-bench-ray-")
    home = os.path.join(root, "home")
    os.makedirs(home)
    env = dict(os.environ, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    env.pop("FLOR_RAY_TEST_FAIL_ONCE", None)
    env.pop("FLOR_RAY_TEST_RESOURCES", None)
    base = os.path.join(root, "recorded")
    os.makedirs(base)
    git = lambda *args: run(["git", *args], cwd=base, env=env)  # noqa: E731
    git("init", "-q", "-b", "main")
    git("config", "user.email", "bench@example.com")
    git("config", "user.name", "bench")
    src = SCRIPT.format(epochs=a.epochs, work=a.work)
    with open(os.path.join(base, "train.py"), "w") as f:
        f.write(src)
    git("add", "train.py")
    git("commit", "-qm", "train")
    t = time.time()
    for seed in range(a.runs):
        run([a.python, "train.py", "--kwargs", f"seed={seed}"], cwd=base, env=env)
    log(f"recorded {a.runs} runs in {time.time() - t:.1f} s")
    with open(os.path.join(base, "train.py"), "w") as f:
        f.write(src.replace('        flor.log("w", state["w"])\n', '        flor.log("w", state["w"])\n        flor.log("w2", state["w"] ** 2)\n'))

    configs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    times = {c: [] for c in configs}
    values = {}
    shipped = {"code": [], "objects": []}
    segments = None
    try:
        for rep in range(a.reps):
            order = configs if rep % 2 == 0 else list(reversed(configs))
            for kind, n in order:
                copy = os.path.join(root, f"{kind}-{n}-{rep}")
                run(["cp", "-a", base, copy])
                cmd = [a.flor, "replay", "--apply", "w2", "--yes"]
                if kind == "local":
                    cmd += ["--jobs", str(n)]
                    address = None
                else:
                    address = start_cluster(ray, n)
                    cmd += ["--executor", "ray", "--address", address]
                t = time.time()
                p = run(cmd, cwd=copy, env=env)
                times[(kind, n)].append(time.time() - t)
                if address:
                    stop_cluster(ray)
                    with open(os.path.join(copy, ".flor", "replay", "ray-driver.log")) as f:
                        text = f.read()
                    shipped["code"] += [int(m) for m in re.findall(r"code .*: (\d+) bytes shipped once", text)]
                    shipped["objects"] += [int(m) for m in re.findall(r"segment \S+: (\d+) bytes of checkpoint", text)]
                m = re.search(r"(\d+) segments? to run", p.stderr)
                segments = int(m.group(1)) if m else segments
                df = run([a.flor, "--format", "csv", "dataframe", "w2"], cwd=copy, env=env).stdout
                values.setdefault(df, []).append(f"{kind}-{n}")
                log(f"{kind} x{n} rep {rep}: {times[(kind, n)][-1]:.2f} s")
                if not a.keep:
                    shutil.rmtree(copy, ignore_errors=True)
    finally:
        stop_cluster(ray)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    med = {c: statistics.median(v) for c, v in times.items()}
    local_speedup = med[("local", 1)] / med[("local", 2)]
    ray_speedup = med[("ray", 1)] / med[("ray", 2)]
    overhead = (med[("ray", 1)] - med[("local", 1)]) / max(segments or 1, 1)
    out = {
        "runs": a.runs,
        "epochs": a.epochs,
        "segments": segments,
        "times": {f"{k}-{n}": v for (k, n), v in times.items()},
        "medians": {f"{k}-{n}": v for (k, n), v in med.items()},
        "local_speedup": local_speedup,
        "ray_speedup": ray_speedup,
        "ratio": ray_speedup / local_speedup,
        "ray_overhead_per_segment_s": overhead,
        "code_bytes_per_run": statistics.median(shipped["code"]) if shipped["code"] else None,
        "object_bytes_per_segment": statistics.median(shipped["objects"]) if shipped["objects"] else None,
        "values_identical": len(values) == 1,
    }
    print(f"| configuration | median s | every run (s) |\n|---|---|---|")
    for (k, n) in configs:
        label = f"local pool, --jobs {n}" if k == "local" else f"Ray, {n} node{'s' if n > 1 else ''} x 1 CPU"
        print(f"| {label} | {med[(k, n)]:.2f} | {', '.join(f'{x:.2f}' for x in times[(k, n)])} |")
    print(
        f"\nspeed-up 2 vs 1: local {local_speedup:.2f}x, Ray {ray_speedup:.2f}x (Ray/local {out['ratio']:.2f}); "
        f"Ray overhead {overhead:.2f} s per segment ({segments} segments); shipped per run: code "
        f"{out['code_bytes_per_run']} bytes once, checkpoint objects {out['object_bytes_per_segment']} bytes per "
        f"segment; values identical across configurations: {out['values_identical']}"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if out["values_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
