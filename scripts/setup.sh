#!/usr/bin/env bash
# Installs what embedserve needs to build, test and run, idempotently (when everything is
# there it only checks, in about a second):
#   1. the Debian packages below;
#   2. .venv/, a virtual environment of Debian's python3 with requirements/test.txt
#      (the Python packages the tests use, pinned);
#   3. the real model at models/all-MiniLM-L6-v2 (scripts/fetch_model.sh).
# Usage: scripts/setup.sh                  (as root, or with sudo available)
#        scripts/setup.sh --packages-only  (step 1 only: deploy/Dockerfile's builder stage)
set -euo pipefail
packages_only=false
if [ "${1:-}" = "--packages-only" ]; then packages_only=true; fi

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  # model backend: LibTorch (CPU) and a fast BLAS for it (without OpenBLAS Debian's
  # LibTorch falls back to the netlib reference BLAS, about 60x slower)
  libtorch-dev libopenblas0-openmp
  # int8 on CPU: oneDNN's headers for the libdnnl2 that libtorch-dev already pulls in
  libdnnl-dev
  # RPC
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # libraries (Boost: the header-only Beast/Asio HTTP server; bookworm's default
  # libboost-dev is 1.74, since libboost1.81-dev conflicts with 1.74-dev, which
  # python3-matplotlib's scipy needs; docs/http.md)
  libabsl-dev libyaml-cpp-dev libspdlog-dev libutf8proc-dev nlohmann-json3-dev libcli11-dev
  libboost-dev
  # metrics: prometheus-cpp's registry and text format (the build links only its core)
  prometheus-cpp-dev
  # TLS on the HTTP ports (Asio's ssl::stream) and the API-key digests (docs/security.md);
  # the openssl CLI makes the certificates of the security tests
  libssl-dev openssl
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # Python client, end-to-end tests and reports (Debian's python3, not a venv)
  python3 python3-grpcio python3-protobuf python3-yaml python3-matplotlib python3-venv
  # misc tools used by scripts
  curl jq
  # a compiler cache for scripts/test.sh's four builds
  ccache
  # the load balancer in front of local replicas (scripts/cluster/, docs/deploy.md)
  nginx
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} Debian packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if $packages_only; then exit 0; fi

cd "$(dirname "$0")/.."
# The venv is remade when requirements/test.txt changes (its hash is kept inside it).
want=$(sha256sum requirements/test.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/requirements.sha256 2>/dev/null)" != "$want" ]; then
  echo "setup: making .venv (requirements/test.txt)"
  rm -rf .venv
  /usr/bin/python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/test.txt ||
    { rm -rf .venv; echo "setup: pip could not install requirements/test.txt (see above)" >&2; exit 1; }
  echo "$want" >.venv/requirements.sha256
else
  echo "setup: .venv up to date"
fi

scripts/fetch_model.sh .venv/bin/python
