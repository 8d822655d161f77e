"""Tensors a kernel cannot touch are refused first, naming the argument.

A meta tensor has no memory (every one reports address 0), so without its own check it fails
later and by accident, as an overlap of two unrelated buffers. A CPU tensor handed to a kernel
compiled for the GPU fails inside Triton. Both are refused by the first check of each tensor
argument, before any other check and before anything is written.
"""
import nsa_kernels as nk
from nsa_kernels.modes import extend as ex

import pytest
import torch
from test_modes_kernels import ModeRun, kv_mix

ON_GPU = torch.cuda.is_available() and not nk.INTERPRET
MODES = ["decode", "target_verify", "draft_extend"]


def mode_run(mode):
    kv = kv_mix(4, 100, seed=1)
    extra = dict(qo=[min(k, 2) for k in kv]) if mode == "draft_extend" else {}
    return ModeRun(mode, kv, width=100, **extra)


def moved(run, name, device):
    t = run.view(name)
    return t.to(device) if t is not None else None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["seq_lens", "cache_seqlens", "dsa_cu_seqlens_k"])
def test_meta_tensor_refused_naming_it(mode, name):
    run = mode_run(mode)
    before = {k: c.view.clone() for k, c in run.canaries.items()}
    if name == "seq_lens":
        override = dict(seq_lens=run.seq.to("meta"))
    else:
        override = {name: moved(run, name, "meta")}
    with pytest.raises(ValueError, match=rf"{name} is a meta tensor"):
        run.call(**override)
    for k, c in run.canaries.items():
        assert torch.equal(c.view, before[k]), f"{k} was written"


@pytest.mark.parametrize("mode", MODES)
def test_all_meta_refused_naming_the_first(mode):
    run = mode_run(mode)
    v = run.view
    run.seq, run.pool, run.r2t = run.seq.to("meta"), run.pool.to("meta"), run.r2t.to("meta")
    if mode == "draft_extend":
        run.ext = run.ext.to("meta")
    for c in run.canaries.values():
        c.view = c.view.to("meta")
        if hasattr(c, "view2d"):
            c.view2d = c.view2d.to("meta")
    del v
    with pytest.raises(ValueError, match="seq_lens is a meta tensor"):
        run.call()


def test_extend_meta_refused_naming_it():
    kv = torch.tensor([5, 3], dtype=torch.int32, device=nk.DEVICE)
    qo = torch.tensor([2, 3], dtype=torch.int32, device=nk.DEVICE)
    pool = torch.tensor([0, 1], dtype=torch.int32, device=nk.DEVICE)
    r2t = torch.zeros(2, 8, dtype=torch.int32, device=nk.DEVICE)
    with pytest.raises(ValueError, match="req_to_token is a meta tensor"):
        ex.extend_metadata(kv, qo, pool, r2t.to("meta"), 64)
    bufs = ex.ExtendBuffers.allocate(2, 8, 8, device="meta")
    with pytest.raises(ValueError, match="seqlens_expanded is a meta tensor"):
        ex.launch_extend(kv, qo, pool, r2t, 64, bufs)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="the kernels take CPU tensors under the interpreter")
@pytest.mark.parametrize("mode", MODES)
def test_cpu_tensors_refused_on_a_gpu(mode):
    run = mode_run(mode)
    with pytest.raises(ValueError, match="seq_lens is on cpu"):
        run.call(seq_lens=run.seq.cpu())
