#!/usr/bin/env bash
# The findings grid of issue #15 as one resumable background command: the cheap cells first so
# findings appear early, one process at a time, nice 19, every cell resumed from its checkpoints
# and every finished cell skipped, so the same command continues where the last machine
# stopped. Run it from a `git worktree` at a fixed commit (a refactor must not change a running
# experiment):
#
#   git worktree add --detach ../grid HEAD && cd ../grid && ln -s ../<repo>/.venv .venv
#   nohup setsid bash scripts/grid_queue.sh RUNS >> RUNS.log 2>&1 &
#
# It first copies the archived cells (results/grid_runs and results/sre2l_recover_runs,
# committed) into RUNS so they are skipped. From the main checkout, `experiments/fmnist_grid.py archive --root RUNS` and
# `report --root results/grid_runs [--dataset cifar10]` record what finished (commit results/).
# SRe2L's cells come after its recover sweep on the validation split: run them from a commit
# whose configs/sre2l.py holds the setting that sweep chose (issue #15: no tuning on test).
set -u
RUNS=${1:?usage: bash scripts/grid_queue.sh RUNS}
cd "$(dirname "$0")/.."
mkdir -p "$RUNS/sre2l_recover" && cp -rn results/grid_runs/. "$RUNS"/ 2>/dev/null
cp -rn results/sre2l_recover_runs/. "$RUNS/sre2l_recover"/ 2>/dev/null
PY=${PYTHON:-.venv/bin/python}
grid() { nice -n 19 "$PY" experiments/fmnist_grid.py run --root "$RUNS" "$@"; }
recover() { nice -n 19 "$PY" experiments/sre2l_recover.py run --root "$RUNS/sre2l_recover" "$@"; }
# Every method but SRe2L; selection seeds as the issue asks (5 at IPC 1, 2 at IPC 10 and 50).
METHODS="random,el2n_easy,el2n_hard,ccs,herding,kcenter,rded,pca"
SELECTIONS="1:5,10:2,50:2"

# The recover sweeps first: every finding compares pruning with synthesis, and SRe2L's cells
# wait for the setting its sweep chooses on validation (20 cells per dataset).
recover --datasets fmnist --ipcs 10
grid --dataset fmnist --ipcs 1 --methods "$METHODS" --selection-seeds "$SELECTIONS"
recover --datasets cifar10 --ipcs 10
grid --dataset cifar10 --ipcs 1 --methods "$METHODS" --selection-seeds "$SELECTIONS"
grid --dataset fmnist --ipcs 10 --methods "$METHODS" --selection-seeds "$SELECTIONS"
grid --dataset cifar10 --ipcs 10 --methods "$METHODS" --selection-seeds "$SELECTIONS"
grid --dataset fmnist --ipcs 50 --methods "$METHODS" --selection-seeds "$SELECTIONS"
grid --dataset cifar10 --ipcs 50 --methods "$METHODS" --selection-seeds "$SELECTIONS"
grid --dataset fmnist --ipcs 1,10,50 --methods sre2l --selection-seeds "$SELECTIONS"
grid --dataset cifar10 --ipcs 1,10,50 --methods sre2l --selection-seeds "$SELECTIONS"
echo "grid_queue: every listed step has run"
