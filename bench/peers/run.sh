#!/usr/bin/env bash
# Measures embedserve and what users run instead on CPU, in ONE run, on the real
# all-MiniLM-L6-v2 and the same sentences (embedserve-bench's generated ~14-token pairs,
# written once to pairs.jsonl): the GEMM ceiling first, then each in-process system
# in rounds A, B, A (each system once per round, so drift shows as A != A), then the
# served systems.
#   in process (texts/s at batch 1, 8, 32, 128; call p50/p99), 2 threads each:
#     embedserve fp32 (+ bf16, int8 where the CPU runs them)  embedserve-bench-inprocess
#     sentence-transformers fp32 (CPU torch)           inprocess.py --system st
#     ONNX Runtime fp32 (the best fusion level that keeps cosine >= 0.9999), and int8
#                                                      inprocess.py --system ort
#   served, Similarity (embedserve-bench, gRPC): batch 32 at concurrency 4, batch 1 at
#     concurrency 1 and 32, pairs/s and p50/p99:
#     embedserve (experiments/minilm_batching.yaml)
#     the Python grpcio + sentence-transformers server (py_grpc_server.py)
#   served over HTTP (embedserve-http-bench, OpenAI shape; a Similarity of N pairs sent
#     as an embeddings request of 2N texts): infinity-emb (torch engine, its own
#     batching) and embedserve's /v1/embeddings, at the same three points
#   served against in process, Similarity batch 32 (served_share.sh): 4 alternating
#     rounds, so the served share of the in-process rate is not read across minutes of drift
#   served batch 1 against ONNX Runtime fp32 in process at batch 1 (batch1_served.sh): 3
#     alternating rounds, for the same reason
#   the GEMM share (gemm_share.sh), once in each in-process round: the ceiling kernel,
#     embedserve fp32 at batch 32, the ceiling kernel again
# Writes OUT/ (default results/cpu-peers/<UTC time>): machine.txt, versions/, pairs.jsonl,
# gemm.json, gemm_share/rounds.txt, onnx/onnx_fidelity.json, inprocess/*.json,
# served/*/bench.json, served_share/summary.txt, batch1/summary.txt, run.log.
# Then: .venv-peers/bin/python bench/peers/report.py OUT --out docs/results/cpu-peers
# Usage: bench/peers/run.sh [--duration-s S] [--out DIR] [--skip-served]
# Env: EMBEDSERVE_AB=1 adds embedserve fp32 and int8 on the older CPU path
# (EMBEDSERVE_CPU_LINEAR=aten: at::linear and separate ops) to each round, as
# embedserve_fp32_aten / embedserve_int8_aten: the before/after of the fused path;
# EMBEDSERVE_BF16=0 leaves embedserve bf16 out (a shorter run).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=10
OUT=results/cpu-peers/$(date -u +%Y%m%dT%H%M%SZ)
SERVED=1
while [ $# -gt 0 ]; do
  case $1 in
    --duration-s) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --skip-served) SERVED=0; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# libgomp's wait policy, as the embedserve binary picks it when the caller sets none
# (tools/server/main.cc): spin GOMP_SPINCOUNT=10000 rounds (~0.5 ms), then sleep. It
# reaches every system here (sentence-transformers' torch uses OpenMP too; ONNX Runtime
# has its own thread pool). A caller's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
  export GOMP_SPINCOUNT=10000
fi
mkdir -p "$OUT"/inprocess "$OUT"/served "$OUT"/versions
exec > >(tee -a "$OUT/run.log") 2>&1
step() { echo "=== $* ($(date -u +%T))"; }
# A failed step (set -e) must not leave a server behind holding the cores (and the
# caller's lock file): every background child is stopped on exit.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

step "setup"
bench/peers/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target embedserve embedserve-bench \
  embedserve-bench-inprocess linear_kernels_bench
PY=.venv-peers/bin/python

step "machine"
{
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Flags' | sed -E 's/(Flags:).*/\1 '"$(grep -o 'avx[^ ]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"'/'
  free -g | head -2
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "env: $(env | grep -E '^(OMP|GOMP|OPENBLAS|EMBEDSERVE)_' | sort | tr '\n' ' ')"
  date -u
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"
$PY -m pip freeze >"$OUT/versions/peers.txt"

step "pairs"
build/tools/bench/embedserve-bench --batch-sizes 128 --concurrencies 1 --write-pairs "$OUT/pairs.jsonl"

step "ONNX export and fidelity"
$PY bench/peers/export_onnx.py "$OUT/onnx" | tail -5
FP32_ONNX=$OUT/onnx/$($PY -c "import json,sys; r=json.load(open(sys.argv[1])); print('model_opt.onnx' if r['fp32_peer']=='fp32_fused' else 'model.onnx')" "$OUT/onnx/onnx_fidelity.json")

step "GEMM ceiling (linear_kernels_bench, 2 threads)"
EMBEDSERVE_BENCH_THREADS=2 build/bench/model/linear_kernels_bench \
  --benchmark_filter='BM_Linear/kernel:[023]/bits:32/n:1536/k:384|BM_Fma' \
  --benchmark_format=json --benchmark_out="$OUT/gemm.json" --benchmark_out_format=json \
  --benchmark_min_time=1 | tail -8

# OpenBLAS 0.3.21 (Debian 12) does not recognise some newer x86 CPUs (Emerald Rapids) and
# then runs generic SSE kernels: the same sgemm with its AVX-512 kernels forced, for the
# record (the encoder's fp32 GEMMs run through oneDNN, Fp32Linear: kernel 3 above).
if lscpu | grep -q avx512f; then
  OPENBLAS_CORETYPE=SkylakeX EMBEDSERVE_BENCH_THREADS=2 build/bench/model/linear_kernels_bench \
    --benchmark_filter='BM_Linear/kernel:0/bits:32/n:1536/k:384' \
    --benchmark_format=json --benchmark_out="$OUT/gemm_openblas_skylakex.json" \
    --benchmark_out_format=json --benchmark_min_time=1 | tail -2
fi

BATCHES=1,8,32,128
bf16=0
if lscpu | grep -q avx512bw && [ "${EMBEDSERVE_BF16:-1}" != 0 ]; then bf16=1; fi
int8=0
if lscpu | grep -qE 'avx512_vnni|avx_vnni'; then int8=1; fi
for round in A B A2; do
  step "in process, round $round"
  build/tools/bench/embedserve-bench-inprocess --config experiments/minilm_batching.yaml \
    --method embed --batch-sizes $BATCHES --duration-s "$DURATION" --warmup-s 2 \
    --pairs-file "$OUT/pairs.jsonl" --out-dir "$OUT/inprocess/embedserve_fp32_$round" 2>&1 | grep inprocess
  # The GEMM share like for like: the ceiling kernel just before and just after an
  # embedserve fp32 batch-32 run, in this round (gemm_share.sh; the ceiling above is read
  # once, minutes away from most of the in-process points).
  bench/peers/gemm_share.sh --round "$round" --pairs "$OUT/pairs.jsonl" \
    --duration-s "$DURATION" --out "$OUT/gemm_share"
  if [ $bf16 = 1 ]; then
    build/tools/bench/embedserve-bench-inprocess --config experiments/minilm_batching.yaml \
      --precision bf16 --method embed --batch-sizes $BATCHES --duration-s "$DURATION" \
      --warmup-s 2 --pairs-file "$OUT/pairs.jsonl" \
      --out-dir "$OUT/inprocess/embedserve_bf16_$round" 2>&1 | grep inprocess
  fi
  if [ $int8 = 1 ]; then
    build/tools/bench/embedserve-bench-inprocess --config experiments/minilm_batching.yaml \
      --precision int8 --method embed --batch-sizes $BATCHES --duration-s "$DURATION" \
      --warmup-s 2 --pairs-file "$OUT/pairs.jsonl" \
      --out-dir "$OUT/inprocess/embedserve_int8_$round" 2>&1 | grep inprocess
  fi
  if [ "${EMBEDSERVE_AB:-0}" = 1 ]; then  # the same binary on its older CPU path (before/after)
    for p in fp32 int8; do
      if [ $p = int8 ] && [ $int8 = 0 ]; then continue; fi
      EMBEDSERVE_CPU_LINEAR=aten build/tools/bench/embedserve-bench-inprocess \
        --config experiments/minilm_batching.yaml --precision $p --method embed \
        --batch-sizes $BATCHES --duration-s "$DURATION" --warmup-s 2 \
        --pairs-file "$OUT/pairs.jsonl" \
        --out-dir "$OUT/inprocess/embedserve_${p}_aten_$round" 2>&1 | grep inprocess
    done
  fi
  $PY bench/peers/inprocess.py --system st --name st_fp32 --pairs "$OUT/pairs.jsonl" \
    --batch-sizes $BATCHES --duration-s "$DURATION" --out "$OUT/inprocess/st_fp32_$round.json"
  $PY bench/peers/inprocess.py --system ort --name ort_fp32 --onnx "$FP32_ONNX" \
    --pairs "$OUT/pairs.jsonl" --batch-sizes $BATCHES --duration-s "$DURATION" \
    --out "$OUT/inprocess/ort_fp32_$round.json"
  $PY bench/peers/inprocess.py --system ort --name ort_int8 --onnx "$OUT/onnx/model_int8.onnx" \
    --pairs "$OUT/pairs.jsonl" --batch-sizes $BATCHES --duration-s "$DURATION" \
    --out "$OUT/inprocess/ort_int8_$round.json"
done

if [ $SERVED = 1 ]; then
  free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  sweep() {  # sweep NAME PORT: Similarity b32 c4, b1 c1, b1 c32 against 127.0.0.1:PORT
    build/tools/bench/embedserve-bench --target "127.0.0.1:$2" --wait-ready 120 \
      --method similarity --batch-sizes 32 --concurrencies 4 --extra-grid 1/1,32 \
      --duration-s "$DURATION" --warmup-s 2 --pairs-file "$OUT/pairs.jsonl" \
      --experiment "$1" --out-dir "$OUT/served/$1" 2>&1 | grep -v '^\[bench\] waiting'
  }
  step "served: embedserve (gRPC)"
  port=$(free_port)
  build/tools/server/embedserve --config experiments/minilm_batching.yaml --port "$port" \
    --metrics-port -1 --log-level warn &
  pid=$!
  sweep embedserve "$port"
  kill -TERM $pid; wait $pid || true

  step "served: Python grpcio + sentence-transformers"
  port=$(free_port)
  $PY bench/peers/py_grpc_server.py --port "$port" --workers 8 --threads 2 &
  pid=$!
  sweep py_grpc_st "$port"
  kill -TERM $pid; wait $pid || true

  http_sweep() {  # http_sweep NAME PORT PATH: 2N texts per request for N pairs
    : >"$OUT/served/$1.txt"
    for point in "64 4" "2 1" "2 32"; do
      set -- "$1" "$2" "$3" $point
      build/tools/bench/embedserve-http-bench --target "127.0.0.1:$2" --path "$3" \
        --batch "$4" --concurrency "$5" --duration-s "$DURATION" --warmup-s 2 | tee -a "$OUT/served/$1.txt"
    done
  }
  wait_http() {  # wait_http PORT: until GET /health answers 200 (120 s at most)
    for _ in $(seq 240); do
      curl -sf -m 1 "127.0.0.1:$1/health" >/dev/null && return 0
      sleep 0.5
    done
    echo "run.sh: no /health on port $1" >&2; return 1
  }
  step "served: infinity-emb (HTTP)"
  port=$(free_port)
  .venv-infinity/bin/python -m pip freeze >"$OUT/versions/infinity.txt"
  HF_HUB_OFFLINE=1 INFINITY_ANONYMOUS_USAGE_STATS=0 DO_NOT_TRACK=1 \
    .venv-infinity/bin/infinity_emb v2 --model-id models/all-MiniLM-L6-v2 --engine torch \
    --device cpu --port "$port" >"$OUT/served/infinity.log" 2>&1 &
  pid=$!
  wait_http "$port" && http_sweep infinity_http "$port" /embeddings
  kill -TERM $pid; wait $pid || true

  step "served: embedserve (HTTP /v1/embeddings)"
  port=$(free_port)
  hport=$(free_port)
  build/tools/server/embedserve --config experiments/minilm_batching.yaml --port "$port" \
    --http-port "$hport" --metrics-port -1 --log-level warn &
  pid=$!
  wait_http "$hport" && http_sweep embedserve_http "$hport" /v1/embeddings
  kill -TERM $pid; wait $pid || true
  step "served against in process, alternating (served_share.sh)"
  bench/peers/served_share.sh --rounds 4 --duration-s "$DURATION" --out "$OUT/served_share"
  step "served batch 1 against ONNX Runtime in process, alternating (batch1_served.sh)"
  bench/peers/batch1_served.sh "$OUT" 3
fi
step "done: $OUT"
