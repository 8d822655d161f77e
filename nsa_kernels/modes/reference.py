"""The oracles of the three fused modes: plain PyTorch on the host, in 64 bits, never wrapping.

Each returns a dict of int64 CPU tensors holding exactly the entries SGLang 0.5.23 writes
(flat arrays over their written range) and, for the page tables, dense rows with
``live_cols`` / ``real_live_cols`` saying how many leading entries of each row are written.
Inputs an int32 output cannot represent are rejected with the same data checks as
``check=True`` (``ValueError`` naming the argument and request).
"""
import torch

from ..validation import modes as checks

INT32_MAX = checks.INT32_MAX


def _page_tables(req_pool_indices, req_to_token, request_of_row, live_per_request, max_len,
                 page_size):
    """Page-table rows of the expanded rows: dense, meaningful on their live prefix."""
    bs = live_per_request.shape[0]
    checks.pool_rows(req_pool_indices, req_to_token, bs, live_per_request)
    pool = checks.host(req_pool_indices, bs)
    table = req_to_token[:, :max_len].to("cpu", torch.int64)[pool][request_of_row]
    live = live_per_request[request_of_row]
    cols = torch.arange(max_len)
    table = torch.where(cols[None, :] < live[:, None], table, torch.zeros_like(table))
    out = {"page_table_1": table, "live_cols": live}
    if page_size > 1:
        # Token ids are >= 0 here (checked), so floor and truncating division agree.
        out["real_page_table"] = table[:, ::page_size] // page_size
        out["real_live_cols"] = (live + page_size - 1) // page_size
    return out


def _prefix(values):
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(values, 0)])


def _check_prefix(name, values):
    checks.prefix_in_int32(name, values)


def decode_reference(seq_lens, req_pool_indices, req_to_token, bs, max_len, dsa_index_topk,
                     physical_page_size):
    kv = checks.host(seq_lens, bs)
    checks.lengths_in_int32("seq_lens", kv)
    dsa = torch.clamp(kv, max=dsa_index_topk)
    _check_prefix("cu_seqlens_k", kv)
    _check_prefix("dsa_cu_seqlens_k", dsa)
    out = {"cache_seqlens": kv, "cu_seqlens_k": _prefix(kv), "dsa_cache_seqlens": dsa,
           "dsa_cu_seqlens_k": _prefix(dsa)}
    out.update(_page_tables(req_pool_indices, req_to_token, torch.arange(bs),
                            torch.clamp(kv, max=max_len), max_len, physical_page_size))
    return out


def target_verify_reference(seq_lens, req_pool_indices, req_to_token, bs, max_seqlen_k,
                            dsa_index_topk, physical_page_size, next_n):
    kv = checks.host(seq_lens, bs)
    checks.lengths_in_int32("seq_lens", kv, extra=next_n)
    context = kv + next_n
    expanded = (kv[:, None] + torch.arange(1, next_n + 1)[None, :]).reshape(-1)
    dsa = torch.clamp(expanded, max=dsa_index_topk)
    _check_prefix("cu_seqlens_k", context)
    _check_prefix("dsa_cu_seqlens_k", dsa)
    out = {"cache_seqlens": context, "cu_seqlens_k": _prefix(context),
           "seqlens_expanded": expanded, "dsa_cache_seqlens": dsa,
           "dsa_cu_seqlens_k": _prefix(dsa),
           "paged_mqa_ctx_lens_2d": context[:, None].expand(bs, next_n).clone()}
    request_of_row = torch.arange(bs).repeat_interleave(next_n)
    out.update(_page_tables(req_pool_indices, req_to_token, request_of_row,
                            torch.clamp(context, max=max_seqlen_k), max_seqlen_k,
                            physical_page_size))
    return out


def draft_extend_qo(extend_seq_lens, bs, total_len, max_extend_len, static_extend_len):
    """Per-request extend lengths as the fill uses them; ValueError where SGLang's are undefined."""
    if static_extend_len:
        qo = torch.full((bs,), max_extend_len, dtype=torch.int64)
        ext = checks.host(extend_seq_lens, bs)
        bad = ext != max_extend_len
        if bool(bad.any()):
            b = int(bad.nonzero()[0])
            raise ValueError(f"extend_seq_lens[{b}] = {int(ext[b])} but static_extend_len needs "
                             f"every request to extend by max_extend_len = {max_extend_len} "
                             f"(request {b})")
        return qo
    qo = checks.host(extend_seq_lens, bs)
    bad = (qo < 0) | (qo > max_extend_len)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise ValueError(f"extend_seq_lens[{b}] = {int(qo[b])} is outside [0, max_extend_len = "
                         f"{max_extend_len}] (request {b})")
    if int(qo.sum()) < total_len:
        raise ValueError(f"extend_seq_lens sums to {int(qo.sum())} < total_len = {total_len}: "
                         "rows past the sum would be undefined")
    return qo


def draft_extend_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, bs,
                           total_len, max_seqlen_k, dsa_index_topk, physical_page_size,
                           max_extend_len, static_extend_len=False):
    """Rows ``[:total_len]`` of the expanded requests; padded rows (kv < qo) clamp at 0."""
    kv = checks.host(seq_lens, bs)
    checks.lengths_in_int32("seq_lens", kv)
    qo = draft_extend_qo(extend_seq_lens, bs, total_len, max_extend_len, static_extend_len)
    request_of_row = torch.arange(bs).repeat_interleave(qo)[:total_len]
    first_of_request = _prefix(qo)[:-1]
    j = torch.arange(request_of_row.shape[0]) - first_of_request[request_of_row]
    expanded = torch.clamp(kv[request_of_row] - qo[request_of_row] + j + 1, min=0)
    dsa = torch.clamp(expanded, max=dsa_index_topk)
    _check_prefix("cu_seqlens_k", kv)
    _check_prefix("dsa_cu_seqlens_k", dsa)
    out = {"cache_seqlens": kv, "cu_seqlens_k": _prefix(kv), "seqlens_expanded": expanded,
           "dsa_cache_seqlens": dsa, "dsa_cu_seqlens_k": _prefix(dsa)}
    out.update(_page_tables(req_pool_indices, req_to_token, request_of_row,
                            torch.clamp(kv, min=0, max=max_seqlen_k), max_seqlen_k,
                            physical_page_size))
    return out
