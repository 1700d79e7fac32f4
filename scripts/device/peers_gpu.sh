#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: embedserve and what users run instead on one GPU, in one run,
# on the real all-MiniLM-L6-v2 and the same sentences (embedserve-bench's ~14-token pairs,
# written once to pairs.jsonl). Issue 14's report (docs/results/gpu-h200/) is made from it.
#   model only, fp16, 1,024 x 16 tokens: embedserve's BM_Embed (bench/model) and Hugging
#     Face's BertModel eager, sdpa and sdpa under torch.compile (hf_bert_bench.py); the
#     ceilings (gemm_ceiling.py) and a kernel-time profile (forward_variants.py --profile)
#   in process: embedserve-bench-inprocess (fp16, fp32, fp32 + TF32; Embed, batch 64 and
#     256 texts) and
#     sentence-transformers encode() on cuda (fp16, fp32; the same batches)
#   served over gRPC, Similarity (embedserve-bench, 16 client channels): batch 32 at
#     concurrency 16, 64, 128;
#     batch 1 at concurrency 1, 64, 256
#       embedserve (experiments/minilm_gpu_fp16.yaml), and with two model copies on the
#       GPU (minilm_gpu_fp16_two_instances.yaml: batch 32 at 64, 128; batch 1 at 256)
#       the Python grpcio + sentence-transformers server (bench/peers/py_grpc_server.py),
#       fp16 on cuda (fewer points: it is ~100x slower)
#   served over HTTP (embedserve-http-bench, OpenAI shape, 2N texts for N pairs):
#       infinity-emb 0.0.78 (torch engine, cuda, float16; wheels carried in .whl/inf) and
#       embedserve's /v1/embeddings
# Device calls (from this machine: scripts/device/fetch_debs.sh, scripts/device/fetch_wheels.sh,
# and the model, docs/gpu.md "The real model on the GPU machine"):
#   carry [".device/debs", ".whl"]: scripts/device/peers_gpu.sh
# PHASES (default "build model inprocess served") runs a subset, so that a warm machine
# can take the work in two calls under the 10-minute limit; the results folder is kept
# between calls of one warm machine. Everything comes back as $OUT/peers_gpu.tgz.
# Env: DURATION (measured seconds per point, 4), BUILD_DIR (build-gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
export PYTHONUNBUFFERED=1
OUT=${OUT:-$ROOT/device-out}; export OUT
PHASES=${PHASES:-build model inprocess served}
DURATION=${DURATION:-4}
B=${BUILD_DIR:-build-gpu}
R=$ROOT/results-gpu/peers
mkdir -p "$R"/inprocess "$R"/served "$OUT"
step() { echo "=== $* ($(date -u +%T))"; }
has() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }

if has build; then
  step "build"
  SKIP_TESTS=1 BUILD_DIR=$B scripts/device/build_and_test.sh >"$R/build.log" 2>&1 ||
    { tail -30 "$R/build.log"; exit 1; }
fi
# shellcheck source=env.sh
source scripts/device/env.sh || exit 1
[ -f models/all-MiniLM-L6-v2/model.safetensors ] ||
  { echo "peers_gpu: models/all-MiniLM-L6-v2 missing (docs/gpu.md: pack_model.sh, unpack_model.sh)"; exit 1; }

if [ ! -f "$R/machine.txt" ]; then
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
    echo "commit ${EMBEDSERVE_GIT_COMMIT:-unknown}"
    python3 -c 'import torch, transformers, sentence_transformers as st; print("torch", torch.__version__, "transformers", transformers.__version__, "sentence-transformers", st.__version__)'
    date -u
  } >"$R/machine.txt"
fi
cat "$R/machine.txt"
[ -f "$R/pairs.jsonl" ] ||
  "$B/tools/bench/embedserve-bench" --batch-sizes 128 --concurrencies 1 --write-pairs "$R/pairs.jsonl" >/dev/null

if has model; then
  step "model only: BM_Embed fp16 1,024 x 16 (5 repetitions)"
  OUT=$R BENCH_TAG=model_bench REPS=5 SKIP_HF=1 scripts/device/bench_gpu.sh | grep -E "median"
  step "ceilings: cuBLAS fp16 GEMMs (peak and the model's shapes), copy bandwidth"
  python3 scripts/device/gemm_ceiling.py 2>&1 | tee "$R/ceiling.log"
  step "where a forward's time goes: torch.profiler on the same encoder in torch ops"
  python3 scripts/device/forward_variants.py --profile >"$R/forward_profile.log" 2>&1
  grep -E "^(naive|fused|graph)|ms" "$R/forward_profile.log" | head -12
  step "model only: Hugging Face BertModel fp16 1,024 x 16"
  python3 scripts/device/hf_bert_bench.py --batch 1024 --seq 16 --variants eager,sdpa,compile \
    2>&1 | grep -vE "^\s*$|Warning|warn" | tee "$R/hf_bert.log"
fi

if has inprocess; then
  step "in process: embedserve fp32 with TF32 matmuls (model.tf32)"
  "$B/tools/bench/embedserve-bench-inprocess" --config experiments/minilm_gpu_tf32.yaml \
    --method embed --batch-sizes 64,256 --duration-s "$DURATION" --warmup-s 1 \
    --pairs-file "$R/pairs.jsonl" --out-dir "$R/inprocess/embedserve_tf32" 2>&1 | grep -E "inprocess|rror"
  for p in fp16 fp32; do
    step "in process: embedserve $p"
    "$B/tools/bench/embedserve-bench-inprocess" --config experiments/minilm_gpu_fp16.yaml \
      --precision $p --method embed --batch-sizes 64,256 --duration-s "$DURATION" --warmup-s 1 \
      --pairs-file "$R/pairs.jsonl" --out-dir "$R/inprocess/embedserve_$p" 2>&1 | grep -E "inprocess|rror"
    step "in process: sentence-transformers $p"
    python3 bench/peers/inprocess.py --system st --device cuda --dtype $p --name "st_$p" \
      --threads "$(nproc)" --pairs "$R/pairs.jsonl" --batch-sizes 64,256 \
      --duration-s "$DURATION" --warmup-s 1 --out "$R/inprocess/st_$p.json" 2>&1 | grep -E "^\[|rror"
  done
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_sweep() {  # grpc_sweep NAME PORT BATCH32_CONCURRENCIES BATCH1_CONCURRENCIES
  "$B/tools/bench/embedserve-bench" --target "127.0.0.1:$2" --wait-ready 180 \
    --method similarity --batch-sizes 32 --concurrencies "$3" --extra-grid "1/$4" --channels 16 \
    --duration-s "$DURATION" --warmup-s 1 --pairs-file "$R/pairs.jsonl" \
    --experiment "$1" --out-dir "$R/served/$1" 2>&1 | grep -vE '^\[bench\] waiting'
}
http_sweep() {  # http_sweep NAME PORT PATH: 2N texts per request for N pairs
  local name=$1 port=$2 path=$3
  : >"$R/served/$name.txt"
  for point in "64 16" "64 64" "2 1" "2 64"; do
    # shellcheck disable=SC2086
    set -- $point
    "$B/tools/bench/embedserve-http-bench" --target "127.0.0.1:$port" --path "$path" \
      --batch "$1" --concurrency "$2" --duration-s "$DURATION" --warmup-s 1 | tee -a "$R/served/$name.txt"
  done
}
wait_http() {  # wait_http PORT PID: until GET /health answers 200 (180 s at most, and
               # only while the server process PID lives)
  for _ in $(seq 360); do
    curl -sf -m 1 "127.0.0.1:$1/health" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "peers_gpu: the server on port $1 exited" >&2; return 1; }
    sleep 0.5
  done
  echo "peers_gpu: no /health on port $1" >&2; return 1
}

if has served; then
  step "served: embedserve fp16 (gRPC, then HTTP on the same server)"
  port=$(free_port); hport=$(free_port)
  "$B/tools/server/embedserve" --config experiments/minilm_gpu_fp16.yaml --port "$port" \
    --http-port "$hport" --metrics-port -1 --log-level warn >"$R/served/embedserve.log" 2>&1 &
  pid=$!
  grpc_sweep embedserve_fp16 "$port" 16,64,128 1,64,256
  wait_http "$hport" $pid && http_sweep embedserve_http "$hport" /v1/embeddings
  kill -TERM $pid; wait $pid

  step "served: embedserve fp16, two model copies on the one GPU (model.instances_per_device: 2)"
  port=$(free_port)
  "$B/tools/server/embedserve" --config experiments/minilm_gpu_fp16_two_instances.yaml \
    --port "$port" --http-port -1 --metrics-port -1 --log-level warn >"$R/served/embedserve_two.log" 2>&1 &
  pid=$!
  grpc_sweep embedserve_fp16_two_instances "$port" 64,128 256
  kill -TERM $pid; wait $pid

  step "served: Python grpcio + sentence-transformers, fp16 on cuda"
  port=$(free_port)
  python3 bench/peers/py_grpc_server.py --port "$port" --workers 16 --threads 4 \
    --device cuda --dtype fp16 >"$R/served/py_grpc_st.log" 2>&1 &
  pid=$!
  grpc_sweep py_grpc_st_fp16 "$port" 4,16 1,64
  kill -TERM $pid; wait $pid

  step "served: infinity-emb (HTTP), cuda float16"
  if compgen -G ".whl/inf/infinity_emb-*.whl" >/dev/null; then
    site=/tmp/site-infinity
    [ -d $site/infinity_emb ] || python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --target $site .whl/inf/*.whl
    port=$(free_port)
    PYTHONPATH=$site HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
      python3 -c 'import sys; from infinity_emb.cli import cli; sys.argv[0] = "infinity_emb"; cli()' \
      v2 --model-id models/all-MiniLM-L6-v2 --engine torch --device cuda --dtype float16 \
      --batch-size 256 --no-bettertransformer --port "$port" >"$R/served/infinity.log" 2>&1 &
    pid=$!
    PYTHONPATH=$site python3 -m pip list 2>/dev/null | grep -iE "infinity|sentence|transformers|torch|fastapi|uvicorn" >"$R/served/infinity_versions.txt"
    if wait_http "$port" $pid; then
      http_sweep infinity_http "$port" /embeddings
    else
      tail -30 "$R/served/infinity.log"
    fi
    kill -TERM $pid 2>/dev/null; wait $pid
  else
    echo "peers_gpu: no .whl/inf (scripts/device/fetch_wheels.sh here, then carry .whl): infinity skipped"
  fi
fi
step "done"
tar -czf "$OUT/peers_gpu.tgz" -C "$ROOT/results-gpu" peers
