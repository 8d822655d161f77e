"""The peers' Triton kernels under Triton's interpreter, for CPU runs of the peer comparisons.

Test shims, never used by a benchmark: SGLang's and vLLM's launchers are meant for a GPU, and
two small things keep them off the interpreter. ``scalar_masks`` broadcasts a scalar load or
store mask (``mask=row < bs``) to the pointers' shape, as the compiler does on a GPU, where
the interpreter refuses it ("mask has unsupported dtype"). ``sglang_metadata_on_cpu`` loads
SGLang's ``dsa/metadata.py`` with its asserts compiled out: its launchers assert CUDA tensors.
"""
import contextlib
import functools
import types
from pathlib import Path

from .._env import INTERPRET


@contextlib.contextmanager
def scalar_masks():
    """Inside the block the interpreter accepts scalar masks; a no-op off the interpreter."""
    if not INTERPRET:
        yield
        return
    import numpy as np
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    load, store = builder.create_masked_load, builder.create_masked_store

    def broadcast(mask, ptrs):
        data = np.broadcast_to(np.asarray(mask.data).astype(bool), np.shape(ptrs.data)).copy()
        return interpreter.TensorHandle(data, mask.dtype)

    builder.create_masked_load = lambda self, ptrs, mask, other, *a: load(
        self, ptrs, broadcast(mask, ptrs), other, *a)
    builder.create_masked_store = lambda self, ptrs, value, mask, *a: store(
        self, ptrs, value, broadcast(mask, ptrs), *a)
    try:
        yield
    finally:
        builder.create_masked_load, builder.create_masked_store = load, store


@functools.cache
def _module_without_asserts(path):
    # Compiled from the wheel's own file (its path kept, so Triton's JIT reads the same source
    # lines); one module per file and process, so its kernels compile once.
    module = types.ModuleType("nsa_peer_sglang_metadata_no_asserts")
    module.__file__ = path
    exec(compile(Path(path).read_text(), path, "exec", optimize=1), module.__dict__)
    return module


def sglang_metadata_on_cpu():
    """SGLang 0.5.23's ``dsa/metadata.py`` with asserts compiled out (``optimize=1``), found as
    ``nsa_kernels.peers.sglang`` finds it; raises ``PeerUnavailable`` when there is no copy."""
    from ..peers import sglang as sglang_peer

    folder, _ = sglang_peer._source_folder()
    return _module_without_asserts(str(folder / sglang_peer.FILES["metadata"]))
