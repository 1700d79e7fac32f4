#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (issue 14, 2026-12-04): reruns the embedserve figures of the
# H200 report (docs/results/gpu-h200/README.md, commit aed3b4b) at a later commit, after
# the fused CUDA kernels (fused.md) and the request-path changes (reqpath.md), on the
# real all-MiniLM-L6-v2, fp16. Run inside the snapshot that scripts/device/from_snapshot.sh
# unpacked and scripts/device/build_and_test.sh (SKIP_TESTS=1) built in an earlier call
# of the same warm machine; the model laid out by scripts/device/unpack_model.sh.
# It was carried as .device/rerun.sh (this file is the copy committed beside its results).
# In order, each step only while time is left in the 10-minute call:
#   1. peers_gpu.sh PHASES=served: the report's served points, same command as aed3b4b
#      (gRPC Similarity batch 32 at c16/64/128, batch 1 at c1/64/256, one client channel;
#      HTTP; two model copies; the Python grpcio + sentence-transformers server;
#      infinity-emb is skipped: its wheels were not carried)
#   2. the same six gRPC points with --channels 16 (as reqpath.md measured batch 1 at c256)
#   3. peers_gpu.sh PHASES=model: BM_Embed fp16 1,024 x 16, gemm_ceiling.py, the profile,
#      Hugging Face BertModel
#   4. peers_gpu.sh PHASES=inprocess: embedserve and sentence-transformers in process
# Everything comes back as $OUT/peers_gpu.tgz (results-gpu/peers) and $OUT/rerun.log.
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$(date +%s)
B=build-gpu
R=results-gpu/peers
DURATION=${DURATION:-4}
step() { echo "=== rerun: $* ($(date -u +%T), +$(( $(date +%s) - START )) s)"; }
left() { [ $(( $(date +%s) - START )) -lt "$1" ]; }
pack() { tar -czf "$OUT/peers_gpu.tgz" -C results-gpu peers; }

step "1. served (peers_gpu.sh PHASES=served)"
PHASES=served scripts/device/peers_gpu.sh
# shellcheck source=/dev/null
source scripts/device/env.sh || exit 1

if left 400; then
  step "2. embedserve fp16, gRPC, --channels 16"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$B/tools/server/embedserve" --config experiments/minilm_gpu_fp16.yaml --port "$port" \
    --http-port -1 --metrics-port -1 --log-level info >"$R/served/embedserve_ch16.log" 2>&1 &
  pid=$!
  "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$port" --wait-ready 180 \
    --method similarity --batch-sizes 32 --concurrencies 16,64,128 --extra-grid "1/1,64,256" \
    --channels 16 --duration-s "$DURATION" --warmup-s 1 --pairs-file "$R/pairs.jsonl" \
    --experiment embedserve_fp16_ch16 --out-dir "$R/served/embedserve_fp16_ch16" 2>&1 |
    grep -vE '^\[bench\] waiting'
  grep -iE "captur|graph" "$R/served/embedserve_ch16.log" | head -3
  kill -TERM $pid; wait $pid
  pack
fi

if left 420; then
  step "3. model only (peers_gpu.sh PHASES=model)"
  PHASES=model scripts/device/peers_gpu.sh
fi
if left 420; then
  step "4. in process (peers_gpu.sh PHASES=inprocess)"
  PHASES=inprocess scripts/device/peers_gpu.sh
fi
step "done"
pack
