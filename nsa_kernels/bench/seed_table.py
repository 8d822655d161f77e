"""The seed's table, measured fairly, on the GPU: a PASS/FAIL table.

    python -m nsa_kernels.bench.seed_table [--bs 32 --bs 128] [--iters 200] [--rounds 3]

1. Correctness: each seed-side fill (``nsa_kernels.peers.seed``) passes the fill contract
   against ``reference`` on the edge and random cases the notebooks use.
2. Timing at each bs (draft extend): the seed's work, SGLang's loop transcribed, our three
   stages and ``validation`` measured in the same rounds (``measure_group``), ``--rounds``
   times. Per round: the target ``seed_python_baseline`` within 5% of ``sglang_loop``, and
   ours = seed's work + validation within 10%.

Every case runs even if another fails; exceptions are printed with the case name. Results go
to ``seed_table.json`` under ``--out`` (default ``$OUT``) when set. Exit status 1 if any check
failed.
"""
import nsa_kernels  # noqa: F401, I001  (first: picks the interpreter on CPU-only machines)

import traceback

from ..peers import seed as seed_peers
from . import checks, cli, suite, workloads
from .display import fmt_ratio, fmt_us
from .harness import ON_GPU
from .results import environment


def main(argv=None):
    parser = cli.parser(__doc__, "nsa_kernels.bench.seed_table")
    parser.add_argument("--bs", type=int, action="append", help="batch sizes (default 8, 32, 128)")
    parser.add_argument("--iters", type=int, default=200 if ON_GPU else 5)
    parser.add_argument("--rounds", type=int, default=3, help="independent measurements per bs")
    args = parser.parse_args(argv)
    sizes = args.bs or [8, 32, 128]
    settings = workloads.profile_settings("full" if ON_GPU else "quick", iters=args.iters)
    report = {"environment": environment("full" if ON_GPU else "quick"), "checks": [], "rounds": []}
    failed = 0
    print(
        f"device: {report['environment']['device']}"
        + ("" if ON_GPU else "  [interpreter: timings are not GPU speed]")
    )

    cases = checks.edge_cases() + checks.random_cases(0, count=4, max_bs=64)
    print("\n== correctness (fill contract against reference)")
    for name, fill in seed_peers.SEED_FILLS.items():
        try:
            checks.check_fill(fill, cases)
            status, detail = "PASS", f"{len(cases)} cases"
        except Exception as exc:  # noqa: BLE001  (report every case, whatever it raises)
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        failed += status == "FAIL"
        report["checks"].append({"fill": name, "status": status, "detail": detail})
        print(f"  {status}  {name:<22} {detail}")

    print("\n== timing (eager: call + synchronize, median; same rounds)")
    for bs in sizes:
        for round_index in range(args.rounds):
            case = f"bs={bs} round {round_index + 1}"
            try:
                workload = workloads.draft_extend(bs, seed=round_index)
                records = suite.run_stages(workload, settings, names=list(seed_peers.OURS.values()),
                                           floor=False, extra=seed_peers.seed_entries(workload))
                by = {(r["stage"], r["workload"], r["bs"]): r for r in records}
                target = seed_peers.faithful_baseline_target(by, bs)
                rows = seed_peers.journey_rows(by, bs)
            except Exception as exc:  # noqa: BLE001
                failed += 1
                print(f"  FAIL  {case}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                report["rounds"].append({"case": case, "error": f"{type(exc).__name__}: {exc}"})
                continue
            failed += not target["met"]
            print(
                f"  {'PASS' if target['met'] else 'FAIL'}  {case}: {target['target']}: "
                f"{target['measured']}"
            )
            for r in rows:
                failed += not r["sum_ok"]
                print(
                    f"  {'PASS' if r['sum_ok'] else 'FAIL'}  {case}: "
                    f"{r['ours']} {fmt_us(r['ours_us'])} = "
                    f"{r['seed_stage']} {fmt_us(r['seed_us'])} "
                    f"+ validation {fmt_us(r['validation_us'])} "
                    f"({r['sum_residual']:+.1%}; seed published {fmt_us(r['published_us'])})"
                )
            seed_work = by[("seed_python_baseline", "draft_extend", bs)]["eager_us"] / \
                by[("seed_triton_inplace", "draft_extend", bs)]["eager_us"]
            print(
                f"        {case}: seed's stage 0 -> 2 on its own work {fmt_ratio(seed_work)} "
                "(published 3.28×)"
            )
            report["rounds"].append(
                {"case": case, "records": records, "target": target, "journey": rows}
            )

    print(f"\n{'ALL PASS' if not failed else f'{failed} FAILED'}")
    cli.write_json(args.out, "seed_table.json", report)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
