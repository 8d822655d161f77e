#!/usr/bin/env bash
# What produced the published GPU report, run on the device machine from the repository root:
#   NSA_COMMIT=$(git rev-parse --short=12 HEAD) bash scripts/device_publish.sh report reports/h100 [--only ...]
#     (NSA_COMMIT: the device machine's git metadata can be a stale copy, so the stamp is passed in)
#   bash scripts/device_publish.sh tests  reports/h100                      GPU test suite
#   bash scripts/device_publish.sh memcheck reports/h100                    compute-sanitizer memcheck
# One step per call keeps each under the device tool's 10-minute limit; `report` with --only
# merges into the report already at the destination (run_all.sh --only), so two calls at one
# commit make one report. Needs the papermill wheels in .whl/ (../shared/device/fetch-wheels.sh)
# and, for the peers, .peers_slim/{sglang,vllm} (the few files nsa_kernels/peers/*.py load,
# extracted from the wheels). Outputs are packed into $OUT/publish.tgz.part-NN when OUT is set.
set -uo pipefail
step=${1:?step: report, tests or memcheck}
dest=${2:-reports/h100}
shift 2 || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING
export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH JUPYTER_PATH=/tmp/site/share/jupyter PYTHONUNBUFFERED=1
export NSA_PYTHON=python3
[[ -n ${NSA_COMMIT:-} ]] || echo "device_publish.sh: warning: NSA_COMMIT not set; the stamp is this machine's git HEAD" >&2
# the peers travel packed (python source packs ~7x): .carry/peers_slim.tar.xz, when carried
[[ -f .carry/peers_slim.tar.xz ]] && tar xJf .carry/peers_slim.tar.xz
[[ -d .peers_slim/sglang ]] && export NSA_SGLANG_PATH=$PWD/.peers_slim
[[ -d .peers_slim/vllm ]] && export NSA_VLLM_PATH=$PWD/.peers_slim/vllm
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
status=0
case "$step" in
  report)
    ./run_all.sh --no-setup --profile full --out "$dest" --replace-published "$@" 2>&1 | tee /tmp/run_all.log
    status=${PIPESTATUS[0]}
    mkdir -p "$dest"; cp /tmp/run_all.log "$dest/run_all.log" ;;
  tests)
    mkdir -p "$dest"
    timeout 570 python3 -m pytest tests -q -m "not notebooks" -p no:cacheprovider > "$dest/pytest_gpu.log" 2>&1
    status=$?
    echo "pytest (GPU) rc=$status: $(tail -1 "$dest/pytest_gpu.log")" ;;
  memcheck)  # extra arguments go to pytest (e.g. -k garbage); one log each.
    # API-error reports off: cuda-python resolves driver symbols through cuGetProcAddress and
    # gets CUDA_ERROR_INVALID_VALUE for the ones this driver lacks (34 such reports, all at
    # the first driver launch, in the first run); memcheck still reports every memory error.
    mkdir -p "$dest"
    log="$dest/memcheck$(printf '%s' "$*" | tr -c 'a-z' '_' | sed 's/^_*/_/; s/_*$//').log"
    [[ $# -gt 0 ]] || log="$dest/memcheck.log"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${MEMCHECK_TIMEOUT:-570} compute-sanitizer --tool memcheck \
      --report-api-errors no --print-limit 50 python3 -m pytest -q -p no:cacheprovider \
      tests/gpu/test_memcheck.py "$@" > "$log" 2>&1
    status=$?
    echo "memcheck $* rc=$status: $(grep -E 'ERROR SUMMARY| passed| failed' "$log" | tr '\n' ' ')" ;;
  *) echo "unknown step: $step" >&2; exit 2 ;;
esac
# a failed run is kept as reports/.failed-<run>/: it travels too (its banner names the cell)
# in parts of 15 MiB (the device tool returns files of at most 16 MiB each); unpack with
#   cat publish.tgz.part-* | tar xz
[[ -n ${OUT:-} ]] && tar czf - $(ls -d "$dest" reports/.failed-* 2>/dev/null) \
  | split -b 15M -d - "$OUT/publish.tgz.part-"
exit $status
