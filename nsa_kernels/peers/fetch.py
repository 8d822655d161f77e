"""Fetch SGLang's wheel into ``.peers/`` (once), and build the slim copy a GPU run carries.

``python -m nsa_kernels.peers.fetch`` runs ``pip download sglang==<version> --no-deps -d
.peers`` unless a ``sglang-<version>-*.whl`` is already there (so it is idempotent and costs
nothing the second time). Without network it prints why and how to place the wheel by hand and
exits 0: the tests that need the wheel then skip, naming the reason. ``--strict`` exits 1
instead.

``python -m nsa_kernels.peers.fetch --slim .peers_slim`` copies the SGLang files the harness
(``sglang_backend``) loads, plus the packages its CUDA path imports lazily
(``sglang/kernels``, ``sglang/srt/layers/attention``) and the JIT sources SGLang checks for at
import, into ``.peers_slim/sglang/`` (about 20 MB instead of the 39 MB wheel's 4700 files), for
a machine that cannot download: there ``NSA_SGLANG_PATH=.peers_slim``.
"""
from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
from pathlib import Path

from nsa_kernels.peers.sglang import REPO_ROOT, VERSION

PEERS = REPO_ROOT / ".peers"
# imported lazily, or only where SGLang's is_cuda() is true: carried whole
SLIM_TREES = ("sglang/kernels", "sglang/srt/layers/attention")
SLIM_FILES = ("sglang/test/kits/dsa_metadata_kit.py",)


def wheel_path(folder=PEERS):
    found = sorted(glob.glob(str(Path(folder) / f"sglang-{VERSION}-*.whl")))
    return Path(found[-1]) if found else None


def fetch_wheel(folder=PEERS, strict=False, out=sys.stdout):
    """The wheel's path; downloads it first when absent. None (or SystemExit) when offline."""
    existing = wheel_path(folder)
    if existing:
        print(f"SGLang {VERSION}: {existing} (already present)", file=out)
        return existing
    Path(folder).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"sglang=={VERSION}", "--no-deps",
               "-d", str(folder), "-q"]
    done = subprocess.run(command, capture_output=True, text=True)
    fetched = wheel_path(folder)
    if done.returncode == 0 and fetched:
        print(f"SGLang {VERSION}: downloaded {fetched}", file=out)
        return fetched
    reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    print(f"SGLang {VERSION}: could not download the wheel ({reason[0]}). The tests that run "
          f"SGLang's backend will skip. To run them, put the wheel into {folder} (`pip download "
          f"sglang=={VERSION} --no-deps -d {folder}` on a machine with network) or set "
          f"NSA_SGLANG_PATH.", file=out)
    if strict:
        raise SystemExit(1)
    return None


def slim_files(root):
    """Relative paths of the slim copy: the loaded modules, the lazy trees, the JIT sources."""
    from nsa_kernels.peers import sglang_backend
    loaded = sglang_backend.load()
    root = Path(root)
    files = set()
    for name in loaded.modules:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            files.add(Path(path).resolve().relative_to(root.resolve()))
    for tree in SLIM_TREES:
        files.update(p.relative_to(root) for p in (root / tree).rglob("*.py"))
    for prefix in sglang_backend.JIT_SOURCES:
        files.update(p.relative_to(root) for p in (root / prefix).rglob("*") if p.is_file())
    files.update(Path(f) for f in SLIM_FILES)
    return sorted(files)


def build_slim(target, out=sys.stdout):
    from nsa_kernels.peers import sglang_backend
    root = sglang_backend.source_root()
    target = Path(target)
    files = slim_files(root)
    scratch = target.with_name(target.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    size = 0
    for rel in files:
        destination = scratch / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, destination)
        size += destination.stat().st_size
    (scratch / "MANIFEST").write_text("\n".join(str(f) for f in files) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    print(f"{len(files)} SGLang files, {size / 2**20:.1f} MiB in {target}/sglang "
          f"(NSA_SGLANG_PATH={target})", file=out)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when the wheel is missing")
    parser.add_argument("--slim", metavar="DIR", help="also build the slim copy into DIR")
    args = parser.parse_args(argv)
    wheel = fetch_wheel(strict=args.strict)
    if args.slim:
        if wheel is None and not args.strict:
            print("no wheel: the slim copy is not built", file=sys.stderr)
            return 1
        build_slim(args.slim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
