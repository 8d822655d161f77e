"""A cached launcher: launch a compiled Triton kernel without Triton's per-call dispatch.

``kernel[grid](...)`` re-binds the arguments, recomputes their specialisation (dtype, 16-byte
alignment, value-is-1 checks) and the cache key on every call: tens of microseconds of Python
on a slow host, for a kernel that runs for one or two. When the arguments are fixed tensors
whose *contents* change (a CUDA-graph runner's static buffers, SGLang's metadata buffers),
all of that can be done once, and so can turning each tensor into its device address (which
Triton's launcher otherwise does per call, with a driver query per pointer). ``BoundLaunch`` compiles through the normal path on its first
call, keeps the compiled kernel and the argument tuple, and afterwards calls the compiled
launcher directly with the current stream.

It falls back to the normal path where that is impossible: under the interpreter, with a
launch hook installed (profilers), or if this Triton's internals differ from what it expects.
"""
import inspect

import torch

from ._env import INTERPRET

try:
    from triton import knobs as _knobs
except ImportError:  # older Triton: no knobs module, so no direct path
    _knobs = None

_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


class BoundLaunch:
    def __init__(self, kernel, grid, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.kernel, self.grid, self.args, self.kwargs = kernel, tuple(grid), args, kwargs
        self.direct = None
        if INTERPRET or _knobs is None or not torch.cuda.is_available():
            return
        try:
            params = inspect.signature(kernel.fn).parameters
            call_kwargs = {k: v for k, v in kwargs.items() if k not in _LAUNCH_OPTIONS}
            bound = inspect.signature(kernel.fn).bind(*args, **call_kwargs)
            bound.apply_defaults()
            compiled = kernel.warmup(*args, grid=self.grid, **kwargs)
            # Tensors become their device addresses: Triton's launcher would otherwise call
            # data_ptr() and ask the driver about every pointer on every launch. The tensors
            # stay referenced (self.args), so the addresses stay valid.
            values = tuple(v.data_ptr() if isinstance(v, torch.Tensor) else v
                           for v in (bound.arguments[name] for name in params))
            compiled.run  # noqa: B018  (loads the module, as the first launch would)
            device = torch.cuda.current_device()
            self.direct = (compiled, values, device)
        except Exception:  # a Triton whose internals differ: keep the normal path
            self.direct = None

    def __call__(self):
        direct = self.direct
        hooks = _knobs.runtime if direct is not None else None
        if direct is None or hooks.launch_enter_hook is not None or hooks.launch_exit_hook is not None:
            self.kernel[self.grid](*self.args, **self.kwargs)
            return
        compiled, values, device = direct
        grid = self.grid
        compiled.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                     torch._C._cuda_getCurrentRawStream(device), compiled.function,
                     compiled.packed_metadata, None, None, None, *values)

    @property
    def is_direct(self):
        return self.direct is not None

