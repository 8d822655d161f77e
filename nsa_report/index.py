"""``results.json`` and ``index.html`` of a report folder: the answer first, then every notebook.

``python -m nsa_report.index REPORT_DIR [--run NAME] [--notebooks N1,N2] [--status JSON|@FILE]
[--profile P]`` rebuilds both from the folder's ``results_*.json`` fragments (the runner calls
``build``). ``--describe-failure EXECUTED.ipynb`` prints the FAILED line of a notebook.

The index is generic: each notebook's section shows its own headline, tables and targets, then
its records grouped by workload / width / next_n. Two cross-notebook tables appear when their
records exist, each collapsed under a one-line summary: modes against the peers (a row per
point of ``points.peer_points``: ours / SGLang, ours / vLLM, ours / floor) and the launch
floors (``FLOOR_STAGES``).
"""
import argparse
import json
import sys
from pathlib import Path

from .failure import describe_failure, failure_line
from .fmt import fmt, is_num
from .labels import label
from .pages import render
from .points import FLOOR_STAGES, peer_points
from .results import STAMP_KEYS, infer_status, merge, write_json_atomic

INTERPRETER_BANNER = ("Triton interpreter on CPU: timings are interpreter timings and say "
                      "nothing about GPU speed")
STAMP_LABELS = {"python": "Python"}
BASELINE = "python_baseline"
HEADLINE_POINT = ("draft_extend", 32)
#: Stages that are not candidates for "the best stage".
NOT_CANDIDATES = set(FLOOR_STAGES) | {"validation"}
GROUP_KEYS = ("workload", "width", "next_n")
TIME_KEYS = ("eager_us", "throughput_us", "graph_us", "host_us", "kernel_graph_us",
             "best_graph_us")
MAX_PIVOT_ROWS = 40
#: A table longer than this is collapsed under a one-line summary.
MAX_OPEN_ROWS = 25


# --------------------------------------------------------------------------- views

def _stamp(env):
    parts = []
    for key in STAMP_KEYS:
        if key == "interpreter":
            continue
        value = env.get(key)
        value = "n/a" if value in (None, "") else value
        parts.append(str(value) if key == "device" else f"{STAMP_LABELS.get(key, key)} {value}")
    return " · ".join(parts)


def answer(records, interpreter, summary=None):
    """One sentence: the best stage against the Python baseline at draft extend bs=32."""
    workload, bs = HEADLINE_POINT
    pool = [r for r in records if r.get("workload") == workload and r.get("bs") == bs
            and is_num(r.get("eager_us"))]
    if summary and any(r.get("notebook") == summary for r in pool):
        pool = [r for r in pool if r.get("notebook") == summary]
    best_of = {}
    for r in pool:
        if r["stage"] not in best_of or r["eager_us"] < best_of[r["stage"]]:
            best_of[r["stage"]] = r["eager_us"]
    where = "interpreter timings, not GPU speed" if interpreter else "GPU"
    if BASELINE not in best_of:
        return None
    candidates = {s: t for s, t in best_of.items()
                  if s not in NOT_CANDIDATES and not s.startswith(("sglang_", "vllm_", "seed_"))}
    best = min(candidates, key=candidates.get)
    if best == BASELINE:
        return (f"No stage beats {BASELINE} in eager latency at {workload} bs={bs} "
                f"({best_of[BASELINE]:.3g} µs; {where}).")
    speedup = best_of[BASELINE] / best_of[best]
    return (f"Best stage at {workload} bs={bs}: {best}, {speedup:.1f}x faster than {BASELINE} "
            f"in eager latency ({best_of[best]:.3g} vs {best_of[BASELINE]:.3g} µs; {where}).")


def _group_label(key):
    workload, *rest = key
    parts = [str(workload)] if workload is not None else []
    return ", ".join(parts + [f"{k}={v}" for k, v in zip(GROUP_KEYS[1:], rest) if v is not None])


def record_groups(records):
    """Pivot tables of a notebook's records: one per (workload, width, next_n) and time key."""
    groups = {}
    for r in records:
        if isinstance(r.get("stage"), str):
            groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    tables = []
    for key, rows in groups.items():
        stages = list(dict.fromkeys(r["stage"] for r in rows))
        sizes = sorted({(r.get("bs"), r.get("tokens")) for r in rows},
                       key=lambda s: tuple((x is None, x if is_num(x) else 0) for x in s))
        for metric in TIME_KEYS:
            if not any(is_num(r.get(metric)) for r in rows):
                continue
            cell = {(r["stage"], r.get("bs"), r.get("tokens")): r.get(metric) for r in rows}
            body = [[bs, tokens] + [cell.get((s, bs, tokens)) for s in stages]
                    for bs, tokens in sizes[:MAX_PIVOT_ROWS]]
            note = (f"first {MAX_PIVOT_ROWS} of {len(sizes)} sizes; all are in results.json"
                    if len(sizes) > MAX_PIVOT_ROWS else None)
            tables.append({"title": f"{_group_label(key) or 'records'}: {label(metric)}",
                           "columns": ["bs", "tokens"] + stages, "rows": body, "note": note})
    return tables


def _worst(points, field):
    """The point with the largest ``field`` (ours / theirs: the worst for ours), or None."""
    known = [p for p in points if p[field] is not None]
    return max(known, key=lambda p: p[field]) if known else None


def _where(point):
    width = f" width {point['width']}" if point["width"] is not None else ""
    return f"{point['label']} bs {point['bs']}{width}"


def peers_summary(points):
    """One line: how many points, how often ours is faster than each peer, the worst ratios."""
    labels = {p["label"] for p in points}
    parts = [f"{len(points)} points in {len(labels)} modes"]
    for field, name in (("ours_vs_sglang", "SGLang"), ("ours_vs_vllm", "vLLM")):
        known = [p for p in points if p[field] is not None]
        if known:
            worst = _worst(known, field)
            faster = sum(p[field] < 1 for p in known)
            parts.append(f"ours faster than {name} at {faster} of {len(known)} "
                         f"(worst {worst[field]:.2f}x, {_where(worst)})")
    known = sorted(p["ours_vs_floor"] for p in points if p["ours_vs_floor"] is not None)
    if known:
        worst = _worst(points, "ours_vs_floor")
        parts.append(f"ours / floor median {known[len(known) // 2]:.2f}x, worst "
                     f"{worst['ours_vs_floor']:.2f}x ({_where(worst)})")
    return "; ".join(parts)


def peers_table(records):
    """Ours / SGLang / vLLM / floor per point (``points.peer_points``), when ours exists."""
    points = peer_points(records)
    if not points:
        return None
    rows = [[p["label"], p["width"], p["bs"], p["tokens"], p["ours"], p["sglang"], p["vllm"],
             p["floor"], p["ours_vs_sglang"], p["ours_vs_vllm"], p["ours_vs_floor"],
             label(p["metric"])] for p in points]
    configs = {}
    for p in points:
        for role, config in p["configs"].items():
            if role in ("sglang", "vllm"):
                configs.setdefault(role, set()).add(str(config))
    notes = [f"{'SGLang' if role == 'sglang' else 'vLLM'}: {'; '.join(sorted(c))}"
             for role, c in sorted(configs.items())]
    return {"title": "Modes against the peers (µs; graph replay, eager for extend and under "
                     "the interpreter)",
            "columns": ["mode", "width", "bs", "tokens", "ours µs", "SGLang µs", "vLLM µs",
                        "floor µs", "ours / SGLang", "ours / vLLM", "ours / floor", "time"],
            "rows": rows, "ratio_columns": [8, 9, 10], "summary": peers_summary(points),
            "note": "ours / theirs: below 1 is ours faster. floor: the larger of the empty "
                    "launch and the bandwidth floor at the same point, as the notebooks "
                    "define it. " + ("Peer configurations: " + " | ".join(notes)
                                     if notes else "")}


def floors_table(records):
    """The launch floors, when a notebook measured more than the empty kernel."""
    pseudo = set(FLOOR_STAGES) - {"empty_kernel", "empty_kernel_bound", "bandwidth_floor"}
    owners = {r.get("notebook") for r in records if r.get("stage") in pseudo}
    if not owners:
        return None
    floors = [r for r in records if r.get("notebook") in owners and r.get("stage") in FLOOR_STAGES]
    rows = [[r.get("notebook"), r.get("stage"), r.get("workload"), r.get("bs"),
             r.get("eager_us"), r.get("host_us"), r.get("graph_us")] for r in floors]
    return {"title": "Launch floors (µs): what a call costs before it does any work",
            "columns": ["notebook", "stage", "workload", "bs", "eager_us", "host_us",
                        "graph_us"], "rows": rows, "ratio_columns": [],
            "summary": floors_summary(floors, owners), "note": None}


def floors_summary(floors, owners):
    """One line: how many floor records, and the range of each floor's eager time."""
    parts = []
    for stage in FLOOR_STAGES:
        times = sorted(r["eager_us"] for r in floors
                       if r.get("stage") == stage and is_num(r.get("eager_us")))
        if times:
            parts.append(f"{stage} {fmt(times[0])}–{fmt(times[-1])}")
    return (f"{len(floors)} floor records of {len(owners)} notebooks; eager µs: "
            + ", ".join(parts))


def _headlines(extra):
    headline = extra.get("headline") or []
    return [headline] if isinstance(headline, str) else [str(h) for h in headline]


def _tables(extra):
    """A notebook's own tables; a long one is collapsed under a line saying how long."""
    out = []
    for t in extra.get("tables") or []:
        if not isinstance(t, dict):
            continue
        rows = [row if isinstance(row, (list, tuple)) else [row] for row in t.get("rows") or []]
        out.append({"title": t.get("title"), "columns": t.get("columns") or [], "rows": rows,
                    "note": t.get("note"), "ratio_columns": [],
                    "summary": (f"{len(rows)} rows (click to show)"
                                if len(rows) > MAX_OPEN_ROWS else None)})
    return out


def _skipped(extras):
    out = []
    for name, extra in extras.items():
        for s in extra.get("skipped") or []:
            if isinstance(s, dict):
                out.append(f"{name}: skipped: {s.get('what', '?')} — {s.get('reason', '?')}")
            else:
                out.append(f"{name}: skipped: {s}")
    return out


def view(results, report_dir):
    """Everything ``index.html.j2`` shows, computed here so the template only lays it out."""
    env = results["environment"]
    notebooks = results["notebooks"]
    extras = results["extras"]
    by_nb = {}
    for r in results["records"]:
        by_nb.setdefault(r.get("notebook"), []).append(r)
    failed = [nb for nb in notebooks if nb["status"] == "failed"]
    names = [nb["name"] for nb in notebooks]
    summary = next((n for n in names if "summary" in n.lower()), None)
    sections = []
    for nb in notebooks:
        extra = extras.get(nb["name"])
        own = _tables(extra) if extra else []
        sections.append({
            "nb": nb, "anchor": f"nb-{nb['name']}", "has_results": extra is not None,
            "headline": _headlines(extra) if extra else [], "tables": own,
            "targets": extra.get("targets", []) if extra else [],
            "groups": record_groups(by_nb.get(nb["name"], [])),
            "figures": [f for f in nb.get("figures") or [] if (report_dir / str(f)).is_file()],
            "missing_figures": [f for f in nb.get("figures") or []
                                if not (report_dir / str(f)).is_file()],
            "carried_from": nb.get("carried_from")})
    all_targets = [dict(t, target=f"{nb['name']}: {t.get('target', '?')}")
                   for nb in notebooks for t in (extras.get(nb["name"]) or {}).get("targets", [])]
    summary_section = next((s for s in sections if s["nb"]["name"] == summary), None)
    cross = [t for t in (peers_table(results["records"]), floors_table(results["records"])) if t]
    return {
        "run": env.get("run") or "report", "failed": failed,
        "ran": [nb for nb in notebooks if nb["status"] != "extra"],
        "stamp": _stamp(env), "interpreter": bool(env.get("interpreter")),
        "interpreter_banner": INTERPRETER_BANNER, "problems": results.get("problems") or [],
        "answer": answer(results["records"], bool(env.get("interpreter")), summary),
        "summary": summary, "summary_section": summary_section,
        "all_targets": all_targets, "cross_tables": cross, "notebooks": notebooks,
        "sections": [s for s in sections if s["nb"]["name"] != summary],
        "skipped": _skipped(extras),
        "carried": [nb for nb in notebooks if nb.get("carried_from")],
    }


def render_index(results, report_dir):
    return render("index.html.j2", **view(results, Path(report_dir)))


# --------------------------------------------------------------------------- CLI

def build(report_dir, run_name=None, names=None, status=None, profile=None):
    """Write ``results.json`` and ``index.html`` into ``report_dir``; returns the results."""
    report_dir = Path(report_dir)
    if names is None:
        names = sorted(p.stem for p in report_dir.glob("*.ipynb"))
    if status is None:
        status = {name: infer_status(report_dir, name) for name in names}
    results, _ = merge(report_dir, run_name or report_dir.name, names, status, profile)
    write_json_atomic(report_dir / "results.json", results)
    tmp = report_dir / "index.html.tmp"
    tmp.write_text(render_index(results, report_dir), encoding="utf-8")
    tmp.replace(report_dir / "index.html")
    return results


def _parse_status(text):
    if not text:
        return None
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    status = json.loads(text)
    if not isinstance(status, dict):
        raise ValueError("--status must be a JSON object")
    return {k: (v if isinstance(v, dict) else {"status": str(v)}) for k, v in status.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m nsa_report.index",
        description="Merge results_*.json fragments into results.json and write index.html, "
                    "or describe a failed notebook.")
    parser.add_argument("report_dir", nargs="?", help="folder with the executed notebooks")
    parser.add_argument("--run", help="run name for the title (default: the folder's name)")
    parser.add_argument("--notebooks", help="comma-separated notebook names of the run, in order "
                        "(default: every *.ipynb in REPORT_DIR)")
    parser.add_argument("--status", help='JSON {"NAME": {"status": "ok"|"failed"|"not run", '
                        '"log": PATH, "seconds": S}} or @FILE (default: read off the notebooks)')
    parser.add_argument("--profile", help="profile, used when no fragment states it")
    parser.add_argument("--describe-failure", metavar="IPYNB",
                        help="print the FAILED line for this executed notebook and exit")
    parser.add_argument("--name", help="notebook name for --describe-failure")
    parser.add_argument("--log", help="papermill log for --describe-failure")
    args = parser.parse_args(argv)

    if args.describe_failure:
        name = args.name or Path(args.describe_failure).stem
        print(failure_line(name, describe_failure(args.describe_failure, args.log)))
        return 0
    if not args.report_dir:
        parser.error("REPORT_DIR is required")
    if not Path(args.report_dir).is_dir():
        parser.error(f"not a folder: {args.report_dir}")
    try:
        status = _parse_status(args.status)
    except (OSError, ValueError) as exc:
        parser.error(f"bad --status: {exc}")
    names = ([n.strip() for n in args.notebooks.split(",") if n.strip()] if args.notebooks
             else None)
    results = build(args.report_dir, args.run, names, status, args.profile)
    print(f"nsa_report.index: wrote {Path(args.report_dir) / 'results.json'} and index.html "
          f"({len(results['records'])} records, status {results['status']})")
    for problem in results["problems"]:
        print(f"nsa_report.index: warning: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
