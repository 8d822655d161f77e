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


def clean_leftovers(dest, scratch_root):
    """Put back a report moved aside by a killed run; remove dead runs' scratch folders."""
    for path in sorted(dest.parent.glob(f".old-{dest.name}-*")) + sorted(
            dest.parent.glob(f".tmp-{dest.name}-*")):
        if not _dead_pid(path.name.rsplit("-", 1)[-1]):
            continue
        if path.name.startswith(".old-") and not dest.exists():
            say(f"restoring {dest} from {path} (left by an interrupted run)")
            path.rename(dest)
        else:
            shutil.rmtree(path, ignore_errors=True)
    for path in Path(scratch_root).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if path.is_dir() and _dead_pid(pid):
            shutil.rmtree(path, ignore_errors=True)


def carry_over(dest, tmp, names):
    """Copy the notebooks of ``dest``'s report that this partial run does not redo.

    Returns ``{name: status}`` of the carried notebooks (empty when nothing to merge)."""
    try:
        previous = json.loads((dest / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    env = previous.get("environment") or {}
    origin = f"run of {env.get('date', '?')}, commit {env.get('commit', '?')}"
    carried = {}
    for nb in previous.get("notebooks") or []:
        name = nb.get("name")
        if not name or name in names or nb.get("status") not in ("ok", "failed"):
            continue
        for key in ("html", "notebook", "fragment"):
            if nb.get(key) and (dest / nb[key]).is_file():
                shutil.copy2(dest / nb[key], tmp / nb[key])
        for fig in nb.get("figures") or []:
            if (dest / fig).is_file():
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
