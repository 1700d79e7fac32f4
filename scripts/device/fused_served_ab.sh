#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: served Similarity over gRPC with the fused CUDA kernels off and
# on (EMBEDSERVE_FUSED_KERNELS=0 / default), alternating off, on, off, on in one run, fp16
# (experiments/minilm_gpu_fp16.yaml) on the synthetic minilm-l6 folder (the shapes and
# FLOPs of all-MiniLM-L6-v2; speed does not depend on the weights), the bench client on
# the same host: batch 32 at concurrency 128, batch 1 at concurrency 1 and 256.
# Device call: carry [".device/debs"]: scripts/device/fused_served_ab.sh
# Env: DURATION (measured seconds per point, 4), BUILD_DIR (build-gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(pwd)/device-out}; mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
DURATION=${DURATION:-4}
SKIP_TESTS=1 BUILD_DIR=$B scripts/device/build_and_test.sh >"$OUT/build.log" 2>&1 ||
  { tail -30 "$OUT/build.log"; exit 1; }
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores; commit ${EMBEDSERVE_GIT_COMMIT:-unknown}"
model=models/minilm-l6-synthetic
[ -f $model/model.safetensors ] ||
  "$B/tools/make_model/embedserve-make-model" --out $model --preset minilm-l6 --seed 42 >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for round in off on off on; do
  setting=default; [ $round = off ] && setting=0
  port=$(free_port)
  EMBEDSERVE_FUSED_KERNELS=$([ $round = off ] && echo 0 || echo ln,gelu_lt) \
    "$B/tools/server/embedserve" --config experiments/minilm_gpu_fp16.yaml --model $model \
    --port "$port" --http-port -1 --metrics-port -1 --log-level warn >"$OUT/server_$round.log" 2>&1 &
  pid=$!
  echo "=== fused $round (EMBEDSERVE_FUSED_KERNELS=$setting)"
  "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$port" --wait-ready 180 \
    --method similarity --batch-sizes 32 --concurrencies 128 --extra-grid 1/1,256 \
    --duration-s "$DURATION" --warmup-s 1 2>&1 | grep -v "waiting"
  kill -TERM $pid; wait $pid
done
