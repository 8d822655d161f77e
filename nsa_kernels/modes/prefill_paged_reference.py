"""The plain PyTorch oracle of SGLang 0.5.23's PAGED prefill metadata: int64 on the host.

What ``DeepseekSparseAttnBackend.init_forward_metadata`` builds for an EXTEND batch (single
rank: no context-parallel split, no DP padding, ``index_kpool == 1``), with ``kv = seq_lens``,
``qo = extend_seq_lens`` and ``W = max_seqlen_k`` (SGLang: ``max(seq_lens_cpu)``):

* ``page_table_1[b, :] = req_to_token[req_pool_indices[b], :W]``: the whole ``[bs, W]`` window,
  also past request b's own ``kv`` (SGLang gathers it densely);
* ``real_page_table = page_table_1[:, ::page_size] // page_size`` (``page_table_1`` itself when
  the page size is 1);
* ``cache_seqlens_int32 = kv``, ``cu_seqlens_k = [0, cumsum(kv)]``;
  ``cu_seqlens_q = [0, cumsum(qo)]`` (SGLang reuses ``cu_seqlens_k`` when no request has a cached
  prefix, where the two are equal);
* per token t of request r: ``dsa_seqlens_expanded`` (what it sees), ``dsa_cache_seqlens_int32``
  (clamped at topk), ``dsa_cu_seqlens_k`` (its prefix), ``indexer_k_start_end = (ks, ke)`` with
  ``ks = cu_seqlens_k[r]``, ``ke = ks + seen``, ``token_to_batch_idx = r``; RAGGED (FP8 KV) adds
  ``topk_indices_offset`` (equal to ``ks``) and, with a cached prefix, ``page_table_1_flattened``.

The per-token keys are ``extend_reference``'s (one home for that formula). Inputs whose results
an int32 output cannot hold are rejected with ``ValueError`` naming the argument and request.
"""
import numpy as np
import torch

from ..validation import extend as extend_checks
from ..validation import modes as checks
from .extend_reference import extend_reference

INT32_MAX = checks.INT32_MAX


def prefill_paged_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                            max_seqlen_k, dsa_index_topk, physical_page_size):
    """Every PAGED key (and RAGGED's extras) as int64 CPU tensors, under SGLang's names."""
    topk = checks.topk_value(dsa_index_topk)
    width = checks.as_index("max_seqlen_k", max_seqlen_k)
    page_size = checks.as_index("physical_page_size", physical_page_size, minimum=1)
    base = extend_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, topk)
    kv = seq_lens.detach().to("cpu", torch.int64)
    qo = extend_seq_lens.detach().to("cpu", torch.int64)
    extend_checks.check_lengths_data(kv.numpy(), qo.numpy(), req_to_token.shape[1], topk)
    bs = kv.shape[0]
    if bs and int(kv.max()) > width:
        b = int(torch.argmax((kv > width).int()))
        raise ValueError(f"seq_lens[{b}] = {int(kv[b])} exceeds max_seqlen_k = {width} "
                         f"(request {b})")
    if width > req_to_token.shape[1]:
        raise ValueError(f"max_seqlen_k = {width} exceeds req_to_token's "
                         f"{req_to_token.shape[1]} columns")
    pool = req_pool_indices.detach().to("cpu", torch.int64)
    page_table = req_to_token[:, :width].detach().to("cpu", torch.int64)[pool]
    bad = (page_table < 0) | (page_table > INT32_MAX)
    if bool(bad.any()):
        b, c = bad.nonzero()[0].tolist()
        raise ValueError(f"req_to_token[{int(pool[b])}, {c}] = {int(page_table[b, c])} is outside "
                         f"int32 [0, 2**31): page_table_1 copies the whole window (request {b})")
    real = page_table[:, ::page_size] // page_size if page_size > 1 else page_table
    zero = torch.zeros(1, dtype=torch.int64)
    return {
        "page_table_1": page_table,
        "real_page_table": real,
        "cache_seqlens_int32": kv,
        "cu_seqlens_k": base["cu_seqlens_k"],
        "cu_seqlens_q": torch.cat([zero, torch.cumsum(qo, 0)]),
        "dsa_seqlens_expanded": base["seqlens_expanded"],
        "dsa_cache_seqlens_int32": base["dsa_cache_seqlens"],
        "dsa_cu_seqlens_k": base["dsa_cu_seqlens_k"],
        "indexer_k_start": base["topk_indices_offset"],
        "indexer_k_end": base["indexer_ke"],
        "token_to_batch_idx": base["token_to_batch_idx"],
        "topk_indices_offset": base["topk_indices_offset"],
        "page_table_1_flattened": base["page_table_1_flattened"],
        "has_prefix": bool(np.any(kv.numpy() != qo.numpy())),
    }
