#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14): the gRPC floor under batch-1 serving on this host,
# and the server's two ways of taking calls beside it. bench/grpc/floor.sh alternates, in
# each round, grpc_floor_server (embedserve's gRPC surface answering at once: callback
# API, or completion queues with a thread each) with the real server
# (experiments/minilm_gpu_fp16.yaml) taking Embed and Similarity on gRPC's callback API
# (server-callback, server.grpc_queues 0) and on N completion queues (server-qN, for each
# N of QUEUES), embedserve-bench on the same host: Similarity batch 1 at c1 and at c256
# (16 channels), batch 32 at c64. What the floor reaches at c256 bounds the server's
# batch-1 rate there; its c1 round trip bounds the batch-1 latency's share outside the
# model.
# Device call: carry [".device/debs"]: scripts/device/grpc_floor.sh
# Env: ROUNDS (2), DURATION (4), POINTS (floor.sh's b/c/ch list), CQ_THREADS (nproc / 2),
#      QUEUES ("4 8": each N, or NcM for N queues and batching.completion_threads M, is
#      system server-qN / server-qNcM), SYSTEMS (floor.sh's; default "floor-callback
#      floor-cq server-callback" and the QUEUES systems), MODEL (the model folder;
#      default the synthetic minilm-l6, the real model's shapes).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh grpc_floor
step "1. build"
ab_build
ab_machine
ab_synthetic_model
MODEL=${MODEL:-$SYNTH_MODEL}
QUEUES=${QUEUES:-"4 8"}
configs=$RAW/configs
mkdir -p "$configs"
# One experiment file per way of taking calls: the GPU experiment with only
# server.grpc_queues (and, for NcM, batching.completion_threads) set otherwise.
queues_config() {  # queues_config N FILE [COMPLETION_THREADS]
  sed -e '/^  grpc_queues:/d' -e "s/^server:\$/server:\\n  grpc_queues: $1/" \
    ${3:+-e "s/^  completion_threads: .*/  completion_threads: $3/"} \
    experiments/minilm_gpu_fp16.yaml >"$2"
}
queues_config 0 "$configs/callback.yaml"
export SERVER_ARGS_callback="--config $configs/callback.yaml --model $MODEL"
systems="floor-callback floor-cq server-callback"
for v in $QUEUES; do
  completion=
  case $v in *c*) completion=${v#*c} ;; esac
  queues_config "${v%%c*}" "$configs/q$v.yaml" $completion
  export "SERVER_ARGS_q$v=--config $configs/q$v.yaml --model $MODEL"
  systems="$systems server-q$v"
done
step "2. floor / server alternated (bench/grpc/floor.sh): ${SYSTEMS:-$systems}"
BUILD_DIR=$B ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-4} POINTS=${POINTS:-"1/1/1 1/256/16 32/64/16"} \
  SYSTEMS=${SYSTEMS:-$systems} bench/grpc/floor.sh "$RAW/floor" | grep -v "^[0-9]"
pack
