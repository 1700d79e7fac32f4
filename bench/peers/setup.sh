#!/usr/bin/env bash
# Makes the peers' virtual environments (Debian's python3), each from its pinned
# requirements file, when missing or stale (a hash of the file is kept inside), and the
# real model (scripts/fetch_model.sh):
#   .venv-peers     requirements/peers.txt (sentence-transformers, CPU torch, ONNX Runtime, grpcio,
#                   matplotlib)
#   .venv-infinity  requirements/infinity.txt (infinity-emb and its own pins)
# Usage: bench/peers/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch_model.sh
make_venv() {  # make_venv DIR REQUIREMENTS
  local want
  want=$(cat "$2" requirements/reference.txt | sha256sum | cut -d' ' -f1)
  if [ -x "$1/bin/python" ] && [ "$(cat "$1/requirements.sha256" 2>/dev/null)" = "$want" ]; then
    echo "setup: $1 up to date"; return
  fi
  echo "setup: making $1 from $2 (torch and its dependencies: a few GB, once)"
  rm -rf "$1"
  /usr/bin/python3 -m venv "$1"
  (cd requirements && "../$1/bin/python" -m pip install --quiet --disable-pip-version-check -r "$(basename "$2")")
  echo "$want" >"$1/requirements.sha256"
}
make_venv .venv-peers requirements/peers.txt
make_venv .venv-infinity requirements/infinity.txt
