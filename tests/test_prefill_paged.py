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

import pytest
import torch
from nsa_testing import DEVICE, POISON, Canary, assert_equal

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


def test_ragged_extras_with_prefix():
    bufs, ref = run_case(MIXED, flattened=True)
    assert ref["has_prefix"]


def test_cu_seqlens_q_not_asked_is_not_written():
    bufs, _ = run_case([(65, 65), (3, 3)], cu_q=False)
    assert bufs.canaries["cu_seqlens_q"] is None
    assert bufs.buffers.cu_seqlens_q is None


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
for bs, width, page, cu_q, flat in ((3, 100, 64, True, True), (300, 8192, 64, False, False),
                                    (2, 50, 1, True, False)):
    n = 2 * bs
    b, status = pp.PagedPrefillBuffers.allocate(bs, n, width, page, with_cu_seqlens_q=cu_q,
                                                n_flat=width * bs if flat else None)
    plan = pp.plan_prefill_paged(torch.full((bs,), width, **i32), torch.full((bs,), 2, **i32),
                                 torch.arange(bs), torch.zeros(bs, width, **i32), b, width, 64,
                                 page, status)
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
