#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds, and runs every
# test. Four builds:
#   build/       Release, gcc: unit, golden, end-to-end tests (ctest)
#   build-asan/  AddressSanitizer + UBSan, without LibTorch: every unit test that does not
#                need the model backend, the gRPC and HTTP server tests included
#   build-tsan/  ThreadSanitizer: the concurrency tests (ctest label "tsan")
#   build-fuzz/  clang + libFuzzer + ASan/UBSan: each fuzz target for a bounded time
# Exits non-zero on any failure. Env: JOBS (parallel build jobs, default nproc),
# EMBEDSERVE_FUZZ_SECONDS (per fuzz target, default 30), EMBEDSERVE_ASAN (0: skip the
# ASan phase).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${EMBEDSERVE_FUZZ_SECONDS:-30}
# ccache (scripts/setup.sh installs it) keeps the four builds' objects between runs and
# clones: paths relative to the clone, so another clone of the same commit reuses them.
if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER:-ccache}
  export CMAKE_C_COMPILER_LAUNCHER=${CMAKE_C_COMPILER_LAUNCHER:-ccache}
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
fi

scripts/setup.sh || { echo "test.sh: setup failed"; exit 1; }

passed=0
failed=0
failed_phases=()

# run_phase NAME BUILD_DIR CTEST_ARGS -- CMAKE_ARGS...
# Builds every target, or only $BUILD_TARGETS (space-separated) when set.
run_phase() {
  local name=$1 dir=$2 ctest_args=$3
  shift 4
  echo "=== ${name}: configure + build (${dir}) ==="
  if ! cmake -S "$ROOT" -B "$dir" -G Ninja "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"; failed=$((failed + 1)); failed_phases+=("$name (configure)"); return
  fi
  # shellcheck disable=SC2086
  if ! cmake --build "$dir" -j "$JOBS" ${BUILD_TARGETS:+--target $BUILD_TARGETS}; then
    failed=$((failed + 1)); failed_phases+=("$name (build)"); return
  fi
  echo "=== ${name}: ctest ==="
  local log="$dir/ctest.log"
  # shellcheck disable=SC2086
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" $ctest_args 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line p t
  line=$(grep -E "tests passed, [0-9]+ tests failed out of" "$log" | tail -1)
  if [ -n "$line" ]; then
    t=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/')
    passed=$((passed + t - f)); failed=$((failed + f))
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
  fi
  if [ "$rc" -ne 0 ]; then failed_phases+=("$name"); fi
}

mkdir -p build build-asan build-tsan build-fuzz
run_phase "release" build "" -- -DCMAKE_BUILD_TYPE=Release
# The server's stages under ASan+UBSan (the client library and the tools are left out to
# keep the phase short); UBSan only prints unless told to stop.
ASAN_TESTS="batch_policy_test batch_scheduler_test batcher_test config_test tokenizer_test
  embedding_pipeline_test http_api_test http_server_test grpc_status_test
  embedding_service_test hostile_client_test"
if [ "${EMBEDSERVE_ASAN:-1}" != 0 ]; then
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  BUILD_TARGETS=$(echo $ASAN_TESTS) run_phase "asan" build-asan \
    "-R ^($(echo $ASAN_TESTS | tr ' ' '|'))\$" -- -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DEMBEDSERVE_SANITIZE=address -DEMBEDSERVE_WITH_TORCH=OFF -DEMBEDSERVE_BUILD_BENCH=OFF
fi
run_phase "tsan" build-tsan "-L tsan" -- -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBEDSERVE_SANITIZE=thread -DEMBEDSERVE_WITH_TORCH=OFF -DEMBEDSERVE_WITH_GRPC=OFF \
  -DEMBEDSERVE_BUILD_BENCH=OFF
run_phase "fuzz" build-fuzz "-L fuzz" -- -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DEMBEDSERVE_FUZZ=ON \
  -DEMBEDSERVE_FUZZ_SECONDS="$FUZZ_SECONDS" -DEMBEDSERVE_WITH_TORCH=OFF \
  -DEMBEDSERVE_WITH_GRPC=OFF -DEMBEDSERVE_BUILD_TESTS=OFF -DEMBEDSERVE_BUILD_BENCH=OFF

echo
if [ ${#failed_phases[@]} -ne 0 ]; then
  echo "test.sh: FAILED phases: ${failed_phases[*]}"
fi
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ ${#failed_phases[@]} -eq 0 ]
