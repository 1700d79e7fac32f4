#!/usr/bin/env bash
# Runs HERE (the Debian 12 dev machine), not on the GPU machine: downloads the Debian
# packages the GPU machine (Ubuntu 24.04, no network) lacks into .device/debs/, which
# the device tool carries (`carry: [".device"]`) and scripts/device/env.sh unpacks there.
# Idempotent: a package whose .deb is already there is not fetched again.
# Usage: scripts/device/fetch_debs.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.device/debs

# gRPC C++ 1.51 and its consistent Debian set (Ubuntu's abseil/re2/protobuf differ in
# version or soname), protoc + grpc_cpp_plugin, and the libraries the project finds that
# Ubuntu's image lacks. libssl-dev/zlib1g-dev are only unpacked there when Ubuntu has no
# headers of its own (env.sh); their runtime libraries always come from Ubuntu.
PACKAGES=(
  libgrpc++-dev libgrpc-dev libgrpc29 libgrpc++1.51 protobuf-compiler-grpc
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32
  libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev libc-ares2
  libutf8proc-dev libutf8proc2 nlohmann-json3-dev libcli11-dev
  libssl-dev zlib1g-dev
  # Boost.Beast / Asio headers for the HTTP front door (header-only; 9.5 MB .deb)
  libboost1.74-dev
  # prometheus-cpp core for the metrics (headers + pkg-config file, and its library); the
  # build reads prometheus-cpp-core.pc, so its pull/push/civetweb/curl deps stay behind
  prometheus-cpp-dev libprometheus-cpp-core1.0
)

mkdir -p "$DEST"
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
missing=()
for p in "${PACKAGES[@]}"; do
  compgen -G "$DEST/${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "fetch_debs: all ${#PACKAGES[@]} packages already in $DEST"
else
  echo "fetch_debs: downloading ${missing[*]}"
  (cd "$DEST" && apt-get download "${missing[@]}")
fi
du -sh "$DEST"
