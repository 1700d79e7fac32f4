#!/usr/bin/env bash
# The gRPC floor under the request path, measured beside the real server in one run:
# embedserve-bench drives, in turn and for ROUNDS rounds, grpc_floor_server on the
# callback API (as embedserve takes calls), grpc_floor_server on the completion-queue API
# (CQ_THREADS threads with a queue each) and the real embedserve, at each point of POINTS
# (Similarity, batch/concurrency/channels). Per point: pairs/s, latency, and the CPU of
# the server (threads_cpu.py over the measured window) and of the client (its own
# reading) per call, so
# what the real server adds over bare gRPC can be read off on the host that runs it.
# Usage: bench/grpc/floor.sh OUT_DIR
# Env: BUILD_DIR (build), ROUNDS (2), DURATION (4 s measured, after 1 s of warm-up),
#      POINTS ("1/1/1 1/64/4 1/256/16"), CQ_THREADS (nproc / 2, at least 2),
#      SYSTEMS (of "floor-callback floor-cq server server-LABEL...", in the order to run
#      them; default the first three),
#      SERVER_ARGS (the real server's arguments; default: experiments/minilm_batching.yaml
#      on the tiny test model, CPU, so that the model costs little beside the transport;
#      on a GPU: "--config experiments/minilm_gpu_fp16.yaml --model DIR"),
#      SERVER_ARGS_LABEL (the arguments of system server-LABEL: the real server again,
#      configured otherwise, e.g. SERVER_ARGS_queues="--config q.yaml" for server-queues).
# Writes OUT_DIR/floor.tsv (one row per point), OUT_DIR/summary.md (the table) and the
# bench JSON and server logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: bench/grpc/floor.sh OUT_DIR}
B=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-4}
POINTS=${POINTS:-"1/1/1 1/64/4 1/256/16"}
CQ_THREADS=${CQ_THREADS:-$(( $(nproc) / 2 > 2 ? $(nproc) / 2 : 2 ))}
mkdir -p "$OUT"
if [ -z "${SERVER_ARGS:-}" ]; then
  sed -e 's/^  metrics_port: .*/  metrics_port: -1/' -e 's/^  device: .*/  device: cpu/' \
    experiments/minilm_batching.yaml >"$OUT/server.yaml"
  SERVER_ARGS="--config $OUT/server.yaml --model tests/data/tiny-bert"
fi
sampler=scripts/device/threads_cpu.py
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
  "commit ${EMBEDSERVE_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" | tee "$OUT/host.txt"
printf 'round\tsystem\tbatch\tconcurrency\tchannels\tpairs_per_s\tp50_ms\tp99_ms\tserver_cpu_pct\tserver_workers_cpu_pct\tclient_cpu_pct\n' >"$OUT/floor.tsv"

spid=
trap '[ -n "$spid" ] && kill -TERM $spid 2>/dev/null; wait 2>/dev/null || true' EXIT
start() {  # start SYSTEM LOG: starts it in the background (spid) and sets port
  port=$(free_port)
  case $1 in
    floor-callback) "$B/bench/grpc/grpc_floor_server" --port "$port" --api callback >"$2" 2>&1 & ;;
    floor-cq) "$B/bench/grpc/grpc_floor_server" --port "$port" --api cq --cq-threads "$CQ_THREADS" >"$2" 2>&1 & ;;
    server | server-*)
      local args_var=SERVER_ARGS${1#server}
      args_var=${args_var//-/_}
      [ -n "${!args_var:-}" ] || { echo "floor.sh: $1 needs $args_var" >&2; exit 1; }
      # shellcheck disable=SC2086
      "$B/tools/server/embedserve" ${!args_var} --port "$port" --http-port -1 --metrics-port -1 \
        --log-level warn >"$2" 2>&1 & ;;
    *) echo "floor.sh: unknown system $1" >&2; exit 1 ;;
  esac
  spid=$!
}
cpu_pct() { sed -E -n 's/.*: ([0-9]+)% over .*/\1/p' "$1"; }
# The batcher workers' share (threads es-batch-N and the model threads they start, which
# inherit the name): the model's forward, and on a worker that answers its batch itself
# (batching.completion_threads 0), the replies' writes. Read from the sampler's line per
# kind of thread, which counts every such thread (its top-10 list may leave some out).
worker_pct() { sed -E -n 's/.* by kind of thread: (.*, )?es-batch x[0-9]+ ([0-9]+).*/\2/p' "$1" | awk '{s += $1} END {print s + 0}'; }

for round in $(seq 1 "$ROUNDS"); do
  for system in ${SYSTEMS:-floor-callback floor-cq server}; do
    start $system "$OUT/${system}_$round.log"
    for point in $POINTS; do
      IFS=/ read -r batch conc channels <<<"$point"
      json=$OUT/bench_${system}_${round}_b${batch}_c${conc}_ch${channels}.json
      "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$port" --wait-ready 120 \
        --method similarity --batch-sizes "$batch" --concurrencies "$conc" --channels "$channels" \
        --duration-s "$DURATION" --warmup-s 1 --json "$json" >"$OUT/bench.log" 2>&1 &
      bpid=$!
      # The window starts after the warm-up: the bench prints its plan once the server is ready.
      while ! grep -q "points against" "$OUT/bench.log" 2>/dev/null; do
        kill -0 $bpid 2>/dev/null || break; sleep 0.1; done
      window=$(python3 -c "print($DURATION - 0.8)")
      cpu_file=$OUT/cpu_${system}_${round}_b${batch}_c${conc}_ch${channels}.txt
      python3 $sampler $spid 1.4 "$window" "server $system" >"$cpu_file" &
      s1=$!
      wait $bpid || { cat "$OUT/bench.log"; exit 1; }
      wait $s1
      python3 - "$json" "$round" "$system" "$channels" "$(cpu_pct "$cpu_file")" \
        "$(worker_pct "$cpu_file")" >>"$OUT/floor.tsv" <<'PY'
import json, sys
path, rnd, system, channels, scpu, wcpu = sys.argv[1:]
p = json.load(open(path))["points"][0]
if p["requests_failed"] or not p["requests_ok"]:
    sys.exit(f"floor.sh: {system}: {p['requests_failed']} calls failed, {p['requests_ok']} ok")
lat = p["latency_ms"]
print("\t".join(str(x) for x in (rnd, system, p["batch_size"], p["concurrency"], channels,
      round(p["items_per_s"]), round(lat["p50"], 3), round(lat["p99"], 3), scpu, wcpu,
      round(p["client_cpu_pct"]))))
PY
      tail -1 "$OUT/floor.tsv"
    done
    kill -TERM $spid; wait $spid || true; spid=
  done
done
python3 - "$OUT/floor.tsv" <<'PY' | tee "$OUT/summary.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| round | system | batch / conc / channels | pairs/s | p50 / p99 ms "
      "| server CPU us per call (of it batcher workers) | client CPU us per call |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    rate = float(r["pairs_per_s"])
    calls = rate / int(r["batch"])
    per_call = lambda pct: f"{float(pct) / 100 * 1e6 / calls:.1f}" if calls > 0 else "-"
    print(f"| {r['round']} | {r['system']} | {r['batch']} / {r['concurrency']} / {r['channels']} "
          f"| {rate:,.0f} | {float(r['p50_ms']):.2f} / {float(r['p99_ms']):.2f} "
          f"| {per_call(r['server_cpu_pct'])} ({per_call(r['server_workers_cpu_pct'])}) "
          f"| {per_call(r['client_cpu_pct'])} |")
PY
