"""Device-side helpers shared by the sync-free kernels (stages 5 and 6, extend).

Lengths reach these kernels untrusted (a CUDA-graph replay checks nothing). Before any sum,
each length is clamped to ``[0, 2**31]``: a negative (garbage) length must not move later rows
before the buffers, and a huge one must not wrap an int64 sum over the batch (a wrapped,
negative prefix once made a request loop ~2**53 times over masked stores). Valid lengths fit
int32, so neither clamp changes them.
"""
import triton
import triton.language as tl

#: Past any capacity, and small enough that a sum over any batch stays exact in 64 bits.
LENGTH_LIMIT = tl.constexpr(1 << 31)


@triton.jit
def clamp_length(value):
    """An int64 length clamped to ``[0, 2**31]`` (a typed limit: a bare 2**31 is uint32)."""
    return tl.minimum(tl.maximum(value, 0), tl.full((), LENGTH_LIMIT, tl.int64))


@triton.jit
def load_length(ptr, index, mask):
    """``ptr[index]`` as int64 (0 where masked off), clamped by ``clamp_length``."""
    return clamp_length(tl.load(ptr + index, mask=mask, other=0).to(tl.int64))


@triton.jit
def clamped_prefix(x, topk):
    """``sum_{v=1..x} min(v, topk)`` for int64 ``x``; 0 for ``x <= 0`` (the closed form of a
    prefix sum of lengths clipped at topk)."""
    x = tl.maximum(x, 0)
    low = tl.minimum(x, topk)
    return low * (low + 1) // 2 + (x - low) * topk
