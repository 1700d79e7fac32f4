#!/usr/bin/env bash
# HTTP vs gRPC Embed on one server in one run (issue 11's acceptance): starts embedserve
# with the real all-MiniLM-L6-v2 (models/, scripts/fetch_model.sh) on free ports, then
# alternates gRPC (embedserve-bench --method embed) and HTTP (embedserve-http-bench,
# POST /embed) closed-loop points: batch 32 x 4 in flight (throughput) and batch 1 x 1
# (latency), alternated ROUNDS times (gRPC, HTTP, gRPC, HTTP, ...) so that load from
# elsewhere on a shared machine falls on both alike; summary.txt has the medians over the
# rounds. Both clients draw the same generated short sentences (SentenceGenerator, seed 42).
#   docs/results/http_vs_grpc/run.sh            # writes docs/results/http_vs_grpc/<UTC time>/
set -euo pipefail
cd "$(dirname "$0")/../../.."
B=${B:-build}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-4}
out=docs/results/http_vs_grpc/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
cat >"$out/config.yaml" <<YAML
server: {port: 0, metrics_port: -1, http_port: 0, max_texts_per_request: 256}
model: {path: models/all-MiniLM-L6-v2, device: cpu}
batching: {enabled: true, max_batch_size: 64, max_batch_tokens: 8192, workers: 1}
logging: {level: info}
YAML
{
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (+ uncommitted changes)')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc)"
  echo "date: $(date -u +%FT%TZ)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
"$B/tools/server/embedserve" --config "$out/config.yaml" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "HTTP API on" "$out/server.log" && break
  kill -0 $pid 2>/dev/null || { cat "$out/server.log"; exit 1; }
  sleep 0.1
done
gport=$(sed -n 's/.*listening on [^ ]*:\([0-9]*\) .*/\1/p' "$out/server.log")
hport=$(sed -n 's/.*HTTP API on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$out/server.log")
for point in "32 4" "1 1"; do
  set -- $point
  for round in $(seq 1 "$ROUNDS"); do
    echo "[grpc batch=$1 concurrency=$2 round=$round]" | tee -a "$out/results.txt"
    "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$gport" --method embed \
      --batch-sizes "$1" --concurrencies "$2" --duration-s "$DURATION" --warmup-s 2 \
      --csv "$out/grpc_b$1_c$2_r$round.csv" >>"$out/bench.log" 2>&1
    tail -1 "$out/grpc_b$1_c$2_r$round.csv" | awk -F, '{printf "grpc texts_per_s=%s p50_ms=%s p99_ms=%s errors=%s\n", $11, $13, $15, $8}' | tee -a "$out/results.txt"
    echo "[http batch=$1 concurrency=$2 round=$round]" | tee -a "$out/results.txt"
    "$B/tools/bench/embedserve-http-bench" --target "127.0.0.1:$hport" --batch "$1" \
      --concurrency "$2" --duration-s "$DURATION" --warmup-s 2 | tee -a "$out/results.txt"
  done
done
python3 - "$out/results.txt" >"$out/summary.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"\[(grpc|http) batch=(\d+) concurrency=(\d+)", line)
    if m:
        key = m.groups()
        continue
    t = re.search(r"texts_per_s=([\d.]+) p50_ms=([\d.]+)", line)
    if t:
        rows.setdefault(key, []).append((float(t.group(1)), float(t.group(2))))
for (proto, b, c), v in sorted(rows.items(), key=lambda kv: (int(kv[0][1]), kv[0][0])):
    print(f"{proto} batch={b} concurrency={c} rounds={len(v)} "
          f"median_texts_per_s={statistics.median(x for x, _ in v):.1f} "
          f"median_p50_ms={statistics.median(y for _, y in v):.3f}")
PY
cat "$out/summary.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
echo "results in $out"
