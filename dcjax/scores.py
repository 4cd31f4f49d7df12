"""Per-example difficulty scores for pruning: pure, jit-able functions.

Every score is float32 [B] (or [N] for the accumulators), one number per example, and follows
one orientation unless said otherwise: **higher = harder** (more informative, less typical), so
`select.class_balanced(..., rule='easy')` keeps the lowest and `rule='hard'` the highest. The one
score that points the other way is AUM's margin (higher = easier); `aum_scores(...,
as_difficulty=True)` negates it into the common orientation.

Single-pass scores, from the logits [B, K] of one model:
  `el2n`    ||softmax(logits) - onehot(label)||_2               (Paul et al. 2021)
  `entropy` -sum_k p_k log p_k, natural log                      (uncertainty)
  `loss`    cross-entropy -log p_label
  `margin`  logit_label - max_{k != label} logit_k               (AUM's per-step margin; easy-high)
  `el2n_mean` EL2N averaged over k models' logits [k, B, K]      (Paul et al.: k = 10 runs)
  `grand`   per-example ||d CE / d params||_2                    (GraNd, Paul et al. 2021)

Training-dynamics scores are streaming accumulators in optax style: `*_init(n) -> state`,
`*_update(state, indices, logits, labels) -> state`, `*_scores(state) -> [N]`. `indices` int
[B] are the dataset positions of the batch's rows, so a shuffled epoch can be fed batch by
batch and gives the same state as feeding the epoch in index order. Within one update call the
indices must be distinct (each example at most once per batch, as in any epoch). A padded last
batch may mark its padding rows with index `n` (any index >= n): those rows are ignored, so the
batch shape, and with it the compiled update, stays fixed. Examples that were never updated get
a NaN score, which `dcjax.select` rejects with their indices, rather than a silently made-up one.

Labels are not range-checked inside jit (they cannot be): a label outside [0, K) gives a
meaningless score, not an error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


Array = jax.Array
ApplyFn = Callable[[Any, Array], Array]


def _check_logits(logits: Array, labels: Array | None, who: str, batch_axes: int = 1) -> None:
  # Shapes are static, so these checks run once at trace time and cost nothing under jit.
  want = "[k, B, K]" if batch_axes == 2 else "[B, K]"
  if logits.ndim != batch_axes + 1:
    raise ValueError(f"{who} expects logits {want}, got shape {tuple(logits.shape)}")
  if labels is not None and (labels.ndim != 1 or labels.shape[0] != logits.shape[-2]):
    raise ValueError(f"{who} expects labels [B] with B={logits.shape[-2]} (the logits' rows), "
                    f"got shape {tuple(labels.shape)}")


# ------------------------------------------------------------------------------------------
# Single-pass scores.


@jax.jit
def el2n(logits: Array, labels: Array) -> Array:
  """EL2N: the L2 error of the predicted distribution.

  Args:
    logits: float [B, K].
    labels: int [B] in [0, K).
  Returns:
    float32 [B], ||softmax(logits) - onehot(labels)||_2, in [0, sqrt(2)].
  """
  _check_logits(logits, labels, "el2n")
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.linalg.norm(p - jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), axis=-1)


@jax.jit
def entropy(logits: Array) -> Array:
  """Entropy of softmax(logits) in nats.

  Args:
    logits: float [B, K].
  Returns:
    float32 [B] in [0, log K].
  """
  _check_logits(logits, None, "entropy")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  p = jnp.exp(logp)
  # 0 * log 0 = 0: a class with logit -inf has logp = -inf, and 0 * -inf would be NaN.
  return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)


@jax.jit
def loss(logits: Array, labels: Array) -> Array:
  """Per-example cross-entropy -log softmax(logits)[label].

  Args:
    logits: float [B, K].
    labels: int [B] in [0, K).
  Returns:
    float32 [B], >= 0.
  """
  _check_logits(logits, labels, "loss")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


@jax.jit
def margin(logits: Array, labels: Array) -> Array:
  """The label's logit minus the largest other logit (AUM's per-step margin, on raw logits).

  Positive iff the example is classified correctly (barring exact ties). Note the orientation:
  higher = easier, the opposite of the other scores.

  Args:
    logits: float [B, K] with K >= 2.
    labels: int [B] in [0, K).
  Returns:
    float32 [B].
  """
  _check_logits(logits, labels, "margin")
  if logits.shape[-1] < 2:
    raise ValueError(f"margin needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
  z = logits.astype(jnp.float32)
  is_label = jax.nn.one_hot(labels, z.shape[-1], dtype=jnp.bool_)
  assigned = jnp.sum(jnp.where(is_label, z, 0.0), axis=-1)
  other = jnp.max(jnp.where(is_label, -jnp.inf, z), axis=-1)
  return assigned - other


@jax.jit
def el2n_mean(logits: Array, labels: Array) -> Array:
  """EL2N averaged over k models (Paul et al. average over independently trained runs).

  Args:
    logits: float [k, B, K], the logits of each of k models for the same B examples.
    labels: int [B].
  Returns:
    float32 [B], mean over the k models of `el2n`.
  """
  _check_logits(logits, labels, "el2n_mean", batch_axes=2)
  return jnp.mean(jax.vmap(el2n, in_axes=(0, None))(logits, labels), axis=0)


# ------------------------------------------------------------------------------------------
# GraNd: per-example gradient norms.


def _subtree(params: Any, path: tuple[str, ...]) -> Any:
  node = params
  for i, name in enumerate(path):
    if not isinstance(node, Mapping) or name not in node:
      here = "/".join(path[:i]) or "the top level"
      keys = sorted(node) if isinstance(node, Mapping) else []
      raise ValueError(f"last_layer {'/'.join(path)!r}: no {name!r} under {here}; "
                      f"keys there: {', '.join(map(str, keys)) or '(not a mapping)'}")
    node = node[name]
  return node


def _replace(params: Any, path: tuple[str, ...], value: Any) -> Any:
  # Rebuild only the mappings along `path`, keeping their type (dict or flax FrozenDict), so
  # the rest of the tree is shared and apply_fn sees the structure it was built for.
  if not path:
    return value
  new = dict(params)
  new[path[0]] = _replace(params[path[0]], path[1:], value)
  return new if type(params) is dict else type(params)(new)


def _global_norm(tree: Any) -> Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


@functools.partial(jax.jit, static_argnames=("apply_fn", "last_layer", "chunk"))
def grand(apply_fn: ApplyFn, params: Any, images: Array, labels: Array, *,
          last_layer: str | None = None, chunk: int | None = None) -> Array:
  """GraNd: the norm of each example's own cross-entropy gradient w.r.t. the parameters.

  Each example's gradient is taken alone (vmap of grad over single examples), so nothing is
  averaged over the batch. Use an `apply_fn` in inference mode (e.g. BatchNorm on running
  statistics, closed over): in training mode a single example would be normalised by its own
  statistics.

  Args:
    apply_fn: `apply_fn(params, images [b, ...]) -> logits [b, K]`. Static under jit and hashed
      by identity: build it once and reuse it, or every call compiles anew.
    params: the parameters to differentiate (a pytree; only trainable ones, so close over
      batch statistics in apply_fn instead of passing them here).
    images: [B, ...] inputs; labels: int [B] in [0, K).
    last_layer: None for the full gradient; or the key of a sub-tree of the (nested mapping)
      params, '/'-separated for nested keys (e.g. 'fc' for this repo's models, whose linen
      params are {'fc': {'kernel', 'bias'}, ...}): then only the gradient w.r.t. that sub-tree
      counts. The cheap variant: the backward pass stops at that layer.
    chunk: None computes all B per-example gradients at once, which holds B copies of the
      gradient (B x #params floats); an int computes `chunk` examples at a time (lax.map).
  Returns:
    float32 [B], the per-example gradient norms (the global L2 norm over all leaves).
  """
  if images.ndim < 1 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise ValueError(f"grand expects images [B, ...] and labels [B], got shapes "
                    f"{tuple(images.shape)} and {tuple(labels.shape)}")
  if chunk is not None and chunk < 1:
    raise ValueError(f"grand: chunk must be >= 1 or None, got {chunk}")
  path = tuple(last_layer.split("/")) if last_layer else ()
  wrt = _subtree(params, path)

  def example_loss(sub, x, y):
    logits = apply_fn(_replace(params, path, sub), x[None])
    return loss(logits, y[None])[0]

  def one(xy):
    return _global_norm(jax.grad(example_loss)(wrt, *xy))

  if chunk is None:
    return jax.vmap(one)((images, labels))
  return jax.lax.map(one, (images, labels), batch_size=chunk)


# ------------------------------------------------------------------------------------------
# Training-dynamics accumulators.


def _check_update(indices: Array, logits: Array, labels: Array, who: str) -> None:
  _check_logits(logits, labels, who)
  if indices.shape != labels.shape:
    raise ValueError(f"{who} expects indices [B] with B={labels.shape[0]}, "
                    f"got shape {tuple(indices.shape)}")
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"{who} expects integer indices, got dtype {indices.dtype}")


def _check_n(n: int, who: str) -> None:
  if int(n) < 0:
    raise ValueError(f"{who}: the number of examples must be >= 0, got {n}")


class ForgettingState(NamedTuple):
  """Forgetting-event counts for N examples (a pytree).

  last_correct: bool [N], whether the example was classified correctly at its last update.
  ever_correct: bool [N], whether it was ever classified correctly (learned at least once).
  forgets: int32 [N], transitions correct -> incorrect between consecutive updates.
  seen: int32 [N], number of updates that included the example.
  """
  last_correct: Array
  ever_correct: Array
  forgets: Array
  seen: Array


def forgetting_init(n: int) -> ForgettingState:
  """Empty forgetting state for `n` examples."""
  _check_n(n, "forgetting_init")
  false, zero = jnp.zeros((n,), jnp.bool_), jnp.zeros((n,), jnp.int32)
  return ForgettingState(last_correct=false, ever_correct=false, forgets=zero, seen=zero)


@jax.jit
def forgetting_update(state: ForgettingState, indices: Array, logits: Array,
                      labels: Array) -> ForgettingState:
  """Record one presentation of the examples `indices` (Toneva et al. 2019).

  Correct means argmax(logits) == label. A forgetting event is correct at the example's
  previous update and incorrect now; the first update cannot be one.

  Args:
    state: from `forgetting_init(n)` or a previous update.
    indices: int [B], distinct dataset positions; indices >= n (padding) are ignored.
    logits: float [B, K]; labels: int [B].
  Returns:
    The new state.
  """
  _check_update(indices, logits, labels, "forgetting_update")
  correct = jnp.argmax(logits, axis=-1) == labels
  # Padding rows (index >= n) read a harmless fill and their writes are dropped.
  was = state.last_correct.at[indices].get(mode="fill", fill_value=False)
  forgot = (was & ~correct).astype(jnp.int32)
  return ForgettingState(
      last_correct=state.last_correct.at[indices].set(correct, mode="drop"),
      ever_correct=state.ever_correct.at[indices].max(correct, mode="drop"),
      forgets=state.forgets.at[indices].add(forgot, mode="drop"),
      seen=state.seen.at[indices].add(1, mode="drop"))


@jax.jit
def forgetting_scores(state: ForgettingState) -> Array:
  """Number of forgetting events per example; higher = harder.

  Convention: an example never classified correctly (never learned) scores max(forgets) + 1,
  one more than the most-forgotten learned example, so it ranks hardest as in Toneva et al.,
  who count it as forgotten infinitely often (they store 1000). A bounded value keeps the
  score range meaningful for range-based selection such as `select.ccs`. Examples never
  updated score NaN.

  Returns:
    float32 [N].
  """
  counts = state.forgets.astype(jnp.float32)
  never_learned = counts.max(initial=0.0) + 1.0
  scores = jnp.where(state.ever_correct, counts, never_learned)
  return jnp.where(state.seen > 0, scores, jnp.nan)


class AumState(NamedTuple):
  """Accumulated margins for N examples (a pytree).

  margin_sum: float32 [N], sum of `margin` over the example's updates.
  seen: int32 [N], number of updates that included the example.
  """
  margin_sum: Array
  seen: Array


def aum_init(n: int) -> AumState:
  """Empty AUM state for `n` examples."""
  _check_n(n, "aum_init")
  return AumState(margin_sum=jnp.zeros((n,), jnp.float32), seen=jnp.zeros((n,), jnp.int32))


@jax.jit
def aum_update(state: AumState, indices: Array, logits: Array, labels: Array) -> AumState:
  """Add one presentation's margins (Pleiss et al. 2020, Area Under the Margin).

  Args:
    state: from `aum_init(n)` or a previous update.
    indices: int [B], distinct dataset positions; indices >= n (padding) are ignored.
    logits: float [B, K] (raw logits, as AUM uses); labels: int [B].
  Returns:
    The new state.
  """
  _check_update(indices, logits, labels, "aum_update")
  return AumState(margin_sum=state.margin_sum.at[indices].add(margin(logits, labels), mode="drop"),
                  seen=state.seen.at[indices].add(1, mode="drop"))


@functools.partial(jax.jit, static_argnames=("as_difficulty",))
def aum_scores(state: AumState, *, as_difficulty: bool = False) -> Array:
  """AUM: each example's mean margin over its updates.

  Higher AUM = easier (mislabelled examples have negative AUM). The selection rules take
  lower = easier, so pass `as_difficulty=True` (which returns -AUM) before `rule='easy'` or
  `select.ccs`.

  Returns:
    float32 [N]; NaN for examples never updated.
  """
  mean = state.margin_sum / jnp.maximum(state.seen, 1).astype(jnp.float32)
  mean = jnp.where(state.seen > 0, mean, jnp.nan)
  return -mean if as_difficulty else mean
