"""Bad input gives clear errors and loses nothing."""

import subprocess

import pytest

from conftest import query, run_python, run_script

ARGS_SCRIPT = """
import flordb as flor
lr = flor.arg("lr", 0.1)
epochs = flor.arg("epochs", 3)
for epoch in flor.loop("epoch", range(epochs)):
    flor.log("loss", epoch)
"""


@pytest.mark.parametrize(
    "kwarg, default_hint",
    [("epochs=abc", "integer"), ("lr=fast", "number")],
)
def test_uncoercible_kwarg_exits_nonzero_naming_it(repo, kwarg, default_hint):
    p = run_script(repo, ARGS_SCRIPT, "--kwargs", kwarg, check=False)
    assert p.returncode != 0
    assert kwarg in p.stderr
    assert default_hint in p.stderr
    assert "loss" not in p.stdout
    # Whatever was recorded is a failed run, never a finished one.
    assert all(r["status"] == "failed" for r in query(repo, "SELECT status FROM runs"))


def test_bool_kwarg_rejects_other_words(repo):
    src = """
    import flordb as flor
    flag = flor.arg("flag", False)
    """
    p = run_script(repo, src, "--kwargs", "flag=maybe", check=False)
    assert p.returncode != 0
    assert "flag=maybe" in p.stderr


def test_arg_without_default_needs_the_command_line(repo):
    src = """
    import flordb as flor
    print(repr(flor.arg("name")))
    """
    p = run_script(repo, src, "--kwargs", "name=bob")
    assert p.stdout.strip() == "'bob'"
    p = run_script(repo, src, check=False)
    assert p.returncode != 0
    assert "FlorError" in p.stderr and "name" in p.stderr and "--kwargs" in p.stderr


@pytest.fixture
def not_a_repo(tmp_path):
    path = tmp_path / "plain"
    path.mkdir()
    inside = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=path, capture_output=True)
    if inside.returncode == 0:
        pytest.skip("the temporary folder is itself inside a git repository")
    return path


def test_script_outside_a_git_repository(not_a_repo):
    p = run_script(not_a_repo, ARGS_SCRIPT, check=False)
    assert p.returncode != 0
    assert "git init" in p.stderr
    assert "FlorError" in p.stderr
    # Nothing was left behind (no .flor, no .git).
    assert sorted(x.name for x in not_a_repo.iterdir()) == ["train.py"]


def test_query_outside_a_git_repository(not_a_repo):
    p = run_python(
        not_a_repo,
        """
        import flordb as flor
        try:
            flor.query("SELECT * FROM runs")
        except flor.FlorError as e:
            print("ERR", e)
        """,
    )
    assert p.stdout.startswith("ERR ") and "git init" in p.stdout


def test_unknown_name_in_dataframe_is_a_clear_error(repo):
    run_script(repo, ARGS_SCRIPT)
    p = run_python(
        repo,
        """
        import flordb as flor
        try:
            flor.dataframe("never_logged")
        except flor.FlorError as e:
            print("ERR", e)
        print(len(flor.dataframe("loss")))
        """,
    )
    err, n = p.stdout.splitlines()
    assert err.startswith("ERR ") and "never_logged" in err and "loss" in err
    assert n == "3"


def test_names_and_nesting_beyond_the_record_limits_are_clear_errors(repo):
    """What record files refuse to read, flordb refuses to write: a name
    over 4 KiB, a loop name over its limit, loops nested more than 64 deep."""
    src = """
    import flordb as flor

    def attempt(what, f):
        try:
            f()
        except Exception as e:
            print(what, type(e).__name__, e)

    attempt("log", lambda: flor.log("x" * 5000, 1))
    attempt("loop", lambda: list(flor.loop("l" * 5000, range(1))))

    def nest(depth):
        for _ in flor.loop(f"l{depth}", range(1)):
            if depth < 70:
                nest(depth + 1)

    attempt("nest", lambda: nest(1))
    flor.log("ok", 1)
    """
    p = run_script(repo, src)
    lines = {line.split(" ")[0]: line for line in p.stdout.splitlines() if " " in line}
    assert "FlorError" in lines["log"] and "longer than record files allow (4096 bytes)" in lines["log"]
    assert "FlorError" in lines["loop"] and "loop name" in lines["loop"]
    assert "FlorError" in lines["nest"] and "would nest 65 deep" in lines["nest"]
    assert query(repo, "SELECT value FROM logs WHERE value_name = 'ok'") == [{"value": 1}]
