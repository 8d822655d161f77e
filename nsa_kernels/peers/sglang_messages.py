"""SGLang's per-step fallback messages, counted instead of printed.

Where SGLang's JIT fused metadata copy (``fused_metadata_copy_*_cuda``, built through
``tvm_ffi``) cannot be built, every MTP step logs the failed build and prints that it falls
back to individual copies (``dsa_backend``, ``dsa/dsa_metadata_manager``): a sweep of a few
thousand steps writes a hundred thousand identical lines, which buries a notebook's output
(and a report page) under them. ``counted()`` drops those lines while it is active and counts
them in the ``collections.Counter`` it yields (keyed by ``message_key``); ``summary`` is the
one line to show instead. Any other print or log record passes untouched.
"""
import builtins
import collections
import contextlib
import logging
import sys

#: The starts of the lines counted (SGLang 0.5.23's own wording).
FALLBACK_LINES = ("Warning: Fused metadata copy kernel",
                  "Warning: Multi-backend fused metadata copy kernel",
                  "Failed to compile JIT fused metadata copy")
#: The modules that print them, and the logger that logs the failed build.
PRINTING_MODULES = ("sglang.srt.layers.attention.dsa_backend",
                    "sglang.srt.layers.attention.dsa.dsa_metadata_manager")
LOGGER = "sglang.kernels.ops.attention.dsa.fused_metadata_copy"

__all__ = ["FALLBACK_LINES", "counted", "is_fallback_line", "message_key", "summary"]


def is_fallback_line(text):
    return isinstance(text, str) and text.startswith(FALLBACK_LINES)


def message_key(line):
    """A fallback line without its varying tail: the failed build up to its error (its
    parenthesised arguments contain commas), a warning up to its first comma."""
    return line.split(":" if line.startswith("Failed") else ",", 1)[0]


class _CountingFilter(logging.Filter):
    def __init__(self, messages):
        super().__init__()
        self.messages = messages

    def filter(self, record):
        text = record.getMessage()
        if is_fallback_line(text):
            self.messages[message_key(text)] += 1
            return False
        return True


@contextlib.contextmanager
def counted():
    """Count SGLang's fallback lines into the yielded ``Counter`` instead of printing them;
    restored on exit (modules not imported yet are left alone: they print as shipped)."""
    messages = collections.Counter()

    def quiet_print(*args, **kwargs):
        if len(args) == 1 and is_fallback_line(args[0]):
            messages[message_key(args[0])] += 1
            return
        builtins.print(*args, **kwargs)

    patched = [sys.modules[name] for name in PRINTING_MODULES if name in sys.modules]
    for module in patched:
        module.print = quiet_print
    logger = logging.getLogger(LOGGER)
    log_filter = _CountingFilter(messages)
    logger.addFilter(log_filter)
    try:
        yield messages
    finally:
        logger.removeFilter(log_filter)
        for module in patched:
            if getattr(module, "print", None) is quiet_print:
                del module.print


def summary(messages):
    """One line for the counted messages, or None when there were none."""
    if not messages:
        return None
    parts = "; ".join(f"{n} x {text!r}" for text, n in messages.most_common())
    return f"SGLang's fused metadata copy fallback, per step (lines left out): {parts}"
