#!/usr/bin/env bash
# The served embedserve's share of its in-process rate, Similarity batch 32, measured
# alternately so that the machine's drift (several % within minutes on a shared VM)
# falls on both sides alike:
#   in process (embedserve-bench-inprocess --method similarity, 32 pairs per call)
#   served over gRPC (embedserve-bench, 32 pairs per call, concurrency 4)
#   served over HTTP (embedserve-http-bench, /v1/embeddings, 64 texts per call, c4)
#   ... N rounds, then in process once more.
# Each served figure is divided by the mean of the in-process runs just before and
# just after it (A/B/A). The same generated ~14-token pairs everywhere.
# Usage: bench/peers/served_share.sh [--rounds N] [--duration-s S] [--config YAML] [--out DIR]
# Writes OUT/summary.txt (the table) and the benches' own files beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=4
DURATION=8
CONFIG=experiments/minilm_batching.yaml
OUT=results/served-share/$(date -u +%Y%m%dT%H%M%SZ)
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration-s) DURATION=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "served_share.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# libgomp's wait policy as bench/peers/run.sh and the server binary pick it.
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
  export GOMP_SPINCOUNT=10000
fi
mkdir -p "$OUT"
B=build/tools/bench
"$B/embedserve-bench" --batch-sizes 128 --concurrencies 1 --write-pairs "$OUT/pairs.jsonl" >/dev/null
{
  echo "config: $CONFIG; rounds $ROUNDS; $DURATION s per point after 2 s of warm-up"
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  lscpu | grep -E 'Model name|^CPU\(s\)'
  date -u
} | tee "$OUT/summary.txt"
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

inprocess() {  # inprocess ROUND: prints pairs/s
  "$B/embedserve-bench-inprocess" --config "$CONFIG" --method similarity --batch-sizes 32 \
    --duration-s "$DURATION" --warmup-s 2 --pairs-file "$OUT/pairs.jsonl" \
    --out-dir "$OUT/inprocess_$1" >"$OUT/inprocess_$1.log" 2>&1
  grep -o 'batch=32: [0-9.]*' "$OUT/inprocess_$1.log" | awk '{print $2}'
}
served() {  # served ROUND: prints "grpc_pairs_per_s http_pairs_per_s"
  local port hport pid g h
  port=$(free_port); hport=$(free_port)
  build/tools/server/embedserve --config "$CONFIG" --port "$port" --http-port "$hport" \
    --metrics-port -1 --log-level warn >"$OUT/server_$1.log" 2>&1 &
  pid=$!
  "$B/embedserve-bench" --target "127.0.0.1:$port" --wait-ready 120 --method similarity \
    --batch-sizes 32 --concurrencies 4 --duration-s "$DURATION" --warmup-s 2 \
    --pairs-file "$OUT/pairs.jsonl" --experiment "grpc_$1" --out-dir "$OUT/grpc_$1" \
    >"$OUT/grpc_$1.log" 2>&1
  g=$(grep -o 'conc=4: [0-9.]* pairs/s' "$OUT/grpc_$1.log" | awk '{print $2}')
  "$B/embedserve-http-bench" --target "127.0.0.1:$hport" --path /v1/embeddings --batch 64 \
    --concurrency 4 --duration-s "$DURATION" --warmup-s 2 >"$OUT/http_$1.log" 2>&1
  h=$(grep -o 'texts_per_s=[0-9.]*' "$OUT/http_$1.log" | awk -F= '{print $2 / 2}')
  kill -TERM $pid
  wait $pid || true
  echo "$g $h"
}

ip_prev=$(inprocess 0)
printf '| round | in process before | gRPC | HTTP | in process after | gRPC share | HTTP share |\n' |
  tee -a "$OUT/summary.txt"
printf '|---|---|---|---|---|---|---|\n' | tee -a "$OUT/summary.txt"
for round in $(seq "$ROUNDS"); do
  read -r g h < <(served "$round")
  ip_next=$(inprocess "$round")
  awk -v r="$round" -v a="$ip_prev" -v g="$g" -v h="$h" -v b="$ip_next" 'BEGIN {
    m = (a + b) / 2
    printf "| %d | %.1f | %.1f | %.1f | %.1f | %.1f%% | %.1f%% |\n", r, a, g, h, b, 100 * g / m, 100 * h / m
  }' | tee -a "$OUT/summary.txt"
  ip_prev=$ip_next
done
median() {  # median COLUMN: of the rounds' rows in summary.txt
  awk -F'|' -v c="$1" '/^\| [0-9]/ { print $c + 0 }' "$OUT/summary.txt" | sort -n |
    awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "median share over $ROUNDS rounds: gRPC $(median 7)%, HTTP $(median 8)%" | tee -a "$OUT/summary.txt"
