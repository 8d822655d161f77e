"""Ours against the peers and the floor, point by point: the one floor model of every page.

A *point* is one measured configuration of a mode: (notebook, mode, variant, next_n, width,
bs). Its records are ours (``nsa_<mode>``, or ``ours`` in the notebooks that name stages by
who made them), SGLang's production call (``sglang_<mode>`` / ``sglang``), vLLM's kernel
(``vllm_*``) and the two floors. The floor is what notebooks 09 and 11 use
(``nsa_kernels.bench.modes.finish_point``): the larger of the empty Triton launch and the
bandwidth floor (bytes that must move / copy bandwidth), both on the point's own time: CUDA-graph
replay, except for extend (eager: it syncs) and under the interpreter (no graphs). A point that
lacks either floor has none. Torch-free, so a report can be read where the kernels cannot be
imported.
"""
from .fmt import is_num

#: Launch-cost pseudo-stages: what a call costs before it does any work.
FLOOR_STAGES = ("sync_only", "torch_op", "empty_kernel", "empty_kernel_bound", "empty_driver",
                "empty_graph", "bandwidth_floor")
ROLES = ("ours", "sglang", "vllm", "empty_kernel", "bandwidth_floor")
POINT_FIELDS = ("notebook", "mode", "variant", "next_n", "width", "bs", "tokens", "shape")
#: Modes timed eagerly: they sync with the host, so they cannot be captured in a CUDA graph.
EAGER_MODES = ("extend",)


def _of_mode(name, mode):
    """``extend`` names the stages of ``extend`` and of its kinds (``extend_chunked``)."""
    return mode == name or str(mode).startswith(f"{name}_")


def is_floor(stage):
    """A launch floor (measured alongside the stages), not a stage of ours or a peer's."""
    stage = str(stage)
    return stage in FLOOR_STAGES or stage.startswith("empty_")


def mode_of(record):
    """The mode a record measures: ``mode`` where the notebook names it (its ``workload`` then
    carries the width too), else ``workload``."""
    return record.get("mode") or record.get("workload")


def role_of(record):
    """``ours``, ``sglang``, ``vllm``, ``empty_kernel``, ``bandwidth_floor`` or None."""
    stage, mode = str(record.get("stage")), mode_of(record)
    if stage == "ours" or (stage.startswith("nsa_") and _of_mode(stage[4:], mode)):
        return "ours"
    if stage == "sglang" or (stage.startswith("sglang_") and _of_mode(stage[7:], mode)):
        return "sglang"
    if stage.startswith("vllm_"):
        return "vllm"
    if stage in ("empty_kernel", "bandwidth_floor"):
        return stage
    return None


def point_key(record):
    return tuple(mode_of(record) if f == "mode" else record.get(f) for f in POINT_FIELDS)


def point_metric(mode, stages):
    """The time the notebooks compare at a point: eager for extend and under the interpreter,
    else the CUDA-graph replay."""
    if any(_of_mode(m, mode) for m in EAGER_MODES) or any(
            r.get("interpreter") for r in stages.values()):
        return "eager_us"
    return "graph_us"


def _time(record, metric):
    value = record.get(metric) if record else None
    return value if is_num(value) and value > 0 else None


def _over(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def floor_of(empty, bandwidth):
    """max(empty launch, bandwidth floor); None unless both were measured: either alone is
    only a lower bound (a bandwidth-bound point sits far above its empty launch)."""
    return max(empty, bandwidth) if empty and bandwidth else None


def mode_label(point):
    """``11_modes_vs_peers: target_verify hopper next_n=2``: the mode part of a point."""
    notebook, mode, variant, next_n = point["notebook"], point["mode"], point["variant"], \
        point["next_n"]
    parts = [str(mode)] + ([str(variant)] if variant else [])
    if next_n is not None and mode != "decode" and not _of_mode("extend", mode):
        parts.append(f"next_n={next_n}")
    return f"{notebook}: {' '.join(parts)}"


def peer_points(records):
    """One dict per point that has a record of ours: the point's fields, ``metric``, the times
    of every role (µs or None), ``floor`` and ``ours_vs_sglang``, ``ours_vs_vllm``,
    ``ours_vs_floor`` (ours / theirs: below 1 is ours faster), ``label`` (its mode), and
    ``configs`` ({role: the record's config})."""
    points = {}
    for r in records:
        role = role_of(r)
        if role is not None:
            points.setdefault(point_key(r), {}).setdefault(role, r)
    out = []
    for key, stages in points.items():
        if "ours" not in stages:
            continue
        point = dict(zip(POINT_FIELDS, key))
        metric = point_metric(point["mode"], stages)
        times = {role: _time(stages.get(role), metric) for role in ROLES}
        floor = floor_of(times["empty_kernel"], times["bandwidth_floor"])
        point.update(metric=metric, floor=floor, **times,
                     ours_vs_sglang=_over(times["ours"], times["sglang"]),
                     ours_vs_vllm=_over(times["ours"], times["vllm"]),
                     ours_vs_floor=_over(times["ours"], floor),
                     configs={role: r.get("config") for role, r in stages.items()
                              if r.get("config")})
        point["label"] = mode_label(point)
        out.append(point)
    out.sort(key=lambda p: tuple(sort_value(p[f]) for f in POINT_FIELDS))
    return out


def sort_value(value):
    """Sorts None last, numbers by value, the rest by text, in one comparable tuple."""
    return (value is None, not is_num(value), value if is_num(value) else 0,
            "" if is_num(value) or value is None else str(value))
