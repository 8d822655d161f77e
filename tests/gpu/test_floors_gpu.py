"""The notebooks' stage runs (``suite.run_stages``) measure all five floors on a GPU.

For draft_extend bs 32 and 128 and prefill 4096 tokens, every stage runs with the floors as
the notebooks run them (one measurement per workload, shared by the checks below): every
floor of ``floors.FLOORS`` is measured (this machine has a GPU and cuda-python), every record
has positive ``eager_us`` and ``host_us``, a floor's host time does not outlast its call +
synchronize, the cheapest empty launch is not Triton's ``kernel[grid]``, and
``display.compare_stages`` divides by that same cheapest empty launch.
"""
import nsa_kernels as nk  # noqa: F401  (first: picks Triton's mode)
from nsa_kernels.bench import display, floors, suite, workloads

import pytest

pytestmark = pytest.mark.gpu

SETTINGS = {"iters": 200, "warmup": 20, "graph_calls": 16}
WORKLOADS = {"draft_extend-bs32": lambda: workloads.draft_extend(32),
             "draft_extend-bs128": lambda: workloads.draft_extend(128),
             "prefill-4096": lambda: workloads.prefill(4096)}
#: A host call cannot outlast its own call + synchronize by much: slack for timing noise.
HOST_OVER_EAGER_SLACK = 1.25


@pytest.fixture(scope="module", params=list(WORKLOADS))
def run(request):
    """``(records by stage, skipped floors)`` of one workload's stage run."""
    skipped = []
    records = suite.run_stages(WORKLOADS[request.param](), SETTINGS, skipped=skipped)
    return {r["stage"]: r for r in records}, skipped


def test_all_five_floors_are_measured(run):
    by, skipped = run
    assert [f for f in floors.FLOORS if f not in by] == [] and not skipped, skipped


def test_every_record_has_eager_and_host_time(run):
    by, _ = run
    bad = [stage for stage, r in by.items() if not (r["eager_us"] > 0 and r.get("host_us", 0) > 0)]
    assert bad == []


def test_floor_host_time_is_within_its_call_and_sync(run):
    by, _ = run
    over = {f: (by[f]["host_us"], by[f]["eager_us"]) for f in floors.FLOORS
            if f in by and by[f]["host_us"] > HOST_OVER_EAGER_SLACK * by[f]["eager_us"]}
    assert over == {}, "host µs, eager µs"


def test_cheapest_empty_launch_is_not_kernel_grid(run):
    by, _ = run
    cheapest = floors.cheapest_empty(list(by.values()), "eager_us")
    assert cheapest is not None and cheapest["stage"] != "empty_kernel", (
        cheapest and cheapest["stage"], by.get("empty_kernel"))


def test_compare_stages_divides_by_the_cheapest_empty_launch(run):
    by, _ = run
    records = list(by.values())
    cheapest = floors.cheapest_empty(records, "eager_us")
    rows = display.compare_stages(records, "zero_sync", "triton_autotuned")
    want = by["zero_sync"]["eager_us"] / cheapest["eager_us"]
    assert len(rows) == 1 and abs(rows[0][-1] - want) < 1e-9, (rows, want)
