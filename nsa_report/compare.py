"""What moved between two report folders: ``python -m nsa_report.compare A B [--out DIR]``.

Matches the records of ``A/results.json`` and ``B/results.json`` on (notebook, stage,
workload, width, next_n, bs, tokens) and reports B / A per time (``eager_us``, ``graph_us``,
...): below 1 is faster in B. Writes ``compare.html`` and ``compare.json`` into ``--out``
(default: ``reports/compare-A-vs-B``) and prints the biggest moves. A and B can be two GPUs
(H100 vs H200) or one GPU before and after a change.
"""
import argparse
import math
import sys
from pathlib import Path

from .fmt import fmt, is_num, ratio
from .pages import render
from .results import STAMP_KEYS, read_json, write_json_atomic

KEY = ("notebook", "stage", "workload", "width", "next_n", "bs", "tokens")
TIMES = ("eager_us", "graph_us", "throughput_us", "host_us", "kernel_graph_us")
SHOWN_MOVES = 15


def _load(folder):
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise SystemExit(f"nsa_report.compare: error: {path} not found (not a report folder)")
    return read_json(path)


def _by_key(records):
    out = {}
    for r in records:
        out.setdefault(tuple(r.get(k) for k in KEY), r)
    return out


def _sort_key(key):
    return tuple((v is None, v if is_num(v) else 0, "" if is_num(v) else str(v)) for v in key)


def compare(a, b):
    """``{"stamps", "times", "rows", "stages", "only_a", "only_b"}`` for two results documents."""
    ra, rb = _by_key(a.get("records") or []), _by_key(b.get("records") or [])
    common = sorted(set(ra) & set(rb), key=_sort_key)
    times = [t for t in TIMES if any(is_num(ra[k].get(t)) and is_num(rb[k].get(t))
                                     for k in common)]
    rows = []
    for key in common:
        values = []
        for t in times:
            va, vb = ra[key].get(t), rb[key].get(t)
            values += [va, vb, ratio(vb, va)]
        rows.append(list(key) + values)
    stages = {}
    for row in rows:
        for i, _ in enumerate(times):
            r = row[len(KEY) + 3 * i + 2]
            if r is not None:
                stages.setdefault((row[1], times[i]), []).append(r)
    stage_rows = [[stage, t, len(rs), math.exp(sum(map(math.log, rs)) / len(rs)), min(rs),
                   max(rs)] for (stage, t), rs in sorted(stages.items())]
    return {"stamps": [[k, (a.get("environment") or {}).get(k), (b.get("environment") or {}).get(k)]
                       for k in (*STAMP_KEYS, "run")],
            "times": times, "key": list(KEY), "rows": rows, "stages": stage_rows,
            "only_a": len(set(ra) - set(rb)), "only_b": len(set(rb) - set(ra))}


def biggest_moves(result, count=SHOWN_MOVES):
    moves = []
    for row in result["rows"]:
        for i, t in enumerate(result["times"]):
            r = row[len(KEY) + 3 * i + 2]
            if r is not None:
                moves.append((abs(math.log(r)), r, t, row))
    moves.sort(key=lambda m: -m[0])
    return moves[:count]


def _label(row):
    fields = dict(zip(KEY, row))
    where = " ".join(f"{k}={fmt(fields[k])}" for k in KEY[3:] if fields[k] is not None)
    return f"{fields['stage']} @ {fields['workload']} {where} ({fields['notebook']})"


def text_table(result):
    lines = [f"{'B/A':>8}  {'time':<14} record"]
    for _, r, t, row in biggest_moves(result):
        lines.append(f"{r:>7.2f}x  {t:<14} {_label(row)}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nsa_report.compare",
                                     description="Side-by-side page of two report folders.")
    parser.add_argument("a", help="report folder A (the reference, e.g. reports/h100)")
    parser.add_argument("b", help="report folder B (e.g. reports/h200 or reports/latest)")
    parser.add_argument("--out", help="folder for compare.html and compare.json "
                        "(default: reports/compare-A-vs-B beside A)")
    args = parser.parse_args(argv)
    a_dir, b_dir = Path(args.a), Path(args.b)
    result = compare(_load(a_dir), _load(b_dir))
    out = Path(args.out) if args.out else a_dir.resolve().parent / (
        f"compare-{a_dir.resolve().name}-vs-{b_dir.resolve().name}")
    out.mkdir(parents=True, exist_ok=True)
    result["a"], result["b"] = str(a_dir), str(b_dir)
    write_json_atomic(out / "compare.json", result)
    (out / "compare.html").write_text(render("compare.html.j2", **result), encoding="utf-8")
    print(f"{len(result['rows'])} matched records; {result['only_a']} only in A, "
          f"{result['only_b']} only in B. Biggest moves (B/A; < 1 is faster in B):")
    print(text_table(result))
    print(f"page: {out / 'compare.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
