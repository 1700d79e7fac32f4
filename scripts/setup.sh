#!/usr/bin/env bash
# Installs every Debian package embedserve needs to build, test and run (idempotent:
# when everything is there it only checks and returns in about a second).
# Usage: scripts/setup.sh        (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  # model backend: LibTorch (CPU) and a fast BLAS for it (without OpenBLAS Debian's
  # LibTorch falls back to the netlib reference BLAS, about 60x slower)
  libtorch-dev libopenblas0-openmp
  # RPC
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # libraries
  libabsl-dev libyaml-cpp-dev libspdlog-dev libutf8proc-dev nlohmann-json3-dev libcli11-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # Python client, end-to-end tests and reports (Debian's python3, not a venv)
  python3 python3-grpcio python3-protobuf python3-yaml python3-matplotlib
  # misc tools used by scripts
  curl jq
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
