"""Figures and tables of ``bench.step``'s records (one figure per mode, a table per metric)."""
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

from . import floors
from .plots import _title, metric_label
from .step import FLOOR_STAGES, METRICS, SIDES

LINES = SIDES + FLOOR_STAGES
DASHED = set(FLOOR_STAGES)


#: One colour per line, the same in every figure (SGLang red, vLLM orange, the workbook cool,
#: floors grey).
COLORS = {"sglang_step": "#d62728", "sglang_step_full": "#ff9896", "nsa_dropin": "#9467bd",
          "nsa_installed": "#1f77b4", "nsa_installed_full": "#aec7e8", "nsa_in_graph": "#2ca02c",
          "vllm_hopper": "#ff7f0e",
          "empty_kernel": "#7f7f7f", "empty_driver": "#525252", "empty_graph": "#bcbd22",
          "bandwidth_floor": "#17becf"}


def rows_of(records, workload):
    """``(config, next_n, width)`` of every row a workload's figure has (rows with at least
    one time), in record order; all rows when none has a time."""
    rows = [(r["config"], r["next_n"], r["width"]) for r in records if r["workload"] == workload]
    timed = [(r["config"], r["next_n"], r["width"]) for r in records
             if r["workload"] == workload and any(r.get(m) for m in METRICS)]
    return list(dict.fromkeys(timed or rows))


def plot_mode(records, workload):
    """One figure for ``workload``: a row per (config, next_n, width), a column per metric
    (host, call + sync, graph replay), a line per side and floor against bs; the p20-p80 band
    shaded. Returns the figure."""
    rows = rows_of(records, workload)
    height = 3.6 * len(rows) + 1.3  # inches: the rows, then the title and legend band on top
    fig, axes = plt.subplots(len(rows), len(METRICS), figsize=(15, height), squeeze=False)
    handles = {}
    for ax_row, (config, next_n, width) in zip(axes, rows):
        mine = [r for r in records if r["workload"] == workload and r["config"] == config
                and r["next_n"] == next_n and r["width"] == width]
        sizes = sorted({r["bs"] for r in mine})
        for ax, metric in zip(ax_row, METRICS):
            for stage in LINES:
                points = sorted((r["bs"], r[metric], r.get(f"{metric}_p20"),
                                 r.get(f"{metric}_p80"))
                                for r in mine if r["stage"] == stage and r.get(metric))
                if not points:
                    continue
                bs, mid, low, high = zip(*points)
                style = "--" if stage in DASHED else "-"
                (line,) = ax.plot(bs, mid, style, marker="o", ms=3, color=COLORS[stage],
                                  label=stage)
                handles.setdefault(stage, line)
                if None not in low and None not in high:
                    ax.fill_between(bs, low, high, color=COLORS[stage], alpha=0.15)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sizes, [str(b) for b in sizes])
            ax.xaxis.set_minor_locator(NullLocator())  # bs ticks only
            ax.set_xlabel("batch size (requests)")
            ax.set_ylabel(metric_label(metric))
            tail = f", next_n {next_n}" if workload in ("target_verify",
                                                        "draft_extend_static") else ""
            ax.set_title(f"{config}{tail}, width {width}", fontsize=10)
            if not ax.lines:
                ax.text(0.5, 0.5, "not measured here", ha="center", va="center",
                        transform=ax.transAxes)
    order = [s for s in LINES if s in handles]
    fig.legend([handles[s] for s in order], order, loc="upper center", ncol=len(order) or 1,
               fontsize=9, bbox_to_anchor=(0.5, 1 - 0.7 / height))
    with_vllm = any(r["stage"] == "vllm_hopper" and r.get("host_us") for r in records
                    if r["workload"] == workload)
    vs = "SGLang's and vLLM's steps" if with_vllm else "SGLang's step"
    fig.suptitle(_title(f"{workload}: per-step metadata cost, {vs} vs the workbook"),
                 y=1 - 0.05 / height, va="top")
    # fixed spacing: tight_layout measures every tick label and costs seconds per figure
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.6 / height, top=1 - 1.3 / height,
                        wspace=0.3, hspace=0.5)
    return fig


def host_table(records, sizes=(1, 32, 128, 512)):
    """``(columns, rows)``: host µs per step at a few bs, per mode, side (``vllm_hopper``:
    vLLM's Hopper step, decode and target_verify only) and cheapest floor, with SGLang's step
    over the installed one."""
    columns = ["workload", "config", "next_n", "width", "bs", *SIDES,
               "cheapest empty", "sglang_step / installed"]
    points = {}
    for r in records:
        if r["bs"] in sizes:
            points.setdefault((r["workload"], r["config"], r["next_n"], r["width"], r["bs"]),
                              {})[r["stage"]] = r
    rows = []
    for key, stages in points.items():
        host = {s: stages.get(s, {}).get("host_us") for s in SIDES}
        floor = floors.cheapest_empty(list(stages.values()), "host_us")
        ratio = (host["sglang_step"] / host["nsa_installed"]
                 if host["sglang_step"] and host["nsa_installed"] else None)
        rows.append(list(key) + [host[s] for s in SIDES]
                    + [floor["host_us"] if floor else None, ratio])
    return columns, rows


def refused(records):
    """Records of sides not timed because their metadata differed from ``sglang_step``'s."""
    return [r for r in records if (r.get("note") or "").startswith("not timed")]


def skipped(records):
    """``{"what", "reason"}`` per distinct skipped side (the report's ``skipped`` entries)."""
    seen = {}
    for r in records:
        note = r.get("note") or ""
        if note.startswith("skipped: "):
            workloads = seen.setdefault((r["stage"], note[len("skipped: "):]), [])
            if r["workload"] not in workloads:
                workloads.append(r["workload"])
    return [{"what": f"{stage} ({', '.join(workloads)})", "reason": reason}
            for (stage, reason), workloads in seen.items()]
