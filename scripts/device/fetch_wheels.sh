#!/usr/bin/env bash
# Runs HERE (the dev machine): downloads the wheels of requirements/infinity_gpu.txt for
# the GPU machine's Python 3.12 (x86-64 manylinux) into .whl/inf/, which a device call
# carries (`carry: [".whl"]`, 21 MB) and scripts/device/peers_gpu.sh installs there.
# Idempotent: pip skips what is already downloaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl/inf
grep -vE '^\s*(#|$)' requirements/infinity_gpu.txt | while read -r req; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl/inf "$req"
done
du -sh .whl/inf
