"""Run every notebook headless, render each to HTML, and publish a report folder.

``./run_all.sh`` sets up Python and executes ``python -m nsa_report.run`` with the options it
does not handle itself. Usage and exit codes: ``USAGE`` below (``./run_all.sh --help``).
A failed run is kept as ``.failed-NAME`` beside the report folder; an interrupted one is
discarded. How the folder itself is checked, locked and replaced: ``folder.py``.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .failure import TIMEOUT_ERROR, describe_failure, failure_line, one_line
from .folder import (
    SCRATCH_PREFIX,
    RefusedError,
    carry_over,
    clean_leftovers,
    destination_lock,
    previous_report,
    resolve_destination,
    say,
    swap_in,
)
from .params import ParameterError, parse_value, per_notebook, read_parameters_file
from .results import write_csv

PROG = "run_all.sh"
ROOT = Path(__file__).resolve().parents[1]
REQUIRED_MODULES = ("papermill", "nbconvert", "nbformat", "ipykernel", "jinja2", "torch",
                    "triton", "nsa_kernels")
#: A cell running longer than this (seconds) is stopped and its notebook failed.
DEFAULT_CELL_TIMEOUT = 3600
#: Notebook names that would collide with the report's own pages.
RESERVED_NAMES = ("index",)

USAGE = """\
Usage: ./run_all.sh [--profile quick|full] [--out DIR] [--only LIST] [--notebooks-dir DIR]
                    [-p NAME VALUE]... [-f PARAMS.yaml] [--cell-timeout SECONDS]
                    [--against REF] [--code-root DIR] [--no-merge]
                    [--replace-published] [--no-setup] [--setup-only] [-h]

Runs every notebook (sorted by name) headless with papermill, renders each to HTML, and
builds DIR/index.html (the answer first) and DIR/results.json (all records).

  --profile quick|full  workload sizes (default: full when a GPU is usable, else quick)
  --out DIR             report folder (default: reports/latest). It is replaced only when
                        every notebook succeeded; a failed run is kept beside it as
                        .failed-<name>, and an interrupted run leaves it untouched.
                        A symbolic link to a folder is followed: the report is written
                        where it points (the link stays); a dangling link is refused.
  --only LIST           run a subset by number prefix, e.g. --only 00,03,07. Into a folder
                        that already holds a report, the subset is merged: the other
                        notebooks are carried over from that report (the index says so).
  --notebooks-dir DIR   where the notebooks are (default: notebooks/); a notebook named
                        "index" is refused (its page would be the report's index.html)
  -p NAME VALUE         a notebook parameter (repeatable), e.g. -p batch_sizes '[1, 64]'.
                        VALUE parses as papermill's -p does (True/False/None, numbers,
                        text), a YAML list or mapping as such. NAME must be in the
                        parameters cell of a notebook of the run (else exit 2); it goes
                        to the notebooks that declare it. profile and results_dir are set
                        by --profile and the runner.
  -f PARAMS.yaml        parameters from a YAML mapping (-p overrides it)
  --cell-timeout SECONDS
                        stop a cell that runs longer and fail its notebook, naming the
                        cell (default: 3600; 0: no limit)
  --against REF         "my change against REF": run the same notebooks (with --only, -p,
                        -f) on the git commit REF (a scratch git worktree, removed
                        afterwards) and on the working tree, alternating notebook by
                        notebook, into DIR/<REF> and DIR/working-tree, then build the
                        compare page DIR/compare/compare.html. DIR is --out (default:
                        reports/against-<REF>).
  --code-root DIR       import nsa_kernels from DIR (a checkout of another commit; set by
                        --against for the REF side)
  --no-merge            with --only, replace the report at --out instead of merging into
                        it (set by --against for each side's first notebook)
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
notebook's code cells; a cell stopped by --cell-timeout reads "CellTimeoutError"), 2 on bad
usage (an unknown option or parameter, a reserved notebook name, a bad REF) or an unusable
--out (including a report whose results.json cannot be merged into), 130/143 when
interrupted. Every run writes results.csv (long format) beside results.json.
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
            "replace_published": False, "cell_timeout": None, "params": {},
            "params_file": None, "against": None, "code_root": None, "no_merge": False,
            "param_args": []}
    valued = {"--profile": "profile", "--out": "out", "--only": "only",
              "--notebooks-dir": "notebooks_dir", "--cell-timeout": "cell_timeout",
              "-f": "params_file", "--parameters-file": "params_file", "--against": "against",
              "--code-root": "code_root"}
    args = list(argv)
    cli_params = {}
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            opts["help"] = True
        elif name in valued and eq and name.startswith("--"):
            opts[valued[name]] = inline
        elif arg in valued:
            if not args or not args[0] or args[0].startswith("--"):
                raise UsageError(f"option {arg} needs a value")
            opts[valued[arg]] = args.pop(0)
        elif arg in ("-p", "--parameters"):
            if len(args) < 2 or not args[0] or args[0].startswith("-"):
                raise UsageError(f"option {arg} needs a NAME and a VALUE, e.g. "
                                 "-p batch_sizes '[1, 64]'")
            key, value = args.pop(0), args.pop(0)
            if not key.isidentifier():
                raise UsageError(f"{arg} {key}: not a parameter name")
            try:
                cli_params[key] = parse_value(value)
            except ParameterError as exc:
                raise UsageError(f"{arg} {key}: {exc}") from None
            opts["param_args"] += [arg, key, value]
        elif arg == "--replace-published":
            opts["replace_published"] = True
        elif arg == "--no-merge":
            opts["no_merge"] = True
        elif arg.startswith("-"):
            raise UsageError(f"unknown option: {arg}")
        else:
            raise UsageError(f"unexpected argument: {arg}")
    if opts["profile"] not in (None, "quick", "full"):
        raise UsageError(f"--profile must be quick or full, not '{opts['profile']}'")
    if opts["out"] == "":
        raise UsageError("--out needs a folder")
    if opts["cell_timeout"] is not None:
        try:
            timeout = float(opts["cell_timeout"])
        except ValueError:
            timeout = -1.0
        if not timeout >= 0 or timeout == float("inf"):
            raise UsageError("--cell-timeout must be a number of seconds >= 0 (0: no limit), "
                             f"not '{opts['cell_timeout']}'")
        opts["cell_timeout"] = timeout
    if opts["against"] == "" or opts["code_root"] == "":
        raise UsageError("--against needs a git ref" if opts["against"] == ""
                         else "--code-root needs a folder")
    if opts["params_file"] is not None:
        try:
            opts["params"] = read_parameters_file(opts["params_file"])
        except ParameterError as exc:
            raise UsageError(str(exc)) from None
    opts["params"] = {**opts["params"], **cli_params}
    return opts


def cell_timeout(opts):
    """papermill's ``execution_timeout``: None for no limit."""
    timeout = DEFAULT_CELL_TIMEOUT if opts["cell_timeout"] is None else opts["cell_timeout"]
    return None if timeout == 0 else timeout


def select_notebooks(nb_dir, only):
    """The notebooks to run, sorted; ``only`` picks by number prefix (or full name)."""
    if not nb_dir.is_dir():
        raise RefusedError(f"notebooks folder not found: {nb_dir}")
    every = sorted(p.stem for p in nb_dir.glob("*.ipynb"))
    if not every:
        raise RefusedError(f"no notebooks (*.ipynb) in {nb_dir}")
    if only is None:
        return _refuse_reserved(nb_dir, every)
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
    return _refuse_reserved(nb_dir, chosen)


def _refuse_reserved(nb_dir, names):
    reserved = [name for name in names if name.lower() in RESERVED_NAMES]
    if reserved:
        raise RefusedError(f"{nb_dir / (reserved[0] + '.ipynb')}: a notebook cannot be named "
                           f"'{reserved[0]}' (its page would be the report's {reserved[0]}.html)"
                           "; rename it")
    return names


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


def install_kernel_spec(scratch, code_root=None):
    """A kernel spec for this Python, ahead of any other "python3" spec (a user-wide one could
    point at another interpreter), so the notebooks run where the checks above ran. Its log
    level keeps ipykernel's start-up warnings out of the progress output. ``code_root`` (a
    checkout of another commit) goes first on the kernels' ``PYTHONPATH``, so the notebooks
    import that commit's ``nsa_kernels``."""
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
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    first = [str(code_root)] if code_root else []
    if str(ROOT) not in paths:
        paths = [str(ROOT)] + paths
    os.environ["PYTHONPATH"] = os.pathsep.join(first + [p for p in paths if p not in first])


def kernel_manager_class():
    """jupyter_client's manager, except that shutting a kernel down does not interrupt it
    first: the SIGINT it sends before the shutdown request lands in ipykernel's message loop,
    which logs "KeyboardInterrupt caught in kernel" (at ERROR) after notebooks that succeeded.
    A kernel still busy (a cell that timed out) is terminated by the shutdown's own timeout."""
    from jupyter_client.manager import AsyncKernelManager

    class ShutdownWithoutInterrupt(AsyncKernelManager):
        async def _async_interrupt_kernel(self):
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return ShutdownWithoutInterrupt


# --------------------------------------------------------------------------- running

def execute(name, nb_dir, tmp, profile, params=None, timeout=None, code_root=None):
    """Run one notebook into ``tmp`` (its working folder). Returns a status entry."""
    import papermill
    from nbclient.exceptions import CellTimeoutError

    started = time.monotonic()
    status = {"status": "ok"}
    try:
        # results_dir "." and the cwd keep temp paths out of the published pages.
        papermill.execute_notebook(str(nb_dir / f"{name}.ipynb"), str(tmp / f"{name}.ipynb"),
                                   parameters={**(params or {}), "profile": profile,
                                               "results_dir": "."},
                                   kernel_name="python3", cwd=str(tmp), progress_bar=True,
                                   execution_timeout=timeout,
                                   kernel_manager_class=kernel_manager_class())
    except papermill.PapermillExecutionError as exc:
        status = {"status": "failed", "reason": f"{exc.ename}: {exc.evalue}"}
    except CellTimeoutError:
        status = {"status": "failed", "reason": f"{TIMEOUT_ERROR}: the cell ran longer than "
                  f"--cell-timeout {timeout:g} s and was stopped"}
    except Exception as exc:  # a dead kernel, a missing kernel, an unreadable notebook
        status = {"status": "failed", "reason": f"{type(exc).__name__}: {one_line(exc)}"}
    roots = [r for r in (code_root, ROOT) if r]
    for fragment in tmp.glob("results_*.json"):   # its name need not be the notebook's
        strip_checkout_paths(fragment, roots)
    if (tmp / f"{name}.ipynb").is_file():
        _relative_paths(tmp / f"{name}.ipynb", nb_dir / f"{name}.ipynb")
        strip_checkout_paths(tmp / f"{name}.ipynb", roots)
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


def strip_checkout_paths(path, roots):
    """A published page names files inside the checkout relative to it: the absolute path of
    the machine's checkout (``/work/repo/.peers/...`` in a cell's output or a fragment's
    skip reason) says nothing to a reader and leaks the machine's layout."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    stripped = text
    for root in roots:
        # The root itself, up to a separator: "/work/repo-old" is another folder.
        pattern = re.escape(str(root).rstrip("/")) + r"(?:/|(?![\w.-]))"
        stripped = re.sub(pattern, lambda m: "" if m.group().endswith("/") else ".", stripped)
    if stripped != text:
        path.write_text(stripped, encoding="utf-8")


def _on_signal(signum, frame):
    raise Interrupted(signum)


def notebooks_dir(opts):
    return Path(opts["notebooks_dir"] or ROOT / "notebooks").resolve()


def run(opts):
    nb_dir = notebooks_dir(opts)
    notebooks = select_notebooks(nb_dir, opts["only"])
    check_python()
    try:
        params, notes = per_notebook(nb_dir, notebooks, opts["params"])
    except ParameterError as exc:
        raise UsageError(str(exc)) from None
    dest = resolve_destination(opts["out"] or ROOT / "reports" / "latest",
                               opts["replace_published"])
    with destination_lock(dest):
        previous = None
        if opts["only"] is not None and not opts["no_merge"]:
            previous = previous_report(dest)   # refuses a malformed one before any write
        for note in notes:
            say(note)
        return _run_locked(opts, nb_dir, notebooks, dest, params, previous)


def _run_locked(opts, nb_dir, notebooks, dest, params, previous):
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
        install_kernel_spec(scratch, opts["code_root"])
        timeout = cell_timeout(opts)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        say(f"notebooks: {' '.join(notebooks)} (from {nb_dir})")
        names, status = list(notebooks), {}
        if previous is not None:
            status.update(carry_over(dest, tmp, notebooks, previous))
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
            status[name] = execute(name, nb_dir, tmp, profile, params.get(name), timeout,
                                   opts["code_root"])
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
            write_csv(tmp / "results.csv", build(tmp, dest.name, names, status, profile))
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
        carried = sorted(set(names) - set(notebooks))
        say(f"report: {dest}/index.html ({len(notebooks)} of {len(notebooks)} notebooks of this "
            "run ok" + (f"; {len(carried)} carried from the earlier report: "
                        f"{' '.join(carried)})" if carried else ")"))
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
        shutil.rmtree(tmp, ignore_errors=True)   # gone already unless the run broke off


def main(argv=None):
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.get("help"):
            print(USAGE, end="")
            return 0
        if opts["against"] is not None:
            from .against import run_against

            return run_against(opts, argv=sys.argv[1:] if argv is None else argv)
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
    # against.py imports this module by name: run that one module object, so that the
    # UsageError it raises is the class main() catches (not a second copy's under __main__).
    from nsa_report.run import main as _main

    sys.exit(_main())
