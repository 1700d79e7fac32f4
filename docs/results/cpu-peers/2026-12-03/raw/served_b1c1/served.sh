#!/bin/bash
# Served batch-1 c1 latency: embedserve (fused fp32) with the server's default policy and with PASSIVE, alternated A/B/A.
cd /work/wt13
PAIRS=/tmp/wt13x/pairs.jsonl
OUT=${OUT:-/tmp/wt13x/served}
mkdir -p $OUT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() {  # run NAME ENV...
  name=$1; shift
  port=$(free_port)
  env "$@" build/tools/server/embedserve --config experiments/minilm_batching.yaml --port $port --metrics-port -1 --log-level warn &
  pid=$!
  for m in similarity embed; do
    build/tools/bench/embedserve-bench --target 127.0.0.1:$port --wait-ready 120 --method $m --batch-sizes 1 --concurrencies 1 \
      --duration-s ${DUR:-8} --warmup-s 2 --pairs-file $PAIRS --experiment ${name}_$m --out-dir $OUT/${name}_${m}_$R 2>&1 | grep -E "^\[bench\].*batch" | sed "s/^/$name $m round $R: /"
  done
  kill -TERM $pid; wait $pid
}
for R in A B A2; do
  run spin10k_default
  run passive OMP_WAIT_POLICY=PASSIVE
done
