#!/usr/bin/env bash
# test.sh - the whole test suite from a fresh Debian machine: installs the
# packages and Python clients the tests need, builds caravan, runs ctest
# (unit, model, MPI and end-to-end tests), then the GGUF corrupt-file corpus
# again under AddressSanitizer + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
JOBS=${JOBS:-$(nproc)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# Python clients for the end-to-end tests (official grpcio and openai packages).
if [ -f tests/e2e/requirements.txt ]; then
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  .venv/bin/python -m pip install -q -r tests/e2e/requirements.txt
  export CARAVAN_PYTHON="$PWD/.venv/bin/python"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCARAVAN_PYTHON="${CARAVAN_PYTHON:-python3}" >/dev/null
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS"

# Sanitizer pass: the parser-facing tests, rebuilt with ASan + UBSan.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCARAVAN_SANITIZE=ON -DCARAVAN_CUDA=OFF >/dev/null
cmake --build build-asan -j"$JOBS" --target caravan_asan_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -L asan
