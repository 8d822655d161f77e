"""The eager path: ``init_forward_metadata`` for decode / target_verify / draft_extend_v2.

SGLang runs it for batches larger than any captured graph (or with graphs off): 13-20 torch
ops each, a fresh ``[rows, max_seqlen_k]`` gather of ``req_to_token`` (``repeat_interleave``d
for the speculative modes), its strided ``// page_size`` copy, ``clamp`` and two ``cumsum``s.
Here the same fresh tensors are allocated (allocations, not launches) and filled by one launch
of the mode's kernel; ``max_seqlen_k`` comes from the host mirror ``seq_lens_cpu`` as in
SGLang (which reads the device once when the mirror is absent, and so does this path).

What stays SGLang's: ``set_dsa_prefill_impl``, DeepGEMM's schedule
(``get_paged_mqa_logits_metadata``, on CUDA), the top-k v2 plan, FlashMLA's metadata. Batches
this path does not serve run SGLang's own method (``eager_unsupported`` says why): data or
context parallel padding, a sharded KV pool, an int64 ``req_to_token``, an empty batch, and a
draft_extend_v2 batch whose requests do not all extend by ``speculative_num_draft_tokens``
(SGLang's page rows and expanded lengths then disagree with each other).
"""
import torch

from ..modes.decode import plan_decode
from ..modes.draft_extend import plan_draft_extend
from ..modes.target_verify import plan_target_verify
from .sglang_replay import DECODE, DRAFT_EXTEND_V2, TARGET_VERIFY


def eager_unsupported(backend, forward_batch, mode):
    """Why this path leaves ``forward_batch`` to SGLang's method, or ``None``."""
    if forward_batch.batch_size == 0:
        return "an empty batch"
    if getattr(forward_batch, "global_num_tokens_cpu", None) is not None:
        return "data-parallel padding of dsa_cache_seqlens"
    if getattr(backend, "_kv_shard_pool", None) is not None:
        return "a sharded KV pool"
    if backend.req_to_token.dtype != torch.int32:
        return "req_to_token is not int32"
    if mode == DRAFT_EXTEND_V2:
        lens = forward_batch.extend_seq_lens_cpu
        next_n = backend.speculative_num_draft_tokens
        if lens is None or list(lens).count(next_n) != len(lens):
            return "draft_extend_v2 requests that do not all extend by next_n"
    return None


def eager_metadata(backend, sglang, forward_batch, mode):
    """Build and install ``forward_metadata`` as SGLang's ``init_forward_metadata`` does for
    ``mode``, with the tensors it computes filled by one launch."""
    fb = forward_batch
    bs = fb.batch_size
    device = fb.seq_lens.device
    next_n = backend.speculative_num_draft_tokens
    draft = next_n if mode == TARGET_VERIFY else 0
    indexer_seq_lens_cpu = fb.seq_lens_cpu  # read before draft_extend_v2 may fill it in
    if fb.seq_lens_cpu is not None:
        max_seqlen_k = int(fb.seq_lens_cpu.max().item() + draft)
    else:
        max_seqlen_k = int(fb.seq_lens.max().item()) + draft
    backend.set_dsa_prefill_impl(fb)
    use_flashmla_kv = (not backend.use_mha) and backend.dsa_decode_impl == "flashmla_kv"
    page_size = backend.physical_page_size
    rows = bs if mode == DECODE else bs * next_n
    i32 = dict(dtype=torch.int32, device=device)
    cache = torch.empty(bs, **i32)
    cu_k = torch.empty(bs + 1, **i32)
    page_table = torch.empty(rows, max_seqlen_k, **i32)
    real = page_table if page_size == 1 else torch.empty(rows, -(-max_seqlen_k // page_size), **i32)
    dsa = torch.empty(rows, **i32)
    dsa_cu = torch.empty(rows + 1, **i32)
    tables = dict(req_to_token=backend.req_to_token, cache_seqlens=cache, cu_seqlens_k=cu_k,
                  page_table_1=page_table, dsa_cache_seqlens=dsa, dsa_cu_seqlens_k=dsa_cu,
                  real_page_table=real, bs=bs, dsa_index_topk=backend.dsa_index_topk,
                  physical_page_size=page_size)
    if mode == DECODE:
        plan_decode(fb.seq_lens, fb.req_pool_indices, max_len=max_seqlen_k, **tables)()
        expanded = cache
        cu_q = backend.get_device_int32_arange(bs + 1)
        extend_list = [1] * bs
    else:
        expanded = torch.empty(rows, **i32)
        if mode == TARGET_VERIFY:
            plan_target_verify(fb.seq_lens, fb.req_pool_indices, seqlens_expanded=expanded,
                               max_seqlen_k=max_seqlen_k, next_n=next_n, **tables)()
            cu_q = backend.get_device_int32_arange(rows + 1)
            extend_list = [next_n] * bs
            fb.extend_seq_lens_cpu = extend_list
        else:
            _draft_extend_host_mirrors(fb)
            plan_draft_extend(fb.seq_lens, fb.extend_seq_lens, fb.req_pool_indices,
                              seqlens_expanded=expanded, total_len=rows,
                              max_seqlen_k=max_seqlen_k, max_extend_len=next_n,
                              max_total_len=rows, static_extend_len=True, **tables)()
            cu_q = backend.get_device_int32_arange(fb.extend_num_tokens + 1)
            extend_list = fb.extend_seq_lens_cpu
    k_start_end, token_to_batch = backend._cal_indexer_k_start_end(fb, None)
    schedule = lens_2d = None
    if sglang.is_cuda():
        lens_2d = backend._build_paged_mqa_schedule_2d_ctx_lens(fb.forward_mode, cache, expanded,
                                                                bs)
        schedule = sglang.resolve_paged_mqa_logits_metadata_fn()(lens_2d, 64,
                                                                sglang.resolve_num_sms())
    flashmla = (backend._compute_flashmla_metadata(cache_seqlens=dsa, seq_len_q=1)
                if use_flashmla_kv and not sglang._is_xpu else None)
    backend.forward_metadata = sglang.DSAMetadata(
        page_size=page_size, cache_seqlens_int32=cache, max_seq_len_q=1,
        max_seq_len_k=max_seqlen_k, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
        seq_lens_sum=fb.seq_lens_sum, page_table_1=page_table, page_table_1_flattened=None,
        flashmla_metadata=flashmla, paged_mqa_schedule_metadata=schedule,
        paged_mqa_ctx_lens_2d=lens_2d, dsa_cache_seqlens_int32=dsa,
        dsa_cu_seqlens_q=backend.get_device_int32_arange(rows + 1), dsa_cu_seqlens_k=dsa_cu,
        dsa_seqlens_expanded=expanded, dsa_extend_seq_lens_list=extend_list,
        real_page_table=real, dsa_max_seqlen_q=1, topk_indices_offset=None,
        indexer_k_start_end=k_start_end, indexer_logical_page_table=None,
        indexer_seq_lens_cpu=indexer_seq_lens_cpu, indexer_seq_lens=fb.seq_lens,
        token_to_batch_idx=token_to_batch, topk_v2_plan=backend._build_topk_v2_plan(expanded))


def _draft_extend_host_mirrors(fb):
    """The host mirrors SGLang's draft_extend_v2 branch fills in on the batch (side effects
    later code reads)."""
    if fb.extend_prefix_lens_cpu is None:
        fb.extend_prefix_lens_cpu = fb.extend_prefix_lens.cpu().tolist()
    if fb.seq_lens_cpu is None:
        fb.seq_lens_cpu = fb.seq_lens.cpu()
        fb.seq_lens_sum = int(fb.seq_lens_cpu.sum())
