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
from .sglang_conformance import Case, lengths_for

IN_GRAPH_MODES = ("decode", "target_verify", "draft_extend")


def _view(fm, bs, seq, pool):
    return SimpleNamespace(batch_size=bs, forward_mode=fm, seq_lens=seq, seq_lens_cpu=None,
                           req_pool_indices=pool, spec_info=None, out_cache_loc=None,
                           actual_forward_mode=fm)


def check_mode(sb, mode, bs, width=8192, next_n=3, replays=3):
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
    fill = backend.get_cuda_graph_seq_len_fill_value()
    static_seq = torch.full((bs,), fill, dtype=torch.int64, device=device)
    static_pool = torch.zeros(bs, dtype=torch.int64, device=device)
    view = _view(fm, bs, static_seq, static_pool)
    backend.init_forward_metadata_out_graph(_view(fm, bs, static_seq.clone(),
                                                  static_pool.clone()), in_capture=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # compile and bind before capture, as the runner's warm-up does
            backend.init_forward_metadata_in_graph(view)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        backend.init_forward_metadata_in_graph(view)
    equal = 0
    extra = next_n if mode == "target_verify" else 0
    for k in range(replays):
        raw_bs = bs if k == 0 or bs == 1 else max(1, bs - k)
        seq = torch.tensor(lengths_for(Case(mode, bs, raw_bs, width, next_n=next_n, seed=k),
                                       extra))
        pool = torch.randperm(bs)[:raw_bs]
        expected = getattr(shipped, mode)(seq, pool, graph_bs=bs)
        static_seq.fill_(fill)
        static_pool.zero_()
        static_seq[:raw_bs] = seq.to(device)
        static_pool[:raw_bs] = pool.to(device)
        graph.replay()
        backend.init_forward_metadata_out_graph(view)
        torch.cuda.synchronize()
        got = sb.MetadataResult(tensors=sb.metadata_tensors(backend.forward_metadata),
                                case=expected.case)
        sb.compare_metadata(expected, got)
        equal += 1
    return equal


def check_in_graph(sizes=(1, 8, 32, 128), modes=IN_GRAPH_MODES, replays=3):
    """Rows ``{"mode", "bs", "replays", "equal"}``; raises on a mismatch (it names the tensor)."""
    from nsa_kernels.peers import sglang_backend as sb
    if not torch.cuda.is_available():
        raise RuntimeError("the in-graph mode needs a GPU: CUDA graphs capture device launches")
    return [dict(mode=mode, bs=bs, replays=replays, equal=check_mode(sb, mode, bs,
                                                                     replays=replays))
            for mode in modes for bs in sizes]
