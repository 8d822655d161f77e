"""Run every Triton kernel of the workbook over edge cases and garbage lengths, for memcheck.

On the GPU (what the report's memcheck log comes from):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python scripts/memcheck.py

With the caching allocator off, every tensor is its own cudaMalloc, so a store one element
past a buffer is an error the sanitizer reports. Buffers are sized exactly (capacity == N)
where the case says so. Outputs are also compared with the reference, so a run that passes
memcheck but computes garbage still fails.

Garbage lengths (issue 12): every sync-free entry point of
``nsa_kernels.testing.SYNC_FREE_ENTRY_POINTS`` runs with ``check=False`` on the fixed cases of
``GARBAGE_CASES`` (negative, huge, ``qo > kv``, int64 extremes) into exact-size buffers; its
status must be sane (N in 0..2**31-1, overflow == N > capacity; entry points with a status of
their own check it in their adapter) and the sanitizer must stay silent. Each adapter guards
the other buffers it creates with canary margins. On the CPU the expanded outputs and status
are canary-guarded too. A case that hits a known bug (``known_bug``; a hang, say) is listed as
``KNOWN`` and not run, so it cannot stall the run; its strict-xfail reproducer lives in
tests/test_garbage_lengths.py.

CPU smoke test (Triton's interpreter, small cases only, no sanitizer; about a minute):

    python scripts/memcheck.py            # --quick is implied without a GPU

Prints one ``PASS``/``FAIL`` line per case, a summary table of failures, and writes
``memcheck.json`` under ``$OUT`` when it is set. One failing case never stops the others;
an exception is reported with its case name. Exit status 1 if anything failed.
"""
import argparse
import json
import os
import sys
import time
import traceback

import nsa_kernels as nk
from nsa_kernels.bench import workloads
from nsa_kernels.stage4_triton_autotuned import SEARCH_SPACE, launch_with_config
from nsa_kernels.stage5_zero_sync import launch_zero_sync
from nsa_kernels.testing import GARBAGE_CASES, SYNC_FREE_ENTRY_POINTS, Canary, status_is_sane

import torch

TOPK = 2048
RESULTS = []


def sync():
    if nk.DEVICE.type == "cuda":
        torch.cuda.synchronize()


def record(name, run):
    """Run one case; ``run()`` returns True (pass) or a failure text. Never raises."""
    started = time.perf_counter()
    try:
        outcome = run()
        ok, detail = (True, "") if outcome is True else (False, str(outcome))
    except Exception as err:  # noqa: BLE001  (one case must not stop the others)
        ok, detail = False, f"{type(err).__name__}: {err}"
        traceback.print_exc()
    seconds = time.perf_counter() - started
    RESULTS.append({"case": name, "ok": ok, "detail": detail, "seconds": round(seconds, 3)})
    print(f"{'PASS' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)


def lengths(ext, seq, dtype=torch.int32):
    return (torch.tensor(ext, dtype=dtype, device=nk.DEVICE),
            torch.tensor(seq, dtype=dtype, device=nk.DEVICE))


def cases(quick):
    yield "bs 0", *lengths([], [])
    yield "N 0 (all zero-length)", *lengths([0, 0, 0], [5, 0, 9])
    yield "one token", *lengths([1], [1])
    yield "bs 129, N not a block multiple", *lengths([1, 2, 3] * 43, [100, 2000, 3000] * 43)
    yield "bs 257 with zero-length tail", *lengths([3] * 200 + [0] * 57, [5000] * 257)
    for bs in (1, 100) if quick else (1, 1000, 4096):
        w = workloads.draft_extend(bs)
        yield f"draft bs {bs}", w.extend_seq_lens, w.seq_lens
    for n in (1023,) if quick else (1023, 131072):
        w = workloads.prefill(n)
        yield f"prefill N {n}", w.extend_seq_lens, w.seq_lens


def check_fill(fill, ext, seq, capacity_slack=0):
    want_e, want_c = nk.reference(ext, seq, TOPK)
    n = want_e.shape[0]
    out_e = torch.full((n + capacity_slack,), -7, dtype=torch.int32, device=ext.device)
    out_c = out_e.clone()
    fill(ext, seq, TOPK, out_e, out_c)
    sync()
    return True if torch.equal(out_e[:n], want_e) and torch.equal(out_c[:n], want_c) \
        else "differs from the reference"


def check_overflow_by_one(mapping, ext, seq, n):
    out = torch.empty(n - 1, dtype=torch.int32, device=ext.device)
    status = launch_zero_sync(ext, seq, TOPK, out, out.clone(), mapping=mapping)
    sync()
    got = status.tolist()
    return True if got == [n, 1] else f"status {got}, expected {[n, 1]}"


def check_pipeline(ext, seq, n):
    bs = ext.shape[0]
    width = 8192
    g = torch.Generator().manual_seed(bs)
    r2t = torch.randint(0, 1 << 22, (max(bs, 1), width), generator=g, dtype=torch.int32).to(
        nk.DEVICE
    )
    pool = torch.randperm(max(bs, 1), generator=g)[:bs].to(torch.int32).to(nk.DEVICE)
    buffers = nk.PipelineBuffers.allocate(bs, n, width, 64, nk.DEVICE)
    status = nk.launch_full_pipeline(ext, seq, pool, r2t, TOPK, buffers, 64)
    want = nk.pipeline_reference(ext, seq, pool, r2t, TOPK, 64, width)
    sync()
    ok = (
        status.tolist() == [n, 0]
        and torch.equal(buffers.nsa_cu_seqlens_k, want["nsa_cu_seqlens_k"])
        and torch.equal(buffers.cu_seqlens_k, want["cu_seqlens_k"])
    )
    return True if ok else f"status {status.tolist()} or cu arrays differ"


def check_garbage(entry, ext, seq, topk, capacity):
    """check=False on garbage lengths: exact-size buffers on the GPU, canaries on the CPU."""
    if nk.DEVICE.type == "cuda":
        out = torch.empty(capacity, dtype=torch.int32, device=nk.DEVICE)
        cache = torch.empty(capacity, dtype=torch.int32, device=nk.DEVICE)
        status = torch.empty(2, dtype=torch.int32, device=nk.DEVICE)
        entry.launch(ext, seq, topk, out, cache, status)
        sync()
        got = status.tolist()
    else:
        out, cache, status = Canary(capacity), Canary(capacity), Canary(2)
        entry.launch(ext, seq, topk, out.view, cache.view, status.view)
        out.assert_margins("out_seqlens_expanded")
        cache.assert_margins("out_nsa_cache_seqlens")
        status.assert_margins("status")
        got = status.view.tolist()
    if entry.own_status:  # its adapter checked its own status (and raised if insane)
        return True
    return True if status_is_sane(got, capacity) else f"status {got} for capacity {capacity}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small cases only (implied under Triton's interpreter)")
    parser.add_argument("--garbage-only", action="store_true",
                        help="only the garbage-length cases of every sync-free entry point")
    args = parser.parse_args(argv)
    quick = args.quick or nk.INTERPRET
    print(
        f"memcheck driver on {nk.DEVICE} (interpreter: {nk.INTERPRET}, quick: {quick})", flush=True
    )

    for case, ext, seq in () if args.garbage_only else cases(quick):
        n = int(ext.sum())
        for stage_name, stage in nk.STAGES.items():
            if stage_name in ("triton_fused", "triton_inplace") and ext.shape[0] > 1000:
                continue  # the linear scan at bs 4096 is just slow; bs 1000 covers it
            record(f"{stage_name} / {case} / capacity == N",
                   lambda stage=stage, ext=ext, seq=seq: check_fill(stage, ext, seq))
        for mapping in ("request", "token"):
            def zero_sync(*a, m=mapping):
                launch_zero_sync(*a, mapping=m)

            def bound(*a, m=mapping):
                nk.ZeroSyncFill(*a, mapping=m)()
            record(f"zero_sync[{mapping}] / {case} / capacity == N",
                   lambda f=zero_sync, ext=ext, seq=seq: check_fill(f, ext, seq))
            record(f"ZeroSyncFill [{mapping}] / {case} / capacity == N",
                   lambda f=bound, ext=ext, seq=seq: check_fill(f, ext, seq))
            if n:  # buffers one short of N must not be written past their end
                record(
                    f"zero_sync[{mapping}] / {case} / overflow by one",
                    lambda m=mapping, ext=ext, seq=seq, n=n: check_overflow_by_one(m, ext, seq, n),
                )
        if n and ext.shape[0] <= 1000:
            for config in SEARCH_SPACE[:2] if quick else SEARCH_SPACE:
                def autotuned(e, s, topk, oe, oc, config=config, n=n):
                    launch_with_config(config, torch.cumsum(e, 0), s, topk, oe, oc, n)
                record(f"autotune config {config.kwargs}/{config.num_warps} / {case}",
                       lambda f=autotuned, ext=ext, seq=seq: check_fill(f, ext, seq))
        if n <= (2000 if quick else 20000):
            record(f"full_pipeline / {case} / exact buffers",
                   lambda ext=ext, seq=seq, n=n: check_pipeline(ext, seq, n))

    known = []
    for case, ext, seq, dtype, topk, capacity in GARBAGE_CASES:
        for entry in SYNC_FREE_ENTRY_POINTS:
            lens = lengths(ext, seq, dtype)
            reason = entry.known_bug and entry.known_bug(*lens)
            if reason:
                known.append(f"garbage / {entry.name} / {case}: {reason}")
                continue
            record(
                f"garbage / {entry.name} / {case}",
                lambda entry=entry, lens=lens, topk=topk, capacity=capacity: (
                    check_garbage(entry, *lens, topk, capacity)
                ),
            )

    failures = [r for r in RESULTS if not r["ok"]]
    for line in known:
        print(f"{'KNOWN':6} | {line}")
    print(f"\n{'result':6} | case\n{'-' * 6}-+-{'-' * 60}")
    for r in failures:
        print(f"{'FAIL':6} | {r['case']}: {r['detail']}")
    print(f"memcheck driver: {len(RESULTS) - len(failures)} PASS, {len(failures)} FAIL "
          f"({len(RESULTS)} cases)", flush=True)
    out_dir = os.environ.get("OUT")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "memcheck.json"), "w") as f:
            json.dump({"device": str(nk.DEVICE), "interpreter": nk.INTERPRET, "quick": quick,
                       "results": RESULTS, "known_bugs_not_run": known}, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
