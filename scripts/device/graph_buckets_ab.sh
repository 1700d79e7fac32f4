#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, CUDA graph buckets): whether capturing only buckets
# of at most the precision's token slots (src/model/graph_buckets.h) beats capturing every
# bucket up to 32,768 slots and replaying the first that holds a batch. One build, the
# limit switched per process by EMBEDSERVE_GRAPH_MAX_SLOTS (OLD: 32768; NEW: unset, the
# built-in limit; ALT: $ALT), on the synthetic minilm-l6 folder (the shapes of
# all-MiniLM-L6-v2). In order, each step only while time is left in a 10-minute call:
#   1. build (build_and_test.sh, SKIP_TESTS=1)
#   2. graph_buckets_bench for BENCH_FIRST (fp16): graph / eager / rule ms per batch shape
#   3. served Similarity over gRPC, experiments/minilm_gpu_fp16.yaml (graph buckets up to
#      1,024 sequences): rounds of reqpath_ab.sh in turn (ROUND_SET)
#   4. embedserve-bench-inprocess, Embed 64 and 256 texts, fp32 and fp16, OLD and NEW
#   5. graph_buckets_test, bert_backend_test's CUDA graph cases
#   6. graph_buckets_bench for BENCH_LAST (fp32 tf32)
# Device call (the snapshot unpacked by hand, as from_snapshot.sh does):
#   carry [".device/debs", "<folder with src.tar and src.rev>"]; in the snapshot:
#   scripts/device/graph_buckets_ab.sh
# Env: DURATION (measured seconds per served point, 4), ALT (16384), POINTS (reqpath_ab.sh
#      points), ROUND_SET (OLD1 NEW1 OLD2 NEW2), BENCH_FIRST, BENCH_LAST.
# Everything comes back as $OUT/run.log, $OUT/bench_*.txt and $OUT/raw.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh graph_buckets
DURATION=${DURATION:-4}
ALT=${ALT:-16384}
POINTS=${POINTS:-32/16/1+32/64/1+32/128/1+1/256/16+1/1/1}
ROUND_SET=${ROUND_SET:-OLD1 NEW1 OLD2 NEW2}
BENCH_FIRST=${BENCH_FIRST-fp16}
BENCH_LAST=${BENCH_LAST-fp32 tf32}

step "1. build"
ab_build
ab_machine
ab_synthetic_model
model=$SYNTH_MODEL

bench() {  # bench PRECISION
  step "graph_buckets_bench $1"
  EMBEDSERVE_BENCH_MODEL=$model "$B/bench/model/graph_buckets_bench" "$1" 9 \
    2>"$RAW/bench_$1.err" | tee "$OUT/bench_$1.txt"
}
for p in $BENCH_FIRST; do bench $p; done

if left 250; then
  step "3. served A/B (DURATION $DURATION s per point)"
  rounds=""
  for r in $ROUND_SET; do
    case $r in
      OLD*) rounds+=" $r:8:1024:$POINTS:EMBEDSERVE_GRAPH_MAX_SLOTS=32768" ;;
      NEW*) rounds+=" $r:8:1024:$POINTS" ;;
      ALT*) rounds+=" $r:8:1024:$POINTS:EMBEDSERVE_GRAPH_MAX_SLOTS=$ALT" ;;
    esac
  done
  mkdir -p "$RAW/served"
  ROUNDS="$rounds" DURATION=$DURATION BUILD_DIR=$B OUT="$RAW/served" scripts/device/reqpath_ab.sh
  pack
fi

if left 450; then
  step "4. in process"
  mkdir -p "$RAW/inprocess"
  for p in fp32 fp16; do
    for rule in OLD NEW; do
      env_rule=""; [ $rule = OLD ] && env_rule=EMBEDSERVE_GRAPH_MAX_SLOTS=32768
      env $env_rule "$B/tools/bench/embedserve-bench-inprocess" \
        --config experiments/minilm_gpu_fp16.yaml --model $model --precision $p \
        --method embed --batch-sizes 64,256 --duration-s 2 --warmup-s 1 \
        --out-dir "$RAW/inprocess/${p}_$rule" 2>&1 | grep -E "inprocess|rror" | sed "s/^/[$p $rule] /"
    done
  done
  pack
fi

if left 500; then
  step "5. tests"
  "$B/tests/model/graph_buckets_test" 2>&1 | tail -3
  "$B/tests/model/bert_backend_test" --gtest_filter='*CudaGraph*' --gtest_color=no \
    >"$RAW/bert_backend_cuda_graphs.log" 2>&1
  grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED) +\]" "$RAW/bert_backend_cuda_graphs.log"
fi

for p in $BENCH_LAST; do
  if left 530; then bench $p; fi
done
step "done"
pack
