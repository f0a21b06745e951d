#!/usr/bin/env python3
"""Propagation time per file, this checkout against an earlier commit, in
one run.

Builds `flor-propagate`'s `corpus_run` example twice (the working tree and
BASE, checked out in a throwaway git worktree with its own cached target
folder), then runs the two binaries alternately, ROUNDS times, on every
corpus directory given, each case --repeat times (corpus_run reports the
median per case). Prints per directory and round the summed per-case
medians of both and their ratio (this checkout / BASE), then the range of
the ratio over the rounds: alternating the binaries in one run is what
makes the ratio fair on a shared, noisy machine.

    scripts/propagate_speed.py --base 37a8eeb ~/.cache/flor/history-corpus/*/ flor-propagate/tests/corpus

Needs cargo and git. The base build goes to
$FLOR_SPEED_BASE_TARGET (default ~/.cache/flor/target-speed-base).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(tree: Path, target: Path) -> Path:
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "-p", "flor-propagate", "--example", "corpus_run"],
        cwd=tree,
        env=env,
        check=True,
    )
    return target / "release" / "examples" / "corpus_run"


def total_us(binary: Path, corpus: Path, repeat: int) -> tuple[float, int]:
    out = subprocess.run(
        [str(binary), str(corpus), "--repeat", str(repeat)], capture_output=True, text=True, check=True
    ).stdout
    cases = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sum(c["median_us"] for c in cases), len(cases)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the commit to compare with (e.g. the main before a change)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5, help="runs per case within one round (median)")
    ap.add_argument("corpus", nargs="+", type=Path, help="corpus directories (one case per subfolder)")
    args = ap.parse_args()

    head_target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    base_target = Path(
        os.environ.get("FLOR_SPEED_BASE_TARGET", Path.home() / ".cache" / "flor" / "target-speed-base")
    )
    head = build(ROOT, head_target)
    with tempfile.TemporaryDirectory(prefix="flor-speed-base-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--quiet", "--detach", str(tree), args.base], cwd=ROOT, check=True)
        try:
            base = build(tree, base_target)
            base_copy = Path(tmp) / "corpus_run-base"
            base_copy.write_bytes(base.read_bytes())
            base_copy.chmod(0o755)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        ratios: dict[str, list[float]] = {}
        print(f"{'corpus':40} {'round':>5} {'cases':>5} {'base ms':>9} {'head ms':>9} {'head/base':>9}")
        for r in range(args.rounds):
            for corpus in args.corpus:
                # Alternate which goes first, so neither always runs on a
                # warmer (or busier) machine.
                order = [("base", base_copy), ("head", head)]
                if r % 2:
                    order.reverse()
                times = {}
                for name, binary in order:
                    times[name], n = total_us(binary, corpus, args.repeat)
                ratio = times["head"] / times["base"] if times["base"] else float("nan")
                ratios.setdefault(str(corpus), []).append(ratio)
                print(
                    f"{str(corpus)[-40:]:40} {r + 1:>5} {n:>5} {times['base'] / 1000:>9.1f} "
                    f"{times['head'] / 1000:>9.1f} {ratio:>9.3f}"
                )
        print("\nhead/base per corpus over the rounds (min - median - max):")
        for corpus, rs in ratios.items():
            rs.sort()
            print(f"  {corpus}: {rs[0]:.3f} - {rs[len(rs) // 2]:.3f} - {rs[-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
