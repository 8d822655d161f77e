"""The oracle: plain, obviously correct PyTorch on the host. Everything else is compared to it.

Arithmetic is exact (Python ints and int64 tensors); a result that the int32 outputs cannot
hold raises ``ValueError`` naming the argument and request, instead of wrapping as a kernel
would, so the tests can see the difference.
"""
import torch

from .validation import (
    as_index,
    check_int32_fits,
    check_length_values,
    check_lengths,
    check_nsa_cu_fits,
    check_power_of_two,
    check_prefix_fits,
    check_req_to_token_fits,
    check_topk,
)


def reference(extend_seq_lens, seq_lens, nsa_index_topk):
    """Return ``(seqlens_expanded, nsa_cache_seqlens)`` as int32 tensors on the inputs' device.

    For request i with ``qo = extend_seq_lens[i]`` and ``kv = seq_lens[i]`` emit
    ``kv - qo + 1, ..., kv``; concatenate in request order; clamp a copy at ``nsa_index_topk``.
    """
    check_lengths(extend_seq_lens, seq_lens, nsa_index_topk)
    topk = check_topk(nsa_index_topk)
    ext = [int(v) for v in extend_seq_lens.tolist()]
    seq = [int(v) for v in seq_lens.tolist()]
    check_length_values(ext, seq)
    expanded = []
    for qo, kv in zip(ext, seq):
        expanded.extend(range(kv - qo + 1, kv + 1))
    seqlens_expanded = torch.tensor(expanded, dtype=torch.int32)
    nsa_cache_seqlens = torch.tensor([min(v, topk) for v in expanded], dtype=torch.int32)
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
    Computed in 64 bits; raises ``ValueError`` where a result does not fit int32.
    """
    expanded, cache = reference(extend_seq_lens, seq_lens, nsa_index_topk)
    page_size = check_power_of_two("page_size", page_size)
    width = as_index("width", width, minimum=0)
    ext = extend_seq_lens.long().cpu()
    seq = seq_lens.long().cpu()
    pool = req_pool_indices.long().cpu()
    rows_available = req_to_token.shape[0]
    bad_pool = (pool < 0) | (pool >= rows_available)
    if bool(bad_pool.any()):
        r = int(bad_pool.int().argmax())
        raise ValueError(f"req_pool_indices[{r}] = {int(pool[r])} is not a row of req_to_token "
                         f"(it has {rows_available})")
    rows = req_to_token.cpu()[pool][:, :width].long()
    check_req_to_token_fits(rows, pool, torch.clamp(seq, max=width))
    check_prefix_fits("seq_lens", seq.numpy(), output="cu_seqlens_k")
    check_nsa_cu_fits(ext.numpy(), seq.numpy(), check_topk(nsa_index_topk))
    nsa_cu = torch.cumsum(cache.cpu().long(), 0)
    request_of_token = torch.repeat_interleave(torch.arange(len(ext)), ext)
    page_table_1 = rows[request_of_token]
    zero = torch.zeros(1, dtype=torch.int64)
    device = extend_seq_lens.device
    out = {
        "cache_seqlens_int32": seq,
        "cu_seqlens_k": torch.cat([zero, torch.cumsum(seq, 0)]),
        "seqlens_expanded": expanded.cpu(),
        "nsa_cache_seqlens": cache.cpu(),
        "nsa_cu_seqlens_k": torch.cat([zero, nsa_cu]),
        "page_table_1": page_table_1,
        "real_page_table": torch.div(
            page_table_1[:, ::page_size], page_size, rounding_mode="floor"
        ),
        "live_cols": torch.clamp(seq[request_of_token], max=width),
    }
    return {k: _to_int32(k, v).to(device) for k, v in out.items()}


def _to_int32(name, values):
    """int32 of a 64-bit result checked above; page tables' non-live entries are don't-cares."""
    if name not in ("page_table_1", "real_page_table"):
        check_int32_fits(name, values.numpy().ravel())  # a guard: the checks above cover it
    return values.to(torch.int32)
