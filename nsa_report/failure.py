"""Where and why an executed notebook failed, in one line.

``FAILED: notebook NAME, cell N (In [k]): ErrorType: message``: N counts the code cells of
the source notebook (1-based; papermill's injected-parameters cell is not counted), k is the
execution count shown in the executed notebook and its HTML.
"""
import json
import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|"
                       r"Timeout|NoSuchKernel)\b.*")
#: The error name of a cell stopped by the runner's per-cell timeout.
TIMEOUT_ERROR = "CellTimeoutError"
DEAD_KERNEL_HINT = "the kernel process died in this cell: killed, crashed or out of memory"


def one_line(text, limit=300):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def log_reason(log_path):
    """The most telling line of a log: the last exception line, else the last line."""
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


def _is_clean_exit(out):
    return out.get("ename") == "SystemExit" and str(out.get("evalue", "")) in ("", "0")


def describe_failure(notebook_path, log_path=None, reason=None):
    """Where and why an executed notebook failed.

    Returns ``{"cell", "execution_count", "ename", "evalue", "started", "summary"}``. ``cell``
    is ``None`` only when no cell ran at all. ``reason`` (e.g. ``"DeadKernelError: Kernel
    died"``, from the runner's exception) is used when no cell shows an error output.
    """
    info = {"cell": None, "execution_count": None, "ename": None, "evalue": None,
            "started": False, "summary": None}
    try:
        cells = _read_json(notebook_path).get("cells", [])
    except (OSError, ValueError, AttributeError):
        why = reason or log_reason(log_path) or "no executed notebook was written"
        info.update(ename="NotStarted", evalue=why, summary=f"could not start: {one_line(why)}")
        return info

    timed_out = str(reason or "").startswith(TIMEOUT_ERROR)
    code_index = 0
    blamed = None          # (cell, execution_count) flagged by papermill
    last_started = None    # the last code cell that papermill started: where a dead kernel died
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        injected = "injected-parameters" in cell.get("metadata", {}).get("tags", [])
        if not injected:
            code_index += 1
        index = None if injected else code_index
        pm = cell.get("metadata", {}).get("papermill", {}) or {}
        if pm.get("start_time") or cell.get("execution_count"):
            info["started"] = True
            last_started = (index, cell.get("execution_count"))
        # A cell stopped at its timeout may show the KeyboardInterrupt of the stop itself.
        error = next((out for out in cell.get("outputs", []) or []
                      if out.get("output_type") == "error" and not _is_clean_exit(out)
                      and not (timed_out and out.get("ename") == "KeyboardInterrupt")), None)
        if error is not None:
            info.update(cell=index, execution_count=cell.get("execution_count"),
                        ename=error.get("ename") or "Error", evalue=error.get("evalue") or "")
            break
        if blamed is None and (pm.get("exception") is True or pm.get("status") == "running"):
            blamed = (index, cell.get("execution_count"))

    if info["ename"] is None:
        if not info["started"]:
            why = reason or log_reason(log_path) or "the kernel ran no cell"
            info.update(ename="NotStarted", evalue=why, summary=f"could not start: {one_line(why)}")
            return info
        where = blamed or last_started
        why = reason or log_reason(log_path)
        ename, _, evalue = (why or "").partition(": ")
        if not (ename and _EXC_LINE.match(ename)):
            ename, evalue = "Error", why or "failed without an error output"
        if ename == "DeadKernelError":
            evalue = f"{evalue} ({DEAD_KERNEL_HINT})" if evalue else DEAD_KERNEL_HINT
        info.update(cell=where[0], execution_count=where[1], ename=ename, evalue=evalue)

    where = "the injected parameters cell" if info["cell"] is None else f"cell {info['cell']}"
    if info["execution_count"] is not None:
        where += f" (In [{info['execution_count']}])"
    message = one_line(info["evalue"])
    info["summary"] = f"{where}: {info['ename']}" + (f": {message}" if message else "")
    return info


def failure_line(name, info):
    return f"FAILED: notebook {name}, {info['summary']}"


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
            if out.get("output_type") == "error" and not _is_clean_exit(out):
                return True
    return False
