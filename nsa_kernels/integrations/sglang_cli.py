"""``python -m nsa_kernels.integrations.sglang``: conformance and host cost inside SGLang.

    --conformance [--full] [--modes decode,extend,...]   per-mode count table; exit 1 on a
                  [--budget-s S]                         mismatch, naming the case and tensor
    --in-graph                                           the in-graph mode's equality (GPU)
    --host-cost [--sizes 1,32,128] [--width 8192]        host µs per step table (GPU)
    --host-profile MODE[:STAGE]                          cProfile of one side's step, bs 32 (GPU)
    --json PATH                                          also write the rows / records there

Exit status: 0 all equal, 1 a mismatch, 2 a part this machine cannot run (the reason printed).
"""
import argparse
import json
import sys
import time


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def _table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def conformance(full, modes, out, budget_s=None, install=None):
    """The conformance grid (``sglang_conformance``), its table and failures printed, its rows
    in ``out``; 0 when every case is equal. ``install``: the workbook's by default."""
    from . import sglang_conformance as sc
    case_list = sc.cases(full, modes or sc.MODES)
    start = time.perf_counter()

    def progress(done, total, case):
        if done % 25 == 0 or done == total:
            print(f"  {done}/{total} cases, {time.perf_counter() - start:.0f} s", flush=True)
    rows, failures, skipped = sc.run(case_list, progress, budget_s, install)
    print(_table(["mode", "cases", "equal", "tensors compared"],
                 [[r["mode"], r["cases"], r["equal"], r["tensors"]] for r in rows]))
    reasons = sorted({(c.mode, reason) for c, reason in skipped})
    for mode, reason in reasons:
        count = sum(1 for c, _ in skipped if c.mode == mode)
        print(f"skipped {count} {mode} case(s): {reason}")
    for case, message in failures:
        print(f"MISMATCH {case}: {message}")
    out.update(conformance=rows, failures=[[repr(c), m] for c, m in failures],
               skipped=[[repr(c), r] for c, r in skipped])
    return 1 if failures else 0


def in_graph(out):
    from .sglang_in_graph import check_in_graph
    rows = check_in_graph()
    print(_table(["mode", "bs", "replays", "equal"],
                 [[r["mode"], r["bs"], r["replays"], r["equal"]] for r in rows]))
    out["in_graph"] = rows
    return 0 if all(r["equal"] == r["replays"] for r in rows) else 1


def host_cost(sizes, width, out):
    from .sglang_host_cost import measure
    records = measure(sizes=sizes, width=width)
    stages = list(dict.fromkeys(r["stage"] for r in records))
    points = list(dict.fromkeys((r["workload"], r["bs"]) for r in records))
    by = {(r["workload"], r["bs"], r["stage"]): r["host_us"] for r in records}
    rows = [[w, bs] + [f"{by[(w, bs, s)]:.1f}" if (w, bs, s) in by else "-" for s in stages]
            + [_ratio(by, w, bs)] for w, bs in points]
    print(f"host µs per step, width {width}, no synchronize (medians)")
    print(_table(["workload", "bs"] + stages + ["sglang / installed"], rows))
    out["host_cost"] = records
    return 0


def _ratio(by, workload, bs):
    a, b = by.get((workload, bs, "sglang_step")), by.get((workload, bs, "nsa_installed"))
    return f"{a / b:.1f}x" if a and b else "-"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nsa_kernels.integrations.sglang",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--conformance", action="store_true")
    parser.add_argument("--full", action="store_true", help="the GPU grid (bs 1..512, ...)")
    parser.add_argument("--modes", type=_csv(str), default=None)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop starting cases after this many seconds (the rest: skipped)")
    parser.add_argument("--in-graph", action="store_true")
    parser.add_argument("--host-cost", action="store_true")
    parser.add_argument("--sizes", type=_csv(int), default=[1, 32, 128])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--host-profile", default=None, metavar="MODE[:STAGE]")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not (args.conformance or args.in_graph or args.host_cost or args.host_profile):
        parser.error("ask for --conformance, --in-graph, --host-cost and/or --host-profile")
    from .sglang_conformance import MODES
    unknown = sorted(set(args.modes or ()) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; the modes are {', '.join(MODES)}")
    import nsa_kernels  # noqa: F401  (before triton: the interpreter switch on a CPU)
    out, status = {}, 0
    try:
        if args.conformance:
            status |= conformance(args.full, args.modes, out, args.budget_s)
        if args.in_graph:
            status |= in_graph(out)
        if args.host_cost:
            status |= host_cost(args.sizes, args.width, out)
        if args.host_profile:
            from .sglang_host_cost import profile
            mode, _, stage = args.host_profile.partition(":")
            print(profile(mode, width=args.width, stage=stage or "nsa_installed"))
    except RuntimeError as exc:  # a GPU-only part on a CPU, SGLang's wheel absent
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=1, default=str)
    return status


if __name__ == "__main__":
    sys.exit(main())
