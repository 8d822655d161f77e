"""How each matched time moved, and whether the move is larger than the measurement's noise.

A record may carry the spread of a time over its rounds: ``<time>_p20`` and ``<time>_p80``
(older reports do not). A move B / A is *noise* when B's median lies inside A's p20..p80 band
and A's inside B's (only the band that exists counts when one side has none), or when
|log(B / A)| is below the pooled relative spread sqrt(sA² + sB²), s = log(p80 / p20) / 2.
Without any spread the verdict is ``no spread``: shown, never called noise or real.

Moves are ranked by |log B - log A|, taken from each time's own log, so a ratio that
underflows to 0 (or overflows) is still ranked; zero and negative times are not ratioed
(counted as ``not comparable``).
"""
import math

from .compare_load import TIMES
from .points import is_floor

NOISE, REAL, UNKNOWN = "noise", "outside the spread", "no spread"
HEADLINE_MOVES = 15


def _band(record, time):
    lo, hi = record.get(f"{time}_p20"), record.get(f"{time}_p80")
    if lo is None or hi is None or not 0 < lo <= hi:
        return None
    return lo, hi


def verdict(va, vb, band_a, band_b):
    """NOISE, REAL or UNKNOWN for a move from ``va`` to ``vb`` (both > 0)."""
    if band_a is None and band_b is None:
        return UNKNOWN
    inside = [band_a[0] <= vb <= band_a[1]] if band_a else []
    inside += [band_b[0] <= va <= band_b[1]] if band_b else []
    spread2 = sum((math.log(b[1] / b[0]) / 2) ** 2 for b in (band_a, band_b) if b)
    if all(inside) or abs(math.log(vb) - math.log(va)) < math.sqrt(spread2):
        return NOISE
    return REAL


def ratio_of(va, vb):
    """B / A of two positive times: ``inf`` or ``0.0`` when it leaves float range."""
    return vb / va


def moves(pairs):
    """One dict per (matched pair, time both carry): ``a``, ``b`` (the records), ``time``,
    ``va``, ``vb``, ``ratio`` (None when a time is zero or negative), ``log`` (|log B/A|),
    ``verdict``, ``floor`` (a launch floor's record)."""
    out = []
    for ra, rb in pairs:
        for time in TIMES:
            va, vb = ra.get(time), rb.get(time)
            if va is None or vb is None:
                continue
            move = {"a": ra, "b": rb, "time": time, "va": va, "vb": vb, "ratio": None,
                    "log": None, "verdict": None, "floor": is_floor(ra.get("stage"))}
            if va > 0 and vb > 0:
                move["ratio"] = ratio_of(va, vb)
                move["log"] = abs(math.log(vb) - math.log(va))
                move["verdict"] = verdict(va, vb, _band(ra, time), _band(rb, time))
            out.append(move)
    return out


def headline(all_moves, count=HEADLINE_MOVES):
    """The biggest moves of our stages and the peers' that are not inside the noise, one per
    record (its time that moved most): no launch floor (their moves are the machine's, listed
    apart), no zero or negative time, no time that did not move at all."""
    biggest = {}
    for m in all_moves:
        if not m["floor"] and m["log"] and m["verdict"] != NOISE:
            if id(m["a"]) not in biggest or m["log"] > biggest[id(m["a"])]["log"]:
                biggest[id(m["a"])] = m
    return sorted(biggest.values(), key=lambda m: -m["log"])[:count]


def floor_moves(all_moves):
    return sorted((m for m in all_moves if m["floor"] and m["log"] is not None),
                  key=lambda m: -m["log"])


def per_stage(all_moves):
    """Per (notebook, stage, time): sizes, geometric mean of B / A, min, max, how many moves
    are inside the noise; sorted by notebook and stage."""
    groups = {}
    for m in all_moves:
        if m["ratio"] is not None and 0 < m["ratio"] < math.inf:
            key = (m["a"].get("notebook"), m["a"].get("stage"), m["time"])
            groups.setdefault(key, []).append(m)
    rows = []
    for (notebook, stage, time), ms in sorted(groups.items(), key=lambda kv: tuple(
            str(x) for x in kv[0])):
        ratios = [m["ratio"] for m in ms]
        rows.append({"notebook": notebook, "stage": stage, "time": time, "sizes": len(ms),
                     "geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)),
                     "min": min(ratios), "max": max(ratios), "floor": is_floor(stage),
                     "noise": sum(m["verdict"] == NOISE for m in ms),
                     "no_spread": sum(m["verdict"] == UNKNOWN for m in ms)})
    return rows


def compared_per_notebook(all_moves):
    """``{notebook: records with at least one positive time in both A and B}``."""
    seen = {}
    for m in all_moves:
        if m["ratio"] is not None:
            seen.setdefault(m["a"].get("notebook"), set()).add(id(m["a"]))
    return {nb: len(ids) for nb, ids in seen.items()}
