"""Graph replay: SGLang's ``_apply_cuda_graph_metadata`` through the workbook, one launch a step.

SGLang's graph runner calls ``init_forward_metadata_out_graph`` -> ``_apply_cuda_graph_metadata``
eagerly before every ``graph.replay()``. Its buffers are static per captured batch size, so a
replay step here is bound once per ``(forward mode, bs, seq_lens, req_pool_indices)`` and then
costs a key, a dict lookup, one bound launch and whatever stays SGLang's (``ReplayStep.tail``):

* DeepGEMM's schedule (``_refresh_paged_mqa_schedule_metadata``: ``get_paged_mqa_logits_metadata``
  and its ``copy_``), the top-k v2 plan (``_refresh_topk_v2_plan``), on CUDA, as SGLang runs them;
* ``paged_mqa_ctx_lens_2d.copy_`` only where that buffer is not already the very view the
  schedule reads (for decode it is a view of ``cache_seqlens_int32``: the copy is a no-op);
* FlashMLA's metadata when ``dsa_decode_impl == "flashmla_kv"``.

draft_extend_v2's static path never reads ``extend_seq_lens``: the per-step ``torch.full`` that
SGLang allocates for it is replaced by one constant buffer made at bind time.
"""
from ..modes.decode import DecodeFill
from ..modes.draft_extend import DraftExtendFill
from ..modes.target_verify import TargetVerifyFill

DECODE, TARGET_VERIFY, DRAFT_EXTEND_V2 = "decode", "target_verify", "draft_extend_v2"


def replay_mode(forward_mode):
    """Which replay fill serves ``forward_mode`` (``None``: one SGLang's replay does not know)."""
    if forward_mode.is_decode_or_idle():
        return DECODE
    if forward_mode.is_target_verify():
        return TARGET_VERIFY
    if forward_mode.is_draft_extend_v2():
        return DRAFT_EXTEND_V2
    return None


class ReplayStep:
    """One bound replay: ``fill()`` writes the static buffers (the bound launch itself, which
    holds the tensors it was bound to), ``tail()`` runs what stays SGLang's."""

    __slots__ = ("metadata", "fill", "tail", "mode")

    def __init__(self, metadata, fill, tail, mode):
        self.metadata, self.fill, self.tail, self.mode = metadata, fill, tail, mode


def _same_view(a, b):
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def bind_replay(backend, sglang, metadata, bs, mode, seq_lens, req_pool_indices):
    """Check and bind the fill of ``mode`` against ``metadata``'s static buffers (SGLang's own,
    captured for ``bs``) and build the tail; raises before anything is written.

    ``sglang`` is the module ``dsa_backend`` was loaded as: its ``is_cuda``, ``get_platform``
    and ``_to_2d_context_lens`` decide the tail exactly as ``_apply_cuda_graph_metadata`` does.
    """
    next_n = backend.speculative_num_draft_tokens
    width = backend._graph_page_table_width(metadata)
    common = dict(req_to_token=backend.req_to_token, cache_seqlens=metadata.cache_seqlens_int32,
                  cu_seqlens_k=metadata.cu_seqlens_k, page_table_1=metadata.page_table_1,
                  dsa_cache_seqlens=metadata.dsa_cache_seqlens_int32,
                  dsa_cu_seqlens_k=metadata.dsa_cu_seqlens_k,
                  real_page_table=metadata.real_page_table, bs=bs,
                  dsa_index_topk=backend.dsa_index_topk,
                  physical_page_size=backend.physical_page_size)
    ctx_written = False
    if mode == DECODE:
        fill = DecodeFill(seq_lens, req_pool_indices, max_len=width, **common).launch
        rows = bs
        schedule_lens = metadata.cache_seqlens_int32
        dsa_lens = metadata.dsa_cache_seqlens_int32
    elif mode == TARGET_VERIFY:
        ctx = metadata.paged_mqa_ctx_lens_2d
        native = (next_n >= 2 and sglang.get_platform().is_sm100 and ctx is not None
                  and ctx.dim() == 2 and ctx.size(0) == bs and ctx.size(1) == next_n)
        fill = TargetVerifyFill(seq_lens, req_pool_indices,
                                seqlens_expanded=metadata.dsa_seqlens_expanded,
                                max_seqlen_k=width, next_n=next_n,
                                paged_mqa_ctx_lens_2d=ctx if native else None,
                                **common).launch
        ctx_written = native
        rows = bs * next_n
        schedule_lens = metadata.dsa_seqlens_expanded[:rows]
        dsa_lens = metadata.dsa_cache_seqlens_int32[:rows]
    elif mode == DRAFT_EXTEND_V2:
        rows = bs * next_n
        # The static path never reads it; it holds SGLang's values all the same.
        extend_seq_lens = seq_lens.new_full((bs,), next_n, dtype=seq_lens.dtype)
        fill = DraftExtendFill(seq_lens, extend_seq_lens, req_pool_indices,
                               seqlens_expanded=metadata.dsa_seqlens_expanded, total_len=rows,
                               max_seqlen_k=width, max_extend_len=next_n, max_total_len=rows,
                               static_extend_len=True, **common).launch
        schedule_lens = metadata.dsa_seqlens_expanded
        dsa_lens = metadata.dsa_cache_seqlens_int32[:rows]
    else:
        raise ValueError(f"no replay fill for forward mode {mode!r}")
    tail = replay_tail(backend, sglang, metadata, bs, mode, rows, schedule_lens, dsa_lens,
                       ctx_written)
    return ReplayStep(metadata, fill, tail, mode)


def replay_tail(backend, sglang, metadata, bs, mode, rows, schedule_lens, dsa_lens,
                ctx_written):
    """What stays SGLang's after the fill, as ``_apply_cuda_graph_metadata`` runs it."""
    parts = []
    if sglang.is_cuda():
        if ctx_written:
            lens_2d = metadata.paged_mqa_ctx_lens_2d
        elif mode == DECODE:
            lens_2d = sglang._to_2d_context_lens(schedule_lens, bs)
        else:
            forward_mode = (sglang.ForwardMode.TARGET_VERIFY if mode == TARGET_VERIFY
                            else sglang.ForwardMode.DRAFT_EXTEND_V2)
            lens_2d = backend._build_paged_mqa_schedule_2d_ctx_lens(
                forward_mode, metadata.cache_seqlens_int32, schedule_lens, bs)
        refresh_schedule = backend._refresh_paged_mqa_schedule_metadata
        refresh_plan = backend._refresh_topk_v2_plan
        parts.append(lambda: refresh_schedule(metadata, lens_2d))
        parts.append(lambda: refresh_plan(metadata))
        if not ctx_written:
            ctx = metadata.paged_mqa_ctx_lens_2d
            if ctx is None:
                parts.append(lambda: object.__setattr__(metadata, "paged_mqa_ctx_lens_2d",
                                                        lens_2d))
            elif not _same_view(ctx, lens_2d):
                parts.append(lambda: metadata.paged_mqa_ctx_lens_2d.copy_(lens_2d))
    if backend.dsa_decode_impl == "flashmla_kv":
        compute = backend._compute_flashmla_metadata
        window = metadata.flashmla_metadata.slice(slice(0, rows + 1))
        parts.append(lambda: window.copy_(compute(cache_seqlens=dsa_lens, seq_len_q=1)))
    if not parts:
        return _nothing
    if len(parts) == 1:
        return parts[0]

    def tail():
        for part in parts:
            part()
    return tail


def _nothing():
    return None


def apply_cuda_graph_metadata(self, bs, req_pool_indices, seq_lens, seq_lens_cpu, forward_mode,
                              spec_info, out_cache_loc=None, actual_forward_mode=None):
    """``_apply_cuda_graph_metadata`` with the workbook installed (same signature): capture
    (a ``bs`` without static buffers yet) is SGLang's; a replay is one bound launch + the tail."""
    installation = self._nsa_installation
    metadata = self.decode_cuda_graph_metadata.get(bs)
    if metadata is None or bs.__class__ is not int:
        return installation.original("_apply_cuda_graph_metadata")(
            bs, req_pool_indices, seq_lens, seq_lens_cpu, forward_mode, spec_info,
            out_cache_loc, actual_forward_mode)
    key = (forward_mode, bs, seq_lens.data_ptr(), req_pool_indices.data_ptr())
    step = installation.replays.get(key)
    if step is None or step.metadata is not metadata:
        step = installation.bind_replay(metadata, bs, forward_mode, seq_lens, req_pool_indices,
                                        key)
        if step is None:  # a mode SGLang's replay serves another way: its own method
            return installation.original("_apply_cuda_graph_metadata")(
                bs, req_pool_indices, seq_lens, seq_lens_cpu, forward_mode, spec_info,
                out_cache_loc, actual_forward_mode)
    self.set_dsa_prefill_impl(forward_batch=None)
    step.fill()
    step.tail()
    self.forward_metadata = metadata
