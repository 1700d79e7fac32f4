#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 16): one server on DEVICES_A against one on DEVICES_B,
# alternated A / B / A / B in one run, served Similarity over gRPC (embedserve-bench on the
# same host), fp16 (experiments/minilm_gpu_fp16.yaml with model.device replaced by
# model.devices), at batch 32 (concurrency 64 and 128) and batch 1 (concurrency 256), and
# the B / A ratio of pairs/s per point against the mean of the two A rounds.
#   Two H200s (nvidia-h200-x2): scripts/device/two_gpus.sh   ([cuda:0] vs [cuda:0, cuda:1])
#   One GPU, the same code path with two instances there:
#     DEVICES_B="[cuda:0, cuda:0]" scripts/device/two_gpus.sh
# Device call: carry [".device/debs"] (and the real model, docs/gpu.md "The real model on
# the GPU machine"; without models/all-MiniLM-L6-v2 the synthetic minilm-l6 folder, the
# same shapes, is used and the log says so).
# Env: DEVICES_A ([cuda:0]), DEVICES_B ([cuda:0, cuda:1]), POINTS (BATCH/CONCURRENCY/
# CHANNELS, space-separated; "32/64/16 32/128/16 1/256/16"), DURATION (measured seconds
# per point, 4), BUILD_DIR (build-gpu), SKIP_BUILD=1 (a build already in BUILD_DIR).
# Everything comes back as $OUT/two_gpus_raw.tgz and run.log.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=ab_lib.sh
source scripts/device/ab_lib.sh two_gpus
DEVICES_A=${DEVICES_A:-[cuda:0]}
DEVICES_B=${DEVICES_B:-[cuda:0, cuda:1]}
POINTS=${POINTS:-32/64/16 32/128/16 1/256/16}
DURATION=${DURATION:-4}

step "1. build"
if [ "${SKIP_BUILD:-0}" = 1 ]; then source scripts/device/env.sh || exit 1; else ab_build; fi
ab_machine
nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader | tee "$RAW/gpus.txt"
model=models/all-MiniLM-L6-v2
if [ ! -f $model/model.safetensors ]; then
  ab_synthetic_model
  model=$SYNTH_MODEL
fi
echo "model folder: $model"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
round() {  # round NAME DEVICES
  local name=$1 devices=$2 config=$RAW/server_$1.yaml port spid
  grep -q "^  device: cuda$" experiments/minilm_gpu_fp16.yaml ||
    { echo "two_gpus.sh: experiments/minilm_gpu_fp16.yaml has no '  device: cuda' line" >&2; exit 1; }
  sed "s/^  device: cuda$/  devices: $devices/" experiments/minilm_gpu_fp16.yaml >"$config"
  port=$(free_port)
  "$B/tools/server/embedserve" --config "$config" --model $model --port "$port" \
    --http-port -1 --metrics-port -1 --log-level info >"$RAW/server_$name.log" 2>&1 &
  spid=$!
  step "round $name: model.devices $devices"
  for point in $POINTS; do
    IFS=/ read -r batch conc channels <<<"$point"
    "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$port" --wait-ready 240 \
      --method similarity --batch-sizes "$batch" --concurrencies "$conc" --channels "$channels" \
      --duration-s "$DURATION" --warmup-s 1 --json "$RAW/bench_${name}_b${batch}_c${conc}.json" \
      >"$RAW/bench_${name}_b${batch}_c${conc}.log" 2>&1 ||
      { echo "bench failed:"; tail -5 "$RAW/bench_${name}_b${batch}_c${conc}.log"; }
  done
  grep -iE "instance|loaded|captured" "$RAW/server_$name.log" | head -4
  kill -TERM $spid; wait $spid
}
round A1 "$DEVICES_A"; round B1 "$DEVICES_B"; round A2 "$DEVICES_A"; round B2 "$DEVICES_B"

step "summary"
python3 - "$RAW" "$POINTS" "$DEVICES_A" "$DEVICES_B" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
raw, points, dev_a, dev_b = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
def rate(name, b, c):
    path = os.path.join(raw, f"bench_{name}_b{b}_c{c}.json")
    if not os.path.exists(path):
        return None
    p = json.load(open(path))["points"][0]
    return p["items_per_s"], p["latency_ms"]["p50"], p["latency_ms"]["p99"], p["errors"]
print(f"A = model.devices {dev_a}, B = model.devices {dev_b}; pairs/s (p50 / p99 ms, errors)")
for point in points:
    b, c, _ = point.split("/")
    cells, rates = [], {}
    for name in ("A1", "B1", "A2", "B2"):
        r = rate(name, b, c)
        rates[name] = r[0] if r else None
        cells.append(f"{name} {r[0]:,.0f} ({r[1]:.2f} / {r[2]:.2f}, {r[3]})" if r else f"{name} -")
    a = [rates[n] for n in ("A1", "A2") if rates[n]]
    ratios = [f"{rates[n] / (sum(a) / len(a)):.2f}x" for n in ("B1", "B2") if rates[n] and a]
    print(f"batch {b} c{c}: " + " | ".join(cells) + " | B / mean A: " + ", ".join(ratios))
EOF
tar -czf "$OUT/two_gpus_raw.tgz" -C "$RAW" .
step "done"
