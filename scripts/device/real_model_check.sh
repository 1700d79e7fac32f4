#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): the merged tree on the real all-MiniLM-L6-v2 in one
# call: the build, the CUDA kernel tests, minilm_reference_test's CUDA case (fp32, fp16,
# bf16 and fp32 + TF32 against the fp32 reference fixtures), BM_Embed fp16 and bf16
# 1,024 x 16 (the defaults, median of 5, twice), and served Similarity at the defaults
# (batch 32 at c64 and c128, batch 1 at c256 and c1; reqpath_ab.sh, two rounds).
# Device calls: the model in parts first (scripts/device/pack_model.sh says how), then
# carry [".device/debs"], command
#   OUT=$OUT scripts/device/real_model_check.sh 2>&1 | tee $OUT/run.log
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh real_model_check

step "1. build"
ab_build
ab_machine
scripts/device/unpack_model.sh || { pack; exit 1; }

step "2. CUDA tests on the real model"
ab_kernel_tests
timeout 180 "$B/tests/model/minilm_reference_test" --gtest_color=no \
  >"$RAW/minilm_reference_test.log" 2>&1
echo "minilm_reference_test exit $?"
grep -E "min cosine|^\[ +(OK|FAILED|SKIPPED) +\]" "$RAW/minilm_reference_test.log"
pack

step "3. BM_Embed 1,024 x 16 at the defaults (median of 5), twice"
for round in 1 2; do
  embed "fp16_$round" "" 'BM_Embed/fp16/batch:1024/tokens:16/' 5 "fp16 defaults"
  embed "bf16_$round" "" 'BM_Embed/bf16/batch:1024/tokens:16/' 5 "bf16 defaults"
done
pack

step "4. served Similarity at the defaults (4 s per point), two rounds"
P=32/64/1+32/128/1+1/256/16+1/1/1
mkdir -p "$RAW/served"
ROUNDS="NEW1:8:1024:$P NEW2:8:1024:$P" DURATION=4 BUILD_DIR=$B OUT="$RAW/served" \
  scripts/device/reqpath_ab.sh 2>&1 | grep -vE "^\[bench\] waiting|^\[cpu\]"
step "done"
pack
