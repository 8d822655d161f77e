"""Stage 6: the whole draft-extend metadata fill in one launch, no host sync.

Next to the two arrays, SGLang's draft-extend replay fills ``cache_seqlens_int32``,
``cu_seqlens_k``, ``nsa_cu_seqlens_k`` and two page tables. Program ``(r, c)`` owns request r
and column block c of its page-table rows. Prefix sums come from wide loads of the earlier
requests' lengths; the prefix of the clamped lengths uses a closed form, so no program waits
for another: for a request whose tokens see ``a, a+1, ...`` (``a = kv - qo + 1``), the sum of
``min(max(v, 0), topk)`` up to ``v = x`` is ``F(x) - F(a - 1)`` with
``F(x) = sum_{v=1..x} min(v, topk)``, evaluated in 64 bits.

Like SGLang, rows of CUDA-graph padding (``kv_len < qo_len``) get their lengths clamped at 0,
and page-table rows are written over their live prefix ``[:min(kv_len, width)]`` only.
Row offsets are 64-bit: rows x width passes 2^31 at 1M-token contexts.

This is the varlen draft-extend step of the journey. ``nsa_kernels.modes.draft_extend`` serves
both of SGLang's paths (static ``draft_extend_v2`` replay and varlen) with SGLang's exact
signature (``nsa_kernels.compat.sglang``), next to decode and target verify.

Trusted launches (``check=False``) stay inside the buffers whatever the lengths: negative
extend lengths count as 0 in every prefix (they cannot move rows before the buffers), each
request's work is bounded by the capacity left, and totals are 64-bit.
"""
from dataclasses import dataclass, fields

import torch
import triton
import triton.language as tl

from .. import device_helpers as dev
from ..launcher import LaunchPlan, bind_plan
from ..validation import (
    as_index,
    check_lengths,
    check_min_entries,
    check_no_overlap,
    check_outputs,
    check_power_of_two,
    clamped_prefix,
    first_invalid_request,
    host_lengths,
    status_buffer,
)
from ..validation import modes as modes_checks

#: The closed-form prefix the kernel uses (shown beside it in notebook 06).
_clamped_prefix = dev.clamped_prefix


@triton.jit(do_not_specialize=["r2t_stride", "pt_stride", "rpt_stride", "batch_size", "capacity",
                               "width", "nsa_index_topk"])
def full_pipeline_kernel(ext_ptr, seq_ptr, pool_idx_ptr, r2t_ptr, r2t_stride,
                         cache_seqlens_ptr, cu_seqlens_k_ptr, expanded_ptr, nsa_cache_ptr,
                         nsa_cu_ptr, page_table_ptr, pt_stride, real_page_table_ptr, rpt_stride,
                         status_ptr, batch_size, capacity, width, nsa_index_topk,
                         PAGE_SIZE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr,
                         BLOCK_N: tl.constexpr):
    r = tl.program_id(0)
    c = tl.program_id(1)
    topk = nsa_index_topk.to(tl.int64)
    tokens_before = tl.full((), 0, tl.int64)
    for r0 in range(0, r, BLOCK_R):
        request = r0 + tl.arange(0, BLOCK_R)
        tokens_before += tl.sum(dev.load_length(ext_ptr, request, request < r), 0)
    if (r == 0) & (c == 0):
        tl.store(cu_seqlens_k_ptr, 0)
        tl.store(nsa_cu_ptr, 0)
        if batch_size == 0:
            tl.store(status_ptr, 0)
            tl.store(status_ptr + 1, 0)
    if r < batch_size:
        qo_len = dev.load_length(ext_ptr, r, r < batch_size)
        kv_len = tl.load(seq_ptr + r).to(tl.int64)
        # Rows this request may write: bounded by the capacity left, never by the length alone
        # (a trusted garbage qo of 2**31 - 1 must not mean 2**31 loop steps).
        rows = tl.maximum(tl.minimum(qo_len, capacity - tokens_before), 0)
        if c == 0:
            kv_before = tl.full((), 0, tl.int64)
            nsa_before = tl.full((), 0, tl.int64)
            for r0 in range(0, r, BLOCK_R):
                request = r0 + tl.arange(0, BLOCK_R)
                earlier = request < r
                qo = dev.load_length(ext_ptr, request, earlier)
                kv = tl.load(seq_ptr + request, mask=earlier, other=0).to(tl.int64)
                kv_before += tl.sum(kv, 0)
                nsa_before += tl.sum(
                    dev.clamped_prefix(kv, topk) - dev.clamped_prefix(kv - qo, topk), 0)
            tl.store(cache_seqlens_ptr + r, kv_len.to(tl.int32))
            tl.store(cu_seqlens_k_ptr + r + 1, (kv_before + kv_len).to(tl.int32))
            first = kv_len - qo_len + 1
            for j0 in range(0, rows, BLOCK_N):
                j = j0 + tl.arange(0, BLOCK_N)
                row = tokens_before + j
                mask = (j < rows) & (row >= 0) & (row < capacity)
                value = tl.maximum(first + j, 0)
                tl.store(expanded_ptr + row, value.to(tl.int32), mask=mask)
                tl.store(nsa_cache_ptr + row, tl.minimum(value, topk).to(tl.int32), mask=mask)
                running = (
                    nsa_before + dev.clamped_prefix(first + j, topk)
                    - dev.clamped_prefix(first - 1, topk)
                )
                tl.store(nsa_cu_ptr + row + 1, running.to(tl.int32), mask=mask)
            if r == batch_size - 1:
                # 64-bit total; the int32 status saturates, the overflow flag is exact.
                total = tokens_before + qo_len
                tl.store(status_ptr, tl.minimum(total, 2147483647).to(tl.int32))
                tl.store(status_ptr + 1, (total > capacity).to(tl.int32))
        live_cols = tl.minimum(tl.maximum(kv_len, 0), width)
        col0 = c * BLOCK_N
        if col0 < live_cols:
            row_base = r2t_ptr + tl.load(pool_idx_ptr + r).to(tl.int64) * r2t_stride
            cols = col0 + tl.arange(0, BLOCK_N)
            vals = tl.load(row_base + cols, mask=cols < live_cols, other=0).to(tl.int32)
            pages = c * (BLOCK_N // PAGE_SIZE) + tl.arange(0, BLOCK_N // PAGE_SIZE)
            page_mask = pages * PAGE_SIZE < live_cols
            page_vals = (
                tl.load(row_base + pages * PAGE_SIZE, mask=page_mask, other=0).to(tl.int32)
                // PAGE_SIZE
            )
            for j0 in range(0, rows, BLOCK_Q):
                j = j0 + tl.arange(0, BLOCK_Q)
                row = (tokens_before + j).to(tl.int64)
                row_mask = (j < rows) & (row >= 0) & (row < capacity)
                tl.store(
                    page_table_ptr + row[:, None] * pt_stride + cols[None, :],
                    tl.broadcast_to(vals[None, :], (BLOCK_Q, BLOCK_N)),
                    mask=row_mask[:, None] & (cols < live_cols)[None, :],
                )
                tl.store(
                    real_page_table_ptr + row[:, None] * rpt_stride + pages[None, :],
                    tl.broadcast_to(page_vals[None, :], (BLOCK_Q, BLOCK_N // PAGE_SIZE)),
                    mask=row_mask[:, None] & page_mask[None, :],
                )


@dataclass
class PipelineBuffers:
    """Pre-allocated outputs, as a CUDA-graph runner holds them. All int32."""

    cache_seqlens_int32: torch.Tensor  # [max_bs]
    cu_seqlens_k: torch.Tensor  # [max_bs + 1]
    seqlens_expanded: torch.Tensor  # [capacity]
    nsa_cache_seqlens: torch.Tensor  # [capacity]
    nsa_cu_seqlens_k: torch.Tensor  # [capacity + 1]
    page_table_1: torch.Tensor  # [capacity, width]
    real_page_table: torch.Tensor  # [capacity, ceil(width / page_size)]

    @classmethod
    def allocate(cls, max_bs, capacity, width, page_size=64, device="cpu", fill=-1):
        def buf(*shape):
            return torch.full(shape, fill, dtype=torch.int32, device=device)

        return cls(
            buf(max_bs),
            buf(max_bs + 1),
            buf(capacity),
            buf(capacity),
            buf(capacity + 1),
            buf(capacity, width),
            buf(capacity, triton.cdiv(width, page_size)),
        )

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def capacity(self):
        return min(
            self.seqlens_expanded.shape[0],
            self.nsa_cache_seqlens.shape[0],
            self.nsa_cu_seqlens_k.shape[0] - 1,
            self.page_table_1.shape[0],
            self.real_page_table.shape[0],
        )


FLAT_BUFFERS = (
    "cache_seqlens_int32",
    "cu_seqlens_k",
    "seqlens_expanded",
    "nsa_cache_seqlens",
    "nsa_cu_seqlens_k",
)
BLOCK_R = 256
BLOCK_Q = 4
BLOCK_N = 512


def _check_pipeline(
    extend_seq_lens,
    seq_lens,
    req_pool_indices,
    req_to_token,
    nsa_index_topk,
    buffers,
    page_size,
    check,
):
    """Static checks (metadata only), plus the data checks with ``check=True``; returns the
    normalised ``(nsa_index_topk, page_size)``. Raises before anything is written."""
    nsa_index_topk = as_index("nsa_index_topk", nsa_index_topk, minimum=1)
    page_size = check_power_of_two("page_size", page_size, BLOCK_N)
    check_lengths(extend_seq_lens, seq_lens, nsa_index_topk)
    device = extend_seq_lens.device
    bs = extend_seq_lens.shape[0]
    modes_checks.input_vector("req_pool_indices", req_pool_indices, device, bs)
    if req_pool_indices.shape[0] != bs:
        raise ValueError(f"req_pool_indices must hold {bs} entries, got "
                         f"{req_pool_indices.shape[0]}")
    check_outputs(device, **{name: getattr(buffers, name) for name in FLAT_BUFFERS})
    for name in ("page_table_1", "real_page_table"):  # a strided column is a wrong kind here
        t = getattr(buffers, name)
        if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] > 1 and t.stride(1) != 1:
            raise TypeError(f"{name} must be a 2-D int32 tensor with unit column stride")
    modes_checks.output_table("page_table_1", buffers.page_table_1, device, 0, 0)
    width = buffers.page_table_1.shape[1]
    modes_checks.output_table("real_page_table", buffers.real_page_table, device, 0,
                              triton.cdiv(width, page_size))
    # Rows are read up to page_table_1's width: a narrower table would be read past its end.
    modes_checks.req_to_token_table(req_to_token, device, width)
    if buffers.cache_seqlens_int32.shape[0] < bs or buffers.cu_seqlens_k.shape[0] < bs + 1:
        raise ValueError(f"cache_seqlens_int32 / cu_seqlens_k are too short for bs = {bs}")
    check_min_entries("nsa_cu_seqlens_k", buffers.nsa_cu_seqlens_k, 1)
    check_no_overlap(buffers.as_dict(), {"extend_seq_lens": extend_seq_lens, "seq_lens": seq_lens,
                                         "req_pool_indices": req_pool_indices,
                                         "req_to_token": req_to_token})
    if check:
        ext, seq = host_lengths(extend_seq_lens, seq_lens)
        first_invalid_request(ext, seq, raise_error=True)
        ext, seq = torch.from_numpy(ext), torch.from_numpy(seq)
        modes_checks.lengths_in_int32("seq_lens", seq)
        modes_checks.prefix_in_int32("cu_seqlens_k", seq)
        topk = nsa_index_topk
        per_request = clamped_prefix(seq, topk) - clamped_prefix(seq - ext, topk)
        modes_checks.prefix_in_int32("nsa_cu_seqlens_k", torch.from_numpy(per_request))
        n_tokens = int(ext.sum())
        if n_tokens > buffers.capacity:
            raise ValueError(
                f"the buffers hold {buffers.capacity} tokens but N = {n_tokens} are needed"
            )
        modes_checks.pool_rows(req_pool_indices, req_to_token, bs, torch.clamp(seq, max=width))
    return nsa_index_topk, page_size


def plan_full_pipeline(
    extend_seq_lens,
    seq_lens,
    req_pool_indices,
    req_to_token,
    nsa_index_topk,
    buffers,
    page_size,
    status,
):
    """The one launch's ``LaunchPlan``; host-known sizes only."""
    bs = extend_seq_lens.shape[0]
    width = buffers.page_table_1.shape[1]
    grid = (max(bs, 1), max(triton.cdiv(width, BLOCK_N), 1))
    args = (
        extend_seq_lens,
        seq_lens,
        req_pool_indices,
        req_to_token,
        req_to_token.stride(0),
        buffers.cache_seqlens_int32,
        buffers.cu_seqlens_k,
        buffers.seqlens_expanded,
        buffers.nsa_cache_seqlens,
        buffers.nsa_cu_seqlens_k,
        buffers.page_table_1,
        buffers.page_table_1.stride(0),
        buffers.real_page_table,
        buffers.real_page_table.stride(0),
        status,
        bs,
        buffers.capacity,
        width,
        nsa_index_topk,
    )
    kwargs = dict(PAGE_SIZE=page_size, BLOCK_R=BLOCK_R, BLOCK_Q=BLOCK_Q, BLOCK_N=BLOCK_N)
    return LaunchPlan(full_pipeline_kernel, grid, args, kwargs)


def _checked_plan(
    extend_seq_lens,
    seq_lens,
    req_pool_indices,
    req_to_token,
    nsa_index_topk,
    buffers,
    page_size,
    status,
    check,
):
    """``(status, plan)``: every check (the data checks too with ``check``), then the plan."""
    nsa_index_topk, page_size = _check_pipeline(
        extend_seq_lens,
        seq_lens,
        req_pool_indices,
        req_to_token,
        nsa_index_topk,
        buffers,
        page_size,
        check,
    )
    status = status_buffer(status, seq_lens.device)
    check_no_overlap({"status": status}, buffers.as_dict())
    return status, plan_full_pipeline(
        extend_seq_lens,
        seq_lens,
        req_pool_indices,
        req_to_token,
        nsa_index_topk,
        buffers,
        page_size,
        status,
    )


def launch_full_pipeline(
    extend_seq_lens,
    seq_lens,
    req_pool_indices,
    req_to_token,
    nsa_index_topk,
    buffers,
    page_size=64,
    status=None,
    *,
    check=False,
):
    """Fill every buffer of ``buffers`` in one launch; returns the device status ``[N, overflow]``.

    ``check=True`` adds data checks (one device-to-host copy). Without it, lengths and pool
    indices are trusted, as in a CUDA-graph replay; writes still never leave the buffers.
    """
    status, plan = _checked_plan(
        extend_seq_lens,
        seq_lens,
        req_pool_indices,
        req_to_token,
        nsa_index_topk,
        buffers,
        page_size,
        status,
        check,
    )
    plan()
    return status


class FullPipelineFill:
    """Bound once to static buffers, then one direct launch per call (see ``ZeroSyncFill``)."""

    def __init__(
        self,
        extend_seq_lens,
        seq_lens,
        req_pool_indices,
        req_to_token,
        nsa_index_topk,
        buffers,
        page_size=64,
        status=None,
        *,
        check=False,
    ):
        self.status, plan = _checked_plan(
            extend_seq_lens,
            seq_lens,
            req_pool_indices,
            req_to_token,
            nsa_index_topk,
            buffers,
            page_size,
            status,
            check,
        )
        self.launch = bind_plan(plan)

    def __call__(self):
        self.launch()
        return self.status
