"""Stage 3: each token finds its request by binary search over the prefix ends.

O(log bs) loads per token instead of O(bs); the step count is a run-time argument so a new
batch size does not compile a new kernel.
"""
import triton
import triton.language as tl

from ..validation import check_topk
from .stage1_triton_fused import prepare

BLOCK_SIZE = 256


@triton.jit
def expand_bsearch_kernel(ends_ptr, seq_lens_ptr, out_expanded_ptr, out_cache_ptr, n_tokens,
                          batch_size, search_steps, nsa_index_topk, BLOCK_SIZE: tl.constexpr):
    token = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = token < n_tokens
    # Find the first request whose end is past the token: lo converges to it.
    lo = tl.zeros([BLOCK_SIZE], dtype=tl.int32)
    hi = tl.zeros([BLOCK_SIZE], dtype=tl.int32) + batch_size
    for _ in range(0, search_steps):
        active = lo < hi
        mid = (lo + hi) // 2
        end_mid = tl.load(ends_ptr + mid, mask=mask & active, other=0)
        past = end_mid > token
        hi = tl.where(active & past, mid, hi)
        lo = tl.where(active & ~past, mid + 1, lo)
    end = tl.load(ends_ptr + lo, mask=mask, other=0)
    kv_len = tl.load(seq_lens_ptr + lo, mask=mask, other=0)
    value = (kv_len - end + 1 + token).to(tl.int32)
    tl.store(out_expanded_ptr + token, value, mask=mask)
    tl.store(out_cache_ptr + token, tl.minimum(value, nsa_index_topk), mask=mask)


def search_steps(batch_size):
    """Halvings needed to narrow [0, bs] to one request."""
    return max(batch_size, 1).bit_length()


def launch_bsearch(ends, seq_lens, nsa_index_topk, out_expanded, out_cache, n_tokens,
                   block_size=BLOCK_SIZE, num_warps=4):
    grid = (triton.cdiv(n_tokens, block_size),)
    expand_bsearch_kernel[grid](ends, seq_lens, out_expanded, out_cache, n_tokens,
                                ends.shape[0], search_steps(ends.shape[0]), nsa_index_topk,
                                BLOCK_SIZE=block_size, num_warps=num_warps)


def fill_triton_bsearch(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                        out_nsa_cache_seqlens):
    nsa_index_topk = check_topk(nsa_index_topk)  # a numpy integer becomes a Python int
    ends, n_tokens = prepare(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                             out_nsa_cache_seqlens)
    if n_tokens:
        launch_bsearch(ends, seq_lens, nsa_index_topk, out_seqlens_expanded,
                       out_nsa_cache_seqlens, n_tokens)
    return n_tokens
