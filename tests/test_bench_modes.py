"""The mode specs (nsa_kernels.modes.spec) and the modes benchmark (nsa_kernels.bench.modes):
workloads, byte counts, records, live checks.

SGLang's launchers assert CUDA tensors, so
on this CPU the calls are exercised with ``sglang_semantics_standin``: a plain per-request
Python loop with SGLang 0.5.23's signatures and write contract (live prefixes only). It is a
TEST STAND-IN, never measured as ours; it also cross-checks ``spec.live_reference``, which
is written with vectorised torch ops.
"""
import contextlib
import functools
import json
import os
import types
from pathlib import Path
from types import SimpleNamespace

import nsa_kernels as nk  # noqa: F401  (first: picks the interpreter)
from nsa_kernels.bench import floors, harness, modes
from nsa_kernels.modes import SPECS, spec
from nsa_kernels.modes.extend_spec import compare_extend

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

# --------------------------------------------------------------------------- the stand-in

def _write_rows(req_to_token, req, kv, out_row, page_table_1, real_page_table, page):
    row = req_to_token[req, :kv]
    if page_table_1 is not None:
        page_table_1[out_row, :kv] = row
    real_page_table[out_row, :(kv + page - 1) // page] = row[::page] // page


def _cumsum_into(out, values):
    out[0] = 0
    total = 0
    for i, v in enumerate(values):
        total += v
        out[i + 1] = total


def standin_decode(seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                   page_table_1, dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs,
                   max_len, dsa_index_topk, physical_page_size):
    seqs = [int(s) for s in seq_lens[:bs]]
    for b, kv in enumerate(seqs):
        cache_seqlens[b] = kv
        dsa_cache_seqlens[b] = min(kv, dsa_index_topk)
        _write_rows(req_to_token, int(req_pool_indices[b]), kv, b, page_table_1, real_page_table,
                    physical_page_size)
    _cumsum_into(cu_seqlens_k, seqs)
    _cumsum_into(dsa_cu_seqlens_k, [min(s, dsa_index_topk) for s in seqs])


def standin_verify(seq_lens, req_pool_indices, req_to_token, cache_seqlens, cu_seqlens_k,
                   page_table_1, seqlens_expanded, dsa_cache_seqlens, dsa_cu_seqlens_k,
                   real_page_table, bs, max_seqlen_k, dsa_index_topk, physical_page_size, next_n,
                   paged_mqa_ctx_lens_2d=None):
    caches, dsa = [], []
    for b in range(bs):
        seq = int(seq_lens[b])
        cache_seqlens[b] = seq + next_n
        caches.append(seq + next_n)
        for j in range(next_n):
            r = b * next_n + j
            seqlens_expanded[r] = seq + j + 1
            dsa.append(min(seq + j + 1, dsa_index_topk))
            dsa_cache_seqlens[r] = dsa[-1]
            _write_rows(req_to_token, int(req_pool_indices[b]), seq + next_n, r, page_table_1,
                        real_page_table, physical_page_size)
            if paged_mqa_ctx_lens_2d is not None:
                paged_mqa_ctx_lens_2d[b, j] = seq + next_n
    _cumsum_into(cu_seqlens_k, caches)
    _cumsum_into(dsa_cu_seqlens_k, dsa)


def standin_draft_extend(seq_lens, extend_seq_lens, req_pool_indices, req_to_token,
                         cache_seqlens, cu_seqlens_k, page_table_1, seqlens_expanded,
                         dsa_cache_seqlens, dsa_cu_seqlens_k, real_page_table, bs, total_len,
                         max_seqlen_k, dsa_index_topk, physical_page_size, max_extend_len,
                         max_total_len, static_extend_len=False):
    seqs, dsa, r = [int(s) for s in seq_lens[:bs]], [], 0
    for b, kv in enumerate(seqs):
        cache_seqlens[b] = kv
        qo = int(extend_seq_lens[0 if static_extend_len else b])
        for j in range(qo):
            seqlens_expanded[r] = max(kv - qo + j + 1, 0)
            dsa.append(min(int(seqlens_expanded[r]), dsa_index_topk))
            dsa_cache_seqlens[r] = dsa[-1]
            _write_rows(req_to_token, int(req_pool_indices[b]), kv, r, page_table_1,
                        real_page_table, physical_page_size)
            r += 1
    assert r == total_len
    _cumsum_into(cu_seqlens_k, seqs)
    _cumsum_into(dsa_cu_seqlens_k, dsa)


STANDIN = {"decode": standin_decode, "target_verify": standin_verify,
           "draft_extend_static": standin_draft_extend, "draft_extend_varlen": standin_draft_extend}
NO_PEERS = SimpleNamespace(sglang=None, vllm=None, notes={"sglang": "test", "vllm": "test"})
TIMING = {"rounds": 1, "graph_calls": 1, "eager": 1}
POINTS = [
    spec.Point("decode", 3, 256, 1, "page_table_1"),
    spec.Point("decode", 2, 256, 1, "real_only"),
    spec.Point("target_verify", 2, 256, 2),
    spec.Point("draft_extend_static", 2, 256, 4),
    spec.Point("draft_extend_varlen", 3, 256, 4),
]


# --------------------------------------------------------------------------- peers on the CPU

@contextlib.contextmanager
def _scalar_masks():
    """TEST SHIM for Triton 3.9's interpreter, which rejects a masked load or store whose mask
    is a scalar (``mask=row < bs``, as SGLang's and vLLM's kernels write): "mask has unsupported
    dtype". Broadcasting the mask to the pointers' shape is what the compiler does on a GPU.
    Installed only inside the ``with`` block; a no-op on a GPU."""
    if not nk.INTERPRET:
        yield
        return
    import numpy as np
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    load, store = builder.create_masked_load, builder.create_masked_store

    def broadcast(mask, ptrs):
        data = np.broadcast_to(np.asarray(mask.data).astype(bool), np.shape(ptrs.data)).copy()
        return interpreter.TensorHandle(data, mask.dtype)

    builder.create_masked_load = lambda self, ptrs, mask, other, *a: load(
        self, ptrs, broadcast(mask, ptrs), other, *a)
    builder.create_masked_store = lambda self, ptrs, value, mask, *a: store(
        self, ptrs, value, broadcast(mask, ptrs), *a)
    try:
        yield
    finally:
        builder.create_masked_load, builder.create_masked_store = load, store


@pytest.fixture
def interpreter_scalar_masks():
    """``_scalar_masks`` for the whole test."""
    with _scalar_masks():
        yield


@functools.lru_cache(maxsize=1)
def _sglang_module_without_asserts(path):
    module = types.ModuleType("nsa_test_sglang_metadata")
    module.__file__ = str(path)
    exec(compile(Path(path).read_text(), str(path), "exec", optimize=1), module.__dict__)
    return module


def sglang_metadata_without_asserts():
    """SGLang 0.5.23's ``dsa/metadata.py`` compiled with asserts stripped (``optimize=1``): its
    launchers assert CUDA tensors, which is all that keeps them off the interpreter. A test-only
    load; the benchmark uses ``nsa_kernels.peers.sglang.load()``."""
    from nsa_kernels.peers import sglang as sglang_peer

    wheels = sorted((sglang_peer.REPO_ROOT / ".peers").glob("sglang-*.whl"))
    saved = os.environ.get("NSA_SGLANG_PATH")
    if not saved and wheels:
        os.environ["NSA_SGLANG_PATH"] = str(wheels[0])
    try:
        folder, _ = sglang_peer._source_folder()
    except sglang_peer.PeerUnavailable as exc:
        pytest.skip(str(exc))
    finally:
        if saved is None:
            os.environ.pop("NSA_SGLANG_PATH", None)
    # one module per session: on a GPU each fresh copy would compile its kernels again
    return SimpleNamespace(
        metadata=_sglang_module_without_asserts(str(folder / sglang_peer.FILES["metadata"]))
    )


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_sglang_production_call_matches_the_reference(point, interpreter_scalar_masks):
    """SGLang's real kernels, called through our call builder with its production arguments,
    write exactly the reference on every live region (under the interpreter here)."""
    peer = sglang_metadata_without_asserts()
    inputs = spec.make_inputs(point)
    buffers = spec.allocate_outputs(point, poison=-1)
    spec.bind(point.spec.sglang_function(peer), point, inputs, buffers)()
    counts = spec.check_outputs(point, spec.live_reference(point, inputs), buffers, "sglang")
    assert counts["real_page_table"] > 0 and counts["dsa_cu_seqlens_k"] == inputs.total_len + 1


def _vllm_peer_or_none():
    """vLLM's module (the extracted copy here, else wherever the loader finds one), or None."""
    from nsa_kernels.peers import vllm as vllm_peer
    extracted = Path("/work/peers_src/vllm")
    use_extracted = extracted.is_dir() and not os.environ.get("NSA_VLLM_PATH")
    if use_extracted:
        os.environ["NSA_VLLM_PATH"] = str(extracted)
    try:
        return vllm_peer.load(require_gpu=False)
    except vllm_peer.PeerUnavailable:
        return None
    finally:
        if use_extracted:
            os.environ.pop("NSA_VLLM_PATH")


def test_run_point_times_the_peers_after_checking_them(interpreter_scalar_masks):
    point = POINTS[4]
    vllm = _vllm_peer_or_none()
    peers = SimpleNamespace(
        sglang=sglang_metadata_without_asserts(), vllm=vllm, notes={"vllm": "absent"}
    )
    records, checks = modes.run_point(point, peers, TIMING, 1e3, harness.measure_interleaved,
                                      ours=STANDIN[point.workload])
    by_stage = {r["stage"]: r for r in records}
    assert {"nsa_draft_extend_varlen", "sglang_draft_extend_varlen"} <= set(checks)
    if vllm is not None:
        assert set(checks["vllm_indexer"]) == {
            "seqlens_expanded",
            "real_page_table",
            "token_to_request",
        }
        assert (
            by_stage["vllm_indexer"]["eager_us"] > 0
            and "BLOCK_COLS" in by_stage["vllm_indexer"]["config"]
        )
    assert by_stage["sglang_draft_extend_varlen"]["eager_us"] > 0
    assert "static_extend_len=False" in by_stage["sglang_draft_extend_varlen"]["config"]
    if harness.ON_GPU:  # the stand-in reads lengths on the host: it cannot be captured
        assert "not capturable" in by_stage["nsa_draft_extend_varlen"]["note"]
        assert by_stage["sglang_draft_extend_varlen"]["graph_us"] > 0
    else:
        assert by_stage["nsa_draft_extend_varlen"]["vs_sglang"] is not None


# --------------------------------------------------------------------------- workloads

@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_inputs_are_seeded_spread_and_page_consistent(point):
    a, b = spec.make_inputs(point), spec.make_inputs(point)
    assert torch.equal(a.seq_lens, b.seq_lens) and torch.equal(a.req_to_token, b.req_to_token)
    assert a.seq_lens.dtype == torch.int64 and a.req_pool_indices.dtype == torch.int64
    assert a.req_to_token.dtype == torch.int32
    assert a.req_to_token.shape == (point.bs + 1, point.width)
    assert int(a.kv_lens.max()) == point.width  # one request at the width
    assert int(a.kv_lens.min()) >= 1
    assert sorted(a.req_pool_indices.tolist()) == list(range(1, point.bs + 1))
    cols = torch.arange(point.width, dtype=torch.int32, device=a.req_to_token.device)
    assert torch.equal(a.req_to_token % spec.PAGE, (cols % spec.PAGE).expand_as(a.req_to_token))
    ext = a.extend_seq_lens.tolist()
    assert all(1 <= e <= point.next_n for e in ext) and a.total_len == sum(ext)
    if point.workload in ("target_verify", "draft_extend_static"):
        assert ext == [point.next_n] * point.bs
    other = spec.make_inputs(spec.Point(point.workload, point.bs, point.width, point.next_n,
                                          point.variant, seed=1))
    assert not torch.equal(other.req_to_token, a.req_to_token)


def test_points_cover_the_issue_sizes():
    full = modes.points("full")
    graph = [p for p in full if p.workload != "extend"]
    assert {p.bs for p in graph} == set(modes.BATCH_SIZES)
    assert {p.width for p in graph} == set(modes.WIDTHS)
    configs = {(p.workload, p.next_n, p.variant) for p in full}
    assert ("decode", 1, "real_only") in configs and ("target_verify", 4, "") in configs
    assert ("draft_extend_static", 2, "") in configs and ("draft_extend_varlen", 4, "") in configs
    assert max(p.bs for p in full if p.workload == "extend") == 64
    assert ("target_verify", 2, "hopper") in configs
    assert len(graph) == 9 * 11 * 3


def test_buffers_follow_the_graph_runner():
    point = spec.Point("target_verify", 3, 256, 4)
    buf = spec.allocate_outputs(point)
    assert buf["page_table_1"].shape == (12, 256) and buf["real_page_table"].shape == (12, 4)
    assert buf["paged_mqa_ctx_lens_2d"].shape == (3, 4) and buf["cu_seqlens_k"].shape == (4,)
    dropped = spec.allocate_outputs(POINTS[1])
    assert dropped["page_table_1"] is None and dropped["paged_mqa_ctx_lens_2d"] is None
    assert dropped["seqlens_expanded"] is None  # decode's rows are its requests
    slack = spec.allocate_outputs(point, slack=3)
    assert slack["page_table_1"].shape == (15, 256) and slack["cu_seqlens_k"].shape == (7,)
    assert slack["paged_mqa_ctx_lens_2d"].shape == (3, 4)


# --------------------------------------------------------------------------- byte counts

def _inputs(kv, ext, seq=None):
    kv = torch.tensor(kv)
    return SimpleNamespace(kv_lens=kv, extend_seq_lens=torch.tensor(ext, dtype=torch.int32),
                           total_len=sum(ext), seq_lens=kv if seq is None else torch.tensor(seq))


def test_bytes_decode_with_and_without_page_table_1():
    inputs = _inputs([100, 64], [1, 1])
    # read: seq_lens + req_pool_indices 2 x 16; req_to_token 164 x 4.
    # written: page_table_1 164 x 4, real 2 + 1 pages x 4, cache 2 x 4, cu 3 x 4, dsa 2 x 4,
    # dsa_cu 3 x 4
    assert floors.bytes_moved(spec.Point("decode", 2, 256, 1, "page_table_1"), inputs) == \
        32 + 656 + 656 + 12 + 8 + 12 + 8 + 12
    # without the wide table: 3 pages read as 32-byte sectors, only the real table written
    assert floors.bytes_moved(spec.Point("decode", 2, 256, 1, "real_only"), inputs) == \
        32 + 3 * 32 + 12 + 8 + 12 + 8 + 12


def test_bytes_verify_reads_each_row_once_and_writes_it_per_draft():
    inputs = _inputs([66, 3], [2, 2], seq=[64, 1])  # kv = seq + next_n
    # read 2 x 16 + 69 x 4; written: page_table_1 2 x 69 x 4, real 2 x (2 + 1) x 4,
    # cache 2 x 4, cu 3 x 4, expanded/dsa/ctx_lens 4 x 4 each, dsa_cu 5 x 4
    assert floors.bytes_moved(spec.Point("target_verify", 2, 256, 2), inputs) == \
        32 + 276 + 552 + 24 + 8 + 12 + 3 * 16 + 20


def test_bytes_draft_extend_counts_extend_lengths():
    inputs = _inputs([10, 200], [1, 3])
    # read 2 x 16 + extend 2 x 4 + 210 x 4; rows 4: page_table_1 (10 + 3 x 200) x 4,
    # real (1 + 3 x 4) x 4; cache 8, cu 12, expanded 16, dsa 16, dsa_cu 20
    assert floors.bytes_moved(spec.Point("draft_extend_varlen", 2, 256, 4), inputs) == \
        32 + 8 + 840 + 2440 + 52 + 8 + 12 + 16 + 16 + 20


# --------------------------------------------------------------------------- live comparisons

def test_compare_live_catches_a_planted_difference_only_in_the_live_region():
    expected = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    live = torch.tensor([4, 2, 0])
    actual = torch.full((5, 6), -1, dtype=torch.int32)
    actual[:3, :4] = expected
    actual[1, 3] = 99  # past row 1's live prefix: stale values are allowed there
    actual[2, :] = 77  # row 2 has no live entries
    assert spec.compare_live("t", actual, expected, live) == 6
    actual[1, 1] = 55
    with pytest.raises(AssertionError, match=r"t: differs at \(1, 1\): got 55, expected 5 "):
        spec.compare_live("t", actual, expected, live)
    flat = torch.tensor([3, 4, 5], dtype=torch.int32)
    assert spec.compare_live("f", torch.tensor([3, 4, 5, -1], dtype=torch.int64), flat) == 3
    with pytest.raises(AssertionError, match="f: differs at \\(2,\\)"):
        spec.compare_live("f", torch.tensor([3, 4, 6, 5], dtype=torch.int32), flat)


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_standin_and_reference_agree_through_the_call_builder(point):
    inputs = spec.make_inputs(point)
    reference = spec.live_reference(point, inputs)
    buffers = spec.allocate_outputs(point, poison=-1)
    spec.bind(STANDIN[point.workload], point, inputs, buffers)()
    counts = spec.check_outputs(point, reference, buffers, "standin")
    expected = {
        "cache_seqlens",
        "cu_seqlens_k",
        "dsa_cache_seqlens",
        "dsa_cu_seqlens_k",
        "real_page_table",
    }
    assert expected <= set(counts)
    assert ("page_table_1" in counts) == (point.variant != "real_only")
    assert counts["real_page_table"] == int(((inputs.kv_lens + 63) // 64).repeat_interleave(
        inputs.extend_seq_lens.long()).sum())
    # nothing past the live rows was written
    assert bool((buffers["dsa_cache_seqlens"][inputs.total_len:] == -1).all())


def test_check_live_fails_on_a_planted_page_table_error():
    point = POINTS[3]
    inputs = spec.make_inputs(point)
    buffers = spec.allocate_outputs(point, poison=-1)
    spec.bind(STANDIN[point.workload], point, inputs, buffers)()
    buffers["real_page_table"][5, 1] += 1
    with pytest.raises(AssertionError, match="real_page_table: differs at \\(5, 1\\)"):
        spec.check_outputs(point, spec.live_reference(point, inputs), buffers, "planted")


# --------------------------------------------------------------------------- records

def test_run_point_records_schema_floor_and_ratios():
    point = POINTS[2]

    def fake_measure(entries, rounds, graph_calls, eager, graph=True):
        return {name: {"graph_us": 2.0 if name == "empty_kernel" else 4.0,
                       "eager_us": 2.0 if name == "empty_kernel" else 4.0,
                       "note": None} for name in entries}
    records, checks = modes.run_point(point, NO_PEERS, TIMING, bandwidth=1.0,
                                      measure=fake_measure, ours=STANDIN[point.workload])
    by_stage = {r["stage"]: r for r in records}
    assert set(by_stage) == {"empty_kernel", "nsa_target_verify", "sglang_target_verify",
                             "vllm_indexer", "bandwidth_floor"}
    for r in records:
        assert {"workload", "stage", "bs", "width", "next_n", "graph_us", "eager_us", "config",
                "floor_us", "vs_sglang", "vs_floor"} <= set(r)
        assert r["workload"] == "target_verify" and r["bs"] == 2 and r["width"] == 256
    ours = by_stage["nsa_target_verify"]
    n_bytes = floors.bytes_moved(point, spec.make_inputs(point))
    assert by_stage["bandwidth_floor"]["graph_us"] == n_bytes  # bandwidth 1 byte/us
    assert ours["floor_us"] == max(2.0, n_bytes) and ours["vs_floor"] == 4.0 / max(2.0, n_bytes)
    assert by_stage["sglang_target_verify"]["graph_us"] is None
    assert "SGLang peer unavailable" in by_stage["sglang_target_verify"]["note"]
    assert "vLLM" in by_stage["vllm_indexer"]["note"] and "nsa_target_verify" in checks


def test_run_point_refuses_to_time_a_wrong_kernel():
    point = POINTS[0]

    def broken(**kwargs):
        standin_decode(**kwargs)
        kwargs["cu_seqlens_k"][1] += 1

    seen = []

    def measure(entries, *args, **kwargs):
        seen.append(set(entries))
        return {}
    records, _ = modes.run_point(point, NO_PEERS, TIMING, 1.0, measure,
                                 ours=lambda **kw: broken(**kw))
    assert seen == [{"empty_kernel"}]
    ours = next(r for r in records if r["stage"] == "nsa_decode")
    assert "cu_seqlens_k: differs at (1,)" in ours["note"] and ours["graph_us"] is None


def test_finish_point_uses_sglang_and_the_larger_floor():
    p = spec.Point("decode", 1, 256, 1, "page_table_1")
    recs = [
        dict(modes.record(p, s, {"graph_us": t, "eager_us": 100.0 * t}, "", 0),
             interpreter=False)
        for s, t in (
            ("nsa_decode", 3.0),
            ("sglang_decode", 6.0),
            ("empty_kernel", 2.5),
            ("bandwidth_floor", 1.0),
        )
    ]
    modes.finish_point(recs)
    assert recs[0]["vs_sglang"] == 2.0 and recs[0]["floor_us"] == 2.5 and recs[0]["vs_floor"] == 1.2
    # interpreter records have no graph time: their ratios come from eager (interpreter) times
    for r in recs:
        r["interpreter"], r["graph_us"] = True, None
    modes.finish_point(recs)
    assert recs[0]["floor_us"] == 250.0 and recs[0]["vs_sglang"] == 2.0


def _gpu_point_records(point, ours, sglang, empty, bandwidth, vllm=None):
    stages = [
        ("nsa_" + point.workload, ours),
        ("sglang_" + point.workload, sglang),
        ("empty_kernel", empty),
        ("bandwidth_floor", bandwidth),
    ] + ([("vllm_indexer", vllm)] if vllm else [])
    recs = [dict(modes.record(point, s, {"graph_us": None if point.workload == "extend" else t,
                                         "eager_us": t}, "", 0),
                 interpreter=False) for s, t in stages]
    return modes.finish_point(recs)


def test_targets_report_each_miss_with_its_measurement():
    from nsa_kernels.bench import modes_report as report

    recs = (
        _gpu_point_records(spec.Point("decode", 8, 131072, 1, "page_table_1"), 4.1, 3.9, 2.9, 1.0)
        + _gpu_point_records(
            spec.Point("target_verify", 256, 8192, 2), 10.0, 30.0, 3.0, 9.0, vllm=12.0
        )
        + _gpu_point_records(spec.Point("extend", 32, 8192, 0), 50.0, 1500.0, 10.0, 5.0)
    )
    by_name = {name: (ok, summary, misses) for name, ok, summary, misses in report.targets(recs)}
    ok, summary, misses = by_name[report.TARGETS[0]]
    assert ok is False and summary == "1 of 2 points meet it"
    assert misses == [("decode page_table_1 bs 8 width 131072: ours 4.10 µs SGLang 3.90 µs "
                       "floor: empty 2.90 µs, bandwidth 1.00 µs "
                       "[launch-bound: ours is +1.20 µs over the empty kernel]")]
    assert "[bandwidth-bound: ours moves its bytes at 90% of the copy bandwidth]" in \
        report.explain(("target_verify", 2, "", 256, 8192),
                       report.group_points(recs)[("target_verify", 2, "", 256, 8192)])
    assert by_name[report.TARGETS[1]][0] is True          # 3x at bs 256
    ok, _, misses = by_name[report.TARGETS[2]]  # 4.1 > 1.3 x 2.9; 10 <= 1.3 x 9
    assert ok is False and [m.split(":")[0] for m in misses] == [
        "decode page_table_1 bs 8 width 131072",
        "extend bs 32 width 8192",
    ]
    assert by_name[report.TARGETS[3]][0] is True and by_name[report.TARGETS[4]][0] is True
    rows = {(r["mode"], r["bs"]): r for r in report.ratio_rows(recs)}
    assert rows[("target_verify next_n=2", 256)]["vs_vllm"] == 1.2
    where = report.where_time_goes(recs)
    assert where[8]["launch"] == 1 and where[256]["bandwidth"] == 1
    interp = [dict(r, interpreter=True) for r in recs]
    assert all(ok is None for _, ok, _, _ in report.targets(interp))


def test_measure_interleaved_on_the_interpreter():
    calls = []
    out = harness.measure_interleaved({"ok": lambda: calls.append(1), "bad": lambda: 1 / 0},
                                      rounds=2, graph_calls=1, eager=3)
    assert out["ok"]["eager_us"] > 0
    assert out["bad"]["eager_us"] is None and "ZeroDivisionError" in out["bad"]["note"]
    if not harness.ON_GPU:  # one warm-up call, three eager rounds of three calls, no graph
        assert len(calls) == 1 + 3 * 3
        assert out["ok"]["graph_us"] is None and "no GPU" in out["ok"]["note"]


def test_measure_interleaved_graph_plumbing(monkeypatch):
    """The GPU branch with capture and replay faked: each capturable entry gets its replay time,
    the one that cannot be captured keeps its eager time and the reason."""
    replays = []

    class FakeGraph:
        def __init__(self, name):
            self.name = name

        def replay(self):
            replays.append(self.name)

    def fake_capture(fn, graph_calls):
        name = fn()
        return (None, "not capturable: syncs") if name == "syncs" else (FakeGraph(name), None)

    seen = {}

    def fake_samples(graphs, iters, graph_calls):
        seen.update(iters=iters, graph_calls=graph_calls, names=sorted(graphs))
        return {name: [float(len(name))] * 3 for name in graphs}

    monkeypatch.setattr(harness, "try_capture", fake_capture)
    monkeypatch.setattr(harness, "_graph_samples", fake_samples)
    out = harness.measure_interleaved(
        {"a": lambda: "a", "bbb": lambda: "bbb", "syncs": lambda: "syncs"},
        rounds=7,
        graph_calls=3,
        eager=2,
    )
    assert out["a"]["graph_us"] == 1.0 and out["bbb"]["graph_us"] == 3.0
    assert out["syncs"]["graph_us"] is None and out["syncs"]["note"] == "not capturable: syncs"
    assert out["syncs"]["eager_us"] > 0
    assert seen == {"iters": 28, "graph_calls": 3, "names": ["a", "bbb"]}  # 28 // 4 = 7 rounds
    assert replays == ["a", "bbb"]  # one warm replay each before timing


def test_quick_sweep_runs_with_the_standin_on_the_interpreter():
    pts = [p for p in modes.points("quick", batch_sizes=(2,)) if p.workload != "extend"]
    records = []
    for p in pts:
        recs, _ = modes.run_point(p, NO_PEERS, TIMING, 1e3, harness.measure_interleaved,
                                  ours=STANDIN[p.workload])
        records += recs
    ours = [r for r in records if r["stage"].startswith("nsa_")]
    assert len(ours) == len(pts) == 9 and all(r["eager_us"] > 0 for r in ours)
    # checked and timed: the only note allowed is the missing graph (no GPU; or, on a GPU, the
    # stand-in's host reads, which cannot be captured)
    allowed = "not capturable" if harness.ON_GPU else "no GPU"
    assert all(r["note"] is None or allowed in r["note"] for r in ours)


def test_compare_extend_is_exact_over_the_same_keys():
    a = {
        "seqlens_expanded": torch.tensor([3, 4], dtype=torch.int32),
        "indexer_ke": (torch.tensor([1]), torch.tensor([2])),
        "page_table_1_flattened": None,
        "max_seqlen_k": 7,
    }
    same = {
        "seqlens_expanded": torch.tensor([3, 4], dtype=torch.int64),
        "indexer_ke": (torch.tensor([1]), torch.tensor([2])),
        "page_table_1_flattened": None,
        "max_seqlen_k": 7,
    }
    assert compare_extend(a, same) == sorted(a)
    for key, value in (
        ("seqlens_expanded", torch.tensor([3, 5])),
        ("indexer_ke", (torch.tensor([1]), torch.tensor([3]))),
        ("page_table_1_flattened", torch.tensor([0])),
        ("max_seqlen_k", 8),
        ("seqlens_expanded", torch.tensor([3, 4, 5])),
    ):
        with pytest.raises(AssertionError, match=key):
            compare_extend(a, dict(same, **{key: value}))
    with pytest.raises(AssertionError, match="keys differ"):
        compare_extend(a, {k: v for k, v in same.items() if k != "max_seqlen_k"})


@settings(max_examples=12)
@given(config=st.sampled_from(modes.mode_configs(modes.GRAPH_WORKLOADS)),
       bs=st.integers(1, 9), width_pages=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_sglang_kernels_equal_the_reference_on_random_points(config, bs, width_pages, seed):
    """Random points: SGLang's real kernels (interpreter, asserts stripped) and the stand-in both
    write exactly the reference; widths not a multiple of SGLang's 128-column blocks included."""
    workload, next_n, variant = config
    point = spec.Point(workload, bs, width_pages * spec.PAGE, next_n, variant, seed)
    if point.width <= next_n:
        return
    peer = sglang_metadata_without_asserts()
    inputs = spec.make_inputs(point)
    reference = spec.live_reference(point, inputs)
    for who, function in (
        ("sglang", point.spec.sglang_function(peer)),
        ("standin", STANDIN[workload]),
    ):
        buffers = spec.allocate_outputs(point, poison=-1)
        with _scalar_masks():
            spec.bind(function, point, inputs, buffers)()
        spec.check_outputs(point, reference, buffers, who)


# --------------------------------------------------------------------------- the specs

def _small_points():
    """Every configuration of every graph mode on small boundary points, page sizes 64 and 1."""
    out = []
    for workload, next_n, variant in modes.mode_configs(modes.GRAPH_WORKLOADS):
        for page_size in (64, 1):
            out.append(spec.Point(workload, 13, 300, next_n, variant, seed=3,
                                  page_size=page_size, lengths="boundary"))
    return out


def test_registry_names_every_workload_and_resolves_its_functions():
    assert tuple(SPECS) == modes.WORKLOADS
    for name, mode in SPECS.items():
        assert mode.name == name and mode.variants and callable(mode.ours_function())
        assert all(v.config.startswith("SGLang 0.5.23") for v in mode.variants)
        if mode.graph:
            assert mode.fill_class().__name__.endswith("Fill")
            assert mode.sglang.startswith("fused_dsa_") and mode.sglang_in_peer
    with pytest.raises(ValueError, match="workload must be one of"):
        spec.Point("decoded", 1, 64)
    with pytest.raises(ValueError, match="has no variant 'sm90'"):
        spec.Point("target_verify", 1, 64, 2, "sm90")


@pytest.mark.parametrize("point", _small_points(), ids=lambda p: p.name)
def test_live_reference_equals_the_oracle(point):
    """The benchmark's device-side reference and the mode's 64-bit oracle agree entry by entry
    (flat arrays over their range, page-table rows on their live prefix)."""
    inputs = spec.make_inputs(point)
    live, oracle = spec.live_reference(point, inputs), spec.oracle_outputs(point, inputs)
    for name in spec.FLAT_OUTPUTS:
        if name in oracle and name in live:
            assert torch.equal(live[name][0].cpu().long(), oracle[name]), name
    tables = [("page_table_1", "live_cols")] if "page_table_1" in live else []
    if point.page_size > 1:
        tables.append(("real_page_table", "real_live_cols"))
    for name, cols in tables:
        got, live_cols = live[name]
        assert torch.equal(live_cols.cpu(), oracle[cols]), name
        spec.compare_live(name, got.cpu(), oracle[name], oracle[cols])


@pytest.mark.parametrize("point", _small_points(), ids=lambda p: p.name)
def test_ours_writes_exactly_the_reference_and_nothing_else(point):
    inputs = spec.make_inputs(point)
    outputs = spec.allocate_outputs(point, slack=3)
    spec.bind(point.spec.ours_function(), point, inputs, outputs)()
    counts = spec.check_outputs(point, spec.live_reference(point, inputs), outputs,
                                poison=spec.POISON)
    assert counts["dsa_cu_seqlens_k"] == inputs.total_len + 1


def test_check_outputs_with_poison_catches_a_write_past_the_live_region():
    point = spec.Point("target_verify", 3, 256, 2, page_table_1=True)
    inputs = spec.make_inputs(point)
    outputs = spec.allocate_outputs(point, slack=2)
    spec.bind(point.spec.ours_function(), point, inputs, outputs)()
    reference = spec.live_reference(point, inputs)
    spec.check_outputs(point, reference, outputs, poison=spec.POISON)
    outputs["seqlens_expanded"][6] = 0  # the first slack entry
    with pytest.raises(AssertionError, match="seqlens_expanded: written past its range"):
        spec.check_outputs(point, reference, outputs, poison=spec.POISON)
    outputs["seqlens_expanded"][6] = spec.POISON
    row, col = 0, int(reference["page_table_1"][1][0])  # first column past row 0's live prefix
    if col < point.width:
        outputs["page_table_1"][row, col] = 7
        with pytest.raises(AssertionError, match="page_table_1: differs at"):
            spec.check_outputs(point, reference, outputs, poison=spec.POISON)


def test_boundary_lengths_cover_the_page_and_topk_edges():
    point = spec.Point("decode", 12, 4096, 1, "real_only", lengths="boundary")
    seq = spec.make_inputs(point).seq_lens.tolist()
    assert seq[:10] == [0, 1, 63, 64, 65, 2047, 2048, 2049, 4096, 4096]
    narrow = spec.make_inputs(point.with_(width=100)).seq_lens.tolist()
    assert narrow[:5] == [0, 1, 63, 64, 65] and max(narrow) == 100


def test_extend_is_checked_against_its_oracle_and_counts_its_outputs():
    point = spec.Point("extend", 3, 512, 0)
    inputs = spec.make_inputs(point)
    ours = point.spec.ours_function()(**point.spec.kwargs(point, inputs, {}))
    reference = point.spec.reference(point, inputs)
    assert point.spec.check(point, reference, {}, ours, "ours") == {"keys vs oracle": 8}
    oracle_entries = sum(t.numel() for t in reference.values())
    assert floors.bytes_moved(point, inputs) == 3 * 20 + 4 * int(inputs.kv_lens.sum()) \
        + 4 * oracle_entries
    bad = dict(ours, indexer_ke=ours["indexer_ke"] + 1)
    with pytest.raises(AssertionError, match="indexer_ke differs"):
        point.spec.check(point, reference, {}, bad, "ours")


@pytest.mark.parametrize("bs", [1, 2])
@pytest.mark.parametrize("path", ["compat", "fill"])
def test_varlen_draft_extend_with_no_rows_writes_only_its_requests(bs, path):
    """total_len = 0 (every request accepts nothing): only ``cache_seqlens[:bs]`` and
    ``cu_seqlens_k[:bs + 1]`` change; the slack past them (a graph's padding) keeps its poison.
    SGLang's own ``copy_`` broadcasts one request's length over the whole buffer."""
    point = spec.Point("draft_extend_varlen", bs, 256, 4)
    inputs = spec.make_inputs(point)
    inputs.extend_seq_lens.zero_()
    inputs.total_len = 0
    outputs = spec.allocate_outputs(point, slack=3)
    if path == "compat":
        spec.bind(point.spec.ours_function(), point, inputs, outputs)()
    else:
        point.spec.fill_class()(**point.spec.kwargs(point, inputs, outputs))()
    assert outputs["cache_seqlens"][bs:].eq(spec.POISON).all(), outputs["cache_seqlens"]
    spec.check_outputs(point, spec.live_reference(point, inputs), outputs, poison=spec.POISON)


# --------------------------------------------------------------------------- spread and floors

def test_quantiles_are_do_bench_s():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0.2, 0.5, 0.8):
        assert harness.quantile(values, q) == pytest.approx(
            torch.quantile(torch.tensor(values, dtype=torch.float64), q).item())
    out = harness.summarize("graph_us", values, 2.0)
    assert out == {"graph_us": 7.0, "graph_us_p20": 4.0, "graph_us_p80": 10.0}
    assert harness.summarize("host_us", []) == {"host_us": None, "host_us_p20": None,
                                                "host_us_p80": None}


def test_every_record_stores_p20_and_p80():
    point = POINTS[2]

    def fake_measure(entries, rounds, graph_calls, eager, graph=True):
        return {name: {"graph_us": 4.0, "graph_us_p20": 3.5, "graph_us_p80": 4.5,
                       "eager_us": 9.0, "eager_us_p20": 8.0, "eager_us_p80": 11.0, "note": None}
                for name in entries}
    records, _ = modes.run_point(point, NO_PEERS, TIMING, 1.0, fake_measure,
                                 ours=STANDIN[point.workload])
    ours = next(r for r in records if r["stage"] == "nsa_target_verify")
    assert (ours["graph_us_p20"], ours["graph_us_p80"]) == (3.5, 4.5)
    assert (ours["eager_us_p20"], ours["eager_us_p80"]) == (8.0, 11.0)
    measured = harness.measure_interleaved({"a": lambda: None}, rounds=2, graph_calls=1, eager=5)
    a = measured["a"]
    assert a["eager_us_p20"] <= a["eager_us"] <= a["eager_us_p80"]
    group = harness.measure_group([dict(name="a", fn=lambda: None)], None,
                                  dict(iters=5, warmup=1, graph_calls=1))
    assert {"eager_us_p20", "eager_us_p80", "throughput_us_p20", "graph_us_p80"} <= set(group[0])


def test_one_floor_definition():
    assert floors.point_floor(2.0, 5.0) == 5.0 and floors.point_floor(2.0, None) == 2.0
    assert floors.point_floor(None, None) is None
    assert floors.bandwidth_floor_us(1000, 250.0) == 4.0
    assert floors.bandwidth_floor_us(1000, None) is None
    assert floors.copy_bandwidth(n_bytes=1 << 16, rounds=1) > 0


def test_pipeline_bytes_are_the_varlen_mode_s():
    from nsa_kernels.bench import workloads
    workload = workloads.draft_extend(5, seed=1)
    point = spec.Point("draft_extend_varlen", 5, 8192, int(workload.extend_seq_lens.max()),
                       page_table_1=True)
    kv = workload.seq_lens.long()
    inputs = spec.Inputs(seq_lens=kv, req_pool_indices=kv, req_to_token=None,
                         extend_seq_lens=workload.extend_seq_lens, kv_lens=kv,
                         total_len=workload.n_tokens)
    assert floors.pipeline_bytes(workload, 8192, 64) == spec.graph_bytes(point, inputs)


# --------------------------------------------------------------------------- the CLI modules

BENCH_MODULES = ("bench_modes", "perf_modes", "launch_cost", "host_cost_modes", "seed_table")


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_benchmark_modules_run_with_python_m(name):
    """Each benchmark is ``python -m nsa_kernels.bench.<name>`` (no script path, no sys.path
    edits): ``--help`` names the module and the shared ``--out``."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", f"nsa_kernels.bench.{name}", "--help"],
                          capture_output=True, text=True, cwd="/", timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(root)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"python -m nsa_kernels.bench.{name}" in done.stdout and "--out" in done.stdout
    source = (root / "nsa_kernels" / "bench" / f"{name}.py").read_text()
    assert "sys.path" not in source and "E402" not in source


def test_host_cost_without_launches_times_extend_metadata(monkeypatch, capsys, tmp_path):
    """``host_cost_modes`` without ``--launch`` (the CPU's mode) times every entry point,
    extend_metadata's included: no kernel writes its status there, so the mirror check must
    not judge it. Fresh allocations are poisoned (every status flag set when unwritten), and
    the no-op launches are undone on return."""
    from nsa_kernels import launcher
    from nsa_kernels.bench import host_cost_modes
    from nsa_kernels.validation import extend as extend_checks

    calls = {cls: cls.__dict__["__call__"] for cls in host_cost_modes.LAUNCH_CLASSES}
    check = extend_checks.raise_on_mirror_mismatch
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: empty(*a, **k).fill_(-1))
    assert host_cost_modes.main(["--bs", "2", "--calls", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out, out
    assert host_cost_modes.NO_LAUNCH_STATUS_NOTE in out
    timed = [line.split()[0] for line in out.splitlines() if line.endswith("x")]
    assert timed == ["fused_dsa_decode_metadata", "fused_dsa_target_verify_metadata",
                     "fused_dsa_draft_extend_metadata", "launch_extend", "extend_metadata"]
    written = json.loads((tmp_path / "host_cost_modes.json").read_text())
    assert len(written["results"]) == 5 and written["note"] == host_cost_modes.NO_LAUNCH_STATUS_NOTE
    assert {cls: cls.__dict__["__call__"] for cls in host_cost_modes.LAUNCH_CLASSES} == calls
    assert extend_checks.raise_on_mirror_mismatch is check and launcher.LaunchPlan.__call__ is \
        calls[launcher.LaunchPlan]


def test_cli_writes_json_only_where_asked(tmp_path):
    from nsa_kernels.bench import cli

    assert cli.write_json(None, "x.json", {"a": 1}) is None
    path = cli.write_json(tmp_path / "sub", "x.json", {"a": Path("p")}, quiet=True)
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"a":"p"}'
    assert [cli.verdict(v) for v in (True, False, None)] == ["PASS", "FAIL", "NOT MEASURED"]
