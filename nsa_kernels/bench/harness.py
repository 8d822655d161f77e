"""Timing, the same way for every stage, peer and floor (the floors themselves: ``floors``).

* eager: one call then a device synchronize, timed on the host; median over ``iters``.
* throughput: blocks of calls back to back, one synchronize per block; median per-call mean.
* graph: ``graph_calls`` calls captured in one CUDA graph, replays timed with CUDA events;
  per-call median. Stages that sync cannot be captured and get ``None``.

Everything measured together (a stage and its floor) is sampled round-robin, so that the
machine's noise, which comes in bursts on a shared host, falls on all of them alike.

``measure_interleaved`` times a group of callables that share a workload (ours, the peers and
the floor of one point of a sweep) the way a CUDA-graph runner calls them: each captured alone
in its own graph, replays alternating between them round by round, plus a few eager samples
(call then synchronize). It is the cheaper sibling of ``measure_group`` for large sweeps.

Every figure is stored with its spread over rounds: ``<metric>`` is the median and
``<metric>_p20`` / ``<metric>_p80`` the 20th and 80th percentiles (linear interpolation, as
``triton.testing.do_bench`` gives quantiles), so a move inside the noise reads as such.

Under the Triton interpreter (no GPU) the same code times the CPU with ``perf_counter``:
those numbers are interpreter timings and say nothing about GPU speed; records carry the
``interpreter`` flag and graph times are ``None``.
"""
import statistics
import time
import warnings

import torch

from .._env import INTERPRET

ON_GPU = torch.cuda.is_available() and not INTERPRET


#: The quantiles stored beside every median.
QUANTILES = (0.2, 0.8)


def quantile(values, q):
    """The ``q`` quantile of ``values``, interpolated linearly between the two nearest ranks
    (``torch.quantile``'s default, the one ``do_bench`` reports)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(metric, samples, scale=1.0):
    """``{metric: median, metric_p20: .., metric_p80: ..}`` of ``samples`` times ``scale``, or
    ``None`` for each when there are no samples."""
    if not samples:
        return {metric: None, **{f"{metric}_p{round(q * 100)}": None for q in QUANTILES}}
    out = {metric: statistics.median(samples) * scale}
    for q in QUANTILES:
        out[f"{metric}_p{round(q * 100)}"] = quantile(samples, q) * scale
    return out


def synchronize():
    if ON_GPU:
        torch.cuda.synchronize()


def capture_graph(fn, graph_calls):
    """A CUDA graph of ``graph_calls`` calls of ``fn``; raises if ``fn`` syncs or allocates
    badly."""
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


def try_capture(fn, graph_calls):
    """``(graph, None)``, or ``(None, reason)`` where ``fn`` cannot be captured (no GPU, or it
    syncs: a sync inside capture raises)."""
    if not ON_GPU:
        return None, "no GPU: CUDA graphs need one"
    try:
        return capture_graph(fn, graph_calls), None
    except Exception as exc:
        torch.cuda.synchronize()
        return None, f"not capturable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def time_graph(fn, iters, warmup, graph_calls=16):
    """Per-call replay time of ``fn`` alone in microseconds, or ``(None, reason)``."""
    graph, note = try_capture(fn, graph_calls)
    if graph is None:
        return None, note
    for _ in range(warmup):
        graph.replay()
    return statistics.median(_graph_samples({0: graph}, iters, graph_calls)[0]), None


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
    # Torch's first switch into debug mode warns that the mode "does not yet detect all
    # synchronizing operations": a notice, not a sync, so it must not be counted.
    return sum("synchroniz" in str(w.message) and "prototype" not in str(w.message)
               for w in caught)


def _graph_samples(graphs, iters, graph_calls):
    """Per-call replay times (µs) of several graphs, sampled round-robin (same noise for
    each): ``{key: [samples]}``."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = {key: [] for key in graphs}
    for _ in range(max(iters // 4, 5)):
        for key, graph in graphs.items():
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            samples[key].append(start.elapsed_time(end) * 1e3 / graph_calls)
    return samples


def measure_group(entries, workload, settings):
    """Records for several callables on one workload, measured interleaved.

    ``entries``: dicts with ``name``, ``fn`` and optional ``capturable`` (default True) and
    ``kernel_fn`` (the kernel alone, for stages that sync). Eager samples, throughput blocks
    and graph replays alternate between the entries in rounds, so a burst of host or GPU noise
    hits all of them alike and ratios within one group stay meaningful.
    """
    iters, warmup, graph_calls = settings["iters"], settings["warmup"], settings["graph_calls"]
    for entry in entries:
        for _ in range(warmup):
            entry["fn"]()
    synchronize()
    # Rounds of consecutive calls per entry: alternating between entries call by call would
    # also evict each one's host-side code and data from the CPU caches, a cost no serving
    # loop that calls one op repeatedly pays.
    rounds = min(10, iters)
    block = max(iters // rounds, 1)
    eager = {i: [] for i in range(len(entries))}
    for _ in range(rounds):
        for i, entry in enumerate(entries):
            fn = entry["fn"]
            for _ in range(block):
                start = time.perf_counter()
                fn()
                synchronize()
                eager[i].append(time.perf_counter() - start)
    throughput = {i: [] for i in range(len(entries))}
    for _ in range(rounds):
        for i, entry in enumerate(entries):
            fn = entry["fn"]
            synchronize()
            start = time.perf_counter()
            for _ in range(block):
                fn()
            synchronize()
            throughput[i].append((time.perf_counter() - start) / block)
    graphs, notes = {}, {}
    for i, entry in enumerate(entries):
        for kind, fn, allowed in (("graph", entry["fn"], entry.get("capturable", True)),
                                  ("kernel", entry.get("kernel_fn"), True)):
            if fn is None:
                continue
            if ON_GPU and not allowed:
                notes[(i, kind)] = "not capturable: syncs with the host"
                continue
            graph, note = try_capture(fn, graph_calls)
            if graph is None:
                notes[(i, kind)] = note
            else:
                graphs[(i, kind)] = graph
    graph_us = _graph_samples(graphs, iters, graph_calls) if graphs else {}
    records = []
    for i, entry in enumerate(entries):
        record = {
            "stage": entry["name"], "workload": workload.kind if workload else "none",
            "bs": workload.bs if workload else 0, "tokens": workload.n_tokens if workload else 0,
            **summarize("eager_us", eager[i], 1e6),
            **summarize("throughput_us", throughput[i], 1e6),
            **summarize("graph_us", graph_us.get((i, "graph"))),
            "graph_note": notes.get((i, "graph")),
            "interpreter": not ON_GPU,
        }
        if entry.get("kernel_fn") is not None:
            record.update(summarize("kernel_graph_us", graph_us.get((i, "kernel"))))
        records.append(record)
    return records


def compiled_variants(kernel):
    """How many compiled variants a ``@triton.jit`` kernel holds (None under the interpreter)."""
    caches = getattr(kernel, "device_caches", None)
    if caches:
        return sum(len(entry[0]) for entry in caches.values())
    cache = getattr(kernel, "cache", None)
    if isinstance(cache, dict):
        return sum(len(v) for v in cache.values())
    return None


def eager_us(fn, samples):
    """Median of ``samples`` calls of ``fn``, each followed by a synchronize (µs, host clock)."""
    return statistics.median(eager_samples(fn, samples))


def eager_samples(fn, samples):
    """``samples`` times (µs, host clock) of one call of ``fn`` followed by a synchronize."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    return times


def measure_interleaved(entries, rounds, graph_calls, eager=5, graph=True):
    """``{name: {"graph_us", "eager_us", their p20/p80, "note"}}`` for ``entries`` (name ->
    zero-arg callable).

    Every callable is warmed up (compiled), then timed eagerly in interleaved rounds, then, when
    ``graph`` and on a GPU, captured alone in a graph of ``graph_calls`` calls and replayed in
    ``rounds`` interleaved rounds (per-call median). One that cannot be captured gets
    ``graph_us=None`` and the reason in ``note``; one that raises gets both times None.
    """
    out, live = {}, {}
    for name, fn in entries.items():
        try:
            fn()
            synchronize()
            live[name] = fn
            out[name] = {**summarize("graph_us", []), **summarize("eager_us", []), "note": None}
        except Exception as exc:  # recorded, so one broken entry does not stop the sweep
            synchronize()
            out[name] = {
                **summarize("graph_us", []), **summarize("eager_us", []),
                "note": f"raised {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}",
            }
    samples = {name: [] for name in live}
    for _ in range(max(eager, 1)):
        for name, fn in live.items():
            # Three calls back to back per round, median: the first call after another entry's
            # (a peer that allocates and launches hundreds of kernels) runs on cold host caches.
            samples[name].append(eager_us(fn, 3))
    for name in live:
        out[name].update(summarize("eager_us", samples[name]))
    if not graph:
        return out
    graphs = {}
    for name, fn in live.items():
        captured, note = try_capture(fn, graph_calls)
        if captured is None:
            out[name]["note"] = note
        else:
            graphs[name] = captured
    if graphs:
        for captured in graphs.values():
            captured.replay()
        synchronize()
        for name, values in _graph_samples(graphs, 4 * rounds, graph_calls).items():
            out[name].update(summarize("graph_us", values))
    del graphs
    return out
