"""Where the host time of one launch goes: every floor and every launch path, one run.

At draft_extend bs 32 (by default), measured together in interleaved rounds
(``floors.measure_with_floors``): call + synchronize (``eager``) and host time (the call
returning, no sync) of

* the floors: ``sync_only``, ``torch_op``, ``empty_kernel`` (Triton's ``kernel[grid]()``),
  ``empty_driver`` (``cuLaunchKernel`` through cuda-python, parameters packed once),
  ``empty_graph`` (a one-node CUDA graph replayed), and ``empty_ctypes`` (the same packed
  launch through libcuda by ``ctypes``: a candidate backend, measured only);
* ``ZeroSyncFill`` through each path of ``launcher`` (driver, graph, triton) and ctypes;
* the per-call entry point ``launch_zero_sync`` (plan cache hit; with and without a status
  buffer), the uncached plan + ``kernel[grid]``, and the cache key alone;

then the launch-path targets as MET / MISS with their ratios. GPU only; writes
``launch_cost.json`` under ``--out`` (default ``$OUT``) when set.

    python -m nsa_kernels.bench.launch_cost [--bs 32] [--iters 400]
"""
import ctypes

import nsa_kernels as nk  # first: picks Triton's mode

import torch
import triton

from .. import launcher
from ..empty_kernel import empty_kernel
from ..stages import stage5_zero_sync as s5
from . import cli, floors, workloads


class CtypesLaunch:
    """The same packed launch through libcuda by ctypes (no cuda-python): measured only."""

    def __init__(self, driver_launch):
        lib = ctypes.CDLL("libcuda.so.1")
        fn = lib.cuLaunchKernel
        fn.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
        fn.restype = ctypes.c_int
        d = driver_launch
        self._fn, self._f, self._grid, self._block, self._shared = (
            fn,
            int(d._function),
            d._grid,
            d._block,
            d._shared,
        )
        self._params, self._device = d._params_address, d._device
        self._keep = d

    def __call__(self):
        gx, gy, gz = self._grid
        err = self._fn(self._f, gx, gy, gz, self._block, 1, 1, self._shared,
                       torch._C._cuda_getCurrentRawStream(self._device), self._params, None)
        if err:
            raise RuntimeError(f"cuLaunchKernel: {err}")


def entries_for(bs):
    """The workload and every path of one zero_sync launch, plus the parts of its host time."""
    from nsa_kernels.validation import check_static, new_status
    w = workloads.draft_extend(bs)
    out, cache = w.buffers()
    status = new_status("cuda")
    args = w.args(out, cache)
    fills = {p: nk.ZeroSyncFill(*args, status=status, path=p) for p in launcher.PATHS}
    entries = [dict(name=f"ZeroSyncFill[{p}]", fn=f) for p, f in fills.items()]
    entries += [
        dict(
            name="launch_zero_sync(status=)", fn=lambda: s5.launch_zero_sync(*args, status=status)
        ),
        dict(name="launch_zero_sync()", fn=lambda: s5.launch_zero_sync(*args)),
        dict(name="plan_zero_sync + kernel[grid]", fn=lambda: s5.plan_zero_sync(*args, status)()),
        dict(name="part: check_static", fn=lambda: check_static(*args), capturable=False),
        dict(
            name="part: plan_zero_sync",
            fn=lambda: s5.plan_zero_sync(*args, status),
            capturable=False,
        ),
        dict(
            name="part: metadata_key",
            fn=lambda: launcher.metadata_key(*args, status, "auto", False),
            capturable=False,
        ),
    ]
    try:
        entries.append(
            dict(
                name="empty_ctypes (libcuda by ctypes)",
                fn=CtypesLaunch(launcher.bind_launch(empty_kernel, (1,), path="driver")),
            )
        )
        entries.append(dict(name="ZeroSyncFill[ctypes]", fn=CtypesLaunch(fills["driver"].launch)))
    except Exception as exc:
        print("ctypes variant unavailable:", exc)
    return w, entries


def main(bs=32, iters=400):
    """Every floor and path at draft_extend ``bs``; returns
    ``{"timing": records, "targets": ...}``."""
    w, entries = entries_for(bs)
    records, skipped = floors.measure_with_floors(
        entries, w, {"iters": iters, "warmup": 20, "graph_calls": 16}
    )
    for name, reason in skipped.items():
        print(f"skipped floor {name}: {reason}")
    cheapest = floors.cheapest_empty(records, "eager_us")
    print(
        f"\n{f'draft_extend bs {bs}':40s} {'host µs':>8s} {'call+sync µs':>13s} "
        f"{'x cheapest':>11s} {'graph µs':>9s}"
    )
    for r in records:
        graph = f"{r['graph_us']:.2f}" if r.get("graph_us") else "-"
        print(f"{r['stage']:40s} {r['host_us']:8.2f} {r['eager_us']:13.2f} "
              f"{r['eager_us'] / cheapest['eager_us']:11.2f} {graph:>9s}")
    targets = floors.launch_targets(records, [f"ZeroSyncFill[{p}]" for p in launcher.PATHS],
                                    ["launch_zero_sync(status=)", "launch_zero_sync()"])
    for t in targets:
        print(f"{'MET ' if t['met'] else 'MISS'}  {t['target']}: {t['measured']} {t['note']}")
    for p in launcher.PATHS:
        launch = nk.ZeroSyncFill(*w.args(*w.buffers()), path=p).launch
        print(f"path {p!r}: took {launch.path!r}, fallback reason: {launch.fallback_reason}")
    print(f"PlanCache: {s5.PLANS.hits} hits, {s5.PLANS.misses} misses, {len(s5.PLANS)} entries")
    return {"environment": {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                            "triton": triton.__version__},
            "timing": records, "targets": targets, "skipped": skipped}


def cli_main(argv=None):
    ap = cli.parser(__doc__, "nsa_kernels.bench.launch_cost")
    ap.add_argument("--bs", type=int, default=32, help="draft-extend batch size")
    ap.add_argument("--iters", type=int, default=400, help="timed calls per entry")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or nk.INTERPRET:
        print("SKIP: launch costs need a CUDA GPU")
        return 0
    cli.write_json(args.out, "launch_cost.json", main(args.bs, args.iters))
    return 0


if __name__ == "__main__":
    cli.run(cli_main)
