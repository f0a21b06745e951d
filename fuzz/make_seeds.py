"""Writes the seed corpora of the fuzz targets that come from the project's
own test inputs (run from the repository root: python3 fuzz/make_seeds.py):

- propagate: every case of flor-propagate/tests/corpus (its new and old
  sources and the lines its spec carries over);
- scope: every source of flor-propagate/tests/scope and examples/python,
  asking about its first log statement;
- sql: the SQL texts the store and facade tests and the README run;
- config: the config files the tests and the README write.

The records seeds are record files of real runs, committed as they are
(fuzz/README.md says where they came from).
"""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def fresh(target):
    """The seed folder of `target` (inputs kept from fuzzing, named
    `found-*`, stay)."""
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if not old.name.startswith("found-"):
            old.unlink()
    return folder


def selector(line, count):
    """The byte that picks `line` (1-based) among `count` lines."""
    assert 1 <= line <= min(count, 256), (line, count)
    return line - 1


def log_line(source, name):
    """The first line of `source` that logs `name`."""
    for i, line in enumerate(source.split(b"\n")):
        if b".log(" in line and name.encode() in line:
            return i + 1
    raise ValueError(f"no log of {name}")


def propagate():
    out = fresh("propagate")
    for case in sorted(p for p in (ROOT / "flor-propagate/tests/corpus").iterdir() if p.is_dir()):
        new = (case / "new.py").read_bytes()
        old = (case / "old.py").read_bytes()
        spec = json.loads((case / "spec.json").read_text())
        lines = spec.get("lines") or [log_line(new, name) for name in spec["names"]]
        count = new.count(b"\n") + 1
        a = selector(lines[0], count)
        b = 0x80 | selector(lines[1], count) if len(lines) > 1 and lines[1] <= 128 else 0
        (out / case.name).write_bytes(bytes([a, b]) + new + b"\0" + old)


def scope():
    out = fresh("scope")
    cases = sorted(p for p in (ROOT / "flor-propagate/tests/scope").iterdir() if p.is_dir())
    sources = [p for case in cases for p in
               (case / "new.py", case / "old.py")]
    sources += sorted((ROOT / "examples/python").glob("*.py"))
    for path in sources:
        text = path.read_bytes()
        lines = text.split(b"\n")
        line = next((i + 1 for i, l in enumerate(lines) if b".log(" in l), 1)
        name = f"{path.parent.name}-{path.stem}"
        (out / name).write_bytes(line.to_bytes(2, "little") + text)


# A Rust string literal (plain or raw) that starts like SQL.
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"|r#"(.*?)"#', re.S)
SQL_START = re.compile(r"\s*(/\*.*?\*/\s*|--[^\n]*\n\s*)*(SELECT|WITH|PRAGMA|EXPLAIN|DELETE|INSERT|UPDATE|"
                       r"REPLACE|CREATE|DROP|ATTACH|VACUUM|BEGIN)\b", re.S | re.I)


def sql():
    out = fresh("sql")
    texts = []
    for path in ["flor-store/tests/sqlite.rs", "tests/api.rs", "tests/e2e.rs", "flor-store/src/readonly.rs"]:
        source = (ROOT / path).read_text()
        # Only a module's tests (its code has quote characters as literals).
        source = source[source.find("#[cfg(test)]"):] if path.startswith("flor-store/src") else source
        for plain, raw in LITERAL.findall(source):
            text = raw or re.sub(r"\\\n\s*", " ", plain).encode().decode("unicode_escape")
            if SQL_START.match(text) and "{" not in text:  # format! templates need their arguments
                texts.append(text)
    readme = (ROOT / "README.md").read_text()
    texts += re.findall(r"`((?:SELECT|WITH|PRAGMA)[^`]*)`", readme)
    for i, text in enumerate(dict.fromkeys(texts)):
        (out / f"q{i:03}.sql").write_text(text)


def config():
    out = fresh("config")
    texts = [
        'store = "duckdb"        # or "sqlite" (the default)\n',  # README
        '# engine of the query cache\nstore = "duckdb"\n',  # tests/e2e.rs
        'store = "sqlite"\n',
        'store = "postgres"\n',
        '# engine\nstore = "duckdb"  # fast\nother = 3\n',  # src/config.rs tests
        'store="sqlite"',
        "[store]\n",
        "store = duckdb",
    ]
    for i, text in enumerate(texts):
        (out / f"c{i}.toml").write_text(text)


if __name__ == "__main__":
    propagate()
    scope()
    sql()
    config()
