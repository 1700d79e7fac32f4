#!/usr/bin/env bash
# Remakes the real-model reference fixtures (tests/data/all-MiniLM-L6-v2/) with the pinned
# reference stack: makes .venv-ref (Debian's python3) from requirements/reference.txt when
# it is missing or stale (torch and its dependencies: a few GB, once), then runs
# make_fixtures.py on models/all-MiniLM-L6-v2 (scripts/setup.sh fetches it). The test
# command never runs this: tests read only the committed files.
# Usage: scripts/reference/make_fixtures.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch_model.sh
want=$(sha256sum requirements/reference.txt | cut -d' ' -f1)
if [ ! -x .venv-ref/bin/python ] || [ "$(cat .venv-ref/requirements.sha256 2>/dev/null)" != "$want" ]; then
  rm -rf .venv-ref
  /usr/bin/python3 -m venv .venv-ref
  .venv-ref/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/reference.txt
  echo "$want" >.venv-ref/requirements.sha256
fi
# One thread per core, no hub access: the model is the local folder.
HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv-ref/bin/python scripts/reference/make_fixtures.py
