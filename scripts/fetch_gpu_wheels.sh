#!/usr/bin/env bash
# What a GPU run of SGLang's backend harness carries (the GPU machine cannot download):
#  * .whl/: cp312 wheels of the packages SGLang's files need at import (the `peers` extra:
#    msgspec, pydantic with pydantic_core / annotated_types / typing_inspection, regex,
#    typing_extensions), the versions of this machine's environment so the GPU runs what CI ran;
#  * .peers_slim/sglang: the SGLang files the harness loads (python -m nsa_kernels.peers.fetch
#    --slim), for NSA_SGLANG_PATH=.peers_slim there;
#  * .peers_slim/vllm: vLLM's attention ops and MLA backends, and utils/deep_gemm.py (the Hopper
#    path's native_next_n_supported, peers/vllm_hopper.py), from .peers/vllm-*.whl when present
#    (pip download vllm==0.33.0 --no-deps -d .peers: 330 MB, only ~3 MB of it travels);
#  * .carry/peers_slim.tar.xz: .peers_slim packed (~4 MB instead of ~33), which the device
#    scripts unpack: the working tree, .whl and the peers must travel in 64 MiB together.
# Run once from the project root: scripts/fetch_gpu_wheels.sh  (then carry [".whl", ".carry"])
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${NSA_PYTHON:-.venv/bin/python}"
for ignored in /.whl/ /.peers_slim/ /.carry/; do
  exclude="$(git rev-parse --git-path info/exclude)"
  grep -qx "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >> "$exclude"
done
mkdir -p .whl
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
names = ["msgspec", "pydantic", "pydantic_core", "annotated_types", "typing_inspection", "regex",
         "typing_extensions"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PYEOF
)
echo "==> cp312 wheels: $pins"
# shellcheck disable=SC2086
"$PY" -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl $pins
"$PY" -m nsa_kernels.peers.fetch --strict --slim .peers_slim
vllm_wheel=$(ls .peers/vllm-0.33.0-*.whl 2>/dev/null | tail -n 1 || true)
if [[ -n $vllm_wheel ]]; then
  mkdir -p .peers_slim/vllm
  unzip -q -o "$vllm_wheel" 'vllm/v1/attention/ops/*' 'vllm/v1/attention/backends/mla/*' \
    'vllm/v1/attention/backends/*.py' 'vllm/utils/deep_gemm.py' -d .peers_slim/vllm
else
  echo "no .peers/vllm-0.33.0-*.whl: the vLLM peer will be absent on the GPU"
fi
mkdir -p .carry
tar cJf .carry/peers_slim.tar.xz .peers_slim
echo "carry: .whl ($(du -sh .whl | cut -f1)), .carry ($(du -sh .carry | cut -f1))"
