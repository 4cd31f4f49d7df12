"""Winograd's F(4x4, 3x3) against dcjax's F(2x2, 3x3) and the direct form, one layer at a time.

  python experiments/bench_winograd_tiles.py [--shapes 256x14,256x7,256x16,256x8]
      [--channels 128] [--reps 7] [--out F.json]

The question it answers: would larger Winograd tiles speed up ConvNet-3 on the CPU? F(4x4,
3x3) maps every 6x6 input tile (stride 4) to a 4x4 output with 36 products per tile, 4x fewer
multiply-adds than the direct form where F(2x2, 3x3) (`dcjax.layers.conv2d_winograd`) saves
2.25x, at a larger rounding error (its transforms carry factors up to 8 and 1/24). Both take
sizes that are not a multiple of the tile by padding the input with zeros at the bottom/right
and cropping the output (exact: the padded rows only feed the cropped outputs), which is also
what would put the 7 px layer of a 28 px ConvNet-3 (direct today) on Winograd.

Per shape (batch x size, `--channels` in and out, 3x3, pad 1), jitted forward + backward
(`value_and_grad` over input and kernel) of `direct` (`layers.conv2d`), `F2`
(`layers.conv2d_winograd`) and `F4` (`layers.winograd_3x3` with the F(4x4, 3x3) transforms
below), interleaved in one process: the median ms of `--reps` calls, the speed-up
over `direct`, and the forward's largest error relative to XLA's convolution. Nothing is
asserted; BENCHMARKS.md records the 2026-12-07 run and why F(4x4, 3x3) was not adopted.
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

from dcjax import layers  # noqa: E402

# Lavin & Gray (2016), F(4x4, 3x3) with interpolation points 0, +-1, +-2 and infinity.
F4_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
F4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
F4_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float32)


_f4 = layers.winograd_3x3(F4_BT, F4_G, F4_AT)


def padded(conv, tile: int):
  """conv on x zero-padded at the bottom/right to a multiple of `tile`, the output cropped."""
  def run(x, w):
    h, wd = x.shape[1:3]
    x2 = jnp.pad(x, ((0, 0), (0, -h % tile), (0, -wd % tile), (0, 0)))
    return conv(x2, w)[:, :h, :wd]
  return run


IMPLS = {"direct": lambda x, w: layers.conv2d(x, w, 1),
         "F2": padded(layers.conv2d_winograd, 2),
         "F4": padded(_f4, 4)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shapes", default="256x14,256x7,256x16,256x8",
                 help="batch x size per layer: 14 and 7 px are a 28 px ConvNet-3's wide "
                      "layers, 16 and 8 px a 32 px one's")
  p.add_argument("--channels", type=int, default=128)
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--out")
  args = p.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}", flush=True)
  rows, c = [], args.channels
  for shape in args.shapes.split(","):
    batch, size = map(int, shape.split("x"))
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (batch, size, size, c))
    w = jax.random.normal(kw, (3, 3, c, c)) / np.sqrt(9 * c)
    ref = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ms = {}
    for name, conv in IMPLS.items():
      err = float(jnp.max(jnp.abs(jax.jit(conv)(x, w) - ref)) / jnp.max(jnp.abs(ref)))
      step = jax.jit(jax.value_and_grad(lambda x, w, conv=conv: jnp.vdot(conv(x, w), ref),
                                        argnums=(0, 1)))
      jax.block_until_ready(step(x, w))
      times = []
      for _ in range(args.reps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(x, w))
        times.append(time.perf_counter() - t0)
      ms[name] = 1e3 * float(np.median(times))
      rows.append({"batch": batch, "size": size, "channels": c, "impl": name,
                   "ms": ms[name], "speedup": ms["direct"] / ms[name], "rel_err": err})
      print(f"{batch}x{size}px {c}ch {name:>6}: {ms[name]:8.1f} ms  "
            f"{ms['direct'] / ms[name]:.2f}x direct  rel err {err:.1e}", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"jax": jax.__version__, "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
