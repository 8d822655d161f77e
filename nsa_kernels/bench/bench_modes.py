"""The modes benchmark (notebook 11) from the command line, for a quick GPU pass.

Every mode of the DSA metadata, ours against SGLang 0.5.23's production calls and vLLM 0.33's
indexer kernel, with the empty-kernel and bandwidth floors of the same run. Each point's
outputs are checked on their live regions against the plain reference before it is timed
(CUDA-graph replay per call; eager for extend). Prints one line per point and the targets
with PASS/FAIL; writes ``bench_modes.json`` under ``--out`` (default ``$OUT``) when set.

    python -m nsa_kernels.bench.bench_modes                 # the full profile (~4 min on H100)
    python -m nsa_kernels.bench.bench_modes --bs 1 32 512 --widths 131072 --workloads decode
    python -m nsa_kernels.bench.bench_modes --sglang .peers/sglang-*.whl --vllm .peers/vllm-*.whl

Under the interpreter (no GPU) it runs the quick profile: checks only, no GPU timings.
"""
import os
import time

import nsa_kernels  # noqa: F401  (first: picks the interpreter on CPU-only machines)

from . import cli, floors, harness, modes, results
from . import modes_report as report


def parse_args(argv=None):
    ap = cli.parser(__doc__, "nsa_kernels.bench.bench_modes")
    ap.add_argument("--profile", choices=("quick", "full"), default=None,
                    help="default: full on a GPU, quick under the interpreter")
    ap.add_argument("--workloads", nargs="+", choices=modes.WORKLOADS,
                    default=list(modes.WORKLOADS))
    ap.add_argument("--bs", nargs="+", type=int, default=None,
                    help="batch sizes (default: the profile's)")
    ap.add_argument("--widths", nargs="+", type=int, default=None, help="page-table widths")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved replay rounds per point")
    ap.add_argument("--graph-calls", type=int, default=None, help="calls captured per graph")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sglang", help="SGLang wheel or folder (sets NSA_SGLANG_PATH)")
    ap.add_argument("--vllm", help="vLLM wheel or folder (sets NSA_VLLM_PATH)")
    return ap.parse_args(argv)


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None):
    args = parse_args(argv)
    if args.sglang:
        os.environ["NSA_SGLANG_PATH"] = args.sglang
    if args.vllm:
        os.environ["NSA_VLLM_PATH"] = args.vllm
    profile = args.profile or ("full" if harness.ON_GPU else "quick")
    env = results.environment(profile)
    print(f"device: {env['device']} | torch {env['torch']} | triton {env['triton']} | "
          f"commit {env['commit']} | profile {profile}")
    if not harness.ON_GPU:
        print(
            "INTERPRETER: outputs are checked, times are CPU interpreter times, not GPU performance"
        )
    timing = modes.settings(profile, rounds=args.rounds, graph_calls=args.graph_calls)
    peers = modes.load_peers(require_gpu=True)
    for name in ("sglang", "vllm"):
        peer = getattr(peers, name)
        print(
            f"peer {name}: "
            + (
                f"{peer.version} from {peer.source}"
                if peer
                else f"UNAVAILABLE ({peers.notes[name]})"
            )
        )
    start = time.perf_counter()
    try:
        bandwidth = floors.copy_bandwidth()
        print(f"copy bandwidth (read + written): {bandwidth / 1e3:.1f} GB/s")
    except Exception as exc:  # the floors then rest on the empty kernel alone; said in the output
        bandwidth = None
        print(
            f"copy bandwidth NOT MEASURED ({type(exc).__name__}: {exc}): "
            "no bandwidth floor this run"
        )

    def save(status):
        # rewritten after every point, so a run cut short still leaves its measured points
        cli.write_json(args.out, "bench_modes.json", {
            "environment": env, "status": status, "bandwidth_bytes_per_us": bandwidth,
            "settings": timing, "elapsed_s": time.perf_counter() - start,
            "records": records_so_far, "checks": all_checks}, quiet=True)
    pts = modes.points(profile, args.bs, args.widths, tuple(args.workloads), args.seed)
    print(f"{len(pts)} points; rounds {timing['rounds']}, {timing['graph_calls']} calls per graph")
    header = (f"{'mode':34s} {'bs':>5s} {'width':>7s} {'ours':>8s} {'sglang':>8s} {'vllm':>8s} "
              f"{'floor':>7s} {'xSGL':>6s} {'xvLLM':>6s} {'/floor':>6s} check")
    print(header)

    def progress(i, n, point):
        rows = [r for r in report.ratio_rows(records_so_far) if r["bs"] == point.bs
                and r["width"] == point.width and r["mode"] == report.label(
                    (point.workload, point.next_n, point.variant))]
        for r in rows:
            floor = r["floor_us"]
            flag = (
                "ok"
                if r["note"] is None or "no GPU" in (r["note"] or "")
                else f"NOTE {r['note'][:70]}"
            )
            print(
                f"{r['mode']:34s} {r['bs']:5d} {r['width']:7d} {fmt(r['ours_us']):>8s} "
                f"{fmt(r['sglang_us']):>8s} {fmt(r['vllm_us']):>8s} {fmt(floor):>7s} "
                f"{fmt(r['vs_sglang']):>6s} {fmt(r['vs_vllm']):>6s} {fmt(r['vs_floor']):>6s} "
                f"{flag}",
                flush=True,
            )

    records_so_far = []
    all_checks = {}
    for i, point in enumerate(pts):
        recs, chk = modes.run([point], peers, timing, bandwidth, harness.measure_interleaved)
        records_so_far += recs
        all_checks.update(chk)
        for r in recs:  # peers' and floors' failures are printed too, with their reason
            if r.get("note") and "no GPU" not in r["note"] and not r["stage"].startswith("nsa_"):
                print(f"    {r['stage']}: {r['note'][:150]}")
        progress(i + 1, len(pts), point)
        save(f"partial: {i + 1} of {len(pts)} points")
    elapsed = time.perf_counter() - start
    print(f"\nsweep: {elapsed:.0f} s")
    print("\nTARGETS (CUDA-graph replay per call; extend eager)")
    for name, ok, summary, misses in report.targets(records_so_far):
        verdict = cli.verdict(ok)
        print(f"{verdict:13s} {name}: {summary}")
        for miss in misses[:8]:
            print(f"              {miss}")
        if len(misses) > 8:
            print(f"              ... and {len(misses) - 8} more")
    print("\nLIVE-REGION CHECKS (each call against the plain reference, before timing)")
    passed = {}
    for per_stage in all_checks.values():
        for stage in per_stage:
            passed[stage] = passed.get(stage, 0) + 1
    print("  passed: " + ", ".join(f"{stage} {n}" for stage, n in sorted(passed.items())))
    wrong = [r for r in records_so_far if r.get("note") and "differs" in r["note"]]
    for r in wrong:
        print(
            f"  FAIL {r['stage']} bs {r['bs']} width {r['width']} next_n {r['next_n']}: "
            f"{r['note'][:200]}"
        )
    if wrong:
        print(f"  FAIL: {len(wrong)} calls differ from the reference (not timed)")
    elif not passed:
        print("  NOT CHECKED: no call ran (see the notes above)")
    else:
        print(
            f"  PASS: all {sum(passed.values())} checked calls wrote exactly the reference "
            "on their live regions"
        )
    print("\nWHERE THE TIME GOES (points per binding floor, median ours / floor)")
    for bs, entry in report.where_time_goes(records_so_far).items():
        print(
            f"  bs {bs:5d}: launch-bound {entry['launch']:3d}, "
            f"bandwidth-bound {entry['bandwidth']:3d}, "
            f"median ours/floor {fmt(entry['median_vs_floor'])}"
        )
    save("complete")
    return 1 if wrong else 0


if __name__ == "__main__":
    cli.run(main)
