#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): the gRPC floor under batch-1 serving on this host.
# bench/grpc/floor.sh alternates grpc_floor_server (embedserve's gRPC surface answering at
# once: callback API, and the completion-queue API with a queue per thread) with the real
# server (experiments/minilm_gpu_fp16.yaml on the synthetic minilm-l6), embedserve-bench on
# the same host: Similarity batch 1 at c1 and at c256 (16 channels), batch 32 at c64. What
# the floor reaches at c256 bounds the server's batch-1 rate there; its c1 round trip bounds
# the batch-1 latency's share outside the model.
# Device call: carry [".device/debs"]: scripts/device/grpc_floor.sh
# Env: ROUNDS (2), DURATION (4), POINTS (floor.sh's b/c/ch list), CQ_THREADS (nproc / 2).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh grpc_floor
step "1. build"
ab_build
ab_machine
ab_synthetic_model
step "2. floor / server alternated (bench/grpc/floor.sh)"
BUILD_DIR=$B ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-4} POINTS=${POINTS:-"1/1/1 1/256/16 32/64/16"} \
  SERVER_ARGS="--config experiments/minilm_gpu_fp16.yaml --model $SYNTH_MODEL" \
  bench/grpc/floor.sh "$RAW/floor" | grep -v "^[0-9]"
pack
