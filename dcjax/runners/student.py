"""Train a fresh student on a (compressed) set held on the device, and test it.

The compressed set lives on the device as uint8 [N, H, W, C] (an evaluated set of float pixels
as float32: `training.unit_pixels`); each epoch is one jitted shuffle,
then one jitted step per batch: gather the batch, augment and normalise, forward, backward,
update. Batches are sharded over the mesh's 'data' axis; parameters are replicated. Nothing
leaves the device inside an epoch, so the host never becomes the bottleneck.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from dcjax.augment import in_normalised_space
from dcjax.runners import distributed
from dcjax.runners.checkpoint import Checkpointer
from dcjax.mixing import get_mixing
from dcjax.protocols import Recipe
from dcjax.training import (Step, TrainState, batch_plan, eval_step, init_state, lr_at_epoch,
                            make_optimizer, pad_batch, plan_epoch, train_step)

Array = jax.Array


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (default all) with axis 'data'."""
  devices = jax.devices()[: num_devices or jax.device_count()]
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


@dataclasses.dataclass(frozen=True)
class Student:
  """The jitted functions that train and test one student recipe; build once, reuse per seed.

  Attributes:
    model: Flax module, logits = model.apply(variables, x, train=...).
    recipe: the training recipe (dcjax.protocols.Recipe).
    augment: pure (key, images float [B,H,W,C]) -> images, the recipe's augmentation; it sees
      [0,1] pixels or normalised images as `dcjax.augment.in_normalised_space(recipe.augment)`.
    mean, std: per-channel normalisation.
    mesh: device mesh with a 'data' axis.
    teacher: the teacher's Flax module when recipe['labels'] == 'teacher' (its variables are
      passed to `train_epoch` as an argument, so they are not baked into the executable).
  """

  model: nn.Module
  recipe: Recipe
  augment: Callable[[Array, Array], Array]
  mean: tuple
  std: tuple
  mesh: jax.sharding.Mesh
  teacher: nn.Module | None = None
  # Jitted functions per training-set size, built once and reused by every seed (a new
  # closure per seed would retrace and recompile).
  _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

  def _num_devices(self) -> int:
    return self.mesh.shape["data"]

  def init(self, key: Array, num_examples: int, image_shape: tuple) -> tuple[TrainState, Any]:
    tx, _ = self._compiled(num_examples)
    state = init_state(self.model, tx, key, image_shape)
    # Every process builds the same parameters from the same key; each places its own copy.
    return distributed.global_array(NamedSharding(self.mesh, P()), state), tx

  def _compiled(self, num_examples: int):
    """(optimizer, train_epoch) for a training set of `num_examples`, memoised."""
    if num_examples not in self._cache:
      _, steps = batch_plan(num_examples, self.recipe.batch_size, self._num_devices())
      tx = make_optimizer(self.recipe, steps)
      self._cache[num_examples] = (tx, self._train_epoch_fn(tx, num_examples))
    return self._cache[num_examples]

  def train_epoch_fn(self, num_examples: int):
    return self._compiled(num_examples)[1]

  def _train_epoch_fn(self, tx, num_examples: int):
    """(state, images_u8 [N,H,W,C], labels [N], key, teacher_vars) -> (state, mean loss) for
    one epoch: one jitted shuffle, then one jitted `training.train_step` per batch."""
    recipe = self.recipe
    batch, steps = batch_plan(num_examples, recipe.batch_size, self._num_devices())
    data_sharding = NamedSharding(self.mesh, P("data"))
    use_teacher = recipe.labels == "teacher"
    if use_teacher and self.teacher is None:
      raise ValueError("recipe uses teacher labels but the Student has no teacher")
    step = Step(self.model, tx, self.augment, tuple(self.mean), tuple(self.std),
                mixing=get_mixing(recipe.mixing), teacher=self.teacher if use_teacher else None,
                temperature=float(recipe.temperature),
                augment_normalised=in_normalised_space(recipe.augment))
    num_classes = self.model.num_classes
    real = min(recipe.batch_size, num_examples)  # fresh examples per step

    @jax.jit
    def epoch_plan(key):
      k_perm, k_aug = jax.random.split(key)
      idx, weight = plan_epoch(k_perm, num_examples, batch, steps, real)
      return idx, weight, jax.random.split(k_aug, steps)

    @functools.partial(jax.jit, donate_argnums=0)
    def one_step(state, images, labels, idx, w, k, teacher_vars):
      k_aug, k_mix = jax.random.split(k)
      x = jax.lax.with_sharding_constraint(images[idx], data_sharding)
      # Class ids [N], or soft targets [N, K] (labels stored with an evaluated set).
      targets = labels[idx] if labels.ndim == 2 else jax.nn.one_hot(labels[idx], num_classes)
      state, loss, _ = train_step(step, state, x, targets, w, k_aug, k_mix, teacher_vars)
      return state, loss

    def train_epoch(state, images, labels, key, teacher_vars=None):
      # A Python loop over jitted steps, not lax.scan: XLA:CPU runs convolutions inside a
      # while loop ~35x slower (measured: 23.8 s vs 0.66 s for one ConvNet-3 step of 100
      # images), and per-step dispatch costs nothing next to a conv step on any device.
      idx, weight, keys = epoch_plan(key)
      losses = []
      for s in range(steps):
        state, loss = one_step(state, images, labels, idx[s], weight[s], keys[s], teacher_vars)
        losses.append(loss)
      return state, jnp.mean(jnp.stack(losses))

    return train_epoch

  def eval_fn(self):
    """jitted (variables, images_u8 [B,H,W,C], labels [B], weight [B]) -> (top1, top5 hits),
    built once per Student."""
    if "eval" not in self._cache:
      self._cache["eval"] = jax.jit(functools.partial(eval_step, self.model, tuple(self.mean),
                                                      tuple(self.std)))
    return self._cache["eval"]


def evaluate(student: Student, eval_batch, variables, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 1000, *, process_local: bool = False) -> tuple[float, float]:
  """Top-1 / top-5 accuracy (%) of `variables` on host arrays images uint8 [N,H,W,C].

  In a multi-process run every process calls this together. By default each passes the whole
  test set and places the rows of each batch its devices hold; with `process_local=True` each
  passes only its own share (e.g. `sources.process_indices`) and the accuracy is over the union
  of the shares. Every process gets the same result; in one process both modes are the same.
  """
  ndev = student.mesh.shape["data"]
  sharding = NamedSharding(student.mesh, P("data"))
  if process_local:
    n, most = distributed.process_sum_and_max(len(labels))
  else:
    n = most = len(labels)
  bs = -(-min(batch_size, n) // ndev) * ndev
  # Rows of each global batch this process supplies (all of them unless process_local).
  local = distributed.process_slice(sharding, bs) if process_local else slice(0, bs)
  local_bs = local.stop - local.start
  top1 = top5 = 0.0
  for start in range(0, most, local_bs):  # the same number of batches in every process
    x, y, w = pad_batch(local_bs, images[start:start + local_bs],
                        labels[start:start + local_bs])
    if process_local:
      batch = [distributed.from_process_local(sharding, a, bs) for a in (x, y, w)]
    else:  # every process holds the whole batch and places the rows its devices hold
      batch = distributed.global_array(sharding, (x, y, w))
    h1, h5 = eval_batch(variables, *batch)
    top1 += float(h1)
    top5 += float(h5)
  return 100.0 * top1 / n, 100.0 * top5 / n


def train_student(student: Student, images: np.ndarray, labels: np.ndarray, seed: int, *,
                  teacher_variables: Any = None, checkpoint_dir: str | None = None,
                  checkpoint_every: int = 0, on_epoch: Callable[[int, dict], None] | None = None,
                  progress: bool = True, desc: str = "train") -> tuple[Any, dict]:
  """Train a fresh student from `seed` on images uint8 [N,H,W,C] (or float32 pixels in [0, 1]
  units) / labels int [N] (or soft
  targets float [N, K], rows summing to 1).

  With `checkpoint_dir`, the state (params, optimizer, batch stats, RNG key, epoch) is saved
  every `checkpoint_every` epochs and at the end, and training resumes from the latest
  checkpoint there: epoch e always uses key fold_in(train_key, e), so a resumed run computes
  exactly what an uninterrupted one would (bitwise on CPU). A non-finite loss raises
  FloatingPointError naming the epoch and seed; the last good checkpoint is kept.
  `on_epoch(epoch, {"loss", "lr", "images_per_second"})` is called after every epoch.

  Returns (variables, stats) with stats = {train_seconds, final_loss, images_per_second,
  resumed_from_epoch}.
  """
  n = len(labels)
  key = jax.random.key(seed)
  k_init, k_train = jax.random.split(key)
  state, _ = student.init(k_init, n, images.shape[1:])
  train_epoch = student.train_epoch_fn(n)
  replicated = NamedSharding(student.mesh, P())
  labels = np.asarray(labels)
  labels = labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int32)
  images_d, labels_d = distributed.global_array(replicated, (images, labels))
  # The checkpointed key, as a global array: orbax refuses a process-local one in a
  # multi-process run.
  rng_data = distributed.global_array(replicated, jax.random.key_data(k_train))
  epochs = student.recipe.epochs
  start_epoch, prior_seconds, loss = 0, 0.0, float("nan")
  ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir else None
  if ckpt is not None and ckpt.latest_step() is not None:
    target = dict(state=state, rng=rng_data)
    restored, meta = ckpt.restore(ckpt.latest_step(), target)
    state, start_epoch = restored["state"], int(meta["epochs_done"])
    prior_seconds, loss = float(meta["train_seconds"]), float(meta["loss"])
    if meta["seed"] != seed or meta["num_examples"] != n:
      raise ValueError(f"checkpoint in {checkpoint_dir} is for seed {meta['seed']} / "
                       f"{meta['num_examples']} examples, not seed {seed} / {n}")
  start = time.perf_counter()
  bar = tqdm(range(start_epoch, epochs), desc=desc, disable=not progress, leave=False,
             dynamic_ncols=True, initial=start_epoch, total=epochs)
  try:
    for epoch in bar:
      t0 = time.perf_counter()
      state, loss_d = train_epoch(state, images_d, labels_d, jax.random.fold_in(k_train, epoch),
                                  teacher_variables)
      loss = float(loss_d)  # syncs; one scalar per epoch
      if not math.isfinite(loss):
        raise FloatingPointError(
            f"non-finite training loss {loss} in epoch {epoch} (seed {seed}); "
            + ("the last good checkpoint is kept in " + checkpoint_dir if ckpt else
               "lower eval.lr or check the data"))
      info = dict(loss=loss, lr=float(lr_at_epoch(student.recipe, epoch)),
                  images_per_second=n / (time.perf_counter() - t0))
      bar.set_postfix(loss=f"{loss:.3f}", lr=f"{info['lr']:.2e}",
                      img_s=f"{info['images_per_second']:.0f}")
      if on_epoch is not None:
        on_epoch(epoch, info)
      done = epoch + 1
      if ckpt is not None and (done == epochs or (checkpoint_every and done % checkpoint_every == 0)):
        ckpt.save(done, dict(state=state, rng=rng_data),
                  dict(epochs_done=done, seed=seed, num_examples=n, loss=loss,
                       train_seconds=prior_seconds + time.perf_counter() - start))
  finally:
    bar.close()
    if ckpt is not None:
      ckpt.close()
  seconds = prior_seconds + time.perf_counter() - start
  return state.variables, dict(train_seconds=seconds, final_loss=loss,
                               images_per_second=(epochs * n) / seconds if seconds else 0.0,
                               resumed_from_epoch=start_epoch)
