#!/usr/bin/env bash
# The run command (README): installs what is missing (scripts/setup.sh: Debian packages,
# .venv, the real all-MiniLM-L6-v2 at models/all-MiniLM-L6-v2), builds the server in
# build/ (Release), creates a synthetic model folder when the experiment falls back to
# one (bert_base.yaml), prints where the server will listen and how to call it, and
# starts it.
#
# Usage: scripts/run.sh [CONFIG.yaml] [embedserve flags...]
#   CONFIG defaults to experiments/minilm_batching.yaml. Flags override the file, e.g.
#   scripts/run.sh experiments/minilm_baseline.yaml --port 6000 --model /path/to/all-MiniLM-L6-v2
# Env: JOBS (parallel build jobs, default nproc), BUILD_DIR (default build),
#      OMP_WAIT_POLICY / GOMP_SPINCOUNT (default: the server's, see below).
# Relative paths in configs (model.path, model.fallback_path) are resolved from the
# repository root, where this script runs the server.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
B=${BUILD_DIR:-build}
# OpenMP's wait policy: the server picks one when the caller sets none (brief spinning,
# GOMP_SPINCOUNT=10000; tools/server/main.cc); set OMP_WAIT_POLICY or GOMP_SPINCOUNT to
# override it.

config=experiments/minilm_batching.yaml
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
  config=$1
  shift
fi

scripts/setup.sh
echo "run.sh: building embedserve ($B/, Release)"
mkdir -p "$B"
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$B/run-configure.log" 2>&1 ||
  { cat "$B/run-configure.log"; exit 1; }
cmake --build "$B" -j "$JOBS" --target embedserve embedserve-make-model

server=$B/tools/server/embedserve
effective=$("$server" --config "$config" --print-config "$@")
value() {  # value SECTION KEY: a scalar of the effective config
  echo "$effective" | awk -v s="$1:" -v k="$2:" '
    /^[a-z]/ { in_s = ($1 == s) } in_s && $1 == k { $1 = ""; sub(/^ /, ""); gsub(/"/, ""); print; exit }'
}

# The synthetic folders an experiment may fall back to (meaningless but well-shaped
# vectors; README "Models").
for key in path fallback_path; do
  dir=$(value model "$key")
  case "$dir" in
    models/minilm-l6-synthetic|models/minilm-l12-synthetic|models/bert-base-synthetic|models/tiny-synthetic)
      if [ ! -d "$dir" ]; then
        preset=$(basename "$dir" -synthetic)
        echo "run.sh: creating $dir (embedserve-make-model --preset $preset)"
        "$B"/tools/make_model/embedserve-make-model --out "$dir" --preset "$preset"
      fi ;;
  esac
done

host=$(value server host)
port=$(value server port)
mport=$(value server metrics_port)
hport=$(value server http_port)
# server.tls.cert_file set: every port speaks TLS (docs/security.md).
scheme=http grpc_tls=-plaintext py_tls=
if [ -n "$(value server cert_file)" ]; then scheme=https grpc_tls="-cacert CA.pem" py_tls=" --ca CA.pem"; fi
cat <<MSG

embedserve: starting with $config
  gRPC      $host:$port  (embedserve.v1.EmbeddingService, grpc.health.v1, reflection)
  metrics   $( [ "$mport" -ge 0 ] && echo "$scheme://$host:$mport/metrics" || echo off)
  HTTP      $( [ "$hport" -ge 0 ] && echo "$scheme://$host:$hport  (POST /v1/embeddings, /embed, /similarity, /tokenize; GET /info, /health)" || echo off)
  call it   /usr/bin/python3 examples/python_client.py --address $host:$port$py_tls "hello world"
            grpcurl $grpc_tls -d '{"texts": ["hello world"]}' $host:$port embedserve.v1.EmbeddingService/Embed
  stop      Ctrl-C (answers the calls in flight, exits 0)

MSG
exec "$server" --config "$config" "$@"
