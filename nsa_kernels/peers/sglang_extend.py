"""SGLang 0.5.23's eager extend metadata path, replayed op for op: the extend baseline.

Written from reading ``sglang/srt/layers/attention/dsa_backend.py``:
``DeepseekSparseAttnBackend.init_forward_metadata`` (its prologue and its
``forward_mode.is_extend()`` branch, for a batch with cached prefixes, the RAGGED top-k
transform, no context parallelism, no kpool, no KV sharding) and ``_cal_indexer_k_start_end``;
``compute_cu_seqlens`` (``srt/layers/attention/dsa/dsa_backend_mtp_precompute.py``) and
``compute_dsa_seqlens`` (``srt/layers/attention/dsa/utils.py``, ``index_kpool = 1``). The same
torch operations in the same order, with the same host syncs:

* ``torch.repeat_interleave(cu_seqlens_k[:-1], extend_seq_lens)`` on a device count tensor:
  the output size is read back from the device (a hidden sync);
* per request, one ``torch.arange`` (``seqlens_expanded``), ``torch.full`` x 2 + ``arange`` +
  an add (``_cal_indexer_k_start_end``), and a row slice (``page_table_1_flattened``), then
  five ``torch.cat``; ``.tolist()`` / ``.item()`` on the host mirrors (free: host tensors).

SGLang's forward batch carries ``seq_lens_cpu`` (host tensor) and ``extend_seq_lens_cpu`` /
``extend_prefix_lens_cpu`` (host lists) built by the scheduler; pass them to time the backend
alone. Without them they are read from the device here (one sync each), standing in for the
scheduler. Left out: the page-table index bound check (it runs only when the batch's kv sum
exceeds the KV pool's capacity) and the cached ``dsa_cu_seqlens_q`` arange slice. SGLang builds
``page_table_1_flattened`` only when some request has a cached prefix (the case measured here);
this replay builds it always, so that every key can be compared.
"""
import torch


def _compute_cu_seqlens(seqlens):
    # SGLang's compute_cu_seqlens: an int32 cumsum, left-padded with one 0.
    assert seqlens.dtype == torch.int32
    return torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))


def _cal_indexer_k_start_end(seq_lens_cpu, extend_seq_lens_cpu, device):
    # SGLang's _cal_indexer_k_start_end for a plain extend (bs_idx None).
    batch_size = len(extend_seq_lens_cpu)
    if batch_size == 0:
        empty = torch.empty(0, dtype=torch.int32, device=device)
        return (empty, empty), empty
    ks_list, ke_list, token_to_batch_idx = [], [], []
    q_offset = k_offset = 0
    for i in range(batch_size):
        seq_len = seq_lens_cpu[i].item()
        extend_seq_len = extend_seq_lens_cpu[i]
        ks = torch.full((extend_seq_len,), k_offset, dtype=torch.int32, device=device)
        kv_len = seq_len
        seq_lens_expanded = torch.arange(kv_len - extend_seq_len + 1, kv_len + 1,
                                         dtype=torch.int32, device=device)
        ke = ks + seq_lens_expanded
        ks_list.append(ks)
        ke_list.append(ke)
        token_to_batch_idx.append(
            torch.full((extend_seq_len,), i, dtype=torch.int32, device=device)
        )
        q_offset += extend_seq_len
        k_offset += seq_len
    ks = torch.cat(ks_list, dim=0)
    ke = torch.cat(ke_list, dim=0)
    return (ks, ke), torch.cat(token_to_batch_idx, dim=0)


def sglang_extend_metadata(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                           dsa_index_topk, *, seq_lens_cpu=None, extend_seq_lens_cpu=None):
    """SGLang's eager extend metadata (same keys as ``extend_metadata``); see the module doc."""
    device = seq_lens.device
    if seq_lens_cpu is None:
        seq_lens_cpu = seq_lens.cpu()  # the scheduler's host mirror (a sync here)
    if extend_seq_lens_cpu is None:
        extend_seq_lens_cpu = extend_seq_lens.tolist()  # likewise
    extend_seq_lens_cpu = list(extend_seq_lens_cpu)
    extend_prefix_lens_cpu = [kv - qo for kv, qo in zip(seq_lens_cpu.tolist(), extend_seq_lens_cpu)]
    batch_size = len(extend_seq_lens_cpu)

    # init_forward_metadata, prologue (draft_token_num = 0 outside target verify)
    cache_seqlens_int32 = (seq_lens + 0).to(torch.int32)
    cu_seqlens_k = _compute_cu_seqlens(cache_seqlens_int32)
    max_seqlen_k = int(seq_lens_cpu.max().item() + 0) if batch_size else 0
    page_table = req_to_token[req_pool_indices, :max_seqlen_k]

    # the is_extend() branch
    if batch_size == 0:  # torch.cat of no tensors raises; SGLang never runs an empty extend
        seqlens_expanded = torch.empty(0, dtype=torch.int32, device=device)
    else:
        seqlens_expanded = torch.cat([
            torch.arange(kv_len - qo_len + 1, kv_len + 1, dtype=torch.int32, device=device)
            for qo_len, kv_len in zip(extend_seq_lens_cpu, seq_lens_cpu.tolist(), strict=True)
        ])
    if any(extend_prefix_lens_cpu):
        max_seqlen_q = max(extend_seq_lens_cpu) if len(extend_seq_lens_cpu) != 0 else 1  # noqa: F841
        cu_seqlens_q = _compute_cu_seqlens(extend_seq_lens.to(torch.int32))  # noqa: F841
    if batch_size == 0:
        page_table_1_flattened = torch.empty(0, dtype=req_to_token.dtype, device=device)
    else:
        page_table_1_flattened = torch.cat(
            [page_table[i, :kv_len] for i, kv_len in enumerate(seq_lens_cpu.tolist())])
    assert page_table_1_flattened.shape[0] == sum(seq_lens_cpu.tolist())
    topk_indices_offset = torch.repeat_interleave(cu_seqlens_k[:-1], extend_seq_lens)

    (_ks, ke), token_to_batch_idx = _cal_indexer_k_start_end(
        seq_lens_cpu, extend_seq_lens_cpu, device
    )
    dsa_cache_seqlens_int32 = seqlens_expanded.clamp(max=dsa_index_topk)
    dsa_cu_seqlens_k = _compute_cu_seqlens(dsa_cache_seqlens_int32)
    return {
        "seqlens_expanded": seqlens_expanded,
        "dsa_cache_seqlens": dsa_cache_seqlens_int32,
        "cu_seqlens_k": cu_seqlens_k,
        "dsa_cu_seqlens_k": dsa_cu_seqlens_k,
        "topk_indices_offset": topk_indices_offset,
        "indexer_ke": ke,
        "token_to_batch_idx": token_to_batch_idx,
        "page_table_1_flattened": page_table_1_flattened,
    }
