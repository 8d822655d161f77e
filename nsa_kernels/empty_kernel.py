"""The floor: an empty Triton kernel. Every stage is measured against its launch."""
import triton

from .bound_launch import BoundLaunch


@triton.jit
def empty_kernel():
    pass


def launch_empty():
    empty_kernel[(1,)]()


def bound_empty():
    """The same empty launch through ``BoundLaunch``: the floor without Triton's dispatch."""
    return BoundLaunch(empty_kernel, (1,))
