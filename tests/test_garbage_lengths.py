"""Trusted fast paths (``check=False``) fed garbage lengths stay inside their buffers, quickly.

Issue 12's property: for every sync-free entry point, lengths that are negative, huge,
``qo > kv`` or at the int64 extremes may produce meaningless values, but the call must return
within a bounded time (work is bounded by the buffers' capacity, not by the lengths) and must
write nothing outside the canary-guarded output and status buffers. Inputs are left unchanged.

To cover a new sync-free entry point, add one line to
``nsa_kernels.testing.SYNC_FREE_ENTRY_POINTS``: a name and a function
``(ext, seq, topk, out_expanded, out_cache, status) -> None`` that launches with check=False.
"""
import time

from nsa_kernels.testing import (
    GARBAGE_CASES,
    GARBAGE_EXTREMES,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    SYNC_FREE_ENTRY_POINTS,
    status_is_sane,
)

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from nsa_testing import DEVICE, Canary, examples

#: (name, launch) of every sync-free entry point. New modes are added (one line each) to
#: nsa_kernels.testing.SYNC_FREE_ENTRY_POINTS, which scripts/memcheck.py shares.
ENTRY_POINTS = SYNC_FREE_ENTRY_POINTS

#: Per-call wall-clock bound under the interpreter (a launch takes milliseconds there; an
#: unbounded loop over a garbage length takes minutes or never ends).
SECONDS_PER_CALL = 20.0


def _length(dtype):
    low, high = (INT32_MIN, INT32_MAX) if dtype == torch.int32 else (INT64_MIN, INT64_MAX)
    return st.one_of(st.sampled_from([v for v in GARBAGE_EXTREMES if low <= v <= high]),
                     st.integers(-8, 40), st.integers(low, high))


@st.composite
def garbage_batches(draw, max_bs=40):
    """``(ext, seq, topk, capacity)``: lengths of any value, valid or not, in either dtype."""
    ext_dtype = draw(st.sampled_from([torch.int32, torch.int64]), label="ext_dtype")
    seq_dtype = draw(st.sampled_from([torch.int32, torch.int64]), label="seq_dtype")
    # Past 128 requests the request mapping runs a second program (prefix across programs).
    bs = draw(st.one_of(st.integers(0, 6), st.integers(0, max_bs), st.sampled_from([129, 200])),
              label="bs")
    ext = draw(st.lists(_length(ext_dtype), min_size=bs, max_size=bs), label="ext")
    seq = draw(st.lists(_length(seq_dtype), min_size=bs, max_size=bs), label="seq")
    topk = draw(st.sampled_from([1, 8, 2048, INT32_MAX]), label="topk")
    capacity = draw(st.one_of(st.integers(0, 40), st.sampled_from([257, 600])), label="capacity")
    return (torch.tensor(ext, dtype=ext_dtype, device=DEVICE),
            torch.tensor(seq, dtype=seq_dtype, device=DEVICE), topk, capacity)


def run_guarded(launch, ext, seq, topk, capacity, cache_capacity=None):
    """Launch on canary buffers; check margins, inputs and time. Returns (status, out, cache)."""
    out = Canary(capacity)
    cache = Canary(capacity if cache_capacity is None else cache_capacity)
    status = Canary(2)
    ext_before, seq_before = ext.clone(), seq.clone()
    started = time.perf_counter()
    launch(ext, seq, topk, out.view, cache.view, status.view)
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS_PER_CALL, f"{elapsed:.1f} s for capacity {capacity}"
    out.assert_margins("out_seqlens_expanded")
    cache.assert_margins("out_nsa_cache_seqlens")
    status.assert_margins("status")
    assert torch.equal(ext, ext_before) and torch.equal(seq, seq_before), "inputs were written"
    return status.view.tolist(), out, cache


def _describe(ext, seq, topk, capacity):
    return (f"bs={ext.numel()} ext({ext.dtype})={ext[:6].tolist()} "
            f"seq({seq.dtype})={seq[:6].tolist()} topk={topk} capacity={capacity}")


def _status_is_sane(status, capacity):
    assert status_is_sane(status, capacity), f"status {status} for capacity {capacity}"


@pytest.mark.parametrize("name, launch", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
@examples(25)
@given(batch=garbage_batches())
@example(batch=(torch.tensor([2**31 - 1, 1], dtype=torch.int32),
                torch.tensor([2**31 - 1, 1], dtype=torch.int32), 8, 8))
@example(batch=(torch.tensor([INT64_MAX, INT64_MAX, 3], dtype=torch.int64),
                torch.tensor([INT64_MIN, 0, INT64_MAX], dtype=torch.int64), 2048, 5))
@example(batch=(torch.tensor([-5, 7, INT32_MIN, 9], dtype=torch.int32),
                torch.tensor([3, 2, 1, INT32_MAX], dtype=torch.int32), INT32_MAX, 12))
@example(batch=(torch.tensor([2**62] * 4, dtype=torch.int64),
                torch.tensor([1] * 4, dtype=torch.int64), 1, 3))
def test_garbage_lengths_stay_inside_buffers(name, launch, batch):
    ext, seq, topk, capacity = batch
    try:
        status, _out, _cache = run_guarded(launch, ext.to(DEVICE), seq.to(DEVICE), topk, capacity)
        _status_is_sane(status, capacity)
    except AssertionError as err:
        raise AssertionError(f"{name}: {_describe(ext, seq, topk, capacity)}: {err}") from None


@pytest.mark.parametrize("name, launch", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
@pytest.mark.parametrize("length", [10**6, INT32_MAX, 2**40, INT64_MAX])
def test_one_huge_request_returns_quickly(name, launch, length):
    """A single huge request with a small capacity: work bounded by the capacity."""
    dtype = torch.int32 if length <= INT32_MAX else torch.int64
    ext = torch.tensor([length], dtype=dtype, device=DEVICE)
    seq = ext.clone()
    status, out, _cache = run_guarded(launch, ext, seq, 2048, 4)
    assert status == [min(length, INT32_MAX), 1]
    assert out.view.tolist() == [1, 2, 3, 4] or length > INT32_MAX


@pytest.mark.parametrize("name, launch", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
def test_buffers_of_different_lengths_with_garbage(name, launch):
    ext = torch.tensor([5, -3, 2**31 - 1, 4], dtype=torch.int32, device=DEVICE)
    seq = torch.tensor([1, 9, 2, -8], dtype=torch.int32, device=DEVICE)
    status, _out, cache = run_guarded(launch, ext, seq, 8, 3, cache_capacity=11)
    _status_is_sane(status, 3)
    cache.assert_poisoned_from(3, "out_nsa_cache_seqlens past the shorter buffer")


@pytest.mark.parametrize("name, launch", ENTRY_POINTS, ids=[name for name, _ in ENTRY_POINTS])
@pytest.mark.parametrize("case", GARBAGE_CASES, ids=[case[0] for case in GARBAGE_CASES])
def test_fixed_garbage_cases(name, launch, case):
    """The fixed cases that scripts/memcheck.py runs under compute-sanitizer on the GPU."""
    _what, ext, seq, dtype, topk, capacity = case
    ext = torch.tensor(ext, dtype=dtype, device=DEVICE)
    seq = torch.tensor(seq, dtype=dtype, device=DEVICE)
    status, _out, _cache = run_guarded(launch, ext, seq, topk, capacity)
    _status_is_sane(status, capacity)
