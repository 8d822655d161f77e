"""SGLang 0.5.23's fused DSA metadata functions, as drop-in replacements.

Same names, parameter order, defaults and optional tensors as
``sglang.kernels.ops.attention.dsa.metadata``; the same entries written (flat arrays over
exactly SGLang's ranges, page-table rows over their live prefix ``[:cache_seqlens]``,
clipped to the width). Assign them to a ``DSAMetadataManagementMixin``::

    from nsa_kernels.compat import sglang as nsa
    backend._fused_decode_metadata = nsa.fused_dsa_decode_metadata
    backend._fused_verify_metadata = nsa.fused_dsa_target_verify_metadata
    backend._fused_draft_extend_metadata = nsa.fused_dsa_draft_extend_metadata

Differences, all on inputs outside SGLang's contract: bad arguments raise ``TypeError`` /
``ValueError`` naming them (SGLang asserts or writes out of bounds); SGLang rounds each
page-table row's written range up to its 128-column block (entries past the live prefix that
no consumer reads), we stop at the live prefix; with ``static_extend_len=True`` every request
extends by ``max_extend_len`` (SGLang reads ``extend_seq_lens[0]`` for the flat arrays and
``extend_seq_lens[b]`` for the page rows: the same in production, where all equal it);
``total_len == 0`` with a ``cache_seqlens`` longer than bs writes ``cache_seqlens[:bs]``, where
SGLang's ``cache_seqlens.copy_(seq_lens)`` raises (bs > 1) or, with one request, broadcasts
it over the whole buffer, past bs, into entries the caller may own (a CUDA graph's padding).
Everything also runs on CPU tensors under Triton's interpreter.

Per-call cost: SGLang calls these eagerly once per step with the same static buffers, so each
function keeps its bound launchers in a ``PlanCache`` (``DECODE_PLANS``, ``VERIFY_PLANS``,
``DRAFT_EXTEND_PLANS``) keyed on the metadata of every argument (addresses, shapes, strides,
dtypes, devices) and the ints and bools: a repeated call skips the static checks and the
planning and costs one launch; a new key runs the checks first.

What is checked and what is trusted (README, "Reliability"): every call's arguments pass the
static checks (types, dtypes, devices: no meta tensors, CUDA ones on a GPU build; shapes,
strides, overlaps, ints that size blocks) before anything is written, cached per key. The
contents are trusted by default, as SGLang trusts them: lengths, and ``req_pool_indices``,
which are read as rows of ``req_to_token`` without a bounds check (an index outside it reads
outside the table, as SGLang's kernel does); the kernels keep their writes inside the buffers
whatever the lengths. ``check=True`` (keyword-only, not in SGLang's signature) checks this
call's contents on the host first (one device-to-host copy, a sync): lengths, pool indices
inside ``req_to_token`` and its live entries in int32, naming the argument and the request.
Calls from several threads are safe (under the interpreter, launches are serialised).

Prefill (extend) has no fused SGLang kernel; ``extend_metadata(seq_lens, extend_seq_lens,
req_pool_indices, req_to_token, dsa_index_topk)`` builds its metadata in one launch.
"""
from typing import Optional

import torch

from ..launcher import PlanCache, UnhashableKey, metadata_key
from ..modes.decode import plan_decode
from ..modes.draft_extend import plan_draft_extend

# Extend (prefill) has no fused SGLang kernel to stand in for: SGLang builds it eagerly in
# ``init_forward_metadata``. ``extend_metadata`` returns the same fields in one launch, and
# ``ExtendFill`` / ``launch_extend`` fill a graph runner's buffers.
from ..modes.extend import ExtendBuffers, ExtendFill, extend_metadata, launch_extend
from ..modes.target_verify import plan_target_verify

__all__ = ["ExtendBuffers", "ExtendFill", "extend_metadata", "fused_dsa_decode_metadata",
           "fused_dsa_draft_extend_metadata", "fused_dsa_target_verify_metadata", "launch_extend"]


#: Bound launchers per entry point, keyed on ``metadata_key`` of all the arguments.
DECODE_PLANS = PlanCache(maxsize=32)
VERIFY_PLANS = PlanCache(maxsize=32)
DRAFT_EXTEND_PLANS = PlanCache(maxsize=32)


def _cached_launch(cache, plan, args, check):
    """Launch ``plan(*args)`` through ``cache``; arguments that cannot form a key (a list where a
    tensor belongs, say) plan uncached, so that the checks name them. ``check=True`` runs the
    data checks on this call's contents (one device-to-host copy), then plans uncached."""
    if check is not False:
        if check is not True:
            raise TypeError(f"check must be a bool, got {type(check).__name__}")
        plan(*args, check=True)()
        return
    try:
        launch = cache.launcher(metadata_key(*args), plan, *args)
    except UnhashableKey:
        plan(*args)()
        return
    launch()


def fused_dsa_decode_metadata(
    seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    cache_seqlens: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    page_table_1: Optional[torch.Tensor],
    dsa_cache_seqlens: torch.Tensor,
    dsa_cu_seqlens_k: torch.Tensor,
    real_page_table: torch.Tensor,
    bs: int,
    max_len: int,
    dsa_index_topk: int,
    physical_page_size: int,
    *,
    check: bool = False,
) -> None:
    _cached_launch(DECODE_PLANS, plan_decode,
                   (seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                    page_table_1, dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs,
                    max_len, dsa_index_topk, physical_page_size), check)


def fused_dsa_target_verify_metadata(
    seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    cache_seqlens: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    page_table_1: Optional[torch.Tensor],
    seqlens_expanded: torch.Tensor,
    dsa_cache_seqlens: torch.Tensor,
    dsa_cu_seqlens_k: torch.Tensor,
    real_page_table: torch.Tensor,
    bs: int,
    max_seqlen_k: int,
    dsa_index_topk: int,
    physical_page_size: int,
    next_n: int,
    paged_mqa_ctx_lens_2d: torch.Tensor = None,
    *,
    check: bool = False,
) -> None:
    _cached_launch(VERIFY_PLANS, plan_target_verify,
                   (seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                    page_table_1, seqlens_expanded, dsa_cache_seqlens, dsa_cu_seqlens_k,
                    real_page_table, bs, max_seqlen_k, dsa_index_topk, physical_page_size,
                    next_n, paged_mqa_ctx_lens_2d), check)


def fused_dsa_draft_extend_metadata(
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    cache_seqlens: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    page_table_1: Optional[torch.Tensor],
    seqlens_expanded: torch.Tensor,
    dsa_cache_seqlens: torch.Tensor,
    dsa_cu_seqlens_k: torch.Tensor,
    real_page_table: torch.Tensor,
    bs: int,
    total_len: int,
    max_seqlen_k: int,
    dsa_index_topk: int,
    physical_page_size: int,
    max_extend_len: int,
    max_total_len: int,
    static_extend_len: bool = False,
    *,
    check: bool = False,
) -> None:
    _cached_launch(DRAFT_EXTEND_PLANS, plan_draft_extend,
                   (seq_lens, extend_seq_lens, req_pool_indices, req_to_token, cache_seqlens,
                    cu_seqlens_k, page_table_1, seqlens_expanded, dsa_cache_seqlens,
                    dsa_cu_seqlens_k, real_page_table, bs, total_len, max_seqlen_k,
                    dsa_index_topk, physical_page_size, max_extend_len, max_total_len,
                    static_extend_len), check)
