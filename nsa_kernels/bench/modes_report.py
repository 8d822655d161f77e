"""Reading the modes benchmark (``bench.modes`` records): targets, tables, where the time goes;
the per-mode figures are ``plots.mode_figure``. Every statement is computed from the records
of one run; nothing is hard-coded.

Times are CUDA-graph replay per call (``graph_us``) except for ``extend`` (eager, call +
synchronize, ``eager_us``). Under the interpreter there is no graph time: the targets are then
reported as not measured.
"""
from collections import defaultdict

from ..modes import SPECS
from .floors import point_floor


def time_of(record):
    """Graph time (eager for a mode that runs eagerly); under the interpreter, where there is
    no graph, the eager interpreter time (tables and plots say so; the targets are then not
    evaluated)."""
    if record.get("interpreter") or not SPECS[record["workload"]].graph:
        return record.get("eager_us")
    return record.get("graph_us")


def config_key(record):
    """(workload, next_n, variant): one line of every table and plot."""
    return record["workload"], record["next_n"], record.get("variant", "")


def label(key):
    workload, next_n, variant = key
    extra = f" {variant}" if variant else ""
    return f"{workload}{extra}" + (f" next_n={next_n}" if next_n and SPECS[workload].expands
                                   and SPECS[workload].graph else "")


TARGETS = ("ours faster than SGLang's production call (every mode, bs, width)",
           "at least 2x faster than SGLang for bs >= 128",
           "every point within 1.3x of its floor",
           "faster than vLLM's kernel where both compute the same outputs",
           "extend (eager, bs 32): at least 20x faster than SGLang's eager path")


def group_points(records):
    """``{(workload, next_n, variant, bs, width): {stage: record}}``."""
    points = defaultdict(dict)
    for r in records:
        points[config_key(r) + (r["bs"], r["width"])][r["stage"]] = r
    return dict(points)


def _ours(stages):
    return next((r for s, r in stages.items() if s.startswith("nsa_")), None)


def _sglang(stages):
    return next((r for s, r in stages.items() if s.startswith("sglang_")), None)


def _fmt(value):
    return "—" if value is None else f"{value:.2f}"


def explain(key, stages):
    """One line with the measurement behind a point: ours, SGLang, vLLM, both floors."""
    workload, next_n, variant, bs, width = key
    ours, sglang = _ours(stages), _sglang(stages)
    vllm = stages.get("vllm_indexer")
    empty, band = stages.get("empty_kernel"), stages.get("bandwidth_floor")
    parts = [f"{label((workload, next_n, variant))} bs {bs} width {width}:",
             f"ours {_fmt(time_of(ours)) if ours else '—'} µs",
             f"SGLang {_fmt(time_of(sglang)) if sglang else '—'} µs"]
    if vllm:
        parts.append(f"vLLM {_fmt(time_of(vllm))} µs")
    e, b = (time_of(empty) if empty else None), (time_of(band) if band else None)
    parts.append(f"floor: empty {_fmt(e)} µs, bandwidth {_fmt(b)} µs")
    mine = time_of(ours) if ours else None
    if mine and e and b:
        if b > e:  # bandwidth-bound: how much of the copy bandwidth ours reaches
            parts.append(
                f"[bandwidth-bound: ours moves its bytes at {100 * b / mine:.0f}% "
                "of the copy bandwidth]"
            )
        else:
            parts.append(f"[launch-bound: ours is {mine - e:+.2f} µs over the empty kernel]")
    if ours and ours.get("note"):
        parts.append(f"({ours['note']})")
    return " ".join(parts)


def targets(records):
    """``[(target, ok or None (not measured), summary, [explanations of misses])]``."""
    points = group_points(records)
    graph = {k: v for k, v in points.items() if SPECS[k[0]].graph}
    out = []
    if any(r.get("interpreter") for r in records):
        return [(name, None, "interpreter run: its timings say nothing about GPU speed", [])
                for name in TARGETS]

    def evaluate(name, keys, test):
        misses, measured = [], 0
        for key in sorted(keys):
            verdict = test(points[key])
            if verdict is None:
                misses.append("not measured: " + explain(key, points[key]))
                continue
            measured += 1
            if not verdict:
                misses.append(explain(key, points[key]))
        ok = None if measured == 0 else not misses
        met = measured - sum(1 for m in misses if not m.startswith("not measured"))
        summary = (f"{met} of {len(keys)} points meet it" if keys
                   else "no point of this selection")
        out.append((name, ok, summary, misses))

    def faster(threshold, stages):
        ours, sglang = _ours(stages), _sglang(stages)
        if not ours or not sglang or not time_of(ours) or not time_of(sglang):
            return None
        return time_of(sglang) / time_of(ours) > threshold

    evaluate(TARGETS[0], graph, lambda s: faster(1.0, s))
    evaluate(TARGETS[1],
             [k for k in graph if k[3] >= 128], lambda s: faster(2.0, s))

    def near_floor(stages):
        ours = _ours(stages)
        if not ours or not time_of(ours) or not ours.get("floor_us"):
            return None
        return time_of(ours) <= 1.3 * ours["floor_us"]
    evaluate(TARGETS[2], points, near_floor)

    def beats_vllm(stages):
        ours, vllm = _ours(stages), stages.get("vllm_indexer")
        if not ours or not vllm or not time_of(ours) or not time_of(vllm):
            return None
        return time_of(ours) < time_of(vllm)
    evaluate(TARGETS[3], [k for k in graph if "vllm_indexer" in graph[k]], beats_vllm)
    evaluate(
        TARGETS[4],
        [k for k in points if k[0] == "extend" and k[3] == 32],
        lambda s: faster(20.0, s),
    )
    return out


def targets_markdown(records):
    lines = []
    for name, ok, summary, misses in targets(records):
        mark = {True: "✓", False: "✗", None: "– (not measured)"}[ok]
        lines.append(f"* {mark} **{name}**: {summary}")
        lines += [f"    * {m}" for m in misses[:12]]
        if len(misses) > 12:
            lines.append(f"    * … and {len(misses) - 12} more")
    return "\n".join(lines)


def ratio_rows(records):
    """One row per point: times of ours / SGLang / vLLM / floors and the ratios."""
    def t(record):
        return time_of(record) if record else None

    rows = []
    for key, stages in sorted(group_points(records).items()):
        ours, sglang, vllm = _ours(stages), _sglang(stages), stages.get("vllm_indexer")
        rows.append({"mode": label(key[:3]), "bs": key[3], "width": key[4],
                     "ours_us": t(ours), "sglang_us": t(sglang), "vllm_us": t(vllm),
                     "empty_us": t(stages.get("empty_kernel")),
                     "bandwidth_us": t(stages.get("bandwidth_floor")),
                     "floor_us": point_floor(t(stages.get("empty_kernel")),
                                             t(stages.get("bandwidth_floor"))),
                     "vs_sglang": ours.get("vs_sglang") if ours else None,
                     "vs_vllm": t(vllm) / t(ours) if t(vllm) and t(ours) else None,
                     "vs_floor": ours.get("vs_floor") if ours else None,
                     "note": ours.get("note") if ours else "ours not run"})
    return rows


def where_time_goes(records):
    """Per point: which floor binds (launch or bandwidth) and how far ours is above it;
    summarised per batch size: ``{bs: {"launch": n, "bandwidth": n, "median_vs_floor": x}}``."""
    summary = defaultdict(lambda: {"launch": 0, "bandwidth": 0, "vs_floor": []})
    for row in ratio_rows(records):
        if row["empty_us"] is None or row["bandwidth_us"] is None:
            continue
        bound = "bandwidth" if row["bandwidth_us"] > row["empty_us"] else "launch"
        entry = summary[row["bs"]]
        entry[bound] += 1
        if row["vs_floor"] is not None:
            entry["vs_floor"].append(row["vs_floor"])
    out = {}
    for bs, entry in sorted(summary.items()):
        values = sorted(entry["vs_floor"])
        out[bs] = {"launch": entry["launch"], "bandwidth": entry["bandwidth"],
                   "median_vs_floor": values[len(values) // 2] if values else None}
    return out


def report_targets(records):
    """The targets in the report's format: ``{"target", "measured", "met", "note"}``."""
    out = []
    for name, ok, summary, misses in targets(records):
        note = "; ".join(misses[:3]) + (f"; … {len(misses) - 3} more" if len(misses) > 3 else "")
        out.append({"target": name, "measured": summary, "met": ok, "note": note})
    return out
