"""Host cost per call of the modes' per-call entry points, before and after plan caching.

"before" runs what each entry point did on every call before the cache (static checks + plan,
and for ``extend_metadata`` the host data checks and the allocation); "after" calls the entry
point itself. The final launch is replaced by a no-op in both, so the figures are the Python
host work around a launch only: on this CPU the kernels run under Triton's interpreter, whose
time says nothing about a GPU. With no kernel run, nothing writes ``extend_metadata``'s status:
its one read of the status stays in the timed path (the device-to-host copy it costs), but the
comparison of the device's totals with the host mirrors is left out (it would judge whatever
the fresh allocation held), and the output says so. A GPU launch adds its own host cost on top
(~6 us through the driver path, ~15 us + ~1 us per pointer through ``kernel[grid](...)``).

    python -m nsa_kernels.bench.host_cost_modes [--bs 32] [--calls 2000] [--launch]

``--launch`` (GPU only) keeps the real launches in both columns ("before" then launches through
``kernel[grid](...)`` as the entry points used to), synchronising once per repeat: per-call
time is then the host cost including the launch, as long as the GPU keeps up.

First it checks, with real launches, that the cached paths still compute the reference on
this machine (on a GPU that exercises the driver path's per-call re-pointing, which the CPU
tests cannot reach): a PASS/FAIL line per check. Then one line per entry point (us per call,
best of 5 repeats); ``host_cost_modes.json`` goes under ``--out`` (default ``$OUT``) when
set. Exit status 1 on any failure.
"""
import contextlib
import time

import nsa_kernels  # noqa: F401, I001  (first: it picks Triton's interpreter on CPU-only machines)

import torch

from .. import launcher
from ..compat import sglang as compat
from ..modes import extend as ex
from ..modes.decode import plan_decode
from ..modes.draft_extend import plan_draft_extend
from ..modes.extend_reference import EXTEND_KEYS, extend_reference
from ..modes.target_verify import plan_target_verify
from ..validation import extend as extend_checks
from . import cli


def per_call_us(fn, calls, repeats=5):
    fn()  # warm: caches filled, first-call costs out
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def int32(n, device, fill=0):
    return torch.full((n,), fill, dtype=torch.int32, device=device)


def mode_args(bs, device, width=4096, page=64, next_n=2, qo=4):
    """Arguments of the three compat functions, as SGLang's graph runner holds its buffers."""
    seq = torch.full((bs,), width // 2, dtype=torch.int64, device=device)
    pool = torch.arange(bs, dtype=torch.int64, device=device)
    r2t = torch.zeros((bs + 1, width), dtype=torch.int32, device=device)
    pages = -(-width // page)

    def outputs(rows):
        return dict(cache_seqlens=int32(bs, device), cu_seqlens_k=int32(bs + 1, device),
                    page_table_1=torch.zeros((rows, width), dtype=torch.int32, device=device),
                    dsa_cache_seqlens=int32(rows, device), dsa_cu_seqlens_k=int32(rows + 1, device),
                    real_page_table=torch.zeros((rows, pages), dtype=torch.int32, device=device))
    o = outputs(bs)
    decode = (seq, pool, r2t, o["cache_seqlens"], o["cu_seqlens_k"], o["page_table_1"],
              o["dsa_cache_seqlens"], o["dsa_cu_seqlens_k"], o["real_page_table"], bs, width,
              2048, page)
    rows = bs * next_n
    o = outputs(rows)
    verify = (seq, pool, r2t, o["cache_seqlens"], o["cu_seqlens_k"], o["page_table_1"],
              int32(rows, device), o["dsa_cache_seqlens"], o["dsa_cu_seqlens_k"],
              o["real_page_table"], bs, width, 2048, page, next_n,
              torch.zeros((bs, next_n), dtype=torch.int32, device=device))
    rows = bs * qo
    o = outputs(rows)
    ext = int32(bs, device, qo)
    draft = (seq, ext, pool, r2t, o["cache_seqlens"], o["cu_seqlens_k"], o["page_table_1"],
             int32(rows, device), o["dsa_cache_seqlens"], o["dsa_cu_seqlens_k"],
             o["real_page_table"], bs, rows, width, 2048, page, qo, rows, False)
    return decode, verify, draft


def extend_args(bs, device, qo=1024, prefix=1024):
    kv = [prefix + qo] * bs
    seq = torch.tensor(kv, dtype=torch.int64, device=device)
    ext = torch.tensor([qo] * bs, dtype=torch.int64, device=device)
    pool = torch.arange(bs, dtype=torch.int64, device=device)
    r2t = torch.zeros((bs + 1, prefix + qo), dtype=torch.int32, device=device)
    mirrors = dict(seq_lens_cpu=seq.cpu(), extend_seq_lens_cpu=ext.cpu())
    return (seq, ext, pool, r2t, 2048), mirrors


def extend_metadata_before(seq, ext, pool, r2t, topk, seq_lens_cpu, extend_seq_lens_cpu):
    """What ``extend_metadata`` did per call before the cache (the launch left out)."""
    topk = extend_checks.check_inputs(seq, ext, pool, r2t, topk)
    n_tokens, n_flat = extend_checks.check_data(seq, ext, pool, r2t, topk, None, seq_lens_cpu,
                                                extend_seq_lens_cpu, table_values=False)
    buffers, status = ex.ExtendBuffers.allocate_exact(seq.shape[0], n_tokens, n_flat, seq.device)
    ex.plan_extend(seq, ext, pool, r2t, topk, buffers, status)()
    return buffers.as_dict()


#: The launch paths a no-op replaces when the launches are left out.
LAUNCH_CLASSES = (launcher.LaunchPlan, launcher.TritonLaunch, launcher.DriverLaunch,
                  launcher.GraphLaunch)
#: Said in the output (and the JSON) when the launches are left out.
NO_LAUNCH_STATUS_NOTE = ("extend_metadata: no kernel writes its status, so the status is read "
                         "(as ever, one device-to-host copy) but not compared with the mirrors")


def _read_status_only(status, n_tokens, n_flat):
    """``extend_metadata``'s mirror check without a launch: the same read of the status, no
    verdict on entries no kernel wrote."""
    ex.ExtendStatus.read(status)


@contextlib.contextmanager
def launches_left_out():
    """Every launch path a no-op and the extend mirror check a bare status read, restored on
    exit (so that a caller in the same process launches again afterwards)."""
    saved = [(cls, cls.__dict__["__call__"]) for cls in LAUNCH_CLASSES]
    saved_check = extend_checks.raise_on_mirror_mismatch
    for cls, _ in saved:
        cls.__call__ = lambda self: None
    extend_checks.raise_on_mirror_mismatch = _read_status_only
    try:
        yield
    finally:
        for cls, call in saved:
            cls.__call__ = call
        extend_checks.raise_on_mirror_mismatch = saved_check


def check_cached_paths(device):
    """Real launches through the caches, contents and lengths changing between calls: every
    output against ``extend_reference``. Returns a list of (check name, error or None)."""
    results = []
    g = torch.Generator().manual_seed(0)
    bs, width = 9, 700
    table = torch.randint(0, 1 << 30, (bs + 3, width), generator=g).to(device, torch.int32)
    pool = torch.randperm(bs + 3, generator=g)[:bs].to(device)
    statuses = []
    for round_ in range(4):
        name = f"round {round_}"
        try:
            qo = torch.randint(0, 200, (bs,), generator=g)
            kv = qo + torch.randint(0, 400, (bs,), generator=g)
            # New input tensors each round (new addresses): the allocating form re-points them.
            seq, ext = kv.to(device), qo.to(device)
            table.copy_(torch.randint(0, 1 << 30, table.shape, generator=g).to(device, table.dtype))
            expected = extend_reference(seq, ext, pool, table, 64)
            got = ex.extend_metadata(seq, ext, pool, table, 64, seq_lens_cpu=kv,
                                     extend_seq_lens_cpu=qo)
            for key in EXTEND_KEYS:
                if not torch.equal(got[key].cpu(), expected[key].cpu().to(torch.int32)):
                    raise AssertionError(f"extend_metadata {key} differs from the reference")
            buffers = ex.ExtendBuffers.allocate(bs, 200 * bs, 600 * bs, device, fill=-7)
            statuses.append((ex.launch_extend(seq, ext, pool, table, 64, buffers), int(qo.sum())))
            for key, view in buffers.views(bs, int(qo.sum()), int(kv.sum())).items():
                if not torch.equal(view.cpu(), expected[key].cpu().to(torch.int32)):
                    raise AssertionError(f"launch_extend {key} differs from the reference")
            results.append((f"extend_metadata + launch_extend, {name}", None))
        except Exception as exc:  # one failure must not hide the others
            results.append((f"extend_metadata + launch_extend, {name}",
                            f"{type(exc).__name__}: {exc}"))
    try:
        seen = [ex.decode_status(status)["n_tokens"] for status, _ in statuses]
        wanted = [n for _, n in statuses]
        error = None if seen == wanted else f"statuses hold N = {seen}, expected {wanted}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    results.append(("launch_extend: each call's own status (re-pointed per call)", error))
    paths = {type(launch).__name__ for launch in ex.ALLOCATING_PLANS._entries.values()}
    results.append((f"cached launchers' path: {sorted(paths)}", None))
    return results


def main(argv=None):
    parser = cli.parser(__doc__, "nsa_kernels.bench.host_cost_modes")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--launch", action="store_true", help="keep the launches (GPU only)")
    opts = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.launch and device == "cpu":
        parser.error("--launch needs a GPU: on CPU the interpreter would run every kernel")
    failed = False
    for name, error in check_cached_paths(device):
        failed |= error is not None
        print(f"{'PASS' if error is None else 'FAIL'}  {name}" + (f": {error}" if error else ""))
    # Without --launch no kernel runs: every launch path is a no-op (the host work around it
    # is timed).
    with contextlib.nullcontext() if opts.launch else launches_left_out():
        failed |= time_entry_points(opts, device)
    return 1 if failed else 0


def time_entry_points(opts, device):
    """The before / after table (and its JSON); True if an entry point failed."""
    failed = False
    decode, verify, draft = mode_args(opts.bs, device)
    inputs, mirrors = extend_args(opts.bs, device)
    buffers = ex.ExtendBuffers.allocate(opts.bs, opts.bs * 1024, opts.bs * 2048, device)
    status = torch.empty(ex.STATUS_ENTRIES, dtype=torch.int64, device=device)
    cases = [
        ("fused_dsa_decode_metadata", lambda: plan_decode(*decode)(),
         lambda: compat.fused_dsa_decode_metadata(*decode)),
        ("fused_dsa_target_verify_metadata", lambda: plan_target_verify(*verify)(),
         lambda: compat.fused_dsa_target_verify_metadata(*verify)),
        ("fused_dsa_draft_extend_metadata", lambda: plan_draft_extend(*draft)(),
         lambda: compat.fused_dsa_draft_extend_metadata(*draft)),
        ("launch_extend (buffers, status given)",
         lambda: ex._prepare(ex.ExtendCall(*inputs, buffers, status))(),
         lambda: ex.launch_extend(*inputs, buffers, status)),
        ("extend_metadata (allocating, host mirrors)",
         lambda: extend_metadata_before(*inputs, **mirrors),
         lambda: ex.extend_metadata(*inputs, **mirrors)),
    ]
    what = "with launches" if opts.launch else "launch replaced by a no-op"
    print(f"host us per call, bs {opts.bs}, device {device}, {what} "
          f"(host-side cost on this machine; not kernel time)")
    if not opts.launch:
        print(NO_LAUNCH_STATUS_NOTE)
    print(f"{'entry point':45s} {'before':>9s} {'after':>9s} {'ratio':>7s}")
    results = []
    for name, before, after in cases:
        try:
            b = per_call_us(before, opts.calls)
            a = per_call_us(after, opts.calls)
        except Exception as exc:  # one failure must not hide the others
            failed = True
            print(f"{name:45s} FAILED {type(exc).__name__}: {exc}")
            continue
        results.append(dict(entry_point=name, before_us=b, after_us=a))
        print(f"{name:45s} {b:9.1f} {a:9.1f} {b / a:6.1f}x")
    cli.write_json(opts.out, "host_cost_modes.json",
                   dict(bs=opts.bs, device=device, launch=opts.launch, results=results,
                        note=None if opts.launch else NO_LAUNCH_STATUS_NOTE))
    return failed


if __name__ == "__main__":
    cli.run(main)
