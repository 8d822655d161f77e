"""Trusted fast paths (``check=False``) fed garbage lengths stay inside their buffers, quickly.

For every sync-free entry point, lengths that are negative, huge,
``qo > kv`` or at the int64 extremes may produce meaningless values, but the call must return
within a bounded time (work is bounded by the buffers' capacity, not by the lengths) and must
write nothing outside the canary-guarded output and status buffers. Inputs are left unchanged.

To cover a new sync-free entry point, add one ``SyncFreeEntryPoint`` to
``nsa_kernels.testing.garbage.SYNC_FREE_ENTRY_POINTS``: a name and a function
``(ext, seq, topk, out_expanded, out_cache, status) -> None`` that launches with check=False
(its adapter guards every other buffer it creates, and checks its own status if it has one
of another layout: ``own_status=True``, and ``status`` must stay untouched).
"""
import subprocess
import sys
import time

from nsa_kernels.testing import DEVICE, MARGIN, Canary
from nsa_kernels.testing.garbage import (
    FIXED_GARBAGE_BUGS,
    GARBAGE_CASES,
    GARBAGE_EXTREMES,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    KNOWN_GARBAGE_BUGS,
    SYNC_FREE_ENTRY_POINTS,
    launch_on_canaries,
    status_is_sane,
)
from nsa_kernels.testing.strategies import examples

import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

#: Every sync-free entry point. New modes are added (one line each) to
#: nsa_kernels.testing.garbage.SYNC_FREE_ENTRY_POINTS, which the memcheck run shares.
ENTRY_POINTS = SYNC_FREE_ENTRY_POINTS
every_entry_point = pytest.mark.parametrize("entry", ENTRY_POINTS,
                                            ids=[entry.name for entry in ENTRY_POINTS])

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


def run_guarded(entry, ext, seq, topk, capacity, cache_capacity=None):
    """``launch_on_canaries`` within ``SECONDS_PER_CALL``: returns (status, out, cache)."""
    started = time.perf_counter()
    result = launch_on_canaries(entry, ext, seq, topk, capacity, cache_capacity)
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS_PER_CALL, f"{elapsed:.1f} s for capacity {capacity}"
    return result


def _describe(ext, seq, topk, capacity):
    return (f"bs={ext.numel()} ext({ext.dtype})={ext[:6].tolist()} "
            f"seq({seq.dtype})={seq[:6].tolist()} topk={topk} capacity={capacity}")


def _status_is_sane(status, capacity):
    if status is None:  # checked by the entry point's adapter
        return
    assert status_is_sane(status, capacity), f"status {status} for capacity {capacity}"


@every_entry_point
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
def test_garbage_lengths_stay_inside_buffers(entry, batch):
    ext, seq, topk, capacity = batch
    assume(not (entry.known_bug and entry.known_bug(ext, seq)))  # its strict xfail covers it
    try:
        status, _out, _cache = run_guarded(entry, ext.to(DEVICE), seq.to(DEVICE), topk, capacity)
        _status_is_sane(status, capacity)
    except AssertionError as err:
        what = _describe(ext, seq, topk, capacity)
        raise AssertionError(f"{entry.name}: {what}: {err}") from None


@every_entry_point
@pytest.mark.parametrize("length", [10**6, INT32_MAX, 2**40, INT64_MAX])
def test_one_huge_request_returns_quickly(entry, length):
    """A single huge request with a small capacity: work bounded by the capacity (and, for the
    [N, overflow] status, the exact status and the first rows)."""
    dtype = torch.int32 if length <= INT32_MAX else torch.int64
    ext = torch.tensor([length], dtype=dtype, device=DEVICE)
    seq = ext.clone()
    status, out, _cache = run_guarded(entry, ext, seq, 2048, 4)
    if entry.own_status:
        return
    assert status == [min(length, INT32_MAX), 1]
    assert out.view.tolist() == [1, 2, 3, 4] or length > INT32_MAX


@every_entry_point
def test_buffers_of_different_lengths_with_garbage(entry):
    ext = torch.tensor([5, -3, 2**31 - 1, 4], dtype=torch.int32, device=DEVICE)
    seq = torch.tensor([1, 9, 2, -8], dtype=torch.int32, device=DEVICE)
    status, _out, cache = run_guarded(entry, ext, seq, 8, 3, cache_capacity=11)
    _status_is_sane(status, 3)
    cache.assert_poisoned_from(3, "out_nsa_cache_seqlens past the shorter buffer")


@every_entry_point
@pytest.mark.parametrize("case", GARBAGE_CASES, ids=[case[0] for case in GARBAGE_CASES])
def test_fixed_garbage_cases(entry, case):
    """The fixed cases that tests/gpu/test_memcheck.py runs on exact-size buffers (under
    compute-sanitizer on the GPU)."""
    _what, ext, seq, dtype, topk, capacity = case
    ext = torch.tensor(ext, dtype=dtype, device=DEVICE)
    seq = torch.tensor(seq, dtype=dtype, device=DEVICE)
    reason = entry.known_bug and entry.known_bug(ext, seq)
    if reason:
        pytest.skip(f"known bug, see test_known_bug_reproducers: {reason}")
    status, _out, _cache = run_guarded(entry, ext, seq, topk, capacity)
    _status_is_sane(status, capacity)


#: A child process running one launch that takes longer than this is taken to hang.
REPRODUCER_TIMEOUT_S = 30


@pytest.mark.parametrize("bug", [
    pytest.param(bug, marks=pytest.mark.xfail(strict=True, reason=bug[-1]))
    for bug in KNOWN_GARBAGE_BUGS] + FIXED_GARBAGE_BUGS,
    ids=[f"{bug[0]}-{bug[1][:2]}" for bug in KNOWN_GARBAGE_BUGS + FIXED_GARBAGE_BUGS])
def test_known_bug_reproducers(bug):
    """Each known bug, minimal, in a child process (a hang there is a timeout, not a stuck run).
    Strict: once the kernel is fixed this passes, XPASS fails, and the entry is removed."""
    name, ext, seq, dtype, topk, capacity, _reason = bug
    code = ("import nsa_kernels, torch\n"
            "from nsa_kernels.testing.garbage import run_garbage_case\n"
            f"run_garbage_case({name!r}, {ext!r}, {seq!r}, {dtype}, {topk!r}, {capacity!r})\n")
    try:
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=REPRODUCER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} still running after {REPRODUCER_TIMEOUT_S} s") from None
    assert child.returncode == 0, f"{name}: {child.stderr[-2000:]}"


def test_adapter_guard_catches_a_stray_write_and_a_written_input():
    """The adapters' check itself can fail: a write one past a view, then a written input."""
    from nsa_kernels.testing.garbage import run_guarded as adapter_guard
    out = Canary(4)
    with pytest.raises(AssertionError, match="canary margin"):
        adapter_guard(lambda: out.base[MARGIN + 4].fill_(1), {"out": out}, {})
    pool = torch.arange(3, device=DEVICE)
    with pytest.raises(AssertionError, match="input pool was written"):
        adapter_guard(lambda: pool.add_(1), {}, {"pool": pool})
