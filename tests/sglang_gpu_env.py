"""Run SGLang's backend harness on this CPU as the GPU machine would import it.

The GPU machine (Python 3.12, no network) has torch, triton, numpy, matplotlib, cuda-python,
CuPy, pytest, hypothesis and jinja2, plus the wheels carried to it (msgspec, pydantic and its
parts, regex, typing_extensions); nothing else. This script hides every other installed
package, makes SGLang's ``is_cuda()`` true (torch reports one Hopper device), and then runs
SGLang's CUDA-path methods on CPU tensors (its fused Triton kernels under the interpreter),
comparing each with the references (the self-check of ``sglang_backend_check``, CPU sizes).
It proves, before a GPU run, that the stand-ins cover what
the GPU's import reaches and that the fused path's Python runs. Printed last: ``FUSED-PATH OK
<n>`` or the failure. Run in a subprocess (it patches torch.cuda for the whole process).
"""
import importlib.abc
import importlib.machinery
import sys

import nsa_kernels  # noqa: F401  (first: Triton's interpreter on this CPU)

import torch
import torch._dynamo  # noqa: F401  (torch probes optional packages at this import: before the hiding)

GPU_MACHINE = {
    "torch", "triton", "numpy", "matplotlib", "mpl_toolkits", "contourpy", "cycler", "fontTools",
    "kiwisolver", "packaging", "pyparsing", "dateutil", "six", "cuda", "cupy", "hypothesis",
    "pytest", "_pytest", "pluggy", "iniconfig", "attr", "attrs", "sortedcontainers", "jinja2",
    "markupsafe", "filelock", "fsspec", "networkx", "sympy", "mpmath", "setuptools",
    "pkg_resources", "functorch", "torchgen",
    "msgspec", "pydantic", "pydantic_core", "annotated_types", "typing_inspection", "regex",
    "typing_extensions", "nsa_kernels", "sglang"}


class HideOtherPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root in sys.stdlib_module_names or root in GPU_MACHINE or root.startswith("_"):
            return None
        if importlib.machinery.PathFinder.find_spec(root) is None:
            return None  # absent here too: the import system answers as on the GPU
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


class _Hopper:
    multi_processor_count, major, minor, name = 132, 9, 0, "NVIDIA H200 (simulated)"
    total_memory = 140 << 30


def pretend_cuda():
    torch.cuda.is_available = lambda: True
    torch.version.cuda = "12.8"
    torch.cuda.get_device_capability = lambda *a, **k: (9, 0)
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_properties = lambda *a, **k: _Hopper()
    torch.cuda.get_device_name = lambda *a, **k: _Hopper.name


_MASKS = None


def coerce_interpreter_masks():
    """SGLang's fused kernels use masks Triton's interpreter refuses (the compiler broadcasts
    them): this process adapts the interpreter once, for its whole life (the context is held
    open in a module global, so it is never closed)."""
    global _MASKS
    from nsa_kernels.testing.interpreter import scalar_masks
    _MASKS = scalar_masks()
    _MASKS.__enter__()


def main():
    coerce_interpreter_masks()
    sys.meta_path.insert(0, HideOtherPackages())
    pretend_cuda()
    from nsa_kernels.peers import sglang_backend_check
    loaded = sglang_backend_check.sb.load()
    from sglang.srt.utils import is_cuda
    assert is_cuda(), "SGLang must see CUDA here"
    print(f"imported {len(loaded.modules)} SGLang modules, {len(loaded.standins)} stand-ins")
    # the GPU command's own self-check, at CPU sizes, on CPU tensors
    report = sglang_backend_check.selfcheck(quick=True, seeds=1, device="cpu",
                                             width=512, timing=False)
    graph_modes = [k for k in report["fused_kernels"] if not k.startswith(("eager", "extend"))]
    unfused = [k for k in graph_modes if not report["fused_kernels"][k]]
    assert not unfused, f"graph replays without SGLang's fused kernels: {unfused}"
    assert not report["skipped"], report["skipped"]
    if report["equal"] == report["total"]:
        print(f"FUSED-PATH OK {report['total']}")


if __name__ == "__main__":
    main()
