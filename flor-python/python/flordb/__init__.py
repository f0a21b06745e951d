"""flordb: FlorDB's Python API on flor's Rust engine.

An existing FlorDB script runs unchanged::

    import flordb as flor

    lr = flor.arg("lr", 1e-3)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(5)):
            for x, y in flor.loop("step", loader):
                ...
                flor.log("loss", loss.item())
    print(flor.dataframe("lr", "loss"))

Records are written durably at the end of every outer-loop iteration, the
code is snapshotted under git refs ``refs/flor/runs/*`` (your branch, index
and files untouched), and the run is committed at interpreter exit (or by
``flor.commit()``; in IPython after each cell that logged).
"""

import atexit
import json
import operator
import os
import pickle
import random
import sys
from contextlib import contextmanager

from . import _files, _flor, _pytree
from ._flor import FlorError

__all__ = [
    "arg",
    "log",
    "loop",
    "iteration",
    "checkpointing",
    "set_ckpt_interval",
    "commit",
    "dataframe",
    "query",
    "io",
    "load_checkpoint",
    "checkpoints",
    "set_capture",
    "FlorError",
    # FlorDB 4's remaining top-level API (see "FlorDB 4's remaining API" below)
    # (CURRDIR, PROJID, FLORDIR, RUNS_DIR, OBJSTORE_DIR, DB_PATH are module
    # attributes too, left out of `import *`: they need a git repository.)
    "replay",
    "restore",
    "output_buffer",
    "SCRIPTNAME",
    "VALUE_TYPE_LOG",
    "VALUE_TYPE_IO",
    "VALUE_TYPE_TIME",
]

# flor applies batches of training steps on a worker thread; a forked child
# has none, so nothing may be in flight while the process forks.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_flor._before_fork, after_in_child=_flor._after_fork_in_child)

_failed = False
_checkpoints = []  # (name, object) registered by flor.checkpointing
_ckpt_interval = None


def _script_path():
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    path = os.path.realpath(path)
    # `python -m flordb ...` is flor's own command line, not a script.
    return None if os.path.dirname(path) == os.path.dirname(os.path.realpath(__file__)) else path


def _cwd():
    path = _script_path()
    return os.path.dirname(path) if path else os.getcwd()


def _get():
    """Starts the run on first use (FlorDB's deferred init)."""
    if not _flor.active():
        if _replay is not None:
            # The segment's run ended (flor.commit() in the script): a replay
            # process records one segment of one run, never a new run.
            raise FlorError(
                f"replay of run {_replay['run']['tstamp']}: the script called flor again after "
                "its run was committed; a replay records only the run it replays"
            )
        path = _script_path()
        filename = path if path else "interactive"
        argv = list(sys.argv) if sys.argv and sys.argv[0] else [filename]
        _flor.start(argv, filename, sys.executable, _cwd())
        if _ckpt_interval is not None:
            _flor.set_checkpoint_interval(_ckpt_interval)
        _capture_configure()
        _show_source_checks()


def _show_source_checks():
    """Prints the script's source checks (code replay cannot reproduce) on
    stderr, the first time a run of this version of the script starts;
    never fails the run. FLOR_LINT_ON_RUN=0 or ``lint_on_run = false`` in
    .flor/config.toml silences it."""
    try:
        text = _flor.source_checks()
    except Exception:  # a check that cannot run must not stop training
        return
    if text:
        with _muted():  # flor's own message, not the script's output
            sys.stderr.write(text)
            sys.stderr.flush()


def _kwargs_names():
    names, on = set(), False
    for tok in sys.argv[1:]:
        if tok.startswith("--kwargs="):
            on, tok = True, tok[len("--kwargs="):]
        elif tok == "--kwargs":
            on = True
            continue
        elif tok.startswith("--"):
            on = False
            continue
        if on and "=" in tok:
            names.add(tok.split("=", 1)[0].strip())
    return names


def arg(name, default=None):
    """The hyper-parameter ``name``: ``--kwargs name=value`` from the command
    line, converted to the type of ``default``; else ``default``."""
    _get()
    if default is None:
        if name not in _kwargs_names():
            raise FlorError(f"flor.arg({name!r}) has no default and the command line gives no --kwargs {name}=...")
        return _flor.arg(name, "")
    return _flor.arg(name, default)


# flor.log(name, value): records, prints FlorDB's line
# (``epoch: 0, step: 3, loss: 0.25``) and returns value -- all in Rust.
log = _flor.log

def _tqdm():
    """tqdm's class when it is installed (imported on first need: importing
    it costs more than the rest of flordb's import)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return tqdm


def _bar_write(line):
    """Prints a log line above the open progress bar."""
    _tqdm().write(line)


def loop(name, iterable):
    """Iterates ``iterable`` as the loop ``name`` (nestable). At the end of
    every outermost iteration the objects under ``flor.checkpointing`` are
    checkpointed and the records are written to disk. The outermost loop
    shows a progress bar on a terminal when tqdm is installed."""
    _files.loop_started()
    if _replay is not None:
        if _flor.depth() == 0 and name == _replay.get("outer_loop"):
            return _replay_outer(name, iterable)
        if _skip_nested is not None:
            _skip_nested_loop()
            return iter(())
    if _flor.depth() == 0 and sys.stdout.isatty():
        bar = _tqdm()
        if bar is not None:
            return _flor.loop_iter(name, bar(iterable, desc=name, file=_raw_stderr()), True)
    return _flor.loop_iter(name, iterable)


def _outer_iteration_end():
    """Called by the engine at the end of every outermost iteration."""
    _checkpoint_all()


@contextmanager
def iteration(name, idx=None, value=None):
    """One iteration of loop ``name`` with an explicit index, for loops
    flor cannot wrap: ``with flor.iteration("epoch", i, None): ...``."""
    _files.loop_started()
    text = None if value is None else str(value)
    index = None if idx is None else int(idx)
    if _replay is not None and _flor.active() and _flor.depth() == 0:
        _flor.set_recording(True)  # a replay runs such outer loops in full
    _, outer, token = _flor.iteration_enter(name, index, text)
    try:
        yield
        if outer:
            _checkpoint_all()
    finally:
        _flor.iteration_exit(token)


@contextmanager
def checkpointing(**objects):
    """Checkpoints ``objects`` at the end of every outermost iteration
    (objects with ``state_dict`` through it; JAX/flax pytrees of arrays, when
    jax is imported, as ``flor.pytree``; others with pickle), with the RNG
    states of ``random``, numpy and torch."""
    added = list(objects.items())
    _checkpoints.extend(added)
    try:
        yield
    finally:
        _checkpoints[:] = [p for p in _checkpoints if not any(p is q for q in added)]  # by identity, not ==


def set_ckpt_interval(seconds):
    """Checkpoint no more often than every ``seconds``."""
    global _ckpt_interval
    if not 0 <= float(seconds) < float("inf"):  # checked now, not at the first log
        raise FlorError(f"checkpoint interval must be a non-negative number of seconds, got {seconds}")
    _ckpt_interval = float(seconds)
    if _flor.active():
        _flor.set_checkpoint_interval(_ckpt_interval)


def _rng_state():
    state = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    random.setstate(state["random"])
    np = sys.modules.get("numpy")
    if np is not None and "numpy" in state:
        np.random.set_state(state["numpy"])
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in state:
        torch.set_rng_state(state["torch"])
        if "torch_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["torch_cuda"])


class _Stream:
    """A file-like view of an object-store writer that takes any bytes-like
    object (pickle hands large numpy buffers over as ``PickleBuffer``) and
    passes it on in chunks, so no whole copy of the state is ever made."""

    __slots__ = ("_w",)
    _CHUNK = 1 << 22

    def __init__(self, w):
        self._w = w

    def write(self, data):
        if type(data) is bytes:
            return self._w.write(data)
        try:
            mv = memoryview(data).cast("B")
        except (TypeError, ValueError):  # not C-contiguous: one copy
            return self._w.write(bytes(data))
        n = len(mv)
        for i in range(0, n, self._CHUNK):
            self._w.write(bytes(mv[i : i + self._CHUNK]))
        return n

    def flush(self):
        pass


def _save(name, obj):
    raw = _flor.object_writer()
    w = _Stream(raw)
    try:
        if hasattr(obj, "state_dict") and callable(obj.state_dict):
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.save(obj.state_dict(), w)
                fmt = "torch.state_dict"
            else:
                pickle.dump(obj.state_dict(), w, protocol=pickle.HIGHEST_PROTOCOL)
                fmt = "pickle.state_dict"
        else:
            planned = _pytree.plan(obj)  # None unless jax is imported and obj is a pytree of arrays
            if planned is not None:
                _pytree.write(planned, w)
                fmt = _pytree.FORMAT
            else:
                pickle.dump(obj, w, protocol=pickle.HIGHEST_PROTOCOL)
                fmt = "pickle"
        digest, size = raw.finish()
    except Exception as e:
        raw.abort()
        raise FlorError(f"cannot checkpoint {name!r} ({type(obj).__name__}): {e}") from e
    _flor.record_checkpoint(name, fmt, digest, size)


def _checkpoint_all():
    if _replay is not None:
        return  # a replay restores checkpoints; it takes none
    if not _checkpoints or not _flor.active() or not _flor.checkpoint_due():
        return
    for name, obj in _checkpoints:
        _save(name, obj)
    _save("__rng__", _rng_state())


def _load_bytes(data, fmt):
    if fmt == "torch.state_dict":
        import io

        import torch

        return torch.load(io.BytesIO(data), weights_only=False)
    if fmt == _pytree.FORMAT:
        try:
            return _pytree.load(data)
        except _pytree.FormatError as e:
            raise FlorError(f"cannot read a {fmt} checkpoint: {e}") from None
    return pickle.loads(data)


def _restore(obj, state, fmt):
    """Puts ``state`` into ``obj`` in place, so references stay valid."""
    if isinstance(state, _pytree.Leaves):  # stored without its structure: take obj's
        try:
            state = state.rebuild(obj)
        except _pytree.FormatError as e:
            raise FlorError(f"cannot restore a {fmt} checkpoint into a {type(obj).__name__}: {e}") from None
    if fmt.endswith("state_dict"):
        obj.load_state_dict(state)
    elif isinstance(obj, random.Random):  # its state lives in C, not in __dict__
        obj.setstate(state.getstate())
    elif hasattr(obj, "bit_generator") and hasattr(state, "bit_generator"):  # numpy's Generator
        obj.bit_generator.state = state.bit_generator.state
    elif callable(getattr(obj, "set_state", None)) and callable(getattr(state, "get_state", None)):
        obj.set_state(state.get_state())  # numpy's RandomState, torch.Generator
    elif type(obj).__module__ == "numpy" and hasattr(obj, "shape"):
        obj[...] = state
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(state)
    elif isinstance(obj, list):
        obj[:] = state
    elif hasattr(obj, "__dict__") and hasattr(state, "__dict__"):
        obj.__dict__.clear()
        obj.__dict__.update(state.__dict__)
    else:
        raise FlorError(f"cannot restore a {type(obj).__name__} in place")
    return obj


def load_checkpoint(tstamp, name=None, into=None, *, map_location="cpu", weights_only=True):
    """The last checkpoint of run ``tstamp``: object ``name`` (restored in
    place into ``into`` when given), or a dict of all its objects. ``name``
    may also be the path of a file the run saved (``torch.save``,
    ``numpy.save``) or loaded in setup: its kept bytes are loaded again
    (the last save of that path), with ``map_location`` and ``weights_only``
    for torch (numpy: ``allow_pickle = not weights_only``). A run with no
    checkpointed objects and one saved file gives that file for no name."""
    _note_read()
    cps = _flor.checkpoints(_cwd(), str(tstamp))
    last, files = {}, {}
    for c in cps:
        kind, path = _kept_kind(c["name"])
        if kind == "object":
            last[c["name"]] = c
        else:
            files.setdefault(path, {})[kind] = c
    if name is None and not last and len(files) == 1:
        name = next(iter(files))
    if name is not None and name not in last and str(name) in files:
        return _load_file(tstamp, str(name), files[str(name)], map_location, weights_only)
    if not last:
        have = f" (it has kept files: {', '.join(sorted(files))}; name one)" if files else ""
        raise FlorError(f"run {tstamp} has no checkpoints{have}")
    if name is None:
        return {n: _load_bytes(_flor.object_bytes(_cwd(), c["digest"]), c["format"]) for n, c in last.items()}
    if name not in last:
        more = f"; files: {', '.join(sorted(files))}" if files else ""
        raise FlorError(f"run {tstamp} has no checkpoint named {name!r} (it has: {', '.join(sorted(last))}{more})")
    c = last[name]
    state = _load_bytes(_flor.object_bytes(_cwd(), c["digest"]), c["format"])
    if name == "__rng__" and into is None:
        return state
    if into is None and isinstance(state, _pytree.Leaves):
        raise FlorError(
            f"checkpoint {name!r} of run {tstamp} was stored without its structure (its static data, such as a "
            "TrainState's optimizer functions, cannot be pickled): restore it into an object of the same "
            f"structure, load_checkpoint({str(tstamp)!r}, {name!r}, into=obj)"
        )
    return _restore(into, state, c["format"]) if into is not None else state


# --- Kept files (see _files): flor.checkpoints and loading them -------------

_KEPT_PREFIXES = (("file:", "file"), ("load:", "load"))  # flor_core::kept
_NOT_KEPT = "+digest-only"


def _kept_kind(name):
    """(kind, path) of a checkpoint record's name: ``object`` and the name,
    or ``file``/``load`` and the path."""
    for prefix, kind in _KEPT_PREFIXES:
        if name.startswith(prefix):
            return kind, name[len(prefix):]
    return "object", name


def _load_file(tstamp, path, by_kind, map_location, weights_only):
    """Loads the kept bytes of ``path`` (its last save, else its setup load)."""
    import io

    c = by_kind.get("file") or by_kind["load"]
    fmt = c["format"]
    if fmt.endswith(_NOT_KEPT):
        raise FlorError(
            f"run {tstamp} loaded {path!r} in setup but kept only its digest (it was larger than "
            "[checkpoints] keep_loads_mb)"
        )
    data = io.BytesIO(_flor.object_bytes(_cwd(), c["digest"]))
    if fmt.startswith("torch."):
        import torch

        return torch.load(data, map_location=map_location, weights_only=weights_only)
    if fmt.startswith("numpy."):
        import numpy as np

        return np.load(data, allow_pickle=not weights_only)
    raise FlorError(f"run {tstamp}: kept file {path!r} has format {fmt!r}, which flor cannot load")


def checkpoints(tstamp):
    """What run ``tstamp`` keeps, one row each, in the order it happened: the
    checkpointed objects (kind ``object``), the files it saved (``file``)
    and the files it loaded in setup (``load``); columns name (the object's
    name or the file's project path), kind, loop, iteration, format,
    digest, bytes, path (files), stored (``whole``, ``packed``, or
    ``missing``: a setup load kept by digest only). A pandas DataFrame
    (without pandas: a list of dicts)."""
    rows = []
    for e in _flor.checkpoint_entries(_cwd(), str(tstamp)):
        rows.append(
            {
                "name": e["path"] if e["path"] is not None else e["name"],
                "kind": e["kind"],
                "loop": e["loop"],
                "iteration": e["iteration"],
                "format": e["format"],
                "digest": e["digest"],
                "bytes": e["bytes"],
                "path": e["path"],
                "stored": e["stored"],
            }
        )
    columns = ["name", "kind", "loop", "iteration", "format", "digest", "bytes", "path", "stored"]
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=columns)


# --- Hindsight replay (driven by `flor replay`) ------------------------------
#
# `flor replay` runs an old version of the script, with the new statements
# carried in, once per segment of a run, with FLOR_REPLAY naming a JSON spec:
# which outer iterations to execute, which checkpoints to restore first, and
# whether nested loops are skipped (replaced by the iteration's own
# end-of-iteration checkpoint). Only the applied names are recorded, at the
# original run's loop positions.

_REPLAY_ENV = "FLOR_REPLAY"  # the segment spec (flor_replay::SegmentSpec, version 2)
_PROGRESS_ENV = "FLOR_REPLAY_PROGRESS"  # optional: where to write "done total"
# The executor also sets FLOR_REPLAY_OUTPUT (the record file) and
# FLOR_REPLAY_OBJECTS (the checkpoint store); the engine reads those.
_replay = None  # the segment spec while this process replays
_replay_progress = None  # the progress file its executor named, if any
_skip_nested = None  # outer iteration whose nested loops are skipped
_skip_restored = False


def _start_replay(spec_path):
    global _replay, _replay_progress
    with open(spec_path) as f:
        _replay = json.load(f)
    _replay_progress = os.environ.get(_PROGRESS_ENV)
    _flor.start_replay(spec_path, list(sys.argv))
    _flor.set_recording(bool(_replay["segment"]["record_setup"]))


def _restore_from(iteration):
    """Restores every checkpointed object, and the RNG states, to the end of
    outer iteration ``iteration`` of the replayed run."""
    refs = _replay["checkpoints"].get(str(iteration))
    run = _replay["run"]["tstamp"]
    if refs is None:
        raise FlorError(f"replay of run {run}: no checkpoint at the end of iteration {iteration}")
    by_name = {c["name"]: c for c in refs}
    for name, obj in _checkpoints:
        c = by_name.get(name)
        if c is None:
            have = ", ".join(sorted(n for n in by_name if n != "__rng__"))
            raise FlorError(f"replay of run {run}: the checkpoint of iteration {iteration} has no object {name!r} (it has: {have})")
        _restore(obj, _load_bytes(_flor.run_object_bytes(c["digest"]), c["format"]), c["format"])
    rng = by_name.get("__rng__")
    if rng is not None:
        _set_rng_state(_load_bytes(_flor.run_object_bytes(rng["digest"]), rng["format"]))


def _skip_nested_loop():
    global _skip_restored
    if not _skip_restored:
        _restore_from(_skip_nested)
        _skip_restored = True


def _replay_outer(name, iterable):
    global _skip_nested, _skip_restored
    seg = _replay["segment"]
    steps = {s["iteration"]: s for s in seg["steps"]}
    last = max(steps) if steps else -1
    progress = _replay_progress  # "done total", read by flor replay's progress bars
    done = 0
    items = list(iterable)  # which iterations run depends on how many there are
    for i, item in enumerate(items):
        if i > last:
            break
        step = steps.get(i)
        if step is None:
            continue
        if step["restore"] is not None:
            _restore_from(step["restore"])
        _flor.set_recording(bool(step["record"]))
        text = str(item) if isinstance(item, (bool, int, float, str)) else None
        _, _, token = _flor.iteration_enter(name, i, text)
        _skip_nested = i if step["skip_nested"] else None
        _skip_restored = False
        try:
            yield item
        finally:
            _skip_nested = None
            _flor.iteration_exit(token)
        done += 1
        if progress:
            with open(progress, "w") as f:
                f.write(f"{done} {len(steps)}\n")
    if seg.get("final_restore") is not None:
        _restore_from(seg["final_restore"])
    _flor.set_recording(bool(seg["teardown"]))
    if not seg["teardown"]:
        # Nothing after the loop is needed: end the replay here.
        commit()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def commit():
    """Ends the current run (records published to git and the query
    database); later logs start a new run."""
    if _flor.active():
        _flor.finish(_failed)
        # Output printed from now on starts no run (see "Automatic capture
        # of output" below).
        _flor.capture_hold()
    _files.run_committed()


def _coerce(value):
    """Called by the engine for values that are not bool/int/float/str."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return ("scalar", item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return ("json", json.dumps(tolist()))
    try:
        return ("json", json.dumps(value))
    except (TypeError, ValueError, OverflowError):
        return ("text", str(value))


def _pandas(frame):
    """A pandas DataFrame of a query result: numeric columns straight from
    the engine's buffers (no Python object per cell), a dataframe's
    repeated text (the run columns) as ordered categoricals, other columns
    (and every text column of ``flor.query``) as FlorDB gave them.
    Without pandas: a list of dicts, one per row."""
    try:
        import numpy as np
        import pandas as pd
    except ImportError:
        columns = frame.columns
        return [dict(zip(columns, row)) for row in zip(*frame.values())] if columns else []
    def array(payload, dtype):
        # The engine's own memory (numpy's array interface) or bytes.
        return np.frombuffer(payload, dtype=dtype) if isinstance(payload, bytes) else np.asarray(payload)

    cols = {}
    for name, kind, payload in frame.pandas_columns():
        if kind == "i8":
            cols[name] = array(payload, "<i8")
        elif kind == "f8":
            cols[name] = array(payload, "<f8")
        elif kind == "b1":
            cols[name] = array(payload, np.bool_)
        elif kind == "cat":
            codes, categories = payload
            codes = array(codes, "<i4")
            cols[name] = pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object), ordered=True)
        else:
            cols[name] = payload
    return pd.DataFrame(cols, columns=list(cols), copy=False)


def _arrow(frame):
    try:
        import pyarrow as pa
    except ImportError as e:
        raise FlorError("as_='arrow' needs pyarrow (pip install pyarrow)") from e
    return pa.RecordBatchReader.from_stream(frame).read_all()


def _polars(frame):
    try:
        import polars as pl
    except ImportError as e:
        raise FlorError("as_='polars' needs polars (pip install polars)") from e
    return pl.DataFrame(frame)


_AS = {"pandas": _pandas, "arrow": _arrow, "pyarrow": _arrow, "polars": _polars}


def _convert(frame, as_):
    if as_ is None or as_ == "pandas":
        return _pandas(frame)
    if as_ == "frame":
        return frame
    try:
        return _AS[as_](frame)
    except KeyError:
        raise FlorError(f"as_={as_!r}: expected one of 'pandas', 'arrow', 'polars', 'frame'") from None


def _iters(iter):
    if iter is None:
        return []
    if isinstance(iter, str):
        return [iter]
    if isinstance(iter, dict):
        return [f"{k}={v}" for k, v in iter.items()]
    return [str(i) for i in iter]


def dataframe(*names, diverged=False, where=None, iter=None, as_="pandas"):
    """The pivot of logged values: one row per run and loop position, one
    column per name (a pandas DataFrame when pandas is installed, else a list
    of dicts). With ``diverged=True``, a boolean ``diverged`` column says
    which rows hold a value recovered by a replay that recomputed a recorded
    value differently (see ``flor replay``'s divergence check).

    ``where``: a SQL predicate over run-level columns (``projid``,
    ``tstamp``, ``filename``, args), e.g. ``"lr > 0.05"``; ``iter``: loop
    iterations to keep, ``{"epoch": "last"}`` or ``"epoch=last"`` (SPEC:
    ``all``, ``last``, ``none`` or indices such as ``"0,3,5-7"``). Both are
    applied in the store before the pivot, as ``flor dataframe --where
    --iter``. ``as_``: ``"pandas"`` (default), ``"arrow"`` (a
    ``pyarrow.Table``), ``"polars"`` (a ``polars.DataFrame``) or ``"frame"``
    (the raw result, which any Arrow consumer takes through
    ``__arrow_c_stream__``)."""
    _note_read()
    frame = _flor.dataframe(
        _cwd(), [str(n) for n in names], bool(diverged), None if where is None else str(where), _iters(iter)
    )
    return _convert(frame, as_)


def query(sql, as_="pandas"):
    """A read-only SQL query over the views runs, logs, loops, timings,
    outputs, checkpoints, replay_checks (``as_`` as for ``dataframe``)."""
    _note_read()
    return _convert(_flor.query(_cwd(), str(sql)), as_)


# --- FlorDB 4's remaining API ------------------------------------------------
#
# What else FlorDB 4's top-level namespace offers a script or a notebook:
# `replay` (driven by the `flor` command), `restore` (retired, as in FlorDB
# 4), `output_buffer` (a read-only view of the active run's records not yet
# committed) and the module constants a script may read (computed on first
# access, so that importing flordb outside a git repository still works).
# "Coming from FlorDB" in the README lists where we differ on purpose.


def _flor_command():
    """The `flor` command: FLOR_BIN, else `flor` on the PATH."""
    import shutil

    named = os.environ.get("FLOR_BIN")
    if named:
        return named
    found = shutil.which("flor")
    if found is None:
        raise FlorError(
            "this needs the `flor` command (flor.replay, python -m flordb, --replay_flor), which is not on the "
            "PATH: install it "
            "(cargo install flor) or name it in the FLOR_BIN environment variable"
        )
    return found


def _spec_text(spec):
    """An iteration selection as `flor replay --iter` spells it: `all`,
    `last`, `none` or indices (`3`, `[0, 2]`, FlorDB's IterSpec)."""
    kind = getattr(spec, "kind", None)
    if kind is not None:  # FlorDB's IterSpec(kind, indices)
        return kind if kind in ("all", "last", "none") else ",".join(str(i) for i in spec.indices)
    if isinstance(spec, str):
        return spec
    if isinstance(spec, int):
        return str(spec)
    return ",".join(str(int(i)) for i in spec)


def _pairs(given, what):
    """`{k: v}`, `[(k, v), ...]`, `["k=v", ...]` or `"k=v"` as `k=v` texts."""
    if given is None:
        return []
    if isinstance(given, str):
        given = [given]
    elif isinstance(given, dict):
        given = list(given.items())
    out = []
    for item in given:
        if isinstance(item, str):
            if "=" not in item:
                raise FlorError(f"flor.replay: {what} {item!r} is not NAME=VALUE")
            out.append(item)
        else:
            key, value = item
            out.append(f"{key}={_spec_text(value) if what == 'iter' else value}")
    return out


def _replay_command(names, where, iters, overrides, jobs, executor=None, address=None):
    cmd = [_flor_command(), "-C", _cwd(), "replay", "--apply", ",".join(names)]
    if where is not None:
        cmd += ["--where", str(where)]
    for text in _pairs(iters, "iter"):
        cmd += ["--iter", text]
    for text in _pairs(overrides, "override"):
        cmd += ["--override", text]
    if jobs is not None:
        cmd += ["--jobs", str(int(jobs))]
    if executor is not None:
        cmd += ["--executor", str(executor)]
    if address is not None:
        cmd += ["--address", str(address)]
    return cmd


def _relay(cmd, skip=(), hide=None):
    """Runs `cmd`, relaying its standard output and error line by line to
    this process's `sys.stdout`/`sys.stderr` (a notebook shows them in the
    cell) as they come; the first lines of its output equal to `skip`, and
    those starting with `hide`, are not shown. Returns (exit status, output
    lines, error lines)."""
    import subprocess
    import threading

    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
    except OSError as e:
        raise FlorError(f"cannot run {cmd[0]!r} (the flor command; FLOR_BIN names another): {e}") from None
    err_lines = []

    def pump_errors():
        for line in proc.stderr:
            err_lines.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    pump = threading.Thread(target=pump_errors, daemon=True)
    pump.start()
    out_lines, skip = [], list(skip)
    for line in proc.stdout:
        text = line.rstrip("\n")
        out_lines.append(text)
        if skip and skip[0] == text:
            skip.pop(0)
            continue
        skip = []
        if hide is not None and text.startswith(hide):
            continue
        sys.stdout.write(line)
        sys.stdout.flush()
    status = proc.wait()
    pump.join()
    return status, out_lines, err_lines


def _replay_failure(status, err_lines):
    said = "\n".join(line for line in err_lines if line.strip()) or f"it exited with status {status}"
    return FlorError(f"flor replay failed:\n{said}")


def _apply_names(apply_vars):
    if isinstance(apply_vars, str):
        apply_vars = apply_vars.split(",")
    names = [str(n).strip() for n in apply_vars if str(n).strip()]
    if not names:
        raise FlorError("flor.replay: nothing to apply; name the values to fill in, e.g. flor.replay(['grad_norm'])")
    return names


def replay(
    apply_vars,
    where=None,
    iter=None,
    override=None,
    *,
    jobs=None,
    yes=None,
    executor=None,
    address=None,
    narrow_iters=None,
    where_clause=None,
    overrides=None,
):
    """Fills in ``apply_vars`` for past runs: runs ``flor replay --apply
    NAMES`` (the ``flor`` command: FLOR_BIN, else the PATH) with ``where``
    (a SQL predicate over run-level columns), ``iter`` (``{"epoch":
    "last"}``, ``["epoch=0,3"]``, ``[("epoch", [0, 3])]``) and
    ``override`` (``{"device": "cpu"}``, ``["device=cpu"]``); shows the
    plan, asks ``[y/N]`` on ``input()`` unless ``yes=True``, runs it
    (``executor="ray"`` and ``address="HOST:PORT"``: on a Ray cluster, as
    ``--executor ray --address``; default: ``[replay]`` in
    .flor/config.toml), relays the replay's progress, and returns ``flor.dataframe`` of the applied names
    and of the logged names ``where`` mentions (``None`` when the answer is
    no). Raises FlorError with the command's
    message when it fails. FlorDB's spellings work too: the keywords
    ``narrow_iters``, ``where_clause``, ``overrides``, and its positional
    order ``replay(vars, narrow_iters, where_clause, overrides)`` (told
    apart by the second argument not being a string). Unlike FlorDB's, it
    never commits or checks out anything in your repository: each run is
    replayed in its own copy of its code version."""
    if where is not None and not isinstance(where, str):  # FlorDB's positional order
        where, iter, override = iter, where, override
    where = where if where is not None else where_clause
    iter = iter if iter is not None else narrow_iters
    override = override if override is not None else overrides
    if _replay is not None:
        return None  # a script replayed by `flor replay` does not start replays itself
    if _flor.active():
        commit()  # the run in progress is replayable only once committed
    names = _apply_names(apply_vars)
    cmd = _replay_command(names, where, iter, override, jobs, executor, address)
    status, plan, errors = _relay(cmd + ["--dry-run"], hide="Dry run:")
    if status != 0:
        raise _replay_failure(status, errors)
    plan = [line for line in plan if not line.startswith("Dry run:")]
    if "Nothing to replay." not in plan:
        if not yes:
            answer = input("Continue replay [y/N]? ")
            if answer.strip().lower() not in ("y", "yes"):
                print("Not replaying.")
                return None
        status, _, errors = _relay(cmd + ["--yes"], skip=plan)
        if status != 0:
            raise _replay_failure(status, errors)
    return dataframe(*_result_names(names, plan, where))


def _result_names(names, plan, where):
    """The columns of flor.replay's result, as FlorDB gives them: the applied
    names (`@LINENO` as the name the plan resolved it to), then the logged
    names the `where` predicate mentions."""
    header = "Replay plan for "
    if plan and plan[0].startswith(header):
        names = [n.strip() for n in plan[0][len(header):].split(",") if n.strip()]
    names = [n for n in names if not n.startswith("@")]
    if where:
        import re

        bare = re.sub(r"'(?:[^']|'')*'", " ", str(where))  # a string literal names nothing
        mentioned = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare)
        logged = set(query("SELECT DISTINCT value_name FROM logs", as_="frame").values()[0] or [])
        names += [n for n in dict.fromkeys(mentioned) if n in logged and n not in names]
    return names


_retired_said = set()


def restore(*args, **kwargs):
    """Retired, as in FlorDB 4: does nothing and says so once per process.
    A replay restores the objects under ``flor.checkpointing`` itself."""
    if "restore" not in _retired_said:
        _retired_said.add("restore")
        sys.stderr.write(
            "flor: flor.restore(...) does nothing: a replay restores the objects given to "
            "flor.checkpointing itself. The call can be removed.\n"
        )


class _Record(tuple):
    """One record of ``flor.output_buffer``: FlorDB's fields ``projid``,
    ``tstamp``, ``filename``, ``ctx`` (``None`` at run level, else a list
    of ``(loop, iteration)`` from the outermost loop in), ``name``,
    ``value``, ``type`` (VALUE_TYPE_LOG, VALUE_TYPE_IO, VALUE_TYPE_TIME)."""

    __slots__ = ()
    _fields = ("projid", "tstamp", "filename", "ctx", "name", "value", "type")

    def __getattr__(self, field):
        try:
            return self[self._fields.index(field)]
        except ValueError:
            raise AttributeError(field) from None

    def __repr__(self):
        return "Record(" + ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self)) + ")"


class _OutputBuffer:
    """``flor.output_buffer``: the records of the active run not yet
    committed (FlorDB's list of records not yet written), read back from
    the run's record file on every use; empty when no run is active (in a
    notebook, after each cell that logged). Read-only: flor writes records
    as they are made, so there is nothing to append to or to clear."""

    __slots__ = ()

    def _records(self):
        return [_Record(r) for r in _flor.pending()]

    def __len__(self):
        return len(_flor.pending())

    def __bool__(self):
        return len(self) > 0

    def __iter__(self):
        return iter(self._records())

    def __getitem__(self, index):
        return self._records()[index]

    def __repr__(self):
        return repr(self._records())


output_buffer = _OutputBuffer()

# FlorDB's `logs.value_type` codes, as `output_buffer` records carry them.
VALUE_TYPE_LOG = 1
VALUE_TYPE_IO = 2
VALUE_TYPE_TIME = 3


def _repo_root():
    """The git repository holding the script (or the working directory)."""
    here = _cwd()
    probe = here
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            raise FlorError(f"{here} is not inside a git repository (flor keeps its runs in one)")
        probe = parent


def _db_path(flordir):
    store = "sqlite"
    try:
        import tomllib

        with open(os.path.join(flordir, "config.toml"), "rb") as f:
            store = tomllib.load(f).get("store", "sqlite")
    except (ImportError, OSError, ValueError):
        pass
    return os.path.join(flordir, "flor.duckdb" if store == "duckdb" else "flor.db")


_CONSTANTS = {
    "CURRDIR": lambda: _repo_root(),
    "PROJID": lambda: os.path.basename(_repo_root()),
    "FLORDIR": lambda: os.path.join(_repo_root(), ".flor"),
    # Live (not yet committed) record files; committed runs live in git.
    "RUNS_DIR": lambda: os.path.join(_repo_root(), ".flor", "runs"),
    "OBJSTORE_DIR": lambda: os.path.join(_repo_root(), ".flor", "objects"),
    "DB_PATH": lambda: _db_path(os.path.join(_repo_root(), ".flor")),
    "SCRIPTNAME": lambda: os.path.basename(sys.argv[0]) if sys.argv else "",
}


def __getattr__(name):
    """FlorDB's module constants, computed when first read (FlorDB computes
    them at import, and its import fails outside a git repository)."""
    make = _CONSTANTS.get(name)
    if make is None:
        raise AttributeError(f"module 'flordb' has no attribute {name!r}")
    return make()


def io(channel=None, *, where=None, iter=None, as_="pandas"):
    """Captured ``print`` and ``logging`` lines: one row per line with
    ``projid``, ``tstamp``, ``filename``, the loop columns of the position
    where it was written (iteration indices, as in ``dataframe``), then
    ``channel`` and ``line``; runs oldest first, lines in the order written.

    ``channel``: ``"io::stdout"``, ``"io::stderr"``, ``"io::log"`` (every
    logging level) or one level such as ``"io::log::error"``; a name without
    ``io::`` means the one with it (``"stdout"``). ``where`` and ``iter``
    select runs and loop iterations as for ``dataframe``; ``as_`` as for
    ``dataframe``. The ``flor io`` command shows the same."""
    frame = _flor.io(
        _cwd(),
        None if channel is None else str(channel),
        None if where is None else str(where),
        _iters(iter),
    )
    out = _convert(frame, as_)
    if as_ in (None, "pandas") and hasattr(out, "columns"):
        # Loop columns hold iteration indices; a line outside a loop has
        # none: pandas' nullable integers keep them integers (as FlorDB's).
        for col in out.columns[3:-2]:
            if out[col].dtype.kind == "f":
                out[col] = out[col].astype("Int64")
    return out


def _note_read():
    """The script reads flor's records: a run started only by captured output
    is not a run (see "Automatic capture of output" below)."""
    if _flor.capture_settings()[0]:
        _flor.capture_release()


def _excepthook(kind, value, tb):
    global _failed
    _failed = True
    _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook
sys.excepthook = _excepthook


def _exit(status=None):
    """``sys.exit``, noting a failing status: atexit cannot see the exit
    code, and a script that ends with ``sys.exit(3)`` did not finish well."""
    global _failed
    if status is not None and status != 0:
        _failed = True
    _previous_exit(status)


_previous_exit = sys.exit
sys.exit = _exit


def _commit_at_exit():
    """The run ends with the interpreter; output printed after that (by
    other exit handlers) belongs to no run."""
    try:
        commit()
    finally:
        _flor.capture_off()


atexit.register(_commit_at_exit)

# IPython / Jupyter: commit after each cell that logged. A running IPython
# has already imported its module; a script does not pay for importing it.
_ipython = sys.modules.get("IPython")
_ip = _ipython.get_ipython() if _ipython is not None and hasattr(_ipython, "get_ipython") else None
if _ip is not None:
    _ip.events.register("post_run_cell", lambda *_: commit())

# `python train.py --replay_flor --apply NAME [--iter LOOP=SPEC]...
# [--override KEY=VALUE]...`: FlorDB replays the script's latest run in this
# process; here `flor replay` does, in its own copy of the run's code version
# (the command is printed first), and the script ends with its status.


def _script_replay_command(argv, script, latest):
    """The `flor replay` command for FlorDB's script-side replay flags in
    ``argv``, restricted to the run ``latest`` (its tstamp)."""
    apply, rest, i = None, [], 0
    while i < len(argv):
        tok = argv[i]
        key, eq, inline = tok.partition("=")
        if key in ("--apply", "--iter", "--override") and not eq and i + 1 < len(argv):
            inline, i = argv[i + 1], i + 1
        if key == "--apply":
            apply = inline
        elif key in ("--iter", "--override"):
            rest += [key, inline]
        elif key == "--kwargs":
            raise FlorError(
                "--kwargs cannot be combined with --replay_flor: a replay uses each run's recorded args "
                "(use --override KEY=VALUE for environment-shaped ones such as device)"
            )
        i += 1
    cmd = ["flor", "replay", "--script", script]
    if apply is None:
        raise FlorError(
            f"--replay_flor needs --apply NAME[,NAME] (flor replays only the values you name); run "
            f"`flor replay --script {script} --apply NAME --where \"tstamp = '{latest}'\" --force`"
        )
    quoted = "'" + latest.replace("'", "''") + "'"
    return cmd + ["--apply", apply, "--where", f"tstamp = {quoted}", "--force", "--yes"] + rest


def _loop_names(path):
    """The names of the `flor.loop("NAME", ...)` calls of the script at
    `path`, in source order."""
    import ast

    names = []
    try:
        with open(path) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return names
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "loop"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value not in names
        ):
            names.append(node.args[0].value)
    return names


def _last_iteration_defaults(cmd, path):
    """FlorDB's script-side replay logs only the last iteration of every
    loop the command line does not select: `--iter NAME=last` for those."""
    given = {cmd[i + 1].split("=", 1)[0] for i, tok in enumerate(cmd[:-1]) if tok == "--iter"}
    missing = [n for n in _loop_names(path) if n not in given]
    return [arg for n in missing for arg in ("--iter", f"{n}=last")]


def _replay_flor(argv):
    import shlex
    import subprocess

    path = _script_path()
    root = _repo_root()
    script = os.path.relpath(path, root)
    runs = query("SELECT tstamp, filename FROM runs ORDER BY tstamp", as_="frame")
    rows = [r for r in zip(*runs.values()) if r[1] == script] if runs.columns else []
    if not rows:
        raise FlorError(f"--replay_flor: {script} has no recorded run to replay")
    cmd = _script_replay_command(argv, script, rows[-1][0])
    cmd[0] = _flor_command()
    cmd += _last_iteration_defaults(cmd, path)
    shown = " ".join(f'"{a}"' if a.startswith("tstamp = ") else shlex.quote(a) for a in ["flor"] + cmd[1:])
    print(f"flor: --replay_flor replays the latest run of {script} ({rows[-1][0]}) through flor replay:")
    print("  " + shown, flush=True)
    return subprocess.call(cmd, cwd=root)


if "--replay_flor" in sys.argv[1:] and not os.environ.get(_REPLAY_ENV) and _script_path():
    try:
        _status = _replay_flor(sys.argv[1:])
    except FlorError as _e:
        sys.stderr.write(f"flor: {_e}\n")
        _status = 2
    sys.stdout.flush()
    os._exit(_status)


# torch.save / numpy.save and setup loads (see _files): wrapped now when
# imported, else when the script imports them.
_files.install()

# A replay worker (started by `flor replay` with FLOR_REPLAY naming its
# segment spec) replays from its first line: every entry point -- `loop`,
# `iteration`, `checkpointing`, `log`, `arg`, or none before the loop --
# must already see the spec, so the replay starts at import rather than at
# the first flor call. The variables are then removed from the environment,
# so a process this one starts (a data-loader worker that imports flordb)
# does not take itself for the same segment.
if os.environ.get(_REPLAY_ENV):
    _start_replay(os.environ[_REPLAY_ENV])
    for _var in (_REPLAY_ENV, "FLOR_REPLAY_OUTPUT", "FLOR_REPLAY_OBJECTS", _PROGRESS_ENV):
        os.environ.pop(_var, None)


# --- Automatic capture of output ----------------------------------------------
#
# A script that imports flordb is a recorded run whose printed and logged
# lines are kept (Output records named io::stdout, io::stderr,
# io::log::<level>, one per line, at the loop position where each was
# written). The per-write work is in Rust (flor-python/src/capture.rs): the
# `write` attribute of the sys.stdout and sys.stderr objects is set to a hook
# that writes first, then captures; the streams stay the objects they were.
# The first captured line starts the run when nothing else has. Not captured:
# an IPython session (it swaps streams per cell; flor.log is the interactive
# path), `python -c` and the bare REPL (an ad-hoc query is not a run), a
# replay worker (a replay records only the applied names), FLOR_CAPTURE=0.

_CAPTURE_ENV = "FLOR_CAPTURE"
_capture_user = {}  # settings given to flor.set_capture (they win over .flor/config.toml)
_capture_configured = False
_capture_proxies = []  # (name, proxy, stream) where a stream refused the hook
_logging_handle = None  # logging.Logger.handle before capture wrapped it


@contextmanager
def _muted():
    """flor's own writes on this thread: shown, not captured."""
    prev = _flor.capture_mute(True)
    try:
        yield
    finally:
        _flor.capture_mute(prev)


def set_capture(enabled=None, *, max_line=None, max_records=None, extract=None):
    """Tunes automatic capture of printed and logged output.

    ``enabled``: record output at all (``FLOR_CAPTURE=0`` in the environment
    turns capture off for the process, whatever this says);
    ``max_line``: characters kept of a line (longer ones are cut, with a
    marker); ``max_records``: lines kept per run (a notice on stderr says
    when the limit is reached). Settings not given keep their value, from
    ``[capture]`` in ``.flor/config.toml`` or the defaults (on, 4096, 10000).
    ``extract`` is accepted for FlorDB scripts and does nothing: metrics are
    extracted from recorded output with ``flor capture --extract``."""
    line = None if max_line is None else operator.index(max_line)
    records = None if max_records is None else operator.index(max_records)
    _flor.capture_set(None if enabled is None else bool(enabled), line, records)
    for key, value in (("enabled", enabled), ("max_line", line), ("max_records", records)):
        if value is not None:
            _capture_user[key] = value
    if extract is not None:
        with _muted():
            sys.stderr.write(
                "flor: set_capture(extract=...) has no effect: metrics are extracted from output already "
                "recorded, with `flor capture --extract` (`flor capture --preview` shows what it would add)\n"
            )


def _capture_configure():
    """Applies ``[capture]`` of .flor/config.toml (once per process; what
    ``flor.set_capture`` set wins)."""
    global _capture_configured
    if _capture_configured or not _flor.capture_settings()[0]:
        return
    _capture_configured = True
    enabled, max_line, max_records = _flor.capture_config(_cwd())
    _flor.capture_set(
        None if "enabled" in _capture_user else enabled,
        None if "max_line" in _capture_user else max_line,
        None if "max_records" in _capture_user else max_records,
    )


def _capture_begin():
    """Called by the capture hook for a line written while no run is active:
    starts the run (unless capture is off); whether one is active now. Never
    raises: a line of output must not fail."""
    try:
        _capture_configure()
        if not _flor.capture_settings()[1]:
            return False
        _get()
        return _flor.active()
    except Exception as e:  # reported once: the hook stops trying for this run
        sys.stderr.write(f"flor: this script's output is shown but not recorded: {e}\n")
        return False


class _CaptureProxy:
    """Stands in for a standard stream that refuses a ``write`` attribute:
    writes to it, then captures."""

    def __init__(self, stream, which):
        self._flor_stream = stream
        self._flor_which = which

    def write(self, text):
        n = self._flor_stream.write(text)
        try:
            _flor.capture_text(self._flor_which, text)
        except Exception:
            pass  # capture never breaks the user's output
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._flor_stream, name)


class _RawStream:
    """A hooked stream whose writes are not captured (flor's progress bar)."""

    def __init__(self, stream, write):
        self._stream = stream
        self.write = write

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _raw_stderr():
    stream = sys.stderr
    if isinstance(stream, _CaptureProxy):
        return stream._flor_stream
    write = _flor.capture_own_write(stream) if stream is not None else None
    return stream if write is None else _RawStream(stream, write)


def _capture_handle(logger, record):
    """``logging.Logger.handle``, wrapped: the record is captured once, from
    here (with its level and logger name), and the streams are muted while
    its handlers run (a StreamHandler's line is the same record)."""
    if _flor.capture_mute(True):  # muted already (flor's own dispatch)
        return _logging_handle(logger, record)
    try:
        try:
            message = str(record.getMessage())
            if record.name and record.name != "root":
                message = f"{record.name}: {message}"
            _flor.capture_log(str(record.levelname), message.splitlines())
        except Exception:
            pass  # the handlers report a bad record; capture stays out of the way
        return _logging_handle(logger, record)
    finally:
        _flor.capture_mute(False)


def _capture_wanted():
    if _ip is not None or _replay is not None:
        return False
    if not sys.argv or sys.argv[0] in ("", "-c", "-"):
        return False
    return os.environ.get(_CAPTURE_ENV, "").strip().lower() not in ("0", "false", "no")


def _capture_install():
    global _logging_handle
    import logging

    for name, which in (("stdout", 0), ("stderr", 1)):
        stream = getattr(sys, name, None)
        if stream is None:
            continue
        try:
            hooked = _flor.capture_hook(stream, which)
        except Exception:
            hooked = False
        if not hooked:
            proxy = _CaptureProxy(stream, which)
            setattr(sys, name, proxy)
            _capture_proxies.append((name, proxy, stream))
            _flor.capture_on()
    _logging_handle = logging.Logger.handle
    logging.Logger.handle = _capture_handle


if _capture_wanted():
    _capture_install()
