"""Files a script saves and the files it loads in setup.

A forward run keeps every file the script saves with ``torch.save(obj,
path)``, ``numpy.save``, ``numpy.savez`` or ``numpy.savez_compressed`` (a
path, not an open file) in flor's object store, by content, recorded with
its project path at the outer iteration that saved it (``file:<path>``).
A ``torch.load(path)`` or ``numpy.load(path)`` before the first loop -- the
setup, where scripts resume from their own checkpoint -- is recorded with
the digest of the bytes it read (``load:<path>``), the bytes kept when at
most ``[checkpoints] keep_loads_mb`` (or already stored by some run).

A replay answers the same setup loads, in the same order, with the
recorded bytes, so it starts from the state the forward run started from
although the file on disk now holds some later run's state; when it
cannot, it refuses and says why. Loads inside loops are the script's own
business: they read what the replay itself saved (its writes land in its
private folder, never in the user's files). A replay keeps no copies.

The libraries are wrapped only once imported: at ``import flordb`` when
they already are, else by an import hook when the script imports them.
"""

import importlib.abc
import importlib.util
import io
import os
import sys

_WATCH = ("torch", "numpy")
_installed = set()  # library names whose functions are wrapped
_setup_over = False  # a flor loop began: later loads are the script's business
_load_index = 0  # the next recorded setup load a replay answers
_UNRECORDED_ENV = "FLOR_REPLAY_SETUP_LOADS"  # "disk": read unrecorded loads from disk
_pid = os.getpid()  # a forked child (a data-loader worker) keeps nothing


def _flordb():
    return sys.modules["flordb"]


def run_committed():
    """Called by ``flor.commit``: a later run has a setup of its own."""
    global _setup_over
    _setup_over = False


def loop_started():
    """Called by ``flor.loop``/``flor.iteration``: setup is over."""
    global _setup_over
    _setup_over = True
    if len(_installed) < len(_WATCH):
        install_present()


# --- Paths -------------------------------------------------------------------


def _is_path(f):
    return isinstance(f, (str, bytes, os.PathLike))


def _root():
    """The project root as this process sees it (a replay's: the folder its
    exported script lies in, less the script's path), or None."""
    fl = _flordb()
    if fl._replay is not None:
        script = fl._script_path()
        rel = fl._replay["code"]["script"]
        if script is None:
            return None
        parts = [p for p in rel.split("/") if p]
        root = script
        for _ in parts:
            root = os.path.dirname(root)
        return root
    try:
        root = fl._flor.root()
    except fl.FlorError:
        return None
    return os.path.realpath(root) if root else None


def _names(path):
    """(file on disk, project path): the project path is relative to the
    project root, ``/``-separated, or absolute outside the project."""
    on_disk = os.path.realpath(os.path.abspath(os.fsdecode(os.fspath(path))))
    root = _root()
    if root is not None:
        rel = os.path.relpath(on_disk, root)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return on_disk, rel.replace(os.sep, "/")
    return on_disk, on_disk


def _with_suffix(path, suffix):
    """numpy's rule: a path that does not end with ``suffix`` gets it."""
    text = os.fsdecode(os.fspath(path))
    return text if text.endswith(suffix) else text + suffix


# --- Forward: keeping ---------------------------------------------------------


def _recording():
    """Whether this process records a forward run that may keep files
    (starting it if a script has not yet called flor)."""
    fl = _flordb()
    if fl._replay is not None or os.getpid() != _pid:
        return False
    if not fl._flor.active():
        if fl._script_path() is None:
            return False  # a notebook or `python -c` reading files is not a run
        fl._get()
    return True


def _keep(kind, path, fmt):
    try:
        if not _recording():
            return
        on_disk, name = _names(path)
        fl = _flordb()
        fl._flor.keep_file(kind, on_disk, name, fmt)
    except Exception as e:  # keeping must never break training
        what = "saved" if kind == "file" else "loaded"
        sys.stderr.write(f"flor: warning: could not keep the file {os.fsdecode(os.fspath(path))} the script {what}: {e}\n")


# --- Replay: answering setup loads ------------------------------------------


def _refuse(message):
    fl = _flordb()
    run = fl._replay["run"]["tstamp"]
    raise fl.FlorError(f"replay of run {run}: {message}")


def _recorded_load(name, call):
    """The recorded setup load this one answers, or a refusal."""
    global _load_index
    fl = _flordb()
    loads = fl._replay.get("loads") or []
    i = _load_index
    if i < len(loads) and loads[i]["path"] == name:
        _load_index += 1
        return loads[i]
    if os.environ.get(_UNRECORDED_ENV) == "disk":
        return None
    if i < len(loads):
        _refuse(
            f"the script's setup load number {i + 1} is {call}({name!r}), but the forward run's was "
            f"{loads[i]['format']}({loads[i]['path']!r}); a replay starts from the bytes the forward run "
            "loaded and cannot tell what this file held then. Replay with the code's setup as it was, or "
            f"set {_UNRECORDED_ENV}=disk to read the file as it is now"
        )
    have = ", ".join(repr(l["path"]) for l in loads) or "none"
    _refuse(
        f"the script loads {name!r} in setup ({call}), which the forward run did not record (its setup "
        f"loads: {have}; runs recorded before flor kept setup loads have none). The file on disk may "
        "hold another run's state. To replay from the file as it is now, set "
        f"{_UNRECORDED_ENV}=disk"
    )


def _replayed_bytes(load, on_disk, name):
    """The bytes a recorded setup load read: from the object store when
    kept (or stored by another run), else the file on disk when it still
    has the same digest (None: read it as usual), else a refusal."""
    fl = _flordb()
    if load["kept"]:
        return fl._flor.run_object_bytes(load["digest"])
    try:
        # Not kept with this run, but another run may have stored the bytes.
        return fl._flor.run_object_bytes(load["digest"])
    except fl.FlorError:
        pass
    try:
        digest, size = fl._flor.file_digest(on_disk)
    except fl.FlorError:
        digest, size = None, None
    if digest == load["digest"]:
        return None
    now = "is missing" if digest is None else f"now has other contents ({size} bytes)"
    _refuse(
        f"the forward run loaded {name!r} in setup ({load['bytes']} bytes, digest {load['digest'][:12]}...), "
        "larger than [checkpoints] keep_loads_mb allowed keeping, and the file "
        f"{now}. Put the file it loaded back, or raise keep_loads_mb in .flor/config.toml for future "
        "runs"
    )


def _load(orig, call, path, args, kwargs, drop):
    """A setup load through ``orig`` (the library's own), recorded (forward)
    or answered from the record (replay)."""
    fl = _flordb()
    if _setup_over or not _is_path(path) or os.getpid() != _pid:
        return orig(path, *args, **kwargs)
    if fl._replay is None:
        result = orig(path, *args, **kwargs)
        _keep("load", path, call)
        return result
    on_disk, name = _names(path)
    load = _recorded_load(name, call)
    data = None if load is None else _replayed_bytes(load, on_disk, name)
    if data is None:
        return orig(path, *args, **kwargs)
    for k in drop:  # memory-mapping needs a file; the bytes are in memory
        kwargs.pop(k, None)
    return orig(io.BytesIO(data), *args, **kwargs)


# --- The wrappers --------------------------------------------------------------


def _wrap_torch(torch):
    orig_save, orig_load = torch.save, torch.load
    if getattr(orig_save, "__flor_wrapped__", False):
        return

    def save(obj, f, *args, **kwargs):
        result = orig_save(obj, f, *args, **kwargs)
        if _is_path(f):
            _keep("file", f, "torch.save")
        return result

    def load(f, *args, **kwargs):
        return _load(orig_load, "torch.load", f, args, kwargs, ("mmap",))

    for new, old in ((save, orig_save), (load, orig_load)):
        new.__wrapped__ = old
        new.__flor_wrapped__ = True
        new.__name__ = old.__name__
        new.__doc__ = old.__doc__
    torch.save, torch.load = save, load


def _wrap_numpy(np):
    if getattr(np.save, "__flor_wrapped__", False):
        return
    orig_load = np.load

    def saver(orig, suffix, fmt):
        def save(file, *args, **kwargs):
            result = orig(file, *args, **kwargs)
            if _is_path(file):
                _keep("file", _with_suffix(file, suffix), fmt)
            return result

        save.__wrapped__ = orig
        save.__flor_wrapped__ = True
        save.__name__ = orig.__name__
        save.__doc__ = orig.__doc__
        return save

    def load(file, *args, **kwargs):
        return _load(orig_load, "numpy.load", file, args, kwargs, ("mmap_mode",))

    load.__wrapped__ = orig_load
    load.__flor_wrapped__ = True
    load.__name__ = orig_load.__name__
    load.__doc__ = orig_load.__doc__
    np.save = saver(np.save, ".npy", "numpy.save")
    for fname in ("savez", "savez_compressed"):
        if hasattr(np, fname):
            setattr(np, fname, saver(getattr(np, fname), ".npz", f"numpy.{fname}"))
    np.load = load


_WRAP = {"torch": _wrap_torch, "numpy": _wrap_numpy}


def _install(name, module):
    if name in _installed:
        return
    if not callable(getattr(module, "save", None)) or not callable(getattr(module, "load", None)):
        return  # not the library (a stub, a partial import)
    _WRAP[name](module)
    _installed.add(name)


def install_present():
    """Wraps the watched libraries already imported."""
    for name in _WATCH:
        module = sys.modules.get(name)
        if module is not None:
            _install(name, module)


class _Loader(importlib.abc.Loader):
    """Runs a watched library's own loader, then wraps the library."""

    def __init__(self, inner, name):
        self._inner = inner
        self._name = name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        try:
            _install(self._name, module)
        except Exception as e:  # never break the script's import
            sys.stderr.write(f"flor: warning: cannot watch {self._name}'s save/load: {e}\n")

    def __getattr__(self, attr):  # resource readers, get_code, ...
        return getattr(self._inner, attr)


class _Finder(importlib.abc.MetaPathFinder):
    """Notices the import of a watched library."""

    _busy = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCH or fullname in _installed or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _Loader(spec.loader, fullname)
        return spec


def install():
    """Wraps what is imported now and watches for the rest."""
    install_present()
    if len(_installed) < len(_WATCH) and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
