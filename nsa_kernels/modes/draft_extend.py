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
  in chunks with a running carry (``tiles.write_flat``, as for the static path); a page tile
  finds its first row from one wide load per ``PREFIX_BLOCK`` (1024, or 32 up to bs 32)
  earlier requests (the fallback path; static is the hot one).

An optional int64 ``status`` receives ``[rows the requests expand to, rows > total_len]``
(``validation.modes.DraftExtendStatus`` reads it by name).
"""
import triton
import triton.language as tl

from ..launcher import LaunchPlan, PlannedFill
from ..validation import modes as checks
from ..validation.core import as_index, check_no_overlap
from .reference import draft_extend_reference
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

#: Earlier requests summed per wide load by a varlen page tile (16 loads at bs = 16384); with
#: one-request tiles (bs <= ``tiles.SMALL_BATCH``) one warp's worth, whose sum is a register
#: shuffle, not a shared-memory reduction over 4 warps on the tile's critical path.
PREFIX_BLOCKS = (32, 1024)


@triton.jit
def _clamped_extend(ext_ptr, requests, bs, max_extend_len):
    qo = tl.load(ext_ptr + requests, mask=requests < bs, other=0).to(tl.int64)
    return tl.minimum(tl.maximum(qo, 0), max_extend_len)


@triton.jit(do_not_specialize=["r2t_stride", "pt_stride", "rpt_stride", "bs", "total_len",
                               "max_seqlen_k", "topk", "max_extend_len", "n_col_blocks"])
def draft_extend_kernel(seq_ptr, ext_ptr, pool_idx_ptr, r2t_ptr, r2t_stride, cache_ptr, cu_ptr,
                        pt_ptr, pt_stride, expanded_ptr, dsa_ptr, dsa_cu_ptr, rpt_ptr, rpt_stride,
                        status_ptr, bs, total_len, max_seqlen_k, topk, max_extend_len,
                        n_col_blocks, HAS_PAGE_TABLE_1: tl.constexpr, PAGE_SIZE: tl.constexpr,
                        STATIC_EXTEND_LEN: tl.constexpr, HAS_STATUS: tl.constexpr,
                        SPLIT_ROWS: tl.constexpr, PREFIX_BLOCK: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                        BLOCK_J: tl.constexpr):
    if tl.program_id(0) == 0:
        # Context kv; qo rows (max_extend_len each when static); padded rows clamp at 0.
        write_flat(seq_ptr, ext_ptr, cache_ptr, cu_ptr, expanded_ptr, dsa_ptr, dsa_cu_ptr,
                   status_ptr, cu_ptr, 0, 0, bs, total_len, max_extend_len, max_extend_len, 0,
                   topk, VARLEN=not STATIC_EXTEND_LEN, HAS_EXPANDED=True, CLAMP_AT_ZERO=True,
                   HAS_STATUS=HAS_STATUS, HAS_CONTEXT_LENS=False, CHUNK=CHUNK, BLOCK_J=BLOCK_J)
    else:
        if SPLIT_ROWS:  # this program writes row `split` of its request (if it has one)
            first, col0, split = tile_position(n_col_blocks, max_extend_len, BLOCK_B, BLOCK_N)
            rows_here = 1
        else:
            first, col0, split = tile_position(n_col_blocks, 1, BLOCK_B, BLOCK_N)
            rows_here = max_extend_len
        requests = first + tl.arange(0, BLOCK_B)
        kv, pool = load_requests(seq_ptr, pool_idx_ptr, requests, bs)
        live = tl.where(requests < bs, tl.minimum(tl.maximum(kv, 0), max_seqlen_k), 0)
        if STATIC_EXTEND_LEN:
            first_row = requests.to(tl.int64) * max_extend_len
            count = max_extend_len
        else:
            rows_before = tl.full((), 0, tl.int64)
            for b0 in range(0, first, PREFIX_BLOCK):
                earlier = b0 + tl.arange(0, PREFIX_BLOCK)
                rows_before += tl.sum(_clamped_extend(ext_ptr, earlier, first, max_extend_len), 0)
            count = _clamped_extend(ext_ptr, requests, bs, max_extend_len)
            first_row = rows_before + tl.cumsum(count, 0) - count
        write_page_rows(pool, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride, live,
                        first_row + split, count - split, rows_here, total_len, col0,
                        HAS_PAGE_TABLE_1, PAGE_SIZE, BLOCK_N)


def check_draft_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, cache_seqlens,
                       cu_seqlens_k, page_table_1, seqlens_expanded, dsa_cache_seqlens,
                       dsa_cu_seqlens_k, real_page_table, bs, total_len, max_seqlen_k,
                       dsa_index_topk, physical_page_size, max_extend_len, max_total_len,
                       static_extend_len=False, status=None, check=False):
    """Every static check (and the data checks with ``check=True``); raises before any write."""
    bs = as_index("bs", bs, minimum=0)
    total_len = as_index("total_len", total_len, minimum=0)
    max_seqlen_k = as_index("max_seqlen_k", max_seqlen_k, minimum=0)
    max_extend_len = as_index("max_extend_len", max_extend_len, minimum=0,
                              maximum=MAX_ROWS_PER_REQUEST)
    max_total_len = as_index("max_total_len", max_total_len, minimum=0)
    topk = checks.topk_value(dsa_index_topk)
    if type(static_extend_len).__name__ not in ("bool", "bool_"):  # Python or numpy bool
        raise TypeError(f"static_extend_len must be a bool, got {type(static_extend_len).__name__}")
    static_extend_len = bool(static_extend_len)
    if total_len > max_total_len:
        raise ValueError(f"total_len = {total_len} exceeds max_total_len = {max_total_len}")
    if bs and total_len > bs * max_extend_len:
        raise ValueError(f"total_len = {total_len} exceeds bs * max_extend_len = "
                         f"{bs * max_extend_len}")
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
    check_no_overlap(outputs, dict(seq_lens=seq_lens, extend_seq_lens=extend_seq_lens,
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
    block_b, block_n = pick_blocks(max_seqlen_k, page_size, has_pt1, bs)
    split = split_rows(bs, max_extend_len, block_b, triton.cdiv(max_seqlen_k, block_n))
    programs, col_blocks = grid_size(bs, max_seqlen_k, block_b, block_n,
                                     max_extend_len if split else 1)
    args = (seq_lens, extend_seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0),
            cache_seqlens, cu_seqlens_k, pt, pt.stride(0), seqlens_expanded, dsa_cache_seqlens,
            dsa_cu_seqlens_k, rpt, rpt.stride(0), status if status is not None else cu_seqlens_k,
            bs, rows, max_seqlen_k, topk, max_extend_len, col_blocks)
    chunk, block_j = flat_blocks(max(bs, rows), max_extend_len)
    return LaunchPlan(draft_extend_kernel, (programs,), args,
                      dict(HAS_PAGE_TABLE_1=has_pt1, PAGE_SIZE=page_size,
                           STATIC_EXTEND_LEN=static_extend_len, HAS_STATUS=status is not None,
                           SPLIT_ROWS=split,
                           PREFIX_BLOCK=PREFIX_BLOCKS[0 if block_b == 1 else 1],
                           BLOCK_B=block_b, BLOCK_N=block_n, CHUNK=chunk, BLOCK_J=block_j))


def launch_draft_extend(*args, check=False, **kwargs):
    """Check, plan and launch (Triton's normal dispatch); arguments as ``plan_draft_extend``."""
    plan_draft_extend(*args, check=check, **kwargs)()


class DraftExtendFill(PlannedFill):
    """Bound once to a graph runner's static buffers; each call is one direct launch."""

    planner = staticmethod(plan_draft_extend)


# --------------------------------------------------------------------------- the specs

def _static_lengths(point, draw):
    seq = draw(point.next_n, point.width)
    return seq, seq.new_full(seq.shape, point.next_n), seq


def _varlen_lengths(point, draw):
    seq = draw(point.next_n, point.width)
    return seq, draw(1, point.next_n), seq


def _calls(static):
    """SGLang's keyword arguments and the oracle of one path (static or varlen)."""
    def kwargs(point, inputs, outputs):
        return dict(common_kwargs(point, inputs, outputs),
                    extend_seq_lens=inputs.extend_seq_lens,
                    seqlens_expanded=outputs["seqlens_expanded"], total_len=inputs.total_len,
                    max_seqlen_k=point.width, max_extend_len=point.next_n,
                    max_total_len=point.bs * point.next_n + point.partial,
                    static_extend_len=static)

    def oracle(point, inputs):
        return draft_extend_reference(inputs.seq_lens, inputs.extend_seq_lens,
                                      inputs.req_pool_indices, inputs.req_to_token, point.bs,
                                      inputs.total_len, point.width, point.topk,
                                      point.page_size, point.next_n, static)
    return kwargs, oracle


def _spec(name, lengths, config, static):
    kwargs, oracle = _calls(static)
    return ModeSpec(
        name=name,
        ours="nsa_kernels.compat.sglang:fused_dsa_draft_extend_metadata",
        sglang="fused_dsa_draft_extend_metadata",
        fill="nsa_kernels.modes.draft_extend:DraftExtendFill",
        variants=config,
        lengths=lengths,
        context=lambda point, seq: seq,
        expanded=lambda point, seq, ext, offset: (seq - ext + offset + 1).clamp_min(0),
        kwargs=kwargs,
        oracle=oracle,
        bytes_moved=graph_bytes,
        reads_extend_lens=True,
        vllm="nsa_kernels.peers.vllm:decode_metadata_call",
    )


#: The two paths of one kernel, measured as two workloads: SGLang's draft_extend v2 graph replay
#: (every request extends by num_draft_tokens) and the per-request path (accept lengths
#: 1..next_n) that SGLang's graph replay does not use.
STATIC_SPEC = _spec("draft_extend_static", _static_lengths, (Variant(
    "", "SGLang 0.5.23 CUDA-graph replay (draft_extend v2): fused_dsa_draft_extend_metadata, "
    "static_extend_len=True, max_seqlen_k = width, extend = num_draft_tokens per request",
    next_ns=(2, 4)),), static=True)
VARLEN_SPEC = _spec("draft_extend_varlen", _varlen_lengths, (Variant(
    "", "SGLang 0.5.23 fused_dsa_draft_extend_metadata per-request path: "
    "static_extend_len=False, accept lengths 1..next_n, max_seqlen_k = width "
    "(not used by SGLang's graph replay)", next_ns=(4,)),), static=False)
