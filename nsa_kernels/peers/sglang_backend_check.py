"""What SGLang's backend must produce, from the plain references; and the harness' self-check.

``expected_metadata(config, req_to_token, case)`` builds every ``forward_metadata`` tensor of a
``MetadataCase`` (mode, padded inputs) from ``nsa_kernels.modes.reference`` /
``extend_reference`` under SGLang's field names: computed independently of SGLang, so equality
with the harness' output proves the harness ran SGLang's method on the intended inputs.

``python -m nsa_kernels.peers.sglang_backend_check`` runs every mode and configuration the
harness supports on this device, compares each with ``expected_metadata``, and prints the
import time, which path SGLang took (fused on CUDA, torch fallback elsewhere) and the host
time per call of each method. Exit status 0 when every case is equal. ``--conformance
[MODULE:FUNC]`` runs the conformance grid instead (``integrations.sglang_conformance``, the one
sweep of shipped against installed) with that install applied, the workbook's by default.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from nsa_kernels.modes import reference as ref
from nsa_kernels.modes.extend_reference import extend_reference
from nsa_kernels.peers import sglang_backend as sb

import torch


def _prefix(values):
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(values, 0)])


def _arange(n):
    return torch.arange(n, dtype=torch.int64)


def expected_metadata(config, req_to_token, case):
    """The reference's ``forward_metadata`` tensors for ``case`` (int32, host)."""
    table = req_to_token.cpu()
    seq, req, bs, next_n = case.seq_lens, case.req_pool_indices, case.bs, config.next_n
    topk, page = config.topk, config.page_size
    mode = case.mode.removeprefix("eager_")
    if mode == "extend":
        return _expected_extend(config, table, case)
    # the page tables only over the live columns: the comparison reads no further
    width = int(case.row_lengths.max())
    if mode == "decode":
        out = ref.decode_reference(seq, req, table, bs, width, topk, page)
        out["seqlens_expanded"] = out["cache_seqlens"]
        rows = bs
    elif mode == "target_verify":
        out = ref.target_verify_reference(seq, req, table, bs, width, topk, page, next_n)
        out.pop("paged_mqa_ctx_lens_2d")
        rows = bs * next_n
    else:
        qo = torch.full((bs,), next_n, dtype=torch.int64)
        # a padding row (kv = 1 < next_n) expands to max(kv - next_n + 1 + j, 0), as SGLang
        out = ref.draft_extend_reference(seq, qo, req, table, bs, bs * next_n, width, topk,
                                         page, next_n, static_extend_len=True)
        rows = bs * next_n
    q_rows = bs if mode == "decode" else rows
    expected = {
        "cache_seqlens_int32": out["cache_seqlens"], "cu_seqlens_k": out["cu_seqlens_k"],
        "cu_seqlens_q": _arange(q_rows + 1), "page_table_1": out["page_table_1"],
        "real_page_table": out["real_page_table"],
        "dsa_cache_seqlens_int32": out["dsa_cache_seqlens"],
        "dsa_cu_seqlens_k": out["dsa_cu_seqlens_k"], "dsa_cu_seqlens_q": _arange(rows + 1),
        "dsa_seqlens_expanded": out["seqlens_expanded"]}
    if case.mode.startswith("eager_"):
        expected["indexer_seq_lens"] = seq
        expected["indexer_seq_lens_cpu"] = seq
    if not config.wide_table:
        expected.pop("page_table_1")
    if _cuda_path():
        expected["paged_mqa_ctx_lens_2d"] = _ctx_lens_2d(mode, out, bs, next_n)
    return _typed(expected)


def _cuda_path():
    from sglang.srt.utils import is_cuda
    return is_cuda()


def _ctx_lens_2d(mode, out, bs, next_n):
    """DeepGEMM's context lengths as SGLang's _build_paged_mqa_schedule_2d_ctx_lens shapes them:
    one row per query token, except target_verify on SM100 ([bs, next_n] of the kv lengths)."""
    from sglang.srt.environ import envs
    from sglang.srt.runtime_context import get_platform
    if (mode == "target_verify" and next_n >= 2 and get_platform().is_sm100
            and not envs.SGLANG_FP8_PAGED_MQA_LOGITS_TORCH.get()):
        return out["cache_seqlens"][:, None].expand(bs, next_n).clone()
    return out["seqlens_expanded"][:, None]


def _expected_extend(config, table, case):
    seq, req, ext = case.seq_lens, case.req_pool_indices, case.extend_seq_lens
    out = extend_reference(seq, ext, req, table, config.topk)
    width = int(seq.max())
    pages = ref._page_tables(req, table, torch.arange(seq.numel()), seq, width,
                             config.page_size)
    has_prefix = bool((seq > ext).any())
    expected = {
        "cache_seqlens_int32": seq, "cu_seqlens_k": out["cu_seqlens_k"],
        "cu_seqlens_q": _prefix(ext) if has_prefix else out["cu_seqlens_k"],
        "page_table_1": pages["page_table_1"], "real_page_table": pages["real_page_table"],
        "dsa_cache_seqlens_int32": out["dsa_cache_seqlens"],
        "dsa_cu_seqlens_k": out["dsa_cu_seqlens_k"],
        "dsa_cu_seqlens_q": _arange(out["seqlens_expanded"].numel() + 1),
        "dsa_seqlens_expanded": out["seqlens_expanded"],
        "indexer_k_start_end.0": out["topk_indices_offset"],
        "indexer_k_start_end.1": out["indexer_ke"],
        "token_to_batch_idx": out["token_to_batch_idx"],
        "indexer_seq_lens": seq, "indexer_seq_lens_cpu": seq}
    if config.kv_dtype == "fp8":  # the RAGGED transform's extras
        expected["topk_indices_offset"] = out["topk_indices_offset"]
        if has_prefix:
            expected["page_table_1_flattened"] = out["page_table_1_flattened"]
    return _typed(expected)


def _typed(expected):
    keep64 = ("indexer_seq_lens", "indexer_seq_lens_cpu")  # SGLang's inputs, passed through
    return {k: v.to(torch.int64 if k in keep64 else torch.int32) for k, v in expected.items()}


def check(harness, result):
    """Compare a harness result with the reference; ``MetadataMismatch`` on a difference."""
    got = {k: v.cpu() for k, v in result.tensors.items()}
    return sb.compare_metadata(got, expected_metadata(harness.config, harness.req_to_token,
                                                      result.case), result.case)


# --- the self-check ------------------------------------------------------------------------

def _batch(bs, low, high, rows, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(low, high + 1, (bs,), generator=g)
    req = torch.randperm(rows, generator=g)[:bs]
    return seq, req


def cases(quick, width=None):
    """(config kwargs, mode, batch sizes as (raw_bs, graph_bs)) of the self-check."""
    width = width or (2048 if quick else 131072)
    max_bs = 8 if quick else 64
    sizes = [(1, 1), (3, 8), (8, 8)] if quick else [(1, 1), (3, 8), (32, 32), (50, 64)]
    for wide in (True, False):
        yield dict(max_bs=max_bs, width=width, wide_table=wide), "decode", sizes
    for next_n in (2, 4) if quick else (2, 4, 6):
        for mode in ("target_verify", "draft_extend"):
            yield dict(max_bs=max_bs, width=width, next_n=next_n), mode, sizes
            yield dict(max_bs=max_bs, width=width, next_n=next_n), f"eager_{mode}", sizes
    yield dict(max_bs=max_bs, width=width), "eager_decode", sizes
    for kv in ("bf16", "fp8"):
        yield dict(max_bs=max_bs, width=width if quick else 8192, kv_dtype=kv), "extend", sizes


def run_case(harness, mode, raw_bs, graph_bs, seed):
    cfg = harness.config
    low = max(cfg.next_n, 1)
    high = cfg.width - (cfg.next_n if mode.endswith("target_verify") else 0)
    seq, req = _batch(raw_bs, low, high, harness.req_to_token.shape[0], seed)
    if mode == "extend":
        g = torch.Generator().manual_seed(seed + 1)
        seq = seq.clamp(max=2048 if cfg.device == "cpu" else cfg.width)
        ext = (torch.rand(raw_bs, generator=g) * seq).long().clamp(min=1)
        if seed % 2:
            ext = seq.clone()  # no cached prefix
        return harness.extend(seq, ext, req)
    if mode.startswith("eager_"):
        return harness.eager(mode.removeprefix("eager_"), seq, req)
    return getattr(harness, mode)(seq, req, graph_bs=graph_bs)


FUSED = ("_fused_decode_metadata", "_fused_verify_metadata", "_fused_draft_extend_metadata")


def fused_kernels_called(harness, mode, raw_bs, graph_bs):
    """Which of the backend's ``_fused_*`` kernels one more call of ``mode`` runs (untimed)."""
    backend, seen, saved = harness.backend, [], {}
    for name in FUSED:
        real = saved[name] = getattr(backend, name)

        def counted(*args, _name=name, _real=real, **kwargs):
            seen.append(_name)
            return _real(*args, **kwargs)
        setattr(backend, name, counted)
    calls = {k: list(v) for k, v in harness.calls.items()}
    try:
        run_case(harness, mode, raw_bs, graph_bs, seed=0)
    finally:
        for name, real in saved.items():
            setattr(backend, name, real)
        harness.calls = calls
    return sorted(set(seen))


def time_methods(bs=32, width=8192, next_n=3, reps=20, device=None, out=sys.stdout):
    """Host time per call of each method (median of ``reps``, device idle before each call, no
    sync after: what the step costs the host). A fresh batch of random lengths per call."""
    timings = {}
    extra = {"device": device} if device else {}
    plain = sb.SGLangHarness(sb.HarnessConfig(max_bs=bs, width=width, **extra))
    spec = sb.SGLangHarness(sb.HarnessConfig(max_bs=bs, width=width, next_n=next_n, **extra))
    runs = [(plain, "decode"), (spec, "target_verify"), (spec, "draft_extend"),
            (plain, "eager_decode"), (spec, "eager_target_verify"),
            (spec, "eager_draft_extend"), (plain, "extend")]
    for harness, mode in runs:
        seconds = []
        for rep in range(reps + 1):
            seq, req, ext = _conformance_inputs(harness, mode, bs, rep)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            before = len(harness.calls.get(mode, []))
            _step(harness, mode, seq, req, ext, bs)
            seconds.extend(harness.calls[mode][before:])
        timings[mode] = round(statistics.median(seconds[1:]) * 1e6, 1)
        print(f"  {mode}: {timings[mode]} us host time per call (bs {bs}, width {width}"
              f"{'' if mode.endswith('decode') or mode == 'extend' else f', next_n {next_n}'})",
              file=out, flush=True)
    return timings


def selfcheck(quick=True, seeds=2, budget_s=None, device=None, width=None, timing=True,
              out=sys.stdout):
    """Every case of ``cases`` against the reference; stops starting new configurations after
    ``budget_s`` seconds (the report says how many ran)."""
    loaded = sb.load()
    from sglang.srt.utils import is_cuda
    fused = is_cuda()
    report = {"import_seconds": round(loaded.seconds, 2), "sglang_modules": len(loaded.modules),
              "standins": loaded.standins, "device": device or sb.HarnessConfig().device,
              "path": "fused (is_cuda)" if fused else "torch fallback", "cases": [],
              "per_call_us": {}, "fused_kernels": {}, "skipped": []}
    print(f"SGLang {sb.VERSION} from {loaded.root}: {len(loaded.modules)} modules in "
          f"{loaded.seconds:.1f} s, {len(loaded.standins)} stand-ins; path: {report['path']}",
          file=out, flush=True)
    equal = total = 0
    calls = {}
    start = time.perf_counter()
    for kwargs, mode, sizes in cases(quick, width):
        label = f"{mode} {kwargs}"
        if budget_s is not None and time.perf_counter() - start > budget_s:
            report["skipped"].append(f"{label}: time budget ({budget_s} s) spent")
            continue
        try:
            harness = sb.SGLangHarness(sb.HarnessConfig(
                **kwargs, **({"device": device} if device else {})))
        except sb.HarnessUnavailable as e:
            report["skipped"].append(f"{label}: {e}")
            print(f"SKIP {label}: {e}", file=out, flush=True)
            continue
        counts = [0, 0]
        for raw_bs, graph_bs in sizes:
            for seed in range(seeds):
                total += 1
                name = f"{label} bs={raw_bs}/{graph_bs} seed={seed}"
                try:
                    check(harness, run_case(harness, mode, raw_bs, graph_bs, seed))
                    equal += 1
                    counts[0] += 1
                    status = "EQUAL"
                except sb.MetadataMismatch as e:
                    status = f"DIFF {e}"
                counts[1] += 1
                report["cases"].append({"case": name, "status": status})
                if status != "EQUAL":
                    print(f"{status}: {name}", file=out, flush=True)
        kernels = fused_kernels_called(harness, mode, *sizes[-1])
        report["fused_kernels"][label] = kernels
        print(f"{label}: {counts[0]}/{counts[1]} equal; fused kernels: "
              f"{', '.join(kernels) or 'none'}", file=out, flush=True)
        for method, seconds in harness.calls.items():
            calls.setdefault(method, []).extend(seconds[1:] or seconds)  # first call warms up
    for method, seconds in sorted(calls.items()):
        report["per_call_us"][method] = round(statistics.median(seconds) * 1e6, 1)
        print(f"  {method}: {report['per_call_us'][method]} us host time per call (median of "
              f"{len(seconds)})", file=out)
    report["equal"], report["total"] = equal, total
    if timing:
        report["host_us"] = time_methods(device=device, **({} if not quick else
                                                            {"bs": 8, "width": 2048, "reps": 3}))
    print(f"SUMMARY: {equal} EQUAL of {total} cases ({report['path']}), "
          f"{len(report['skipped'])} configurations skipped", file=out, flush=True)
    return report


# --- the lengths: boundary values first ---------------------------------------------------

BOUNDARY = (1, 63, 64, 65, 2047, 2048, 2049, 65530, 65531, 65535, 65536, 65537, 65539, 100001)


def boundary_lengths(bs, width, low, seed):
    """``bs`` lengths in [low, width]: the boundary values that fit, then random ones."""
    fits = [n for n in BOUNDARY if low <= n <= width] + [width]
    g = torch.Generator().manual_seed(seed)
    picked = [fits[(i + seed) % len(fits)] for i in range(min(bs, len(fits)))]
    rest = torch.randint(low, width + 1, (bs - len(picked),), generator=g).tolist()
    return torch.tensor(picked + rest, dtype=torch.int64)


def _conformance_inputs(harness, mode, raw_bs, seed):
    """``(seq_lens, req_pool_indices, extend_seq_lens or None)`` of one timed step."""
    cfg = harness.config
    low = max(cfg.next_n, 1)
    high = cfg.width - (cfg.next_n if mode.endswith("target_verify") else 0)
    seq = boundary_lengths(raw_bs, high, low, seed)
    g = torch.Generator().manual_seed(seed)
    req = torch.randperm(harness.req_to_token.shape[0], generator=g)[:raw_bs]
    ext = None
    if mode == "extend":
        ext = seq.clone() if seed % 2 else (torch.rand(raw_bs, generator=g) * seq).long().clamp(
            min=1)
    return seq, req, ext


def _step(harness, mode, seq, req, ext, graph_bs):
    if mode == "extend":
        return harness.extend(seq, ext, req)
    if mode.startswith("eager_"):
        return harness.eager(mode.removeprefix("eager_"), seq, req)
    return getattr(harness, mode)(seq, req, graph_bs=graph_bs)


def _load_install(spec):
    module, _, name = spec.partition(":")
    import importlib
    return getattr(importlib.import_module(module), name or "install")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="production sizes (widths 131072, bs up to 64; with --conformance "
                        "its GPU grid): for a GPU")
    parser.add_argument("--seeds", type=int, default=2,
                        help="seeds per self-check case (the conformance grid seeds each case)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new configuration after this many seconds")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--conformance", nargs="?", const="nsa_kernels.integrations.sglang:install",
                        metavar="MODULE:FUNC", help="instead, run the conformance grid "
                        "(nsa_kernels.integrations.sglang_conformance; --full: the GPU grid) as "
                        "shipped and with this install applied (default: the workbook's)")
    args = parser.parse_args(argv)
    if args.conformance:
        return conformance(args.conformance, full=args.full, budget_s=args.budget_s,
                           json_path=args.json)
    report = selfcheck(quick=not args.full, seeds=args.seeds, budget_s=args.budget_s)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0 if report["equal"] == report["total"] else 1


def conformance(install, full=False, budget_s=None, json_path=None, modes=None):
    """The one conformance sweep, ``python -m nsa_kernels.integrations.sglang --conformance``'s
    (``sglang_cli.conformance``), with ``install`` (a callable or ``"module:function"``)
    applied to the twins; its exit status (0: every case equal)."""
    import nsa_kernels  # noqa: F401  (before triton: the interpreter switch on a CPU)
    from nsa_kernels.integrations import sglang_cli
    if isinstance(install, str):
        install = _load_install(install)
    sb.load()
    out = {}
    status = sglang_cli.conformance(full, modes, out, budget_s, install)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(out, handle, indent=1, default=str)
    return status


if __name__ == "__main__":
    sys.exit(main())
