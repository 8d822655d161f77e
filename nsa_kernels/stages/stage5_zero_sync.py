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
import threading

import triton
import triton.language as tl

from ..device_helpers import load_length
from ..launcher import LaunchPlan, PlanCache, UnhashableKey, bind_plan
from ..validation import FillStatus, check_static, new_status, status_buffer, validate

INT32_MAX = tl.constexpr(2**31 - 1)


@triton.jit
def _store_status(status_ptr, total, capacity):
    """``[N, overflow]`` (``FillStatus``, in its order) from the int64 total: N saturates at
    INT32_MAX (so a total past int32 never reads as a small N), overflow is set whenever N
    exceeds the capacity."""
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
        base += tl.sum(load_length(ext_ptr, earlier, earlier < first_request), axis=0)
    request = first_request + tl.arange(0, BLOCK_R)
    live = request < batch_size
    qo_len = load_length(ext_ptr, request, live)
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
        qo_len = load_length(ext_ptr, request, live)
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
            total += tl.sum(load_length(ext_ptr, request, request < batch_size), axis=0)
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
    """The ``LaunchPlan`` of the one launch; host-known sizes only, no sync."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    batch_size = extend_seq_lens.shape[0]
    capacity = min(out_seqlens_expanded.shape[0], out_nsa_cache_seqlens.shape[0])
    if mapping == "auto":
        mapping = pick_mapping(batch_size, capacity)
    args = (extend_seq_lens, seq_lens, out_seqlens_expanded, out_nsa_cache_seqlens, status,
            batch_size, capacity, operator.index(nsa_index_topk))  # numpy ints typed as Python's
    if mapping == "request":
        return LaunchPlan(
            zero_sync_request_kernel,
            (max(triton.cdiv(batch_size, REQUEST_BLOCK_R), 1),),
            args,
            dict(
                CLAMP_PADDED=clamp_padded_rows,
                BLOCK_R=REQUEST_BLOCK_R,
                BLOCK_Q=extend_block(batch_size, capacity),
                PREFIX_BLOCK=REQUEST_PREFIX_BLOCK,
            ),
        )
    return LaunchPlan(
        zero_sync_token_kernel,
        (max(triton.cdiv(capacity, TOKEN_BLOCK_T), 1),),
        args,
        dict(CLAMP_PADDED=clamp_padded_rows, BLOCK_T=TOKEN_BLOCK_T, BLOCK_R=TOKEN_BLOCK_R),
    )


def _checked_status(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                    out_nsa_cache_seqlens, status, check):
    if check:
        validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens, status=status)
    else:
        check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                     out_nsa_cache_seqlens, status)
    return new_status(seq_lens.device) if status is None else status


#: Bound launchers of ``launch_zero_sync``, keyed on its arguments' metadata (see ``PlanCache``).
PLANS = PlanCache(maxsize=32)
#: Position of ``status`` in the plan's arguments (both kernels take the same ones).
_STATUS_SLOT = zero_sync_token_kernel.arg_names.index("status_ptr")
assert zero_sync_request_kernel.arg_names.index("status_ptr") == _STATUS_SLOT
_own_status_lock = threading.Lock()


def launch_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                     out_nsa_cache_seqlens, status=None, *, mapping="auto",
                     clamp_padded_rows=False, check=False):
    """Fill both buffers with one launch and no host sync; returns the device ``status``.

    ``check=True`` adds the data checks (negative lengths, ``qo_len > kv_len``, capacity)
    at the cost of one device-to-host copy of the lengths, i.e. one sync. Static checks
    (types, shapes, devices) read tensor metadata only, and their result is cached with the
    launch plan in ``PLANS``: a call whose arguments have the metadata of an earlier call
    (same addresses, shapes, strides, dtypes, devices, ints) skips the checks that passed
    then and the planning, and costs one driver launch. ``status=None`` allocates a new
    status per call (one allocation); pass a status buffer to avoid it.
    ``clamp_padded_rows=True`` is SGLang's production behaviour for CUDA-graph padding rows
    with ``kv_len < qo_len``: their values are clamped at 0 (consumers read them unsigned).
    """
    if check:
        validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens)
    ext, seq, out, cache = extend_seq_lens, seq_lens, out_seqlens_expanded, out_nsa_cache_seqlens
    try:
        # launcher.metadata_key's fields, written out: this is the whole per-call cost.
        key = (
            ext.data_ptr(),
            ext.shape,
            ext.stride(),
            ext.dtype,
            ext.get_device(),
            seq.data_ptr(),
            seq.shape,
            seq.stride(),
            seq.dtype,
            seq.get_device(),
            out.data_ptr(),
            out.shape,
            out.stride(),
            out.dtype,
            out.get_device(),
            cache.data_ptr(),
            cache.shape,
            cache.stride(),
            cache.dtype,
            cache.get_device(),
            nsa_index_topk.__class__,
            nsa_index_topk,
            mapping,
            clamp_padded_rows,
            None
            if status is None
            else (
                status.data_ptr(),
                status.shape,
                status.stride(),
                status.dtype,
                status.get_device(),
            ),
        )
        launch = PLANS.launcher(key, _checked_plan, ext, seq, nsa_index_topk, out, cache, status,
                                mapping, clamp_padded_rows)
    except (AttributeError, UnhashableKey):  # not tensors, or unhashable: uncached, checks name it
        plan = _checked_plan(ext, seq, nsa_index_topk, out, cache, status, mapping,
                             clamp_padded_rows)
        plan()
        return plan.args[_STATUS_SLOT]
    if status is not None:
        launch()
        return status
    status = status_buffer(None, ext.device)
    with _own_status_lock:  # the cached launcher is shared: point it at this call's status
        launch.set_arg(_STATUS_SLOT, status)
        launch()
    return status


def _checked_plan(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                  out_nsa_cache_seqlens, status, mapping, clamp_padded_rows):
    status = _checked_status(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                             out_nsa_cache_seqlens, status, False)
    return plan_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                          out_nsa_cache_seqlens, status, mapping, clamp_padded_rows)


class ZeroSyncFill:
    """The serving-loop form: bound once to static buffers, then one launch per call.

    A CUDA-graph runner (SGLang's included) owns static input and output buffers whose
    contents change between calls. Binding to them moves validation, planning and Triton's
    per-call dispatch out of the hot path: ``__call__`` launches through ``launcher.bind_plan``
    (the driver path where available; ``path`` picks another, see ``launcher``) and returns
    the device ``status``. Same kernels, same results as ``launch_zero_sync``.

    ``check=True`` validates the contents once, when binding (as a CUDA graph captures them);
    calls trust whatever the bound buffers hold then, like ``check=False``: call
    ``launch_zero_sync(..., check=True)`` to check the contents of one call.
    """

    def __init__(self, extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens, status=None, *, mapping="auto", clamp_padded_rows=False,
                 check=False, path=None):
        self.status = _checked_status(extend_seq_lens, seq_lens, nsa_index_topk,
                                      out_seqlens_expanded, out_nsa_cache_seqlens, status, check)
        self.launch = bind_plan(plan_zero_sync(extend_seq_lens, seq_lens, nsa_index_topk,
                                               out_seqlens_expanded, out_nsa_cache_seqlens,
                                               self.status, mapping, clamp_padded_rows), path=path)

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
    return FillStatus.read(status).n_tokens
