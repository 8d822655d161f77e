"""``run_all.sh --against REF``: the same notebooks on the git commit REF and on the working tree.

REF is checked out with ``git worktree add --detach`` in a scratch folder (removed afterwards,
also when the run fails or is interrupted). Notebook by notebook, REF's copy runs, then the
working tree's, on the same machine, so a slow spell of the machine hits both sides alike;
each is a ``python -m nsa_report.run --only NB`` of this checkout's runner (one report format
for both sides), REF's with ``--code-root`` at its checkout so that its notebooks import REF's
``nsa_kernels``. The two reports land in ``DIR/<REF>`` and ``DIR/working-tree``, the compare
page in ``DIR/compare`` (``python -m nsa_report.compare``), and ``DIR/against.json`` records
what was compared.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .folder import SCRATCH_PREFIX, RefusedError, clean_scratch, say

MARKER = "against.json"
TREE_SIDE = "working-tree"
#: Options of the parent run that each side's runs take over as they are.
PASSED_ON = ("--cell-timeout",)


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def slug(ref):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ref).strip("-.") or "ref"


def _passed_on(argv):
    """The parent's options that each side's runs repeat (profile, timeout, parameters)."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        name = arg.partition("=")[0]
        if name in PASSED_ON and "=" in arg:
            out.append(arg)
        elif arg in PASSED_ON and args:
            out += [arg, args.pop(0)]
    return out


def _destination(opts, ref):
    from .run import ROOT

    dest = Path(os.path.abspath(opts["out"] or ROOT / "reports" / f"against-{slug(ref)}"))
    if dest.exists() and not dest.is_dir():
        raise RefusedError(f"--out {dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise RefusedError(f"refusing to use {dest} for --against: it is not empty and holds "
                           f"no earlier --against run ({MARKER}); choose another --out")
    return dest


def run_against(opts, argv):
    from .params import ParameterError, per_notebook
    from .run import UsageError, check_python, detect_profile, notebooks_dir, select_notebooks

    ref = opts["against"]
    nb_dir = notebooks_dir(opts)
    notebooks = select_notebooks(nb_dir, opts["only"])
    check_python()
    top = _git(nb_dir, "rev-parse", "--show-toplevel")
    if top.returncode:
        raise RefusedError(f"--against: {nb_dir} is not inside a git checkout")
    repo = Path(top.stdout.strip()).resolve()
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode:
        raise UsageError(f"--against {ref}: not a commit of {repo}")
    commit = commit.stdout.strip()
    dest = _destination(opts, ref)
    ref_side = dest / slug(ref)
    if ref_side.name == TREE_SIDE:
        ref_side = dest / f"ref-{slug(ref)}"
    try:
        params_by_nb, _ = per_notebook(nb_dir, notebooks, opts["params"])
    except ParameterError as exc:
        raise UsageError(str(exc)) from None

    scratch_root = Path(tempfile.gettempdir())
    clean_scratch(scratch_root)   # dead runs' scratch, with the checkouts they left
    _git(repo, "worktree", "prune")
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=scratch_root))
    checkout = scratch / "ref"
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupted(signum, frame):
        raise KeyboardInterrupt(signum)

    for s in previous:
        signal.signal(s, interrupted)
    try:
        added = _git(repo, "worktree", "add", "--detach", str(checkout), commit)
        if added.returncode:
            raise RefusedError(f"--against {ref}: git worktree add failed: "
                               f"{' '.join(added.stderr.split())}")
        _link_untracked_peers(repo, checkout)
        ref_nb_dir = checkout / nb_dir.relative_to(repo)
        if not ref_nb_dir.is_dir():
            raise RefusedError(f"--against {ref}: {nb_dir.relative_to(repo)} does not exist "
                               f"at {commit[:12]}")
        missing = [nb for nb in notebooks if not (ref_nb_dir / f"{nb}.ipynb").is_file()]
        if missing:
            raise RefusedError(f"--against {ref}: {' '.join(missing)} not at {commit[:12]}")
        try:
            per_notebook(ref_nb_dir, notebooks,
                         {k: v for nb in notebooks for k, v in params_by_nb[nb].items()})
        except ParameterError as exc:
            raise UsageError(f"at {ref}: {exc}") from None
        dest.mkdir(parents=True, exist_ok=True)
        (dest / MARKER).write_text(json.dumps(
            {"ref": ref, "commit": commit, "repository": repo.name, "notebooks": notebooks,
             "reports": [ref_side.name, TREE_SIDE], "compare": "compare"}, indent=1) + "\n")
        sides = ((f"{ref} ({commit[:12]})", ref_side, ref_nb_dir, checkout),
                 ("working tree", dest / TREE_SIDE, nb_dir, repo))
        passed = ["--profile", opts["profile"] or detect_profile()] + _passed_on(argv)
        if opts["params_file"]:
            passed += ["-f", os.path.abspath(opts["params_file"])]
        passed += opts["param_args"]
        for i, name in enumerate(notebooks):
            for label, out, side_nb_dir, code_root in sides:
                say(f"--against: {name} on the {label}")
                code = _side_run(name, out, side_nb_dir, code_root, passed, first=i == 0)
                if code:
                    sys.stderr.write(f"run_all.sh: --against: {name} on the {label} "
                                     f"{'failed' if code == 1 else 'stopped'} (exit {code}); "
                                     "no compare page\n")
                    return code
        say(f"--against: compare {ref_side.name} vs {TREE_SIDE}")
        compared = subprocess.run([sys.executable, "-m", "nsa_report.compare", str(ref_side),
                                   str(dest / TREE_SIDE), "--out", str(dest / "compare")])
        if compared.returncode:
            sys.stderr.write(f"run_all.sh: --against: nsa_report.compare failed (exit "
                             f"{compared.returncode}); the reports are in {dest}\n")
            return 1
        say(f"compare page: {dest / 'compare' / 'compare.html'} ({ref} = A, working tree = B)")
        return 0
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        sys.stderr.write(f"\nrun_all.sh: --against interrupted; removing the checkout of {ref}\n")
        return 128 + int(signum)
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        _git(repo, "worktree", "remove", "--force", str(checkout))
        shutil.rmtree(scratch, ignore_errors=True)
        _git(repo, "worktree", "prune")
        for s, handler in previous.items():
            signal.signal(s, handler)


def _link_untracked_peers(repo, checkout):
    """The peers' wheels are not committed: REF's checkout reaches the working tree's."""
    for name in (".peers", ".peers_slim", ".whl"):
        if (repo / name).exists() and not (checkout / name).exists():
            (checkout / name).symlink_to(repo / name)


def _side_run(name, out, nb_dir, code_root, passed, first):
    from .run import ROOT

    cmd = [sys.executable, "-m", "nsa_report.run", "--notebooks-dir", str(nb_dir), "--only",
           name, "--out", str(out), "--code-root", str(code_root), *passed]
    if first:
        cmd.append("--no-merge")     # a fresh report each time; later notebooks merge into it
    env = {k: v for k, v in os.environ.items() if k != "NSA_COMMIT"}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + paths)
    child = subprocess.Popen(cmd, env=env, cwd=str(ROOT))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)   # lets the side's run discard its scratch
        child.wait()
        raise
