#!/usr/bin/env bash
# Runs HERE (the dev machine): readies the real all-MiniLM-L6-v2 for the GPU machine. Its
# model.safetensors (90.9 MB) is larger than one device call may carry (64 MiB with the
# working tree, ~20 MB), so it travels in three parts, one call each, and the small files
# with the last:
#   .device/model/part-00, part-01   31 MiB each of model.safetensors
#   .device/model/part-02            the rest, and .device/model/files.tar (the other files)
# Calls (back to back, within the machine's idle release, so it stays warm and keeps
# what the earlier ones carried):
#   1. carry [".device/model/part-00"], command: ls -l .device/model
#   2. carry [".device/model/part-01"], command: ls -l .device/model
#   3. carry [".device/model/part-02", ".device/model/files.tar"],
#      command: scripts/device/unpack_model.sh
#   4. the work, carrying [".device/debs"] (not all of .device: the parts would travel
#      again), e.g. scripts/device/merged_check.sh
# unpack_model.sh joins them into models/all-MiniLM-L6-v2 there and checks every file
# against assets/models/all-MiniLM-L6-v2.sha256.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch_model.sh
rm -rf .device/model
mkdir -p .device/model
split -b 31M -d -a 2 models/all-MiniLM-L6-v2/model.safetensors .device/model/part-
tar -C models/all-MiniLM-L6-v2 --exclude=model.safetensors -cf .device/model/files.tar .
ls -l .device/model
