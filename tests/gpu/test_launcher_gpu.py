"""``nsa_kernels.launcher`` on a GPU: the driver path equals Triton's, on the caller's stream,
inside an outer CUDA graph, and falls back to Triton with a reason.

* Equality: every kernel launch the package makes (every stage, both zero_sync mappings, int32
  and int64 lengths, the full pipeline, the three fused modes, extend, the empty kernel) is
  recorded with its inputs, replayed through the driver path and through Triton's
  ``kernel[grid](...)`` on identical copies, and every tensor argument compared bit for bit.
* Stream: a bound fill launched on a non-default stream waits behind that stream's work.
* Capture: driver and graph paths captured inside an outer CUDA graph, replayed with changed
  lengths, equal the reference.
* Fallback: cuda-python hidden -> Triton path with the reason; autotuned kernel -> reason.

The floors and launch paths are timed by notebook 05 and the launch-cost benchmark.
"""
import sys
import time

import nsa_kernels as nk
from nsa_kernels import launcher
from nsa_kernels.bench import workloads
from nsa_kernels.compat import sglang as compat
from nsa_kernels.empty_kernel import empty_kernel
from nsa_kernels.modes import extend as ex
from nsa_kernels.modes import extend_workloads, inputs
from nsa_kernels.stages import stage5_zero_sync as s5

import pytest
import torch
import triton
from triton.runtime.jit import JITFunction

pytestmark = pytest.mark.gpu

#: Poison of the zero_sync outputs, to see what was written past N.
POISON = -7
#: The fused modes' configurations recorded for the equality check.
MODE_CASES = [
    ("decode", dict(page_size=64, has_pt1=True)),
    ("target_verify", dict(page_size=64, has_pt1=False, next_n=2, has_ctx=True)),
    ("draft_extend", dict(page_size=64, has_pt1=True, static=True, draft=2)),
    ("draft_extend", dict(page_size=1, has_pt1=True, static=False, draft=3)),
]


def same_layout_copy(v):
    """A copy with the same sizes and strides (``clone`` would make a strided view dense,
    while the kernel indexes it with the original strides, passed as ints)."""
    if not isinstance(v, torch.Tensor):
        return v
    return torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device=v.device).copy_(v)


class Recorder:
    """Records every ``kernel[grid](...)`` launch with copies of its inputs."""

    def __init__(self):
        self.launches, self._orig = [], JITFunction.run

    def __enter__(self):
        orig, launches = self._orig, self.launches

        def run(kernel, *args, grid, warmup, **kwargs):
            if not warmup and not callable(grid):
                launches.append((kernel, tuple(grid), tuple(map(same_layout_copy, args)),
                                 {k: same_layout_copy(v) for k, v in kwargs.items()}))
            return orig(kernel, *args, grid=grid, warmup=warmup, **kwargs)
        JITFunction.run = run
        return self

    def __exit__(self, *exc):
        JITFunction.run = self._orig


def exercise_package():
    for w in (workloads.draft_extend(64), workloads.prefill(3000)):
        for stage in nk.STAGES.values():
            out, cache = w.buffers()
            stage(*w.args(out, cache))
        for mapping in ("request", "token"):
            for dtype in (torch.int32, torch.int64):
                out, cache = w.buffers()
                s5.launch_zero_sync(w.extend_seq_lens.to(dtype), w.seq_lens, w.topk, out, cache,
                                    mapping=mapping)
    g = torch.Generator().manual_seed(5)
    bs, width = 48, 300
    ext = torch.randint(0, 5, (bs,), generator=g)
    seq = ext + torch.randint(0, 2 * width, (bs,), generator=g)
    r2t = torch.randint(0, 1 << 20, (2 * bs, width + 8), generator=g).to("cuda", torch.int32)
    pool = torch.randperm(2 * bs, generator=g)[:bs].to("cuda")
    bufs = nk.PipelineBuffers.allocate(bs, bs * 4, width, 64, "cuda")
    nk.launch_full_pipeline(ext.cuda().int(), seq.cuda().int(), pool, r2t, 64, bufs, 64)
    for seed, (mode, opts) in enumerate(MODE_CASES):
        case = inputs.make_case(mode, 33, 8192, opts, seed, device="cuda")
        inputs.call(compat, case, inputs.allocate_outputs(case))
    prefill = extend_workloads.prefill_with_prefix(8, 1)
    ex.launch_extend(*prefill.args(), ex.ExtendBuffers.allocate(
        prefill.bs, prefill.n_tokens, prefill.n_flat, "cuda"))
    empty_kernel[(1,)]()


@pytest.fixture(scope="module")
def distinct_launches():
    """Every distinct launch the package makes through Triton's path (plan caches included)."""
    launcher.DEFAULT_PATH = "triton"
    launcher.clear_plan_caches()
    try:
        with Recorder() as rec:
            exercise_package()
    finally:
        launcher.DEFAULT_PATH = "driver"
        launcher.clear_plan_caches()
    torch.cuda.synchronize()
    seen = {}
    for kernel, grid, args, kwargs in rec.launches:
        sig = (kernel.fn.__name__, grid,
               tuple((a.dtype, tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a)
                     for a in args),
               tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        seen.setdefault(sig, (kernel, grid, args, kwargs))
    return seen


def replay_through_both_paths(kernel, grid, args, kwargs):
    """Differences between the tensors after a Triton launch and after a driver launch of
    identical copies (empty: equal)."""
    def copies():
        return tuple(map(same_layout_copy, args)), {
            k: same_layout_copy(v) for k, v in kwargs.items()}

    a1, k1 = copies()
    kernel[grid](*a1, **k1)
    a2, k2 = copies()
    launch = launcher.bind_launch(kernel, grid, a2, k2, path="driver")
    assert launch.path == "driver", f"driver path unavailable: {launch.fallback_reason}"
    launch()
    torch.cuda.synchronize()
    tensors1 = [v for v in (*a1, *k1.values()) if isinstance(v, torch.Tensor)]
    tensors2 = [v for v in (*a2, *k2.values()) if isinstance(v, torch.Tensor)]
    return [f"tensor argument {i}" for i, (x, y) in enumerate(zip(tensors1, tensors2))
            if not torch.equal(x, y)]


def test_every_recorded_launch_is_the_same_through_the_driver(distinct_launches):
    probe = launcher.bind_launch(empty_kernel, (1,), path="driver")
    if probe.path != "driver":
        pytest.skip(f"driver path unavailable: {probe.fallback_reason}")
    kernels = {sig[0] for sig in distinct_launches}
    for expected in ("zero_sync_request_kernel", "zero_sync_token_kernel", "decode_kernel",
                     "target_verify_kernel", "draft_extend_kernel", "extend_metadata_kernel",
                     "empty_kernel"):
        assert expected in kernels, (expected, sorted(kernels))
    failures = {}
    for sig, launch in distinct_launches.items():
        differing = replay_through_both_paths(*launch)
        if differing:
            failures[f"{sig[0]} {sig[1]}"] = differing
    assert not failures, failures


def reference_check(out, cache, ext, seq, status):
    want, want_cache = nk.reference(ext, seq, 2048)
    n = want.numel()
    assert status.tolist()[0] == n, (status.tolist(), n)
    assert torch.equal(out[:n].cpu(), want.cpu()) and torch.equal(cache[:n].cpu(), want_cache.cpu())
    assert bool((out[n:] == POISON).all()), "wrote past N"


@pytest.mark.parametrize("path", ["driver", "graph"])
def test_bound_fill_waits_behind_its_streams_work(path):
    bs = 64
    ext = torch.randint(1, 5, (bs,), device="cuda", dtype=torch.int32)
    seq = ext + 500
    out = torch.full((bs * 4,), POISON, dtype=torch.int32, device="cuda")
    cache = out.clone()
    fill = nk.ZeroSyncFill(ext, seq, 2048, out, cache, path=path)
    assert fill.launch.path == path, fill.launch.fallback_reason
    out.fill_(POISON)
    cache.fill_(POISON)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on the side stream
        status = fill()
    time.sleep(0.01)
    early = int(out[0].item())  # reads on the default stream, which does not wait for side
    still_busy = not side.query()
    side.synchronize()
    assert still_busy, "side stream finished too early to tell"
    assert early == POISON, "the launch did not wait behind the side stream's work: wrong stream"
    reference_check(out, cache, ext, seq, status)


@pytest.mark.parametrize("path", ["driver", "graph"])
def test_bound_fill_captured_in_an_outer_graph_follows_changed_lengths(path):
    bs = 64
    ext = torch.zeros(bs, device="cuda", dtype=torch.int32)
    seq = torch.zeros(bs, device="cuda", dtype=torch.int32)
    out = torch.full((bs * 4,), POISON, dtype=torch.int32, device="cuda")
    cache = out.clone()
    fill = nk.ZeroSyncFill(ext, seq, 2048, out, cache, path=path)
    assert fill.launch.path == path, fill.launch.fallback_reason
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fill()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fill()
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        new_ext = torch.randint(0, 5, (bs,), generator=g, dtype=torch.int32)
        ext.copy_(new_ext)
        seq.copy_(new_ext + torch.randint(0, 3000, (bs,), generator=g, dtype=torch.int32))
        out.fill_(POISON)
        cache.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        reference_check(out, cache, ext, seq, fill.status)


def test_without_cuda_python_the_triton_path_runs_and_says_why(monkeypatch):
    for name in [k for k in sys.modules if k == "cuda" or k.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cuda", None)  # makes "import cuda..." raise ImportError
    w = workloads.draft_extend(16)
    out, cache = w.buffers(poison=POISON)
    fill = nk.ZeroSyncFill(*w.args(out, cache))
    assert fill.launch.path == "triton", fill.launch.path
    assert "cuda-python" in fill.launch.fallback_reason, fill.launch.fallback_reason
    status = fill()
    torch.cuda.synchronize()
    reference_check(out, cache, w.extend_seq_lens, w.seq_lens, status)


def test_an_autotuned_kernel_takes_the_triton_path_and_says_why():
    @triton.autotune(configs=[triton.Config({}, num_warps=1)], key=[])
    @triton.jit
    def tuned(x_ptr):
        pass
    x = torch.zeros(1, device="cuda")
    launch = launcher.bind_launch(tuned, (1,), (x,))
    assert launch.path == "triton" and "not a plain" in launch.fallback_reason, (
        launch.fallback_reason)
    launch()
