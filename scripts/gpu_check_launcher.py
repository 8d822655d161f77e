"""Self-check of ``nsa_kernels.launcher`` on a GPU: prints a PASS/FAIL table and the floors.

    python scripts/gpu_check_launcher.py [--skip-timing] [--pytest TEST_FILE ...]

1. Triton / torch / cuda-python versions and Triton's launcher internals that the packer
   relies on (trailing scratch pointers), as this Triton spells them.
2. Equality: every kernel launch the package makes (every stage, both zero_sync mappings,
   int32 and int64 lengths, the full pipeline, the empty kernel; with ``--pytest`` also every
   launch those test files make, e.g. the modes') is recorded with its inputs, replayed
   through the driver path and through Triton's ``kernel[grid](...)`` on identical copies,
   and every tensor argument compared bit for bit.
3. Stream: a bound fill launched on a non-default stream waits behind that stream's work.
4. Capture: driver and graph paths captured inside an outer CUDA graph, replayed with
   changed lengths, equal to the reference.
5. Fallback: cuda-python hidden -> Triton path with the reason; autotuned kernel -> reason.
6. Timing (H100 numbers are what the issue's targets speak of): every floor and every path,
   call + synchronize and host time, in the same interleaved rounds, at draft_extend bs 32.

Writes ``$OUT/gpu_check_launcher.json`` when ``OUT`` is set. One failing case never stops
the rest; exit status 1 if any case failed.
"""
import argparse
import inspect
import json
import os
import sys
import time
import traceback

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]

import nsa_kernels as nk  # noqa: E402  (first: picks Triton's mode)
from nsa_kernels import launcher  # noqa: E402
from nsa_kernels import stage5_zero_sync as s5  # noqa: E402
from nsa_kernels.bench import launch_cost, workloads  # noqa: E402
from nsa_kernels.empty_kernel import empty_kernel  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

RESULTS = {"cases": [], "timing": []}


def case(name, fn):
    try:
        note = fn()
        ok = True
    except Exception as exc:
        ok, note = False, f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    RESULTS["cases"].append(dict(case=name, ok=ok, note=str(note or "")))
    print(f"{'PASS' if ok else 'FAIL'}  {name:58s} {note or ''}", flush=True)
    return ok


# ----------------------------------------------------------------------------- 1. environment
def environment():
    env = dict(torch=torch.__version__, torch_cuda=torch.version.cuda, triton=triton.__version__,
               python=sys.version.split()[0], device=torch.cuda.get_device_name())
    try:
        from cuda import bindings
        env["cuda_python"] = getattr(bindings, "__version__", "?")
    except ImportError as exc:
        env["cuda_python"] = f"absent ({exc})"
    RESULTS["environment"] = env
    print(json.dumps(env))
    from triton.backends.nvidia import driver as nvdriver
    src = inspect.getsource(nvdriver)
    lines = [
        line.strip()
        for line in src.splitlines()
        if "scratch" in line and ("params" in line or "launch(" in line or "def " in line)
    ]
    print("triton launcher lines naming scratch:", *lines[:8], sep="\n  ")


# ----------------------------------------------------------------------------- 2. equality
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
    empty_kernel[(1,)]()


def replay_equal(kernel, grid, args, kwargs):
    def copies():
        return tuple(map(same_layout_copy, args)), {
            k: same_layout_copy(v) for k, v in kwargs.items()
        }

    a1, k1 = copies()
    kernel[grid](*a1, **k1)
    a2, k2 = copies()
    launch = launcher.bind_launch(kernel, grid, a2, k2, path="driver")
    if launch.path != "driver":
        return f"SKIP driver path unavailable: {launch.fallback_reason}"
    launch()
    torch.cuda.synchronize()
    tensors1 = [v for v in (*a1, *k1.values()) if isinstance(v, torch.Tensor)]
    tensors2 = [v for v in (*a2, *k2.values()) if isinstance(v, torch.Tensor)]
    for i, (x, y) in enumerate(zip(tensors1, tensors2)):
        if not torch.equal(x, y):
            raise AssertionError(f"tensor argument {i} differs between driver and Triton launch")
    return f"{len(tensors1)} tensors equal, grid {grid}"


def equality(pytest_files):
    # Every launch through Triton's path while recording, bound fills and plan caches included.
    launcher.DEFAULT_PATH = "triton"
    launcher.clear_plan_caches()
    try:
        with Recorder() as rec:
            exercise_package()
            if pytest_files:
                import pytest
                pytest.main(["-q", "-x", "-p", "no:cacheprovider", *pytest_files])
    finally:
        launcher.DEFAULT_PATH = "driver"
        launcher.clear_plan_caches()
    torch.cuda.synchronize()
    seen = {}
    for kernel, grid, args, kwargs in rec.launches:
        sig = (
            kernel.fn.__name__,
            grid,
            tuple(
                (a.dtype, tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a) for a in args
            ),
            tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
        )
        seen.setdefault(sig, (kernel, grid, args, kwargs))
    kernels = sorted({s[0] for s in seen})
    print(f"recorded {len(rec.launches)} launches, {len(seen)} distinct, kernels: {kernels}")
    for sig, launch in seen.items():
        case(f"driver == triton: {sig[0]} {sig[1]}", lambda launch=launch: replay_equal(*launch))


# ----------------------------------------------------------------------------- 3-5
def reference_check(out, cache, ext, seq, status):
    want, want_cache = nk.reference(ext, seq, 2048)
    n = want.numel()
    assert status.tolist()[0] == n, (status.tolist(), n)
    assert torch.equal(out[:n].cpu(), want.cpu()) and torch.equal(cache[:n].cpu(), want_cache.cpu())
    assert bool((out[n:] == -7).all()), "wrote past N"


def stream_case(path):
    bs = 64
    ext = torch.randint(1, 5, (bs,), device="cuda", dtype=torch.int32)
    seq = ext + 500
    out = torch.full((bs * 4,), -7, dtype=torch.int32, device="cuda")
    cache = out.clone()
    fill = nk.ZeroSyncFill(ext, seq, 2048, out, cache, path=path)
    assert fill.launch.path == path, fill.launch.fallback_reason
    out.fill_(-7)
    cache.fill_(-7)
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
    assert early == -7, "the launch did not wait behind the side stream's work: wrong stream"
    reference_check(out, cache, ext, seq, status)
    return "waited behind the current stream's work"


def capture_case(path):
    bs = 64
    ext = torch.zeros(bs, device="cuda", dtype=torch.int32)
    seq = torch.zeros(bs, device="cuda", dtype=torch.int32)
    out = torch.full((bs * 4,), -7, dtype=torch.int32, device="cuda")
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
        out.fill_(-7)
        cache.fill_(-7)
        graph.replay()
        torch.cuda.synchronize()
        reference_check(out, cache, ext, seq, fill.status)
    return "3 replays with changed lengths equal the reference"


def fallback_case():
    hidden = {
        k: sys.modules.pop(k) for k in list(sys.modules) if k == "cuda" or k.startswith("cuda.")
    }
    sys.modules["cuda"] = None  # makes "import cuda..." raise ImportError
    try:
        w = workloads.draft_extend(16)
        out, cache = w.buffers(poison=-7)
        fill = nk.ZeroSyncFill(*w.args(out, cache))
        assert fill.launch.path == "triton", fill.launch.path
        assert "cuda-python" in fill.launch.fallback_reason, fill.launch.fallback_reason
        status = fill()
        torch.cuda.synchronize()
        reference_check(out, cache, w.extend_seq_lens, w.seq_lens, status)
        return fill.launch.fallback_reason
    finally:
        del sys.modules["cuda"]
        sys.modules.update(hidden)


def autotuned_fallback_case():
    @triton.autotune(configs=[triton.Config({}, num_warps=1)], key=[])
    @triton.jit
    def tuned(x_ptr):
        pass
    x = torch.zeros(1, device="cuda")
    launch = launcher.bind_launch(tuned, (1,), (x,))
    assert launch.path == "triton" and "not a plain" in launch.fallback_reason, (
        launch.fallback_reason
    )
    launch()
    return launch.fallback_reason


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--pytest", nargs="*", default=[])
    opts = parser.parse_args()
    if not torch.cuda.is_available() or nk.INTERPRET:
        print("SKIP: needs a CUDA GPU")
        return 0
    environment()
    case("equality (recording)", lambda: equality(opts.pytest))
    for path in ("driver", "graph"):
        case(f"stream: ZeroSyncFill[{path}] on a non-default stream", lambda p=path: stream_case(p))
        case(f"capture: ZeroSyncFill[{path}] inside an outer graph", lambda p=path: capture_case(p))
    case("fallback: cuda-python hidden", fallback_case)
    case("fallback: autotuned kernel", autotuned_fallback_case)
    if not opts.skip_timing:
        def timing():
            RESULTS.update(launch_cost.main())
        case("timing", timing)
    failed = [c["case"] for c in RESULTS["cases"] if not c["ok"]]
    print(f"\n{len(RESULTS['cases']) - len(failed)} passed, {len(failed)} failed: {failed}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check_launcher.json"), "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
