"""Small display helpers for notebooks: numbers, tables as Markdown, the banner, sources.

``fmt_us`` and ``fmt_ratio`` are the one way numbers are written, in tables, headlines, plot
annotations and printed lines alike.
"""
import inspect
import re

from .floors import cheapest_empty
from .harness import ON_GPU

MISSING = "–"


def fmt_number(value):
    """Three significant figures, thousands separated: 0.123, 4.56, 78.9, 707, 12,345."""
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_us(value, unit=True):
    """Microseconds: ``fmt_us(707.2)`` is ``'707 µs'``; ``unit=False`` for a table column."""
    if value is None:
        return MISSING
    return fmt_number(value) + (" µs" if unit else "")


def fmt_ratio(value):
    """A ratio or speed-up: ``fmt_ratio(3.284)`` is ``'3.28×'``."""
    if value is None:
        return MISSING
    return fmt_number(value) + "×"


def fmt(value):
    """A table cell: numbers through ``fmt_number``, ``None`` as a dash, the rest as text."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return fmt_number(value)
    return str(value)


_CODE_SPAN = re.compile(r"(`[^`]*`)")
_MARKDOWN_SPECIAL = re.compile(r"([\\|\[\]*_<>])")


def escape_markdown(text):
    """``text`` shown literally in Markdown (``kernel[grid](...)`` is not a link), code spans
    kept."""
    parts = _CODE_SPAN.split(text)
    return "".join(part if i % 2 else _MARKDOWN_SPECIAL.sub(r"\\\1", part)
                   for i, part in enumerate(parts)).replace("\n", " ")


def markdown_table(columns, rows):
    lines = ["| " + " | ".join(escape_markdown(str(c)) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape_markdown(fmt(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def show_table(columns, rows):
    from IPython.display import Markdown, display
    display(Markdown(markdown_table(columns, rows)))


def banner(env):
    from IPython.display import Markdown, display
    stamp = (f"**Device:** {env['device']} · driver {env['driver']} · torch {env['torch']} · "
             f"triton {env['triton']} · Python {env['python']} · commit `{env['commit']}` · "
             f"profile `{env['profile']}`")
    if not ON_GPU:
        stamp += (
            "\n\n> **Triton interpreter on CPU.** Kernels run, and are checked, exactly as on "
            "a GPU, but every timing below is an interpreter timing: it says nothing about "
            "GPU speed. The published GPU report is under `reports/h100/`."
        )
    display(Markdown(stamp))


def show_source(*objects):
    from IPython.display import Markdown, display
    for obj in objects:
        fn = getattr(obj, "fn", obj)  # a @triton.jit kernel wraps the Python function
        display(Markdown(f"```python\n{inspect.getsource(fn)}```"))


#: Table headers of the record fields (``plots.METRIC_LABELS`` has the axis labels).
COLUMN_LABELS = {"eager_us": "eager (µs)", "throughput_us": "back-to-back (µs)",
                 "graph_us": "CUDA graph (µs)", "kernel_graph_us": "kernel alone, CUDA graph (µs)",
                 "host_us": "host, no sync (µs)",
                 "best_graph_us": "CUDA graph (µs; kernel alone where the stage syncs)",
                 # the modes' tables (``modes_report.ratio_rows``)
                 "ours_us": "ours (µs)", "sglang_us": "SGLang (µs)", "vllm_us": "vLLM (µs)",
                 "empty_us": "empty kernel (µs)", "bandwidth_us": "bandwidth floor (µs)",
                 "floor_us": "floor (µs)", "vs_sglang": "SGLang / ours", "vs_vllm": "vLLM / ours",
                 "vs_floor": "ours / floor"}


def column_label(metric):
    return COLUMN_LABELS.get(metric, metric)


def records_table(records, stages=None, metric_columns=("eager_us", "throughput_us", "graph_us")):
    """Rows of ``stage, workload, bs, tokens, metrics...`` for the chosen stages."""
    rows = []
    for r in records:
        if stages is None or r["stage"] in stages:
            rows.append([r["stage"], r["workload"], r["bs"], r["tokens"]]
                        + [r.get(m) for m in metric_columns])
    return ["stage", "workload", "bs", "tokens"] + [column_label(m) for m in metric_columns], rows


def compare_stages(records, new, old):
    """Table of ``new`` against ``old`` per workload row: times, speed-up, and ``new`` over the
    cheapest empty launch of the same row (``floors.cheapest_empty``)."""
    by = {(r["stage"], r["workload"], r["bs"]): r for r in records}
    rows = []
    for (stage, workload, bs), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if stage != new or (old, workload, bs) not in by:
            continue
        o = by[(old, workload, bs)]
        row = [f for f in records if (f["workload"], f["bs"]) == (workload, bs)]
        floor = cheapest_empty(row, "eager_us")
        rows.append([workload, bs, r["tokens"], o["eager_us"], r["eager_us"],
                     o["eager_us"] / r["eager_us"],
                     r["eager_us"] / floor["eager_us"] if floor else None])
    show_table(["workload", "bs", "N", f"{old} (µs)", f"{new} (µs)", "speed-up",
                f"{new} / cheapest empty launch"], rows)
    return rows
