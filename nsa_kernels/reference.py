"""The oracle: plain, obviously correct PyTorch on the host. Everything else is compared to it."""
import torch

from .validation import check_lengths, first_invalid_request


def reference(extend_seq_lens, seq_lens, nsa_index_topk):
    """Return ``(seqlens_expanded, nsa_cache_seqlens)`` as int32 tensors on the inputs' device.

    For request i with ``qo = extend_seq_lens[i]`` and ``kv = seq_lens[i]`` emit
    ``kv - qo + 1, ..., kv``; concatenate in request order; clamp a copy at ``nsa_index_topk``.
    """
    check_lengths(extend_seq_lens, seq_lens, nsa_index_topk)
    ext = [int(v) for v in extend_seq_lens.tolist()]
    seq = [int(v) for v in seq_lens.tolist()]
    first_invalid_request(ext, seq, raise_error=True)
    expanded = []
    for qo, kv in zip(ext, seq):
        expanded.extend(range(kv - qo + 1, kv + 1))
    seqlens_expanded = torch.tensor(expanded, dtype=torch.int32)
    nsa_cache_seqlens = torch.tensor([min(v, nsa_index_topk) for v in expanded], dtype=torch.int32)
    device = extend_seq_lens.device
    return seqlens_expanded.to(device), nsa_cache_seqlens.to(device)


def pipeline_reference(extend_seq_lens, seq_lens, req_pool_indices, req_to_token, nsa_index_topk,
                       page_size, width):
    """Plain reference of the draft-extend metadata that SGLang fills next to the two arrays.

    Returns a dict of int32 tensors:
    ``cache_seqlens_int32[bs]``, ``cu_seqlens_k[bs+1]``, ``seqlens_expanded[N]``,
    ``nsa_cache_seqlens[N]``, ``nsa_cu_seqlens_k[N+1]``, ``page_table_1[N, width]``
    (row t is its request's ``req_to_token`` row; only its first ``min(kv, width)`` entries are
    meaningful) and ``real_page_table[N, ceil(width / page_size)]`` (every page_size-th entry of
    page_table_1 divided by page_size; meaningful on ``ceil(min(kv, width) / page_size)`` entries).
    ``live_cols`` gives, per expanded row, how many page_table_1 columns are meaningful.
    """
    expanded, cache = reference(extend_seq_lens, seq_lens, nsa_index_topk)
    ext = extend_seq_lens.long().cpu()
    seq = seq_lens.long().cpu()
    rows = req_to_token.cpu()[req_pool_indices.long().cpu()][:, :width].to(torch.int32)
    request_of_token = torch.repeat_interleave(torch.arange(len(ext)), ext)
    page_table_1 = rows[request_of_token]
    zero = torch.zeros(1, dtype=torch.int64)
    device = extend_seq_lens.device
    out = {
        "cache_seqlens_int32": seq.to(torch.int32),
        "cu_seqlens_k": torch.cat([zero, torch.cumsum(seq, 0)]).to(torch.int32),
        "seqlens_expanded": expanded.cpu(),
        "nsa_cache_seqlens": cache.cpu(),
        "nsa_cu_seqlens_k": torch.cat([zero, torch.cumsum(cache.cpu().long(), 0)]).to(torch.int32),
        "page_table_1": page_table_1,
        "real_page_table": torch.div(page_table_1[:, ::page_size], page_size, rounding_mode="floor"),
        "live_cols": torch.clamp(seq[request_of_token], max=width).to(torch.int32),
    }
    return {k: v.to(device) for k, v in out.items()}
