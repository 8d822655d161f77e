"""What moved between two report folders: ``python -m nsa_report.compare A B [--out DIR]
[--force]``.

Matches every record of ``A/results.json`` with its twin in ``B/results.json`` on all the
fields that say what was measured (``compare_match``), reports B / A per time (below 1 is
faster in B) with a noise verdict where the records carry their spread (``compare_moves``),
and leads with ours / SGLang, ours / vLLM and ours / floor per mode in A and in B
(``compare_modes``). Writes ``compare.html``, ``compare.json`` and one
``compare_<mode>.png`` per mode into ``--out`` (default: ``reports/compare-A-vs-B``).

Exit status 2, with nothing written, when a document cannot be read (the message names the
file and field) and when A and B differ in ``interpreter`` or ``profile``: interpreter
times against GPU times, or quick sizes against full ones, are not a comparison. ``--force``
compares anyway, with the difference at the top of the page and of the output.
"""
import argparse
import sys
from pathlib import Path

from . import compare_modes, compare_moves
from .compare_load import TIMES, CompareInputError, load_report
from .compare_match import describe, match
from .fmt import fmt
from .pages import render
from .results import STAMP_KEYS, write_json_atomic

#: The fields that must agree for B / A to mean anything.
MUST_AGREE = ("interpreter", "profile")
#: Fields whose difference leaves B / A meaningful but mixes its causes: a device compare at
#: two commits moves with the code as well as with the machine.
ALSO_MOVES = ("commit", "driver", "torch", "triton", "python")
ROW_FIELDS = ("notebook", "stage", "workload", "variant", "next_n", "width", "bs", "tokens")


def interpreter_of(document):
    """The stamp's ``interpreter``, else what the records say (None when nothing does)."""
    stamp = (document.get("environment") or {}).get("interpreter")
    if isinstance(stamp, bool):
        return stamp
    flags = {r.get("interpreter") for r in document["records"]} - {None}
    return bool(flags.pop()) if len(flags) == 1 else (True if flags else None)


def disagreements(a, b):
    """``[(field, value in A, value in B)]`` for the fields in ``MUST_AGREE`` that differ
    (an unknown value agrees with anything)."""
    values = {"interpreter": (interpreter_of(a), interpreter_of(b)),
              "profile": tuple((d.get("environment") or {}).get("profile") for d in (a, b))}
    return [(f, *values[f]) for f in MUST_AGREE
            if None not in values[f] and values[f][0] != values[f][1]]


def confounders(a, b):
    """``[(field, value in A, value in B)]`` for the fields in ``ALSO_MOVES`` that differ
    (both known)."""
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    return [(f, env_a.get(f), env_b.get(f)) for f in ALSO_MOVES
            if env_a.get(f) is not None and env_b.get(f) is not None
            and env_a.get(f) != env_b.get(f)]


def _move_row(m):
    return {"record": describe(m["a"]), "time": m["time"], "a": m["va"], "b": m["vb"],
            "ratio": m["ratio"], "verdict": m["verdict"]}


def _record_rows(pairs, times):
    rows = []
    for ra, rb in pairs:
        row = [ra.get(k) for k in ROW_FIELDS]
        for t in times:
            va, vb = ra.get(t), rb.get(t)
            ok = va is not None and vb is not None and va > 0 and vb > 0
            row += [va, vb, compare_moves.ratio_of(va, vb) if ok else None]
        rows.append(row)
    return rows


def compare(a, b, modes=None):
    """Everything compare.json and compare.html show, for two checked results documents
    (``modes``: ``compare_modes.mode_rows`` of them, when already computed)."""
    matched = match(a["records"], b["records"])
    moves = compare_moves.moves(matched["pairs"])
    compared = compare_moves.compared_per_notebook(moves)
    notebooks = [{"notebook": nb, **counts, "compared": compared.get(nb, 0)}
                 for nb, counts in matched["notebooks"].items()]
    times = [t for t in TIMES if any(m["time"] == t for m in moves)]
    if modes is None:
        modes = compare_modes.mode_rows(a["records"], b["records"])
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    return {
        "stamps": [[k, env_a.get(k), env_b.get(k)] for k in (*STAMP_KEYS, "run")],
        "devices": [env_a.get("device") or "A", env_b.get("device") or "B"],
        "disagree": [list(d) for d in disagreements(a, b)],
        "confounders": [list(d) for d in confounders(a, b)],
        "warnings": matched["warnings"],
        "counts": {"a": len(a["records"]), "b": len(b["records"]),
                   "matched": len(matched["pairs"]), "compared": sum(compared.values()),
                   "only_a": len(matched["only_a"]), "only_b": len(matched["only_b"])},
        "notebooks": notebooks,
        "only_a": [describe(r) for r in matched["only_a"]],
        "only_b": [describe(r) for r in matched["only_b"]],
        "modes": [{k: v for k, v in row.items() if k != "pairs"} for row in modes],
        "ratio_fields": [list(r) for r in compare_modes.RATIOS],
        "headline": [_move_row(m) for m in compare_moves.headline(moves)],
        "floors": [_move_row(m) for m in compare_moves.floor_moves(moves)],
        "stages": compare_moves.per_stage(moves),
        "verdicts": {v: sum(m["verdict"] == v for m in moves)
                     for v in (compare_moves.NOISE, compare_moves.REAL, compare_moves.UNKNOWN)},
        "not_comparable": sum(m["ratio"] is None for m in moves),
        "key": list(ROW_FIELDS), "times": times,
        "rows": _record_rows(matched["pairs"], times),
    }


def text_report(result):
    """What the console shows: the warnings, the counts, the modes, the biggest moves."""
    c = result["counts"]
    lines = [f"WARNING: A and B differ in {f}: {va} in A, {vb} in B; B / A compares unlike "
             "times" for f, va, vb in result["disagree"]]
    lines += [f"note: A and B also differ in {f} ({va} in A, {vb} in B): B / A moves with it "
              "as well as with the machine" for f, va, vb in result["confounders"]]
    lines += [f"warning: {w}" for w in result["warnings"]]
    lines.append(f"{c['matched']} of A's {c['a']} and B's {c['b']} records matched "
                 f"({c['compared']} with a time in both); {c['only_a']} only in A, "
                 f"{c['only_b']} only in B.")
    for nb in result["notebooks"]:
        lines.append(f"  {nb['notebook']}: {nb['matched']} matched of {nb['a']} (A) / "
                     f"{nb['b']} (B), {nb['compared']} compared")
    if result["modes"]:
        dev_a, dev_b = result["devices"]
        lines.append(f"Per mode, ours / peer in A ({dev_a}) -> B ({dev_b}); below 1: ours "
                     "faster:")
        for row in result["modes"]:
            parts = [f"{name} {fmt(row[f]['a'])} -> {fmt(row[f]['b'])}"
                     for f, name in compare_modes.RATIOS if row[f]["a"] or row[f]["b"]]
            lines.append(f"  {row['label']}: " + "; ".join(parts)
                         + f"; ours B/A {fmt(row['ours_moved'])}")
    lines.append("Biggest moves outside the noise (B/A; < 1 is faster in B; floors left out):")
    for m in result["headline"]:
        lines.append(f"  {m['ratio']:>8.3g}x  {m['time']:<14} {m['record']}"
                     + (" [no spread stored]" if m["verdict"] == compare_moves.UNKNOWN else ""))
    return "\n".join(lines)


def _out_dir(args, a_dir, b_dir):
    if args.out:
        return Path(args.out)
    return a_dir.resolve().parent / f"compare-{a_dir.resolve().name}-vs-{b_dir.resolve().name}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nsa_report.compare",
                                     description="What moved between two report folders.")
    parser.add_argument("a", help="report folder A (the reference, e.g. reports/h100)")
    parser.add_argument("b", help="report folder B (e.g. reports/h200 or reports/latest)")
    parser.add_argument("--out", help="folder for compare.html, compare.json and the figures "
                        "(default: reports/compare-A-vs-B beside A)")
    parser.add_argument("--force", action="store_true",
                        help="compare even when A and B differ in interpreter or profile")
    args = parser.parse_args(argv)
    a_dir, b_dir = Path(args.a), Path(args.b)
    try:
        a, b = load_report(a_dir), load_report(b_dir)
    except CompareInputError as exc:
        print(f"nsa_report.compare: error: {exc}", file=sys.stderr)
        return 2
    differ = disagreements(a, b)
    if differ and not args.force:
        for field, va, vb in differ:
            print(f"nsa_report.compare: error: A and B differ in {field} ({va} in {a_dir}, "
                  f"{vb} in {b_dir}): their times are not comparable; --force compares anyway",
                  file=sys.stderr)
        return 2
    modes = compare_modes.mode_rows(a["records"], b["records"])
    result = compare(a, b, modes)
    out = _out_dir(args, a_dir, b_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["a"], result["b"] = a_dir.resolve().name, b_dir.resolve().name
    result["figures"], result["figures_note"] = compare_modes.plot_modes(
        modes, out, result["a"], result["b"])
    write_json_atomic(out / "compare.json", result)
    (out / "compare.html").write_text(render("compare.html.j2", **result), encoding="utf-8")
    print(text_report(result))
    print(f"page: {out / 'compare.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
