"""The seed's stages 0-2 and SGLang's loop replayed: the fill contract against ``reference``,
and the journey table's arithmetic."""
import nsa_kernels as nk
from nsa_kernels.bench import checks
from nsa_kernels.bench.harness import measure_group
from nsa_kernels.bench.workloads import draft_extend
from nsa_kernels.peers import seed
from nsa_kernels.testing import Canary, check_fill, lengths
from nsa_kernels.testing.strategies import describe, examples, fill_inputs

import pytest
import torch
from hypothesis import given

FILLS = list(seed.SEED_FILLS)
CASES = checks.edge_cases() + checks.random_cases(3, count=3, max_bs=40)


@pytest.mark.parametrize("name", FILLS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fill_contract_on_edge_and_random_inputs(name, case):
    _, ext, seq, topk = case
    for slack in (0, 7):
        check_fill(seed.SEED_FILLS[name], ext, seq, topk, slack=slack)


@pytest.mark.parametrize("name", FILLS)
@examples(10)
@given(inputs=fill_inputs(max_bs=24, max_tokens=600, max_len=5000))
def test_fill_contract_on_generated_inputs(name, inputs):
    ext, seq, topk = inputs
    try:
        check_fill(seed.SEED_FILLS[name], ext, seq, topk, slack=3)
    except AssertionError as exc:
        raise AssertionError(f"{name} on {describe(ext, seq, topk)}: {exc}") from None


def test_seed_fills_do_not_validate_but_ours_does():
    """The point of the seed peers: they skip the checks that our stages run."""
    ext, seq = lengths([3, 1], [2, 5])  # request 0 has qo_len > kv_len
    for name in ("seed_python_baseline", "sglang_loop"):
        out, cache = Canary(8), Canary(8)
        seed.SEED_FILLS[name](ext, seq, 2048, out.view, cache.view)  # no error: no validation
    out, cache = Canary(8), Canary(8)
    with pytest.raises(ValueError, match=r"extend_seq_lens\[0\]"):
        nk.STAGES["python_baseline"](ext, seq, 2048, out.view, cache.view)
    out.assert_unchanged("out_seqlens_expanded")


def test_validation_call_checks_and_writes_nothing():
    workload = draft_extend(6, seed=1)
    out, cache = Canary(workload.capacity), Canary(workload.capacity)
    call = seed.validation_call(workload.extend_seq_lens, workload.seq_lens, workload.topk,
                                out.view, cache.view)
    assert call() == workload.n_tokens
    out.assert_unchanged("out_seqlens_expanded")
    cache.assert_unchanged("out_nsa_cache_seqlens")
    small = Canary(workload.n_tokens - 1)
    with pytest.raises(ValueError, match="out_seqlens_expanded"):
        seed.validation_call(workload.extend_seq_lens, workload.seq_lens, workload.topk,
                             small.view, cache.view)()


def test_seed_entries_measure_as_named_records():
    workload = draft_extend(4, seed=2)
    settings = {"iters": 2, "warmup": 1, "graph_calls": 2}
    records = measure_group(seed.seed_entries(workload), workload, settings)
    assert [r["stage"] for r in records] == FILLS + ["validation"]
    for r in records:
        assert (r["workload"], r["bs"]) == ("draft_extend", 4)
        assert r["eager_us"] > 0


def _records(times, bs=32):
    return {(name, "draft_extend", bs): {"eager_us": us} for name, us in times.items()}


def test_journey_rows_check_ours_as_seed_plus_validation():
    by = _records({"validation": 10.0, "seed_python_baseline": 100.0, "python_baseline": 111.0,
                   "seed_triton_fused": 50.0, "triton_fused": 80.0,
                   "seed_triton_inplace": 40.0, "triton_inplace": 49.0})
    rows = {r["seed_stage"]: r for r in seed.journey_rows(by, 32)}
    assert rows["seed_python_baseline"]["sum_ok"]  # 111 vs 110: +0.9%
    assert rows["seed_python_baseline"]["sum_residual"] == pytest.approx(111 / 110 - 1)
    assert not rows["seed_triton_fused"]["sum_ok"]  # 80 vs 60: +33%
    assert rows["seed_triton_inplace"]["sum_ok"]  # 49 vs 50: -2%
    assert rows["seed_triton_inplace"]["published_us"] == pytest.approx(48.1)


@pytest.mark.parametrize("seed_us, loop_us, met", [(104.0, 100.0, True), (106.0, 100.0, False),
                                                    (95.5, 100.0, True), (94.0, 100.0, False)])
def test_faithful_baseline_target(seed_us, loop_us, met):
    by = _records({"seed_python_baseline": seed_us, "sglang_loop": loop_us})
    target = seed.faithful_baseline_target(by, 32)
    assert target["met"] is met
    assert target["ratio"] == pytest.approx(seed_us / loop_us)


def test_seed_triton_stages_launch_our_stage1_kernel():
    """Equal kernels, so the seed table compares host code only."""
    from nsa_kernels.stages import stage1_triton_fused
    assert seed.launch_linear_scan is stage1_triton_fused.launch_linear_scan
    ext, seq = lengths([2, 0, 3], [9, 4, 3], dtype=torch.int64)
    check_fill(seed.seed_triton_inplace, ext, seq, 5, slack=2)
