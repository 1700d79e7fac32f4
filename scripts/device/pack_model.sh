#!/usr/bin/env bash
# Runs HERE (the dev machine): readies the real all-MiniLM-L6-v2 for the GPU machine. Its
# model.safetensors (90.9 MB) is larger than one device call may carry (64 MiB with the
# working tree), so it travels in two parts, one call each, and the small files with the
# second:
#   .device/model/part-00   the first 46 MiB of model.safetensors
#   .device/model/part-01   the rest, and .device/model/files.tar (the other files)
# Calls (back to back, so the machine stays warm and keeps what the first one carried):
#   1. carry [".device/model/part-00"], command: ls -l .device/model
#   2. carry [".device/model/part-01", ".device/model/files.tar"],
#      command: scripts/device/unpack_model.sh
#   3. the work, carrying [".device/debs", ".device/src.tar"] (not all of .device: the
#      parts would travel again), e.g. scripts/device/from_snapshot.sh scripts/device/run_all.sh
# unpack_model.sh joins them into models/all-MiniLM-L6-v2 there and checks every file
# against assets/models/all-MiniLM-L6-v2.sha256.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch_model.sh
rm -rf .device/model
mkdir -p .device/model
split -b 46M -d -a 2 models/all-MiniLM-L6-v2/model.safetensors .device/model/part-
tar -C models/all-MiniLM-L6-v2 --exclude=model.safetensors -cf .device/model/files.tar .
ls -l .device/model
