#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs pytest.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the real-process tests use (nftables: network partitions; tmux: dashboard;
# openssh-server: SSH bootstrap; strace: the seeding durability test).  Only as root on
# Debian/Ubuntu; otherwise those tests skip.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  command -v nft >/dev/null 2>&1 || missing="$missing nftables"
  command -v tmux >/dev/null 2>&1 || missing="$missing tmux"
  [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
  command -v strace >/dev/null 2>&1 || missing="$missing strace"
  if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >&2 \
      || echo "warning: could not install$missing; tests that need them will skip" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,fast]'

# Linters first (issue 17 §1; configured in pyproject.toml): ruff everywhere; mypy strict on the
# core, the wire format, storage and the state machine, normal mode on the rest of raftd and
# raftctl (raftd/simrt included).
.venv/bin/ruff check raftd raftctl tests benchmarks
.venv/bin/mypy raftd raftctl
# The storage crash-state explorer (issue 21) prints how many power-loss states it checked; the
# pytest run repeats it with every write torn every way and with each mutant.
.venv/bin/python -m raftd.storage.explore
exec .venv/bin/python -m pytest -q "$@"
