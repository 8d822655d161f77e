"""The environment stamp and the results files that every notebook writes.

Each notebook writes ``results_<notebook>.json`` into its ``results_dir``; ``run_all.sh``
merges them into one ``results.json`` beside the HTML:
``{"environment": {...}, "records": [{"stage", "workload", "bs", "tokens", "eager_us",
"throughput_us", "graph_us", ...}], ...}``.
"""
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch
import triton

from .._env import INTERPRET

REPO_ROOT = Path(__file__).resolve().parents[2]


def _git_commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("NSA_COMMIT", "unknown")


def _driver():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(profile):
    gpu = torch.cuda.is_available() and not INTERPRET
    cpu = f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"
    return {
        "device": torch.cuda.get_device_name() if gpu else cpu,
        "driver": _driver() if gpu else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "commit": os.environ.get("NSA_COMMIT") or _git_commit(),
        "profile": profile,
        "interpreter": not gpu,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_fragment(results_dir, notebook, profile, records, figures=(), extra=None):
    """Write this notebook's records (and the names of its saved figures) for run_all.sh."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    fragment = {"notebook": notebook, "environment": environment(profile),
                "records": list(records), "figures": list(figures), "extra": extra or {}}
    path = results_dir / f"results_{notebook}.json"
    path.write_text(json.dumps(fragment, indent=1, default=float))
    return path


def save_figure(fig, results_dir, name):
    """Save a figure as PNG beside the results (the index links the key plots)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(results_dir / name, dpi=110, bbox_inches="tight")
    return name
