#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: unpacks .device/src.tar (made by snapshot.sh) into
# /tmp/es-src, links the carried .device folder (and models/, where unpack_model.sh laid
# out the real model) into it, and runs the given command there. Usage: scripts/device/from_snapshot.sh scripts/device/build_and_test.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
src=${ES_SRC:-/tmp/es-src}
rm -rf "$src" && mkdir -p "$src"
tar -xf "$here/.device/src.tar" -C "$src"
ln -sfn "$here/.device" "$src/.device"
[ -d "$here/models" ] && ln -sfn "$here/models" "$src/models"
echo "from_snapshot: commit $(cat "$here/.device/src.rev" 2>/dev/null | cut -c1-12) in $src"
cd "$src"
# The snapshot has no .git: the launcher records this commit in machine.json instead.
EMBEDSERVE_GIT_COMMIT=$(cat "$here/.device/src.rev" 2>/dev/null || true)
export EMBEDSERVE_GIT_COMMIT
exec "$@"
