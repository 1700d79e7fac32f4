#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, the fused CUDA kernels), in one run:
#   1. builds (build_and_test.sh; the whole ctest too unless SKIP_CTEST=1);
#   2. fused_kernels_test verbosely (the kernels against ATen);
#   3. bench/model BM_Embed (the whole Backend::Embed) fp16 1,024 x 16, A/B/A/B:
#      EMBEDSERVE_FUSED_KERNELS=0 (the ATen-op path) against the default, alternating;
#   4. with the real model in models/ (docs/gpu.md "The real model on the GPU machine"),
#      minilm_reference_test's CUDA case (fp32, fp16, bf16, fp32+TF32 against the CPU fp32
#      reference) with the default, with 0, and with ln,gelu (the erf kernel instead of
#      cuBLASLt's tanh-GELU epilogue);
#   5. fused_kernels_bench: per-op GPU time, ATen's way and the fused way, at MiniLM-L6's
#      shapes (16,384 tokens);
#   6. BM_Embed with each variant (ln, ln,gelu, gelu_lt);
#   7. bert_backend_test's CUDA cases (CUDA graphs against the eager path) with the default;
#   8. other shapes and precisions, off / on.
# Logs and JSON to $OUT.
# Device call: carry [".device/debs"] (and the model as docs/gpu.md says), command
#   scripts/device/fused_ab.sh
# The device tool sends the session's main checkout; from another worktree, pack the
# commit (git archive -o <main>/.device/wt14/src.tar HEAD), carry [".device/debs",
# ".device/wt14"] and run: mkdir -p /tmp/es && tar -xf .device/wt14/src.tar -C /tmp/es &&
# ln -sfn $PWD/.device /tmp/es/.device && ln -sfn $PWD/models /tmp/es/models &&
# cd /tmp/es && SKIP_CTEST=1 scripts/device/fused_ab.sh  (how commit d7d68b5 ran).
# Env: BUILD_DIR (build-gpu), REPS (BM_Embed repetitions, 5), SKIP_BUILD=1, SKIP_CTEST=1.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$(pwd)/device-out}; export OUT
# shellcheck disable=SC2034  # read by ab_lib.sh: logs and JSON straight to $OUT
RAW=$OUT
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh fused
REPS=${REPS:-5}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "build (build_and_test.sh)"
  SKIP_TESTS=${SKIP_CTEST:-0} BUILD_DIR=$B scripts/device/build_and_test.sh 2>&1 | tail -45
fi
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader

step "fused_kernels_test"
"$B/tests/model/fused_kernels_test" --gtest_color=no >"$OUT/fused_kernels_test.log" 2>&1
echo "fused_kernels_test exit $?"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\]|Failure|Expected|Which is" "$OUT/fused_kernels_test.log" | head -30

# fused TAG FUSED FILTER [REPS]: BM_Embed under EMBEDSERVE_FUSED_KERNELS=FUSED (ab_lib.sh's
# embed), $REPS repetitions unless given.
fused() { embed "$1" "EMBEDSERVE_FUSED_KERNELS=$2" "$3" "${4:-$REPS}" "$2"; }
T1024='BM_Embed/fp16/batch:1024/tokens:16/'
step "BM_Embed fp16 1,024 x 16: off / on / off / on (median of $REPS each)"
fused off1 0 "$T1024"
fused on1 1 "$T1024"
fused off2 0 "$T1024"
fused on2 1 "$T1024"

if [ -f models/all-MiniLM-L6-v2/model.safetensors ]; then
  for f in 1 0 ln,gelu; do
    step "fidelity: minilm_reference_test *Cuda* with EMBEDSERVE_FUSED_KERNELS=$f"
    EMBEDSERVE_FUSED_KERNELS=$f "$B/tests/model/minilm_reference_test" --gtest_color=no \
      --gtest_filter='*Cuda*' >"$OUT/fidelity_$f.log" 2>&1
    echo "exit $?"
    grep -E "min cosine|^\[ +(OK|FAILED) +\]" "$OUT/fidelity_$f.log"
  done
else
  echo "fused_ab: models/all-MiniLM-L6-v2 missing: no fidelity run (docs/gpu.md)"
fi

step "fused_kernels_bench (per op, 16,384 x 384 / 1,536; median of 3)"
"$B/bench/model/fused_kernels_bench" --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_out="$OUT/fused_kernels_bench.json" \
  --benchmark_out_format=json >"$OUT/fused_kernels_bench.log" 2>&1
echo "exit $?"
python3 scripts/device/fused_ab_summary.py ops "$OUT/fused_kernels_bench.json"

step "variants, fp16 1,024 x 16"
fused ln ln "$T1024"
fused ln_gelu ln,gelu "$T1024"
fused gelult gelu_lt "$T1024"

step "bert_backend_test CUDA cases (graphs vs eager, attention paths, fixtures), default"
"$B/tests/model/bert_backend_test" --gtest_color=no --gtest_filter='*Cuda*' \
  >"$OUT/bert_backend_cuda.log" 2>&1
echo "exit $?"
grep -E "^\[ +(OK|FAILED) +\]" "$OUT/bert_backend_cuda.log"

step "other shapes and precisions: off / on (median of 3)"
OTHER='BM_Embed/(fp16|bf16)/batch:(1|32|128)/tokens:(16|128)/|BM_Embed/(bf16|fp32)/batch:1024/tokens:16/'
fused other_off 0 "$OTHER" 3
fused other_on 1 "$OTHER" 3
step "done"
