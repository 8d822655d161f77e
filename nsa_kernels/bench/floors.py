"""The floors: what launching (almost) nothing costs, five ways, measured with the stages.

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
from .harness import measure_group, synchronize

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


def host_times(entries, rounds=10, calls=50):
    """Median host time (µs) of one call of each entry, without a sync: ``calls`` calls back to
    back per round, entries interleaved round by round, a sync before each round (so that a
    full launch queue never blocks the host)."""
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
    return {name: statistics.median(v) * 1e6 for name, v in samples.items()}


def measure_with_floors(entries, workload, settings, floors=True):
    """``(records, skipped)``: ``measure_group`` over the floors and ``entries`` together, then
    their host times in interleaved rounds, as ``host_us`` on every record."""
    floor, skipped = floor_entries() if floors else ([], {})
    group = floor + list(entries)
    records = measure_group(group, workload, settings)
    # As many host samples as eager ones, in as many rounds: a quick interpreter run stays quick.
    rounds = min(10, settings["iters"])
    host = host_times(group, rounds=rounds, calls=max(settings["iters"] // rounds, 1))
    for record in records:
        record["host_us"] = host[record["stage"]]
    return records, skipped


EMPTY_LAUNCHES = ("empty_kernel", "empty_driver", "empty_graph")


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
