"""The compare's headline: per mode, ours against SGLang, vLLM and the floor in A and in B.

Ratios are ours / theirs (below 1: ours is faster; ours / floor is at least 1), summarised
per mode as a geometric mean over its points; *moved* is the geometric mean, over the points
both reports measured, of the ratio in B over the ratio in A (below 1: ours gained on them in
B). One figure per mode plots ours' time B / A (and SGLang's) against bs, a line per width.
"""
import math
import re

from .fmt import is_num
from .labels import label as field_label
from .points import POINT_FIELDS, peer_points, sort_value

RATIOS = (("ours_vs_sglang", "ours / SGLang"), ("ours_vs_vllm", "ours / vLLM"),
          ("ours_vs_floor", "ours / floor"))


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _key(point):
    return tuple(point[f] for f in POINT_FIELDS)


def _moved(pairs, field):
    return geomean([pb[field] / pa[field] for pa, pb in pairs if pa[field] and pb[field]])


def mode_rows(records_a, records_b):
    """One dict per mode (in A's order, then B's new ones): ``label``, ``metric``, ``points``
    (A, B, both), per ratio field ``{"a", "b", "moved"}``, ``ours_moved`` and
    ``sglang_moved`` (geomean B / A of the times), ``pairs`` (the matched points)."""
    points_a, points_b = peer_points(records_a), peer_points(records_b)
    by_b = {_key(p): p for p in points_b}
    labels = list(dict.fromkeys([p["label"] for p in points_a] + [p["label"] for p in points_b]))
    rows = []
    for label in labels:
        in_a = [p for p in points_a if p["label"] == label]
        in_b = [p for p in points_b if p["label"] == label]
        pairs = [(pa, by_b[_key(pa)]) for pa in in_a if _key(pa) in by_b]
        row = {"label": label, "metric": "/".join(sorted({p["metric"] for p in in_a + in_b})),
               "points": (len(in_a), len(in_b), len(pairs)), "pairs": pairs,
               "ours_moved": _moved(pairs, "ours"), "sglang_moved": _moved(pairs, "sglang")}
        for field, _ in RATIOS:
            row[field] = {"a": geomean([p[field] for p in in_a]),
                          "b": geomean([p[field] for p in in_b]),
                          "moved": _moved(pairs, field)}
        rows.append(row)
    return rows


def slug(label):
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower()


def plot_modes(rows, out_dir, name_a, name_b):
    """``compare_<mode>.png`` per mode with matched points into ``out_dir``: ``{label: file}``,
    or ``{}`` with the reason when matplotlib is missing (``(figures, note)``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FixedLocator, NullLocator
    except ImportError as exc:
        return {}, f"no figures: matplotlib is not importable ({exc})"
    figures = {}
    for row in rows:
        pairs = [(pa, pb) for pa, pb in row["pairs"] if pa["ours"] and pb["ours"]
                 and is_num(pa["bs"]) and pa["bs"] > 0]
        if not pairs:
            continue
        # 566 x 326 px: two figures side by side on the page, each read at its own size
        fig, ax = plt.subplots(figsize=(5.9, 3.4), dpi=96)
        widths = sorted({pa["width"] for pa, _ in pairs}, key=sort_value)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        handles = []
        for i, width in enumerate(widths):
            sel = sorted((p for p in pairs if p[0]["width"] == width), key=lambda p: p[0]["bs"])
            color = colors[i % len(colors)]
            # several points at one bs (chunked prefill shapes): markers, no line through them
            lone = len({pa["bs"] for pa, _ in sel}) < len(sel)
            line, = ax.plot([pa["bs"] for pa, _ in sel],
                            [pb["ours"] / pa["ours"] for pa, pb in sel],
                            "o" if lone else "o-", color=color, ms=4,
                            label=f"width {width}" if width is not None else "every point")
            handles.append(line)
            peer = [(pa["bs"], pb["sglang"] / pa["sglang"]) for pa, pb in sel
                    if pa["sglang"] and pb["sglang"]]
            if peer:
                ax.plot(*zip(*peer), "s" if lone else "s--", color=color, alpha=0.55, ms=3)
        # colour says the width, the line style who: one legend entry each
        handles += [Line2D([], [], color="black", marker="o", ms=4, label="ours"),
                    Line2D([], [], color="black", ls="--", marker="s", ms=3, alpha=0.55,
                           label="SGLang")]
        ax.axhline(1.0, color="grey", lw=1)
        sizes = sorted({pa["bs"] for pa, _ in pairs})
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(s) for s in sizes], fontsize=8)
        ax.set_xlabel("batch size (requests)")
        ax.set_ylabel(f"{field_label(row['metric'])}: B / A\n(below 1: faster in {name_b})",
                      fontsize=9)
        ax.set_title(row["label"], fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False)
        fig.tight_layout()
        name = f"compare_{slug(row['label'])}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        figures[row["label"]] = name
    return figures, None
