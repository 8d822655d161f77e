"""Extend (prefill) metadata: the one-launch kernel, its buffer and allocating forms, and the
replay of SGLang's eager path, all against the int64 reference ``extend_reference``."""
import os
import subprocess
import sys
import textwrap
import time

import nsa_kernels as nk  # first: it switches Triton to its interpreter on CPU-only machines
from nsa_kernels.modes import extend as ex
from nsa_kernels.modes.extend_reference import EXTEND_KEYS, extend_reference
from nsa_kernels.peers.sglang_extend import sglang_extend_metadata
from nsa_kernels.testing import Canary, assert_equal
from nsa_kernels.validation import extend as extend_checks

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

DEVICE = nk.DEVICE
TOPK = 2048


def make_case(qo, kv, width=None, pool_rows=None, seed=0, table_dtype=torch.int32,
              length_dtype=torch.int32):
    """Lengths, a shuffled pool and a random ``req_to_token`` wide enough for every kv."""
    g = torch.Generator().manual_seed(seed)
    bs = len(qo)
    width = width or max(list(kv) + [1])
    pool_rows = pool_rows or bs + 2
    table = torch.randint(0, 1 << 30, (pool_rows, width), generator=g, dtype=torch.int64)
    pool = torch.randperm(pool_rows, generator=g)[:bs] if bs <= pool_rows else \
        torch.randint(0, pool_rows, (bs,), generator=g)
    return (torch.tensor(list(kv), dtype=length_dtype, device=DEVICE),
            torch.tensor(list(qo), dtype=length_dtype, device=DEVICE),
            pool.to(DEVICE, torch.int32), table.to(DEVICE, table_dtype))


def random_lengths(bs, seed, max_qo=300, max_prefix=600):
    g = torch.Generator().manual_seed(seed)
    qo = torch.randint(0, max_qo + 1, (bs,), generator=g)
    kv = qo + torch.randint(0, max_prefix + 1, (bs,), generator=g)
    return qo.tolist(), kv.tolist()


class CanaryBuffers:
    """``ExtendBuffers`` whose every array is a poisoned view with canary margins."""

    def __init__(self, max_bs, max_tokens, max_flat):
        sizes = {"cu_seqlens_k": max_bs + 1, "dsa_cu_seqlens_k": max_tokens + 1,
                 "page_table_1_flattened": max_flat}
        self.canaries = {key: Canary(sizes.get(key, max_tokens)) for key in EXTEND_KEYS}
        self.buffers = ex.ExtendBuffers(**{key: c.view for key, c in self.canaries.items()})

    def check(self, expected, bs):
        """Exactly the expected prefix of each buffer written, the rest and margins poisoned."""
        for key, canary in self.canaries.items():
            n = expected[key].shape[0]
            assert_equal(canary.view[:n], expected[key], key)
            canary.assert_poisoned_from(n, key)
            canary.assert_margins(key)

    def assert_unchanged(self):
        for key, canary in self.canaries.items():
            canary.assert_unchanged(key)


def run_and_check(qo, kv, topk=TOPK, slack=(2, 5, 7), splits=None, **case_kwargs):
    seq_lens, ext, pool, table = make_case(qo, kv, **case_kwargs)
    expected = extend_reference(seq_lens, ext, pool, table, topk)
    n_tokens, n_flat = sum(qo), sum(kv)
    bufs = CanaryBuffers(len(qo) + slack[0], n_tokens + slack[1], n_flat + slack[2])
    status = ex.launch_extend(seq_lens, ext, pool, table, topk, bufs.buffers, check=True,
                              splits=splits)
    bufs.check(expected, len(qo))
    assert ex.decode_status(status) == dict(
        n_tokens=n_tokens, n_flat=n_flat, tokens_overflow=False, flat_overflow=False,
        int32_overflow=False, invalid_request=False, tokens_mismatch=False, flat_mismatch=False,
        first_invalid_request=None)
    return expected


# --------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("bs,seed,splits", [(1, 0, None), (3, 1, 4), (33, 2, None), (70, 3, 3)])
def test_random_batches_equal_reference(bs, seed, splits):
    qo, kv = random_lengths(bs, seed)
    run_and_check(qo, kv, splits=splits, seed=seed)


@pytest.mark.parametrize("topk", [64, 2048])
def test_boundary_lengths(topk):
    """Lengths and prefixes around block and topk edges; zero-length extends; extend == seq."""
    edges = [63, 64, 65, 2047, 2048, 2049]
    qo = [0, 1, 0] + edges + [5, 0]
    kv = [0, 1, 7] + edges + [2049 + 65, 64]
    run_and_check(qo, kv, topk=topk, splits=2)


@pytest.mark.parametrize("slack", [(0, 0, 0), (2, 5, 7)])
def test_empty_batch(slack):
    run_and_check([], [], slack=slack)


@pytest.mark.parametrize("qo,kv", [([0, 0, 0], [5, 0, 9]), ([0], [0]), ([0], [7]),
                                   ([0, 0], [0, 3])])
def test_all_extends_empty(qo, kv):
    """No tokens at small bs: only ``cu_seqlens_k[:bs + 1]`` written (the slack past it and
    every token and flat buffer keep the poison)."""
    run_and_check(qo, kv)


@pytest.mark.parametrize("context,topk", [(100_000, 2048), (1_000_000, 4096)])
def test_long_contexts(context, topk):
    """Chunked prefill on 100K and 1M cached prefixes: offsets past 2^20, one launch each."""
    qo = [700, 3, 0]
    kv = [context, context // 2 + 3, 17]
    run_and_check(qo, kv, topk=topk, pool_rows=3, splits=7)


def test_bs_16384():
    """Groups past the first scan block (4096 requests); pool rows shared by many requests."""
    g = torch.Generator().manual_seed(5)
    bs = 16384
    qo = torch.randint(0, 3, (bs,), generator=g)
    kv = qo + torch.randint(0, 6, (bs,), generator=g)
    run_and_check(qo.tolist(), kv.tolist(), pool_rows=97, width=8)


def test_int64_lengths_and_table():
    qo, kv = random_lengths(9, 7)
    run_and_check(qo, kv, length_dtype=torch.int64, table_dtype=torch.int64)


def test_overflow_writes_only_capacity():
    """Buffers smaller than the batch: the first entries are written, nothing past them, and
    the status says which capacity overflowed."""
    qo, kv = [30, 40], [100, 50]
    seq_lens, ext, pool, table = make_case(qo, kv)
    expected = extend_reference(seq_lens, ext, pool, table, TOPK)
    bufs = CanaryBuffers(2, 50, 120)
    status = ex.decode_status(ex.launch_extend(seq_lens, ext, pool, table, TOPK, bufs.buffers))
    assert (status["tokens_overflow"], status["flat_overflow"], status["n_tokens"]) == (
        True,
        True,
        70,
    )
    clipped = {key: v[:50] for key, v in expected.items()}
    clipped["cu_seqlens_k"] = expected["cu_seqlens_k"]
    clipped["dsa_cu_seqlens_k"] = expected["dsa_cu_seqlens_k"][:51]
    clipped["page_table_1_flattened"] = expected["page_table_1_flattened"][:120]
    bufs.check(clipped, 2)


def test_bound_fill_follows_new_lengths():
    """Planned once; new lengths written into the same tensors (as a graph replay sees them)."""
    seq_lens, ext, pool, table = make_case([5, 9], [40, 9], width=64, pool_rows=6)
    bufs = ex.ExtendBuffers.allocate(2, 64, 128, DEVICE, fill=-1)
    fill = ex.ExtendFill(seq_lens, ext, pool, table, TOPK, bufs)
    for qo, kv in (([5, 9], [40, 9]), ([0, 30], [64, 31]), ([2, 1], [2, 60])):
        ext.copy_(torch.tensor(qo)), seq_lens.copy_(torch.tensor(kv))
        status = ex.decode_status(fill())
        expected = extend_reference(seq_lens, ext, pool, table, TOPK)
        got = bufs.views(2, status["n_tokens"], status["n_flat"])
        for key in EXTEND_KEYS:
            assert_equal(got[key], expected[key], key)


@pytest.mark.parametrize("mirrors,check", [(False, False), (True, False), (True, True)])
def test_allocating_form(mirrors, check):
    qo, kv = random_lengths(6, 11)
    seq_lens, ext, pool, table = make_case(
        qo, kv, table_dtype=torch.int64 if check else torch.int32
    )
    extra = dict(seq_lens_cpu=torch.tensor(kv), extend_seq_lens_cpu=qo) if mirrors else {}
    got = ex.extend_metadata(seq_lens, ext, pool, table, TOPK, check=check, **extra)
    expected = extend_reference(seq_lens, ext, pool, table, TOPK)
    assert tuple(got) == EXTEND_KEYS
    for key in EXTEND_KEYS:
        assert got[key].dtype == torch.int32, key
        assert_equal(got[key], expected[key], key)


def test_allocating_form_rejects_bad_mirrors():
    seq_lens, ext, pool, table = make_case([3, 2], [10, 4])
    with pytest.raises(ValueError, match="seq_lens_cpu / extend_seq_lens_cpu must hold 2 entries"):
        ex.extend_metadata(seq_lens, ext, pool, table, TOPK, seq_lens_cpu=torch.tensor([10]),
                           extend_seq_lens_cpu=[3, 2])
    with pytest.raises(ValueError, match="request 1: need 0 <= extend_seq_lens"):
        ex.extend_metadata(seq_lens, ext, pool, table, TOPK, seq_lens_cpu=torch.tensor([10, 1]),
                           extend_seq_lens_cpu=[3, 2])


@pytest.mark.parametrize("qo,kv", [([3, 0, 5], [10, 4, 5]), ([64, 1], [2049, 1]), ([], [])])
def test_sglang_replay_equals_reference(qo, kv):
    seq_lens, ext, pool, table = make_case(qo, kv)
    got = sglang_extend_metadata(seq_lens, ext, pool, table, 64)
    expected = extend_reference(seq_lens, ext, pool, table, 64)
    assert tuple(got) == EXTEND_KEYS
    for key in EXTEND_KEYS:
        assert_equal(got[key], expected[key], key)


# --------------------------------------------------------------------------- bad input
def good_args():
    seq_lens, ext, pool, table = make_case([3, 2], [10, 4], width=16)
    return dict(seq_lens=seq_lens, extend_seq_lens=ext, req_pool_indices=pool, req_to_token=table,
                dsa_index_topk=TOPK)


def expect_rejected(error, match, check=False, bufs=None, status=None, **changes):
    args = good_args()
    args.update(changes)
    bufs = bufs or CanaryBuffers(4, 16, 32)
    with pytest.raises(error, match=match):
        ex.launch_extend(*args.values(), bufs.buffers, status, check=check)
    bufs.assert_unchanged()


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(seq_lens=[10, 4]), TypeError, "seq_lens must be a torch.Tensor"),
        (dict(seq_lens=torch.tensor([10.0, 4.0], device=DEVICE)), TypeError, "seq_lens must be"),
        (
            dict(extend_seq_lens=torch.tensor([3], dtype=torch.int32, device=DEVICE)),
            ValueError,
            "one entry per request",
        ),
        (
            dict(req_pool_indices=torch.zeros(2, 1, dtype=torch.int32, device=DEVICE)),
            ValueError,
            "req_pool_indices must be 1-D",
        ),
        (
            dict(extend_seq_lens=torch.tensor([3, 9, 2], dtype=torch.int32, device=DEVICE)[::2]),
            ValueError,
            "extend_seq_lens must have unit stride",
        ),
        (
            dict(req_to_token=torch.zeros(16, 4, dtype=torch.int32, device=DEVICE).t()),
            ValueError,
            "req_to_token must have unit stride",
        ),
        (
            dict(req_to_token=torch.zeros(4, 16, dtype=torch.int16, device=DEVICE)),
            TypeError,
            "req_to_token must be",
        ),
        (dict(dsa_index_topk=True), TypeError, "dsa_index_topk must be an int, got bool"),
        (dict(dsa_index_topk=2048.0), TypeError, "dsa_index_topk must be an int"),
        (dict(dsa_index_topk=0), ValueError, "dsa_index_topk must lie in"),
        (dict(dsa_index_topk=2**31), ValueError, "dsa_index_topk must lie in"),
    ],
)
def test_static_errors_name_the_argument(change, error, match):
    expect_rejected(error, match, **change)


def test_numpy_int_topk_accepted():
    args = good_args()
    args["dsa_index_topk"] = np.int64(64)
    bufs = CanaryBuffers(2, 5, 14)
    ex.launch_extend(*args.values(), bufs.buffers, check=True)
    bufs.check(extend_reference(*list(good_args().values())[:4], 64), 2)


def test_short_or_wrong_buffers_rejected():
    bufs = CanaryBuffers(0, 16, 32)  # cu_seqlens_k holds 1 entry, bs + 1 = 3 needed
    expect_rejected(ValueError, "cu_seqlens_k holds 1 entries", bufs=bufs)
    bufs = CanaryBuffers(4, 16, 32)
    bufs.buffers.dsa_cu_seqlens_k = bufs.canaries["dsa_cu_seqlens_k"].view[:0]
    expect_rejected(ValueError, "dsa_cu_seqlens_k needs at least 1", bufs=bufs)
    bufs = CanaryBuffers(4, 16, 32)
    bufs.buffers.indexer_ke = torch.zeros(16, dtype=torch.int64, device=DEVICE)
    expect_rejected(TypeError, "indexer_ke must be", bufs=bufs)
    expect_rejected(TypeError, "status must be",
                    status=torch.zeros(4, dtype=torch.int32, device=DEVICE))
    expect_rejected(ValueError, "status must hold 4",
                    status=torch.zeros(3, dtype=torch.int64, device=DEVICE))
    with pytest.raises(TypeError, match="buffers must be an ExtendBuffers"):
        ex.launch_extend(*good_args().values(), {})


def test_overlapping_buffers_rejected():
    def with_buffer(key, tensor):
        bufs = CanaryBuffers(4, 16, 32)
        setattr(bufs.buffers, key, tensor)
        return bufs
    same = CanaryBuffers(4, 16, 32)
    same.buffers.indexer_ke = same.buffers.seqlens_expanded
    expect_rejected(
        ValueError,
        "indexer_ke and seqlens_expanded overlap|seqlens_expanded and indexer_ke overlap",
        bufs=same,
    )
    partial = CanaryBuffers(4, 16, 32)
    partial.buffers.token_to_batch_idx = partial.canaries["page_table_1_flattened"].base[60:76]
    expect_rejected(
        ValueError,
        "token_to_batch_idx and page_table_1_flattened overlap"
        "|page_table_1_flattened and token_to_batch_idx overlap",
        bufs=partial,
    )
    args = good_args()
    shared = CanaryBuffers(4, 16, 32)
    shared.buffers.token_to_batch_idx = args["seq_lens"]
    with pytest.raises(
        ValueError,
        match="seq_lens and token_to_batch_idx overlap|token_to_batch_idx and seq_lens overlap",
    ):
        ex.launch_extend(*args.values(), shared.buffers)
    for key, canary in shared.canaries.items():
        if key != "token_to_batch_idx":
            canary.assert_unchanged(key)
    status_over = CanaryBuffers(4, 16, 32)
    status = status_over.canaries["page_table_1_flattened"].view[2:10].view(torch.int64)
    expect_rejected(
        ValueError,
        "status and page_table_1_flattened overlap|page_table_1_flattened and status overlap",
        bufs=status_over,
        status=status,
    )
    del with_buffer


@pytest.mark.parametrize(
    "change,match",
    [
        (
            dict(extend_seq_lens=torch.tensor([3, -1], dtype=torch.int32, device=DEVICE)),
            "request 1: need 0 <= extend_seq_lens",
        ),
        (
            dict(extend_seq_lens=torch.tensor([11, 2], dtype=torch.int32, device=DEVICE)),
            "request 0: need 0 <= extend_seq_lens",
        ),
        (
            dict(seq_lens=torch.tensor([10, 17], dtype=torch.int32, device=DEVICE)),
            "request 1: seq_lens\\[1\\] = 17 exceeds",
        ),
        (
            dict(seq_lens=torch.tensor([10, 2**31], dtype=torch.int64, device=DEVICE)),
            "request 1: seq_lens\\[1\\] = 2147483648",
        ),
        (
            dict(req_pool_indices=torch.tensor([0, 4], dtype=torch.int32, device=DEVICE)),
            "request 1: req_pool_indices\\[1\\] = 4",
        ),
        (
            dict(req_pool_indices=torch.tensor([-1, 0], dtype=torch.int32, device=DEVICE)),
            "request 0: req_pool_indices",
        ),
    ],
)
def test_data_errors_name_the_request(change, match):
    expect_rejected(ValueError, match, check=True, **change)


def test_table_values_past_int32_rejected():
    table = torch.zeros(4, 16, dtype=torch.int64, device=DEVICE)
    args = good_args()
    table[int(args["req_pool_indices"][1]), 3] = 2**31
    expect_rejected(
        ValueError, "request 1: req_to_token.* does not fit int32", check=True, req_to_token=table
    )
    table[int(args["req_pool_indices"][1]), 3] = 0
    table[int(args["req_pool_indices"][1]), 5] = 2**31  # past kv = 4: not live, accepted
    bufs = CanaryBuffers(2, 5, 14)
    ex.launch_extend(*{**args, "req_to_token": table}.values(), bufs.buffers, check=True)


def test_sums_past_int32_rejected():
    """cu_seqlens_k over kv passes 2^31 at the 1024th request; dsa_cu_seqlens_k for one 1M
    prefill at topk 4096; both found on the host, before any launch."""
    width = 1 << 21
    table = torch.zeros(1, width, dtype=torch.int32, device=DEVICE)
    kv = torch.full((1024,), width, dtype=torch.int64, device=DEVICE)
    args = dict(seq_lens=kv, extend_seq_lens=torch.ones(1024, dtype=torch.int64, device=DEVICE),
                req_pool_indices=torch.zeros(1024, dtype=torch.int32, device=DEVICE),
                req_to_token=table, dsa_index_topk=TOPK)
    bufs = CanaryBuffers(1024, 2, 2)
    with pytest.raises(ValueError, match="request 1023: seq_lens sum to 2147483648"):
        ex.launch_extend(*args.values(), bufs.buffers, check=True)
    million = torch.tensor([1 << 20], dtype=torch.int64, device=DEVICE)
    args = dict(
        seq_lens=million,
        extend_seq_lens=million,
        req_pool_indices=torch.zeros(1, dtype=torch.int32, device=DEVICE),
        req_to_token=table,
        dsa_index_topk=4096,
    )
    with pytest.raises(ValueError, match="request 0: dsa_cu_seqlens_k passes int32"):
        ex.extend_metadata(*args.values())
    bufs.assert_unchanged()


def test_capacity_checked_with_check_true():
    bufs = CanaryBuffers(4, 4, 32)
    expect_rejected(ValueError, "token buffers hold 4 entries but N = 5", check=True, bufs=bufs)
    bufs = CanaryBuffers(4, 16, 13)
    expect_rejected(
        ValueError, "page_table_1_flattened holds 13 entries but sum", check=True, bufs=bufs
    )


# --------------------------------------------------------------------------- trusted fast path
garbage_length = st.one_of(st.integers(-3, 40), st.integers(-2**40, 2**40),
                           st.sampled_from([2**31 - 1, 2**31, -2**31, 2**32 + 5]))


@given(qo=st.lists(garbage_length, min_size=1, max_size=40), data=st.data())
def test_garbage_lengths_stay_inside_buffers(qo, data):
    """check=False with any lengths and pool rows: no write outside the buffers, work bounded
    by their capacities, and the status flags the first invalid request."""
    bs = len(qo)
    kv = data.draw(st.lists(garbage_length, min_size=bs, max_size=bs))
    pool = data.draw(st.lists(st.integers(-5, 8), min_size=bs, max_size=bs))
    caps = data.draw(st.tuples(st.integers(0, 6), st.integers(0, 80), st.integers(0, 90)))
    table = torch.arange(4 * 24, dtype=torch.int32, device=DEVICE).reshape(4, 24)
    bufs = CanaryBuffers(bs + caps[0], caps[1], caps[2])
    start = time.perf_counter()
    status = ex.launch_extend(
        torch.tensor(kv, dtype=torch.int64, device=DEVICE),
        torch.tensor(qo, dtype=torch.int64, device=DEVICE),
        torch.tensor(pool, dtype=torch.int64, device=DEVICE),
        table,
        7,
        bufs.buffers,
        splits=data.draw(st.integers(1, 3)),
    )
    assert time.perf_counter() - start < 30, "work was not bounded by the capacities"
    for key, canary in bufs.canaries.items():
        canary.assert_margins(key)
    q, k, p = (np.array(v, dtype=np.int64) for v in (qo, kv, pool))
    bad = (q < 0) | (k < 0) | (q > k) | (k > 24) | (p < 0) | (p >= 4)
    got = ex.decode_status(status)
    assert got["first_invalid_request"] == (int(np.argmax(bad)) if bad.any() else None)
    assert got["invalid_request"] == bool(bad.any())


# --------------------------------------------------------------------------- no recompilation
def test_one_variant_over_a_bs_sweep():
    """The plan's constexprs and argument types do not depend on bs, lengths or capacities
    (every int argument is a run-time value Triton does not specialise on)."""
    keys = set()
    for bs in (0, 1, 7, 32, 33, 1000, 4096, 4097, 16384):
        seq_lens = torch.zeros(bs, dtype=torch.int32, device=DEVICE)
        table = torch.zeros(3, 1 << 20, dtype=torch.int32, device=DEVICE)
        bufs = ex.ExtendBuffers.allocate(bs, 3 * bs + 1, 40 * bs + 7, DEVICE)
        plan = ex.plan_extend(seq_lens, seq_lens, seq_lens, table, 4096, bufs,
                              torch.zeros(4, dtype=torch.int64, device=DEVICE))
        keys.add(ex.variant_key(plan))
    assert len(keys) == 1, keys
    kernel = ex.extend_metadata_kernel
    unspecialised = getattr(kernel, "do_not_specialize", None) or kernel.kwargs["do_not_specialize"]
    unspecialised = {kernel.arg_names[a] if isinstance(a, int) else a for a in unspecialised}
    assert unspecialised == {name for name in kernel.arg_names if not name.startswith("BLOCK_")}


def test_static_checks_are_cheap():
    args = good_args()
    bufs = ex.ExtendBuffers.allocate(4, 16, 32, DEVICE)
    status = torch.zeros(4, dtype=torch.int64, device=DEVICE)
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        extend_checks.check_static(*args.values(), bufs.as_dict(), status, ex.STATUS_ENTRIES)
        samples.append(time.perf_counter() - start)
    assert np.median(samples) < 500e-6, f"static checks took {np.median(samples) * 1e6:.0f} µs"


_SM90_COMPILE = textwrap.dedent("""
    import glob, os, re, subprocess, sys
    os.environ["TRITON_INTERPRET"] = "0"
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from nsa_kernels.modes import extend as ex
    kernel = ex.extend_metadata_kernel
    constexprs = {(kernel.arg_names.index(n),): v for n, v in ex.GPU_CONSTEXPRS.items()}
    # SGLang's dtypes (int64 seq_lens, the rest int32), then every input int64.
    for wide in (("seq_ptr", "status_ptr"),
                 ("seq_ptr", "ext_ptr", "pool_ptr", "r2t_ptr", "status_ptr")):
        signature = {name: "constexpr" if name.startswith("BLOCK_") else
                     ("*i64" if name in wide else "*i32") if name.endswith("_ptr") else "i32"
                     for name in kernel.arg_names}
        try:
            source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": ex.NUM_WARPS})
        except triton.compiler.errors.CompilationError as exc:
            print("COMPILE ERROR", wide, exc)
            sys.exit(1)
    ptxas = sorted(glob.glob(os.path.join(os.path.dirname(triton.__file__),
                                          "backends/nvidia/bin/ptxas*")))
    if not ptxas:
        print("SKIP no ptxas"); sys.exit(0)
    with open(sys.argv[1], "w") as f:
        f.write(compiled.asm["ptx"])
    for tool in ptxas:  # Triton ships more than one; use the one that takes its PTX version
        command = [tool, "-v", "--gpu-name=sm_90a", sys.argv[1], "-o", sys.argv[1] + ".cubin"]
        info = subprocess.run(command, capture_output=True, text=True).stderr
        used = re.search(r"Used (\\d+) registers", info)
        if used:
            spills = re.search(r"(\\d+) bytes spill stores", info)
            print("REGISTERS", used.group(1), "SPILLS", spills.group(1))
            sys.exit(0)
    print("SKIP no ptxas takes this PTX")
""")


@pytest.mark.skipif(not nk.INTERPRET, reason="on a GPU every launch above compiles it for real")
def test_kernel_compiles_for_sm90_without_spills(tmp_path):
    """The interpreter accepts code the compiler refuses (loop-carried type changes, ...): build
    the GPU variant for an H100 here (no GPU needed) and check that it does not spill."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "NSA_COMPILE_ONLY": "1",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _SM90_COMPILE, str(tmp_path / "extend.ptx")],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    if run.returncode == 0 and "SKIP" in run.stdout:
        pytest.skip(run.stdout.strip())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    registers, spills = run.stdout.split()[1::2]
    assert spills == "0", (
        f"the sm_90 build spills ({registers} registers, {spills} bytes of spill stores)"
    )
