"""The suite's helpers under their earlier name, for test modules written against it.

New tests import ``nsa_kernels.testing`` (canary buffers, exact compares) and
``nsa_kernels.testing.strategies`` (hypothesis); this module only re-exports them.
"""
from nsa_kernels.testing import (  # noqa: F401
    DEVICE,
    MARGIN,
    POISON,
    Canary,
    assert_equal,
    assert_poisoned,
    check_fill,
    lengths,
    reference_n,
)
from nsa_kernels.testing.strategies import (  # noqa: F401
    FAST_STAGE_NAMES,
    LINEAR_SCAN_STAGES,
    STAGE_NAMES,
    cheap_sizes,
    describe,
    examples,
    fill_inputs,
    long_run,
)
