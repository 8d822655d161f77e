"""The runner's kernel manager: shutting a kernel down sends it no SIGINT.

jupyter_client interrupts a kernel before its shutdown request; ipykernel then logs
"KeyboardInterrupt caught in kernel" at ERROR after notebooks that succeeded, whenever the
signal lands while it handles a message (timing-dependent, so a run cannot show it reliably).
"""
import asyncio

from jupyter_client.manager import AsyncKernelManager

from nsa_report.run import kernel_manager_class


def _interrupts(monkeypatch, shutting_down):
    sent = []

    async def record(self):
        sent.append(self.shutting_down)

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", record)
    manager = kernel_manager_class()()
    manager.shutting_down = shutting_down
    asyncio.run(manager._async_interrupt_kernel())
    return sent


def test_shutdown_sends_no_interrupt(monkeypatch):
    assert _interrupts(monkeypatch, shutting_down=True) == []


def test_an_interrupt_outside_shutdown_still_reaches_the_kernel(monkeypatch):
    assert _interrupts(monkeypatch, shutting_down=False) == [False]


def test_the_shutdown_path_calls_the_overridden_interrupt():
    """``_async_shutdown_kernel`` interrupts through ``self._async_interrupt_kernel`` after
    setting ``shutting_down``: the override above is what it calls."""
    import inspect

    source = inspect.getsource(AsyncKernelManager._async_shutdown_kernel)
    assert source.index("self.shutting_down = True") < source.index(
        "await self._async_interrupt_kernel()")
