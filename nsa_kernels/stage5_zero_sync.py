"""Stage 5: one launch, no host synchronisation, safe to capture in a CUDA graph.

The prefix sum over requests happens inside the kernel, and the grid is sized from what the
host already knows without asking the device: the batch size (a tensor shape) and the output
buffers' capacity, never N. Batch size and capacity are run-time arguments that Triton does
not specialise on, and block sizes come from a few power-of-two buckets, so sweeping bs
compiles only a handful of variants.

Two ways to map the work:

* ``"request"``: a program owns ``BLOCK_R`` requests and writes all their tokens; cheap when
  extends are short (draft-extend accept lengths of 1..4).
* ``"token"``: a program owns ``BLOCK_T`` tokens of the capacity and finds each token's
  request by scanning the requests in chunks, stopping once past its last token; it keeps
  many programs busy when a few requests carry thousands of tokens (prefill).

A status tensor ``[N, overflow]`` (int32) is written on the device: ``overflow`` is 1 when N
exceeds the buffers' capacity, in which case only the first ``capacity`` entries are written.
N is summed in 64 bits and saturates at 2**31 - 1 (with ``overflow`` set), so a total past
int32 never reads as a small N. With ``check=False`` the lengths are trusted: garbage ones
(negative, huge, ``qo > kv``) give meaningless values but never a write outside the buffers,
and the work is bounded by the capacity, not by the lengths (negative ``qo`` counts as 0). The
caller reads it when it chooses; reading it is the only sync, and it is optional.
"""
import operator

import torch
import triton
import triton.language as tl

from .launcher import bind_launch
from .validation import check_static, new_status, validate


# Lengths as the prefix sums see them: int64, negatives as 0 (such a request writes nothing),
# saturated at 2**31 (past any capacity), so sums over any batch stay exact in 64 bits.
TOKEN_COUNT_LIMIT = tl.constexpr(1 << 31)
INT32_MAX = tl.constexpr(2**31 - 1)


@triton.jit
def _token_counts(ext_ptr, request, live):
    qo_len = tl.load(ext_ptr + request, mask=live, other=0).to(tl.int64)
    # A typed limit: a bare 2**31 would be a uint32 constant.
    return tl.minimum(tl.maximum(qo_len, 0), tl.full((), TOKEN_COUNT_LIMIT, tl.int64))


@triton.jit
def _store_status(status_ptr, total, capacity):
    """``[N, overflow]`` from the int64 total: N saturates at INT32_MAX (so a total past int32
    never reads as a small N), overflow is set whenever N exceeds the capacity."""
    tl.store(status_ptr, tl.minimum(total, INT32_MAX).to(tl.int32))
    tl.store(status_ptr + 1, (total > capacity).to(tl.int32))


@triton.jit
def _request_parallel(ext_ptr, seq_ptr, out_expanded_ptr, out_cache_ptr, status_ptr, batch_size,
                      capacity, nsa_index_topk, CLAMP_PADDED: tl.constexpr, BLOCK_R: tl.constexpr,
                      BLOCK_Q: tl.constexpr, PREFIX_BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    first_request = pid * BLOCK_R
    # Tokens of all earlier programs' requests: one wide load per PREFIX_BLOCK requests (a
    # single one up to bs = 1024), no cross-program traffic.
    base = tl.full((), 0, tl.int64)
    for r0 in range(0, first_request, PREFIX_BLOCK):
        earlier = r0 + tl.arange(0, PREFIX_BLOCK)
        base += tl.sum(_token_counts(ext_ptr, earlier, earlier < first_request), axis=0)
    request = first_request + tl.arange(0, BLOCK_R)
    live = request < batch_size
    qo_len = _token_counts(ext_ptr, request, live)
    kv_len = tl.load(seq_ptr + request, mask=live, other=0).to(tl.int64)
    start = base + tl.cumsum(qo_len, axis=0) - qo_len
    first_value = kv_len - qo_len + 1
    # Columns the buffers can take, not max(qo_len): garbage lengths must not cost time.
    columns = tl.maximum(tl.max(tl.minimum(qo_len, capacity - start), axis=0), 0).to(tl.int32)
    for j0 in range(0, columns, BLOCK_Q):
        j = j0 + tl.arange(0, BLOCK_Q)
        position = start[:, None] + j[None, :]
        mask = (j[None, :] < qo_len[:, None]) & (position < capacity)
        value = first_value[:, None] + j[None, :]
        if CLAMP_PADDED:
            value = tl.maximum(value, 0)
        value = value.to(tl.int32)
        tl.store(out_expanded_ptr + position, value, mask=mask)
        tl.store(out_cache_ptr + position, tl.minimum(value, nsa_index_topk), mask=mask)
    if pid == tl.num_programs(0) - 1:
        _store_status(status_ptr, base + tl.sum(qo_len, axis=0), capacity)


@triton.jit
def _token_parallel(ext_ptr, seq_ptr, out_expanded_ptr, out_cache_ptr, status_ptr, batch_size,
                    capacity, nsa_index_topk, CLAMP_PADDED: tl.constexpr, BLOCK_T: tl.constexpr,
                    BLOCK_R: tl.constexpr):
    pid = tl.program_id(0)
    first_token = pid * BLOCK_T
    token = first_token + tl.arange(0, BLOCK_T)
    value = tl.zeros([BLOCK_T], dtype=tl.int64)
    hits = tl.zeros([BLOCK_T], dtype=tl.int32)
    carry = tl.full((), 0, tl.int64)
    r0 = tl.full((), 0, tl.int32)
    # Walk requests chunk by chunk; stop once the chunks start past this block's last token.
    while (r0 < batch_size) & (carry < first_token + BLOCK_T):
        request = r0 + tl.arange(0, BLOCK_R)
        live = request < batch_size
        qo_len = _token_counts(ext_ptr, request, live)
        kv_len = tl.load(seq_ptr + request, mask=live, other=0).to(tl.int64)
        end = carry + tl.cumsum(qo_len, axis=0)
        inside = (token[:, None] >= (end - qo_len)[None, :]) & (token[:, None] < end[None, :])
        # At most one request holds a token, so a masked sum selects its value offset.
        value += tl.sum(tl.where(inside, (kv_len - end + 1)[None, :], 0), axis=1)
        hits += tl.sum(inside.to(tl.int32), axis=1)
        carry += tl.sum(qo_len, axis=0)
        r0 += BLOCK_R
    value += token
    if CLAMP_PADDED:
        value = tl.maximum(value, 0)
    value = value.to(tl.int32)
    mask = (hits > 0) & (token < capacity)
    tl.store(out_expanded_ptr + token, value, mask=mask)
    tl.store(out_cache_ptr + token, tl.minimum(value, nsa_index_topk), mask=mask)
    if pid == 0:
        total = tl.full((), 0, tl.int64)
        for s0 in range(0, batch_size, BLOCK_R):
            request = s0 + tl.arange(0, BLOCK_R)
            total += tl.sum(_token_counts(ext_ptr, request, request < batch_size), axis=0)
        _store_status(status_ptr, total, capacity)


@triton.jit(do_not_specialize=["batch_size", "capacity", "nsa_index_topk"])
def zero_sync_request_kernel(ext_ptr, seq_ptr, out_expanded_ptr, out_cache_ptr, status_ptr,
                             batch_size, capacity, nsa_index_topk, CLAMP_PADDED: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr,
                             PREFIX_BLOCK: tl.constexpr):
    _request_parallel(ext_ptr, seq_ptr, out_expanded_ptr, out_cache_ptr, status_ptr, batch_size,
                      capacity, nsa_index_topk, CLAMP_PADDED, BLOCK_R, BLOCK_Q, PREFIX_BLOCK)


@triton.jit(do_not_specialize=["batch_size", "capacity", "nsa_index_topk"])
def zero_sync_token_kernel(ext_ptr, seq_ptr, out_expanded_ptr, out_cache_ptr, status_ptr,
                           batch_size, capacity, nsa_index_topk, CLAMP_PADDED: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    _token_parallel(ext_ptr, seq_ptr, out_expanded_ptr, out_cache_ptr, status_ptr, batch_size,
                    capacity, nsa_index_topk, CLAMP_PADDED, BLOCK_T, BLOCK_R)


# The packed entry points take one pointer and the other four buffers as byte offsets from it.
# Each pointer argument costs host time in Triton's launcher (it asks the driver about every
# pointer on every launch: ~2.3 µs each on the lent H100 VM, see scripts/launch_cost.py) while
# integers cost next to nothing. Offsets carry OFFSET_BIAS so that Triton always types them as
# 64-bit (an int below 2**31 would be typed i32: another compiled variant).
OFFSET_BIAS = tl.constexpr(1 << 62)  # a constexpr: kernels may read it


@triton.jit
def _at(base_ptr, biased_offset, DTYPE: tl.constexpr):
    byte_ptr = base_ptr.to(tl.pointer_type(tl.int8), bitcast=True)
    return (byte_ptr + (biased_offset - OFFSET_BIAS)).to(tl.pointer_type(DTYPE), bitcast=True)


@triton.jit(do_not_specialize=["ext_at", "seq_at", "expanded_at", "cache_at", "batch_size",
                               "capacity", "nsa_index_topk"])
def zero_sync_request_packed_kernel(status_ptr, ext_at, seq_at, expanded_at, cache_at, batch_size,
                                    capacity, nsa_index_topk, EXT_DTYPE: tl.constexpr,
                                    SEQ_DTYPE: tl.constexpr, CLAMP_PADDED: tl.constexpr,
                                    BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr,
                                    PREFIX_BLOCK: tl.constexpr):
    _request_parallel(_at(status_ptr, ext_at, EXT_DTYPE), _at(status_ptr, seq_at, SEQ_DTYPE),
                      _at(status_ptr, expanded_at, tl.int32), _at(status_ptr, cache_at, tl.int32),
                      status_ptr, batch_size, capacity, nsa_index_topk, CLAMP_PADDED, BLOCK_R,
                      BLOCK_Q, PREFIX_BLOCK)


@triton.jit(do_not_specialize=["ext_at", "seq_at", "expanded_at", "cache_at", "batch_size",
                               "capacity", "nsa_index_topk"])
def zero_sync_token_packed_kernel(status_ptr, ext_at, seq_at, expanded_at, cache_at, batch_size,
                                  capacity, nsa_index_topk, EXT_DTYPE: tl.constexpr,
                                  SEQ_DTYPE: tl.constexpr, CLAMP_PADDED: tl.constexpr,
                                  BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    _token_parallel(_at(status_ptr, ext_at, EXT_DTYPE), _at(status_ptr, seq_at, SEQ_DTYPE),
                    _at(status_ptr, expanded_at, tl.int32), _at(status_ptr, cache_at, tl.int32),
                    status_ptr, batch_size, capacity, nsa_index_topk, CLAMP_PADDED, BLOCK_T,
                    BLOCK_R)


REQUEST_BLOCK_R = 128
REQUEST_PREFIX_BLOCK = 1024
TOKEN_BLOCK_T = 256
TOKEN_BLOCK_R = 32
MAPPINGS = ("auto", "request", "token")


def pick_mapping(batch_size, capacity):
    """Request-parallel when the buffers hold few tokens per request (draft extend)."""
    return "request" if capacity <= 16 * max(batch_size, 1) else "token"


def extend_block(batch_size, capacity):
    """Power-of-two bucket of tokens per request that the capacity allows, 1..16."""
    per_request = -(-capacity // max(batch_size, 1))
    return min(triton.next_power_of_2(max(per_request, 1)), 16)


def plan_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                   out_nsa_cache_seqlens, status, mapping="auto", clamp_padded_rows=False):
    """``(kernel, grid, args, kwargs)`` of the one launch; host-known sizes only, no sync."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    batch_size = extend_seq_lens.shape[0]
    capacity = min(out_seqlens_expanded.shape[0], out_nsa_cache_seqlens.shape[0])
    if mapping == "auto":
        mapping = pick_mapping(batch_size, capacity)
    args = (extend_seq_lens, seq_lens, out_seqlens_expanded, out_nsa_cache_seqlens, status,
            batch_size, capacity, operator.index(nsa_index_topk))  # numpy ints typed as Python's
    if mapping == "request":
        return (zero_sync_request_kernel, (max(triton.cdiv(batch_size, REQUEST_BLOCK_R), 1),), args,
                dict(CLAMP_PADDED=clamp_padded_rows, BLOCK_R=REQUEST_BLOCK_R,
                     BLOCK_Q=extend_block(batch_size, capacity), PREFIX_BLOCK=REQUEST_PREFIX_BLOCK))
    return (zero_sync_token_kernel, (max(triton.cdiv(capacity, TOKEN_BLOCK_T), 1),), args,
            dict(CLAMP_PADDED=clamp_padded_rows, BLOCK_T=TOKEN_BLOCK_T, BLOCK_R=TOKEN_BLOCK_R))


_TL_DTYPES = {torch.int32: tl.int32, torch.int64: tl.int64}


def pack_plan(kernel, grid, args, kwargs):
    """The same launch with one pointer (``status``) and four biased byte offsets from it."""
    ext, seq, out_expanded, out_cache, status = args[:5]
    packed = {zero_sync_request_kernel: zero_sync_request_packed_kernel,
              zero_sync_token_kernel: zero_sync_token_packed_kernel}[kernel]
    at = [t.data_ptr() - status.data_ptr() + OFFSET_BIAS.value for t in (ext, seq, out_expanded, out_cache)]
    return (packed, grid, (status, *at, *args[5:]),
            dict(kwargs, EXT_DTYPE=_TL_DTYPES[ext.dtype], SEQ_DTYPE=_TL_DTYPES[seq.dtype]))


def _checked_status(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                    out_nsa_cache_seqlens, status, check):
    if check:
        validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens, status=status)
    else:
        check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                     out_nsa_cache_seqlens, status)
    return new_status(seq_lens.device) if status is None else status


def launch_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                     out_nsa_cache_seqlens, status=None, *, mapping="auto",
                     clamp_padded_rows=False, check=False):
    """Fill both buffers with one launch and no host sync; returns the device ``status``.

    ``check=True`` adds the data checks (negative lengths, ``qo_len > kv_len``, capacity)
    at the cost of one device-to-host copy of the lengths, i.e. one sync. Static checks
    (types, shapes, devices) always run: they read tensor metadata only.
    ``clamp_padded_rows=True`` is SGLang's production behaviour for CUDA-graph padding rows
    with ``kv_len < qo_len``: their values are clamped at 0 (consumers read them unsigned).
    """
    status = _checked_status(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                             out_nsa_cache_seqlens, status, check)
    kernel, grid, args, kwargs = plan_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk,
                                                out_seqlens_expanded, out_nsa_cache_seqlens,
                                                status, mapping, clamp_padded_rows)
    kernel[grid](*args, **kwargs)
    return status


class ZeroSyncFill:
    """The serving-loop form: bound once to static buffers, then one direct launch per call.

    A CUDA-graph runner (SGLang's included) owns static input and output buffers whose
    contents change between calls. Binding to them moves validation, planning and Triton's
    per-call dispatch out of the hot path (see ``bound_launch``); ``__call__`` launches and
    returns the device ``status``. ``packed=True`` launches the packed entry point instead (one
    pointer, four offsets: see ``OFFSET_BIAS``): an experiment that did not pay on the H100
    (scripts/launch_cost.py: 17.2 µs of host time per launch against 14.4 µs with five
    pointers), so it is off by default. Same kernel bodies, same results as ``launch_zero_sync``.

    ``check=True`` validates the contents once, when binding (as a CUDA graph captures them);
    calls trust whatever the bound buffers hold then, like ``check=False``: call
    ``launch_zero_sync(..., check=True)`` to check the contents of one call.
    """

    def __init__(self, extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens, status=None, *, mapping="auto", clamp_padded_rows=False,
                 check=False, packed=False):
        self.status = _checked_status(extend_seq_lens, seq_lens, nsa_index_topk,
                                      out_seqlens_expanded, out_nsa_cache_seqlens, status, check)
        plan = plan_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                              out_nsa_cache_seqlens, self.status, mapping, clamp_padded_rows)
        # The tensors stay referenced by the plans, so the packed byte offsets stay valid.
        self.plain = plan
        self.launch = bind_launch(*(pack_plan(*plan) if packed else plan))

    def __call__(self):
        self.launch()
        return self.status


def fill_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                   out_nsa_cache_seqlens):
    """The ``STAGES`` contract (returns N as an int): checks, launches, then reads N back.

    Returning a host int costs the one sync that ``launch_zero_sync`` avoids; the hot path
    (benchmarks, CUDA graphs, a serving loop) calls ``launch_zero_sync`` directly.
    """
    status = launch_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                              out_nsa_cache_seqlens, check=True)
    return int(status[0])
