#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, the request path at batch 1): served Similarity over
# gRPC, fp16 (experiments/minilm_gpu_fp16.yaml) on the synthetic minilm-l6 folder (the
# shapes of all-MiniLM-L6-v2; speed does not depend on the weights), embedserve-bench on
# the same host. Each round starts a server with one setting of
# batching.completion_threads and runs the bench points named in ROUNDS with a number of
# client channels; threads_cpu.py samples the server's and the client's CPU (whole
# process and busiest threads) inside each point's measured window.
# Device call: carry [".device/debs", ".device/src.tar", ".device/src.rev"]:
#   scripts/device/from_snapshot.sh scripts/device/reqpath_ab.sh
# Env: DURATION (measured seconds per point, 4), BUILD_DIR (build-gpu), ROUNDS (below).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(pwd)/device-out}; mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
DURATION=${DURATION:-4}
WARMUP=1
# A round: NAME:COMPLETION_THREADS:GRAPH_MAX_BATCH:POINT[+POINT...][:VAR=VALUE...], a point
# BATCH/CONCURRENCY/CHANNELS; the optional VAR=VALUE (no colon or space in it, e.g.
# EMBEDSERVE_GRAPH_MAX_SLOTS=32768; several joined by ':') is set in the server's
# environment. The default: the old settings (A) and the new (B) in turn.
ROUNDS=${ROUNDS:-"A1:0:64:1/1/1+1/256/1+32/128/1 B1:8:1024:1/1/16+1/256/16+32/128/16 A2:0:64:1/1/1+1/256/1+32/128/1 B2:8:1024:1/1/16+1/256/16+32/128/16"}
SKIP_TESTS=1 BUILD_DIR=$B scripts/device/build_and_test.sh >"$OUT/build.log" 2>&1 ||
  { tail -30 "$OUT/build.log"; exit 1; }
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores; commit ${EMBEDSERVE_GIT_COMMIT:-unknown}"
model=models/minilm-l6-synthetic
[ -f $model/model.safetensors ] ||
  "$B/tools/make_model/embedserve-make-model" --out $model --preset minilm-l6 --seed 42 >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sampler=scripts/device/threads_cpu.py
for round in $ROUNDS; do
  IFS=: read -r name completion graph_max points server_env <<<"$round"
  env_args=()
  [ -n "$server_env" ] && IFS=: read -ra env_args <<<"$server_env"
  config=/tmp/reqpath_$name.yaml
  { cat experiments/minilm_gpu_fp16.yaml; } >"$config"
  # The experiment sets both keys (since 05e2b29): replace their values; a file without
  # them would leave the round unchanged, so fail instead.
  grep -q "^  completion_threads: " "$config" && grep -q "^  cuda_graph_max_batch: " "$config" ||
    { echo "reqpath_ab.sh: $config lacks completion_threads or cuda_graph_max_batch" >&2; exit 1; }
  sed -i -e "s/^  completion_threads: .*/  completion_threads: $completion/" \
    -e "s/^  cuda_graph_max_batch: .*/  cuda_graph_max_batch: $graph_max/" "$config"
  port=$(free_port)
  env "${env_args[@]}" "$B/tools/server/embedserve" --config "$config" --model $model \
    --port "$port" --http-port -1 --metrics-port -1 --log-level info >"$OUT/server_$name.log" 2>&1 &
  spid=$!
  echo "=== round $name: batching.completion_threads=$completion model.cuda_graph_max_batch=$graph_max${server_env:+ env $server_env}"
  for point in ${points//+/ }; do
    IFS=/ read -r batch conc channels <<<"$point"
    "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$port" --wait-ready 180 \
      --method similarity --batch-sizes "$batch" --concurrencies "$conc" \
      --channels "$channels" --duration-s "$DURATION" --warmup-s $WARMUP \
      --json "$OUT/bench_${name}_b${batch}_c${conc}_ch${channels}.json" \
      >"$OUT/bench_tmp.log" 2>&1 &
    bpid=$!
    # The first point also waits for the server: sample once the bench reports.
    while ! grep -q "points against" "$OUT/bench_tmp.log" 2>/dev/null; do
      kill -0 $bpid 2>/dev/null || break; sleep 0.1; done
    window=$(python3 -c "print($DURATION - 0.8)")
    python3 $sampler $spid $((WARMUP)).4 "$window" "server $name b$batch c$conc ch$channels" &
    s1=$!
    python3 $sampler $bpid $((WARMUP)).4 "$window" "client $name b$batch c$conc ch$channels" &
    s2=$!
    wait $bpid
    wait $s1 $s2
    grep -v "waiting\|wrote" "$OUT/bench_tmp.log" | sed "s/^/[$name ch$channels] /"
  done
  grep -i "captured" "$OUT/server_$name.log" | head -2
  kill -TERM $spid; wait $spid
done
# At most 8 files come back: the logs and results in one archive.
tar -czf "$OUT/reqpath_raw.tgz" -C "$OUT" --exclude reqpath_raw.tgz . 2>/dev/null
find "$OUT" -mindepth 1 ! -name reqpath_raw.tgz ! -name run.log -delete
