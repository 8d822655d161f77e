"""Stage 0: SGLang's original code path, kept faithful as the baseline.

Two ``.tolist()`` host syncs, one ``torch.arange`` per request, ``torch.cat``, the clamp,
then ``.copy_`` into the pre-allocated metadata buffers.
"""
import torch

from ..validation import check_static, check_topk, validate


def fill_python_baseline(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                         out_nsa_cache_seqlens):
    nsa_index_topk = check_topk(nsa_index_topk)  # a numpy integer becomes a Python int
    check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens)
    extend_seq_lens_cpu = extend_seq_lens.tolist()  # host sync 1
    seq_lens_cpu = seq_lens.tolist()  # host sync 2
    n_tokens = validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                        out_nsa_cache_seqlens, lengths=(extend_seq_lens_cpu, seq_lens_cpu))
    if n_tokens == 0:  # torch.cat of nothing would fail; SGLang never calls with N = 0
        return 0
    seqlens_expanded = expand_on_host(extend_seq_lens_cpu, seq_lens_cpu, extend_seq_lens.device)
    nsa_cache_seqlens = torch.clamp(seqlens_expanded, max=nsa_index_topk)
    copy_prefix(out_seqlens_expanded, seqlens_expanded)
    copy_prefix(out_nsa_cache_seqlens, nsa_cache_seqlens)
    return n_tokens


def expand_on_host(extend_seq_lens_cpu, seq_lens_cpu, device):
    """SGLang's original expansion: one ``torch.arange`` per request from host lists, then
    ``torch.cat`` (which fails on an empty list: callers return early at N = 0)."""
    return torch.cat([
        torch.arange(kv_len - qo_len + 1, kv_len + 1, dtype=torch.int32, device=device)
        for qo_len, kv_len in zip(extend_seq_lens_cpu, seq_lens_cpu)
    ])


def copy_prefix(out, values):
    """``out[:len(values)] = values``, into inference tensors too (as the kernels write them)."""
    with torch.inference_mode(out.is_inference()):
        out[:values.shape[0]].copy_(values)
