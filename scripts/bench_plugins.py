#!/usr/bin/env python3
"""Figures for the framework plugins (issue 15), printed as Markdown tables
for BENCHMARKS.md (`--json FILE` writes every measurement too).

Sections (`--only storage,pack,stats,build`; default: storage, pack, stats):

storage  examples/jax_finetune.py (10 epochs, frozen backbone about 99 % of
         the parameters, optax head, the state under flor.checkpointing)
         recorded with our `flordb` in a fresh git repository: the bytes of
         .flor/objects as the Python front writes them (every checkpoint
         whole), after `flor checkpoints pack`, and after
         `flor checkpoints gc --grace 0`, each as a multiple of one
         checkpoint's size. Then the `flordb` package from PyPI (FlorDB
         4.0.1) on the same script: unchanged (its flor.checkpointing is
         retired and stores nothing) and adapted to the torch.save idiom it
         asks for (scripts/bench_plugins/jax_finetune_flordb.py; the same
         model, data and loop): the bytes of its checkpoint copies
         (.flor/obj_store).
pack     One ~100 MB checkpoint (scripts/bench_plugins/big_checkpoint.py,
         as flor.pytree and as a torch.save archive) recorded, then
         `flor checkpoints pack` timed end to end as a fresh process
         (MB/s over the checkpoint's bytes); then its tensor index deleted
         and `flor checkpoints pack --all` timed (reads the packed object
         back and computes every tensor's statistics: no compression).
         A no-op command (`flor checkpoints ls`) gives the fixed cost of a
         process (start, store, plugins from the compile cache).
stats    `cargo bench -p flor-core --bench checkpoints` (criterion: tensor
         statistics, pack and index of a 100 MB checkpoint), each run's
         estimates and intervals.
build    The build-time cost of wasmtime: in a fresh cargo target folder,
         `cargo build --release -p flor --lib --no-default-features` (the
         engine without plugins, what the Python module links), then
         `cargo build --release --bin flor` on top (CLI, flor-plugins,
         wasmtime, the nested wasm build of the plugins), both with
         `--timings`: wall time, the sum of the wasmtime/cranelift/wit-*
         units, the size of `flor`. The folder is deleted afterwards.
         Slow (tens of minutes on 2 cores): not in the default set.

Every section repeats `--reps` times (default 3) and reports every run,
bad ones included, with the load average. The flor binary is built first
(`cargo build --release --locked --bin flor`, skipped with `--flor BIN`).
Uses only the standard library: run it with any python3.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH = os.path.join(HERE, "bench_plugins")
TORCH_STUB = os.path.join(BENCH, "torch_stub")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flor")
DEFAULT_OURS = os.path.join(CACHE, "venv-jax", "bin", "python")
DEFAULT_REF = os.path.join(CACHE, "flordb-ref-venv", "bin", "python")
NO_PACK = "[checkpoints]\nauto_pack_mb = 0\n"
MB = 1e6


def log(msg):
    print(f"[bench_plugins {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    return round(os.getloadavg()[0], 2)


def run(cmd, cwd=None, env=None, check=True, out=None):
    """Runs cmd; returns (CompletedProcess, wall seconds). stdout/stderr are
    captured, or written to `out` + .out/.err when given."""
    t = time.perf_counter()
    if out:
        with open(out + ".out", "wb") as o, open(out + ".err", "wb") as e:
            p = subprocess.run(cmd, cwd=cwd, env=env, stdout=o, stderr=e)
        p.stdout = open(out + ".out", encoding="utf-8", errors="replace").read()
        p.stderr = open(out + ".err", encoding="utf-8", errors="replace").read()
    else:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if check and p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)} in {cwd}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p, wall


def fresh_repo(root, name, files):
    """A fresh git repository (branch main, one commit) holding `files`
    ({name in repo: source path}), with packing left to the commands timed
    (`auto_pack_mb = 0` in .flor/config.toml, written after the commit)."""
    repo = os.path.join(root, name)
    os.makedirs(repo)
    run(["git", "init", "-q", "-b", "main", repo])
    for dst, src in files.items():
        shutil.copyfile(src, os.path.join(repo, dst))
    run(["git", "-C", repo, "add", "-A"])
    run(["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"])
    run(["git", "-C", repo, "config", "user.name", "b"])  # the reference commits through git
    run(["git", "-C", repo, "config", "user.email", "b@b"])
    os.makedirs(os.path.join(repo, ".flor"), exist_ok=True)
    with open(os.path.join(repo, ".flor", "config.toml"), "w") as f:
        f.write(NO_PACK)
    return repo


def tree_bytes(path, skip=()):
    """(apparent bytes, allocated bytes, files) under path, skipping the
    top-level entries named in `skip`."""
    size = alloc = files = 0
    if not os.path.isdir(path):
        return {"bytes": 0, "allocated": 0, "files": 0}
    for top, dirs, names in os.walk(path):
        if top == path:
            dirs[:] = [d for d in dirs if d not in skip]
        for n in names:
            if top == path and n in skip:
                continue
            st = os.lstat(os.path.join(top, n))
            size += st.st_size
            alloc += st.st_blocks * 512
            files += 1
    return {"bytes": size, "allocated": alloc, "files": files}


class Env:
    def __init__(self, a, root):
        self.a = a
        self.root = root
        self.flor = a.flor
        base = dict(os.environ)
        base.pop("PYTHONPATH", None)
        # Our own compile cache for the plugins, warmed once (timed) below.
        base["FLOR_PLUGIN_CACHE"] = os.path.join(root, "plugin-cache")
        self.env = base

    def save(self, partial):
        """Writes what is measured so far to --json (long sections call it)."""
        if self.a.json:
            with open(self.a.json, "w") as f:
                json.dump(partial, f, indent=1, default=str)

    def env_with(self, **kw):
        e = dict(self.env)
        e.update({k: v for k, v in kw.items() if v is not None})
        return e

    def flor_cmd(self, repo, *args, check=True):
        return run([self.flor, *args], cwd=repo, env=self.env, check=check)

    def query(self, repo, sql):
        p, _ = self.flor_cmd(repo, "--format", "json", "query", sql)
        return json.loads(p.stdout)


# ---------------------------------------------------------------- storage


def storage_ours(E, rep):
    repo = fresh_repo(E.root, f"storage-ours-{rep}", {"train.py": os.path.join(ROOT, "examples", "jax_finetune.py")})
    la = loadavg()
    _, train_s = run([E.a.ours, "train.py"], cwd=repo, env=E.env, out=os.path.join(repo, "..", f"storage-ours-{rep}.train"))
    objects = os.path.join(repo, ".flor", "objects")
    whole = tree_bytes(objects, skip=("tensors",))
    rows = E.query(repo, "SELECT name, ctx_id, bytes, format, digest FROM checkpoints ORDER BY name, ctx_id")
    state = [r for r in rows if r["name"] == "state"]
    if len(state) != 10 or len({r["bytes"] for r in state}) != 1:
        sys.exit(f"expected 10 equally sized `state` checkpoints, got {state}")
    one = state[0]["bytes"]
    p, pack_s = E.flor_cmd(repo, "checkpoints", "pack")
    packed = tree_bytes(objects, skip=("tensors",))
    index = tree_bytes(os.path.join(objects, "tensors"))
    p_gc, _ = E.flor_cmd(repo, "checkpoints", "gc", "--grace", "0")
    gc = tree_bytes(objects, skip=("tensors",))
    gc_index = tree_bytes(os.path.join(objects, "tensors"))
    ls = E.query(repo, "SELECT count(*) AS n FROM tensors")
    v, _ = E.flor_cmd(repo, "checkpoints", "verify", check=False)
    if v.returncode != 0:
        sys.exit(f"flor checkpoints verify failed after packing:\n{v.stdout}\n{v.stderr}")
    frozen = E.query(repo, "SELECT value FROM logs WHERE value_name = 'frozen_fraction'")
    # A second run in the same repository, another learning rate: the
    # frozen backbone's chunks are those of the first run.
    run([E.a.ours, "train.py", "--kwargs", "lr=0.01"], cwd=repo, env=E.env, out=os.path.join(repo, "..", f"storage-ours-{rep}.train2"))
    second_whole = tree_bytes(objects, skip=("tensors",))
    E.flor_cmd(repo, "checkpoints", "pack")
    second = tree_bytes(objects, skip=("tensors",))
    return {
        "load": la,
        "train_s": train_s,
        "checkpoints": len(rows),
        "state_checkpoints": len(state),
        "one_checkpoint": one,
        "distinct_objects": len({r["digest"] for r in rows}),
        "whole": whole,
        "packed": packed,
        "packed_index": index,
        "gc": gc,
        "gc_index": gc_index,
        "pack_s": pack_s,
        "pack_stdout": p.stdout.strip(),
        "gc_stdout": p_gc.stdout.strip(),
        "tensor_rows": ls[0]["n"],
        "second_run_whole": second_whole,
        "second_run_packed": second,
        "frozen_fraction": frozen[0]["value"] if frozen else None,
    }


def storage_ref(E, rep, adapted):
    name = f"storage-ref-{'adapted' if adapted else 'unchanged'}-{rep}"
    src = os.path.join(BENCH, "jax_finetune_flordb.py") if adapted else os.path.join(ROOT, "examples", "jax_finetune.py")
    repo = fresh_repo(E.root, name, {"train.py": src})
    env = E.env_with(PYTHONPATH=TORCH_STUB if adapted else None)
    la = loadavg()
    p, train_s = run([E.a.ref, "train.py"], cwd=repo, env=env, out=os.path.join(E.root, name + ".train"))
    store = os.path.join(repo, ".flor", "obj_store")
    copies = tree_bytes(store)
    index = [os.path.join(t, n) for t, _, ns in os.walk(store) for n in ns if n == "index.json"]
    pth = [os.path.join(t, n) for t, _, ns in os.walk(store) for n in ns if n.endswith(".pth")]
    saved = os.path.join(repo, "ckpt.pt")
    return {
        "load": la,
        "train_s": train_s,
        "obj_store": copies,
        "copies": len(pth),
        "copy_bytes": [os.path.getsize(x) for x in pth],
        "indexes": len(index),
        "script_file": os.path.getsize(saved) if os.path.exists(saved) else 0,
        "flor_dir": tree_bytes(os.path.join(repo, ".flor")),
        "retired_message": "flor.checkpointing(...) no longer has an effect" in p.stdout + p.stderr,
    }


def storage(E, reps):
    out = {"ours": [], "ref_adapted": [], "ref_unchanged": []}
    for rep in range(reps):
        log(f"storage rep {rep + 1}/{reps}: ours")
        out["ours"].append(storage_ours(E, rep))
        if E.a.ref:
            log(f"storage rep {rep + 1}/{reps}: flordb (adapted, torch.save)")
            out["ref_adapted"].append(storage_ref(E, rep, adapted=True))
            log(f"storage rep {rep + 1}/{reps}: flordb (unchanged script)")
            out["ref_unchanged"].append(storage_ref(E, rep, adapted=False))
    return out


# ---------------------------------------------------------------- pack


def pack_one(E, fmt, rep):
    name = f"pack-{fmt}-{rep}"
    repo = fresh_repo(E.root, name, {"train.py": os.path.join(BENCH, "big_checkpoint.py")})
    env = E.env_with(PYTHONPATH=TORCH_STUB if fmt == "torch" else None, BENCH_FORMAT=fmt, BENCH_LAYERS=str(E.a.layers))
    run([E.a.ours, "train.py"], cwd=repo, env=env, out=os.path.join(E.root, name + ".train"))
    rows = E.query(repo, "SELECT name, bytes, format FROM checkpoints WHERE name = 'model'")
    ckpt = rows[0]["bytes"]
    _, noop_s = E.flor_cmd(repo, "checkpoints", "ls")
    la = loadavg()
    t0 = os.times()
    p, pack_s = E.flor_cmd(repo, "checkpoints", "pack")
    t1 = os.times()
    cpu = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
    ls = E.query(repo, "SELECT count(*) AS n FROM tensors WHERE checkpoint = 'model'")
    # Statistics again from the packed object: its tensor index deleted,
    # `pack --all` reads it back (decompress, join, check) and computes them.
    shutil.rmtree(os.path.join(repo, ".flor", "objects", "tensors"))
    la2 = loadavg()
    t0 = os.times()
    p2, reindex_s = E.flor_cmd(repo, "checkpoints", "pack", "--all")
    t1 = os.times()
    cpu2 = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
    ls2 = E.query(repo, "SELECT count(*) AS n FROM tensors WHERE checkpoint = 'model'")
    return {
        "format": rows[0]["format"],
        "checkpoint_bytes": ckpt,
        "load": la,
        "noop_s": noop_s,
        "pack_s": pack_s,
        "pack_cpu_s": cpu,
        "pack_mb_s": ckpt / MB / pack_s,
        "pack_stdout": p.stdout.strip(),
        "tensors": ls[0]["n"],
        "reindex_load": la2,
        "reindex_s": reindex_s,
        "reindex_cpu_s": cpu2,
        "reindex_mb_s": ckpt / MB / reindex_s,
        "reindex_stdout": p2.stdout.strip(),
        "reindex_tensors": ls2[0]["n"],
    }


def pack(E, reps):
    out = {}
    for fmt in ("pytree", "torch"):
        out[fmt] = []
        for rep in range(reps):
            log(f"pack {fmt} rep {rep + 1}/{reps}")
            out[fmt].append(pack_one(E, fmt, rep))
    return out


# ---------------------------------------------------------------- stats (criterion)

CRIT_NAME = re.compile(r"^(\S+/\S+)\s*(?:time:.*)?$")
CRIT_THRPT = re.compile(r"thrpt:\s*\[\s*([\d.]+) (\w+/s)\s+([\d.]+) (\w+/s)\s+([\d.]+) (\w+/s)\s*\]")
CRIT_TIME = re.compile(r"time:\s*\[\s*([\d.]+) (\w+)\s+([\d.]+) (\w+)\s+([\d.]+) (\w+)\s*\]")
UNITS = {"B/s": 1, "KiB/s": 2**10, "MiB/s": 2**20, "GiB/s": 2**30, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9}


def parse_criterion(text):
    """{bench: {"thrpt": (lo, est, hi) in bytes/s}} from criterion's output."""
    res, current = {}, None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^([A-Za-z0-9_]+/[A-Za-z0-9_]+)\b", s)
        if m:
            current = m.group(1)
        t = CRIT_THRPT.search(s)
        if t and current:
            v = t.groups()
            res.setdefault(current, {})["thrpt"] = tuple(float(v[i]) * UNITS[v[i + 1]] for i in (0, 2, 4))
    return res


def stats(E, reps):
    out = []
    env = dict(os.environ)
    log("stats: building the bench")
    run(["cargo", "bench", "--locked", "-p", "flor-core", "--bench", "checkpoints", "--no-run"], cwd=ROOT, env=env)
    for rep in range(reps):
        log(f"stats rep {rep + 1}/{reps}: cargo bench -p flor-core --bench checkpoints")
        la = loadavg()
        p, wall = run(["cargo", "bench", "--locked", "-p", "flor-core", "--bench", "checkpoints"], cwd=ROOT, env=env)
        out.append({"load": la, "load_end": loadavg(), "wall_s": wall, "results": parse_criterion(p.stdout)})
    return out


# ---------------------------------------------------------------- build


def timings_units(html_path):
    """[(unit name, version, target, duration s)] from a cargo --timings
    report (its UNIT_DATA array)."""
    text = open(html_path, encoding="utf-8").read()
    m = re.search(r"const\s+UNIT_DATA\s*=\s*(\[.*?\]);\s*\n", text, re.S)
    if not m:
        sys.exit(f"no UNIT_DATA in {html_path}")
    return [(u["name"], u["version"], u.get("target", ""), float(u["duration"])) for u in json.loads(m.group(1))]


WASMTIME_UNIT = re.compile(r"^(wasmtime|cranelift|wit-|wasm-encoder|wasmparser|wasmprinter|wat|wast|regalloc2|pulley|gimli|object|target-lexicon|wasm-metadata)")


def newest_timings(target):
    d = os.path.join(target, "cargo-timings")
    files = sorted((f for f in os.listdir(d) if f.startswith("cargo-timing-")), key=lambda f: os.path.getmtime(os.path.join(d, f)))
    return os.path.join(d, files[-1])


def build_one(E, rep):
    target = os.path.join(E.a.build_dir, f"flor-bench-build-{os.getpid()}-{rep}")
    if os.path.exists(target):
        sys.exit(f"{target} exists")
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = target
    res = {"target_dir": target}
    try:
        res["load_start"] = loadavg()
        _, res["lib_s"] = run(["cargo", "build", "--release", "--locked", "-p", "flor", "--lib", "--no-default-features", "--timings"], cwd=ROOT, env=env)
        lib_units = timings_units(newest_timings(target))
        res["load_mid"] = loadavg()
        _, res["bin_s"] = run(["cargo", "build", "--release", "--locked", "--bin", "flor", "--timings"], cwd=ROOT, env=env)
        res["load_end"] = loadavg()
        bin_units = timings_units(newest_timings(target))
        res.update(summarize_units(lib_units, bin_units))
        binary = os.path.join(target, "release", "flor")
        res["flor_bytes"] = os.path.getsize(binary)
        res["symbols"] = symbol_share(binary)
        wasm_dir = os.path.join(target, "wasm-plugins", "wasm32-unknown-unknown", "release")
        res["embedded_plugins"] = {n: os.path.getsize(os.path.join(wasm_dir, f"flor_plugin_{n}.wasm")) for n in ("pytorch", "jax")}
        stripped = os.path.join(target, "flor.stripped")
        if shutil.which("strip"):
            run(["strip", "-o", stripped, binary])
            res["flor_stripped_bytes"] = os.path.getsize(stripped)
        res["target_bytes"] = tree_bytes(target)["bytes"]
    finally:
        if not E.a.keep_build:
            shutil.rmtree(target, ignore_errors=True)
    return res


def category(name):
    """Which part of the `flor` build a compilation unit belongs to."""
    if WASMTIME_UNIT.match(name):
        return "wasmtime"
    if name == "flor-plugins":
        return "flor-plugins"
    if name.startswith("flor"):
        return "flor"
    if name.startswith("clap") or name.startswith("anstyle") or name in ("anstream", "strsim", "colorchoice", "utf8parse", "is_terminal_polyfill"):
        return "cli"
    return "other"


def summarize_units(lib_units, bin_units):
    lib_keys = {(u[0], u[1], u[2]) for u in lib_units}
    by = {}
    for u in bin_units:
        c = category(u[0])
        if c == "flor-plugins" and "(run)" in u[2]:
            c = "nested wasm build"  # flor-plugins' build script: cargo build of the plugin crates
        # a unit the lib step built too, built again: its dependencies' features changed
        if c in ("flor", "other") and (u[0], u[1], u[2]) in lib_keys and u[3] > 0:
            c += " (rebuilt)"
        d = by.setdefault(c, [0, 0.0])
        d[0] += 1
        d[1] += u[3]
    wasm = [u for u in bin_units if category(u[0]) == "wasmtime"]
    top = sorted(bin_units, key=lambda u: -u[3])[:12]
    return {
        "lib_units": len(lib_units),
        "lib_unit_s": sum(u[3] for u in lib_units),
        "bin_units": len([u for u in bin_units if u[3] > 0]),
        "bin_unit_s": sum(u[3] for u in bin_units),
        "wasmtime_units": len(wasm),
        "wasmtime_unit_s": sum(u[3] for u in wasm),
        "bin_by_category": {k: (v[0], round(v[1], 1)) for k, v in sorted(by.items(), key=lambda kv: -kv[1][1])},
        "wasmtime_by_crate": sorted(((f"{u[0]} {u[2]}".strip(), round(u[3], 1)) for u in wasm if u[3] >= 1), key=lambda x: -x[1]),
        "top_units": [(f"{u[0]} {u[2]}".strip(), round(u[3], 1)) for u in top],
    }


def symbol_share(binary):
    """Bytes of the binary's text/data symbols by origin (nm sizes; an
    estimate: inlined code counts where it landed)."""
    if not shutil.which("nm"):
        return {}
    p, _ = run(["nm", "-C", "--size-sort", "-S", binary], check=False)
    share = {}
    for line in p.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        size, name = int(parts[1], 16), parts[3]
        m = re.search(r"\b(wasmtime|cranelift|wasmparser|wit_parser|wit_component|wasm_encoder|pulley|regalloc2|gimli|object|wasmprinter)", name)
        key = "wasmtime and its kin" if m else ("flor" if "flor" in name else "other")
        share[key] = share.get(key, 0) + size
    return share


def build(E, reps):
    out = []
    for rep in range(reps):
        log(f"build rep {rep + 1}/{reps}: a fresh target folder")
        out.append(build_one(E, rep))
        E.save({"build": out})  # a build takes long: keep what is done
    return out


# ---------------------------------------------------------------- report


def rng(xs, fmt="{:.2f}"):
    xs = sorted(xs)
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(xs[0])}–{fmt.format(xs[-1])})"


def each(xs, fmt="{:.2f}"):
    return ", ".join(fmt.format(x) for x in xs)


def report_storage(s):
    ours = s["ours"]
    one = ours[0]["one_checkpoint"]
    lines = [
        f"One checkpoint (`state`, flor.pytree): {one:,} bytes; frozen fraction of the parameters "
        f"{ours[0]['frozen_fraction']:.4f}; {ours[0]['state_checkpoints']} `state` checkpoints "
        f"and {ours[0]['checkpoints'] - ours[0]['state_checkpoints']} `__rng__` per run "
        f"({ours[0]['distinct_objects']} distinct objects); {ours[0]['tensor_rows']} rows in `tensors` after packing.",
        "",
        "| what is on disk | bytes (median, range) | × one checkpoint, each run | files |",
        "|---|---|---|---|",
    ]

    def row(label, key, runs=ours, unit=None):
        b = [r[key]["bytes"] for r in runs]
        ones = [unit or r["one_checkpoint"] for r in runs]
        files = [r[key]["files"] for r in runs]
        lines.append(f"| {label} | {rng(b, '{:,.0f}')} | {each([x / o for x, o in zip(b, ones)])} | {rng(files, '{:.0f}')} |")

    row("flor, stored whole (as the Python front writes them), `.flor/objects`", "whole")
    row("flor, after `flor checkpoints pack` (objects and chunks)", "packed")
    row("flor, after pack: the tensor indexes (`.flor/objects/tensors/`, derived data)", "packed_index")
    row("flor, after `flor checkpoints gc --grace 0` (objects and chunks)", "gc")
    row("flor, two runs (a second one with lr=0.01 in the same repository), the second stored whole", "second_run_whole")
    row("flor, two runs, both packed", "second_run_packed")
    if s["ref_adapted"]:
        row("FlorDB 4.0.1, adapted script (torch.save each epoch): `.flor/obj_store`", "obj_store", s["ref_adapted"], one)
        row("FlorDB 4.0.1, the example unchanged: `.flor/obj_store`", "obj_store", s["ref_unchanged"], one)
    lines += [
        "",
        "Allocated on disk (4 KiB blocks; whole → packed → gc): "
        + "; ".join(f"{r['whole']['allocated']:,} → {r['packed']['allocated']:,} (+{r['packed_index']['allocated']:,} index) → {r['gc']['allocated']:,}" for r in ours)
        + ".",
        f"`flor checkpoints pack` of the run: {rng([r['pack_s'] for r in ours])} s; the runs trained in {rng([r['train_s'] for r in ours])} s "
        f"at load {each([r['load'] for r in ours], '{:.1f}')}.",
    ]
    if s["ref_adapted"]:
        a = s["ref_adapted"]
        lines.append(
            f"FlorDB 4.0.1 (adapted): {a[0]['copies']} copy per run of {a[0]['copy_bytes']} bytes "
            f"(the script's last save; ckpt.pt itself {a[0]['script_file']:,} bytes), runs in {rng([r['train_s'] for r in a])} s; "
            f"unchanged: {s['ref_unchanged'][0]['copies']} copies, retirement notice printed: {s['ref_unchanged'][0]['retired_message']}."
        )
    return "\n".join(lines)


def report_pack(p):
    lines = [
        "| checkpoint | bytes | `flor checkpoints pack`, s | MB/s | CPU s (user+sys) | statistics again from the packed object (`pack --all`), s | MB/s | no-op command (`checkpoints ls`), s | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fmt, runs in p.items():
        for r in runs:
            lines.append(
                f"| {r['format']} ({r['tensors']} tensors) | {r['checkpoint_bytes']:,} | {r['pack_s']:.2f} | {r['pack_mb_s']:.0f} | {r['pack_cpu_s']:.2f} | "
                f"{r['reindex_s']:.2f} | {r['reindex_mb_s']:.0f} | {r['noop_s']:.3f} | {r['load']:.1f} |"
            )
    for fmt, runs in p.items():
        lines.append("")
        lines.append(f"{fmt}: pack {rng([r['pack_mb_s'] for r in runs], '{:.0f}')} MB/s; statistics pass {rng([r['reindex_mb_s'] for r in runs], '{:.0f}')} MB/s (median, range).")
    return "\n".join(lines)


def fmt_rate(b):
    return f"{b / 2**30:.2f} GiB/s" if b >= 2**30 else f"{b / 2**20:.0f} MiB/s"


def report_stats(st):
    names = []
    for r in st:
        for k in r["results"]:
            if k not in names:
                names.append(k)
    lines = ["| bench | " + " | ".join(f"run {i + 1} (load {r['load']:.1f})" for i, r in enumerate(st)) + " |",
             "|---|" + "---|" * len(st)]
    for n in names:
        cells = []
        for r in st:
            t = r["results"].get(n, {}).get("thrpt")
            cells.append(f"{fmt_rate(t[1])} ({fmt_rate(t[0])}–{fmt_rate(t[2])})" if t else "—")
        lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_build(b):
    lines = [
        "| run | lib, no plugins: wall s (unit s) | + `--bin flor`: wall s (unit s) | of which wasmtime/cranelift/wit-*/wasm-* units, s | `flor` bytes (stripped) | load start/mid/end |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(b):
        lines.append(
            f"| {i + 1} | {r['lib_s']:.0f} ({r['lib_unit_s']:.0f}) | {r['bin_s']:.0f} ({r['bin_unit_s']:.0f}) | {r['wasmtime_unit_s']:.0f} ({r['wasmtime_units']} units) | "
            f"{r['flor_bytes']:,} ({r.get('flor_stripped_bytes', 0):,}) | {r['load_start']:.1f}/{r['load_mid']:.1f}/{r['load_end']:.1f} |"
        )
    for i, r in enumerate(b):
        lines.append("")
        lines.append(f"Run {i + 1}, unit seconds of the bin step by part: " + ", ".join(f"{k} {v[1]:.0f} s ({v[0]} units)" for k, v in r["bin_by_category"].items()))
        lines.append(f"Run {i + 1}, wasmtime units over 1 s: " + ", ".join(f"{n} {s:.0f}" for n, s in r["wasmtime_by_crate"]))
        lines.append(f"Run {i + 1}, symbol bytes in `flor` (nm): " + ", ".join(f"{k} {v:,}" for k, v in r.get("symbols", {}).items())
                     + "; embedded plugins (core modules): " + ", ".join(f"{k} {v:,}" for k, v in r.get("embedded_plugins", {}).items()))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="storage,pack,stats", help="comma-separated sections: storage, pack, stats, build (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (default %(default)s)")
    ap.add_argument("--ours", default=DEFAULT_OURS, help="python with our flordb (built --release) and jax, flax, optax (default %(default)s)")
    ap.add_argument("--ref", default=DEFAULT_REF, help="python with the flordb package (4.0.1) and jax, flax, optax; '' to skip (default %(default)s)")
    ap.add_argument("--flor", default=None, help="the flor binary (default: cargo build --release --bin flor, in $CARGO_TARGET_DIR or target/)")
    ap.add_argument("--layers", type=int, default=24, help="layers of the pack checkpoint: 4.2 MB each (default %(default)s: 100.76 MB)")
    ap.add_argument("--build-dir", default=os.path.join(CACHE), help="where the build section makes its fresh target folder (default %(default)s)")
    ap.add_argument("--keep-build", action="store_true", help="keep the build section's target folder")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    ap.add_argument("--json", help="write every measurement to this file")
    a = ap.parse_args()
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in sections:
        if s not in ("storage", "pack", "stats", "build"):
            sys.exit(f"unknown section {s!r}")
    if a.flor is None and {"storage", "pack"} & set(sections):
        log("building flor: cargo build --release --locked --bin flor")
        run(["cargo", "build", "--release", "--locked", "--bin", "flor"], cwd=ROOT)
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
        a.flor = os.path.join(target, "release", "flor")
    commit, _ = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty, _ = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else ""),
        "command": "bash scripts/bench_plugins.sh " + " ".join(sys.argv[1:]),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_start": os.getloadavg(),
    }
    root = tempfile.mkdtemp(prefix="flor-bench-plugins.")
    E = Env(a, root)
    results = {"meta": meta}
    md = [f"`{meta['command']}` ({meta['date']}, commit {meta['commit']}, {meta['cores']} cores, load average at start {meta['load_start'][0]:.1f})"]
    try:
        if {"storage", "pack"} & set(sections):
            p, warm = E.flor_cmd(ROOT, "plugins", "list")
            results["plugin_cache_cold_s"] = warm
            log(f"plugins compiled into a fresh cache in {warm:.2f} s")
        if "storage" in sections:
            results["storage"] = storage(E, a.reps)
            md += ["", "### Storage", "", report_storage(results["storage"])]
        if "pack" in sections:
            results["pack"] = pack(E, a.reps)
            md += ["", "### Pack", "", report_pack(results["pack"])]
        if "stats" in sections:
            results["stats"] = stats(E, a.reps)
            md += ["", "### Criterion (flor-core checkpoints bench)", "", report_stats(results["stats"])]
        if "build" in sections:
            results["build"] = build(E, a.reps)
            md += ["", "### Build", "", report_build(results["build"])]
    finally:
        if a.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    meta["load_end"] = os.getloadavg()
    md.append("")
    md.append(f"Load average at the end: {meta['load_end'][0]:.1f}.")
    print("\n".join(md))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
