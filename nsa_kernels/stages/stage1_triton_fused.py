"""Stage 1: one fused Triton kernel; each token finds its request by a linear scan.

Prefix offsets stay on the device (``torch.cumsum``); one host sync reads the lengths back
for N and validation; the kernel writes freshly allocated outputs, then ``.copy_`` moves them
into the metadata buffers, as the seed's first Triton version did.
"""
import torch
import triton
import triton.language as tl

from ..validation import check_static, check_topk, host_lengths, validate
from .stage0_python_baseline import copy_prefix

BLOCK_SIZE = 256


@triton.jit
def expand_linear_scan_kernel(ends_ptr, seq_lens_ptr, out_expanded_ptr, out_cache_ptr,
                              n_tokens, batch_size, nsa_index_topk, BLOCK_SIZE: tl.constexpr):
    token = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = token < n_tokens
    # A token's request is the number of requests that end at or before it: O(bs) per token.
    request = tl.zeros([BLOCK_SIZE], dtype=tl.int32)
    for i in range(0, batch_size):
        request += (token >= tl.load(ends_ptr + i)).to(tl.int32)
    end = tl.load(ends_ptr + request, mask=mask, other=0)
    kv_len = tl.load(seq_lens_ptr + request, mask=mask, other=0)
    # kv - qo + 1 + (token - start), with start = end - qo
    value = (kv_len - end + 1 + token).to(tl.int32)
    tl.store(out_expanded_ptr + token, value, mask=mask)
    tl.store(out_cache_ptr + token, tl.minimum(value, nsa_index_topk), mask=mask)


def prepare(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
            out_nsa_cache_seqlens):
    """Validate (one host sync) and build the device prefix ends; returns ``(ends, N)``."""
    check_static(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                 out_nsa_cache_seqlens)
    ends = torch.cumsum(extend_seq_lens, 0)
    n_tokens = validate(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                        out_nsa_cache_seqlens, lengths=host_lengths(extend_seq_lens, seq_lens))
    return ends, n_tokens


def launch_linear_scan(ends, seq_lens, nsa_index_topk, out_expanded, out_cache, n_tokens,
                       block_size=BLOCK_SIZE):
    grid = (triton.cdiv(n_tokens, block_size),)
    expand_linear_scan_kernel[grid](ends, seq_lens, out_expanded, out_cache, n_tokens,
                                    ends.shape[0], nsa_index_topk, BLOCK_SIZE=block_size)


def fill_triton_fused(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                      out_nsa_cache_seqlens):
    nsa_index_topk = check_topk(nsa_index_topk)  # a numpy integer becomes a Python int
    ends, n_tokens = prepare(extend_seq_lens, seq_lens, nsa_index_topk, out_seqlens_expanded,
                             out_nsa_cache_seqlens)
    if n_tokens == 0:
        return 0
    seqlens_expanded = torch.empty(n_tokens, dtype=torch.int32, device=seq_lens.device)
    nsa_cache_seqlens = torch.empty_like(seqlens_expanded)
    launch_linear_scan(ends, seq_lens, nsa_index_topk, seqlens_expanded, nsa_cache_seqlens,
                       n_tokens)
    copy_prefix(out_seqlens_expanded, seqlens_expanded)
    copy_prefix(out_nsa_cache_seqlens, nsa_cache_seqlens)
    return n_tokens
