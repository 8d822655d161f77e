"""Which record of B is which record of A: every field that says what was measured.

A record's *identity* is every field that is not a measurement: stage, workload, mode,
variant, config, bs, tokens, width, next_n, shape, notebook and any field a notebook adds
later. Measurements (times and their spreads, ratios such as ``vs_floor``, ``floor_us``,
``bytes``, ``syncs``) and free text about the run (``note``, ``graph_note``, ``interpreter``)
are not part of it. A missing field and a null one are the same.

Records that share an identity inside one report (a notebook that sweeps the same point twice)
are matched in the order they appear and named in the warnings; records left over that differ
only in ``config`` are matched next and named too: nothing is dropped silently.
"""
import json

#: Fields that carry a result or a remark about the run, never what was measured.
NOT_IDENTITY = frozenset({"note", "graph_note", "interpreter", "bytes", "syncs", "floor_us"})


def is_identity_field(field):
    return not (field in NOT_IDENTITY or field.endswith("_us") or "_us_" in field
                or field.startswith("vs_"))


def identity(record, without=()):
    """A hashable identity: sorted (field, JSON value) pairs of the identity fields."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in record.items()
                        if v is not None and is_identity_field(k) and k not in without))


def describe(record):
    """``stage @ workload bs=8 width=2048 (notebook)``: a record in one line."""
    shown = ("variant", "next_n", "width", "bs", "tokens", "shape")
    where = " ".join(f"{k}={record[k]}" for k in shown if record.get(k) not in (None, ""))
    return f"{record.get('stage')} @ {record.get('workload')} {where} ({record.get('notebook')})"


def _occurrences(records, without=()):
    """``{(identity, n): record}`` with n counting the earlier records of that identity, and
    the set of identities held by more than one record."""
    seen, out = {}, {}
    for record in records:
        key = identity(record, without)
        n = seen.get(key, 0)
        seen[key] = n + 1
        out[(key, n)] = record
    return out, {k for k, c in seen.items() if c > 1}


def _pair(records_a, records_b, without=()):
    occ_a, dup_a = _occurrences(records_a, without)
    occ_b, dup_b = _occurrences(records_b, without)
    pairs = [(ra, occ_b[key]) for key, ra in occ_a.items() if key in occ_b]
    only_a = [ra for key, ra in occ_a.items() if key not in occ_b]
    only_b = [rb for key, rb in occ_b.items() if key not in occ_a]
    return pairs, only_a, only_b, dup_a, dup_b


def _by_notebook(records):
    out = {}
    for r in records:
        out.setdefault(r.get("notebook"), []).append(r)
    return out


COUNTS = ("a", "b", "matched", "only_a", "only_b", "shared_a", "shared_b")


def match(records_a, records_b):
    """``{"pairs": [(record_a, record_b)], "only_a": [...], "only_b": [...],
    "notebooks": {notebook: {count: n}}, "warnings": [str]}``.

    Pairs come first on the full identity; records left over on either side that agree on
    everything but ``config`` (a peer's version in its description, say) are paired next and
    named in a warning."""
    pairs, only_a, only_b, dup_a, dup_b = _pair(records_a, records_b)
    loose, only_a, only_b, _, _ = _pair(only_a, only_b, without=("config",))
    warnings = []
    for nb, rs in _by_notebook([ra for ra, _ in loose]).items():
        ra, rb = next((ra, rb) for ra, rb in loose if ra.get("notebook") == nb)
        warnings.append(f"{nb}: {len(rs)} records matched although their config differs "
                        f"(e.g. {describe(ra)}: {ra.get('config')!r} in A, "
                        f"{rb.get('config')!r} in B)")
    pairs += loose
    shared_a = [r for r in records_a if identity(r) in dup_a]
    shared_b = [r for r in records_b if identity(r) in dup_b]
    in_a, in_b = _by_notebook(shared_a), _by_notebook(shared_b)
    for nb in dict.fromkeys([*in_a, *in_b]):
        n_a, n_b = len(in_a.get(nb, [])), len(in_b.get(nb, []))
        how_many = f"{n_a} records of A and B" if n_a == n_b else (
            f"{n_a} records of A and {n_b} of B")
        example = (in_a.get(nb) or in_b[nb])[0]
        warnings.append(f"{nb}: {how_many} share their identity with another "
                        f"(e.g. {describe(example)}); matched in the order they appear")
    notebooks = {}
    for column, records in zip(COUNTS, (records_a, records_b, [ra for ra, _ in pairs], only_a,
                                        only_b, shared_a, shared_b)):
        for nb, rs in _by_notebook(records).items():
            notebooks.setdefault(nb, dict.fromkeys(COUNTS, 0))[column] = len(rs)
    return {"pairs": pairs, "only_a": only_a, "only_b": only_b, "notebooks": notebooks,
            "warnings": warnings}
