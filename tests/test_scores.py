"""Tests for dcjax.scores: per-example scores vs NumPy, GraNd vs hand gradients, accumulators."""

import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import scores

B, K = 7, 5


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def make_logits(seed=0, shape=(B, K)):
  rng = np.random.default_rng(seed)
  logits = (3 * rng.normal(size=shape)).astype(np.float32)
  return logits, rng.integers(0, K, shape[-2]).astype(np.int32)


def test_single_pass_scores_match_numpy():
  z, y = make_logits()
  p = np_softmax(z.astype(np.float64))
  onehot = np.eye(K)[y]
  np.testing.assert_allclose(scores.el2n(z, y), np.linalg.norm(p - onehot, axis=1), rtol=1e-5)
  np.testing.assert_allclose(scores.entropy(z), -(p * np.log(p)).sum(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scores.loss(z, y), -np.log(p[np.arange(B), y]), rtol=1e-5)
  others = np.where(onehot.astype(bool), -np.inf, z)
  want = z[np.arange(B), y] - others.max(1)
  np.testing.assert_allclose(scores.margin(z, y), want, rtol=1e-6)
  # margin > 0 exactly for the correctly classified rows (random logits: no ties).
  np.testing.assert_array_equal(np.asarray(scores.margin(z, y)) > 0, z.argmax(1) == y)


def test_el2n_mean_averages_models():
  z, y = make_logits(1, shape=(3, B, K))
  want = np.mean([np.linalg.norm(np_softmax(z[m].astype(np.float64)) - np.eye(K)[y], axis=1)
                  for m in range(3)], axis=0)
  np.testing.assert_allclose(scores.el2n_mean(z, y), want, rtol=1e-5)


def test_extreme_logits_stay_finite():
  z = np.array([[0.0, -np.inf, 2.0], [1e4, 0.0, -1e4]], np.float32)
  y = np.array([2, 1], np.int32)
  for s in (scores.entropy(z), scores.el2n(z, y), scores.loss(z, y), scores.margin(z, y)):
    assert np.isfinite(np.asarray(s)).all()
  np.testing.assert_allclose(scores.entropy(z)[1], 0.0, atol=1e-6)
  np.testing.assert_allclose(scores.loss(z, y)[1], 1e4, rtol=1e-6)


def test_shape_errors():
  z, y = make_logits()
  with pytest.raises(ValueError, match=r"el2n expects labels \[B\] with B=7"):
    scores.el2n(z, y[:3])
  with pytest.raises(ValueError, match=r"entropy expects logits \[B, K\]"):
    scores.entropy(z[0])
  with pytest.raises(ValueError, match="margin needs at least 2 classes"):
    scores.margin(z[:, :1], np.zeros(B, np.int32))
  with pytest.raises(ValueError, match=r"el2n_mean expects logits \[k, B, K\]"):
    scores.el2n_mean(z, y)


# ------------------------------------------------------------------------------------------
# GraNd.

D, H = 4, 3


def two_layer(params, x):  # logits = tanh(x A) W + b
  h = jnp.tanh(x @ params["body"]["a"])
  return h @ params["fc"]["w"] + params["fc"]["b"]


def linear(params, x):
  return x @ params["fc"]["w"] + params["fc"]["b"]


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"body": {"a": rng.normal(size=(D, H)).astype(np.float32)},
          "fc": {"w": rng.normal(size=(H, K)).astype(np.float32),
                 "b": rng.normal(size=(K,)).astype(np.float32)}}


def test_grand_linear_model_matches_hand_gradient():
  rng = np.random.default_rng(3)
  params = {"fc": {"w": rng.normal(size=(D, K)).astype(np.float32),
                   "b": rng.normal(size=(K,)).astype(np.float32)}}
  x = rng.normal(size=(B, D)).astype(np.float32)
  y = rng.integers(0, K, B).astype(np.int32)
  err = np_softmax((x @ params["fc"]["w"] + params["fc"]["b"]).astype(np.float64)) - np.eye(K)[y]
  # dL/dW = outer(x, p - y), dL/db = p - y: ||.||^2 = |x|^2 |p - y|^2 + |p - y|^2.
  want = np.sqrt(((x ** 2).sum(1) + 1) * (err ** 2).sum(1))
  np.testing.assert_allclose(scores.grand(linear, params, x, y), want, rtol=1e-4)
  np.testing.assert_allclose(scores.grand(linear, params, x, y, last_layer="fc"), want, rtol=1e-4)


def test_grand_full_and_last_layer_match_hand_gradient():
  params = make_params()
  rng = np.random.default_rng(4)
  x = rng.normal(size=(B, D)).astype(np.float32)
  y = rng.integers(0, K, B).astype(np.int32)
  a, w, b = (params["body"]["a"].astype(np.float64), params["fc"]["w"].astype(np.float64),
             params["fc"]["b"].astype(np.float64))
  h = np.tanh(x @ a)
  err = np_softmax(h @ w + b) - np.eye(K)[y]  # dL/dlogits
  g_w = np.einsum("bh,bk->bhk", h, err)
  g_a = np.einsum("bd,bh->bdh", x, (1 - h ** 2) * (err @ w.T))  # backprop through tanh
  last = np.sqrt((g_w ** 2).sum((1, 2)) + (err ** 2).sum(1))
  full = np.sqrt(last ** 2 + (g_a ** 2).sum((1, 2)))
  np.testing.assert_allclose(scores.grand(two_layer, params, x, y), full, rtol=1e-4)
  np.testing.assert_allclose(scores.grand(two_layer, params, x, y, last_layer="fc"), last,
                             rtol=1e-4)
  assert (full > last + 1e-3).all()  # the body's gradient really counts in the full variant
  np.testing.assert_allclose(scores.grand(two_layer, params, x, y, chunk=3), full, rtol=1e-5)
  # A nested path into the params, as with {'params': ...} trees.
  nested = lambda p, x: two_layer(p["params"], x)  # noqa: E731
  np.testing.assert_allclose(
      scores.grand(nested, {"params": params}, x, y, last_layer="params/fc"), last, rtol=1e-4)


def test_grand_unknown_last_layer():
  params = make_params()
  x, y = np.zeros((2, D), np.float32), np.zeros(2, np.int32)
  with pytest.raises(ValueError, match=r"no 'head' under the top level; keys there: body, fc"):
    scores.grand(two_layer, params, x, y, last_layer="head")


# ------------------------------------------------------------------------------------------
# Accumulators, over a hand-made 3-epoch sequence of 5 examples (label 0, two classes).
# Logits [m, 0]: margin m, correct iff m > 0. Example 4 is never presented.
#   ex0: C I C  -> 1 forget      ex1: C C C -> 0       ex2: I I I -> never learned
#   ex3: I C I  -> 1 forget
MARGINS = np.array([[2.0, 1.0, -1.0, -2.0],
                    [-1.0, 3.0, -2.0, 0.5],
                    [4.0, 2.0, -3.0, -0.5]], np.float32)
N = 5


def epoch_logits(e, rows):
  m = MARGINS[e][rows]
  return np.stack([m, np.zeros_like(m)], 1), np.zeros(len(rows), np.int32)


def run_in_order(init, update):
  state = init(N)
  for e in range(3):
    logits, labels = epoch_logits(e, np.arange(4))
    state = update(state, jnp.arange(4), logits, labels)
  return state


def run_shuffled(init, update, batch=3):
  """Shuffled batches; the last batch is padded with index N (ignored)."""
  state = init(N)
  rng = np.random.default_rng(0)
  for e in range(3):
    perm = rng.permutation(4)
    for start in range(0, 4, batch):
      rows = perm[start:start + batch]
      logits, labels = epoch_logits(e, rows)
      pad = batch - len(rows)
      idx = np.concatenate([rows, np.full(pad, N)]).astype(np.int32)
      logits = np.concatenate([logits, np.tile([[5.0, 0.0]], (pad, 1))]).astype(np.float32)
      labels = np.concatenate([labels, np.zeros(pad, np.int32)])
      state = update(state, idx, logits, labels)
  return state


def test_forgetting_counts_and_conventions():
  got = np.asarray(scores.forgetting_scores(run_in_order(scores.forgetting_init,
                                                         scores.forgetting_update)))
  # Never learned (ex2) = max count + 1 = 2; never presented (ex4) = NaN.
  np.testing.assert_array_equal(got, [1.0, 0.0, 2.0, 1.0, np.nan])


def test_forgetting_shuffled_batches_equal_in_order():
  a = run_in_order(scores.forgetting_init, scores.forgetting_update)
  b = run_shuffled(scores.forgetting_init, scores.forgetting_update)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(b.seen, [3, 3, 3, 3, 0])


def test_aum_mean_margin_and_difficulty():
  state = run_in_order(scores.aum_init, scores.aum_update)
  want = np.append(MARGINS.mean(0), np.nan)
  np.testing.assert_allclose(scores.aum_scores(state), want, rtol=1e-6)
  np.testing.assert_allclose(scores.aum_scores(state, as_difficulty=True), -want, rtol=1e-6)
  shuffled = run_shuffled(scores.aum_init, scores.aum_update)
  np.testing.assert_allclose(scores.aum_scores(shuffled), want, rtol=1e-6)


def test_aum_uses_largest_other_logit():
  state = scores.aum_update(scores.aum_init(2), jnp.array([1, 0]),
                            jnp.array([[1.0, 4.0, 2.0], [0.0, 3.0, 5.0]]), jnp.array([1, 0]))
  np.testing.assert_allclose(scores.aum_scores(state), [-5.0, 2.0])


def test_update_shape_errors():
  with pytest.raises(ValueError, match=r"expects indices \[B\] with B=2"):
    scores.aum_update(scores.aum_init(3), jnp.arange(3), jnp.zeros((2, 2)), jnp.zeros(2, int))
  with pytest.raises(ValueError, match="integer indices"):
    scores.forgetting_update(scores.forgetting_init(3), jnp.zeros(2), jnp.zeros((2, 2)),
                             jnp.zeros(2, int))
