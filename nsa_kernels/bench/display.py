"""Small display helpers for notebooks: tables as Markdown, the environment banner, sources."""
import inspect

from .harness import ON_GPU


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(columns, rows):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
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
        stamp += ("\n\n> **Triton interpreter on CPU.** Kernels run, and are checked, exactly as on "
                  "a GPU, but every timing below is an interpreter timing: it says nothing about "
                  "GPU speed. The published GPU report is under `reports/h100/`.")
    display(Markdown(stamp))


def show_source(*objects):
    from IPython.display import Markdown, display
    for obj in objects:
        fn = getattr(obj, "fn", obj)  # a @triton.jit kernel wraps the Python function
        display(Markdown(f"```python\n{inspect.getsource(fn)}```"))


def records_table(records, stages=None, metric_columns=("eager_us", "throughput_us", "graph_us")):
    """Rows of ``stage, workload, bs, tokens, metrics...`` for the chosen stages."""
    rows = []
    for r in records:
        if stages is None or r["stage"] in stages:
            rows.append([r["stage"], r["workload"], r["bs"], r["tokens"]]
                        + [r.get(m) for m in metric_columns])
    return ["stage", "workload", "bs", "tokens"] + [m.replace("_us", " (µs)") for m in metric_columns], rows


def compare_stages(records, new, old):
    """Table of ``new`` against ``old`` per workload row: times, speed-up, ``new`` over the floor."""
    by = {(r["stage"], r["workload"], r["bs"]): r for r in records}
    rows = []
    for (stage, workload, bs), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if stage != new or (old, workload, bs) not in by:
            continue
        o, floor = by[(old, workload, bs)], by[("empty_kernel", workload, bs)]
        rows.append([workload, bs, r["tokens"], o["eager_us"], r["eager_us"],
                     o["eager_us"] / r["eager_us"], r["eager_us"] / floor["eager_us"]])
    show_table(["workload", "bs", "N", f"{old} (µs)", f"{new} (µs)", "speed-up", f"{new} / floor"], rows)
    return rows
