#!/usr/bin/env python3
"""Merge the notebooks' results fragments into ``results.json`` and write ``index.html``.

Standard library only (``json``, ``html``): it must run even where the notebooks broke.

Usage::

    build_report.py REPORT_DIR [--run NAME] [--notebooks N1,N2,...] [--status JSON|@FILE]
                    [--profile P]
    build_report.py --describe-failure EXECUTED.ipynb [--name NAME] [--log PAPERMILL.log]

``REPORT_DIR`` holds what ``run_all.sh`` left there: the executed ``NAME.ipynb`` and
``NAME.html`` of each notebook, the ``results_<notebook>.json`` fragments that
``nsa_kernels.bench.results.write_fragment`` wrote, and their PNG figures.

``--notebooks``: the notebooks of the run, in order (names without ``.ipynb``).
``--status``: per-notebook status as JSON, ``{"NAME": {"status": "ok"|"failed"|"not run",
"log": "papermill log (optional)", "seconds": 12.3 (optional), "error": "text (optional)"}}``,
or ``@path`` to a file holding it. A notebook of ``--notebooks`` without a status is
"not run"; without ``--status`` at all, each status is read off its executed notebook.

``--describe-failure`` prints one line for a failed notebook,
``FAILED: notebook NAME, cell N (In [k]): ErrorType: message``, where N counts the code
cells of the source notebook (1-based; papermill's injected-parameters cell is not
counted) and k is the execution count shown in the executed notebook and its HTML.

Exit status: 0 when the report was written (whatever the notebooks' status), 2 on bad usage.
"""
import argparse
import datetime
import html
import json
import math
import os
import re
import sys
import urllib.parse
from pathlib import Path

REQUIRED_RECORD_KEYS = ("stage", "workload", "bs", "tokens", "eager_us", "throughput_us",
                        "graph_us")
ENV_STAMP = (("device", "device"), ("driver", "driver"), ("torch", "torch"),
             ("triton", "triton"), ("python", "Python"), ("commit", "commit"),
             ("profile", "profile"), ("date", "date"))
RECORD_COLUMNS = ("stage", "workload", "bs", "tokens", "eager_us", "throughput_us", "graph_us",
                  "kernel_graph_us")
MAX_RECORD_ROWS = 60
INTERPRETER_BANNER = ("Triton interpreter on CPU: timings are interpreter timings and say "
                      "nothing about GPU speed")


# --------------------------------------------------------------------------- failures

def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _one_line(text, limit=300):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|"
                       r"Timeout|NoSuchKernel)\b.*")


def _log_reason(log_path):
    """The most telling line of a papermill log: the last exception line, else the last line."""
    if not log_path:
        return None
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [_ANSI.sub("", line).strip() for line in re.split(r"[\r\n]+", text)]
    lines = [line for line in lines if line and not re.match(r"^(Executing|Input|Output)", line)
             and "it/s]" not in line and "s/cell]" not in line]
    for line in reversed(lines):
        if _EXC_LINE.match(line):
            return line
    return lines[-1] if lines else None


def describe_failure(notebook_path, log_path=None):
    """Where and why an executed notebook failed.

    Returns ``{"cell", "execution_count", "ename", "evalue", "started", "summary"}``: ``cell``
    is the 1-based index among the source notebook's code cells (papermill's
    injected-parameters cell is not counted), ``None`` when no cell can be blamed.
    """
    info = {"cell": None, "execution_count": None, "ename": None, "evalue": None,
            "started": False, "summary": None}
    try:
        nb = _read_json(notebook_path)
        cells = nb.get("cells", [])
    except (OSError, ValueError, AttributeError):
        reason = _log_reason(log_path) or "no executed notebook was written"
        info.update(ename="NotStarted", evalue=reason,
                    summary=f"could not start: {_one_line(reason)}")
        return info

    code_index = 0
    blamed = None
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" not in tags:
            code_index += 1
        index = code_index if "injected-parameters" not in tags else None
        pm = cell.get("metadata", {}).get("papermill", {})
        if pm.get("start_time") or cell.get("execution_count"):
            info["started"] = True
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            if out.get("ename") == "SystemExit" and str(out.get("evalue", "")) in ("", "0"):
                continue
            info.update(cell=index, execution_count=cell.get("execution_count"),
                        ename=out.get("ename") or "Error", evalue=out.get("evalue") or "")
            break
        if info["ename"]:
            break
        if blamed is None and (pm.get("exception") is True or pm.get("status") == "running"):
            blamed = (index, cell.get("execution_count"))

    if info["ename"] is None and blamed is not None:
        reason = _log_reason(log_path) or "the kernel died or the cell timed out"
        info.update(cell=blamed[0], execution_count=blamed[1], ename="CellExecutionError",
                    evalue=reason)
    if info["ename"] is None:
        reason = _log_reason(log_path)
        if not info["started"]:
            reason = reason or "the kernel ran no cell"
            info.update(ename="NotStarted", evalue=reason,
                        summary=f"could not start: {_one_line(reason)}")
            return info
        info.update(ename="Error", evalue=reason or "failed without an error output")

    where = "cell ?" if info["cell"] is None else f"cell {info['cell']}"
    if info["execution_count"] is not None:
        where += f" (In [{info['execution_count']}])"
    message = _one_line(info["evalue"])
    info["summary"] = f"{where}: {info['ename']}" + (f": {message}" if message else "")
    return info


def failure_line(name, info):
    return f"FAILED: notebook {name}, {info['summary']}"


# --------------------------------------------------------------------------- merging

def _clean(value):
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _match_notebook(fragment_name, names):
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
            fragment = _read_json(path)
            if not isinstance(fragment, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: unreadable results fragment ({exc})")
            continue
        declared = str(fragment.get("notebook") or path.stem[len("results_"):])
        name = _match_notebook(declared, names) or declared
        if name in fragments:
            problems.append(f"{path.name}: a second fragment for {name}; merged into the first")
            fragments[name]["records"] = list(fragments[name].get("records") or []) + list(
                fragment.get("records") or [])
            continue
        fragment["_file"] = path.name
        fragments[name] = fragment
    return fragments


def notebook_failed(notebook_path):
    """True when an executed notebook shows an error (papermill's own rule), or is unreadable."""
    try:
        nb = _read_json(notebook_path)
    except (OSError, ValueError):
        return True
    if (nb.get("metadata", {}).get("papermill", {}) or {}).get("exception"):
        return True
    for cell in nb.get("cells", []):
        if (cell.get("metadata", {}).get("papermill", {}) or {}).get("exception") is True:
            return True
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error" and not (
                    out.get("ename") == "SystemExit" and str(out.get("evalue", "")) in ("", "0")):
                return True
    return False


def fallback_environment(profile):
    """What can be known without a fragment (and without importing torch)."""
    from importlib import metadata
    import platform
    import subprocess

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


def merge(report_dir, run_name, names, status, profile=None):
    """Build the ``results.json`` document. Returns ``(results, problems)``."""
    report_dir = Path(report_dir)
    problems = []
    fragments = load_fragments(report_dir, names, problems)
    ordered = list(names) + sorted(n for n in fragments if n not in names)

    notebooks = []
    for name in ordered:
        st = dict(status.get(name) or {"status": "not run"})
        if name not in names and name in fragments:
            st = {"status": "extra", "note": "results fragment without a notebook in this run"}
        state = st.get("status", "not run")
        entry = {"name": name, "status": state,
                 "html": f"{name}.html" if (report_dir / f"{name}.html").exists() else None,
                 "notebook": f"{name}.ipynb" if (report_dir / f"{name}.ipynb").exists() else None,
                 "fragment": fragments[name]["_file"] if name in fragments else None,
                 "figures": list(fragments[name].get("figures") or []) if name in fragments else [],
                 "seconds": st.get("seconds"), "error": None}
        if state == "failed":
            if st.get("error"):
                entry["error"] = {"summary": st["error"]}
            else:
                info = describe_failure(report_dir / f"{name}.ipynb", st.get("log"))
                entry["error"] = info
        if st.get("note"):
            entry["note"] = st["note"]
        notebooks.append(entry)

    environment = {}
    envs = [(n, fragments[n].get("environment")) for n in ordered
            if n in fragments and isinstance(fragments[n].get("environment"), dict)]
    if envs:
        environment = dict(envs[0][1])
        for key in ("device", "torch", "triton", "python", "commit", "profile", "interpreter"):
            values = {json.dumps(env.get(key)) for _, env in envs}
            if len(values) > 1:
                problems.append(f"the fragments disagree on {key}: " + ", ".join(
                    f"{n}={env.get(key)}" for n, env in envs))
    else:
        environment = fallback_environment(profile)
        problems.append("no notebook wrote a results fragment: the environment stamp is the "
                        "report builder's (device unknown)")
    if profile and environment.get("profile") in (None, ""):
        environment["profile"] = profile
    environment["run"] = run_name
    environment["notebooks"] = list(names)

    records = []
    for name in ordered:
        fragment = fragments.get(name)
        if not fragment:
            continue
        for i, record in enumerate(fragment.get("records") or []):
            if not isinstance(record, dict):
                problems.append(f"{name}: record {i} is not an object; dropped")
                continue
            missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
            if missing:
                problems.append(f"{name}: record {i} ({record.get('stage', '?')}) lacks "
                                + ", ".join(missing))
            records.append({**record, "notebook": name})

    extras = {name: fragments[name].get("extra") or {} for name in ordered if name in fragments}
    failed = [nb["name"] for nb in notebooks if nb["status"] == "failed"]
    results = {
        "status": "failed" if failed else "ok",
        "environment": environment,
        "records": records,
        "notebooks": notebooks,
        "extras": extras,
        "problems": problems,
    }
    return _clean(results), problems


# --------------------------------------------------------------------------- HTML

def esc(value):
    return html.escape(str(value), quote=True)


def href(path):
    return esc(urllib.parse.quote(str(path)))


def fmt(value):
    """Cell text: floats to 3 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1e15 or mag < 1e-4:
            return f"{value:.3g}"
        if mag >= 1000:
            digits = int(math.floor(math.log10(mag))) - 2
            return f"{int(round(value, -digits)):,}"
        return f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _is_num(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def render_table(columns, rows, title=None, note=None):
    out = []
    if title:
        out.append(f"<h4>{esc(title)}</h4>")
    out.append('<div class="scroll"><table><thead><tr>')
    out.extend(f"<th>{esc(c)}</th>" for c in columns)
    out.append("</tr></thead><tbody>")
    for row in rows:
        if not isinstance(row, (list, tuple)):
            row = [row]
        out.append("<tr>" + "".join(
            f'<td class="{"num" if _is_num(cell) else "txt"}">{esc(fmt(cell))}</td>'
            for cell in row) + "</tr>")
    out.append("</tbody></table></div>")
    if note:
        out.append(f'<p class="note">{esc(note)}</p>')
    return "".join(out)


def render_targets(targets):
    rows = []
    for t in targets:
        if not isinstance(t, dict):
            continue
        met = t.get("met")
        mark = ('<span class="met">✓ met</span>' if met is True else
                '<span class="missed">✗ missed</span>' if met is False else
                '<span class="na">n/a</span>')
        rows.append(f"<tr><td class=\"txt\">{esc(t.get('target', ''))}</td>"
                    f"<td class=\"txt\">{esc(fmt(t.get('measured')))}</td><td>{mark}</td>"
                    f"<td class=\"txt\">{esc(t.get('note') or '')}</td></tr>")
    if not rows:
        return ""
    return ('<h4>Targets</h4><div class="scroll"><table class="targets"><thead><tr><th>target</th>'
            "<th>measured</th><th>met</th><th>note</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def render_records(records):
    if not records:
        return '<p class="none">no records</p>'
    columns = [c for c in RECORD_COLUMNS if any(c in r for r in records)]
    rows = [[r.get(c) for c in columns] for r in records[:MAX_RECORD_ROWS]]
    note = None
    if len(records) > MAX_RECORD_ROWS:
        note = f"first {MAX_RECORD_ROWS} of {len(records)} records; all are in results.json"
    return render_table(columns, rows, title="Records (µs)", note=note)


def render_extra(extra, records, show_records=True):
    """A notebook's headline, tables and targets (its records when it gave no table)."""
    out = []
    headline = extra.get("headline") or []
    if isinstance(headline, str):
        headline = [headline]
    if headline:
        out.append('<ul class="headline">' + "".join(f"<li>{esc(h)}</li>" for h in headline)
                   + "</ul>")
    tables = [t for t in (extra.get("tables") or []) if isinstance(t, dict)]
    for table in tables:
        out.append(render_table(table.get("columns") or [], table.get("rows") or [],
                                title=table.get("title"), note=table.get("note")))
    out.append(render_targets(extra.get("targets") or []))
    if not tables and show_records:
        out.append(render_records(records))
    return "".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;
max-width:1200px;padding:0 1rem;color:#1d1d1f;line-height:1.4}
h1{font-size:1.6rem;margin:.4rem 0}h2{margin-top:2rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}h3{margin-bottom:.3rem}h4{margin:.8rem 0 .3rem}
.stamp{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;color:#444;
background:#f5f5f7;padding:.4rem .6rem;border-radius:4px}
.banner{padding:.8rem 1rem;border-radius:6px;margin:.6rem 0;font-weight:600}
.banner-failed{background:#c62828;color:#fff;font-size:1.15rem}
.banner-failed ul{margin:.4rem 0 0;font-weight:400;font-size:1rem}.banner-failed a{color:#fff}
.banner-interp{background:#fff3cd;border:1px solid #e0b100;color:#5c4400}
.banner-ok{background:#e8f5e9;border:1px solid #81c784;color:#1b5e20;font-weight:400}
.banner-warn{background:#fff8e1;border:1px solid #ffb300;color:#4e3b00;font-weight:400}
table{border-collapse:collapse;margin:.3rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem}th{background:#f0f0f3;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}.note{font-size:.85rem;color:#555;margin:.2rem 0 .8rem}
.met{color:#1b5e20;font-weight:600}.missed{color:#c62828;font-weight:600}.na{color:#777}
.st-ok{color:#1b5e20;font-weight:600}.st-failed{color:#fff;background:#c62828;padding:0 .3rem;
font-weight:700;border-radius:3px}.st-notrun{color:#777}
.none{color:#777;font-style:italic}ul.headline li{margin:.2rem 0;font-size:1.05rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figure img{max-width:560px;border:1px solid #ddd}figcaption{font-size:.85rem;color:#444}
.error{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
"""


def _status_cell(nb):
    state = nb["status"]
    if state == "ok":
        return '<span class="st-ok">ok</span>'
    if state == "failed":
        err = (nb.get("error") or {}).get("summary") or "failed"
        return f'<span class="st-failed">FAILED</span> <span class="error">{esc(err)}</span>'
    return f'<span class="st-notrun">{esc(state)}</span>'


def render_index(results, report_dir):
    report_dir = Path(report_dir)
    env = results["environment"]
    run = env.get("run") or report_dir.name
    notebooks = results["notebooks"]
    extras = results["extras"]
    by_nb = {}
    for r in results["records"]:
        by_nb.setdefault(r["notebook"], []).append(r)
    failed = [nb for nb in notebooks if nb["status"] == "failed"]
    ran = [nb for nb in notebooks if nb["status"] != "extra"]
    names = [nb["name"] for nb in notebooks]
    summary = next((n for n in names if "summary" in n.lower()), None)

    title = f"nsa-workbook report: {run}"
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           '<meta name="viewport" content="width=device-width,initial-scale=1">',
           f"<title>{'FAILED — ' if failed else ''}{esc(title)}</title>",
           f"<style>{CSS}</style></head><body>"]
    if failed:
        items = "".join(
            f"<li><b>{esc(nb['name'])}</b>: {esc((nb.get('error') or {}).get('summary') or 'failed')}"
            + (f' — <a href="{href(nb["html"])}">{esc(nb["html"])}</a>' if nb.get("html") else "")
            + "</li>" for nb in failed)
        out.append(f'<div class="banner banner-failed" id="failed">This run FAILED: '
                   f"{len(failed)} of {len(ran)} notebooks failed. Its numbers are incomplete and "
                   f"it did not replace the last good report.<ul>{items}</ul></div>")
    out.append(f"<h1>{esc(title)}{' — FAILED' if failed else ''}</h1>")
    stamp = []
    for key, label in ENV_STAMP:
        value = env.get(key)
        value = "n/a" if value in (None, "") else value
        stamp.append(f"{label} {value}" if key != "device" else str(value))
    out.append(f'<p class="stamp">{esc(" · ".join(stamp))}</p>')
    if env.get("interpreter"):
        out.append(f'<div class="banner banner-interp">{esc(INTERPRETER_BANNER)}</div>')
    if not failed:
        out.append(f'<div class="banner banner-ok">All {len(ran)} notebooks of this run '
                   "completed.</div>")
    if results.get("problems"):
        out.append('<div class="banner banner-warn">Check these results:<ul>'
                   + "".join(f"<li>{esc(p)}</li>" for p in results["problems"]) + "</ul></div>")

    # The answer: the summary notebook first.
    out.append("<h2>Summary</h2>")
    if summary is None:
        out.append('<p class="none">no summary notebook in this run (run it with the others, '
                   "e.g. <code>--only …,07</code>)</p>")
    elif summary not in extras:
        out.append(f'<p class="none">{esc(summary)}: no results</p>')
    else:
        out.append(f"<h3>{esc(summary)}</h3>"
                   + render_extra(extras[summary], by_nb.get(summary, []), show_records=False))

    # Every target of the run in one table, right after the answer.
    all_targets = []
    for nb in notebooks:
        for t in (extras.get(nb["name"]) or {}).get("targets") or []:
            if isinstance(t, dict):
                all_targets.append(dict(t, target=f"{nb['name']}: {t.get('target', '?')}"))
    if all_targets:
        out.append("<h2>All targets of this run</h2>" + render_targets(all_targets))

    out.append("<h2>Notebooks</h2><table><thead><tr><th>notebook</th><th>status</th>"
               "<th>time</th><th>executed notebook</th></tr></thead><tbody>")
    for nb in notebooks:
        link = (f'<a href="{href(nb["html"])}">{esc(nb["name"])}</a>' if nb.get("html")
                else esc(nb["name"]))
        seconds = nb.get("seconds")
        ipynb = (f'<a href="{href(nb["notebook"])}">{esc(nb["notebook"])}</a>'
                 if nb.get("notebook") else "—")
        out.append(f"<tr><td>{link}</td><td>{_status_cell(nb)}</td>"
                   f"<td class=\"num\">{esc(fmt(float(seconds)) + ' s' if seconds is not None else '—')}"
                   f"</td><td>{ipynb}</td></tr>")
    out.append("</tbody></table>")


    out.append("<h2>Notebooks' results</h2>")
    for nb in notebooks:
        name = nb["name"]
        if name == summary:
            continue
        out.append(f"<h3 id=\"nb-{esc(name)}\">{esc(name)}"
                   + (' <span class="st-failed">FAILED</span>' if nb["status"] == "failed" else "")
                   + "</h3>")
        if name not in extras:
            out.append('<p class="none">no results</p>')
        else:
            out.append(render_extra(extras[name], by_nb.get(name, [])))

    out.append("<h2>Key plots</h2>")
    any_fig = False
    for nb in notebooks:
        figures = nb.get("figures") or []
        if not figures:
            continue
        any_fig = True
        out.append(f"<h3>{esc(nb['name'])}</h3><div>")
        for fig in figures:
            if (report_dir / str(fig)).exists():
                out.append(f'<figure><a href="{href(fig)}"><img src="{href(fig)}" '
                           f'alt="{esc(nb["name"])}: {esc(fig)}"></a>'
                           f"<figcaption>{esc(nb['name'])}: {esc(fig)}</figcaption></figure>")
            else:
                out.append(f'<p class="none">{esc(nb["name"])}: figure {esc(fig)} is missing</p>')
        out.append("</div>")
    if not any_fig:
        out.append('<p class="none">no plots</p>')

    skipped = []
    for name, extra in extras.items():
        for s in extra.get("skipped") or []:
            if isinstance(s, dict):
                skipped.append(f"{name}: skipped: {s.get('what', '?')} — {s.get('reason', '?')}")
            else:
                skipped.append(f"{name}: skipped: {s}")
    out.append("<h2>Skipped</h2>")
    out.append("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in skipped) + "</ul>" if skipped
               else '<p class="none">nothing skipped</p>')

    out.append('<h2>Data</h2><p>All records and the environment: '
               '<a href="results.json">results.json</a>.</p>')
    out.append("</body></html>\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- CLI

def _parse_status(text):
    if not text:
        return None
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    status = json.loads(text)
    if not isinstance(status, dict):
        raise ValueError("--status must be a JSON object")
    return {k: (v if isinstance(v, dict) else {"status": str(v)}) for k, v in status.items()}


def build(report_dir, run_name=None, names=None, status=None, profile=None):
    report_dir = Path(report_dir)
    if names is None:
        names = sorted(p.stem for p in report_dir.glob("*.ipynb"))
    if status is None:
        status = {name: infer_status(report_dir, name) for name in names}
    results, _ = merge(report_dir, run_name or report_dir.name, names, status, profile)
    tmp = report_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, report_dir / "results.json")
    tmp = report_dir / "index.html.tmp"
    tmp.write_text(render_index(results, report_dir), encoding="utf-8")
    os.replace(tmp, report_dir / "index.html")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
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
    names = [n.strip() for n in args.notebooks.split(",") if n.strip()] if args.notebooks \
        else None
    results = build(args.report_dir, args.run, names, status, args.profile)
    print(f"build_report: wrote {Path(args.report_dir) / 'results.json'} and index.html "
          f"({len(results['records'])} records, status {results['status']})")
    for problem in results["problems"]:
        print(f"build_report: warning: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
