"""Stage 4: every config the autotuner may pick gives the reference result.

Under the interpreter the autotuner cannot benchmark, so the stage runs ``DEFAULT_CONFIG``;
``launch_with_config`` lets every config of ``SEARCH_SPACE`` be checked directly (the
interpreter ignores ``num_warps``, so there the configs differ by ``BLOCK_SIZE``; on a GPU
each config is a separate compiled kernel).
"""
import nsa_kernels as nk
from nsa_kernels.stages import stage4_triton_autotuned as s4
from nsa_kernels.testing import DEVICE, Canary, assert_equal, check_fill, lengths

import pytest
import torch


def config_key(config):
    """What makes a triton.Config: its meta-parameters and launch options."""
    return (tuple(sorted(config.kwargs.items())), config.num_warps, config.num_stages,
            getattr(config, "num_ctas", 1), getattr(config, "maxnreg", None))


def config_id(config):
    return f"block{config.kwargs['BLOCK_SIZE']}-warps{config.num_warps}"


def _batch(bs, qo_max, seed, topk_spread=4096):
    g = torch.Generator().manual_seed(seed)
    ext = torch.randint(0, qo_max + 1, (bs,), generator=g)
    seq = ext + torch.randint(0, topk_spread, (bs,), generator=g)
    return ext.to(DEVICE, torch.int32), seq.to(DEVICE, torch.int32)


def _large():
    # ~2.7k draft-extend tokens over 600 requests (some of zero length), then one prefill-sized
    # request of 3000: N ~ 5.7k, several blocks of even the largest config.
    ext, seq = _batch(600, 8, seed=4)
    big_ext, big_seq = lengths([3000], [3100])
    return torch.cat([ext, big_ext]), torch.cat([seq, big_seq])


# N < every block; N = 1003 (not a multiple of any block); N large.
SHAPES = {
    "n_5": lambda: lengths([2, 0, 3], [2, 7, 2050]),
    "n_1003": lambda: lengths([500, 0, 500, 3], [500, 9, 3000, 2048]),
    "n_large": _large,
}
TOPK = 2048


def test_search_space_shape():
    blocks = {c.kwargs["BLOCK_SIZE"] for c in s4.SEARCH_SPACE}
    assert blocks and all(b & (b - 1) == 0 for b in blocks), blocks
    keys = [config_key(c) for c in s4.SEARCH_SPACE]
    assert len(keys) == len(set(keys)), "duplicate configs in SEARCH_SPACE"
    for c in s4.SEARCH_SPACE:
        # at least one element per thread: BLOCK_SIZE >= 32 * num_warps
        assert c.kwargs["BLOCK_SIZE"] >= 32 * c.num_warps, config_id(c)


def test_default_config_is_in_search_space():
    assert config_key(s4.DEFAULT_CONFIG) in {config_key(c) for c in s4.SEARCH_SPACE}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("config", s4.SEARCH_SPACE, ids=config_id)
def test_every_config_matches_reference(config, shape):
    ext, seq = SHAPES[shape]()
    expected, expected_cache = nk.reference(ext, seq, TOPK)
    n = expected.numel()
    if shape == "n_5":
        assert n < min(c.kwargs["BLOCK_SIZE"] for c in s4.SEARCH_SPACE)
    elif shape == "n_1003":
        assert all(n % c.kwargs["BLOCK_SIZE"] for c in s4.SEARCH_SPACE)
    else:
        assert n > 4 * max(c.kwargs["BLOCK_SIZE"] for c in s4.SEARCH_SPACE)
    slack = 300  # more than any block's worth of tail would leave exposed
    out, cache = Canary(n + slack), Canary(n + slack)
    ends = torch.cumsum(ext, 0)
    s4.launch_with_config(config, ends, seq, TOPK, out.view, cache.view, n)
    assert_equal(out.view[:n], expected, f"{config_id(config)} seqlens_expanded")
    assert_equal(cache.view[:n], expected_cache, f"{config_id(config)} nsa_cache_seqlens")
    out.assert_poisoned_from(n, "out_seqlens_expanded")
    cache.assert_poisoned_from(n, "out_nsa_cache_seqlens")
    out.assert_margins("out_seqlens_expanded")
    cache.assert_margins("out_nsa_cache_seqlens")


@pytest.mark.parametrize("config", s4.SEARCH_SPACE, ids=config_id)
def test_every_config_with_capacity_equal_n(config):
    # No slack: a block's masked tail lies past the view, in the canary margin, and must not
    # be written there.
    ext, seq = lengths([7, 0, 130], [9, 4, 3000])
    expected, expected_cache = nk.reference(ext, seq, TOPK)
    n = expected.numel()
    out, cache = Canary(n), Canary(n)
    s4.launch_with_config(config, torch.cumsum(ext, 0), seq, TOPK, out.view, cache.view, n)
    assert_equal(out.view, expected)
    assert_equal(cache.view, expected_cache)
    out.assert_margins()
    cache.assert_margins()


@pytest.mark.parametrize("n_tokens", [1, 200, 1025, 5000])
def test_stage_runs_and_matches_reference(n_tokens):
    # Under the interpreter this runs DEFAULT_CONFIG (the autotuner cannot benchmark without a
    # GPU); on a GPU it autotunes once per power-of-two bucket of N, then reuses the choice.
    ext = torch.full((4,), n_tokens // 4, dtype=torch.int32)
    ext[0] += n_tokens - int(ext.sum())
    seq = ext + torch.tensor([0, 5, 2048, 100])
    check_fill(nk.STAGES["triton_autotuned"], ext.to(DEVICE), seq.to(DEVICE, torch.int32), TOPK,
               slack=17)


def test_size_buckets():
    assert [s4.size_bucket(n) for n in (0, 1, 2, 3, 1024, 1025)] == [1, 1, 2, 4, 1024, 2048]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or nk.INTERPRET,
                    reason="the autotuner benchmarks configs on a GPU only")
def test_autotuner_choices_come_from_search_space():
    space = {config_key(c) for c in s4.SEARCH_SPACE}
    for n_tokens in (100, 3000, 70000):
        ext = torch.full((8,), n_tokens // 8, dtype=torch.int32, device="cuda")
        check_fill(nk.STAGES["triton_autotuned"], ext, ext + 10, TOPK, slack=5)
        chosen = s4.CHOSEN.get(s4.size_bucket(int(ext.sum())))
        assert chosen is not None and config_key(chosen) in space
        # second call in the bucket reuses the choice and is still right
        check_fill(nk.STAGES["triton_autotuned"], ext, ext + 3, TOPK, slack=5)


@pytest.mark.skipif(not nk.INTERPRET, reason="checks the interpreter fallback")
def test_interpreter_runs_default_config(monkeypatch):
    used = []
    original = s4.launch_with_config

    def spy(config, *args):
        used.append(config_key(config))
        return original(config, *args)

    monkeypatch.setattr(s4, "launch_with_config", spy)
    ext, seq = lengths([3, 1], [3, 9])
    check_fill(nk.STAGES["triton_autotuned"], ext, seq, TOPK)
    assert used == [config_key(s4.DEFAULT_CONFIG)]
