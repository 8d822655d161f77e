#!/usr/bin/env bash
# The GPU checks, run on the device machine from the repository root (see README, "GPU runs"):
#   bash scripts/device_verify.sh [NAME ...]     (default: gpu seed bench)
#   NSA_VERIFY_PARALLEL=1 bash scripts/device_verify.sh NAME ...   the checks side by side (for
#     correctness checks only: concurrent processes share the GPU, so their timings mean nothing)
# Each check runs under its own time limit with OUT=/tmp/nsa-verify/NAME (its log and JSON land
# there); one summary line per check is printed at the end, and everything is packed into
# $OUT/verify.tgz (the device tool brings back at most 8 files). Peers: .peers_slim/{sglang,vllm}
# (the few files nsa_kernels/peers/*.py load, extracted from the wheels) when present.
set -uo pipefail
final_out=${OUT:-}
work=/tmp/nsa-verify
rm -rf "$work"; mkdir -p "$work"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# papermill, nbconvert and IPython for the notebooks (../shared/device/fetch-wheels.sh), when carried
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING
  export PYTHONPATH=$PYTHONPATH:/tmp/site PATH=/tmp/site/bin:$PATH JUPYTER_PATH=/tmp/site/share/jupyter
fi
# the peers travel packed (python source packs ~7x): .carry/peers_slim.tar.xz, when carried
[[ -f .carry/peers_slim.tar.xz ]] && tar xJf .carry/peers_slim.tar.xz
[[ -d .peers_slim/sglang ]] && export NSA_SGLANG_PATH=$PWD/.peers_slim
[[ -d .peers_slim/vllm ]] && export NSA_VLLM_PATH=$PWD/.peers_slim/vllm
declare -A CHECKS=(
  [gpu]="timeout 540 python3 -m pytest -q -p no:cacheprovider tests/gpu --junitxml=\$OUT/gpu.xml"
  [modes]="timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_modes_vs_sglang.py tests/gpu/test_modes_gpu.py"
  [extend]="timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_extend_gpu.py"
  [launcher]="timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_launcher_gpu.py"
  [floors]="timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_floors_gpu.py"
  [seed]="timeout 150 python3 -m nsa_kernels.bench.seed_table"
  [bench]="timeout 300 python3 -m nsa_kernels.bench.bench_modes --bs 1 8 32 128 1024 --widths 8192 131072"
  [modes_gpu]="timeout 330 python3 -m pytest -q -p no:cacheprovider tests -m gpu"
  [pytest]="timeout 540 python3 -m pytest tests -q -m 'not notebooks' -p no:cacheprovider -x"
  [sglang]="timeout 300 python3 -m nsa_kernels.peers.sglang_backend_check --full --seeds 1 --budget-s ${NSA_BUDGET_S:-200} --json \$OUT/sglang_selfcheck.json"
  [conformance]="timeout 300 python3 -m nsa_kernels.integrations.sglang --conformance --full --modes decode,decode_narrow,eager_decode,eager_target_verify,eager_draft_extend,extend,extend_ragged,mtp_decode --budget-s ${NSA_BUDGET_S:-240} --json \$OUT/conformance.json"
  [conformance_verify]="timeout 300 python3 -m nsa_kernels.integrations.sglang --conformance --full --modes target_verify --budget-s ${NSA_BUDGET_S:-240} --json \$OUT/conformance_verify.json"
  [conformance_draft]="timeout 300 python3 -m nsa_kernels.integrations.sglang --conformance --full --modes draft_extend --budget-s ${NSA_BUDGET_S:-240} --json \$OUT/conformance_draft.json"
  [in_graph]="timeout 240 python3 -m nsa_kernels.integrations.sglang --in-graph --json \$OUT/in_graph.json"
  [host_cost]="timeout 90 python3 -m nsa_kernels.integrations.sglang --host-cost --sizes 1,32,128,512 --width 8192 --json \$OUT/host_cost.json"
  [host_profile]="timeout 120 python3 -m nsa_kernels.integrations.sglang --host-profile decode && timeout 60 python3 -m nsa_kernels.integrations.sglang --host-profile decode:sglang_step"
  [step_quick]="timeout 150 python3 -m nsa_kernels.bench.step --profile quick --out \$OUT/step_quick.json"
  [memcheck]="env PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 330 compute-sanitizer --tool memcheck --report-api-errors no --print-limit 50 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_memcheck.py"
)
# NSA_BUDGET_S: the time budget of the harness and conformance checks (seconds)
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(gpu seed bench)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
run_check() {  # NAME: its log, rc and time under $work/NAME
  local name=$1 cmd=${CHECKS[$1]:-} start=$SECONDS
  mkdir -p "$work/$name"
  [[ -n $cmd ]] || { echo "unknown check" > "$work/$name/$name.log"; echo 2 > "$work/$name/rc"; return; }
  OUT=$work/$name bash -c "$cmd" > "$work/$name/$name.log" 2>&1
  echo "$? $((SECONDS - start))" > "$work/$name/rc"
}
for name in "${names[@]}"; do
  if [[ -n ${NSA_VERIFY_PARALLEL:-} ]]; then run_check "$name" & else run_check "$name"; fi
done
wait
summary=()
for name in "${names[@]}"; do
  read -r rc seconds < "$work/$name/rc"
  summary+=("$name: rc=$rc (${seconds:-?} s) | $(grep -E 'PASS|FAIL|MET|MISS|passed|failed|ERROR SUMMARY|MISMATCH|equal' "$work/$name/$name.log" | tail -n 1 | cut -c1-150)")
done
printf '%s\n' "${summary[@]}" | tee "$work/summary.txt"
if [[ -n $final_out ]]; then
  tar czf "$final_out/verify.tgz" -C "$work" .
  cp "$work/summary.txt" "$final_out/"
fi
