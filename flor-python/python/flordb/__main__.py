"""``python -m flordb COMMAND``: FlorDB 4's command-line spellings.

Each command runs its equivalent through the ``flor`` command (FLOR_BIN,
else the PATH), printing the command it runs first:

=============================  ==========================================
``python -m flordb unpack``    ``flor rebuild`` (the query database, from git)
``python -m flordb stat``      the platform lines, then ``flor runs``
``python -m flordb query Q``   ``flor query Q``
``python -m flordb dataframe`` ``flor dataframe [NAME...]`` (``a,b`` split)
``python -m flordb replay``    ``flor.replay`` (plan, ``[y/N]``, progress)
``python -m flordb capture``   ``flor capture [--preview|--extract]``
=============================  ==========================================
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys

import flordb
from flordb import FlorError


def _split(text):
    return [p.strip() for p in text.split(",") if p.strip()] if text else []


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m flordb",
        description="FlorDB's command-line spellings, run through the `flor` command (see `flor --help`).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("unpack", help="rebuild the query database (flor rebuild)")
    sub.add_parser("stat", help="platform details and the recorded runs (flor runs)")
    q = sub.add_parser("query", help="a read-only SQL query (flor query)")
    q.add_argument("q")
    d = sub.add_parser("dataframe", help="the pivot of logged values (flor dataframe)")
    d.add_argument("columns", nargs="?", type=_split, default=[])
    r = sub.add_parser("replay", help="fill in values for past runs (flor replay)")
    r.add_argument("VARS", nargs="?", type=_split, help="old positional form of --apply")
    r.add_argument("where_clause", nargs="?", help="old positional form of --where")
    r.add_argument("--apply", type=_split)
    r.add_argument("--where")
    r.add_argument("--iter", action="append", default=[], metavar="LOOP=SPEC")
    r.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--jobs", type=int)
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c = sub.add_parser("capture", help="captured output and the metrics in it (flor capture)")
    c.add_argument("--preview", action="store_true")
    c.add_argument("--extract", action="store_true")
    c.add_argument("--limit", type=int)
    return p


def _run(args):
    """Runs `flor ARGS`, printing the command first; returns its status."""
    print("flor: running: " + shlex.join(["flor", *args]), file=sys.stderr, flush=True)
    try:
        return subprocess.call([flordb._flor_command(), *args])
    except OSError as e:
        raise FlorError(f"cannot run the flor command: {e}") from None


def _stat():
    conda = "conda" in sys.version or "Continuum" in sys.version or os.path.exists(os.path.join(sys.prefix, "conda-meta"))
    for key, value in (
        ("architecture", platform.machine()),
        ("operating_system", platform.system()),
        ("os_version", platform.version()),
        ("python_version", platform.python_version()),
        ("in_anaconda", conda),
    ):
        print(f"{key}: {value}")
    sys.stdout.flush()
    return _run(["runs"])


def _replay(a):
    if a.apply and a.VARS:
        raise FlorError("python -m flordb replay: --apply was given, so give a filter as --where, not positionally")
    names = a.apply or a.VARS
    where = a.where if a.where is not None else a.where_clause
    if not names:
        raise FlorError("python -m flordb replay: name the values to fill in, e.g. --apply loss,val_acc")
    frame = flordb.replay(names, where, a.iter or None, a.override or None, jobs=a.jobs, yes=a.yes)
    if frame is not None:
        print(frame)
    return 0


def main(argv=None):
    a = _parser().parse_args(argv)
    try:
        if a.command == "unpack":
            return _run(["rebuild"])
        if a.command == "stat":
            return _stat()
        if a.command == "query":
            return _run(["query", a.q])
        if a.command == "dataframe":
            return _run(["dataframe", *a.columns])
        if a.command == "replay":
            return _replay(a)
        flags = [f for f, on in (("--preview", a.preview), ("--extract", a.extract)) if on]
        if a.limit is not None:
            flags += ["--limit", str(a.limit)]
        return _run(["capture", *flags])
    except FlorError as e:
        print(f"flor: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
