"""Prefill: SGLang's ``init_forward_metadata`` for an EXTEND batch in one launch, no host sync.

SGLang builds it eagerly (about 5·bs + 17 launches: a per-request ``arange`` + ``cat`` for the
expanded lengths, ``full`` + ``arange`` per request for the indexer's ``ks`` / ``ke`` /
``token_to_batch_idx``, the ``req_to_token`` gather and its strided copy, clamps and prefix
sums). ``modes.prefill_paged`` writes the same fields in one launch, sized from the host
mirrors the forward batch already holds (``seq_lens_cpu``, ``extend_seq_lens_cpu``): the PAGED
set (Hopper's default with bf16 KV); ``topk_indices_offset`` when the top-k transform is RAGGED
(FP8 KV); ``page_table_1_flattened`` when a request has a cached prefix and the transform is
RAGGED or MHA's FP8 dequantisation reads it (SGLang's rule).

What stays SGLang's: ``set_dsa_prefill_impl`` and ``get_topk_transform_method`` (host
decisions), ``dsa_cu_seqlens_q`` (a view of its cached arange), the top-k v2 plan, FlashMLA's
metadata, and the page-table bound check SGLang runs only when ``seq_lens_sum`` exceeds the KV
capacity (a device read, as in SGLang). Batches this path does not serve run SGLang's method
(``prefill_unsupported`` says why): context-parallel sharding, data-parallel padding, a sharded
KV pool, speculative extend modes, missing host mirrors, an int64 ``req_to_token``.
"""
import torch

from ..modes.prefill_paged import prefill_paged_metadata


def prefill_unsupported(backend, sglang, forward_batch):
    """Why this path leaves ``forward_batch`` to SGLang's method, or ``None``."""
    fb = forward_batch
    if not fb.forward_mode.is_extend_without_speculative():
        return f"forward mode {fb.forward_mode} (speculative extend)"
    if fb.batch_size == 0:
        return "an empty batch"
    if fb.seq_lens_cpu is None or fb.extend_seq_lens_cpu is None or \
            fb.extend_prefix_lens_cpu is None or fb.extend_seq_lens is None:
        return "host mirrors missing (SGLang asserts them)"
    if getattr(fb, "global_num_tokens_cpu", None) is not None:
        return "data-parallel padding of dsa_cache_seqlens"
    if getattr(backend, "_kv_shard_pool", None) is not None:
        return "a sharded KV pool"
    if sglang.can_dsa_prefill_cp_interleave(fb):
        return "context-parallel sharding"
    if backend.req_to_token.dtype != torch.int32:
        return "req_to_token is not int32"
    return None


def prefill_metadata(backend, sglang, forward_batch):
    """Build and install ``forward_metadata`` as SGLang's extend branch does, in one launch."""
    fb = forward_batch
    backend.set_dsa_prefill_impl(fb)
    use_flashmla_kv = (not backend.use_mha) and backend.dsa_prefill_impl == "flashmla_kv"
    ragged = backend.get_topk_transform_method(fb.forward_mode) == sglang.TopkTransformMethod.RAGGED
    dequantize = backend.use_mha and backend.token_to_kv_pool.dtype == torch.float8_e4m3fn
    fb.using_mha_one_shot_fp8_dequant = dequantize
    fields = prefill_paged_metadata(
        fb.seq_lens, fb.extend_seq_lens, fb.req_pool_indices, backend.req_to_token,
        backend.dsa_index_topk, backend.physical_page_size, seq_lens_cpu=fb.seq_lens_cpu,
        extend_seq_lens_cpu=fb.extend_seq_lens_cpu, ragged=ragged, mha_fp8_dequant=dequantize)
    flattened = fields["page_table_1_flattened"]
    if flattened is not None:
        capacity = backend.token_to_kv_pool.size + backend.token_to_kv_pool.page_size
        if fb.seq_lens_sum > capacity:
            max_idx = flattened.max().item()
            if max_idx >= capacity:
                raise ValueError(f"invalid page table index: max={max_idx}, "
                                 f"kv_cache_capacity={capacity}")
    dsa = fields["dsa_cache_seqlens_int32"]
    dsa_cu = fields["dsa_cu_seqlens_k"]
    flashmla = (backend._compute_flashmla_metadata(cache_seqlens=dsa, seq_len_q=1)
                if use_flashmla_kv and not sglang._is_xpu else None)
    expanded = fields["dsa_seqlens_expanded"]
    backend.forward_metadata = sglang.DSAMetadata(
        page_size=backend.physical_page_size,
        cache_seqlens_int32=fields["cache_seqlens_int32"], max_seq_len_q=fields["max_seqlen_q"],
        max_seq_len_k=fields["max_seqlen_k"], cu_seqlens_q=fields["cu_seqlens_q"],
        cu_seqlens_k=fields["cu_seqlens_k"], seq_lens_sum=fb.seq_lens_sum,
        page_table_1=fields["page_table_1"], page_table_1_flattened=flattened,
        flashmla_metadata=flashmla, paged_mqa_schedule_metadata=None,
        paged_mqa_ctx_lens_2d=None, dsa_cache_seqlens_int32=dsa,
        dsa_cu_seqlens_q=backend.get_device_int32_arange(dsa_cu.shape[0]),
        dsa_cu_seqlens_k=dsa_cu, dsa_seqlens_expanded=expanded,
        dsa_extend_seq_lens_list=fb.extend_seq_lens_cpu,
        real_page_table=fields["real_page_table"], dsa_max_seqlen_q=1,
        topk_indices_offset=fields["topk_indices_offset"],
        indexer_k_start_end=fields["indexer_k_start_end"], indexer_logical_page_table=None,
        indexer_seq_lens_cpu=fb.seq_lens_cpu, indexer_seq_lens=fb.seq_lens,
        token_to_batch_idx=fields["token_to_batch_idx"],
        topk_v2_plan=backend._build_topk_v2_plan(expanded))
