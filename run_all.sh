#!/usr/bin/env bash
# Run every notebook headless with papermill, render them to HTML, and build the report.
# ./run_all.sh -h for the options.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="run_all.sh"

usage() {
  cat <<EOF
Usage: ./run_all.sh [--profile quick|full] [--out DIR] [--only LIST] [--notebooks-dir DIR]
                    [--no-setup] [-h]

Runs every notebook (sorted by name) headless with papermill, renders each to HTML, and
builds DIR/index.html (the answer first) and DIR/results.json (all records).

  --profile quick|full  workload sizes (default: full when a GPU is usable, else quick)
  --out DIR             report folder (default: reports/latest). It is replaced only when
                        every notebook succeeded; a failed run is kept beside it as
                        .failed-<name>, and an interrupted run leaves it untouched.
  --only LIST           run a subset by number prefix, e.g. --only 00,03,07
  --notebooks-dir DIR   where the notebooks are (default: notebooks/)
  --no-setup            never create .venv or install anything
  --setup-only          set up (as below), print the Python to use, and exit
  -h, --help            this help

Python: \$NSA_PYTHON if set, else .venv/bin/python if .venv exists, else python3 with
--no-setup, else a new .venv (python3 -m venv) with the project installed
(pip install -e '.[test]', after the CPU build of torch when there is no NVIDIA GPU).

Exit status: 0 when every notebook succeeded, 1 when one failed (each failure is printed as
"FAILED: notebook NAME, cell N (In [k]): ErrorType: message", N counting the source
notebook's code cells), 2 on bad usage, 130/143 when interrupted.
EOF
}

die_usage() {
  echo "$PROG: error: $*" >&2
  echo "Try './run_all.sh --help'." >&2
  exit 2
}
die() {
  echo "$PROG: error: $*" >&2
  exit 2
}
say() { echo "==> $*"; }

# --------------------------------------------------------------------------- options
PROFILE=""
OUT="$ROOT/reports/latest"
ONLY=""
NB_DIR="$ROOT/notebooks"
NO_SETUP=0
SETUP_ONLY=0

need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die_usage "option $1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --profile) need_value "$@"; PROFILE="$2"; shift 2 ;;
    --profile=*) PROFILE="${1#*=}"; shift ;;
    --out) need_value "$@"; OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --only) need_value "$@"; ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#*=}"; shift ;;
    --notebooks-dir) need_value "$@"; NB_DIR="$2"; shift 2 ;;
    --notebooks-dir=*) NB_DIR="${1#*=}"; shift ;;
    --no-setup) NO_SETUP=1; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    -*) die_usage "unknown option: $1" ;;
    *) die_usage "unexpected argument: $1" ;;
  esac
done

case "$PROFILE" in
  ""|quick|full) ;;
  *) die_usage "--profile must be quick or full, not '$PROFILE'" ;;
esac
[[ -n "$OUT" ]] || die_usage "--out needs a folder"
[[ -d "$NB_DIR" ]] || die "notebooks folder not found: $NB_DIR"
NB_DIR="$(cd "$NB_DIR" && pwd)"

# The notebooks to run, sorted; --only picks by number prefix (or full name).
shopt -s nullglob
ALL=()
for f in "$NB_DIR"/*.ipynb; do ALL+=("$(basename "$f" .ipynb)"); done
shopt -u nullglob
if [[ ${#ALL[@]} -eq 0 ]]; then die "no notebooks (*.ipynb) in $NB_DIR"; fi
mapfile -t ALL < <(printf '%s\n' "${ALL[@]}" | LC_ALL=C sort)

NOTEBOOKS=()
if [[ -n "$ONLY" ]]; then
  IFS=', ' read -r -a WANTED <<<"$ONLY"
  for want in "${WANTED[@]}"; do
    [[ -n "$want" ]] || continue
    found=0
    for name in "${ALL[@]}"; do
      if [[ "$name" == "$want" || "$name" == "${want}_"* ]]; then found=1; fi
    done
    [[ $found -eq 1 ]] || die_usage "--only: no notebook in $NB_DIR matches '$want' (have: ${ALL[*]})"
  done
  for name in "${ALL[@]}"; do
    for want in "${WANTED[@]}"; do
      if [[ -n "$want" && ( "$name" == "$want" || "$name" == "${want}_"* ) ]]; then
        NOTEBOOKS+=("$name"); break
      fi
    done
  done
else
  NOTEBOOKS=("${ALL[@]}")
fi
[[ ${#NOTEBOOKS[@]} -gt 0 ]] || die_usage "--only '$ONLY' selects no notebook"

# Destination, and the run's scratch folders beside it (same file system: renames are atomic).
OUT="${OUT%/}"
[[ -n "$OUT" ]] || die "--out cannot be /"
mkdir -p "$(dirname "$OUT")"
DEST="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
NAME="$(basename "$DEST")"
PARENT="$(dirname "$DEST")"
if [[ -e "$DEST" && ! -d "$DEST" ]]; then die "--out $DEST exists and is not a folder"; fi
if [[ -d "$DEST" && -n "$(ls -A "$DEST")" && ! -e "$DEST/results.json" && ! -e "$DEST/index.html" ]]; then
  die "refusing to replace $DEST: it is not empty and holds no report (no results.json/index.html)"
fi
TMP="$PARENT/.tmp-$NAME-$$"
FAILED_DIR="$PARENT/.failed-$NAME"
BACKUP="$PARENT/.old-$NAME-$$"

# --------------------------------------------------------------------------- python
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
  touch "$venv/.nsa-setup-complete"
  say "set-up: done; later runs reuse $venv"
}

if [[ -n "${NSA_PYTHON:-}" ]]; then
  PY="$NSA_PYTHON"; PY_FROM="\$NSA_PYTHON"
elif [[ -d "$ROOT/.venv" ]]; then
  if [[ $NO_SETUP -eq 0 && ! -f "$ROOT/.venv/.nsa-setup-complete" ]]; then setup_venv; fi
  PY="$ROOT/.venv/bin/python"; PY_FROM=".venv"
elif [[ $NO_SETUP -eq 1 ]]; then
  PY="python3"; PY_FROM="--no-setup"
else
  setup_venv
  PY="$ROOT/.venv/bin/python"; PY_FROM="new .venv"
fi
command -v "$PY" >/dev/null 2>&1 || die "python not found: $PY ($PY_FROM)"
py_ok "$PY" || die "$PY ($PY_FROM) is not Python >= 3.10: $("$PY" --version 2>&1)"
PY="$("$PY" -c 'import sys; print(sys.executable)')"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
MISSING="$("$PY" -c '
import importlib.util as u
print(" ".join(m for m in ("papermill", "nbconvert", "nbformat", "ipykernel", "torch", "triton", "nsa_kernels") if u.find_spec(m) is None))')"
if [[ -n "$MISSING" ]]; then
  die "$PY lacks: $MISSING (run without --no-setup, or: $PY -m pip install -e '${ROOT}[test]')"
fi
say "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'), from $PY_FROM)"
if [[ $SETUP_ONLY -eq 1 ]]; then echo "$PY"; exit 0; fi

if [[ -z "$PROFILE" ]]; then
  if [[ "$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)" == "True" ]]; then
    PROFILE="full"; say "profile: full (a GPU is usable)"
  else
    PROFILE="quick"; say "profile: quick (no usable GPU: the kernels run in the Triton interpreter)"
  fi
else
  say "profile: $PROFILE"
fi

# The notebooks' working folder: the repository that holds them.
NB_CWD="$(git -C "$NB_DIR" rev-parse --show-toplevel 2>/dev/null || echo "$ROOT")"

# --------------------------------------------------------------------------- cleanup
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/nsa-run-all.XXXXXX")"
CHILD=""
on_exit() { rm -rf "$SCRATCH"; }
on_signal() {
  local sig="$1" code=130
  [[ "$sig" == TERM ]] && code=143
  trap - INT TERM
  echo >&2
  echo "$PROG: interrupted (SIG$sig): discarding this run; $DEST is untouched" >&2
  if [[ -n "$CHILD" ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  if [[ -d "$BACKUP" && ! -e "$DEST" ]]; then mv "$BACKUP" "$DEST"; fi
  exit "$code"
}
trap on_exit EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# Children run in the background and are waited for, so that a signal is handled at once
# (bash runs a trap only between commands; `wait` is interrupted by one).
wait_child() {
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
run_child() {
  "$@" &
  wait_child
}

# A kernel spec for this Python, ahead of any other "python3" spec (a user-wide one could
# point at another interpreter), so the notebooks run where the checks above ran.
mkdir -p "$SCRATCH/jupyter/kernels/python3" "$SCRATCH/logs"
"$PY" - "$SCRATCH/jupyter/kernels/python3/kernel.json" <<'EOF'
import json, sys
json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
           "display_name": "Python 3 (ipykernel)", "language": "python",
           "metadata": {"debugger": True}}, open(sys.argv[1], "w"), indent=1)
EOF
export JUPYTER_PATH="$SCRATCH/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"

# Leftovers of runs that were killed outright (SIGKILL, power loss): a report moved aside
# but not replaced is put back; scratch folders of dead runs are removed.
shopt -s nullglob
for d in "$PARENT/.old-$NAME-"* "$PARENT/.tmp-$NAME-"*; do
  pid="${d##*-}"
  if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
    if [[ "$d" == "$PARENT/.old-"* && ! -e "$DEST" ]]; then
      say "restoring $DEST from $d (left by an interrupted run)"; mv "$d" "$DEST"
    else
      rm -rf "$d"
    fi
  fi
done
shopt -u nullglob

# --------------------------------------------------------------------------- run
json_str() { local s="${1//\\/\\\\}"; s="${s//\"/\\\"}"; printf '"%s"' "$s"; }

rm -rf "$TMP"
mkdir -p "$TMP"
say "notebooks: ${NOTEBOOKS[*]} (from $NB_DIR)"
say "writing to $TMP"

FAILURES=()
STATUS="{"
i=0
for name in "${NOTEBOOKS[@]}"; do
  i=$((i + 1))
  say "[$i/${#NOTEBOOKS[@]}] $name (profile $PROFILE)"
  log="$SCRATCH/logs/$name.log"
  start=$(date +%s.%N)
  rc=0
  # papermill's messages and progress go to the terminal and, through tee, to its log.
  exec 4> >(tee "$log" >&2)
  TEE_PID=$!
  # (The redirection is on the command itself: were it on a function, a signal handler
  # running inside that function would write to the pipe of a tee that died with the signal.)
  "$PY" -m papermill "$NB_DIR/$name.ipynb" "$TMP/$name.ipynb" \
    -k python3 -p profile "$PROFILE" -p results_dir "$TMP" --cwd "$NB_CWD" --progress-bar \
    2>&4 &
  wait_child || rc=$?
  exec 4>&-
  wait "$TEE_PID" 2>/dev/null || true
  html_rc=0
  if [[ -f "$TMP/$name.ipynb" ]]; then
    run_child "$PY" -m nbconvert --to html --log-level ERROR --output-dir "$TMP" "$TMP/$name.ipynb" \
      || html_rc=$?
  fi
  secs=$("$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
  if [[ $rc -ne 0 ]]; then
    line="$("$PY" "$ROOT/scripts/build_report.py" --describe-failure "$TMP/$name.ipynb" \
            --name "$name" --log "$log" 2>/dev/null || echo "FAILED: notebook $name (papermill exit $rc)")"
    FAILURES+=("$line")
    echo "$line" >&2
    STATUS+="$(json_str "$name"): {\"status\": \"failed\", \"seconds\": $secs, \"log\": $(json_str "$log")},"
  elif [[ $html_rc -ne 0 ]]; then
    line="FAILED: notebook $name, HTML conversion (nbconvert exit $html_rc)"
    FAILURES+=("$line")
    echo "$line" >&2
    STATUS+="$(json_str "$name"): {\"status\": \"failed\", \"seconds\": $secs, \"error\": $(json_str "HTML conversion failed (nbconvert exit $html_rc)")},"
  else
    say "$name: ok (${secs}s)"
    STATUS+="$(json_str "$name"): {\"status\": \"ok\", \"seconds\": $secs},"
  fi
done
STATUS="${STATUS%,}}"

say "building index.html and results.json"
NB_LIST="$(IFS=,; echo "${NOTEBOOKS[*]}")"
if ! run_child "$PY" "$ROOT/scripts/build_report.py" "$TMP" --run "$NAME" --notebooks "$NB_LIST" \
     --status "$STATUS" --profile "$PROFILE"; then
  FAILURES+=("FAILED: building the report (scripts/build_report.py) failed")
  echo "${FAILURES[-1]}" >&2
fi

if [[ ${#FAILURES[@]} -gt 0 ]]; then
  rm -rf "$FAILED_DIR"
  mv "$TMP" "$FAILED_DIR"
  {
    echo
    echo "This run FAILED (${#FAILURES[@]} of ${#NOTEBOOKS[@]}):"
    printf '  %s\n' "${FAILURES[@]}"
    echo "The failed run is in $FAILED_DIR (index.html, the executed notebooks and their HTML)."
    if [[ -d "$DEST" ]]; then echo "The last good report, $DEST, was left as it was."; fi
  } >&2
  exit 1
fi

# Swap the new report in; signals wait until the swap is done.
trap '' INT TERM
if [[ -e "$DEST" ]]; then mv "$DEST" "$BACKUP"; fi
mv "$TMP" "$DEST"
rm -rf "$BACKUP"
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
say "report: $DEST/index.html (${#NOTEBOOKS[@]} of ${#NOTEBOOKS[@]} notebooks ok)"
