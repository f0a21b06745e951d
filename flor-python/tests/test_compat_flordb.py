"""The compatibility suite (scripts/compat_flordb.py): FlorDB 4 scripts and
notebook cells give what they gave under the `flordb` package from PyPI,
except for the deliberate differences the suite lists -- which the README's
"Coming from FlorDB" section shows.

The suite needs the reference in its own venv (FLOR_COMPAT_REF_VENV, default
~/.cache/flor/flordb-compat-venv; scripts/test.sh creates it with
`scripts/compat_flordb.py --setup`, pip install flordb==4.0.1) and the flor
binary (FLOR_BIN)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "compat_flordb.py")
# Read before the tests' isolated HOME is in place.
REF_VENV = os.environ.get("FLOR_COMPAT_REF_VENV") or os.path.join(
    os.path.expanduser("~"), ".cache", "flor", "flordb-compat-venv"
)


def _suite():
    spec = importlib.util.spec_from_file_location("compat_flordb", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_lists_every_deliberate_difference():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert _suite().readme_section() in readme, "README's 'Coming from FlorDB' table is not the suite's: run scripts/compat_flordb.py --readme"


def test_every_difference_is_used_by_a_case():
    suite = _suite()
    names = {c.name for c in suite.CASES}
    for d in suite.DIFFERENCES:
        assert "*" in d.cases or set(d.cases) <= names, f"{d.id} names cases the suite does not have"
        assert d.what and d.reason and d.rule, d.id


def test_scripts_and_notebooks_see_what_flordb_4_shows(tmp_path):
    if not os.path.exists(os.path.join(REF_VENV, "bin", "python")):
        pytest.skip(f"no reference venv at {REF_VENV}: create it with `python scripts/compat_flordb.py --setup`")
    if not os.environ.get("FLOR_BIN"):
        pytest.skip("FLOR_BIN (the flor binary) is not set; scripts/test.sh sets it")
    out = tmp_path / "compat.json"
    p = subprocess.run(
        [sys.executable, SCRIPT, "--ref-venv", REF_VENV, "--flor-bin", os.environ["FLOR_BIN"], "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), p.stdout + p.stderr
    report = json.loads(out.read_text())
    bad = [r for r in report["results"] if r["status"] in ("differs", "error")]
    assert not bad, p.stdout
    assert not report["stale"], f"differences no case needs any more (remove them): {report['stale']}"
    ran = {r["case"] for r in report["results"] if r["status"] == "same"}
    assert {"loops", "notebook", "replay"} <= ran, p.stdout
    assert p.returncode == 0, p.stdout + p.stderr
