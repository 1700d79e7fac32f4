#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: joins the parts that scripts/device/pack_model.sh made (carried
# in separate calls) into models/all-MiniLM-L6-v2 and checks every file against
# assets/models/all-MiniLM-L6-v2.sha256. Idempotent: a folder that already matches is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=models/all-MiniLM-L6-v2
MANIFEST=$(pwd)/assets/models/all-MiniLM-L6-v2.sha256
if [ -d "$DEST" ] && (cd "$DEST" && sha256sum --quiet --strict -c "$MANIFEST") 2>/dev/null; then
  echo "unpack_model: $DEST present and matching"; exit 0
fi
for f in part-00 part-01 part-02 files.tar; do
  [ -f ".device/model/$f" ] || { echo "unpack_model: .device/model/$f missing: carry it (pack_model.sh says how)" >&2; exit 1; }
done
tmp=$(mktemp -d models.partial.XXXXXX)
tar -C "$tmp" -xf .device/model/files.tar
cat .device/model/part-* >"$tmp/model.safetensors"
mkdir -p "$tmp/2_Normalize"
if ! (cd "$tmp" && sha256sum --quiet --strict -c "$MANIFEST"); then
  rm -rf "$tmp"; echo "unpack_model: the joined files do not match the manifest" >&2; exit 1
fi
mkdir -p models && rm -rf "$DEST" && mv "$tmp" "$DEST"
echo "unpack_model: $DEST ready (every file checked)"
