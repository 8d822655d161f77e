"""Where the mode kernels' time goes at small bs: launch-shape variants, timed side by side.

For each point (SGLang's production call, as the mode's spec builds it) this times, in
interleaved CUDA-graph replays (µs per call): SGLang's kernel, ours as planned, ours with
other launch shapes (``num_warps``, ``BLOCK_B``; same kernel, same outputs: each variant is
checked on the live region against the plain reference before it is timed), ours with only
program 0 (the flat pass alone: how long the serial part takes; not checked, it writes only
the flat arrays) and an empty one-program kernel (the launch floor). One line per point; a
JSON of every number under ``--out`` (default ``$OUT``).

    python -m nsa_kernels.bench.perf_modes                   # the small-bs points
    PYTHONPATH=/other/checkout python -m nsa_kernels.bench.perf_modes --baseline
                                  # another checkout's kernels, ours + SGLang only

Interpreter timings are not GPU timings: without a GPU it only checks the variants.
"""
import time
import traceback

import nsa_kernels  # noqa: F401  (first: picks the interpreter on CPU-only machines)

import torch
import triton

from ..launcher import LaunchPlan
from ..modes import plan_decode, plan_draft_extend, plan_target_verify, spec
from . import cli, harness, modes


def parse_args(argv=None):
    ap = cli.parser(__doc__, "nsa_kernels.bench.perf_modes")
    ap.add_argument("--baseline", action="store_true",
                    help="time only ours as planned and SGLang")
    ap.add_argument("--bs", nargs="+", type=int, default=[1, 8, 32, 128])
    ap.add_argument("--widths", nargs="+", type=int, default=[8192])
    ap.add_argument("--wide-bs", nargs="*", type=int, default=[1, 32],
                    help="bs also measured at width 131072")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--graph-calls", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=150.0,
                    help="stop starting points after this")
    ap.add_argument("--label", default="")
    return ap.parse_args(argv)


PLAN = {"decode": plan_decode, "target_verify": plan_target_verify,
        "draft_extend_static": plan_draft_extend, "draft_extend_varlen": plan_draft_extend}
CONFIGS = [("decode", 1, "page_table_1"), ("decode", 1, "real_only"),
           ("target_verify", 4, ""), ("target_verify", 4, "hopper"),
           ("draft_extend_static", 4, ""), ("draft_extend_varlen", 4, "")]


@triton.jit
def _empty_kernel(x_ptr):
    pass


def _shaped(plan, point, block_b, block_n, **extra):
    """``plan`` with page tiles of ``block_b`` requests x ``block_n`` columns (grid and the
    column-block count, the kernels' last argument, follow)."""
    kwargs = dict(plan.kwargs, BLOCK_B=block_b, BLOCK_N=block_n, **extra)
    col_blocks = triton.cdiv(point.width, block_n)
    splits = point.next_n if kwargs.get("SPLIT_ROWS") else 1
    grid = (1 + triton.cdiv(point.bs, block_b) * col_blocks * splits,)
    return LaunchPlan(plan.kernel, grid, plan.args[:-1] + (col_blocks,), kwargs)


def variants(plan, point, baseline=False):
    """``{name: plan}``: the plan and the same kernel under other launch shapes."""
    out = {"ours": plan}
    if baseline:
        return out
    kw = plan.kwargs
    block_b, block_n = kw["BLOCK_B"], kw["BLOCK_N"]
    if kw.get("SPLIT_ROWS"):
        out["nosplit"] = _shaped(plan, point, block_b, block_n, SPLIT_ROWS=False)
    for other_b in (1, 2, 4):
        if other_b != block_b and other_b * block_n <= 4096 and kw.get("HAS_PAGE_TABLE_1"):
            out[f"b{other_b}"] = _shaped(plan, point, other_b, block_n)
    if kw.get("HAS_PAGE_TABLE_1") and block_b == 1:
        for other_n in (256, 512, 1024):
            if other_n != block_n:
                out[f"n{other_n}"] = _shaped(plan, point, 1, other_n)
    out["prog0_only"] = plan._replace(grid=(1,))
    return out


def run_point(point, peer, opts):
    inputs = spec.make_inputs(point)
    reference = spec.live_reference(point, inputs)
    entries, notes = {}, {}
    if peer is not None:
        buffers = spec.allocate_outputs(point, poison=-1)
        call = spec.bind(point.spec.sglang_function(peer), point, inputs, buffers)
        try:
            call()
            torch.cuda.synchronize()
            spec.check_outputs(point, reference, buffers, "sglang")
            entries["sglang"] = call
        except Exception as exc:
            notes["sglang"] = f"{type(exc).__name__}: {str(exc)[:100]}"

    def planned():
        buffers = spec.allocate_outputs(point, poison=-1)
        return buffers, PLAN[point.workload](**point.spec.kwargs(point, inputs, buffers))
    _, plan = planned()
    for name, variant in variants(plan, point, opts.baseline).items():
        try:
            buffers, own = planned()
            args = own.args[:-1] + variant.args[-1:]
            launch = LaunchPlan(variant.kernel, variant.grid, args, variant.kwargs)
            launch()
            torch.cuda.synchronize()
            if name != "prog0_only":
                spec.check_outputs(point, reference, buffers, name)
            entries[name] = launch
        except Exception as exc:  # one bad variant must not stop the rest
            notes[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    scratch = torch.zeros(1, device="cuda")
    entries["empty"] = lambda: _empty_kernel[(1,)](scratch)
    timed = harness.measure_interleaved(entries, opts.rounds, opts.graph_calls, eager=1)
    return ({name: r["graph_us"] for name, r in timed.items()},
            {name: (r["graph_us_p20"], r["graph_us_p80"]) for name, r in timed.items()},
            notes, plan.kwargs)


def main(argv=None):
    opts = parse_args(argv)
    if not torch.cuda.is_available():
        print("no GPU: nothing to time (this script measures CUDA-graph replays)")
        return 0
    peer = modes.load_peers().sglang
    print(f"nsa_kernels from {nsa_kernels.__file__} {opts.label} | {torch.cuda.get_device_name()} "
          f"| triton {triton.__version__} | sglang {'yes' if peer else 'MISSING'}")
    points = [spec.Point(w, bs, width, n, v) for w, n, v in CONFIGS for width in opts.widths
              for bs in opts.bs]
    points += [spec.Point(w, bs, 131072, n, v) for w, n, v in CONFIGS for bs in opts.wide_bs]
    start, rows, failures = time.time(), [], 0
    for point in points:
        if time.time() - start > opts.budget_s:
            print(f"budget: skipped {point.name}")
            continue
        try:
            times, spread, notes, kwargs = run_point(point, peer, opts)
        except Exception:
            failures += 1
            print(f"FAIL {point.name}\n{traceback.format_exc(limit=3)}")
            continue
        failures += sum(1 for n in notes if n != "sglang")
        cells = " ".join(f"{k}={v:.2f}" if v is not None else f"{k}=-" for k, v in times.items())
        print(f"{point.name:58s} {cells}" + (f" | notes {notes}" if notes else ""), flush=True)
        rows.append(dict(point=point.name, times=times, p20_p80=spread, notes=notes,
                         kwargs={k: v for k, v in kwargs.items()}))
    print(f"{'PASS' if not failures else 'FAIL'}: {len(rows)} points, {failures} failed variants,"
          f" {time.time() - start:.0f} s")
    tag = "baseline" if opts.baseline else "variants"
    cli.write_json(opts.out, f"perf_modes_{tag}{opts.label}.json", rows)
    return 1 if failures else 0


if __name__ == "__main__":
    cli.run(main)
