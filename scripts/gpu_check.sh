#!/usr/bin/env bash
# GPU checks of dcjax, for a lent GPU machine (README "GPU checks"). Run there, in the
# repository root, with $OUT naming a folder and the wheels of scripts/gpu_wheels.sh in .whl/:
#
#   bash scripts/gpu_check.sh
#
# Steps, each under its own time limit (`timeout`), its output in $OUT/<step>.log:
#   install   the carried wheels into /tmp/site (PYTHONPATH), as the device README says
#   env       versions, nvidia-smi, JAX's devices; dcjax, grain and ml_collections import
#   tests     pytest -m gpu tests/test_gpu.py (a skip fails there: DCJAX_REQUIRE_GPU=1)
#   bench     experiments/bench_throughput.py --size gpu --out $OUT/bench_gpu.json
#   vmapseeds experiments/bench_vmap_seeds.py: a cell's seeds vmapped vs one by one (#15 item 3)
#   pipeline  if time allows: main.py on synthetic data (soft protocol: teacher + 2 students)
#   grid      only when named in GPU_CHECK_STEPS: cells of experiments/fmnist_grid.py (GRID_ARGS)
#             on the data of .gpu_data/ (scripts/gpu_grid_data.sh), skipping the finished cells
#             carried in .gpu_data/grid/, starting none after 2/3 of the time left; every cell
#             it finishes lands in $OUT/grid/ (without checkpoints), to merge into the grid root;
#             its caches start from .gpu_data/grid_caches (the CPU cells' teachers and score
#             files) and what it adds to them lands in $OUT/grid_caches
# A failed step is recorded in $OUT/summary.txt (with the figures of the steps that ran) and
# the next one runs. Exit status: the number of failed steps.
#
# Environment:
#   GPU_CHECK_BUDGET_S=480     the whole run's time; a step gets at most what is left of it
#   GPU_CHECK_STEPS="tests bench vmapseeds pipeline"   the steps after install and env (for a rerun)
#   GPU_CHECK_ALLOW_CPU=1      dry run on a CPU: JAX on the CPU, bench size ci, a tiny pipeline
#   GPU_CHECK_SKIP_INSTALL=1   use the packages PYTHON already has (no .whl needed)
#   PYTHON=python3             the interpreter
#   GRID_ARGS="--dataset fmnist"   fmnist_grid.py run arguments of the grid step (no --root)
#   GRID_WORKERS=1             cells of the grid step at once, sharing the GPU (fmnist_grid.py
#                              run --workers; a small-set cell leaves most of a GPU idle; more
#                              than one worker is not measured on a GPU yet)
# Dry run here:  OUT=/tmp/gpu_check GPU_CHECK_ALLOW_CPU=1 GPU_CHECK_SKIP_INSTALL=1 \
#                  PYTHON=.venv/bin/python bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for logs and figures}"
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
PY=${PYTHON:-python3}
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # usable from /tmp
BUDGET=${GPU_CHECK_BUDGET_S:-480}
STEPS=${GPU_CHECK_STEPS:-tests bench vmapseeds pipeline}
WORK=$(mktemp -d /tmp/dcjax_gpu_check.XXXXXX)
export PY WORK PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DCJAX_CACHE=$WORK/cache
if [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
  MODE=cpu-dry-run SIZE=ci
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
else
  # tests/conftest.py pins JAX to the CPU unless JAX_PLATFORMS is set; the CPU stays available
  # for the GPU-vs-CPU comparison test.
  MODE=gpu SIZE=gpu
  export JAX_PLATFORMS=cuda,cpu DCJAX_REQUIRE_GPU=1
fi
export MODE
failed=0

note() { echo "$*" | tee -a "$SUMMARY"; }
note "gpu_check: $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s, steps: $STEPS"

# step NAME LIMIT_S MIN_S CMD...: CMD under `timeout` with at most LIMIT_S (and what is left of
# the budget), output to the terminal and $OUT/NAME.log; skipped when under MIN_S are left.
step() {
  local name=$1 limit=$2 min=$3 rc t0 status
  shift 3
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt "$min" ]; then
    note "$name: SKIPPED (${left}s of the budget left, needs ${min}s)"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*"
  t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="FAILED (timed out after ${limit}s)" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || failed=$((failed + 1))
  note "$name: $status, $((SECONDS - t0))s"
  return "$rc"
}

wanted() { [[ " $STEPS " == *" $1 "* ]]; }

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" = 1 ]; then
  note "install: skipped (GPU_CHECK_SKIP_INSTALL=1)"
elif step install 120 10 "$PY" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

env_report() {
  echo "mode $MODE; JAX_PLATFORMS=$JAX_PLATFORMS; PYTHONPATH=${PYTHONPATH:-}; cpus $(nproc)"
  git log -1 --format='commit %H %s' 2>/dev/null && git status --short 2>/dev/null | head -20
  nvidia-smi || echo "nvidia-smi: not available"
  # From /tmp, so that dcjax comes from the installed wheel, not the checkout.
  cd /tmp && "$PY" - <<'EOF'
import importlib.metadata as md, os, platform, sys
print("python", sys.version.split()[0], platform.machine(), sys.executable)
for dist in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "flax",
             "optax", "orbax-checkpoint", "numpy", "grain", "array-record", "ml-collections",
             "absl-py", "etils", "protobuf", "pillow", "torch", "torchvision", "pytest", "dcjax"):
  try:
    print(f"  {dist:<18} {md.version(dist)}")
  except md.PackageNotFoundError:
    print(f"  {dist:<18} -")
import grain, ml_collections, dcjax, dcjax.sources, jax
print("dcjax from", os.path.dirname(dcjax.__file__))
print("jax backend", jax.default_backend(), jax.devices())
if os.environ["MODE"] == "gpu" and jax.default_backend() != "gpu":
  sys.exit("no GPU visible to JAX")
EOF
}
export -f env_report
step env 90 20 bash -c env_report

if wanted tests; then
  step tests 180 60 "$PY" -m pytest -q -m gpu -rA -p no:cacheprovider tests/test_gpu.py
fi
if wanted bench; then
  step bench 330 120 "$PY" experiments/bench_throughput.py --size "$SIZE" \
    --out "$OUT/bench_$SIZE.json"
fi
if wanted vmapseeds; then
  if [ "$MODE" = gpu ]; then vm_args=(--seeds 3,5 --ipcs 1,10,50 --steps 20)
  else vm_args=(--seeds 2 --ipcs 1 --steps 2); fi
  step vmapseeds 150 40 "$PY" experiments/bench_vmap_seeds.py "${vm_args[@]}" \
    --out "$OUT/vmap_seeds_$SIZE.json"
fi

if [ "$MODE" = gpu ]; then
  # The benchmark's default model and recipe size (ConvNet-3, 32 px RGB here), soft labels: a
  # teacher trained on 5,000 images, then 2 students on 50 per class, each tested on 1,000.
  PIPELINE=(--config.data.synthetic.num_examples=5000 --config.data.synthetic.num_test_examples=1000
            --config.ipc=50 --config.seeds=2 --config.eval.epochs=50)
else
  PIPELINE=(--config.data.synthetic.num_examples=200 --config.data.synthetic.num_test_examples=50
            --config.data.synthetic.image_size=16 --config.ipc=2 --config.seeds=1
            --config.eval.epochs=2 --config.eval.model_kwargs.width=8 --config.teacher.epochs=1)
fi
if wanted pipeline && step pipeline 150 90 "$PY" main.py --config=configs/benchmark.py \
    --workdir="$WORK/pipeline" --config.dataset=synthetic --config.eval.protocol=soft \
    --config.progress=False "${PIPELINE[@]}"; then
  cp "$WORK/pipeline/results.json" "$OUT/pipeline_results.json"
fi

if wanted grid; then
  if [ "$MODE" = gpu ]; then GRID=(${GRID_ARGS:---dataset fmnist})
  else GRID=(${GRID_ARGS:---methods random --ipcs 1 --protocols hard --seeds 1 --epochs 1:2})
  fi
  mkdir -p "$WORK/grid"
  [ -d .gpu_data/grid ] && cp -r .gpu_data/grid/. "$WORK/grid/"
  # The grid's own caches, as on the CPU side (RUNS/.dcjax_cache), started from the carried
  # entries: a teacher retrained here would be another teacher, and other selections.
  export DCJAX_CACHE="$WORK/grid/.dcjax_cache"
  "$PY" - .gpu_data/grid_caches "$DCJAX_CACHE" >>"$SUMMARY" 2>&1 <<'EOF'
import sys
sys.path.insert(0, "experiments")
import grid_archive
print(f"grid: {len(grid_archive.restore_caches(*sys.argv[1:]))} cache entries carried")
EOF
  DATA=()  # the carried copies of the datasets, where gpu_grid_data.sh put them
  [ -d .gpu_data/fashion-mnist ] && DATA+=(--config.data.dir="$PWD/.gpu_data/fashion-mnist")
  if [[ " ${GRID[*]} " == *" cifar10 "* ]] && [ -d .gpu_data/cifar10-jpeg ]; then
    DATA=(--config.dataset="parquet:$PWD/.gpu_data/cifar10-jpeg")
  fi
  left=$((BUDGET - SECONDS - 20))
  step grid "$left" 60 "$PY" experiments/fmnist_grid.py run --root "$WORK/grid" "${GRID[@]}" \
    --stop-after $((left * 2 / 3)) --workers "${GRID_WORKERS:-1}" -- "${DATA[@]}"
  # The cells finished here (results.json, config, runs/, the compressed set, logs; no
  # checkpoints), relative to the grid root, for `cp -rn FILES/grid/. ROOT/` on the CPU side.
  "$PY" - "$WORK/grid" "$OUT/grid" .gpu_data/grid >>"$SUMMARY" 2>&1 <<'EOF'
import os, shutil, sys
root, out, carried = sys.argv[1:]
new = []
for dirpath, dirs, files in os.walk(root):
  dirs[:] = [d for d in dirs if d != "checkpoints" and not d.startswith(".")]
  rel = os.path.relpath(dirpath, root)
  if "results.json" in files and not os.path.exists(os.path.join(carried, rel, "results.json")):
    shutil.copytree(dirpath, os.path.join(out, rel), ignore=shutil.ignore_patterns(
        "checkpoints", ".lock"), dirs_exist_ok=True)
    if os.path.exists(dirpath + ".log"):
      shutil.copy(dirpath + ".log", os.path.join(out, rel) + ".log")
    new.append(rel)
    dirs[:] = []
print(f"grid: {len(new)} cell(s) finished here" + "".join(f"\n  {c}" for c in sorted(new)))
EOF
  "$PY" - "$DCJAX_CACHE" "$OUT/grid_caches" .gpu_data/grid_caches >>"$SUMMARY" 2>&1 <<'EOF'
import sys
sys.path.insert(0, "experiments")
import grid_archive
cache, out, carried = sys.argv[1:]
made = grid_archive.archive_caches(cache, out, already=carried)
print(f"grid: {len(made)} cache entries made here" + "".join(f"\n  {c}" for c in made))
EOF
fi

# The figures, appended to the summary (whatever the steps above left).
"$PY" - "$OUT" "$SIZE" >>"$SUMMARY" 2>&1 <<'EOF'
import json, os, sys
out, size = sys.argv[1:]
tests = os.path.join(out, "tests.log")
if os.path.exists(tests):
  lines = [l for l in open(tests).read().splitlines() if l.strip()]
  print("pytest:", lines[-1] if lines else "(no output)")
bench = os.path.join(out, f"bench_{size}.json")
if os.path.exists(bench):
  report = json.load(open(bench))
  print(f"bench {size} on {report['device']['label']}:")
  for r in report["rows"]:
    if r["status"] != "ok":
      print(f"  {r['name']:<14} batch {r['batch']:>4}: {r['status']}")
      continue
    mfu = f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
    mem = f", peak {r['peak_mem_bytes'] / 2**30:.1f} GiB" if r["peak_mem_bytes"] else ""
    print(f"  {r['name']:<14} batch {r['batch']:>4}: {r['img_per_s']:.0f} img/s{mfu}{mem}")
  for q in report["ratios"]:
    print(f"  dcjax/torch {q['kind']} batch {q['batch']}: {q['dcjax_over_torch']:.2f}x")
results = os.path.join(out, "pipeline_results.json")
if os.path.exists(results):
  r = json.load(open(results))
  runs = ", ".join(f"seed {x['seed']}: {x['top1']:.2f}% in {x['train_seconds']:.1f} s "
                   f"({x['images_per_second']:.0f} img/s)" for x in r["runs"])
  print(f"pipeline: {r['method']} ipc={r['ipc']} {r['protocol']} {r['model']}: "
        f"top-1 {r['top1_mean']:.2f} +- {r['top1_std']:.2f} % ({runs})")
EOF
note "gpu_check: $failed failed step(s), ${SECONDS}s in all"
rm -rf "$WORK"
exit "$failed"
