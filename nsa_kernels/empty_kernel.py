"""The floor: an empty Triton kernel. Every stage is measured against its launch."""
import triton

from .launcher import bind_launch


@triton.jit
def empty_kernel():
    pass


def launch_empty():
    """Triton's normal path: ``kernel[grid]()``, with its per-call dispatch."""
    empty_kernel[(1,)]()


def bound_empty(path=None):
    """The same empty launch bound once through ``launcher.bind_launch`` (``path`` as there)."""
    return bind_launch(empty_kernel, (1,), path=path)
