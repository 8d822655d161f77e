"""The floors: what launching (almost) nothing costs, and what moving the bytes costs.

**The floor of a point** (the one definition every notebook and the report's index use)::

    floor_us = max(empty_us, bytes_moved / copy_bandwidth)

* ``empty_us``: the empty Triton kernel (``empty_kernel``) measured in the same rounds as the
  point, on the point's metric (CUDA-graph replay per call; eager where the point is eager);
* ``bytes_moved``: the bytes the fill must read and write, counted once each
  (``bytes_moved(point, inputs)``: the mode's ``ModeSpec.bytes_moved``; the rules are in
  ``nsa_kernels.modes.spec.graph_bytes`` and ``extend_spec.extend_bytes``);
* ``copy_bandwidth``: bytes read plus written per µs of a device-to-device copy measured in
  the same run (``copy_bandwidth()``); ``bytes_moved / copy_bandwidth`` is the
  ``bandwidth_floor`` record.

Either term missing (no empty kernel timed, no bandwidth measured) leaves the other; both
missing, no floor. ``ours / floor`` is then ``vs_floor`` in the records.

**The launch floors**, measured with the stages:

* ``sync_only``: no launch at all, only the synchronize that every eager sample pays.
* ``torch_op``: a native one-element in-place op (``x.add_(1)``): PyTorch's own dispatch.
* ``empty_kernel``: an empty Triton kernel through ``kernel[grid]()``, Triton's dispatch.
* ``empty_driver``: the same kernel through ``launcher.DriverLaunch`` (``cuLaunchKernel``,
  parameters packed once), the path bound fills take.
* ``empty_graph``: the same kernel as a one-node CUDA graph, replayed.

Each floor is a pseudo-stage: measured by ``harness.measure_group`` in the same interleaved
rounds as the stages (``eager_us``: call + synchronize), plus ``host_us``: the time for the
host call to return, without a sync (median over back-to-back calls, a sync between rounds),
which is what a serving loop that does not wait pays on the CPU. A floor that needs what
this machine lacks (a GPU, cuda-python) is skipped with the reason.
"""
import statistics
import time

import torch

from .._env import DEVICE
from ..empty_kernel import bound_empty, launch_empty
from .harness import ON_GPU, measure_group, measure_interleaved, summarize, synchronize

FLOORS = ("sync_only", "torch_op", "empty_kernel", "empty_driver", "empty_graph")

#: What each floor launches, as a table's note says it.
FLOOR_NOTES = {
    "sync_only": "no launch: the synchronize alone",
    "torch_op": "x.add_(1) on one element: PyTorch's dispatch",
    "empty_kernel": "empty Triton kernel, kernel[grid](): Triton's dispatch",
    "empty_driver": "the same kernel through cuLaunchKernel (the bound fills' driver path)",
    "empty_graph": "the same kernel as a one-node CUDA graph, replayed",
}


def _nothing():
    pass


def one_element_op():
    """A native one-element op that allocates nothing: PyTorch's cheapest launch."""
    x = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    return lambda: x.add_(1)


def floor_entries():
    """``(entries, skipped)``: the floors as ``measure_group`` entries, and ``{name: reason}``
    for those this machine cannot measure."""
    entries = [dict(name="sync_only", fn=_nothing, capturable=False),
               dict(name="torch_op", fn=one_element_op()),
               dict(name="empty_kernel", fn=launch_empty)]
    skipped = {}
    for name, path in (("empty_driver", "driver"), ("empty_graph", "graph")):
        launch = bound_empty(path=path)
        if launch.path == path:
            entries.append(dict(name=name, fn=launch))
        else:
            skipped[name] = launch.fallback_reason or f"fell back to the {launch.path} path"
    return entries, skipped


def host_times(entries, rounds=10, calls=50, spread=False):
    """Median host time (µs) of one call of each entry, without a sync: ``calls`` calls back to
    back per round, entries interleaved round by round, a sync before each round (so that a
    full launch queue never blocks the host). ``spread``: ``{name: harness.summarize(...)}``
    (median, p20, p80 as ``host_us*``) instead of the median alone."""
    samples = {entry["name"]: [] for entry in entries}
    for entry in entries:
        entry["fn"]()
    synchronize()
    clock = time.perf_counter
    for _ in range(rounds):
        for entry in entries:
            fn, out = entry["fn"], samples[entry["name"]]
            synchronize()
            for _ in range(calls):
                start = clock()
                fn()
                out.append(clock() - start)
    synchronize()
    if spread:
        return {name: summarize("host_us", v, 1e6) for name, v in samples.items()}
    return {name: statistics.median(v) * 1e6 for name, v in samples.items()}


def measure_with_floors(entries, workload, settings, floors=True):
    """``(records, skipped)``: ``measure_group`` over the floors and ``entries`` together, then
    their host times in interleaved rounds, as ``host_us`` on every record."""
    floor, skipped = floor_entries() if floors else ([], {})
    group = floor + list(entries)
    records = measure_group(group, workload, settings)
    # As many host samples as eager ones, in as many rounds: a quick interpreter run stays quick.
    rounds = min(10, settings["iters"])
    host = host_times(group, rounds=rounds, calls=max(settings["iters"] // rounds, 1),
                      spread=True)
    for record in records:
        record.update(host[record["stage"]])
    return records, skipped


EMPTY_LAUNCHES = ("empty_kernel", "empty_driver", "empty_graph")

#: Bytes of the copy that measures the bandwidth: 1 GiB on a GPU (far past every cache),
#: 4 MiB under the interpreter (where the number only has to exist).
COPY_BYTES = (1 << 30) if ON_GPU else (1 << 22)


def copy_bandwidth(n_bytes=COPY_BYTES, rounds=10, device=DEVICE):
    """Device-to-device copy bandwidth of this run in bytes per µs (read + written): an int32
    copy of ``n_bytes``, captured in a CUDA graph and replayed in ``rounds`` (median; eager
    call + synchronize under the interpreter)."""
    src = torch.empty(n_bytes // 4, dtype=torch.int32, device=device).fill_(1)
    dst = torch.empty_like(src)
    times = measure_interleaved({"copy": lambda: dst.copy_(src)}, rounds, 2, eager=3)["copy"]
    return 2 * n_bytes / (times["graph_us"] or times["eager_us"])


def bytes_moved(point, inputs):
    """Bytes that must move for a mode's point (``point.spec.bytes_moved``)."""
    return point.spec.bytes_moved(point, inputs)


def pipeline_bytes(workload, width, page_size):
    """Bytes that must move for the full draft-extend pipeline (stage 6) on ``workload``: the
    same count as the varlen draft-extend mode with both page tables."""
    from ..modes import spec
    ext = workload.extend_seq_lens.to(torch.int64).cpu()
    kv = workload.seq_lens.to(torch.int64).cpu()
    point = spec.Point("draft_extend_varlen", workload.bs, width, max(int(ext.max()), 1)
                       if ext.numel() else 1, page_size=page_size, page_table_1=True)
    inputs = spec.Inputs(seq_lens=kv, req_pool_indices=kv, req_to_token=None,
                         extend_seq_lens=ext, kv_lens=kv, total_len=int(ext.sum()))
    return bytes_moved(point, inputs)


def bandwidth_floor_us(n_bytes, bandwidth):
    """``n_bytes`` over ``bandwidth`` (bytes per µs), or None where either is unknown."""
    if n_bytes is None or not bandwidth:
        return None
    return n_bytes / bandwidth


def point_floor(empty_us, bandwidth_us):
    """The floor of a point: the larger of the empty launch and the bandwidth floor (either
    may be None)."""
    known = [v for v in (empty_us, bandwidth_us) if v is not None]
    return max(known) if known else None


def skip_notes(skipped):
    """``floor_entries``' skipped floors as a notebook's ``skipped`` entries (``what``,
    ``reason``)."""
    return [{"what": f"floor {name}", "reason": reason} for name, reason in skipped.items()]


def cheapest_empty(records, metric):
    """The record of the cheapest empty launch by ``metric`` (the floor a user can reach)."""
    empties = [r for r in records if r["stage"] in EMPTY_LAUNCHES and r.get(metric) is not None]
    return min(empties, key=lambda r: r[metric]) if empties else None


def launch_targets(records, bound, per_call):
    """The launch-path targets of one measured group, as ``{"target", "measured", "met",
    "note"}``: the best of the ``bound`` stages within 1.1x of the cheapest empty launch
    (call + synchronize) and within 1.2x of the cheapest empty host time; every ``per_call``
    stage within 1.5x of the cheapest empty launch. Empty under the interpreter, whose
    timings say nothing about a GPU."""
    if any(r.get("interpreter") for r in records):
        return []
    by = {r["stage"]: r for r in records}
    floor, host_floor = cheapest_empty(records, "eager_us"), cheapest_empty(records, "host_us")
    if floor is None or not any(r in by for r in bound):
        return []
    best = min((by[name] for name in bound if name in by), key=lambda r: r["eager_us"])
    eager, host = best["eager_us"] / floor["eager_us"], best["host_us"] / host_floor["host_us"]
    targets = [
        {
            "target": "best bound fill, call + sync <= 1.1x the cheapest empty launch",
            "measured": f"{best['stage']}: {best['eager_us']:.1f} µs = "
            f"{eager:.2f}x {floor['stage']}",
            "met": eager <= 1.1,
            "note": f"bs {best['bs']}, {best['workload']}",
        },
        {
            "target": "best bound fill, host time <= 1.2x the cheapest empty launch's",
            "measured": f"{best['stage']}: {best['host_us']:.1f} µs = "
            f"{host:.2f}x {host_floor['stage']}",
            "met": host <= 1.2,
            "note": "",
        },
    ]
    for name in per_call:
        if name in by:
            ratio = by[name]["eager_us"] / floor["eager_us"]
            targets.append(
                {
                    "target": f"{name}, call + sync <= 1.5x the cheapest empty launch",
                    "measured": f"{by[name]['eager_us']:.1f} µs = {ratio:.2f}x {floor['stage']}",
                    "met": ratio <= 1.5,
                    "note": f"host {by[name]['host_us']:.1f} µs",
                }
            )
    return targets
