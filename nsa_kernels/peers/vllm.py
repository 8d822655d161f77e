"""vLLM 0.33.0's indexer-metadata kernels as a second peer, loaded by file path (never vendored).

This is vLLM's SM100 path: ``indexer.py`` launches ``_indexer_decode_metadata_kernel`` only
where ``_supports_varlen_paged_mqa_logits()`` holds (CUDA, capability family 100, DeepGEMM).
On Hopper (SM90) vLLM builds the same metadata another way: ``peers.vllm_hopper``.

``vllm/v1/attention/ops/metadata.py`` (``_indexer_decode_metadata_kernel``,
``compute_token_to_req_indices``) imports only torch and ``vllm.triton_utils``, a re-export of
``triton`` and ``triton.language``. Importing the ``vllm`` package would pull in the whole
server, so that one file is read straight from the wheel (``pip download vllm==0.33.0
--no-deps``) and executed with a stand-in ``vllm.triton_utils`` that exists in ``sys.modules``
only while the file is executed.

Where to look, in order: ``$NSA_VLLM_PATH`` (a wheel, a folder holding ``vllm/v1/...``, or the
``vllm`` package folder itself), then ``.peers/`` at the repository root (a wheel
``vllm-*.whl`` or an extracted folder). ``load()`` raises ``PeerUnavailable`` with the reason
when no copy is found, or when no GPU is present (unless ``require_gpu=False``: the kernels
are plain Triton launches and also run under the interpreter).
"""
import importlib.util
import sys
import types
import zipfile
from pathlib import Path
from types import SimpleNamespace

import torch

from .sglang import PeerUnavailable, peer_candidates

VERSION = "0.33.0"
FILE = "vllm/v1/attention/ops/metadata.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".peers" / f"vllm-{VERSION}-kernels"
#: The ``config`` text of every vLLM record: the launch ``indexer.py`` makes (supports_varlen).
PRODUCTION_CONFIG = (
    f"vLLM {VERSION} DSA indexer decode metadata, SM100 only (supports_varlen path of "
    "v1/attention/backends/mla/indexer.py, SM100 with DeepGEMM): "
    "grid = max(num_decodes, num_tokens + cdiv(capacity - num_tokens, 256)), "
    "BLOCK_COLS = block-table width, num_warps=4"
)

__all__ = ["PRODUCTION_CONFIG", "PeerUnavailable", "decode_metadata_call", "load",
           "source_file"]


def _candidates():
    return peer_candidates("NSA_VLLM_PATH", "vllm", REPO_ROOT, CACHE)


def _find_in_folder(folder, file=FILE):
    """``file`` under ``folder``: it holds ``vllm/v1/...`` or is the package itself."""
    for candidate in (folder / file, folder / Path(file).relative_to("vllm")):
        if candidate.is_file():
            return candidate
    return None


def source_file(file=FILE):
    """``(path, source)`` of vLLM's ``file`` (``vllm/...``) on disk: a wheel's copy is
    extracted into the cache first, so that Triton (and tracebacks) can read its lines."""
    for path in _candidates():
        if path.is_file() and path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                try:
                    data = wheel.read(file)
                except KeyError:
                    continue
            target = CACHE / file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            return target, path.name
        if path.is_dir():
            found = _find_in_folder(path, file)
            if found is not None:
                return found, str(path)
    raise PeerUnavailable(
        f"vLLM {VERSION} {file} not found: set NSA_VLLM_PATH (a wheel or a folder) or put the "
        f"wheel in .peers/ (pip download vllm=={VERSION} --no-deps -d .peers)")


def _standin_triton_utils():
    import triton
    import triton.language as tl

    package = types.ModuleType("vllm")
    package.__path__ = []  # a package, so that ``vllm.triton_utils`` resolves as a submodule
    utils = types.ModuleType("vllm.triton_utils")
    utils.triton, utils.tl = triton, tl
    package.triton_utils = utils
    return {"vllm": package, "vllm.triton_utils": utils}


def _exec_with_standin(path):
    """Execute ``path`` as a private module while the stand-in is in ``sys.modules``; restore
    whatever was there (a real vllm, or nothing) afterwards."""
    standin = _standin_triton_utils()
    saved = {name: sys.modules.get(name) for name in standin}
    sys.modules.update(standin)
    try:
        spec = importlib.util.spec_from_file_location("nsa_peer_vllm_metadata", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module


def load(require_gpu=True):
    """vLLM's metadata module, loaded by file path, as a namespace
    ``(metadata, source, version)``."""
    if require_gpu and not torch.cuda.is_available():
        raise PeerUnavailable("no GPU: vLLM's indexer metadata is measured on a GPU only")
    path, source = source_file()
    return SimpleNamespace(metadata=_exec_with_standin(path), source=source, version=VERSION)


def decode_metadata_call(peer, query_start_loc, seq_lens, block_table, out, num_reqs, num_tokens):
    """A zero-argument closure making vLLM's production launch of
    ``_indexer_decode_metadata_kernel`` (``indexer.py``, ``supports_varlen``) into ``out``.

    ``out``: a namespace of vLLM's persistent buffers ``seq_lens`` (expanded lengths, the
    capacity is its numel), ``block_table`` (page-granular rows per token), ``decode_lens``,
    ``indices`` (token -> request) and ``per_req_lens``. ``seq_lens`` (input) counts the
    query tokens, as vLLM's do.
    """
    capacity = out.seq_lens.numel()
    grid = (max(num_reqs, num_tokens + -(-(capacity - num_tokens) // 256)),)
    kernel = peer.metadata._indexer_decode_metadata_kernel

    def run():
        kernel[grid](query_start_loc, seq_lens, block_table, out.seq_lens, out.block_table,
                     out.decode_lens, out.indices, out.per_req_lens, num_reqs, num_tokens,
                     capacity, block_table.stride(0), out.block_table.stride(0),
                     BLOCK_COLS=block_table.shape[1], num_warps=4)
    return run
