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
``best_graph_us``), plus any of ``width``, ``next_n``, ``config``, ``interpreter``.
``results.json`` = ``{"status", "environment", "records" (each with its "notebook"),
"notebooks" (status, links, figures, error), "extras" (each notebook's "extra"),
"problems"}``.
"""
import datetime
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
