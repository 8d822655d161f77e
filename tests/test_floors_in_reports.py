"""Every notebook that times stages measures the five floors with them (``suite.run_stages``),
with host time, and compares against the cheapest empty launch; ``empty_kernel_bound`` is gone."""
import json
from pathlib import Path

from nsa_kernels.bench import floors, plots, suite, workloads
from nsa_kernels.bench.harness import ON_GPU

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"iters": 2, "warmup": 1, "graph_calls": 2}


def test_run_stages_times_every_floor_with_the_stages():
    skipped = []
    records = suite.run_stages(workloads.draft_extend(4), SETTINGS, names=["zero_sync"],
                               skipped=skipped)
    stages = [r["stage"] for r in records]
    skipped_floors = [s["what"].removeprefix("floor ") for s in skipped]
    measured_floors = [name for name in stages if name in floors.FLOORS]
    assert sorted(measured_floors + skipped_floors) == sorted(floors.FLOORS)
    assert "zero_sync" in stages and len(stages) == len(set(stages))
    assert {"sync_only", "torch_op", "empty_kernel"} <= set(stages)
    if not ON_GPU:
        assert sorted(skipped_floors) == ["empty_driver", "empty_graph"]
        assert all(s["reason"] for s in skipped)
    for r in records:
        assert r["workload"] == "draft_extend" and r["bs"] == 4
        assert r["eager_us"] > 0 and r["host_us"] > 0, r["stage"]


def test_skipped_floors_are_listed_once_across_workloads():
    skipped = []
    for bs in (1, 2):
        suite.run_stages(workloads.draft_extend(bs), SETTINGS, names=["zero_sync"], skipped=skipped)
    whats = [s["what"] for s in skipped]
    assert len(whats) == len(set(whats))
    assert len(whats) == (0 if ON_GPU else 2)


def test_run_stages_without_floors_still_records_host_time():
    records = suite.run_stages(workloads.draft_extend(2), SETTINGS, names=["zero_sync"],
                               floor=False)
    assert [r["stage"] for r in records] == ["zero_sync"]
    assert records[0]["host_us"] > 0


def _record(stage, eager, host):
    return {"stage": stage, "eager_us": eager, "host_us": host}


def test_cheapest_empty_ignores_the_non_launch_floors_and_missing_values():
    records = [_record("sync_only", 1.0, 0.5), _record("torch_op", 2.0, 1.0),
               _record("empty_kernel", 24.0, 14.0), _record("empty_driver", 16.0, 6.0),
               _record("empty_graph", 17.0, None), _record("zero_sync", 17.0, 6.5)]
    assert floors.cheapest_empty(records, "eager_us")["stage"] == "empty_driver"
    assert floors.cheapest_empty(records[2:3] + records[4:5], "host_us")["stage"] == "empty_kernel"
    assert floors.cheapest_empty(records[:2], "eager_us") is None


def test_every_floor_has_a_note_and_its_own_colour():
    assert set(floors.FLOOR_NOTES) == set(floors.FLOORS)
    names = list(plots._ORDER)
    assert set(floors.FLOORS) <= set(names)
    colours = [plots.stage_color(name) for name in names]
    assert len(set(colours)) == len(colours)


def test_floor_entries_are_the_measurable_floors():
    entries, skipped = floors.floor_entries()
    assert not {e["name"] for e in entries} & set(skipped)


@pytest.mark.parametrize("folder", ["nsa_kernels", "notebooks", "scripts"])
def test_empty_kernel_bound_is_retired(folder):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix not in (".py", ".ipynb"):
            continue
        if path.suffix == ".ipynb":
            text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        else:
            text = path.read_text()
        if "empty_kernel_bound" in text:
            offenders.append(rel)
    assert not offenders, f"still using the retired floor: {offenders}"


def test_peers_that_return_nothing_are_still_checked_entry_by_entry():
    from nsa_kernels.peers import torch_vectorized

    workload = workloads.draft_extend(8)
    assert suite.check_peer_against_reference(torch_vectorized.fill_torch_vectorized, workload)

    def writes_one_too_many(ext, seq, topk, out_expanded, out_cache):
        torch_vectorized.fill_torch_vectorized(ext, seq, topk, out_expanded, out_cache)
        n = workload.n_tokens
        out_expanded[n:n + 1].fill_(0)

    with pytest.raises(AssertionError, match="out_seqlens_expanded"):
        suite.check_peer_against_reference(writes_one_too_many, workload)

    def wrong_n(*args):
        torch_vectorized.fill_torch_vectorized(*args)
        return workload.n_tokens + 1

    with pytest.raises(AssertionError, match="N ="):
        suite.check_peer_against_reference(wrong_n, workload)


def test_compare_stages_divides_by_the_cheapest_empty_launch_of_the_row():
    from nsa_kernels.bench import display

    def rec(stage, bs, eager):
        return {"stage": stage, "workload": "draft_extend", "bs": bs, "tokens": bs,
                "eager_us": eager}

    records = [rec("empty_kernel", 1, 20.0), rec("empty_driver", 1, 10.0), rec("sync_only", 1, 1.0),
               rec("old", 1, 40.0), rec("new", 1, 15.0),
               rec("empty_kernel", 2, 30.0), rec("old", 2, 40.0), rec("new", 2, 60.0)]
    rows = display.compare_stages(records, "new", "old")
    assert [row[-1] for row in rows] == [1.5, 2.0]
    assert [row[-2] for row in rows] == [40.0 / 15.0, 40.0 / 60.0]


def _notebook_code(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("name", ["06_full_pipeline", "09_decode_verify", "11_modes_vs_peers"])
def test_notebooks_take_the_one_floor_model(name):
    """06, 09 and 11 measure the copy bandwidth and count bytes through ``bench.floors`` only,
    so the same point gets the same floor in every notebook."""
    code = _notebook_code(name)
    assert "floors.copy_bandwidth()" in code
    assert "def copy_bandwidth" not in code and "moved = 4 *" not in code
    assert "inputs.bytes_moved" not in code and "modes.copy_bandwidth" not in code


def test_the_floor_is_the_larger_of_the_empty_kernel_and_the_bandwidth():
    assert floors.point_floor(3.0, floors.bandwidth_floor_us(8000, 2000.0)) == 4.0
    assert floors.point_floor(5.0, floors.bandwidth_floor_us(8000, 2000.0)) == 5.0
    assert "max(empty_us, bytes_moved / copy_bandwidth)" in floors.__doc__
