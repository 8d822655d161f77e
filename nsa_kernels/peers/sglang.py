"""SGLang's shipped Triton kernels as a peer, loaded by file path (never vendored here).

``sglang/kernels/ops/attention/pad.py`` (``seqlens_expand_triton``) and
``sglang/kernels/ops/attention/dsa/metadata.py`` (``fused_dsa_draft_extend_metadata``) import
only torch and triton; importing the ``sglang`` package would pull in the whole server, so the
two files are read straight from the wheel (``pip download sglang==0.5.23 --no-deps``).

Where to look, in order: ``$NSA_SGLANG_PATH`` (a wheel, or a folder holding ``sglang/...``),
then ``.peers/`` at the repository root (a wheel ``sglang-*.whl`` or an extracted folder).
``load()`` raises ``PeerUnavailable`` with the reason when no copy is found or no GPU is
present (SGLang's launchers assert CUDA tensors).
"""
import glob
import importlib.util
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import torch

VERSION = "0.5.23"
FILES = {
    "pad": "sglang/kernels/ops/attention/pad.py",
    "metadata": "sglang/kernels/ops/attention/dsa/metadata.py",
}
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".peers" / f"sglang-{VERSION}-kernels"


class PeerUnavailable(RuntimeError):
    pass


def peer_candidates(env_var, package, root, cache):
    """Where a peer's files may be, in order: ``$env_var`` (a wheel or a folder), the
    ``root/.peers/<package>-*.whl`` wheels, then ``cache`` (files extracted from a wheel)."""
    env = os.environ.get(env_var)
    if env:
        yield Path(env)
    yield from (Path(p) for p in sorted(glob.glob(str(root / ".peers" / f"{package}-*.whl"))))
    yield cache


def _candidates():
    return peer_candidates("NSA_SGLANG_PATH", "sglang", REPO_ROOT, CACHE)


def _source_folder():
    for path in _candidates():
        if path.is_file() and path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                for rel in FILES.values():
                    target = CACHE / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(wheel.read(rel))
            return CACHE, path.name
        if path.is_dir() and all((path / rel).is_file() for rel in FILES.values()):
            return path, str(path)
    raise PeerUnavailable(
        f"SGLang {VERSION} kernels not found: set NSA_SGLANG_PATH or put the wheel in .peers/ "
        f"(pip download sglang=={VERSION} --no-deps -d .peers)")


def load(require_gpu=True):
    """The two SGLang modules, loaded by file path, as a namespace ``(pad, metadata, source)``."""
    if require_gpu and not torch.cuda.is_available():
        raise PeerUnavailable("no GPU: SGLang's launchers assert CUDA tensors")
    folder, source = _source_folder()
    modules = {}
    for key, rel in FILES.items():
        spec = importlib.util.spec_from_file_location(f"nsa_peer_sglang_{key}", folder / rel)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[key] = module
    return SimpleNamespace(source=source, version=VERSION, **modules)


def seqlens_expand_fill(peer, workload):
    """SGLang's draft-extend path for the two arrays: expand kernel, clamp, copy into buffers.

    ``total_len`` and ``max_q_len`` are host ints SGLang's scheduler already holds.
    """
    n_tokens, max_q = workload.n_tokens, max(workload.max_extend, 1)

    def fill(extend_seq_lens, seq_lens, nsa_index_topk, out_expanded, out_cache):
        expanded = peer.pad.seqlens_expand_triton(extend_seq_lens, seq_lens, n_tokens, max_q)
        out_expanded[:n_tokens].copy_(expanded)
        torch.clamp(expanded, max=nsa_index_topk, out=out_cache[:n_tokens])
    return fill


def fused_draft_extend_metadata(peer, workload, pipeline_inputs, buffers, page_size,
                                max_extend_len):
    """A closure running SGLang's ``fused_dsa_draft_extend_metadata`` into ``buffers``."""
    req_pool_indices, req_to_token = pipeline_inputs
    bs, n_tokens = workload.bs, workload.n_tokens

    def run():
        peer.metadata.fused_dsa_draft_extend_metadata(
            workload.seq_lens, workload.extend_seq_lens, req_pool_indices, req_to_token,
            buffers.cache_seqlens_int32, buffers.cu_seqlens_k, buffers.page_table_1,
            buffers.seqlens_expanded, buffers.nsa_cache_seqlens, buffers.nsa_cu_seqlens_k,
            buffers.real_page_table, bs, n_tokens, buffers.page_table_1.shape[1],
            workload.topk, page_size, max_extend_len, buffers.capacity)
    return run
