"""Selection rules: which examples a pruning method keeps.

Every rule returns exactly `ipc` source indices per class, grouped by class in label order:
class c occupies positions [c*ipc, (c+1)*ipc) of the int32 [num_classes * ipc] result.

`class_balanced` (rules 'easy', 'hard', 'random') is pure and jit-able (num_classes and ipc
static). Scores follow `dcjax.scores`' orientation: lower = easier.

The other rules walk each class's members, whose number differs per class, so they run per
class from the host and return NumPy arrays; their inner loops are jitted:
  `ccs`      coverage-centric coreset selection over score strata (Zheng et al. 2023);
  `herding`  greedy herding of feature means (Welling 2009; iCaRL's exemplars);
  `kcenter`  greedy k-center / farthest-first traversal of features (Sener & Savarese 2018).
Randomised ones are deterministic per key (a JAX PRNG key or an int seed).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dcjax.errors import unknown

RULES = ("easy", "hard", "random")


def class_balanced(scores: jax.Array, labels: jax.Array, key: jax.Array, *, num_classes: int,
                   ipc: int, rule: str) -> jax.Array:
  """Keep `ipc` examples of every class.

  Args:
    scores: float [N] per-example scores (ignored by rule 'random'); lower = easier.
    labels: int [N] in [0, num_classes).
    key: PRNG key; breaks ties for 'easy'/'hard' and draws the subset for 'random'.
    rule: 'easy' (lowest score first), 'hard' (highest first) or 'random'.
  Returns:
    int32 [num_classes * ipc] source indices; class c occupies [c*ipc, (c+1)*ipc), ordered by
    the rule (easiest first for 'easy'). Every class must hold at least `ipc` examples
    (check with `check_ipc` first: inside jit a short class cannot raise). NaN scores would
    sort after every real score: check them with `check_scores` first.
  """
  return _class_balanced(scores, labels, key, num_classes=num_classes, ipc=ipc, rule=rule)


@functools.partial(jax.jit, static_argnames=("num_classes", "ipc", "rule"))
def _class_balanced(scores: jax.Array, labels: jax.Array, key: jax.Array, *, num_classes: int,
                    ipc: int, rule: str) -> jax.Array:
  n = labels.shape[0]
  noise = jax.random.uniform(key, (n,))
  if rule == "random":
    key_ = noise
  elif rule == "easy":
    key_ = scores.astype(jnp.float32)
  elif rule == "hard":
    key_ = -scores.astype(jnp.float32)
  else:
    raise unknown("selection rule", rule, RULES)
  # Sort by (label, rule key, random tie-break): each class becomes one contiguous run.
  order = jnp.lexsort((noise, key_, labels))
  counts = jnp.bincount(labels, length=num_classes)
  starts = jnp.cumsum(counts) - counts
  take = starts[:, None] + jnp.arange(ipc)[None, :]
  return order[take.reshape(-1)].astype(jnp.int32)


def check_ipc(labels: np.ndarray, num_classes: int, ipc: int, class_names=None) -> None:
  """Raise ValueError unless every class has at least `ipc` (>= 1) examples."""
  if ipc < 1:
    raise ValueError(f"ipc must be >= 1, got {ipc}")
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  smallest = int(counts.argmin())
  if counts[smallest] < ipc:
    name = f" ({class_names[smallest]})" if class_names else ""
    raise ValueError(f"ipc={ipc} is larger than the smallest class: class {smallest}{name} has "
                    f"{counts[smallest]} examples; use ipc <= {counts[smallest]}")


# ------------------------------------------------------------------------------------------
# Input checks shared by the host-driven rules.


def _name_bad(bad: np.ndarray, what: str, hint: str) -> ValueError:
  where = np.flatnonzero(bad)
  shown = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
  return ValueError(f"{what} at {len(where)} example(s), indices [{shown}]; {hint}")


def check_scores(scores, *, finite: bool = False) -> np.ndarray:
  """Raise ValueError if `scores` hold NaN (with finite=True also +-inf), naming the indices.

  Args:
    scores: float [N], concrete (not traced).
  Returns:
    The scores as a float64 NumPy array [N].
  """
  s = np.asarray(scores)
  if s.ndim != 1:
    raise ValueError(f"scores must be one number per example [N], got shape {s.shape}")
  s = s.astype(np.float64)
  if np.isnan(s).any():
    raise _name_bad(np.isnan(s), "scores are NaN",
                    "score every example (an accumulator never updated for one gives NaN)")
  if finite and np.isinf(s).any():
    raise _name_bad(np.isinf(s), "scores are infinite", "this rule needs finite scores")
  return s


def _host_labels(labels, n: int, num_classes: int, ipc: int) -> np.ndarray:
  y = np.asarray(labels)
  if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be integers [N] with N={n}, got {y.dtype} {y.shape}")
  if n and (y.min() < 0 or y.max() >= num_classes):
    raise _name_bad((y < 0) | (y >= num_classes), f"labels are outside [0, {num_classes})",
                    "check num_classes")
  check_ipc(y, num_classes, ipc)
  return y


def _host_rng(key) -> np.random.Generator:
  # A JAX key (typed or raw uint32) or an int seed; 128 bits of it seed NumPy's generator.
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  return np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32)))


def _as_key(key) -> jax.Array:
  return jax.random.key(int(key)) if isinstance(key, (int, np.integer)) else key


# ------------------------------------------------------------------------------------------
# Coverage-centric coreset selection.


def ccs_budget(sizes: np.ndarray, budget: int) -> np.ndarray:
  """Split `budget` over strata of the given sizes as CCS does (Zheng et al. 2023, Alg. 1).

  Visit the strata from smallest to largest (ties: lower stratum first); each takes
  min(its size, floor(remaining budget / strata not yet visited)). Small strata are taken
  whole and what they cannot use flows to the larger ones, so the budget is met exactly
  whenever it is <= sum(sizes). Empty strata take 0 and leave the budget to the others.

  Args:
    sizes: int [S] stratum sizes.
  Returns:
    int64 [S], how many to take from each stratum; sums to min(budget, sum(sizes)).
  """
  sizes = np.asarray(sizes, np.int64)
  take = np.zeros_like(sizes)
  left = int(min(budget, sizes.sum()))
  order = np.argsort(sizes, kind="stable")
  for visited, s in enumerate(order):
    take[s] = min(int(sizes[s]), left // (len(order) - visited))
    left -= int(take[s])
  return take


def ccs(scores, labels, key, *, num_classes: int, ipc: int, hard_cutoff: float = 0.1,
        bins: int = 50) -> np.ndarray:
  """Coverage-centric coreset selection (Zheng et al. 2023), run within every class.

  Per class of n_c examples: drop the floor(hard_cutoff * n_c) hardest (highest score; ties at
  the cut broken at random), split the remaining scores' range [min, max] into `bins` strata of
  equal width (the maximum falls in the last), allocate `ipc` over the strata with
  `ccs_budget`, and sample uniformly without replacement within each stratum. Runs on the host
  with NumPy: it is a one-off selection step, not a hot loop, and not jit-able.

  Args:
    scores: float [N], lower = easier (negate AUM first: `aum_scores(as_difficulty=True)`).
    labels: int [N] in [0, num_classes).
    key: JAX PRNG key or int seed; the same key gives the same selection.
    hard_cutoff: fraction in [0, 1) of each class's hardest examples never selected.
    bins: number of strata (>= 1).
  Returns:
    int32 NumPy [num_classes * ipc] source indices, grouped by class in label order, each
    class's indices in ascending score order.
  Raises:
    ValueError for NaN/inf scores (naming up to 5 indices), bad labels, ipc larger than a
    class, or fewer than ipc examples left in a class after the hard cutoff.
  """
  s = check_scores(scores, finite=True)
  y = _host_labels(labels, len(s), num_classes, ipc)
  if not 0.0 <= hard_cutoff < 1.0:
    raise ValueError(f"ccs: hard_cutoff must be in [0, 1), got {hard_cutoff}")
  if int(bins) != bins or bins < 1:
    raise ValueError(f"ccs: bins must be an integer >= 1, got {bins}")
  bins = int(bins)
  rng = _host_rng(key)
  out = []
  for c in range(num_classes):
    members = np.flatnonzero(y == c)
    sc = s[members]
    n_c = len(members)
    drop = math.floor(hard_cutoff * n_c)
    if n_c - drop < ipc:
      raise ValueError(f"ccs: class {c} keeps {n_c - drop} of its {n_c} examples after dropping "
                      f"the hardest {hard_cutoff:g}, fewer than ipc={ipc}; use hard_cutoff <= "
                      f"{(n_c - ipc) / n_c:.4g} or a smaller ipc")
    kept = np.lexsort((rng.random(n_c), sc))[: n_c - drop]  # ascending score
    ks = sc[kept]
    lo, hi = ks[0], ks[-1]
    if hi > lo:
      stratum = np.minimum(((ks - lo) / ((hi - lo) / bins)).astype(np.int64), bins - 1)
    else:  # one score value: one stratum
      stratum = np.zeros(len(ks), np.int64)
    take = ccs_budget(np.bincount(stratum, minlength=bins), ipc)
    chosen = np.concatenate([rng.choice(kept[stratum == b], take[b], replace=False)
                             for b in range(bins) if take[b]])
    chosen = chosen[np.lexsort((chosen, sc[chosen]))]  # ascending score, then index
    out.append(members[chosen])
  return np.concatenate(out).astype(np.int32)


# ------------------------------------------------------------------------------------------
# Feature-space rules: herding and k-center.
#
# Each class's members are gathered into x [P, d] (P = n_c padded up to a multiple of a block
# size b, padding rows masked out) and viewed as [P/b, b, d]. The greedy loop is one jitted
# fori_loop; every step needs the squared distance from all rows to one vector, computed
# directly as ||x - v||^2 (the expanded ||x||^2 - 2x.v + ||v||^2 cancels badly in float32) one
# block at a time, so the temporary is [b, d]: memory O(N * d) in all, never O(N^2).
# b is the same for all classes, so one compilation serves every class of a similar size.


def _sqdist(x: jax.Array, v: jax.Array) -> jax.Array:
  """x [nb, b, d], v [d] -> float32 [nb, b] squared distances, one block at a time."""
  return jax.lax.map(lambda xb: jnp.sum(jnp.square(xb - v), axis=-1), x)


@functools.partial(jax.jit, static_argnames=("ipc",))
def _herding_class(x: jax.Array, valid: jax.Array, *, ipc: int) -> jax.Array:
  """x [nb, b, d], valid bool [nb, b] -> int32 [ipc] flat positions in selection order."""
  nb, b, d = x.shape
  mean = jnp.einsum("nbd,nb->d", x, valid.astype(x.dtype)) / valid.sum()

  def step(t, carry):
    total, taken, picks = carry
    # The pick that brings the mean of t+1 selected closest to the class mean minimises
    # ||(total + x) / (t+1) - mean||, i.e. ||x - ((t+1) * mean - total)||.
    dist = _sqdist(x, (t + 1) * mean - total)
    flat = jnp.argmin(jnp.where(valid & ~taken, dist, jnp.inf)).astype(jnp.int32)
    i, j = flat // b, flat % b
    return total + x[i, j], taken.at[i, j].set(True), picks.at[t].set(flat)

  init = (jnp.zeros((d,), x.dtype), jnp.zeros((nb, b), jnp.bool_), jnp.zeros((ipc,), jnp.int32))
  return jax.lax.fori_loop(0, ipc, step, init)[2]


@functools.partial(jax.jit, static_argnames=("ipc",))
def _kcenter_class(x: jax.Array, valid: jax.Array, key: jax.Array, *, ipc: int) -> jax.Array:
  """x [nb, b, d], valid bool [nb, b] (a prefix) -> int32 [ipc] flat positions, pick order."""
  nb, b, d = x.shape
  first = jax.random.randint(key, (), 0, valid.sum())  # valid rows are the first n_c

  def step(t, carry):
    mind, taken, picks = carry
    last = picks[t - 1]
    # Running distance of every row to its nearest selected center, updated with the newest.
    mind = jnp.minimum(mind, _sqdist(x, x[last // b, last % b]))
    taken = taken.at[last // b, last % b].set(True)
    # Taken rows are masked (not just at distance 0) so duplicates of a center can still be
    # picked, as distinct examples, once everything else is covered.
    flat = jnp.argmax(jnp.where(valid & ~taken, mind, -jnp.inf)).astype(jnp.int32)
    return mind, taken, picks.at[t].set(flat)

  init = (jnp.full((nb, b), jnp.inf, jnp.float32), jnp.zeros((nb, b), jnp.bool_),
          jnp.zeros((ipc,), jnp.int32).at[0].set(first))
  return jax.lax.fori_loop(1, ipc, step, init)[2]


def _per_class_features(features, labels, num_classes: int, ipc: int, block: int, who: str,
                        pick) -> np.ndarray:
  if int(block) != block or block < 1:
    raise ValueError(f"{who}: block must be an integer >= 1, got {block}")
  if not isinstance(features, (np.ndarray, jax.Array)):
    features = np.asarray(features)
  shape = tuple(features.shape)
  if len(shape) != 2:
    raise ValueError(f"{who} expects features [N, d], got shape {shape}")
  y = _host_labels(labels, shape[0], num_classes, ipc)
  host = isinstance(features, np.ndarray)
  xp = np if host else jnp
  if not np.issubdtype(np.dtype(features.dtype), np.floating):
    features = xp.asarray(features, np.float32)
  finite = np.asarray(xp.isfinite(features).all(axis=1))
  if not finite.all():
    raise _name_bad(~finite, "features are NaN or infinite", f"{who} needs finite features")
  members = [np.flatnonzero(y == c) for c in range(num_classes)]
  largest = max(len(m) for m in members)
  b = min(int(block), 1 << max(largest - 1, 0).bit_length())  # no block beyond the class
  picks = []
  for c, idx in enumerate(members):
    rows = -(-len(idx) // b) * b
    padded = np.concatenate([idx, np.full(rows - len(idx), idx[0])])  # any real row will do
    x = jnp.asarray(features[padded if host else jnp.asarray(padded)], jnp.float32)
    valid = jnp.asarray(np.arange(rows) < len(idx)).reshape(-1, b)
    picks.append(pick(x.reshape(-1, b, shape[1]), valid, c))  # dispatched, not yet waited on
  return np.concatenate([idx[np.asarray(p)] for idx, p in zip(members, picks)]).astype(np.int32)


def herding(features, labels, *, num_classes: int, ipc: int, block: int = 4096) -> np.ndarray:
  """Greedy herding within every class (Welling 2009; iCaRL's exemplar selection).

  Per class, repeatedly pick the not-yet-picked example whose addition brings the mean of the
  picked features closest (L2) to the class mean. Deterministic: ties go to the lowest index.
  iCaRL L2-normalises features first; pass normalised features to match it.

  Args:
    features: float [N, d] (NumPy on the host or a JAX array), e.g. a trained model's embeddings.
    labels: int [N] in [0, num_classes).
    block: rows per block of the distance computation; bounds the temporary to [block, d].
  Returns:
    int32 NumPy [num_classes * ipc], grouped by class in label order, each class's indices in
    pick order (earlier = more representative).
  Raises:
    ValueError for non-finite features (naming up to 5 indices), bad labels, ipc > a class.
  """
  return _per_class_features(features, labels, num_classes, ipc, block, "herding",
                             lambda x, valid, c: _herding_class(x, valid, ipc=ipc))


def kcenter(features, labels, key, *, num_classes: int, ipc: int,
            block: int = 4096) -> np.ndarray:
  """Greedy k-center within every class (Sener & Savarese 2018; farthest-first traversal).

  Per class, start from a uniformly random member (class c uses fold_in(key, c)), then
  repeatedly add the member farthest (L2) from its nearest selected center, keeping a running
  nearest-center distance per member. Ties go to the lowest index.

  Args:
    features: float [N, d] (NumPy on the host or a JAX array).
    labels: int [N] in [0, num_classes).
    key: JAX PRNG key or int seed; picks each class's first center.
    block: rows per block of the distance computation; bounds the temporary to [block, d].
  Returns:
    int32 NumPy [num_classes * ipc], grouped by class in label order, each class's indices in
    pick order (the random start first).
  Raises:
    ValueError for non-finite features (naming up to 5 indices), bad labels, ipc > a class.
  """
  key = _as_key(key)
  return _per_class_features(
      features, labels, num_classes, ipc, block, "kcenter",
      lambda x, valid, c: _kcenter_class(x, valid, jax.random.fold_in(key, c), ipc=ipc))
