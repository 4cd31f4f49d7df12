"""The small-data training step with each of ConvNet-3's CPU layer paths, side by side.

  python experiments/bench_conv_impl.py [--batches 256,100,10] [--steps 6] [--rounds 2]
      [--impls custom,winograd] [--width 128] [--out F.json]

Times what a grid cell's student runs per step (`dcjax.training.train_step` of the
`small_data` protocol: DSA in normalised space, ConvNet-3 at 28 px, SGD) with `models.ConvNet`
built with each `impl` (dcjax.layers: `custom` = the direct convolutions with hand-written
gradients, dcjax's CPU path until 2026-12-06; `winograd` = the same with the wide 3x3
convolutions by Winograd's F(2x2, 3x3); `xla` = XLA's own kernels), and the eval forward of a
test batch of 500. Each round runs every path's timed steps one after another in this
process, so the ratios are side by side. Figures: median ms per step, the speed-up over the
first path, and the largest parameter difference to it after the timed steps (same data, keys
and initial parameters: how far float rounding moves training). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcjax import augment, models, protocols, training  # noqa: E402
from dcjax.benchmark import runner  # noqa: E402


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batches", default="256,100,10")
  p.add_argument("--steps", type=int, default=6)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--impls", default="custom,winograd")
  p.add_argument("--width", type=int, default=128, help="ConvNet width (128: ConvNet-3)")
  p.add_argument("--eval-batch", type=int, default=500)
  p.add_argument("--out")
  args = p.parse_args(argv)
  impls = args.impls.split(",")
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}", flush=True)
  recipe = protocols.resolve("small_data")
  tx = training.make_optimizer(recipe, 1)
  rng = np.random.default_rng(0)
  nets = {impl: models.get_model("convnet", num_classes=10, image_size=28, impl=impl,
                                 width=args.width) for impl in impls}
  init = nets[impls[0]].init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  rows = []
  for batch in [*map(int, args.batches.split(",")), "eval"]:
    n = args.eval_batch if batch == "eval" else batch
    images = jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), np.uint8))
    runs = {}
    for impl, net in nets.items():
      if batch == "eval":
        x = (images.astype(jnp.float32) / 255 - 0.2860) / 0.3530
        fn = jax.jit(lambda s, k, net=net, x=x: (s, net.apply({"params": s}, x)))
        state = init
      else:
        targets = jax.nn.one_hot(jnp.arange(n) % 10, 10)
        weight = jnp.ones((n,), jnp.float32)
        step = training.Step(net, tx, augment.get_augmentation(recipe.augment), (0.2860,),
                             (0.3530,), augment_normalised=True)
        state = training.TrainState(jnp.zeros((), jnp.int32), init, {}, tx.init(init))
        fn = jax.jit(lambda s, k, step=step, x=images, t=targets, w=weight:
                     training.train_step(step, s, x, t, w, k)[:2])
      jax.block_until_ready(fn(state, jax.random.key(99)))  # compile
      runs[impl] = dict(fn=fn, start=state, ms=[])
    for _ in range(args.rounds):
      for run in runs.values():
        state = run["start"]
        for t in range(args.steps):
          t0 = time.perf_counter()
          state, out = run["fn"](state, jax.random.key(t))
          jax.block_until_ready(out)
          run["ms"].append((time.perf_counter() - t0) * 1e3)
        run["end"] = state if batch != "eval" else out
    first = runs[impls[0]]
    for impl, run in runs.items():
      a, b = (first["end"], run["end"]) if batch == "eval" else (first["end"].params,
                                                                   run["end"].params)
      diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in
                 zip(jax.tree.leaves(a), jax.tree.leaves(b)))
      row = dict(batch=batch, impl=impl, ms=float(np.median(run["ms"])), max_diff=diff)
      row["speedup"] = float(np.median(first["ms"])) / row["ms"]
      rows.append(row)
      what = (f"logits vs {impls[0]}" if batch == "eval" else
              f"params vs {impls[0]} after {args.steps} steps")
      print(f"{'eval ' + str(n) if batch == 'eval' else 'batch ' + str(n):>9} {impl:9s} "
            f"{row['ms']:8.1f} ms  {row['speedup']:.2f}x  {what}: "
            f"{'bitwise' if diff == 0 else f'max diff {diff:.1e}'}", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(jax=jax.__version__, device=jax.devices()[0].device_kind,
                     cpu_model=runner.cpu_model(), cpu_simd=runner.cpu_simd(),
                     cpu_fingerprint=runner.cpu_fingerprint(), rows=rows), f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
