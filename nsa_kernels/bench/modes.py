"""Every forward mode of the DSA metadata, measured against SGLang and vLLM as they really run.

What a mode is (its call, outputs, reference, bytes, SGLang's production configurations and
vLLM's peer) is its ``ModeSpec`` (``nsa_kernels.modes.SPECS``); a point is a
``nsa_kernels.modes.spec.Point``. This module sweeps points: for each it builds the inputs
and the poisoned buffers as SGLang's CUDA-graph runner holds them, runs ours, SGLang's and
vLLM's calls once and checks each against the reference on its live regions (only a call that
passes is timed), times them interleaved with the empty kernel, and writes the records with
the point's floor (``floors``: max(empty kernel, bytes that must move / copy bandwidth)).

SGLang 0.5.23 ``srt/layers/attention/dsa_backend.py`` (``_apply_cuda_graph_metadata``) and
vLLM 0.33.0 ``v1/attention/backends/mla/indexer.py`` are where the configurations come from;
each record names its own in ``config``.
"""
from types import SimpleNamespace

import torch

from .._env import DEVICE, INTERPRET
from ..modes import SPECS
from ..modes.spec import PAGE, Point, allocate_outputs, bind, make_inputs
from . import floors

WORKLOADS = tuple(SPECS)
GRAPH_WORKLOADS = tuple(name for name, spec in SPECS.items() if spec.graph)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WIDTHS = (8192, 65536, 131072)
#: The spread stored beside each median (``harness.summarize``).
SPREAD_KEYS = ("graph_us_p20", "graph_us_p80", "eager_us_p20", "eager_us_p80")
EMPTY_CONFIG = "empty Triton kernel, launched the normal way (kernel[grid]())"
BANDWIDTH_CONFIG = "bytes that must move / device-to-device copy bandwidth of this run"


# --------------------------------------------------------------------------- profiles

def mode_configs(workloads=WORKLOADS):
    """(workload, next_n, variant) of every measured configuration."""
    return [(w, n, v) for w in workloads for n, v in SPECS[w].configs()]


def points(profile, batch_sizes=None, widths=None, workloads=WORKLOADS, seed=0):
    """The points of a profile. quick: tiny sizes for the interpreter (not timing-meaningful);
    full: bs 1..1024 at widths 8K, 64K, 128K (a mode's ``max_bs`` caps its sweep: SGLang's
    eager extend loops on the host per request)."""
    quick = profile == "quick"
    batch_sizes = batch_sizes or ((1, 3) if quick else BATCH_SIZES)
    widths = widths or ((256,) if quick else WIDTHS)
    out = []
    for workload, next_n, variant in mode_configs(workloads):
        cap = SPECS[workload].max_bs
        for width in widths:
            for bs in batch_sizes:
                if cap is None or bs <= cap:
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


# --------------------------------------------------------------------------- records

def record(point, stage, times, config, n_bytes, note=None):
    """A results record: the point, ``times`` (``graph_us``, ``eager_us`` and their
    ``_p20``/``_p80`` where measured), ``config``, ``bytes`` (and the report's common keys:
    ``tokens``, ``throughput_us`` (not measured here), ``interpreter``)."""
    times = times or {}
    out = {"workload": point.workload, "stage": stage, "bs": point.bs, "width": point.width,
           "next_n": point.next_n, "variant": point.variant, "graph_us": times.get("graph_us"),
           "eager_us": times.get("eager_us"), "throughput_us": None, "config": config,
           "bytes": n_bytes, "note": note, "interpreter": INTERPRET, "tokens": None}
    out.update({key: times.get(key) for key in SPREAD_KEYS})
    return out


def time_key(records):
    """The metric a point is judged on: graph replay, or eager where the mode runs eagerly
    and under the interpreter (no graphs: interpreter ratios, not GPU ones)."""
    first = records[0] if records else {}
    eager = first.get("interpreter") or not SPECS[first["workload"]].graph if first else True
    return "eager_us" if eager else "graph_us"


def finish_point(records, key=None):
    """Add ``floor_us`` (``floors.point_floor``: max of the empty kernel and the bandwidth
    floor), ``vs_sglang`` (SGLang time / this time: > 1 means faster than SGLang) and
    ``vs_floor`` (this / floor) to the records of one point, judged on ``key`` (default
    ``time_key``: a workload of ``SPECS``; other callers name their metric)."""
    key = key or time_key(records)
    by_stage = {r["stage"]: r for r in records}
    floor = floors.point_floor(by_stage.get("empty_kernel", {}).get(key),
                               by_stage.get("bandwidth_floor", {}).get(key))
    sglang = next((r[key] for r in records if r["stage"].startswith("sglang_")), None)
    for r in records:
        mine = r[key]
        r["floor_us"] = floor
        r["vs_sglang"] = sglang / mine if sglang and mine else None
        r["vs_floor"] = mine / floor if floor and mine else None
    return records


def stage_name(who, workload):
    return {"ours": f"nsa_{workload}", "sglang": f"sglang_{workload}", "vllm": "vllm_indexer"}[who]


# --------------------------------------------------------------------------- vLLM's view

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


def vllm_outputs(out):
    """vLLM's outputs under the reference's names (what both define)."""
    return {"seqlens_expanded": out.seq_lens, "real_page_table": out.block_table,
            "token_to_request": out.indices}


# --------------------------------------------------------------------------- the sweep

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
    """Bind ``function`` on fresh poisoned buffers, run it once, check what it wrote (or
    returned) against the reference; only a call that passes is timed."""
    try:
        outputs = allocate_outputs(point, poison=-1)
        call = bind(function, point, inputs, outputs)
        result = call()
        _synchronize()
        checks[stage] = point.spec.check(point, reference, outputs, result, who)
        entries[stage] = call
    except Exception as exc:  # one failing peer must not stop the sweep: recorded with its reason
        notes[stage] = _reason(exc)


def _vllm_call(peer, point, inputs, reference, entries, notes, checks):
    from ..modes.spec import check_outputs
    from ..peers.vllm import decode_metadata_call
    try:
        view, out = vllm_inputs(point, inputs), vllm_buffers(point)
        call = decode_metadata_call(peer, view.query_start_loc, view.seq_lens, view.block_table,
                                    out, point.bs, inputs.total_len)
        call()
        _synchronize()
        checks["vllm_indexer"] = check_outputs(point, reference, vllm_outputs(out), "vllm")
        entries["vllm_indexer"] = call
    except Exception as exc:
        notes["vllm_indexer"] = _reason(exc)


def run_point(point, peers, timing, bandwidth, measure, ours=None):
    """Check, then time one point: ``(records, checks)``. ``ours`` overrides our function (the
    tests use a stand-in); ``measure`` is ``harness.measure_interleaved``; ``bandwidth`` is
    ``floors.copy_bandwidth()`` of this run (bytes per µs)."""
    from ..empty_kernel import launch_empty
    from ..peers.vllm import PRODUCTION_CONFIG as VLLM_CONFIG
    spec = point.spec
    inputs = make_inputs(point)
    reference = spec.reference(point, inputs)
    entries, notes, checks = {"empty_kernel": launch_empty}, {}, {}
    mine, theirs = stage_name("ours", point.workload), stage_name("sglang", point.workload)
    how = "" if spec.graph else "; eager (call + synchronize)"
    configs = {"empty_kernel": EMPTY_CONFIG + how, "vllm_indexer": VLLM_CONFIG,
               mine: f"ours ({spec.ours.replace(':', '.')}), same call and buffers as: "
               + point.config, theirs: point.config}
    try:
        function = ours or spec.ours_function()
        _checked_call("ours", mine, function, point, inputs, reference, entries, notes, checks)
    except Exception as exc:
        notes[mine] = "not available: " + _reason(exc)
    if peers.sglang is not None or not spec.sglang_in_peer:
        try:
            function = spec.sglang_function(peers.sglang)
            _checked_call("sglang", theirs, function, point, inputs, reference, entries, notes,
                          checks)
        except Exception as exc:
            notes[theirs] = "not available: " + _reason(exc)
    else:
        notes[theirs] = "SGLang peer unavailable: " + peers.notes.get("sglang", "")
    if point.vllm:
        if peers.vllm is not None:
            _vllm_call(peers.vllm, point, inputs, reference, entries, notes, checks)
        else:
            notes["vllm_indexer"] = "vLLM peer unavailable: " + peers.notes.get("vllm", "")
    del reference
    times = measure(entries, timing["rounds"], timing["graph_calls"], timing["eager"],
                    graph=spec.graph)
    n_bytes = floors.bytes_moved(point, inputs)
    records = []
    for stage in list(entries) + [s for s in notes if s not in entries]:
        t = times.get(stage, {})
        records.append(record(point, stage, t, configs.get(stage, ""), n_bytes,
                              notes.get(stage) or t.get("note")))
    floor_us = floors.bandwidth_floor_us(n_bytes, bandwidth)
    records.append(record(point, "bandwidth_floor",
                          {"graph_us": floor_us if spec.graph else None, "eager_us": floor_us},
                          BANDWIDTH_CONFIG, n_bytes))
    for r in records:
        r["tokens"] = inputs.total_len
    del entries, inputs
    return finish_point(records), checks


def run(points_, peers, timing, bandwidth, measure, progress=None, ours=None):
    """Every point in turn: ``(records, checks by point name)``; each point's buffers are freed
    before the next is allocated (the largest page tables are 2 GiB each)."""
    records, checks = [], {}
    for i, point in enumerate(points_):
        try:
            recs, chk = run_point(point, peers, timing, bandwidth, measure, ours=ours)
        except Exception as exc:  # e.g. out of memory: recorded, the sweep goes on
            recs = [record(point, stage_name("ours", point.workload), None, "", None,
                           "point failed: " + _reason(exc))]
            chk = {}
        records += recs
        checks[point.name] = chk
        if torch.cuda.is_available() and not INTERPRET:
            torch.cuda.empty_cache()
        if progress:
            progress(i + 1, len(points_), point)
    return records, checks
