"""The drop-ins' ``check=`` switch: off by default (SGLang's contract: lengths and pool indices
are trusted), on it checks this call's lengths and ``req_pool_indices`` on the host and raises
naming the argument and the request before anything is written."""
import nsa_kernels as nk  # noqa: F401  (first: interpreter switch)

import pytest
import torch
from test_modes_kernels import ModeRun, kv_mix

MODES = ["decode", "target_verify", "draft_extend"]


def mode_run(mode, seed=0):
    kv = kv_mix(5, 120, seed)
    extra = dict(qo=[min(k, 2) for k in kv]) if mode == "draft_extend" else {}
    return ModeRun(mode, kv, width=120, seed=seed, **extra)


def assert_nothing_written(run):
    for name, c in run.canaries.items():
        c.assert_unchanged(name)


@pytest.mark.parametrize("mode", MODES)
def test_check_true_refuses_a_pool_index_outside_req_to_token(mode):
    run = mode_run(mode)
    run.pool[3] = run.r2t.shape[0] + 4
    with pytest.raises(ValueError, match=r"req_pool_indices\[3\].*request 3"):
        run.call(check=True)
    assert_nothing_written(run)


@pytest.mark.parametrize("mode", MODES)
def test_check_true_refuses_a_negative_length(mode):
    run = mode_run(mode)
    run.seq[1] = -5
    with pytest.raises(ValueError, match=r"request 1"):
        run.call(check=True)
    assert_nothing_written(run)


@pytest.mark.parametrize("mode", MODES)
def test_check_true_on_good_input_equals_the_reference(mode):
    run = mode_run(mode, seed=3)
    run.call(check=True)
    run.check()


@pytest.mark.parametrize("mode", MODES)
def test_check_must_be_a_bool(mode):
    run = mode_run(mode)
    with pytest.raises(TypeError, match="check must be a bool, got int"):
        run.call(check=1)
    assert_nothing_written(run)


def test_default_trusts_pool_indices_as_sglang_does():
    """Without ``check`` a bad pool index is not looked at on the host (no sync): the kernel
    keeps every write inside the buffers, and the call returns."""
    run = mode_run("decode")
    run.pool[0] = run.r2t.shape[0] - 1  # a valid row, for the Triton interpreter's sake
    run.call()
    assert torch.equal(run.view("cache_seqlens")[:5].cpu(), run.seq.cpu().to(torch.int32))
