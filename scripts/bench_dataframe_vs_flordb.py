#!/usr/bin/env python3
"""Side-by-side benchmark of `flor.dataframe("lr", "loss")`: our `flordb`
module (flor's Rust engine) against the reference `flordb` package from PyPI.

Workload, the same for both: a FlorDB-style training script (TRAIN_PY below)

    lr = flor.arg("lr", 0.01)
    for epoch in flor.loop("epoch", range(E)):
        for step in flor.loop("step", range(S)):
            flor.log("loss", <a float of lr, epoch, step>)

recorded R times through each implementation's own recording path (its
Python front), `python train.py --kwargs lr=<a different value per run>`,
in a fresh temporary git repository per implementation (branch `main`, one
commit of train.py first). That gives N = R * E * S logged values; the 1M
case is the default, R=100, E=10, S=1000. Both implementations make a run
queryable at exit (ours: its run ref in git, ingested by the first query;
the reference: its JSONL, its SQLite cache and its git commit), so nothing
is called between recording and querying.

Measured, every process fresh (interpreter start, `import flordb`, the call):

(1) recording: the R runs one after the other, total wall time and the
    largest peak RSS of a run (/usr/bin/time);
(2) the first `flor.dataframe("lr", "loss")` after recording (ours ingests
    the runs then; the reference reads the SQLite it filled at each run's
    exit);
(3) `flor.dataframe("lr", "loss")` again (warm), --reps times.

For (2) and (3): the time from process start (the driver's clock just
before it spawns the process, to just after the call returns), the call
alone, and the process's peak RSS (getrusage(RUSAGE_SELF).ru_maxrss, read
just after the call). After those are taken, every query process writes its
(lr, epoch, step, loss) rows to a file, and the driver checks that each has
N rows, one per (lr, epoch, step), and that both implementations give the
same loss values (parsed as floats: the reference returns them as text).

Prints a Markdown table; `--json` writes every figure. The reference's venv
is the one scripts/bench_vs_flordb.py creates (`--create-ref-venv` creates
it here when it is missing). Uses only the standard library: run it with
any python3. The 1M case takes the reference several minutes to record and
about a minute or more per dataframe; timeouts are --timeout seconds (30 min)
per process.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_vs_flordb as bvf  # noqa: E402  (its venv handling and environment)

TRAIN_PY = textwrap.dedent(
    '''
    import flordb as flor

    E = 10
    S = 1000

    lr = flor.arg("lr", 0.01)
    for epoch in flor.loop("epoch", range(E)):
        for step in flor.loop("step", range(S)):
            t = epoch * S + step
            flor.log("loss", 2.5 / (1.0 + lr * t) + 1e-4 * (t % 7) / (1.0 + lr))
    '''
).lstrip()

# A query process, run with `python -c` in the repository: the reference
# treats a `-c` process as no training run (a script file would be one).
QUERY_PY = textwrap.dedent(
    '''
    import json, os, resource, time
    spawn = float(os.environ["BENCH_SPAWN_T"])
    t0 = time.time()
    import flordb as flor
    t1 = time.time()
    df = flor.dataframe("lr", "loss")
    t2 = time.time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = {
        "from_start_s": t2 - spawn,
        "start_to_import_s": t0 - spawn,
        "import_s": t1 - t0,
        "call_s": t2 - t1,
        "maxrss_kb": rss,
        "rows": len(df),
        "columns": [str(c) for c in df.columns],
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
    }
    with open(os.environ["BENCH_RESULT"], "w") as f:
        json.dump(res, f)
    # The rows for the check, after every figure above is taken.
    def text(v):
        return repr(v) if isinstance(v, float) else str(v)
    cols = [df[c].tolist() for c in ("lr", "epoch", "step", "loss")]
    with open(os.environ["BENCH_ROWS"], "w") as f:
        for lr, e, s, loss in zip(*cols):
            f.write(f"{text(lr)},{e},{s},{text(loss)}\\n")
    '''
).lstrip()


def log(msg):
    bvf.log(msg)


def make_repo(root, name, epochs, steps):
    repo = os.path.join(root, name)
    os.makedirs(repo)
    bvf.run(["git", "init", "-q", "-b", "main", repo])
    bvf.run(["git", "-C", repo, "config", "user.name", "b"])
    bvf.run(["git", "-C", repo, "config", "user.email", "b@b"])
    src = TRAIN_PY.replace("E = 10", f"E = {epochs}").replace("S = 1000", f"S = {steps}")
    with open(os.path.join(repo, "train.py"), "w") as f:
        f.write(src)
    bvf.run(["git", "-C", repo, "add", "train.py"])
    bvf.run(["git", "-C", repo, "commit", "-qm", "train.py"])
    return repo


def lr_text(r):
    """The --kwargs value of run r: distinct per run, exact as decimal text."""
    return f"{(r + 1) / 10000:.4f}"


def record(impl, python, repo, runs, timeout):
    """The R runs of one implementation; returns the total and per-run figures."""
    walls, rss = [], []
    out_dir = os.path.join(repo, "..", f"{impl}-out")
    os.makedirs(out_dir, exist_ok=True)
    for r in range(runs):
        tfile = os.path.join(out_dir, f"run{r:04d}.time")
        out = os.path.join(out_dir, f"run{r:04d}.stdout")
        err = os.path.join(out_dir, f"run{r:04d}.stderr")
        cmd = ["/usr/bin/time", "-f", "%e %M", "-o", tfile, python, "train.py", "--kwargs", f"lr={lr_text(r)}"]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            t = time.perf_counter()
            rc = subprocess.call(cmd, cwd=repo, env=bvf.clean_env(), stdout=fo, stderr=fe,
                                 stdin=subprocess.DEVNULL, timeout=timeout)
            walls.append(time.perf_counter() - t)
        if rc != 0:
            with open(err, errors="replace") as f:
                raise RuntimeError(f"{impl} run {r} failed (exit {rc}):\n{f.read()[-3000:]}")
        with open(tfile) as f:
            rss.append(int(f.read().split()[-1]))
        os.remove(out)  # a line per flor.log; not needed once the run succeeded
        if r % 10 == 9 or r == runs - 1:
            log(f"{impl}: recorded {r + 1}/{runs} runs, {sum(walls):.1f} s so far")
    return {"total_s": sum(walls), "run_s": walls, "max_rss_kb": max(rss),
            "median_run_s": statistics.median(walls)}


def query(impl, python, repo, tag, timeout):
    result = os.path.join(repo, "..", f"{impl}-{tag}.json")
    rows = os.path.join(repo, "..", f"{impl}-{tag}.rows")
    env = bvf.clean_env()
    env.update(BENCH_RESULT=result, BENCH_ROWS=rows)
    env["BENCH_SPAWN_T"] = repr(time.time())
    p = subprocess.run([python, "-c", QUERY_PY], cwd=repo, env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    if p.returncode != 0 or not os.path.exists(result):
        raise RuntimeError(f"{impl} dataframe ({tag}) failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    with open(result) as f:
        res = json.load(f)
    res["rows_file"] = rows
    log(f"{impl} dataframe {tag}: {res['from_start_s']:.2f} s from process start "
        f"(call {res['call_s']:.2f} s), peak RSS {res['maxrss_kb'] / 1024:.0f} MiB, {res['rows']:,} rows")
    return res


def read_rows(path):
    """{(lr, epoch, step): loss} from a rows file; duplicates are an error."""
    out = {}
    with open(path) as f:
        for line in f:
            lr, e, s, loss = line.rstrip("\n").split(",")
            k = (float(lr), int(e), int(s))
            if k in out:
                raise RuntimeError(f"{path}: (lr, epoch, step) {k} appears twice")
            out[k] = float(loss)
    return out


def check(results, n):
    """Every query gives N rows with the same loss per (lr, epoch, step)."""
    base = None
    for impl, tag, res in results:
        rows = read_rows(res["rows_file"])
        if res["rows"] != n or len(rows) != n:
            raise RuntimeError(f"{impl} {tag}: {res['rows']:,} rows ({len(rows):,} distinct keys), expected {n:,}")
        if base is None:
            base, base_name = rows, f"{impl} {tag}"
            continue
        if rows.keys() != base.keys():
            raise RuntimeError(f"{impl} {tag}: other (lr, epoch, step) keys than {base_name}")
        bad = [k for k in sorted(rows) if rows[k] != base[k]]
        if bad:
            k = bad[0]
            raise RuntimeError(f"{impl} {tag}: {len(bad):,} loss values differ from {base_name}, "
                               f"first at {k}: {rows[k]!r} vs {base[k]!r}")
        log(f"checked {impl} {tag}: {n:,} rows, same loss values as {base_name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=bvf.DEFAULT_OURS, help="python with our flordb installed (default %(default)s)")
    ap.add_argument("--ref-venv", default=bvf.DEFAULT_REF_VENV, help="the reference's venv (default %(default)s)")
    ap.add_argument("--create-ref-venv", action="store_true",
                    help="create the reference's venv (`pip install flordb`) when missing or broken")
    ap.add_argument("--runs", type=int, default=100, help="runs per implementation (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per run (default %(default)s)")
    ap.add_argument("--steps", type=int, default=1000, help="steps per epoch (default %(default)s)")
    ap.add_argument("--small", action="store_true", help="smoke test: 3 runs x 2 epochs x 50 steps")
    ap.add_argument("--reps", type=int, default=2, help="warm dataframe calls per implementation (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per process (default %(default)s)")
    ap.add_argument("--only", choices=["ours", "ref"], help="measure one implementation only")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    a = ap.parse_args()
    if a.small:
        a.runs, a.epochs, a.steps = 3, 2, 50
    n = a.runs * a.epochs * a.steps
    command = "python3 scripts/bench_dataframe_vs_flordb.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    t_total = time.perf_counter()

    impls = {}
    if a.only != "ref":
        info = bvf.py_info(a.ours)
        impls["ours"] = {"python": a.ours, "info": info}
        log(f"ours: {a.ours} -> flordb {info['version']} at {info['file']}")
    if a.only != "ours":
        python = os.path.join(a.ref_venv, "bin", "python")
        if a.create_ref_venv:
            base = impls["ours"]["info"]["base"] if "ours" in impls else sys.executable
            python, info, _ = bvf.ensure_ref_venv(a.ref_venv, "flordb", base)
        else:
            if not os.path.exists(python):
                sys.exit(f"no reference venv at {a.ref_venv}: pass --create-ref-venv (or run scripts/bench_vs_flordb.py once)")
            info = bvf.py_info(python)
            if os.path.realpath(info["file"]).startswith(bvf.REPO_ROOT + os.sep):
                sys.exit(f"{a.ref_venv} holds this repository's flordb, not the reference")
        impls["ref"] = {"python": python, "info": info}
        log(f"reference: {python} -> flordb {info['version']} at {info['file']}")

    root = tempfile.mkdtemp(prefix="flor-bench-df-vs-flordb.")
    log(f"temporary repositories under {root}; {a.runs} runs x {a.epochs} epochs x {a.steps} steps = {n:,} values")
    fig = {}
    checks = []
    for impl, d in impls.items():
        repo = make_repo(root, impl, a.epochs, a.steps)
        f = {"record": record(impl, d["python"], repo, a.runs, a.timeout)}
        f["first"] = query(impl, d["python"], repo, "first", a.timeout)
        f["warm"] = [query(impl, d["python"], repo, f"warm{i + 1}", a.timeout) for i in range(a.reps)]
        checks += [(impl, "first", f["first"])] + [(impl, f"warm{i + 1}", w) for i, w in enumerate(f["warm"])]
        fig[impl] = f
    check(checks, n)

    total = time.perf_counter() - t_total
    md = table(fig, impls, a, n, command, total)
    print(md)
    if a.json:
        out = {
            "command": command,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
            "runs": a.runs, "epochs": a.epochs, "steps": a.steps, "values": n, "reps": a.reps,
            "implementations": {k: {"python": v["python"], **v["info"]} for k, v in impls.items()},
            "figures": fig,
            "units": "*_s: seconds (wall clock); *_kb: KiB",
            "total_s": total,
            "markdown": md,
        }
    bvf.finish(a, out if a.json else None, root, total)


def table(fig, impls, a, n, command, total):
    cols = [k for k in ("ours", "ref") if k in fig]
    both = len(cols) == 2
    head = {"ours": f"flor (our `flordb` {impls['ours']['info']['version']})" if "ours" in impls else "",
            "ref": f"`flordb` {impls['ref']['info']['version']} (PyPI)" if "ref" in impls else ""}

    def sec(v):
        return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"

    def mib(v):
        return f"{v / 1024:,.0f} MiB"

    def span(vals, fmt):
        lo, hi = min(vals), max(vals)
        return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)} – {fmt(hi)}"

    def ratio(o, r):
        x = r / o if o > 0 else None
        if x is None:
            return "—"
        return f"{x:,.0f}×" if x >= 10 else f"{x:.1f}×" if x >= 1 else f"{x:.2f}×"

    def row(label, get, fmt):
        vals = {c: get(fig[c]) for c in cols}
        line = f"| {label} | " + " | ".join(span(vals[c], fmt) for c in cols)
        if both:
            o, r = vals["ours"], vals["ref"]
            lo, hi = min(r) / max(o), max(r) / min(o)
            mid = statistics.median(r) / statistics.median(o)
            line += " | " + (ratio(1, mid) if ratio(1, lo) == ratio(1, hi) else f"{ratio(1, mid)} ({ratio(1, lo)} – {ratio(1, hi)})")
        return line + " |"

    rec = lambda key: lambda f: [f["record"][key]]  # noqa: E731
    first = lambda key: lambda f: [f["first"][key]]  # noqa: E731
    warm = lambda key: lambda f: [w[key] for w in f["warm"]]  # noqa: E731
    lines = [
        "| what | " + " | ".join(head[c] for c in cols) + (" | flordb / ours" if both else "") + " |",
        "|---|" + "---|" * len(cols) + ("---|" if both else ""),
        row(f"(1) recording: {a.runs} runs, total (processes one after another)", rec("total_s"), sec),
        row("(1) recording: one run, median", rec("median_run_s"), sec),
        row("(1) recording: peak RSS of a run, largest", rec("max_rss_kb"), mib),
        row("(2) first `flor.dataframe(\"lr\", \"loss\")`: from process start", first("from_start_s"), sec),
        row("(2) first: the call alone", first("call_s"), sec),
        row("(2) first: peak RSS", first("maxrss_kb"), mib),
        row(f"(3) warm `flor.dataframe(\"lr\", \"loss\")` ({a.reps} processes): from process start", warm("from_start_s"), sec),
        row("(3) warm: the call alone", warm("call_s"), sec),
        row("(3) warm: peak RSS", warm("maxrss_kb"), mib),
        row("`import flordb` in the query processes", lambda f: [f["first"]["import_s"]] + [w["import_s"] for w in f["warm"]], sec),
    ]
    py = next(iter(impls.values()))["info"]["python"]
    notes = [
        "",
        f"Command: `{command}` (total {total:.0f} s). {a.runs} runs × {a.epochs} epochs × {a.steps} steps = "
        f"{n:,} values of `loss` (+ one `lr` per run), recorded by `python train.py --kwargs lr=…` through each "
        f"implementation's Python front in its own fresh git repository. {os.cpu_count()} CPUs, CPython {py}. "
        "Every figure a fresh process; ranges are min – max (ratio: of medians, with the extreme pairings). "
        "Every dataframe checked: N rows, one per (lr, epoch, step), the same loss values in both.",
    ]
    return "\n".join(lines + notes)


if __name__ == "__main__":
    main()
