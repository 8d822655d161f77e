"""The plots the notebooks draw, one function each, so every notebook draws them alike.

Axes say what was measured in words (``METRIC_LABELS``), log axes carry plain numbers
(1, 2, 5, 10, 20, ...), and figures are sized for a full-width page.
"""
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from .display import fmt_us
from .harness import ON_GPU

TIMING = "GPU" if ON_GPU else "Triton interpreter on CPU, not GPU speed"

#: What each record field measures, as an axis label says it.
METRIC_LABELS = {
    "eager_us": "eager latency per call (µs)",
    "host_us": "host time per call, no synchronize (µs)",
    "throughput_us": "back-to-back time per call (µs)",
    "graph_us": "CUDA-graph replay per call (µs)",
    "kernel_graph_us": "kernel alone, CUDA-graph replay per call (µs)",
    "best_graph_us": "CUDA-graph replay per call (µs; kernel alone where the stage syncs)",
}
X_LABELS = {"bs": "batch size (requests)", "tokens": "tokens N"}
WORKLOAD_LABELS = {"draft_extend": "draft extend", "prefill": "prefill"}

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "legend.fontsize": 10,
                     "xtick.labelsize": 10, "ytick.labelsize": 10})


#: One colour per stage in every plot, so a stage is recognised from plot to plot. New names
#: go at the end, so that the others keep their colours.
_ORDER = ("empty_kernel", "empty_driver", "python_baseline", "triton_fused", "triton_inplace",
          "triton_bsearch", "triton_autotuned", "zero_sync", "full_pipeline",
          "seed_python_baseline", "seed_triton_fused", "seed_triton_inplace", "sglang_loop",
          "validation", "sync_only", "torch_op", "empty_graph")
_PALETTE = plt.get_cmap("tab20").colors


def stage_color(stage):
    """A fixed colour for ``stage``: known stages in journey order, others by name."""
    index = _ORDER.index(stage) if stage in _ORDER else len(_ORDER) + sum(map(ord, stage))
    return _PALETTE[(2 * index + index // 10) % len(_PALETTE)]


def metric_label(metric):
    return f"{METRIC_LABELS.get(metric, metric)}\n[{TIMING}]"


def _title(title):
    return title if ON_GPU else f"{title}\n(Triton interpreter timings: not GPU speed)"


def _plain_number(value, _position=None):
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _plain_log_axis(axis, base=10):
    """Ticks at 1, 2, 5 x powers of ``base`` written as plain numbers, no minor labels."""
    axis.set_major_locator(LogLocator(base=base, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_plain_number))
    axis.set_minor_formatter(NullFormatter())


def _group_label(workload, bs, tokens):
    kind = WORKLOAD_LABELS.get(workload, workload)
    return f"{kind}\nbs={bs}\nN={tokens:,}"


def stage_bars(records, workload_label, stages, metric="eager_us", title=None):
    """Grouped bars: one group per workload row, one bar per stage."""
    rows = sorted({(r["workload"], r["bs"], r["tokens"]) for r in records})
    fig, ax = plt.subplots(figsize=(min(14.0, max(9.0, 1.6 * len(rows) + 3)), 5))
    width = 0.8 / max(len(stages), 1)
    for i, stage in enumerate(stages):
        values = []
        for row in rows:
            match = [r[metric] for r in records if (r["workload"], r["bs"], r["tokens"]) == row
                     and r["stage"] == stage and r.get(metric) is not None]
            values.append(match[0] if match else float("nan"))
        ax.bar([j + i * width for j in range(len(rows))], values, width, label=stage,
               color=stage_color(stage))
    ax.set_xticks([j + width * (len(stages) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels([_group_label(*row) for row in rows])
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel(metric_label(metric))
    ax.set_title(_title(title or f"{METRIC_LABELS.get(metric, metric)}: {workload_label}"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def scaling(records, stages, x_key="bs", metric="eager_us", title=None, marks=()):
    """Log-log time versus ``x_key`` per stage; ``marks`` are (x, label) vertical lines."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    xs = set()
    for stage in stages:
        points = sorted((r[x_key], r[metric]) for r in records
                        if r["stage"] == stage and r.get(metric) is not None)
        if points:
            xs.update(x for x, _ in points)
            ax.plot(*zip(*points), marker="o", label=stage, color=stage_color(stage))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    # The measured sizes themselves, as integers; thinned so that at most 13 labels show.
    ticks = sorted(xs)
    step = max(1, -(-len(ticks) // 13))
    ax.xaxis.set_major_locator(FixedLocator(ticks[::step]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    for x, label in marks:
        ax.axvline(x, color="grey", linestyle="--", alpha=0.6)
        ax.annotate(label, (x, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize=10,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    ax.set_xlabel(X_LABELS.get(x_key, x_key))
    ax.set_ylabel(metric_label(metric))
    ax.set_title(_title(title or f"{METRIC_LABELS.get(metric, metric)} versus "
                                 f"{X_LABELS.get(x_key, x_key)}"))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def _bs_axis(axis, sizes):
    """A log2 batch-size axis labelled with the measured sizes themselves (1, 4, 16, 64, ...),
    thinned so that at most 11 labels show."""
    ticks = sorted(sizes)
    step = max(1, -(-len(ticks) // 11))
    axis.set_major_locator(FixedLocator(ticks[::step]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axis.set_minor_formatter(NullFormatter())


def mode_figure(records, key, timing=None):
    """One mode's figure: time per call against bs for each width (ours solid, SGLang dashed,
    vLLM dotted, the floor grey) and the peers' time over ours, with one legend for both
    panels outside the data. ``records``: ``bench.modes`` records; ``key``: (workload,
    next_n, variant) as ``modes_report.config_key``."""
    from .modes_report import label, ratio_rows
    rows = [r for r in ratio_rows(records) if r["mode"] == label(key)]
    widths = sorted({r["width"] for r in rows})
    fig, (ax_time, ax_ratio) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, width in enumerate(widths):
        sel = sorted((r for r in rows if r["width"] == width), key=lambda r: r["bs"])
        color = f"C{i}"
        for field, style, who in (("ours_us", "-", "ours"), ("sglang_us", "--", "SGLang"),
                                  ("vllm_us", ":", "vLLM")):
            pts = [(r["bs"], r[field]) for r in sel if r[field]]
            if pts:
                ax_time.plot(*zip(*pts), style, color=color, marker="o", ms=4,
                             label=f"{who}, width {width:,}")
        floor = [(r["bs"], r["floor_us"]) for r in sel if r["floor_us"]]
        if floor:
            ax_time.plot(*zip(*floor), "-", color="grey", alpha=0.35 + 0.2 * i, lw=1.5,
                         label=f"floor, width {width:,}")
        for field, style, who in (("vs_sglang", "--", "SGLang"), ("vs_vllm", ":", "vLLM")):
            pts = [(r["bs"], r[field]) for r in sel if r[field]]
            if pts:
                ax_ratio.plot(*zip(*pts), style, color=color, marker="o", ms=4,
                              label=f"{who} / ours, width {width:,}")
    sizes = {r["bs"] for r in rows} or {1}
    for ax in (ax_time, ax_ratio):
        ax.set_xscale("log", base=2)
        _bs_axis(ax.xaxis, sizes)
        ax.set_xlabel(X_LABELS["bs"])
        ax.grid(True, which="major", alpha=0.3)
    ax_time.set_yscale("log")
    _plain_log_axis(ax_time.yaxis)
    ax_time.set_ylabel(f"µs per call [{timing or TIMING}]")
    ax_ratio.axhline(1.0, color="black", lw=0.8)
    ax_ratio.axhline(2.0, color="green", lw=0.6, ls="--")
    ax_ratio.set_ylabel("peer time / ours (> 1: ours faster)")
    fig.suptitle(_title(label(key)))
    handles, labels = {}, []
    for ax in (ax_time, ax_ratio):
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in handles:
                handles[text] = handle
                labels.append(text)
    if labels:
        fig.legend([handles[t] for t in labels], labels, loc="upper left",
                   bbox_to_anchor=(1.0, 0.92), borderaxespad=0, fontsize=9)
    fig.tight_layout()
    return fig


def stacked_breakdown(rows, title):
    """``rows``: [(stage, {part: µs})], drawn as one stacked horizontal bar per stage."""
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 2))
    parts = list(rows[0][1]) if rows else []
    left = [0.0] * len(rows)
    for part in parts:
        values = [parts_of.get(part, 0.0) for _, parts_of in rows]
        ax.barh([s for s, _ in rows], values, left=left, label=part)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel(f"time per call (µs) [{TIMING}]")
    ax.set_title(_title(title))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def config_sweep(tuning_records, title="Every fixed config against the autotuned choice, per size"):
    """One line per size: each fixed config's time; the legend gives the autotuned time.

    ``tuning_records``: dicts with ``workload``, ``tokens``, ``autotuned_us`` and ``fixed_us``
    (``{"BLOCK_SIZE/num_warps": µs}``), as notebook 04 builds them.
    """
    fig, ax = plt.subplots(figsize=(11, 5.5))
    labels = list(tuning_records[0]["fixed_us"]) if tuning_records else []
    for rec in tuning_records:
        ax.plot(range(len(labels)), [rec["fixed_us"][label] for label in labels], marker="o",
                alpha=0.8, label=f"{WORKLOAD_LABELS.get(rec['workload'], rec['workload'])}, "
                                 f"N={rec['tokens']:,} (autotuned {fmt_us(rec['autotuned_us'])})")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("fixed config (BLOCK_SIZE / num_warps)")
    ax.set_ylabel(metric_label("kernel_graph_us"))
    ax.set_title(_title(title))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def seed_journey(rows, title):
    """The seed's table as bars: per seed stage, its published time, the seed's work measured
    with our validation stacked on top, and our stage measured.

    ``rows``: ``peers.seed.journey_rows``. Ours should reach the top of the stacked bar.
    """
    fig, ax = plt.subplots(figsize=(10, 5))
    x = range(len(rows))
    width = 0.26
    ax.bar([i - width for i in x], [r["published_us"] for r in rows], width, color="#bbbbbb",
           label="seed write-up, published (its machine)")
    seed_work = [r["seed_us"] for r in rows]
    ax.bar(x, seed_work, width, color=stage_color("seed_python_baseline"),
           label="seed's work, this run")
    ax.bar(x, [r["validation_us"] for r in rows], width, bottom=seed_work,
           color=stage_color("validation"), label="+ our validation, this run")
    ax.bar([i + width for i in x], [r["ours_us"] for r in rows], width,
           color=stage_color("triton_inplace"), label="our stage, this run")
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{r['seed_stage']}\nours: {r['ours']}" for r in rows])
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.set_ylabel(metric_label("eager_us"))
    ax.set_title(_title(title))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig
