"""The report folder: checks before a run, one lock per folder, merging, the atomic swap.

``DEST`` is replaced through scratch folders beside it (same file system: renames are
atomic): the run writes ``.tmp-NAME-PID``; on success ``DEST`` moves to ``.old-NAME-PID``, the
new run is renamed to ``DEST`` and the old one removed, signals waiting until that is done.
``.lock-NAME`` (flock) keeps two runs off one ``DEST``. Leftovers of runs killed outright
(``.tmp-``/``.old-`` of a dead PID, ``$TMPDIR/nsa-run-all-PID-*``) are cleaned on the next run.
A published report is a folder with files tracked by git.
"""
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

SCRATCH_PREFIX = "nsa-run-all-"


class RefusedError(Exception):
    """A well-formed request that would lose data or cannot be done: exit 2."""


def say(message):
    print(f"==> {message}", flush=True)


def is_published(dest):
    """A published report: a folder with at least one file tracked by git."""
    try:
        proc = subprocess.run(["git", "-C", str(dest), "ls-files", "--", "."],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def resolve_destination(out, replace_published):
    """The absolute report folder, after every check that can refuse the run up front."""
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        # The report goes where the link points, so the link keeps showing the new report
        # (replacing the link itself would leave its target stale).
        target = out.resolve()
        if not target.is_dir():
            raise RefusedError(f"--out {out} is a symbolic link to {target}, which is not a "
                               "folder; fix the link or choose another --out")
        say(f"--out {out} is a link: writing the report to {target}")
        out = target
    if out == Path(out.anchor):
        raise RefusedError("--out cannot be /")
    cwd = Path.cwd().resolve()
    dest = out.parent.resolve() / out.name if out.parent.exists() else out
    if cwd == dest or dest in cwd.parents:
        raise RefusedError(f"--out {dest} is the current folder or holds it: the run could "
                           "not replace it; run from outside the report folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefusedError(f"--out {out}: cannot create its parent folder "
                           f"({exc.strerror or exc})") from None
    dest = dest.parent.resolve() / dest.name
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        raise RefusedError(f"--out {dest}: its parent folder {dest.parent} is not writable")
    if dest.exists() and not dest.is_dir():
        raise RefusedError(f"--out {dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not (dest / "results.json").exists() and not (dest / "index.html").exists():
            raise RefusedError(f"refusing to replace {dest}: it is not empty and holds no "
                               "report (no results.json/index.html)")
        if is_published(dest) and not replace_published:
            raise RefusedError(f"refusing to replace {dest}: it is a published report (files "
                               "tracked by git); pass --replace-published to replace it, or "
                               "choose another --out")
    return dest


@contextmanager
def destination_lock(dest):
    """Hold ``.lock-NAME`` beside ``dest`` for the whole run: one run per report folder."""
    path = dest.parent / f".lock-{dest.name}"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise RefusedError(f"another run (pid {holder}) is writing to {dest}; wait for it "
                           "or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_pid(text):
    return text.isdigit() and not _pid_alive(int(text))


def run_folders(dest, kind):
    """``{pid: path}`` of the ``.KIND-NAME-PID`` folders of ``dest`` itself: the name must be
    exactly ``dest``'s followed by a PID, so ``.old-latest-h200-7`` (a backup of the report
    ``latest-h200``) is never taken for one of ``latest``'s."""
    pattern = re.compile(rf"\.{kind}-{re.escape(dest.name)}-(\d+)")
    found = {}
    for path in dest.parent.glob(f".{kind}-*"):
        match = pattern.fullmatch(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    return found


def holds_report(folder):
    return (folder / "results.json").is_file() or (folder / "index.html").is_file()


def clean_leftovers(dest, scratch_root):
    """Put back a report moved aside by a killed run; remove dead runs' scratch folders.

    A backup (``.old-NAME-PID``) is removed only when ``dest`` holds a report again (the run
    was killed after its swap); otherwise it is the last copy and is restored, or kept and
    named when it cannot be restored."""
    for pid, path in sorted(run_folders(dest, "old").items()):
        if _pid_alive(pid):
            continue
        if not dest.exists():
            say(f"restoring {dest} from {path} (left by an interrupted run)")
            path.rename(dest)
        elif holds_report(dest):
            shutil.rmtree(path, ignore_errors=True)
        else:
            say(f"warning: kept {path}: a report moved aside by an interrupted run, while "
                f"{dest} holds no report; move it back by hand if it is the one you want")
    for pid, path in run_folders(dest, "tmp").items():
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
    clean_scratch(scratch_root)


def clean_scratch(scratch_root):
    """Remove the ``$TMPDIR/nsa-run-all-PID-*`` folders of runs that are gone."""
    for path in Path(scratch_root).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if path.is_dir() and _dead_pid(pid):
            shutil.rmtree(path, ignore_errors=True)


def _inside(name):
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def previous_report(dest):
    """The ``results.json`` of the report at ``dest``, checked for what merging reads from it:
    ``None`` when there is none. A document of another shape (an older schema, a hand edit)
    raises ``RefusedError`` naming the file and the field, before anything is written."""
    path = dest / "results.json"
    if not path.is_file():
        return None

    def refuse(field, why):
        raise RefusedError(f"cannot merge into {dest}: {path}: {field} {why}; rerun without "
                           "--only to replace the report, or choose another --out")

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        refuse("the file", f"cannot be read ({exc})")
    except ValueError as exc:
        refuse("the file", f"is not valid JSON ({exc})")
    if not isinstance(document, dict):
        refuse("the document", f"is {_kind(document)}, not an object")
    if document.get("environment") is not None and not isinstance(document["environment"],
                                                                  dict):
        refuse("environment", f"is {_kind(document['environment'])}, not an object")
    notebooks = document.get("notebooks")
    if notebooks is None:
        notebooks = document["notebooks"] = []
    if not isinstance(notebooks, list):
        refuse("notebooks", f"is {_kind(notebooks)}, not a list")
    for i, nb in enumerate(notebooks):
        if not isinstance(nb, dict):
            refuse(f"notebooks[{i}]", f"is {_kind(nb)}, not an object")
        if not isinstance(nb.get("name"), str) or not nb["name"]:
            refuse(f"notebooks[{i}].name", "is missing or not text")
        for key in ("status", "html", "notebook", "fragment"):
            value = nb.get(key)
            if value is not None and not isinstance(value, str):
                refuse(f"notebooks[{i}].{key}", f"is {_kind(value)}, not text")
            if key != "status" and value is not None and not _inside(value):
                refuse(f"notebooks[{i}].{key}", f"({value!r}) is not a file inside the report")
        figures = nb.get("figures")
        if figures is not None and not isinstance(figures, list):
            refuse(f"notebooks[{i}].figures", f"is {_kind(figures)}, not a list")
        for j, fig in enumerate(figures or []):
            if not isinstance(fig, str) or not _inside(fig):
                refuse(f"notebooks[{i}].figures[{j}]", f"({fig!r}) is not a file inside the "
                       "report")
        if nb.get("error") is not None and not isinstance(nb["error"], dict):
            refuse(f"notebooks[{i}].error", f"is {_kind(nb['error'])}, not an object")
    return document


def _kind(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def carry_over(dest, tmp, names, previous=None):
    """Copy the notebooks of ``dest``'s report (``previous``: its ``previous_report``, read
    here when not given) that this partial run does not redo.

    Returns ``{name: status}`` of the carried notebooks (empty when nothing to merge)."""
    if previous is None:
        previous = previous_report(dest) or {}
    env = previous.get("environment") or {}
    origin = f"run of {env.get('date', '?')}, commit {env.get('commit', '?')}"
    carried = {}
    for nb in previous.get("notebooks") or []:
        name = nb.get("name")
        if not name or name in names or nb.get("status") not in ("ok", "failed"):
            continue
        for key in ("html", "notebook", "fragment"):
            if nb.get(key) and (dest / nb[key]).is_file():
                (tmp / nb[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dest / nb[key], tmp / nb[key])
        for fig in nb.get("figures") or []:
            if (dest / fig).is_file():
                (tmp / fig).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dest / fig, tmp / fig)
        status = {"status": nb["status"], "seconds": nb.get("seconds"),
                  "carried_from": _origin(dest, nb) or origin}
        if nb["status"] == "failed":
            status["error"] = (nb.get("error") or {}).get("summary") or "failed"
        carried[name] = status
    return carried


def _origin(dest, nb):
    """The run that made a carried notebook, from its own results fragment (a report merged
    more than once holds notebooks of several runs; the report's top-level stamp names only
    the first). None when the fragment holds no stamp."""
    try:
        fragment = json.loads((dest / nb["fragment"]).read_text(encoding="utf-8"))
    except (KeyError, TypeError, OSError, ValueError):
        return None
    env = fragment.get("environment") or {}
    if not env.get("date"):
        return None
    return f"run of {env['date']}, commit {env.get('commit', '?')}"


@contextmanager
def signals_deferred():
    """Signals are ignored while the report folder is being swapped."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def swap_in(tmp, dest, backup):
    with signals_deferred():
        if dest.exists():
            dest.rename(backup)
        tmp.rename(dest)
        shutil.rmtree(backup, ignore_errors=True)
