"""The peer a user would write instead of a kernel: vectorised PyTorch, no host sync.

A cumsum gives each request's end, ``torch.searchsorted`` finds each token's request, a gather
reads its lengths. The work is sized by the buffers' capacity (never N), and entries past N
keep their old values through ``torch.where``, so it is graph-capturable; ``torch.compile``
fuses it into a few kernels.
"""
import torch


def fill_torch_vectorized(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                          out_nsa_cache_seqlens):
    if extend_seq_lens.shape[0] == 0:
        return
    capacity = out_seqlens_expanded.shape[0]
    ends = torch.cumsum(extend_seq_lens.to(torch.int64), 0)
    token = torch.arange(capacity, device=extend_seq_lens.device)
    request = torch.searchsorted(ends, token, right=True)
    live = request < extend_seq_lens.shape[0]
    request = request.clamp(max=extend_seq_lens.shape[0] - 1)
    value = (seq_lens.to(torch.int64)[request] - ends[request] + 1 + token).to(torch.int32)
    out_seqlens_expanded.copy_(torch.where(live, value, out_seqlens_expanded))
    out_nsa_cache_seqlens.copy_(
        torch.where(live, value.clamp(max=nsa_index_topk), out_nsa_cache_seqlens))


_compiled = None


def fill_torch_compiled(*args):
    """``fill_torch_vectorized`` under ``torch.compile`` (compiled on first use)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(fill_torch_vectorized, dynamic=False)
    return _compiled(*args)
