"""Timing, the same way for every stage, peer and the floor.

* eager: one call then a device synchronize, timed on the host; median over ``iters``.
* throughput: ``iters`` calls back to back, one synchronize at the end; per-call mean.
* graph: ``graph_calls`` calls captured in one CUDA graph, replays timed with CUDA events;
  per-call median. Stages that sync cannot be captured and get ``None``.

Under the Triton interpreter (no GPU) the same code times the CPU with ``perf_counter``:
those numbers are interpreter timings and say nothing about GPU speed; records carry the
``interpreter`` flag and graph times are ``None``.
"""
import statistics
import time
import warnings

import torch

from .._env import INTERPRET
from ..empty_kernel import bound_empty, launch_empty

ON_GPU = torch.cuda.is_available() and not INTERPRET


def synchronize():
    if ON_GPU:
        torch.cuda.synchronize()


def time_eager(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    synchronize()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def time_throughput(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize()
    return (time.perf_counter() - start) / iters * 1e6


def capture_graph(fn, graph_calls):
    """A CUDA graph of ``graph_calls`` calls of ``fn``; raises if ``fn`` syncs or allocates badly."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(graph_calls):
            fn()
    torch.cuda.synchronize()
    return graph


def time_graph(fn, iters, warmup, graph_calls=16):
    """Per-call replay time in microseconds, or ``(None, reason)`` where it cannot be captured."""
    if not ON_GPU:
        return None, "no GPU: CUDA graphs need one"
    try:
        graph = capture_graph(fn, graph_calls)
    except Exception as exc:  # a sync inside capture raises; the stage is simply not capturable
        torch.cuda.synchronize()
        return None, f"not capturable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    for _ in range(warmup):
        graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(max(iters // 4, 5)):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / graph_calls)
    del graph
    return statistics.median(samples), None


def count_syncs(fn):
    """Host syncs in one call, counted by torch's sync debug mode (GPU only, else None)."""
    if not ON_GPU:
        return None
    fn()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(name, fn, workload, settings, capturable=True, kernel_fn=None):
    """One record: eager, throughput and graph time of ``fn`` on ``workload``."""
    iters, warmup = settings["iters"], settings["warmup"]
    eager = time_eager(fn, iters, warmup)
    throughput = time_throughput(fn, iters, warmup)
    if capturable:
        graph, graph_note = time_graph(fn, iters, warmup, settings["graph_calls"])
    else:
        graph, graph_note = None, "not capturable: syncs with the host"
    record = {
        "stage": name, "workload": workload.kind if workload else "none",
        "bs": workload.bs if workload else 0, "tokens": workload.n_tokens if workload else 0,
        "eager_us": eager, "throughput_us": throughput, "graph_us": graph,
        "graph_note": graph_note, "interpreter": not ON_GPU,
    }
    if kernel_fn is not None:
        record["kernel_graph_us"], _ = time_graph(kernel_fn, iters, warmup, settings["graph_calls"])
    return record


def measure_floor(workload, settings):
    """The floor, timed beside the stages on the same workload row: two pseudo-stages.

    ``empty_kernel`` is an empty Triton kernel launched the normal way (``kernel[grid]()``);
    ``empty_kernel_bound`` launches it through ``BoundLaunch``, without Triton's per-call
    dispatch: the floor for stages that bind their launch once.
    """
    return [measure("empty_kernel", launch_empty, workload, settings, capturable=True),
            measure("empty_kernel_bound", bound_empty(), workload, settings, capturable=True)]


def compiled_variants(kernel):
    """How many compiled variants a ``@triton.jit`` kernel holds (None under the interpreter)."""
    caches = getattr(kernel, "device_caches", None)
    if caches:
        return sum(len(entry[0]) for entry in caches.values())
    cache = getattr(kernel, "cache", None)
    if isinstance(cache, dict):
        return sum(len(v) for v in cache.values())
    return None
