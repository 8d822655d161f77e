"""The one way this package launches a kernel whose arguments are bound once.

``bind_launch(kernel, grid, args, kwargs)`` returns a zero-argument callable that launches
``kernel[grid](*args, **kwargs)`` on the current stream, as cheaply as this machine allows.
Every bound fill (``ZeroSyncFill``, ``FullPipelineFill``, the modes' ``*Fill`` classes) and
every per-call entry point goes through here, so a faster launch path lands everywhere at once.

Today it delegates to ``bound_launch.BoundLaunch`` (Triton's compiled launcher, called
directly). The issue "Eager at the physical launch floor" replaces the body with a
``cuLaunchKernel`` path and keeps this signature.
"""
from typing import Any, Callable, NamedTuple

from .bound_launch import BoundLaunch


class LaunchPlan(NamedTuple):
    """One launch, decided on the host from tensor metadata alone: ``kernel[grid](*args, **kwargs)``."""
    kernel: Callable
    grid: tuple
    args: tuple
    kwargs: dict

    def __call__(self):
        """Launch through Triton's normal path (the per-call entry points)."""
        return self.kernel[self.grid](*self.args, **self.kwargs)


def bind_launch(kernel, grid, args=(), kwargs=None):
    """A zero-argument callable launching ``kernel[grid](*args, **kwargs)``; see module doc."""
    return BoundLaunch(kernel, grid, args, kwargs or {})


def bind_plan(plan: LaunchPlan):
    return bind_launch(*plan)
