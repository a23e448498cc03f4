#!/usr/bin/env bash
# raftd and its peers on the same workload, in one run on one machine (issue 8): 3 nodes on
# 127.0.0.1, 100-byte values over 10,000 keys, 64 requests in flight and one client sequential.
#
#   ./benchmarks/side_by_side.sh            # results in benchmarks/results/<timestamp>/
#   MATRIX=0 ./benchmarks/side_by_side.sh   # the three systems side by side only
#
# Needs the anchors set up as in ../shared/anchors/RESULTS.md ("Reproduce": etcd-server,
# etcd-client, wrk, and /tmp/anchors-venv with pysyncobj); a peer that is missing is skipped.
# Then the full raftd matrix: the load curve, 5 and 7 nodes, value sizes, reads, a paused
# follower.  Run it on a quiet machine.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
APY=${APY:-/tmp/anchors-venv/bin/python}
ANCHORS=${ANCHORS:-../shared/anchors}
DUR=${DUR:-10}
OUT=benchmarks/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
echo "results in $OUT"
B="$PY benchmarks/bench_cluster.py --duration $DUR"

# 1. Side by side: raftd, PySyncObj, etcd, alternating so drift hits all of them.
for rep in 1 2 3; do
  $B --clients 1,64 >>"$OUT/raftd_side.jsonl" 2>>"$OUT/errors.log"
  if [ -x "$APY" ] && [ -d "$ANCHORS" ]; then
    (cd "$ANCHORS" && "$APY" pso_bench.py run --journal 0 --batch 0 --reps 1 --secs "$DUR" \
       --window 64 --first-rep "$rep" 2>/dev/null) >>"$OUT/pso.jsonl"
  fi
  if command -v etcd >/dev/null && command -v wrk >/dev/null && [ -d "$ANCHORS" ]; then
    n=$((900 + rep))  # out/etcd_rep9NN.txt: never over the anchors' own result files
    (cd "$ANCHORS" && PY="$APY" START="$n" REPS=1 ./etcd_bench.sh >/dev/null 2>&1 \
       && mv "out/etcd_rep$n.txt" "$OLDPWD/$OUT/etcd_rep$rep.txt")
  fi
done

# 2. The raftd matrix (MATRIX=0 skips it: the side-by-side alone takes about 5 minutes).
if [ "${MATRIX:-1}" = 0 ]; then echo "done: $OUT"; exit 0; fi
$B --clients 1,8,64,256,1024 >>"$OUT/raftd_curve.jsonl" 2>>"$OUT/errors.log"
$B --clients 64 --nodes 5 >>"$OUT/raftd_nodes.jsonl" 2>>"$OUT/errors.log"
$B --clients 64 --nodes 7 >>"$OUT/raftd_nodes.jsonl" 2>>"$OUT/errors.log"
$B --clients 64 --value-size 1024 >>"$OUT/raftd_values.jsonl" 2>>"$OUT/errors.log"
$B --clients 64 --value-size 16384 >>"$OUT/raftd_values.jsonl" 2>>"$OUT/errors.log"
$B --clients 64,256 --read-ratio 1 >>"$OUT/raftd_reads.jsonl" 2>>"$OUT/errors.log"
$B --clients 1,64 --set inline_fsync=false >>"$OUT/raftd_thread.jsonl" 2>>"$OUT/errors.log"
$PY benchmarks/bench_cluster.py --duration 15 --clients 64 --pause-follower \
  >>"$OUT/raftd_pause.jsonl" 2>>"$OUT/errors.log"
echo "done: $OUT"
