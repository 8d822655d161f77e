#!/usr/bin/env bash
# What a GPU run of SGLang's backend harness carries (the GPU machine cannot download):
#  * .whl/: cp312 wheels of the packages SGLang's files need at import (the `peers` extra:
#    msgspec, pydantic with pydantic_core / annotated_types / typing_inspection, regex,
#    typing_extensions), the versions of this machine's environment so the GPU runs what CI ran;
#  * .peers_slim/sglang: the SGLang files the harness loads (python -m nsa_kernels.peers.fetch
#    --slim), for NSA_SGLANG_PATH=.peers_slim there.
# Run once from the project root: scripts/fetch_gpu_wheels.sh  (then carry [".whl", ".peers_slim"])
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${NSA_PYTHON:-.venv/bin/python}"
for ignored in /.whl/ /.peers_slim/; do
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
echo "carry: .whl ($(du -sh .whl | cut -f1)), .peers_slim ($(du -sh .peers_slim | cut -f1))"
