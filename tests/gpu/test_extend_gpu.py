"""The extend (prefill) metadata at production sizes: ours, SGLang's eager path replayed and
the reference agree; the bound ``ExtendFill`` needs no host sync and replays in a CUDA graph;
``check=False`` on garbage stays inside its buffers; a bs sweep compiles one variant.

The small cases also run on the CPU under Triton's interpreter. Timings are notebook 10's.
"""
import statistics
import time

import nsa_kernels as nk
from nsa_kernels.bench import harness
from nsa_kernels.modes import extend as ex
from nsa_kernels.modes import extend_workloads as wl
from nsa_kernels.modes.extend_reference import EXTEND_KEYS, extend_reference
from nsa_kernels.peers.sglang_extend import sglang_extend_metadata
from nsa_kernels.testing import Canary, assert_equal
from nsa_kernels.validation import extend as extend_checks

import pytest
import torch

gpu_only = pytest.mark.gpu
#: Poison of the bound fill's buffers, to see that nothing past each view is written.
POISON = -7


def assert_outputs_equal(got, expected, what):
    for key in EXTEND_KEYS:
        assert_equal(got[key], expected[key], f"{what}: {key}")


WORKLOADS = [
    pytest.param(lambda: wl.prefill_with_prefix(3, 0, max_extend=8, max_prefix=64), id="bs3"),
    pytest.param(lambda: wl.chunked_prefill(4, 63, 65), id="chunked-bs4-63-on-65"),
    pytest.param(lambda: wl.prefill_with_prefix(0), id="bs0"),
    *[pytest.param(lambda bs=bs, seed=seed: wl.prefill_with_prefix(bs, seed), marks=gpu_only,
                   id=f"prefill-bs{bs}")
      for bs, seed in ((1, 0), (8, 1), (32, 2), (129, 3), (1024, 4))],
    pytest.param(lambda: wl.prefill_with_prefix(16384, 5, max_extend=4, max_prefix=64),
                 marks=gpu_only, id="prefill-bs16384-short"),
    pytest.param(lambda: wl.chunked_prefill(2, 4096, 100_000 - 4096, topk=2048),
                 marks=gpu_only, id="chunked-100k"),
    pytest.param(lambda: wl.chunked_prefill(1, 2048, 1_000_000 - 2048, topk=4096),
                 marks=gpu_only, id="chunked-1m-topk4096"),
    pytest.param(lambda: wl.chunked_prefill(3, 2049, 0), marks=gpu_only, id="chunked-no-prefix"),
]


@pytest.mark.parametrize("make_workload", WORKLOADS)
def test_ours_sglang_replay_and_bound_buffers_equal_the_reference(make_workload):
    workload = make_workload()
    expected = extend_reference(*workload.args())
    assert_outputs_equal(ex.extend_metadata(*workload.args(), **workload.mirrors()), expected,
                         "extend_metadata")
    assert_outputs_equal(sglang_extend_metadata(*workload.args(), **workload.mirrors()), expected,
                         "SGLang's eager path replayed")
    bufs = ex.ExtendBuffers.allocate(workload.bs + 3, workload.n_tokens + 100,
                                     workload.n_flat + 100, nk.DEVICE, fill=POISON)
    status = ex.launch_extend(*workload.args(), bufs, check=True)
    views = bufs.views(workload.bs, workload.n_tokens, workload.n_flat)
    assert_outputs_equal(views, expected, "launch_extend into buffers")
    for key, view in views.items():
        tail = getattr(bufs, key)[view.shape[0]:]
        assert bool((tail == POISON).all()), f"{key} written past its {view.shape[0]} entries"
    state = ex.decode_status(status)
    assert (state["n_tokens"], state["n_flat"]) == (workload.n_tokens, workload.n_flat), state


@gpu_only
def test_bound_fill_needs_no_sync_and_replays_in_a_graph():
    workload = wl.prefill_with_prefix(32, 7)
    bufs = ex.ExtendBuffers.allocate(64, 65536, 1 << 20, nk.DEVICE)
    fill = ex.ExtendFill(*workload.args(), bufs)
    fill()
    torch.cuda.synchronize()
    assert harness.count_syncs(fill) == 0
    graph, note = harness.try_capture(fill, 4)
    assert graph is not None, note
    bufs.page_table_1_flattened.fill_(-1)
    graph.replay()
    torch.cuda.synchronize()
    assert_outputs_equal(bufs.views(32, workload.n_tokens, workload.n_flat),
                         extend_reference(*workload.args()), "graph replay")


@gpu_only
@pytest.mark.parametrize("trial", range(20))
def test_unchecked_garbage_stays_inside_and_names_the_first_invalid_request(trial):
    """check=False with garbage lengths and pool rows, into canary buffers of random
    capacities: margins intact, and the status names the first invalid request."""
    g = torch.Generator().manual_seed(3 * 1000 + trial)
    table = torch.arange(8 * 5000, dtype=torch.int32, device=nk.DEVICE).reshape(8, 5000)
    bs = int(torch.randint(1, 300, (1,), generator=g))
    kv = torch.randint(-(2**40), 2**40, (bs,), generator=g) // torch.randint(
        1, 2**36, (bs,), generator=g)
    qo = torch.randint(-50, 6000, (bs,), generator=g)
    pool = torch.randint(-3, 11, (bs,), generator=g)
    tokens = int(torch.randint(0, 20000, (1,), generator=g))
    sizes = {"cu_seqlens_k": bs + 1, "dsa_cu_seqlens_k": tokens + 1,
             "page_table_1_flattened": int(torch.randint(0, 90000, (1,), generator=g))}
    canaries = {key: Canary(sizes.get(key, tokens)) for key in EXTEND_KEYS}
    bufs = ex.ExtendBuffers(**{key: c.view for key, c in canaries.items()})
    status = ex.launch_extend(kv.to(nk.DEVICE), qo.to(nk.DEVICE), pool.to(nk.DEVICE), table, 64,
                              bufs)
    torch.cuda.synchronize()
    for key, canary in canaries.items():
        canary.assert_margins(key)
    bad = (qo < 0) | (kv < 0) | (qo > kv) | (kv > 5000) | (pool < 0) | (pool >= 8)
    expected = int(bad.int().argmax()) if bool(bad.any()) else None
    assert ex.decode_status(status)["first_invalid_request"] == expected


@gpu_only
def test_one_compiled_variant_over_a_bs_sweep():
    before = harness.compiled_variants(ex.extend_metadata_kernel) or 0
    for bs in (1, 3, 16, 32, 100, 1024, 4097, 16384):
        workload = wl.prefill_with_prefix(bs, 11, max_extend=8, max_prefix=64)
        ex.extend_metadata(*workload.args(), **workload.mirrors())
    torch.cuda.synchronize()
    after = harness.compiled_variants(ex.extend_metadata_kernel)
    assert after is not None and after - before <= 1, (before, after)


#: Host budget of the static checks per call: what keeps ``check=True`` cheap in a server loop.
STATIC_CHECKS_BUDGET_US = 50


@gpu_only
def test_static_checks_cost_little_host_time():
    workload = wl.prefill_with_prefix(32, 3)
    bufs = ex.ExtendBuffers.allocate(32, workload.n_tokens, workload.n_flat, nk.DEVICE)
    status = torch.empty(ex.STATUS_ENTRIES, dtype=torch.int64, device=nk.DEVICE)
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        extend_checks.check_static(*workload.args(), bufs.as_dict(), status, ex.STATUS_ENTRIES)
        samples.append(time.perf_counter() - start)
    median_us = statistics.median(samples) * 1e6
    assert median_us < STATIC_CHECKS_BUDGET_US, f"{median_us:.1f} µs median"
