"""Page sizes that are not powers of two (48, 96, ...), as SGLang's kernels accept them.

A page-table tile covers ``BLOCK_N`` columns, a power of two; a page whose size does not divide
it can straddle two tiles, and belongs to the one holding its first column. Every mode, with
and without ``page_table_1``, at widths around the tile and page boundaries, small batches
(one-request tiles, split rows) and larger ones, equals the reference bit for bit, and writes
nothing past the live prefix or outside the buffers.
"""
import nsa_kernels as nk  # noqa: F401  (first: interpreter switch)

import pytest
from test_modes_kernels import ModeRun, kv_mix

MODES = ["decode", "target_verify", "draft_extend"]


def run_mode(mode, page_size, width, bs, has_pt1, seed=0):
    kv = kv_mix(bs, width, seed)
    extra = dict(qo=[min(k, 3) for k in kv]) if mode == "draft_extend" else {}
    if mode == "target_verify":
        extra = dict(next_n=3)
    run = ModeRun(mode, kv, width=width, page_size=page_size, has_pt1=has_pt1, seed=seed,
                  **extra)
    run.call()
    run.check()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("page_size", [48, 96])
@pytest.mark.parametrize("width, bs", [(100, 3), (1100, 2), (1100, 40), (2500, 9)])
@pytest.mark.parametrize("has_pt1", [True, False])
def test_non_power_of_two_page_sizes_equal_the_reference(mode, page_size, width, bs, has_pt1):
    run_mode(mode, page_size, width, bs, has_pt1, seed=width + bs)


@pytest.mark.parametrize("page_size", [3, 100, 1000, 1024])
def test_other_page_sizes(page_size):
    run_mode("decode", page_size, 2100, 5, True)
    run_mode("draft_extend", page_size, 2100, 5, False)


@pytest.mark.parametrize("page_size, error", [(0, ValueError), (1025, ValueError),
                                              (2.0, TypeError)])
def test_page_sizes_outside_the_range_refused(page_size, error):
    run = ModeRun("decode", kv_mix(3, 100, 0), width=100, page_size=64)
    with pytest.raises(error, match="physical_page_size"):
        run.call(physical_page_size=page_size)
