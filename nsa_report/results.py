"""Merge the notebooks' ``results_<notebook>.json`` fragments into one ``results.json``.

A fragment (written by ``nsa_kernels.bench.results.write_fragment``)::

    {"notebook": "05_zero_sync", "environment": {device, driver, torch, triton, python,
     commit, profile, interpreter, date}, "records": [...], "figures": ["x.png", ...],
     "extra": {"headline": [str], "tables": [{"title", "columns", "rows", "note"}],
               "targets": [{"target": str, "measured": any, "met": true|false|null,
                            "note": str}],
               "skipped": [{"what", "reason"}], ...}}

A record is one measurement: ``stage``, ``workload``, ``bs``, ``tokens`` and the times in µs
(``eager_us``, ``throughput_us``, ``graph_us``; optional ``host_us``, ``kernel_graph_us``,
``best_graph_us``), plus any of ``width``, ``next_n``, ``config``, ``interpreter`` and, for a
time ``<metric>``, its spread over rounds ``<metric>_p20`` and ``<metric>_p80``.
``results.json`` = ``{"status", "environment", "records" (each with its "notebook"),
"notebooks" (status, links, figures, error), "extras" (each notebook's "extra"),
"problems"}``.

A fragment part of the wrong shape (often one carried from a report of an older schema) does
not fail the build: that part alone is dropped and ``problems`` names the file and the field,
e.g. ``results_05_zero_sync.json: extra.tables[0].rows is a number, not a list; table
dropped``. Parts checked: ``environment`` and ``extra`` (objects), ``extra.headline`` (text or
a list), ``extra.tables`` (objects whose ``columns`` and ``rows`` are lists), ``targets``
and ``skipped`` (lists), ``figures`` (a list of file names inside the report folder),
``records`` (a list of objects whose sizes ``bs``, ``tokens``, ``width``, ``next_n`` and
times are numbers or null).

``results.csv`` (beside ``results.json``, written by every run) is the records in long
format, one row per record and time metric present in it, with the columns ``CSV_COLUMNS``:
``device, commit`` (the report's stamp), ``notebook, stage, workload, config, bs, width,
next_n`` (the record's; empty when absent), ``metric`` (one of ``CSV_METRICS``), ``median``
(the record's value of that metric, µs) and ``p20, p80`` (the record's ``<metric>_p20`` /
``<metric>_p80`` when measured, else empty). A metric whose value is null (e.g. ``graph_us``
of a stage that cannot be captured) has no row.
"""
import csv
import datetime
import io
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .failure import describe_failure, notebook_failed

REQUIRED_RECORD_KEYS = ("stage", "workload", "bs", "tokens", "eager_us", "throughput_us",
                        "graph_us")
#: Record fields that must be numbers (or null) wherever they appear.
NUMERIC_RECORD_KEYS = ("bs", "tokens", "width", "next_n", "eager_us", "throughput_us",
                       "graph_us", "host_us", "kernel_graph_us", "best_graph_us")
CSV_METRICS = ("eager_us", "throughput_us", "graph_us", "kernel_graph_us", "host_us")
CSV_COLUMNS = ("device", "commit", "notebook", "stage", "workload", "config", "bs", "width",
               "next_n", "metric", "median", "p20", "p80")
STAMP_KEYS = ("device", "driver", "torch", "triton", "python", "commit", "profile",
              "interpreter", "date")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def clean(value):
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_json_atomic(path, document):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(document), indent=1, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def match_notebook(fragment_name, names):
    """The run's notebook that a fragment belongs to (exact, or with/without the NN_ prefix)."""
    if fragment_name in names:
        return fragment_name
    for name in names:
        prefix, _, rest = name.partition("_")
        if fragment_name in (rest, prefix) or fragment_name.partition("_")[2] == rest != "":
            return name
    return None


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _safe_figure(name):
    """A figure is a plain file name or relative path inside the report folder."""
    if not isinstance(name, str) or not name:
        return False
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name


def check_fragment(fragment, file, problems):
    """Drop the parts of a fragment that have the wrong shape; each drop is a problem naming
    ``file`` and the field. Returns the fragment with only well-formed parts."""
    def drop(field, value, wanted, what):
        problems.append(f"{file}: {field} is {_kind(value)}, not {wanted}; {what} dropped")

    out = dict(fragment)
    for key, wanted in (("environment", "an object"), ("extra", "an object")):
        if key in out and out[key] is not None and not isinstance(out[key], dict):
            drop(key, out[key], wanted, key)
            out[key] = {} if key == "extra" else None
    extra = dict(out.get("extra") or {})
    headline = extra.get("headline")
    if headline is not None and not isinstance(headline, (str, list)):
        drop("extra.headline", headline, "text or a list", "headline")
        extra.pop("headline")
    for key in ("targets", "skipped"):
        if extra.get(key) is not None and not isinstance(extra[key], list):
            drop(f"extra.{key}", extra[key], "a list", key)
            extra.pop(key)
    if extra.get("tables") is not None:
        if not isinstance(extra["tables"], list):
            drop("extra.tables", extra["tables"], "a list", "tables")
            extra.pop("tables")
        else:
            tables = []
            for i, table in enumerate(extra["tables"]):
                field = f"extra.tables[{i}]"
                if not isinstance(table, dict):
                    drop(field, table, "an object", "table")
                    continue
                bad = next((k for k in ("columns", "rows") if table.get(k) is not None
                            and not isinstance(table[k], list)), None)
                if bad:
                    drop(f"{field}.{bad}", table[bad], "a list", "table")
                    continue
                tables.append(table)
            extra["tables"] = tables
    out["extra"] = extra
    if out.get("targets") is not None and not isinstance(out["targets"], list):
        drop("targets", out["targets"], "a list", "targets")
        out.pop("targets")
    figures = out.get("figures")
    if figures is not None and not isinstance(figures, list):
        drop("figures", figures, "a list", "figures")
        figures = []
    kept = []
    for i, name in enumerate(figures or []):
        if _safe_figure(name):
            kept.append(name)
        else:
            problems.append(f"{file}: figures[{i}] ({name!r}) is not a file name inside the "
                            "report folder; figure dropped")
    out["figures"] = kept
    records = out.get("records")
    if records is not None and not isinstance(records, list):
        drop("records", records, "a list", "records")
        records = []
    good = []
    for i, record in enumerate(records or []):
        if not isinstance(record, dict):
            drop(f"records[{i}]", record, "an object", "record")
            continue
        bad = next((k for k in NUMERIC_RECORD_KEYS
                    if record.get(k) is not None and not _is_number(record[k])), None)
        if bad:
            drop(f"records[{i}].{bad} ({record.get('stage', '?')})", record[bad], "a number",
                 "record")
            continue
        good.append(record)
    out["records"] = good
    return out


def load_fragments(report_dir, names, problems):
    """``{notebook name: fragment}`` for every ``results_*.json`` in ``report_dir``."""
    fragments = {}
    for path in sorted(Path(report_dir).glob("results_*.json")):
        try:
            fragment = read_json(path)
            if not isinstance(fragment, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: unreadable results fragment ({exc})")
            continue
        fragment = check_fragment(fragment, path.name, problems)
        declared = str(fragment.get("notebook") or path.stem[len("results_"):])
        name = match_notebook(declared, names) or declared
        if name in fragments:
            problems.append(f"{path.name}: a second fragment for {name}; merged into the first")
            fragments[name]["records"] = list(fragments[name].get("records") or []) + list(
                fragment.get("records") or [])
            continue
        fragment["_file"] = path.name
        fragments[name] = fragment
    return fragments


def fallback_environment(profile):
    """What can be known without a fragment (and without importing torch)."""
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    commit = os.environ.get("NSA_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"],
                                    cwd=Path(__file__).resolve().parents[1], capture_output=True,
                                    text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"device": "unknown", "driver": None, "torch": version("torch"),
            "triton": version("triton"), "python": platform.python_version(), "commit": commit,
            "profile": profile, "interpreter": None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def infer_status(report_dir, name):
    nb = Path(report_dir) / f"{name}.ipynb"
    if not nb.exists():
        return {"status": "not run"}
    return {"status": "failed" if notebook_failed(nb) else "ok"}


def fragment_targets(fragment):
    """A fragment's targets: ``extra.targets`` and a top-level ``targets`` list."""
    extra = fragment.get("extra") or {}
    targets = list(extra.get("targets") or []) + list(fragment.get("targets") or [])
    return [t for t in targets if isinstance(t, dict)]


def _notebook_entry(report_dir, name, st, fragment):
    state = st.get("status", "not run")
    entry = {"name": name, "status": state,
             "html": f"{name}.html" if (report_dir / f"{name}.html").exists() else None,
             "notebook": f"{name}.ipynb" if (report_dir / f"{name}.ipynb").exists() else None,
             "fragment": fragment["_file"] if fragment else None,
             "figures": list(fragment.get("figures") or []) if fragment else [],
             "seconds": st.get("seconds"), "error": None}
    if state == "failed":
        if st.get("error"):
            entry["error"] = {"summary": st["error"]}
        else:
            entry["error"] = describe_failure(report_dir / f"{name}.ipynb", st.get("log"),
                                              st.get("reason"))
    for key in ("note", "carried_from"):
        if st.get(key):
            entry[key] = st[key]
    return entry


def _environment(fragments, ordered, profile, problems):
    envs = [(n, fragments[n].get("environment")) for n in ordered
            if n in fragments and isinstance(fragments[n].get("environment"), dict)]
    if not envs:
        problems.append("no notebook wrote a results fragment: the environment stamp is the "
                        "report builder's (device unknown)")
        return fallback_environment(profile)
    environment = dict(envs[0][1])
    for key in ("device", "torch", "triton", "python", "commit", "profile", "interpreter"):
        values = {json.dumps(env.get(key)) for _, env in envs}
        if len(values) > 1:
            problems.append(f"the fragments disagree on {key}: " + ", ".join(
                f"{n}={env.get(key)}" for n, env in envs))
    return environment


def merge(report_dir, run_name, names, status, profile=None):
    """Build the ``results.json`` document. Returns ``(results, problems)``."""
    report_dir = Path(report_dir)
    problems = []
    fragments = load_fragments(report_dir, names, problems)
    ordered = list(names) + sorted(n for n in fragments if n not in names)

    notebooks = []
    for name in ordered:
        st = dict(status.get(name) or {"status": "not run"})
        if name not in names:
            st = {"status": "extra", "note": "results fragment without a notebook in this run"}
        notebooks.append(_notebook_entry(report_dir, name, st, fragments.get(name)))

    environment = _environment(fragments, ordered, profile, problems)
    if profile and environment.get("profile") in (None, ""):
        environment["profile"] = profile
    environment["run"] = run_name
    environment["notebooks"] = list(names)

    records = []
    for name in ordered:
        for i, record in enumerate((fragments.get(name) or {}).get("records") or []):
            if not isinstance(record, dict):
                problems.append(f"{name}: record {i} is not an object; dropped")
                continue
            missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
            if missing:
                problems.append(f"{name}: record {i} ({record.get('stage', '?')}) lacks "
                                + ", ".join(missing))
            records.append({**record, "notebook": name})

    extras = {}
    for name in ordered:
        if name in fragments:
            extra = dict(fragments[name].get("extra") or {})
            extra["targets"] = fragment_targets(fragments[name])
            extras[name] = extra
    failed = [nb["name"] for nb in notebooks if nb["status"] == "failed"]
    results = {"status": "failed" if failed else "ok", "environment": environment,
               "records": records, "notebooks": notebooks, "extras": extras,
               "problems": problems}
    return clean(results), problems


def csv_rows(results):
    """The long-format rows of ``results.csv`` (see the module docstring)."""
    env = results.get("environment") or {}
    rows = []
    for record in results.get("records") or []:
        for metric in CSV_METRICS:
            if not _is_number(record.get(metric)):
                continue
            spread = [record.get(f"{metric}_{q}") for q in ("p20", "p80")]
            rows.append([env.get("device"), env.get("commit")]
                        + [record.get(k) for k in ("notebook", "stage", "workload", "config",
                                                   "bs", "width", "next_n")]
                        + [metric, record[metric]]
                        + [q if _is_number(q) else None for q in spread])
    return rows


def write_csv(path, results):
    """Write ``results.csv`` atomically: a header, then ``csv_rows``; null is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(results):
        writer.writerow(["" if v is None else v for v in row])
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
