"""Where one call's time goes, on the GPU: Python and dispatch, launch, syncs, GPU execution.

``torch.profiler`` gives, per call, the host time inside launch APIs, the host time blocked in
synchronising calls (``.tolist()``, ``.item()``, ``cudaStreamSynchronize``) and the device time
of kernels and copies. The eager latency measured without the profiler is split as:
GPU execution the host waited for (``min(gpu, blocked)``), the rest of the blocked time (sync
round trip), launch API time, and what remains (Python, argument handling, dispatch). The
profiler adds its own overhead to the API times, so the split is an attribution, not a
measurement of each part in isolation; the total is the measured eager latency.
"""
import warnings

import torch

from .harness import ON_GPU

_LAUNCH = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
_BLOCKING = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaMemcpyAsync",
             "cudaEventSynchronize")


def breakdown(fn, eager_us, calls=30):
    """``{part: µs}`` summing to ``eager_us``, or ``None`` without a GPU."""
    if not ON_GPU:
        return None
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with warnings.catch_warnings():
        # One profiling cycle is all we take, so torch's note that it clears events between
        # cycles says nothing here; every other warning still shows.
        warnings.filterwarnings("ignore", message=".*Profiler clears events", category=UserWarning)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
                torch.cuda.synchronize()
        events = prof.events()
    launch = blocked = gpu = 0.0
    for event in events:
        name = event.name
        if event.device_type == torch.autograd.DeviceType.CUDA:
            gpu += event.device_time
        elif name.startswith(_LAUNCH):
            launch += event.cpu_time
        elif name.startswith(_BLOCKING):
            blocked += event.cpu_time
    launch, blocked, gpu = launch / calls, blocked / calls, gpu / calls
    waited_gpu = min(gpu, blocked)
    python = max(eager_us - launch - blocked, 0.0)
    return {"Python + dispatch": python, "launch API": launch,
            "sync round trip": blocked - waited_gpu, "GPU execution": waited_gpu}
