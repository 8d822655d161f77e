"""Extend: arguments the plan turns into a grid, and host mirrors that disagree with the device.

``splits`` becomes the grid's second dimension: 0 or a negative count launched nothing (and
returned a status nobody wrote), a float failed inside Triton. It is checked on every call,
with or without ``check=True``, before anything is written.
"""
import nsa_kernels as nk
from nsa_kernels.modes import extend as ex

import pytest
from test_extend import make_case

TOPK = 64
POISON = -77


def case():
    return make_case([3, 0, 5], [7, 4, 9], seed=1)


def poisoned_buffers():
    return ex.ExtendBuffers.allocate(4, 16, 32, device=nk.DEVICE, fill=POISON)


def assert_unwritten(bufs):
    for name, t in bufs.as_dict().items():
        assert bool((t == POISON).all()), f"{name} was written"


@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("entry", ["launch_extend", "ExtendFill"])
@pytest.mark.parametrize("splits, error, match", [
    (0, ValueError, "splits must be >= 1, got 0"),
    (-3, ValueError, "splits must be >= 1, got -3"),
    (ex.MAX_SPLITS + 1, ValueError, f"splits must be <= {ex.MAX_SPLITS}"),
    (1.5, TypeError, "splits must be an int, got float"),
    (True, TypeError, "splits must be an int, got bool"),
    ("2", TypeError, "splits must be an int, got str"),
])
def test_bad_splits_refused_before_any_write(entry, check, splits, error, match):
    bufs = poisoned_buffers()
    fn = getattr(ex, entry)
    with pytest.raises(error, match=match):
        fn(*case(), TOPK, bufs, check=check, splits=splits)
    assert_unwritten(bufs)


@pytest.mark.parametrize("splits", [1, 2, 7])
def test_good_splits_fill_everything(splits):
    bufs = poisoned_buffers()
    status = ex.launch_extend(*case(), TOPK, bufs, splits=splits, check=True)
    assert ex.decode_status(status)["n_tokens"] == 8
    assert bufs.seqlens_expanded[:8].tolist() == [5, 6, 7, 5, 6, 7, 8, 9]
