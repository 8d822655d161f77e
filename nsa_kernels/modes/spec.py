"""What a forward mode is, once: its call, outputs, reference, bytes and production configs.

Each mode module ends with a ``ModeSpec`` (``decode.SPEC``, ...); ``nsa_kernels.modes.SPECS``
maps each measured workload name to its spec. Everything that builds, calls, checks or counts
a mode (the benchmark, the notebooks, the GPU checks) goes through the spec, so a new mode is
its module plus one registry line.

A *point* (``Point``) is one configuration: workload, bs, page-table width, ``next_n``, the
production ``variant`` (which tables SGLang passes), page size, and how lengths are drawn:

* ``lengths="spread"`` (the benchmark): seeded, spread over the mode's range, request 0 at the
  top so the widest row is always exercised;
* ``lengths="boundary"`` (the checks): the first requests at 1, 63/64/65, 2047/2048/2049 and
  the top of the range (clipped to it), the rest spread.

``make_inputs(point)`` gives what the caller holds before the fill (SGLang's graph input
buffers, a page-consistent ``req_to_token`` pool), ``allocate_outputs(point)`` the metadata
buffers as SGLang's graph runner holds them (poisoned, ``slack`` spare entries and rows past
what is written), ``spec.kwargs(point, inputs, outputs)`` SGLang's keyword arguments (ours
take the same), ``live_reference(point, inputs)`` the written entries in plain torch on the
inputs' device, ``check_outputs`` the exact comparison (poison intact outside the live region
when asked), ``spec.bytes_moved(point, inputs)`` the bytes that must move (the numerator of
the bandwidth floor, ``nsa_kernels.bench.floors``).

``live_reference`` is the benchmark's device-side view (a full sweep references page tables
of up to 2 GiB); ``spec.oracle`` is the mode's 64-bit raising oracle (``modes.reference``),
and the tests hold the two equal on small points.
"""
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .._env import DEVICE

PAGE = 64
TOPK = 2048
#: The smallest DRAM read: a page's needed ``req_to_token`` entry costs a 32-byte sector.
SECTOR = 32
INT32, INT64 = 4, 8
POISON = -123456
#: Lengths the checks always include (page and topk edges), clipped to each mode's range.
BOUNDARY_LENGTHS = (1, 63, 64, 65, 2047, 2048, 2049)
FLAT_OUTPUTS = ("cache_seqlens", "cu_seqlens_k", "seqlens_expanded", "dsa_cache_seqlens",
                "dsa_cu_seqlens_k", "paged_mqa_ctx_lens_2d")


@dataclass(frozen=True)
class Variant:
    """One production configuration of a mode: which optional tables SGLang passes, the
    ``next_n`` values measured, whether vLLM's kernel computes the same outputs, and the call
    in words (the ``config`` of every record)."""
    name: str
    config: str
    next_ns: tuple = (1,)
    page_table_1: bool = True
    ctx_lens_2d: bool = False
    vllm: bool = True


@dataclass(frozen=True)
class ModeSpec:
    """A forward mode. ``lengths(point, draw)`` returns ``(seq_lens, extend_seq_lens,
    kv_lens)`` (int64; ``draw(lo, hi)`` gives bs lengths in [lo, hi] as the point asks);
    ``context(point, seq_lens)`` the per-request ``cache_seqlens``; ``expanded(point, seq, ext,
    offset)`` each expanded row's length from its request's ``seq_lens`` and extend length and
    the row's offset in its request; ``kwargs(point, inputs, outputs)`` SGLang's keyword
    arguments. ``ours`` / ``sglang`` name the functions (``module:attribute``; SGLang's inside
    its loaded ``metadata`` module when no module is given)."""
    name: str
    ours: str
    sglang: str
    variants: tuple
    kwargs: Callable
    oracle: Callable
    bytes_moved: Callable
    lengths: Callable = None
    context: Callable = None
    expanded: Callable = None
    fill: str = None
    #: ``seqlens_expanded`` is an output (decode's rows are its requests: no such array).
    expands: bool = True
    #: ``extend_seq_lens`` is an input of the call.
    reads_extend_lens: bool = False
    #: Captured in CUDA graphs (extend runs eagerly: call + synchronize).
    graph: bool = True
    #: The call writes into the caller's buffers (extend allocates and returns its outputs).
    takes_buffers: bool = True
    #: What a benchmark call is checked against, ``(point, inputs) -> reference``; default:
    #: ``live_reference`` (device-side, for buffers of up to 2 GiB).
    reference: Callable = None
    #: ``(point, reference, outputs, returned, who) -> {name: entries compared}``, raising
    #: AssertionError on a difference; default: ``check_outputs`` on the buffers.
    check: Callable = None
    #: Largest bs the full sweep measures (SGLang's eager extend loops on the host per request).
    max_bs: int = None
    #: vLLM's function computing the same outputs (``module:attribute``), where one exists.
    vllm: str = None

    def __post_init__(self):
        if self.reference is None:
            object.__setattr__(self, "reference", live_reference)
        if self.check is None:
            object.__setattr__(self, "check", check_buffers)

    def variant(self, name=""):
        for v in self.variants:
            if v.name == name:
                return v
        raise ValueError(f"{self.name} has no variant {name!r}: "
                         f"{[v.name for v in self.variants]}")

    def variant_for(self, page_table_1, ctx_lens_2d):
        """The production variant passing these tables, else the first one (a point can
        override its variant's tables)."""
        for v in self.variants:
            if (v.page_table_1, v.ctx_lens_2d) == (page_table_1, ctx_lens_2d):
                return v
        return self.variants[0]

    def configs(self):
        """``(next_n, variant name)`` of every measured configuration."""
        return [(n, v.name) for v in self.variants for n in v.next_ns]

    def point(self, bs, width, next_n=None, variant=None, **options):
        """A ``Point`` of this mode; ``next_n`` and ``variant`` default to the first config's."""
        v = self.variant(self.variants[0].name if variant is None else variant)
        return Point(self.name, bs, width, v.next_ns[0] if next_n is None else next_n, v.name,
                     **options)

    def ours_function(self):
        return _resolve(self.ours)

    @property
    def sglang_in_peer(self):
        """SGLang's function lives in its loaded wheel (else in a module of ours that replays
        SGLang's eager path)."""
        return ":" not in self.sglang

    def sglang_function(self, peer):
        """SGLang's function: inside ``peer.metadata`` (the loaded peer), or by module path."""
        if self.sglang_in_peer:
            return getattr(peer.metadata, self.sglang)
        return _resolve(self.sglang)

    def fill_class(self):
        return _resolve(self.fill) if self.fill else None

    def rows(self, point):
        """Expanded rows the buffers hold (decode: one per request)."""
        if not self.expands:
            return point.bs
        return point.bs * point.next_n + point.partial

    def output_sizes(self, point):
        """``{name: shape}`` of every buffer the call takes (``None``: not passed), without
        slack; page size 1 makes ``real_page_table`` the same tensor as ``page_table_1``."""
        if not self.takes_buffers:
            return {}
        rows, bs = self.rows(point), point.bs
        wide = point.page_table_1 or point.page_size == 1
        sizes = dict(cache_seqlens=(bs,), cu_seqlens_k=(bs + 1,),
                     seqlens_expanded=(rows,) if self.expands else None,
                     dsa_cache_seqlens=(rows,), dsa_cu_seqlens_k=(rows + 1,),
                     page_table_1=(rows, point.width) if wide else None,
                     real_page_table=(rows, -(-point.width // point.page_size))
                     if point.page_size > 1 else None,
                     paged_mqa_ctx_lens_2d=(bs, point.next_n) if point.ctx_lens_2d else None)
        return sizes


def _resolve(path):
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Point:
    """One configuration of a mode. ``next_n``: 1 for decode, num_draft_tokens (verify,
    static draft extend) or the largest accept length (varlen); the variant's tables unless
    ``page_table_1`` / ``ctx_lens_2d`` say otherwise; ``partial``: spare rows of
    ``max_total_len`` past ``total_len`` (draft extend's partial graph buckets)."""
    workload: str
    bs: int
    width: int
    next_n: int = 1
    variant: str = ""
    seed: int = 0
    page_size: int = PAGE
    lengths: str = "spread"
    partial: int = 0
    page_table_1: bool = None
    ctx_lens_2d: bool = None
    topk: int = TOPK

    def __post_init__(self):
        if self.workload not in _specs():
            raise ValueError(f"workload must be one of {sorted(_specs())}, got {self.workload!r}")
        if self.lengths not in ("spread", "boundary"):
            raise ValueError(f"lengths must be 'spread' or 'boundary', got {self.lengths!r}")
        v = self.spec.variant(self.variant)
        if self.page_table_1 is None:
            object.__setattr__(self, "page_table_1", v.page_table_1)
        if self.ctx_lens_2d is None:
            object.__setattr__(self, "ctx_lens_2d", v.ctx_lens_2d)

    @property
    def spec(self):
        return _specs()[self.workload]

    @property
    def name(self):
        tail = f"/{self.variant}" if self.variant else ""
        v = self.spec.variant(self.variant)
        extra = "" if (self.page_size, self.page_table_1, self.ctx_lens_2d, self.partial) == (
            PAGE, v.page_table_1, v.ctx_lens_2d, 0) else (
            f"/page={self.page_size}/pt1={int(self.page_table_1)}"
            f"/ctx={int(self.ctx_lens_2d)}/partial={self.partial}")
        return f"{self.workload}{tail}/bs={self.bs}/width={self.width}/next_n={self.next_n}{extra}"

    @property
    def config(self):
        return self.spec.variant(self.variant).config

    @property
    def vllm(self):
        """vLLM's kernel computes the same outputs for this point."""
        return self.spec.vllm is not None and self.spec.variant(self.variant).vllm

    def with_(self, **changes):
        return replace(self, **changes)


def _specs():
    from . import SPECS  # the registry imports every mode module, which import this one
    return SPECS


@dataclass
class Inputs:
    """What the caller holds before the fill: SGLang's graph input buffers and its pool."""
    seq_lens: torch.Tensor          # int64 [bs]; decode: kv; verify: kv before drafts; draft: kv
    req_pool_indices: torch.Tensor  # int64 [bs]
    req_to_token: torch.Tensor      # int32 [pool rows, width], page-consistent token slots
    extend_seq_lens: torch.Tensor   # int32 [bs]: 1 (decode), next_n, or accept lengths
    kv_lens: torch.Tensor           # int64 [bs]: the kv each request's page-table rows cover
    total_len: int                  # expanded rows written
    extra: dict = field(default_factory=dict)


def generator(seed):
    """A CPU generator, so that a seed gives the same lengths on every device."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def draw_lengths(lo, hi, n, gen, boundary=False):
    """``n`` int64 lengths in [lo, hi] (``hi`` an int or a per-request tensor), spread over the
    range; the first at ``hi`` (spread), or the first ones at 0 (a padded graph row),
    ``BOUNDARY_LENGTHS`` and ``hi`` clipped to [0, hi] (boundary)."""
    hi = torch.as_tensor(hi, dtype=torch.int64).expand(n).clamp_min(lo)
    values = lo + (torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo + 1)).long()
    values = torch.minimum(values, hi)
    if boundary:
        first = torch.tensor([0, *BOUNDARY_LENGTHS], dtype=torch.int64)[:n]
        values[:first.numel()] = torch.minimum(first, hi[:first.numel()])
        tail = min(n, first.numel() + 2) - first.numel()
        if tail > 0:
            values[first.numel():first.numel() + tail] = hi[first.numel():first.numel() + tail]
    elif n:
        values[0] = hi[0]
    return values


def req_to_token_pool(rows, width, gen, device=DEVICE, page=PAGE):
    """int32 ``[rows, width]`` token slots, page-consistent: slot = page * 64 + offset, so that
    every 64th entry // 64 is the page id (what ``real_page_table`` holds)."""
    pages = torch.randint(0, 1 << 20, (rows, -(-width // page)), generator=gen, dtype=torch.int32)
    table = pages.repeat_interleave(page, dim=1)[:, :width] * page
    table += torch.arange(page, dtype=torch.int32).repeat(-(-width // page))[:width]
    return table.to(device)


def make_inputs(point, device=DEVICE):
    """Seeded inputs of ``point`` (the mode's ``lengths``); slot 0 of the pool kept free, as
    SGLang's request pool reserves it."""
    spec, bs = point.spec, point.bs
    gen = generator(point.seed * 1_000_003 + bs * 7919 + point.width + point.next_n)
    boundary = point.lengths == "boundary"
    seq, ext, kv = spec.lengths(point, lambda lo, hi: draw_lengths(lo, hi, bs, gen, boundary))
    req_pool_indices = torch.randperm(bs, generator=gen) + 1
    table = req_to_token_pool(bs + 1, point.width, gen, device)
    return Inputs(seq_lens=seq.to(device), req_pool_indices=req_pool_indices.to(device),
                  req_to_token=table, extend_seq_lens=ext.to(torch.int32).to(device),
                  kv_lens=kv.to(device), total_len=int(ext.sum()))


def allocate_outputs(point, poison=POISON, slack=0, device=DEVICE):
    """The mode's buffers, poisoned, ``slack`` spare entries (flat) and rows (tables) past
    what the call may write; ``None`` for a table the call does not take."""
    out = {}
    for name, shape in point.spec.output_sizes(point).items():
        if shape is None:
            out[name] = None
            continue
        if name != "paged_mqa_ctx_lens_2d":
            shape = (shape[0] + slack,) + tuple(shape[1:])
        out[name] = torch.full(shape, poison, dtype=torch.int32, device=device)
    if point.page_size == 1 and "page_table_1" in out:
        out["real_page_table"] = out["page_table_1"]
    return out


def bind(function, point, inputs, outputs):
    """A zero-argument closure of ``function`` (ours or SGLang's) on ``point``: for timing,
    CUDA-graph capture and checks."""
    kwargs = point.spec.kwargs(point, inputs, outputs)
    return lambda: function(**kwargs)


def common_kwargs(point, inputs, outputs):
    """The arguments every fused mode takes, under SGLang's names."""
    o = outputs
    return dict(seq_lens=inputs.seq_lens, req_pool_indices=inputs.req_pool_indices,
                req_to_token=inputs.req_to_token, cache_seqlens=o["cache_seqlens"],
                cu_seqlens_k=o["cu_seqlens_k"], page_table_1=o["page_table_1"],
                dsa_cache_seqlens=o["dsa_cache_seqlens"], dsa_cu_seqlens_k=o["dsa_cu_seqlens_k"],
                real_page_table=o["real_page_table"], bs=point.bs, dsa_index_topk=point.topk,
                physical_page_size=point.page_size)


def expand_counts(point, inputs):
    """Expanded rows per request, as the kernel uses them (decode: 1)."""
    if not point.spec.expands:
        return torch.ones_like(inputs.seq_lens)
    return inputs.extend_seq_lens.to(torch.int64).clamp(0, point.next_n)


def _with_zero(values):
    out = torch.zeros(values.numel() + 1, dtype=torch.int32, device=values.device)
    out[1:] = torch.cumsum(values, 0)
    return out


def request_of_row(point, inputs):
    """The request each written expanded row belongs to."""
    ext = expand_counts(point, inputs)
    rows = torch.repeat_interleave(torch.arange(point.bs, device=ext.device), ext)
    return rows[:inputs.total_len]


def row_live_columns(point, inputs):
    """Per written expanded row: its live page-table columns, ``min(kv, width)``."""
    kv = inputs.kv_lens.to(torch.int64)
    return kv[request_of_row(point, inputs)].clamp(0, point.width)


def live_reference(point, inputs):
    """The written entries in plain torch: ``{name: (tensor, live columns per row or None)}``,
    plus ``token_to_request`` (what vLLM's kernel also computes)."""
    spec = point.spec
    seq = inputs.seq_lens.to(torch.int64)
    ext = expand_counts(point, inputs)
    device = seq.device
    row_req = request_of_row(point, inputs)
    starts = torch.cumsum(ext, 0) - ext
    offset = torch.arange(row_req.numel(), device=device) - starts[row_req]
    context = spec.context(point, seq)
    expanded = spec.expanded(point, seq[row_req], ext[row_req], offset)
    dsa = expanded.clamp_max(point.topk)
    out = {"cache_seqlens": (context.to(torch.int32), None),
           "cu_seqlens_k": (_with_zero(context), None),
           "seqlens_expanded": (expanded.to(torch.int32), None),
           "dsa_cache_seqlens": (dsa.to(torch.int32), None),
           "dsa_cu_seqlens_k": (_with_zero(dsa), None),
           "token_to_request": (row_req.to(torch.int32), None)}
    rows = inputs.req_to_token[inputs.req_pool_indices[row_req]]
    row_kv = row_live_columns(point, inputs)
    ps = point.page_size
    if point.page_table_1 or ps == 1:
        out["page_table_1"] = (rows, row_kv)
    if ps > 1:
        out["real_page_table"] = (rows[:, ::ps] // ps, (row_kv + ps - 1) // ps)
    if point.ctx_lens_2d:
        out["paged_mqa_ctx_lens_2d"] = (context.to(torch.int32)[:, None]
                                        .expand(point.bs, point.next_n), None)
    return out


def compare_live(what, actual, expected, live_cols=None, poison=None):
    """Raise AssertionError naming the first differing entry, else return the number of live
    entries compared. 1-D (or 2-D without ``live_cols``): the first ``len(expected)`` rows;
    2-D with ``live_cols``: row r over ``[:live_cols[r]]``. With ``poison``, every other entry
    of ``actual`` must still hold it (nothing written outside the live region)."""
    rows = expected.shape[0]
    got = actual[:rows]
    if got.dtype != expected.dtype:
        got, expected = got.to(torch.int64), expected.to(torch.int64)
    if live_cols is None:
        got = got.reshape(expected.shape)
        want = expected
        bad = got != expected
        live = expected.numel()
        tail = actual.reshape(-1)[expected.numel():] if actual.dim() == 1 else actual[rows:]
    else:
        cols = min(expected.shape[1], got.shape[1])
        mask = (torch.arange(got.shape[1], device=got.device)[None, :]
                < live_cols.to(got.device)[:, None])
        want = torch.zeros_like(got)
        want[:, :cols] = expected[:, :cols].to(got.dtype)
        bad = (got != want) & mask
        if poison is not None:
            bad |= ~mask & (got != poison)
        live = int(mask.sum())
        tail = actual[rows:]
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        outside = live_cols is not None and not bool(mask[where])
        expected_text = f"the poison {poison}, outside the live columns" if outside else (
            f"{int(want[where])}")
        raise AssertionError(f"{what}: differs at {where}: got {int(got[where])}, expected "
                             f"{expected_text} ({int(bad.sum())} entries differ)")
    if poison is not None and bool((tail != poison).any()):
        raise AssertionError(f"{what}: written past its range")
    return live


def check_outputs(point, reference, outputs, who="ours", poison=None):
    """Compare every output both define; ``{name: live entries compared}``. With ``poison``,
    also that nothing outside the live regions was written."""
    counts = {}
    for name, actual in outputs.items():
        if actual is None or name not in reference:
            continue
        if name == "real_page_table" and point.page_size == 1:
            continue  # the same tensor as page_table_1
        expected, cols = reference[name]
        counts[name] = compare_live(f"{who} {point.name} {name}", actual, expected, cols,
                                    poison)
    if not counts:
        raise AssertionError(f"{who} {point.name}: no output in common with the reference")
    return counts


def check_buffers(point, reference, outputs, returned=None, who="ours"):
    """``check_outputs`` on the buffers a call wrote (what it returned is not used)."""
    return check_outputs(point, reference, outputs, who)


def oracle_outputs(point, inputs):
    """``spec.oracle`` on the point: 64-bit, on the host, raising where int32 cannot hold a
    result."""
    return point.spec.oracle(point, inputs)


def graph_bytes(point, inputs):
    """Bytes that must move for a graph-mode point, each counted once:

    * read: ``seq_lens`` and ``req_pool_indices`` (int64, SGLang's graph buffers),
      ``extend_seq_lens`` (int32) where the call takes it, and each request's live
      ``req_to_token`` entries once (not once per expanded row): all of them (4 B) where
      ``page_table_1`` is written, else one per page, as a 32-byte sector (the 64 entries of
      a page span 256 B, so the needed entries never share a sector);
    * written: every flat output over its live length, ``page_table_1`` rows over their live
      columns and ``real_page_table`` rows over ``ceil(kv / page)`` (4 B each), once per
      expanded row.
    """
    spec, bs, ps = point.spec, point.bs, point.page_size
    kv = inputs.kv_lens.to(torch.int64).cpu().clamp(0, point.width)
    ext = expand_counts(point, inputs).cpu()
    rows = inputs.total_len
    row_kv = torch.repeat_interleave(kv, ext)[:rows]
    wide = point.page_table_1 or ps == 1
    read = bs * (INT64 + INT64) + (bs * INT32 if spec.reads_extend_lens else 0)
    written = int(row_kv.sum()) * INT32 if wide else 0
    if wide:
        read += int(kv.sum()) * INT32
    else:
        read += int(((kv + ps - 1) // ps).sum()) * SECTOR
    if ps > 1:
        written += int(((row_kv + ps - 1) // ps).sum()) * INT32
    written += bs * INT32 + (bs + 1) * INT32       # cache_seqlens, cu_seqlens_k
    written += rows * INT32 + (rows + 1) * INT32   # dsa_cache_seqlens, dsa_cu_seqlens_k
    if spec.expands:
        written += rows * INT32                    # seqlens_expanded
    if point.ctx_lens_2d:
        written += bs * point.next_n * INT32       # paged_mqa_ctx_lens_2d
    return read + written
