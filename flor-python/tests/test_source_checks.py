"""Source checks when a run starts: the script's findings (code replay
cannot reproduce) are printed on stderr the first time a run of each
version of the script starts, never fail the run, and can be silenced."""

from conftest import dataframe, run_python, run_script

REBOUND = """
import flordb as flor

w = [0.0, 0.0]
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(2)):
        w = [x + 1.0 for x in w]
        flor.log("w0", w[0])
"""

CLEAN = REBOUND.replace("w = [x + 1.0 for x in w]", "w[:] = [x + 1.0 for x in w]")

FINDING = "train.py:7:9: warning[flor::rebound-checkpoint]: `w` is passed to flor.checkpointing at line 5"


def test_a_run_shows_its_scripts_findings_once_per_version(repo):
    first = run_script(repo, REBOUND)
    assert FINDING in first.stderr, first.stderr
    assert "hint: " in first.stderr and "FLOR_LINT_ON_RUN=0" in first.stderr
    # The run itself went on as usual.
    assert [r["w0"] for r in dataframe(repo, "w0")] == [1.0, 2.0]
    # The same version again: silent.
    again = run_script(repo, REBOUND)
    assert "flor::" not in again.stderr, again.stderr
    # Another version warns again.
    changed = run_script(repo, REBOUND + "# tuned\n")
    assert FINDING in changed.stderr, changed.stderr


def test_a_clean_script_never_shows_anything(repo):
    p = run_script(repo, CLEAN)
    assert "source checks" not in p.stderr, p.stderr


def test_the_environment_or_the_config_silences_it(repo, monkeypatch):
    monkeypatch.setenv("FLOR_LINT_ON_RUN", "0")
    p = run_script(repo, REBOUND)
    assert "source checks" not in p.stderr, p.stderr
    monkeypatch.delenv("FLOR_LINT_ON_RUN")
    (repo / ".flor" / "config.toml").write_text("lint_on_run = false\n")
    p = run_script(repo, REBOUND)
    assert "source checks" not in p.stderr, p.stderr
    # Silenced runs remember nothing: switched on, the version is shown.
    (repo / ".flor" / "config.toml").write_text("")
    p = run_script(repo, REBOUND)
    assert FINDING in p.stderr, p.stderr


def test_a_version_that_cannot_be_remembered_is_shown_every_time(repo):
    # `.flor/lint-shown` is a file here, so no version can be remembered:
    # the runs go on and show their findings each time.
    (repo / ".flor").mkdir()
    (repo / ".flor" / "lint-shown").write_text("in the way\n")
    for _ in range(2):
        p = run_script(repo, REBOUND)
        assert FINDING in p.stderr, p.stderr
    assert len(dataframe(repo, "w0")) == 4


def test_code_without_a_script_file_shows_nothing(repo):
    code = "import flordb as flor\nw = [0]\nwith flor.checkpointing(w=w):\n    for e in flor.loop('e', range(1)):\n        w = [1]\n"
    p = run_python(repo, code)
    assert "source checks" not in p.stderr, p.stderr
