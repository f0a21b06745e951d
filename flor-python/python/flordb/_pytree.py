"""The ``flor.pytree`` checkpoint format: JAX and flax state laid out so
that flor (its JAX plugin, ``plugins/jax``) sees every array, instead of an
opaque pickle. Used by ``flor.checkpointing`` when jax is imported and an
object is a pytree whose leaves are all arrays or Python scalars, at least
one of them an array; restored bit for bit by ``flor.load_checkpoint`` and
by replays.

Layout (every integer little-endian)::

    0       8      magic  b"FLORTREE"
    8       16     u64 H: the header's length in bytes
    16      16+H   header: UTF-8 JSON, padded with spaces so that 16+H is
                   a multiple of 64
    16+H    ...    the structure (a pickle; where: the header's "structure")
    ...            the leaves' bytes, each starting at a multiple of 64,
                   zero bytes between; the object ends with the last leaf

The header (version 1)::

    {"format": "flor.pytree", "version": 1,
     "structure": {"offset": 16+H, "length": n, "encoding": "pickle"},
     "leaves": [{"path": "params/Dense_0/kernel", "kind": "jax",
                 "dtype": "f32", "numpy": "<f4", "shape": [64, 10],
                 "offset": 4096, "length": 2560}, ...]}

Per leaf, in flattening order (its index is its number in the structure):

- ``path``: its pytree path, the keys ``/``-joined (dict keys as ``str``,
  sequence indices, attribute names of registered nodes).
- ``kind``: ``jax`` (a ``jax.Array``; ``"weak": true`` when weakly typed),
  ``key`` (a typed PRNG key array from ``jax.random.key``: its bytes are
  its key data, ``jax.random.key_data``, and ``impl`` names the
  implementation, ``threefry2x32``; legacy ``uint32`` keys are plain
  ``jax`` arrays), ``numpy`` (an ``ndarray``), ``npscalar`` (a numpy
  scalar), ``int``, ``float``, ``bool`` (Python scalars: ``i64``, ``f64``,
  one byte; an int outside ``i64`` has dtype ``pyint``, its bytes the
  shortest little-endian two's complement).
- ``dtype``: flor's element type name (``bool``, ``u8`` ... ``i64``,
  ``f16``, ``bf16``, ``f32``, ``f64``, ``c64``, ``c128``, ``f8_e4m3``,
  ``f8_e5m2``), or numpy's name for any other (``int4``,
  ``float8_e4m3fnuz``), whose statistics flor does not compute.
- ``numpy``: the exact numpy dtype to restore: ``dtype.str`` for numpy's
  own types (``<f4``, ``>i8``, ``|b1``), the name for ml_dtypes' types
  (``bfloat16``). The bytes are always little-endian, C order: a
  big-endian array's are swapped on write and back on read.
- ``shape``, ``offset`` (from the object's start), ``length`` (bytes).

The structure is the pytree with every leaf replaced by its index (an
``int``), pickled: containers and their static data only, never arrays.
Plain dicts keep their insertion order; every other node (lists, tuples,
namedtuples, ``None``, flax and optax nodes) is taken apart and rebuilt by
``jax.tree_util``. Jax arrays come back on the default device.
"""

import json
import pickle
import struct
import sys

MAGIC = b"FLORTREE"
FORMAT = "flor.pytree"
VERSION = 1
ALIGN = 64

# numpy's dtype names -> flor's (the WIT's) element type names.
_FLOR_DTYPES = {
    "bool": "bool",
    "uint8": "u8",
    "int8": "i8",
    "uint16": "u16",
    "int16": "i16",
    "uint32": "u32",
    "int32": "i32",
    "uint64": "u64",
    "int64": "i64",
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
    "complex64": "c64",
    "complex128": "c128",
    "float8_e4m3fn": "f8_e4m3",
    "float8_e5m2": "f8_e5m2",
}

_I64 = (-(1 << 63), (1 << 63) - 1)


class FormatError(ValueError):
    """A ``flor.pytree`` object that cannot be read (the message says where)."""


def _align(n):
    return -(-n // ALIGN) * ALIGN


def _dtype_ok(dt):
    """Plain element types only: numpy's numbers and ml_dtypes' types."""
    if dt.fields is not None or dt.hasobject or dt.subdtype is not None:
        return False
    return dt.kind in "biufc" or dt.type.__module__ == "ml_dtypes"


def _numpy_name(dt):
    return dt.str if dt.type.__module__ == "numpy" else dt.name


def _np_dtype(name):
    import numpy as np

    if name[:1] in "<>|=":
        return np.dtype(name)
    try:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    except (ImportError, AttributeError, TypeError):
        return np.dtype(name)


def _key_name(k):
    """One step of a pytree path as text (jax.tree_util's key entries)."""
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


class _Leaf:
    """A leaf to write: what it is and how to get its bytes."""

    __slots__ = ("meta", "value")

    def __init__(self, meta, value):
        self.meta = meta  # the header entry, less offset
        self.value = value  # a C-contiguous little-endian ndarray, or bytes


def _array_leaf(path, kind, arr, extra):
    import numpy as np

    dt = arr.dtype
    if not _dtype_ok(dt):
        return None
    meta = {"path": path, "kind": kind, "dtype": _FLOR_DTYPES.get(dt.name, dt.name), "numpy": _numpy_name(dt)}
    meta["shape"] = [int(d) for d in arr.shape]
    meta.update(extra)
    meta["length"] = int(arr.size) * dt.itemsize
    return _Leaf(meta, arr)


def _scalar_leaf(path, x):
    if type(x) is bool:
        return _Leaf({"path": path, "kind": "bool", "dtype": "bool", "shape": [], "length": 1}, bytes([x]))
    if type(x) is float:
        data = struct.pack("<d", x)
        return _Leaf({"path": path, "kind": "float", "dtype": "f64", "shape": [], "length": 8}, data)
    if _I64[0] <= x <= _I64[1]:
        return _Leaf({"path": path, "kind": "int", "dtype": "i64", "shape": [], "length": 8}, struct.pack("<q", x))
    data = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
    return _Leaf({"path": path, "kind": "int", "dtype": "pyint", "shape": [], "length": len(data)}, data)


def _leaf(path, x):
    """The leaf ``x`` at ``path``, or None when it is not one this format keeps."""
    if type(x) in (bool, int, float):
        return _scalar_leaf(path, x)
    jax = sys.modules.get("jax")
    np = sys.modules.get("numpy")
    if np is None:
        return None
    if jax is not None and isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = str(jax.random.key_impl(x))
            return _array_leaf(path, "key", np.asarray(jax.random.key_data(x)), {"impl": impl})
        extra = {"weak": True} if getattr(x, "weak_type", False) else {}
        return _array_leaf(path, "jax", np.asarray(x), extra)
    if type(x) is np.ndarray:
        return _array_leaf(path, "numpy", x, {})
    if isinstance(x, np.generic):
        return _array_leaf(path, "npscalar", np.asarray(x), {})
    return None


class _NotATree(Exception):
    pass


def _walk(x, path, leaves):
    """The skeleton of ``x`` (leaves replaced by their index into ``leaves``,
    which it fills), or _NotATree."""
    import jax.tree_util as jtu

    if type(x) is dict:  # jax would sort the keys; keep the user's order
        return {k: _walk(v, path + (str(k),), leaves) for k, v in x.items()}
    kids, treedef = jtu.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if len(kids) == 1 and kids[0][0] == ():  # x is a leaf
        leaf = _leaf("/".join(path), x)
        if leaf is None:
            raise _NotATree
        leaves.append(leaf)
        return len(leaves) - 1
    return jtu.tree_unflatten(treedef, [_walk(c, path + (_key_name(k[-1]),), leaves) for k, c in kids])


def plan(obj):
    """``(structure pickle, leaves)`` when ``obj`` is a pytree this format
    keeps (every leaf an array or a Python scalar, at least one array), else
    None. Reads no array's bytes."""
    if "jax" not in sys.modules:
        return None
    leaves = []
    try:
        skeleton = _walk(obj, (), leaves)
    except (_NotATree, TypeError, ValueError, RecursionError):
        return None
    if not any(leaf.meta["kind"] not in ("int", "float", "bool") for leaf in leaves):
        return None
    try:
        structure = pickle.dumps(skeleton, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # static data pickle cannot take: the whole object goes to pickle
        return None
    return structure, leaves


def _header(structure, leaves, h):
    """The header text when it is ``h`` bytes long (offsets depend on it)."""
    at = 16 + h
    entries = []
    s = {"offset": at, "length": len(structure), "encoding": "pickle"}
    at += len(structure)
    for leaf in leaves:
        at = _align(at)
        entries.append(dict(leaf.meta, offset=at))
        at += leaf.meta["length"]
    head = {"format": FORMAT, "version": VERSION, "structure": s, "leaves": entries}
    return json.dumps(head, separators=(",", ":")).encode()


def _bytes_view(arr):
    """The array's elements as little-endian C-order bytes (a view where it can)."""
    import numpy as np

    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def write(planned, w):
    """Writes the object ``plan`` described to ``w`` (a file-like writer),
    leaf by leaf: no copy of the whole state is made."""
    structure, leaves = planned
    h = 0
    while True:  # offsets grow with the header; a few rounds settle it
        text = _header(structure, leaves, h)
        need = _align(16 + len(text)) - 16
        if need == h:
            break
        h = need
    w.write(MAGIC + struct.pack("<Q", h) + text + b" " * (h - len(text)))
    at = 16 + h + len(structure)
    w.write(structure)
    for leaf in leaves:
        pad = _align(at) - at
        if pad:
            w.write(bytes(pad))
        data = leaf.value if isinstance(leaf.value, bytes) else _bytes_view(leaf.value)
        w.write(data)
        at += pad + leaf.meta["length"]


# --- Reading -----------------------------------------------------------------


def _read_header(data):
    if len(data) < 16 or bytes(data[:8]) != MAGIC:
        raise FormatError("not a flor.pytree object (no FLORTREE magic)")
    (h,) = struct.unpack_from("<Q", data, 8)
    if 16 + h > len(data):
        raise FormatError(f"byte 8: a {h}-byte header runs past the end of the {len(data)}-byte object")
    try:
        head = json.loads(bytes(data[16 : 16 + h]))
    except ValueError as e:
        raise FormatError(f"byte 16: the header is not JSON: {e}") from None
    if head.get("format") != FORMAT or not isinstance(head.get("version"), int):
        raise FormatError("byte 16: the header does not name the flor.pytree format and its version")
    if head["version"] > VERSION:
        raise FormatError(
            f"flor.pytree version {head['version']} was written by a newer flordb (this one reads {VERSION})"
        )
    return head


def _span(data, meta, what):
    off, n = meta["offset"], meta["length"]
    if not (isinstance(off, int) and isinstance(n, int) and 0 <= off and 0 <= n and off + n <= len(data)):
        raise FormatError(f"{what}: range {off}+{n} is not inside the {len(data)}-byte object")
    return off, n


def _read_scalar(kind, dtype, raw):
    if kind == "bool":
        return raw != b"\x00"
    if kind == "float":
        return struct.unpack("<d", raw)[0]
    if dtype == "pyint":
        return int.from_bytes(raw, "little", signed=True)
    return struct.unpack("<q", raw)[0]


def _to_jax(arr, meta):
    import jax
    import jax.numpy as jnp

    out = jnp.asarray(arr)
    if out.dtype != arr.dtype:  # a 64-bit array while jax_enable_x64 is off
        raise FormatError(
            f"leaf {meta['path']!r} is a {arr.dtype} jax array; this process's jax makes it {out.dtype} "
            "(enable jax_enable_x64 to restore it exactly)"
        )
    if meta.get("weak"):
        try:
            from jax._src.lax.lax import _convert_element_type

            out = _convert_element_type(out, out.dtype, weak_type=True)
        except (ImportError, TypeError):  # pragma: no cover - depends on the jax version
            pass
    return out


def _read_leaf(data, meta):
    import numpy as np

    kind = meta.get("kind")
    what = f"leaf {meta.get('path')!r}"
    off, n = _span(data, meta, what)
    if kind in ("int", "float", "bool"):
        return _read_scalar(kind, meta.get("dtype"), bytes(data[off : off + n]))
    dt = _np_dtype(meta["numpy"])
    stored = dt.newbyteorder("<") if dt.byteorder == ">" else dt
    shape = tuple(meta["shape"])
    count = 1
    for d in shape:
        count *= d
    if count * dt.itemsize != n:
        raise FormatError(f"{what}: {meta['numpy']} × {list(shape)} is not {n} bytes")
    arr = np.frombuffer(data, dtype=stored, count=count, offset=off).reshape(shape)
    arr = arr.astype(dt) if stored != dt else arr.copy()
    if kind == "numpy":
        return arr
    if kind == "npscalar":
        return arr[()]
    if kind == "jax":
        return _to_jax(arr, meta)
    if kind == "key":
        import jax

        return jax.random.wrap_key_data(_to_jax(arr, meta), impl=meta["impl"])
    raise FormatError(f"{what}: unknown leaf kind {kind!r}")


def _fill(x, leaves):
    import jax.tree_util as jtu

    if type(x) is dict:
        return {k: _fill(v, leaves) for k, v in x.items()}
    if type(x) is int:
        if not 0 <= x < len(leaves):
            raise FormatError(f"the structure names leaf {x}; the header has {len(leaves)}")
        return leaves[x]
    kids, treedef = jtu.tree_flatten(x, is_leaf=lambda y: y is not x)
    if len(kids) == 1 and kids[0] is x:
        raise FormatError(f"the structure holds a {type(x).__name__} where a leaf index belongs")
    return jtu.tree_unflatten(treedef, [_fill(c, leaves) for c in kids])


def load(data):
    """The pytree a ``flor.pytree`` object holds (``data``: its bytes)."""
    data = memoryview(data)
    head = _read_header(data)
    try:
        off, n = _span(data, head["structure"], "the structure")
        skeleton = pickle.loads(data[off : off + n])
        leaves = [_read_leaf(data, meta) for meta in head["leaves"]]
    except (KeyError, TypeError) as e:
        raise FormatError(f"the header is missing or mistypes a field: {e!r}") from None
    return _fill(skeleton, leaves)
