#!/usr/bin/env bash
# The findings grid of issue #15 (experiments/grid_queue.py: its steps and their order) as one
# resumable background command: one process at a time, nice 19, every cell resumed from its
# checkpoints and every finished cell skipped, so the same command continues where the last
# machine stopped. Run it from a `git worktree` at a fixed commit (a refactor must not change a
# running experiment), and stop it before that worktree's checkout changes:
#
#   git worktree add --detach ../grid HEAD && cd ../grid && ln -s ../<repo>/.venv .venv
#   nohup setsid bash scripts/grid_queue.sh RUNS >> RUNS.log 2>&1 &
#   bash scripts/grid_queue.sh RUNS status     # cells done / left and an ETA, per step and in all
#
# WORKERS=N runs N cells of a step at once, each on its share of the CPUs (fmnist_grid.py run
# --workers): for a machine with more cores than one student uses well, or a GPU that small
# cells leave idle. Keep one queue's cells on one WORKERS value: results differ at float
# rounding with the CPUs per cell.
#
# It first copies the archived cells (results/grid_runs and results/sre2l_recover_runs,
# committed) into RUNS where RUNS has nothing of them: finished cells are skipped, unfinished
# ones keep their finished students; and the archived teachers, score files and SRe2L sets
# (results/grid_caches) into the grid's cache, RUNS/.dcjax_cache ($DCJAX_CACHE when set), so
# this machine selects and relabels with the same ones. From the main checkout,
# `experiments/grid_queue.py record --root RUNS` archives what finished (whole cells, the
# finished students of unfinished ones, finished cache entries) and regenerates the reports
# (commit results/).
set -u
RUNS=${1:?usage: bash scripts/grid_queue.sh RUNS [run|status]}
MODE=${2:-run}
cd "$(dirname "$0")/.."
# Linux's autogroup scheduler (sched(7); /proc/sys/kernel/sched_autogroup_enabled, on here)
# weighs every session as a whole, and `nice` acts only within a session: started with setsid,
# a nice-19 queue would take an equal share against the user's own session. As a session leader
# it therefore also lowers its session's weight (never when it shares the user's session).
if [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && [ -w /proc/self/autogroup ]; then
  echo 19 > /proc/self/autogroup 2>/dev/null || true
fi
PY=${PYTHON:-.venv/bin/python}
if [ "$MODE" = run ]; then
  "$PY" experiments/grid_queue.py restore --root "$RUNS" || exit 1
  exec nice -n 19 "$PY" experiments/grid_queue.py run --root "$RUNS" --workers "${WORKERS:-1}"
fi
exec "$PY" experiments/grid_queue.py "$MODE" --root "$RUNS"  # status: reads RUNS, writes nothing
