"""Bad input raises before anything is written, with a message that names the argument.

Each case below starts from one valid call (``_valid_call``; ``test_valid_base_call`` shows it
passes) and breaks exactly one thing. For every entry point (each stage, ``reference``,
``launch_zero_sync`` with ``check=True`` and, for the static classes, ``check=False``,
``launch_full_pipeline(check=True)``) the call must raise the expected exception type, the
message must name the argument (and for data errors the first offending request index), and
every poisoned buffer (outputs, status, and any bad output handed in) must be byte-for-byte
what it was.
"""
import re

import nsa_kernels as nk
from nsa_kernels import validation
from nsa_kernels.testing import DEVICE, Canary, lengths
from nsa_kernels.testing.strategies import STAGE_NAMES

import numpy as np
import pytest
import torch

EXT = [1, 2, 0, 3, 1]
SEQ = [4, 2, 5, 3, 9]
TOPK = 8
N = sum(EXT)  # 7
CAPACITY = 16


def _name(arg):
    """Regex for an argument's name as a whole word (so 'seq_lens' is not 'extend_seq_lens')."""
    return rf"(?<![\w.]){re.escape(arg)}(?![\w])"


def _index(arg, i):
    return rf"(?<![\w.]){re.escape(arg)}\[{i}\]"


class Call:
    """One call's arguments; every tensor that a kernel could write is tracked for changes."""

    def __init__(self):
        self.ext, self.seq = lengths(EXT, SEQ)
        self.topk = TOPK
        self.out = Canary(CAPACITY)
        self.cache = Canary(CAPACITY)
        self.status = Canary(2)
        self.out_arg = self.out.view
        self.cache_arg = self.cache.view
        self.status_arg = self.status.view
        self.tracked = [("out_seqlens_expanded", self.out), ("out_nsa_cache_seqlens", self.cache),
                        ("status", self.status)]

    def replace_output(self, which, canary, view=None):
        """Hand a different poisoned tensor in as output ``which`` ('out' or 'cache')."""
        setattr(self, f"{which}_arg", canary.view if view is None else view)
        self.tracked.append((f"replacement {which}", canary))

    def assert_untouched(self):
        for what, c in self.tracked:
            c.assert_unchanged(what)


def _set(**fields):
    def mutate(c):
        for key, value in fields.items():
            setattr(c, key, value(c) if callable(value) else value)
    return mutate


def _tensor(values, dtype):
    return torch.tensor(values, dtype=dtype, device=DEVICE)


# name -> (mutation, exception type, patterns the message must contain, kind)
# kind: "static" (tensor metadata / topk: always checked), "data" (needs the lengths on the
# host: checked by the syncing stages and by check=True only).
INPUT_CASES = {
    "ext_float32": (
        _set(ext=lambda c: c.ext.float()),
        TypeError,
        [_name("extend_seq_lens")],
        "static",
    ),
    "seq_float64": (_set(seq=lambda c: c.seq.double()), TypeError, [_name("seq_lens")], "static"),
    "ext_bool": (_set(ext=lambda c: c.ext.bool()), TypeError, [_name("extend_seq_lens")], "static"),
    "seq_bool": (_set(seq=lambda c: c.seq.bool()), TypeError, [_name("seq_lens")], "static"),
    "ext_int16": (
        _set(ext=lambda c: c.ext.short()),
        TypeError,
        [_name("extend_seq_lens")],
        "static",
    ),
    "ext_list": (_set(ext=list(EXT)), TypeError, [_name("extend_seq_lens")], "static"),
    "seq_numpy": (
        _set(seq=np.array(SEQ, dtype=np.int32)),
        TypeError,
        [_name("seq_lens")],
        "static",
    ),
    "ext_none": (_set(ext=None), TypeError, [_name("extend_seq_lens")], "static"),
    "ext_2d": (
        _set(ext=lambda c: c.ext.reshape(1, -1)),
        ValueError,
        [_name("extend_seq_lens")],
        "static",
    ),
    "seq_0d": (_set(seq=_tensor(5, torch.int32)), ValueError, [_name("seq_lens")], "static"),
    "ext_non_contiguous": (
        _set(ext=lambda c: c.ext.repeat_interleave(2)[::2]),
        ValueError,
        [_name("extend_seq_lens")],
        "static",
    ),
    "mismatched_lengths": (
        _set(seq=_tensor(SEQ[:4], torch.int32)),
        ValueError,
        [_name("extend_seq_lens"), _name("seq_lens")],
        "static",
    ),
    "mismatched_lengths_longer_ext": (
        _set(ext=_tensor(EXT + [1], torch.int32)),
        ValueError,
        [_name("extend_seq_lens"), _name("seq_lens")],
        "static",
    ),
    "topk_0": (_set(topk=0), ValueError, [_name("nsa_index_topk")], "static"),
    "topk_negative": (_set(topk=-3), ValueError, [_name("nsa_index_topk")], "static"),
    "topk_float": (_set(topk=8.0), TypeError, [_name("nsa_index_topk")], "static"),
    "topk_bool": (_set(topk=True), TypeError, [_name("nsa_index_topk")], "static"),
    "topk_str": (_set(topk="8"), TypeError, [_name("nsa_index_topk")], "static"),
    "topk_none": (_set(topk=None), TypeError, [_name("nsa_index_topk")], "static"),
    "topk_tensor": (
        _set(topk=lambda c: _tensor(8, torch.int32)),
        TypeError,
        [_name("nsa_index_topk")],
        "static",
    ),
    "ext_negative_at_3": (
        _set(ext=_tensor([1, 2, 0, -1, 1], torch.int32)),
        ValueError,
        [_index("extend_seq_lens", 3)],
        "data",
    ),
    "seq_negative_at_2": (
        _set(seq=_tensor([4, 2, -5, 3, 9], torch.int32)),
        ValueError,
        [_index("seq_lens", 2)],
        "data",
    ),
    "qo_gt_kv_at_3": (
        _set(ext=_tensor([1, 2, 0, 4, 10], torch.int32)),
        ValueError,
        [_index("extend_seq_lens", 3), _index("seq_lens", 3)],
        "data",
    ),
    "qo_gt_kv_at_0_int64": (
        _set(ext=_tensor([5, 2, 0, 3, 1], torch.int64), seq=_tensor(SEQ, torch.int64)),
        ValueError,
        [_index("extend_seq_lens", 0)],
        "data",
    ),
    "first_of_several_bad_is_1": (
        _set(ext=_tensor([1, 5, 0, -1, 11], torch.int32)),
        ValueError,
        [_index("extend_seq_lens", 1)],
        "data",
    ),
    "last_request_bad": (
        _set(seq=_tensor([4, 2, 5, 3, 0], torch.int32)),
        ValueError,
        [_index("extend_seq_lens", 4)],
        "data",
    ),
}


def _bad_output(which, make):
    def mutate(c):
        canary, view = make()
        c.replace_output(which, canary, view)
    return mutate


def _canary_view(shape, dtype=torch.int32, transform=None):
    def make():
        c = Canary(shape, dtype=dtype)
        return c, (transform(c.view) if transform else c.view)
    return make


OUTPUT_CASES = {
    "out_int64": (
        _bad_output("out", _canary_view(CAPACITY, torch.int64)),
        TypeError,
        [_name("out_seqlens_expanded")],
        "static",
    ),
    "cache_int64": (
        _bad_output("cache", _canary_view(CAPACITY, torch.int64)),
        TypeError,
        [_name("out_nsa_cache_seqlens")],
        "static",
    ),
    "out_float32": (
        _bad_output("out", _canary_view(CAPACITY, torch.float32)),
        TypeError,
        [_name("out_seqlens_expanded")],
        "static",
    ),
    "out_2d": (
        _bad_output("out", _canary_view(2 * CAPACITY, transform=lambda v: v.view(2, -1))),
        ValueError,
        [_name("out_seqlens_expanded")],
        "static",
    ),
    "cache_non_contiguous": (
        _bad_output("cache", _canary_view(2 * CAPACITY, transform=lambda v: v[::2])),
        ValueError,
        [_name("out_nsa_cache_seqlens")],
        "static",
    ),
    "out_non_contiguous": (
        _bad_output("out", _canary_view(2 * CAPACITY, transform=lambda v: v[::2])),
        ValueError,
        [_name("out_seqlens_expanded")],
        "static",
    ),
    "out_list": (
        _set(out_arg=[0] * CAPACITY),
        TypeError,
        [_name("out_seqlens_expanded")],
        "static",
    ),
    "out_shorter_than_n": (
        _bad_output("out", _canary_view(N - 1)),
        ValueError,
        [_name("out_seqlens_expanded")],
        "data",
    ),
    "cache_shorter_than_n": (
        _bad_output("cache", _canary_view(N - 1)),
        ValueError,
        [_name("out_nsa_cache_seqlens")],
        "data",
    ),
    "both_empty": (
        lambda c: (c.replace_output("out", Canary(0)), c.replace_output("cache", Canary(0))),
        ValueError,
        [_name("out_seqlens_expanded")],
        "data",
    ),
}

INT32_MAX = 2**31 - 1


def _lengths64(ext, seq):
    return _set(ext=_tensor(ext, torch.int64), seq=_tensor(seq, torch.int64))


# Lengths, sums and topk past what the int32 outputs hold, and topk beyond int32 or 2**64.
# Kept out of PIPELINE_CASES: stage 6 runs its own data checks.
INT32_CASES = {
    "seq_past_int32_at_1": (_lengths64([1, 2, 0, 3, 1], [4, 2**32 + 7, 5, 3, 9]), ValueError,
                            [_index("seq_lens", 1)], "data"),
    "review_case_seq_2_32_plus_7": (_lengths64([2], [2**32 + 7]), ValueError,
                                    [_index("seq_lens", 0)], "data"),
    "seq_int64_max_at_4": (_lengths64([1, 2, 0, 3, 1], [4, 2, 5, 3, 2**63 - 1]), ValueError,
                           [_index("seq_lens", 4)], "data"),
    "ext_and_seq_past_int32_at_0": (_lengths64([2**31, 1], [2**31, 1]), ValueError,
                                    [_index("extend_seq_lens", 0)], "data"),
    "ext_sum_past_int32_at_1": (_lengths64([INT32_MAX, 1, 0], [INT32_MAX, 1, 0]), ValueError,
                                [_index("extend_seq_lens", 1)], "data"),
    "ext_sum_past_int32_at_2_int32_inputs": (
        _set(ext=_tensor([2**30, 2**30 - 1, 1], torch.int32),
             seq=_tensor([2**30, 2**30 - 1, 1], torch.int32)),
        ValueError, [_index("extend_seq_lens", 2)], "data"),
    "topk_2_31": (_set(topk=2**31), ValueError, [_name("nsa_index_topk")], "static"),
    "topk_2_64": (_set(topk=2**64), ValueError, [_name("nsa_index_topk")], "static"),
    "topk_numpy_2_40": (_set(topk=np.int64(2**40)), ValueError, [_name("nsa_index_topk")],
                        "static"),
    "topk_numpy_bool": (_set(topk=np.bool_(True)), TypeError, [_name("nsa_index_topk")], "static"),
    "all_meta": (_set(ext=lambda c: c.ext.to("meta"), seq=lambda c: c.seq.to("meta"),
                      out_arg=lambda c: c.out_arg.to("meta"),
                      cache_arg=lambda c: c.cache_arg.to("meta"),
                      status_arg=lambda c: c.status_arg.to("meta")),
                 ValueError, [_name("extend_seq_lens"), "meta"], "static"),
}
INPUT_CASES.update(INT32_CASES)


def _out_is_cache(c):
    c.cache_arg = c.out_arg


def _partial_overlap(c):
    big = Canary(CAPACITY + 3)
    c.tracked.append(("shared outputs", big))
    c.out_arg, c.cache_arg = big.view[:CAPACITY], big.view[3:]


def _out_shares_seq(c):
    # seq_lens lives at the front of a buffer whose tail is handed in as the output.
    big = Canary(CAPACITY + 8)
    big.view[:5] = _tensor(SEQ, torch.int32)
    big.snapshot = big.base.clone()
    c.tracked.append(("seq + output", big))
    c.seq, c.out_arg = big.view[:5], big.view[2:]


def _cache_shares_ext(c):
    big = Canary(CAPACITY + 8)
    big.view[CAPACITY:CAPACITY + 5] = _tensor(EXT, torch.int32)
    big.snapshot = big.base.clone()
    c.tracked.append(("ext + output", big))
    c.ext, c.cache_arg = big.view[CAPACITY:CAPACITY + 5], big.view[:CAPACITY + 1]


# Outputs that overlap each other or an input.
OVERLAP_CASES = {
    "out_is_cache": (_out_is_cache, ValueError,
                     [_name("out_seqlens_expanded"), _name("out_nsa_cache_seqlens")], "static"),
    "outputs_overlap_partially": (_partial_overlap, ValueError,
                                  [_name("out_seqlens_expanded"), _name("out_nsa_cache_seqlens")],
                                  "static"),
    "out_shares_seq_lens": (_out_shares_seq, ValueError,
                            [_name("out_seqlens_expanded"), _name("seq_lens")], "static"),
    "cache_shares_extend_seq_lens": (_cache_shares_ext, ValueError,
                                     [_name("out_nsa_cache_seqlens"), _name("extend_seq_lens")],
                                     "static"),
}
OUTPUT_CASES.update(OVERLAP_CASES)

ALL_CASES = {**INPUT_CASES, **OUTPUT_CASES}


def _stage_runner(name):
    def run(c):
        return nk.STAGES[name](c.ext, c.seq, c.topk, c.out_arg, c.cache_arg)
    return run


def _zero_sync_runner(check, mapping="auto"):
    def run(c):
        return nk.launch_zero_sync(c.ext, c.seq, c.topk, c.out_arg, c.cache_arg,
                                   status=c.status_arg, mapping=mapping, check=check)
    return run


def _zero_sync_fill_runner(check):
    def run(c):
        # Construction validates; the call launches (only reached when nothing raised).
        return nk.ZeroSyncFill(c.ext, c.seq, c.topk, c.out_arg, c.cache_arg,
                               status=c.status_arg, check=check)()
    return run


RUNNERS = {name: _stage_runner(name) for name in STAGE_NAMES}
RUNNERS["launch_zero_sync_check"] = _zero_sync_runner(True)
RUNNERS["launch_zero_sync_check_token"] = _zero_sync_runner(True, "token")
RUNNERS["ZeroSyncFill_check"] = _zero_sync_fill_runner(True)
NO_CHECK_RUNNERS = {"launch_zero_sync_nocheck": _zero_sync_runner(False),
                    "ZeroSyncFill_nocheck": _zero_sync_fill_runner(False)}


def _assert_raises(run, c, exc, patterns):
    with pytest.raises(exc) as info:
        run(c)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"message {message!r} does not match {pattern!r}"
    c.assert_untouched()


@pytest.mark.parametrize("runner", list(RUNNERS) + list(NO_CHECK_RUNNERS))
def test_valid_base_call(runner):
    """The unmutated call is valid: every raise below is caused by its one mutation."""
    c = Call()
    result = {**RUNNERS, **NO_CHECK_RUNNERS}[runner](c)
    expected, expected_cache = nk.reference(c.ext, c.seq, c.topk)
    if isinstance(result, torch.Tensor):  # launch_zero_sync returns the device status
        assert result.data_ptr() == c.status.view.data_ptr()
        assert result.tolist() == [N, 0]
    else:
        assert result == N
    assert torch.equal(c.out.view[:N].cpu(), expected.cpu())
    assert torch.equal(c.cache.view[:N].cpu(), expected_cache.cpu())
    c.out.assert_poisoned_from(N)
    c.cache.assert_poisoned_from(N)


@pytest.mark.parametrize("case", list(ALL_CASES))
@pytest.mark.parametrize("runner", list(RUNNERS))
def test_bad_input_raises_and_writes_nothing(runner, case):
    mutate, exc, patterns, _kind = ALL_CASES[case]
    c = Call()
    mutate(c)
    _assert_raises(RUNNERS[runner], c, exc, patterns)


@pytest.mark.parametrize("case", [k for k, v in ALL_CASES.items() if v[3] == "static"])
@pytest.mark.parametrize("runner", list(NO_CHECK_RUNNERS))
def test_static_checks_run_without_check(runner, case):
    """check=False skips the data checks (no sync) but never the static ones."""
    mutate, exc, patterns, _kind = ALL_CASES[case]
    c = Call()
    mutate(c)
    _assert_raises(NO_CHECK_RUNNERS[runner], c, exc, patterns)


def _bad_status(make):
    def mutate(c):
        canary, view = make()
        c.status_arg = view
        c.tracked.append(("replacement status", canary))
    return mutate


# The status tensor the zero-sync entry points write: int32, 1-D, contiguous, >= 2 entries.
STATUS_CASES = {
    "status_int64": (_bad_status(_canary_view(2, torch.int64)), TypeError),
    "status_one_entry": (_bad_status(_canary_view(1)), ValueError),
    "status_empty": (_bad_status(_canary_view(0)), ValueError),
    "status_2d": (_bad_status(_canary_view(4, transform=lambda v: v.view(2, 2))), ValueError),
    "status_non_contiguous": (_bad_status(_canary_view(4, transform=lambda v: v[::2])),
                              ValueError),
}


@pytest.mark.parametrize("case", list(STATUS_CASES))
@pytest.mark.parametrize("runner", ["launch_zero_sync_check", "ZeroSyncFill_check",
                                    "launch_zero_sync_nocheck", "ZeroSyncFill_nocheck"])
def test_bad_status_rejected(runner, case):
    mutate, exc = STATUS_CASES[case]
    c = Call()
    mutate(c)
    _assert_raises({**RUNNERS, **NO_CHECK_RUNNERS}[runner], c, exc, [_name("status")])


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_reference_rejects_bad_input(case):
    mutate, exc, patterns, _kind = INPUT_CASES[case]
    c = Call()
    mutate(c)
    with pytest.raises(exc) as info:
        nk.reference(c.ext, c.seq, c.topk)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), str(info.value)


@pytest.mark.parametrize("runner", list(RUNNERS) + list(NO_CHECK_RUNNERS))
def test_numpy_integer_topk_accepted(runner):
    """Anything operator.index accepts (not bool) is a valid topk."""
    c = Call()
    c.topk = np.int64(3)
    {**RUNNERS, **NO_CHECK_RUNNERS}[runner](c)
    expected, expected_cache = nk.reference(c.ext, c.seq, 3)
    assert torch.equal(c.out.view[:N].cpu(), expected.cpu())
    assert torch.equal(c.cache.view[:N].cpu(), expected_cache.cpu())
    c.out.assert_poisoned_from(N)


def _status_inside_out(c):
    c.status_arg = c.out_arg[CAPACITY - 2:]


def _status_inside_seq(c):
    big = Canary(8)
    big.view[:5] = _tensor(SEQ, torch.int32)
    big.snapshot = big.base.clone()
    c.tracked.append(("seq + status", big))
    c.seq, c.status_arg = big.view[:5], big.view[4:6]


@pytest.mark.parametrize("make, other", [(_status_inside_out, "out_seqlens_expanded"),
                                         (_status_inside_seq, "seq_lens")])
@pytest.mark.parametrize("runner", ["launch_zero_sync_check", "ZeroSyncFill_check",
                                    "launch_zero_sync_nocheck", "ZeroSyncFill_nocheck"])
def test_status_overlapping_a_buffer_rejected(runner, make, other):
    """The status is an output too."""
    c = Call()
    make(c)
    _assert_raises({**RUNNERS, **NO_CHECK_RUNNERS}[runner], c, ValueError,
                   [_name("status"), _name(other)])


def test_zero_sync_rejects_unknown_mapping():
    c = Call()
    with pytest.raises(ValueError, match="mapping"):
        nk.launch_zero_sync(c.ext, c.seq, c.topk, c.out_arg, c.cache_arg, status=c.status.view,
                            mapping="warp")
    c.assert_untouched()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="tensors on two different devices need a CUDA device")
@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("what", ["seq_on_cpu", "out_on_cpu", "cache_on_cpu"])
def test_mixed_devices_rejected(runner, what):
    c = Call()
    assert c.ext.device.type == "cuda"
    if what == "seq_on_cpu":
        c.seq = c.seq.cpu()
        patterns = [_name("seq_lens")]
    else:
        which = "out" if what == "out_on_cpu" else "cache"
        c.replace_output(which, Canary(CAPACITY, device="cpu"))
        patterns = [_name("out_seqlens_expanded" if which == "out" else "out_nsa_cache_seqlens")]
    _assert_raises(RUNNERS[runner], c, ValueError, patterns)


# --------------------------------------------------------------------------- full pipeline
WIDTH = 40
PAGE = 8
POOL = 7
MAX_BS = 8


class PipelineCall:
    """A valid launch_full_pipeline call on canary buffers; ``run`` uses check=True."""

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.ext, self.seq = lengths(EXT, SEQ)
        self.topk = TOPK
        self.pool = torch.tensor([4, 0, 6, 1, 3], dtype=torch.int64, device=DEVICE)
        self.r2t = torch.randint(0, 1 << 16, (POOL, WIDTH + 8), generator=g,
                                 dtype=torch.int32).to(DEVICE)
        self.page_size = PAGE
        self.canaries = {
            "cache_seqlens_int32": Canary(MAX_BS),
            "cu_seqlens_k": Canary(MAX_BS + 1),
            "seqlens_expanded": Canary(CAPACITY),
            "nsa_cache_seqlens": Canary(CAPACITY),
            "nsa_cu_seqlens_k": Canary(CAPACITY + 1),
            "page_table_1": Canary((CAPACITY, WIDTH)),
            "real_page_table": Canary((CAPACITY, -(-WIDTH // PAGE))),
        }
        self.status = Canary(2)
        self.status_arg = self.status.view
        self.tracked = [(k, v) for k, v in self.canaries.items()] + [("status", self.status)]
        self.views = {k: v.view for k, v in self.canaries.items()}

    def replace(self, field, canary, view=None):
        self.views[field] = canary.view if view is None else view
        self.tracked.append((f"replacement {field}", canary))

    def run(self, check=True, entry="launch_full_pipeline"):
        buffers = nk.PipelineBuffers(**self.views)
        args = (self.ext, self.seq, self.pool, self.r2t, self.topk, buffers, self.page_size)
        if entry == "FullPipelineFill":
            return nk.FullPipelineFill(*args, status=self.status_arg, check=check)()
        return nk.launch_full_pipeline(*args, status=self.status_arg, check=check)

    def assert_untouched(self):
        for what, c in self.tracked:
            c.assert_unchanged(what)


def _tracked(p, canary):
    p.tracked.append(("replacement", canary))
    return canary.view


def _replace(field, shape, dtype=torch.int32, transform=None):
    def mutate(p):
        c = Canary(shape, dtype=dtype)
        p.replace(field, c, transform(c.view) if transform else c.view)
    return mutate


PIPELINE_CASES = {
    "out_int64": (
        _replace("seqlens_expanded", CAPACITY, torch.int64),
        TypeError,
        [_name("seqlens_expanded")],
    ),
    "nsa_cu_int64": (
        _replace("nsa_cu_seqlens_k", CAPACITY + 1, torch.int64),
        TypeError,
        [_name("nsa_cu_seqlens_k")],
    ),
    "cache_non_contiguous": (
        _replace("nsa_cache_seqlens", 2 * CAPACITY, transform=lambda v: v[::2]),
        ValueError,
        [_name("nsa_cache_seqlens")],
    ),
    "capacity_below_n": (_replace("seqlens_expanded", N - 1), ValueError, [r"N = 7"]),
    "cache_seqlens_too_short": (
        _replace("cache_seqlens_int32", 4),
        ValueError,
        [_name("cache_seqlens_int32")],
    ),
    "cu_seqlens_k_too_short": (_replace("cu_seqlens_k", 5), ValueError, [_name("cu_seqlens_k")]),
    "page_table_int64": (
        _replace("page_table_1", (CAPACITY, WIDTH), torch.int64),
        TypeError,
        [_name("page_table_1")],
    ),
    "page_table_1d": (
        _replace("page_table_1", CAPACITY * WIDTH),
        TypeError,
        [_name("page_table_1")],
    ),
    "page_table_column_stride": (
        _replace("page_table_1", (CAPACITY, 2 * WIDTH), transform=lambda v: v[:, ::2]),
        TypeError,
        [_name("page_table_1")],
    ),
    "real_page_table_too_narrow": (
        _replace("real_page_table", (CAPACITY, WIDTH // PAGE - 1)),
        ValueError,
        [_name("real_page_table")],
    ),
    "pool_index_out_of_range": (
        _set(pool=_tensor([4, 0, 7, 1, 3], torch.int64)),
        ValueError,
        [_name("req_pool_indices")],
    ),
    "pool_index_negative": (
        _set(pool=_tensor([4, 0, 6, -1, 3], torch.int64)),
        ValueError,
        [_name("req_pool_indices")],
    ),
    "pool_float": (_set(pool=lambda p: p.pool.float()), TypeError, [_name("req_pool_indices")]),
    "pool_wrong_length": (_set(pool=lambda p: p.pool[:4]), ValueError, [_name("req_pool_indices")]),
    "r2t_float": (_set(r2t=lambda p: p.r2t.float()), TypeError, [_name("req_to_token")]),
    "r2t_1d": (_set(r2t=lambda p: p.r2t.flatten()), TypeError, [_name("req_to_token")]),
    "page_size_not_power_of_two": (_set(page_size=48), ValueError, [_name("page_size")]),
    "page_size_0": (_set(page_size=0), ValueError, [_name("page_size")]),
    "page_size_too_large": (_set(page_size=1024), ValueError, [_name("page_size")]),
    "status_int64": (
        _set(status_arg=lambda p: _tracked(p, Canary(2, dtype=torch.int64))),
        TypeError,
        [_name("status")],
    ),
    "status_non_contiguous": (
        _set(status_arg=lambda p: _tracked(p, Canary(4))[::2]),
        ValueError,
        [_name("status")],
    ),
}
# The stage input classes apply to the pipeline's ext / seq / topk unchanged.
PIPELINE_CASES.update({f"input_{k}": (v[0], v[1], v[2]) for k, v in INPUT_CASES.items()
                       if k not in INT32_CASES})


PIPELINE_ENTRIES = ["launch_full_pipeline", "FullPipelineFill"]


@pytest.mark.parametrize("entry", PIPELINE_ENTRIES)
def test_pipeline_valid_base_call(entry):
    p = PipelineCall()
    status = p.run(entry=entry)
    assert status.tolist() == [N, 0]
    ref = nk.pipeline_reference(p.ext, p.seq, p.pool, p.r2t, p.topk, p.page_size, WIDTH)
    assert torch.equal(p.views["seqlens_expanded"][:N].cpu(), ref["seqlens_expanded"].cpu())
    assert torch.equal(p.views["nsa_cu_seqlens_k"][:N + 1].cpu(), ref["nsa_cu_seqlens_k"].cpu())


@pytest.mark.parametrize("case", list(PIPELINE_CASES))
@pytest.mark.parametrize("entry", PIPELINE_ENTRIES)
def test_pipeline_bad_input_raises_and_writes_nothing(entry, case):
    mutate, exc, patterns = PIPELINE_CASES[case]
    p = PipelineCall()
    mutate(p)
    with pytest.raises(exc) as info:
        p.run(check=True, entry=entry)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), \
            f"message {str(info.value)!r} does not match {pattern!r}"
    p.assert_untouched()


# Package bug: _check_pipeline runs check_outputs only on the buffers that already are 1-D
# (``flat = {... if v.dim() == 1}``), so a 1-D buffer handed in as a 2-D tensor skips the
# dimension, dtype, contiguity and device checks. A 2-D non-contiguous view is then written as
# if it were flat and contiguous: entries land outside the view (here: in the canary's margin
# columns). With too few rows the capacity check happens to catch it; these have enough rows.
PIPELINE_NOT_1D_CASES = {
    "cache_2d_enough_rows": (_replace("nsa_cache_seqlens", 2 * CAPACITY,
                                      transform=lambda v: v.view(CAPACITY, 2)),
                             ValueError, [_name("nsa_cache_seqlens")]),
    "out_2d_non_contiguous_view": (_replace("seqlens_expanded", (CAPACITY, 2)), ValueError,
                                   [_name("seqlens_expanded")]),
    "nsa_cu_2d_int64": (_replace("nsa_cu_seqlens_k", (CAPACITY + 1, 1), torch.int64,
                                 transform=lambda v: v.contiguous()), (TypeError, ValueError),
                        [_name("nsa_cu_seqlens_k")]),
}


@pytest.mark.parametrize("case", list(PIPELINE_NOT_1D_CASES))
def test_pipeline_rejects_non_1d_flat_buffers(case):
    mutate, exc, patterns = PIPELINE_NOT_1D_CASES[case]
    p = PipelineCall()
    mutate(p)
    with pytest.raises(exc) as info:
        p.run(check=True)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), str(info.value)
    p.assert_untouched()


@pytest.mark.parametrize("entry", PIPELINE_ENTRIES)
def test_pipeline_rejects_short_status(entry):
    p = PipelineCall()
    short = Canary(1)
    p.status_arg = short.view
    p.tracked.append(("1-entry status", short))
    with pytest.raises(ValueError, match=_name("status")):
        p.run(check=True, entry=entry)
    p.assert_untouched()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="tensors on two different devices need a CUDA device")
@pytest.mark.parametrize("field", ["seqlens_expanded", "page_table_1"])
def test_pipeline_mixed_devices_rejected(field):
    p = PipelineCall()
    shape = (CAPACITY, WIDTH) if field == "page_table_1" else CAPACITY
    p.replace(field, Canary(shape, device="cpu"))
    with pytest.raises(ValueError, match=_name(field)):
        p.run(check=True)
    p.assert_untouched()



def test_pipeline_rejects_req_to_token_narrower_than_page_table():
    # Rows are copied up to min(kv_len, width): a req_to_token narrower than width would be
    # read past each row's end (into the next row, or past the allocation for the last).
    ext = torch.tensor([1, 2], dtype=torch.int32, device=DEVICE)
    seq = torch.tensor([12, 4], dtype=torch.int32, device=DEVICE)
    pool = torch.tensor([1, 0], dtype=torch.int32, device=DEVICE)
    req_to_token = torch.arange(16, dtype=torch.int32, device=DEVICE).reshape(2, 8)
    buffers = nk.PipelineBuffers.allocate(2, 4, 16, 8, DEVICE, fill=-5)
    before = {k: v.clone() for k, v in buffers.as_dict().items()}
    with pytest.raises(ValueError, match="req_to_token"):
        nk.launch_full_pipeline(ext, seq, pool, req_to_token, 8, buffers, 8)
    for k, v in buffers.as_dict().items():
        assert torch.equal(v, before[k]), k


# --------------------------------------------------------------------------- primitives
# The general rules that every stage and mode calls; each names its argument.
@pytest.mark.parametrize("value, expected", [(5, 5), (np.int64(2048), 2048), (np.int32(7), 7),
                                             (np.uint8(3), 3)])
def test_as_index_accepts_integers(value, expected):
    got = validation.as_index("width", value, minimum=0)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value, exc", [(True, TypeError), (np.bool_(False), TypeError),
                                        (2.0, TypeError), ("3", TypeError), (None, TypeError),
                                        (torch.tensor(3), TypeError), (-1, ValueError),
                                        (2**31, ValueError), (2**64, ValueError)])
def test_as_index_rejects(value, exc):
    with pytest.raises(exc, match=_name("width")):
        validation.as_index("width", value, minimum=0, maximum=2**31 - 1)


@pytest.mark.parametrize("value", [1, 4, np.int64(4), 512])
def test_check_power_of_two_accepts(value):
    assert validation.check_power_of_two("page_size", value, 512) == int(value)


@pytest.mark.parametrize("value, exc", [(True, TypeError), (np.bool_(True), TypeError),
                                        (0, ValueError), (48, ValueError), (1024, ValueError),
                                        (np.int64(6), ValueError), (4.0, TypeError)])
def test_check_power_of_two_rejects(value, exc):
    with pytest.raises(exc, match=_name("page_size")) as info:
        validation.check_power_of_two("page_size", value, 512)
    if isinstance(value, np.integer):
        assert str(int(value)) in str(info.value) and "np." not in str(info.value)


def test_check_min_entries():
    """A cu array needs its leading 0, so at least 1 entry."""
    validation.check_min_entries("nsa_cu_seqlens_k", torch.zeros(1, dtype=torch.int32), 1)
    with pytest.raises(ValueError, match=_name("nsa_cu_seqlens_k")):
        validation.check_min_entries("nsa_cu_seqlens_k", torch.zeros(0, dtype=torch.int32), 1)


def test_check_no_overlap_names_both():
    base = torch.zeros(64, dtype=torch.int32)
    a, b, far = base[:10], base[9:20], base[20:30]
    validation.check_no_overlap({"a": a, "far": far}, {"inp": base[40:]})
    with pytest.raises(ValueError, match=rf"{_name('a')}.*{_name('b')}|{_name('b')}.*{_name('a')}"):
        validation.check_no_overlap({"a": a, "b": b})
    with pytest.raises(ValueError, match=rf"{_name('far')}.*{_name('inp')}"):
        validation.check_no_overlap({"far": far}, {"inp": base[29:31]})
    # inputs may share memory with each other (only outputs are written)
    validation.check_no_overlap({"a": a}, {"x": base[30:], "y": base[30:]})


def test_check_no_overlap_byte_ranges():
    base = torch.zeros(64, dtype=torch.int32)
    as_bytes = base.view(torch.uint8)
    # 0-element tensors are empty wherever they point
    validation.check_no_overlap({"empty": base[5:5]}, {"all": base})
    # int32 entry 10 is bytes 40..43: byte 43 overlaps, byte 44 does not
    with pytest.raises(ValueError):
        validation.check_no_overlap({"out": base[10:11]}, {"raw": as_bytes[43:44]})
    validation.check_no_overlap({"out": base[10:11]}, {"raw": as_bytes[44:45]})
    # a 2-D view's range spans its rows; a table beside it does not overlap
    table = torch.zeros(6, 8, dtype=torch.int32)
    validation.check_no_overlap({"top": table[:3]}, {"bottom": table[3:]})
    with pytest.raises(ValueError):
        validation.check_no_overlap({"top": table[:3, 2:5]}, {"row2": table[2]})


def test_check_strides_2d():
    """Sane row strides; [N, 1] views and 0-column tables pass."""
    validation.check_strides_2d("page_table_1", torch.zeros(4, 8, dtype=torch.int32))
    validation.check_strides_2d("page_table_1", torch.zeros(8, 8, dtype=torch.int32)[:, 2:3])
    column = torch.zeros(8, dtype=torch.int32).as_strided((8, 1), (1, 8))
    validation.check_strides_2d("page_table_1", column)
    validation.check_strides_2d("page_table_1", torch.from_numpy(np.zeros((5, 0), dtype=np.int32)))
    validation.check_strides_2d("page_table_1", torch.zeros(1, 8, dtype=torch.int32).expand(1, 8))
    with pytest.raises(ValueError, match=_name("page_table_1")):
        validation.check_strides_2d("page_table_1", torch.zeros(8, dtype=torch.int32).expand(4, 8))
    with pytest.raises(ValueError, match=_name("page_table_1")):
        validation.check_strides_2d(
            "page_table_1", torch.zeros(40, dtype=torch.int32).as_strided((4, 8), (5, 1))
        )
    with pytest.raises(ValueError, match=_name("page_table_1")):
        validation.check_strides_2d("page_table_1", torch.zeros(8, 16, dtype=torch.int32)[:, ::2])
    with pytest.raises(ValueError, match=_name("page_table_1")):
        validation.check_strides_2d("page_table_1", torch.zeros(8, dtype=torch.int32))


def test_check_int32_fits_names_first_bad_request():
    validation.check_int32_fits("seq_lens", np.array([0, 2**31 - 1, -2**31]))
    with pytest.raises(ValueError, match=_index("seq_lens", 2)):
        validation.check_int32_fits("seq_lens", np.array([0, 5, 2**31, -2**40]))
    with pytest.raises(ValueError, match=_index("req_to_token", 1)):
        validation.check_int32_fits("req_to_token", [7, -2**31 - 1])


def test_check_prefix_fits_names_first_request_past_int32():
    assert validation.check_prefix_fits("seq_lens", np.array([2**30, 2**30 - 1])) == 2**31 - 1
    with pytest.raises(ValueError, match=_index("seq_lens", 1)):
        validation.check_prefix_fits("seq_lens", np.array([2**31 - 1, 2**31 - 1, 5]))
    # values beyond int64 sums must not wrap back into range
    with pytest.raises(ValueError, match=_index("seq_lens", 0)):
        validation.check_prefix_fits("seq_lens", np.array([2**63 - 1, 2**63 - 1, 2]))


# --------------------------------------------------------------------------- pipeline_reference
def _pipeline_reference(ext, seq, topk=8, r2t=None, width=4, page_size=2):
    ext = torch.tensor(ext, dtype=torch.int64)
    seq = torch.tensor(seq, dtype=torch.int64)
    pool = torch.arange(len(ext), dtype=torch.int32)
    if r2t is None:
        r2t = torch.arange(len(ext) * width, dtype=torch.int32).reshape(len(ext), width)
    return nk.pipeline_reference(ext, seq, pool, r2t, topk, page_size, width)


def test_pipeline_reference_cu_seqlens_k_past_int32():
    """It wrapped like the kernels, so the tests could not see it."""
    with pytest.raises(
        ValueError,
        match=rf"{_index('seq_lens', 1)}.*cu_seqlens_k|cu_seqlens_k.*{_index('seq_lens', 1)}",
    ):
        _pipeline_reference([1, 1], [2**31 - 1, 2**31 - 1])


def test_pipeline_reference_nsa_cu_seqlens_k_past_int32():
    with pytest.raises(ValueError, match="nsa_cu_seqlens_k"):
        _pipeline_reference([3], [2**31 - 1], topk=2**30)


def test_pipeline_reference_req_to_token_past_int32():
    r2t = torch.tensor([[0, 1, 2, 3], [4, 2**31, 6, 7]], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"req_to_token.*request 1|request 1.*req_to_token"):
        _pipeline_reference([1, 1], [4, 4], r2t=r2t)
    # past the live columns (kv = 1) the entry is never read: no error
    _pipeline_reference([1, 1], [4, 1], r2t=r2t)


def test_pipeline_reference_exact_at_int32_limits():
    ref = _pipeline_reference([1, 1], [2**31 - 2, 1], topk=2**31 - 1)
    assert ref["cu_seqlens_k"].tolist() == [0, 2**31 - 2, 2**31 - 1]
    assert ref["nsa_cu_seqlens_k"].tolist() == [0, 2**31 - 2, 2**31 - 1]


def test_check_nsa_cu_fits_matches_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(50):
        ext = rng.integers(0, 6, 4)
        seq = ext + rng.integers(0, 20, 4)
        topk = int(rng.integers(1, 12))
        brute = sum(min(v, topk) for qo, kv in zip(ext, seq) for v in range(kv - qo + 1, kv + 1))
        assert validation.check_nsa_cu_fits(ext, seq, topk) == brute
    with pytest.raises(ValueError, match=r"nsa_cu_seqlens_k.*request 1"):
        validation.check_nsa_cu_fits([1, 3], [5, 2**31 - 1], 2**30)


def test_check_req_to_token_fits_only_live_columns():
    rows = torch.tensor([[1, 2**31, 3], [4, 5, -2**31 - 1]], dtype=torch.int64)
    validation.check_req_to_token_fits(rows, [7, 2], [1, 2])
    with pytest.raises(ValueError, match=r"req_to_token\[2, 2\].*request 1"):
        validation.check_req_to_token_fits(rows, [7, 2], [1, 3])
