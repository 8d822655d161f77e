"""Hypothesis strategies and settings of the test suite (the ``test`` extra).

Everything compares a kernel against ``nsa_kernels.reference`` or
``nsa_kernels.pipeline_reference`` (or a small hand-written expectation), never against
itself; the canary buffers and compares the tests use live in ``nsa_kernels.testing``.
"""
import numpy as np
import torch
from hypothesis import settings
from hypothesis import strategies as st

from .._env import DEVICE, INTERPRET
from ..stages import STAGES
from . import reference_n

#: Stages whose kernel finds each token's request by a linear scan: ~1 ms per request per
#: 256-token block under the interpreter, so their generated batches are kept small there.
LINEAR_SCAN_STAGES = ("triton_fused", "triton_inplace")
STAGE_NAMES = list(STAGES)
FAST_STAGE_NAMES = [name for name in STAGE_NAMES if name not in LINEAR_SCAN_STAGES]


def long_run():
    """True under the ``long`` hypothesis profile (or any profile asking for many examples)."""
    return settings.default.max_examples > 200


def cheap_sizes():
    """True where generated sizes must stay small: the interpreter, outside the long profile."""
    return INTERPRET and not long_run()


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
