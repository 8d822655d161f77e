"""Host time per step, SGLang's method as shipped against the installed workbook (GPU only).

Each side is SGLang's own per-step entry point called as its runners call it: the graph modes
through ``init_forward_metadata_out_graph`` on the runner's static buffers (a replay's
metadata), ``mtp_decode`` through the multi-step backend's, ``extend`` and ``eager_decode``
through ``init_forward_metadata``. Steps run back to back without a synchronize (what sits on
the replay's critical path), interleaved with the empty-launch floors (``bench.floors``), in
one process; medians. ``nsa_in_graph`` is the installed backend in in-graph mode: its replay
step only re-points ``forward_metadata`` (the metadata launches are inside the model's graph).
Before timing, each point's metadata is compared once (``compare_metadata``). DeepGEMM's
schedule is the harness's stand-in on both sides (``peers.sglang_standins``: an allocation and
a ``copy_``, about half of the installed step's host time at bs 32 on an H200), and the top-k
plan as the harness configures it: this is the step with the launches that stay SGLang's;
``bench.step`` separates the part the workbook replaces (``nsa_installed``) from that.
"""
from types import SimpleNamespace

import torch

from ..bench import floors
from . import sglang as integration
from .sglang_conformance import Case, MultiStepPair, lengths_for, run_mtp_case

HOST_MODES = ("decode", "decode_narrow", "target_verify", "draft_extend", "mtp_decode",
              "eager_decode", "extend")
GRAPH_CALLS = {"decode": "decode", "decode_narrow": "decode", "target_verify": "target_verify",
               "draft_extend": "draft_extend"}


def _graph_view(sb, harness, mode, seq, pool, bs):
    """Capture ``bs`` and replay once through the harness (its result is returned, for the
    equality check), then the runner-like view whose static buffers every timed step reuses."""
    result = getattr(harness, GRAPH_CALLS[mode])(seq, pool, graph_bs=bs)
    fm = sb.load().forward_mode
    forward_mode = {"decode": fm.DECODE, "target_verify": fm.TARGET_VERIFY,
                    "draft_extend": fm.DRAFT_EXTEND_V2}[GRAPH_CALLS[mode]]
    static_seq = seq.to(harness.device, torch.int64)
    static_req = pool.to(harness.device, torch.int64)
    view = SimpleNamespace(batch_size=bs, forward_mode=forward_mode, seq_lens=static_seq,
                           seq_lens_cpu=static_seq.cpu(), req_pool_indices=static_req,
                           spec_info=None, out_cache_loc=None, actual_forward_mode=forward_mode)
    return result, view


def _eager_batch(sb, harness, mode, seq, pool, qo=None):
    fm = sb.load().forward_mode
    seq_d, pool_d = seq.to(harness.device), pool.to(harness.device)
    batch = SimpleNamespace(batch_size=seq.numel(), seq_lens=seq_d, seq_lens_cpu=seq,
                            seq_lens_sum=int(seq.sum()), req_pool_indices=pool_d,
                            spec_info=None, global_num_tokens_cpu=None, attn_cp_metadata=None,
                            extend_seq_lens_cpu=None)
    if mode == "extend":
        batch.forward_mode = fm.EXTEND
        batch.extend_seq_lens = qo.to(harness.device, torch.int32)
        batch.extend_seq_lens_cpu = qo.tolist()
        batch.extend_prefix_lens_cpu = (seq - qo).tolist()
        batch.extend_num_tokens = int(qo.sum())
    else:
        batch.forward_mode = fm.DECODE
    return batch


def point_entries(sb, mode, bs, width, next_n=2, steps=3):
    """``[(stage, fn)]`` for one point: SGLang's step, the installed one (and in-graph), after
    checking once that both sides' ``forward_metadata`` are equal."""
    case = Case(mode, bs, bs, width, next_n=next_n, steps=steps)
    pool = torch.randperm(bs)
    seq = torch.tensor(lengths_for(case, next_n if mode == "target_verify" else 0))
    if mode == "mtp_decode":
        pair = MultiStepPair(sb, case.config(sb), steps)
        run_mtp_case(sb, pair, case)
        out = []
        for stage, side in zip(("sglang_step", "nsa_installed"), pair.sides):
            device = side.harnesses[0].device
            view = SimpleNamespace(batch_size=bs, forward_mode=sb.load().forward_mode.DECODE,
                                   seq_lens=seq.to(device), seq_lens_cpu=seq,
                                   seq_lens_sum=None, req_pool_indices=pool.to(device),
                                   spec_info=None)
            out.append((stage, _bound(side.multi.init_forward_metadata_out_graph, view)))
        return out
    shipped = sb.SGLangHarness(case.config(sb))
    installed = sb.SGLangHarness(case.config(sb))
    integration.install(installed.backend)
    out, results = [], []
    if mode in GRAPH_CALLS:
        for stage, h in (("sglang_step", shipped), ("nsa_installed", installed)):
            result, view = _graph_view(sb, h, mode, seq, pool, bs)
            results.append(result)
            out.append((stage, _bound(h.backend.init_forward_metadata_out_graph, view)))
        in_graph = sb.SGLangHarness(case.config(sb))
        _, view = _graph_view(sb, in_graph, mode, seq, pool, bs)
        integration.install(in_graph.backend, in_graph=True)
        out.append(("nsa_in_graph", _bound(in_graph.backend.init_forward_metadata_out_graph,
                                           view)))
    else:
        qo = torch.clamp(seq // 2, min=1) if mode == "extend" else None
        for stage, h in (("sglang_step", shipped), ("nsa_installed", installed)):
            results.append(h.extend(seq, qo, pool) if mode == "extend" else
                           h.eager("decode", seq, pool))
            batch = _eager_batch(sb, h, mode, seq, pool, qo)
            out.append((stage, _bound(h.backend.init_forward_metadata, batch)))
    sb.compare_metadata(results[0], results[1])
    return out


def _bound(method, arg):
    return lambda: method(arg)


def measure(modes=HOST_MODES, sizes=(1, 32, 128), width=8192, rounds=10, calls=50):
    """Records ``{"stage", "workload", "bs", "width", "host_us"}`` per point, floors included."""
    from nsa_kernels.peers import sglang_backend as sb
    if not torch.cuda.is_available():
        raise RuntimeError("the host-cost probe needs a GPU (on a CPU the steps run under "
                           "Triton's interpreter: their times say nothing)")
    records = []
    for mode in modes:
        for bs in sizes:
            empties, _ = floors.floor_entries()
            entries = [e for e in empties if e["name"] in floors.EMPTY_LAUNCHES]
            entries += [dict(name=stage, fn=fn) for stage, fn in point_entries(sb, mode, bs,
                                                                               width)]
            host = floors.host_times(entries, rounds=rounds, calls=calls)
            records += [dict(stage=name, workload=mode, bs=bs, width=width, host_us=us,
                             path="step") for name, us in host.items()]
    return records


def profile(mode="decode", bs=32, width=8192, stage="nsa_installed", calls=3000, top=25):
    """Where one side's host time per step goes: ``calls`` steps back to back under cProfile
    (syncing every 200 so the launch queue never blocks the host); the ``top`` functions by
    own time, as text. cProfile's own cost inflates every call alike: read shares, not µs."""
    import cProfile
    import io
    import pstats

    from nsa_kernels.peers import sglang_backend as sb
    if not torch.cuda.is_available():
        raise RuntimeError("the host profile needs a GPU")
    fn = dict(point_entries(sb, mode, bs, width))[stage]
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        fn()
        if i % 200 == 199:
            torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return f"{stage} {mode} bs {bs} width {width}, {calls} steps\n" + text.getvalue()
