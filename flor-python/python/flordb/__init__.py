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

from . import _flor, _pytree
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
    "load_checkpoint",
    "set_capture",
    "FlorError",
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
    return os.path.realpath(path) if path else None


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


def load_checkpoint(tstamp, name=None, into=None):
    """The last checkpoint of run ``tstamp``: object ``name`` (restored in
    place into ``into`` when given), or a dict of all its objects."""
    _note_read()
    cps = _flor.checkpoints(_cwd(), str(tstamp))
    if not cps:
        raise FlorError(f"run {tstamp} has no checkpoints")
    last = {}
    for c in cps:
        last[c["name"]] = c
    if name is None:
        return {n: _load_bytes(_flor.object_bytes(_cwd(), c["digest"]), c["format"]) for n, c in last.items()}
    if name not in last:
        raise FlorError(f"run {tstamp} has no checkpoint named {name!r} (it has: {', '.join(sorted(last))})")
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
