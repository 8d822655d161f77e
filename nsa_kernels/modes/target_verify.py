"""Target-verify metadata in one launch: SGLang 0.5.23's ``fused_dsa_target_verify_metadata``.

Each request verifies ``next_n`` draft tokens, so it owns ``next_n`` expanded rows. With
``kv = seq_lens[b]``: ``cache_seqlens[b] = kv + next_n`` and ``cu_seqlens_k`` its prefix;
expanded row ``b * next_n + j`` sees ``kv + j + 1`` (``seqlens_expanded``), its DSA length
``min(., topk)`` and the prefix ``dsa_cu_seqlens_k``; the optional
``paged_mqa_ctx_lens_2d[b, j] = kv + next_n``; each of the request's page-table rows is its
``req_to_token`` row over ``[:min(kv + next_n, max_seqlen_k)]``.

One launch, no host sync, no allocation. A page tile reads a ``req_to_token`` segment once and
stores it to the request's ``next_n`` rows; on small grids each row gets its own program
(``SPLIT_ROWS``; see ``tiles``).
"""
import torch
import triton
import triton.language as tl

from ..launcher import LaunchPlan, PlannedFill
from ..validation import modes as checks
from ..validation.core import as_index, check_no_overlap
from .reference import target_verify_reference
from .spec import ModeSpec, Variant, common_kwargs, graph_bytes
from .tiles import (
    MAX_ROWS_PER_REQUEST,
    flat_blocks,
    grid_size,
    load_requests,
    pick_blocks,
    split_rows,
    tile_position,
    write_flat,
    write_page_rows,
)


@triton.jit(do_not_specialize=["r2t_stride", "pt_stride", "rpt_stride", "ctx_stride_0",
                               "ctx_stride_1", "bs", "max_seqlen_k", "topk", "next_n",
                               "n_col_blocks"])
def target_verify_kernel(seq_ptr, pool_idx_ptr, r2t_ptr, r2t_stride, cache_ptr, cu_ptr, pt_ptr,
                         pt_stride, expanded_ptr, dsa_ptr, dsa_cu_ptr, rpt_ptr, rpt_stride, ctx_ptr,
                         ctx_stride_0, ctx_stride_1, bs, max_seqlen_k, topk, next_n,
                         n_col_blocks, HAS_PAGE_TABLE_1: tl.constexpr, PAGE_SIZE: tl.constexpr,
                         HAS_CONTEXT_LENS: tl.constexpr, SPLIT_ROWS: tl.constexpr,
                         BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                         BLOCK_J: tl.constexpr):
    n_rows = bs.to(tl.int64) * next_n
    if tl.program_id(0) == 0:
        # Context kv + next_n, next_n rows: row j sees (kv + next_n) - next_n + j + 1.
        write_flat(seq_ptr, seq_ptr, cache_ptr, cu_ptr, expanded_ptr, dsa_ptr, dsa_cu_ptr, cu_ptr,
                   ctx_ptr, ctx_stride_0, ctx_stride_1, bs, n_rows, next_n, next_n, next_n, topk,
                   VARLEN=False, HAS_EXPANDED=True, CLAMP_AT_ZERO=False, HAS_STATUS=False,
                   HAS_CONTEXT_LENS=HAS_CONTEXT_LENS, CHUNK=CHUNK, BLOCK_J=BLOCK_J)
    else:
        if SPLIT_ROWS:  # this program writes row `split` of its request
            first, col0, split = tile_position(n_col_blocks, next_n, BLOCK_B, BLOCK_N)
            rows_here = 1
        else:
            first, col0, split = tile_position(n_col_blocks, 1, BLOCK_B, BLOCK_N)
            rows_here = next_n
        requests = first + tl.arange(0, BLOCK_B)
        kv, pool = load_requests(seq_ptr, pool_idx_ptr, requests, bs)
        live = tl.where(requests < bs, tl.minimum(tl.maximum(kv + next_n, 0), max_seqlen_k), 0)
        write_page_rows(pool, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride, live,
                        requests.to(tl.int64) * next_n + split, next_n - split, rows_here,
                        n_rows, col0, HAS_PAGE_TABLE_1, PAGE_SIZE, BLOCK_N)


def check_target_verify(seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                        page_table_1, seqlens_expanded, dsa_cache_seqlens, dsa_cu_seqlens_k,
                        real_page_table, bs, max_seqlen_k, dsa_index_topk, physical_page_size,
                        next_n, paged_mqa_ctx_lens_2d=None, check=False):
    """Every static check (and the data checks with ``check=True``); raises before any write."""
    bs = as_index("bs", bs, minimum=0)
    max_seqlen_k = as_index("max_seqlen_k", max_seqlen_k, minimum=0)
    topk = checks.topk_value(dsa_index_topk)
    next_n = as_index("next_n", next_n, minimum=1, maximum=MAX_ROWS_PER_REQUEST)
    rows = bs * next_n
    seq_lens = checks.input_vector("seq_lens", seq_lens, None, bs)
    device = seq_lens.device
    checks.input_vector("req_pool_indices", req_pool_indices, device, bs)
    checks.req_to_token_table(req_to_token, device, max_seqlen_k, bs)
    checks.output_vector("cache_seqlens", cache_seqlens, device, bs)
    checks.output_vector("cu_seqlens_k", cu_seqlens_k, device, bs + 1)
    checks.output_vector("seqlens_expanded", seqlens_expanded, device, rows)
    checks.output_vector("dsa_cache_seqlens", dsa_cache_seqlens, device, rows)
    checks.output_vector("dsa_cu_seqlens_k", dsa_cu_seqlens_k, device, rows + 1)
    pt, rpt, has_pt1, page_size = checks.page_tables(page_table_1, real_page_table,
                                                     physical_page_size, rows, max_seqlen_k,
                                                     device)
    if paged_mqa_ctx_lens_2d is not None:
        checks.output_table("paged_mqa_ctx_lens_2d", paged_mqa_ctx_lens_2d, device, bs, next_n)
        if tuple(paged_mqa_ctx_lens_2d.shape) != (bs, next_n):
            raise ValueError(f"paged_mqa_ctx_lens_2d must be {bs} x {next_n} (bs x next_n), got "
                             f"{tuple(paged_mqa_ctx_lens_2d.shape)}")
    outputs = dict(cache_seqlens=cache_seqlens, cu_seqlens_k=cu_seqlens_k,
                   seqlens_expanded=seqlens_expanded, dsa_cache_seqlens=dsa_cache_seqlens,
                   dsa_cu_seqlens_k=dsa_cu_seqlens_k,
                   page_table_1=page_table_1 if has_pt1 else None,
                   real_page_table=rpt if page_size > 1 else None,
                   paged_mqa_ctx_lens_2d=paged_mqa_ctx_lens_2d)
    check_no_overlap(outputs, dict(seq_lens=seq_lens, req_pool_indices=req_pool_indices,
                                   req_to_token=req_to_token))
    if check:
        target_verify_reference(seq_lens, req_pool_indices, req_to_token, bs, max_seqlen_k, topk,
                                page_size, next_n)
    return bs, max_seqlen_k, topk, next_n, pt, rpt, has_pt1, page_size


def plan_target_verify(seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                       page_table_1, seqlens_expanded, dsa_cache_seqlens, dsa_cu_seqlens_k,
                       real_page_table, bs, max_seqlen_k, dsa_index_topk, physical_page_size,
                       next_n, paged_mqa_ctx_lens_2d=None, check=False) -> LaunchPlan:
    """The one launch, from tensor metadata and host ints only (no sync unless ``check``)."""
    bs, max_seqlen_k, topk, next_n, pt, rpt, has_pt1, page_size = check_target_verify(
        seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k, page_table_1,
        seqlens_expanded, dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs, max_seqlen_k,
        dsa_index_topk, physical_page_size, next_n, paged_mqa_ctx_lens_2d, check)
    has_ctx = paged_mqa_ctx_lens_2d is not None
    ctx = paged_mqa_ctx_lens_2d if has_ctx else cache_seqlens
    ctx_strides = paged_mqa_ctx_lens_2d.stride() if has_ctx else (0, 0)
    block_b, block_n = pick_blocks(max_seqlen_k, page_size, has_pt1, bs)
    split = split_rows(bs, next_n, block_b, triton.cdiv(max_seqlen_k, block_n))
    programs, col_blocks = grid_size(bs, max_seqlen_k, block_b, block_n, next_n if split else 1)
    args = (seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0), cache_seqlens,
            cu_seqlens_k, pt, pt.stride(0), seqlens_expanded, dsa_cache_seqlens, dsa_cu_seqlens_k,
            rpt, rpt.stride(0), ctx, *ctx_strides, bs, max_seqlen_k, topk, next_n, col_blocks)
    chunk, block_j = flat_blocks(bs * next_n, next_n)
    return LaunchPlan(target_verify_kernel, (programs,), args,
                      dict(HAS_PAGE_TABLE_1=has_pt1, PAGE_SIZE=page_size, HAS_CONTEXT_LENS=has_ctx,
                           SPLIT_ROWS=split, BLOCK_B=block_b, BLOCK_N=block_n, CHUNK=chunk,
                           BLOCK_J=block_j))


def launch_target_verify(*args, check=False, **kwargs):
    """Check, plan and launch (Triton's normal dispatch); arguments as ``plan_target_verify``."""
    plan_target_verify(*args, check=check, **kwargs)()


class TargetVerifyFill(PlannedFill):
    """Bound once to a graph runner's static buffers; each call is one direct launch."""

    planner = staticmethod(plan_target_verify)


# --------------------------------------------------------------------------- the spec

def _lengths(point, draw):
    seq = draw(1, point.width - point.next_n)
    return seq, torch.full_like(seq, point.next_n), seq + point.next_n


def _kwargs(point, inputs, outputs):
    return dict(common_kwargs(point, inputs, outputs), seqlens_expanded=outputs["seqlens_expanded"],
                max_seqlen_k=point.width, next_n=point.next_n,
                paged_mqa_ctx_lens_2d=outputs["paged_mqa_ctx_lens_2d"])


def _oracle(point, inputs):
    return target_verify_reference(inputs.seq_lens, inputs.req_pool_indices, inputs.req_to_token,
                                   point.bs, point.width, point.topk, point.page_size,
                                   point.next_n)


_VERIFY_CALL = ("fused_dsa_target_verify_metadata, max_seqlen_k = width, "
                "next_n = num_draft_tokens, ")

#: SGLang 0.5.23's target-verify graph replay passes ``paged_mqa_ctx_lens_2d`` only on SM100
#: (the larger job, the default variant); on Hopper it passes None.
SPEC = ModeSpec(
    name="target_verify",
    ours="nsa_kernels.compat.sglang:fused_dsa_target_verify_metadata",
    sglang="fused_dsa_target_verify_metadata",
    fill="nsa_kernels.modes.target_verify:TargetVerifyFill",
    variants=(
        Variant("", "SGLang 0.5.23 CUDA-graph replay (target_verify, SM100): " + _VERIFY_CALL
                + "paged_mqa_ctx_lens_2d [bs, next_n]", next_ns=(2, 4), ctx_lens_2d=True),
        Variant("hopper", "SGLang 0.5.23 CUDA-graph replay (target_verify, Hopper): "
                + _VERIFY_CALL + "paged_mqa_ctx_lens_2d=None (SGLang builds it only on SM100)",
                next_ns=(2, 4)),
    ),
    lengths=_lengths,
    context=lambda point, seq: seq + point.next_n,
    expanded=lambda point, seq, ext, offset: seq + offset + 1,
    kwargs=_kwargs,
    oracle=_oracle,
    bytes_moved=graph_bytes,
    vllm="nsa_kernels.peers.vllm:decode_metadata_call",
)
