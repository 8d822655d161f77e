"""Conformance inside SGLang: its own method, as shipped and with the workbook installed.

Every case runs one of SGLang 0.5.23's per-step methods twice through
``nsa_kernels.peers.sglang_backend`` (the harness that loads SGLang's files from the wheel):
on a backend as shipped, and on a twin backend (same configuration, same ``req_to_token``) with
the workbook's ``install`` applied (or another ``install(backend)``: ``run(..., install=)``, as
``python -m nsa_kernels.peers.sglang_backend_check --conformance MODULE:FUNC`` passes it); then
every tensor of ``forward_metadata`` is compared (``compare_metadata``:
flat arrays whole, page rows over their live prefix, SGLang's contract) and so are its host
fields (``max_seq_len_q``, ``dsa_extend_seq_lens_list``, ...). With the workbook's install a
case also checks that the installed side served the step itself: the twin's SGLang method is
called only for capture.

Modes: ``decode`` (wide table), ``decode_narrow`` (no wide table: SGLang has a fused path only,
GPU), ``target_verify`` and ``draft_extend`` (v2) replays with next_n, ``extend`` (PAGED, with and
without cached prefixes), ``extend_ragged`` (FP8 KV), the eager ``eager_decode`` /
``eager_target_verify`` / ``eager_draft_extend`` and ``mtp_decode`` (the multi-step draft
backend, ``steps`` draft steps). ``cases(full)`` is the grid: ``full`` the GPU grid (bs 1..512
with padded replays, widths 8192 and 131072, next_n 2..6, boundary lengths), else a small set the
interpreter runs in a few minutes (one of them as wide as the top-k, 2048, so that lengths
cross it: the DSA lengths' clamp).
"""
import dataclasses
import time
import zlib
from collections import Counter, defaultdict
from types import SimpleNamespace

import torch

from .._env import DEVICE
from . import sglang as integration

GRAPH_MODES = ("decode", "decode_narrow", "target_verify", "draft_extend")
EAGER_MODES = ("eager_decode", "eager_target_verify", "eager_draft_extend")
EXTEND_MODES = ("extend", "extend_ragged")
MODES = GRAPH_MODES + EAGER_MODES + EXTEND_MODES + ("mtp_decode",)
#: The small grid's wide cases: past SGLang's top-k (2048) with room for next_n more.
TOPK_EDGE_WIDTH = 2056
#: Host fields of ``DSAMetadata`` compared besides the tensors (``None``-ness of every
#: optional field too).
HOST_FIELDS = ("page_size", "max_seq_len_q", "max_seq_len_k", "dsa_extend_seq_lens_list",
               "dsa_max_seqlen_q", "seq_lens_sum", "pooled_index_kpool")


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison: ``mode`` at graph / batch size ``bs`` with ``raw_bs`` live requests."""
    mode: str
    bs: int
    raw_bs: int
    width: int
    next_n: int = 0
    steps: int = 0
    prefix: bool = True
    seed: int = 0
    #: Graph sizes the backend is built for (0: ``bs``); a server's graphs of every bs share
    #: one set of static buffers, and so do a pair's.
    max_bs: int = 0

    def config(self, harness_module):
        kv = "fp8" if self.mode == "extend_ragged" else "bf16"
        next_n = self.next_n if self.mode in ("target_verify", "draft_extend",
                                              "eager_target_verify", "eager_draft_extend") else 0
        return harness_module.HarnessConfig(max_bs=max(self.max_bs, self.bs, 1), width=self.width,
                                            next_n=next_n, kv_dtype=kv,
                                            wide_table=self.mode != "decode_narrow",
                                            device=DEVICE)


def lengths_for(case, extra):
    """``raw_bs`` kv lengths for ``case`` (``sglang_backend_check.boundary_lengths``: the
    boundary lengths that fit, then random ones); ``extra`` more must fit the width, and the
    smallest is ``max(next_n, 1)`` for draft_extend (its rows hold the draft tokens)."""
    from nsa_kernels.peers.sglang_backend_check import boundary_lengths
    low = max(case.next_n if "draft_extend" in case.mode else 1, 1)
    return boundary_lengths(case.raw_bs, case.width - extra, low,
                            zlib.crc32(repr(case).encode()) % (1 << 31)).tolist()


class Pair:
    """A shipped backend and its installed twin for one configuration (``install``: the
    workbook's by default)."""

    def __init__(self, sb, config, install=None):
        self.shipped = sb.SGLangHarness(config)
        self.installed = sb.SGLangHarness(config)
        self.installed.install(install or integration.install)
        self.fallbacks = Counter()
        served = integration.installation(self.installed.backend)
        if served is None:  # another install: no workbook fallbacks to count
            return
        original = served.original

        def counted(name):
            self.fallbacks[name] += 1
            return original(name)
        served.original = counted


def _host_fields(metadata):
    out = {name: getattr(metadata, name) for name in HOST_FIELDS}
    for item in dataclasses.fields(metadata):
        out[f"{item.name} is None"] = getattr(metadata, item.name) is None
    return out


def _compare_host(a, b):
    fa, fb = _host_fields(a), _host_fields(b)
    for name in fa:
        if fa[name] != fb[name]:
            raise AssertionError(f"forward_metadata.{name}: {fa[name]!r} (SGLang) vs "
                                 f"{fb[name]!r} (installed)")


def run_case(sb, pair, case):
    """Run ``case`` on both sides and compare; returns the number of tensors compared. Raises
    ``AssertionError`` (``MetadataMismatch``) on a difference."""
    g = torch.Generator().manual_seed(case.seed)
    pool = torch.randperm(max(case.max_bs, case.bs, 1), generator=g)[:case.raw_bs]
    extra = case.next_n if case.mode in ("target_verify", "eager_target_verify") else 0
    seq = torch.tensor(lengths_for(case, extra), dtype=torch.int64)
    qo = [int(torch.randint(1, kv + 1, (), generator=g)) if case.prefix else kv
          for kv in seq.tolist()]
    before = sum(v for k, v in pair.fallbacks.items() if k != "_apply_cuda_graph_metadata")
    results = []
    for side in (pair.shipped, pair.installed):
        if case.mode in GRAPH_MODES:
            call = {"decode_narrow": "decode"}.get(case.mode, case.mode)
            results.append(getattr(side, call)(seq, pool, graph_bs=case.bs))
        elif case.mode in EAGER_MODES:
            results.append(side.eager(case.mode[len("eager_"):], seq, pool))
        else:
            results.append(side.extend(seq, torch.tensor(qo), pool))
        results[-1].metadata = side.backend.forward_metadata
    compared = sb.compare_metadata(results[0], results[1])
    _compare_host(results[0].metadata, results[1].metadata)
    after = sum(v for k, v in pair.fallbacks.items() if k != "_apply_cuda_graph_metadata")
    if after != before:
        raise AssertionError(f"{case}: the installed backend fell back to SGLang's method "
                             f"({dict(pair.fallbacks)})")
    return compared


# ----------------------------------------------------------------------------- MTP

class MultiStepPair:
    """Two ``DeepseekSparseAttnMultiStepBackend``s (``steps - 1`` draft backends each, built as
    SGLang builds one per draft step), one of them installed; the draft backends of a side
    share one ``req_to_token`` as a server's do."""

    def __init__(self, sb, config, steps, in_graph=False, install=None):
        module = sb.load().backend_module
        self.sb, self.steps, self.sides = sb, steps, []
        for installed in (False, True):
            harnesses = [sb.SGLangHarness(config) for _ in range(steps - 1)]
            for h in harnesses[1:]:
                h.backend.req_to_token = harnesses[0].req_to_token
                h.backend.req_to_token_pool = harnesses[0].backend.req_to_token_pool
            multi = object.__new__(module.DeepseekSparseAttnMultiStepBackend)
            multi.topk, multi.speculative_num_steps = 1, steps
            multi._sink_pad_cache = {}
            multi.attn_backends = [h.backend for h in harnesses]
            if installed and install is not None:
                install(multi)
            elif installed:
                integration.install(multi, in_graph=in_graph)
            self.sides.append(SimpleNamespace(multi=multi, harnesses=harnesses, captured=set()))

    def step(self, side, seq, pool, bs):
        fm = self.sb.load().forward_mode
        fill = side.harnesses[0].backend.get_cuda_graph_seq_len_fill_value()
        device = side.harnesses[0].device
        static_seq = torch.full((bs,), fill, dtype=torch.int64, device=device)
        static_req = torch.zeros(bs, dtype=torch.int64, device=device)
        if bs not in side.captured:
            capture = SimpleNamespace(batch_size=bs, forward_mode=fm.DECODE,
                                      seq_lens=static_seq.clone(), seq_lens_cpu=None,
                                      seq_lens_sum=None, req_pool_indices=static_req.clone(),
                                      spec_info=None)
            side.multi.init_forward_metadata_out_graph(capture, in_capture=True)
            side.captured.add(bs)
        static_seq[:seq.numel()] = seq.to(device)
        static_req[:seq.numel()] = pool.to(device)
        view = SimpleNamespace(batch_size=bs, forward_mode=fm.DECODE, seq_lens=static_seq,
                               seq_lens_cpu=static_seq.cpu(), seq_lens_sum=None,
                               req_pool_indices=static_req, spec_info=None)
        side.multi.init_forward_metadata_out_graph(view)
        lengths = static_seq.cpu()
        return [self.sb.MetadataResult(
            tensors=self.sb.metadata_tensors(b.forward_metadata),
            case=self.sb.MetadataCase(mode="decode", bs=bs, raw_bs=seq.numel(), next_n=0,
                                      page_size=b.physical_page_size, row_lengths=lengths))
                for b in side.multi.attn_backends]


def run_mtp_case(sb, pair, case):
    g = torch.Generator().manual_seed(case.seed)
    pool = torch.randperm(max(case.max_bs, case.bs, 1), generator=g)[:case.raw_bs]
    seq = torch.tensor(lengths_for(case, 0), dtype=torch.int64)
    shipped, installed = (pair.step(side, seq, pool, case.bs) for side in pair.sides)
    compared = 0
    for k, (x, y) in enumerate(zip(shipped, installed)):
        try:
            compared += sb.compare_metadata(x, y)
        except AssertionError as exc:
            raise AssertionError(f"draft backend {k}: {exc}") from None
    return compared


# ----------------------------------------------------------------------------- the grid

#: Graph sizes also replayed one request short of full (a single padding row).
ONE_SHORT = (8, 32, 512)


def _graph_sizes(sizes):
    """Each graph bs as a full replay and as a padded one (raw_bs < bs); those of
    ``ONE_SHORT`` also with ``bs - 1`` requests."""
    for bs in sizes:
        yield bs, bs
        if bs > 1:
            yield bs, max(1, bs - 1 - bs // 3)
        if bs in ONE_SHORT:
            yield bs, bs - 1


def cases(full=False, modes=MODES, seed=0):
    """The conformance grid (see the module doc); ``seed`` varies every case's lengths and
    pool rows."""
    if full:
        sizes, widths, next_ns = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512), (8192, 131072), \
            (2, 3, 4, 5, 6)
        eager_sizes, extend_sizes, mtp_steps = (1, 3, 33, 600), (1, 4, 32, 128), (3, 5)
    else:
        sizes, widths, next_ns = (1, 3), (320,), (2,)
        eager_sizes, extend_sizes, mtp_steps = (3,), (3,), (3,)
    out, top = [], max(sizes)
    for width in widths:
        for mode in ("decode", "decode_narrow"):
            out += [Case(mode, bs, raw, width, max_bs=top) for bs, raw in _graph_sizes(sizes)]
        for mode in ("target_verify", "draft_extend"):
            out += [Case(mode, bs, raw, width, n, max_bs=top) for n in next_ns
                    for bs, raw in _graph_sizes(sizes)]
        out += [Case("eager_decode", bs, bs, width) for bs in eager_sizes]
        for mode in ("eager_target_verify", "eager_draft_extend"):
            out += [Case(mode, bs, bs, width, n) for n in next_ns for bs in eager_sizes]
        for mode in EXTEND_MODES:
            out += [Case(mode, bs, bs, width, prefix=p) for bs in extend_sizes
                    for p in (True, False)]
        out += [Case("mtp_decode", bs, raw, width, steps=s, max_bs=max(sizes[:6]))
                for s in mtp_steps for bs, raw in _graph_sizes(sizes[:6])]
    if not full:
        # Lengths across the top-k (2047, 2048, 2049 fit) and a next_n of 4, padded replays
        # included, as the GPU grid has them.
        out += [Case("decode", 3, 2, TOPK_EDGE_WIDTH, max_bs=3),
                Case("target_verify", 3, 3, TOPK_EDGE_WIDTH, 4, max_bs=3),
                Case("draft_extend", 3, 2, TOPK_EDGE_WIDTH, 4, max_bs=3),
                Case("extend", 3, 3, TOPK_EDGE_WIDTH)]
    return [dataclasses.replace(c, seed=seed) for c in out if c.mode in modes]


def run(case_list, progress=None, budget_s=None, install=None):
    """Run ``case_list`` (on twins with ``install`` applied: the workbook's by default);
    returns ``(rows, failures, skipped)``: per mode ``{"mode", "cases", "equal", "tensors"}``,
    the failures as ``(case, message)`` (a difference, or an error raised by either side), the
    skipped as ``(case, reason)`` (a configuration the harness cannot run on this device, or a
    case left when ``budget_s`` seconds had passed)."""
    from nsa_kernels.peers import sglang_backend as sb
    pairs, counts = {}, defaultdict(Counter)
    failures, skipped = [], []
    start = time.perf_counter()
    for i, case in enumerate(case_list):
        if budget_s is not None and time.perf_counter() - start > budget_s:
            skipped.append((case, f"not run: the {budget_s:g} s budget was spent"))
            continue
        key = (case.config(sb), case.steps)
        try:
            if key not in pairs:
                pairs.clear()  # one configuration's buffers at a time
                pairs[key] = (MultiStepPair(sb, key[0], case.steps, install=install)
                              if case.mode == "mtp_decode" else Pair(sb, key[0], install))
        except sb.HarnessUnavailable as exc:
            skipped.append((case, str(exc)))
            continue
        counts[case.mode]["cases"] += 1
        try:
            runner = run_mtp_case if case.mode == "mtp_decode" else run_case
            counts[case.mode]["tensors"] += runner(sb, pairs[key], case)
            counts[case.mode]["equal"] += 1
        except AssertionError as exc:
            failures.append((case, str(exc)))
        except Exception as exc:  # noqa: BLE001  (an error on either side fails this case only)
            failures.append((case, f"{type(exc).__name__}: {exc}"))
        if progress:
            progress(i + 1, len(case_list), case)
    rows = [{"mode": mode, **{k: counts[mode][k] for k in ("cases", "equal", "tensors")}}
            for mode in MODES if mode in counts]
    return rows, failures, skipped
