#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: configures embedserve against python3's LibTorch (2.11, CUDA)
# and the carried Debian gRPC/abseil/protobuf set (env.sh), builds everything, and runs
# the whole ctest suite with the CUDA tests enabled. Logs go to $OUT (or ./device-out).
# Usage (through the device tool, carry [".device"]):
#   scripts/device/build_and_test.sh [extra cmake args...]
# Env: BUILD_DIR (default build-gpu), JOBS (default nproc), CTEST_ARGS (extra ctest args),
#      SKIP_TESTS=1 (configure + build only).
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
OUT=${OUT:-$ES_ROOT/device-out}
mkdir -p "$OUT"
BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
# The CUDA test cases run when LibTorch sees a GPU and skip otherwise; the verbose rerun
# at the end turns a skip into a failure here.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}

step() { echo "=== $* ($(date +%T))"; }

step "configure -> $OUT/configure.log"
# -include cstdint: Debian's abseil 20220623 / gRPC 1.51 headers predate g++ 13, which
# no longer pulls <cstdint> in transitively. -I fmt: see ES_FMT_INCLUDE in env.sh.
# The system libstdc++.so.6 first among the needed libraries: PyTorch's wheels export
# broken copies of libstdc++'s std::filesystem functions from libtorch.so
# (pytorch/pytorch#133437), and the image's g++ (/opt/gcc) has only a static libstdc++,
# so without this std::filesystem::remove_all in our programs binds to libtorch.so's copy
# and jumps to address 0 (scripts/device/smoke/fs_smoke.cc shows it).
STDCXX_SO=$(ldconfig -p | awk '$1 == "libstdc++.so.6" && /x86-64/ {print $NF; exit}')
LINKER_FLAGS=""
[ -n "$STDCXX_SO" ] && LINKER_FLAGS="-Wl,--no-as-needed $STDCXX_SO -Wl,--as-needed"
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_PREFIX_PATH="$CMAKE_PREFIX_PATH" \
     -DCMAKE_CXX_FLAGS="-include cstdint -I$ES_FMT_INCLUDE" \
     -DCMAKE_EXE_LINKER_FLAGS="$LINKER_FLAGS" \
     "$@" >"$OUT/configure.log" 2>&1; then
  tail -60 "$OUT/configure.log"; echo "build_and_test: configure FAILED"; exit 1
fi
grep -E "Torch|CUDA|gRPC|Protobuf|absl" "$OUT/configure.log" | head -20

step "build (-j$JOBS) -> $OUT/build.log"
if ! cmake --build "$BUILD_DIR" -j "$JOBS" >"$OUT/build.log" 2>&1; then
  grep -E "error|Error|FAILED" "$OUT/build.log" | head -40; tail -30 "$OUT/build.log"
  echo "build_and_test: build FAILED"; exit 1
fi
tail -2 "$OUT/build.log"
[ "${SKIP_TESTS:-0}" = 1 ] && { echo "build_and_test: build OK (tests skipped)"; exit 0; }

# report_test runs /usr/bin/python3 (Debian's, with python3-matplotlib); Ubuntu's has
# no matplotlib, but the image's python3 (same 3.12) has: lend it its site-packages.
if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  mpl_site=$(python3 -c 'import matplotlib, os; print(os.path.dirname(os.path.dirname(matplotlib.__file__)))' 2>/dev/null)
  if [ -n "$mpl_site" ]; then
    export PYTHONPATH="$mpl_site${PYTHONPATH:+:$PYTHONPATH}"
    echo "build_and_test: /usr/bin/python3 lacks matplotlib; PYTHONPATH=$mpl_site"
  fi
fi

step "ctest -> $OUT/ctest.log"
# shellcheck disable=SC2086
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" ${CTEST_ARGS:-} >"$OUT/ctest.log" 2>&1
rc=$?
grep -E "Test +#|tests passed|Skipped|SKIPPED|FAILED|Failed" "$OUT/ctest.log" | tail -60
echo "build_and_test: ctest exit $rc"

# A crashed test binary: its backtrace (cuda-gdb also debugs host-only programs; the
# image has no gdb) -> $OUT/backtraces.log.
: >"$OUT/backtraces.log"
grep -E '^[[:space:]]*[0-9]+ - [A-Za-z0-9_-]+ \((SEGFAULT|Subprocess aborted|OTHER_FAULT|BUS_ERROR|ILLEGAL)' \
    "$OUT/ctest.log" | awk '{print $3}' | while read -r name; do
  exe=$(find "$BUILD_DIR/tests" -type f -name "$name" -perm -u+x | head -1)
  dbg=$(command -v cuda-gdb || command -v gdb)
  if [ -n "$exe" ] && [ -n "$dbg" ]; then
    echo "=== $name" >>"$OUT/backtraces.log"
    timeout 300 "$dbg" -q -batch -ex run -ex bt -ex "info threads" --args "$exe" \
      >>"$OUT/backtraces.log" 2>&1
  fi
done
[ -s "$OUT/backtraces.log" ] && grep -E "^#[0-9]+ " "$OUT/backtraces.log" | head -30

# ctest shows no output of passing tests, so a CUDA case that skipped would look like a
# pass: run the CUDA cases again verbosely and fail on any skip.
step "CUDA test cases (gtest filter *Cuda*) -> $OUT/cuda_cases.log"
: >"$OUT/cuda_cases.log"
while IFS= read -r exe; do
  "$exe" --gtest_filter='*Cuda*:*CUDA*' --gtest_color=no >>"$OUT/cuda_cases.log" 2>&1 || rc=1
done < <(find "$BUILD_DIR/tests" -type f -name '*_test' -perm -u+x | sort)
grep -E "^\[ +(OK|SKIPPED|FAILED) +\]" "$OUT/cuda_cases.log" | grep -v "listed below" | sort | uniq
if grep -qE "^\[ +SKIPPED +\] [A-Za-z]" "$OUT/cuda_cases.log"; then
  echo "build_and_test: a CUDA test case SKIPPED on the GPU machine"; rc=1
fi
echo "build_and_test: exit $rc"
exit $rc
