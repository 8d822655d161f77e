"""Every stage of ``STAGES`` against ``nsa_kernels.reference``: edge cases and a property test.

The fill contract: ``fill(ext, seq, topk, out_expanded, out_cache) -> N`` writes exactly the
first N entries of both int32 buffers (equal to the reference) and nothing else; the helper
``check_fill`` hands it poisoned views with canary margins and checks all of that.
"""
import os
import subprocess
import sys
import textwrap

import nsa_kernels as nk
from nsa_kernels.testing import DEVICE, check_fill, lengths
from nsa_kernels.testing.strategies import (
    FAST_STAGE_NAMES,
    LINEAR_SCAN_STAGES,
    STAGE_NAMES,
    cheap_sizes,
    describe,
    examples,
    fill_inputs,
)

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

TOPK = 2048


def test_stage_names_and_order():
    assert list(nk.STAGES) == ["python_baseline", "triton_fused", "triton_inplace",
                               "triton_bsearch", "triton_autotuned", "zero_sync"]
    for name, stage in nk.STAGES.items():
        assert isinstance(stage, nk.Stage)
        assert stage.name == name


def test_stage_sync_attributes():
    # Only the zero-sync stage avoids the host; its hot path is the launch, which returns the
    # device status instead of N.
    for name, stage in nk.STAGES.items():
        assert stage.capturable == (stage.host_syncs == 0)
        if name == "zero_sync":
            assert stage.host_syncs == 0 and stage.capturable
            assert stage.hot_path is nk.launch_zero_sync
        else:
            assert stage.host_syncs >= 1 and not stage.capturable
            assert stage.hot_path is stage.fill
    assert nk.STAGES["python_baseline"].host_syncs == 2


# --------------------------------------------------------------------------- edge cases
EDGE_CASES = {
    "bs0": ([], [], TOPK),
    "all_zero_length": ([0, 0, 0], [5, 0, 7], TOPK),
    "zero_length_mixed": ([0, 3, 0, 0, 2, 0], [4, 3, 9, 0, 10, 1], TOPK),
    "zero_length_first_and_last": ([0, 0, 2, 1, 0, 0], [1, 9, 2, 5, 3, 0], TOPK),
    "one_token": ([1], [1], TOPK),
    "one_token_long_history": ([1], [100000], TOPK),
    "extend_equals_seq": ([5, 3, 1, 7], [5, 3, 1, 7], TOPK),  # every request starts at 1
    "kv_topk_minus_1": ([3], [TOPK - 1], TOPK),
    "kv_topk": ([3], [TOPK], TOPK),
    "kv_topk_plus_1": ([3], [TOPK + 1], TOPK),
    "qo_spans_topk": ([10, 4], [TOPK + 5, TOPK + 1], TOPK),
    "around_topk_mixed": ([2, 2, 2, 0, 2], [TOPK - 1, TOPK, TOPK + 1, TOPK, TOPK + 2], TOPK),
    "topk_1": ([3, 1, 0, 2], [3, 7, 2, 2], 1),
    "topk_1_values_from_1": ([4], [4], 1),
    "topk_huge": ([2, 3], [50, 9], 10**6),
    "many_tiny_requests": ([1, 2, 3, 4] * 40, [10, 2000, 2049, 4] * 40, TOPK),
    "block_boundary_255": ([255], [300], TOPK),
    "block_boundary_256": ([128, 128], [200, 128], TOPK),
    "block_boundary_257": ([200, 57], [4000, 60], TOPK),
}


@pytest.mark.parametrize("slack", [0, 37], ids=["capacity_eq_N", "capacity_gt_N"])
@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_edge_cases(stage, case, slack):
    ext, seq, topk = EDGE_CASES[case]
    ext, seq = lengths(ext, seq)
    check_fill(nk.STAGES[stage], ext, seq, topk, slack=slack)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_bs0_with_empty_buffers(stage):
    ext, seq = lengths([], [])
    assert check_fill(nk.STAGES[stage], ext, seq, TOPK, capacity=0) == 0


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_all_zero_lengths_write_nothing(stage):
    ext, seq = lengths([0] * 300, list(range(300)))
    assert check_fill(nk.STAGES[stage], ext, seq, TOPK, slack=5) == 0


@pytest.mark.parametrize("dtypes", [(torch.int64, torch.int64), (torch.int64, torch.int32),
                                    (torch.int32, torch.int64)],
                         ids=["int64", "ext64_seq32", "ext32_seq64"])
@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_input_dtypes(stage, dtypes):
    g = torch.Generator().manual_seed(7)
    ext = torch.randint(0, 6, (40,), generator=g)
    seq = ext + torch.randint(0, 5000, (40,), generator=g)
    check_fill(nk.STAGES[stage], ext.to(DEVICE, dtypes[0]), seq.to(DEVICE, dtypes[1]), TOPK,
               slack=3)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_bs_1000(stage):
    # ~2.5k tokens over 1000 requests: several 256-token blocks, long scans for the linear
    # stages (about 3 s each under the interpreter; kept, since they are the stages whose
    # cost grows with bs).
    g = torch.Generator().manual_seed(1000)
    ext = torch.randint(1, 5, (1000,), generator=g)
    ext[::97] = 0
    seq = ext + torch.randint(0, 2 * TOPK, (1000,), generator=g)
    ext, seq = ext.to(DEVICE, torch.int32), seq.to(DEVICE, torch.int32)
    check_fill(nk.STAGES[stage], ext, seq, TOPK, slack=11)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_prefill_sized_extends(stage):
    # A few requests with thousands of extend tokens each, on top of some history, one of them
    # starting from scratch (qo == kv), with topk inside the extends.
    ext, seq = lengths([3000, 3000, 3000], [3000, 3100, 7000])
    check_fill(nk.STAGES[stage], ext, seq, TOPK, slack=100)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_buffers_reused_across_calls(stage):
    # A serving loop fills the same buffers again and again: a second, shorter batch must
    # overwrite exactly its N entries and leave the rest of the first batch's values alone.
    fill = nk.STAGES[stage]
    out = torch.full((64,), -5, dtype=torch.int32, device=DEVICE)
    cache = out.clone()
    ext1, seq1 = lengths([4, 4, 4], [10, 3000, 4])
    ext2, seq2 = lengths([1, 2], [7, 2049])
    assert fill(ext1, seq1, TOPK, out, cache) == 12
    first, first_cache = nk.reference(ext1, seq1, TOPK)
    assert fill(ext2, seq2, TOPK, out, cache) == 3
    second, second_cache = nk.reference(ext2, seq2, TOPK)
    assert torch.equal(out[:3].cpu(), second.cpu())
    assert torch.equal(cache[:3].cpu(), second_cache.cpu())
    assert torch.equal(out[3:12].cpu(), first[3:].cpu())
    assert torch.equal(cache[3:12].cpu(), first_cache[3:].cpu())
    assert bool((out[12:] == -5).all()) and bool((cache[12:] == -5).all())


# --------------------------------------------------------------------------- properties
# Sizes: the interpreter costs milliseconds per launch and per 256-token block (the linear
# scan costs ~1 ms per request per block), so under the ci profile N stays <= 4000 and the
# linear-scan stages see bs <= 64. The long profile (and any GPU run) uses the full ranges:
# bs 0..2000, lengths 0..100000, topk 1..4096, N <= 20000. Prefill-sized extends of thousands
# of tokens are covered by test_prefill_sized_extends above.
_CHEAP = cheap_sizes()
FAST_INPUTS = fill_inputs(max_bs=2000, max_tokens=4000 if _CHEAP else 20000)
LINEAR_INPUTS = fill_inputs(max_bs=64 if _CHEAP else 2000, max_tokens=4000 if _CHEAP else 20000,
                            max_head=8)


def _ex(ext, seq, topk, ext_dtype=torch.int32, seq_dtype=None):
    return lengths(ext, seq, ext_dtype, seq_dtype) + (topk,)


# Explicit regression cases (kept whatever the generator draws): hand-picked boundaries, and
# every failing example hypothesis has found goes here too.
REGRESSION_EXAMPLES = [
    _ex([], [], 1),
    _ex([0], [0], 1),
    _ex([1, 0, 2], [1, 0, 4096], 4096, torch.int64, torch.int32),
    _ex([2], [100000], 4096, torch.int32, torch.int64),
]


def _with_examples(test):
    for inputs in REGRESSION_EXAMPLES:
        test = example(inputs=inputs, slack=0)(test)
    return test


@pytest.mark.parametrize("stage", FAST_STAGE_NAMES)
@examples(40)
@_with_examples
@given(inputs=FAST_INPUTS, slack=st.integers(0, 300))
def test_property_matches_reference(stage, inputs, slack):
    ext, seq, topk = inputs
    try:
        check_fill(nk.STAGES[stage], ext, seq, topk, slack=slack)
    except AssertionError as err:
        raise AssertionError(f"{stage}: {describe(ext, seq, topk)}: {err}") from None


@pytest.mark.parametrize("stage", LINEAR_SCAN_STAGES)
@examples(20)
@_with_examples
@given(inputs=LINEAR_INPUTS, slack=st.integers(0, 300))
def test_property_linear_scan_matches_reference(stage, inputs, slack):
    ext, seq, topk = inputs
    try:
        check_fill(nk.STAGES[stage], ext, seq, topk, slack=slack)
    except AssertionError as err:
        raise AssertionError(f"{stage}: {describe(ext, seq, topk)}: {err}") from None


# --------------------------------------------------------------------------- import order
@pytest.mark.skipif(torch.cuda.is_available(), reason="the import-order hazard concerns "
                    "CPU-only machines, where nsa_kernels switches Triton to its interpreter")
def test_import_order_after_triton():
    # Either works, or fails at import with a clear message naming TRITON_INTERPRET.
    code = textwrap.dedent("""
        import triton  # before nsa_kernels, as a notebook or another library may do
        import torch
        try:
            import nsa_kernels as nk
        except ImportError as err:
            assert "TRITON_INTERPRET" in str(err), err
            raise SystemExit(0)
        ext = torch.tensor([1, 2], dtype=torch.int32)
        seq = torch.tensor([5, 2], dtype=torch.int32)
        out = torch.full((3,), -1, dtype=torch.int32)
        cache = out.clone()
        assert nk.STAGES["triton_bsearch"](ext, seq, 4, out, cache) == 3
        assert out.tolist() == [5, 1, 2] and cache.tolist() == [4, 1, 2], out
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(nk.__file__)),
                                                    env.get("PYTHONPATH", "")] if p)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_bound_hot_path_follows_changing_contents(stage):
    # Stage.bound(*args) binds the arguments once (a serving loop with static buffers); each
    # call must use the tensors' contents at call time. Syncing stages return N, the zero-sync
    # stage its device status [N, overflow].
    bs, capacity = 30, 30 * 4
    ext = torch.zeros(bs, dtype=torch.int32, device=DEVICE)
    seq = torch.zeros(bs, dtype=torch.int32, device=DEVICE)
    out = torch.full((capacity,), -9, dtype=torch.int32, device=DEVICE)
    cache = out.clone()
    hot = nk.STAGES[stage].bound(ext, seq, TOPK, out, cache)
    g = torch.Generator().manual_seed(30)
    for qo_max in (4, 1, 3):
        new_ext = torch.randint(0, qo_max + 1, (bs,), generator=g)
        ext.copy_(new_ext)
        seq.copy_(new_ext + torch.randint(0, 2 * TOPK, (bs,), generator=g))
        out.fill_(-9)
        cache.fill_(-9)
        result = hot()
        expected, expected_cache = nk.reference(ext, seq, TOPK)
        n = expected.numel()
        if isinstance(result, torch.Tensor):
            assert stage == "zero_sync" and result.cpu().tolist() == [n, 0]
        else:
            assert result == n
        assert torch.equal(out[:n].cpu(), expected.cpu())
        assert torch.equal(cache[:n].cpu(), expected_cache.cpu())
        assert bool((out[n:] == -9).all()) and bool((cache[n:] == -9).all())


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_inference_mode_outputs(stage):
    """Finding 7: outputs made under torch.inference_mode were written by stages 2-5 but
    rejected by 0-1 (their ``.copy_`` refused inference tensors outside inference mode)."""
    ext, seq = lengths([1, 3, 0], [4, 3, 7])
    with torch.inference_mode():
        out = torch.full((6,), -1, dtype=torch.int32, device=DEVICE)
        cache = out.clone()
    assert nk.STAGES[stage](ext, seq, 2, out, cache) == 4
    assert out.tolist() == [4, 1, 2, 3, -1, -1]
    assert cache.tolist() == [2, 1, 2, 2, -1, -1]


def _import_with_interpret(value):
    code = textwrap.dedent("""
        import torch
        import nsa_kernels as nk
        ext = torch.tensor([1, 2], dtype=torch.int32)
        seq = torch.tensor([5, 2], dtype=torch.int32)
        out = torch.full((3,), -1, dtype=torch.int32)
        cache = out.clone()
        assert nk.INTERPRET is True
        assert nk.STAGES["triton_bsearch"](ext, seq, 4, out, cache) == 3
        assert out.tolist() == [5, 1, 2], out
    """)
    env = dict(os.environ, TRITON_INTERPRET=value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(nk.__file__)),
                                                    env.get("PYTHONPATH", "")] if p)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="concerns machines without a GPU")
@pytest.mark.parametrize("value", ["0", "", "false", "off", "no"])
def test_interpret_off_without_gpu_says_what_to_do(value):
    """Finding 7: TRITON_INTERPRET=0/empty/false gave '0 active drivers' or failing kernels."""
    proc = _import_with_interpret(value)
    assert proc.returncode != 0
    assert "TRITON_INTERPRET" in proc.stderr and "unset" in proc.stderr, proc.stderr[-2000:]
    assert "active drivers" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="concerns machines without a GPU")
@pytest.mark.parametrize("value", ["1", "true", "ON", "yes"])
def test_interpret_on_values_parsed_as_triton_does(value):
    proc = _import_with_interpret(value)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_interpret_parsing_matches_triton():
    from nsa_kernels._env import interpret_requested

    from triton._C.libtriton import getenv_bool
    for value in ["1", "0", "", "true", "True", "false", "on", "OFF", "yes", "y", "Y", "no", "2",
                  " 1", "t", "enabled"]:
        os.environ["NSA_TEST_BOOL"] = value
        try:
            assert interpret_requested(value) == getenv_bool("NSA_TEST_BOOL", False), value
        finally:
            del os.environ["NSA_TEST_BOOL"]
