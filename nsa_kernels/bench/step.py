"""The whole per-step metadata cost a SGLang user pays, side by side, one process.

Every side calls SGLang 0.5.23's own per-step method (``nsa_kernels.peers.sglang_backend``
loads it from the wheel) as its runners call it: the graph modes through
``init_forward_metadata_out_graph`` on the runner's static buffers (what ``load_batch`` runs
before every ``graph.replay()``), ``mtp_decode`` through the multi-step draft backend's,
``extend`` and ``eager_decode`` through ``init_forward_metadata``. The sides:

* ``sglang_step``: SGLang's method as shipped, with DeepGEMM's schedule
  (``_refresh_paged_mqa_schedule_metadata`` / ``get_paged_mqa_logits_metadata``) and the top-k
  plan (``_refresh_topk_v2_plan`` / ``_build_topk_v2_plan``) made no-ops: the part the
  workbook replaces.
* ``sglang_step_full``: the same with both replaced by launch-equivalent stand-ins (an
  allocation and a small kernel writing an output of the real shape, then SGLang's ``copy_``),
  so the step keeps its launch count.
* ``nsa_dropin``: SGLang's method with ``nsa_kernels.compat.sglang``'s functions assigned to
  its ``_fused_*_metadata`` attributes (graph modes; SGLang calls them only on CUDA).
* ``nsa_installed`` / ``nsa_installed_full``: ``integrations.sglang.install(backend)``, schedule
  and plan as in ``sglang_step`` / ``sglang_step_full``.
* ``nsa_in_graph``: installed with ``in_graph=True``; its host step only re-points
  ``forward_metadata``, its graph time is the replay of the metadata captured in a graph.
* floors at the same point: ``empty_kernel``, ``empty_driver``, ``empty_graph``
  (``bench.floors``) and ``bandwidth_floor`` (bytes that must move / this run's copy bandwidth,
  ``bench.modes``). ``floor_us`` is ``modes.finish_point``'s: one floor model for every notebook.

* ``vllm_hopper`` (decode and target_verify): vLLM 0.33's own step for the same batch on
  Hopper, ``DeepseekV32IndexerMetadataBuilder.build`` (``v1/attention/backends/mla/
  indexer.py``) as ``peers.vllm_hopper`` loads it: on SM90 it never launches
  ``_indexer_decode_metadata_kernel`` (vLLM's SM100 path, ``peers.vllm``, timed in
  ``bench.modes`` as ``vllm_indexer``); its decode step is ``torch.diff`` and a copy, plus
  ``_prepare_decode_tensors``' elementwise per-token lengths for next_n > 1. DeepGEMM's
  schedule is left out, as ``sglang_step`` leaves SGLang's out. Its inputs are the same batch:
  ``seq_lens`` counting the step's tokens, the block table ``req_to_token[pool, ::64] // 64``,
  made once per point outside the timed step (vLLM's runner builds its
  ``CommonAttentionMetadata`` once for every attention group; ``build`` is the indexer's own
  cost).
  vLLM defines fewer outputs than SGLang: the ones both define, per-token KV lengths
  (``dsa_seqlens_expanded``) and page ids per query row (``real_page_table``), are compared
  with ``sglang_step``'s and ``nsa_installed``'s before timing.

Times per step, every side and floor of a point sampled in the same interleaved rounds:
``host_us`` (steps back to back, no sync: ``floors.host_times``), ``eager_us`` (call +
synchronize: ``harness.eager_us``), ``graph_us`` (the step captured in a CUDA graph and
replayed, the glue-graph case: ``harness.try_capture``). Each is the median of the rounds'
medians, with ``<metric>_p20`` / ``<metric>_p80`` over the rounds. Before timing, every side's
``forward_metadata`` (tensors and host fields) is compared with ``sglang_step``'s; a side that
differs is not timed and its record says why.

``python -m nsa_kernels.bench.step --profile full --out step.json`` runs the GPU sweep.
"""
import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..compat import sglang as compat
from ..integrations import sglang as integration
from ..integrations.sglang_conformance import Case, MultiStepPair, _host_fields, lengths_for
from ..integrations.sglang_host_cost import _eager_batch, _graph_view
from ..modes.spec import Inputs, Point
from ..peers import sglang_messages, vllm_hopper
from . import floors, harness, modes

SIDES = ("sglang_step", "sglang_step_full", "nsa_dropin", "nsa_installed",
         "nsa_installed_full", "nsa_in_graph", "vllm_hopper")
FLOOR_STAGES = ("empty_kernel", "empty_driver", "empty_graph", "bandwidth_floor")
METRICS = ("host_us", "eager_us", "graph_us")
NOOP, STANDIN = "noop", "standin"
#: The schedule / plan treatment of each side (``nsa_dropin`` and ``nsa_in_graph``: as
#: ``sglang_step``, the part the workbook replaces).
KIND = {"sglang_step": NOOP, "sglang_step_full": STANDIN, "nsa_dropin": NOOP,
        "nsa_installed": NOOP, "nsa_installed_full": STANDIN, "nsa_in_graph": NOOP,
        "vllm_hopper": NOOP}
GRAPH_MODES = ("decode", "decode_narrow", "target_verify", "draft_extend")
#: The modes vLLM's Hopper decode path covers (decode, and target verify: next_n 2 and 4 are
#: its native multi-token path on SM90).
VLLM_MODES = ("decode", "decode_narrow", "target_verify")
#: The sides the ``vllm_hopper`` outputs are compared with (the ones both define).
VLLM_CHECKED_AGAINST = ("sglang_step", "nsa_installed")
#: ``(workload, config, harness mode, next_n, steps)`` of every measured configuration.
CONFIGS = (
    ("decode", "wide table (page_table_1)", "decode", 1, 0),
    ("decode", "no wide table (real_page_table only)", "decode_narrow", 1, 0),
    ("target_verify", "graph replay", "target_verify", 2, 0),
    ("target_verify", "graph replay", "target_verify", 4, 0),
    ("draft_extend_static", "draft_extend v2 graph replay", "draft_extend", 2, 0),
    ("draft_extend_static", "draft_extend v2 graph replay", "draft_extend", 4, 0),
    ("extend", "PAGED (bf16 KV), cached prefixes", "extend", 0, 0),
    ("extend", "RAGGED (fp8 KV), cached prefixes", "extend_ragged", 0, 0),
    ("mtp_decode", "3 draft steps", "mtp_decode", 1, 3),
    ("mtp_decode", "5 draft steps", "mtp_decode", 1, 5),
    ("eager_decode", "init_forward_metadata (bs above every graph)", "eager_decode", 1, 0),
)
WORKLOADS = tuple(dict.fromkeys(c[0] for c in CONFIGS))
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
WIDTHS = (8192, 65536, 131072)
MTP_FALLBACK_NOTE = (
    "not SGLang's production cost: its JIT fused copy (fused_metadata_copy_*_cuda) cannot be "
    "built here (tvm_ffi absent), so each step tries the build, fails and takes SGLang's "
    "individual-copy fallback; left out of the targets against SGLang")
#: SGLang's eager prefill launches about 5·bs + 17 kernels a step: the sweep stops here.
EXTEND_MAX_BS = 64


@dataclass(frozen=True)
class Group:
    """One configuration at one width; its sides are built once (SGLang's runner holds one
    backend whose graph state is sized for the largest bs) and measured at every ``sizes``."""
    workload: str
    config: str
    mode: str
    next_n: int
    steps: int
    width: int
    sizes: tuple

    def case(self, bs):
        return Case(self.mode, bs, bs, self.width, next_n=self.next_n, steps=self.steps)


def groups(profile, batch_sizes=None, widths=None, workloads=None):
    """The groups of a profile. quick: tiny sizes for the interpreter (checks, not GPU times);
    full: the sizes of the benchmark (extend up to ``EXTEND_MAX_BS``)."""
    quick = profile == "quick"
    sizes = tuple(batch_sizes or ((1, 3) if quick else BATCH_SIZES))
    widths = tuple(widths or ((320,) if quick else WIDTHS))
    unknown = set(workloads or ()) - set(WORKLOADS)
    if unknown:
        raise ValueError(f"workloads: unknown {sorted(unknown)}; known: {list(WORKLOADS)}")
    out = []
    for workload, config, mode, next_n, steps in CONFIGS:
        if workloads and workload not in workloads:
            continue
        if quick and (next_n == 4 or steps == 5 or mode == "extend_ragged"):
            continue  # one of each kind is enough to check the interpreter path
        kept = tuple(bs for bs in sizes if workload != "extend" or bs <= EXTEND_MAX_BS)
        out += [Group(workload, config, mode, next_n, steps, w, kept) for w in widths if kept]
    return out


def settings(profile, rounds=None):
    """Timing settings: ``rounds`` interleaved rounds; per round and entry ``calls`` host calls
    back to back, ``eager`` calls + synchronize and ``graph_calls`` calls per replayed graph.

    full: 11 configurations x 3 widths, 312 points, about 8 timed entries each; a round costs an
    entry ~30 calls of 10-300 µs (extend at bs 64: ~3 ms), so 5 rounds are ~0.1-0.3 s a point
    and ~1.5 minutes in all; building the sides (req_to_token of 512 x width per backend) and
    compiling SGLang's kernels (they specialise on bs) add ~2 minutes on an H200."""
    if profile == "quick":
        return dict(rounds=rounds or 1, calls=1, eager=1, graph_calls=1)
    return dict(rounds=rounds or 5, calls=20, eager=5, graph_calls=4)


# --------------------------------------------------------------------------- schedule and plan

def _no_schedule(metadata, lens_2d):
    return None


def _no_plan(metadata):
    return None


def _no_plan_built(seqlens_expanded):
    return None


def _standin_output(rows, device):
    """What the real call returns, launch for launch: one allocation, one small kernel."""
    return torch.zeros(rows, 2, dtype=torch.int32, device=device)


class PlanStandIn:
    """The top-k v2 plan (``plan_topk_v2``: ``[rows + 1, 2]`` int32, one kernel) as a stand-in:
    a fresh output of the real shape each step, copied into a static buffer kept per metadata
    (the buffer SGLang's ``copy_`` writes under replay)."""

    def __init__(self):
        self.buffers = {}

    def refresh(self, metadata):
        lens = metadata.dsa_seqlens_expanded
        buffer = self.buffers.get(id(metadata))
        if buffer is None:
            buffer = self.buffers[id(metadata)] = _standin_output(lens.shape[0] + 1, lens.device)
        buffer.copy_(_standin_output(lens.shape[0] + 1, lens.device))

    @staticmethod
    def build(seqlens_expanded):
        return _standin_output(seqlens_expanded.shape[0] + 1, seqlens_expanded.device)


def prepare_backend(backend, kind):
    """Set the schedule and the plan of one backend to ``kind`` (on the instance, before any
    replay binds them). ``STANDIN`` keeps the harness's DeepGEMM schedule stand-in (one
    allocation, SGLang's ``copy_``) and adds the plan's; ``NOOP`` makes both no-ops."""
    if kind == NOOP:
        backend._refresh_paged_mqa_schedule_metadata = _no_schedule
        backend._refresh_topk_v2_plan = _no_plan
        backend._build_topk_v2_plan = _no_plan_built
    elif kind == STANDIN:
        plan = PlanStandIn()
        backend._refresh_topk_v2_plan = plan.refresh
        backend._build_topk_v2_plan = plan.build
    else:
        raise ValueError(f"kind must be {NOOP!r} or {STANDIN!r}, got {kind!r}")
    return backend


#: The schedule kind of the eager step running now (``eager_schedule``'s resolver reads it).
_EAGER_KIND = [STANDIN]


@contextlib.contextmanager
def eager_schedule(sb):
    """The eager paths (``init_forward_metadata``) call DeepGEMM's schedule through
    ``dsa_backend``'s module-level resolver, not an instance method. While the sweep runs the
    resolver answers per step: a no-op when the running side's kind is ``NOOP`` (each eager
    side's step sets it, ``kinded``), else the harness's stand-in; restored afterwards."""
    module = sb.load().backend_module
    original = module.resolve_paged_mqa_logits_metadata_fn

    def resolver():
        return _no_eager_schedule if _EAGER_KIND[0] == NOOP else original()
    module.resolve_paged_mqa_logits_metadata_fn = resolver
    try:
        yield
    finally:
        module.resolve_paged_mqa_logits_metadata_fn = original
        _EAGER_KIND[0] = STANDIN


def kinded(kind, method, arg):
    """A step of an eager side: names its schedule kind for the resolver, then runs."""
    def step():
        _EAGER_KIND[0] = kind
        method(arg)
    return step


def _no_eager_schedule(context_lens, block_kv, num_sms):
    return None


@contextlib.contextmanager
def shared_req_to_token(sb):
    """Every backend of the sweep with the same (rows, width) gets one ``req_to_token``, as one
    server's backends share one pool: the harness draws a random permutation of rows x width
    slots per backend (seconds at 512 x 131072), which would dominate the run."""
    original, tables = sb._random_req_to_token, {}

    def shared(rows, width, seed, device):
        key = (rows, width, seed, str(device))
        if key not in tables:
            tables[key] = original(rows, width, seed, device)
        return tables[key]
    sb._random_req_to_token = shared
    try:
        yield
    finally:
        sb._random_req_to_token = original


def assign_dropin(backend):
    """SGLang's ``_fused_*_metadata`` attributes pointed at the workbook's drop-in functions."""
    backend._fused_decode_metadata = compat.fused_dsa_decode_metadata
    backend._fused_verify_metadata = compat.fused_dsa_target_verify_metadata
    backend._fused_draft_extend_metadata = compat.fused_dsa_draft_extend_metadata
    return backend


# --------------------------------------------------------------------------- sides

@dataclass
class Side:
    """One timed side at one point: ``step`` (what a runner calls per step), ``graph`` (what
    the glue graph would capture; None with ``graph_note``), ``results()`` (the metadata it
    produced, as ``MetadataResult``s, one per backend)."""
    stage: str
    step: object
    results: object
    graph: object = None
    graph_note: str = None
    prime: object = None  # what writes the metadata (the in-graph side: a replay of its graph)
    metadata: object = None  # () -> the backend's forward_metadata (a list for MTP)


def side_skips(group, on_gpu):
    """``{stage: reason}`` of the sides this group cannot have on this machine."""
    skip = {}
    if not on_gpu:
        cuda_only = "SGLang calls the schedule and the top-k plan only on CUDA (is_cuda()): " \
                    "on a CPU this side is the same code as its non-full twin"
        skip["sglang_step_full"] = skip["nsa_installed_full"] = cuda_only
        skip["nsa_dropin"] = "SGLang calls its _fused_* kernels only on CUDA (is_cuda())"
        skip["nsa_in_graph"] = "CUDA graphs need a GPU"
    if group.mode not in VLLM_MODES:
        skip["vllm_hopper"] = ("vLLM's Hopper indexer metadata (indexer.py build) is compared "
                               "on decode and target_verify only")
    if group.mode not in GRAPH_MODES:
        skip.setdefault("nsa_in_graph", "in-graph mode exists for the graph replays only")
        skip.setdefault("nsa_dropin", "this path calls none of SGLang's three fused kernels"
                        if group.mode != "mtp_decode" else
                        "no drop-in for fused_metadata_copy_*: only install covers MTP")
    return skip


class GroupSides:
    """The backends of one group, one per side, built once."""

    def __init__(self, sb, group, stages):
        self.sb, self.group, self.stages = sb, group, stages
        config = group.case(max(group.sizes)).config(sb)
        self.harness, self.pairs = {}, {}
        if group.mode == "mtp_decode":
            for kind in (NOOP, STANDIN):
                if any(KIND[s] == kind for s in stages):
                    pair = MultiStepPair(sb, config, group.steps)
                    for side in pair.sides:
                        for h in side.harnesses:
                            prepare_backend(h.backend, kind)
                    self.pairs[kind] = pair
            return
        for stage in stages:
            if stage == "vllm_hopper":
                continue  # built below, on the SGLang harness's req_to_token
            h = sb.SGLangHarness(config)
            prepare_backend(h.backend, KIND[stage])
            if stage == "nsa_dropin":
                assign_dropin(h.backend)
            elif stage.startswith("nsa_installed"):
                integration.install(h.backend)
            elif stage == "nsa_in_graph":
                integration.install(h.backend, in_graph=True)
            self.harness[stage] = h
        if "vllm_hopper" in stages:
            pages = -(-group.width // sb.PAGE_SIZE)
            q = group.next_n if group.mode == "target_verify" else 1
            self.vllm = vllm_hopper.Builder(vllm_peer(), max(group.sizes), pages, q,
                                            device=self.harness["sglang_step"].device)

    def inputs(self, bs, seed=0):
        """``(seq_lens, req_pool_indices, extend_seq_lens or None)`` of the timed steps at
        ``bs`` (``seed`` 1: other lengths, for the first replay, see ``_side``)."""
        case = dataclasses.replace(self.group.case(bs), seed=seed)
        extra = case.next_n if case.mode == "target_verify" else 0
        seq = torch.tensor(lengths_for(case, extra), dtype=torch.int64)
        pool = torch.randperm(bs, generator=torch.Generator().manual_seed(bs))
        qo = torch.clamp(seq // 2, min=1) if case.mode.startswith("extend") else None
        return seq, pool, qo

    def sides(self, bs, graph_calls):
        seq, pool, qo = self.inputs(bs)
        if self.group.mode == "mtp_decode":
            return self._mtp_sides(bs, seq, pool)
        out = []
        for stage, h in self.harness.items():
            out.append(self._side(stage, h, bs, seq, pool, qo, graph_calls))
        if "vllm_hopper" in self.stages:
            out.append(self._vllm_side(bs, seq, pool))
        return out

    def _vllm_side(self, bs, seq, pool):
        """vLLM's ``build`` on the same batch: its ``seq_lens`` count the step's tokens, its
        block table is SGLang's page-granular one (``req_to_token[pool, ::page] // page``)."""
        page, builder = self.sb.PAGE_SIZE, self.vllm
        table = self.harness["sglang_step"].req_to_token
        table = (table[pool.to(table.device)][:, ::page] // page).to(torch.int32)
        extra = builder.next_n if self.group.mode == "target_verify" else 0
        # a first build on other lengths, as the SGLang sides' first replay: the buffers then
        # hold values the timed step must overwrite
        first, _, _ = self.inputs(bs, seed=1)
        builder.step(builder.inputs(first + extra, table))
        common = builder.inputs(seq + extra, table)
        built = [None]

        def step():
            built[0] = builder.step(common)

        case = self._case(bs, seq)

        def results():
            return [self.sb.MetadataResult(
                tensors=vllm_hopper.outputs(built[0], builder.next_n), case=case)]
        return Side("vllm_hopper", step, results, metadata=lambda: built[0])

    def _case(self, bs, seq):
        """What ``compare_metadata`` needs of the timed step: each page-table row's length."""
        mode, next_n = self.group.mode, self.group.next_n
        rows = next_n if mode in ("target_verify", "draft_extend") else 1
        extra = next_n if mode == "target_verify" else 0
        return self.sb.MetadataCase(mode=mode, bs=bs, raw_bs=bs, next_n=next_n,
                                    page_size=self.sb.PAGE_SIZE,
                                    row_lengths=(seq + extra).repeat_interleave(rows))

    def _side(self, stage, h, bs, seq, pool, qo, graph_calls):
        sb, mode = self.sb, self.group.mode
        backend = h.backend
        if mode in GRAPH_MODES:
            # The first replay (the capture's) runs on other lengths: the buffers then hold
            # values the timed step must overwrite, so a step that writes nothing (or writes
            # elsewhere) cannot pass the check on what the first replay left.
            call = "decode" if mode == "decode_narrow" else mode
            first, _, _ = self.inputs(bs, seed=1)
            _, view = _graph_view(sb, h, call, first.clone(), pool, bs)  # view owns its buffer
            view.seq_lens.copy_(seq)
            view.seq_lens_cpu = seq.clone()
            step = _bound(backend.init_forward_metadata_out_graph, view)
            case = self._case(bs, seq)
        else:
            if mode.startswith("extend"):
                result = h.extend(seq, qo, pool)
            else:
                result = h.eager("decode", seq, pool)
            batch = _eager_batch(sb, h, "extend" if mode.startswith("extend") else mode,
                                 seq, pool, qo)
            step = kinded(KIND[stage], backend.init_forward_metadata, batch)
            case = result.case

        def results():
            return [sb.MetadataResult(tensors=sb.metadata_tensors(backend.forward_metadata),
                                      case=case)]
        if stage == "nsa_in_graph":
            in_graph = _bound(backend.init_forward_metadata_in_graph, view)
            captured, note = harness.try_capture(in_graph, graph_calls)

            def prime():
                # capture's warm-up ran eagerly on the timed lengths: first write other
                # lengths' metadata eagerly, then the replay must bring the timed ones back
                view.seq_lens.copy_(first.to(view.seq_lens.device))
                in_graph()
                view.seq_lens.copy_(seq.to(view.seq_lens.device))
                (captured.replay if captured is not None else in_graph)()
            return Side(stage, step, results, graph=captured, graph_note=note, prime=prime,
                        metadata=lambda: backend.forward_metadata)
        return Side(stage, step, results, metadata=lambda: backend.forward_metadata)

    def _mtp_sides(self, bs, seq, pool):
        first, _, _ = self.inputs(bs, seed=1)  # the capture's replay: other lengths (_side)
        out = []
        for stage in self.stages:
            pair = self.pairs[KIND[stage]]
            side = pair.sides[0 if stage.startswith("sglang") else 1]
            captured = pair.step(side, first, pool, bs)
            device = side.harnesses[0].device
            view = SimpleNamespace(batch_size=bs, forward_mode=self.sb.load().forward_mode.DECODE,
                                   seq_lens=seq.to(device), seq_lens_cpu=seq, seq_lens_sum=None,
                                   req_pool_indices=pool.to(device), spec_info=None)
            backends = side.multi.attn_backends
            cases = [dataclasses.replace(r.case, row_lengths=seq.clone()) for r in captured]

            def results(backends=backends, cases=cases):
                return [self.sb.MetadataResult(tensors=self.sb.metadata_tensors(b.forward_metadata),
                                               case=c) for b, c in zip(backends, cases)]
            out.append(Side(stage, _bound(side.multi.init_forward_metadata_out_graph, view),
                            results, metadata=lambda b=backends: [x.forward_metadata for x in b]))
        return out


def _bound(method, arg):
    return lambda: method(arg)


def check_sides(sb, sides):
    """``{stage: reason}`` for every side whose metadata differs from ``sglang_step``'s (each
    side runs one step first; tensors compared by ``compare_metadata``, host fields too)."""
    outputs = {}
    for side in sides:
        side.step()
        if side.prime is not None:
            side.prime()
            side.step()
        harness.synchronize()
        metadata = side.metadata()
        outputs[side.stage] = (side.results(), metadata if isinstance(metadata, list)
                               else [metadata])
    reference, ref_meta = outputs["sglang_step"]
    refused = {}
    for stage, (got, meta) in outputs.items():
        if stage == "sglang_step":
            continue
        if stage == "vllm_hopper":
            reason = check_vllm(sb, got, {s: outputs[s][0] for s in VLLM_CHECKED_AGAINST
                                          if s in outputs and s not in refused})
            if reason:
                refused[stage] = reason
            continue
        try:
            if len(got) != len(reference):
                raise AssertionError(f"{len(got)} backends vs {len(reference)}")
            for k, (x, y) in enumerate(zip(reference, got)):
                sb.compare_metadata(x, y)
                compare_host_fields(sb, ref_meta[k], meta[k])
        except AssertionError as exc:
            refused[stage] = f"not timed: metadata differs from sglang_step's: {exc}"
    return refused


def check_vllm(sb, got, references):
    """The reason ``vllm_hopper`` is not timed, or None: its outputs (``vllm_hopper.outputs``)
    against each of ``references`` (``{stage: results}``), on the tensors both define."""
    (mine,) = got
    for stage, results in references.items():
        theirs = results[0]
        shared = {name: theirs.tensors[name] for name in mine.tensors if name in theirs.tensors}
        if shared.keys() != mine.tensors.keys():
            missing = sorted(set(mine.tensors) - set(shared))
            return f"not timed: {stage} has no {missing} to compare vLLM's outputs with"
        try:
            sb.compare_metadata(sb.MetadataResult(shared, theirs.case), mine, theirs.case)
        except AssertionError as exc:
            return f"not timed: metadata differs from {stage}'s: {exc}"
    return None


def _as_list(value):
    return value if isinstance(value, list) else [value]


def compare_host_fields(sb, a, b):
    """``forward_metadata``'s host fields (conformance's set) equal, schedules aside: whether
    the schedule or the plan is None depends on the side's stand-in kind, not on the fill."""
    skipped = {f"{name} is None" for name in sb.NOT_COMPARED}
    fa, fb = _host_fields(a), _host_fields(b)
    for name in fa:
        if name not in skipped and fa[name] != fb[name]:
            raise AssertionError(f"forward_metadata.{name}: {fa[name]!r} (sglang_step) vs "
                                 f"{fb[name]!r}")


# --------------------------------------------------------------------------- timing

def _quantiles(values):
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0], values[0], values[0]
    cuts = statistics.quantiles(values, n=5, method="inclusive")
    return statistics.median(values), cuts[0], cuts[3]


def time_entries(entries, timing):
    """``{name: {metric: (median, p20, p80)}, "graph_note": ...}`` over ``timing["rounds"]``
    interleaved rounds (each: host times of every entry, then their eager times, then their
    graph replays). ``entries``: dicts with ``name``, ``fn`` and optional ``graph`` (a captured
    ``torch.cuda.CUDAGraph`` of ``graph_calls`` calls, or None with ``graph_note``)."""
    samples = {e["name"]: {m: [] for m in METRICS} for e in entries}
    graphs = {e["name"]: e["graph"] for e in entries if e.get("graph") is not None}
    for _ in range(timing["rounds"]):
        host = floors.host_times(entries, rounds=1, calls=timing["calls"])
        for e in entries:
            samples[e["name"]]["host_us"].append(host[e["name"]])
        for e in entries:
            samples[e["name"]]["eager_us"].append(harness.eager_us(e["fn"], timing["eager"]))
        if graphs:
            replayed = harness._graph_samples(graphs, 4, timing["graph_calls"])
            for name, us in replayed.items():  # a round's replays: one median per round
                samples[name]["graph_us"].append(statistics.median(us))
    return {name: {m: _quantiles(v) for m, v in per.items()} for name, per in samples.items()}


def _capture(entry, timing):
    if "graph" in entry:
        return entry
    graph, note = harness.try_capture(entry["fn"], timing["graph_calls"])
    entry["graph"], entry["graph_note"] = graph, note
    return entry


# --------------------------------------------------------------------------- records

def record(group, bs, stage, times=None, note=None, n_bytes=None):
    """A ``"path": "step"`` record (the report's common keys included)."""
    out = {"path": "step", "workload": group.workload, "config": group.config, "bs": bs,
           "width": group.width, "next_n": group.next_n, "steps": group.steps or None,
           "stage": stage, "note": note, "bytes": n_bytes, "tokens": None,
           "throughput_us": None, "interpreter": not harness.ON_GPU}
    for metric in METRICS:
        median, p20, p80 = (times or {}).get(metric, (None, None, None))
        out[metric], out[f"{metric}_p20"], out[f"{metric}_p80"] = median, p20, p80
    return out


def point_bytes(group, bs, seq, qo, sides):
    """Bytes that must move for one step (``bench.modes``' model): the graph modes and MTP
    through ``modes.bytes_moved`` (MTP: the decode outputs once per draft backend, the inputs
    once), the eager paths through ``modes.extend_bytes`` on SGLang's own outputs."""
    workload = {"decode_narrow": "decode", "draft_extend": "draft_extend_static",
                "mtp_decode": "decode"}.get(group.mode, group.mode)
    if group.mode in GRAPH_MODES or group.mode == "mtp_decode":
        next_n = group.next_n if group.mode in ("target_verify", "draft_extend") else 1
        # Hopper's verify does not write paged_mqa_ctx_lens_2d (SGLang: SM100 only)
        variant = {"decode_narrow": "real_only", "decode": "page_table_1",
                   "mtp_decode": "page_table_1", "target_verify": "hopper"}.get(group.mode, "")
        point = Point(workload, bs, group.width, next_n, variant)
        kv = seq + (next_n if group.mode == "target_verify" else 0)
        ext = torch.full((bs,), next_n, dtype=torch.int32)
        inputs = Inputs(seq, torch.arange(bs), None, ext, kv, bs * next_n)
        total = floors.bytes_moved(point, inputs)
        if group.mode == "mtp_decode":
            read = bs * 16 + int(kv.sum()) * 4  # seq_lens, req_pool_indices, req_to_token rows
            total += (group.steps - 2) * (total - read)
        return total
    reference = next(s for s in sides if s.stage == "sglang_step").results()[0].tensors
    # extend_spec.extend_bytes's count (inputs read once, every output at its size), over
    # SGLang's own outputs rather than the oracle's (this point has no pool to run it on)
    read = bs * (8 + 8 + 4) + int(seq.sum()) * 4
    return read + sum(t.numel() for t in reference.values() if t is not None) * 4


@functools.cache
def vllm_peer():
    """vLLM's Hopper path (``peers.vllm_hopper``), loaded once; ``PeerUnavailable`` without a
    copy of vLLM (not cached: a later call looks again)."""
    return vllm_hopper.load(require_gpu=False)


def run_group(sb, group, timing, bandwidth, progress=None):
    """Records of every point of ``group``: sides checked, then timed with the floors."""
    skips = side_skips(group, harness.ON_GPU)
    if "vllm_hopper" not in skips:
        try:
            vllm_peer()
        except vllm_hopper.PeerUnavailable as exc:
            skips["vllm_hopper"] = f"vLLM unavailable: {exc}"
    stages = [s for s in SIDES if s not in skips]
    records = []
    _EAGER_KIND[0] = STANDIN  # captures call the schedule through the resolver
    try:
        sides_of = GroupSides(sb, group, stages)
    except sb.HarnessUnavailable as exc:
        return [r for bs in group.sizes for r in modes.finish_point(
            [record(group, bs, stage, note=f"skipped: {exc}") for stage in SIDES])]
    for bs in group.sizes:
        records += _run_point(sb, group, sides_of, bs, timing, bandwidth, skips)
        if progress:
            progress(group, bs)
    del sides_of
    if harness.ON_GPU:
        torch.cuda.empty_cache()
    return records


def _run_point(sb, group, sides_of, bs, timing, bandwidth, skips):
    sides = sides_of.sides(bs, timing["graph_calls"])
    refused = check_sides(sb, sides)
    seq, _, qo = sides_of.inputs(bs)
    n_bytes = point_bytes(group, bs, seq, qo, sides)
    empties, floor_skips = floors.floor_entries()
    entries = [dict(e) for e in empties if e["name"] in floors.EMPTY_LAUNCHES]
    for side in sides:
        if side.stage in refused:
            continue
        entry = dict(name=side.stage, fn=side.step)
        if side.stage == "nsa_in_graph":
            entry.update(graph=side.graph, graph_note=side.graph_note)
        entries.append(entry)
    for entry in entries:
        if harness.ON_GPU:
            _capture(entry, timing)
        else:
            entry.setdefault("graph", None)
            entry.setdefault("graph_note", "no GPU: CUDA graphs need one")
    times = time_entries(entries, timing)
    notes = {e["name"]: e.get("graph_note") for e in entries}
    out = [record(group, bs, name, times[name], note=notes[name]) for name in times]
    for r in out:
        if r["stage"] == "vllm_hopper":
            r["note"] = "; ".join(n for n in (vllm_hopper.CONFIG, r["note"]) if n)
    if group.mode == "mtp_decode":
        for r in out:
            if r["stage"].startswith("sglang_"):
                r["note"] = MTP_FALLBACK_NOTE
    out += [record(group, bs, stage, note=reason) for stage, reason in refused.items()]
    out += [record(group, bs, stage, note=f"skipped: {reason}") for stage, reason in
            skips.items()]
    out += [record(group, bs, stage, note=f"skipped: {reason}")
            for stage, reason in floor_skips.items() if stage in FLOOR_STAGES]
    floor_us = n_bytes / bandwidth
    out.append(record(group, bs, "bandwidth_floor",
                      {"eager_us": (floor_us,) * 3, "graph_us": (floor_us,) * 3},
                      note=modes.BANDWIDTH_CONFIG, n_bytes=n_bytes))
    for r in out:
        r["bytes"] = n_bytes
    return modes.finish_point(out, key=judged_metric(group))


def judged_metric(group):
    """The time a point's ratios are taken on: graph replay for the replayed modes (MTP's
    draft decode included) on a GPU, call + synchronize for the eager ones and everywhere
    under the interpreter (no graphs there)."""
    replayed = group.mode in GRAPH_MODES or group.mode == "mtp_decode"
    return "graph_us" if replayed and harness.ON_GPU else "eager_us"


def measure_bandwidth(timing):
    """This run's device-to-device copy bandwidth (bytes/µs), as notebook 11 measures it."""
    return floors.copy_bandwidth((1 << 30) if harness.ON_GPU else (1 << 20), rounds=3)


def run(groups_, timing, progress=None):
    """Every group's records, one process; returns ``(records, bandwidth)``."""
    from nsa_kernels.peers import sglang_backend as sb
    bandwidth = measure_bandwidth(timing)
    records = []
    with eager_schedule(sb), shared_req_to_token(sb), sglang_messages.counted() as messages:
        for group in groups_:
            records += run_group(sb, group, timing, bandwidth, progress)
    if messages:
        print(sglang_messages.summary(messages))
    return records, bandwidth


# --------------------------------------------------------------------------- targets

def _points(records):
    by = {}
    for r in records:
        by.setdefault((r["workload"], r["config"], r["width"], r["next_n"], r["bs"]), {})[
            r["stage"]] = r
    return by


def _cheapest_host(stages):
    values = [stages[s]["host_us"] for s in floors.EMPTY_LAUNCHES
              if s in stages and stages[s].get("host_us") is not None]
    return min(values) if values else None


def _where(key):
    workload, config, width, next_n, bs = key
    return f"{workload} ({config}) bs {bs} width {width}" + (
        f" next_n {next_n}" if workload in ("target_verify", "draft_extend_static") else "")


def _ratio_target(name, by, ratio_of, limit, above=False, keys=None, note=""):
    """A target over every point: ``ratio_of(stages) -> ratio or None``; met when every
    ratio is <= ``limit`` (``above``: >= ``limit``). ``measured`` names the worst point."""
    values = []
    for key, stages in by.items():
        if keys is not None and not keys(key):
            continue
        ratio = ratio_of(stages)
        if ratio is not None:
            values.append((ratio, key))
    if not values:
        return {"target": name, "measured": "not measured (no point has both sides)",
                "met": False, "note": note}
    worst = min(values) if above else max(values)
    met = sum((v >= limit) if above else (v <= limit) for v, _ in values)
    return {"target": name, "measured": f"{met} of {len(values)} points; worst {worst[0]:.2f}x "
            f"at {_where(worst[1])}", "met": met == len(values), "note": note}


def _over(stages, a, b, metric):
    x, y = stages.get(a, {}).get(metric), stages.get(b, {}).get(metric)
    return x / y if x and y else None


def _floor_ratio(stages, side):
    host = stages.get(side, {}).get("host_us")
    floor = _cheapest_host(stages)
    return host / floor if host and floor else None


def targets(records, explain=None):
    """The benchmark's targets as ``{"target", "measured", "met", "note"}``, from the records.
    ``explain``: optional text for the host-floor targets (a profile of where the host time
    goes), added to their note."""
    by = _points(records)
    # MTP's SGLang side is its fallback, not its production path (MTP_FALLBACK_NOTE)
    vs_sglang = {k: v for k, v in by.items() if k[0] != "mtp_decode"}
    is_extend = lambda k: k[0] == "extend"  # noqa: E731
    not_extend = lambda k: k[0] != "extend"  # noqa: E731
    mtp_note = "mtp_decode left out: " + MTP_FALLBACK_NOTE.split(": ", 1)[1]
    out = [
        _ratio_target("installed, host per step <= 1.2x the cheapest empty launch's host time",
                      by, lambda s: _floor_ratio(s, "nsa_installed"), 1.2, note=explain or ""),
        _ratio_target("drop-in, host per step <= 1.5x the cheapest empty launch's host time",
                      by, lambda s: _floor_ratio(s, "nsa_dropin"), 1.5, note=explain or ""),
        _ratio_target("installed: >= 3x less host time per step than sglang_step", vs_sglang,
                      lambda s: _over(s, "sglang_step", "nsa_installed", "host_us"), 3,
                      above=True, keys=not_extend, note=mtp_note),
        _ratio_target("extend: >= 20x less host time per step than sglang_step", vs_sglang,
                      lambda s: _over(s, "sglang_step", "nsa_installed", "host_us"), 20,
                      above=True, keys=is_extend),
        _ratio_target("installed_full: >= 1.5x less host time than sglang_step_full", vs_sglang,
                      lambda s: _over(s, "sglang_step_full", "nsa_installed_full", "host_us"),
                      1.5, above=True, note=mtp_note),
        _ratio_target("call + synchronize: installed faster than sglang_step", vs_sglang,
                      lambda s: _over(s, "sglang_step", "nsa_installed", "eager_us"), 1.0,
                      above=True, note=mtp_note),
        _ratio_target("graph replay: installed faster than sglang_step", vs_sglang,
                      lambda s: _over(s, "sglang_step", "nsa_installed", "graph_us"), 1.0,
                      above=True, note=mtp_note),
        _ratio_target("graph replay: >= 2x faster than sglang_step at bs >= 128", vs_sglang,
                      lambda s: _over(s, "sglang_step", "nsa_installed", "graph_us"), 2.0,
                      above=True, keys=lambda k: k[4] >= 128, note=mtp_note),
        _ratio_target("graph replay: installed within 1.3x of its floor (floor_us)", by,
                      lambda s: (s["nsa_installed"]["graph_us"] / s["nsa_installed"]["floor_us"]
                                 if s.get("nsa_installed", {}).get("graph_us")
                                 and s["nsa_installed"].get("floor_us") else None), 1.3),
    ]
    bs32 = lambda k: k[0] == "extend" and k[1].startswith("PAGED") and k[4] == 32  # noqa: E731
    for metric, what in (("host_us", "host"), ("eager_us", "call + sync")):
        out.append(_ratio_target(f"extend PAGED bs 32, every width: >= 20x faster than "
                                 f"SGLang's eager method ({what})", by,
                                 lambda s, m=metric: _over(s, "sglang_step", "nsa_installed", m),
                                 20, above=True, keys=bs32))
    for metric, what in (("host_us", "host"), ("eager_us", "call + sync"),
                         ("graph_us", "graph replay")):
        out.append(_ratio_target(
            f"vLLM on Hopper: installed faster than vllm_hopper ({what})", by,
            lambda s, m=metric: _over(s, "vllm_hopper", "nsa_installed", m), 1.0, above=True,
            note="at every point where vllm_hopper's outputs equal ours (per-token KV lengths, "
                 "page ids per row); vLLM's step defines fewer outputs than SGLang's "
                 "(no token-granular page table, no cu_seqlens), its DeepGEMM schedule left "
                 "out as SGLang's is"))
    return out


def host_breakdown(sb, mode="decode", bs=32, width=8192, next_n=2, rounds=5, calls=50):
    """Where the installed replay step's host time goes (GPU): the whole method, the bound
    fill alone (the driver call), the tail alone (what stays SGLang's) and the cheapest empty
    launches; the rest of the method is key building and the lookup. ``{name: host µs}``."""
    group = Group(mode, "", mode, next_n if mode != "decode" else 1, 0, width, (bs,))
    sides_of = GroupSides(sb, group, ["sglang_step", "nsa_installed"])
    side = sides_of._side("nsa_installed", sides_of.harness["nsa_installed"], bs,
                          *sides_of.inputs(bs), 1)
    side.step()
    inst = integration.installation(sides_of.harness["nsa_installed"].backend)
    replay = next(iter(inst.replays.values()))
    empties, _ = floors.floor_entries()
    entries = [e for e in empties if e["name"] in floors.EMPTY_LAUNCHES]
    entries += [dict(name="installed step", fn=side.step), dict(name="bound fill", fn=replay.fill),
                dict(name="tail (SGLang's)", fn=replay.tail)]
    return floors.host_times(entries, rounds=rounds, calls=calls)


# --------------------------------------------------------------------------- entry point

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nsa_kernels.bench.step",
                                     description="Host / call+sync / graph time per SGLang step")
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--workloads", nargs="*", default=None)
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=None)
    parser.add_argument("--widths", nargs="*", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the records here (JSON)")
    args = parser.parse_args(argv)
    timing = settings(args.profile, args.rounds)
    chosen = groups(args.profile, args.batch_sizes, args.widths, args.workloads)
    start = time.perf_counter()

    def progress(group, bs):
        print(f"{time.perf_counter() - start:6.0f} s  {group.workload} ({group.config}) "
              f"width {group.width} next_n {group.next_n} bs {bs}", flush=True)
    records, bandwidth = run(chosen, timing, progress)
    for t in targets(records):
        print(("met   " if t["met"] else "MISSED"), t["target"], "|", t["measured"])
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"records": records, "bandwidth_bytes_per_us": bandwidth,
                       "targets": targets(records)}, handle, indent=1, default=str)
    print(f"{len(records)} records in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
