"""Issue #15 item 3: do a cell's student seeds train faster vmapped together than one by one?

  python experiments/bench_vmap_seeds.py [--seeds 3,5] [--ipcs 1,10,50] [--steps 8] [--out F.json]

One run, side by side, on Fashion-MNIST-shaped synthetic data (28x28x1, 10 classes, IPC images
per class): the small-data protocol's real training step (`dcjax.training.train_step`: DSA in
normalised space, ConvNet-3 width 128 instance norm, SGD momentum, batch min(256, N)) for S
seeds, either
  sequential  one jitted step per seed per batch (what the runner does today), or
  vmapped     one jitted `jax.vmap` of the same step over the S stacked states, each seed with
              its own batch indices and augmentation key (what a vmapped cell would do).
Figures: seconds per S-seed step after a warm-up step (compiles), the ratio sequential /
vmapped (> 1: vmapping pays), and whether seed 0's loss and parameters after the timed steps
are bitwise equal both ways. Nothing here is asserted.
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


def bench(num_seeds: int, ipc: int, steps: int) -> dict:
  n = 10 * ipc
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), np.uint8))
  labels = jnp.asarray(np.repeat(np.arange(10), ipc).astype(np.int32))
  recipe = protocols.resolve("small_data")
  batch = min(recipe.batch_size, n)
  model = models.get_model("convnet", num_classes=10, image_size=28)
  tx = training.make_optimizer(recipe, max(1, n // batch))
  step = training.Step(model, tx, augment.get_augmentation(recipe.augment), (0.2860,), (0.3530,),
                       augment_normalised=augment.in_normalised_space(recipe.augment))

  def one(state, idx, key):
    targets = jax.nn.one_hot(labels[idx], 10)
    state, loss, _ = training.train_step(step, state, images[idx], targets,
                                         jnp.ones((batch,), jnp.float32), key)
    return state, loss

  states = [training.init_state(model, tx, jax.random.key(s), (28, 28, 1))
            for s in range(num_seeds)]
  plan = [[(jax.random.permutation(jax.random.fold_in(jax.random.key(s), t), n)[:batch],
            jax.random.fold_in(jax.random.key(100 + s), t)) for s in range(num_seeds)]
          for t in range(steps + 1)]
  single = jax.jit(one)
  vmapped = jax.jit(jax.vmap(one))

  def run_sequential():
    out = list(states)
    times = []
    for t, per_seed in enumerate(plan):
      t0 = time.perf_counter()
      losses = []
      for s, (idx, key) in enumerate(per_seed):
        out[s], loss = single(out[s], idx, key)
        losses.append(loss)
      jax.block_until_ready(losses)
      times.append(time.perf_counter() - t0)
    return out[0], losses[0], float(np.sum(times[1:]))

  def run_vmapped():
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    times = []
    for t, per_seed in enumerate(plan):
      idx = jnp.stack([i for i, _ in per_seed])
      keys = jnp.stack([k for _, k in per_seed])
      t0 = time.perf_counter()
      stacked, losses = vmapped(stacked, idx, keys)
      jax.block_until_ready(losses)
      times.append(time.perf_counter() - t0)
    return jax.tree.map(lambda a: a[0], stacked), losses[0], float(np.sum(times[1:]))

  s_state, s_loss, s_sec = run_sequential()
  v_state, v_loss, v_sec = run_vmapped()
  same_params = all(bool(jnp.array_equal(a, b)) for a, b in
                    zip(jax.tree.leaves(s_state.params), jax.tree.leaves(v_state.params)))
  max_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(s_state.params), jax.tree.leaves(v_state.params)))
  return dict(seeds=num_seeds, ipc=ipc, batch=batch, steps=steps,
              sequential_s_per_step=s_sec / steps, vmapped_s_per_step=v_sec / steps,
              speedup=s_sec / v_sec, loss_bitwise=float(s_loss) == float(v_loss),
              params_bitwise=same_params, params_max_abs_diff=max_diff)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", default="3,5")
  p.add_argument("--ipcs", default="1,10,50")
  p.add_argument("--steps", type=int, default=8)
  p.add_argument("--out")
  args = p.parse_args(argv)
  rows = []
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}", flush=True)
  for ipc in map(int, args.ipcs.split(",")):
    for s in map(int, args.seeds.split(",")):
      r = bench(s, ipc, args.steps)
      rows.append(r)
      print(f"IPC {ipc:3d} (batch {r['batch']:3d}) x {s} seeds: sequential "
            f"{r['sequential_s_per_step'] * 1e3:7.1f} ms, vmapped {r['vmapped_s_per_step'] * 1e3:7.1f}"
            f" ms per {s}-seed step: {r['speedup']:.2f}x; seed 0 bitwise: loss "
            f"{r['loss_bitwise']}, params {r['params_bitwise']} (max diff "
            f"{r['params_max_abs_diff']:.1e})", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(jax=jax.__version__, device=jax.devices()[0].device_kind, rows=rows), f,
                indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
