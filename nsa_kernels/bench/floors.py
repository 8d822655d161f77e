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
    host = host_times(group, rounds=10, calls=max(settings["iters"] // 10, 5))
    for record in records:
        record["host_us"] = host[record["stage"]]
    return records, skipped
