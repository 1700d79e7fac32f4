#!/bin/bash
# Closed-loop callers after a burst (docs/results/hostile/README.md): a server of
# experiments/minilm_batching.yaml with batching.overload_queue_wait_ms = $1; Similarity
# batch 32 at concurrency 4 (5 s), the same for 6 s beside a 2 s burst at concurrency 16,
# then twice 5 s more: answers, refusals, pairs/s of each. Env SERVER: the binary.
# Usage: bench/hostile/closed_loop_after_burst.sh OVERLOAD_MS
cd "$(dirname "$0")/../.."
ov=$1; port=50081
sed "s/^  port: 50051/  port: $port/; s/^  metrics_port: 9000/  metrics_port: -1/; s/^batching:/batching:\n  overload_queue_wait_ms: $ov/" experiments/minilm_batching.yaml > ${TMPDIR:-/tmp}/cfg_$ov.yaml
${SERVER:-./build/tools/server/embedserve} -c ${TMPDIR:-/tmp}/cfg_$ov.yaml --log-level warn > ${TMPDIR:-/tmp}/server_$ov.log 2>&1 & pid=$!
B=./build/tools/bench/embedserve-bench
pt() { python3 -c "
import json; p=json.load(open('$1'))['points'][0]; print('$2', 'ok', p['requests_ok'], 'err', p['errors'], 'pairs/s', round(p['items_per_s']), 'p99', round(p['latency_ms']['p99'],1))"; }
$B --target 127.0.0.1:$port --wait-ready 60 --method similarity --batch-sizes 32 --concurrencies 4 --duration-s 5 --warmup-s 2 --json ${TMPDIR:-/tmp}/before_$ov.json >/dev/null 2>&1
pt ${TMPDIR:-/tmp}/before_$ov.json "ov=$ov before"
$B --target 127.0.0.1:$port --method similarity --batch-sizes 32 --concurrencies 4 --duration-s 6 --warmup-s 0 --json ${TMPDIR:-/tmp}/during_$ov.json >/dev/null 2>&1 & c4=$!
$B --target 127.0.0.1:$port --method similarity --batch-sizes 32 --concurrencies 16 --duration-s 2 --warmup-s 1 --json ${TMPDIR:-/tmp}/burst_$ov.json >/dev/null 2>&1
wait $c4
pt ${TMPDIR:-/tmp}/during_$ov.json "ov=$ov during"
pt ${TMPDIR:-/tmp}/burst_$ov.json "ov=$ov burst"
for i in 1 2; do
$B --target 127.0.0.1:$port --method similarity --batch-sizes 32 --concurrencies 4 --duration-s 5 --warmup-s 0 --json ${TMPDIR:-/tmp}/after_$ov.json >/dev/null 2>&1
pt ${TMPDIR:-/tmp}/after_$ov.json "ov=$ov after$i"
done
kill -TERM $pid; wait $pid
