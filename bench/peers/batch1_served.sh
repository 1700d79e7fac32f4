#!/usr/bin/env bash
# Batch 1 served against ONNX Runtime in process, alternated in one run: each round
# measures ONNX Runtime fp32 in process at batch 1 (one text per call), then one running
# embedserve (experiments/minilm_batching.yaml) over gRPC at concurrency 1 with one text
# per Embed call and with one pair per Similarity call (two texts). The served batch-1
# point of bench/peers/run.sh is the Similarity one; the Embed one compares one text with
# one text.
# Usage: bench/peers/batch1_served.sh PEERS_RUN_DIR [ROUNDS]   (a bench/peers/run.sh output:
#          its pairs.jsonl and onnx/ graph are used)
# Prints one line per measurement and writes PEERS_RUN_DIR/batch1/, with summary.txt: per
# round ONNX Runtime's p50, the bound (that + 0.5 ms, issue 13) and the two served p50s.
# bench/peers/run.sh runs it after the served sweeps (3 rounds).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=$1
ROUNDS=${2:-3}
OUT=$RUN/batch1
mkdir -p "$OUT"
ONNX=$RUN/onnx/model_opt.onnx
[ -f "$ONNX" ] || ONNX=$RUN/onnx/model.onnx
PORT=50093
sed "s/^  port: 50051/  port: $PORT/; s/^  metrics_port: 9000/  metrics_port: -1/" \
  experiments/minilm_batching.yaml >"$OUT/server.yaml"
build/tools/server/embedserve -c "$OUT/server.yaml" --log-level warn >"$OUT/server.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
served() {  # served METHOD ROUND
  build/tools/bench/embedserve-bench --target 127.0.0.1:$PORT --wait-ready 120 --method "$1" \
    --batch-sizes 1 --concurrencies 1 --duration-s 5 --warmup-s 1 --pairs-file "$RUN/pairs.jsonl" \
    --json "$OUT/served_$1_$2.json" >/dev/null 2>&1
  python3 -c "
import json, sys
p = json.load(open(sys.argv[1]))['points'][0]; s = p['server_us']
print(f'[batch1] round {sys.argv[2]} served {sys.argv[3]:10s} p50 {p[\"latency_ms\"][\"p50\"]:.2f} ms p99 {p[\"latency_ms\"][\"p99\"]:.2f} | server inference {s[\"inference\"]:.0f} us, rest {s[\"rest\"]:.0f} us')
" "$OUT/served_$1_$2.json" "$2" "$1"
}
for r in $(seq 1 "$ROUNDS"); do
  .venv-peers/bin/python bench/peers/inprocess.py --system ort --name ort_fp32 --onnx "$ONNX" \
    --pairs "$RUN/pairs.jsonl" --batch-sizes 1 --duration-s 5 --out "$OUT/ort_fp32_$r.json" |
    sed "s/^/[batch1] round $r /"
  served embed "$r"
  served similarity "$r"
done
python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def point(name):
    return json.load(open(os.path.join(out, name)))["points"][0]
print("| round | ONNX Runtime fp32 p50 ms | + 0.5 ms | served one pair (Similarity) p50 ms "
      "| served one text (Embed) p50 ms | one pair within |")
print("|---|---|---|---|---|---|")
met = 0
for r in range(1, rounds + 1):
    ort = point(f"ort_fp32_{r}.json")["p50_ms"]
    pair = point(f"served_similarity_{r}.json")["latency_ms"]["p50"]
    text = point(f"served_embed_{r}.json")["latency_ms"]["p50"]
    ok = pair <= ort + 0.5
    met += ok
    print(f"| {r} | {ort:.2f} | {ort + 0.5:.2f} | {pair:.2f} | {text:.2f} | {'yes' if ok else 'no'} |")
print(f"one pair served within ONNX Runtime's p50 + 0.5 ms in {met} of {rounds} rounds")
EOF
