"""Run every notebook headless, render each to HTML, and publish a report folder.

``./run_all.sh`` sets up Python and executes ``python -m nsa_report.run`` with the options it
does not handle itself. Usage and exit codes: ``USAGE`` below (``./run_all.sh --help``).
A failed run is kept as ``.failed-NAME`` beside the report folder; an interrupted one is
discarded. How the folder itself is checked, locked and replaced: ``folder.py``.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .failure import describe_failure, failure_line, one_line
from .folder import (
    SCRATCH_PREFIX,
    RefusedError,
    carry_over,
    clean_leftovers,
    destination_lock,
    resolve_destination,
    say,
    swap_in,
)

PROG = "run_all.sh"
ROOT = Path(__file__).resolve().parents[1]
REQUIRED_MODULES = ("papermill", "nbconvert", "nbformat", "ipykernel", "jinja2", "torch",
                    "triton", "nsa_kernels")

USAGE = """\
Usage: ./run_all.sh [--profile quick|full] [--out DIR] [--only LIST] [--notebooks-dir DIR]
                    [--replace-published] [--no-setup] [--setup-only] [-h]

Runs every notebook (sorted by name) headless with papermill, renders each to HTML, and
builds DIR/index.html (the answer first) and DIR/results.json (all records).

  --profile quick|full  workload sizes (default: full when a GPU is usable, else quick)
  --out DIR             report folder (default: reports/latest). It is replaced only when
                        every notebook succeeded; a failed run is kept beside it as
                        .failed-<name>, and an interrupted run leaves it untouched.
  --only LIST           run a subset by number prefix, e.g. --only 00,03,07. Into a folder
                        that already holds a report, the subset is merged: the other
                        notebooks are carried over from that report (the index says so).
  --notebooks-dir DIR   where the notebooks are (default: notebooks/)
  --replace-published   allow replacing a published report: a folder with files tracked
                        by git (e.g. reports/h100). Without it such a run is refused.
  --no-setup            never create .venv or install anything
  --setup-only          set up (as below), print the Python to use, and exit
  -h, --help            this help

Python: $NSA_PYTHON if set, else .venv/bin/python if .venv exists, else python3 with
--no-setup, else a new .venv (python3 -m venv) with the project installed
(pip install -e '.[test]', after the CPU build of torch when there is no NVIDIA GPU).

Exit status: 0 when every notebook succeeded, 1 when one failed (each failure is printed as
"FAILED: notebook NAME, cell N (In [k]): ErrorType: message", N counting the source
notebook's code cells), 2 on bad usage or an unusable --out, 130/143 when interrupted.
"""


class UsageError(Exception):
    """Bad command line: exit 2 with a pointer to --help."""


class Interrupted(BaseException):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
        self.code = 128 + signum


def warn(message):
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- options

def parse_args(argv):
    opts = {"profile": None, "out": None, "only": None, "notebooks_dir": None,
            "replace_published": False}
    valued = {"--profile": "profile", "--out": "out", "--only": "only",
              "--notebooks-dir": "notebooks_dir"}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            opts["help"] = True
        elif name in valued and eq:
            opts[valued[name]] = inline
        elif arg in valued:
            if not args or not args[0] or args[0].startswith("--"):
                raise UsageError(f"option {arg} needs a value")
            opts[valued[arg]] = args.pop(0)
        elif arg == "--replace-published":
            opts["replace_published"] = True
        elif arg.startswith("-"):
            raise UsageError(f"unknown option: {arg}")
        else:
            raise UsageError(f"unexpected argument: {arg}")
    if opts["profile"] not in (None, "quick", "full"):
        raise UsageError(f"--profile must be quick or full, not '{opts['profile']}'")
    if opts["out"] == "":
        raise UsageError("--out needs a folder")
    return opts


def select_notebooks(nb_dir, only):
    """The notebooks to run, sorted; ``only`` picks by number prefix (or full name)."""
    if not nb_dir.is_dir():
        raise RefusedError(f"notebooks folder not found: {nb_dir}")
    every = sorted(p.stem for p in nb_dir.glob("*.ipynb"))
    if not every:
        raise RefusedError(f"no notebooks (*.ipynb) in {nb_dir}")
    if only is None:
        return every
    wanted = [w for w in only.replace(",", " ").split() if w]

    def matches(name, want):
        return name == want or name.startswith(f"{want}_")

    for want in wanted:
        if not any(matches(name, want) for name in every):
            raise UsageError(f"--only: no notebook in {nb_dir} matches '{want}' "
                             f"(have: {' '.join(every)})")
    chosen = [name for name in every if any(matches(name, w) for w in wanted)]
    if not chosen:
        raise UsageError(f"--only '{only}' selects no notebook")
    return chosen


# --------------------------------------------------------------------------- destination

# --------------------------------------------------------------------------- environment

def check_python():
    import importlib.util

    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise RefusedError(f"{sys.executable} lacks: {' '.join(missing)} (run without "
                           f"--no-setup, or: {sys.executable} -m pip install -e '{ROOT}[test]')")


def detect_profile():
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    if probe.stdout.strip() == "True":
        say("profile: full (a GPU is usable)")
        return "full"
    say("profile: quick (no usable GPU: the kernels run in the Triton interpreter)")
    return "quick"


def install_kernel_spec(scratch):
    """A kernel spec for this Python, ahead of any other "python3" spec (a user-wide one could
    point at another interpreter), so the notebooks run where the checks above ran. Its log
    level keeps ipykernel's start-up warnings out of the progress output."""
    spec = scratch / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python 3 (ipykernel)", "language": "python",
        "metadata": {"debugger": True}}, indent=1))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(scratch / "jupyter")] + ([os.environ["JUPYTER_PATH"]]
                                      if os.environ.get("JUPYTER_PATH") else []))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in paths if p])


# --------------------------------------------------------------------------- running

def execute(name, nb_dir, tmp, profile):
    """Run one notebook into ``tmp`` (its working folder). Returns a status entry."""
    import papermill

    started = time.monotonic()
    status = {"status": "ok"}
    try:
        # results_dir "." and the cwd keep temp paths out of the published pages.
        papermill.execute_notebook(str(nb_dir / f"{name}.ipynb"), str(tmp / f"{name}.ipynb"),
                                   parameters={"profile": profile, "results_dir": "."},
                                   kernel_name="python3", cwd=str(tmp), progress_bar=True)
    except papermill.PapermillExecutionError as exc:
        status = {"status": "failed", "reason": f"{exc.ename}: {exc.evalue}"}
    except Exception as exc:  # a dead kernel, a missing kernel, an unreadable notebook
        status = {"status": "failed", "reason": f"{type(exc).__name__}: {one_line(exc)}"}
    if (tmp / f"{name}.ipynb").is_file():
        _relative_paths(tmp / f"{name}.ipynb", nb_dir / f"{name}.ipynb")
        try:
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_filename(str(tmp / f"{name}.ipynb"))
            (tmp / f"{name}.html").write_text(body, encoding="utf-8")
        except Exception as exc:
            if status["status"] == "ok":
                status = {"status": "failed", "error": "HTML conversion failed "
                          f"({type(exc).__name__}: {one_line(exc)})"}
    status["seconds"] = round(time.monotonic() - started, 1)
    return status


def _relative_paths(executed, source):
    """papermill records absolute input and output paths: keep the scratch folder out."""
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
        meta = nb.get("metadata", {}).get("papermill")
        if not isinstance(meta, dict):
            return
        try:
            meta["input_path"] = str(source.relative_to(ROOT))
        except ValueError:
            meta["input_path"] = source.name
        meta["output_path"] = executed.name
        executed.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    except (OSError, ValueError):
        pass


def _on_signal(signum, frame):
    raise Interrupted(signum)


def run(opts):
    nb_dir = Path(opts["notebooks_dir"] or ROOT / "notebooks").resolve()
    notebooks = select_notebooks(nb_dir, opts["only"])
    dest = resolve_destination(opts["out"] or ROOT / "reports" / "latest",
                               opts["replace_published"])
    check_python()
    with destination_lock(dest):
        return _run_locked(opts, nb_dir, notebooks, dest)


def _run_locked(opts, nb_dir, notebooks, dest):
    from .index import build

    pid = os.getpid()
    tmp = dest.parent / f".tmp-{dest.name}-{pid}"
    backup = dest.parent / f".old-{dest.name}-{pid}"
    failed_dir = dest.parent / f".failed-{dest.name}"
    scratch_root = Path(tempfile.gettempdir())
    clean_leftovers(dest, scratch_root)
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{pid}-", dir=scratch_root))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        profile = opts["profile"] or detect_profile()
        if opts["profile"]:
            say(f"profile: {profile}")
        install_kernel_spec(scratch)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        say(f"notebooks: {' '.join(notebooks)} (from {nb_dir})")
        names, status = list(notebooks), {}
        if opts["only"] is not None and (dest / "results.json").is_file():
            status.update(carry_over(dest, tmp, notebooks))
            if status:
                say(f"partial run: merging into {dest}; carried over from its earlier report: "
                    + " ".join(sorted(status)))
                names = sorted(set(notebooks) | set(status))
        elif opts["only"] is not None:
            say(f"partial run: {dest} holds only the notebooks run now")
        say(f"writing to {tmp}")

        failures = []
        for i, name in enumerate(notebooks, 1):
            say(f"[{i}/{len(notebooks)}] {name} (profile {profile})")
            status[name] = execute(name, nb_dir, tmp, profile)
            if status[name]["status"] == "ok":
                say(f"{name}: ok ({status[name]['seconds']}s)")
                continue
            if status[name].get("error"):
                line = f"FAILED: notebook {name}, {status[name]['error']}"
            else:
                info = describe_failure(tmp / f"{name}.ipynb", reason=status[name].get("reason"))
                line = failure_line(name, info)
            failures.append(line)
            warn(line)

        say("building index.html and results.json")
        try:
            build(tmp, dest.name, names, status, profile)
        except Exception as exc:
            failures.append(f"FAILED: building the report: {type(exc).__name__}: {exc}")
            warn(failures[-1])

        if failures:
            shutil.rmtree(failed_dir, ignore_errors=True)
            tmp.rename(failed_dir)
            warn(f"\nThis run FAILED ({len(failures)} of {len(notebooks)}):")
            for line in failures:
                warn(f"  {line}")
            warn(f"The failed run is in {failed_dir} (index.html, the executed notebooks and "
                 "their HTML).")
            if dest.is_dir():
                warn(f"The last good report, {dest}, was left as it was.")
            return 1
        swap_in(tmp, dest, backup)
        say(f"report: {dest}/index.html ({len(notebooks)} of {len(notebooks)} notebooks ok)")
        return 0
    except Interrupted as exc:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        warn(f"\n{PROG}: interrupted ({signal.Signals(exc.signum).name}): discarding this run; "
             f"{dest} is untouched")
        shutil.rmtree(tmp, ignore_errors=True)
        if backup.is_dir() and not dest.exists():
            backup.rename(dest)
        return exc.code
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None):
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.get("help"):
            print(USAGE, end="")
            return 0
        return run(opts)
    except UsageError as exc:
        warn(f"{PROG}: error: {exc}\nTry './run_all.sh --help'.")
        return 2
    except RefusedError as exc:
        warn(f"{PROG}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
