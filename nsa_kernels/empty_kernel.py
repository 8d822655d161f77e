"""The floor: an empty Triton kernel. Every stage is measured against its launch."""
import triton


@triton.jit
def empty_kernel():
    pass


def launch_empty():
    empty_kernel[(1,)]()
