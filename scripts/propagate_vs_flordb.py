#!/usr/bin/env python3
"""Side by side: flor's propagator and FlorDB's (`flordb.hlast.backprop`
from the PyPI package) on every case of the propagation corpus.

For each case (flor-propagate/tests/corpus/<case>/: new.py, old.py,
expected.py, spec.json) both tools carry the requested statements of new.py
into old.py. A case counts as correct when

- the spec expects an error (unparsable input, no statement on the line):
  the tool refuses;
- otherwise: the result has the same Python AST as expected.py (ASTs, not
  text: FlorDB re-prints the whole file with ast.unparse), and every
  statement the spec expects to fail was refused rather than placed.

Times are the median of --repeat runs per case, in-process for both (a case
FlorDB does not finish within --ref-timeout counts as a miss, timed at the
limit): ours
through `cargo run --release --example corpus_run`, FlorDB's around
`backprop()` calls in its own interpreter (it reads, parses, matches,
unparses and writes the file per statement; several statements are carried
one call at a time, each into the previous result).

The reference venv (default ~/.cache/flor/flordb-ref-venv) is reused when
its flordb imports and created with `pip install flordb==4.0.1` otherwise.
FlorDB must be imported inside a git repository: its calls run in a
throwaway one.
"""

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO_ROOT, "flor-propagate", "tests", "corpus")
DEFAULT_REF_VENV = os.path.join(os.path.expanduser("~"), ".cache", "flor", "flordb-ref-venv")

FLORDB_DRIVER = r'''
import json, os, shutil, statistics, sys, time, io, contextlib
from flordb.hlast import backprop
cases = json.load(sys.stdin)
repeat = int(sys.argv[1])
for c in cases:
    times, result = [], None
    for _ in range(repeat):
        work = os.path.join(os.getcwd(), "work.py")
        shutil.copyfile(c["old"], work)
        statements = []
        start = time.perf_counter()
        for line in c["lines"]:
            out = work + ".out"
            if os.path.exists(out):
                os.remove(out)
            try:
                with contextlib.redirect_stdout(io.StringIO()) as said:
                    backprop(line, c["new"], work, out)
                if os.path.exists(out):
                    os.replace(out, work)
                    statements.append({"outcome": "placed"})
                else:
                    statements.append({"outcome": "already_present", "said": said.getvalue().strip()})
            except BaseException as e:  # FlorDB raises ValueError, AssertionError, SyntaxError, ...
                statements.append({"outcome": "failed", "reason": f"{type(e).__name__}: {e}"})
        times.append((time.perf_counter() - start) * 1e6)
        with open(work) as f:
            result = {"outcomes": statements, "output": f.read()}
    result["case"] = c["case"]
    result["median_us"] = statistics.median(times)
    print(json.dumps(result), flush=True)
'''


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_ref_venv(venv, spec):
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import importlib.metadata as m; print(m.version('flordb'))"]
    if os.path.exists(python):
        r = subprocess.run(probe, capture_output=True, text=True)
        if r.returncode == 0:
            log(f"reusing reference venv {venv} (flordb {r.stdout.strip()})")
            return python, r.stdout.strip()
        if not os.path.exists(os.path.join(venv, "pyvenv.cfg")):
            sys.exit(f"{venv} is not a virtualenv; not touching it")
        shutil.rmtree(venv)
    log(f"creating reference venv {venv} with `pip install {spec}`")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec], check=True)
    return python, subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def load_cases(corpus):
    cases = []
    for name in sorted(os.listdir(corpus)):
        d = os.path.join(corpus, name)
        if not os.path.isdir(d):
            continue
        with open(os.path.join(d, "spec.json")) as f:
            spec = json.load(f)
        expected = os.path.join(d, "expected.py")
        cases.append({
            "case": name,
            "dir": d,
            "spec": spec,
            "new": os.path.join(d, "new.py"),
            "old": os.path.join(d, "old.py"),
            "expected": expected if os.path.exists(expected) else os.path.join(d, "old.py"),
        })
    return cases


def same_ast(a, b):
    try:
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except SyntaxError:
        return False


def judge(case, result):
    """(correct, note) for one tool's result on one case."""
    spec = case["spec"]
    if "error" in spec:
        refused = "error" in result or all(o["outcome"] == "failed" for o in result.get("outcomes", [{}]))
        return refused, "refused" if refused else "did not refuse bad input"
    if "error" in result:
        return False, "error: " + result["error"]
    outcomes = result["outcomes"]
    for want, got in zip(spec["expect"], outcomes):
        if want["outcome"] == "failed" and got["outcome"] != "failed":
            return False, f"placed a statement that should be refused ({want.get('reason', '')})"
    with open(case["expected"]) as f:
        expected = f.read()
    if not same_ast(result["output"], expected):
        failed = [o for o in outcomes if o["outcome"] == "failed"]
        if failed:
            return False, "refused: " + failed[0].get("reason", "")[:80]
        present = [o for o in outcomes if o["outcome"] == "already_present"]
        if present and not any(w["outcome"] == "already_present" for w in spec["expect"]):
            return False, "wrongly judged already present"
        return False, "placed elsewhere"
    return True, ""


def run_ours(corpus, repeat):
    log("building and running ours (cargo run --release --example corpus_run)")
    out = subprocess.run(
        ["cargo", "run", "--release", "--quiet", "--locked", "-p", "flor-propagate", "--example", "corpus_run", "--",
         os.path.abspath(corpus), "--repeat", str(repeat)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return {r["case"]: r for r in map(json.loads, out.splitlines())}


def spec_lines(cases):
    """{case: {"lines": [...]}} from the specs, for --flordb-only (no `names` resolution)."""
    lines = {}
    for c in cases:
        if "names" in c["spec"] or "lines" not in c["spec"]:
            sys.exit(f"{c['case']}: --flordb-only needs statement line numbers (`lines`) in spec.json")
        lines[c["case"]] = {"lines": c["spec"]["lines"]}
    return lines


def run_flordb(python, cases, ours, repeat, timeout):
    log(f"running FlorDB's backprop on {len(cases)} cases ({repeat} run(s) each, {timeout} s at most per case)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "init", "-q", tmp], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        for c in cases:
            payload = [{"case": c["case"], "new": c["new"], "old": c["old"], "lines": ours[c["case"]]["lines"]}]
            try:
                out = subprocess.run([python, "-c", FLORDB_DRIVER, str(repeat)], input=json.dumps(payload), cwd=tmp,
                                     capture_output=True, text=True, env=env, timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"  {c['case']}: FlorDB did not finish in {timeout} s")
                results[c["case"]] = {"case": c["case"], "error": f"did not finish in {timeout} s",
                                      "timeout": True, "median_us": timeout * 1e6}
                continue
            if out.returncode != 0:
                sys.exit("FlorDB driver failed:\n" + out.stderr[-3000:])
            results[c["case"]] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def flordb_only(args, python, version, cases):
    start = time.monotonic()
    theirs = run_flordb(python, cases, spec_lines(cases), args.ref_repeat, args.ref_timeout)
    wall = time.monotonic() - start
    right = sum(judge(c, theirs[c["case"]])[0] for c in cases)
    timeouts = sum(1 for r in theirs.values() if r.get("timeout"))
    times = [r["median_us"] for r in theirs.values()] or [0.0]
    print(f"FlorDB {version}: {right}/{len(cases)} correct; median {statistics.median(times) / 1000:.1f} ms per case; "
          f"{wall:.0f} s wall in all" + (f"; {timeouts} timed out" if timeouts else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"flordb": theirs, "flordb_version": version, "wall_s": wall}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-venv", default=DEFAULT_REF_VENV)
    ap.add_argument("--ref-spec", default="flordb==4.0.1", help="pip requirement for the reference")
    ap.add_argument("--repeat", type=int, default=20, help="runs per case for ours (median)")
    ap.add_argument("--ref-repeat", type=int, default=3, help="runs per case for FlorDB (median)")
    ap.add_argument("--ref-timeout", type=int, default=600, help="seconds FlorDB may take per case (all its runs)")
    ap.add_argument("--json", help="also write the per-case results here")
    ap.add_argument("--corpus", default=CORPUS, help="a folder of cases (default: the propagation corpus)")
    ap.add_argument("--flordb-only", action="store_true",
                    help="run FlorDB alone (statement lines from each spec.json's `lines`); print its score and "
                         "write {\"flordb\": per-case results, \"flordb_version\", \"wall_s\"} to --json "
                         "(scripts/history_corpus.py run --tool flordb uses this)")
    args = ap.parse_args()

    cases = load_cases(args.corpus)
    python, version = ensure_ref_venv(args.ref_venv, args.ref_spec)
    if args.flordb_only:
        flordb_only(args, python, version, cases)
        return
    ours = run_ours(args.corpus, args.repeat)
    theirs = run_flordb(python, cases, ours, args.ref_repeat, args.ref_timeout)

    rows, score = [], {"ours": 0, "flordb": 0}
    for c in cases:
        o_ok, o_note = judge(c, ours[c["case"]])
        f_ok, f_note = judge(c, theirs[c["case"]])
        score["ours"] += o_ok
        score["flordb"] += f_ok
        rows.append((c["case"], o_ok, ours[c["case"]]["median_us"], o_note, f_ok, theirs[c["case"]]["median_us"], f_note))

    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'ours':>4} {'time':>9}  {'flordb':>6} {'time':>10}  flordb's miss")
    timeouts = sum(1 for r in theirs.values() if r.get("timeout"))
    for name, o_ok, o_t, o_note, f_ok, f_t, f_note in rows:
        mark = lambda ok: "ok" if ok else "MISS"
        print(f"{name:<{w}}  {mark(o_ok):>4} {o_t / 1000:>7.2f}ms  {mark(f_ok):>6} {f_t / 1000:>8.1f}ms  {f_note}")
        if not o_ok:
            print(f"{'':<{w}}  ours: {o_note}")
    n = len(cases)
    if n == 0:
        sys.exit("no cases")
    o_med = statistics.median(r[2] for r in rows)
    f_med = statistics.median(r[5] for r in rows)
    o_sum = sum(r[2] for r in rows)
    f_sum = sum(r[5] for r in rows)
    print()
    print(f"correct: ours {score['ours']}/{n}, FlorDB {version} {score['flordb']}/{n}")
    print(f"time per case: median ours {o_med / 1000:.2f} ms, FlorDB {f_med / 1000:.1f} ms ({f_med / o_med:.0f}x); "
          f"whole corpus ours {o_sum / 1000:.1f} ms, FlorDB {f_sum / 1000:.0f} ms ({f_sum / o_sum:.0f}x)"
          + (f"; FlorDB timed out on {timeouts} case(s), counted at the timeout" if timeouts else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ours": ours, "flordb": theirs}, f, indent=1)


if __name__ == "__main__":
    main()
