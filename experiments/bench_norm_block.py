"""Issue #15 item 3 (the CPU gap to PyTorch): ConvNet-3's norm -> ReLU -> pool block, three ways.

  python experiments/bench_norm_block.py [--batches 256,100] [--steps 6] [--rounds 2]
      [--width 128] [--variants layers,fused,onepass,onepass_stats] [--out F.json]

On the Intel CPU kind instance norm was ~25 % of the small-data training step (BENCHMARKS.md),
on the AMD kind ~10 %; this times the whole step (`dcjax.training.train_step`: DSA in
normalised space, ConvNet-3 width 128 at 28 px, SGD) with the block after each convolution as

  layers   `dcjax.layers.InstanceNorm`, `nn.relu`, `nn.avg_pool` (what models.ConvNet runs on
           the CPU today; checked bitwise against it),
  fused    the four as one `jax.custom_vjp` whose backward recomputes the normalised
           activations from the convolution's output and its per-(example, channel) statistics
           with the same float operations as autodiff (bitwise equal to `layers`),
  onepass  the same forward; the backward takes every statistic it needs (the sums over H, W of
           the ReLU's gradient and of it times the normalised activations, per example and
           channel; the norm's two means, the scale's and the bias's gradients all follow) from
           ONE variadic reduction, then one elementwise pass for the input gradient (float
           rounding differs: the script reports by how much),
  onepass_stats  `onepass` with the forward statistics from one variadic reduction too (sum
           and sum of squares; var = E[x^2] - mean^2, clamped at 0: loses precision where a
           channel's mean is large against its spread).

Each round runs every variant's timed steps one after another in this process, so the ratios
are side by side; figures: median ms per step, ratio to `layers`, and the largest parameter
difference to `layers` after the timed steps (same data, keys and initial parameters). Nothing
is asserted. If a variant pays on a CPU kind, it moves into dcjax.layers with its measurement.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcjax import augment, layers, models, protocols, training  # noqa: E402

VARIANTS = ("layers", "fused", "onepass", "onepass_stats")


def _pool2(y):
  """`nn.avg_pool(y, (2, 2), strides=(2, 2))` (VALID: an odd last row / column is dropped)."""
  h, w = y.shape[1:3]
  y = y[:, :h // 2 * 2, :w // 2 * 2]
  return jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0


def _stats(x, epsilon):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  inv = jax.lax.rsqrt(jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True) + epsilon)
  return mean, inv


def _recompute(x, mean, inv, scale, bias):
  x_hat = ((x.astype(jnp.float32) - mean) * inv).astype(x.dtype)
  return x_hat, x_hat * scale + bias


def _block_fwd(x, scale, bias, epsilon):
  mean, inv = _stats(x, epsilon)
  _, pre = _recompute(x, mean, inv, scale, bias)
  return _pool2(jnp.maximum(pre, 0)), (x, mean, inv, scale, bias)


def _relu_pool_grad(x, mean, inv, scale, bias, g):
  x_hat, pre = _recompute(x, mean, inv, scale, bias)
  h, w = x.shape[1:3]
  up = jnp.repeat(jnp.repeat(g / 4.0, 2, axis=1), 2, axis=2)
  up = jnp.pad(up, ((0, 0), (0, h - up.shape[1]), (0, w - up.shape[2]), (0, 0)))
  return x_hat, jnp.where(pre > 0, up, jnp.zeros_like(up))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fused_block(x, scale, bias, epsilon):
  return _block_fwd(x, scale, bias, epsilon)[0]


def _fused_bwd(epsilon, res, g):
  x, mean, inv, scale, bias = res
  x_hat, gy = _relu_pool_grad(x, mean, inv, scale, bias, g)
  dscale = jnp.sum(gy * x_hat, axis=(0, 1, 2))
  dbias = jnp.sum(gy, axis=(0, 1, 2))
  g_hat = (gy * scale).astype(jnp.float32)
  x_hat = x_hat.astype(jnp.float32)
  dx = (g_hat - jnp.mean(g_hat, axis=(1, 2), keepdims=True)
        - x_hat * jnp.mean(g_hat * x_hat, axis=(1, 2), keepdims=True)) * inv
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


fused_block.defvjp(_block_fwd, _fused_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def onepass_block(x, scale, bias, epsilon):
  return _block_fwd(x, scale, bias, epsilon)[0]


def _onepass_bwd(epsilon, res, g):
  x, mean, inv, scale, bias = res
  x_hat, gy = _relu_pool_grad(x, mean, inv, scale, bias, g)
  gy, x_hat = gy.astype(jnp.float32), x_hat.astype(jnp.float32)
  # Per (example, channel): sum of gy and of gy * x_hat over H, W, in one variadic reduction.
  s_g, s_gx = jax.lax.reduce((gy, gy * x_hat), (np.float32(0), np.float32(0)),
                             lambda a, b: (a[0] + b[0], a[1] + b[1]), (1, 2))
  n = x.shape[1] * x.shape[2]
  s_g, s_gx = s_g[:, None, None, :], s_gx[:, None, None, :]
  dx = (gy - s_g / n - x_hat * (s_gx / n)) * (scale.astype(jnp.float32) * inv)
  return (dx.astype(x.dtype), jnp.sum(s_gx, axis=(0, 1, 2)).astype(scale.dtype),
          jnp.sum(s_g, axis=(0, 1, 2)).astype(bias.dtype))


onepass_block.defvjp(_block_fwd, _onepass_bwd)


def _stats_onepass(x, epsilon):
  x32 = x.astype(jnp.float32)
  s1, s2 = jax.lax.reduce((x32, x32 * x32), (np.float32(0), np.float32(0)),
                          lambda a, b: (a[0] + b[0], a[1] + b[1]), (1, 2))
  n = x.shape[1] * x.shape[2]
  mean = (s1 / n)[:, None, None, :]
  var = jnp.maximum((s2 / n)[:, None, None, :] - jnp.square(mean), 0.0)
  return mean, jax.lax.rsqrt(var + epsilon)


def _block_fwd_onepass(x, scale, bias, epsilon):
  mean, inv = _stats_onepass(x, epsilon)
  _, pre = _recompute(x, mean, inv, scale, bias)
  return _pool2(jnp.maximum(pre, 0)), (x, mean, inv, scale, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def onepass_stats_block(x, scale, bias, epsilon):
  return _block_fwd_onepass(x, scale, bias, epsilon)[0]


onepass_stats_block.defvjp(_block_fwd_onepass, _onepass_bwd)


class Block(nn.Module):
  """norm -> ReLU -> 2x2 average pool with `layers.InstanceNorm`'s parameters."""

  variant: str

  @nn.compact
  def __call__(self, x):
    if self.variant == "layers":
      x = layers.InstanceNorm(epsilon=1e-5, impl="custom", name="norm")(x)
      return nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
    fn = dict(fused=fused_block, onepass=onepass_block, onepass_stats=onepass_stats_block)
    return fn[self.variant](x, scale, bias, 1e-5)


class BlockConvNet(nn.Module):
  """models.ConvNet (width 128, depth 3, instance norm, flax init, custom layers) with the block
  after each convolution chosen by `variant`; parameters map onto models.ConvNet's."""

  num_classes: int
  variant: str
  width: int = 128
  depth: int = 3
  impl: str = "auto"  # the convolutions' dcjax.layers path, as models.ConvNet's

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    for d in range(self.depth):
      pad = 3 if d == 0 and x.shape[1] == 28 else 1
      x = layers.Conv(self.width, 3, pad, impl=self.impl, name=f"conv{d}")(x)
      x = Block(self.variant, name=f"block{d}")(x)
    return nn.Dense(self.num_classes, name="fc")(x.reshape((x.shape[0], -1)))


def to_convnet(params):
  """BlockConvNet parameters -> models.ConvNet's names (norm{d}/scale, norm{d}/bias)."""
  out = {}
  for name, sub in params.items():
    if name.startswith("block"):
      out["norm" + name[5:]] = dict(sub.get("norm", sub))
    else:
      out[name] = sub
  return out


def from_convnet(params, variant):
  out = {}
  for name, sub in params.items():
    if name.startswith("norm"):
      out["block" + name[4:]] = {"norm": sub} if variant == "layers" else dict(sub)
    else:
      out[name] = sub
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batches", default="256,100")
  p.add_argument("--steps", type=int, default=6)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--width", type=int, default=128, help="ConvNet width (128: ConvNet-3)")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--impl", default="auto", choices=("auto", "fused", "winograd", "custom"),
                 help="the convolutions' dcjax.layers path (auto: Winograd on a CPU)")
  p.add_argument("--out")
  args = p.parse_args(argv)
  variants = args.variants.split(",")
  if "layers" not in variants or set(variants) - set(VARIANTS):
    p.error(f"--variants: 'layers' and any of {VARIANTS}")
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}", flush=True)
  recipe = protocols.resolve("small_data")
  reference = models.get_model("convnet", num_classes=10, image_size=28, impl=args.impl,
                               width=args.width)
  rows = []
  for batch in map(int, args.batches.split(",")):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, 28, 28, 1), np.uint8))
    targets = jax.nn.one_hot(jnp.arange(batch) % 10, 10)
    weight = jnp.ones((batch,), jnp.float32)
    init = reference.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    tx = training.make_optimizer(recipe, 1)
    runs = {}
    for variant in variants:
      model = BlockConvNet(10, variant, width=args.width, impl=args.impl)
      step = training.Step(model, tx, augment.get_augmentation(recipe.augment), (0.2860,),
                           (0.3530,), augment_normalised=True)
      params = from_convnet(init, variant)
      if variant == "layers":  # the stand-in is models.ConvNet itself, bitwise
        x = jnp.asarray(rng.normal(size=(4, 28, 28, 1)), jnp.float32)
        assert bool(jnp.array_equal(model.apply({"params": params}, x),
                                    reference.apply({"params": init}, x)))
      state = training.TrainState(jnp.zeros((), jnp.int32), params, {}, tx.init(params))
      fn = jax.jit(lambda s, k, step=step: training.train_step(step, s, images, targets, weight,
                                                              k)[:2])
      state, loss = fn(state, jax.random.key(99))  # compile
      jax.block_until_ready(loss)
      runs[variant] = dict(fn=fn, state=state, ms=[])
    for _ in range(args.rounds):
      for variant, run in runs.items():
        state = run["start"] = run.get("start", run["state"])
        for t in range(args.steps):
          t0 = time.perf_counter()
          state, loss = run["fn"](state, jax.random.key(t))
          jax.block_until_ready(loss)
          run["ms"].append((time.perf_counter() - t0) * 1e3)
        run["end"] = state
    base = to_convnet(runs["layers"]["end"].params)
    for variant, run in runs.items():
      end = to_convnet(run["end"].params)
      diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(base), jax.tree.leaves(end)))
      row = dict(batch=batch, variant=variant, ms=float(np.median(run["ms"])),
                 bitwise=diff == 0.0, max_param_diff=diff)
      row["ratio"] = np.median(runs["layers"]["ms"]) / row["ms"]
      rows.append(row)
      print(f"batch {batch:3d} {variant:13s} {row['ms']:7.1f} ms/step  {row['ratio']:.3f}x  "
            f"params vs layers after {args.steps} steps: "
            f"{'bitwise' if row['bitwise'] else f'max diff {diff:.1e}'}", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(jax=jax.__version__, device=jax.devices()[0].device_kind, rows=rows), f,
                indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
