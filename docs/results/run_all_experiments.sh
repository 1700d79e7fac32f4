#!/usr/bin/env bash
# Re-runs the experiments behind docs/results/report.md (issue 6's grid) from the
# repository root and rebuilds the report into docs/results/. About 12 minutes on the
# 2-core CPU machine; nothing else should run meanwhile (client and server share the cores).
# Needs a Release build in build/ (scripts/run.sh or scripts/test.sh make one; or
# BUILD_DIR=dir for another build folder with embedserve, embedserve-bench and
# embedserve-bench-inprocess) and the
# synthetic model (build/tools/make_model/embedserve-make-model --out
# models/minilm-l6-synthetic --preset minilm-l6 --seed 42; scripts/run.sh makes it too).
set -euo pipefail
cd "$(dirname "$0")/../.."
G="--method similarity --batch-sizes 1,4,8,16,32 --concurrencies 1,4 --extra-grid 1/32"
B="--build-dir ${BUILD_DIR:-build}"
scripts/run_experiment.sh $B --inprocess 32 --bench-args "$G" \
  experiments/minilm_baseline.yaml experiments/minilm_quantized.yaml
scripts/run_experiment.sh $B --inprocess 32 \
  --bench-args "$G --extra-grid 1/8,16,64,128,256 --extra-grid 64,128,256/1,4,16" \
  experiments/minilm_batching.yaml
/usr/bin/python3 scripts/report.py results --out docs/results \
  --title "embedserve on the 2-core CPU machine"
