"""Pieces shared by the three fused modes: the page-row tile, the flat prefix sums, the buckets.

Every mode launches ``1 + row_tiles * col_blocks * row_splits`` programs. Program 0 writes
the flat arrays (per-request lengths, their prefix sums, the expanded rows' lengths and
theirs); every other program owns a tile of ``BLOCK_B`` requests x ``BLOCK_N`` columns of the
page tables (and, on small grids, one of the request's rows: ``split_rows``). Why this split:

* The flat arrays are a few bytes per row. One program walking them in chunks with running
  carries (``write_flat``) is O(bs) in total (one chunk up to 4096 rows, 16 at bs = 16384 x
  4), where giving each program its own prefix over earlier requests would be O(bs) per
  program. It runs while the page programs copy, so it hides behind them except at small
  batches, where it is the critical path: hence a one-warp chunk there.
* A page tile loads each ``req_to_token`` row segment once and stores it to all of the
  request's expanded rows (``next_n`` or the draft tokens), instead of re-reading it per row,
  except on grids small enough that idle SMs make a program per row cheaper than the loop.
  Without ``page_table_1`` it reads only every ``PAGE_SIZE``-th entry.
* Tiles past a request's live prefix exit after one small load, so the grid (sized from host
  ints only: bs and width, never from lengths) costs an empty program where there is no work.

All sizes are run-time arguments; constexprs come from a few buckets (``pick_blocks``), so a
bs / width / length sweep compiles a handful of variants. Rows and pool offsets are int64.
"""
import triton
import triton.language as tl

#: Flat chunk buckets: requests or expanded rows handled per step of program 0. One step
#: covers up to bs x next_n = 4096 (the production maximum; each further step adds a load
#: latency); small batches get a narrow chunk. Program 0 is the kernel's critical path at
#: small bs (on an H100 it alone took as long as the whole launch, ~1 us over an empty
#: kernel): its scans and sums over a chunk spanning several warps go through shared memory
#: with barriers, so up to 32 rows (decode bs <= 32, next_n = 4 up to bs = 8) get a chunk of
#: one warp, where they are register shuffles (PERF_NOTES.md).
FLAT_BUCKETS = (32, 256, 1024, 4096)
#: Elements per page tile (BLOCK_B x BLOCK_N).
TILE = 4096
#: Pages per request in a tile when only the real page table is written.
REAL_ONLY_PAGES = 128
#: Largest bs whose page tiles hold one request each (see ``pick_blocks``).
SMALL_BATCH = 32
#: Largest bs whose wide tiles may be half as wide, and whose expanded rows may get a program
#: each (``split_rows``): with the SMs idle, less serial work per thread is a win.
TINY_BATCH = 8
TINY_BLOCK_N = 512
#: ... but only while the grid stays within about two waves of an H100's 132 SMs: beyond, the
#: extra programs cost more than they save (H100: split rows at bs 1, width 131072, 1024
#: programs: 3.2 µs vs 2.9 unsplit; at bs 8, 8192 programs, each re-reading its request's
#: segment: 9.4 vs 6.4 before the split; PERF_NOTES.md).
MAX_TINY_PROGRAMS = 256
#: Most expanded rows per request (verify's ``next_n``, the draft tokens): program 0 holds a
#: request's rows in one block of their next power of two (``flat_blocks``' ``BLOCK_J``), and
#: Triton refuses blocks past 2**20 entries deep inside the launch; SGLang's are a few dozen.
MAX_ROWS_PER_REQUEST = 4096
#: Most rows per request that ``split_rows`` spreads over programs (verify's next_n, the
#: draft tokens).
MAX_SPLIT_ROWS = 8


def pick_blocks(width, page_size, has_page_table_1=True, bs=None):
    """``(BLOCK_B, BLOCK_N)``: narrow tables (<= 128 columns) and wide ones; without
    ``page_table_1`` a tile spans 128 pages (8192 columns at page size 64), because it reads
    and writes one entry per page: a 1024-column tile would be 16 entries of work.

    Up to ``SMALL_BATCH`` requests a tile holds one request (``BLOCK_B = 1``): a multi-request
    tile there is mostly masked-off lanes, and each thread's serial loads and stores (times
    ``next_n`` rows) are the kernel's critical path; the idle SMs take the extra programs."""
    if not has_page_table_1:
        block_b, block_n = 8, REAL_ONLY_PAGES * page_size
    else:
        block_n = max(128 if width <= 128 else 1024, triton.next_power_of_2(page_size))
        block_b = max(TILE // block_n, 1)
    if bs is not None and bs <= SMALL_BATCH and block_n > 128:
        block_b = 1
        tiny_block_n = max(TINY_BLOCK_N, triton.next_power_of_2(page_size))
        if (has_page_table_1 and bs <= TINY_BATCH
                and bs * triton.cdiv(width, tiny_block_n) <= MAX_TINY_PROGRAMS):
            block_n = tiny_block_n
    return block_b, block_n


def split_rows(bs, rows_per_request, block_b, col_blocks):
    """Whether each of a request's rows gets its own page program (reading the request's
    ``req_to_token`` segment once per row): with one-request tiles at bs <= ``TINY_BATCH``,
    a tile's ``next_n`` serial row stores were its critical path (SGLang runs one program per
    row and column block), as long as the split grid stays within ``MAX_TINY_PROGRAMS``."""
    return (block_b == 1 and bs <= TINY_BATCH and 1 < rows_per_request <= MAX_SPLIT_ROWS
            and bs * col_blocks * rows_per_request <= MAX_TINY_PROGRAMS)


def flat_block(rows):
    """The flat chunk for ``rows`` requests or expanded rows (whichever is larger)."""
    return next((b for b in FLAT_BUCKETS if rows <= b), FLAT_BUCKETS[-1])


#: Most programs of a 1-D grid (CUDA's limit on ``gridDim.x``).
MAX_PROGRAMS = 2**31 - 1


def grid_size(bs, width, block_b, block_n, row_splits=1):
    col_blocks = triton.cdiv(width, block_n)
    programs = 1 + triton.cdiv(bs, block_b) * col_blocks * row_splits
    if programs > MAX_PROGRAMS:
        raise ValueError(f"bs = {bs} requests x a width of {width} columns need {programs} "
                         f"programs, more than a grid holds ({MAX_PROGRAMS})")
    return programs, col_blocks


@triton.jit
def tile_position(n_col_blocks, n_row_splits, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """(first request, first column, row split) of page program ``program_id - 1``; the split
    is in ``[0, n_row_splits)`` (always 0 for one split)."""
    tile = tl.program_id(0) - 1
    split = tile % n_row_splits
    tile = tile // n_row_splits
    tile_b = tile // n_col_blocks
    return tile_b * BLOCK_B, (tile - tile_b * n_col_blocks) * BLOCK_N, split


@triton.jit
def load_requests(seq_ptr, pool_idx_ptr, requests, bs):
    """``(seq_lens, req_pool_indices)`` of a tile's requests (0 past bs), as int64.

    Both loads are issued before either value is used, so a page program waits for one memory
    round trip here, then one for ``req_to_token`` (two, as SGLang's): loading the pool index
    only once the length said the tile was live made it three. (Measured alone on an H100 it
    changed nothing, as program 0 was then the critical path; PERF_NOTES.md.)
    """
    in_batch = requests < bs
    kv = tl.load(seq_ptr + requests, mask=in_batch, other=0)
    pool = tl.load(pool_idx_ptr + requests, mask=in_batch, other=0)
    return kv.to(tl.int64), pool.to(tl.int64)


@triton.constexpr_function
def pages_per_tile(block_n, page_size):
    """Lanes for the pages starting in a ``block_n``-column tile (a power of two; exactly
    ``block_n // page_size`` when the page size is a power of two).

    Plain arithmetic, not ``triton.next_power_of_2``: in some Triton releases (3.6 among them)
    that is a plain host function, and device code, a ``constexpr_function`` included, may not
    reference one (the compiler's dependency scan raises "Unsupported function referenced")."""
    pages = -(-block_n // page_size)
    lanes = 1
    while lanes < pages:
        lanes *= 2
    return lanes


@triton.jit
def write_page_rows(pool, r2t_ptr, r2t_stride, pt_ptr, pt_stride, rpt_ptr, rpt_stride,
                    live, first_row, row_count, max_rows_per_request, row_limit, col0,
                    HAS_PAGE_TABLE_1: tl.constexpr, PAGE_SIZE: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    """Copy columns ``[col0, col0 + BLOCK_N)`` of each request's ``req_to_token`` row (pool
    index ``pool``) into its rows ``first_row + j`` (``j < row_count``), over the live prefix
    ``[:live]`` only.

    ``live`` is int64 in ``[0, width]`` (0 for requests past bs); rows outside
    ``[0, row_limit)`` are never stored, whatever the lengths.
    """
    if col0 < tl.max(live, 0):
        source = r2t_ptr + pool * r2t_stride
        # A vector even when the caller passes one count for all: a scalar-and-vector mask
        # trips Triton's interpreter. (A new name: reassigning an outer one inside this `if`
        # would make the compiler yield it from both branches with different types.)
        counts = row_count + tl.zeros_like(first_row)
        if HAS_PAGE_TABLE_1:
            cols = col0 + tl.arange(0, BLOCK_N)
            col_mask = cols[None, :] < live[:, None]
            vals = tl.load(source[:, None] + cols[None, :], mask=col_mask, other=0).to(tl.int32)
            for j in range(0, max_rows_per_request):
                row = first_row + j
                ok = (j < counts) & (row >= 0) & (row < row_limit)
                tl.store(pt_ptr + row[:, None] * pt_stride + cols[None, :], vals,
                         mask=ok[:, None] & col_mask)
        if PAGE_SIZE > 1:
            # The pages whose first column lies in this tile; with a page size that does not
            # divide BLOCK_N (48, 96, ...) a page may straddle two tiles: the first writes it.
            PAGE_BLOCK: tl.constexpr = pages_per_tile(BLOCK_N, PAGE_SIZE)
            pages = (col0 + PAGE_SIZE - 1) // PAGE_SIZE + tl.arange(0, PAGE_BLOCK)
            starts = pages * PAGE_SIZE
            page_mask = (starts < col0 + BLOCK_N)[None, :] & (starts[None, :] < live[:, None])
            page_vals = tl.load(source[:, None] + starts[None, :], mask=page_mask,
                                other=0).to(tl.int32) // PAGE_SIZE
            for j in range(0, max_rows_per_request):
                row = first_row + j
                ok = (j < counts) & (row >= 0) & (row < row_limit)
                tl.store(rpt_ptr + row[:, None] * rpt_stride + pages[None, :], page_vals,
                         mask=ok[:, None] & page_mask)


@triton.jit
def write_flat(seq_ptr, ext_ptr, cache_ptr, cu_ptr, expanded_ptr, dsa_ptr, dsa_cu_ptr,
               status_ptr, ctx_ptr, ctx_stride_0, ctx_stride_1, bs, n_rows, rows_per_request,
               max_rows_per_request, extra, topk, VARLEN: tl.constexpr,
               HAS_EXPANDED: tl.constexpr, CLAMP_AT_ZERO: tl.constexpr, HAS_STATUS: tl.constexpr,
               HAS_CONTEXT_LENS: tl.constexpr, CHUNK: tl.constexpr, BLOCK_J: tl.constexpr):
    """Every flat array in one pass over the requests, ``CHUNK`` at a time with running carries.

    Request b has context ``ctx = seq[b] + extra`` (``cache[b]``, prefix ``cu``) and ``qo``
    rows (``rows_per_request``, or ``ext[b]`` clamped to ``[0, max_rows_per_request]`` when
    ``VARLEN``); its row j (``j < qo``) sees ``ctx - qo + j + 1`` (clamped at 0 if asked), the
    DSA length ``min(., topk)`` and its prefix ``dsa_cu``. Decode is ``qo = 1``, verify
    ``extra = qo = next_n``, draft extend ``extra = 0``. Rows ``>= n_rows`` are not stored.
    One load of each length serves every array: a single dependent memory round trip per
    chunk. ``status`` gets ``[rows the requests expand to, that > n_rows]``; with
    ``HAS_CONTEXT_LENS``, ``ctx[b, j] = ctx`` for each of request b's rows j (verify's
    ``paged_mqa_ctx_lens_2d``) from the same load, not a second pass that would wait on
    another round trip behind these stores.
    """
    tl.store(cu_ptr, 0)
    tl.store(dsa_cu_ptr, 0)
    ctx_before = tl.full((), 0, tl.int64)
    rows_before = tl.full((), 0, tl.int64)
    dsa_before = tl.full((), 0, tl.int64)
    j = tl.arange(0, BLOCK_J).to(tl.int64)
    for b0 in range(0, bs, CHUNK):
        requests = b0 + tl.arange(0, CHUNK)
        live = requests < bs
        ctx = tl.load(seq_ptr + requests, mask=live, other=0).to(tl.int64) + extra
        ctx = tl.where(live, ctx, 0)
        tl.store(cache_ptr + requests, ctx.to(tl.int32), mask=live)
        tl.store(cu_ptr + 1 + requests, (ctx_before + tl.cumsum(ctx, 0)).to(tl.int32), mask=live)
        if VARLEN:
            qo = tl.load(ext_ptr + requests, mask=live, other=0).to(tl.int64)
            qo = tl.minimum(tl.maximum(qo, 0), max_rows_per_request)
        else:
            qo = tl.where(live, rows_per_request, 0).to(tl.int64)
        row = (rows_before + tl.cumsum(qo, 0) - qo)[:, None] + j[None, :]
        in_request = j[None, :] < qo[:, None]
        value = ctx[:, None] - qo[:, None] + j[None, :] + 1
        if CLAMP_AT_ZERO:
            value = tl.maximum(value, 0)
        dsa = tl.where(in_request, tl.minimum(value, topk), 0)
        per_request = tl.sum(dsa, 1)
        dsa_cu = (dsa_before + tl.cumsum(per_request, 0) - per_request)[:, None] + tl.cumsum(dsa, 1)
        if HAS_CONTEXT_LENS:
            tl.store(ctx_ptr + requests.to(tl.int64)[:, None] * ctx_stride_0
                     + j[None, :] * ctx_stride_1,
                     (ctx[:, None] + tl.zeros_like(j)[None, :]).to(tl.int32), mask=in_request)
        ok = in_request & (row < n_rows)
        if HAS_EXPANDED:
            tl.store(expanded_ptr + row, value.to(tl.int32), mask=ok)
        tl.store(dsa_ptr + row, dsa.to(tl.int32), mask=ok)
        tl.store(dsa_cu_ptr + 1 + row, dsa_cu.to(tl.int32), mask=ok)
        ctx_before += tl.sum(ctx, 0)
        rows_before += tl.sum(qo, 0)
        dsa_before += tl.sum(per_request, 0)
    if HAS_STATUS:
        tl.store(status_ptr, rows_before)
        tl.store(status_ptr + 1, (rows_before > n_rows).to(tl.int64))


def flat_blocks(rows, rows_per_request):
    """``(CHUNK, BLOCK_J)`` of ``write_flat``: ``BLOCK_J`` covers a request's rows, ``CHUNK``
    requests make one of the ``FLAT_BUCKETS`` (256 / 1024 / 4096 rows)."""
    block_j = triton.next_power_of_2(max(rows_per_request, 1))
    return max(flat_block(rows) // block_j, 1), block_j
