"""PAGED prefill metadata in one launch: what SGLang 0.5.23's ``init_forward_metadata`` builds
for an EXTEND batch on Hopper with bf16 KV (``TopkTransformMethod.PAGED``), and RAGGED's extras.

SGLang builds these eagerly (about 5·bs + 17 launches, Python loops over the batch). Here one
launch writes all of them, with no host sync: every shape comes from host ints SGLang's forward
batch already holds (``seq_lens_cpu``, ``extend_seq_lens_cpu``; see ``prefill_paged_metadata``).
The values are ``prefill_paged_reference``'s (SGLang's names, formulas in that module).

Launchers (all int32 outputs; ``bs``, ``N = sum(extend_seq_lens)``, ``W = max_seqlen_k``)::

    buffers = PagedPrefillBuffers.allocate(bs, n_tokens, max_seqlen_k, physical_page_size,
                                           with_cu_seqlens_q=True, n_flat=None, device=...)
    plan_prefill_paged(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, buffers,
                       max_seqlen_k, dsa_index_topk, physical_page_size, status=None,
                       check=False, zero_tail=False) -> LaunchPlan   # static checks, no sync
    launch_prefill_paged(...same...) -> status              # check, plan, launch
    PagedPrefillFill(...same...)() -> status                # bound once (launcher.bind_plan)
    prefill_paged_metadata(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                           dsa_index_topk, physical_page_size, *, seq_lens_cpu,
                           extend_seq_lens_cpu, ragged=False, mha_fp8_dequant=False,
                           check=False) -> dict

``prefill_paged_metadata`` allocates and returns SGLang's ``DSAMetadata`` fields by name:
``page_table_1``, ``real_page_table``, ``cache_seqlens_int32``, ``cu_seqlens_k``,
``cu_seqlens_q``, ``dsa_seqlens_expanded``, ``dsa_cache_seqlens_int32``, ``dsa_cu_seqlens_k``,
``indexer_k_start_end`` (a tuple ``(ks, ke)``), ``token_to_batch_idx``, ``topk_indices_offset``
(``None`` unless ``ragged``) and ``page_table_1_flattened`` (as SGLang: only with a cached
prefix and ``ragged`` or ``mha_fp8_dequant``, the MHA path dequantizing an FP8 pool), the host
ints ``max_seqlen_q``, ``max_seqlen_k``, and the device ``status``. As in SGLang,
``cu_seqlens_q`` *is* ``cu_seqlens_k`` when no request has a cached prefix (``seq_lens ==
extend_seq_lens``), ``real_page_table`` *is* ``page_table_1`` at page size 1, and
``topk_indices_offset`` holds ``ks``'s values: here it is the same tensor (SGLang builds the two
separately; both are only read). What stays SGLang's: ``dsa_cu_seqlens_q`` (a view of its
cached arange), the top-k v2 plan, FlashMLA metadata, the context-parallel and DP-padding
variants.

Layout: the extend kernel (``modes.extend.extend_metadata_kernel``, called as a device function)
writes the per-token arrays, ``cu_seqlens_k``, the optional flattened table and the status on
its ``(groups, splits)`` grid; the same programs then walk the page tiles of ``page_table_1`` /
``real_page_table`` (``tiles.write_page_rows``, tiles strided over the programs), and program
``(0, 0)`` writes ``cache_seqlens_int32`` and ``cu_seqlens_q`` in chunks with a running carry.
Rows and pool offsets are int64. A request whose pool row lies outside ``req_to_token`` (only
garbage with ``check=False``) gets no page row written; the status (``extend``'s layout: ``[N,
sum kv, flags, first invalid request]``) reports it. Without ``page_table_1_flattened`` its
capacity is 0 and the ``FLAT_OVERFLOW`` flag means nothing (``decode_status`` drops it).

Predicted cost (one launch; bytes at bs = 32, W = 8192, page 64, N = 32 x 512, int32): reads
``req_to_token``'s window once (1 MiB) plus 3 x 4 x bs for the lengths; writes ``page_table_1``
(1 MiB), ``real_page_table`` (16 KiB) and 6 per-token arrays (6 x 64 KiB): ~2.4 MiB, a few µs
at H200 bandwidth, against SGLang's ~5·bs + 17 = 177 launches per step (its RAGGED branch adds
a host sync: ``repeat_interleave`` over device repeats for ``topk_indices_offset``).
"""
from dataclasses import dataclass, fields

import torch
import triton
import triton.language as tl

from ..launcher import LaunchPlan, bind_plan
from ..validation import extend as extend_checks
from ..validation import modes as checks
from ..validation.core import check_no_overlap
from . import extend as ext
from .prefill_paged_reference import prefill_paged_reference
from .tiles import load_requests, pick_blocks, write_page_rows

#: Whether ``modes.extend``'s kernel takes the sizes the host expects (``expected_tokens``,
#: ``expected_flat``) and flags device totals that differ in its status; the call below passes
#: them where it does.
EXTEND_JUDGES_SIZES = "expected_tokens" in ext.extend_metadata_kernel.arg_names


@triton.jit(do_not_specialize=["seq_ptr", "ext_ptr", "pool_ptr", "r2t_ptr", "r2t_stride",
                               "pool_rows", "width", "expanded_ptr", "dsa_cache_ptr", "cu_k_ptr",
                               "dsa_cu_ptr", "ks_ptr", "ke_ptr", "batch_idx_ptr", "flat_ptr",
                               "status_ptr", "batch_size", "token_capacity", "flat_capacity",
                               "dsa_index_topk", "cache_ptr", "cu_q_ptr", "pt_ptr", "pt_stride",
                               "rpt_ptr", "rpt_stride", "max_seqlen_k", "n_col_blocks",
                               "n_page_tiles", "expected_tokens", "expected_flat"])
def prefill_paged_kernel(seq_ptr, ext_ptr, pool_ptr, r2t_ptr, r2t_stride, pool_rows, width,
                         expanded_ptr, dsa_cache_ptr, cu_k_ptr, dsa_cu_ptr, ks_ptr, ke_ptr,
                         batch_idx_ptr, flat_ptr, status_ptr, batch_size, token_capacity,
                         flat_capacity, dsa_index_topk, cache_ptr, cu_q_ptr, pt_ptr, pt_stride,
                         rpt_ptr, rpt_stride, max_seqlen_k, n_col_blocks, n_page_tiles,
                         expected_tokens, expected_flat, EXTEND_JUDGES_SIZES: tl.constexpr,
                         HAS_CU_Q: tl.constexpr, ZERO_TAIL: tl.constexpr,
                         HAS_PAGE_TABLE_1: tl.constexpr,
                         PAGE_SIZE: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_SCAN: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr,
                         BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    if EXTEND_JUDGES_SIZES:  # it flags device totals that differ from the expected sizes
        ext.extend_metadata_kernel(seq_ptr, ext_ptr, pool_ptr, r2t_ptr, r2t_stride, pool_rows,
                                   width, expanded_ptr, dsa_cache_ptr, cu_k_ptr, dsa_cu_ptr,
                                   ks_ptr, ke_ptr, batch_idx_ptr, flat_ptr, status_ptr,
                                   batch_size, token_capacity, flat_capacity, dsa_index_topk,
                                   expected_tokens, expected_flat, BLOCK_R, BLOCK_SCAN, BLOCK_T,
                                   BLOCK_F)
    else:
        ext.extend_metadata_kernel(seq_ptr, ext_ptr, pool_ptr, r2t_ptr, r2t_stride, pool_rows,
                                   width, expanded_ptr, dsa_cache_ptr, cu_k_ptr, dsa_cu_ptr,
                                   ks_ptr, ke_ptr, batch_idx_ptr, flat_ptr, status_ptr,
                                   batch_size, token_capacity, flat_capacity, dsa_index_topk,
                                   BLOCK_R, BLOCK_SCAN, BLOCK_T, BLOCK_F)
    program = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    n_programs = tl.num_programs(0) * tl.num_programs(1)
    if program == 0:
        # Per-request arrays in one pass with a running carry: O(bs) in all (a prefix per
        # group would re-read every earlier request).
        if HAS_CU_Q:
            tl.store(cu_q_ptr, 0)
        q_before = tl.full((), 0, tl.int64)
        tokens = tl.full((), 0, tl.int64)
        entries = tl.full((), 0, tl.int64)
        for b0 in range(0, batch_size, BLOCK_SCAN):
            request = b0 + tl.arange(0, BLOCK_SCAN)
            live = request < batch_size
            kv = tl.load(seq_ptr + request, mask=live, other=0)
            tl.store(cache_ptr + request, kv.to(tl.int32), mask=live)
            if HAS_CU_Q or ZERO_TAIL:
                qo = tl.load(ext_ptr + request, mask=live, other=0).to(tl.int64)
                if HAS_CU_Q:
                    tl.store(cu_q_ptr + 1 + request,
                             (q_before + tl.cumsum(qo, 0)).to(tl.int32), mask=live)
                    q_before += tl.sum(qo, 0)
                # What the extend kernel counts: lengths clipped to [0, 2**31].
                tokens += tl.sum(tl.minimum(tl.maximum(qo, 0), 2147483648), 0)
                entries += tl.sum(tl.minimum(tl.maximum(kv.to(tl.int64), 0), 2147483648), 0)
        if ZERO_TAIL:
            _zero_tails(tokens, entries, expanded_ptr, dsa_cache_ptr, dsa_cu_ptr, ks_ptr,
                        ke_ptr, batch_idx_ptr, flat_ptr, token_capacity, flat_capacity,
                        BLOCK_SCAN)
    # The whole [bs, max_seqlen_k] window of each request's req_to_token row, as SGLang's
    # dense gather; tiles strided over every program of the grid.
    for tile in range(program, n_page_tiles, n_programs):
        tile_b = tile // n_col_blocks
        col0 = (tile - tile_b * n_col_blocks) * BLOCK_N
        requests = tile_b * BLOCK_B + tl.arange(0, BLOCK_B)
        _, pool = load_requests(seq_ptr, pool_ptr, requests, batch_size)
        readable = (requests < batch_size) & (pool >= 0) & (pool < pool_rows)
        live = tl.where(readable, max_seqlen_k, 0).to(tl.int64)
        write_page_rows(pool, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride, live,
                        requests.to(tl.int64), 1, 1, batch_size, col0, HAS_PAGE_TABLE_1,
                        PAGE_SIZE, BLOCK_N)


@triton.jit
def _zero_tails(tokens, entries, expanded_ptr, dsa_cache_ptr, dsa_cu_ptr, ks_ptr, ke_ptr,
                batch_idx_ptr, flat_ptr, token_capacity, flat_capacity, BLOCK: tl.constexpr):
    """Zeros past what the device lengths fill: buffers sized from host mirrors that promise
    more than the device holds then hold no uninitialised entries (the status says by how much
    they differ)."""
    for t0 in range(tl.minimum(tokens, token_capacity), token_capacity, BLOCK):
        row = t0 + tl.arange(0, BLOCK)
        mask = row < token_capacity
        zero = tl.zeros((BLOCK,), tl.int32)
        tl.store(expanded_ptr + row, zero, mask=mask)
        tl.store(dsa_cache_ptr + row, zero, mask=mask)
        tl.store(dsa_cu_ptr + 1 + row, zero, mask=mask)
        tl.store(ks_ptr + row, zero, mask=mask)
        tl.store(ke_ptr + row, zero, mask=mask)
        tl.store(batch_idx_ptr + row, zero, mask=mask)
    for f0 in range(tl.minimum(entries, flat_capacity), flat_capacity, BLOCK):
        entry = f0 + tl.arange(0, BLOCK)
        tl.store(flat_ptr + entry, tl.zeros((BLOCK,), tl.int32), mask=entry < flat_capacity)


@dataclass
class PagedPrefillBuffers:
    """The outputs (int32), under SGLang's ``DSAMetadata`` names; ``indexer_k_start`` /
    ``indexer_k_end`` are ``indexer_k_start_end``'s two halves. Optional: ``real_page_table``
    (``None`` at page size 1, where it is ``page_table_1``), ``cu_seqlens_q`` (``None``: not
    written, the caller reuses ``cu_seqlens_k`` as SGLang does without cached prefixes) and
    ``page_table_1_flattened`` (RAGGED with a cached prefix only)."""

    page_table_1: torch.Tensor
    real_page_table: torch.Tensor | None
    cache_seqlens_int32: torch.Tensor
    cu_seqlens_k: torch.Tensor
    cu_seqlens_q: torch.Tensor | None
    dsa_seqlens_expanded: torch.Tensor
    dsa_cache_seqlens_int32: torch.Tensor
    dsa_cu_seqlens_k: torch.Tensor
    indexer_k_start: torch.Tensor
    indexer_k_end: torch.Tensor
    token_to_batch_idx: torch.Tensor
    page_table_1_flattened: torch.Tensor | None = None

    @classmethod
    def allocate(cls, bs, n_tokens, max_seqlen_k, physical_page_size, *, with_cu_seqlens_q=True,
                 n_flat=None, device="cpu"):
        """Exactly-sized buffers carved out of one ``torch.empty`` block (one allocator call;
        every view starts on a 16-byte boundary)."""
        real_cols = -(-max_seqlen_k // physical_page_size)
        sizes = {"page_table_1": bs * max_seqlen_k,
                 "real_page_table": bs * real_cols if physical_page_size > 1 else None,
                 "cache_seqlens_int32": bs, "cu_seqlens_k": bs + 1,
                 "cu_seqlens_q": bs + 1 if with_cu_seqlens_q else None,
                 "dsa_seqlens_expanded": n_tokens, "dsa_cache_seqlens_int32": n_tokens,
                 "dsa_cu_seqlens_k": n_tokens + 1, "indexer_k_start": n_tokens,
                 "indexer_k_end": n_tokens, "token_to_batch_idx": n_tokens,
                 "page_table_1_flattened": n_flat}
        total = sum(-(-n // 4) * 4 for n in sizes.values() if n is not None)
        block = torch.empty(total + 2 * ext.STATUS_ENTRIES, dtype=torch.int32, device=device)
        views, start = {}, 0
        for name, n in sizes.items():
            if n is None:
                views[name] = None
                continue
            views[name] = block[start:start + n]
            start += -(-n // 4) * 4
        views["page_table_1"] = views["page_table_1"].view(bs, max_seqlen_k)
        if views["real_page_table"] is not None:
            views["real_page_table"] = views["real_page_table"].view(bs, real_cols)
        return cls(**views), block[start:].view(torch.int64)

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


TOKEN_BUFFERS = ("dsa_seqlens_expanded", "dsa_cache_seqlens_int32", "indexer_k_start",
                 "indexer_k_end", "token_to_batch_idx")


def check_prefill_inputs(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                         max_seqlen_k, dsa_index_topk, physical_page_size):
    """The inputs' static checks (metadata only); returns ``(bs, max_seqlen_k, topk,
    page_size)``."""
    topk = checks.as_index("dsa_index_topk", dsa_index_topk, minimum=1, maximum=checks.INT32_MAX)
    width = checks.as_index("max_seqlen_k", max_seqlen_k)
    page_size = checks.as_index("physical_page_size", physical_page_size, minimum=1,
                                maximum=checks.MAX_PAGE_SIZE)
    if page_size & (page_size - 1):  # this kernel's page tiles are tested on powers of two only
        raise ValueError(f"physical_page_size = {page_size}: the PAGED prefill path serves "
                         "powers of two")
    bs = checks.input_vector("seq_lens", seq_lens, None, 0).shape[0]
    device = seq_lens.device
    checks.input_vector("extend_seq_lens", extend_seq_lens, device, bs)
    checks.input_vector("req_pool_indices", req_pool_indices, device, bs)
    if extend_seq_lens.shape[0] != bs or req_pool_indices.shape[0] != bs:
        raise ValueError(f"seq_lens, extend_seq_lens and req_pool_indices must have one entry "
                         f"per request, got {bs}, {extend_seq_lens.shape[0]} and "
                         f"{req_pool_indices.shape[0]}")
    checks.req_to_token_table(req_to_token, device, width, bs)
    return bs, width, topk, page_size


def check_prefill_paged(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, buffers,
                        max_seqlen_k, dsa_index_topk, physical_page_size, status=None,
                        check=False):
    """Every static check (and the data checks with ``check=True``: one copy of the inputs to
    the host); raises before anything is written. Returns what ``_plan`` takes."""
    bs, width, topk, page_size = check_prefill_inputs(
        seq_lens, extend_seq_lens, req_pool_indices, req_to_token, max_seqlen_k,
        dsa_index_topk, physical_page_size)
    if not isinstance(buffers, PagedPrefillBuffers):
        raise TypeError(f"buffers must be a PagedPrefillBuffers, got {type(buffers).__name__}")
    device, b = seq_lens.device, buffers
    pt, rpt, has_pt1, page_size = checks.page_tables(b.page_table_1, b.real_page_table,
                                                     page_size, bs, width, device)
    if not has_pt1:
        raise ValueError("page_table_1 is required: the PAGED transform reads it")
    checks.output_vector("cache_seqlens_int32", b.cache_seqlens_int32, device, bs)
    checks.output_vector("cu_seqlens_k", b.cu_seqlens_k, device, bs + 1)
    if b.cu_seqlens_q is not None:
        checks.output_vector("cu_seqlens_q", b.cu_seqlens_q, device, bs + 1)
    for name in TOKEN_BUFFERS:
        checks.output_vector(name, getattr(b, name), device, 0)
    checks.output_vector("dsa_cu_seqlens_k", b.dsa_cu_seqlens_k, device, 1)
    token_capacity = min([getattr(b, n).shape[0] for n in TOKEN_BUFFERS]
                         + [b.dsa_cu_seqlens_k.shape[0] - 1])
    flat = b.page_table_1_flattened
    if flat is not None:
        checks.output_vector("page_table_1_flattened", flat, device, 0)
    if status is None:
        status = torch.empty(ext.STATUS_ENTRIES, dtype=torch.int64, device=device)
    else:
        extend_checks.check_tensor("status", status, 1, (torch.int64,), device)
        if status.shape[0] < ext.STATUS_ENTRIES or status.stride(0) != 1:
            raise ValueError(f"status must hold {ext.STATUS_ENTRIES} contiguous int64 entries, "
                             f"got {status.shape[0]}")
    outputs = {**b.as_dict(), "real_page_table": rpt if page_size > 1 else None,
               "status": status}
    check_no_overlap(outputs, dict(seq_lens=seq_lens, extend_seq_lens=extend_seq_lens,
                                    req_pool_indices=req_pool_indices, req_to_token=req_to_token))
    if check:
        ref = prefill_paged_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                                      width, topk, page_size)
        n_tokens = ref["dsa_seqlens_expanded"].shape[0]
        if n_tokens > token_capacity:
            raise ValueError(f"the per-token buffers hold {token_capacity} entries but "
                             f"N = {n_tokens} are needed")
        n_flat = ref["page_table_1_flattened"].shape[0]
        if flat is not None and n_flat > flat.shape[0]:
            raise ValueError(f"page_table_1_flattened holds {flat.shape[0]} entries but "
                             f"sum(seq_lens) = {n_flat} are needed")
    return width, topk, page_size, status, pt, rpt, has_pt1, token_capacity


def plan_prefill_paged(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, buffers,
                       max_seqlen_k, dsa_index_topk, physical_page_size, status=None,
                       check=False, zero_tail=False) -> LaunchPlan:
    """The one launch, from tensor metadata and host ints only (no sync unless ``check``).

    ``zero_tail``: per-token and flattened entries past what the device lengths fill are set
    to 0 (for buffers sized from host mirrors; a bound fill over larger static buffers leaves
    them untouched)."""
    checked = check_prefill_paged(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                                  buffers, max_seqlen_k, dsa_index_topk, physical_page_size,
                                  status, check)
    return _plan(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, buffers, *checked,
                 zero_tail)


def _plan(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, b, width, topk, page_size,
          status, pt, rpt, has_pt1, token_capacity, zero_tail, expected=(-1, -1)):
    bs = seq_lens.shape[0]
    grid = (max(triton.cdiv(bs, ext.BLOCK_R), 1), ext.pick_splits(bs))
    block_b, block_n = pick_blocks(width, page_size, has_pt1, bs)
    col_blocks = triton.cdiv(width, block_n)
    page_tiles = triton.cdiv(bs, block_b) * col_blocks
    flat = b.page_table_1_flattened
    # Without the flattened table its capacity is 0: the extend kernel then writes none of it.
    flat_buffer = flat if flat is not None else b.indexer_k_start
    cu_q = b.cu_seqlens_q if b.cu_seqlens_q is not None else b.cu_seqlens_k
    args = (seq_lens, extend_seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0),
            req_to_token.shape[0], req_to_token.shape[1], b.dsa_seqlens_expanded,
            b.dsa_cache_seqlens_int32, b.cu_seqlens_k, b.dsa_cu_seqlens_k, b.indexer_k_start,
            b.indexer_k_end, b.token_to_batch_idx, flat_buffer, status, bs, token_capacity,
            flat.shape[0] if flat is not None else 0, topk, b.cache_seqlens_int32, cu_q, pt,
            pt.stride(0), rpt, rpt.stride(0), width, col_blocks, page_tiles, *expected)
    kwargs = dict(EXTEND_JUDGES_SIZES=EXTEND_JUDGES_SIZES,
                  HAS_CU_Q=b.cu_seqlens_q is not None, ZERO_TAIL=bool(zero_tail),
                  HAS_PAGE_TABLE_1=has_pt1, PAGE_SIZE=page_size, BLOCK_R=ext.BLOCK_R,
                  BLOCK_SCAN=ext.BLOCK_SCAN, BLOCK_T=ext.BLOCK_T, BLOCK_F=ext.BLOCK_F,
                  BLOCK_B=block_b, BLOCK_N=block_n, num_warps=ext.NUM_WARPS)
    return LaunchPlan(prefill_paged_kernel, grid, args, kwargs)


#: Position of ``status`` in the plan's arguments.
STATUS_SLOT = 15


def launch_prefill_paged(*args, check=False, **kwargs):
    """Check, plan and launch (Triton's normal dispatch); returns the device status."""
    plan = plan_prefill_paged(*args, check=check, **kwargs)
    plan()
    return plan.args[STATUS_SLOT]


class PagedPrefillFill:
    """Checked and planned once against static buffers; each call is one bound launch and
    returns the device status."""

    def __init__(self, *args, check=False, **kwargs):
        self.plan = plan_prefill_paged(*args, check=check, **kwargs)
        self.status = self.plan.args[STATUS_SLOT]
        self.launch = bind_plan(self.plan)

    def __call__(self):
        self.launch()
        return self.status


def _host_list(name, values, bs):
    if values is None:
        raise ValueError(f"{name} is required (SGLang's forward batch holds it): the output "
                         "sizes come from it, so that nothing syncs")
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu":
            raise ValueError(f"{name} must be a host mirror (a CPU tensor or a list), "
                             f"got a tensor on {values.device}")
        if values.dtype.is_floating_point or values.dtype == torch.bool or values.dim() != 1:
            raise TypeError(f"{name} must hold one int per request, got {values.dtype} "
                            f"{tuple(values.shape)}")
        values = values.tolist()
    elif not all(type(v) is int for v in values):  # numpy ints and the like: parsed one by one
        values = [checks.as_index(f"{name}[{i}]", v, minimum=None) for i, v in enumerate(values)]
    if len(values) != bs:
        raise ValueError(f"{name} has {len(values)} entries but bs = {bs}")
    return values


def _mirrors_agree(seq_lens, extend_seq_lens, kv, qo):
    for name, device_values, mirror in (("seq_lens_cpu", seq_lens, kv),
                                        ("extend_seq_lens_cpu", extend_seq_lens, qo)):
        values = device_values.tolist()
        bad = next((i for i, (v, m) in enumerate(zip(values, mirror)) if v != m), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] = {mirror[bad]} but the device holds "
                             f"{values[bad]} (request {bad}): the host mirror is stale")


def prefill_paged_metadata(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                           dsa_index_topk, physical_page_size, *, seq_lens_cpu,
                           extend_seq_lens_cpu, ragged=False, mha_fp8_dequant=False,
                           check=False):
    """SGLang's PAGED prefill fields (RAGGED's extras with ``ragged=True``) in fresh tensors,
    sized from the host mirrors, filled in one launch; see the module docstring.

    ``ragged``: SGLang's ``get_topk_transform_method`` returned RAGGED (FP8 KV on the
    flashmla_sparse / triton_sparse_mla prefill); ``mha_fp8_dequant``: its
    ``use_mha and token_to_kv_pool.dtype == float8_e4m3fn``. Nothing syncs: the sizes come from
    ``seq_lens_cpu`` / ``extend_seq_lens_cpu`` (lists or CPU tensors), which must agree with
    the device lengths (``check=True`` verifies the device data, one copy to the host). A
    mirror that disagrees is not trusted blindly either: entries past what the device lengths
    fill are zeros, never uninitialised memory, and ``status`` (``decode_status``) holds the
    device's N and sum(kv), with ``tokens_overflow`` / ``flat_overflow`` set where the mirror
    promised fewer than the device holds (and, where ``modes.extend``'s kernel judges sizes,
    its mismatch flags on any difference): a server reads it when it next syncs."""
    checks.input_vector("seq_lens", seq_lens, None, 0)
    bs = seq_lens.shape[0]
    kv = _host_list("seq_lens_cpu", seq_lens_cpu, bs)
    qo = _host_list("extend_seq_lens_cpu", extend_seq_lens_cpu, bs)
    bad = next((i for i in range(bs) if not 0 <= qo[i] <= kv[i]), None)
    if bad is not None:
        raise ValueError(f"request {bad}: need 0 <= extend_seq_lens_cpu[{bad}] = {qo[bad]} <= "
                         f"seq_lens_cpu[{bad}] = {kv[bad]}")
    width = max(kv, default=0)
    n_tokens = sum(qo)
    has_prefix = any(q != k for q, k in zip(qo, kv))
    n_flat = sum(kv) if has_prefix and (ragged or mha_fp8_dequant) else None
    bs, width, topk, page_size = check_prefill_inputs(
        seq_lens, extend_seq_lens, req_pool_indices, req_to_token, width, dsa_index_topk,
        physical_page_size)
    if check:
        prefill_paged_reference(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                                width, topk, page_size)
        _mirrors_agree(seq_lens, extend_seq_lens, kv, qo)
    b, status = PagedPrefillBuffers.allocate(bs, n_tokens, width, page_size,
                                             with_cu_seqlens_q=has_prefix, n_flat=n_flat,
                                             device=seq_lens.device)
    # Our own fresh buffers, of the sizes the kernel is told: no output check is needed.
    pt = b.page_table_1
    rpt = b.real_page_table if page_size > 1 else pt
    _plan(seq_lens, extend_seq_lens, req_pool_indices, req_to_token, b, width, topk, page_size,
          status, pt, rpt, True, n_tokens, True, (n_tokens, -1 if n_flat is None else n_flat))()
    return {
        "page_table_1": b.page_table_1,
        "real_page_table": b.real_page_table if b.real_page_table is not None else b.page_table_1,
        "cache_seqlens_int32": b.cache_seqlens_int32,
        "cu_seqlens_k": b.cu_seqlens_k,
        "cu_seqlens_q": b.cu_seqlens_q if has_prefix else b.cu_seqlens_k,
        "dsa_seqlens_expanded": b.dsa_seqlens_expanded,
        "dsa_cache_seqlens_int32": b.dsa_cache_seqlens_int32,
        "dsa_cu_seqlens_k": b.dsa_cu_seqlens_k,
        "indexer_k_start_end": (b.indexer_k_start, b.indexer_k_end),
        "token_to_batch_idx": b.token_to_batch_idx,
        "topk_indices_offset": b.indexer_k_start if ragged else None,
        "page_table_1_flattened": b.page_table_1_flattened,
        "max_seqlen_q": (max(qo, default=1) if has_prefix else width),
        "max_seqlen_k": width,
        "status": status,
    }


def decode_status(status, has_flattened=True):
    """``extend.decode_status``; without ``page_table_1_flattened`` its overflow flag is moot."""
    out = ext.decode_status(status)
    if not has_flattened:
        out["flat_overflow"] = False
    return out
