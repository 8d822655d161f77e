"""``launch_zero_sync``: both work mappings, the device status, overflow, padded rows.

``launch_zero_sync`` never learns N on the host: it writes at most ``capacity`` (the shorter
buffer's length) entries and reports ``status = [N, overflow]`` on the device. Every check
here compares with ``nsa_kernels.reference`` (or, for CUDA-graph padding rows that the
reference rejects, with a small hand-written expectation).
"""
import time

import nsa_kernels as nk
from nsa_kernels.stages import stage5_zero_sync as s5
from nsa_kernels.testing import DEVICE, POISON, Canary, assert_equal, lengths
from nsa_kernels.testing.strategies import cheap_sizes, describe, examples, fill_inputs
from nsa_kernels.validation import FILL_STATUS_ENTRIES, FillStatus

import pytest
import torch
import triton
from hypothesis import example, given
from hypothesis import strategies as st

TOPK = 2048
MAPPINGS = ["request", "token"]


def run_zero_sync(ext, seq, topk, capacity, mapping, clamp_padded_rows=False,
                  cache_capacity=None, check=False):
    """Launch on canary buffers (cache buffer may be longer); return (status, out, cache)."""
    out = Canary(capacity)
    cache = Canary(capacity if cache_capacity is None else cache_capacity)
    status = Canary(2)
    result = nk.launch_zero_sync(ext, seq, topk, out.view, cache.view, status=status.view,
                                 mapping=mapping, clamp_padded_rows=clamp_padded_rows,
                                 check=check)
    assert result.data_ptr() == status.view.data_ptr(), "the status passed in must be returned"
    status.assert_margins("status")
    return result.cpu().tolist(), out, cache


def check_against_reference(ext, seq, topk, capacity, mapping, cache_capacity=None, **kwargs):
    """Status, the written prefix (capacity-limited), untouched rest and margins."""
    expected, expected_cache = nk.reference(ext, seq, topk)
    n = expected.numel()
    status, out, cache = run_zero_sync(ext, seq, topk, capacity, mapping,
                                       cache_capacity=cache_capacity, **kwargs)
    effective = min(capacity, capacity if cache_capacity is None else cache_capacity)
    written = min(n, effective)
    assert status == [n, int(n > effective)], f"status {status}, N = {n}, capacity {effective}"
    assert_equal(out.view[:written], expected[:written], "seqlens_expanded")
    assert_equal(cache.view[:written], expected_cache[:written], "nsa_cache_seqlens")
    out.assert_poisoned_from(written, "out_seqlens_expanded")
    cache.assert_poisoned_from(written, "out_nsa_cache_seqlens")
    out.assert_margins("out_seqlens_expanded")
    cache.assert_margins("out_nsa_cache_seqlens")
    return n


def random_batch(bs, seed, qo_max=4, dtype=torch.int32, zero_every=0):
    g = torch.Generator().manual_seed(seed)
    ext = torch.randint(0, qo_max + 1, (bs,), generator=g)
    if zero_every:
        ext[::zero_every] = 0
    seq = ext + torch.randint(0, 2 * TOPK, (bs,), generator=g)
    return ext.to(DEVICE, dtype), seq.to(DEVICE, dtype)


# --------------------------------------------------------------------------- properties
_CHEAP = cheap_sizes()
# The token mapping scans the requests in chunks of 32 for every 256-token block: under the
# interpreter its cost grows with bs x N, so its generated batches stay smaller there.
REQUEST_INPUTS = fill_inputs(max_bs=2000, max_tokens=3000 if _CHEAP else 20000)
TOKEN_INPUTS = fill_inputs(max_bs=160 if _CHEAP else 2000, max_tokens=2500 if _CHEAP else 20000,
                           max_head=8)
SLACK = st.one_of(st.just(0), st.integers(1, 600))


def _regressions(test):
    for (e, s, topk) in [([], [], 1), ([0, 0], [3, 0], 7), ([3], [3], 1),
                         ([5, 0, 1], [4096, 2, 1], 4096)]:
        test = example(inputs=(*lengths(e, s), topk), slack=0)(test)
    return test


@examples(40)
@_regressions
@given(inputs=REQUEST_INPUTS, slack=SLACK)
def test_property_request_mapping(inputs, slack):
    ext, seq, topk = inputs
    n = reference_n_or_zero(ext)
    try:
        check_against_reference(ext, seq, topk, n + slack, "request")
    except AssertionError as err:
        raise AssertionError(f"{describe(ext, seq, topk)} slack={slack}: {err}") from None


@examples(25)
@_regressions
@given(inputs=TOKEN_INPUTS, slack=SLACK)
def test_property_token_mapping(inputs, slack):
    ext, seq, topk = inputs
    n = reference_n_or_zero(ext)
    try:
        check_against_reference(ext, seq, topk, n + slack, "token")
    except AssertionError as err:
        raise AssertionError(f"{describe(ext, seq, topk)} slack={slack}: {err}") from None


@examples(25)
@given(inputs=TOKEN_INPUTS, cut=st.floats(0, 1), mapping=st.sampled_from(MAPPINGS))
def test_property_overflow(inputs, cut, mapping):
    """capacity < N: exactly the first ``capacity`` entries, status [N, 1]."""
    ext, seq, topk = inputs
    n = reference_n_or_zero(ext)
    capacity = int(n * cut)
    if capacity >= n:
        capacity = max(n - 1, 0)
    check_against_reference(ext, seq, topk, capacity, mapping)


def reference_n_or_zero(ext):
    return int(ext.long().sum()) if ext.numel() else 0


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize("mapping", MAPPINGS + ["auto"])
@pytest.mark.parametrize("bs", [127, 128, 129, 300, 1000, 2100])
def test_bs_beyond_one_block(bs, mapping):
    # REQUEST_BLOCK_R = 128 requests per program (so 300 and 1000 need several programs and
    # the cross-program prefix, and 2100 more than one REQUEST_PREFIX_BLOCK = 1024 load of
    # it); TOKEN_BLOCK_R = 32 requests per scanned chunk.
    ext, seq = random_batch(bs, seed=bs, zero_every=13)
    n = reference_n_or_zero(ext)
    check_against_reference(ext, seq, TOPK, n + 9, mapping)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_prefill_sized(mapping):
    ext, seq = lengths([3000, 0, 3000, 3000], [3000, 5, 3100, 7000])
    check_against_reference(ext, seq, TOPK, 9000 + 300, mapping)


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("bs", [0, 1, 5])
def test_capacity_greater_than_n(bs, mapping):
    ext, seq = random_batch(bs, seed=11 + bs)
    n = reference_n_or_zero(ext)
    check_against_reference(ext, seq, TOPK, n + 500, mapping)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_capacity_equal_n(mapping):
    ext, seq = random_batch(200, seed=5)
    n = reference_n_or_zero(ext)
    check_against_reference(ext, seq, TOPK, n, mapping)


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 9, 255, 256, 257, 400])
def test_overflow_writes_capacity_prefix(capacity, mapping):
    # N = 13 + 4 * 100 + 7 = 420 > every capacity; cuts land inside requests and on block
    # boundaries of the token mapping (256).
    ext = torch.tensor([3, 10] + [4] * 100 + [7], dtype=torch.int32, device=DEVICE)
    seq = ext + torch.arange(ext.numel(), dtype=torch.int32, device=DEVICE) * 40
    assert check_against_reference(ext, seq, TOPK, capacity, mapping) == 420


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_overflow_with_buffers_of_different_lengths(mapping):
    # capacity is the shorter buffer: the longer one must not be written past it either.
    ext, seq = lengths([4, 4, 4], [10, 20, 2049])
    check_against_reference(ext, seq, TOPK, 7, mapping, cache_capacity=10)
    check_against_reference(ext, seq, TOPK, 10, mapping, cache_capacity=7)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_longer_buffer_past_n_untouched(mapping):
    ext, seq = lengths([2, 3], [10, 3])
    check_against_reference(ext, seq, TOPK, 9, mapping, cache_capacity=30)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_overflow_bs_beyond_one_block(mapping):
    ext, seq = random_batch(300, seed=300, qo_max=6)
    n = reference_n_or_zero(ext)
    check_against_reference(ext, seq, TOPK, n // 3, mapping)


def test_status_overwrites_stale_values():
    # A status tensor reused across calls (CUDA-graph style) must be fully rewritten.
    status = torch.tensor([999, 1], dtype=torch.int32, device=DEVICE)
    out = torch.full((8,), POISON, dtype=torch.int32, device=DEVICE)
    cache = out.clone()
    ext, seq = lengths([2, 1], [2, 9])
    for mapping in MAPPINGS:
        status.copy_(torch.tensor([999, 1]))
        nk.launch_zero_sync(ext, seq, TOPK, out, cache, status=status, mapping=mapping)
        assert status.cpu().tolist() == [3, 0]
    status = nk.launch_zero_sync(ext, seq, TOPK, out, cache)
    assert status.dtype == torch.int32 and status.cpu().tolist() == [3, 0]
    assert FillStatus.read(status) == FillStatus(n_tokens=3, overflow=0)
    assert status.shape[0] == FILL_STATUS_ENTRIES


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_check_true_matches_reference(mapping):
    ext, seq = random_batch(50, seed=50)
    n = reference_n_or_zero(ext)
    check_against_reference(ext, seq, TOPK, n + 3, mapping, check=True)


def test_stage_contract_returns_n():
    ext, seq = random_batch(77, seed=77, zero_every=5)
    n = reference_n_or_zero(ext)
    expected, expected_cache = nk.reference(ext, seq, TOPK)
    out, cache = Canary(n + 40), Canary(n + 40)
    got = nk.STAGES["zero_sync"](ext, seq, TOPK, out.view, cache.view)
    assert type(got) is int and got == n
    assert_equal(out.view[:n], expected)
    assert_equal(cache.view[:n], expected_cache)
    out.assert_poisoned_from(n)
    cache.assert_poisoned_from(n)
    out.assert_margins()
    cache.assert_margins()


# --------------------------------------------------------------------------- padded rows
# CUDA-graph padding: rows with kv < qo (invalid for ``reference``). With clamp_padded_rows the
# values are max(kv - qo + 1 + j, 0) and the cache min(that, topk). Worked by hand:
#   request 0: qo 3, kv 1 -> -1, 0, 1 -> 0, 0, 1
#   request 1: qo 2, kv 5 ->  4, 5     (a real row, topk 2 -> cache 2, 2)
#   request 2: qo 4, kv 0 -> -3..0  -> 0, 0, 0, 0
#   request 3: qo 1, kv 2 ->  2        (real)
#   request 4: qo 0, kv 0 ->  nothing
PADDED_EXT = [3, 2, 4, 1, 0]
PADDED_SEQ = [1, 5, 0, 2, 0]
PADDED_TOPK = 2
PADDED_EXPANDED = [0, 0, 1, 4, 5, 0, 0, 0, 0, 2]
PADDED_CACHE = [0, 0, 1, 2, 2, 0, 0, 0, 0, 2]


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_clamp_padded_rows(mapping, dtype):
    ext, seq = lengths(PADDED_EXT, PADDED_SEQ, dtype)
    status, out, cache = run_zero_sync(ext, seq, PADDED_TOPK, 16, mapping, clamp_padded_rows=True)
    assert status == [10, 0]
    assert out.view[:10].cpu().tolist() == PADDED_EXPANDED
    assert cache.view[:10].cpu().tolist() == PADDED_CACHE
    out.assert_poisoned_from(10)
    cache.assert_poisoned_from(10)
    out.assert_margins()
    cache.assert_margins()


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_clamp_padded_rows_overflow(mapping):
    ext, seq = lengths(PADDED_EXT, PADDED_SEQ)
    status, out, cache = run_zero_sync(ext, seq, PADDED_TOPK, 6, mapping, clamp_padded_rows=True)
    assert status == [10, 1]
    assert out.view.cpu().tolist() == PADDED_EXPANDED[:6]
    assert cache.view.cpu().tolist() == PADDED_CACHE[:6]
    out.assert_margins()
    cache.assert_margins()


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_clamp_padded_rows_padding_after_real_batch(mapping):
    # SGLang's layout: 150 real requests, then padding rows up to the captured batch size
    # (qo = accept length, kv = 0); the real rows must equal the reference.
    ext, seq = random_batch(150, seed=150, qo_max=3)
    pad = 60
    ext_all = torch.cat([ext, torch.full((pad,), 2, dtype=ext.dtype, device=DEVICE)])
    seq_all = torch.cat([seq, torch.zeros(pad, dtype=seq.dtype, device=DEVICE)])
    expected, expected_cache = nk.reference(ext, seq, TOPK)
    n = expected.numel()
    status, out, cache = run_zero_sync(ext_all, seq_all, TOPK, n + 2 * pad + 5, mapping,
                                       clamp_padded_rows=True)
    assert status == [n + 2 * pad, 0]
    assert_equal(out.view[:n], expected)
    assert_equal(cache.view[:n], expected_cache)
    # padding row j of 2 tokens: max(0 - 2 + 1 + t, 0) = 0 for t in 0, 1
    assert bool((out.view[n : n + 2 * pad] == 0).all()) and bool(
        (cache.view[n : n + 2 * pad] == 0).all()
    )
    out.assert_poisoned_from(n + 2 * pad)
    out.assert_margins()
    cache.assert_margins()


@examples(15)
@given(inputs=TOKEN_INPUTS, mapping=st.sampled_from(MAPPINGS))
def test_clamp_padded_rows_is_identity_on_valid_rows(inputs, mapping):
    ext, seq, topk = inputs
    n = reference_n_or_zero(ext)
    check_against_reference(ext, seq, topk, n + 3, mapping, clamp_padded_rows=True)


# --------------------------------------------------------------------------- block sizes
# The launcher picks one block size per bucket; the kernels must be right for every one, and
# small blocks make multi-program / multi-chunk paths cheap to reach under the interpreter.
def _launch_kernel(kernel, ext, seq, topk, out, cache, status, capacity, grid, **meta):
    kernel[grid](ext, seq, out, cache, status, ext.shape[0], capacity, topk,
                 CLAMP_PADDED=False, **meta)


REQUEST_BLOCKS = ([(block_r, 4, prefix) for block_r in (2, 16, 128) for prefix in (2, 32, 1024)]
                  + [(16, block_q, 1024) for block_q in (1, 2, 8, 16, 64)])


@pytest.mark.parametrize("block_r,block_q,prefix_block", REQUEST_BLOCKS)
def test_request_kernel_block_sizes(block_r, block_q, prefix_block):
    # PREFIX_BLOCK < first_request exercises the multi-load prefix (bs > 1024 in production).
    ext, seq = random_batch(70, seed=block_r * 100 + block_q + prefix_block, qo_max=9,
                            zero_every=7)
    expected, expected_cache = nk.reference(ext, seq, 5)
    n = expected.numel()
    out, cache, status = Canary(n + 20), Canary(n + 20), Canary(2)
    _launch_kernel(s5.zero_sync_request_kernel, ext, seq, 5, out.view, cache.view, status.view,
                   n + 20, (triton.cdiv(70, block_r),), BLOCK_R=block_r, BLOCK_Q=block_q,
                   PREFIX_BLOCK=prefix_block)
    assert status.view.cpu().tolist() == [n, 0]
    assert_equal(out.view[:n], expected)
    assert_equal(cache.view[:n], expected_cache)
    out.assert_poisoned_from(n)
    cache.assert_poisoned_from(n)
    for c in (out, cache, status):
        c.assert_margins()


@pytest.mark.parametrize("block_t,block_r", [(16, 2), (32, 4), (64, 32), (256, 8), (512, 64)])
def test_token_kernel_block_sizes(block_t, block_r):
    ext, seq = random_batch(70, seed=block_t + block_r, qo_max=9, zero_every=7)
    expected, expected_cache = nk.reference(ext, seq, 5)
    n = expected.numel()
    capacity = n + 20
    out, cache, status = Canary(capacity), Canary(capacity), Canary(2)
    _launch_kernel(s5.zero_sync_token_kernel, ext, seq, 5, out.view, cache.view, status.view,
                   capacity, (triton.cdiv(capacity, block_t),), BLOCK_T=block_t, BLOCK_R=block_r)
    assert status.view.cpu().tolist() == [n, 0]
    assert_equal(out.view[:n], expected)
    assert_equal(cache.view[:n], expected_cache)
    out.assert_poisoned_from(n)
    cache.assert_poisoned_from(n)
    for c in (out, cache, status):
        c.assert_margins()


# --------------------------------------------------------------------------- launch choices
def test_pick_mapping_threshold():
    # Request-parallel while the buffers hold at most 16 tokens per request (draft extend).
    for bs in (1, 7, 128, 4096):
        assert s5.pick_mapping(bs, 16 * bs) == "request"
        assert s5.pick_mapping(bs, 16 * bs + 1) == "token"
    assert s5.pick_mapping(0, 0) == "request"
    assert s5.pick_mapping(0, 17) == "token"


def test_extend_block_buckets():
    # A power of two in 1..16 that covers the tokens per request the capacity allows.
    for bs in (0, 1, 3, 100, 4096):
        for capacity in (0, 1, 5, 64, 1000, 10**6):
            block = s5.extend_block(bs, capacity)
            assert block in (1, 2, 4, 8, 16), (bs, capacity, block)
            per_request = -(-capacity // max(bs, 1))
            assert block >= min(per_request, 16)
            assert block < 2 * max(per_request, 1)


def test_auto_mapping_chooses_by_capacity(monkeypatch):
    # "auto" must launch the kernel that pick_mapping names (both are correct; the choice is
    # about speed), observed by wrapping the two kernels' launch.
    launched = []

    class Spy:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            launched.append(self.name)
            return self.kernel[grid]

    monkeypatch.setattr(s5, "zero_sync_request_kernel", Spy("request", s5.zero_sync_request_kernel))
    monkeypatch.setattr(s5, "zero_sync_token_kernel", Spy("token", s5.zero_sync_token_kernel))
    ext, seq = lengths([2, 3], [4, 9])
    check_against_reference(ext, seq, TOPK, 32, "auto")   # 32 <= 16 * 2 -> request
    check_against_reference(ext, seq, TOPK, 33, "auto")   # 33 > 16 * 2 -> token
    assert launched == ["request", "token"]


# --------------------------------------------------------------------------- compiled variants
def _compiled_variants(kernel):
    """Number of compiled specialisations a JITFunction holds, across Triton 3.x layouts."""
    caches = getattr(kernel, "device_caches", None)
    if caches is not None:  # Triton >= 3.1: device -> (kernel_cache, ...) tuple
        total = 0
        for entry in caches.values():
            first = entry[0] if isinstance(entry, (tuple, list)) else entry
            total += len(first)
        return total
    cache = getattr(kernel, "cache", None)  # older: device -> {key: compiled}
    if isinstance(cache, dict):
        return sum(len(v) for v in cache.values())
    pytest.skip("this Triton version exposes no compile cache on the JITFunction")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or nk.INTERPRET,
                    reason="compile caches exist only for compiled kernels (GPU, no interpreter)")
def test_bs_sweep_compiles_few_variants():
    # batch_size, capacity and topk are not specialised on, and the extend block comes from 5
    # buckets: sweeping bs over 1..4096 with three capacities per bs (1 and 4 tokens per
    # request: request mapping; 32: token mapping) must compile at most one variant per
    # distinct (mapping, extend block) plan, never one per bs. (Seen on an H100 with Triton
    # 3.6: 1 request + 1 token variant for the draft-extend and prefill capacities.)
    names = ("zero_sync_request_kernel", "zero_sync_token_kernel")
    before = {k: _compiled_variants(getattr(s5, k)) for k in names}
    plans = set()
    for bs in range(1, 4097):
        ext = torch.ones(bs, dtype=torch.int32, device="cuda")
        seq = ext * 7
        for capacity in (bs, 4 * bs, 32 * bs + 1):
            mapping = s5.pick_mapping(bs, capacity)
            plans.add((mapping, s5.extend_block(bs, capacity) if mapping == "request" else 0))
            out = torch.empty(capacity, dtype=torch.int32, device="cuda")
            nk.launch_zero_sync(ext, seq, TOPK, out, torch.empty_like(out))
    torch.cuda.synchronize()
    new = {k: _compiled_variants(getattr(s5, k)) - before[k] for k in names}
    assert len(plans) <= 6, plans
    assert sum(new.values()) <= len(plans), f"compiled variants per kernel: {new}; plans {plans}"
    # and the last launch is still right
    ext = torch.randint(0, 5, (4096,), device="cuda", dtype=torch.int32)
    seq = ext + 100
    check_against_reference(ext, seq, TOPK, 4 * 4096 + 1, "auto")


# --------------------------------------------------------------------------- bound launches
@pytest.mark.parametrize("mapping", MAPPINGS + ["auto"])
def test_zero_sync_fill_follows_changing_contents(mapping):
    """ZeroSyncFill binds static buffers once; each call must reflect their current contents
    (a CUDA-graph runner rewrites the same input tensors before every replay)."""
    bs, capacity = 40, 40 * 5
    ext = torch.zeros(bs, dtype=torch.int32, device=DEVICE)
    seq = torch.zeros(bs, dtype=torch.int32, device=DEVICE)
    out, cache, status = Canary(capacity), Canary(capacity), Canary(2)
    fill = nk.ZeroSyncFill(ext, seq, TOPK, out.view, cache.view, status.view, mapping=mapping)
    for seed, qo_max in ((1, 4), (2, 1), (3, 5), (4, 0)):
        new_ext, new_seq = random_batch(bs, seed=seed, qo_max=qo_max)
        ext.copy_(new_ext)
        seq.copy_(new_seq)
        out.view.fill_(out.poison)
        cache.view.fill_(cache.poison)
        result = fill()
        assert result.data_ptr() == status.view.data_ptr()
        expected, expected_cache = nk.reference(ext, seq, TOPK)
        n = expected.numel()
        assert result.cpu().tolist() == [n, 0]
        assert_equal(out.view[:n], expected, f"seed {seed}")
        assert_equal(cache.view[:n], expected_cache, f"seed {seed}")
        out.assert_poisoned_from(n)
        cache.assert_poisoned_from(n)
    for c in (out, cache, status):
        c.assert_margins()


def test_zero_sync_fill_overflow_and_padding():
    ext, seq = lengths(PADDED_EXT, PADDED_SEQ)
    out, cache, status = Canary(6), Canary(6), Canary(2)
    fill = nk.ZeroSyncFill(ext, seq, PADDED_TOPK, out.view, cache.view, status.view,
                           clamp_padded_rows=True)
    assert fill().cpu().tolist() == [10, 1]
    assert out.view.cpu().tolist() == PADDED_EXPANDED[:6]
    assert cache.view.cpu().tolist() == PADDED_CACHE[:6]
    out.assert_margins()
    cache.assert_margins()


def test_stage_bound_hot_path_returns_status():
    ext, seq = random_batch(20, seed=20)
    n = reference_n_or_zero(ext)
    out, cache = Canary(n + 8), Canary(n + 8)
    hot = nk.STAGES["zero_sync"].bound(ext, seq, TOPK, out.view, cache.view)
    status = hot()
    assert isinstance(status, torch.Tensor) and status.cpu().tolist() == [n, 0]
    expected, expected_cache = nk.reference(ext, seq, TOPK)
    assert_equal(out.view[:n], expected)
    assert_equal(cache.view[:n], expected_cache)
    out.assert_poisoned_from(n)
    out.assert_margins()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or nk.INTERPRET,
                    reason="the direct launch path and CUDA graphs need a GPU")
@pytest.mark.parametrize("mapping", MAPPINGS)
def test_cuda_graph_replay_follows_changing_contents(mapping):
    # The zero-sync launch is capturable: capture once, then rewrite the static inputs and
    # replay; every replay must equal the reference of the inputs at that time.
    bs, capacity = 64, 64 * 4
    ext = torch.zeros(bs, dtype=torch.int32, device="cuda")
    seq = torch.zeros(bs, dtype=torch.int32, device="cuda")
    out = torch.full((capacity,), POISON, dtype=torch.int32, device="cuda")
    cache = out.clone()
    fill = nk.ZeroSyncFill(ext, seq, TOPK, out, cache, mapping=mapping)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fill()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fill()
    for seed in range(4):
        new_ext, new_seq = random_batch(bs, seed=seed, qo_max=4)
        ext.copy_(new_ext)
        seq.copy_(new_seq)
        out.fill_(POISON)
        cache.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        expected, expected_cache = nk.reference(ext, seq, TOPK)
        n = expected.numel()
        assert fill.status.tolist() == [n, 0]
        assert_equal(out[:n], expected)
        assert_equal(cache[:n], expected_cache)
        assert bool((out[n:] == POISON).all())


# --------------------------------------------------------------------------- bad input
INT32_MAX = 2**31 - 1


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_status_total_does_not_wrap(mapping, dtype):
    """Finding 5: ext = [2**31 - 1, 1] used to report [-2**31, 0]; N saturates, overflow set."""
    ext, seq = lengths([INT32_MAX, 1], [INT32_MAX, 1], dtype=dtype)
    status, out, cache = run_zero_sync(ext, seq, TOPK, 8, mapping)
    assert status == [INT32_MAX, 1], status
    # the first 8 tokens are request 0's first 8 values: 1, 2, ..., 8
    assert out.view.tolist() == list(range(1, 9))
    assert cache.view.tolist() == list(range(1, 9))
    out.assert_margins()
    cache.assert_margins()


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_status_total_past_int32_with_int64_lengths(mapping):
    # Totals past 2**32 must not wrap back into a small, "fitting" N with the flag clear.
    ext, seq = lengths([2**32 + 3, 5], [2**32 + 3, 9], dtype=torch.int64)
    status, out, cache = run_zero_sync(ext, seq, TOPK, 4, mapping)
    assert status == [INT32_MAX, 1], status
    out.assert_margins()
    cache.assert_margins()


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_status_exact_when_total_fits(mapping):
    ext, seq = lengths([INT32_MAX - 1, 1], [INT32_MAX - 1, 4], dtype=torch.int64)
    status, _out, _cache = run_zero_sync(ext, seq, TOPK, 2, mapping)
    assert status == [INT32_MAX, 1], status
    ext, seq = lengths([3, 0], [5, 4])
    assert run_zero_sync(ext, seq, TOPK, 3, mapping)[0] == [3, 0]


@pytest.mark.parametrize("qo", [10**6, INT32_MAX])
def test_request_mapping_work_bounded_by_capacity(qo):
    """Finding 6: the request mapping looped over max(qo_len) columns whatever the capacity
    (10**6 took minutes under the interpreter, 2**31 - 1 never ended)."""
    ext, seq = lengths([qo], [qo])
    started = time.perf_counter()
    status, out, _cache = run_zero_sync(ext, seq, TOPK, 4, "request")
    elapsed = time.perf_counter() - started
    assert status == [qo, 1]
    assert out.view.tolist() == [1, 2, 3, 4]
    # An interpreter launch takes milliseconds; the unbounded loop took minutes.
    assert elapsed < 20, f"{elapsed:.1f} s for capacity 4"


def test_zero_sync_fill_documents_bind_time_check():
    """Finding 7: ZeroSyncFill(check=True) validates the contents once, when bound."""
    doc = nk.ZeroSyncFill.__doc__
    assert "check=True" in doc and "bind" in doc.lower()
