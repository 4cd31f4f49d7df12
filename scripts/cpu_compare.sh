#!/usr/bin/env bash
# The CPU measurements of issue #15 item 3 on this machine's CPU kind, as one command:
#   1. dcjax vs PyTorch (experiments/bench_throughput.py --size cpu: every dcjax CPU path and
#      torch's hard / soft / scoring rows, one process);
#   2. ConvNet's CPU paths side by side on the grid's small-data step
#      (experiments/bench_conv_impl.py: custom, winograd, fused, interleaved rounds).
# JSON lands in results/bench/, named by CPU kind and date; copy the printed tables into
# BENCHMARKS.md. PyTorch 2.13 (CPU build; not a dcjax dependency) is installed once into
# .torch213/ (git-ignored) and put on PYTHONPATH for the first command only. The figures are
# only as clean as the machine: pause background jobs first (scripts/grid_queue.sh's queue:
# kill -STOP -- -<its process group>, then kill -CONT).
#
#   bash scripts/cpu_compare.sh        # ~10 min on a 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TORCH_DIR=${TORCH_DIR:-.torch213}
kind=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1 | tr 'A-Z' 'a-z' \
       | sed 's/([^)]*)//g; s/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')
kind=${kind:-cpu}
# One model name covers CPUs with other vector units (an AMD EPYC with and one without AVX-512
# round differently and run at other speeds): the widest one joins the name.
simd=
if grep -q -w avx512f /proc/cpuinfo 2>/dev/null; then simd=avx512
elif grep -q -w avx2 /proc/cpuinfo 2>/dev/null; then simd=avx2; fi
kind=${kind}${simd:+-$simd}
day=$(date -u +%Y-%m-%dT%H%M)  # to the minute: a rerun never replaces a record
if [ ! -d "$TORCH_DIR/torch" ]; then
  echo "cpu_compare: installing torch 2.13.0 (CPU) into $TORCH_DIR"
  "$PY" -m pip install -q --target "$TORCH_DIR" --no-deps torch==2.13.0 sympy mpmath networkx
fi
echo "cpu_compare: $kind, $(nproc) cores, $day"
PYTHONPATH="$TORCH_DIR" "$PY" experiments/bench_throughput.py --size cpu \
  --out "results/bench/throughput_cpu_${kind}_${day}.json"
"$PY" experiments/bench_conv_impl.py --batches 256,100,10 --steps 6 --rounds 3 \
  --impls custom,winograd,fused --out "results/bench/conv_impl_${kind}_${day}.json"
