"""Every forward mode of the DSA metadata, measured against SGLang and vLLM as they really run.

One *point* is (workload, bs, width, next_n, variant). For each point this module builds the
inputs (seeded; kv lengths spread up to the page-table width, one request at the width; page
64; topk 2048), the output buffers as SGLang's CUDA-graph runner holds them, the call of our
kernel and of each peer in its production configuration, the plain reference of the live
outputs, and the records of the benchmark.

Production configurations (SGLang 0.5.23 ``srt/layers/attention/dsa_backend.py``,
``_apply_cuda_graph_metadata``; vLLM 0.33.0 ``v1/attention/backends/mla/indexer.py``):

* decode: ``fused_dsa_decode_metadata(..., max_len=width)``; ``page_table_1`` is the graph's
  wide table, or ``None`` when ``dsa_drop_wide_page_table`` holds (no speculative decoding,
  fused top-k v2): two variants, ``page_table_1`` and ``real_only``.
* target_verify: ``fused_dsa_target_verify_metadata(..., max_seqlen_k=width, next_n)``, two
  variants: the default passes ``paged_mqa_ctx_lens_2d`` (SGLang does so on SM100 when
  next_n >= 2; the larger job, the one the issue names) and ``hopper`` passes ``None`` (what
  SGLang's server calls on the H100 and H200 this workbook is measured on).
* draft_extend_static: ``fused_dsa_draft_extend_metadata(..., max_seqlen_k=width,
  static_extend_len=True)``, every request extending by ``next_n`` = num_draft_tokens
  (draft-extend v2 graph replay).
* draft_extend_varlen: the same kernel with ``static_extend_len=False`` and accept lengths
  1..next_n: the per-request path the first published report measured; SGLang's graph replay
  does not use it.
* extend: prefill with cached prefixes, eager: ours ``nsa_kernels.modes.extend.extend_metadata``
  against SGLang's eager path replayed (``nsa_kernels.peers.sglang_extend``).
* vLLM: ``_indexer_decode_metadata_kernel`` computes expanded lengths, page-granular rows per
  token and token -> request for decode, target_verify and both draft_extend shapes.

Bytes that must move (the bandwidth floor), per point, counted once each:

* inputs read: ``seq_lens`` and ``req_pool_indices`` (int64, SGLang's graph buffers),
  ``extend_seq_lens`` (int32, draft_extend), and each request's live ``req_to_token`` entries
  once (not once per expanded row): all ``kv`` of them (4 B) where ``page_table_1`` is written,
  else one entry per page, counted as a 32-byte sector (the smallest DRAM read; the 64 entries of
  a page span 256 B, so the needed entries never share a sector);
* outputs written: every 1-D metadata array over its live length, ``page_table_1`` rows over
  ``[:kv]`` and ``real_page_table`` rows over ``[:ceil(kv / 64)]`` (4 B each), once per
  expanded row.

The bandwidth floor is those bytes over the device-to-device copy bandwidth (bytes read plus
written) measured in the same run; a point's floor is the larger of it and the empty kernel.
"""
import importlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .._env import DEVICE, INTERPRET

PAGE = 64
TOPK = 2048
SECTOR = 32
INT32, INT64 = 4, 8
WORKLOADS = ("decode", "target_verify", "draft_extend_static", "draft_extend_varlen", "extend")
GRAPH_WORKLOADS = WORKLOADS[:4]
SGLANG_FUNCTION = {"decode": "fused_dsa_decode_metadata",
                   "target_verify": "fused_dsa_target_verify_metadata",
                   "draft_extend_static": "fused_dsa_draft_extend_metadata",
                   "draft_extend_varlen": "fused_dsa_draft_extend_metadata"}
CONFIG = {
    ("decode", "page_table_1"): "SGLang 0.5.23 CUDA-graph replay (decode): "
    "fused_dsa_decode_metadata, page_table_1 = graph page table [bs, width], max_len = width",
    ("decode", "real_only"): "SGLang 0.5.23 CUDA-graph replay (decode, dsa_drop_wide_page_table): "
    "fused_dsa_decode_metadata, page_table_1=None, max_len = req_to_token width",
    ("target_verify", ""): "SGLang 0.5.23 CUDA-graph replay (target_verify, SM100): "
    "fused_dsa_target_verify_metadata, max_seqlen_k = width, next_n = num_draft_tokens, "
    "paged_mqa_ctx_lens_2d [bs, next_n]",
    ("target_verify", "hopper"): "SGLang 0.5.23 CUDA-graph replay (target_verify, Hopper): "
    "fused_dsa_target_verify_metadata, max_seqlen_k = width, next_n = num_draft_tokens, "
    "paged_mqa_ctx_lens_2d=None (SGLang builds it only on SM100)",
    ("draft_extend_static", ""): "SGLang 0.5.23 CUDA-graph replay (draft_extend v2): "
    "fused_dsa_draft_extend_metadata, static_extend_len=True, max_seqlen_k = width, "
    "extend = num_draft_tokens per request",
    ("draft_extend_varlen", ""): "SGLang 0.5.23 fused_dsa_draft_extend_metadata per-request path: "
    "static_extend_len=False, accept lengths 1..next_n, max_seqlen_k = width "
    "(not used by SGLang's graph replay)",
    ("extend", ""): "SGLang 0.5.23 eager extend (prefill with cached prefixes): "
    "init_forward_metadata replayed (host lists, per-request torch ops); call + synchronize",
}


# --------------------------------------------------------------------------- points and inputs

@dataclass
class Point:
    """One measured configuration. ``next_n``: 1 for decode, num_draft_tokens (verify, static
    draft extend) or the largest accept length (varlen); extend lengths for ``extend``."""
    workload: str
    bs: int
    width: int
    next_n: int = 1
    variant: str = ""
    seed: int = 0

    @property
    def name(self):
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.workload}{tail}/bs={self.bs}/width={self.width}/next_n={self.next_n}"

    @property
    def config(self):
        return CONFIG[(self.workload, self.variant)]


@dataclass
class Inputs:
    """What the caller holds before the fill: SGLang's graph input buffers and its pool."""
    seq_lens: torch.Tensor          # int64 [bs]; decode: kv; verify: kv before drafts; draft: kv
    req_pool_indices: torch.Tensor  # int64 [bs]
    req_to_token: torch.Tensor      # int32 [pool rows, width], page-consistent token slots
    extend_seq_lens: torch.Tensor   # int32 [bs]: 1 (decode), next_n, or accept lengths
    kv_lens: torch.Tensor           # int64 [bs]: the kv each request's page-table rows cover
    total_len: int                  # expanded rows


def _generator(seed):
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def _randint(lo, hi, n, gen, device):
    """``n`` ints in [lo, hi] spread over the range (CPU generator, so seeds agree across
    devices), the first one at ``hi`` so the widest row is always exercised."""
    values = torch.randint(lo, hi + 1, (n,), generator=gen, dtype=torch.int64)
    if n:
        values[0] = hi
    return values.to(device)


def req_to_token_pool(rows, width, gen, device=DEVICE):
    """int32 ``[rows, width]`` token slots, page-consistent: slot = page * 64 + offset, so that
    every 64th entry // 64 is the page id (what ``real_page_table`` holds)."""
    pages = torch.randint(0, 1 << 20, (rows, width // PAGE), generator=gen, dtype=torch.int32)
    pages = pages.to(device)
    table = pages.repeat_interleave(PAGE, dim=1) * PAGE
    table += torch.arange(PAGE, dtype=torch.int32, device=device).repeat(width // PAGE)
    return table


def make_inputs(point, device=DEVICE):
    """Seeded inputs of ``point``; kv spread over [next_n, width]."""
    bs, width, next_n = point.bs, point.width, point.next_n
    gen = _generator(point.seed * 1_000_003 + bs * 7919 + width + next_n)
    pool_rows = bs + 1  # slot 0 kept free, as SGLang's req pool reserves it
    req_pool_indices = (torch.randperm(bs, generator=gen) + 1).to(device)
    ones = torch.ones(bs, dtype=torch.int32, device=device)
    if point.workload == "decode":
        seq_lens = _randint(1, width, bs, gen, device)
        kv, extend = seq_lens, ones
    elif point.workload == "target_verify":
        seq_lens = _randint(1, width - next_n, bs, gen, device)
        kv, extend = seq_lens + next_n, ones * next_n
    elif point.workload == "draft_extend_static":
        seq_lens = _randint(next_n, width, bs, gen, device)
        kv, extend = seq_lens, ones * next_n
    elif point.workload == "draft_extend_varlen":
        seq_lens = _randint(next_n, width, bs, gen, device)
        extend = _randint(1, next_n, bs, gen, device).to(torch.int32)
        kv = seq_lens
    else:
        raise ValueError(f"workload {point.workload!r} has no graph inputs (extend: extend_inputs)")
    return Inputs(seq_lens=seq_lens, req_pool_indices=req_pool_indices,
                  req_to_token=req_to_token_pool(pool_rows, width, gen, device),
                  extend_seq_lens=extend, kv_lens=kv, total_len=int(extend.sum()))


def extend_inputs(point, device=DEVICE, max_extend=256):
    """Prefill with cached prefixes: extend lengths 1..``max_extend``, prefixes spread so that
    prefix + extend stays within the width."""
    bs, width = point.bs, point.width
    gen = _generator(point.seed * 1_000_003 + bs * 7919 + width)
    extend = _randint(1, min(max_extend, width), bs, gen, "cpu")
    prefix = torch.stack([torch.randint(0, width - int(e) + 1, (1,), generator=gen)[0]
                          for e in extend]) if bs else extend
    seq_lens = (prefix + extend).to(device)
    req_pool_indices = (torch.randperm(bs, generator=gen) + 1).to(device)
    return Inputs(seq_lens=seq_lens, req_pool_indices=req_pool_indices,
                  req_to_token=req_to_token_pool(bs + 1, width, gen, device),
                  extend_seq_lens=extend.to(torch.int32).to(device), kv_lens=seq_lens,
                  total_len=int(extend.sum()))


# --------------------------------------------------------------------------- buffers

def _has_page_table_1(point):
    return not (point.workload == "decode" and point.variant == "real_only")


def _has_ctx_lens_2d(point):
    return point.workload == "target_verify" and point.variant != "hopper"


def allocate_buffers(point, inputs, poison=-1, device=DEVICE):
    """The graph runner's metadata buffers for this bs, poisoned: rows = bs x next_n (decode:
    bs); the wide table [rows, width] unless dropped, the real table [rows, width / 64]."""
    rows = point.bs * (1 if point.workload == "decode" else point.next_n)

    def full(*shape):
        return torch.full(shape, poison, dtype=torch.int32, device=device)
    return SimpleNamespace(
        cache_seqlens=full(rows), cu_seqlens_k=full(point.bs + 1),
        page_table_1=full(rows, point.width) if _has_page_table_1(point) else None,
        seqlens_expanded=full(rows), dsa_cache_seqlens=full(rows),
        dsa_cu_seqlens_k=full(rows + 1), real_page_table=full(rows, point.width // PAGE),
        paged_mqa_ctx_lens_2d=full(point.bs, point.next_n) if _has_ctx_lens_2d(point) else None,
        rows=rows)


# --------------------------------------------------------------------------- calls

def sglang_kwargs(point, inputs, buffers):
    """The keyword arguments of SGLang's production call for this point (also ours: the compat
    functions take exactly SGLang's signatures)."""
    b = buffers
    common = dict(seq_lens=inputs.seq_lens, req_pool_indices=inputs.req_pool_indices,
                  req_to_token=inputs.req_to_token, cache_seqlens=b.cache_seqlens,
                  cu_seqlens_k=b.cu_seqlens_k, page_table_1=b.page_table_1,
                  dsa_cache_seqlens=b.dsa_cache_seqlens, dsa_cu_seqlens_k=b.dsa_cu_seqlens_k,
                  real_page_table=b.real_page_table, bs=point.bs, dsa_index_topk=TOPK,
                  physical_page_size=PAGE)
    if point.workload == "decode":
        return dict(common, max_len=point.width)
    if point.workload == "target_verify":
        return dict(common, seqlens_expanded=b.seqlens_expanded, max_seqlen_k=point.width,
                    next_n=point.next_n, paged_mqa_ctx_lens_2d=b.paged_mqa_ctx_lens_2d)
    return dict(common, extend_seq_lens=inputs.extend_seq_lens,
                seqlens_expanded=b.seqlens_expanded, total_len=inputs.total_len,
                max_seqlen_k=point.width, max_extend_len=point.next_n,
                max_total_len=point.bs * point.next_n,
                static_extend_len=point.workload == "draft_extend_static")


def bind_call(function, point, inputs, buffers):
    """A zero-argument closure calling ``function`` (ours or SGLang's) for ``point``."""
    kwargs = sglang_kwargs(point, inputs, buffers)
    return lambda: function(**kwargs)


def ours_function(workload):
    """Our function for ``workload`` (imported lazily: other helpers build it), or raise
    ImportError/AttributeError with the reason."""
    if workload == "extend":
        return importlib.import_module("nsa_kernels.modes.extend").extend_metadata
    return getattr(importlib.import_module("nsa_kernels.compat.sglang"), SGLANG_FUNCTION[workload])


def sglang_function(peer, workload):
    if workload == "extend":
        return importlib.import_module("nsa_kernels.peers.sglang_extend").sglang_extend_metadata
    return getattr(peer.metadata, SGLANG_FUNCTION[workload])


def extend_call(function, inputs):
    """Both sides get the forward batch's host mirrors of the lengths, as SGLang's scheduler
    hands them to ``init_forward_metadata`` (``seq_lens_cpu``, ``extend_seq_lens_cpu``): what
    the server pays, without a device-to-host read that it does not make."""
    args = (inputs.seq_lens, inputs.extend_seq_lens, inputs.req_pool_indices,
            inputs.req_to_token, TOPK)
    mirrors = dict(seq_lens_cpu=inputs.seq_lens.cpu(),
                   extend_seq_lens_cpu=inputs.extend_seq_lens.tolist())
    return lambda: function(*args, **mirrors)


def vllm_inputs(point, inputs):
    """vLLM's view of the same batch: ``query_start_loc`` (int32), ``seq_lens`` counting the
    query tokens (int32) and the page-granular block table [bs, width / 64] of each batch row."""
    device = inputs.seq_lens.device
    qsl = torch.zeros(point.bs + 1, dtype=torch.int32, device=device)
    qsl[1:] = torch.cumsum(inputs.extend_seq_lens, 0)
    block_table = (inputs.req_to_token[inputs.req_pool_indices, ::PAGE] // PAGE).contiguous()
    return SimpleNamespace(query_start_loc=qsl, seq_lens=inputs.kv_lens.to(torch.int32),
                           block_table=block_table)


def vllm_buffers(point, capacity=None, poison=-1, device=DEVICE):
    """vLLM's persistent indexer buffers, ``capacity`` = max_num_batched_tokens (8192, vLLM's
    serving default, or the point's tokens if larger)."""
    tokens = point.bs * point.next_n
    capacity = max(capacity or 8192, tokens)

    def full(*shape):
        return torch.full(shape, poison, dtype=torch.int32, device=device)
    return SimpleNamespace(seq_lens=full(capacity), block_table=full(capacity, point.width // PAGE),
                           decode_lens=full(capacity), indices=full(capacity),
                           per_req_lens=full(capacity))


# --------------------------------------------------------------------------- reference and checks

def reference_outputs(point, inputs):
    """The live outputs, in plain torch: ``{name: (tensor, live column counts or None)}``."""
    seq = inputs.seq_lens.to(torch.int64)
    ext = inputs.extend_seq_lens.to(torch.int64)
    kv = inputs.kv_lens.to(torch.int64)
    bs = point.bs
    row_req = torch.repeat_interleave(torch.arange(bs, device=seq.device), ext)
    starts = torch.cumsum(ext, 0) - ext
    offset = torch.arange(row_req.numel(), device=seq.device) - starts[row_req]
    cache = (seq + point.next_n) if point.workload == "target_verify" else seq
    out = {"cache_seqlens": (cache.to(torch.int32), None),
           "cu_seqlens_k": (_with_zero(cache), None)}
    if point.workload == "decode":
        expanded = seq
    elif point.workload == "target_verify":
        expanded = seq[row_req] + offset + 1
    else:
        expanded = (seq[row_req] - ext[row_req] + offset + 1).clamp_min(0)
    out["seqlens_expanded"] = (expanded.to(torch.int32), None)
    dsa = expanded.clamp_max(TOPK)
    out["dsa_cache_seqlens"] = (dsa.to(torch.int32), None)
    out["dsa_cu_seqlens_k"] = (_with_zero(dsa), None)
    rows = inputs.req_to_token[inputs.req_pool_indices[row_req]]
    row_kv = kv[row_req]
    if _has_page_table_1(point):
        out["page_table_1"] = (rows, row_kv)
    out["real_page_table"] = (rows[:, ::PAGE] // PAGE, (row_kv + PAGE - 1) // PAGE)
    if _has_ctx_lens_2d(point):
        out["paged_mqa_ctx_lens_2d"] = ((seq + point.next_n).to(torch.int32)[:, None]
                                        .expand(bs, point.next_n), None)
    out["token_to_request"] = (row_req.to(torch.int32), None)
    return out


def _with_zero(values):
    out = torch.zeros(values.numel() + 1, dtype=torch.int32, device=values.device)
    out[1:] = torch.cumsum(values, 0)
    return out


def compare_live(what, actual, expected, live_cols=None):
    """Raise AssertionError naming the first differing entry of the live region, else return the
    number of live entries compared. 1-D (or 2-D without ``live_cols``): the first
    ``len(expected)`` rows; 2-D with ``live_cols``: row r over ``[:live_cols[r]]``."""
    rows = expected.shape[0]
    got = actual[:rows]
    if got.dtype != expected.dtype:
        got, expected = got.to(torch.int64), expected.to(torch.int64)
    if live_cols is None:
        got = got.reshape(expected.shape)
        bad = got != expected
        live = expected.numel()
    else:
        cols = expected.shape[1]
        got = got[:, :cols]
        mask = (
            torch.arange(cols, device=expected.device)[None, :]
            < live_cols.to(expected.device)[:, None]
        )
        bad = (got != expected) & mask
        live = int(mask.sum())
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: differs at {where}: got {int(got[where])}, "
            f"expected {int(expected[where])} ({int(bad.sum())} live entries differ)"
        )
    return live


def buffer_outputs(point, buffers):
    """Our/SGLang's buffers under the reference's names."""
    names = ["cache_seqlens", "cu_seqlens_k", "dsa_cache_seqlens", "dsa_cu_seqlens_k",
             "real_page_table"]
    if point.workload != "decode":
        names.append("seqlens_expanded")
    if _has_page_table_1(point):
        names.append("page_table_1")
    if _has_ctx_lens_2d(point):
        names.append("paged_mqa_ctx_lens_2d")
    return {name: getattr(buffers, name) for name in names}


def vllm_outputs(out):
    """vLLM's outputs under the reference's names (what both define)."""
    return {"seqlens_expanded": out.seq_lens, "real_page_table": out.block_table,
            "token_to_request": out.indices}


def check_live(point, reference, outputs, who):
    """Compare every output both define on its live region; ``{name: entries compared}``."""
    counts = {}
    for name, actual in outputs.items():
        if actual is None or name not in reference:
            continue
        expected, cols = reference[name]
        counts[name] = compare_live(f"{who} {point.name} {name}", actual, expected, cols)
    if not counts:
        raise AssertionError(f"{who} {point.name}: no output in common with the reference")
    return counts


def compare_extend(ours, theirs, what="extend"):
    """Exact equality of two extend metadata dicts over the same keys."""
    if set(ours) != set(theirs):
        raise AssertionError(f"{what}: keys differ: {sorted(set(ours) ^ set(theirs))}")
    for key in ours:
        a, b = ours[key], theirs[key]
        if a is None or b is None:
            if (a is None) != (b is None):
                raise AssertionError(f"{what}: {key} is None on one side only")
            continue
        if isinstance(a, (tuple, list)):
            pairs = list(zip(a, b))
        else:
            pairs = [(a, b)]
        for x, y in pairs:
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                if x != y:
                    raise AssertionError(f"{what}: {key} differs ({x!r} vs {y!r})")
            elif x.shape != y.shape or not torch.equal(x.to(torch.int64), y.to(torch.int64)):
                raise AssertionError(
                    f"{what}: {key} differs (shapes {tuple(x.shape)} vs {tuple(y.shape)})"
                )
    return sorted(ours)


# --------------------------------------------------------------------------- bytes

def bytes_moved(point, inputs):
    """Bytes that must move for ``point`` (module docstring): inputs once, live outputs once."""
    bs, kv = point.bs, inputs.kv_lens.to(torch.int64).cpu()
    ext = inputs.extend_seq_lens.to(torch.int64).cpu()
    rows = inputs.total_len
    pages = (kv + PAGE - 1) // PAGE
    row_kv = torch.repeat_interleave(kv, ext)
    row_pages = (row_kv + PAGE - 1) // PAGE
    read = bs * (INT64 + INT64)                    # seq_lens, req_pool_indices
    if point.workload.startswith("draft_extend"):
        read += bs * INT32                         # extend_seq_lens
    if _has_page_table_1(point):
        read += int(kv.sum()) * INT32
        written = int(row_kv.sum()) * INT32 + int(row_pages.sum()) * INT32
    else:
        read += int(pages.sum()) * SECTOR
        written = int(row_pages.sum()) * INT32
    written += bs * INT32 + (bs + 1) * INT32       # cache_seqlens, cu_seqlens_k
    written += rows * INT32 + (rows + 1) * INT32   # dsa_cache_seqlens, dsa_cu_seqlens_k
    if point.workload != "decode":
        written += rows * INT32                    # seqlens_expanded
    if _has_ctx_lens_2d(point):
        written += rows * INT32                    # paged_mqa_ctx_lens_2d
    return read + written


def extend_bytes(inputs, outputs):
    """Extend: inputs read once (the live req_to_token entries of each request) plus every
    output tensor our call returned, at its size."""
    read = inputs.seq_lens.numel() * INT64 * 2 + inputs.extend_seq_lens.numel() * INT32
    read += int(inputs.kv_lens.sum()) * INT32
    written = 0
    for value in outputs.values():
        for tensor in (value if isinstance(value, (tuple, list)) else [value]):
            if isinstance(tensor, torch.Tensor):
                written += tensor.numel() * tensor.element_size()
    return read + written


def copy_bandwidth(measure_us, n_bytes=1 << 30, device=DEVICE):
    """Device-to-device copy bandwidth in bytes/µs (read + written), timed with ``measure_us``
    (a function of a zero-arg callable -> µs per call) on a ``n_bytes`` copy."""
    src = torch.empty(n_bytes // 4, dtype=torch.int32, device=device).fill_(1)
    dst = torch.empty_like(src)
    return 2 * n_bytes / measure_us(lambda: dst.copy_(src))


# --------------------------------------------------------------------------- profiles and records

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WIDTHS = (8192, 65536, 131072)


def mode_configs(workloads=WORKLOADS):
    """(workload, next_n, variant) of every measured configuration."""
    table = {"decode": [(1, "page_table_1"), (1, "real_only")],
             "target_verify": [(2, ""), (4, ""), (2, "hopper"), (4, "hopper")],
             "draft_extend_static": [(2, ""), (4, "")],
             "draft_extend_varlen": [(4, "")],
             "extend": [(0, "")]}
    return [(w, n, v) for w in workloads for n, v in table[w]]


def points(profile, batch_sizes=None, widths=None, workloads=WORKLOADS, seed=0, extend_max_bs=64):
    """The points of a profile. quick: tiny sizes for the interpreter (not timing-meaningful);
    full: the issue's sizes (extend up to ``extend_max_bs``: SGLang's eager path loops on the
    host per request)."""
    if profile == "quick":
        batch_sizes = batch_sizes or (1, 3)
        widths = widths or (256,)
    else:
        batch_sizes = batch_sizes or BATCH_SIZES
        widths = widths or WIDTHS
    out = []
    for workload, next_n, variant in mode_configs(workloads):
        for width in widths:
            for bs in batch_sizes:
                if workload == "extend" and bs > extend_max_bs:
                    continue
                out.append(Point(workload, bs, width, next_n, variant, seed))
    return out


def settings(profile, rounds=None, graph_calls=None):
    """Timing settings.

    full: 297 graph points (9 configurations x 11 bs x 3 widths) + 21 extend points, each with
    up to 4 timed entries (ours, SGLang, vLLM, empty kernel): 5 eager calls + a capture of 2 + 8
    calls + 15 rounds x 8 replayed calls = ~135 calls per entry, ~125k calls in all. Most are a
    few µs; the ~60 points with bs >= 256 at the wide tables take 0.05-1 ms per call (~10 s in
    all). Compiling (SGLang's kernels specialise on bs: ~80 variants) and allocating dominate:
    about 2-3 minutes on an H100, within the ~4 minute budget."""
    if profile == "quick":
        return dict(rounds=rounds or 3, graph_calls=graph_calls or 1, eager=3)
    return dict(rounds=rounds or 15, graph_calls=graph_calls or 8, eager=15)


def record(point, stage, graph_us, eager_us, config, n_bytes, note=None):
    """A results record with the issue's schema plus ``config``, ``variant``, ``bytes`` (and the
    report's common keys: ``tokens``, ``throughput_us`` (not measured here), ``interpreter``)."""
    return {"workload": point.workload, "stage": stage, "bs": point.bs, "width": point.width,
            "next_n": point.next_n, "variant": point.variant, "graph_us": graph_us,
            "eager_us": eager_us, "throughput_us": None, "config": config, "bytes": n_bytes,
            "note": note, "interpreter": INTERPRET, "tokens": None}


def finish_point(records):
    """Add ``floor_us`` (max of the empty kernel and the bandwidth floor), ``vs_sglang``
    (SGLang time / this time: > 1 means faster than SGLang) and ``vs_floor`` (this / floor) to
    the records of one point, on graph time (eager time for extend, and under the interpreter,
    where there are no graphs: interpreter ratios, not GPU ones)."""
    eager = records and (records[0]["workload"] == "extend" or records[0].get("interpreter"))
    key = "eager_us" if eager else "graph_us"
    by_stage = {r["stage"]: r for r in records}
    empty = by_stage.get("empty_kernel", {}).get(key)
    bandwidth = by_stage.get("bandwidth_floor", {}).get(key)
    floors = [v for v in (empty, bandwidth) if v is not None]
    floor = max(floors) if floors else None
    sglang = next((r[key] for r in records if r["stage"].startswith("sglang_")), None)
    for r in records:
        mine = r[key]
        r["floor_us"] = floor
        r["vs_sglang"] = sglang / mine if sglang and mine else None
        r["vs_floor"] = mine / floor if floor and mine else None
    return records


def stage_name(who, workload):
    return {"ours": f"nsa_{workload}", "sglang": f"sglang_{workload}", "vllm": "vllm_indexer"}[who]


# --------------------------------------------------------------------------- the sweep

EMPTY_CONFIG = "empty Triton kernel, launched the normal way (kernel[grid]())"
BANDWIDTH_CONFIG = "bytes that must move / device-to-device copy bandwidth of this run"


def load_peers(require_gpu=True):
    """``SimpleNamespace(sglang, vllm, notes)``: each peer, or None with the reason in notes."""
    from ..peers import sglang as sglang_peer
    from ..peers import vllm as vllm_peer
    found, notes = {}, {}
    for name, module in (("sglang", sglang_peer), ("vllm", vllm_peer)):
        try:
            found[name] = module.load(require_gpu=require_gpu)
        except Exception as exc:
            found[name], notes[name] = None, f"{type(exc).__name__}: {exc}"
    return SimpleNamespace(notes=notes, **found)


def _reason(exc):
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def _synchronize():
    if torch.cuda.is_available() and not INTERPRET:
        torch.cuda.synchronize()


def _checked_call(who, stage, function, point, inputs, reference, entries, notes, checks):
    """Bind ``function`` on fresh poisoned buffers, run it once, check its live outputs against
    the reference; only a call that passes is timed."""
    try:
        buffers = allocate_buffers(point, inputs)
        call = bind_call(function, point, inputs, buffers)
        call()
        _synchronize()
        checks[stage] = check_live(point, reference, buffer_outputs(point, buffers), who)
        entries[stage] = call
    except Exception as exc:  # one failing peer must not stop the sweep: recorded with its reason
        notes[stage] = _reason(exc)


def _vllm_call(peer, point, inputs, reference, entries, notes, checks):
    from ..peers.vllm import decode_metadata_call
    try:
        view, out = vllm_inputs(point, inputs), vllm_buffers(point)
        call = decode_metadata_call(peer, view.query_start_loc, view.seq_lens, view.block_table,
                                    out, point.bs, inputs.total_len)
        call()
        _synchronize()
        checks["vllm_indexer"] = check_live(point, reference, vllm_outputs(out), "vllm")
        entries["vllm_indexer"] = call
    except Exception as exc:
        notes["vllm_indexer"] = _reason(exc)


def vllm_applies(point):
    """vLLM's kernel computes the same outputs (expanded lengths, page-granular rows, token ->
    request) in every graph mode; for decode it is the page-table-1-free variant."""
    return point.workload in GRAPH_WORKLOADS and not (point.workload == "decode"
                                                      and point.variant == "page_table_1")


def run_point(point, peers, timing, bandwidth, measure, ours=None):
    """Check, then time one point: ``(records, checks)``. ``ours`` overrides our function (the
    tests use a stand-in); ``measure`` is ``harness.measure_interleaved``."""
    from ..empty_kernel import launch_empty
    if point.workload == "extend":
        return _run_extend(point, peers, timing, bandwidth, measure, ours)
    inputs = make_inputs(point)
    reference = reference_outputs(point, inputs)
    entries, notes, checks = {"empty_kernel": launch_empty}, {}, {}
    configs = {"empty_kernel": EMPTY_CONFIG, "vllm_indexer": _vllm_config()}
    mine, theirs = stage_name("ours", point.workload), stage_name("sglang", point.workload)
    configs[mine] = "ours (nsa_kernels.compat.sglang), same call and buffers as: " + point.config
    configs[theirs] = point.config
    try:
        function = ours or ours_function(point.workload)
        _checked_call("ours", mine, function, point, inputs, reference, entries, notes, checks)
    except Exception as exc:
        notes[mine] = "not available: " + _reason(exc)
    if peers.sglang is not None:
        _checked_call("sglang", theirs, sglang_function(peers.sglang, point.workload), point,
                      inputs, reference, entries, notes, checks)
    else:
        notes[theirs] = "SGLang peer unavailable: " + peers.notes.get("sglang", "")
    if vllm_applies(point):
        if peers.vllm is not None:
            _vllm_call(peers.vllm, point, inputs, reference, entries, notes, checks)
        else:
            notes["vllm_indexer"] = "vLLM peer unavailable: " + peers.notes.get("vllm", "")
    del reference
    times = measure(entries, timing["rounds"], timing["graph_calls"], timing["eager"])
    n_bytes = bytes_moved(point, inputs)
    records = []
    for stage in list(entries) + [s for s in notes if s not in entries]:
        t = times.get(stage, {})
        note = notes.get(stage) or t.get("note")
        records.append(record(point, stage, t.get("graph_us"), t.get("eager_us"),
                              configs.get(stage, ""), n_bytes, note))
    floor_us = n_bytes / bandwidth if bandwidth else None
    records.append(record(point, "bandwidth_floor", floor_us, floor_us, BANDWIDTH_CONFIG, n_bytes))
    for r in records:
        r["tokens"] = inputs.total_len
    del entries, inputs
    return finish_point(records), checks


def _vllm_config():
    from ..peers.vllm import PRODUCTION_CONFIG
    return PRODUCTION_CONFIG


def _run_extend(point, peers, timing, bandwidth, measure, ours=None):
    from ..empty_kernel import launch_empty
    inputs = extend_inputs(point)
    entries, notes, checks = {"empty_kernel": launch_empty}, {}, {}
    mine, theirs = stage_name("ours", "extend"), stage_name("sglang", "extend")
    outputs = {}
    for stage, get in ((mine, lambda: ours or ours_function("extend")),
                       (theirs, lambda: sglang_function(None, "extend"))):
        try:
            call = extend_call(get(), inputs)
            outputs[stage] = call()
            _synchronize()
            entries[stage] = call
        except Exception as exc:
            notes[stage] = "not available: " + _reason(exc)
    if mine in outputs and theirs in outputs:
        try:
            checks[mine] = {"keys vs sglang": len(compare_extend(outputs[mine], outputs[theirs]))}
        except AssertionError as exc:
            notes[mine] = notes[theirs] = f"outputs differ: {exc}"
            entries.pop(mine), entries.pop(theirs)
    any_output = outputs.get(mine) or outputs.get(theirs) or {}
    n_bytes = extend_bytes(inputs, any_output)
    del outputs
    times = measure(entries, timing["rounds"], timing["graph_calls"], timing["eager"], graph=False)
    configs = {"empty_kernel": EMPTY_CONFIG + "; eager (call + synchronize)",
               mine: "ours (nsa_kernels.modes.extend.extend_metadata), eager (call + synchronize)",
               theirs: point.config}
    records = []
    for stage in list(entries) + [s for s in notes if s not in entries]:
        t = times.get(stage, {})
        records.append(record(point, stage, None, t.get("eager_us"), configs.get(stage, ""),
                              n_bytes, notes.get(stage) or t.get("note")))
    floor_us = n_bytes / bandwidth if bandwidth else None
    records.append(record(point, "bandwidth_floor", None, floor_us, BANDWIDTH_CONFIG, n_bytes))
    for r in records:
        r["tokens"] = inputs.total_len
    return finish_point(records), checks


def run(points_, peers, timing, bandwidth, measure, progress=None, ours=None):
    """Every point in turn: ``(records, checks by point name)``; each point's buffers are freed
    before the next is allocated (the largest page tables are 2 GiB each)."""
    records, checks = [], {}
    for i, point in enumerate(points_):
        try:
            recs, chk = run_point(point, peers, timing, bandwidth, measure, ours=ours)
        except Exception as exc:  # e.g. out of memory: recorded, the sweep goes on
            recs = [record(point, stage_name("ours", point.workload), None, None, "", None,
                           "point failed: " + _reason(exc))]
            chk = {}
        records += recs
        checks[point.name] = chk
        if torch.cuda.is_available() and not INTERPRET:
            torch.cuda.empty_cache()
        if progress:
            progress(i + 1, len(points_), point)
    return records, checks
