#!/usr/bin/env bash
# Data for scripts/gpu_check.sh's grid step: fills .gpu_data/ (ignored by git) with one dataset
# and the finished cells of a grid root, for a device call that carries `.whl` and `.gpu_data`
# (README "GPU checks"; the carried paths must stay under 64 MiB together).
#
#   bash scripts/gpu_grid_data.sh ROOT [fmnist|cifar10]
#
#   fmnist   the four idx .gz files of $FASHION_MNIST_DIR (default Debian's
#            /usr/share/datasets/fashion-mnist), 30 MB
#   cifar10  the parquet files of $CIFAR10_DIR (default ../shared/data/cifar10-jpeg), 21 MB
# Finished cells of ROOT (experiments/fmnist_grid.py's layout) travel as results.json,
# config.json and runs/ only, so the grid there skips them; the grid's finished cache entries
# (teachers, score files, SRe2L sets: ROOT's cache and results/grid_caches) travel in
# .gpu_data/grid_caches, so the GPU's cells select and relabel with the CPU cells' teachers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:?usage: gpu_grid_data.sh ROOT [fmnist|cifar10]}
DATASET=${2:-fmnist}
git check-ignore -q .gpu_data/ || { echo "gpu_grid_data: .gpu_data/ is not ignored by git" >&2; exit 1; }
case $DATASET in
  fmnist) SRC=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist} DEST=fashion-mnist PAT='*-ubyte.gz' ;;
  cifar10) SRC=${CIFAR10_DIR:-../shared/data/cifar10-jpeg} DEST=cifar10-jpeg PAT='*.parquet' ;;
  *) echo "gpu_grid_data: dataset must be fmnist or cifar10, got '$DATASET'" >&2; exit 2 ;;
esac
compgen -G "$SRC/$PAT" >/dev/null || { echo "gpu_grid_data: no $PAT in $SRC" >&2; exit 2; }
rm -rf .gpu_data
mkdir -p ".gpu_data/$DEST" .gpu_data/grid
cp "$SRC"/$PAT ".gpu_data/$DEST/"
cells=0
if [ -d "$ROOT" ]; then
  while IFS= read -r -d '' result; do
    cell=$(dirname "$result")
    rel=${cell#"$ROOT"/}
    mkdir -p ".gpu_data/grid/$rel"
    cp "$result" ".gpu_data/grid/$rel/"
    if [ -f "$cell/config.json" ]; then cp "$cell/config.json" ".gpu_data/grid/$rel/"; fi
    if [ -d "$cell/runs" ]; then cp -r "$cell/runs" ".gpu_data/grid/$rel/"; fi
    cells=$((cells + 1))
  done < <(find "$ROOT" -name results.json -not -path '*/checkpoints/*' -print0)
fi
"${PYTHON:-.venv/bin/python}" - "$ROOT" <<'EOF'
import os, sys
sys.path.insert(0, "experiments")
import grid_archive
root = sys.argv[1]
n = len(grid_archive.archive_caches("results/grid_caches", ".gpu_data/grid_caches"))
if os.path.isdir(root):
  n += len(grid_archive.archive_caches(grid_archive.cache_root(root), ".gpu_data/grid_caches"))
print(f"gpu_grid_data: {n} cache entries in .gpu_data/grid_caches")
EOF
size=$(du -sm .gpu_data $([ -d .whl ] && echo .whl) | awk '{s += $1} END {print s}')
echo "gpu_grid_data: .gpu_data/ holds $DATASET and $cells finished cell(s) of $ROOT; with .whl ${size} MB"
[ "$size" -le 62 ] || { echo "gpu_grid_data: over the 64 MiB a device call carries" >&2; exit 1; }
