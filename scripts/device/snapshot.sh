#!/usr/bin/env bash
# Runs HERE: packs the committed tree (HEAD, or the commit given) into .device/src.tar,
# so the GPU machine builds exactly a commit and not the half-edited working tree that
# other engineers share. Carry ".device"; there: scripts/device/from_snapshot.sh CMD...
# Files under .device/overlay/ (same relative paths) replace or add to the commit's:
# for trying a change on the GPU before it is committed.
# Usage: scripts/device/snapshot.sh [COMMIT]
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:-HEAD}
mkdir -p .device
git archive --format=tar -o .device/src.tar "$rev"
git rev-parse "$rev" > .device/src.rev
if [ -d .device/overlay ] && [ -n "$(ls -A .device/overlay)" ]; then
  # Same member names as git archive's (no "./"), so the commit's own version stays
  # reachable: tar -xf src.tar --occurrence=1 PATH gives it, a plain extract the overlay.
  (cd .device/overlay && find . -type f | sed 's|^\./||' | sort) > .device/overlay.list
  tar -rf .device/src.tar -C .device/overlay -T .device/overlay.list
  echo "snapshot: overlay: $(tr '\n' ' ' < .device/overlay.list)"
  echo "+overlay" >> .device/src.rev
fi
echo "snapshot: $(cut -c1-12 .device/src.rev) -> .device/src.tar ($(du -h .device/src.tar | cut -f1))"
