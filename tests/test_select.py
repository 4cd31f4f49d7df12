"""Tests for dcjax.select: class-balanced selection rules and the ipc check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import select

NUM_CLASSES, IPC = 4, 5
COUNTS = (9, 17, 5, 12)  # class 2 holds exactly IPC examples


def make_data(seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), COUNTS)).astype(np.int32)
  scores = rng.permutation(len(labels)).astype(np.float32) / 7.0  # distinct: no ties
  return scores, labels


def run(scores, labels, seed=0, rule="easy", ipc=IPC):
  return np.asarray(select.class_balanced(jnp.asarray(scores), jnp.asarray(labels),
                                          jax.random.key(seed), num_classes=NUM_CLASSES,
                                          ipc=ipc, rule=rule))


@pytest.mark.parametrize("rule", select.RULES)
def test_exactly_ipc_per_class_in_class_order(rule):
  scores, labels = make_data()
  idx = run(scores, labels, rule=rule)
  assert idx.dtype == np.int32 and idx.shape == (NUM_CLASSES * IPC,)
  assert len(set(idx.tolist())) == len(idx)  # no duplicates
  assert idx.min() >= 0 and idx.max() < len(labels)
  np.testing.assert_array_equal(labels[idx].reshape(NUM_CLASSES, IPC),
                                np.repeat(np.arange(NUM_CLASSES)[:, None], IPC, axis=1))


@pytest.mark.parametrize("rule", ["easy", "hard"])
def test_easy_and_hard_match_numpy_per_class_argsort(rule):
  scores, labels = make_data(seed=1)
  idx = run(scores, labels, rule=rule)
  expected = []
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(labels == c)
    key = scores[members] if rule == "easy" else -scores[members]
    expected.extend(members[np.argsort(key, kind="stable")[:IPC]])
  np.testing.assert_array_equal(idx, expected)
  per_class = scores[idx].reshape(NUM_CLASSES, IPC)
  if rule == "easy":  # easiest (lowest) first
    assert (np.diff(per_class, axis=1) > 0).all()
  else:  # hardest (highest) first
    assert (np.diff(per_class, axis=1) < 0).all()


def test_easy_and_hard_ignore_the_key_without_ties():
  scores, labels = make_data(seed=2)
  for rule in ("easy", "hard"):
    np.testing.assert_array_equal(run(scores, labels, 0, rule), run(scores, labels, 1, rule))


def test_ties_are_broken_by_the_key():
  _, labels = make_data()
  scores = np.zeros(len(labels), np.float32)
  a, b = run(scores, labels, 0, "easy"), run(scores, labels, 1, "easy")
  np.testing.assert_array_equal(labels[a], labels[b])
  assert not np.array_equal(a, b)


def test_random_is_deterministic_per_key_and_ignores_scores():
  scores, labels = make_data()
  a = run(scores, labels, 3, "random")
  np.testing.assert_array_equal(a, run(scores, labels, 3, "random"))
  np.testing.assert_array_equal(a, run(scores[::-1].copy(), labels, 3, "random"))
  assert not np.array_equal(a, run(scores, labels, 4, "random"))


def test_random_covers_each_class_uniformly():
  scores, labels = make_data()
  hits = np.zeros(len(labels))
  for seed in range(40):
    hits[run(scores, labels, seed, "random")] += 1
  # Each member of class c is kept with probability IPC / count_c.
  for c, count in enumerate(COUNTS):
    members = labels == c
    p = IPC / count
    np.testing.assert_allclose(hits[members].mean(), 40 * p)  # exactly IPC per draw
    assert (np.abs(hits[members] - 40 * p) <= 5 * np.sqrt(40 * p * (1 - p)) + 1e-9).all()
    assert hits[members].min() > 0
  np.testing.assert_array_equal(hits[labels == 2], 40)  # the class of exactly IPC: always all


def test_under_outer_jit_with_static_sizes():
  scores, labels = make_data()
  f = jax.jit(lambda s, l, k: select.class_balanced(s, l, k, num_classes=NUM_CLASSES, ipc=3,
                                                    rule="hard"))
  got = np.asarray(f(jnp.asarray(scores), jnp.asarray(labels), jax.random.key(0)))
  np.testing.assert_array_equal(got, run(scores, labels, 0, "hard", ipc=3))
  assert labels[got].tolist() == sum(([c] * 3 for c in range(NUM_CLASSES)), [])


def test_unknown_rule():
  scores, labels = make_data()
  with pytest.raises(ValueError, match="unknown selection rule 'median'"):
    run(scores, labels, rule="median")


def test_check_ipc_accepts_the_smallest_class_size():
  _, labels = make_data()
  select.check_ipc(labels, NUM_CLASSES, min(COUNTS))
  select.check_ipc(labels, NUM_CLASSES, 1)


def test_check_ipc_too_large_names_class_and_maximum():
  _, labels = make_data()
  with pytest.raises(ValueError) as e:
    select.check_ipc(labels, NUM_CLASSES, 6)
  msg = str(e.value)
  assert "ipc=6" in msg and "class 2" in msg and "5 examples" in msg and "<= 5" in msg
  with pytest.raises(ValueError, match=r"class 2 \(bird\) has 5 examples"):
    select.check_ipc(labels, NUM_CLASSES, 6, class_names=["plane", "car", "bird", "cat"])


def test_check_ipc_counts_absent_classes_as_empty():
  _, labels = make_data()
  with pytest.raises(ValueError, match="class 4 has 0 examples"):
    select.check_ipc(labels, NUM_CLASSES + 1, 1)


@pytest.mark.parametrize("ipc", [0, -3])
def test_check_ipc_below_one(ipc):
  _, labels = make_data()
  with pytest.raises(ValueError, match=f"ipc must be >= 1, got {ipc}"):
    select.check_ipc(labels, NUM_CLASSES, ipc)
