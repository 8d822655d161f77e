"""The in-graph mode's proof (GPU): the step's metadata captured in a CUDA graph, replayed.

For each mode and bs: a backend installed with ``in_graph=True`` is captured as SGLang's runner
captures it (``init_forward_metadata_out_graph(..., in_capture=True)`` builds the static
buffers, warm-up runs of ``init_forward_metadata_in_graph`` on the capture stream, then the
capture), and the graph is replayed on several input sets written into the runner's static
buffers; after each replay ``init_forward_metadata_out_graph`` re-points ``forward_metadata``
(no launch) and every tensor is compared with SGLang's shipped ``_apply_cuda_graph_metadata``
on a twin backend fed the same inputs. The schedule (DeepGEMM's, a stand-in without DeepGEMM)
and the top-k plan are inside the same graph; a capture that fails is reported, not hidden.
"""
from types import SimpleNamespace

import torch

from . import sglang as integration
from .sglang_conformance import Case, MultiStepPair, lengths_for

IN_GRAPH_MODES = ("decode", "target_verify", "draft_extend")


def _view(fm, bs, seq, pool):
    return SimpleNamespace(batch_size=bs, forward_mode=fm, seq_lens=seq, seq_lens_cpu=None,
                           req_pool_indices=pool, spec_info=None, out_cache_loc=None,
                           actual_forward_mode=fm)


def check_mode(sb, mode, bs, width=8192, next_n=3, replays=3, graphs=True):
    """Capture ``mode`` at ``bs`` in in-graph mode, replay ``replays`` input sets (the last two
    padded, raw_bs < bs, when bs > 1); returns how many replays were equal."""
    case = Case(mode, bs, bs, width, next_n=next_n)
    shipped = sb.SGLangHarness(case.config(sb))
    captured = sb.SGLangHarness(case.config(sb))
    backend = integration.install(captured.backend, in_graph=True)
    fms = sb.load().forward_mode
    fm = {"decode": fms.DECODE, "target_verify": fms.TARGET_VERIFY,
          "draft_extend": fms.DRAFT_EXTEND_V2}[mode]
    device = captured.device
    static_seq = torch.full((bs,), backend.get_cuda_graph_seq_len_fill_value(),
                            dtype=torch.int64, device=device)
    static_pool = torch.zeros(bs, dtype=torch.int64, device=device)
    view = _view(fm, bs, static_seq, static_pool)
    backend.init_forward_metadata_out_graph(_view(fm, bs, static_seq.clone(),
                                                  static_pool.clone()), in_capture=True)
    replay = _capture(lambda: backend.init_forward_metadata_in_graph(view), graphs)
    equal = 0
    extra = next_n if mode == "target_verify" else 0
    for k in range(replays):
        raw_bs = bs if k == 0 or bs == 1 else max(1, bs - k)
        seq = torch.tensor(lengths_for(Case(mode, bs, raw_bs, width, next_n=next_n, seed=k),
                                       extra))
        pool = torch.randperm(bs)[:raw_bs]
        expected = getattr(shipped, mode)(seq, pool, graph_bs=bs)
        # the runner's static buffers hold what SGLang's side saw: padding rows included
        rows = expected.case.row_lengths
        static_seq.copy_(rows[::rows.numel() // bs].to(device) - extra)
        static_pool.zero_()
        static_pool[:raw_bs] = pool.to(device)
        replay()
        backend.init_forward_metadata_out_graph(view)
        if graphs:
            torch.cuda.synchronize()
        got = sb.MetadataResult(tensors=sb.metadata_tensors(backend.forward_metadata),
                                case=expected.case)
        sb.compare_metadata(expected, got)
        equal += 1
    return equal


def _capture(run, graphs):
    """Warm ``run`` up on a side stream (compile, bind) and capture it there, as the runner
    does; returns what replays it. ``graphs=False`` (a CPU) returns ``run`` itself: the same
    methods and buffers, executed where a replay would execute them, without the graph."""
    if not graphs:
        run()
        return run
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        run()
    return graph.replay


def check_mtp(sb, bs, steps=4, width=8192, replays=3, graphs=True):
    """MTP draft decode in in-graph mode: every draft backend's metadata in one captured graph,
    replayed on new inputs, against SGLang's multi-step replay; returns the equal replays."""
    case = Case("mtp_decode", bs, bs, width, steps=steps)
    pair = MultiStepPair(sb, case.config(sb), steps, in_graph=True)
    shipped, installed = pair.sides
    fm = sb.load().forward_mode.DECODE
    device = installed.harnesses[0].device
    static_seq = torch.ones(bs, dtype=torch.int64, device=device)
    static_pool = torch.zeros(bs, dtype=torch.int64, device=device)
    view = SimpleNamespace(batch_size=bs, forward_mode=fm, seq_lens=static_seq,
                           seq_lens_cpu=None, seq_lens_sum=None, req_pool_indices=static_pool,
                           spec_info=None)
    installed.multi.init_forward_metadata_out_graph(
        SimpleNamespace(**{**vars(view), "seq_lens": static_seq.clone(),
                           "req_pool_indices": static_pool.clone()}), in_capture=True)
    installed.captured.add(bs)
    replay = _capture(lambda: installed.multi.init_forward_metadata_in_graph(view), graphs)
    equal = 0
    for k in range(replays):
        raw_bs = bs if k == 0 or bs == 1 else max(1, bs - k)
        seq = torch.tensor(lengths_for(Case("mtp_decode", bs, raw_bs, width, seed=k), 0))
        pool = torch.randperm(bs)[:raw_bs]
        expected = pair.step(shipped, seq, pool, bs)
        static_seq.fill_(1)
        static_pool.zero_()
        static_seq[:raw_bs] = seq.to(device)
        static_pool[:raw_bs] = pool.to(device)
        replay()
        installed.multi.init_forward_metadata_out_graph(view)
        if graphs:
            torch.cuda.synchronize()
        for j, (backend, want) in enumerate(zip(installed.multi.attn_backends, expected)):
            got = sb.MetadataResult(tensors=sb.metadata_tensors(backend.forward_metadata),
                                    case=want.case)
            try:
                sb.compare_metadata(want, got)
            except AssertionError as exc:
                raise AssertionError(f"draft backend {j}, replay {k}: {exc}") from None
        equal += 1
    return equal


def check_in_graph(sizes=(1, 8, 32, 128), modes=IN_GRAPH_MODES, replays=3, width=8192,
                   graphs=True):
    """Rows ``{"mode", "bs", "replays", "equal"}``; raises on a mismatch (it names the tensor).
    ``graphs=False`` runs the in-graph methods without capturing them (a CPU's check of
    everything but the capture)."""
    from nsa_kernels.peers import sglang_backend as sb
    if graphs and not torch.cuda.is_available():
        raise RuntimeError("the in-graph mode needs a GPU: CUDA graphs capture device launches")
    rows = [dict(mode=mode, bs=bs, replays=replays,
                 equal=check_mode(sb, mode, bs, width, replays=replays, graphs=graphs))
            for mode in modes for bs in sizes]
    rows += [dict(mode="mtp_decode", bs=bs, replays=replays,
                  equal=check_mtp(sb, bs, width=width, replays=replays, graphs=graphs))
             for bs in sizes]
    return rows
