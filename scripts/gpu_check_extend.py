"""GPU check of the extend metadata: ours vs SGLang's eager path (replayed) vs the reference.

Run on a CUDA machine from the repository root: ``python scripts/gpu_check_extend.py``.
Prints PASS/FAIL per case, then eager timings (one call + synchronize, median) of SGLang's
eager path, our allocating ``extend_metadata`` and our bound ``ExtendFill`` (static buffers),
the ExtendFill's CUDA-graph replay time, and the bs = 32 ratio against the 20x target.
Writes ``$OUT/gpu_check_extend.json`` when ``OUT`` is set. One failing case never stops the rest;
exit status 1 if any check failed.
"""
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nsa_kernels as nk  # noqa: E402  (first: it picks the interpreter or the GPU)
from nsa_kernels.bench import harness  # noqa: E402
from nsa_kernels.modes import extend as ex  # noqa: E402
from nsa_kernels.modes import extend_workloads as wl  # noqa: E402
from nsa_kernels.modes.extend_reference import EXTEND_KEYS, extend_reference  # noqa: E402
from nsa_kernels.peers.sglang_extend import sglang_extend_metadata  # noqa: E402
from nsa_kernels.validation import extend as extend_checks  # noqa: E402

import torch  # noqa: E402

RESULTS = {"checks": [], "timings": [], "notes": []}
FAILED = []


def record(name, ok, detail=""):
    RESULTS["checks"].append({"case": name, "ok": ok, "detail": detail})
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def guarded(name, fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001  (report and go on with the next case)
        record(name, False, f"{type(exc).__name__}: {exc}")
        traceback.print_exc()


def compare(name, got, expected):
    for key in EXTEND_KEYS:
        a, b = got[key].cpu().long(), expected[key].cpu().long()
        if a.shape != b.shape or not torch.equal(a, b):
            where = "shape" if a.shape != b.shape else int((a != b).nonzero()[0])
            record(name, False, f"{key} differs (at {where})")
            return False
    return True


def check_case(workload):
    expected = extend_reference(*workload.args())
    ours = ex.extend_metadata(*workload.args(), **workload.mirrors())
    replay = sglang_extend_metadata(*workload.args(), **workload.mirrors())
    ok = compare(f"{workload.name} ours", ours, expected) and compare(
        f"{workload.name} sglang replay", replay, expected
    )
    bufs = ex.ExtendBuffers.allocate(
        workload.bs + 3, workload.n_tokens + 100, workload.n_flat + 100, nk.DEVICE, fill=-7
    )
    status = ex.launch_extend(*workload.args(), bufs, check=True)
    views = bufs.views(workload.bs, workload.n_tokens, workload.n_flat)
    ok = ok and compare(f"{workload.name} buffers", views, expected)
    tails_poisoned = all(
        bool((getattr(bufs, k)[v.shape[0] :] == -7).all()) for k, v in views.items()
    )
    state = ex.decode_status(status)
    ok = (
        ok
        and tails_poisoned
        and state["n_tokens"] == workload.n_tokens
        and state["n_flat"] == workload.n_flat
    )
    record(
        workload.name,
        ok,
        f"N={workload.n_tokens} flat={workload.n_flat} tails untouched={tails_poisoned}",
    )


def correctness():
    cases = [
        wl.prefill_with_prefix(bs, seed)
        for bs, seed in ((1, 0), (8, 1), (32, 2), (129, 3), (1024, 4))
    ]
    cases += [
        wl.prefill_with_prefix(16384, 5, max_extend=4, max_prefix=64),
        wl.chunked_prefill(2, 4096, 100_000 - 4096, topk=2048),
        wl.chunked_prefill(1, 2048, 1_000_000 - 2048, topk=4096),
        wl.chunked_prefill(3, 2049, 0),
        wl.chunked_prefill(4, 63, 65),
        wl.prefill_with_prefix(0),
    ]
    for workload in cases:
        guarded(workload.name, lambda w=workload: check_case(w))


def no_sync_and_capture():
    workload = wl.prefill_with_prefix(32, 7)
    bufs = ex.ExtendBuffers.allocate(64, 65536, 1 << 20, nk.DEVICE)
    fill = ex.ExtendFill(*workload.args(), bufs)
    fill()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fill()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph, note = harness.try_capture(fill, 4)
    if graph is None:
        record("ExtendFill CUDA-graph capture", False, note)
        return
    bufs.page_table_1_flattened.fill_(-1)
    graph.replay()
    torch.cuda.synchronize()
    ok = compare(
        "graph replay",
        bufs.views(32, workload.n_tokens, workload.n_flat),
        extend_reference(*workload.args()),
    )
    record("ExtendFill: no host sync, graph capture + replay equal the reference", ok)


def garbage_stays_inside():
    """check=False with garbage lengths and pool rows: poisoned buffers with canary margins."""
    from nsa_kernels.testing import Canary
    g = torch.Generator().manual_seed(3)
    table = torch.arange(8 * 5000, dtype=torch.int32, device=nk.DEVICE).reshape(8, 5000)
    for trial in range(20):
        bs = int(torch.randint(1, 300, (1,), generator=g))
        kv = torch.randint(-(2**40), 2**40, (bs,), generator=g) // torch.randint(
            1, 2**36, (bs,), generator=g
        )
        qo = torch.randint(-50, 6000, (bs,), generator=g)
        pool = torch.randint(-3, 11, (bs,), generator=g)
        caps = (
            bs + 1,
            int(torch.randint(0, 20000, (1,), generator=g)),
            int(torch.randint(0, 90000, (1,), generator=g)),
        )
        sizes = {
            "cu_seqlens_k": caps[0],
            "dsa_cu_seqlens_k": caps[1] + 1,
            "page_table_1_flattened": caps[2],
        }
        canaries = {k: Canary(sizes.get(k, caps[1])) for k in EXTEND_KEYS}
        bufs = ex.ExtendBuffers(**{k: c.view for k, c in canaries.items()})
        status = ex.launch_extend(
            kv.to(nk.DEVICE), qo.to(nk.DEVICE), pool.to(nk.DEVICE), table, 64, bufs
        )
        torch.cuda.synchronize()
        for key, canary in canaries.items():
            canary.assert_margins(f"trial {trial} {key}")
        bad = (qo < 0) | (kv < 0) | (qo > kv) | (kv > 5000) | (pool < 0) | (pool >= 8)
        expected = int(bad.int().argmax()) if bool(bad.any()) else None
        got = ex.decode_status(status)["first_invalid_request"]
        assert got == expected, f"trial {trial}: first invalid request {got}, expected {expected}"
    record(
        "check=False garbage lengths: margins intact, "
        "status names the first invalid request (20 trials)",
        True,
    )


def variants_over_sweep():
    before = harness.compiled_variants(ex.extend_metadata_kernel) or 0
    for bs in (1, 3, 16, 32, 100, 1024, 4097, 16384):
        workload = wl.prefill_with_prefix(bs, 11, max_extend=8, max_prefix=64)
        ex.extend_metadata(*workload.args(), **workload.mirrors())
    torch.cuda.synchronize()
    after = harness.compiled_variants(ex.extend_metadata_kernel)
    record("compiled variants over a bs sweep 1..16384", after is not None and after - before <= 1,
           f"{after} variant(s) in total, {after - before if after is not None else '?'} new")


def host_cost():
    workload = wl.prefill_with_prefix(32, 3)
    bufs = ex.ExtendBuffers.allocate(32, workload.n_tokens, workload.n_flat, nk.DEVICE)
    status = torch.empty(4, dtype=torch.int64, device=nk.DEVICE)
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        extend_checks.check_static(*workload.args(), bufs.as_dict(), status, ex.STATUS_ENTRIES)
        samples.append(time.perf_counter() - start)
    us = statistics.median(samples) * 1e6
    RESULTS["notes"].append({"static_checks_us": us})
    record("static checks cost (host)", us < 50, f"{us:.1f} µs median")


def timings(iters=200):
    print("\nEager: one call + torch.cuda.synchronize(), median of", iters, flush=True)
    header = (f"{'workload':34s} {'N':>7s} {'flat':>9s} {'sglang eager':>13s} {'ours eager':>11s} "
              f"{'ours fill':>10s} {'fill graph':>10s} {'ratio':>7s}")
    print(header)
    settings = {"iters": iters, "warmup": 10, "graph_calls": 8}
    cases = [wl.prefill_with_prefix(bs, 0) for bs in (1, 8, 32, 128, 1024)]
    cases += [
        wl.chunked_prefill(4, 8192, 32768),
        wl.chunked_prefill(1, 4096, 1_000_000 - 4096, topk=4096),
    ]
    for workload in cases:
        try:
            bufs = ex.ExtendBuffers.allocate(
                workload.bs, workload.n_tokens, workload.n_flat, nk.DEVICE
            )
            fill = ex.ExtendFill(*workload.args(), bufs)
            entries = [
                dict(
                    name="sglang_extend",
                    fn=lambda w=workload: sglang_extend_metadata(*w.args(), **w.mirrors()),
                    capturable=False,
                ),
                dict(
                    name="nsa_extend",
                    fn=lambda w=workload: ex.extend_metadata(*w.args(), **w.mirrors()),
                    capturable=False,
                ),
                dict(name="nsa_extend_fill", fn=fill),
            ]
            group = {r["stage"]: r for r in harness.measure_group(entries, workload, settings)}
            ratio = group["sglang_extend"]["eager_us"] / group["nsa_extend"]["eager_us"]
            for r in group.values():
                r["case"] = workload.name
                RESULTS["timings"].append(r)
            print(
                f"{workload.name:34s} {workload.n_tokens:7d} {workload.n_flat:9d} "
                f"{group['sglang_extend']['eager_us']:11.1f}us "
                f"{group['nsa_extend']['eager_us']:9.1f}us "
                f"{group['nsa_extend_fill']['eager_us']:8.1f}us "
                f"{(group['nsa_extend_fill']['graph_us'] or float('nan')):8.1f}us {ratio:6.1f}x",
                flush=True,
            )
            if workload.bs == 32 and workload.name.startswith("prefill"):
                fill_ratio = (
                    group["sglang_extend"]["eager_us"] / group["nsa_extend_fill"]["eager_us"]
                )
                RESULTS["bs32_ratio"] = ratio
                RESULTS["bs32_fill_ratio"] = fill_ratio
        except Exception as exc:  # noqa: BLE001  (report and go on)
            record(f"timing {workload.name}", False, f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
    if "bs32_ratio" in RESULTS:
        r = RESULTS["bs32_ratio"]
        print(
            "\nbs = 32 prefill with cached prefixes: "
            f"SGLang eager / ours (allocating extend_metadata) = {r:.1f}x "
            f"-> target >= 20x {'MET' if r >= 20 else 'MISSED'}; against the bound ExtendFill: "
            f"{RESULTS['bs32_fill_ratio']:.1f}x"
        )


def main():
    if not torch.cuda.is_available() or nk.INTERPRET:
        print("FAIL: needs a CUDA GPU (this machine runs Triton's interpreter)")
        return 1
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    correctness()
    guarded("ExtendFill no-sync / graph capture", no_sync_and_capture)
    guarded("check=False garbage lengths", garbage_stays_inside)
    guarded("compiled variants over a bs sweep", variants_over_sweep)
    guarded("static checks cost", host_cost)
    guarded("timings", timings)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check_extend.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    print(
        f"\n{len(RESULTS['checks']) - len(FAILED)} passed, {len(FAILED)} failed"
        + (f": {FAILED}" if FAILED else "")
    )
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
