"""experiments/bench_norm_block.py: its candidate blocks compute ConvNet's norm -> ReLU -> pool
and its gradients (the timings themselves are not checked: a shared CI machine says nothing)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def bench():
  return experiment_scripts.load("bench_norm_block")


def _reference(x, scale, bias):
  """GroupNorm(group_size=1) -> affine -> ReLU -> avg_pool, all by autodiff."""
  y = nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, use_scale=False,
                   use_bias=False).apply({}, x)
  return nn.avg_pool(nn.relu(y * scale + bias), (2, 2), strides=(2, 2))


@pytest.mark.parametrize("size", [8, 7])  # 7: pooling drops the last row and column
@pytest.mark.parametrize("name", ["fused_block", "onepass_block", "onepass_stats_block"])
def test_blocks_match_autodiff_of_the_plain_layers(bench, name, size):
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (3, size, size, 5)) * 2.0 + 0.5
  scale = jax.random.normal(keys[1], (5,))
  bias = jax.random.normal(keys[2], (5,)) * 0.3
  cot = jax.random.normal(keys[3], (3, size // 2, size // 2, 5))
  block = getattr(bench, name)
  np.testing.assert_allclose(block(x, scale, bias, 1e-5), _reference(x, scale, bias),
                             rtol=1e-5, atol=1e-5)
  got = jax.grad(lambda *a: jnp.sum(block(*a, 1e-5) * cot), argnums=(0, 1, 2))(x, scale, bias)
  want = jax.grad(lambda *a: jnp.sum(_reference(*a) * cot), argnums=(0, 1, 2))(x, scale, bias)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_the_benchmark_reports_variants_against_the_current_layers(bench, tmp_path, capsys):
  out = tmp_path / "nb.json"
  assert bench.main(["--batches", "2", "--steps", "1", "--rounds", "1", "--width", "8",
                     "--variants", "layers,fused", "--out", str(out)]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["variant"] for r in rows] == ["layers", "fused"]
  by = {r["variant"]: r for r in rows}
  # `layers` is models.ConvNet's own block and `fused` does the same float operations.
  assert by["layers"]["bitwise"] and by["layers"]["ratio"] == 1.0
  assert by["fused"]["bitwise"]
  assert all(r["ms"] > 0 and r["max_param_diff"] < 1e-3 for r in rows)
