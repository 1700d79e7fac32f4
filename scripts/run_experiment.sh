#!/usr/bin/env bash
# Runs experiments end to end: for each experiment YAML, start embedserve with it on a
# free port, wait for health SERVING, run the sweep of its `benchmark:` section with
# embedserve-bench, stop the server with SIGTERM, and store everything under
# results/<experiment>/<UTC timestamp>/:
#   config.yaml            the experiment file as given
#   effective_config.yaml  embedserve --config F --print-config
#   server.log             the server's stdout+stderr
#   bench.csv, bench.json  raw results (one row / record per sweep point)
#   bench.log              the bench's progress lines
#   machine.json           CPU model and cores, memory, GPU, OS, git commit, LibTorch
#                          version / precision / device (as the server reports them)
#   run.json               commands, exit codes, and what failed (if anything)
# A progress line is printed per sweep point. Server failures (exit before SERVING,
# death mid-sweep, no clean stop on SIGTERM, non-zero exit) are reported and make the
# script exit non-zero; the remaining experiments still run.
#
# Usage: scripts/run_experiment.sh [options] EXPERIMENT.yaml [EXPERIMENT.yaml ...]
#   --build-dir DIR     where embedserve and embedserve-bench were built (default build)
#   --results-dir DIR   default results
#   --ready-timeout S   seconds to wait for SERVING (default 300)
#   --bench-args "..."  extra embedserve-bench flags for every experiment, e.g.
#                       "--duration-s 5 --batch-sizes 1,32" (flags override the YAML)
#   --server-args "..." extra embedserve flags, e.g. "--model models/minilm"
#   --inprocess B,...   after the sweep (server stopped), run embedserve-bench-inprocess
#                       at these batch sizes: the same model, precision and sentences
#                       without gRPC (inprocess.csv/json; the over-gRPC efficiency)
# Env: EMBEDSERVE_BIN, EMBEDSERVE_BENCH_BIN, EMBEDSERVE_INPROCESS_BIN override the binaries;
# EMBEDSERVE_GIT_COMMIT names the commit where the tree has no .git (device snapshots).
# Runs from the repository root (relative model paths in the YAML files resolve there);
# relative paths given on the command line are taken from the calling directory.
# Then: /usr/bin/python3 scripts/report.py results --out docs/results
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

BUILD_DIR="$ROOT/build"
RESULTS_DIR="$ROOT/results"
READY_TIMEOUT=300
# LibTorch's OpenMP threads spin while they wait by default; on a machine whose cores the
# client shares, passive waiting is faster (docs/model.md). A value set by the caller wins.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
BENCH_ARGS=""
SERVER_ARGS=""
INPROCESS=""
experiments=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --results-dir) RESULTS_DIR=$2; shift 2 ;;
    --ready-timeout) READY_TIMEOUT=$2; shift 2 ;;
    --bench-args) BENCH_ARGS=$2; shift 2 ;;
    --server-args) SERVER_ARGS=$2; shift 2 ;;
    --inprocess) INPROCESS=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    -*) echo "run_experiment: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) experiments+=("$1"); shift ;;
  esac
done
if [ ${#experiments[@]} -eq 0 ]; then
  echo "run_experiment: no experiment file given; usage: $0 [options] EXPERIMENT.yaml ..." >&2
  exit 2
fi
# Paths given relative to where the script was called from; then run from the repository
# root, so that relative paths inside the experiment files (model.fallback_path:
# models/...) mean the same as for scripts/run.sh.
BUILD_DIR=$(realpath -m "$BUILD_DIR")
RESULTS_DIR=$(realpath -m "$RESULTS_DIR")
for i in "${!experiments[@]}"; do experiments[$i]=$(realpath -m "${experiments[$i]}"); done
for v in EMBEDSERVE_BIN EMBEDSERVE_BENCH_BIN EMBEDSERVE_INPROCESS_BIN; do
  if [ -n "${!v:-}" ]; then export "$v=$(realpath -m "${!v}")"; fi
done
cd "$ROOT" || exit 2

find_bin() {  # find_bin NAME ENV_VALUE
  local name=$1 given=$2
  if [ -n "$given" ]; then echo "$given"; return; fi
  local found
  found=$(find "$BUILD_DIR/tools" -maxdepth 2 -type f -name "$name" -perm -u+x 2>/dev/null | head -1)
  echo "${found:-$BUILD_DIR/tools/$name}"
}
SERVER_BIN=$(find_bin embedserve "${EMBEDSERVE_BIN:-}")
BENCH_BIN=$(find_bin embedserve-bench "${EMBEDSERVE_BENCH_BIN:-}")
INPROCESS_BIN=$(find_bin embedserve-bench-inprocess "${EMBEDSERVE_INPROCESS_BIN:-}")
needed=("$SERVER_BIN" "$BENCH_BIN")
if [ -n "$INPROCESS" ]; then needed+=("$INPROCESS_BIN"); fi
for b in "${needed[@]}"; do
  if [ ! -x "$b" ]; then
    echo "run_experiment: $b not found or not executable; build it first:" >&2
    echo "  cmake -S . -B build -G Ninja && cmake --build build --target embedserve embedserve-bench embedserve-bench-inprocess" >&2
    exit 2
  fi
done
PY=/usr/bin/python3

free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# alive PID: the process exists and is not a zombie.
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null)
  [ -n "$st" ] && [[ "$st" != Z* ]]
}

server_pid=""
bench_pid=""
cleanup() {
  if [ -n "$bench_pid" ] && alive "$bench_pid"; then
    kill -TERM "$bench_pid" 2>/dev/null
  fi
  if [ -n "$server_pid" ] && alive "$server_pid"; then
    echo "run_experiment: interrupted; stopping server $server_pid" >&2
    kill -TERM "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  exit 130
}
trap cleanup INT TERM

# machine_json OUT BENCH_JSON: machine facts, merged with what the server reported.
machine_json() {
  $PY - "$1" "$2" "$ROOT" <<'EOF'
import json, os, platform, subprocess, sys
out, bench_json, root = sys.argv[1:4]
def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""
facts = {}
for line in run(["lscpu"]).splitlines():
    k, _, v = line.partition(":")
    if k.strip() == "Model name": facts["cpu_model"] = v.strip()
    if k.strip() == "CPU(s)": facts["cpu_logical"] = v.strip()
    if k.strip() == "Thread(s) per core": facts["threads_per_core"] = v.strip()
facts["cores_available"] = str(os.cpu_count())
try:
    facts["cores_usable"] = str(len(os.sched_getaffinity(0)))
except Exception:
    pass
try:
    with open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
    facts["memory_gib"] = "%.1f" % (kb / 1048576)
except Exception:
    pass
gpu = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
facts["gpu"] = gpu.replace("\n", "; ") if gpu else "none"
facts["os"] = platform.platform()
try:
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                facts["os"] = line.split("=", 1)[1].strip().strip('"') + " (" + platform.release() + ")"
except Exception:
    pass
# Environment that changes how LibTorch / BLAS / OpenMP run (e.g. OMP_WAIT_POLICY).
tuning = {k: v for k, v in os.environ.items()
          if k.startswith(("OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_", "TORCH_", "DNNL_", "ONEDNN_"))}
facts["env"] = " ".join("%s=%s" % kv for kv in sorted(tuning.items())) or "none"
facts["git_commit"] = run(["git", "-C", root, "rev-parse", "--short", "HEAD"])
if facts["git_commit"]:
    dirty = run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    if dirty: facts["git_commit"] += "+dirty"
else:
    # A tree without .git (scripts/device/from_snapshot.sh exports the snapshot's commit).
    facts["git_commit"] = os.environ.get("EMBEDSERVE_GIT_COMMIT", "")[:7]
try:
    with open(bench_json) as f:
        info = json.load(f).get("run", {})
    for k in ("model.name", "model.path", "model.synthetic", "model.device",
              "model.precision", "batching.enabled", "batching.max_batch_size"):
        if k in info: facts[k] = info[k]
    for k, v in info.items():
        if k.startswith("versions."): facts[k] = v
    facts["libtorch"] = (info.get("versions.libtorch") or info.get("versions.torch")
                         or info.get("versions.runtime") or "unknown")
    facts["precision"] = info.get("model.precision", "unknown")
    facts["device"] = info.get("model.device", "unknown")
except Exception as e:
    facts["bench_json_error"] = str(e)
with open(out, "w") as f:
    json.dump(facts, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
}

# run_json OUT key=value...: the run record.
run_json() {
  local out=$1; shift
  $PY - "$out" "$@" <<'EOF'
import json, sys
out = sys.argv[1]
rec = {}
for kv in sys.argv[2:]:
    k, _, v = kv.partition("=")
    rec[k] = v
rec["failures"] = [f for f in rec.pop("failures", "").split("|") if f]
with open(out, "w") as f:
    json.dump(rec, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
}

overall=0
summary=()
for exp in "${experiments[@]}"; do
  name=$(basename "$exp"); name=${name%.yaml}; name=${name%.yml}
  if [ ! -f "$exp" ]; then
    echo "run_experiment: $exp: no such file" >&2
    summary+=("$name: FAILED (no such file)"); overall=1; continue
  fi
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  dir="$RESULTS_DIR/$name/$stamp"
  mkdir -p "$dir"
  cp "$exp" "$dir/config.yaml"
  failures=()
  echo "=== $name -> $dir"

  # shellcheck disable=SC2086
  if ! "$SERVER_BIN" --config "$exp" $SERVER_ARGS --print-config >"$dir/effective_config.yaml" 2>"$dir/print_config.err"; then
    echo "run_experiment: $name: embedserve --print-config failed:" >&2
    cat "$dir/print_config.err" >&2
    failures+=("print-config failed: $(head -c 500 "$dir/print_config.err" | tr '\n|' '  ')")
    run_json "$dir/run.json" "experiment=$name" "config=$exp" "failures=$(IFS='|'; echo "${failures[*]}")"
    summary+=("$name: FAILED (invalid config)"); overall=1; continue
  fi
  rm -f "$dir/print_config.err"

  port=$(free_port)
  # The benchmark speaks gRPC: keep 8080 free; metrics on a port of their own.
  extra_server=(--metrics-port "$(free_port)" --http-port -1)
  # shellcheck disable=SC2086
  server_cmd=("$SERVER_BIN" --config "$exp" --port "$port" "${extra_server[@]}" $SERVER_ARGS)
  echo "[run] ${server_cmd[*]}"
  "${server_cmd[@]}" >"$dir/server.log" 2>&1 &
  server_pid=$!

  # shellcheck disable=SC2086
  bench_cmd=("$BENCH_BIN" --config "$exp" --target "127.0.0.1:$port" --wait-ready "$READY_TIMEOUT"
             --out-dir "$dir" --info "result_dir=$dir" $BENCH_ARGS)
  echo "[run] ${bench_cmd[*]}"
  # Progress lines go to the console and bench.log. If the server dies while the bench
  # runs (e.g. while it waits for SERVING), stop the bench rather than wait it out.
  "${bench_cmd[@]}" > >(tee "$dir/bench.log") 2>&1 &
  bench_pid=$!
  while alive "$bench_pid"; do
    if ! alive "$server_pid"; then
      sleep 2
      alive "$bench_pid" && kill -TERM "$bench_pid" 2>/dev/null
      break
    fi
    sleep 1
  done
  wait "$bench_pid"; bench_rc=$?
  bench_pid=""

  server_rc=""
  if alive "$server_pid"; then
    kill -TERM "$server_pid"
    for _ in $(seq 1 60); do
      alive "$server_pid" || break
      sleep 0.5
    done
    if alive "$server_pid"; then
      failures+=("server did not stop within 30 s of SIGTERM; killed")
      kill -KILL "$server_pid" 2>/dev/null
    fi
    wait "$server_pid"; server_rc=$?
    if [ "$server_rc" -ne 0 ]; then
      failures+=("server exited with status $server_rc after SIGTERM")
    fi
  else
    wait "$server_pid"; server_rc=$?
    failures+=("server exited by itself with status $server_rc before the sweep ended (see server.log)")
  fi
  server_pid=""

  inprocess_cmd=()
  if [ -n "$INPROCESS" ] && [ -f "$dir/bench.json" ]; then
    # The same sentences (seed, length), method and duration as the sweep.
    read -r ip_method ip_len ip_seed ip_dur ip_warm < <($PY -c '
import json, sys
r = json.load(open(sys.argv[1]))["run"]
print(r.get("method", "similarity"), r.get("sentence_tokens", "short"), r.get("seed", "42"),
      r.get("duration_s", "10"), r.get("warmup_s", "2"))' "$dir/bench.json")
    inprocess_cmd=("$INPROCESS_BIN" --config "$exp" --batch-sizes "$INPROCESS" --method "$ip_method"
                   --sentence-length "$ip_len" --seed "$ip_seed" --duration-s "$ip_dur"
                   --warmup-s "$ip_warm" --out-dir "$dir")
    # The server's --model / --precision overrides apply to the in-process run too.
    read -r -a sargs <<<"$SERVER_ARGS"
    for ((i = 0; i + 1 < ${#sargs[@]}; i++)); do
      case "${sargs[$i]}" in
        --model|--precision) inprocess_cmd+=("${sargs[$i]}" "${sargs[$((i + 1))]}") ;;
      esac
    done
    echo "[run] ${inprocess_cmd[*]}"
    if ! "${inprocess_cmd[@]}" 2>&1 | tee "$dir/inprocess.log"; then
      failures+=("embedserve-bench-inprocess failed (see inprocess.log)")
    fi
    if [ ! -f "$dir/inprocess.json" ]; then
      failures+=("embedserve-bench-inprocess wrote no inprocess.json")
    fi
  fi

  case $bench_rc in
    0) ;;
    2) failures+=("server never became SERVING within ${READY_TIMEOUT} s") ;;
    4) failures+=("server became unreachable mid-sweep") ;;
    *) failures+=("embedserve-bench exited with status $bench_rc") ;;
  esac
  if [ -f "$dir/bench.json" ]; then
    machine_json "$dir/machine.json" "$dir/bench.json"
    errs=$($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(p["requests_failed"] for p in d["points"]))' "$dir/bench.json" 2>/dev/null || echo "?")
    if [ "$errs" != "0" ]; then
      echo "run_experiment: $name: $errs requests failed during the sweep (errors column of bench.csv)" >&2
    fi
  else
    machine_json "$dir/machine.json" /nonexistent
  fi

  run_json "$dir/run.json" "experiment=$name" "config=$exp" "started=$stamp" \
    "server_command=${server_cmd[*]}" "bench_command=${bench_cmd[*]}" \
    "inprocess_command=${inprocess_cmd[*]}" \
    "bench_exit=$bench_rc" "server_exit=$server_rc" \
    "failures=$(IFS='|'; echo "${failures[*]}")"
  if [ ${#failures[@]} -ne 0 ]; then
    overall=1
    echo "run_experiment: $name FAILED:" >&2
    for f in "${failures[@]}"; do echo "  - $f" >&2; done
    echo "  last lines of $dir/server.log:" >&2
    tail -n 15 "$dir/server.log" | sed 's/^/    /' >&2
    summary+=("$name: FAILED ($dir)")
  else
    summary+=("$name: ok ($dir)")
  fi
done

echo
echo "=== summary"
for s in "${summary[@]}"; do echo "  $s"; done
exit $overall
