"""Extend: arguments the plan turns into a grid, and host mirrors that disagree with the device.

``splits`` becomes the grid's second dimension: 0 or a negative count launched nothing (and
returned a status nobody wrote), a float failed inside Triton. It is checked on every call,
with or without ``check=True``, before anything is written.
"""
import nsa_kernels as nk
from nsa_kernels.modes import extend as ex

import pytest
from test_extend import make_case

TOPK = 64
POISON = -77


def case():
    return make_case([3, 0, 5], [7, 4, 9], seed=1)


def poisoned_buffers():
    return ex.ExtendBuffers.allocate(4, 16, 32, device=nk.DEVICE, fill=POISON)


def assert_unwritten(bufs):
    for name, t in bufs.as_dict().items():
        assert bool((t == POISON).all()), f"{name} was written"


@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("entry", ["launch_extend", "ExtendFill"])
@pytest.mark.parametrize("splits, error, match", [
    (0, ValueError, rf"splits must lie in \[1, {ex.MAX_SPLITS}\], got 0"),
    (-3, ValueError, rf"splits must lie in \[1, {ex.MAX_SPLITS}\], got -3"),
    (ex.MAX_SPLITS + 1, ValueError, rf"splits must lie in \[1, {ex.MAX_SPLITS}\], got 1025"),
    (1.5, TypeError, "splits must be an int, got float"),
    (True, TypeError, "splits must be an int, got bool"),
    ("2", TypeError, "splits must be an int, got str"),
])
def test_bad_splits_refused_before_any_write(entry, check, splits, error, match):
    bufs = poisoned_buffers()
    fn = getattr(ex, entry)
    with pytest.raises(error, match=match):
        fn(*case(), TOPK, bufs, check=check, splits=splits)
    assert_unwritten(bufs)


@pytest.mark.parametrize("splits", [1, 2, 7])
def test_good_splits_fill_everything(splits):
    bufs = poisoned_buffers()
    status = ex.launch_extend(*case(), TOPK, bufs, splits=splits, check=True)
    assert ex.decode_status(status)["n_tokens"] == 8
    assert bufs.seqlens_expanded[:8].tolist() == [5, 6, 7, 5, 6, 7, 8, 9]


# --------------------------------------------------------------------------- host mirrors
# The allocating form sizes its outputs from SGLang's host mirrors. A mirror one step behind
# the device (or ahead of it) gave outputs of the wrong length: too short cut the last rows off
# (and cu_seqlens_k[-1] pointed past page_table_1_flattened), too long returned tails of
# uninitialised memory. The kernel compares the totals it computes with the sizes it was given
# and flags a mismatch; the allocating form raises on it, naming the mirror.
DEVICE_QO, DEVICE_KV = [3, 0, 5], [7, 4, 9]  # N = 8, sum kv = 20


@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("qo_mirror, kv_mirror, named", [
    ([3, 0, 4], [7, 4, 8], "extend_seq_lens_cpu"),  # a step behind: N 7, sum kv 19
    ([3, 0, 6], [7, 4, 10], "extend_seq_lens_cpu"),  # a step ahead: N 9, sum kv 21
    ([3, 0, 5], [7, 4, 8], "seq_lens_cpu"),  # only the context lengths stale
    ([3, 0, 5], [7, 4, 12], "seq_lens_cpu"),
])
def test_allocating_form_refuses_mirrors_that_disagree_with_the_device(
        qo_mirror, kv_mirror, named, check):
    kv, qo, pool, table = make_case(DEVICE_QO, DEVICE_KV, width=12, seed=2)
    with pytest.raises(ValueError, match=rf"{named} disagrees with the device"):
        ex.extend_metadata(kv, qo, pool, table, TOPK, seq_lens_cpu=kv_mirror,
                           extend_seq_lens_cpu=qo_mirror, check=check)


def test_allocating_form_accepts_mirrors_that_agree():
    kv, qo, pool, table = make_case(DEVICE_QO, DEVICE_KV, width=12, seed=2)
    got = ex.extend_metadata(kv, qo, pool, table, TOPK, seq_lens_cpu=DEVICE_KV,
                             extend_seq_lens_cpu=DEVICE_QO)
    assert got["seqlens_expanded"].tolist() == [5, 6, 7, 5, 6, 7, 8, 9]
    assert got["page_table_1_flattened"].shape[0] == 20


def exact_buffers(n_tokens, n_flat, bs=3):
    bufs, _ = ex.ExtendBuffers.allocate_exact(bs, n_tokens, n_flat, nk.DEVICE)
    for t in bufs.as_dict().values():
        t.fill_(POISON)
    return bufs


@pytest.mark.parametrize("entry", ["launch_extend", "ExtendFill"])
@pytest.mark.parametrize("n_tokens, n_flat, tokens_flag, flat_flag", [
    (8, 20, False, False), (7, 20, True, False), (9, 20, True, False), (8, 19, False, True),
    (9, 21, True, True),
])
def test_bound_fill_flags_sizes_that_disagree_with_the_device(entry, n_tokens, n_flat,
                                                              tokens_flag, flat_flag):
    """``expect_sizes=True``: the buffers were sized from the host's view of the lengths."""
    case = make_case(DEVICE_QO, DEVICE_KV, width=12, seed=2)
    bufs = exact_buffers(n_tokens, n_flat)
    if entry == "launch_extend":
        status = ex.launch_extend(*case, TOPK, bufs, expect_sizes=True)
    else:
        status = ex.ExtendFill(*case, TOPK, bufs, expect_sizes=True)()
    got = ex.decode_status(status)
    assert (got["tokens_mismatch"], got["flat_mismatch"]) == (tokens_flag, flat_flag)
    assert (got["n_tokens"], got["n_flat"]) == (8, 20)


def test_bound_fill_without_expected_sizes_flags_no_mismatch():
    """Capacity buffers (a graph runner's) are larger than what a step fills: no flag."""
    case = make_case(DEVICE_QO, DEVICE_KV, width=12, seed=2)
    got = ex.decode_status(ex.launch_extend(*case, TOPK, exact_buffers(30, 60)))
    assert not got["tokens_mismatch"] and not got["flat_mismatch"]
