"""The plain PyTorch oracle of the extend (prefill) metadata: int64 on the host, never wraps.

For request r with ``qo = extend_seq_lens[r]`` and ``kv = seq_lens[r]``, its tokens see
``kv - qo + 1, ..., kv``. Every key of ``nsa_kernels.modes.extend.extend_metadata``:

* ``seqlens_expanded[t]``: what token t sees; ``dsa_cache_seqlens = min(it, topk)``.
* ``cu_seqlens_k[bs + 1]``: prefix sum of ``seq_lens`` (over kv), leading 0.
* ``dsa_cu_seqlens_k[N + 1]``: prefix sum of ``dsa_cache_seqlens``, leading 0.
* ``topk_indices_offset[t] = cu_seqlens_k[r]`` (SGLang's ``ks``) and
  ``indexer_ke[t] = topk_indices_offset[t] + seqlens_expanded[t]``.
* ``token_to_batch_idx[t] = r``.
* ``page_table_1_flattened``: ``req_to_token[req_pool_indices[r], :kv]`` concatenated over r.
"""
import operator

import torch

EXTEND_KEYS = ("seqlens_expanded", "dsa_cache_seqlens", "cu_seqlens_k", "dsa_cu_seqlens_k",
               "topk_indices_offset", "indexer_ke", "token_to_batch_idx", "page_table_1_flattened")


def _host_int64(name, t, dim=1):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int32, torch.int64) or t.dim() != dim:
        raise TypeError(
            f"{name} must be a {dim}-D int32 or int64 tensor, got {t.dim()}-D {t.dtype}"
        )
    return t.detach().to("cpu", torch.int64)


def extend_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, dsa_index_topk):
    """Every extend key as an int64 CPU tensor; ``ValueError`` naming the request on bad input."""
    if isinstance(dsa_index_topk, bool):
        raise TypeError("dsa_index_topk must be an int, got bool")
    topk = operator.index(dsa_index_topk)
    if topk < 1:
        raise ValueError(f"dsa_index_topk must be >= 1, got {topk}")
    kv = _host_int64("seq_lens", seq_lens)
    qo = _host_int64("extend_seq_lens", extend_seq_lens)
    pool = _host_int64("req_pool_indices", req_pool_indices)
    table = _host_int64("req_to_token", req_to_token, dim=2)
    bs = kv.shape[0]
    if qo.shape[0] != bs or pool.shape[0] != bs:
        raise ValueError(
            f"seq_lens, extend_seq_lens and req_pool_indices must have one entry per "
            f"request, got {bs}, {qo.shape[0]}, {pool.shape[0]}"
        )
    bad_lengths = (qo < 0) | (kv < 0) | (qo > kv)
    if bool(bad_lengths.any()):
        r = int(bad_lengths.int().argmax())
        raise ValueError(
            f"request {r}: need 0 <= extend_seq_lens[{r}] = {int(qo[r])} <= "
            f"seq_lens[{r}] = {int(kv[r])}"
        )
    too_long = kv > table.shape[1]
    if bool(too_long.any()):
        r = int(too_long.int().argmax())
        raise ValueError(
            f"request {r}: seq_lens[{r}] = {int(kv[r])} exceeds req_to_token's "
            f"{table.shape[1]} columns"
        )
    bad_rows = (pool < 0) | (pool >= table.shape[0])
    if bool(bad_rows.any()):
        r = int(bad_rows.int().argmax())
        raise ValueError(
            f"request {r}: req_pool_indices[{r}] = {int(pool[r])} is not a row of "
            f"req_to_token ({table.shape[0]} rows)"
        )
    requests = torch.arange(bs, dtype=torch.int64)
    cu_seqlens_k = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(kv, 0)])
    token_request = torch.repeat_interleave(requests, qo)
    token_start = torch.cumsum(qo, 0) - qo
    position = torch.arange(token_request.shape[0], dtype=torch.int64) - token_start[token_request]
    expanded = kv[token_request] - qo[token_request] + 1 + position
    cache = torch.clamp(expanded, max=topk)
    entry_request = torch.repeat_interleave(requests, kv)
    column = torch.arange(entry_request.shape[0], dtype=torch.int64) - cu_seqlens_k[entry_request]
    offset = cu_seqlens_k[token_request]
    return {
        "seqlens_expanded": expanded,
        "dsa_cache_seqlens": cache,
        "cu_seqlens_k": cu_seqlens_k,
        "dsa_cu_seqlens_k": torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(cache, 0)]),
        "topk_indices_offset": offset,
        "indexer_ke": offset + expanded,
        "token_to_batch_idx": token_request,
        "page_table_1_flattened": table[pool[entry_request], column],
    }
