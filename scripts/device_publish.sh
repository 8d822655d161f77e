#!/usr/bin/env bash
# What produced the published GPU report, run on the device machine from the repository root:
#   NSA_COMMIT=<commit> bash scripts/device_publish.sh reports/h100
# It needs the papermill wheels in .whl/ (../shared/device/fetch-wheels.sh) and, for the SGLang
# peer, its two kernel files under .peers/ (nsa_kernels/peers/sglang.py says how).
# Steps: the full-profile report (run_all.sh), the GPU test suite, and compute-sanitizer's
# memcheck over every kernel; logs land beside the report.
set -uo pipefail
dest=${1:-reports/h100}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING
export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH JUPYTER_PATH=/tmp/site/share/jupyter PYTHONUNBUFFERED=1
export NSA_PYTHON=python3
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
./run_all.sh --no-setup --profile full --out "$dest"
status=$?
mkdir -p "$dest"
timeout 900 python3 -m pytest tests -q -m "not notebooks" -p no:cacheprovider > "$dest/pytest_gpu.log" 2>&1
echo "pytest (GPU) rc=$?: $(tail -1 "$dest/pytest_gpu.log")"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 900 compute-sanitizer --tool memcheck --print-limit 50 \
  python3 scripts/memcheck.py > "$dest/memcheck.log" 2>&1
echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|memcheck driver' "$dest/memcheck.log" | tr '\n' ' ')"
exit $status
