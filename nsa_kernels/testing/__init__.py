"""Checks shared by the notebooks and the test suite: canary buffers and exact compares.

Poisoned buffers with canary margins, exact comparisons that name the first differing index,
and the fill-contract check. Triton's interpreter does not check bounds, so an out-of-bounds
store lands silently in whatever memory follows the tensor: every output view handed to a
kernel is carved out of a larger poisoned allocation whose margins must still hold the poison
after the call.

This is the lowest floor of the package's checks: it imports the reference and nothing of
``compat``, ``modes`` or stages 5-6, so a notebook can check any stage with it. Beside it:

* ``garbage``: the registry of sync-free entry points fed garbage lengths (it imports every
  stage and mode it launches); its names are also reachable from here, loaded on first use;
* ``strategies``: hypothesis strategies and settings of the test suite (needs the ``test``
  extra);
* ``interpreter``: running the peers' kernels under Triton's interpreter (test shims).
"""
import importlib

import torch

from .._env import DEVICE
from ..reference import reference

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





def __getattr__(name):
    """The public names of ``garbage`` (``SYNC_FREE_ENTRY_POINTS``, ``GARBAGE_CASES``, ...),
    loaded on first use so that importing this module never imports the modes."""
    if not name.startswith("_"):
        garbage = importlib.import_module(".garbage", __name__)
        if hasattr(garbage, name):
            return getattr(garbage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
