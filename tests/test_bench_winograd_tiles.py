"""experiments/bench_winograd_tiles.py: `layers.winograd_3x3` with its F(4x4, 3x3) transforms
and the padded F(2x2, 3x3) compute the convolution (values and both gradients against XLA's),
at sizes that are and are not multiples of the tile; the benchmark writes one row per shape and path (timings not checked)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_scripts

bench = experiment_scripts.load("bench_winograd_tiles")


def _xla(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("impl", ["F2", "F4"])
@pytest.mark.parametrize("size", [8, 7, 6])
def test_padded_winograd_is_the_convolution_and_its_gradients(impl, size):
  kx, kw, kg = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (2, size, size, 5))
  w = jax.random.normal(kw, (3, 3, 5, 4))
  g = jax.random.normal(kg, (2, size, size, 4))
  conv = bench.IMPLS[impl]
  y, vjp = jax.vjp(conv, x, w)
  y_ref, vjp_ref = jax.vjp(_xla, x, w)
  tol = 1e-4 if impl == "F4" else 1e-5  # F4's transforms carry factors up to 8 and 1/24
  for a, b in zip((y, *vjp(g)), (y_ref, *vjp_ref(g))):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=tol * float(jnp.max(jnp.abs(b))))


def test_the_benchmark_writes_one_row_per_shape_and_path(tmp_path):
  out = tmp_path / "tiles.json"
  assert bench.main(["--shapes", "2x8,1x7", "--channels", "4", "--reps", "1",
                     "--out", str(out)]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [(r["batch"], r["size"], r["impl"]) for r in rows] == [
      (b, s, i) for b, s in ((2, 8), (1, 7)) for i in ("direct", "F2", "F4")]
  assert all(r["ms"] > 0 and r["rel_err"] < 1e-4 for r in rows)
  assert [r["rel_err"] for r in rows if r["impl"] == "direct"] == [0.0, 0.0]
