"""Decode metadata in one launch: SGLang 0.5.23's ``fused_dsa_decode_metadata`` contract.

For request b with ``kv = seq_lens[b]``: ``cache_seqlens[b] = kv``, ``cu_seqlens_k = [0,
cumsum(kv)]``, ``dsa_cache_seqlens[b] = min(kv, topk)`` and its prefix ``dsa_cu_seqlens_k``;
page-table row b is ``req_to_token[req_pool_indices[b]]`` over ``[:min(kv, max_len)]``, and
``real_page_table`` row b holds every ``physical_page_size``-th entry of it divided by the page
size. ``page_table_1=None`` writes the real table only (SGLang's decode graph drops the wide
one); ``physical_page_size == 1`` means the real table is ``page_table_1``.

One launch, no host sync, no allocation; see ``tiles`` for the program layout.
"""
import torch
import triton
import triton.language as tl

from ..launcher import LaunchPlan, PlannedFill
from ..validation import modes as checks
from ..validation.core import as_index, check_no_overlap
from .reference import decode_reference
from .spec import ModeSpec, Variant, common_kwargs, graph_bytes
from .tiles import (
    flat_blocks,
    grid_size,
    load_requests,
    pick_blocks,
    tile_position,
    write_flat,
    write_page_rows,
)


@triton.jit(do_not_specialize=["r2t_stride", "pt_stride", "rpt_stride", "bs", "max_len", "topk",
                               "n_col_blocks"])
def decode_kernel(seq_ptr, pool_idx_ptr, r2t_ptr, r2t_stride, cache_ptr, cu_ptr, pt_ptr, pt_stride,
                  dsa_ptr, dsa_cu_ptr, rpt_ptr, rpt_stride, bs, max_len, topk, n_col_blocks,
                  HAS_PAGE_TABLE_1: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, BLOCK_J: tl.constexpr):
    if tl.program_id(0) == 0:
        # One row per request, seeing its whole context: qo = 1, extra = 0.
        write_flat(seq_ptr, seq_ptr, cache_ptr, cu_ptr, dsa_ptr, dsa_ptr, dsa_cu_ptr, cu_ptr,
                   cu_ptr, 0, 0, bs, bs, 1, 1, 0, topk, VARLEN=False, HAS_EXPANDED=False,
                   CLAMP_AT_ZERO=False, HAS_STATUS=False, HAS_CONTEXT_LENS=False, CHUNK=CHUNK,
                   BLOCK_J=BLOCK_J)
    else:
        first, col0, _ = tile_position(n_col_blocks, 1, BLOCK_B, BLOCK_N)
        requests = first + tl.arange(0, BLOCK_B)
        kv, pool = load_requests(seq_ptr, pool_idx_ptr, requests, bs)
        live = tl.minimum(tl.maximum(kv, 0), max_len)
        write_page_rows(pool, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride, live,
                        requests.to(tl.int64), 1, 1, bs, col0, HAS_PAGE_TABLE_1, PAGE_SIZE,
                        BLOCK_N)


def check_decode(seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                 page_table_1, dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs, max_len,
                 dsa_index_topk, physical_page_size, check=False):
    """Every static check (and the data checks with ``check=True``); returns the launch's
    normalised arguments. Raises before anything is written."""
    bs = as_index("bs", bs, minimum=0)
    max_len = as_index("max_len", max_len, minimum=0)
    topk = checks.topk_value(dsa_index_topk)
    seq_lens = checks.input_vector("seq_lens", seq_lens, None, bs)
    device = seq_lens.device
    checks.input_vector("req_pool_indices", req_pool_indices, device, bs)
    checks.req_to_token_table(req_to_token, device, max_len, bs)
    checks.output_vector("cache_seqlens", cache_seqlens, device, bs)
    checks.output_vector("cu_seqlens_k", cu_seqlens_k, device, bs + 1)
    checks.output_vector("dsa_cache_seqlens", dsa_cache_seqlens, device, bs)
    checks.output_vector("dsa_cu_seqlens_k", dsa_cu_seqlens_k, device, bs + 1)
    pt, rpt, has_pt1, page_size = checks.page_tables(page_table_1, real_page_table,
                                                     physical_page_size, bs, max_len, device)
    outputs = dict(cache_seqlens=cache_seqlens, cu_seqlens_k=cu_seqlens_k,
                   dsa_cache_seqlens=dsa_cache_seqlens, dsa_cu_seqlens_k=dsa_cu_seqlens_k,
                   page_table_1=page_table_1 if has_pt1 else None,
                   real_page_table=rpt if page_size > 1 else None)
    check_no_overlap(outputs, dict(seq_lens=seq_lens, req_pool_indices=req_pool_indices,
                                   req_to_token=req_to_token))
    if check:
        decode_reference(seq_lens, req_pool_indices, req_to_token, bs, max_len, topk, page_size)
    return bs, max_len, topk, pt, rpt, has_pt1, page_size


def plan_decode(seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                page_table_1, dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs, max_len,
                dsa_index_topk, physical_page_size, check=False) -> LaunchPlan:
    """The one launch, from tensor metadata and host ints only (no sync unless ``check``)."""
    bs, max_len, topk, pt, rpt, has_pt1, page_size = check_decode(
        seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k, page_table_1,
        dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs, max_len, dsa_index_topk,
        physical_page_size, check)
    block_b, block_n = pick_blocks(max_len, page_size, has_pt1, bs)
    programs, col_blocks = grid_size(bs, max_len, block_b, block_n)
    args = (seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0), cache_seqlens,
            cu_seqlens_k, pt, pt.stride(0), dsa_cache_seqlens, dsa_cu_seqlens_k, rpt,
            rpt.stride(0), bs, max_len, topk, col_blocks)
    chunk, block_j = flat_blocks(bs, 1)
    return LaunchPlan(decode_kernel, (programs,), args,
                      dict(HAS_PAGE_TABLE_1=has_pt1, PAGE_SIZE=page_size, BLOCK_B=block_b,
                           BLOCK_N=block_n, CHUNK=chunk, BLOCK_J=block_j))


def launch_decode(*args, check=False, **kwargs):
    """Check, plan and launch (Triton's normal dispatch); arguments as ``plan_decode``."""
    plan_decode(*args, check=check, **kwargs)()


class DecodeFill(PlannedFill):
    """Bound once to a graph runner's static buffers; each call is one direct launch."""

    planner = staticmethod(plan_decode)


# --------------------------------------------------------------------------- the spec

def _lengths(point, draw):
    seq = draw(1, point.width)
    return seq, torch.ones_like(seq), seq


def _kwargs(point, inputs, outputs):
    return dict(common_kwargs(point, inputs, outputs), max_len=point.width)


def _oracle(point, inputs):
    return decode_reference(inputs.seq_lens, inputs.req_pool_indices, inputs.req_to_token,
                            point.bs, point.width, point.topk, point.page_size)


#: SGLang 0.5.23's decode graph replay (``dsa_backend.py``, ``_apply_cuda_graph_metadata``):
#: ``max_len`` = the graph page table's width; ``page_table_1`` is that wide table, or None
#: when ``dsa_drop_wide_page_table`` holds (no speculative decoding, fused top-k v2).
SPEC = ModeSpec(
    name="decode",
    ours="nsa_kernels.compat.sglang:fused_dsa_decode_metadata",
    sglang="fused_dsa_decode_metadata",
    fill="nsa_kernels.modes.decode:DecodeFill",
    variants=(
        Variant("page_table_1", "SGLang 0.5.23 CUDA-graph replay (decode): "
                "fused_dsa_decode_metadata, page_table_1 = graph page table [bs, width], "
                "max_len = width", vllm=False),
        Variant("real_only", "SGLang 0.5.23 CUDA-graph replay (decode, "
                "dsa_drop_wide_page_table): fused_dsa_decode_metadata, page_table_1=None, "
                "max_len = req_to_token width", page_table_1=False),
    ),
    lengths=_lengths,
    context=lambda point, seq: seq,
    expanded=lambda point, seq, ext, offset: seq,
    kwargs=_kwargs,
    oracle=_oracle,
    bytes_moved=graph_bytes,
    expands=False,
    vllm="nsa_kernels.peers.vllm:decode_metadata_call",
)
