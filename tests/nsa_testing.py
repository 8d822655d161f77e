"""Shared helpers of the test suite: poisoned buffers with canary margins, comparisons, strategies.

Imported by the test modules (``conftest.py`` puts this folder on ``sys.path``) and wrapped as
fixtures in ``conftest.py``. Everything compares a kernel against ``nsa_kernels.reference`` or
``nsa_kernels.pipeline_reference`` (or a small hand-written expectation), never against itself.

Why margins: Triton's interpreter does not check bounds, so an out-of-bounds store lands
silently in whatever memory follows the tensor. Every output view handed to a kernel is carved
out of a larger poisoned allocation; the margins around it must still hold the poison after
the call.
"""
import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines

import numpy as np
import torch
from hypothesis import settings
from hypothesis import strategies as st

DEVICE = nk.DEVICE
POISON = -123456
MARGIN = 64

#: Stages whose kernel finds each token's request by a linear scan: ~1 ms per request per
#: 256-token block under the interpreter, so their generated batches are kept small there.
LINEAR_SCAN_STAGES = ("triton_fused", "triton_inplace")
STAGE_NAMES = list(nk.STAGES)
FAST_STAGE_NAMES = [name for name in STAGE_NAMES if name not in LINEAR_SCAN_STAGES]


def long_run():
    """True under the ``long`` hypothesis profile (or any profile asking for many examples)."""
    return settings.default.max_examples > 200


def cheap_sizes():
    """True where generated sizes must stay small: the interpreter, outside the long profile."""
    return nk.INTERPRET and not long_run()


# --------------------------------------------------------------------------- buffers
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
    expected, expected_cache = nk.reference(ext, seq, topk)
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


# --------------------------------------------------------------------------- strategies
@st.composite
def fill_inputs(draw, max_bs=2000, max_tokens=20000, max_len=100000, max_topk=4096,
                max_bulk_extend=16, max_head=12):
    """``(ext, seq, topk)`` on ``DEVICE``: a batch that is valid for ``reference``.

    The batch is a shrinkable *head* of up to ``max_head`` requests drawn one by one (any
    length, kv often placed around topk, zero-length requests common) and a *bulk* of up to
    ``max_bs - head`` draft-extend-like requests (qo in 0..max_bulk_extend) generated from a
    drawn seed, so batches of thousands of requests stay cheap to generate. Requests are
    interleaved at a drawn position. Total N never exceeds ``max_tokens``: each head request's
    qo is cut to what is left.
    """
    topk = draw(st.one_of(st.integers(1, max_topk), st.sampled_from([1, 2, 64, 2048, max_topk])),
                label="topk")
    head_len = draw(st.integers(0, min(max_head, max_bs)), label="head_len")
    bulk_bs = draw(st.integers(0, max_bs - head_len), label="bulk_bs") if max_bs > head_len else 0
    budget = max_tokens

    # Bulk first (it is bounded by construction), then the head takes what is left.
    bulk_ext, bulk_seq = [], []
    if bulk_bs:
        seed = draw(st.integers(0, 2**32 - 1), label="bulk_seed")
        qmax = draw(st.sampled_from([0, 1, 4, max_bulk_extend]), label="bulk_qmax")
        qmax = min(qmax, budget // bulk_bs)
        rng = np.random.default_rng(seed)
        bulk_ext = rng.integers(0, qmax + 1, bulk_bs)
        history = rng.integers(0, min(2 * topk + 8, max_len) + 1, bulk_bs)
        bulk_seq = np.minimum(bulk_ext + history, max_len)
        bulk_ext, bulk_seq = bulk_ext.tolist(), bulk_seq.tolist()
        budget -= sum(bulk_ext)

    head_ext, head_seq = [], []
    for _ in range(head_len):
        qo = draw(st.one_of(st.just(0), st.integers(1, 4), st.integers(0, 64),
                            st.integers(0, max_len)), label="qo")
        qo = min(qo, budget)
        budget -= qo
        kv = draw(st.one_of(
            st.just(qo),                                            # extend == seq
            st.integers(qo, min(qo + 4, max_len)),                  # short history
            st.integers(max(qo, topk - qo - 2), max(qo, min(topk + 2, max_len))),  # around topk
            st.integers(qo, max_len)), label="kv")
        head_ext.append(qo)
        head_seq.append(kv)

    at = draw(st.integers(0, len(bulk_ext)), label="head_position") if bulk_ext else 0
    ext = bulk_ext[:at] + head_ext + bulk_ext[at:]
    seq = bulk_seq[:at] + head_seq + bulk_seq[at:]
    ext_dtype = draw(st.sampled_from([torch.int32, torch.int64]), label="ext_dtype")
    seq_dtype = draw(st.sampled_from([ext_dtype, torch.int32, torch.int64]), label="seq_dtype")
    return (torch.tensor(ext, dtype=ext_dtype, device=DEVICE),
            torch.tensor(seq, dtype=seq_dtype, device=DEVICE), topk)


def describe(ext, seq, topk):
    """Short text of an input, for assertion messages."""
    return (f"bs={ext.numel()} N={reference_n(ext)} topk={topk} ext={ext.dtype} seq={seq.dtype} "
            f"ext[:8]={ext[:8].tolist()} seq[:8]={seq[:8].tolist()}")


def examples(ci_count):
    """``@settings`` for a property: ``ci_count`` examples under the default ``ci`` profile,
    the loaded profile's own count otherwise (so ``--hypothesis-profile long`` still scales
    every property up)."""
    return settings(max_examples=settings.default.max_examples if long_run() else ci_count)
