"""MTP draft decode (``speculative_num_steps`` > 1): the decode metadata computed once and
written into every draft backend's buffers, in one launch.

SGLang 0.5.23 (``DeepseekSparseAttnMultiStepBackend.init_forward_metadata_out_graph`` and
``dsa/dsa_backend_mtp_precompute.py::_precompute_decode_mode``) runs the fused decode kernel into
fresh ``torch.empty`` temporaries (a ``[bs, max_len]`` page table among them), then copies them
whole, full width, into each backend's graph buffers: ``fused_metadata_copy_multi_cuda`` for
the first three backends, ``fused_metadata_copy_cuda`` once per further backend (the one-backend
copy for every backend when ``speculative_num_steps <= 3``). That is 1 decode launch plus K
copy launches for K <= 2 draft backends, 1 + 1 + (K - 3) from K = 3 on, and ``bs x max_len``
entries read from the temporary and written per backend whatever the lengths.

Here one launch computes the decode metadata (``modes.decode``'s contract and tiles) and stores
it into the K backends' buffers::

    bufs = [BackendBuffers.from_sglang(b.decode_cuda_graph_metadata[bs]) for b in backends]
    plan_mtp_copy(seq_lens, req_pool_indices, req_to_token, bufs, bs, max_len, dsa_index_topk,
                  physical_page_size, check=False) -> LaunchPlan
    launch_mtp_copy(...same...)            # check, plan, launch
    MTPCopyFill(...same...)()              # bound once: one launch per step

Per backend: ``cache_seqlens_int32[:bs]``, ``cu_seqlens_k[:bs + 1]``, ``dsa_cache_seqlens_int32
[:bs]``, ``dsa_cu_seqlens_k[:bs + 1]``, and page-table row b over its live prefix only:
``page_table_1[b, :min(kv, max_len)]`` and ``real_page_table[b, :ceil(min(kv, max_len) /
page)]``. Entries of a row beyond its live prefix are **not written**. SGLang writes them,
with the contents of an uninitialised temporary on its fused path (stale ``req_to_token``
entries on its torch path), so no reader can depend on them; its fused decode kernel documents
the same contract ("each page-table row is written only over its live prefix ([:cache_seqlens])
... consumers must bound reads by cache_seqlens", ``kpool_metadata/decode.py``).
``cu_seqlens_k[0]`` and ``dsa_cu_seqlens_k[0]`` are written (0), where SGLang's copy leaves the
0 its capture wrote. FlashMLA metadata, DeepGEMM's schedule and the
top-k plan stay SGLang's, per backend.

Pointers: each output kind's K base addresses are packed once, at plan time, into one int64
device table (``[6, K]``), so the launch takes one pointer for all backends and the bound fill
launches with parameters packed once (``launcher``'s driver path). The tensors must stay alive
as long as the fill (it holds them). Every backend's page tables must share one row stride (a
graph runner's per-bs views of same-shaped buffers do).

Predicted cost at bs = 32, max_len = 8192, page 64, K = 3, mean live length L: one launch
(SGLang: two, the fused decode and the multi-backend copy, plus a ``[bs, max_len]``
temporary). It reads the live ``req_to_token`` prefixes once from DRAM (4 x bs x L bytes;
re-loaded per backend from L1/L2) and writes them K times (4 x K x bs x L, plus 1/64 for the
real table). SGLang's decode writes the temporary's live prefixes (4 x bs x L), then its copy
reads the whole temporary (4 x bs x max_len = 1 MiB) and writes it to every backend (3 MiB at
K = 3), whatever L. At L = 2048: 0.25 MiB read + 0.75 MiB written, against SGLang's 1.25 MiB
read + 3.25 MiB written and one more launch.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..launcher import LaunchPlan, PlannedFill
from ..validation.core import check_no_overlap
from .decode import check_decode
from .reference import decode_reference
from .tiles import (
    flat_blocks,
    grid_size,
    load_requests,
    pick_blocks,
    tile_position,
    write_flat,
    write_page_rows,
)

#: Most draft backends one launch serves (SGLang keeps ``speculative_num_steps - 1``).
MAX_BACKENDS = 16
#: Rows of the pointer table, in this order.
TABLE_ROWS = ("cache_seqlens_int32", "cu_seqlens_k", "page_table_1", "dsa_cache_seqlens_int32",
              "dsa_cu_seqlens_k", "real_page_table")


@dataclass
class BackendBuffers:
    """One draft backend's decode buffers, under SGLang's ``DSAMetadata`` names (int32).
    ``real_page_table`` is ``None`` at page size 1 (the real table is ``page_table_1``)."""

    cache_seqlens_int32: torch.Tensor
    cu_seqlens_k: torch.Tensor
    page_table_1: torch.Tensor
    dsa_cache_seqlens_int32: torch.Tensor
    dsa_cu_seqlens_k: torch.Tensor
    real_page_table: torch.Tensor | None = None

    @classmethod
    def from_sglang(cls, metadata):
        """The buffers of an SGLang ``DSAMetadata`` (a backend's ``decode_cuda_graph_metadata
        [bs]``), by attribute name."""
        return cls(*(getattr(metadata, name) for name in TABLE_ROWS))


@triton.jit
def _pointer(table_ptr, row, k, n_backends):
    return tl.load(table_ptr + row * n_backends + k).to(tl.pointer_type(tl.int32))


@triton.jit(do_not_specialize=["r2t_stride", "pt_stride", "rpt_stride", "bs", "max_len", "topk",
                               "n_col_blocks"])
def mtp_copy_kernel(seq_ptr, pool_idx_ptr, r2t_ptr, r2t_stride, table_ptr, pt_stride, rpt_stride,
                    bs, max_len, topk, n_col_blocks, N_BACKENDS: tl.constexpr,
                    HAS_PAGE_TABLE_1: tl.constexpr, PAGE_SIZE: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                    BLOCK_J: tl.constexpr):
    if tl.program_id(0) == 0:
        # Decode's flat arrays (qo = 1, extra = 0) once per backend: each pass re-reads bs
        # lengths from L1/L2, a few bytes per request.
        for k in tl.static_range(N_BACKENDS):
            cache_ptr = _pointer(table_ptr, 0, k, N_BACKENDS)
            cu_ptr = _pointer(table_ptr, 1, k, N_BACKENDS)
            dsa_ptr = _pointer(table_ptr, 3, k, N_BACKENDS)
            dsa_cu_ptr = _pointer(table_ptr, 4, k, N_BACKENDS)
            write_flat(seq_ptr, seq_ptr, cache_ptr, cu_ptr, dsa_ptr, dsa_ptr, dsa_cu_ptr, cu_ptr,
                       cu_ptr, 0, 0, bs, bs, 1, 1, 0, topk, False, False, False, False, False,
                       CHUNK, BLOCK_J)
    else:
        first, col0, _ = tile_position(n_col_blocks, 1, BLOCK_B, BLOCK_N)
        requests = first + tl.arange(0, BLOCK_B)
        kv, pool = load_requests(seq_ptr, pool_idx_ptr, requests, bs)
        live = tl.minimum(tl.maximum(kv, 0), max_len)
        for k in tl.static_range(N_BACKENDS):
            pt_ptr = _pointer(table_ptr, 2, k, N_BACKENDS)
            rpt_ptr = _pointer(table_ptr, 5, k, N_BACKENDS)
            write_page_rows(pool, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride,
                            live, requests.to(tl.int64), 1, 1, bs, col0, HAS_PAGE_TABLE_1,
                            PAGE_SIZE, BLOCK_N)


def check_mtp_copy(seq_lens, req_pool_indices, req_to_token, backends, bs, max_len,
                   dsa_index_topk, physical_page_size, check=False):
    """Each backend's buffers through decode's static checks, no two backends sharing bytes,
    one row stride for all page tables; with ``check=True`` the data checks, once.
    Returns ``(bs, max_len, topk, page_size, has_pt1, pointer rows, pt_stride, rpt_stride)``."""
    if isinstance(backends, BackendBuffers) or not isinstance(backends, (list, tuple)):
        raise TypeError(f"backends must be a list of BackendBuffers, got "
                        f"{type(backends).__name__}")
    if not 1 <= len(backends) <= MAX_BACKENDS:
        raise ValueError(f"backends must hold 1..{MAX_BACKENDS} buffer sets, got {len(backends)}")
    rows, strides, spans = [[] for _ in TABLE_ROWS], None, {}
    for k, b in enumerate(backends):
        if not isinstance(b, BackendBuffers):
            raise TypeError(f"backends[{k}] must be a BackendBuffers, got {type(b).__name__}")
        try:
            bs_, max_len_, topk, pt, rpt, has_pt1, page_size = check_decode(
                seq_lens, req_pool_indices, req_to_token, b.cache_seqlens_int32, b.cu_seqlens_k,
                b.page_table_1, b.dsa_cache_seqlens_int32, b.dsa_cu_seqlens_k, b.real_page_table,
                bs, max_len, dsa_index_topk, physical_page_size)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"backends[{k}]: {exc}") from None
        if not has_pt1:
            raise ValueError(f"backends[{k}]: page_table_1 is required (SGLang's multi-step "
                             "copy writes it)")
        these = (pt.stride(0), rpt.stride(0))
        if strides is not None and these != strides:
            raise ValueError(f"backends[{k}]: page-table row strides {these} differ from "
                             f"backends[0]'s {strides}: one launch needs one stride")
        strides = these
        tensors = (b.cache_seqlens_int32, b.cu_seqlens_k, pt, b.dsa_cache_seqlens_int32,
                   b.dsa_cu_seqlens_k, rpt)
        for row, t in zip(rows, tensors):
            row.append(t)
        for name, t in zip(TABLE_ROWS, tensors):
            if name == "real_page_table" and page_size == 1:
                continue
            spans[f"backends[{k}].{name}"] = t
    names = list(spans)
    for i, name in enumerate(names):  # backends must not share bytes with each other either
        check_no_overlap({name: spans[name]}, {n: spans[n] for n in names[i + 1:]})
    if check:  # the inputs are shared: their data checks run once
        decode_reference(seq_lens, req_pool_indices, req_to_token, bs_, max_len_, topk,
                         page_size)
    return bs_, max_len_, topk, page_size, has_pt1, rows, strides


def plan_mtp_copy(seq_lens, req_pool_indices, req_to_token, backends, bs, max_len,
                  dsa_index_topk, physical_page_size, check=False) -> LaunchPlan:
    """The one launch; packs the backends' addresses into one device table (one host-to-device
    copy, at plan time only)."""
    bs, max_len, topk, page_size, has_pt1, rows, (pt_stride, rpt_stride) = check_mtp_copy(
        seq_lens, req_pool_indices, req_to_token, backends, bs, max_len, dsa_index_topk,
        physical_page_size, check)
    table = torch.tensor([[t.data_ptr() for t in row] for row in rows], dtype=torch.int64,
                         device=seq_lens.device)
    block_b, block_n = pick_blocks(max_len, page_size, has_pt1, bs)
    programs, col_blocks = grid_size(bs, max_len, block_b, block_n)
    chunk, block_j = flat_blocks(bs, 1)
    args = (seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0), table, pt_stride,
            rpt_stride, bs, max_len, topk, col_blocks)
    kwargs = dict(N_BACKENDS=len(backends), HAS_PAGE_TABLE_1=has_pt1, PAGE_SIZE=page_size,
                  BLOCK_B=block_b, BLOCK_N=block_n, CHUNK=chunk, BLOCK_J=block_j)
    return LaunchPlan(mtp_copy_kernel, (programs,), args, kwargs)


def launch_mtp_copy(*args, check=False, **kwargs):
    """Check, plan and launch (Triton's normal dispatch); arguments as ``plan_mtp_copy``."""
    plan_mtp_copy(*args, check=check, **kwargs)()


class MTPCopyFill(PlannedFill):
    """Bound once to the draft backends' static buffers of one batch size; each call is one
    launch. It holds the buffers: the packed table points at them."""

    planner = staticmethod(plan_mtp_copy)

    def __init__(self, seq_lens, req_pool_indices, req_to_token, backends, *args, check=False,
                 **kwargs):
        super().__init__(seq_lens, req_pool_indices, req_to_token, backends, *args, check=check,
                         **kwargs)
        self.backends = tuple(backends)
