#!/usr/bin/env bash
# The report command: sets Python up (a .venv on first use), then runs every notebook headless
# and builds the report through `python -m nsa_report.run`. ./run_all.sh -h for the options.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="run_all.sh"
die() { echo "$PROG: error: $*" >&2; exit 2; }
say() { echo "==> $*"; }

# Only the set-up options are read here; every other argument goes to nsa_report.run.
NO_SETUP=0; SETUP_ONLY=0; HELP=0; ARGS=()
for arg in "$@"; do
  case "$arg" in
    --no-setup) NO_SETUP=1 ;;
    --setup-only) SETUP_ONLY=1 ;;
    -h|--help) HELP=1; ARGS+=("$arg") ;;
    *) ARGS+=("$arg") ;;
  esac
done

has_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
py_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; }

base_python() {
  local cand
  for cand in python3 python3.13 python3.12 python3.11 python3.10; do
    if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then echo "$cand"; return 0; fi
  done
  return 1
}

setup_venv() {
  local venv="$ROOT/.venv" base
  base="$(base_python)" || die "set-up needs Python >= 3.10 (python3 is $(python3 --version 2>&1 || echo missing))"
  if [[ ! -x "$venv/bin/python" ]]; then
    say "set-up: creating $venv with $(command -v "$base") ($("$base" --version 2>&1))"
    if ! "$base" -m venv "$venv"; then
      rm -rf "$venv"
      die "'$base -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
  else
    say "set-up: completing the unfinished set-up of $venv"
  fi
  if ! has_nvidia_gpu; then
    say "set-up: no NVIDIA GPU (nvidia-smi absent or failing): pip install torch==2.13.0 (the CPU build)"
    "$venv/bin/python" -m pip install "torch==2.13.0"
  fi
  say "set-up: pip install -e '.[test]' (in $ROOT)"
  (cd "$ROOT" && "$venv/bin/python" -m pip install -e ".[test]")
  (cd "$ROOT" && "$venv/bin/python" -m nsa_kernels.peers.fetch >&2)
  touch "$venv/.nsa-setup-complete"
  say "set-up: done; later runs reuse $venv"
}

if [[ -n "${NSA_PYTHON:-}" ]]; then
  PY="$NSA_PYTHON"; PY_FROM="\$NSA_PYTHON"
elif [[ -d "$ROOT/.venv" ]]; then
  if [[ $NO_SETUP -eq 0 && $HELP -eq 0 && ! -f "$ROOT/.venv/.nsa-setup-complete" ]]; then setup_venv; fi
  PY="$ROOT/.venv/bin/python"; PY_FROM=".venv"
elif [[ $NO_SETUP -eq 1 || $HELP -eq 1 ]]; then
  PY="python3"; PY_FROM="--no-setup"
else
  setup_venv
  PY="$ROOT/.venv/bin/python"; PY_FROM="new .venv"
fi
command -v "$PY" >/dev/null 2>&1 || die "python not found: $PY ($PY_FROM)"
py_ok "$PY" || die "$PY ($PY_FROM) is not Python >= 3.10: $("$PY" --version 2>&1)"
PY="$("$PY" -c 'import sys; print(sys.executable)')"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ $SETUP_ONLY -eq 1 ]]; then
  MISSING="$("$PY" -c '
import importlib.util as u
from nsa_report.run import REQUIRED_MODULES as m
print(" ".join(n for n in m if u.find_spec(n) is None))')"
  [[ -z "$MISSING" ]] || die "$PY lacks: $MISSING (run without --no-setup, or: $PY -m pip install -e '${ROOT}[test]')"
  say "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'), from $PY_FROM)"
  echo "$PY"
  exit 0
fi
if [[ $HELP -eq 0 ]]; then
  say "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'), from $PY_FROM)"
fi
exec "$PY" -m nsa_report.run ${ARGS[@]+"${ARGS[@]}"}
