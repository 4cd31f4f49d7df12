"""Scoring (dcjax.runners.dynamics.score_dynamics): throughput, host memory, ranking stability.

  python experiments/bench_scoring.py throughput --size {ci,cpu} [--width W] [--out F.json]
  python experiments/bench_scoring.py memory     --size {ci,cpu} [--sizes N1,N2,..] [--out F]
  python experiments/bench_scoring.py stability  --size {ci,cpu} [--strong-width W]
      [--strong-epochs E] [--strong-models K] [--cache-dir D] [--compute-cheap]
      [--wait-cheap S] [--out F]

throughput  img/s of the scoring runner on synthetic 28x28x1 data with the default scoring
            setting (configs/benchmark.py `scores`: k models vmapped, ConvNet-3, AdamW, flips,
            its batch size). `score_dynamics` itself runs, with EL2N at epoch 0 so that no eval
            pass falls inside the timed epochs; epoch 0 (compiles) is the warm-up and the later
            epochs are timed from its `on_epoch` callbacks (one sync per epoch, as the runner
            does). Each training step also updates the forgetting / AUM accumulators. The EL2N
            eval pass (`dynamics._el2n_all`, eval batch 1024) is timed on its own after one
            untimed pass.
memory      peak host RSS (VmHWM) of one fresh process per (N, variant) that holds a cache of N
            synthetic uint8 images (64 px RGB in `cpu`) and runs `score_dynamics` on it:
            2 models (ConvNet-3 width 8 in `cpu`), 1 epoch, EL2N after it over all N images,
            with the epoch cut to 20 training steps by wrapping `dynamics._programs` (so the
            runner's own code runs and every N-sized buffer is allocated; only the step loop is
            shorter). Variants: `numpy` (the cache where np.empty puts it, as
            sources.load_images allocates it: 16 bytes past a 64-byte boundary here) and
            `aligned64` (the same bytes at a 64-byte aligned address, which XLA:CPU's
            device_put aliases instead of copying). Figures: peak RSS - cache bytes per N, a
            least-squares line over N, and its extrapolation to 1.28M examples (labelled so).
            The intercept holds the JAX runtime and compiled programs of this tiny model.
stability   Spearman correlations of the EL2N / AUM / forgetting rankings between the cheap
            default scoring setting and a stronger one on the whole training split (overall and
            within classes), and the overlap of the `ipc` easiest examples per class that
            `select.class_balanced` picks from each (same selection key in both, as a run
            with one seed; plus the overlap under another key for the stronger setting, which
            exposes agreement that only comes from tie-breaking). `cpu`'s stronger setting is
            2 x width 32 x 5 epochs (about 26 minutes here). Score files come from
            `runners.scoring.dataset_scores` (the cached file when present; the cheap one is never
            recomputed in `cpu` unless --compute-cheap).

Sizes: `ci` (tiny synthetic data and models: seconds, for the test) and `cpu` (the real
figures: Fashion-MNIST for stability). No figure here is an assertion; the test only checks that
each one is produced.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from typing import Any

# Runs from a plain checkout too (without `pip install -e .`): the repo root holds `dcjax`.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import benchmark as benchmark_config  # noqa: E402
from dcjax import benchmark, models, protocols, select, train, training  # noqa: E402
from dcjax.benchmark import config_args, methods  # noqa: E402
from dcjax.data import sources  # noqa: E402
from dcjax.runners import dynamics, scoring  # noqa: E402
from dcjax.data.files import write_json_atomic  # noqa: E402

IMAGENET_TRAIN = 1_281_167  # the "1.28M"
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Size:
  # throughput
  tp_examples: int  # synthetic 28x28x1 set; a multiple of the batch, so no padded rows
  tp_epochs: int  # epoch 0 is the warm-up, the rest are timed
  tp_batch: int | None  # None: the scores config's batch size
  tp_width: int | None  # None: the scores config's width
  # memory
  mem_sizes: tuple[int, ...]
  mem_image: int
  mem_width: int
  mem_steps: int
  # stability
  dataset: str
  cheap: dict  # overrides of config.scores for the cheap setting ({}: the defaults)
  strong: dict  # overrides for the stronger setting
  ipcs: tuple[int, ...]


SIZES = {
    "ci": Size(tp_examples=128, tp_epochs=2, tp_batch=64, tp_width=4,
               mem_sizes=(512, 1024), mem_image=16, mem_width=4, mem_steps=2,
               dataset="synthetic", cheap=dict(epochs=1, width=4, batch_size=64),
               strong=dict(epochs=2, width=4, batch_size=64), ipcs=(5, 10)),
    "cpu": Size(tp_examples=4096, tp_epochs=4, tp_batch=None, tp_width=None,
                mem_sizes=(32768, 65536, 131072), mem_image=64, mem_width=8, mem_steps=20,
                dataset="fashion_mnist", cheap={}, strong=dict(epochs=5, width=32, num_models=2),
                ipcs=(100, 500)),
}
CI_SYNTHETIC = dict(num_examples=400, num_test_examples=16, image_size=16, channels=1,
                    num_classes=10, seed=0)


# --------------------------------------------------------------------------------------------
# Shared pieces.


def versions() -> dict[str, str]:
  import flax
  import jaxlib
  import optax
  return dict(python=platform.python_version(), jax=jax.__version__, jaxlib=jaxlib.__version__,
              flax=flax.__version__, optax=optax.__version__, numpy=np.__version__)


def device_info() -> dict[str, Any]:
  d = jax.devices()[0]
  return dict(kind=d.device_kind, platform=d.platform, count=jax.device_count(),
              host_cpus=os.cpu_count(), machine=platform.machine(),
              loadavg_start=list(os.getloadavg()))


def scores_cfg(overrides: dict):
  """configs/benchmark.py's `scores` block with `overrides` (width, batch_size, epochs, ...)."""
  c = benchmark_config.get_config()
  for key, value in overrides.items():
    if key == "width":
      c.scores.model_kwargs.width = value
    else:
      c.scores[key] = value
  return c


def describe_setting(scfg) -> str:
  return (f"{scfg.num_models} x {scfg.model} width {scfg.model_kwargs.width}, "
          f"{scfg.optimizer} {scfg.lr:g}, batch {scfg.batch_size}, {scfg.epochs} epochs")


# --------------------------------------------------------------------------------------------
# throughput


def throughput(size: Size, width: int | None = None, num_models: int | None = None) -> dict:
  overrides = {}
  if size.tp_batch:
    overrides["batch_size"] = size.tp_batch
  if width or size.tp_width:
    overrides["width"] = width or size.tp_width
  if num_models:
    overrides["num_models"] = num_models
  c = scores_cfg(overrides)
  scfg = c.scores
  mean, std = benchmark.NORMALISATION["fashion_mnist"]
  sc = config_args.score_key(c, (28, 28, 1), mean, std)
  recipe, k = protocols.Recipe(**sc["recipe"]), sc["k"]
  src = sources.open_source("synthetic", "train", synthetic=dict(
      num_examples=size.tp_examples, image_size=28, channels=1, num_classes=10, seed=0))
  images, labels = sources.load_images(src, progress=False)
  model = models.get_model(scfg.model, 10, 28, **sc["model_kwargs"])
  mesh = train.make_mesh()
  n, epochs = len(labels), size.tp_epochs
  batch, steps = training.batch_plan(n, recipe.batch_size, mesh.shape["data"])

  stamps: list[float] = []
  t_call = time.perf_counter()
  out, variables = dynamics.score_dynamics(
      images, labels, num_classes=10, model=model, recipe=recipe, mean=mean, std=std,
      epochs=epochs, seed=0, num_models=k, mesh=mesh, el2n_epoch=0, progress=False,
      on_epoch=lambda e, logs: stamps.append(time.perf_counter()), return_params=True)
  first_epoch_s = stamps[0] - t_call  # includes compiling, init and the EL2N pass at epoch 0
  timed_epochs = epochs - 1
  train_s = stamps[-1] - stamps[0]
  train_imgs = timed_epochs * n

  # The EL2N eval pass over all n images, with the runner's own (memoised) programs.
  run_recipe = recipe.replace(epochs=int(epochs), labels="hard", mixing="none")
  programs = dynamics._programs(model, run_recipe, tuple(mean),
                                tuple(std), n, tuple(images.shape[1:]), 10, mesh)
  variables = jax.device_put(variables)
  dynamics._el2n_all(programs, variables, images, labels, mesh, 1024)  # warm-up
  t0 = time.perf_counter()
  dynamics._el2n_all(programs, variables, images, labels, mesh, 1024)
  el2n_s = time.perf_counter() - t0

  train_ips = train_imgs / train_s
  el2n_ips = n / el2n_s
  # Projected time of the whole setting on Fashion-MNIST's 60k (compiles not included).
  fm = 60_000
  projected = scfg.epochs * fm / train_ips + fm / el2n_ips
  return dict(
      setting=describe_setting(scfg), model_kwargs=sc["model_kwargs"], num_models=k,
      image_shape=[28, 28, 1], examples=n, batch=batch, steps_per_epoch=steps,
      warmup=f"epoch 0 ({steps} steps, compile + EL2N at epoch 0): {first_epoch_s:.1f} s",
      timed_steps=timed_epochs * steps, train_seconds=train_s,
      train_img_per_s=train_ips, train_img_models_per_s=train_ips * k,
      el2n_seconds=el2n_s, el2n_img_per_s=el2n_ips, el2n_img_models_per_s=el2n_ips * k,
      projected_fashion_mnist_seconds=projected,
      projected_note=f"{scfg.epochs} epochs x 60,000 at the training rate + one 60,000-image "
                     "EL2N pass; compiles excluded",
      finite=bool(all(np.isfinite(v).all() for v in out.values())))


# --------------------------------------------------------------------------------------------
# memory


def _proc_status_kib(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _peak_rss_bytes() -> int:
  hwm = _proc_status_kib("VmHWM")
  if hwm is not None:
    return hwm * 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _rss_bytes() -> int | None:
  v = _proc_status_kib("VmRSS")
  return None if v is None else v * 1024


def _cache(n: int, side: int, aligned: bool) -> np.ndarray:
  """n random uint8 images [n, side, side, 3], every page written; `aligned`: the first byte
  at a 64-byte boundary (else wherever np.empty puts it, as sources.load_images allocates)."""
  shape = (n, side, side, 3)
  if aligned:
    nbytes = int(np.prod(shape))
    buf = np.empty(nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    images = buf[off:off + nbytes].reshape(shape)
  else:
    images = np.empty(shape, np.uint8)
  rng = np.random.default_rng(0)
  for start in range(0, n, 4096):
    images[start:start + 4096] = rng.integers(0, 256, images[start:start + 4096].shape,
                                              dtype=np.uint8)
  return images


def memory_one(n: int, side: int, width: int, steps: int, aligned: bool) -> dict:
  """One measurement (run in a fresh process): see the module docstring."""
  c = scores_cfg(dict(width=width, epochs=1))
  scfg = c.scores
  mean, std = benchmark.IMAGENET_MEAN, benchmark.IMAGENET_STD
  sc = config_args.score_key(c, (side, side, 3), mean, std)
  model = models.get_model(scfg.model, 10, side, **sc["model_kwargs"])
  mesh = train.make_mesh()
  rss_imports = _rss_bytes()
  images = _cache(n, side, aligned)
  labels = (np.arange(n) % 10).astype(np.int32)
  cache_bytes = images.nbytes
  rss_before, peak_before = _rss_bytes(), _peak_rss_bytes()

  real_programs = dynamics._programs

  def bounded(*args, **kwargs):
    programs = real_programs(*args, **kwargs)
    bounded.full_steps = programs.steps
    return dataclasses.replace(programs, steps=min(steps, programs.steps))

  dynamics._programs = bounded
  t0 = time.perf_counter()
  try:
    out = dynamics.score_dynamics(images, labels, num_classes=10, model=model,
                                  recipe=protocols.Recipe(**sc["recipe"]), mean=mean, std=std, epochs=1, seed=0,
                                  num_models=sc["k"], mesh=mesh, progress=False)
  finally:
    dynamics._programs = real_programs
  seconds = time.perf_counter() - t0
  peak = _peak_rss_bytes()
  # Does device_put (what the runner does to the whole set) alias this buffer or copy it?
  # A view of the first rows has the cache's start address and alignment, and costs nothing.
  probe = images[:256]
  probe_d = jax.device_put(probe, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  aliases = probe_d.addressable_data(0).unsafe_buffer_pointer() == probe.ctypes.data
  return dict(n=n, image_side=side, aligned=aligned, address_mod_64=images.ctypes.data % 64,
              cache_bytes=cache_bytes, rss_after_imports=rss_imports, rss_before=rss_before,
              peak_before=peak_before, peak=peak, peak_minus_cache=peak - cache_bytes,
              peak_minus_before=peak - rss_before, device_put_aliases_cache=bool(aliases),
              num_models=sc["k"], width=width, train_steps=min(steps, bounded.full_steps),
              full_epoch_steps=bounded.full_steps,
              seconds=seconds, el2n_finite=bool(np.isfinite(out["el2n"]).all()))


def _fit(rows: list[dict], key: str) -> dict:
  x = np.array([r["n"] for r in rows], np.float64)
  y = np.array([r[key] for r in rows], np.float64)
  slope, intercept = np.polyfit(x, y, 1) if len(x) > 1 else (float("nan"), float(y[0]))
  return dict(bytes_per_example=float(slope), intercept_bytes=float(intercept))


def memory(size: Size, sizes: tuple[int, ...], variants: tuple[str, ...]) -> dict:
  per_image = size.mem_image * size.mem_image * 3
  runs: dict[str, list[dict]] = {}
  for variant in variants:
    runs[variant] = []
    for n in sizes:
      cmd = [sys.executable, os.path.abspath(__file__), "memory-one", "--n", str(n),
             "--image-size", str(size.mem_image), "--width", str(size.mem_width),
             "--steps", str(size.mem_steps)] + (["--aligned"] if variant == "aligned64" else [])
      done = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
      row = json.loads(done.stdout.strip().splitlines()[-1])
      runs[variant].append(row)
      print(f"  {variant:<9} N={n:>8}: cache {row['cache_bytes'] / MIB:8.1f} MiB, peak RSS "
            f"{row['peak'] / MIB:8.1f} MiB, peak - cache {row['peak_minus_cache'] / MIB:8.1f} MiB,"
            f" device_put aliases: {row['device_put_aliases_cache']} ({row['seconds']:.0f} s)",
            file=sys.stderr, flush=True)
  fits = {}
  for variant, rows in runs.items():
    fit = _fit(rows, "peak_minus_cache")
    beyond = fit["intercept_bytes"] + fit["bytes_per_example"] * IMAGENET_TRAIN
    fits[variant] = dict(
        fit, cache_bytes_per_example=per_image,
        extrapolated_1_28m=dict(n=IMAGENET_TRAIN, cache_bytes=per_image * IMAGENET_TRAIN,
                                beyond_cache_bytes=beyond,
                                peak_bytes=per_image * IMAGENET_TRAIN + beyond,
                                note="EXTRAPOLATED from the fitted line, not measured"))
  return dict(image_shape=[size.mem_image, size.mem_image, 3], width=size.mem_width,
              steps=size.mem_steps, runs=runs, fits=fits)


# --------------------------------------------------------------------------------------------
# stability


def _ranks(a: np.ndarray) -> np.ndarray:
  from scipy.stats import rankdata
  return rankdata(a)  # average ranks for ties (forgetting counts have many)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  ra, rb = _ranks(a), _ranks(b)
  if ra.std() == 0 or rb.std() == 0:
    return float("nan")
  return float(np.corrcoef(ra, rb)[0, 1])


def _tied_fraction(a: np.ndarray) -> float:
  """Fraction of examples whose score equals another example's."""
  _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
  return float(np.mean(counts[inverse] > 1))


def compare(cheap: dict[str, np.ndarray], strong: dict[str, np.ndarray], labels: np.ndarray,
            num_classes: int, ipcs: tuple[int, ...]) -> dict:
  """Rank agreement of two score dicts ({name: float [N]}, as in score files)."""
  out: dict[str, Any] = {}
  for name in ("el2n", "aum", "forgetting"):
    if name not in cheap or name not in strong:
      continue
    d_cheap = methods.difficulty(cheap, name)
    d_strong = methods.difficulty(strong, name)
    per_class = [spearman(d_cheap[labels == c], d_strong[labels == c])
                 for c in range(num_classes)]
    defined = np.array([r for r in per_class if np.isfinite(r)])  # NaN: a constant class
    stat = lambda f: float(f(defined)) if len(defined) else float("nan")
    row = dict(spearman=spearman(d_cheap, d_strong),
               spearman_within_class=dict(mean=stat(np.mean), min=stat(np.min),
                                          max=stat(np.max), per_class=per_class))
    # Tied scores (forgetting counts: most examples have 0) are ordered by the selection key's
    # noise; the same key in both settings makes tied examples agree by construction.
    row["tied_fraction"] = dict(cheap=_tied_fraction(d_cheap), strong=_tied_fraction(d_strong))
    overlaps = {}
    class_size = np.bincount(labels, minlength=num_classes)
    for ipc in ipcs:
      select.check_ipc(labels, num_classes, ipc)
      for rule in ("easy", "hard"):
        def pick(d, seed):
          return np.asarray(select.class_balanced(
              jnp.asarray(d), jnp.asarray(labels), jax.random.key(seed), num_classes=num_classes,
              ipc=ipc, rule=rule)).reshape(num_classes, ipc)

        def shared(a, b):
          return [len(np.intersect1d(a[c], b[c])) / ipc for c in range(num_classes)]

        same = shared(pick(d_cheap, 0), pick(d_strong, 0))
        other = shared(pick(d_cheap, 0), pick(d_strong, 1))
        overlaps[f"{rule}_{ipc}"] = dict(mean=float(np.mean(same)), min=float(np.min(same)),
                                         max=float(np.max(same)),
                                         mean_other_tie_break=float(np.mean(other)),
                                         chance=float(np.mean(ipc / class_size)))
    row["overlap_per_class"] = overlaps
    out[name] = row
  # How the two scores agree with each other within each setting (context for the above).
  if "el2n" in cheap and "aum" in cheap:
    out["el2n_vs_neg_aum"] = dict(
        cheap=spearman(cheap["el2n"], -cheap["aum"]),
        strong=spearman(strong["el2n"], -strong["aum"]) if "aum" in strong else None)
  return out


def stability(size: Size, strong: dict, cache_dir: str, compute_cheap: bool,
              wait_cheap_s: float) -> dict:
  c_cheap, c_strong = scores_cfg(size.cheap), scores_cfg(strong)
  for c in (c_cheap, c_strong):
    c.dataset = size.dataset
    c.scores.cache_dir = cache_dir
    c.progress = False
    if size.dataset == "synthetic":
      c.data.synthetic.update(CI_SYNTHETIC)
  c_strong.scores.allow_compute = True
  c_cheap.scores.allow_compute = compute_cheap
  train_src = sources.open_source(size.dataset, "train", synthetic=CI_SYNTHETIC)
  images, labels = sources.load_images(train_src, progress=False)
  mean, std = benchmark.normalisation(c_cheap, images.shape[-1])
  mesh = train.make_mesh()

  def get(c, wait_s: float):
    sc = config_args.score_key(c, images.shape[1:], mean, std)
    from dcjax.data import scorefile
    path = scorefile.score_path(cache_dir, c.dataset, "train", sc)
    deadline = time.time() + wait_s
    while not os.path.exists(path) and not c.scores.allow_compute and time.time() < deadline:
      time.sleep(30)
    existed = os.path.exists(path)
    t0 = time.perf_counter()
    scores, path = scoring.dataset_scores(
        train_src, lambda _: images, mean=mean, std=std, mesh=mesh,
        image_shape=images.shape[1:], **config_args.score_args(c))
    return scores, dict(path=path, setting=describe_setting(c.scores), reused=existed,
                        seconds=None if existed else time.perf_counter() - t0)

  # The stronger setting first: the cheap one may still be being written by another run.
  strong_scores, strong_info = get(c_strong, 0)
  cheap, cheap_info = get(c_cheap, wait_cheap_s)
  labels = np.asarray(train_src.labels)
  return dict(dataset=size.dataset, examples=len(labels), cheap=cheap_info, strong=strong_info,
              host_images_address_mod_64=images.ctypes.data % 64,
              comparison=compare(cheap, strong_scores, labels, train_src.num_classes,
                                 size.ipcs))


# --------------------------------------------------------------------------------------------
# Printing and the command line.


def format_report(report: dict) -> str:
  lines = [f"{report['mode']} ({report['size']}) on {report['device']['kind']} "
           f"({report['device']['platform']}, {report['device']['host_cpus']} host CPUs), "
           f"jax {report['versions']['jax']}, flax {report['versions']['flax']}"]
  r = report["result"]
  if report["mode"] == "throughput":
    lines += [
        f"setting: {r['setting']}; {r['examples']} synthetic 28x28x1 images, batch "
        f"{r['batch']}, {r['timed_steps']} timed steps; warm-up {r['warmup']}",
        f"training step (train + forgetting/AUM): {r['train_img_per_s']:.1f} img/s = "
        f"{r['train_img_models_per_s']:.1f} img x models/s",
        f"EL2N eval pass: {r['el2n_img_per_s']:.1f} img/s = {r['el2n_img_models_per_s']:.1f} "
        "img x models/s",
        f"projected on Fashion-MNIST train: {r['projected_fashion_mnist_seconds']:.0f} s "
        f"({r['projected_note']})"]
  elif report["mode"] == "memory":
    for variant, rows in r["runs"].items():
      for row in rows:
        lines.append(f"{variant:<9} N={row['n']:>8} cache {row['cache_bytes'] / MIB:9.1f} MiB "
                     f"peak {row['peak'] / MIB:9.1f} MiB peak-cache "
                     f"{row['peak_minus_cache'] / MIB:8.1f} MiB aliases="
                     f"{row['device_put_aliases_cache']}")
      f = r["fits"][variant]
      e = f["extrapolated_1_28m"]
      lines.append(f"{variant:<9} fit: {f['bytes_per_example']:.0f} B/example beyond the cache "
                   f"({f['cache_bytes_per_example']} B/example cache) + "
                   f"{f['intercept_bytes'] / MIB:.0f} MiB; EXTRAPOLATED to {e['n']:,}: cache "
                   f"{e['cache_bytes'] / 1e9:.1f} GB + {e['beyond_cache_bytes'] / 1e9:.2f} GB = "
                   f"{e['peak_bytes'] / 1e9:.1f} GB peak RSS")
  else:
    lines.append(f"cheap:  {r['cheap']['setting']} ({'reused' if r['cheap']['reused'] else 'computed'}"
                 f") {r['cheap']['path']}")
    s = r["strong"]
    lines.append(f"strong: {s['setting']} ("
                 + ("reused" if s["reused"] else f"computed in {s['seconds']:.0f} s")
                 + f") {s['path']}")
    for name, row in r["comparison"].items():
      if name == "el2n_vs_neg_aum":
        lines.append(f"EL2N vs -AUM within a setting: cheap {row['cheap']:.3f}, strong "
                     f"{row['strong']:.3f}")
        continue
      w = row["spearman_within_class"]
      lines.append(f"{name:<10} Spearman {row['spearman']:.3f}; within classes mean "
                   f"{w['mean']:.3f} (min {w['min']:.3f}, max {w['max']:.3f}); tied "
                   f"{row['tied_fraction']['cheap']:.3f} / {row['tied_fraction']['strong']:.3f}")
      for key, o in row["overlap_per_class"].items():
        lines.append(f"           {key:<9} per-class overlap mean {o['mean']:.3f} (min "
                     f"{o['min']:.3f}, max {o['max']:.3f}; other tie-break "
                     f"{o['mean_other_tie_break']:.3f}; chance {o['chance']:.3f})")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="mode", required=True)
  for mode in ("throughput", "memory", "stability"):
    p = sub.add_parser(mode)
    p.add_argument("--size", choices=sorted(SIZES), default="ci")
    p.add_argument("--out", help="write the report as JSON here")
    if mode == "throughput":
      p.add_argument("--width", type=int, help="ConvNet width (default: the scores config's)")
      p.add_argument("--models", type=int, help="k (default: the scores config's)")
    if mode == "memory":
      p.add_argument("--sizes", help="comma-separated N (default: the size's)")
      p.add_argument("--variants", default="numpy,aligned64",
                     help="numpy (np.empty's address) and/or aligned64")
    if mode == "stability":
      p.add_argument("--strong-width", type=int)
      p.add_argument("--strong-epochs", type=int)
      p.add_argument("--strong-models", type=int)
      p.add_argument("--cache-dir", help="score-file cache (default: $DCJAX_CACHE/scores)")
      p.add_argument("--compute-cheap", action="store_true",
                     help="compute the cheap setting's file when it is missing (ci: always)")
      p.add_argument("--wait-cheap", type=float, default=0,
                     help="seconds to wait for another run to write the cheap file")
  one = sub.add_parser("memory-one", help="internal: one memory measurement, JSON on stdout")
  one.add_argument("--n", type=int, required=True)
  one.add_argument("--image-size", type=int, required=True)
  one.add_argument("--width", type=int, required=True)
  one.add_argument("--steps", type=int, required=True)
  one.add_argument("--aligned", action="store_true")
  args = parser.parse_args(argv)

  if args.mode == "memory-one":
    print(json.dumps(memory_one(args.n, args.image_size, args.width, args.steps, args.aligned)),
          flush=True)
    return 0
  size = SIZES[args.size]
  started = time.time()
  info = device_info()
  if args.mode == "throughput":
    result = throughput(size, args.width, args.models)
  elif args.mode == "memory":
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else size.mem_sizes
    result = memory(size, sizes, tuple(v.strip() for v in args.variants.split(",")))
  else:
    strong = dict(size.strong)
    for key, value in (("width", args.strong_width), ("epochs", args.strong_epochs),
                       ("num_models", args.strong_models)):
      if value is not None:
        strong[key] = value
    from dcjax.data.files import cache_dir
    result = stability(size, strong, args.cache_dir or cache_dir("scores"),
                       args.compute_cheap or args.size == "ci", args.wait_cheap)
  info["loadavg_end"] = list(os.getloadavg())
  command = shlex.join(["bench_scoring.py", *(argv if argv is not None else sys.argv[1:])])
  report = dict(mode=args.mode, size=args.size, command=command,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                wall_seconds=time.time() - started, versions=versions(), device=info,
                result=result)
  print(format_report(report), flush=True)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"-> {args.out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
