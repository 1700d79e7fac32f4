#!/usr/bin/env bash
# A/B/A/B of the served embedserve between two experiment files, in one run on this
# machine: each round starts a fresh server from the file and measures Similarity over
# gRPC (embedserve-bench, the same generated ~14-token pairs) at batch 32 x concurrency
# 4 and batch 1 at concurrency 1 and 32, the served points of bench/peers/run.sh.
# Usage: bench/peers/served_ab.sh A.yaml B.yaml [--duration-s S] [--out DIR]
# Writes OUT/<round>_<A|B>/ (embedserve-bench's files) and OUT/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 A.yaml B.yaml [--duration-s S] [--out DIR]" >&2; exit 2; }
A=$1 B=$2; shift 2
DURATION=5
OUT=results/served-ab/$(date -u +%Y%m%dT%H%M%SZ)
while [ $# -gt 0 ]; do
  case $1 in
    --duration-s) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "served_ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
build/tools/bench/embedserve-bench --batch-sizes 128 --concurrencies 1 \
  --write-pairs "$OUT/pairs.jsonl" >/dev/null
{
  echo "A: $A"; echo "B: $B"
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  lscpu | grep -E 'Model name|^CPU\(s\)'; date -u
} | tee "$OUT/summary.txt"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
round=0
for side in A B A B; do
  round=$((round + 1))
  config=$A; [ $side = B ] && config=$B
  port=$(free_port)
  build/tools/server/embedserve --config "$config" --port "$port" --http-port -1 \
    --metrics-port -1 --log-level warn >"$OUT/server_${round}_$side.log" 2>&1 &
  pid=$!
  echo "=== round $round: $side ($config)" | tee -a "$OUT/summary.txt"
  build/tools/bench/embedserve-bench --target "127.0.0.1:$port" --wait-ready 120 \
    --method similarity --batch-sizes 32 --concurrencies 4 --extra-grid 1/1,32 \
    --duration-s "$DURATION" --warmup-s 2 --pairs-file "$OUT/pairs.jsonl" \
    --experiment "${round}_$side" --out-dir "$OUT/${round}_$side" 2>&1 |
    grep -v '^\[bench\] waiting' | tee -a "$OUT/summary.txt"
  kill -TERM $pid
  wait $pid || true
done
