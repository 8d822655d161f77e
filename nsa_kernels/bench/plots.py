"""The plots the notebooks draw, one function each, so every notebook draws them alike."""
import matplotlib.pyplot as plt

from .harness import ON_GPU

UNIT = "µs (GPU)" if ON_GPU else "µs (interpreter on CPU, not GPU speed)"


def _suffix(title):
    return title if ON_GPU else title + "\n[Triton interpreter timings]"


def stage_bars(records, workload_label, stages, metric="eager_us", title=None):
    """Grouped bars: one group per workload row, one bar per stage."""
    rows = sorted({(r["workload"], r["bs"], r["tokens"]) for r in records})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(len(stages), 1)
    for i, stage in enumerate(stages):
        values = []
        for row in rows:
            match = [r[metric] for r in records if (r["workload"], r["bs"], r["tokens"]) == row
                     and r["stage"] == stage and r.get(metric) is not None]
            values.append(match[0] if match else 0)
        ax.bar([j + i * width for j in range(len(rows))], values, width, label=stage)
    ax.set_xticks([j + width * (len(stages) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{w}\nbs={b}, N={n}" for w, b, n in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(f"{metric.replace('_us', '')} time, {UNIT}")
    ax.set_title(_suffix(title or f"{metric} per stage — {workload_label}"))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def scaling(records, stages, x_key="bs", metric="eager_us", title=None, marks=()):
    """Log-log time versus ``x_key`` per stage; ``marks`` are (x, label) vertical lines."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for stage in stages:
        points = sorted((r[x_key], r[metric]) for r in records
                        if r["stage"] == stage and r.get(metric) is not None)
        if points:
            ax.plot(*zip(*points), marker="o", label=stage)
    for x, label in marks:
        ax.axvline(x, color="grey", linestyle="--", alpha=0.6)
        ax.annotate(label, (x, ax.get_ylim()[1]), fontsize=8, rotation=90, va="top", ha="right")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (requests)" if x_key == "bs" else "tokens N")
    ax.set_ylabel(f"{metric.replace('_us', '')} time, {UNIT}")
    ax.set_title(_suffix(title or f"{metric} versus {x_key}"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def stacked_breakdown(rows, title):
    """``rows``: [(stage, {part: µs})], drawn as one stacked horizontal bar per stage."""
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    parts = list(rows[0][1]) if rows else []
    left = [0.0] * len(rows)
    for part in parts:
        values = [parts_of.get(part, 0.0) for _, parts_of in rows]
        ax.barh([s for s, _ in rows], values, left=left, label=part)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel(f"time per call, {UNIT}")
    ax.set_title(_suffix(title))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig
