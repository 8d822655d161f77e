"""The per-step benchmark (``nsa_kernels.bench.step``): records, floors, refusals, targets."""
import functools

import nsa_kernels  # noqa: F401  (first: it switches Triton to its interpreter on CPU)
from nsa_kernels.bench import step

import pytest
import torch

sb = pytest.importorskip("nsa_kernels.peers.sglang_backend")

KEYS = {"path", "workload", "config", "bs", "width", "next_n", "host_us", "eager_us",
        "graph_us", "stage", "floor_us", "note"}
TINY = dict(rounds=1, calls=1, eager=1, graph_calls=1)


@pytest.fixture(scope="module")
def sglang():
    try:
        return sb.load()
    except sb.PeerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def vllm():
    try:
        return step.vllm_peer()
    except step.vllm_hopper.PeerUnavailable as e:
        pytest.skip(str(e))


def _group(workload="decode", sizes=(2,), width=320):
    return next(g for g in step.groups("quick", sizes, (width,), [workload]))


def _run(sglang, group):
    with step.eager_schedule(sb), step.shared_req_to_token(sb):
        return step.run_group(sb, group, TINY, bandwidth=1e3)


def _points(records):
    out = {}
    for r in records:
        out.setdefault((r["workload"], r["config"], r["width"], r["next_n"], r["bs"]),
                       {})[r["stage"]] = r
    return out


@pytest.mark.parametrize("workload", ["decode", "extend", "mtp_decode"])
def test_records_schema_and_floors_at_every_point(sglang, workload):
    records = _run(sglang, _group(workload, sizes=(1, 2)))
    allowed = set(step.SIDES) | set(step.FLOOR_STAGES)
    for r in records:
        assert KEYS <= r.keys(), KEYS - r.keys()
        assert r["path"] == "step" and r["stage"] in allowed
        for metric in step.METRICS:
            assert f"{metric}_p20" in r and f"{metric}_p80" in r
            if r[metric] is not None:
                assert r[f"{metric}_p20"] <= r[metric] <= r[f"{metric}_p80"]
    points = _points(records)
    assert len(points) == 2
    for stages in points.values():
        assert set(step.FLOOR_STAGES) <= stages.keys()
        assert stages["sglang_step"]["host_us"] > 0 and stages["nsa_installed"]["host_us"] > 0
        assert stages["bandwidth_floor"]["bytes"] > 0
        # a side this machine cannot have is a record with the reason, never silently absent
        assert set(step.SIDES) <= stages.keys()
        for stage in step.SIDES:
            r = stages[stage]
            assert r["host_us"] is not None or r["note"], stage


def test_a_side_whose_metadata_differs_is_not_timed(sglang, monkeypatch):
    original = step.GroupSides._side

    def sabotaged(self, stage, *args):
        side = original(self, stage, *args)
        if stage == "nsa_installed":
            good = side.step

            def bad():
                good()
                side.metadata().cache_seqlens_int32[0] += 1
            side.step = bad
        return side
    monkeypatch.setattr(step.GroupSides, "_side", sabotaged)
    stages = _points(_run(sglang, _group("decode")))[("decode", _group().config, 320, 1, 2)]
    refused = stages["nsa_installed"]
    assert refused["host_us"] is None and refused["eager_us"] is None
    assert refused["note"].startswith("not timed: metadata differs")
    assert "cache_seqlens_int32" in refused["note"]
    assert stages["sglang_step"]["host_us"] is not None


def test_check_sides_passes_equal_sides(sglang):
    group = _group("target_verify")
    with step.shared_req_to_token(sb):
        sides = step.GroupSides(sb, group, ["sglang_step", "nsa_installed"]).sides(2, 1)
    assert step.check_sides(sb, sides) == {}


class _Metadata:
    def __init__(self, rows):
        self.dsa_seqlens_expanded = torch.zeros(rows, dtype=torch.int32)


def test_schedule_and_plan_kinds():
    backend = type("B", (), {})()
    step.prepare_backend(backend, step.NOOP)
    assert backend._refresh_paged_mqa_schedule_metadata(None, None) is None
    assert backend._build_topk_v2_plan(torch.zeros(5)) is None
    step.prepare_backend(backend, step.STANDIN)
    metadata = _Metadata(6)
    backend._refresh_topk_v2_plan(metadata)
    plan = backend._refresh_topk_v2_plan.__self__.buffers[id(metadata)]
    assert plan.shape == (7, 2) and plan.dtype == torch.int32  # plan_topk_v2's shape
    assert backend._build_topk_v2_plan(torch.zeros(5)).shape == (6, 2)
    with pytest.raises(ValueError, match="kind"):
        step.prepare_backend(backend, "fast")


def test_eager_schedule_resolver_follows_the_running_side(sglang):
    module = sb.load().backend_module
    original = module.resolve_paged_mqa_logits_metadata_fn
    calls = []
    with step.eager_schedule(sb):
        step.kinded(step.NOOP, calls.append, 1)()
        assert module.resolve_paged_mqa_logits_metadata_fn()(None, 64, 1) is None
        step.kinded(step.STANDIN, calls.append, 2)()
        assert module.resolve_paged_mqa_logits_metadata_fn.__name__ == "resolver"
    assert module.resolve_paged_mqa_logits_metadata_fn is original and calls == [1, 2]


def test_groups():
    quick = step.groups("quick")
    assert {g.next_n for g in quick if g.workload == "target_verify"} == {2}
    full = step.groups("full")
    assert {g.width for g in full} == set(step.WIDTHS)
    assert max(max(g.sizes) for g in full if g.workload == "extend") == step.EXTEND_MAX_BS
    assert max(max(g.sizes) for g in full if g.workload == "decode") == 512
    with pytest.raises(ValueError, match="workloads"):
        step.groups("quick", workloads=["prefil"])


def _synthetic(installed_host, sglang_host=100.0, bs=32, workload="decode"):
    base = dict(path="step", workload=workload, config="c", width=8192, next_n=1, bs=bs,
                floor_us=2.0)
    times = {"empty_kernel": (12.0, 3.0, 1.0), "empty_driver": (5.0, 2.5, 1.0),
             "empty_graph": (6.0, 2.0, 1.0), "sglang_step": (sglang_host, 40.0, 20.0),
             "nsa_installed": (installed_host, 8.0, 2.2)}
    return [dict(base, stage=s, host_us=h, eager_us=e, graph_us=g)
            for s, (h, e, g) in times.items()]


def _target(records, prefix):
    return next(t for t in step.targets(records) if t["target"].startswith(prefix))


def test_targets_met_and_missed_from_the_records():
    met = _target(_synthetic(5.5) + _synthetic(5.9, bs=64), "installed, host")
    assert met["met"] and met["measured"].startswith("2 of 2")
    missed = _target(_synthetic(5.5) + _synthetic(7.0, bs=64), "installed, host")
    assert not missed["met"] and "1 of 2" in missed["measured"]
    assert "1.40x" in missed["measured"] and "bs 64" in missed["measured"]
    ratio = _target(_synthetic(5.0, sglang_host=14.0), "installed: >= 3x")
    assert not ratio["met"] and "2.80x" in ratio["measured"]
    floor = _target(_synthetic(5.0), "graph replay: installed within")
    assert floor["met"] and "1.10x" in floor["measured"]  # graph 2.2 over floor_us 2.0
    vllm = _target(_synthetic(5.0), "vLLM")
    assert vllm["met"] is False and "not measured" in vllm["measured"]
    for t in step.targets(_synthetic(5.0)):
        assert set(t) == {"target", "measured", "met", "note"}


def test_host_fields_compared_schedules_aside(sglang):
    import dataclasses
    group = _group("decode")
    with step.shared_req_to_token(sb):
        (side,) = step.GroupSides(sb, group, ["sglang_step"]).sides(2, 1)
    side.step()
    metadata = side.metadata()
    step.compare_host_fields(sb, metadata, dataclasses.replace(
        metadata, paged_mqa_schedule_metadata=torch.zeros(2, 2, dtype=torch.int32)))
    with pytest.raises(AssertionError, match="max_seq_len_k"):
        step.compare_host_fields(sb, metadata, dataclasses.replace(
            metadata, max_seq_len_k=metadata.max_seq_len_k + 1))


def test_a_side_that_writes_nothing_is_not_timed(sglang, monkeypatch):
    # The harness's own replay has already written the buffers a timed step writes: only
    # poisoning them before the checked step tells a step that writes nothing from a good one.
    original = step.GroupSides._side

    def idle(self, stage, *args):
        side = original(self, stage, *args)
        if stage == "nsa_installed":
            side.step = lambda: None
        return side
    monkeypatch.setattr(step.GroupSides, "_side", idle)
    stages = _points(_run(sglang, _group("decode")))[("decode", _group().config, 320, 1, 2)]
    assert stages["nsa_installed"]["note"].startswith("not timed: metadata differs")
    assert stages["sglang_step"]["host_us"] is not None


def test_mtp_targets_leave_sglang_fallback_out():
    records = _synthetic(5.0, sglang_host=100.0)
    records += [dict(r, workload="mtp_decode", sglang_host=None) for r in
                _synthetic(5.0, sglang_host=6.0)]
    ratio = _target(records, "installed: >= 3x")
    assert ratio["met"] and ratio["measured"].startswith("1 of 1")
    assert "mtp_decode left out" in ratio["note"]
    floor = _target(records, "installed, host")
    assert floor["measured"].startswith("2 of 2")  # the floor targets keep MTP


@pytest.mark.parametrize("workload", ["decode", "target_verify"])
def test_vllm_hopper_is_checked_then_timed(sglang, vllm, workload):
    group = _group(workload, sizes=(1, 3))
    for stages in _points(_run(sglang, group)).values():
        vllm = stages["vllm_hopper"]
        assert vllm["host_us"] > 0 and vllm["eager_us"] > 0, vllm["note"]
        assert vllm["note"].startswith(step.vllm_hopper.CONFIG)


def test_vllm_hopper_outputs_changed_in_vllms_file_are_not_timed(sglang, vllm, tmp_path,
                                                                 monkeypatch):
    # vLLM's own file, one constant changed: its per-token lengths are then one too long,
    # which the check before timing must catch
    from nsa_kernels.peers import vllm as vllm_peer
    name = step.vllm_hopper.INDEXER
    folder = tmp_path / "vllm"
    for file in step.vllm_hopper.TAKEN:
        path, _ = vllm_peer.source_file(file)
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_bytes(path.read_bytes())
    text = (folder / name).read_text()
    native = "                    + 1\n                    + self.offsets_buffer[:max_decode_len]"
    assert text.count(native) == 1
    (folder / name).write_text(text.replace(native, native.replace("+ 1", "+ 2")))
    monkeypatch.setenv("NSA_VLLM_PATH", str(folder))
    # a cache of its own: the vLLM files this test points at, not those loaded before
    monkeypatch.setattr(step, "vllm_peer", functools.cache(step.vllm_peer.__wrapped__))
    stages = _points(_run(sglang, _group("target_verify")))[
        ("target_verify", _group("target_verify").config, 320, 2, 2)]
    refused = stages["vllm_hopper"]
    assert refused["host_us"] is None
    assert refused["note"].startswith("not timed: metadata differs from sglang_step's")
    assert "dsa_seqlens_expanded" in refused["note"]
    assert stages["nsa_installed"]["host_us"] is not None


def test_vllm_hopper_compared_with_our_outputs_too(sglang, vllm):
    group = _group("target_verify")
    with step.shared_req_to_token(sb):
        sides = step.GroupSides(sb, group, ["sglang_step", "nsa_installed", "vllm_hopper"])
        sides = {s.stage: s for s in sides.sides(2, 1)}
    for side in sides.values():
        side.step()
    got = sides["vllm_hopper"].results()
    ours = {"nsa_installed": sides["nsa_installed"].results()}
    assert step.check_vllm(sb, got, ours) is None
    ours["nsa_installed"][0].tensors["real_page_table"][1, 0] += 1
    assert "real_page_table" in step.check_vllm(sb, got, ours)


def test_vllm_hopper_skipped_with_a_reason(sglang, monkeypatch, tmp_path):
    stages = _points(_run(sglang, _group("extend")))
    for point in stages.values():
        assert point["vllm_hopper"]["note"].startswith("skipped: ")
    monkeypatch.setenv("NSA_VLLM_PATH", str(tmp_path / "nowhere"))
    # a cache of its own: the vLLM files this test points at, not those loaded before
    monkeypatch.setattr(step, "vllm_peer", functools.cache(step.vllm_peer.__wrapped__))
    monkeypatch.setattr(step.vllm_hopper.vllm_peer, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(step.vllm_hopper.vllm_peer, "CACHE", tmp_path / "cache")
    point = _points(_run(sglang, _group("decode")))[("decode", _group().config, 320, 1, 2)]
    assert point["vllm_hopper"]["note"].startswith("skipped: vLLM unavailable")
    assert point["nsa_installed"]["host_us"] is not None


def test_vllm_target_from_the_records():
    records = _synthetic(5.0)
    vllm = [dict(r, stage="vllm_hopper", host_us=8.0, eager_us=9.0, graph_us=1.0)
            for r in records if r["stage"] == "nsa_installed"]
    host = _target(records + vllm, "vLLM on Hopper: installed faster than vllm_hopper (host)")
    assert host["met"] and "1.60x" in host["measured"]
    graph = _target(records + vllm, "vLLM on Hopper: installed faster than vllm_hopper (graph")
    assert not graph["met"] and "0.45x" in graph["measured"]
