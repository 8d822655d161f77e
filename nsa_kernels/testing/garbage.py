"""Garbage lengths: the registry of sync-free entry points and the fixed garbage batches.

Trusted fast paths (``check=False``) fed any lengths (negative, huge, ``qo > kv``, int64
extremes) may compute meaningless values, but must stay inside their buffers and return in
time bounded by the capacity. Two checks share this registry: the hypothesis properties of
``tests/test_garbage_lengths.py`` (canary margins) and ``tests/gpu/test_memcheck.py`` (the same
entry points on exact-size buffers, run under compute-sanitizer). A new sync-free entry point
joins both by adding one ``SyncFreeEntryPoint`` to ``SYNC_FREE_ENTRY_POINTS``.

This module imports every stage and mode it launches; the canary helpers of
``nsa_kernels.testing`` stay free of them.
"""
from collections.abc import Callable
from typing import NamedTuple

import torch

from .._env import DEVICE
from ..compat.sglang import fused_dsa_decode_metadata, fused_dsa_target_verify_metadata
from ..modes import DecodeFill, DraftExtendFill, TargetVerifyFill, launch_draft_extend
from ..modes import extend as extend_mode
from ..stages.stage5_zero_sync import ZeroSyncFill, launch_zero_sync
from ..stages.stage6_full_pipeline import FullPipelineFill, PipelineBuffers, launch_full_pipeline
from ..validation import FILL_STATUS_ENTRIES
from ..validation.modes import DRAFT_EXTEND_STATUS_ENTRIES, DraftExtendStatus
from . import Canary


class SyncFreeEntryPoint(NamedTuple):
    """One sync-free entry point as the garbage-length checks run it.

    ``launch(ext, seq, topk, out_expanded, out_cache, status)`` runs it with ``check=False``
    on canary views: ``out_expanded`` / ``out_cache`` are its expanded-token outputs where it
    has them (their size is its token capacity), ``status`` a 2-entry int32 ``[N, overflow]``.
    An adapter builds every other buffer the entry point needs as a ``Canary`` and asserts
    their margins (and that its other inputs are unchanged) itself before returning.
    ``own_status``: the entry point has no ``[N, overflow]`` int32 status; its adapter checks
    whatever status it has and never hands ``status`` to it (the callers assert it untouched).
    """
    name: str
    launch: Callable
    own_status: bool = False
    #: ``known_bug(ext, seq)``: the reason when these lengths hit a known bug of the entry
    #: point (a hang or a stray write), else None. The generic checks leave such inputs to the
    #: strict-xfail reproducers of ``KNOWN_GARBAGE_BUGS`` (run in a child process, so a hang
    #: costs a timeout, not the test run).
    known_bug: Callable | None = None


def _zero_sync(mapping):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        launch_zero_sync(ext, seq, topk, out_expanded, out_cache, status=status, mapping=mapping)
    return launch


def _zero_sync_fill(mapping):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        ZeroSyncFill(ext, seq, topk, out_expanded, out_cache, status=status, mapping=mapping)()
    return launch


# The adapters' small page tables: width 16 at page size 4; a pool of 8 random rows read
# through valid pool indices (garbage goes into the lengths only).
GARBAGE_WIDTH, GARBAGE_PAGE_SIZE, GARBAGE_POOL_ROWS = 16, 4, 8
#: Per-request extend of the draft-extend adapters (static: every request; varlen: the clamp).
GARBAGE_MAX_EXTEND = 4
#: Flattened page-table entries of the extend adapter's buffers.
GARBAGE_FLAT_CAPACITY = 48
#: Draft tokens per request of the target-verify adapter.
GARBAGE_NEXT_N = 2


def _pool(bs, device):
    """``(req_pool_indices, req_to_token)``: valid indices into a small random int32 pool."""
    g = torch.Generator().manual_seed(bs)
    req_to_token = torch.randint(0, 2**31 - 1, (GARBAGE_POOL_ROWS, GARBAGE_WIDTH), generator=g,
                                 dtype=torch.int32)
    pool = torch.randint(0, GARBAGE_POOL_ROWS, (bs,), generator=g, dtype=torch.int64)
    return pool.to(device), req_to_token.to(device)


def _tables(rows, device):
    """Canary ``page_table_1`` and ``real_page_table`` of ``rows`` rows."""
    return (Canary((rows, GARBAGE_WIDTH), device=device),
            Canary((rows, GARBAGE_WIDTH // GARBAGE_PAGE_SIZE), device=device))


def run_guarded(run, canaries, inputs):
    """``run()``, then every canary's margins intact and every input unchanged."""
    before = {name: t.clone() for name, t in inputs.items()}
    result = run()
    for name, canary in canaries.items():
        canary.assert_margins(name)
    for name, t in inputs.items():
        if not torch.equal(t, before[name]):
            raise AssertionError(f"input {name} was written")
    return result


def _assert_row_status(status, total_len, what):
    """The modes' int64 ``[rows the requests expand to, rows > total_len]``."""
    rows, overflow = DraftExtendStatus.read(status)
    if not (rows >= 0 and overflow == int(rows > total_len)):
        raise AssertionError(f"{what} status {[rows, overflow]} for total_len {total_len}")


def _full_pipeline(bound):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        bs, device = ext.shape[0], ext.device
        pool, req_to_token = _pool(bs, device)
        page_table_1, real_page_table = _tables(out_expanded.shape[0], device)
        canaries = dict(cache_seqlens_int32=Canary(bs, device=device),
                        cu_seqlens_k=Canary(bs + 1, device=device),
                        nsa_cu_seqlens_k=Canary(out_expanded.shape[0] + 1, device=device),
                        page_table_1=page_table_1, real_page_table=real_page_table)
        buffers = PipelineBuffers(
            canaries["cache_seqlens_int32"].view, canaries["cu_seqlens_k"].view, out_expanded,
            out_cache, canaries["nsa_cu_seqlens_k"].view, page_table_1.view, real_page_table.view)
        args = (ext, seq, pool, req_to_token, topk, buffers, GARBAGE_PAGE_SIZE, status)
        run = FullPipelineFill(*args, check=False) if bound else \
            (lambda: launch_full_pipeline(*args, check=False))
        run_guarded(run, canaries, dict(req_pool_indices=pool, req_to_token=req_to_token))
    return launch


def _draft_extend(static, bound):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        bs, device = ext.shape[0], ext.device
        capacity = min(out_expanded.shape[0], out_cache.shape[0])
        # Host ints as a graph runner passes them: the rows its buffers hold.
        total_len = min(capacity, bs * GARBAGE_MAX_EXTEND)
        pool, req_to_token = _pool(bs, device)
        page_table_1, real_page_table = _tables(total_len, device)
        canaries = dict(cache_seqlens=Canary(bs, device=device),
                        cu_seqlens_k=Canary(bs + 1, device=device),
                        dsa_cu_seqlens_k=Canary(total_len + 1, device=device),
                        page_table_1=page_table_1, real_page_table=real_page_table,
                        status=Canary(DRAFT_EXTEND_STATUS_ENTRIES, dtype=torch.int64,
                                      device=device))
        args = (seq, ext, pool, req_to_token, canaries["cache_seqlens"].view,
                canaries["cu_seqlens_k"].view, page_table_1.view, out_expanded, out_cache,
                canaries["dsa_cu_seqlens_k"].view, real_page_table.view, bs, total_len,
                GARBAGE_WIDTH, topk, GARBAGE_PAGE_SIZE, GARBAGE_MAX_EXTEND, capacity)
        kwargs = dict(static_extend_len=static, status=canaries["status"].view, check=False)
        run = DraftExtendFill(*args, **kwargs) if bound else \
            (lambda: launch_draft_extend(*args, **kwargs))
        run_guarded(run, canaries, dict(req_pool_indices=pool, req_to_token=req_to_token))
        _assert_row_status(canaries["status"].view, total_len, "draft_extend")
    return launch


def _decode(bound):
    """SGLang's ``fused_dsa_decode_metadata`` (compat), or a bound ``DecodeFill``."""
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        bs, device = seq.shape[0], seq.device
        pool, req_to_token = _pool(bs, device)
        page_table_1, real_page_table = _tables(bs, device)
        canaries = dict(cache_seqlens=Canary(bs, device=device),
                        cu_seqlens_k=Canary(bs + 1, device=device),
                        dsa_cache_seqlens=Canary(bs, device=device),
                        dsa_cu_seqlens_k=Canary(bs + 1, device=device),
                        page_table_1=page_table_1, real_page_table=real_page_table)
        args = (seq, pool, req_to_token, canaries["cache_seqlens"].view,
                canaries["cu_seqlens_k"].view, page_table_1.view,
                canaries["dsa_cache_seqlens"].view, canaries["dsa_cu_seqlens_k"].view,
                real_page_table.view, bs, GARBAGE_WIDTH, topk, GARBAGE_PAGE_SIZE)
        run = DecodeFill(*args, check=False) if bound else \
            (lambda: fused_dsa_decode_metadata(*args))
        run_guarded(run, canaries, dict(req_pool_indices=pool, req_to_token=req_to_token))
    return launch


def _target_verify(bound):
    """SGLang's ``fused_dsa_target_verify_metadata`` (compat), or a bound ``TargetVerifyFill``."""
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        bs, device = seq.shape[0], seq.device
        rows = bs * GARBAGE_NEXT_N
        pool, req_to_token = _pool(bs, device)
        page_table_1, real_page_table = _tables(rows, device)
        canaries = dict(cache_seqlens=Canary(bs, device=device),
                        cu_seqlens_k=Canary(bs + 1, device=device),
                        seqlens_expanded=Canary(rows, device=device),
                        dsa_cache_seqlens=Canary(rows, device=device),
                        dsa_cu_seqlens_k=Canary(rows + 1, device=device),
                        page_table_1=page_table_1, real_page_table=real_page_table,
                        paged_mqa_ctx_lens_2d=Canary((bs, GARBAGE_NEXT_N), device=device))
        args = (seq, pool, req_to_token, canaries["cache_seqlens"].view,
                canaries["cu_seqlens_k"].view, page_table_1.view,
                canaries["seqlens_expanded"].view, canaries["dsa_cache_seqlens"].view,
                canaries["dsa_cu_seqlens_k"].view, real_page_table.view, bs, GARBAGE_WIDTH, topk,
                GARBAGE_PAGE_SIZE, GARBAGE_NEXT_N, canaries["paged_mqa_ctx_lens_2d"].view)
        run = TargetVerifyFill(*args, check=False) if bound else \
            (lambda: fused_dsa_target_verify_metadata(*args))
        run_guarded(run, canaries, dict(req_pool_indices=pool, req_to_token=req_to_token))
    return launch


def assert_extend_status(status, bs, token_capacity, flat_capacity):
    """Extend's int64 ``[N, sum kv, flags, first invalid request or -1]`` is self-consistent."""
    n, n_flat, flags, first_bad = extend_mode.ExtendStatus.read(status)
    sane = (n >= 0 and n_flat >= 0 and 0 <= flags < 16
            and bool(flags & extend_mode.TOKENS_OVERFLOW) == (n > token_capacity)
            and bool(flags & extend_mode.FLAT_OVERFLOW) == (n_flat > flat_capacity)
            and -1 <= first_bad < bs
            and bool(flags & extend_mode.INVALID_REQUEST) == (first_bad >= 0))
    if not sane:
        raise AssertionError(f"extend status {[n, n_flat, flags, first_bad]} for bs {bs}, "
                             f"capacities {token_capacity} tokens, {flat_capacity} entries")


def _extend(bound):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        bs, device = ext.shape[0], ext.device
        capacity = out_expanded.shape[0]
        pool, req_to_token = _pool(bs, device)
        canaries = {name: Canary(size, device=device) for name, size in (
            ("cu_seqlens_k", bs + 1), ("dsa_cu_seqlens_k", capacity + 1),
            ("topk_indices_offset", capacity), ("indexer_ke", capacity),
            ("token_to_batch_idx", capacity), ("page_table_1_flattened", GARBAGE_FLAT_CAPACITY))}
        canaries["status"] = Canary(extend_mode.STATUS_ENTRIES, dtype=torch.int64, device=device)
        views = {name: canary.view for name, canary in canaries.items()}
        status_view = views.pop("status")
        buffers = extend_mode.ExtendBuffers(seqlens_expanded=out_expanded,
                                            dsa_cache_seqlens=out_cache, **views)
        args = (seq, ext, pool, req_to_token, topk, buffers, status_view)
        run = extend_mode.ExtendFill(*args, check=False) if bound else \
            (lambda: extend_mode.launch_extend(*args, check=False))
        run_guarded(run, canaries, dict(req_pool_indices=pool, req_to_token=req_to_token))
        assert_extend_status(status_view, bs, buffers.token_capacity, buffers.flat_capacity)
    return launch


#: Every sync-free entry point. A new mode or stage joins every garbage-length check (the
#: hypothesis properties and the memcheck run) by adding one adapter here.
SYNC_FREE_ENTRY_POINTS = [
    SyncFreeEntryPoint("launch_zero_sync[request]", _zero_sync("request")),
    SyncFreeEntryPoint("launch_zero_sync[token]", _zero_sync("token")),
    SyncFreeEntryPoint("launch_zero_sync[auto]", _zero_sync("auto")),
    SyncFreeEntryPoint("ZeroSyncFill[request]", _zero_sync_fill("request")),
    SyncFreeEntryPoint("ZeroSyncFill[token]", _zero_sync_fill("token")),
    SyncFreeEntryPoint("launch_full_pipeline", _full_pipeline(bound=False)),
    SyncFreeEntryPoint("FullPipelineFill", _full_pipeline(bound=True)),
    SyncFreeEntryPoint("launch_draft_extend[static]", _draft_extend(True, False), True),
    SyncFreeEntryPoint("launch_draft_extend[varlen]", _draft_extend(False, False), True),
    SyncFreeEntryPoint("DraftExtendFill[static]", _draft_extend(True, True), True),
    SyncFreeEntryPoint("DraftExtendFill[varlen]", _draft_extend(False, True), True),
    SyncFreeEntryPoint("fused_dsa_decode_metadata", _decode(bound=False), True),
    SyncFreeEntryPoint("DecodeFill", _decode(bound=True), True),
    SyncFreeEntryPoint("fused_dsa_target_verify_metadata", _target_verify(bound=False), True),
    SyncFreeEntryPoint("TargetVerifyFill", _target_verify(bound=True), True),
    SyncFreeEntryPoint("launch_extend", _extend(bound=False), True),
    SyncFreeEntryPoint("ExtendFill", _extend(bound=True), True),
]

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
#: Length values that broke (or could break) a kernel's arithmetic: signs, int32 and int64 edges.
GARBAGE_EXTREMES = [INT64_MIN, INT64_MIN + 1, INT32_MIN - 1, INT32_MIN, INT32_MIN + 1, -7, -1, 0,
                    1, 2, 5, 2**20, INT32_MAX - 1, INT32_MAX, 2**31, 2**32 + 7, 2**62,
                    INT64_MAX - 1, INT64_MAX]

#: ``(name, ext, seq, dtype, topk, capacity)``: fixed garbage batches (the status wrap and the
#: int64 wraps first), for runs without hypothesis (compute-sanitizer's); dtype is that of both
#: length tensors.
GARBAGE_CASES = [
    (
        "status wraps: ext [2**31-1, 1], capacity 8",
        [INT32_MAX, 1],
        [INT32_MAX, 1],
        torch.int32,
        8,
        8,
    ),
    ("seq 2**32+7 wraps", [2], [2**32 + 7], torch.int64, 2048, 2),
    ("one request of 10**6, capacity 4", [10**6], [10**6], torch.int32, 2048, 4),
    ("one request of 2**31-1, capacity 4", [INT32_MAX], [INT32_MAX], torch.int32, 2048, 4),
    ("int64 extremes", [INT64_MAX, INT64_MAX, 3], [INT64_MIN, 0, INT64_MAX], torch.int64, 2048, 5),
    ("sum past 2**64", [2**62] * 5, [1] * 5, torch.int64, 1, 3),
    ("negative lengths", [-5, 7, INT32_MIN, 9], [3, 2, 1, INT32_MAX], torch.int32, INT32_MAX, 12),
    ("qo > kv everywhere", [9, 9, 9], [1, 0, -3], torch.int32, 4, 27),
    ("capacity 0", [3, 2**40], [3, 5], torch.int64, 8, 0),
    # One request and nothing to write (no rows; an empty context too): the small-bs edge of
    # the flat pass and of the page tiles.
    ("bs 1, no rows", [0], [5], torch.int64, 8, 0),
    ("bs 1, empty context and no rows", [0], [0], torch.int32, 2048, 0),
    ("bs 1, empty context", [1], [0], torch.int32, 8, 4),
    (
        "bs 300 mixed garbage",
        [INT32_MAX, -1, 3] * 100,
        [0, INT32_MIN, 7] * 100,
        torch.int32,
        16,
        300,
    ),
    (
        "bs 300, prefix past 2**31 in the second request block",
        [2**24] * 300,
        [2**24] * 300,
        torch.int32,
        2048,
        1000,
    ),
]


#: ``(entry point name, ext, seq, dtype, topk, capacity, reason)``: minimal reproducers of
#: known bugs, run as strict xfails (they must fail until the bug is fixed).
KNOWN_GARBAGE_BUGS = []

#: Bugs found by these checks and fixed, kept as regressions (run in a child process: if one
#: comes back as a hang, it costs a timeout, not the test run). Stage 6 summed unclamped int64
#: lengths: ext = [2**62] * 4 wrapped the fourth request's prefix past 2**63 and its row loop
#: ran ~2**53 masked trips.
FIXED_GARBAGE_BUGS = [
    ("launch_full_pipeline", [2**62] * 4, [1] * 4, torch.int64, 1, 3, "stage 6 prefix wrap"),
    ("FullPipelineFill", [2**62] * 4, [1] * 4, torch.int64, 1, 3, "stage 6 prefix wrap"),
]


def entry_point(name):
    """The ``SyncFreeEntryPoint`` called ``name``."""
    for entry in SYNC_FREE_ENTRY_POINTS:
        if entry.name == name:
            return entry
    raise KeyError(name)


def launch_on_canaries(entry, ext, seq, topk, capacity, cache_capacity=None):
    """One launch of ``entry`` on canary outputs ``capacity`` long (the cache ``cache_capacity``
    when given) and a canary ``[N, overflow]`` status; raises AssertionError on a stray write or
    modified lengths. Returns ``(status list, out, cache)``: the status None for ``own_status``
    (the one it was not given must be untouched), the outputs as ``Canary``."""
    device = ext.device
    out = Canary(capacity, device=device)
    cache = Canary(capacity if cache_capacity is None else cache_capacity, device=device)
    status = Canary(FILL_STATUS_ENTRIES, device=device)
    before = ext.clone(), seq.clone()
    entry.launch(ext, seq, topk, out.view, cache.view, status.view)
    out.assert_margins("out_seqlens_expanded")
    cache.assert_margins("out_nsa_cache_seqlens")
    status.assert_margins("status")
    if not (torch.equal(ext, before[0]) and torch.equal(seq, before[1])):
        raise AssertionError("the lengths were written")
    if entry.own_status:
        status.assert_unchanged("the [N, overflow] status it was not given")
        return None, out, cache
    return status.view.tolist(), out, cache


def run_garbage_case(name, ext, seq, dtype, topk, capacity, device=DEVICE):
    """``launch_on_canaries`` of entry point ``name`` on length lists; returns the status."""
    ext = torch.tensor(ext, dtype=dtype, device=device)
    seq = torch.tensor(seq, dtype=dtype, device=device)
    return launch_on_canaries(entry_point(name), ext, seq, topk, capacity)[0]


def status_is_sane(status, capacity):
    """A status read back after any launch: N in 0..INT32_MAX, overflow == (N > capacity)."""
    n, overflow = status
    return 0 <= n <= INT32_MAX and overflow == int(n > capacity)
