"""Draft-extend metadata in one launch: SGLang 0.5.23's ``fused_dsa_draft_extend_metadata``.

Request b extends by ``qo`` tokens over ``kv = seq_lens[b]``: ``cache_seqlens[b] = kv``,
``cu_seqlens_k`` its prefix; its expanded token j sees ``max(kv - qo + j + 1, 0)`` (CUDA-graph
padding rows with ``kv < qo`` clamp to 0), the DSA length ``min(., topk)`` and its prefix;
each of its page-table rows is its ``req_to_token`` row over ``[:min(kv, max_seqlen_k)]``.
Only the first ``total_len`` expanded rows are written.

Two paths, as in SGLang:

* static (``static_extend_len=True``, SGLang's draft_extend_v2 graph replay): every request
  extends by ``max_extend_len`` tokens (SGLang passes ``speculative_num_draft_tokens``), so
  request b's rows start at ``b * max_extend_len``: no prefix over requests at all.
* varlen: ``qo = extend_seq_lens[b]`` in ``[0, max_extend_len]``. Program 0 walks the requests
  in chunks with a running carry; a page tile finds its first row from one wide load per
  ``FLAT`` earlier requests (the fallback path; static is the hot one).

An optional int64 ``status`` receives ``[rows the requests expand to, rows > total_len]``.
"""
import triton
import triton.language as tl

from ..launcher import LaunchPlan, bind_launch
from . import checks
from .reference import draft_extend_reference
from .tiles import (flat_block, grid_size, pick_blocks, tile_position, write_expanded_rows,
                    write_page_rows, write_request_lengths)

#: Largest per-request extend the varlen path tiles (a constexpr bucket of max_extend_len).
MAX_VARLEN_EXTEND = 4096


@triton.jit
def _clamped_extend(ext_ptr, requests, bs, max_extend_len):
    qo = tl.load(ext_ptr + requests, mask=requests < bs, other=0).to(tl.int64)
    return tl.minimum(tl.maximum(qo, 0), max_extend_len)


@triton.jit
def _write_varlen_rows(ext_ptr, seq_ptr, expanded_ptr, dsa_ptr, dsa_cu_ptr, status_ptr, bs,
                       total_len, max_extend_len, topk, HAS_STATUS: tl.constexpr,
                       CHUNK: tl.constexpr, BLOCK_J: tl.constexpr):
    tl.store(dsa_cu_ptr, 0)
    rows_before = tl.full((), 0, tl.int64)
    dsa_before = tl.full((), 0, tl.int64)
    j = tl.arange(0, BLOCK_J).to(tl.int64)
    for b0 in range(0, bs, CHUNK):
        requests = b0 + tl.arange(0, CHUNK)
        qo = _clamped_extend(ext_ptr, requests, bs, max_extend_len)
        kv = tl.load(seq_ptr + requests, mask=requests < bs, other=0).to(tl.int64)
        row = (rows_before + tl.cumsum(qo, 0) - qo)[:, None] + j[None, :]
        in_request = j[None, :] < qo[:, None]
        value = tl.maximum(kv[:, None] - qo[:, None] + j[None, :] + 1, 0)
        dsa = tl.where(in_request, tl.minimum(value, topk), 0)
        per_request = tl.sum(dsa, 1)
        dsa_cu = (dsa_before + tl.cumsum(per_request, 0) - per_request)[:, None] + tl.cumsum(dsa, 1)
        ok = in_request & (row < total_len)
        tl.store(expanded_ptr + row, value.to(tl.int32), mask=ok)
        tl.store(dsa_ptr + row, dsa.to(tl.int32), mask=ok)
        tl.store(dsa_cu_ptr + 1 + row, dsa_cu.to(tl.int32), mask=ok)
        rows_before += tl.sum(qo, 0)
        dsa_before += tl.sum(per_request, 0)
    if HAS_STATUS:
        tl.store(status_ptr, rows_before)
        tl.store(status_ptr + 1, (rows_before > total_len).to(tl.int64))


@triton.jit(do_not_specialize=["r2t_stride", "pt_stride", "rpt_stride", "bs", "total_len",
                               "max_seqlen_k", "topk", "max_extend_len", "n_col_blocks"])
def draft_extend_kernel(seq_ptr, ext_ptr, pool_idx_ptr, r2t_ptr, r2t_stride, cache_ptr, cu_ptr,
                        pt_ptr, pt_stride, expanded_ptr, dsa_ptr, dsa_cu_ptr, rpt_ptr, rpt_stride,
                        status_ptr, bs, total_len, max_seqlen_k, topk, max_extend_len,
                        n_col_blocks, HAS_PAGE_TABLE_1: tl.constexpr, PAGE_SIZE: tl.constexpr,
                        STATIC_EXTEND_LEN: tl.constexpr, HAS_STATUS: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, FLAT: tl.constexpr,
                        CHUNK: tl.constexpr, BLOCK_J: tl.constexpr):
    if tl.program_id(0) == 0:
        write_request_lengths(seq_ptr, cache_ptr, cu_ptr, bs, 0, FLAT)
        if STATIC_EXTEND_LEN:
            # total_len <= bs * max_extend_len (checked on the host).
            write_expanded_rows(seq_ptr, expanded_ptr, dsa_ptr, dsa_cu_ptr, total_len,
                                max_extend_len, 1 - max_extend_len, topk, True, True, FLAT)
            if HAS_STATUS:
                needed = bs.to(tl.int64) * max_extend_len
                tl.store(status_ptr, needed)
                tl.store(status_ptr + 1, (needed > total_len).to(tl.int64))
        else:
            _write_varlen_rows(ext_ptr, seq_ptr, expanded_ptr, dsa_ptr, dsa_cu_ptr, status_ptr, bs,
                               total_len, max_extend_len, topk, HAS_STATUS, CHUNK, BLOCK_J)
    else:
        first, col0 = tile_position(n_col_blocks, BLOCK_B, BLOCK_N)
        requests = first + tl.arange(0, BLOCK_B)
        kv = tl.load(seq_ptr + requests, mask=requests < bs, other=0).to(tl.int64)
        live = tl.where(requests < bs, tl.minimum(tl.maximum(kv, 0), max_seqlen_k), 0)
        if STATIC_EXTEND_LEN:
            first_row = requests.to(tl.int64) * max_extend_len
            count = max_extend_len
        else:
            rows_before = tl.full((), 0, tl.int64)
            for b0 in range(0, first, FLAT):
                earlier = b0 + tl.arange(0, FLAT)
                rows_before += tl.sum(_clamped_extend(ext_ptr, earlier, first, max_extend_len), 0)
            count = _clamped_extend(ext_ptr, requests, bs, max_extend_len)
            first_row = rows_before + tl.cumsum(count, 0) - count
        write_page_rows(pool_idx_ptr, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride,
                        requests, live, first_row, count, max_extend_len, total_len, col0,
                        HAS_PAGE_TABLE_1, PAGE_SIZE, BLOCK_N)


def check_draft_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, cache_seqlens,
                       cu_seqlens_k, page_table_1, seqlens_expanded, dsa_cache_seqlens,
                       dsa_cu_seqlens_k, real_page_table, bs, total_len, max_seqlen_k,
                       dsa_index_topk, physical_page_size, max_extend_len, max_total_len,
                       static_extend_len=False, status=None, check=False):
    """Every static check (and the data checks with ``check=True``); raises before any write."""
    bs = checks.as_int("bs", bs)
    total_len = checks.as_int("total_len", total_len)
    max_seqlen_k = checks.as_int("max_seqlen_k", max_seqlen_k)
    max_extend_len = checks.as_int("max_extend_len", max_extend_len)
    max_total_len = checks.as_int("max_total_len", max_total_len)
    topk = checks.topk_value(dsa_index_topk)
    if not isinstance(static_extend_len, bool):
        raise TypeError(f"static_extend_len must be a bool, got {type(static_extend_len).__name__}")
    if total_len > max_total_len:
        raise ValueError(f"total_len = {total_len} exceeds max_total_len = {max_total_len}")
    if bs and total_len > bs * max_extend_len:
        raise ValueError(f"total_len = {total_len} exceeds bs * max_extend_len = "
                         f"{bs * max_extend_len}")
    if not static_extend_len and max_extend_len > MAX_VARLEN_EXTEND:
        raise ValueError(f"max_extend_len = {max_extend_len}: the varlen path serves up to "
                         f"{MAX_VARLEN_EXTEND} tokens per request")
    rows = total_len if bs else 0
    seq_lens = checks.input_vector("seq_lens", seq_lens, None, bs)
    device = seq_lens.device
    checks.input_vector("extend_seq_lens", extend_seq_lens, device, bs)
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
    checks.status_vector(status, device)
    outputs = dict(cache_seqlens=cache_seqlens, cu_seqlens_k=cu_seqlens_k,
                   seqlens_expanded=seqlens_expanded, dsa_cache_seqlens=dsa_cache_seqlens,
                   dsa_cu_seqlens_k=dsa_cu_seqlens_k,
                   page_table_1=page_table_1 if has_pt1 else None,
                   real_page_table=rpt if page_size > 1 else None, status=status)
    checks.no_overlap(outputs, dict(seq_lens=seq_lens, extend_seq_lens=extend_seq_lens,
                                    req_pool_indices=req_pool_indices, req_to_token=req_to_token))
    if check:
        draft_extend_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, bs,
                               rows, max_seqlen_k, topk, page_size, max_extend_len,
                               static_extend_len)
    return bs, rows, max_seqlen_k, topk, max_extend_len, pt, rpt, has_pt1, page_size


def plan_draft_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, cache_seqlens,
                      cu_seqlens_k, page_table_1, seqlens_expanded, dsa_cache_seqlens,
                      dsa_cu_seqlens_k, real_page_table, bs, total_len, max_seqlen_k,
                      dsa_index_topk, physical_page_size, max_extend_len, max_total_len,
                      static_extend_len=False, status=None, check=False) -> LaunchPlan:
    """The one launch, from tensor metadata and host ints only (no sync unless ``check``)."""
    bs, rows, max_seqlen_k, topk, max_extend_len, pt, rpt, has_pt1, page_size = \
        check_draft_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                           cache_seqlens, cu_seqlens_k, page_table_1, seqlens_expanded,
                           dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs, total_len,
                           max_seqlen_k, dsa_index_topk, physical_page_size, max_extend_len,
                           max_total_len, static_extend_len, status, check)
    block_b, block_n = pick_blocks(max_seqlen_k, page_size, has_pt1)
    programs, col_blocks = grid_size(bs, max_seqlen_k, block_b, block_n)
    block_j = triton.next_power_of_2(max(max_extend_len, 1))
    args = (seq_lens, extend_seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0),
            cache_seqlens, cu_seqlens_k, pt, pt.stride(0), seqlens_expanded, dsa_cache_seqlens,
            dsa_cu_seqlens_k, rpt, rpt.stride(0), status if status is not None else cu_seqlens_k,
            bs, rows, max_seqlen_k, topk, max_extend_len, col_blocks)
    flat = flat_block(max(bs, rows))
    return LaunchPlan(draft_extend_kernel, (programs,), args,
                      dict(HAS_PAGE_TABLE_1=has_pt1, PAGE_SIZE=page_size,
                           STATIC_EXTEND_LEN=static_extend_len, HAS_STATUS=status is not None,
                           BLOCK_B=block_b, BLOCK_N=block_n, FLAT=flat,
                           # Unused by the static path: fixed there, so it adds no variant.
                           CHUNK=flat if static_extend_len else max(flat // block_j, 1),
                           BLOCK_J=1 if static_extend_len else block_j))


def launch_draft_extend(*args, check=False, **kwargs):
    """Check, plan and launch (Triton's normal dispatch); arguments as ``plan_draft_extend``."""
    plan_draft_extend(*args, check=check, **kwargs)()


class DraftExtendFill:
    """Bound once to a graph runner's static buffers; each call is one direct launch."""

    def __init__(self, *args, check=False, **kwargs):
        self.plan = plan_draft_extend(*args, check=check, **kwargs)
        self.launch = bind_launch(*self.plan)

    def __call__(self):
        self.launch()
