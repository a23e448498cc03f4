#!/usr/bin/env bash
# The main job, from a fresh machine: install raftd/raftctl into .venv, then show a simulated
# 5-node cluster surviving partitions and crashes (a readable trace of one deterministic seed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python -m raftd.sim --seeds 1 --start 3 --nodes 5 --trace
