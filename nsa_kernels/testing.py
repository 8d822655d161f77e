"""Test helpers shared by the test suite, the notebooks' checks and the memcheck script.

Poisoned buffers with canary margins, exact comparisons that name the first differing index,
and the fill-contract check. Triton's interpreter does not check bounds, so an out-of-bounds
store lands silently in whatever memory follows the tensor: every output view handed to a
kernel is carved out of a larger poisoned allocation whose margins must still hold the poison
after the call.
"""
import torch

from ._env import DEVICE
from .reference import reference

POISON = -123456
MARGIN = 64


class Canary:
    """A poisoned int32 view of ``shape`` carved out of a larger poisoned allocation.

    1-D: ``margin`` entries before and after the view. 2-D: ``margin_rows`` rows above and
    below and ``margin_cols`` columns left and right, so the view has a row stride larger than
    its width (a real strided view, as a slice of a bigger table would be).
    """

    def __init__(self, shape, poison=POISON, margin=MARGIN, margin_rows=3, margin_cols=5,
                 dtype=torch.int32, device=DEVICE):
        if isinstance(shape, int):
            shape = (shape,)
        self.poison = poison
        if len(shape) == 1:
            (n,) = shape
            self.base = torch.full((n + 2 * margin,), poison, dtype=dtype, device=device)
            self.view = self.base[margin:margin + n]
            self._inside = (slice(margin, margin + n),)
        else:
            rows, cols = shape
            self.base = torch.full((rows + 2 * margin_rows, cols + 2 * margin_cols), poison,
                                   dtype=dtype, device=device)
            self.view = self.base[margin_rows:margin_rows + rows, margin_cols:margin_cols + cols]
            self._inside = (slice(margin_rows, margin_rows + rows),
                            slice(margin_cols, margin_cols + cols))
        self.snapshot = self.base.clone()

    def assert_margins(self, what="buffer"):
        """Nothing outside the view was written."""
        outside = torch.ones(self.base.shape, dtype=torch.bool, device=self.base.device)
        outside[self._inside] = False
        bad = (self.base != self.poison) & outside
        if bool(bad.any()):
            where = bad.nonzero()[0].tolist()
            raise AssertionError(
                f"{what}: out-of-bounds write into the canary margin at base index {where} "
                f"(value {self.base[tuple(where)].item()}, {int(bad.sum())} entries changed)")

    def assert_unchanged(self, what="buffer"):
        """Byte for byte what it was at creation (view and margins)."""
        if not torch.equal(self.base, self.snapshot):
            diff = (self.base != self.snapshot).nonzero()[0].tolist()
            raise AssertionError(f"{what} was modified (first change at base index {diff})")

    def assert_poisoned_from(self, start, what="buffer"):
        """Entries (1-D) or rows (2-D) of the view from ``start`` on still hold the poison."""
        assert_poisoned(self.view[start:], self.poison, f"{what}[{start}:]")


def assert_poisoned(t, poison=POISON, what="tail"):
    bad = t != poison
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        raise AssertionError(f"{what} was written: first change at {where} "
                             f"(value {t[tuple(where)].item()}, {int(bad.sum())} entries changed)")


def assert_equal(got, expected, what="result"):
    """Equal shape and values; the message names the first differing index."""
    got = got.detach().cpu()
    expected = expected.detach().cpu()
    assert tuple(got.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(got.shape)} != expected {tuple(expected.shape)}"
    if got.dtype != expected.dtype:
        got, expected = got.long(), expected.long()
    diff = got != expected
    if bool(diff.any()):
        i = diff.nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: {int(diff.sum())} of {expected.numel()} entries differ; first at {i}: "
            f"got {got[tuple(i)].item()}, expected {expected[tuple(i)].item()}")


def lengths(ext, seq, dtype=torch.int32, seq_dtype=None, device=DEVICE):
    """The two length tensors on ``device`` (``seq_dtype`` defaults to ``dtype``)."""
    return (torch.tensor(list(ext), dtype=dtype, device=device),
            torch.tensor(list(seq), dtype=seq_dtype or dtype, device=device))


def reference_n(ext):
    return int(ext.long().sum()) if ext.numel() else 0


def check_fill(fill, ext, seq, topk, capacity=None, slack=0):
    """Run ``fill`` on poisoned canary buffers and check the whole contract.

    ``capacity`` defaults to ``N + slack``. Checks: the returned N is a Python int equal to
    the reference's, the first N entries of both buffers equal the reference, every later
    entry of the views still holds the poison, and the margins around the views are intact.
    Returns N.
    """
    expected, expected_cache = reference(ext, seq, topk)
    n = expected.numel()
    capacity = n + slack if capacity is None else capacity
    out, out_cache = Canary(capacity), Canary(capacity)
    got = fill(ext, seq, topk, out.view, out_cache.view)
    assert isinstance(got, int) and not isinstance(got, bool), \
        f"fill returned {type(got).__name__}, expected int"
    assert got == n, f"fill returned N = {got}, reference N = {n}"
    assert_equal(out.view[:n], expected, "seqlens_expanded")
    assert_equal(out_cache.view[:n], expected_cache, "nsa_cache_seqlens")
    out.assert_poisoned_from(n, "out_seqlens_expanded")
    out_cache.assert_poisoned_from(n, "out_nsa_cache_seqlens")
    out.assert_margins("out_seqlens_expanded")
    out_cache.assert_margins("out_nsa_cache_seqlens")
    return n


# --------------------------------------------------------------------------- garbage lengths
# Issue 12: trusted fast paths (check=False) fed any lengths must stay inside their buffers and
# return in time bounded by the capacity. The test suite (tests/test_garbage_lengths.py, with
# hypothesis) and scripts/memcheck.py (under compute-sanitizer) share these two lists.

def _zero_sync(mapping):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        from .stage5_zero_sync import launch_zero_sync
        launch_zero_sync(ext, seq, topk, out_expanded, out_cache, status=status, mapping=mapping)
    return launch


def _zero_sync_fill(mapping):
    def launch(ext, seq, topk, out_expanded, out_cache, status):
        from .stage5_zero_sync import ZeroSyncFill
        ZeroSyncFill(ext, seq, topk, out_expanded, out_cache, status=status, mapping=mapping)()
    return launch


#: Every sync-free entry point as ``(name, launch)``, where
#: ``launch(ext, seq, topk, out_expanded, out_cache, status)`` runs it with ``check=False``.
#: A new mode joins every garbage-length check (tests and memcheck) by adding one line here.
SYNC_FREE_ENTRY_POINTS = [
    ("launch_zero_sync[request]", _zero_sync("request")),
    ("launch_zero_sync[token]", _zero_sync("token")),
    ("launch_zero_sync[auto]", _zero_sync("auto")),
    ("ZeroSyncFill[request]", _zero_sync_fill("request")),
    ("ZeroSyncFill[token]", _zero_sync_fill("token")),
]

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
#: Length values that broke (or could break) a kernel's arithmetic: signs, int32 and int64 edges.
GARBAGE_EXTREMES = [INT64_MIN, INT64_MIN + 1, INT32_MIN - 1, INT32_MIN, INT32_MIN + 1, -7, -1, 0,
                    1, 2, 5, 2**20, INT32_MAX - 1, INT32_MAX, 2**31, 2**32 + 7, 2**62,
                    INT64_MAX - 1, INT64_MAX]

#: ``(name, ext, seq, dtype, topk, capacity)``: fixed garbage batches (the review's findings
#: first), for scripts that cannot run hypothesis; dtype is that of both length tensors.
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


def status_is_sane(status, capacity):
    """A status read back after any launch: N in 0..INT32_MAX, overflow == (N > capacity)."""
    n, overflow = status
    return 0 <= n <= INT32_MAX and overflow == int(n > capacity)
