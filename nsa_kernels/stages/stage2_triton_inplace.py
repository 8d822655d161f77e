"""Stage 2: stage 1's kernel writing straight into the metadata buffers: no temporaries, no
copies."""

from ..validation import check_topk
from .stage1_triton_fused import launch_linear_scan, prepare


def fill_triton_inplace(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                        out_nsa_cache_seqlens):
    nsa_index_topk = check_topk(nsa_index_topk)  # a numpy integer becomes a Python int
    ends, n_tokens = prepare(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                             out_nsa_cache_seqlens)
    if n_tokens:
        launch_linear_scan(ends, seq_lens, nsa_index_topk, out_seqlens_expanded,
                           out_nsa_cache_seqlens, n_tokens)
    return n_tokens
