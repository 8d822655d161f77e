"""PAGED prefill metadata (``nsa_kernels.modes.prefill_paged``) against its oracle, on poisoned
buffers with canary margins.

After a launch: every per-token array equals the oracle on ``[:N]`` and keeps the poison after
it (buffers are given slack), the per-request arrays on ``[:bs]`` / ``[:bs + 1]``, both page
tables on their whole ``[bs, W]`` window (SGLang gathers it densely); nothing around any buffer
changes, and an optional buffer not asked for is not written. Bad arguments raise naming the
argument before anything is written.
"""
import os
import subprocess
import sys
from pathlib import Path

import nsa_kernels as nk  # noqa: F401  (first: interpreter switch)
from nsa_kernels.modes import prefill_paged as pp
from nsa_kernels.modes.prefill_paged_reference import prefill_paged_reference
from nsa_kernels.testing import DEVICE, POISON, Canary, assert_equal

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
TOKEN_KEYS = ("dsa_seqlens_expanded", "dsa_cache_seqlens_int32", "indexer_k_start",
              "indexer_k_end", "token_to_batch_idx")


def make_inputs(requests, *, table_cols=None, seed=0, r2t_dtype=torch.int32):
    """``requests``: (kv, qo) pairs. Pool rows are a random permutation; token ids random."""
    g = torch.Generator().manual_seed(seed)
    bs = len(requests)
    kv = [r[0] for r in requests]
    qo = [r[1] for r in requests]
    width = max(kv, default=0)
    cols = table_cols if table_cols is not None else width + 7
    rows = 2 * bs + 3
    table = torch.randint(0, 1 << 24, (rows, cols), generator=g, dtype=torch.int64)
    return dict(
        seq_lens=torch.tensor(kv, dtype=torch.int64, device=DEVICE),
        extend_seq_lens=torch.tensor(qo, dtype=torch.int32, device=DEVICE),
        req_pool_indices=torch.randperm(rows, generator=g)[:bs].to(DEVICE),
        req_to_token=table.to(DEVICE, r2t_dtype),
    ), width


class CanaryBuffers:
    """``PagedPrefillBuffers`` whose every view is a ``Canary`` (1-D with ``slack`` entries more
    than needed, so a write past the intended range shows)."""

    def __init__(self, bs, n_tokens, width, page_size, *, cu_q=True, n_flat=None, slack=3):
        real_cols = -(-width // page_size)
        self.canaries = {
            "page_table_1": Canary((bs, width)),
            "real_page_table": Canary((bs, real_cols)) if page_size > 1 else None,
            "cache_seqlens_int32": Canary(bs + slack),
            "cu_seqlens_k": Canary(bs + 1 + slack),
            "cu_seqlens_q": Canary(bs + 1 + slack) if cu_q else None,
            **{k: Canary(n_tokens + slack) for k in TOKEN_KEYS},
            "dsa_cu_seqlens_k": Canary(n_tokens + 1 + slack),
            "page_table_1_flattened": Canary(n_flat + slack) if n_flat is not None else None,
        }
        self.status = Canary(pp.ext.STATUS_ENTRIES, dtype=torch.int64)
        self.buffers = pp.PagedPrefillBuffers(
            **{k: c.view if c is not None else None for k, c in self.canaries.items()})

    def assert_unchanged(self):
        for name, c in self.canaries.items():
            if c is not None:
                c.assert_unchanged(name)
        self.status.assert_unchanged("status")

    def check(self, ref, bs):
        n = ref["dsa_seqlens_expanded"].shape[0]
        written = {"cache_seqlens_int32": bs, "cu_seqlens_k": bs + 1, "cu_seqlens_q": bs + 1,
                   "dsa_cu_seqlens_k": n + 1, **{k: n for k in TOKEN_KEYS},
                   "page_table_1_flattened": ref["page_table_1_flattened"].shape[0]}
        for name, c in self.canaries.items():
            if c is None:
                continue
            c.assert_margins(name)
            if name in written:
                assert_equal(c.view[:written[name]], ref[name], name)
                c.assert_poisoned_from(written[name], name)
            else:  # the page tables: the whole window
                assert_equal(c.view, ref[name], name)


def run_case(requests, *, page_size=64, topk=64, cu_q=True, flattened=False, seed=0, **kw):
    inputs, width = make_inputs(requests, seed=seed, **kw)
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=topk,
                                  physical_page_size=page_size)
    n = ref["dsa_seqlens_expanded"].shape[0]
    n_flat = ref["page_table_1_flattened"].shape[0] if flattened else None
    bufs = CanaryBuffers(len(requests), n, width, page_size, cu_q=cu_q, n_flat=n_flat)
    status = pp.launch_prefill_paged(**inputs, buffers=bufs.buffers, max_seqlen_k=width,
                                     dsa_index_topk=topk, physical_page_size=page_size,
                                     status=bufs.status.view)
    bufs.check(ref, len(requests))
    decoded = pp.decode_status(status, has_flattened=flattened)
    assert decoded["n_tokens"] == n and not decoded["invalid_request"]
    assert not (decoded["tokens_overflow"] or decoded["flat_overflow"])
    return bufs, ref


MIXED = [(70, 6), (5, 5), (130, 129), (0, 0), (63, 1), (64, 64), (65, 2), (9, 0)]
CASES = {
    "bs0": [],
    "bs1_no_prefix": [(65, 65)],
    "bs1_full_prefix": [(64, 0)],
    "zero_length_extends": [(10, 0), (0, 0), (33, 0)],
    "mixed": MIXED,
    "boundaries_63_64_65": [(63, 63), (64, 1), (65, 65), (64, 64)],
    "boundaries_2047_2049": [(2047, 3), (2048, 2048), (2049, 1)],
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("page_size", [64, 1])
def test_matches_oracle(name, page_size):
    run_case(CASES[name], page_size=page_size, topk=2048 if "2047" in name else 64)


@pytest.mark.parametrize("seed", range(3))
def test_random_batches(seed):
    g = torch.Generator().manual_seed(100 + seed)
    bs = int(torch.randint(1, 40, (1,), generator=g))
    kv = torch.randint(0, 300, (bs,), generator=g)
    qo = (kv * torch.rand(bs, generator=g)).long()
    run_case(list(zip(kv.tolist(), qo.tolist())), topk=[1, 64, 256][seed], seed=seed,
             flattened=seed == 1, r2t_dtype=(torch.int32, torch.int64)[seed % 2])


@st.composite
def batches(draw):
    """Up to 12 requests: lengths often at page and topk boundaries, prefixes from none to all
    but zero or one token."""
    near = st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257])
    kv = draw(st.lists(st.one_of(near, st.integers(0, 700)), min_size=0, max_size=12))
    requests = []
    for k in kv:
        qo = draw(st.one_of(st.just(k), st.just(0), st.just(min(k, 1)), st.integers(0, k)))
        requests.append((k, qo))
    return requests, draw(st.sampled_from([1, 2, 64, 128, 2048])), draw(st.sampled_from([1, 64]))


@given(batches(), st.booleans(), st.integers(0, 2**16))
def test_property_matches_oracle(batch, flattened, seed):
    requests, topk, page_size = batch
    run_case(requests, topk=topk, page_size=page_size, flattened=flattened, seed=seed,
             cu_q=bool(seed & 1))


def test_ragged_extras_with_prefix():
    bufs, ref = run_case(MIXED, flattened=True)
    assert ref["has_prefix"]


def test_cu_seqlens_q_not_asked_is_not_written():
    bufs, _ = run_case([(65, 65), (3, 3)], cu_q=False)
    assert bufs.canaries["cu_seqlens_q"] is None
    assert bufs.buffers.cu_seqlens_q is None


def test_static_buffers_larger_than_the_batch():
    """A graph-style buffer set (more rows, more columns, more tokens than this batch): only
    rows [:bs], columns [:max_seqlen_k] and entries [:N] are written."""
    requests = [(70, 6), (66, 2)]
    inputs, width = make_inputs(requests)
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    big = CanaryBuffers(5, 30, width + 70, 64)
    pp.launch_prefill_paged(**inputs, buffers=big.buffers, max_seqlen_k=width, dsa_index_topk=64,
                            physical_page_size=64)
    for name, cols in (("page_table_1", width), ("real_page_table", -(-width // 64))):
        c = big.canaries[name]
        c.assert_margins(name)
        assert_equal(c.view[:2, :cols], ref[name], name)
        assert bool((c.view[:, cols:] == POISON).all()), f"{name}: columns past the window"
        c.assert_poisoned_from(2, name)
    for name in TOKEN_KEYS:
        assert_equal(big.canaries[name].view[:8], ref[name], name)
        big.canaries[name].assert_poisoned_from(8, name)


def test_width_131072():
    run_case([(131072, 2), (100, 100)], topk=2048)


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("requests", [MIXED, [(65, 65), (2, 2)], [(7, 0)]])
def test_allocating_entry_point(requests, ragged):
    inputs, width = make_inputs(requests)
    out = pp.prefill_paged_metadata(**inputs, dsa_index_topk=64, physical_page_size=64,
                                    seq_lens_cpu=inputs["seq_lens"].cpu(),
                                    extend_seq_lens_cpu=[q for _, q in requests], ragged=ragged)
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    ks, ke = out["indexer_k_start_end"]
    for name, got in [*((k, out[k]) for k in ("page_table_1", "real_page_table",
                                               "cache_seqlens_int32", "cu_seqlens_k",
                                               "cu_seqlens_q", "dsa_seqlens_expanded",
                                               "dsa_cache_seqlens_int32", "dsa_cu_seqlens_k",
                                               "token_to_batch_idx")),
                      ("indexer_k_start", ks), ("indexer_k_end", ke)]:
        assert got.dtype == torch.int32, name
        assert_equal(got, ref[name], name)
    assert out["max_seqlen_k"] == width
    if ref["has_prefix"]:
        assert out["max_seqlen_q"] == max(q for _, q in requests)
        assert out["cu_seqlens_q"].data_ptr() != out["cu_seqlens_k"].data_ptr()
    else:  # SGLang: cu_seqlens_q = cu_seqlens_k, max_seqlen_q = max_seqlen_k
        assert out["cu_seqlens_q"] is out["cu_seqlens_k"]
        assert out["max_seqlen_q"] == width
    if ragged:
        assert out["topk_indices_offset"] is ks
        if ref["has_prefix"]:
            assert_equal(out["page_table_1_flattened"], ref["page_table_1_flattened"], "flat")
        else:
            assert out["page_table_1_flattened"] is None
    else:
        assert out["topk_indices_offset"] is None and out["page_table_1_flattened"] is None


def test_allocating_mha_fp8_dequant_flattens_without_ragged_offsets():
    inputs, width = make_inputs(MIXED)
    out = pp.prefill_paged_metadata(**inputs, dsa_index_topk=64, physical_page_size=64,
                                    seq_lens_cpu=[k for k, _ in MIXED],
                                    extend_seq_lens_cpu=[q for _, q in MIXED],
                                    mha_fp8_dequant=True)
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    assert out["topk_indices_offset"] is None
    assert_equal(out["page_table_1_flattened"], ref["page_table_1_flattened"], "flat")


def test_allocating_page_size_1_real_table_is_page_table_1():
    inputs, _ = make_inputs([(5, 2)])
    out = pp.prefill_paged_metadata(**inputs, dsa_index_topk=4, physical_page_size=1,
                                    seq_lens_cpu=[5], extend_seq_lens_cpu=[2])
    assert out["real_page_table"] is out["page_table_1"]


def test_allocating_needs_host_mirrors():
    inputs, _ = make_inputs([(5, 2)])
    with pytest.raises(ValueError, match="seq_lens_cpu is required"):
        pp.prefill_paged_metadata(**inputs, dsa_index_topk=4, physical_page_size=64,
                                  seq_lens_cpu=None, extend_seq_lens_cpu=[2])
    with pytest.raises(ValueError, match=r"extend_seq_lens_cpu\[0\] = 6"):
        pp.prefill_paged_metadata(**inputs, dsa_index_topk=4, physical_page_size=64,
                                  seq_lens_cpu=[5], extend_seq_lens_cpu=[6])


def test_allocating_check_catches_a_stale_mirror():
    inputs, _ = make_inputs([(5, 2), (9, 9)])
    with pytest.raises(ValueError, match=r"extend_seq_lens_cpu\[1\] = 8 but the device holds 9"):
        pp.prefill_paged_metadata(**inputs, dsa_index_topk=4, physical_page_size=64,
                                  seq_lens_cpu=[5, 9], extend_seq_lens_cpu=[2, 8], check=True)


@pytest.mark.parametrize("mirror_n", [10, 13])
def test_allocating_stale_mirror_shows_in_the_status(mirror_n):
    """Unchecked, a mirror one step off (N = 10 or 13 where the device says 11): nothing
    uninitialised is returned and the status carries the device's N and the overflow."""
    inputs, _ = make_inputs([(5, 2), (9, 9)])
    out = pp.prefill_paged_metadata(**inputs, dsa_index_topk=4, physical_page_size=64,
                                    seq_lens_cpu=[5, max(9, mirror_n - 2)],
                                    extend_seq_lens_cpu=[2, mirror_n - 2])
    decoded = pp.decode_status(out["status"], has_flattened=False)
    assert decoded["n_tokens"] == 11
    assert decoded["tokens_overflow"] == (mirror_n < 11)
    if mirror_n > 11:
        for name in ("dsa_seqlens_expanded", "dsa_cache_seqlens_int32", "token_to_batch_idx"):
            assert out[name][11:].tolist() == [0] * (mirror_n - 11), name


# --------------------------------------------------------------------------- bad arguments
def _int64_output(b):
    b.buffers.cache_seqlens_int32 = torch.zeros(4, dtype=torch.int64, device=DEVICE)


def _narrow_page_table(b):
    b.buffers.page_table_1 = b.buffers.page_table_1[:, :-1]


def _short_cu(b):
    b.buffers.cu_seqlens_k = b.buffers.cu_seqlens_k[:2]


def _overlap(b):
    b.buffers.indexer_k_end = b.buffers.indexer_k_start


BAD = [
    ("buffers", lambda b: setattr(b, "buffers", {}), {}, TypeError, "PagedPrefillBuffers"),
    ("dtype", _int64_output, {}, TypeError, "cache_seqlens_int32"),
    ("narrow", _narrow_page_table, {}, ValueError, "page_table_1"),
    ("short_cu", _short_cu, {}, ValueError, "cu_seqlens_k"),
    ("overlap", _overlap, {}, ValueError, "overlap"),
    ("page_size", None, dict(physical_page_size=48), ValueError, "physical_page_size"),
    ("topk", None, dict(dsa_index_topk=0), ValueError, "dsa_index_topk"),
    ("width", None, dict(max_seqlen_k=10**6), ValueError, "req_to_token"),
    ("qo_gt_kv", None, dict(check=True, bad="qo"), ValueError, "request 1"),
    ("pool", None, dict(check=True, bad="pool"), ValueError, "req_pool_indices"),
    ("capacity", None, dict(check=True, bad="capacity"), ValueError, "N = "),
    ("short_width", None, dict(check=True, max_seqlen_k=64), ValueError, "max_seqlen_k"),
]


@pytest.mark.parametrize("name, mutate, overrides, error, match", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_before_writing(name, mutate, overrides, error, match):
    requests = [(70, 6), (5, 5), (66, 2)]
    inputs, width = make_inputs(requests)
    overrides = dict(overrides)
    bad = overrides.pop("bad", None)
    # N = 13; the canaries add 3 entries of slack.
    bufs = CanaryBuffers(3, 13 if bad != "capacity" else 9, width, 64)
    if bad == "qo":
        inputs["extend_seq_lens"][1] = 6
    if bad == "pool":
        inputs["req_pool_indices"][2] = 10**6
    if mutate is not None:
        mutate(bufs)
    args = dict(max_seqlen_k=width, dsa_index_topk=64, physical_page_size=64,
                status=bufs.status.view)
    args.update(overrides)
    with pytest.raises(error, match=match):
        pp.launch_prefill_paged(**inputs, buffers=bufs.buffers, **args)
    bufs.assert_unchanged()


def test_garbage_lengths_stay_inside_the_buffers():
    """Unchecked garbage (negative, past the table, qo > kv, a bad pool row) writes nothing
    outside the buffers and is reported in the status."""
    inputs, width = make_inputs([(70, 6), (5, 5), (66, 2), (8, 8)])
    inputs["seq_lens"][:] = torch.tensor([-5, 10**9, 3, 8])
    inputs["extend_seq_lens"][:] = torch.tensor([7, 10**6, 9, 8])
    inputs["req_pool_indices"][3] = -1
    bufs = CanaryBuffers(4, 16, width, 64)
    status = pp.launch_prefill_paged(**inputs, buffers=bufs.buffers, max_seqlen_k=width,
                                     dsa_index_topk=64, physical_page_size=64,
                                     status=bufs.status.view)
    for name, c in bufs.canaries.items():
        if c is not None:
            c.assert_margins(name)
    decoded = pp.decode_status(status, has_flattened=False)
    assert decoded["invalid_request"] and decoded["first_invalid_request"] == 0
    assert decoded["tokens_overflow"]
    # The bad pool row's page row is not written.
    assert bool((bufs.canaries["page_table_1"].view[3] == POISON).all())


@pytest.mark.parametrize("zero_tail", [False, True])
def test_zero_tail_fills_what_the_device_lengths_leave(zero_tail):
    """Buffers sized from a mirror promising more tokens and entries than the device lengths:
    with ``zero_tail`` the rest is 0 (never stale memory), without it untouched."""
    inputs, width = make_inputs([(70, 6), (66, 2)])
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    bufs = CanaryBuffers(2, 8 + 5, width, 64, n_flat=136 + 9, slack=0)
    pp.plan_prefill_paged(**inputs, buffers=bufs.buffers, max_seqlen_k=width, dsa_index_topk=64,
                          physical_page_size=64, zero_tail=zero_tail)()
    for name in (*TOKEN_KEYS, "dsa_cu_seqlens_k", "page_table_1_flattened"):
        view = bufs.canaries[name].view
        n = ref[name].shape[0]
        assert_equal(view[:n], ref[name], name)
        expected = torch.full((view.shape[0] - n,), 0 if zero_tail else POISON)
        assert_equal(view[n:], expected, f"{name} tail")


def test_bound_fill_relaunches_on_new_contents():
    inputs, width = make_inputs([(70, 6), (66, 66)])
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    bufs = CanaryBuffers(2, 72, width, 64, slack=0)
    fill = pp.PagedPrefillFill(**inputs, buffers=bufs.buffers, max_seqlen_k=width,
                               dsa_index_topk=64, physical_page_size=64)
    fill()
    bufs.check(ref, 2)
    inputs["req_pool_indices"][:] = inputs["req_pool_indices"].flip(0)
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    fill()
    bufs.check(ref, 2)


COMPILE = r"""
import os
os.environ["TRITON_INTERPRET"] = "0"
os.environ["NSA_COMPILE_ONLY"] = "1"
import nsa_kernels  # noqa: F401
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nsa_kernels.modes import prefill_paged as pp, mtp_copy as mc

TYPES = {torch.int32: "*i32", torch.int64: "*i64"}
LAUNCH_OPTIONS = ("num_warps", "num_stages")


def compile_plan(plan, gpu_constexprs):
    constexprs = {k: v for k, v in plan.kwargs.items() if k not in LAUNCH_OPTIONS}
    constexprs.update({k: v for k, v in gpu_constexprs.items() if k in constexprs})
    names = [n for n in plan.kernel.arg_names if n not in constexprs]
    sig = {n: TYPES[a.dtype] if isinstance(a, torch.Tensor) else "i32"
           for n, a in zip(names, plan.args, strict=True)}
    sig.update({n: "constexpr" for n in constexprs})
    options = {k: v for k, v in plan.kwargs.items() if k in LAUNCH_OPTIONS}
    triton.compile(ASTSource(fn=plan.kernel, signature=sig, constexprs=constexprs),
                   target=GPUTarget("cuda", 90, 32), options=options)
    print("compiled", plan.kernel.fn.__name__, sorted(constexprs.items()))


i32 = dict(dtype=torch.int32)
for bs, width, page, cu_q, flat, zero_tail in ((3, 100, 64, True, True, False),
                                               (300, 8192, 64, False, False, False),
                                               (2, 50, 1, True, False, True),
                                               (5, 700, 64, True, True, True)):
    n = 2 * bs
    b, status = pp.PagedPrefillBuffers.allocate(bs, n, width, page, with_cu_seqlens_q=cu_q,
                                                n_flat=width * bs if flat else None)
    plan = pp.plan_prefill_paged(torch.full((bs,), width, **i32), torch.full((bs,), 2, **i32),
                                 torch.arange(bs), torch.zeros(bs, width, **i32), b, width, 64,
                                 page, status, zero_tail=zero_tail)
    compile_plan(plan, pp.ext.GPU_CONSTEXPRS)
for k, page in ((1, 64), (3, 64), (5, 1)):
    bs, width = 4, 300
    backends = [mc.BackendBuffers(torch.zeros(bs, **i32), torch.zeros(bs + 1, **i32),
                                  torch.zeros(bs, width, **i32), torch.zeros(bs, **i32),
                                  torch.zeros(bs + 1, **i32),
                                  torch.zeros(bs, 5, **i32) if page > 1 else None)
                for _ in range(k)]
    plan = mc.plan_mtp_copy(torch.ones(bs, **i32), torch.arange(bs), torch.zeros(bs, width, **i32),
                            backends, bs, width, 64, page)
    compile_plan(plan, {})
print("ALL COMPILED")
"""


@pytest.mark.skipif(not nk.INTERPRET, reason="a CPU-machine check: on a GPU every launch "
                    "compiles for real")
def test_prefill_paged_and_mtp_copy_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="0",
               TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0 and "ALL COMPILED" in done.stdout, (
        done.stdout[-3000:] + done.stderr[-6000:])


# --------------------------------------------------------------------------- SGLang's own code
SGLANG_CASES = {
    "prefix": [(70, 6), (5, 5), (130, 129), (1, 1)],
    "no_prefix": [(65, 65), (64, 64), (63, 63)],
    "bs1": [(1, 1)],
    "boundaries_2047_2049": [(2047, 3), (2048, 2048), (2049, 1)],
}
#: SGLang's names for the entry point's outputs (its ``indexer_k_start_end`` is a tuple).
SGLANG_NAMES = {"indexer_k_start_end.0": ("indexer_k_start_end", 0),
                "indexer_k_start_end.1": ("indexer_k_start_end", 1)}
#: Fields of SGLang's metadata that stay its own (inputs passed through, its cached arange).
SGLANG_OWN = ("indexer_seq_lens", "indexer_seq_lens_cpu", "dsa_cu_seqlens_q")


def _random_requests(seed, bs, max_kv):
    g = torch.Generator().manual_seed(seed)
    kv = torch.randint(1, max_kv + 1, (bs,), generator=g)
    qo = (kv * torch.rand(bs, generator=g)).long().clamp(min=1)
    return list(zip(kv.tolist(), qo.tolist()))


SGLANG_CASES["random_bs40"] = _random_requests(1, 40, 2100)
SGLANG_CASES["random_bs17_no_prefix"] = [(k, k) for k, _ in _random_requests(2, 17, 300)]
#: On the wide backend only (its table is 100001 columns).
SGLANG_WIDE_CASES = {"65530_65539": [(65530, 7), (65535, 1), (65539, 65539)],
                     "100001": [(100001, 3), (1, 1)]}


def _sglang_harness(width, kv_dtype, max_bs):
    sb = pytest.importorskip("nsa_kernels.peers.sglang_backend")
    try:
        return sb.SGLangHarness(sb.HarnessConfig(max_bs=max_bs, width=width, kv_dtype=kv_dtype,
                                                 device=str(DEVICE)))
    except sb.PeerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module", params=["bf16", "fp8"])
def sglang_extend(request):
    """SGLang 0.5.23's ``DeepseekSparseAttnBackend`` from its wheel (the harness): bf16 KV
    takes the PAGED transform, fp8 the RAGGED one."""
    return _sglang_harness(2100, request.param, 64)


@pytest.fixture(scope="module")
def sglang_extend_wide():
    return _sglang_harness(100001, "bf16", 4)


@pytest.mark.parametrize("name", list(SGLANG_CASES))
def test_equals_sglang_init_forward_metadata(sglang_extend, name):
    """Every tensor SGLang's EXTEND ``init_forward_metadata`` builds (but its own
    pass-throughs) equals the entry point's, page tables on their whole window, names and
    dtypes included; and the entry point builds no tensor SGLang does not."""
    compare_with_sglang(sglang_extend, SGLANG_CASES[name], seed=len(name))


@pytest.mark.parametrize("name", list(SGLANG_WIDE_CASES))
def test_equals_sglang_long_contexts(sglang_extend_wide, name):
    compare_with_sglang(sglang_extend_wide, SGLANG_WIDE_CASES[name], seed=len(name))


def compare_with_sglang(h, requests, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.tensor([kv for kv, _ in requests], dtype=torch.int64, device=DEVICE)
    ext = torch.tensor([q for _, q in requests], dtype=torch.int32, device=DEVICE)
    pool = torch.randperm(h.config.max_bs, generator=g)[:len(requests)].to(DEVICE)
    theirs = h.extend(seq, ext, pool).tensors
    fp8 = h.config.kv_dtype == "fp8"
    ours = pp.prefill_paged_metadata(seq, ext, pool, h.req_to_token, h.config.topk,
                                     h.config.page_size, seq_lens_cpu=seq.cpu(),
                                     extend_seq_lens_cpu=ext.tolist(), ragged=fp8)
    compared = []
    for key, value in theirs.items():
        if key in SGLANG_OWN:
            continue
        field, half = SGLANG_NAMES.get(key, (key, None))
        mine = ours[field] if half is None else ours[field][half]
        assert mine is not None, f"{key}: SGLang builds it, the entry point returned None"
        assert mine.dtype == value.dtype, key
        assert_equal(mine, value, key)
        compared.append(field)
    built = {k for k, v in ours.items() if isinstance(v, (torch.Tensor, tuple))} - {"status"}
    assert built == set(compared), sorted(built ^ set(compared))
    fm = h.backend.forward_metadata
    assert (ours["max_seqlen_q"], ours["max_seqlen_k"]) == (fm.max_seq_len_q, fm.max_seq_len_k)
    has_prefix = any(q != kv for kv, q in requests)
    assert (fm.cu_seqlens_q is fm.cu_seqlens_k) == (not has_prefix)
    assert (ours["cu_seqlens_q"] is ours["cu_seqlens_k"]) == (not has_prefix)


# --------------------------------------------------------------------------- GPU only
def _gib():
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if DEVICE.type == "cuda" \
        else 0


@pytest.mark.gpu
@pytest.mark.skipif(_gib() < 24, reason="needs a CUDA device with >= 24 GiB to place rows "
                    "past 2**31 elements")
@pytest.mark.parametrize("where", ["page_table_1", "req_to_token"])
def test_row_offsets_past_2_31_elements(where):
    """Row starts past 2**31 elements (a pool row of a 1M-token table, a page-table row of a
    wide batch): offsets are 64-bit."""
    width, stride = 128, 1 << 30
    flat = torch.full((3 * stride,), -7, dtype=torch.int32, device="cuda")
    tokens = torch.arange(5000, 5000 + width, dtype=torch.int32, device="cuda")
    seq = torch.tensor([width, width], dtype=torch.int64, device="cuda")
    ext = torch.tensor([3, width], dtype=torch.int32, device="cuda")
    if where == "req_to_token":
        r2t = flat.as_strided((3, width), (stride, 1))
        r2t[2] = tokens
        pool = torch.tensor([2, 2], device="cuda")
        pt = torch.full((2, width), -7, dtype=torch.int32, device="cuda")
    else:
        r2t, pool = tokens.reshape(1, width), torch.tensor([0, 0], device="cuda")
        pt = flat.as_strided((2, width), (2 * stride, 1))  # row 1 starts at element 2**31
    b, status = pp.PagedPrefillBuffers.allocate(2, 3 + width, width, 64, device="cuda")
    b.page_table_1 = pt
    pp.launch_prefill_paged(seq, ext, pool, r2t, b, width, 2048, 64, status)
    torch.cuda.synchronize()
    for row in range(2):
        assert torch.equal(pt[row], tokens), f"page_table_1 row {row}"
        assert b.real_page_table[row].tolist() == [5000 // 64, (5000 + 64) // 64]
    del flat, pt, r2t
    torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_bound_fill_is_graph_safe_and_sync_free():
    """A bound fill captured in a CUDA graph follows new lengths and pool rows on replay (no
    host sync inside: a capture would fail on one)."""
    inputs, width = make_inputs([(70, 6), (66, 66), (9, 1)])
    b, status = pp.PagedPrefillBuffers.allocate(3, 73, width, 64, device="cuda")
    fill = pp.PagedPrefillFill(**inputs, buffers=b, max_seqlen_k=width, dsa_index_topk=64,
                               physical_page_size=64, status=status)
    fill()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fill()
    inputs["req_pool_indices"].copy_(inputs["req_pool_indices"].flip(0))
    inputs["extend_seq_lens"].copy_(torch.tensor([5, 66, 2], dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    ref = prefill_paged_reference(**inputs, max_seqlen_k=width, dsa_index_topk=64,
                                  physical_page_size=64)
    for name in ("page_table_1", "real_page_table", "cu_seqlens_q", *TOKEN_KEYS):
        got = getattr(b, name)
        assert_equal(got[:ref[name].shape[0]], ref[name], name)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
@pytest.mark.parametrize("ragged", [False, True])
def test_allocating_entry_point_is_one_kernel_and_no_sync(ragged):
    """One CUDA kernel (no copy, no memset) and no synchronising call (torch's sync debug mode
    raises on one) per call of the allocating entry point."""
    from torch.profiler import ProfilerActivity, profile
    inputs, _ = make_inputs(MIXED)
    mirrors = dict(seq_lens_cpu=[k for k, _ in MIXED], extend_seq_lens_cpu=[q for _, q in MIXED])
    call = lambda: pp.prefill_paged_metadata(**inputs, dsa_index_topk=64,  # noqa: E731
                                             physical_page_size=64, ragged=ragged, **mirrors)
    call()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert names and all("prefill_paged_kernel" in n for n in names), names
    assert len(names) == 1, names
