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
import os
import pickle
import random
import sys
from contextlib import contextmanager

from . import _flor
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
    "FlorError",
]

_session = None
_failed = False
_layers = {}  # loop name -> (iteration index, value text or None), for printing
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
    """The current run, started on first use (FlorDB's deferred init)."""
    global _session
    if _session is None:
        path = _script_path()
        filename = path if path else "interactive"
        argv = list(sys.argv) if sys.argv and sys.argv[0] else [filename]
        _session = _flor.start(argv, filename, sys.executable, _cwd())
        if _ckpt_interval is not None:
            _session.set_checkpoint_interval(_ckpt_interval)
    return _session


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
    s = _get()
    if default is None:
        if name not in _kwargs_names():
            raise FlorError(f"flor.arg({name!r}) has no default and the command line gives no --kwargs {name}=...")
        return s.arg(name, "")
    return s.arg(name, default)


_prefix = ""  # "epoch: 0, step: 3, ": the printed loop position, kept current
_bars = 0  # open tqdm progress bars (log lines then go through tqdm.write)


_outer_prefixes = []  # the printed position of each enclosing loop level


def _set_layer(name, index, text):
    global _prefix
    if name not in _layers:
        _outer_prefixes.append(_prefix)
    _layers[name] = (index, text)
    _prefix = f"{_outer_prefixes[-1]}{name}: {text if text is not None else index}, "


def _pop_layer(name):
    global _prefix
    if name in _layers:
        del _layers[name]
        _prefix = _outer_prefixes.pop() if _outer_prefixes else ""


def log(name, value):
    """Records ``value`` under ``name`` at the current loop position, prints
    it the way FlorDB does (``epoch: 0, step: 3, loss: 0.25``), and returns
    it."""
    (_session or _get()).log(name, value)
    if _bars:
        _tqdm.write(f"{_prefix}{name}: {value}")
    else:
        sys.stdout.write(f"{_prefix}{name}: {value}\n")
    return value


def _value_text(item):
    if isinstance(item, (bool, int, float, str)):
        return str(item)
    return None


try:  # a progress bar for the outermost loop, when tqdm is there
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


def _progress(iterable, name, outer):
    global _bars
    if outer and _tqdm is not None and sys.stdout.isatty():
        _bars += 1
        return _tqdm(iterable, desc=name)
    return iterable


def loop(name, iterable):
    """Iterates ``iterable`` as the loop ``name`` (nestable). At the end of
    every outermost iteration the objects under ``flor.checkpointing`` are
    checkpointed and the records are written to disk."""
    global _bars
    s = _get()
    s.loop_begin(name)
    outer = s.depth() == 1
    bars = _bars
    try:
        if outer:
            for i, item in enumerate(_progress(iterable, name, outer)):
                text = _value_text(item)
                s.iteration_begin(text)
                _set_layer(name, i, text)
                yield item
                _checkpoint_all(s)
                s.iteration_end()
        else:
            # Inner loops: one call into the engine per step (the previous
            # iteration ends where the next begins; loop_end ends the last).
            begin = s.iteration_begin
            for i, item in enumerate(iterable):
                text = _value_text(item)
                begin(text)
                begin = s.next_iteration
                _set_layer(name, i, text)
                yield item
    finally:
        _bars = bars
        _pop_layer(name)
        s.loop_end()


@contextmanager
def iteration(name, idx=None, value=None):
    """One iteration of loop ``name`` with an explicit index, for loops
    flor cannot wrap: ``with flor.iteration("epoch", i, None): ...``."""
    s = _get()
    s.loop_begin(name)
    outer = s.depth() == 1
    text = None if value is None else str(value)
    index = None if idx is None else int(idx)
    i = s.iteration_begin(text, index)
    _set_layer(name, i, text)
    try:
        yield
        if outer:
            _checkpoint_all(s)
    finally:
        _pop_layer(name)
        s.loop_end()


@contextmanager
def checkpointing(**objects):
    """Checkpoints ``objects`` at the end of every outermost iteration
    (objects with ``state_dict`` through it; others with pickle), with the
    RNG states of ``random``, numpy and torch."""
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
    if _session is not None:
        _session.set_checkpoint_interval(_ckpt_interval)


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


def _save(s, name, obj):
    w = s.object_writer()
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
            pickle.dump(obj, w, protocol=pickle.HIGHEST_PROTOCOL)
            fmt = "pickle"
        digest, size = w.finish()
    except Exception as e:
        w.abort()
        raise FlorError(f"cannot checkpoint {name!r} ({type(obj).__name__}): {e}") from e
    s.record_checkpoint(name, fmt, digest, size)


def _checkpoint_all(s):
    if not _checkpoints or not s.checkpoint_due():
        return
    for name, obj in _checkpoints:
        _save(s, name, obj)
    _save(s, "__rng__", _rng_state())


def _load_bytes(data, fmt):
    if fmt == "torch.state_dict":
        import io

        import torch

        return torch.load(io.BytesIO(data), weights_only=False)
    return pickle.loads(data)


def _restore(obj, state, fmt):
    """Puts ``state`` into ``obj`` in place, so references stay valid."""
    if fmt.endswith("state_dict"):
        obj.load_state_dict(state)
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
    return _restore(into, state, c["format"]) if into is not None else state


def commit():
    """Ends the current run (records published to git and the query
    database); later logs start a new run."""
    global _session
    if _session is not None:
        s, _session = _session, None
        s.finish(_failed)


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


def _frame(columns, values):
    try:
        import pandas as pd
    except ImportError:
        return [dict(zip(columns, row)) for row in zip(*values)] if columns else []
    return pd.DataFrame({c: v for c, v in zip(columns, values)}, columns=columns)


def dataframe(*names):
    """The pivot of logged values: one row per run and loop position, one
    column per name (a pandas DataFrame when pandas is installed, else a list
    of dicts)."""
    return _frame(*_flor.dataframe(_cwd(), [str(n) for n in names]))


def query(sql):
    """A read-only SQL query over the views runs, logs, loops, timings,
    outputs, checkpoints."""
    return _frame(*_flor.query(_cwd(), str(sql)))


def _excepthook(kind, value, tb):
    global _failed
    _failed = True
    _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook
sys.excepthook = _excepthook
atexit.register(commit)

try:  # IPython / Jupyter: commit after each cell that logged
    from IPython import get_ipython

    _ip = get_ipython()
    if _ip is not None:
        _ip.events.register("post_run_cell", lambda *_: commit())
except ImportError:
    pass
