"""Shared helpers for the flordb tests.

Every test works in a fresh temporary git repository and runs real Python
scripts in it as subprocesses of the interpreter running pytest (the venv's),
with git isolated from the user's configuration (HOME points at an empty
folder, no system or global git config).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PYTHON = sys.executable
TIMEOUT = 60  # seconds; generous, every script here takes well under a second

# A prelude for query snippets: run with pandas hidden so that flordb returns
# plain lists of dicts with exact Python types (ints stay ints, None stays None).
_HIDE_PANDAS = "import sys; sys.modules['pandas'] = None\n"

_QUERY_SNIPPET = """\
import json, sys
import flordb as flor
result = eval(sys.argv[1])
if hasattr(result, "to_dict"):
    result = result.to_dict(orient="records")
sys.stdout.write("\\n@@FLOR-JSON@@" + json.dumps(result, default=repr))
"""


@pytest.fixture(scope="session")
def _isolated_home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _git_env(_isolated_home, monkeypatch):
    """Git (the CLI, and libgit2 inside flor) must not depend on the user's
    configuration; subprocesses inherit this environment."""
    for key in list(os.environ):
        if key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(_isolated_home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(_isolated_home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPATH", raising=False)


def git(repo, *args, check=True):
    """Runs git in ``repo`` (with an identity for any commit); returns stdout."""
    p = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


@pytest.fixture
def repo(tmp_path):
    """A fresh git repository (no commits) named ``proj``."""
    path = tmp_path / "proj"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


def write_script(repo, source, name="train.py"):
    path = repo / name
    path.write_text(textwrap.dedent(source))
    return path


def _fail_message(what, p):
    return f"{what} exited {p.returncode}\n--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"


def run_script(repo, source, *args, check=True, name="train.py", timeout=TIMEOUT):
    """Writes ``source`` (dedented) to ``repo/name`` and runs it with the
    venv's python, cwd = repo. Returns the CompletedProcess (text)."""
    write_script(repo, source, name)
    p = subprocess.run(
        [PYTHON, name, *[str(a) for a in args]],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(_fail_message(name, p))
    return p


def start_script(repo, source, *args, name="train.py"):
    """Like ``run_script`` but returns the running Popen (stdout piped,
    unbuffered, text)."""
    write_script(repo, source, name)
    return subprocess.Popen(
        [PYTHON, "-u", name, *[str(a) for a in args]],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_python(repo, code, *args, check=True, hide_pandas=False):
    """Runs ``python -c code`` in ``repo`` (no ``__main__`` file, so flordb
    takes the project from the cwd)."""
    prelude = _HIDE_PANDAS if hide_pandas else ""
    p = subprocess.run(
        [PYTHON, "-c", prelude + textwrap.dedent(code), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check and p.returncode != 0:
        raise AssertionError(_fail_message("python -c", p))
    return p


def flor_eval(repo, expr, pandas=False):
    """Evaluates the Python expression ``expr`` (with ``flor`` = flordb) in a
    separate process in ``repo`` and returns its JSON-decoded result
    (DataFrames as lists of row dicts). By default pandas is hidden, so the
    rows carry flordb's own Python values."""
    p = run_python(repo, _QUERY_SNIPPET, expr, hide_pandas=not pandas)
    return json.loads(p.stdout.rsplit("@@FLOR-JSON@@", 1)[1])


def query(repo, sql):
    """``flor.query(sql)`` in a separate process, as a list of row dicts."""
    return flor_eval(repo, f"flor.query({sql!r})")


def dataframe(repo, *names):
    """``flor.dataframe(*names)`` in a separate process, as a list of row dicts."""
    return flor_eval(repo, f"flor.dataframe(*{list(names)!r})")


def run_on_tty(repo, name="train.py"):
    """Runs script ``name`` with stdout and stderr on a pseudo-terminal of
    100 columns; returns what the terminal received (the script must
    succeed)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    p = subprocess.Popen([PYTHON, name], cwd=repo, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(timeout=TIMEOUT) == 0
    os.close(master)
    return b"".join(chunks).decode(errors="replace")
