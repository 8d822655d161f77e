"""The one way this package launches a kernel whose arguments are bound once.

``bind_launch(kernel, grid, args, kwargs)`` returns a zero-argument callable that launches
``kernel[grid](*args, **kwargs)`` on the current stream, as cheaply as this machine allows.
Every bound fill and every per-call entry point goes through here, so a faster launch path
lands everywhere at once. Its ``.path`` says how it launches, ``.fallback_reason`` why not
faster:

* ``"driver"`` (the default): the compiled kernel is launched with ``cuLaunchKernel`` and a
  parameter array packed once at bind time. Triton's ``kernel[grid](...)`` re-binds the
  arguments, recomputes their specialisation and cache key and asks the driver about every
  pointer on every call, 14-15 µs of host time on an H100 for an empty kernel; the
  driver call alone is about 6 µs. Launched on the current stream, it is captured by an outer
  CUDA-graph capture like any kernel.
* ``"graph"``: a one-kernel CUDA graph captured at bind time and replayed; inside an outer
  capture (where a replay cannot be captured) it launches through the driver path instead.
* ``"triton"``: ``kernel[grid](*args, **kwargs)``, the fallback: no GPU (the interpreter),
  no cuda-python, a kernel this packer does not understand (autotuned, scratch memory,
  clusters, tensor descriptors, a Triton whose compiled parameters differ), or a launch hook
  installed (profilers), since the driver path would bypass it.

The packing is checked against the compiled kernel itself: the PTX entry's parameter list
must match the packed values one for one (count and widths), else the fallback is taken and
the reason says what differed.

Measured on an H100 (`python -m nsa_kernels.bench.launch_cost`, draft_extend bs 32, host µs /
call + sync µs): empty kernel through ``kernel[grid]()`` 14.9 / 27.1, through the driver path
6.2 / 18.1, as a replayed graph 6.0 / 17.9; ``ZeroSyncFill`` on the driver path 6.7 / 18.5.

Per-call entry points (``launch_zero_sync``, the modes' ``launch_*``) keep a ``PlanCache``:
bound launchers keyed on the metadata of their arguments (see ``metadata_key``), so that a
repeated call with the same buffers costs a key, a dict lookup and one driver launch::

    PLANS = PlanCache()
    def launch_thing(a, b, n, out):
        PLANS.launcher(metadata_key(a, b, n, out), checked_plan, a, b, n, out)()

A launch hook installed after binding (a profiler) is not seen by launchers bound before it:
bind again to profile.
"""
import collections
import ctypes
import dataclasses
import os
import re
import threading
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch

from ._env import INTERPRET
from .validation.core import byte_range

PATHS = ("driver", "graph", "triton")
#: The path bound fills take unless told otherwise (``NSA_LAUNCH_PATH`` overrides it, to run a
#: whole suite on another path). Measured on an H100 (draft_extend bs 32, call + sync,
#: four interleaved groups, ZeroSyncFill driver / graph): 16.98 / 16.68, 18.47 / 18.11,
#: 19.9 / 19.9, 19.22 / 18.26 µs. The graph replay is 0-5% faster; the driver path stays the
#: default because an outer capture records it natively, and binding it captures nothing
#: (``torch.cuda.graph`` synchronizes the device and empties the allocator's cache per bind).
DEFAULT_PATH = os.environ.get("NSA_LAUNCH_PATH", "driver")
if DEFAULT_PATH not in PATHS:
    raise ValueError(f"NSA_LAUNCH_PATH must be one of {PATHS}, got {DEFAULT_PATH!r}")


#: Held around every launch under Triton's interpreter: it swaps module-level state of
#: ``triton.language`` while a kernel runs, so two interpreted launches from two threads break
#: each other (crashes, ``InterpreterError``, entries left unwritten). Compiled launches are
#: independent and take no lock (``None`` then). Reentrant: a launch may plan another.
INTERPRETER_LOCK = threading.RLock() if INTERPRET else None


class LaunchPlan(NamedTuple):
    """One launch, decided on the host from tensor metadata alone:
    ``kernel[grid](*args, **kwargs)``."""

    kernel: Callable
    grid: tuple
    args: tuple
    kwargs: dict

    def __call__(self):
        """Launch through Triton's normal path."""
        if INTERPRETER_LOCK is None:
            return self.kernel[self.grid](*self.args, **self.kwargs)
        with INTERPRETER_LOCK:
            return self.kernel[self.grid](*self.args, **self.kwargs)


class LaunchUnavailable(Exception):
    """Why a faster path cannot launch this kernel here (becomes ``fallback_reason``)."""


def bind_launch(kernel, grid, args=(), kwargs=None, path=None):
    """A zero-argument callable launching ``kernel[grid](*args, **kwargs)``; see module doc.

    ``path`` picks ``"driver"``, ``"graph"`` or ``"triton"`` (default ``DEFAULT_PATH``); a path
    that cannot launch this kernel here falls back (graph -> driver -> triton) with the reason
    kept in ``.fallback_reason``.
    """
    path = DEFAULT_PATH if path is None else path
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    plan = LaunchPlan(kernel, tuple(grid), tuple(args), dict(kwargs or {}))
    reason = None
    if path in ("driver", "graph"):
        try:
            driver = DriverLaunch(plan)
        except LaunchUnavailable as exc:
            reason = f"driver: {exc}"
        else:
            if path == "driver":
                return driver
            try:
                return GraphLaunch(driver)
            except LaunchUnavailable as exc:
                driver.fallback_reason = f"graph: {exc}"
                return driver
    return TritonLaunch(plan, reason)


def bind_plan(plan: LaunchPlan, path=None):
    return bind_launch(*plan, path=path)


class PlannedFill:
    """Checked and planned once against a graph runner's static buffers; each call is one
    bound launch. A subclass names its planner: ``planner = staticmethod(plan_<mode>)``, which
    takes the fill's arguments and ``check=`` and returns a ``LaunchPlan``."""

    planner = None

    def __init__(self, *args, check=False, **kwargs):
        self.plan = self.planner(*args, check=check, **kwargs)
        self.launch = bind_plan(self.plan)

    def __call__(self):
        self.launch()


class TritonLaunch:
    """``kernel[grid](*args, **kwargs)`` with the plan bound: the path that works everywhere."""
    path = "triton"

    def __init__(self, plan, fallback_reason=None):
        self.plan, self.fallback_reason = plan, fallback_reason
        self._launch = plan.kernel[plan.grid]
        self._args, self._kwargs = plan.args, plan.kwargs

    def __call__(self):
        if INTERPRETER_LOCK is None:
            self._launch(*self._args, **self._kwargs)
            return
        with INTERPRETER_LOCK:
            self._launch(*self._args, **self._kwargs)

    def set_arg(self, index, value):
        """Replace positional argument ``index`` (see ``DriverLaunch.set_arg``)."""
        args = list(self._args)
        args[index] = value
        self._args = tuple(args)


class DetachedTritonLaunch:
    """A Triton-path plan that holds none of the tensors it was built from (see ``PlanCache``).

    Each tensor of the plan's positional arguments is recorded as the build argument it is
    (or a tensor inside a tuple, list or dataclass argument), or a view inside one (shape,
    strides, offset from its start); tensors the planner made itself (a placeholder status)
    stay. ``rebind(build_args)`` returns a ``TritonLaunch`` on the tensors of ``build_args``:
    equal keys mean equal metadata, hence the same views. A plan whose tensors cannot be
    traced that way (a view of another dtype, a tensor among the keyword arguments) is
    rebuilt by ``build`` on every hit instead.
    """
    path = "triton"

    def __init__(self, plan, sources, fallback_reason, rebuild=None):
        self.plan, self.sources, self.fallback_reason = plan, sources, fallback_reason
        self._rebuild = rebuild

    @classmethod
    def detach(cls, launch, build, build_args, path):
        plan = launch.plan
        components = _tensor_components(tuple(build_args))
        args, sources = list(plan.args), []
        traceable = not any(isinstance(v, torch.Tensor) for v in plan.kwargs.values())
        for i, value in enumerate(args):
            if not traceable or not isinstance(value, torch.Tensor):
                continue
            source = _tensor_source(value, components)
            if source is None:  # the planner's own tensor, unless it aliases the caller's
                traceable = not any(_same_storage(value, t) for _, t in components)
                continue
            sources.append((i,) + source)
            args[i] = None
        if not traceable:
            return cls(None, (), launch.fallback_reason,
                       rebuild=lambda args: bind_plan(build(*args), path=path))
        return cls(plan._replace(args=tuple(args)), tuple(sources), launch.fallback_reason)

    def rebind(self, build_args):
        if self._rebuild is not None:
            return self._rebuild(build_args)
        args = list(self.plan.args)
        for i, path, view in self.sources:
            t = _follow(build_args, path)
            args[i] = t if view is None else t.as_strided(view[0], view[1],
                                                          t.storage_offset() + view[2])
        return TritonLaunch(self.plan._replace(args=tuple(args)), self.fallback_reason)


def _tensor_components(value, path=()):
    """``(path, tensor)`` for each tensor inside ``value``, through tuples (named or not),
    lists and dataclasses (a buffer set such as ``ExtendBuffers``); a path is the indices and
    field names that lead from ``value`` to the tensor (``_follow``)."""
    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if isinstance(value, (tuple, list)):
        return [c for i, v in enumerate(value) for c in _tensor_components(v, path + (i,))]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [c for f in dataclasses.fields(value)
                for c in _tensor_components(getattr(value, f.name), path + (f.name,))]
    return []


def _follow(value, path):
    for step in path:
        value = value[step] if isinstance(step, int) else getattr(value, step)
    return value


def _tensor_source(t, components):
    """``(where, None)`` when ``t`` is that component; ``(where, (shape, strides, offset))`` when
    it is a same-dtype view lying inside a component's bytes; else None."""
    for where, c in components:
        if t is c:
            return where, None
    span = byte_range(t)
    for where, c in components:
        if c.dtype != t.dtype or c.device != t.device:
            continue
        outer = byte_range(c)
        if span is not None and outer is not None and outer[0] <= span[0] \
                and span[1] <= outer[1] and _same_storage(t, c):
            return where, (tuple(t.shape), t.stride(), t.storage_offset() - c.storage_offset())
    return None


def _same_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() \
        and a.untyped_storage().nbytes() > 0


# ----------------------------------------------------------------------------- driver path

_CTYPES = {
    "i1": ctypes.c_int8,
    "i8": ctypes.c_int8,
    "i16": ctypes.c_int16,
    "i32": ctypes.c_int32,
    "i64": ctypes.c_int64,
    "u1": ctypes.c_uint8,
    "u8": ctypes.c_uint8,
    "u16": ctypes.c_uint16,
    "u32": ctypes.c_uint32,
    "u64": ctypes.c_uint64,
    "fp32": ctypes.c_float,
    "fp64": ctypes.c_double,
}
_PTX_WIDTH = {"8": 1, "16": 2, "32": 4, "64": 8}
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def _cuda_bindings():
    """NVIDIA's cuda-python driver module, or ``LaunchUnavailable`` saying how to get it."""
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python < 12.6 spelled it this way
        except ImportError:
            raise LaunchUnavailable(
                "cuda-python is not installed (pip install 'cuda-python==<torch's CUDA major>.*')"
            ) from None
    return driver


def _hook_installed(hook):
    return hook is not None and bool(getattr(hook, "calls", True))


def _launch_hooks():
    try:
        from triton import knobs
    except ImportError:
        return False
    runtime = knobs.runtime
    return _hook_installed(runtime.launch_enter_hook) or _hook_installed(runtime.launch_exit_hook)


def ptx_param_widths(ptx, name):
    """Byte widths of the parameters of PTX entry ``name`` (``None`` for an aggregate)."""
    match = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.S)
    if match is None:
        raise LaunchUnavailable(f"no PTX entry {name!r} in the compiled kernel")
    widths = []
    for param in match.group(1).split(","):
        kind = re.search(r"\.param\s+(?:\.align\s+\d+\s+)?\.[a-z]+?(\d+)\b(.*)", param.strip())
        widths.append(
            None if kind is None or "[" in kind.group(2) else _PTX_WIDTH.get(kind.group(1))
        )
    return widths


def _pack_value(name, ty, value):
    if ty.startswith("*"):
        address = value.data_ptr() if isinstance(value, torch.Tensor) else value
        if not isinstance(address, int):
            raise LaunchUnavailable(f"argument {name!r} ({ty}) is neither a tensor nor an address")
        return ctypes.c_uint64(address)
    if ty not in _CTYPES:
        raise LaunchUnavailable(
            f"argument {name!r} has type {ty!r}, which this packer does not handle"
        )
    return _CTYPES[ty](value)


class DriverLaunch:
    """The compiled kernel through ``cuLaunchKernel``, parameters packed once (module doc)."""
    path = "driver"

    def __init__(self, plan):
        self.plan, self.fallback_reason = plan, None
        if INTERPRET or not torch.cuda.is_available():
            raise LaunchUnavailable("no GPU: Triton's interpreter runs the kernels")
        driver = _cuda_bindings()
        if _launch_hooks():
            raise LaunchUnavailable(
                "a Triton launch hook is installed (a profiler?): keeping its path"
            )
        kernel, grid, args, kwargs = plan
        from triton.runtime.jit import JITFunction
        if not isinstance(kernel, JITFunction):
            raise LaunchUnavailable(f"{type(kernel).__name__} is not a plain @triton.jit kernel")
        if not 1 <= len(grid) <= 3 or not all(isinstance(g, int) for g in grid):
            raise LaunchUnavailable(f"grid {grid!r} is not 1 to 3 ints")
        try:
            compiled = kernel.warmup(*args, grid=grid, **kwargs)
            compiled._init_handles()
            meta = compiled.metadata
            signature = dict(compiled.src.signature)
            ptx = compiled.asm["ptx"]
            function = compiled.function
        except LaunchUnavailable:
            raise
        except Exception as exc:  # a Triton whose internals differ from 3.6 / 3.9's
            raise LaunchUnavailable(
                f"Triton internals differ: {type(exc).__name__}: {exc}"
            ) from None
        for field, expected in (("num_ctas", 1), ("launch_cooperative_grid", False),
                                ("launch_pdl", False), ("global_scratch_size", 0),
                                ("profile_scratch_size", 0), ("tensordesc_meta", None)):
            value = getattr(meta, field, expected)
            if value != expected and not (field == "tensordesc_meta" and not value):
                raise LaunchUnavailable(
                    f"compiled kernel has {field}={value!r}, the packer needs {expected!r}"
                )
        if getattr(meta, "cluster_dims", (1, 1, 1)) not in ((1, 1, 1), [1, 1, 1], (1,), None):
            raise LaunchUnavailable(f"compiled kernel uses clusters {meta.cluster_dims!r}")
        if meta.shared > 48 * 1024:
            raise LaunchUnavailable(
                f"{meta.shared} bytes of shared memory (Triton sets its mode per launch)"
            )
        bound = _bind_arguments(kernel, args, kwargs)
        values, slots = [], {}
        positional = {name: i for i, name in enumerate(kernel.arg_names[:len(args)])}
        for name, ty in signature.items():
            if ty == "constexpr":
                continue
            if not isinstance(ty, str):
                raise LaunchUnavailable(f"argument {name!r} has type {ty!r} (a tuple?)")
            if name in positional:
                slots[positional[name]] = len(values)
            values.append(_pack_value(name, ty, bound[name]))
        widths = ptx_param_widths(ptx, meta.name)
        # Triton appends its scratch pointers (global, profile) after the kernel's own arguments.
        extra = len(widths) - len(values)
        if not 0 <= extra <= 2 or any(w != ctypes.sizeof(v) for w, v in zip(widths, values)) \
                or any(w != 8 for w in widths[len(values):]):
            raise LaunchUnavailable(
                f"compiled parameters {widths} do not match the packed ones "
                f"{[ctypes.sizeof(v) for v in values]} + scratch pointers")
        values += [ctypes.c_uint64(0) for _ in range(extra)]
        self._values, self._slots = values, slots
        self._params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        self._params_address = ctypes.addressof(self._params)
        self._function = driver.CUfunction(function)
        self._cu_launch, self._cu_stream = driver.cuLaunchKernel, driver.CUstream
        self._raw_stream, self._stream = None, None
        self._success = driver.CUresult.CUDA_SUCCESS
        self._grid = tuple(grid) + (1,) * (3 - len(grid))
        self._block = 32 * meta.num_warps
        self._shared = meta.shared
        self._device = torch.cuda.current_device()
        self._empty_grid = 0 in self._grid
        self._args = args  # keeps the tensors, hence the packed addresses, alive
        self.compiled = compiled

    def __call__(self):
        if self._empty_grid:  # as Triton: a grid with no program launches nothing
            return
        gx, gy, gz = self._grid
        raw = torch._C._cuda_getCurrentRawStream(self._device)
        if (
            raw != self._raw_stream
        ):  # converting an int to a CUstream costs as much as a launch's tenth
            self._raw_stream, self._stream = raw, self._cu_stream(raw)
        err, = self._cu_launch(self._function, gx, gy, gz, self._block, 1, 1, self._shared,
                               self._stream, self._params_address, 0)
        if err != self._success:
            raise RuntimeError(f"cuLaunchKernel failed: {err!r}")

    def set_arg(self, index, value):
        """Set positional argument ``index`` for the next launches: point a pointer argument at
        tensor ``value``, or give an int argument (one Triton does not specialise on) a new value.

        The caller guarantees that a tensor matches what the kernel was compiled for: same
        dtype and the same 16-byte alignment (Triton specialises on it), and keeps it alive.
        An int must fit the width the argument was compiled with, else ``ValueError``.
        """
        slot = self._values[self._slots[index]]
        if isinstance(value, torch.Tensor):
            slot.value = value.data_ptr()
            return
        slot.value = value
        if slot.value != value:
            raise ValueError(f"argument {index} = {value} does not fit its compiled "
                             f"{ctypes.sizeof(slot) * 8}-bit type")

    def release_args(self):
        """Stop keeping the bound tensors alive (the caller guarantees their addresses)."""
        self._args = self.plan = None


def _bind_arguments(kernel, args, kwargs):
    import inspect
    call_kwargs = {k: v for k, v in kwargs.items() if k not in _LAUNCH_OPTIONS}
    bound = inspect.signature(kernel.fn).bind(*args, **call_kwargs)
    bound.apply_defaults()
    return bound.arguments


# ----------------------------------------------------------------------------- graph path

class GraphLaunch:
    """A one-kernel CUDA graph captured at bind time, replayed on the current stream.

    A replay cannot be captured into an outer graph, so under capture it launches through
    the driver path instead (``torch.cuda.is_current_stream_capturing()`` is checked per call).
    """
    path = "graph"

    def __init__(self, driver_launch):
        self.driver, self.fallback_reason = driver_launch, None
        if torch.cuda.is_current_stream_capturing():
            raise LaunchUnavailable("bound during an outer CUDA-graph capture")
        # No warm-up launch: the driver path has compiled and loaded the kernel already, and a
        # launch here would write the buffers at bind time.
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                driver_launch()
        except Exception as exc:
            raise LaunchUnavailable(f"capture failed: {type(exc).__name__}: {exc}") from None
        self._replay = self.graph.replay
        self._capturing = torch.cuda.is_current_stream_capturing

    def __call__(self):
        if self._capturing():
            self.driver()
        else:
            self._replay()

    def release_args(self):
        """Stop keeping the bound tensors alive (the graph holds their addresses)."""
        self.driver.release_args()


# ----------------------------------------------------------------------------- per-call cache

def tensor_key(t):
    """What of a tensor a launch plan and the static checks depend on, as a hashable tuple."""
    return (t.data_ptr(), t.shape, t.stride(), t.dtype, t.get_device())


def metadata_key(*values, _tensor=torch.Tensor):
    """Key of a call's arguments, flat (a flat tuple hashes several times faster than nested
    ones, and this runs on every call): each tensor as the five fields of ``tensor_key``,
    every other value as its type and value (``True`` and ``1`` must not share an entry: one
    of them fails the checks). Unambiguous: a tensor's fields start with an int, another
    value's with a type."""
    key = []
    for v in values:
        if isinstance(v, _tensor):
            key += (v.data_ptr(), v.shape, v.stride(), v.dtype, v.get_device())
        else:
            key += (v.__class__, v)
    return tuple(key)


_CACHES = weakref.WeakSet()


def clear_plan_caches():
    """Empty every ``PlanCache`` (after changing ``DEFAULT_PATH``, say)."""
    for cache in list(_CACHES):
        cache.clear()


class UnhashableKey(TypeError):
    """A ``PlanCache`` key could not be hashed (see ``PlanCache.launcher``)."""


class BoundedCache:
    """A small bounded cache, oldest entry evicted first: the one home of the per-call caches
    (``PlanCache``'s launchers, results of static checks keyed on metadata)."""

    def __init__(self, maxsize=32):
        self.maxsize = maxsize
        self.hits = self.misses = 0
        self._entries = collections.OrderedDict()
        _CACHES.add(self)

    def get_or_build(self, key, build, *build_args):
        """The value under ``key``, or ``build(*build_args)`` stored there (errors of ``build``
        propagate and store nothing). ``UnhashableKey`` for a key that cannot be hashed."""
        try:
            value = self._entries.get(key)
        except TypeError as exc:
            raise UnhashableKey(str(exc)) from None
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = build(*build_args)
        self._store(key, value)
        return value

    def _store(self, key, value):
        self._entries[key] = value
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def __len__(self):
        return len(self._entries)

    def clear(self):
        self._entries.clear()
        self.hits = self.misses = 0


class PlanCache(BoundedCache):
    """A ``BoundedCache`` of bound launchers for a per-call entry point.

    ``launcher(key, build)`` returns the launcher stored under ``key`` or calls ``build()``
    (which runs the checks and returns a ``LaunchPlan``), binds it and stores it. Keys are
    built with ``metadata_key`` from every argument that the plan or the static checks read:
    equal keys mean the checks would pass again and the plan would be the same, so a hit
    skips both. Data checks (which read tensor contents) are not covered and must run
    outside.

    A hit launches on the tensors of the call that hit, on every path, and the cache keeps no
    caller tensor alive. On the driver path the launcher holds addresses only (a hit means the
    caller passed buffers at those very addresses). On the Triton path, which launches tensor
    objects, an entry is a ``DetachedTritonLaunch``: the plan with each of its tensors replaced
    by where it came from among ``build_args`` (that argument, or a view of it), rebound to
    the hitting call's ``build_args``. A tensor object that the binding call passed may have
    been re-pointed since (``set_``, ``.data =``, a growing ``resize_``) while another tensor
    took its old address: launching the stored object would write into memory the caller no
    longer owns.
    """

    def __init__(self, maxsize=32, path=None):
        super().__init__(maxsize)
        self.path = path

    def launcher(self, key, build, *build_args):
        """The launcher under ``key``, or ``bind_plan(build(*build_args))`` stored there.
        Raises ``UnhashableKey`` for a key that cannot be hashed (an argument of the wrong kind:
        the caller plans uncached, so that its checks name the argument); errors of ``build``
        (the checks) propagate as they are."""
        try:
            entry = self._entries.get(key)
        except TypeError as exc:
            raise UnhashableKey(str(exc)) from None
        if entry is not None:
            self.hits += 1
            return entry.rebind(build_args) if entry.path == "triton" else entry
        self.misses += 1
        # A graph per buffer set would cost graph memory per entry for no measured gain.
        path = self.path or ("driver" if DEFAULT_PATH == "graph" else DEFAULT_PATH)
        launch = bind_plan(build(*build_args), path=path)
        if launch.path == "triton":
            entry = DetachedTritonLaunch.detach(launch, build, build_args, path)
        else:
            launch.release_args()
            entry = launch
        self._store(key, entry)
        return launch
