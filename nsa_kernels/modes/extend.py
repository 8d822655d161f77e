"""Extend (prefill, chunked prefill with cached prefixes): every metadata array in one launch.

SGLang builds these eagerly with Python loops over the batch (see
``nsa_kernels.peers.sglang_extend``). Here one launch fills all of them, with no host sync:

* Programs ``(g, s)``: group g owns ``BLOCK_R`` consecutive requests; the ``splits`` programs
  of a group share the group's tokens and flattened page-table entries block by block (program
  s takes blocks s, s + splits, ...), whatever their split between requests: one request with a
  1M-token context is spread over many programs, a batch of 16384 short ones over many groups.
  A lane finds its request by comparing against the group's ``BLOCK_R`` start offsets.
* Offsets: a group adds up the lengths of the earlier groups with wide loads (``BLOCK_SCAN``
  requests per load: at most 4 loop trips at bs = 16384), then ``tl.cumsum`` over its own
  ``BLOCK_R``; no program waits for another. The bytes read still grow with bs (12 B per
  earlier request, ~50 MB of L2 reads over all 512 groups at bs = 16384); a decoupled
  look-back scan would remove that at the price of cross-program waits. The prefix of the
  clamped lengths (``dsa_cu_seqlens_k``) has a closed form per request, an arithmetic series
  clipped at topk.
* Everything sized by the device lengths is bounded by the buffers' capacities: a request's
  tokens and entries are written only below the capacity, and its loops stop there, so garbage
  lengths with ``check=False`` cost at most the capacity and never write outside the buffers.
  Offsets are 64-bit: a table row's start (pool row x row stride) passes 2^31 with 1M-token
  rows, and garbage lengths must not wrap.
* The device ``status`` (int64): ``[N, sum kv, flags, first invalid request or -1]``; flags are
  ``TOKENS_OVERFLOW | FLAT_OVERFLOW | INT32_OVERFLOW | INVALID_REQUEST | TOKENS_MISMATCH |
  FLAT_MISMATCH``. It is written by the last group's first program alone, which holds the
  totals and scans the batch for bad rows. Its layout (``ExtendStatus``) and flags live in
  ``validation.extend``, beside the checks whose rules they report.
* The kernel is the judge of sizes the host derived from its own copy of the lengths (SGLang's
  ``seq_lens_cpu`` / ``extend_seq_lens_cpu``): given the N and sum kv the host expects
  (``expected_tokens`` / ``expected_flat``, -1 for none), it sets ``TOKENS_MISMATCH`` /
  ``FLAT_MISMATCH`` when the device lengths add up to other totals. ``extend_metadata`` sizes
  its outputs from the mirrors and raises on either flag; a bound fill given
  ``expect_sizes=True`` expects its buffers' capacities, and a server reads the flags from
  ``status[2]`` (``decode_status``) before it trusts rows ``[:N]`` of them.

Block sizes are fixed; bs, capacities, widths and topk are run-time arguments Triton does not
specialise on, so a sweep over bs and lengths compiles one variant per dtype combination.
"""
import functools
import operator
import threading
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .._env import INTERPRET
from ..device_helpers import clamp_length, clamped_prefix
from ..launcher import (
    BoundedCache,
    LaunchPlan,
    PlanCache,
    UnhashableKey,
    bind_plan,
    metadata_key,
)
from ..validation import extend as checks
from ..validation.core import as_index
from ..validation.extend import (
    FLAT_MISMATCH,
    FLAT_OVERFLOW,
    INT32_OVERFLOW,
    INVALID_REQUEST,
    STATUS_ENTRIES,
    TOKENS_MISMATCH,
    TOKENS_OVERFLOW,
    ExtendStatus,
)
from .extend_reference import EXTEND_KEYS

BLOCK_R = 32
BLOCK_SCAN = 4096
# The interpreter pays per operation, not per lane: there, wide blocks run fastest. On sm_90
# these sizes keep the one-hot tiles at 128 registers a thread, no spills (two CTAs per SM).
BLOCK_T = 2048 if INTERPRET else 128
BLOCK_F = 4096 if INTERPRET else 256
#: Programs the plan aims for on a GPU (a few per SM of an H100); the interpreter runs programs
#: one after another, so there one split per group is fastest.
TARGET_PROGRAMS = 1 if INTERPRET else 528
MAX_SPLITS = 1024
# A lane's [block, BLOCK_R] one-hot tiles are spread over 256 threads to keep them in registers.
NUM_WARPS = 8
#: What the GPU build compiles with (the interpreter's block sizes differ; see above).
GPU_CONSTEXPRS = dict(BLOCK_R=BLOCK_R, BLOCK_SCAN=BLOCK_SCAN, BLOCK_T=128, BLOCK_F=256)


@triton.jit
def _lengths(ext_ptr, seq_ptr, pool_ptr, request, live, width, pool_rows, WITH_POOL: tl.constexpr):
    """(qo, kv, pool, bad) of ``request`` lanes: lengths clipped to [0, 2^31] as int64, and
    (``WITH_POOL``) the pool rows and whether each live request is invalid (negative,
    qo > kv, kv past the table, bad row)."""
    qo = tl.load(ext_ptr + request, mask=live, other=0).to(tl.int64)
    kv = tl.load(seq_ptr + request, mask=live, other=0).to(tl.int64)
    if WITH_POOL:
        pool = tl.load(pool_ptr + request, mask=live, other=0).to(tl.int64)
    else:
        pool = tl.zeros_like(qo)
    bad = live & ((qo < 0) | (kv < 0) | (qo > kv) | (kv > width) | (pool < 0) | (pool >= pool_rows))
    return clamp_length(qo), clamp_length(kv), pool, bad


class ExtendArgs(NamedTuple):
    """The kernel's run-time arguments by name, in order (``plan.args``): a per-call re-point
    names the argument it moves instead of a slot number."""

    seq_ptr: object
    ext_ptr: object
    pool_ptr: object
    r2t_ptr: object
    r2t_stride: int
    pool_rows: int
    width: int
    expanded_ptr: object  # the eight ExtendBuffers fields, in field order
    dsa_cache_ptr: object
    cu_k_ptr: object
    dsa_cu_ptr: object
    offset_ptr: object
    ke_ptr: object
    batch_idx_ptr: object
    flat_ptr: object
    status_ptr: object
    batch_size: int
    token_capacity: int
    flat_capacity: int
    dsa_index_topk: int
    expected_tokens: int  # the N the host expects, -1 for none (module doc)
    expected_flat: int


#: Position of each run-time argument in ``plan.args``.
SLOT = {name: i for i, name in enumerate(ExtendArgs._fields)}
_INPUT_SLOTS = tuple(SLOT[n] for n in ("seq_ptr", "ext_ptr", "pool_ptr", "r2t_ptr"))
_OUTPUT_SLOTS = tuple(range(SLOT["expanded_ptr"], SLOT["flat_ptr"] + 1))


# Nothing is specialised on values: not the ints (== 1, % 16), nor the pointers' 16-byte
# alignment (carved views and row starts are unaligned anyway), so one variant per dtype set.
@triton.jit(do_not_specialize=list(ExtendArgs._fields))
def extend_metadata_kernel(
    seq_ptr, ext_ptr, pool_ptr, r2t_ptr, r2t_stride, pool_rows, width,
    expanded_ptr, dsa_cache_ptr, cu_k_ptr, dsa_cu_ptr, offset_ptr, ke_ptr, batch_idx_ptr,
    flat_ptr, status_ptr, batch_size, token_capacity, flat_capacity, dsa_index_topk,
    expected_tokens, expected_flat, BLOCK_R: tl.constexpr, BLOCK_SCAN: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr,
):
    g = tl.program_id(0)
    s = tl.program_id(1)
    splits = tl.num_programs(1)
    topk = dsa_index_topk.to(tl.int64)
    group_start = g * BLOCK_R
    tokens_before = tl.full((), 0, tl.int64)
    kv_before = tl.full((), 0, tl.int64)
    dsa_before = tl.full((), 0, tl.int64)
    for r0 in range(0, group_start, BLOCK_SCAN):
        request = r0 + tl.arange(0, BLOCK_SCAN)
        qo_e, kv_e, pool_e, bad_e = _lengths(
            ext_ptr, seq_ptr, pool_ptr, request, request < group_start, width, pool_rows, False
        )
        tokens_before += tl.sum(qo_e, axis=0)
        kv_before += tl.sum(kv_e, axis=0)
        dsa_before += tl.sum(
            clamped_prefix(kv_e, topk) - clamped_prefix(kv_e - qo_e, topk), axis=0
        )
    lane = tl.arange(0, BLOCK_R)
    request = group_start + lane
    live = request < batch_size
    qo, kv, pool, group_bad = _lengths(
        ext_ptr, seq_ptr, pool_ptr, request, live, width, pool_rows, True
    )
    dsa = clamped_prefix(kv, topk) - clamped_prefix(kv - qo, topk)
    kv_end = kv_before + tl.cumsum(kv, axis=0)
    token_start = tokens_before + tl.cumsum(qo, axis=0) - qo
    kv_start = kv_end - kv
    dsa_start = dsa_before + tl.cumsum(dsa, axis=0) - dsa
    if s == 0:
        tl.store(cu_k_ptr + request + 1, kv_end.to(tl.int32), mask=live)
        if g == 0:
            tl.store(cu_k_ptr, 0)
            tl.store(dsa_cu_ptr, 0)
        if group_start + BLOCK_R >= batch_size:
            n_tokens = tokens_before + tl.sum(qo, axis=0)
            n_flat = kv_before + tl.sum(kv, axis=0)
            dsa_total = dsa_before + tl.sum(dsa, axis=0)
            # Only this program looks for invalid requests (the others need no pool indices
            # from earlier groups): one more pass over the batch.
            first_bad = tl.full((), 2147483647, tl.int32)
            for b0 in range(0, batch_size, BLOCK_SCAN):
                scan = b0 + tl.arange(0, BLOCK_SCAN)
                qo_s, kv_s, pool_s, bad = _lengths(
                    ext_ptr, seq_ptr, pool_ptr, scan, scan < batch_size, width, pool_rows, True
                )
                first_bad = tl.minimum(first_bad, tl.min(tl.where(bad, scan, 2147483647), axis=0))
            past_int32 = (n_tokens > 2147483647) | (n_flat > 2147483647) | (dsa_total > 2147483647)
            flags = (
                (n_tokens > token_capacity).to(tl.int64) * 1
                + (n_flat > flat_capacity).to(tl.int64) * 2
                + past_int32.to(tl.int64) * 4
                + (first_bad < 2147483647).to(tl.int64) * 8
                + ((expected_tokens >= 0) & (n_tokens != expected_tokens)).to(tl.int64) * 16
                + ((expected_flat >= 0) & (n_flat != expected_flat)).to(tl.int64) * 32
            )
            tl.store(status_ptr, n_tokens)
            tl.store(status_ptr + 1, n_flat)
            tl.store(status_ptr + 2, flags)
            tl.store(status_ptr + 3, tl.where(first_bad < 2147483647, first_bad.to(tl.int64), -1))
    # The group's tokens, then its flattened entries, block by block (program s takes blocks
    # s, s + splits, ...); each lane finds its request among the group's BLOCK_R by comparing
    # against their local start offsets (a [block, BLOCK_R] one-hot, reduced per needed value).
    # Local offsets stop at the capacity, so they fit int32 and bound the loops.
    tokens_local = tl.minimum(tl.sum(qo, axis=0), tl.maximum(token_capacity - tokens_before, 0)).to(
        tl.int32
    )
    q_lo = tl.minimum(token_start - tokens_before, 2147483647).to(tl.int32)
    q_hi = tl.minimum(token_start - tokens_before + qo, 2147483647).to(tl.int32)
    seen_base = (kv - qo + 1).to(tl.int32) - q_lo
    dsa_base = dsa_start - clamped_prefix(kv - qo, topk)
    kv_start32 = kv_start.to(tl.int32)
    for t0 in range(s * BLOCK_T, tokens_local, splits * BLOCK_T):
        local = t0 + tl.arange(0, BLOCK_T)
        mask = local < tokens_local
        hit = (local[:, None] >= q_lo[None, :]) & (local[:, None] < q_hi[None, :])
        seen = tl.sum(tl.where(hit, seen_base[None, :], 0), axis=1) + local
        offset = tl.sum(tl.where(hit, kv_start32[None, :], 0), axis=1)
        owner = tl.sum(tl.where(hit, request[None, :], 0), axis=1)
        dsa_row = tl.sum(tl.where(hit, dsa_base[None, :], 0), axis=1)
        row = tokens_before + local
        tl.store(expanded_ptr + row, seen, mask=mask)
        tl.store(dsa_cache_ptr + row, tl.minimum(seen, dsa_index_topk), mask=mask)
        tl.store(
            dsa_cu_ptr + row + 1,
            (dsa_row + clamped_prefix(seen.to(tl.int64), topk)).to(tl.int32),
            mask=mask,
        )
        tl.store(offset_ptr + row, offset, mask=mask)
        tl.store(ke_ptr + row, offset + seen, mask=mask)
        tl.store(batch_idx_ptr + row, owner, mask=mask)
    # Flattened page table: entries past a request's table row or of a request with a bad pool
    # row are neither read nor written (only garbage lengths get there).
    flat_local = tl.minimum(tl.sum(kv, axis=0), tl.maximum(flat_capacity - kv_before, 0)).to(
        tl.int32
    )
    k_lo = tl.minimum(kv_start - kv_before, 2147483647).to(tl.int32)
    k_hi = tl.minimum(kv_end - kv_before, 2147483647).to(tl.int32)
    readable = (live & (pool >= 0) & (pool < pool_rows)).to(tl.int32)
    pool32 = tl.where(readable != 0, pool, 0).to(tl.int32)
    for f0 in range(s * BLOCK_F, flat_local, splits * BLOCK_F):
        local = f0 + tl.arange(0, BLOCK_F)
        hit = (local[:, None] >= k_lo[None, :]) & (local[:, None] < k_hi[None, :])
        column = local - tl.sum(tl.where(hit, k_lo[None, :], 0), axis=1)
        row = tl.sum(tl.where(hit, pool32[None, :], 0), axis=1).to(tl.int64)
        ok = tl.sum(tl.where(hit, readable[None, :], 0), axis=1) != 0
        mask = (local < flat_local) & ok & (column < width)
        values = tl.load(r2t_ptr + row * r2t_stride + column, mask=mask, other=0)
        tl.store(flat_ptr + kv_before + local, values.to(tl.int32), mask=mask)


@dataclass
class ExtendBuffers:
    """Pre-allocated int32 outputs, as a CUDA-graph runner holds them.

    Capacities: ``max_bs`` requests (``cu_seqlens_k`` holds ``max_bs + 1``), ``max_tokens``
    expanded tokens (``dsa_cu_seqlens_k`` holds ``max_tokens + 1``) and ``max_flat`` flattened
    page-table entries (sum of kv).
    """

    seqlens_expanded: torch.Tensor
    dsa_cache_seqlens: torch.Tensor
    cu_seqlens_k: torch.Tensor
    dsa_cu_seqlens_k: torch.Tensor
    topk_indices_offset: torch.Tensor
    indexer_ke: torch.Tensor
    token_to_batch_idx: torch.Tensor
    page_table_1_flattened: torch.Tensor

    @staticmethod
    def sizes(bs, n_tokens, n_flat):
        """Entries of each buffer, in field order, for bs requests, N tokens, sum kv entries."""
        return (n_tokens, n_tokens, bs + 1, n_tokens + 1, n_tokens, n_tokens, n_tokens, n_flat)

    @classmethod
    def allocate(cls, max_bs, max_tokens, max_flat, device="cpu", fill=None):
        """``fill=None`` leaves them uninitialised (``torch.empty``), as a runner would."""
        if fill is None:
            return cls(*(torch.empty(n, dtype=torch.int32, device=device)
                         for n in cls.sizes(max_bs, max_tokens, max_flat)))
        return cls(*(torch.full((n,), fill, dtype=torch.int32, device=device)
                     for n in cls.sizes(max_bs, max_tokens, max_flat)))

    @classmethod
    def carve(cls, block, starts, sizes):
        """Buffers of ``sizes`` carved out of ``block`` at ``starts`` (see ``block_layout``)."""
        return cls(*(block[start : start + size] for start, size in zip(starts, sizes)))

    @classmethod
    def allocate_exact(cls, bs, n_tokens, n_flat, device):
        """Exactly-sized buffers and a status carved out of one allocation (one allocator call
        instead of nine: the allocating form is timed eagerly)."""
        sizes = cls.sizes(bs, n_tokens, n_flat)
        starts, total = block_layout(sizes)
        block = torch.empty(total, dtype=torch.int32, device=device)
        return cls.carve(block, starts, sizes), block[starts[-1]:].view(torch.int64)

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def token_capacity(self):
        return min(
            self.seqlens_expanded.shape[0],
            self.dsa_cache_seqlens.shape[0],
            self.dsa_cu_seqlens_k.shape[0] - 1,
            self.topk_indices_offset.shape[0],
            self.indexer_ke.shape[0],
            self.token_to_batch_idx.shape[0],
        )

    @property
    def flat_capacity(self):
        return self.page_table_1_flattened.shape[0]

    @property
    def capacities(self):
        """``(token_capacity, flat_capacity)``, as the data checks take them."""
        return self.token_capacity, self.flat_capacity

    def views(self, bs, n_tokens, n_flat):
        """The filled part of every buffer: the dict ``extend_metadata`` returns."""
        return {name: t[:n] for (name, t), n in zip(self.as_dict().items(),
                                                     self.sizes(bs, n_tokens, n_flat))}


def block_layout(sizes):
    """``(starts, total)``: each of ``sizes`` int32 buffers, then an int64 status, carved out of
    one int32 block of ``total`` entries (``starts[-1]`` is the status); every start on a
    16-byte boundary."""
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += -(-size // 4) * 4
    starts.append(total)
    return tuple(starts), total + 2 * STATUS_ENTRIES


assert tuple(f.name for f in fields(ExtendBuffers)) == EXTEND_KEYS


def pick_splits(bs):
    """Programs per group: enough programs in all to fill the GPU; 1 under the interpreter."""
    groups = max(triton.cdiv(bs, BLOCK_R), 1)
    return max(1, min(MAX_SPLITS, TARGET_PROGRAMS // groups))


def plan_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
                buffers, status, splits=None, expected=None):
    """The one launch, from tensor metadata alone (run ``validation.extend.check_static``
    first). ``expected``: the ``(N, sum kv)`` the host expects, flagged in the status when the
    device disagrees."""
    bs = seq_lens.shape[0]
    # The grid's second dimension: 0 would launch nothing and leave the status unwritten.
    splits = pick_splits(bs) if splits is None else as_index(
        "splits", splits, minimum=1, maximum=MAX_SPLITS)
    grid = (max(triton.cdiv(bs, BLOCK_R), 1), splits)
    args = ExtendArgs(
        seq_lens, extend_seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0),
        *req_to_token.shape, *buffers.as_dict().values(), status, bs, buffers.token_capacity,
        buffers.flat_capacity, int(dsa_index_topk), *((-1, -1) if expected is None else expected))
    kwargs = dict(BLOCK_R=BLOCK_R, BLOCK_SCAN=BLOCK_SCAN, BLOCK_T=BLOCK_T, BLOCK_F=BLOCK_F,
                  num_warps=NUM_WARPS)
    return LaunchPlan(extend_metadata_kernel, grid, tuple(args), kwargs)


def variant_key(plan):
    """What Triton would compile a new variant for: constexprs, tensor dtypes, and int arguments
    past int32 (typed i64). Values themselves are never specialised (see ``do_not_specialize``)."""
    return (tuple(sorted(plan.kwargs.items())),
            tuple(str(a.dtype) if isinstance(a, torch.Tensor)
                  else ("i64" if abs(a) > checks.INT32_MAX else "i32") for a in plan.args))


class ExtendCall(NamedTuple):
    """One call of a bound or per-call extend fill, as ``_prepare`` checks and plans it."""

    seq_lens: torch.Tensor
    extend_seq_lens: torch.Tensor
    req_pool_indices: torch.Tensor
    req_to_token: torch.Tensor
    dsa_index_topk: int
    buffers: "ExtendBuffers"
    status: torch.Tensor = None
    check: bool = False
    splits: int = None
    expect_sizes: bool = False

    @property
    def inputs(self):
        return self.seq_lens, self.extend_seq_lens, self.req_pool_indices, self.req_to_token


def _prepare(call):
    """Static checks (and data checks with ``call.check``), then the plan; raises before any
    write. A status is allocated when the call passes none."""
    buffers, status = call.buffers, call.status
    if not isinstance(buffers, ExtendBuffers):
        raise TypeError(f"buffers must be an ExtendBuffers, got {type(buffers).__name__}")
    topk = checks.check_static(*call.inputs, call.dsa_index_topk, buffers.as_dict(), status,
                               STATUS_ENTRIES)
    if status is None:
        status = torch.empty(STATUS_ENTRIES, dtype=torch.int64, device=call.seq_lens.device)
    if call.check:
        checks.check_data(*call.inputs, topk, buffers.capacities)
    if type(call.expect_sizes) is not bool:
        raise TypeError(f"expect_sizes must be a bool, got {type(call.expect_sizes).__name__}")
    expected = buffers.capacities if call.expect_sizes else None
    return plan_extend(*call.inputs, topk, buffers, status, call.splits, expected)


#: Bound launchers of ``launch_extend``, keyed on the metadata of every argument.
PLANS = PlanCache(maxsize=32)
#: Bound launchers of ``extend_metadata``, keyed on the inputs' layout (no addresses) and the
#: outputs' bucketed capacities: every pointer is re-set per call (see ``extend_metadata``).
ALLOCATING_PLANS = PlanCache(maxsize=32)
#: The input layouts whose static checks passed (``_layout_key`` -> topk).
CHECKED_INPUTS = BoundedCache(maxsize=256)
_rebind_lock = threading.Lock()  # a cached launcher is shared: re-point and launch as one


def launch_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
                  buffers, status=None, *, check=False, splits=None, expect_sizes=False):
    """Fill ``buffers`` in one launch; returns the device status (see the module doc).

    ``expect_sizes=True``: the buffers were sized from the host's copy of the lengths (token
    buffers of exactly N, the flattened table of exactly sum kv), and the status flags
    ``TOKENS_MISMATCH`` / ``FLAT_MISMATCH`` when the device lengths add up to other totals.

    ``check=True`` adds the data checks (device-to-host copies). Without it the data are
    trusted, as in a CUDA-graph replay: no sync, and whatever the lengths, writes stay inside
    the buffers and work stays bounded by their capacities; read the status to learn of it.
    The static checks and the plan are cached in ``PLANS`` on the metadata of every argument:
    a repeated call costs one launch (plus one status allocation with ``status=None``).
    """
    call = ExtendCall(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
                      buffers, status, False, splits, expect_sizes)
    try:
        b = buffers  # the fields by name: dataclasses.fields() per call costs more than this
        key = metadata_key(
            *call.inputs, dsa_index_topk, splits, expect_sizes, status is None,
            b.seqlens_expanded, b.dsa_cache_seqlens, b.cu_seqlens_k, b.dsa_cu_seqlens_k,
            b.topk_indices_offset, b.indexer_ke, b.token_to_batch_idx, b.page_table_1_flattened,
            *(() if status is None else (status,)))
        # A miss runs the static checks and plans; a hit means they passed for this metadata.
        launch = PLANS.launcher(key, _prepare, call)
    except (AttributeError, UnhashableKey):  # not buffers, or arguments of the wrong kind:
        plan = _prepare(call._replace(check=check))  # uncached, so that the checks name them
        plan()
        return plan.args[SLOT["status_ptr"]]
    if check:  # contents change between calls: the data checks run every time, before launching
        checks.check_data(*call.inputs, operator.index(dsa_index_topk), buffers.capacities)
    if status is not None:
        launch()
        return status
    status = torch.empty(STATUS_ENTRIES, dtype=torch.int64, device=seq_lens.device)
    with _rebind_lock:
        launch.set_arg(SLOT["status_ptr"], status)
        launch()
    return status


class ExtendFill:
    """Checked and planned once against static buffers; each call is one bound launch that
    returns the device status. ``expect_sizes`` as in ``launch_extend``: a server that sizes
    the buffers from its host mirrors reads ``status[2] & (TOKENS_MISMATCH | FLAT_MISMATCH)``
    (``decode_status``) before it trusts their contents."""

    def __init__(self, seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
                 buffers, status=None, *, check=False, splits=None, expect_sizes=False):
        plan = _prepare(ExtendCall(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                                   dsa_index_topk, buffers, status, check, splits, expect_sizes))
        self.status = plan.args[SLOT["status_ptr"]]
        self.buffers = buffers
        self.launch = bind_plan(plan)

    def __call__(self):
        self.launch()
        return self.status


def extend_metadata(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk,
                    *, seq_lens_cpu=None, extend_seq_lens_cpu=None, check=False):
    """Every extend key (int32) in freshly allocated tensors, as SGLang's eager path returns them.

    The outputs are sized by N and sum(kv), which the host must know: pass SGLang's host mirrors
    ``seq_lens_cpu`` / ``extend_seq_lens_cpu`` (the forward batch holds them); without them the
    lengths are read from the device once (one sync). The lengths are checked on the host
    either way (free once they are there); ``check=True`` also checks the pool indices and an
    int64 ``req_to_token``'s live values (more device reads). With mirrors, the kernel compares
    the totals it computes with theirs and the status is read once (one sync) before anything
    is returned: a stale mirror raises ``ValueError`` naming it.

    Per-call cost: the static checks and the plan are cached in ``ALLOCATING_PLANS`` on the
    inputs' layout (shapes, strides, dtypes, devices, topk; not their addresses) and on the
    outputs' capacities, rounded up to a few buckets per power of two so that changing lengths
    reuse a plan. The outputs come from one allocation sized by those capacities; each call
    re-points the cached launcher at this call's inputs, outputs and status. The outputs are
    our own fresh allocation: they cannot overlap the inputs, so no overlap check is needed.
    """
    inputs = (seq_lens, extend_seq_lens, req_pool_indices, req_to_token)
    try:
        layout = _layout_key(*inputs, dsa_index_topk)
        if dsa_index_topk.__class__ is not int:  # a bool, a numpy or tensor scalar: checked
            raise UnhashableKey("checked per call")
        topk = CHECKED_INPUTS.get_or_build(layout, checks.check_inputs, *inputs, dsa_index_topk)
    except (AttributeError, UnhashableKey):  # not tensors, or an unusual topk: the checks name it
        topk = checks.check_inputs(*inputs, dsa_index_topk)
        layout = _layout_key(*inputs, topk)
    n_tokens, n_flat = checks.check_data(*inputs, topk, None, seq_lens_cpu, extend_seq_lens_cpu,
                                         table_values=check)
    bs = seq_lens.shape[0]
    token_capacity, flat_capacity = capacity_bucket(n_tokens), capacity_bucket(n_flat)
    starts, total = _output_layout(bs, token_capacity, flat_capacity)
    block = torch.empty(total, dtype=torch.int32, device=seq_lens.device)
    outputs = ExtendBuffers.carve(block, starts, ExtendBuffers.sizes(bs, n_tokens, n_flat))
    status = block[starts[-1]:].view(torch.int64)
    launch = ALLOCATING_PLANS.launcher(layout + (token_capacity, flat_capacity), _capacity_plan,
                                       *inputs, topk, block, starts, token_capacity,
                                       flat_capacity, status)
    with _rebind_lock:
        for slot, t in zip(_INPUT_SLOTS, inputs):
            launch.set_arg(slot, t)
        for slot, t in zip(_OUTPUT_SLOTS, outputs.as_dict().values()):
            launch.set_arg(slot, t)
        launch.set_arg(SLOT["status_ptr"], status)
        launch.set_arg(SLOT["expected_tokens"], n_tokens)
        launch.set_arg(SLOT["expected_flat"], n_flat)
        launch()
    if seq_lens_cpu is not None and extend_seq_lens_cpu is not None:
        # The outputs were sized from the mirrors: the one read of the status (a sync) tells
        # whether the device agrees, before any of them is handed out.
        checks.raise_on_mirror_mismatch(status, n_tokens, n_flat)
    return outputs.as_dict()


def _layout_key(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk):
    """What ``check_inputs`` and the plan read of the inputs: everything but the addresses (the
    kernel specialises on none, see ``do_not_specialize``)."""
    return tuple(field for t in (seq_lens, extend_seq_lens, req_pool_indices, req_to_token)
                 for field in (t.shape, t.stride(), t.dtype, t.device)) \
        + (dsa_index_topk.__class__, dsa_index_topk)


def capacity_bucket(n):
    """``n`` rounded up to one of four steps per power of two (at most a quarter more, in steps
    of at least 16): few distinct capacities, hence few plans, for lengths that change per step."""
    step = 1 << max(n.bit_length() - 3, 4)
    return -(-n // step) * step


@functools.lru_cache(maxsize=256)
def _output_layout(bs, token_capacity, flat_capacity):
    """``block_layout`` of the buffers of these capacities (cached: it runs per call)."""
    return block_layout(ExtendBuffers.sizes(bs, token_capacity, flat_capacity))


def _capacity_plan(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, topk, block,
                   starts, token_capacity, flat_capacity, status):
    """The plan of ``extend_metadata`` for buffers of these capacities, carved out of ``block``."""
    sizes = ExtendBuffers.sizes(seq_lens.shape[0], token_capacity, flat_capacity)
    return plan_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, topk,
                       ExtendBuffers.carve(block, starts, sizes), status)


def decode_status(status):
    """The status as a dict (one device-to-host copy): for tests, notebooks and debugging."""
    n_tokens, n_flat, flags, first_bad = ExtendStatus.read(status)
    return {
        "n_tokens": n_tokens,
        "n_flat": n_flat,
        "tokens_overflow": bool(flags & TOKENS_OVERFLOW),
        "flat_overflow": bool(flags & FLAT_OVERFLOW),
        "int32_overflow": bool(flags & INT32_OVERFLOW),
        "invalid_request": bool(flags & INVALID_REQUEST),
        "tokens_mismatch": bool(flags & TOKENS_MISMATCH),
        "flat_mismatch": bool(flags & FLAT_MISMATCH),
        "first_invalid_request": first_bad if first_bad >= 0 else None,
    }
