"""Training-dynamics scores: train k models on the full set and score every example on the way.

`score_dynamics` trains k models of one architecture from k init keys, **vmapped** over their
stacked parameters and optimizer states: one jitted step trains all k on the same shuffled
batch (each with its own augmentation key), so k models cost one program and one pass over the
data per epoch. Scores are accumulated online, never dumped per epoch:

  forgetting  Toneva et al. 2019: forgetting events per example (`scores.forgetting_*`).
  aum         Pleiss et al. 2020: mean margin per example (`scores.aum_*`); higher = easier.
  el2n        Paul et al. 2021: EL2N of the models after `el2n_epoch` epochs, from an eval-mode
              forward over the un-augmented set, averaged over the k models.

Choice of logits for forgetting/AUM: the training-mode logits of the forward pass that computes
the step's gradient, i.e. on the augmented batch, before that step's update, as both papers do
(they record the mini-batch predictions made during training; no extra forward pass). Each
example is seen once per epoch, so each model adds `epochs` updates per example.

Every returned score is the mean over the k models of that model's score, float32 [N] in input
order. Model m (0-based) is driven by its own key fold_in(k_models, m), and the data order by
another key, both from `seed`; so models m..m+j-1 of a seed can be trained in another process
(`first_model=m, num_models=j`) and give the same models as in one k-model run.

The pure pieces (`DynamicsState`, the step and EL2N programs built by `_programs`) are jit-able;
`score_dynamics` is the stateful runner (epoch loop, checkpoints, progress bar).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from dcjax.runners import distributed
from dcjax import scores as S
from dcjax.augment import get_augmentation, in_normalised_space
from dcjax.runners.checkpoint import Checkpointer
from dcjax.errors import UserError
from dcjax.protocols import Recipe
from dcjax.runners.student import make_mesh
from dcjax.training import (Step, TrainState, batch_plan, init_state, make_optimizer, normalise,
                            pad_batch, plan_epoch, train_step)

Array = jax.Array

SCORES = ("el2n", "forgetting", "aum")
# Bumped when the meaning of a checkpoint's contents changes, so an old one is refused.
_CHECKPOINT_VERSION = 1


class DynamicsState(NamedTuple):
  """Everything a run carries from step to step (a pytree; k models stacked on axis 0).

  train: TrainState whose every leaf has a leading [k] axis (params, batch_stats, opt_state,
    step [k]).
  forgetting: ForgettingState with leaves [k, N].
  aum: AumState with leaves [k, N].
  el2n: float32 [k, N], each model's EL2N; NaN until epoch `el2n_epoch` is reached.
  """
  train: TrainState
  forgetting: S.ForgettingState
  aum: S.AumState
  el2n: Array


def _to_tree(state: DynamicsState) -> dict:
  # Plain dicts for orbax: it stores dicts by key, so the on-disk layout does not depend on
  # how NamedTuples are serialised.
  return dict(train=state.train, forgetting=state.forgetting._asdict(), aum=state.aum._asdict(),
              el2n=state.el2n)


def _from_tree(tree: dict) -> DynamicsState:
  return DynamicsState(train=tree["train"], forgetting=S.ForgettingState(**tree["forgetting"]),
                       aum=S.AumState(**tree["aum"]), el2n=tree["el2n"])


@dataclasses.dataclass(frozen=True)
class _Programs:
  """The jitted functions of one (model, recipe, data size, mesh); built once, reused."""
  init: Callable  # (init_keys [k]) -> DynamicsState (replicated)
  epoch_plan: Callable  # (key) -> (idx int32 [steps, B], weight float32 [steps, B])
  step: Callable  # see _programs
  el2n_batch: Callable  # (variables [k, ...], images_u8 [b,H,W,C], labels [b]) -> [k, b]
  batch: int
  steps: int


# Memoised so repeated runs (more seeds, a resumed run, tests) reuse the compiled programs:
# a fresh closure per call would retrace and recompile every jitted function.
@functools.lru_cache(maxsize=4)
def _programs(model: nn.Module, recipe: Recipe, mean: tuple, std: tuple, num_examples: int,
              image_shape: tuple, num_classes: int, mesh: jax.sharding.Mesh) -> _Programs:
  n = num_examples
  batch, steps = batch_plan(n, recipe.batch_size, mesh.shape["data"])
  real = min(recipe.batch_size, n)  # fresh examples per step, as the student runner
  tx = make_optimizer(recipe, steps)
  train_step_spec = Step(model, tx, get_augmentation(recipe.augment), mean, std,
                         augment_normalised=in_normalised_space(recipe.augment))
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P("data"))

  @functools.partial(jax.jit, out_shardings=replicated)
  def init(init_keys: Array) -> DynamicsState:
    """init_keys: key [k] -> the k fresh models and empty accumulators, stacked on axis 0."""
    k = init_keys.shape[0]

    one = lambda key: init_state(model, tx, key, image_shape)
    stack = lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *x.shape)), tree)
    return DynamicsState(train=jax.vmap(one)(init_keys), forgetting=stack(S.forgetting_init(n)),
                         aum=stack(S.aum_init(n)), el2n=jnp.full((k, n), jnp.nan, jnp.float32))

  @jax.jit
  def epoch_plan(key: Array) -> tuple[Array, Array]:
    # The same plan as train.Student's epochs.
    return plan_epoch(key, n, batch, steps, real)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: DynamicsState, images: Array, labels: Array, idx: Array, w: Array,
           aug_keys: Array, epoch: Array, s: Array) -> tuple[DynamicsState, Array]:
    """One training step of all k models on one batch, and their accumulator updates.

    Args:
      state: the k stacked models and accumulators.
      images: uint8 [N, H, W, C] and labels: int32 [N], the whole set (replicated).
      idx: int32 [B] dataset rows of this batch; w: float32 [B], 0 for padding rows.
      aug_keys: key [k], each model's augmentation stream; epoch, s: int32 scalars, mixed into
        it so that every (model, epoch, step) gets its own augmentation.
    Returns:
      (new state, per-model mean training loss float32 [k]).
    """
    x_u8 = jax.lax.with_sharding_constraint(images[idx], data_sharding)
    y = labels[idx]
    targets = jax.nn.one_hot(y, num_classes)
    # Padding rows (wrapped-around duplicates) get index n, which the accumulators drop: each
    # real example is then counted once per epoch and indices within the batch stay distinct.
    rows = jnp.where(w > 0, idx, n)

    def one(ts: TrainState, f: S.ForgettingState, a: S.AumState, key: Array):
      key = jax.random.fold_in(jax.random.fold_in(key, epoch), s)
      ts, loss, logits = train_step(train_step_spec, ts, x_u8, targets, w, key)
      f = S.forgetting_update(f, rows, logits, y)
      a = S.aum_update(a, rows, logits, y)
      return ts, f, a, loss

    ts, f, a, loss = jax.vmap(one)(state.train, state.forgetting, state.aum, aug_keys)
    return state._replace(train=ts, forgetting=f, aum=a), loss

  @jax.jit
  def el2n_batch(variables: Any, images_u8: Array, labels: Array) -> Array:
    """Eval-mode EL2N of each of the k models: variables [k, ...], images uint8 [b, H, W, C],
    labels [b] -> float32 [k, b]."""
    x = normalise(images_u8, mean, std)
    logits = jax.vmap(lambda v: model.apply(v, x, train=False))(variables)
    return jax.vmap(S.el2n, in_axes=(0, None))(logits, labels)

  return _Programs(init=init, epoch_plan=epoch_plan, step=step, el2n_batch=el2n_batch,
                   batch=batch, steps=steps)


def _el2n_all(programs: _Programs, variables: Any, images: np.ndarray, labels: np.ndarray,
              mesh: jax.sharding.Mesh, batch_size: int) -> np.ndarray:
  """EL2N [k, N] of the k stacked models on host images uint8 [N, H, W, C], in batches of a
  fixed (padded) shape so the program compiles once."""
  n = len(labels)
  ndev = mesh.shape["data"]
  bs = -(-min(batch_size, n) // ndev) * ndev
  sharding = NamedSharding(mesh, P("data"))
  out = []
  for start in range(0, n, bs):
    # The last batch is padded (one compiled shape); its padding rows are cut off below.
    x, y, _ = pad_batch(bs, images[start:start + bs], labels[start:start + bs])
    real = min(bs, n - start)
    e = programs.el2n_batch(variables, *distributed.global_array(sharding, (x, y)))
    out.append(distributed.to_host(e)[:, :real])  # [k, bs], gathered across processes
  return np.concatenate(out, axis=1)


def _check_inputs(images, labels, num_classes, num_models, first_model, epochs, el2n_epoch,
                  requested, eval_batch_size) -> tuple[np.ndarray, np.ndarray]:
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise UserError(f"score_dynamics expects images uint8 [N, H, W, C], got {images.dtype} "
                    f"{images.shape}")
  if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f"score_dynamics expects integer labels [N] with N={len(images)}, got "
                    f"{labels.dtype} {labels.shape}")
  if len(labels) == 0:
    raise UserError("score_dynamics needs at least one example, got N=0")
  if num_classes < 2:
    raise UserError(f"score_dynamics needs num_classes >= 2 (AUM's margin), got {num_classes}")
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if len(bad):
    raise UserError(f"labels outside [0, {num_classes}) at {len(bad)} example(s), indices "
                    f"[{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}]")
  is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
  for name, value, low in (("num_models", num_models, 1), ("epochs", epochs, 1),
                           ("first_model", first_model, 0),
                           ("eval_batch_size", eval_batch_size, 1)):
    if not is_int(value) or value < low:
      raise UserError(f"score_dynamics: {name} must be an integer >= {low}, got {value!r}")
  if not is_int(el2n_epoch) or not 0 <= el2n_epoch <= epochs:
    raise UserError(f"score_dynamics: el2n_epoch must be an integer in [0, epochs={epochs}], "
                    f"got {el2n_epoch!r}")
  if isinstance(requested, str):
    requested = (requested,)
  if not requested:
    raise UserError(f"score_dynamics: no scores asked for; choose from {', '.join(SCORES)}")
  unknown = [s for s in requested if s not in SCORES]
  if unknown:
    raise UserError(f"score_dynamics: unknown score(s) {', '.join(map(repr, unknown))}; known: "
                    f"{', '.join(SCORES)}")
  return images, labels.astype(np.int32)


def score_dynamics(images: np.ndarray, labels: np.ndarray, *, num_classes: int, model: nn.Module,
                   recipe: dict, mean: Sequence[float], std: Sequence[float], epochs: int,
                   seed: int, num_models: int = 4, first_model: int = 0,
                   mesh: jax.sharding.Mesh | None = None,
                   scores: Sequence[str] = SCORES, el2n_epoch: int | None = None,
                   checkpoint_dir: str | None = None, eval_batch_size: int = 1024,
                   on_epoch: Callable[[int, dict], None] | None = None, progress: bool = True,
                   return_params: bool = False):
  """Train k models vmapped on the whole set and return their training-dynamics scores.

  Args:
    images: uint8 [N, H, W, C]; labels: int [N] in [0, num_classes).
    num_classes: K >= 2.
    model: Flax module, logits = model.apply(variables, x, train=..., mask=...).
    recipe: a `protocols.Recipe`. Used: optimizer, lr, weight_decay,
      momentum, schedule, batch_size, augment. Its `epochs` is replaced by `epochs` (the
      schedule spans the run), and its labels / mixing are not used: the scores are defined on
      each example's own hard label, so training is hard-label without mixing.
    mean, std: per-channel normalisation after augmentation.
    epochs: t, the number of epochs to train.
    seed: all randomness (init keys, data order, augmentation) derives from it.
    num_models: k, models trained together (vmapped); scores are the mean over them.
    first_model: train models first_model .. first_model+k-1 of this seed's model streams
      (split k models of a seed over processes; model m is the same in every split).
    mesh: device mesh with a 'data' axis (default `train.make_mesh()`, all devices); batches
      are sharded over it, parameters replicated.
    scores: which of "el2n", "forgetting", "aum" to return ("el2n" costs an extra eval pass).
    el2n_epoch: after how many epochs EL2N is computed, in [0, epochs] (default `epochs`).
      Paul et al. use an early epoch (e.g. 20 of 200).
    checkpoint_dir: if given, the whole state (k models, optimizer states, accumulators, EL2N)
      is saved there after every epoch and a run resumes from the latest checkpoint; a resumed
      run returns exactly what an uninterrupted one would. A checkpoint of another
      configuration is refused.
    eval_batch_size: batch size of the EL2N eval pass.
    on_epoch: called as on_epoch(epoch, {"loss": mean loss over models}) after each epoch
      (after its checkpoint is saved).
    progress: show a tqdm bar over epochs.
    return_params: also return the k models' final variables.
  Returns:
    {name: float32 [N]} for the requested names, aligned to the input order: "el2n" (mean
    over models, higher = harder), "forgetting" (mean forgetting-event count, never-learned
    examples counted as in `scores.forgetting_scores`; higher = harder), "aum" (mean AUM,
    **higher = easier**; negate before rules that take lower = easier). With return_params,
    (scores, variables) where variables is the host pytree {"params", ["batch_stats"]} whose
    every leaf is stacked [k, ...] (model first_model + i at position i).
  Raises:
    UserError on bad input or a checkpoint of another configuration; FloatingPointError on a
    non-finite training loss (the last good checkpoint is kept).
  """
  el2n_epoch = epochs if el2n_epoch is None else el2n_epoch
  images, labels = _check_inputs(images, labels, num_classes, num_models, first_model, epochs,
                                 el2n_epoch, scores, eval_batch_size)
  requested = (scores,) if isinstance(scores, str) else tuple(scores)
  want_el2n = "el2n" in requested
  n, k = len(labels), int(num_models)
  mesh = mesh if mesh is not None else make_mesh()
  recipe = recipe.replace(epochs=int(epochs), labels="hard", mixing="none")
  programs = _programs(model, recipe, tuple(mean), tuple(std), n,
                       tuple(images.shape[1:]), int(num_classes), mesh)

  k_models, k_data = jax.random.split(jax.random.key(seed))
  model_keys = [jax.random.split(jax.random.fold_in(k_models, first_model + i)) for i in range(k)]
  init_keys = jnp.stack([mk[0] for mk in model_keys])
  replicated = NamedSharding(mesh, P())
  aug_keys = distributed.global_array(replicated, jnp.stack([mk[1] for mk in model_keys]))

  state = programs.init(init_keys)
  # The whole set on every device (steps gather their batch on the device); in a multi-process
  # run every process holds the whole set and places its own devices' copies.
  images_d, labels_d = distributed.global_array(replicated, (images, labels))

  # Everything that decides the result; a checkpoint must have been made with the same.
  config = dict(version=_CHECKPOINT_VERSION, seed=int(seed), num_examples=n, num_models=k,
                first_model=int(first_model), epochs=int(epochs), el2n_epoch=int(el2n_epoch),
                el2n=want_el2n, num_classes=int(num_classes), recipe=recipe.to_dict(),
                mean=list(map(float, mean)), std=list(map(float, std)), model=repr(model),
                image_shape=list(images.shape[1:]),
                labels_sha256=hashlib.sha256(labels.astype("<i4").tobytes()).hexdigest())
  config = json.loads(json.dumps(config, sort_keys=True))  # tuples -> lists, as restored
  start_epoch = 0
  ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir else None
  try:
    if ckpt is not None and ckpt.latest_step() is not None:
      restored, meta = ckpt.restore(ckpt.latest_step(), _to_tree(state))
      if meta.get("config") != config:
        theirs = meta.get("config") or {}
        diff = sorted(k for k in set(config) | set(theirs) if config.get(k) != theirs.get(k))
        raise UserError(f"checkpoint in {checkpoint_dir} is from another scoring run (differs in "
                        f"{', '.join(diff)}); use a fresh checkpoint_dir")
      state, start_epoch = _from_tree(restored), int(meta["epochs_done"])

    def maybe_el2n(done: int, state: DynamicsState) -> DynamicsState:
      if not want_el2n or done != el2n_epoch:
        return state
      e = _el2n_all(programs, state.train.variables, images, labels, mesh, eval_batch_size)
      return state._replace(el2n=distributed.global_array(replicated, e))

    if start_epoch == 0:
      state = maybe_el2n(0, state)
    bar = tqdm(range(start_epoch, epochs), desc="score dynamics", disable=not progress,
               leave=False, dynamic_ncols=True, initial=start_epoch, total=epochs)
    try:
      for epoch in bar:
        idx, weight = programs.epoch_plan(jax.random.fold_in(k_data, epoch))
        losses = []
        for s in range(programs.steps):
          state, loss = programs.step(state, images_d, labels_d, idx[s], weight[s], aug_keys,
                                      jnp.int32(epoch), jnp.int32(s))
          losses.append(loss)
        loss = float(jnp.mean(jnp.stack(losses)))  # syncs; one scalar per epoch
        if not math.isfinite(loss):
          raise FloatingPointError(
              f"non-finite training loss {loss} in epoch {epoch} (seed {seed}, models "
              f"{first_model}..{first_model + k - 1}); "
              + (f"the last good checkpoint is kept in {checkpoint_dir}" if ckpt else
                 "lower the recipe's lr or check the data"))
        done = epoch + 1
        state = maybe_el2n(done, state)
        bar.set_postfix(loss=f"{loss:.3f}")
        if ckpt is not None:
          ckpt.save(done, _to_tree(state), dict(epochs_done=done, loss=loss, config=config))
        if on_epoch is not None:
          on_epoch(epoch, dict(loss=loss))
    finally:
      bar.close()
  finally:
    if ckpt is not None:
      ckpt.close()

  # to_host: the accumulators may be sharded across processes; every process gets the scores.
  out: dict[str, np.ndarray] = {}
  if want_el2n:
    out["el2n"] = distributed.to_host(jnp.mean(state.el2n, axis=0)).astype(np.float32)
  if "forgetting" in requested:
    per_model = jax.vmap(S.forgetting_scores)(state.forgetting)
    out["forgetting"] = distributed.to_host(jnp.mean(per_model, axis=0)).astype(np.float32)
  if "aum" in requested:
    per_model = jax.vmap(S.aum_scores)(state.aum)
    out["aum"] = distributed.to_host(jnp.mean(per_model, axis=0)).astype(np.float32)
  if return_params:
    return out, distributed.to_host(state.train.variables)
  return out
