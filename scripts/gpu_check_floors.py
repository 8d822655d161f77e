"""GPU self-check: the notebooks' stage runs (``suite.run_stages``) measure all five floors.

For draft_extend bs 32 and 128 (and prefill 4096 tokens), runs every stage with the floors as
the notebooks do, then checks, as a PASS/FAIL table:

* every floor of ``floors.FLOORS`` is measured (none skipped: this machine has a GPU and
  cuda-python), in the same group as the stages;
* every record has ``eager_us`` and ``host_us`` > 0, and each floor's host time is at most its
  call + synchronize (a host call cannot outlast its own sync by much: 25% slack for noise);
* the cheapest empty launch by call + synchronize is not Triton's ``kernel[grid]`` (prints
  which one, and by how much);
* ``display.compare_stages`` divides by that same cheapest empty launch.

Then prints the floors and ``floors.launch_targets`` (zero_sync against the cheapest empty
launch) per workload. One failing case does not stop the others; exceptions are printed with
the case name. Writes ``$OUT/gpu_check_floors.json`` when ``OUT`` is set. Exit status 1 on any
FAIL.
"""
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nsa_kernels as nk  # noqa: F401  (first: picks Triton's mode)
from nsa_kernels.bench import display, floors, suite, workloads
from nsa_kernels.bench.harness import ON_GPU

SETTINGS = {"iters": 200, "warmup": 20, "graph_calls": 16}
CASES = [("draft_extend bs 32", lambda: workloads.draft_extend(32)),
         ("draft_extend bs 128", lambda: workloads.draft_extend(128)),
         ("prefill 4096 tokens", lambda: workloads.prefill(4096))]


def check_case(name, make_workload, results, out):
    def add(check, ok, detail):
        results.append((name, check, bool(ok), detail))

    skipped = []
    records = suite.run_stages(make_workload(), SETTINGS, skipped=skipped)
    by = {r["stage"]: r for r in records}
    out[name] = {"records": records, "skipped": skipped}
    missing = [f for f in floors.FLOORS if f not in by]
    add("all five floors measured", not missing and not skipped,
        f"missing {missing}; skipped {skipped}" if missing or skipped else ", ".join(floors.FLOORS))
    bad = [r["stage"] for r in records if not (r["eager_us"] > 0 and r.get("host_us", 0) > 0)]
    add("eager_us and host_us > 0 on every record", not bad,
        f"bad: {bad}" if bad else f"{len(records)} records")
    measured = [f for f in floors.FLOORS if f in by]
    over = [f for f in measured if by[f]["host_us"] > 1.25 * by[f]["eager_us"]]
    add("floor host time <= 1.25x its call + sync", not over, "; ".join(
        f"{f}: host {by[f]['host_us']:.1f} eager {by[f]['eager_us']:.1f}" for f in measured))
    cheapest, triton = floors.cheapest_empty(records, "eager_us"), by.get("empty_kernel")
    add("cheapest empty launch is not kernel[grid]",
        cheapest is not None and cheapest["stage"] != "empty_kernel",
        f"{cheapest['stage']} {cheapest['eager_us']:.1f} µs vs empty_kernel "
        f"{triton['eager_us']:.1f} µs" if cheapest and triton else "no empty launch measured")
    rows = display.compare_stages(records, "zero_sync", "triton_autotuned")
    want = by["zero_sync"]["eager_us"] / cheapest["eager_us"]
    add("compare_stages uses the cheapest empty launch",
        len(rows) == 1 and abs(rows[0][-1] - want) < 1e-9,
        f"{rows[0][-1]:.3f} vs {want:.3f}" if rows else "no row")
    for t in floors.launch_targets(records, ["zero_sync"], []):
        print(f"  [{name}] {t['target']}: {t['measured']} -> {'MET' if t['met'] else 'MISSED'}")


def main():
    if not ON_GPU:
        print("SKIP: needs a GPU (the interpreter measures no driver or graph floor)")
        return 0
    results, out = [], {}
    for name, make in CASES:
        try:
            check_case(name, make, results, out)
        except Exception as exc:  # noqa: BLE001  (one broken case must not hide the others)
            traceback.print_exc()
            results.append((name, "ran", False, f"{type(exc).__name__}: {exc}"))
    width = max(len(f"{c} / {w}") for c, w, _, _ in results)
    print(f"\n{'case / check':<{width}}  result  detail")
    for case, what, ok, detail in results:
        print(f"{case + ' / ' + what:<{width}}  {'PASS' if ok else 'FAIL':<6}  {detail}")
    failed = sum(not ok for *_, ok, _ in results)
    print(f"\n{len(results) - failed} PASS, {failed} FAIL")
    if os.environ.get("OUT"):
        path = os.path.join(os.environ["OUT"], "gpu_check_floors.json")
        with open(path, "w") as f:
            keys = ("case", "check", "ok", "detail")
        json.dump({"results": [dict(zip(keys, r)) for r in results], "runs": out}, f,
                  indent=1, default=str)
        print("wrote", path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
