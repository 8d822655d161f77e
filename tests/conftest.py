"""Test configuration: hypothesis profiles, import order, shared fixtures.

Hypothesis profiles
-------------------
* ``ci`` (default): few examples per property, no deadline, derandomized (the same examples
  on every run, so CI is reproducible and fits its time budget), no example database.
* ``long``: thousands of examples, random, with the example database: run it by hand
  (``pytest --hypothesis-profile long``), ideally on a GPU where the kernels are fast.

Hypothesis' pytest plugin loads the profile named by ``--hypothesis-profile`` in its
``pytest_configure``. This file is imported before that hook runs (it is an initial conftest
of ``testpaths``), so loading ``ci`` here at import time makes it the default and the option
still wins. For the case where this conftest is imported late (e.g. another rootdir), the
``pytest_configure`` below loads the requested profile again; hypothesis' own hook does the
same, so the end state is the requested profile either way.
"""
# nsa_kernels must be imported before anything imports triton: on a CPU-only machine it sets
# TRITON_INTERPRET=1, and Triton's own library functions (tl.sum, tl.minimum, ...) are
# decorated when triton is first imported. Imported after triton, every kernel launch fails
# in the interpreter (see test_stages.py::test_import_order_after_triton).
import nsa_kernels as nk  # first on purpose
from nsa_kernels import testing
from nsa_kernels.bench.harness import ON_GPU
from nsa_kernels.testing.interpreter import scalar_masks

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,  # interpreter launches take milliseconds and vary with machine load
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
    print_blob=True,
)
settings.register_profile("ci", max_examples=30, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=3000, **_COMMON)
settings.load_profile("ci")


def pytest_configure(config):
    profile = config.getoption("--hypothesis-profile", default=None)
    if profile:
        settings.load_profile(profile)


#: Why a ``gpu``-marked test is skipped where kernels run in Triton's interpreter.
NO_GPU_REASON = "needs a CUDA device (Triton's interpreter runs here)"


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests skip with a reason without a CUDA device, so ``pytest -m gpu``
    collects everywhere and runs on a GPU only."""
    if ON_GPU:
        return
    skip = pytest.mark.skip(reason=NO_GPU_REASON)
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def pytest_report_header(config):
    return (f"nsa_kernels: DEVICE={nk.DEVICE} INTERPRET={nk.INTERPRET} "
            f"torch={torch.__version__} cuda={torch.cuda.is_available()}; hypothesis profile "
            f"{settings.get_current_profile_name()!r} (max_examples="
            f"{settings.default.max_examples})")


# --------------------------------------------------------------------------- fixtures
# Session-scoped so that hypothesis tests may use them (function-scoped fixtures are not reset
# between generated examples, and hypothesis refuses them).

@pytest.fixture(scope="session")
def device():
    """Where test tensors are allocated: the package's device (CPU under the interpreter)."""
    return nk.DEVICE


@pytest.fixture(scope="session")
def poison():
    return testing.POISON


@pytest.fixture(scope="session")
def canary():
    """Factory: ``canary(n)`` or ``canary((rows, cols))`` -> a :class:`nsa_kernels.testing.Canary`.

    ``.view`` is the poisoned output buffer to hand to a kernel; ``.assert_margins()`` checks
    that nothing was written around it, ``.assert_poisoned_from(k)`` that nothing was written
    from entry (or row) k on, ``.assert_unchanged()`` that nothing was written at all.
    """
    return testing.Canary


@pytest.fixture(scope="session")
def check_fill():
    """``check_fill(fill, ext, seq, topk, capacity=None, slack=0) -> N``: run a fill on canary
    buffers and check N, the first N entries against the reference, the untouched tail and
    the margins."""
    return testing.check_fill


@pytest.fixture(scope="session")
def make_lengths():
    """``make_lengths(ext_list, seq_list, dtype=torch.int32, seq_dtype=None)`` -> tensors."""
    return testing.lengths


@pytest.fixture
def interpreter_scalar_masks():
    """Triton's interpreter accepts the peers' scalar masks for the whole test (a no-op on a
    GPU): see ``nsa_kernels.testing.interpreter.scalar_masks``."""
    with scalar_masks():
        yield
