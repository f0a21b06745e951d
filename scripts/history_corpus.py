#!/usr/bin/env python3
"""A propagation corpus from the real git histories of training scripts, and
its measurement (issue 16: "a corpus of your own").

Every case is one file of one project: the NEWEST version (the file at the
project's pinned commit) with one statement inserted right after an ANCHOR
statement, an OLD version (an earlier version of the same file from its git
history) and the EXPECTED result: the old version with the same statement
right after the anchor's old counterpart. The counterpart comes from git's
own line pairing of the two versions, never from flor's matcher.

Subcommands (python3 standard library only; `SUBCOMMAND --help` for options):

  generate  write the cases (DIR/<project>/<case>/{new.py, old.py,
            expected.py, spec.json}, plus DIR/README.md and DIR/summary.json)
            from git snapshots under --mirror-root (default /work/.mirror,
            one bare repository per project at <root>/<owner>+<name>/repo)
            and the pinned list scripts/history_corpus/projects.json.
  run       run a propagator on every case and write one classified JSON
            line per case (no project code in it):
            --tool flor    $CARGO_TARGET_DIR/release/examples/corpus_run
                           (`cargo build --release -p flor-propagate
                           --example corpus_run`), one process per project;
            --tool flordb  FlorDB's `flordb.hlast.backprop` (the PyPI
                           package) through scripts/propagate_vs_flordb.py
                           --flordb-only, one project at a time, resumable
                           (a project whose result file exists is skipped).
  sample    link a smaller corpus into an empty folder: whole projects
            (--full) and an evenly spaced selection of the others' cases,
            for FlorDB, which takes seconds to minutes a case.
  judge     print the accuracy table per project x anchor kind from one or
            more result files (flor's, FlorDB's side by side), the time per
            case (= per file: one propagation of one statement into one
            file), and with --list CLASS the cases of that class.

Rules of `generate` (applied mechanically; no case is filtered by hand):

 1. Versions. NEWEST is the file at the pinned commit. The followed history
    `git log --follow --format=%H --name-only PINNED -- PATH` (renames
    followed; merges not walked, git's default) gives the file's path at
    every commit that changed it; each distinct blob other than NEWEST's is
    one OLD version, named after the newest commit of that log whose blob it
    is. A version that is not UTF-8, contains a carriage return, or that
    Python 3's `ast` cannot parse (Python 2 code, for instance) is skipped
    and counted (summary.json: skipped_versions).
 2. Anchors. A statement of NEWEST is an anchor candidate when it is an
    `Expr` whose value is a `Call`, an `Assign`, an `AugAssign` or an
    `AnnAssign` (at any depth: in functions, loops, `with`, `if` ...; never
    `return`, `break`, `continue`, `raise`, `pass`, imports or docstrings),
    it starts its first line (only whitespace before it), and no other
    statement starts on any of its lines and nothing but a comment follows
    it on its last line ("own lines").
 3. Pairing. `git diff -U0 --no-color --diff-algorithm=ALGO OLD_BLOB
    NEW_BLOB` (default ALGO: myers, git's default; --diff-algorithm to
    change). A NEWEST line outside every hunk is unchanged: its OLD line is
    the same line shifted by the hunks before it (checked: the texts are
    equal). A line inside a hunk that replaces d old lines by a new ones
    with d == a is paired with the old line at the same offset in the hunk.
    A line in any other hunk has no counterpart. The counterpart of an
    anchor is the OLD line paired with the anchor's first line; it must be
    the first line of an OLD statement of the kinds and "own lines" shape of
    rule 2, else the (version, anchor) pair yields no case.
 3b. Mutual best (--edited-pairing mutual-best, the default; `offset` drops
    this rule). An offset pair inside a d == a hunk is kept only when, by
    difflib's ratio of the stripped line texts, the old line is (one of) the
    hunk's old lines most similar to the new line and the new line (one of)
    the hunk's new lines most similar to the old line. Offset pairing alone
    pairs shifted lines: in llm.c a hunk that rewrites the lines before an
    unchanged `y = att @ v` pairs the new `y = att @ v` with the old
    `att = F.softmax(...)` one line above the old `y = att @ v`. Counted in
    summary.json ("edited: offset pair not mutual best").
 3c. Global best (--edited-pairing global-best only; not the default). An
    edited pair is kept only when the counterpart's first line is (one of)
    the first lines of OLD's anchor-kind statements (rule 2) most similar to
    the anchor's first line, and the anchor's (one of) NEWEST's most similar
    to the counterpart's. Git pairs by position inside a hunk, so a hunk
    can pair `data_time_m.update(accum_steps * ...)` with
    `losses_m.update(...)` when the old `data_time_m.update(...)` lies
    outside it. Applied while sampling (rule 6): a candidate that fails it
    is counted ("edited: not global best ...") and passed over.
 4. Anchor kind. "unchanged": every line of the anchor statement lies
    outside all hunks (the statement is textually the same, shifted).
    Otherwise "edited", and then the counterpart must additionally be of
    the same `ast` statement class as the anchor (Expr/Assign/AugAssign/
    AnnAssign) and be paired through the anchor's first line as in rule 3.
 5. The inserted statement goes on its own line right after the anchor's
    last line, with the anchor line's indentation:
    `flor.log("probe", NAME)` when the anchor assigns one plain name NAME
    (Assign with a single `Name` target, AugAssign or AnnAssign to a
    `Name`) and the counterpart assigns the same name the same way (a single
    `Name` target); `flor.log("probe", 0)` otherwise. EXPECTED is OLD with
    that statement right after the counterpart's last line, with the
    counterpart line's indentation. new.py and expected.py must parse
    (`ast`); a pair where either does not is counted and dropped
    (summary.json: unparsable_insertions).
 6. Sampling, deterministic (sha1 orders, no randomness). Edited cases:
    grouped by "edit" (file, anchor text, counterpart text, both stripped);
    groups in sha1 order, round-robin over the groups taking each group's
    versions in sha1(key + old commit) order, until --edited-cap cases per
    project (default 150; all of them when fewer). Unchanged cases: the
    same round-robin with one group per anchor (file, anchor line), up to
    --unchanged-cap per project (default 60).

spec.json of a case: description, lines (the inserted statement's line in
new.py), expect ([placed]), project, file, old_file (its path in OLD),
old_commit, new_commit (the pinned one), anchor ("edited"/"unchanged"),
anchor_new_line, anchor_old_line, anchor_new_text, anchor_old_text (whole
statements), statement (the inserted one), expected_line (its line in
expected.py), anchor_similarity (difflib ratio of the stripped first lines;
informative only, no rule uses it). Case folder names:
<file slug>-<old commit, 10 hex>-L<anchor line in NEWEST>.

Classes (`run`, shown by `judge`), from Python's `ast` of the tool's output
against expected.py:
  right              outcome placed (or "approximate": placed with a
                     warning) and output AST == expected AST;
  misplaced          reported placed but the AST differs (the worst class:
                     a silent wrong placement);
  approximate-wrong  reported approximate and the AST differs;
  already-present    reported already present (nothing placed; wrong here,
                     since no OLD version holds the probe);
  failed             refused (outcome failed), or the tool erred / timed
                     out.
"""

import argparse
import ast
import difflib
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPT_DIR)
PROJECTS_JSON = os.path.join(SCRIPT_DIR, "history_corpus", "projects.json")
DEFAULT_OUT = os.path.join(os.path.expanduser("~"), ".cache", "flor", "history-corpus")
ALLOWED = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)
CLASSES = ["right", "misplaced", "approximate-wrong", "already-present", "failed"]
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sha(text):
    return hashlib.sha1(text.encode()).hexdigest()


# ---------------------------------------------------------------- git access


class Git:
    """A bare repository read with `git -C DIR ...` and one `cat-file --batch`."""

    def __init__(self, gitdir):
        self.dir = gitdir
        self.batch = subprocess.Popen(["git", "-C", gitdir, "cat-file", "--batch"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE)

    def out(self, *args):
        return subprocess.run(["git", "-C", self.dir, *args], capture_output=True, check=True).stdout.decode()

    def blob(self, rev):
        """The bytes of REV (e.g. COMMIT:PATH), or None when it is missing."""
        self.batch.stdin.write(rev.encode() + b"\n")
        self.batch.stdin.flush()
        header = self.batch.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            return None, None
        data = self.batch.stdout.read(int(header[2]))
        self.batch.stdout.read(1)
        return header[0].decode(), data

    def close(self):
        self.batch.stdin.close()
        self.batch.wait()


def followed_history(git, pinned, path):
    """[(commit, path at that commit)] of the commits that changed PATH, newest first."""
    text = git.out("log", "--follow", "--format=%x00%H", "--name-only", pinned, "--", path)
    history = []
    for chunk in text.split("\0")[1:]:
        lines = [line for line in chunk.splitlines() if line.strip()]
        if len(lines) >= 2:
            history.append((lines[0].strip(), lines[-1].strip()))
    return history


def diff_hunks(git, old_blob, new_blob, algorithm):
    """[(old_start, old_count, new_start, new_count)] of `git diff -U0`."""
    text = git.out("diff", "-U0", "--no-color", "--no-ext-diff", f"--diff-algorithm={algorithm}", old_blob, new_blob)
    hunks = []
    for line in text.splitlines():
        m = HUNK.match(line)
        if m:
            a, b, c, d = m.groups()
            hunks.append((int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d)))
    return hunks


def line_pairing(hunks, new_count_lines):
    """{new line: (old line, hunk)} for every pairable NEWEST line (1-based); hunk is None for an
    unchanged line, else (old start, new start, length) of the d == a hunk it was paired in."""
    pairing, shift, line = {}, 0, 1
    for old_start, old_n, new_start, new_n in hunks:
        first_in_hunk = new_start if new_n else new_start + 1
        while line < first_in_hunk:
            pairing[line] = (line + shift, None)
            line += 1
        if new_n and new_n == old_n:
            for k in range(new_n):
                pairing[new_start + k] = (old_start + k, (old_start, new_start, new_n))
        if new_n:
            line = new_start + new_n
        shift += old_n - new_n
    while line <= new_count_lines:
        pairing[line] = (line + shift, None)
        line += 1
    return pairing


def hunk_lines(hunks):
    """The NEWEST lines that lie inside some hunk."""
    inside = set()
    for _, _, new_start, new_n in hunks:
        inside.update(range(new_start, new_start + new_n))
    return inside


# --------------------------------------------------------------- statements


def own_line_statements(source, tree):
    """{first line: node} of the allowed simple statements on their own lines."""
    lines = source.split("\n")
    starts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            starts.setdefault(node.lineno, []).append(node)
    found = {}
    for line_no, nodes in starts.items():
        if len(nodes) != 1:
            continue
        node = nodes[0]
        if not isinstance(node, ALLOWED) or (isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)):
            continue
        first = lines[node.lineno - 1].encode()
        last = lines[node.end_lineno - 1].encode()
        if first[:node.col_offset].strip() or (last[node.end_col_offset:].strip()
                                              and not last[node.end_col_offset:].strip().startswith(b"#")):
            continue
        if any(other in starts for other in range(node.lineno + 1, node.end_lineno + 1)):
            continue
        found[line_no] = Stmt(node.lineno, node.end_lineno, type(node).__name__, assigned_name(node))
    return found


class Stmt:
    """What the generator keeps of an allowed statement (not its AST: hundreds of versions stay in memory)."""

    __slots__ = ("lineno", "end_lineno", "kind", "name")

    def __init__(self, lineno, end_lineno, kind, name):
        self.lineno, self.end_lineno, self.kind, self.name = lineno, end_lineno, kind, name


def assigned_name(node):
    """The single plain name a statement assigns, or None."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def insert_after(source, node, statement):
    """SOURCE with STATEMENT on its own line after NODE, at NODE's indentation."""
    lines = source.split("\n")
    first = lines[node.lineno - 1]
    indent = first[:len(first) - len(first.lstrip())]
    lines.insert(node.end_lineno, indent + statement)
    return "\n".join(lines)


def parses(source):
    try:
        ast.parse(source)
        return True
    except (SyntaxError, ValueError):
        return False


def statement_text(source, node):
    return "\n".join(source.split("\n")[node.lineno - 1:node.end_lineno])


# --------------------------------------------------------------- generation


def load_versions(git, pinned, path, skipped):
    """(newest, [old]) as dicts {blob, commit, path, source, tree}; skipped counted by reason."""
    history = followed_history(git, pinned, path)
    newest_blob, data = git.blob(f"{pinned}:{path}")
    if newest_blob is None:
        sys.exit(f"{git.dir}: {path} does not exist at {pinned}")
    newest = parse_version(newest_blob, data, pinned, path)
    if newest is None:
        sys.exit(f"{git.dir}: {path} at {pinned} does not parse")
    olds, seen = [], {newest_blob}
    for commit, at_path in history:
        blob, data = git.blob(f"{commit}:{at_path}")
        if blob is None:
            skipped["missing or deleted"] = skipped.get("missing or deleted", 0) + 1
            continue
        if blob in seen:
            continue
        seen.add(blob)
        version = parse_version(blob, data, commit, at_path)
        if isinstance(version, str):
            skipped[version] = skipped.get(version, 0) + 1
            continue
        olds.append(version)
    return newest, olds


def parse_version(blob, data, commit, path):
    """A version dict, or a string saying why it is skipped."""
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if "\r" in source:
        return "carriage return"
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "does not parse (ast)"
    return {"blob": blob, "commit": commit, "path": path, "source": source,
            "statements": own_line_statements(source, tree)}


def similarity(a, b):
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


def is_mutual_best(hunk, old_lines, new_lines, new_no, old_no, memo):
    """Whether, inside the hunk, the old line is (one of) the new line's most similar old lines and the
    new line (one of) the old line's most similar new lines (difflib ratio of the stripped texts)."""
    old_start, new_start, length = hunk

    def ratio(o, n):
        if (o, n) not in memo:
            memo[(o, n)] = similarity(old_lines[o - 1], new_lines[n - 1])
        return memo[(o, n)]

    paired = ratio(old_no, new_no)
    return (all(ratio(o, new_no) <= paired for o in range(old_start, old_start + length))
            and all(ratio(old_no, n) <= paired for n in range(new_start, new_start + length)))


def pair_cases(git, path, newest, old, args, counters):
    """Every candidate (anchor, counterpart, kind) of one OLD version against NEWEST, unmaterialized."""
    mutual_best, memo = args.edited_pairing in ("mutual-best", "global-best"), {}
    hunks = diff_hunks(git, old["blob"], newest["blob"], args.diff_algorithm)
    new_lines, old_lines = newest["source"].split("\n"), old["source"].split("\n")
    pairing = line_pairing(hunks, len(new_lines))
    inside = hunk_lines(hunks)
    cases = []
    for line_no, anchor in sorted(newest["statements"].items()):
        paired = pairing.get(line_no)
        if paired is None:
            continue
        old_no, hunk = paired
        if hunk is None and old_lines[old_no - 1] != new_lines[line_no - 1]:
            raise RuntimeError(f"pairing bug: {path} {old['commit']} new {line_no} -> old {old_no}")
        counterpart = old["statements"].get(old_no)
        if counterpart is None:
            continue
        unchanged = not any(n in inside for n in range(anchor.lineno, anchor.end_lineno + 1))
        if not unchanged and anchor.kind != counterpart.kind:
            counters["edited: different statement class"] += 1
            continue
        if hunk is not None and mutual_best and not is_mutual_best(hunk, old_lines, new_lines, line_no, old_no, memo):
            counters["edited: offset pair not mutual best"] += 1
            continue
        cases.append({
            "path": path, "newest": newest, "old": old, "anchor": anchor, "counterpart": counterpart,
            "kind": "unchanged" if unchanged else "edited",
            "key": f"{path}\0{statement_text(newest['source'], anchor).strip()}\0"
                   f"{statement_text(old['source'], counterpart).strip()}",
            "anchor_key": f"{path}\0{anchor.lineno}",
            "order": f"{old['commit']}\0{anchor.lineno}",
        })
    return cases


def make_case(project, candidate):
    """The files and spec of one candidate, or None when an insertion does not parse."""
    path, newest, old = candidate["path"], candidate["newest"], candidate["old"]
    anchor, counterpart, kind = candidate["anchor"], candidate["counterpart"], candidate["kind"]
    value = anchor.name if anchor.name is not None and anchor.name == counterpart.name else "0"
    new_first = newest["source"].split("\n")[anchor.lineno - 1]
    old_first = old["source"].split("\n")[counterpart.lineno - 1]
    statement = f'flor.log("probe", {value})'
    new = insert_after(newest["source"], anchor, statement)
    expected = insert_after(old["source"], counterpart, statement)
    if not (parses(new) and parses(expected)):
        return None
    slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.splitext(path)[0]).strip("_")
    return {
        "name": f"{slug}-{old['commit'][:10]}-L{anchor.lineno}",
        "new": new, "old": old["source"], "expected": expected,
        "spec": {
            "description": f"{project} {path}: probe after a {kind} anchor, old version {old['commit'][:10]}",
            "lines": [anchor.end_lineno + 1],
            "expect": [{"outcome": "placed", "renames": []}],
            "project": project, "file": path, "old_file": old["path"],
            "old_commit": old["commit"], "new_commit": newest["commit"],
            "anchor": kind, "anchor_new_line": anchor.lineno, "anchor_old_line": counterpart.lineno,
            "anchor_new_text": statement_text(newest["source"], anchor),
            "anchor_old_text": statement_text(old["source"], counterpart),
            "statement": statement, "expected_line": counterpart.end_lineno + 1,
            "anchor_similarity": round(similarity(new_first, old_first), 3),
        },
    }


def round_robin(candidates, group_key):
    """Deterministic order: groups in sha1 order, one candidate per group per round."""
    groups = {}
    for c in candidates:
        groups.setdefault(c[group_key], []).append(c)
    ordered = [sorted(g, key=lambda c: sha(c[group_key] + "\0" + c["order"]))
               for _, g in sorted(groups.items(), key=lambda kv: sha(kv[0]))]
    depth = 0
    while any(depth < len(g) for g in ordered):
        for g in ordered:
            if depth < len(g):
                yield g[depth]
        depth += 1


def is_global_best(candidate):
    """Rule 3c: the counterpart's first line is (one of) the most similar first lines of OLD's anchor-kind
    statements to the anchor's first line, and the anchor's (one of) NEWEST's most similar to it."""
    newest, old = candidate["newest"], candidate["old"]
    new_lines, old_lines = newest["source"].split("\n"), old["source"].split("\n")
    a, b = new_lines[candidate["anchor"].lineno - 1].strip(), old_lines[candidate["counterpart"].lineno - 1].strip()
    paired = similarity(a, b)

    def beaten(text, lines, statements, own):
        for line_no in statements:
            if line_no == own:
                continue
            m = difflib.SequenceMatcher(None, text, lines[line_no - 1].strip(), autojunk=False)
            if m.real_quick_ratio() > paired and m.quick_ratio() > paired and m.ratio() > paired:
                return True
        return False

    return not (beaten(a, old_lines, old["statements"], candidate["counterpart"].lineno)
                or beaten(b, new_lines, newest["statements"], candidate["anchor"].lineno))


def sample(project, candidates, group_key, cap, counters, global_best=False):
    """Up to CAP materialized cases in round-robin order (an unparsable insertion, and with GLOBAL_BEST an
    edited pair that fails rule 3c, is counted and passed over)."""
    chosen = []
    for candidate in round_robin(candidates, group_key):
        if len(chosen) >= cap:
            break
        if global_best and candidate["kind"] == "edited" and not is_global_best(candidate):
            counters["edited: not global best (3c, among those sampled)"] += 1
            continue
        case = make_case(project, candidate)
        if case is None:
            counters["unparsable_insertions"] += 1
            continue
        chosen.append(case)
    return chosen


def generate_project(project, mirror_root, args):
    """(cases, stats) of one project."""
    gitdir = os.path.join(mirror_root, project["repo"].replace("/", "+"), "repo")
    if not os.path.isdir(gitdir):
        sys.exit(f"no snapshot of {project['repo']} at {gitdir} (fetch it as a bare repository there)")
    git = Git(gitdir)
    edited, unchanged = [], []
    stats = {"files": {}, "skipped_versions": {}}
    counters = {"edited: different statement class": 0, "edited: offset pair not mutual best": 0,
                "unparsable_insertions": 0}
    if args.edited_pairing == "global-best":
        counters["edited: not global best (3c, among those sampled)"] = 0
    try:
        for path in project["files"]:
            skipped = {}
            newest, olds = load_versions(git, project["commit"], path, skipped)
            for old in olds:
                for c in pair_cases(git, path, newest, old, args, counters):
                    (edited if c["kind"] == "edited" else unchanged).append(c)
            stats["files"][path] = {"old_versions": len(olds), "anchors": len(newest["statements"]),
                                    "newest_blob": newest["blob"], "skipped_versions": skipped}
            for reason, n in skipped.items():
                stats["skipped_versions"][reason] = stats["skipped_versions"].get(reason, 0) + n
    finally:
        git.close()
    stats["candidates"] = {"edited": len(edited), "unchanged": len(unchanged),
                           "distinct edits": len({c["key"] for c in edited})}
    chosen = (sample(project["name"], edited, "key", args.edited_cap, counters, args.edited_pairing == "global-best")
              + sample(project["name"], unchanged, "anchor_key", args.unchanged_cap, counters))
    stats.update(counters)
    stats["cases"] = {"edited": sum(c["spec"]["anchor"] == "edited" for c in chosen),
                      "unchanged": sum(c["spec"]["anchor"] == "unchanged" for c in chosen)}
    return chosen, stats


def write_case(directory, case):
    os.makedirs(directory, exist_ok=True)
    for name in ("new", "old", "expected"):
        with open(os.path.join(directory, f"{name}.py"), "w", encoding="utf-8", newline="") as f:
            f.write(case[name])
    with open(os.path.join(directory, "spec.json"), "w") as f:
        json.dump(case["spec"], f, indent=2)
        f.write("\n")


def cmd_generate(args):
    with open(args.projects) as f:
        projects = json.load(f)["projects"]
    if args.only:
        projects = [p for p in projects if p["name"] in args.only]
    if os.path.exists(args.out) and os.listdir(args.out):
        if not os.path.exists(os.path.join(args.out, "summary.json")):
            sys.exit(f"{args.out} exists, is not empty and holds no summary.json: not writing into it")
    summary = {"diff_algorithm": args.diff_algorithm, "edited_pairing": args.edited_pairing, "edited_cap": args.edited_cap,
               "unchanged_cap": args.unchanged_cap, "projects": {}}
    for project in projects:
        log(f"{project['name']}: {project['repo']} at {project['commit'][:10]}, {len(project['files'])} file(s)")
        cases, stats = generate_project(project, args.mirror_root, args)
        pdir = os.path.join(args.out, project["name"])
        if os.path.isdir(pdir):
            for old_case in os.listdir(pdir):
                remove_case(os.path.join(pdir, old_case))
        for case in cases:
            write_case(os.path.join(pdir, case["name"]), case)
        summary["projects"][project["name"]] = dict(stats, repo=project["repo"], commit=project["commit"])
        log(f"  {stats['cases']['edited']} edited + {stats['cases']['unchanged']} unchanged cases "
            f"(candidates: {stats['candidates']}; skipped versions: {stats['skipped_versions']})")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("# History corpus (generated; do not edit)\n\nWritten by `scripts/history_corpus.py generate`"
                " of the flor repository. Its rules, verbatim:\n\n```\n" + __doc__ + "```\n")
    total = {k: sum(p["cases"][k] for p in summary["projects"].values()) for k in ("edited", "unchanged")}
    log(f"wrote {total['edited']} edited + {total['unchanged']} unchanged cases to {args.out}")


def remove_case(directory):
    """Removes one generated case folder (only the files this script writes)."""
    for name in ("new.py", "old.py", "expected.py", "spec.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.remove(path)
    os.rmdir(directory)


# ------------------------------------------------------------ run and judge


def load_specs(corpus, project):
    pdir = os.path.join(corpus, project)
    specs = {}
    for name in sorted(os.listdir(pdir)):
        spec_path = os.path.join(pdir, name, "spec.json")
        if os.path.exists(spec_path):
            with open(spec_path) as f:
                specs[name] = json.load(f)
    return specs


def projects_of(corpus, only):
    names = sorted(d for d in os.listdir(corpus) if os.path.isdir(os.path.join(corpus, d)))
    return [n for n in names if not only or n in only]


def same_ast(a, b):
    try:
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except (SyntaxError, ValueError):
        return False


def classify(case_dir, result):
    """(class, outcome, reason) of one tool result on one case."""
    if "error" in result:
        return "failed", "error", result["error"][:300]
    outcomes = result.get("outcomes") or [{"outcome": "failed", "reason": "no outcome"}]
    outcome = outcomes[0]
    kind = outcome.get("outcome")
    reason = str(outcome.get("reason") or outcome.get("warning") or outcome.get("message") or "")[:300]
    if kind == "failed":
        return "failed", kind, reason
    if kind == "already_present":
        return "already-present", kind, reason
    with open(os.path.join(case_dir, "expected.py"), encoding="utf-8") as f:
        expected = f.read()
    if same_ast(result.get("output", ""), expected):
        return "right", kind, reason
    placed_line = outcome.get("line")
    where = f"placed at line {placed_line}" if placed_line is not None else "placed elsewhere"
    return ("approximate-wrong" if kind == "approximate" else "misplaced"), kind, (where + "; " + reason).strip("; ")


def record(tool, project, name, spec, case_dir, result):
    cls, outcome, reason = classify(case_dir, result)
    rec = {"tool": tool, "project": project, "case": name, "file": spec["file"], "anchor": spec["anchor"],
           "old_commit": spec["old_commit"], "anchor_new_line": spec["anchor_new_line"],
           "anchor_old_line": spec["anchor_old_line"], "class": cls, "outcome": outcome, "reason": reason,
           "anchor_similarity": spec.get("anchor_similarity"), "median_us": result.get("median_us")}
    outcomes = result.get("outcomes") or []
    if outcomes and outcomes[0].get("line") is not None:
        rec["placed_line"] = outcomes[0]["line"]
        rec["expected_line"] = spec.get("expected_line")
    if outcomes and outcomes[0].get("similarity") is not None:
        rec["similarity"] = outcomes[0]["similarity"]
    if result.get("timeout"):
        rec["timeout"] = True
    return rec


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_ROOT, "target")
    return os.path.join(target, "release", "examples", "corpus_run")


def run_flor(args, project):
    pdir = os.path.join(args.corpus, project)
    out = subprocess.run([args.bin, pdir, "--repeat", str(args.repeat)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{args.bin} failed on {pdir}:\n{out.stderr[-3000:]}")
    return {r["case"]: r for r in map(json.loads, out.stdout.splitlines())}


def run_flordb(args, project):
    """FlorDB's results of one project, cached in --work (one JSON per project)."""
    os.makedirs(args.work, exist_ok=True)
    cached = os.path.join(args.work, f"flordb-{project}.json")
    if not os.path.exists(cached):
        log(f"{project}: running FlorDB (resumable: {cached})")
        cmd = [sys.executable, os.path.join(SCRIPT_DIR, "propagate_vs_flordb.py"), "--flordb-only",
               "--corpus", os.path.join(args.corpus, project), "--ref-repeat", str(args.ref_repeat),
               "--ref-timeout", str(args.ref_timeout), "--json", cached + ".part"]
        subprocess.run(cmd, check=True)
        os.replace(cached + ".part", cached)
    with open(cached) as f:
        return json.load(f)["flordb"]


def cmd_run(args):
    projects = projects_of(args.corpus, args.only)
    written = 0
    with open(args.results, "w") as out:
        for project in projects:
            specs = load_specs(args.corpus, project)
            results = run_flor(args, project) if args.tool == "flor" else run_flordb(args, project)
            for name, spec in specs.items():
                result = results.get(name, {"error": "no result"})
                rec = record(args.tool, project, name, spec, os.path.join(args.corpus, project, name), result)
                out.write(json.dumps(rec) + "\n")
                written += 1
            log(f"{project}: {len(specs)} cases")
    log(f"wrote {written} results to {args.results}")


def summarize(records):
    """{(project, anchor): row dict}."""
    rows = {}
    for r in records:
        for key in ((r["project"], r["anchor"]), ("ALL", r["anchor"])):
            row = rows.setdefault(key, {"cases": 0, "times": [], "approximate": 0, "timeouts": 0,
                                        **{c: 0 for c in CLASSES}})
            row["cases"] += 1
            row[r["class"]] += 1
            row["approximate"] += r["outcome"] == "approximate"
            row["timeouts"] += bool(r.get("timeout"))
            if r.get("median_us") is not None:
                row["times"].append(r["median_us"])
    return rows


def fmt_time(us):
    return f"{us / 1000:.2f} ms" if us < 1e6 else f"{us / 1e6:.1f} s"


def print_table(tool, rows):
    print(f"## {tool}")
    print(f"{'project':<22} {'anchor':<9} {'cases':>5} {'right':>7} {'misplaced':>9} {'approx-wrong':>12} "
          f"{'present':>7} {'failed':>6} {'approx':>6}  {'median/case':>11} {'p90/case':>10} {'total':>9}")
    keys = sorted(rows, key=lambda k: (k[0] == "ALL", k[0], k[1] != "edited"))
    for project, anchor in keys:
        r = rows[(project, anchor)]
        times = sorted(r["times"]) or [0.0]
        p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
        print(f"{project:<22} {anchor:<9} {r['cases']:>5} {100 * r['right'] / r['cases']:>6.1f}% {r['misplaced']:>9} "
              f"{r['approximate-wrong']:>12} {r['already-present']:>7} {r['failed']:>6} {r['approximate']:>6}  "
              f"{fmt_time(statistics.median(times)):>11} {fmt_time(p90):>10} {fmt_time(sum(times)):>9}"
              + (f"  ({r['timeouts']} timed out)" if r["timeouts"] else ""))
    print()


def shape(r):
    """A coarse failure shape: where a misplaced statement landed, or the refusal's reason."""
    if r["class"] in ("failed", "already-present"):
        return re.split(r"[`:(]", r["reason"] or r["outcome"])[0].strip() or r["outcome"]
    placed, expected = r.get("placed_line"), r.get("expected_line")
    if placed is None or expected is None:
        return "placed elsewhere (no line reported)"
    side = "before the counterpart" if placed <= r["anchor_old_line"] else (
        "after the counterpart" if placed > expected else "inside the counterpart")
    return f"{side}, {'near (<= 5 lines)' if abs(placed - expected) <= 5 else 'far (> 5 lines)'}"


def print_list(records, cls, corpus):
    chosen = [r for r in records if r["class"] == cls]
    groups = {}
    for r in chosen:
        groups.setdefault(shape(r), []).append(r)
    print(f"## {len(chosen)} case(s) of class {cls}, by shape")
    for name, group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"### {name}: {len(group)}")
        for r in group:
            print(f"- [{r['tool']}] {r['project']}/{r['case']} ({r['anchor']}, similarity {r.get('anchor_similarity')}):"
                  f" {r['reason']}")
            spec_path = os.path.join(corpus, r["project"], r["case"], "spec.json") if corpus else None
            if spec_path and os.path.exists(spec_path):
                with open(spec_path) as f:
                    spec = json.load(f)
                print(f"    new L{spec['anchor_new_line']}: {spec['anchor_new_text'].strip()[:160]}")
                print(f"    old L{spec['anchor_old_line']}: {spec['anchor_old_text'].strip()[:160]}"
                      f"   (expected at old L{spec.get('expected_line')}, placed at {r.get('placed_line')})")
    print()


def print_by_file(tool, records):
    """Right % and time per propagation for every project file (both anchor kinds)."""
    print(f"## {tool}: per file (one propagation of one statement into one version of the file)")
    print(f"{'project':<22} {'file':<44} {'cases':>5} {'right':>7} {'median':>10} {'p90':>10}")
    files = {}
    for r in records:
        files.setdefault((r["project"], r["file"]), []).append(r)
    for (project, path), group in sorted(files.items()):
        times = sorted(r["median_us"] for r in group if r.get("median_us") is not None) or [0.0]
        right = sum(r["class"] == "right" for r in group)
        print(f"{project:<22} {path[-44:]:<44} {len(group):>5} {100 * right / len(group):>6.1f}% "
              f"{fmt_time(statistics.median(times)):>10} {fmt_time(times[int(0.9 * (len(times) - 1))]):>10}")
    print()


def print_bands(tool, records):
    """Edited anchors by the similarity of their first lines (difflib ratio of the stripped texts)."""
    print(f"## {tool}: edited anchors by similarity of anchor and counterpart (first lines)")
    print(f"{'similarity':<10} {'cases':>5} {'right':>7} {'misplaced':>9} {'failed':>6} {'other':>5}")
    bands = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.0), (1.0, 1.01)]
    for lo, hi in bands:
        sel = [r for r in records if r["anchor"] == "edited" and r.get("anchor_similarity") is not None
               and lo <= r["anchor_similarity"] < hi]
        if sel:
            n = {c: sum(r["class"] == c for r in sel) for c in CLASSES}
            label = "1.0" if lo == 1.0 else f"{lo:.1f}-{hi:.1f}"
            print(f"{label:<10} {len(sel):>5} {100 * n['right'] / len(sel):>6.1f}% {n['misplaced']:>9} {n['failed']:>6} "
                  f"{len(sel) - n['right'] - n['misplaced'] - n['failed']:>5}")
    print()


def cmd_judge(args):
    by_tool = {}
    for path in args.results:
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if not args.only or rec["project"] in args.only:
                        by_tool.setdefault(rec["tool"], []).append(rec)
    for tool, records in by_tool.items():
        print_table(tool, summarize(records))
        if args.bands:
            print_bands(tool, records)
        if args.by_file:
            print_by_file(tool, records)
    if len(by_tool) > 1:
        print_side_by_side(by_tool)
    for cls in args.list or []:
        for records in by_tool.values():
            print_list(records, cls, args.corpus)


def print_side_by_side(by_tool):
    tools = list(by_tool)
    sums = {t: summarize(by_tool[t]) for t in tools}
    keys = sorted(set().union(*sums.values()), key=lambda k: (k[0] == "ALL", k[0], k[1] != "edited"))
    print("## right % side by side (same cases)")
    print(f"{'project':<22} {'anchor':<9} {'cases':>5} " + " ".join(f"{t:>16}" for t in tools))
    for key in keys:
        cells = []
        for t in tools:
            r = sums[t].get(key)
            cells.append(f"{100 * r['right'] / r['cases']:>6.1f}% ({r['right']:>3}/{r['cases']:<3})" if r else "-")
        n = max((sums[t][key]["cases"] for t in tools if key in sums[t]), default=0)
        print(f"{key[0]:<22} {key[1]:<9} {n:>5} " + " ".join(f"{c:>16}" for c in cells))
    print()


def cmd_sample(args):
    """A smaller corpus of links into the full one, for a slow tool: every
    case of the --full projects, and of the others an evenly spaced
    selection (by case name) of --edited and --unchanged cases."""
    os.makedirs(args.out, exist_ok=True)
    for project in sorted(os.listdir(args.corpus)):
        pdir = os.path.join(args.corpus, project)
        if not os.path.isdir(pdir):
            continue
        dest = os.path.join(args.out, project)
        if os.path.lexists(dest):
            sys.exit(f"{dest} exists: sample into an empty folder")
        if project in (args.full or []):
            os.symlink(pdir, dest)
            print(f"{project}: every case")
            continue
        cases = sorted(c for c in os.listdir(pdir) if os.path.isfile(os.path.join(pdir, c, "spec.json")))
        kinds = {}
        for c in cases:
            with open(os.path.join(pdir, c, "spec.json")) as f:
                kinds.setdefault(json.load(f).get("anchor"), []).append(c)

        def spaced(xs, n):
            return [xs[int(i * len(xs) / n)] for i in range(min(n, len(xs)))]

        picked = spaced(kinds.get("edited", []), args.edited) + spaced(kinds.get("unchanged", []), args.unchanged)
        os.makedirs(dest)
        for c in picked:
            os.symlink(os.path.join(pdir, c), os.path.join(dest, c))
        print(f"{project}: {len(picked)} of {len(cases)} cases")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write the cases")
    g.add_argument("--mirror-root", default="/work/.mirror", help="folder of <owner>+<name>/repo bare repositories")
    g.add_argument("--projects", default=PROJECTS_JSON, help="pinned project list (default: %(default)s)")
    g.add_argument("--out", default=DEFAULT_OUT, help="corpus folder (default: %(default)s)")
    g.add_argument("--only", nargs="*", help="only these project names")
    g.add_argument("--diff-algorithm", default="myers", choices=["myers", "minimal", "patience", "histogram"])
    g.add_argument("--edited-pairing", default="mutual-best", choices=["mutual-best", "offset", "global-best"],
                   help="offset: rule 3 alone; mutual-best: 3 and 3b; global-best: 3, 3b and 3c (default: %(default)s)")
    g.add_argument("--edited-cap", type=int, default=150, help="edited-anchor cases per project at most")
    g.add_argument("--unchanged-cap", type=int, default=60, help="unchanged-anchor cases per project at most")
    r = sub.add_parser("run", help="run a propagator on every case; write classified JSONL")
    r.add_argument("--corpus", default=DEFAULT_OUT)
    r.add_argument("--results", required=True, help="JSONL to write (one classified line per case)")
    r.add_argument("--tool", default="flor", choices=["flor", "flordb"])
    r.add_argument("--only", nargs="*", help="only these project names")
    r.add_argument("--bin", default=default_bin(), help="corpus_run binary (default: %(default)s)")
    r.add_argument("--repeat", type=int, default=3, help="flor: runs per case, median time")
    r.add_argument("--work", default=os.path.join(DEFAULT_OUT + "-work"),
                   help="flordb: folder of per-project raw results, reused when present (default: %(default)s)")
    r.add_argument("--ref-repeat", type=int, default=1, help="flordb: runs per case")
    r.add_argument("--ref-timeout", type=int, default=120, help="flordb: seconds per case at most")
    sm = sub.add_parser("sample", help="link a smaller corpus (for FlorDB, which takes seconds to minutes a case)")
    sm.add_argument("--corpus", default=DEFAULT_OUT)
    sm.add_argument("--out", required=True, help="an empty folder for the sample")
    sm.add_argument("--edited", type=int, default=16, help="edited-anchor cases per sampled project")
    sm.add_argument("--unchanged", type=int, default=8, help="unchanged-anchor cases per sampled project")
    sm.add_argument("--full", nargs="*", help="projects taken whole")
    j = sub.add_parser("judge", help="print the accuracy tables (and --list)")
    j.add_argument("--results", nargs="+", required=True, help="classified JSONL file(s) from `run`")
    j.add_argument("--corpus", default=DEFAULT_OUT, help="for --list: where the cases' spec.json are")
    j.add_argument("--only", nargs="*", help="only these project names")
    j.add_argument("--list", nargs="*", choices=CLASSES, help="print the cases of these classes, grouped by shape")
    j.add_argument("--bands", action="store_true", help="also: edited anchors by anchor/counterpart similarity")
    j.add_argument("--by-file", action="store_true", help="also: right %% and time per project file")
    args = ap.parse_args()
    {"generate": cmd_generate, "run": cmd_run, "sample": cmd_sample, "judge": cmd_judge}[args.cmd](args)


if __name__ == "__main__":
    main()
