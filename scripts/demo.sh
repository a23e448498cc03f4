#!/usr/bin/env bash
# The main job, from a fresh machine: install raftd/raftctl into .venv, start a local 3-node
# cluster in ./raftd-local (ports 7001-7003), write a key, and open the live dashboard
# (Ctrl-C leaves the dashboard; the cluster keeps running).
# Stop the cluster with: .venv/bin/raftctl local down --dir ./raftd-local
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[fast]'
.venv/bin/raftctl local up --nodes 3 --dir ./raftd-local
.venv/bin/raftctl kv put hello world
if [ -t 1 ]; then
  exec .venv/bin/raftctl status --watch
else
  exec .venv/bin/raftctl status   # not a terminal: one status table instead of the dashboard
fi
