#!/bin/bash
# On a 2-core CPU: is the grid faster running two students at once, each pinned to one core,
# than one student on both cores? Per IPC, one small-data student (random set, Fashion-MNIST,
# E epochs, its 10,000-image test pass and start-up included) alone on cores 0,1, then two
# copies at once on core 0 and core 1; prints the wall seconds and each student's line.
# Pause anything else first (BENCHMARKS.md: "Two students at once ...").
#   E=100 IPCS="1 10 50" bash scripts/bench_cpu_pairs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
E=${E:-100}
W=$(mktemp -d)
one() {  # cpus workdir ipc
  taskset -c "$1" .venv/bin/python main.py --config=configs/benchmark.py --workdir="$2" \
    --config.ipc="$3" --config.seeds=1 --config.eval.protocol=small_data \
    --config.eval.epochs="$E" --config.progress=False > "$2.log" 2>&1
}
for ipc in ${IPCS:-1 10 50}; do
  t0=$(date +%s.%N); one 0,1 "$W/alone_$ipc" "$ipc"; t1=$(date +%s.%N)
  one 0 "$W/a_$ipc" "$ipc" & one 1 "$W/b_$ipc" "$ipc" & wait; t2=$(date +%s.%N)
  echo "ipc $ipc: alone $(echo "$t1 - $t0" | bc) s for one; pair $(echo "$t2 - $t1" | bc) s for two"
  grep -h "seed 0:" "$W/alone_$ipc.log" "$W/a_$ipc.log" "$W/b_$ipc.log"
done
rm -rf "$W"
