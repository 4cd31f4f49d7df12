"""Selection rules: which examples a pruning method keeps.

`class_balanced` is pure and jit-able (num_classes and ipc static): it returns exactly `ipc`
source indices per class, grouped by class in label order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dcjax.errors import UserError, unknown_name

RULES = ("easy", "hard", "random")


@functools.partial(jax.jit, static_argnames=("num_classes", "ipc", "rule"))
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
    (check with `check_ipc` first: inside jit a short class cannot raise).
  """
  n = labels.shape[0]
  noise = jax.random.uniform(key, (n,))
  if rule == "random":
    key_ = noise
  elif rule == "easy":
    key_ = scores.astype(jnp.float32)
  elif rule == "hard":
    key_ = -scores.astype(jnp.float32)
  else:
    raise unknown_name("selection rule", rule, RULES)
  # Sort by (label, rule key, random tie-break): each class becomes one contiguous run.
  order = jnp.lexsort((noise, key_, labels))
  counts = jnp.bincount(labels, length=num_classes)
  starts = jnp.cumsum(counts) - counts
  take = starts[:, None] + jnp.arange(ipc)[None, :]
  return order[take.reshape(-1)].astype(jnp.int32)


def check_ipc(labels: np.ndarray, num_classes: int, ipc: int, class_names=None) -> None:
  """Raise UserError unless every class has at least `ipc` (>= 1) examples."""
  if ipc < 1:
    raise UserError(f"ipc must be >= 1, got {ipc}")
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  smallest = int(counts.argmin())
  if counts[smallest] < ipc:
    name = f" ({class_names[smallest]})" if class_names else ""
    raise UserError(f"ipc={ipc} is larger than the smallest class: class {smallest}{name} has "
                    f"{counts[smallest]} examples; use --config.ipc <= {counts[smallest]}")
