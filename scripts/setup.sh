#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine: a virtual environment in .venv with dcjax
# and its dev extras, and Debian's Fashion-MNIST package when its files are absent.
# Usage: bash scripts/setup.sh            (re-running it is cheap)
set -euo pipefail
cd "$(dirname "$0")/.."
FMNIST_DIR=/usr/share/datasets/fashion-mnist
need_fmnist=0
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -e "$FMNIST_DIR/$f" ] || [ -e "$FMNIST_DIR/$f.gz" ] || need_fmnist=1
done
if [ "$need_fmnist" = 1 ]; then
  echo "setup: installing Debian package dataset-fashion-mnist into $FMNIST_DIR"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
    $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Install only when the package or its requirements changed since the last successful install.
stamp=.venv/.dcjax-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing dcjax[dev] into .venv (log: .venv/pip.log)"
  if ! .venv/bin/python -m pip install -e '.[dev]' > .venv/pip.log 2>&1; then
    tail -n 30 .venv/pip.log; echo "setup: pip install failed (full log: .venv/pip.log)" >&2; exit 1
  fi
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/python)"
