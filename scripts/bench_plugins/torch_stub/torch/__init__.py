"""A stand-in `torch` for the plugin benchmarks (scripts/bench_plugins.sh):
real torch is too heavy for the development machine. `save` writes the
bytes torch.save writes (zip serialization, stored entries, 64-byte aligned
storages), through tests/fixtures/torchsave.py, with numpy arrays standing
for tensors; the rest is what flordb's Python front and the `flordb`
package touch when torch is imported. Nothing here trains or loads."""

import os
import sys

_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "tests", "fixtures")
sys.path.insert(0, os.path.abspath(_FIXTURES))
import torchsave  # noqa: E402

sys.path.pop(0)
# torch >= 2.3 saves uint16/32/64 tensors (a JAX PRNG key's data is uint32)
torchsave.NUMPY_NAMES.update({"<u2": "u16", "<u4": "u32", "<u8": "u64"})


def save(obj, f, *args, **kwargs):
    data, _ = torchsave.save(obj)
    if hasattr(f, "write"):
        f.write(data)
    else:
        with open(f, "wb") as out:
            out.write(data)


def load(f, *args, **kwargs):
    raise NotImplementedError("the benchmark's stand-in torch does not load")


def get_rng_state():
    return 0


def set_rng_state(state):
    pass


class cuda:
    is_available = staticmethod(lambda: False)


class backends:
    class cudnn:
        benchmark = False
