"""Query results as Arrow: pandas (the default), pyarrow and polars receive
the same data as the plain Python values ``flor.dataframe`` always gave;
selections (``where=``, ``iter=``) match filtering those values; a project
whose store is DuckDB answers from Python (through the ``flor`` binary)
exactly as SQLite does."""

import json
import os
import sys
import subprocess

import pytest

from conftest import run_python, run_script

TRAIN = """
import flordb as flor
lr = flor.arg("lr", 0.01)
flor.log("tag", "first" if lr < 0.05 else "second")
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(4)):
        if step != 2:
            flor.log("loss", 1.0 / (1 + epoch * 4 + step) if step != 3 else float("nan"))
        if step % 2 == 0:
            flor.log("count", epoch * 10 + step)
    flor.log("acc", 0.5 + epoch / 10)
    flor.log("good", epoch > 0)
    flor.log("note", f"e{epoch}")
"""

NAMES = ["lr", "tag", "loss", "count", "acc", "good", "note"]

# Every form of result: the plain values (pandas hidden), then pandas,
# pyarrow and polars (each when installed), all as lists of rows.
COLLECT = """
import json, math, sys
args = json.loads(sys.argv[1])
names, kwargs = args["names"], args["kwargs"]
import flordb as flor

def plain(v):
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
        return plain(v)
    return v

out = {}
frame = flor.dataframe(*names, as_="frame", **kwargs)
out["columns"] = frame.columns
out["values"] = [[plain(v) for v in row] for row in zip(*frame.values())]
try:
    import pandas as pd
except ImportError:
    pd = None
if pd is not None:
    df = flor.dataframe(*names, **kwargs)
    out["pandas_columns"] = list(df.columns)
    out["pandas_dtypes"] = {c: str(t) for c, t in df.dtypes.items()}
    out["pandas"] = [[plain(v) for v in row] for row in df.itertuples(index=False)]
try:
    import pyarrow
    t = flor.dataframe(*names, as_="arrow", **kwargs)
    out["arrow"] = [[plain(v) for v in r.values()] for r in t.to_pylist()]
except ImportError:
    pass
try:
    import polars
    p = flor.dataframe(*names, as_="polars", **kwargs)
    out["polars"] = [[plain(v) for v in r] for r in p.rows()]
except ImportError:
    pass
sys.stdout.write("@@" + json.dumps(out))
"""


def collect(repo, names, **kwargs):
    p = run_python(repo, COLLECT, json.dumps({"names": names, "kwargs": kwargs}))
    return json.loads(p.stdout.rsplit("@@", 1)[1])


def record_two_runs(repo):
    run_script(repo, TRAIN)
    run_script(repo, TRAIN, "--kwargs", "lr=0.1")


def as_pandas_would(rows, columns, plain_rows):
    """The plain values as pandas shows them: a NULL in a numeric column is
    NaN (so is an int column's), elsewhere None."""
    numeric = [
        all(isinstance(r[i], (int, float)) or r[i] in (None, "NaN") for r in plain_rows)
        and any(r[i] is not None for r in plain_rows)
        and not all(isinstance(r[i], bool) or r[i] is None for r in plain_rows)
        for i in range(len(columns))
    ]
    out = []
    for r in rows:
        out.append(["NaN" if v is None and numeric[i] else v for i, v in enumerate(r)])
    return out


def test_pandas_pyarrow_polars_get_the_plain_values(repo):
    record_two_runs(repo)
    got = collect(repo, NAMES)
    cols, values = got["columns"], got["values"]
    assert cols == ["projid", "tstamp", "filename", "epoch", "step"] + NAMES
    assert len(values) == 2 * 3 * 4  # every step of every epoch of both runs
    # The plain values themselves: a NaN logged is NaN, a step without a
    # loss is None, run-level values on every row.
    loss = cols.index("loss")
    assert [r[loss] for r in values[:4]] == [1.0, 0.5, None, "NaN"]
    assert {r[cols.index("tag")] for r in values} == {"first", "second"}
    assert all(isinstance(r[cols.index("good")], bool) for r in values)
    if "pandas" in got:
        assert got["pandas_columns"] == cols
        dtypes = got["pandas_dtypes"]
        assert dtypes["loss"] == "float64" and dtypes["epoch"] == "int64" and dtypes["lr"] == "float64"
        assert dtypes["tstamp"] == "category" and dtypes["count"] == "float64"
        assert got["pandas"] == as_pandas_would(values, cols, values)
    for other in ("arrow", "polars"):
        if other in got:
            assert got[other] == values, other


def test_selections_keep_what_filtering_would(repo):
    record_two_runs(repo)
    everything = collect(repo, ["loss", "acc"])
    cols = everything["columns"]
    ti, ei = cols.index("tstamp"), cols.index("epoch")
    runs = sorted({r[ti] for r in everything["values"]})
    fast = collect(repo, ["loss", "acc"], where="lr > 0.05", iter={"epoch": "last"})
    expected = [r for r in everything["values"] if r[ti] == runs[1] and r[ei] == 2]
    assert fast["values"] == expected and len(expected) == 3  # step 2 logs no loss
    for other in ("pandas", "arrow", "polars"):
        if other in fast:
            assert len(fast[other]) == 3, other
    steps = collect(repo, ["loss"], iter="step=0,3")
    assert {r[cols.index("step")] for r in steps["values"]} == {0, 3}


def test_bad_selections_are_clear_errors(repo):
    record_two_runs(repo)
    for kwargs, message in [
        ("iter='epoch=soon'", "LOOP=SPEC"),
        ("iter={'epochs': 'last'}", "no run has a loop named epochs"),
        ("where='nosuchcolumn > 1'", "nosuchcolumn"),
        ("as_='excel'", "expected one of"),
    ]:
        p = run_python(repo, f"import flordb as flor\nflor.dataframe('loss', {kwargs})", check=False)
        assert p.returncode != 0 and message in p.stderr, (kwargs, p.stderr)


def _flor_bin():
    return os.environ.get("FLOR_BIN")


def _has_duckdb(binary, repo):
    p = subprocess.run([binary, "--store", "duckdb", "runs"], cwd=repo, capture_output=True, text=True)
    return p.returncode == 0


def test_a_duckdb_project_answers_from_python_as_sqlite_does(repo):
    binary = _flor_bin()
    if not binary:
        pytest.skip("FLOR_BIN (a flor binary built with DuckDB) is not set")
    record_two_runs(repo)
    sqlite = collect(repo, NAMES)
    if not _has_duckdb(binary, repo):
        pytest.skip(f"{binary} is built without DuckDB")
    (repo / ".flor" / "config.toml").write_text('store = "duckdb"\n')
    duck = collect(repo, NAMES)
    assert duck["columns"] == sqlite["columns"]
    assert duck["values"] == sqlite["values"]
    for other in ("pandas", "arrow", "polars"):
        if other in sqlite:
            assert duck[other] == sqlite[other], other
    q = run_python(repo, "import flordb as flor\nprint(len(flor.query('SELECT * FROM logs', as_='frame').values()[0]))")
    assert int(q.stdout.strip()) > 0
    sel = collect(repo, ["loss"], where="lr > 0.05", iter={"epoch": "last"})
    assert len(sel["values"]) == 3
    # Without the binary: a clear message, not a crash.
    env = dict(os.environ, FLOR_BIN="/nonexistent/flor")
    p = subprocess.run(
        [sys.executable, "-c", "import flordb as flor\nflor.dataframe('loss')"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode != 0 and "FLOR_BIN" in p.stderr and "DuckDB" in p.stderr, p.stderr


def test_query_text_stays_plain_text_while_dataframe_run_columns_are_categorical(repo):
    pytest.importorskip("pandas")
    record_two_runs(repo)
    p = run_python(
        repo,
        """
        import json
        import flordb as flor
        q = flor.query("SELECT tstamp, value_name, value FROM logs WHERE value_name = 'tag'")
        df = flor.dataframe("loss")
        print("@@" + json.dumps({
            "q": [str(q.tstamp.dtype), str(q.value_name.dtype)],
            "values": sorted(set(q.value)),
            "df": str(df.tstamp.dtype),
            "max": bool(df.tstamp.max() == max(q.tstamp)),
            "categories": list(df.tstamp.cat.categories) == sorted(set(q.tstamp)),
        }))
        """,
    )
    got = json.loads(p.stdout.rsplit("@@", 1)[1])
    assert "category" not in got["q"], got
    assert got["values"] == ["first", "second"], got
    assert got["df"] == "category" and got["max"] and got["categories"], got
