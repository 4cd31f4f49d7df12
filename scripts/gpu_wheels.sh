#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh: fills .whl/ (ignored by git) with what the lent GPU machine
# (Python 3.12, x86-64, no network) lacks to run dcjax: a wheel of this checkout and the
# packages missing from that machine's image. Run it here, before the device call that carries
# `.whl`; see README "GPU checks".
#
# The machine's image already holds jax 0.11, flax, optax, orbax-checkpoint, absl-py, numpy,
# pillow, tqdm, matplotlib, cloudpickle, etils, protobuf, psutil, pyyaml and torch (KINDS.md of
# the device tool). Missing, from the wheels' Requires-Dist:
#   dcjax          -> grain, ml-collections (the rest is there)
#   grain          -> array-record, portpicker (absl-py, cloudpickle, etils, numpy, protobuf there)
#   array-record   -> (absl-py, etils there)
#   portpicker     -> (psutil there)
#   ml-collections -> (absl-py, pyyaml there)
# The versions are the ones the project's .venv is tested with. The script checks that every
# Requires-Dist of every wheel it saved is either saved too or in PRESENT below.
#
# Usage: bash scripts/gpu_wheels.sh        (PYTHON=... picks the python whose pip is used)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
WHEELS=(grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 ml-collections==1.1.0)
# Distributions on the GPU machine's image (KINDS.md), as normalised names; only those that
# the wheels above may ask for need to be listed.
PRESENT="absl-py cloudpickle etils numpy protobuf psutil pyyaml jax jaxlib flax optax
orbax-checkpoint pillow tqdm matplotlib fsspec typing-extensions zipp"

git check-ignore -q "$DEST/" || { echo "gpu_wheels: $DEST/ is not ignored by git" >&2; exit 1; }
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two of one package stop the install there

echo "gpu_wheels: building the dcjax wheel of this checkout"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# From a copy (untracked modules included), so no build/ or *.egg-info is left in the checkout.
cp -r pyproject.toml README.md dcjax "$build"/
find "$build" -name __pycache__ -prune -exec rm -rf {} +
"$PY" -m pip wheel -q --no-deps -w "$DEST" "$build"

echo "gpu_wheels: downloading ${WHEELS[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"

# Every requirement (extras left out) must be carried or present on the machine.
"$PY" - "$DEST" "$PRESENT" <<'EOF'
import re, sys, zipfile, pathlib
dest, present = pathlib.Path(sys.argv[1]), set(sys.argv[2].split())
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
wheels = sorted(dest.glob("*.whl"))
carried = {norm(w.name.split("-")[0]) for w in wheels}
if len(carried) != len(wheels):
  sys.exit("gpu_wheels: two versions of one package in " + str(dest))
missing = []
for w in wheels:
  with zipfile.ZipFile(w) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
      if line.startswith("Requires-Dist:") and "extra ==" not in line:
        name = norm(re.match(r"Requires-Dist:\s*([A-Za-z0-9_.-]+)", line).group(1))
        if name not in carried and name not in present:
          missing.append(f"{w.name} needs {name}")
if missing:
  sys.exit("gpu_wheels: not carried and not on the GPU machine:\n  " + "\n  ".join(missing))
EOF

ls -l "$DEST"/*.whl | awk '{printf "  %9d  %s\n", $5, $9}'
bytes=$(cat "$DEST"/*.whl | wc -c)
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $((bytes / 1024)) KiB in $DEST/" \
     "(the carried tree's limit is 64 MiB)"
if [ "$bytes" -gt $((32 * 1024 * 1024)) ]; then
  echo "gpu_wheels: over 32 MiB, too close to the 64 MiB carry limit" >&2; exit 1
fi
