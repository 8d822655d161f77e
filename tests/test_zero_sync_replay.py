"""``launch_zero_sync`` captured once in a CUDA graph follows new lengths on every replay.

The per-call entry point keeps its bound launcher in a plan cache keyed on the buffers'
metadata, so a graph captured around one call replays that launcher: every replay, with the
inputs rewritten in place (N changing, zero-length requests appearing), must equal the
reference of the inputs at that time, write nothing past N and report ``[N, 0]``.
"""
import nsa_kernels as nk
from nsa_kernels.bench import harness, workloads
from nsa_kernels.stages import stage5_zero_sync as stage5

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not harness.ON_GPU, reason="CUDA graphs need a GPU")]
POISON = -7


def test_launch_zero_sync_replay_follows_changing_lengths():
    bs = 64
    workload = workloads.draft_extend(bs, seed=0)
    out_expanded, out_cache = workload.buffers(poison=POISON)
    status = torch.zeros(2, dtype=torch.int32, device="cuda")
    ext_buf, seq_buf = workload.extend_seq_lens.clone(), workload.seq_lens.clone()
    graph = harness.capture_graph(
        lambda: stage5.launch_zero_sync(ext_buf, seq_buf, 2048, out_expanded, out_cache,
                                        status=status), 1)
    g = torch.Generator().manual_seed(7)
    for trial in range(6):
        ext = torch.randint(0, 5, (bs,), generator=g)
        if trial % 2:
            ext[torch.randint(0, bs, (16,), generator=g)] = 0  # zero-length requests appear
        seq = ext + torch.randint(0, 8000, (bs,), generator=g)
        ext_buf.copy_(ext)
        seq_buf.copy_(seq)
        out_expanded.fill_(POISON)
        out_cache.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        want_expanded, want_cache = nk.reference(ext.int(), seq.int(), 2048)
        n = want_expanded.shape[0]
        assert torch.equal(out_expanded[:n].cpu(), want_expanded), f"replay {trial}"
        assert torch.equal(out_cache[:n].cpu(), want_cache), f"replay {trial}"
        assert bool((out_expanded[n:] == POISON).all()), f"replay {trial} wrote past N"
        assert status.tolist() == [n, 0], f"replay {trial}"
