"""``launcher``: the driver / graph / Triton launch paths, their fallbacks, the per-call plan
cache, the floors, and the retired packed entry points.

On CPU every path falls back to Triton's (the interpreter), and the tests check the fallback,
its reason, the cache's hits and misses and results through every path. The ``gpu`` tests
check on a GPU what only a GPU can: the driver launch equals Triton's launch, it goes to the
current stream, it is captured by an outer CUDA graph, and the fallback without cuda-python.
"""
import sys

import nsa_kernels as nk
from nsa_kernels import launcher
from nsa_kernels.bench import floors, workloads
from nsa_kernels.empty_kernel import bound_empty
from nsa_kernels.stages import stage5_zero_sync as s5
from nsa_kernels.testing import DEVICE, Canary, assert_equal

import pytest
import torch

TOPK = 2048
ON_GPU = torch.cuda.is_available() and not nk.INTERPRET
gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ON_GPU, reason="the driver and graph paths need a GPU"),
]


def batch(bs, seed, qo_max=4, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    ext = torch.randint(0, qo_max + 1, (bs,), generator=g, dtype=torch.int32)
    seq = ext + torch.randint(0, 3000, (bs,), generator=g, dtype=torch.int32)
    return ext.to(device), seq.to(device)


def assert_fill_matches(ext, seq, out, cache, status):
    want, want_cache = nk.reference(ext, seq, TOPK)
    n = want.numel()
    assert status.cpu().tolist() == [n, 0]
    assert_equal(out.view[:n], want, "seqlens_expanded")
    assert_equal(cache.view[:n], want_cache, "nsa_cache_seqlens")
    out.assert_poisoned_from(n)
    cache.assert_poisoned_from(n)
    out.assert_margins()
    cache.assert_margins()


# --------------------------------------------------------------------------- paths, fallback
def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="path"):
        bound_empty(path="fast")


@pytest.mark.skipif(ON_GPU, reason="checks the CPU fallback")
@pytest.mark.parametrize("path", launcher.PATHS)
def test_cpu_falls_back_to_triton_with_the_reason(path):
    launch = bound_empty(path=path)
    assert launch.path == "triton"
    if path == "triton":
        assert launch.fallback_reason is None
    else:
        assert "no GPU" in launch.fallback_reason
    launch()


@pytest.mark.parametrize("path", launcher.PATHS)
@pytest.mark.parametrize("mapping", ["request", "token"])
def test_zero_sync_fill_equals_reference_through_every_path(path, mapping):
    ext, seq = batch(37, seed=3)
    out, cache, status = Canary(37 * 4), Canary(37 * 4), Canary(2)
    fill = nk.ZeroSyncFill(ext, seq, TOPK, out.view, cache.view, status.view, mapping=mapping,
                           path=path)
    assert fill.launch.path == (path if ON_GPU else "triton"), fill.launch.fallback_reason
    for seed in (4, 5):  # the contents change between calls; the buffers stay
        new_ext, new_seq = batch(37, seed=seed)
        ext.copy_(new_ext)
        seq.copy_(new_seq)
        out.view.fill_(out.poison)
        cache.view.fill_(cache.poison)
        assert fill().data_ptr() == status.view.data_ptr()
        assert_fill_matches(ext, seq, out, cache, status.view)
    status.assert_margins()


def test_ptx_param_widths():
    ptx = """
.visible .entry k(
	.param .u64 .ptr .global .align 1 k_param_0,
	.param .u32 k_param_1,
	.param .u8 k_param_2,
	.param .align 8 .b8 k_param_3[16],
	.param .f64 k_param_4
)"""
    assert launcher.ptx_param_widths(ptx, "k") == [8, 4, 1, None, 8]
    with pytest.raises(launcher.LaunchUnavailable, match="no PTX entry"):
        launcher.ptx_param_widths(ptx, "other")


def test_unsupported_argument_types_are_reasons_not_crashes():
    with pytest.raises(launcher.LaunchUnavailable, match="fp16"):
        launcher._pack_value("x", "fp16", 1.0)
    with pytest.raises(launcher.LaunchUnavailable, match="neither a tensor"):
        launcher._pack_value("p", "*i32", "not a pointer")
    t = torch.zeros(2)
    assert launcher._pack_value("p", "*i32", t).value == t.data_ptr()
    assert launcher._pack_value("n", "i64", -5).value == -5


# --------------------------------------------------------------------------- plan cache
def test_metadata_key_tells_apart_what_checks_and_plans_read():
    base = torch.zeros(8, dtype=torch.int32, device=DEVICE)
    dense, strided = base[:4], base[::2]  # same address, same shape, other stride
    assert dense.data_ptr() == strided.data_ptr() and dense.shape == strided.shape
    key = launcher.metadata_key
    assert key(dense) != key(strided)
    assert key(dense) != key(base[1:5])  # address
    assert key(dense) != key(dense.view(torch.float32))  # dtype
    assert key(dense, 1) != key(dense, True)  # equal as dict keys, not to the checks
    assert key(dense, 4) != key(dense, 4.0)
    assert key(dense, 7) == key(base[:4], 7)  # another view of the same memory and metadata
    with pytest.raises(TypeError):
        hash(key(dense, [1, 2]))


@pytest.fixture
def fresh_plans(monkeypatch):
    plans = launcher.PlanCache(maxsize=4)
    monkeypatch.setattr(s5, "PLANS", plans)
    return plans


def zero_sync_buffers(bs, seed):
    ext, seq = batch(bs, seed)
    return ext, seq, Canary(bs * 4), Canary(bs * 4), Canary(2)


def test_plan_cache_hits_on_same_metadata_and_follows_contents(fresh_plans):
    ext, seq, out, cache, status = zero_sync_buffers(30, seed=1)
    for i, seed in enumerate((1, 2, 3)):
        new_ext, new_seq = batch(30, seed)
        ext.copy_(new_ext)
        seq.copy_(new_seq)
        out.view.fill_(out.poison)
        cache.view.fill_(cache.poison)
        result = s5.launch_zero_sync(ext, seq, TOPK, out.view, cache.view, status.view)
        assert result.data_ptr() == status.view.data_ptr()
        assert_fill_matches(ext, seq, out, cache, status.view)
        assert (fresh_plans.misses, fresh_plans.hits) == (1, i)


@pytest.mark.parametrize("change", ["pointer", "shape", "topk", "topk_bool", "mapping", "dtype"])
def test_plan_cache_misses_on_changed_metadata(fresh_plans, change):
    ext, seq, out, cache, status = zero_sync_buffers(30, seed=1)
    s5.launch_zero_sync(ext, seq, TOPK, out.view, cache.view, status.view)
    args = dict(extend_seq_lens=ext, seq_lens=seq, nsa_index_topk=TOPK,
                out_seqlens_expanded=out.view, out_nsa_cache_seqlens=cache.view, status=status.view)
    kwargs = {}
    if change == "pointer":
        other = Canary(30 * 4)
        args["out_seqlens_expanded"], out = other.view, other
    elif change == "shape":
        args["extend_seq_lens"], args["seq_lens"] = ext[:20], seq[:20]
        ext, seq = ext[:20], seq[:20]
    elif change == "topk":
        args["nsa_index_topk"] = 7
    elif change == "topk_bool":  # True == 1 as a dict key: it must still fail the checks
        s5.launch_zero_sync(ext, seq, 1, out.view, cache.view, status.view)
        args["nsa_index_topk"] = True
        with pytest.raises(TypeError, match="nsa_index_topk"):
            s5.launch_zero_sync(**args)
        return
    elif change == "mapping":
        kwargs["mapping"] = "token"
    elif change == "dtype":
        args["extend_seq_lens"] = ext = ext.to(torch.int64)
    misses = fresh_plans.misses
    out.view.fill_(out.poison)
    cache.view.fill_(cache.poison)
    s5.launch_zero_sync(**args, **kwargs)
    assert fresh_plans.misses == misses + 1
    if change != "topk":
        assert_fill_matches(ext, seq, out, cache, status.view)


def test_plan_cache_does_not_skip_checks_of_new_bad_inputs(fresh_plans):
    ext, seq, out, cache, status = zero_sync_buffers(30, seed=1)
    s5.launch_zero_sync(ext, seq, TOPK, out.view, cache.view, status.view)
    written = [c.base.clone() for c in (out, cache, status)]
    bad = torch.zeros(30 * 4, dtype=torch.int64, device=DEVICE)
    with pytest.raises(TypeError, match="out_seqlens_expanded"):
        s5.launch_zero_sync(ext, seq, TOPK, bad, cache.view, status.view)
    with pytest.raises(TypeError, match="extend_seq_lens"):
        s5.launch_zero_sync([1, 2], seq, TOPK, out.view, cache.view, status.view)  # unhashable
    strided = torch.zeros(30 * 8, dtype=torch.int32, device=DEVICE)[::2]
    with pytest.raises(ValueError, match="out_nsa_cache_seqlens"):
        s5.launch_zero_sync(ext, seq, TOPK, out.view, strided, status.view)
    for c, before in zip((out, cache, status), written):
        assert torch.equal(c.base, before), "a refused call wrote"


def test_plan_cache_is_bounded(fresh_plans):
    ext, seq = batch(10, seed=2)
    for topk in range(1, 9):
        out, cache = Canary(40), Canary(40)
        s5.launch_zero_sync(ext, seq, topk, out.view, cache.view)
    assert len(fresh_plans) == fresh_plans.maxsize == 4
    assert fresh_plans.misses == 8


def test_own_status_per_call_is_fresh_and_right(fresh_plans):
    ext, seq, out, cache, _ = zero_sync_buffers(25, seed=6)
    first = s5.launch_zero_sync(ext, seq, TOPK, out.view, cache.view)
    first_n = int(ext.sum())
    new_ext, new_seq = batch(25, seed=7, qo_max=2)
    ext.copy_(new_ext)
    seq.copy_(new_seq)
    out.view.fill_(out.poison)
    cache.view.fill_(cache.poison)
    second = s5.launch_zero_sync(ext, seq, TOPK, out.view, cache.view)
    assert first.data_ptr() != second.data_ptr()
    assert fresh_plans.hits == 1
    assert_fill_matches(ext, seq, out, cache, second)
    assert first.cpu().tolist() == [first_n, 0], "a later call wrote into an earlier status"


# --------------------------------------------------------------------------- floors
def test_floor_entries_and_host_times():
    entries, skipped = floors.floor_entries()
    names = [e["name"] for e in entries] + list(skipped)
    assert sorted(names) == sorted(floors.FLOORS)
    if not ON_GPU:
        assert set(skipped) == {"empty_driver", "empty_graph"}
        assert all("no GPU" in reason for reason in skipped.values())
    host = floors.host_times(entries, rounds=2, calls=3)
    assert set(host) == {e["name"] for e in entries} and all(v > 0 for v in host.values())


def test_measure_with_floors_records_host_time():
    w = workloads.draft_extend(4)
    out, cache = w.buffers()
    fill = nk.ZeroSyncFill(*w.args(out, cache))
    records, _ = floors.measure_with_floors([dict(name="zero_sync", fn=fill)], w,
                                            dict(iters=2, warmup=1, graph_calls=2))
    by = {r["stage"]: r for r in records}
    assert {"sync_only", "torch_op", "empty_kernel", "zero_sync"} <= set(by)
    for r in records:
        assert r["workload"] == "draft_extend" and r["bs"] == 4
        assert r["eager_us"] > 0 and r["host_us"] > 0


# --------------------------------------------------------------------------- retired packed path
@pytest.mark.parametrize("mapping", ["request", "token"])
@pytest.mark.parametrize("ext_dtype", [torch.int32, torch.int64])
def test_packed_entry_points_still_equal_reference(mapping, ext_dtype):
    from nsa_kernels.experimental import packed_launch
    ext, seq = batch(150, seed=11)
    ext = ext.to(ext_dtype)
    out, cache, status = Canary(150 * 4), Canary(150 * 4), Canary(2)
    plan = s5.plan_zero_sync(ext, seq, TOPK, out.view, cache.view, status.view, mapping)
    packed = packed_launch.pack_plan(*plan)
    assert packed.kernel is {"request": packed_launch.zero_sync_request_packed_kernel,
                             "token": packed_launch.zero_sync_token_packed_kernel}[mapping]
    launcher.bind_plan(packed)()
    assert_fill_matches(ext, seq, out, cache, status.view)


# --------------------------------------------------------------------------- GPU only
@pytest.mark.parametrize("mapping", ["request", "token"])
@pytest.mark.parametrize("ext_dtype", [torch.int32, torch.int64])
def test_driver_launch_equals_triton_launch(mapping, ext_dtype):
    if not ON_GPU:
        pytest.skip("the driver path needs a GPU")
    ext, seq = batch(300, seed=12, device="cuda")
    ext = ext.to(ext_dtype)
    results = {}
    for path in ("triton", "driver"):
        out = torch.full((1300,), -7, dtype=torch.int32, device="cuda")
        cache, status = out.clone(), torch.full((2,), -7, dtype=torch.int32, device="cuda")
        launch = launcher.bind_plan(s5.plan_zero_sync(ext, seq, TOPK, out, cache, status, mapping),
                                    path=path)
        assert launch.path == path, launch.fallback_reason
        launch()
        torch.cuda.synchronize()
        results[path] = (out, cache, status)
    for a, b in zip(results["triton"], results["driver"]):
        assert torch.equal(a, b)


def test_driver_launch_goes_to_the_current_stream():
    if not ON_GPU:
        pytest.skip("streams need a GPU")
    ext, seq = batch(64, seed=13, device="cuda")
    out = torch.full((256,), -7, dtype=torch.int32, device="cuda")
    fill = nk.ZeroSyncFill(ext, seq, TOPK, out, out.clone(), path="driver")
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)
        fill()
    early = int(out[0].item())  # the default stream does not wait for ``side``
    busy = not side.query()
    side.synchronize()
    assert busy, "the side stream finished before the check: make the sleep longer"
    assert early == -7, "the launch ran before the side stream's earlier work: wrong stream"
    assert int(out[0].item()) != -7


@pytest.mark.parametrize("path", ["driver", "graph"])
def test_bound_fill_captured_in_outer_graph_follows_new_lengths(path):
    if not ON_GPU:
        pytest.skip("CUDA graphs need a GPU")
    bs = 64
    ext = torch.zeros(bs, dtype=torch.int32, device="cuda")
    seq = torch.zeros(bs, dtype=torch.int32, device="cuda")
    out = torch.full((bs * 4,), -7, dtype=torch.int32, device="cuda")
    cache = out.clone()
    fill = nk.ZeroSyncFill(ext, seq, TOPK, out, cache, path=path)
    assert fill.launch.path == path, fill.launch.fallback_reason
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fill()
    for seed in range(3):
        new_ext, new_seq = batch(bs, seed=seed, device="cuda")
        ext.copy_(new_ext)
        seq.copy_(new_seq)
        out.fill_(-7)
        cache.fill_(-7)
        graph.replay()
        torch.cuda.synchronize()
        want, want_cache = nk.reference(ext, seq, TOPK)
        n = want.numel()
        assert fill.status.tolist() == [n, 0]
        assert torch.equal(out[:n], want.to(out)) and torch.equal(cache[:n], want_cache.to(out))
        assert bool((out[n:] == -7).all())


def test_fallback_when_cuda_python_is_hidden(monkeypatch):
    if not ON_GPU:
        pytest.skip("without a GPU the fallback reason is the missing GPU")
    for name in [k for k in sys.modules if k == "cuda" or k.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cuda", None)
    launch = bound_empty(path="driver")
    assert launch.path == "triton" and "cuda-python" in launch.fallback_reason
    launch()


def test_cached_driver_launchers_do_not_keep_buffers_alive(fresh_plans):
    # A per-call cache that held every buffer set it saw would pin memory a serving loop freed.
    if not ON_GPU:
        pytest.skip("the Triton fallback keeps its tensors on purpose; the driver path needs a GPU")
    import gc
    import weakref
    ext, seq = batch(16, seed=3, device="cuda")
    out = torch.full((64,), -7, dtype=torch.int32, device="cuda")
    s5.launch_zero_sync(ext, seq, TOPK, out, out.clone())
    assert fresh_plans.misses == 1
    alive = weakref.ref(out)
    del out
    gc.collect()
    assert alive() is None


def test_fallback_when_compiled_parameters_differ(monkeypatch):
    # A Triton build that passes other parameters than the packer expects must not be launched
    # with a wrong parameter array: the PTX check turns it into the Triton path, with the reason.
    if not ON_GPU:
        pytest.skip("compiling PTX needs a GPU")
    monkeypatch.setattr(launcher, "ptx_param_widths", lambda ptx, name: [8, 8, 8])
    launch = bound_empty(path="driver")
    assert launch.path == "triton" and "compiled parameters" in launch.fallback_reason
    launch()


def test_graph_path_bound_during_capture_falls_back_to_driver():
    if not ON_GPU:
        pytest.skip("CUDA graphs need a GPU")
    bound_empty(path="driver")()  # compiled and loaded before the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launch = bound_empty(path="graph")
        launch()
    assert launch.path == "driver" and "outer CUDA-graph capture" in launch.fallback_reason
    graph.replay()
    torch.cuda.synchronize()


for _test in (
    test_cached_driver_launchers_do_not_keep_buffers_alive,
    test_fallback_when_compiled_parameters_differ,
    test_graph_path_bound_during_capture_falls_back_to_driver,
    test_driver_launch_equals_triton_launch,
    test_driver_launch_goes_to_the_current_stream,
    test_bound_fill_captured_in_outer_graph_follows_new_lengths,
    test_fallback_when_cuda_python_is_hidden,
):
    _test.pytestmark = getattr(_test, "pytestmark", []) + list(gpu)


def test_default_path_override_is_checked():
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", "import nsa_kernels.launcher"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NSA_LAUNCH_PATH": "fastest"},
    )
    assert result.returncode != 0 and "NSA_LAUNCH_PATH must be one of" in result.stderr
