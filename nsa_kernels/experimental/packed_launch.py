"""Retired: zero_sync's packed entry points (one pointer, four byte offsets from it).

The idea: Triton's launcher asks the driver about every pointer argument on every launch
(~2.3 µs each on an H100 VM), while integers cost next to nothing; so pass the
status pointer and the four other buffers as byte offsets from it.

What it measured (H100, host time per launch, through ``BoundLaunch``, the direct call of
Triton's compiled launcher that preceded ``launcher.DriverLaunch``): 17.2 µs packed against
14.4 µs with five pointers on one VM, ~0.8 µs per pointer on another; in the published report
``ZeroSyncFill(packed=True)`` was never faster than the plain one; measured again beside the
new launch paths (notebook 05, both through ``kernel[grid](...)``, draft_extend bs 32): 30.8 µs
of host time packed against 29.8 µs with five pointers. It did not pay, and
``cuLaunchKernel`` with a parameter array packed once (``launcher.DriverLaunch``) removes the
per-pointer query altogether, so the packed entry points left the package's hot paths. They
stay here, tested (tests/test_launcher.py), for notebook 05's story.
"""
import torch
import triton
import triton.language as tl

from ..launcher import LaunchPlan
from ..stages.stage5_zero_sync import (
    _request_parallel,
    _token_parallel,
    zero_sync_request_kernel,
    zero_sync_token_kernel,
)

# Offsets carry OFFSET_BIAS so that Triton always types them as 64-bit (an int below 2**31
# would be typed i32: another compiled variant).
OFFSET_BIAS = tl.constexpr(1 << 62)  # a constexpr: kernels may read it


@triton.jit
def _at(base_ptr, biased_offset, DTYPE: tl.constexpr):
    byte_ptr = base_ptr.to(tl.pointer_type(tl.int8), bitcast=True)
    return (byte_ptr + (biased_offset - OFFSET_BIAS)).to(tl.pointer_type(DTYPE), bitcast=True)


@triton.jit(do_not_specialize=["ext_at", "seq_at", "expanded_at", "cache_at", "batch_size",
                               "capacity", "nsa_index_topk"])
def zero_sync_request_packed_kernel(status_ptr, ext_at, seq_at, expanded_at, cache_at, batch_size,
                                    capacity, nsa_index_topk, EXT_DTYPE: tl.constexpr,
                                    SEQ_DTYPE: tl.constexpr, CLAMP_PADDED: tl.constexpr,
                                    BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr,
                                    PREFIX_BLOCK: tl.constexpr):
    _request_parallel(_at(status_ptr, ext_at, EXT_DTYPE), _at(status_ptr, seq_at, SEQ_DTYPE),
                      _at(status_ptr, expanded_at, tl.int32), _at(status_ptr, cache_at, tl.int32),
                      status_ptr, batch_size, capacity, nsa_index_topk, CLAMP_PADDED, BLOCK_R,
                      BLOCK_Q, PREFIX_BLOCK)


@triton.jit(do_not_specialize=["ext_at", "seq_at", "expanded_at", "cache_at", "batch_size",
                               "capacity", "nsa_index_topk"])
def zero_sync_token_packed_kernel(status_ptr, ext_at, seq_at, expanded_at, cache_at, batch_size,
                                  capacity, nsa_index_topk, EXT_DTYPE: tl.constexpr,
                                  SEQ_DTYPE: tl.constexpr, CLAMP_PADDED: tl.constexpr,
                                  BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    _token_parallel(_at(status_ptr, ext_at, EXT_DTYPE), _at(status_ptr, seq_at, SEQ_DTYPE),
                    _at(status_ptr, expanded_at, tl.int32), _at(status_ptr, cache_at, tl.int32),
                    status_ptr, batch_size, capacity, nsa_index_topk, CLAMP_PADDED, BLOCK_T,
                    BLOCK_R)


_TL_DTYPES = {torch.int32: tl.int32, torch.int64: tl.int64}


def pack_plan(kernel, grid, args, kwargs):
    """The same launch with one pointer (``status``) and four biased byte offsets from it."""
    ext, seq, out_expanded, out_cache, status = args[:5]
    packed = {zero_sync_request_kernel: zero_sync_request_packed_kernel,
              zero_sync_token_kernel: zero_sync_token_packed_kernel}[kernel]
    at = [
        t.data_ptr() - status.data_ptr() + OFFSET_BIAS.value
        for t in (ext, seq, out_expanded, out_cache)
    ]
    return LaunchPlan(
        packed,
        grid,
        (status, *at, *args[5:]),
        dict(kwargs, EXT_DTYPE=_TL_DTYPES[ext.dtype], SEQ_DTYPE=_TL_DTYPES[seq.dtype]),
    )
