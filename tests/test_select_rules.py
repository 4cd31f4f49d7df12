"""Tests for dcjax.select's score- and feature-based rules: CCS, herding, k-center, NaN checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import select


def grouped(labels, idx, num_classes, ipc):
  np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(num_classes), ipc))
  assert len(set(idx.tolist())) == len(idx) and idx.dtype == np.int32


# ------------------------------------------------------------------------------------------
# CCS.


def one_class_0_to_99(seed=0):
  rng = np.random.default_rng(seed)
  scores = rng.permutation(100).astype(np.float32)  # example i has score scores[i]
  return scores, np.zeros(100, np.int32)


def test_ccs_drops_the_hardest_and_fills_strata_evenly():
  scores, labels = one_class_0_to_99()
  idx = select.ccs(scores, labels, jax.random.key(0), num_classes=1, ipc=20, hard_cutoff=0.1,
                   bins=10)
  grouped(labels, idx, 1, 20)
  s = scores[idx]
  assert s.max() < 90  # the 10 hardest (90..99) are never selected
  # Kept scores 0..89 span width 8.9 per stratum: strata hold 9 scores each, [9b, 9b + 9).
  np.testing.assert_array_equal(np.bincount((s // 9).astype(int), minlength=10), [2] * 10)
  assert (np.diff(s) > 0).all()  # ascending score within the class


def test_ccs_is_deterministic_per_key():
  scores, labels = one_class_0_to_99()
  run = lambda key: select.ccs(scores, labels, key, num_classes=1, ipc=20, bins=10)  # noqa: E731
  np.testing.assert_array_equal(run(jax.random.key(1)), run(jax.random.key(1)))
  np.testing.assert_array_equal(run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1)))
  np.testing.assert_array_equal(run(7), run(7))
  assert not np.array_equal(run(jax.random.key(1)), run(jax.random.key(2)))


def test_ccs_budget_hand_case():
  # Smallest first: 2 -> min(2, 15 // 4) = 2; 3 -> min(3, 13 // 3) = 3; 10 -> min(10, 10 // 2)
  # = 5; 20 -> the remaining 5. The empty stratum takes nothing.
  np.testing.assert_array_equal(select.ccs_budget([2, 3, 10, 0, 20], 15), [2, 3, 5, 0, 5])
  np.testing.assert_array_equal(select.ccs_budget([4, 4, 4], 6), [2, 2, 2])
  # Shares round down; the remainder reaches the last (largest; on ties, highest) stratum.
  np.testing.assert_array_equal(select.ccs_budget([5, 5, 5], 7), [2, 2, 3])
  np.testing.assert_array_equal(select.ccs_budget([9, 5, 5], 7), [3, 2, 2])
  np.testing.assert_array_equal(select.ccs_budget([1, 2], 10), [1, 2])  # all there is


def test_ccs_budget_is_water_filling():
  rng = np.random.default_rng(0)
  for _ in range(50):
    sizes = rng.integers(0, 12, rng.integers(1, 9))
    budget = int(rng.integers(0, sizes.sum() + 3))
    take = select.ccs_budget(sizes, budget)
    assert take.sum() == min(budget, sizes.sum()) and (0 <= take).all() and (take <= sizes).all()
    # Strata not taken whole are within one of the largest share: nothing is left uneven.
    open_ = take < sizes
    if open_.any():
      assert take[open_].min() >= take.max() - 1


def test_ccs_per_stratum_counts_follow_the_budget():
  # Strata of width 1 over [0, 5]: sizes 2, 3, 10, 0, 20 (5.0, the maximum, is in the last).
  scores = np.concatenate([[0.0, 0.5], 1.5 + np.zeros(3), 2.5 + np.zeros(10),
                           np.linspace(4, 5, 20)])
  labels = np.zeros(len(scores), np.int32)
  idx = select.ccs(scores, labels, 3, num_classes=1, ipc=15, hard_cutoff=0.0, bins=5)
  stratum = np.minimum(scores[idx].astype(int), 4)
  np.testing.assert_array_equal(np.bincount(stratum, minlength=5), [2, 3, 5, 0, 5])


def test_ccs_per_class_grouping_and_cutoff():
  rng = np.random.default_rng(5)
  counts = (30, 41, 25)
  labels = rng.permutation(np.repeat(np.arange(3), counts)).astype(np.int32)
  scores = rng.normal(size=len(labels))
  idx = select.ccs(scores, labels, 0, num_classes=3, ipc=6, hard_cutoff=0.2, bins=4)
  grouped(labels, idx, 3, 6)
  for c, n_c in enumerate(counts):
    s = np.sort(scores[labels == c])
    assert scores[idx[6 * c:6 * c + 6]].max() < s[n_c - int(0.2 * n_c)]  # class's own cutoff


def test_ccs_errors():
  scores, labels = one_class_0_to_99()
  with pytest.raises(ValueError,
                     match=r"class 0 keeps 50 of its 100 examples .* hard_cutoff <= 0.4"):
    select.ccs(scores, labels, 0, num_classes=1, ipc=60, hard_cutoff=0.5)
  with pytest.raises(ValueError, match=r"ipc=101 is larger than the smallest class"):
    select.ccs(scores, labels, 0, num_classes=1, ipc=101)
  with pytest.raises(ValueError, match=r"hard_cutoff must be in \[0, 1\)"):
    select.ccs(scores, labels, 0, num_classes=1, ipc=5, hard_cutoff=1.0)
  with pytest.raises(ValueError, match="bins must be an integer >= 1"):
    select.ccs(scores, labels, 0, num_classes=1, ipc=5, bins=0)
  bad = scores.copy()
  bad[[3, 8]] = np.inf
  with pytest.raises(ValueError, match=r"scores are infinite at 2 example\(s\), indices \[3, 8\]"):
    select.ccs(bad, labels, 0, num_classes=1, ipc=5)


def test_nan_scores_are_named():
  scores, labels = one_class_0_to_99()
  scores[[2, 11, 12, 40, 41, 77, 99]] = np.nan
  with pytest.raises(ValueError) as e:
    select.ccs(scores, labels, 0, num_classes=1, ipc=5)
  assert "scores are NaN at 7 example(s), indices [2, 11, 12, 40, 41, ...]" in str(e.value)
  assert "\n" not in str(e.value)
  # class_balanced is pure (the same inside and outside jit): the host check names them.
  with pytest.raises(ValueError, match=r"scores are NaN at 7 example\(s\), indices \[2, 11,"):
    select.check_scores(scores)
  # 'random' ignores the scores, so their NaNs do not matter.
  select.class_balanced(jnp.asarray(scores), jnp.asarray(labels), jax.random.key(0),
                        num_classes=1, ipc=5, rule="random")


# ------------------------------------------------------------------------------------------
# Herding and k-center.


def np_herding(x, ipc):
  mean, picked, total = x.mean(0), [], np.zeros(x.shape[1])
  for t in range(ipc):
    d = np.linalg.norm((total + x) / (t + 1) - mean, axis=1)
    d[picked] = np.inf
    picked.append(int(d.argmin()))
    total += x[picked[-1]]
  return picked


def np_kcenter(x, first, ipc):
  picked = [first]
  mind = np.linalg.norm(x - x[first], axis=1)
  for _ in range(ipc - 1):
    d = mind.copy()
    d[picked] = -np.inf
    picked.append(int(d.argmax()))
    mind = np.minimum(mind, np.linalg.norm(x - x[picked[-1]], axis=1))
  return picked


def test_herding_obvious_2d_case():
  # Mean (0, 0): first the point nearest it (tie +-0.5: lowest index), then its mirror image,
  # which brings the running mean back to 0 exactly; then the +-3 pair, then the +-5 pair.
  x = np.array([[5, 0], [-5, 0], [0.5, 0], [0, 3], [0, -3], [-0.5, 0]], np.float32)
  idx = select.herding(x, np.zeros(6, np.int32), num_classes=1, ipc=6)
  np.testing.assert_array_equal(idx, [2, 5, 3, 4, 0, 1])


def random_features(seed=0, counts=(9, 14, 6)):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)
  return rng.normal(size=(len(labels), 3)).astype(np.float32), labels


def test_herding_matches_numpy_per_class_over_blocks():
  x, labels = random_features()
  ipc = 5
  # block=4: classes span several padded blocks.
  idx = select.herding(x, labels, num_classes=3, ipc=ipc, block=4)
  grouped(labels, idx, 3, ipc)
  want = []
  for c in range(3):
    members = np.flatnonzero(labels == c)
    want.extend(members[np_herding(x[members].astype(np.float64), ipc)])
  np.testing.assert_array_equal(idx, want)
  # A JAX array and the default block give the same answer.
  np.testing.assert_array_equal(
      select.herding(jnp.asarray(x), jnp.asarray(labels), num_classes=3, ipc=ipc), want)


def test_kcenter_picks_one_point_per_far_cluster():
  rng = np.random.default_rng(1)
  centers = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
  x = (np.repeat(centers, 5, axis=0) + rng.normal(size=(20, 2))).astype(np.float32)
  labels = np.zeros(20, np.int32)
  for seed in range(3):
    idx = select.kcenter(x, labels, jax.random.key(seed), num_classes=1, ipc=4, block=8)
    np.testing.assert_array_equal(np.sort(idx // 5), [0, 1, 2, 3])


def test_kcenter_matches_numpy_and_is_deterministic_per_key():
  x, labels = random_features(2)
  ipc = 4
  idx = select.kcenter(x, labels, jax.random.key(0), num_classes=3, ipc=ipc, block=4)
  grouped(labels, idx, 3, ipc)
  for c in range(3):
    members = np.flatnonzero(labels == c)
    first = int(np.flatnonzero(members == idx[c * ipc])[0])
    want = members[np_kcenter(x[members].astype(np.float64), first, ipc)]
    np.testing.assert_array_equal(idx[c * ipc:(c + 1) * ipc], want)
  np.testing.assert_array_equal(
      idx, select.kcenter(jnp.asarray(x), labels, jax.random.key(0), num_classes=3, ipc=ipc))
  starts = {tuple(select.kcenter(x, labels, s, num_classes=3, ipc=ipc, block=4)[::ipc])
            for s in range(4)}
  assert len(starts) > 1  # the key chooses the first centers


def test_kcenter_duplicate_points_are_distinct_picks():
  x = np.zeros((4, 2), np.float32)
  idx = select.kcenter(x, np.zeros(4, np.int32), 0, num_classes=1, ipc=4)
  assert sorted(idx.tolist()) == [0, 1, 2, 3]


def test_feature_rule_errors():
  x, labels = random_features()
  with pytest.raises(ValueError, match=r"ipc=7 is larger than the smallest class: class 2"):
    select.herding(x, labels, num_classes=3, ipc=7)
  with pytest.raises(ValueError, match=r"kcenter expects features \[N, d\]"):
    select.kcenter(x[:, 0], labels, 0, num_classes=3, ipc=2)
  with pytest.raises(ValueError, match=r"labels are outside \[0, 2\) at 6 example"):
    select.herding(x, labels, num_classes=2, ipc=2)
  bad = x.copy()
  bad[4, 1] = np.nan
  with pytest.raises(ValueError,
                     match=r"features are NaN or infinite at 1 example\(s\), indices \[4\]"):
    select.herding(bad, labels, num_classes=3, ipc=2)
