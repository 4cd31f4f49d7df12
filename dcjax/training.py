"""The training core: one pure train step and one pure eval step, used by every network dcjax
trains (students, the teacher, the k vmapped scoring models).

Everything here is a pure function of its arguments and jit-able; nothing reads a config, a
file or a device mesh. A `Step` is the static half of a step (model, optimizer, augmentation,
normalisation, mixing, teacher): a frozen, hashable dataclass, so it can be closed over or
passed as a static argument. The runners (`dcjax.runners.student`, `dcjax.runners.dynamics`)
are thin loops that place data on a mesh, shuffle, checkpoint and call these.

  state = init_state(model, tx, key, image_shape)
  state, loss, logits = train_step(step, state, images_u8, targets, weight, aug_key)
  top1_hits, top5_hits = eval_step(model, mean, std, variables, images_u8, labels, weight)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcjax.protocols import Recipe

Array = jax.Array
# (key, images float [B,H,W,C]) -> images, in [0,1] pixels or normalised (Step.augment_normalised)
Augment = Callable[[Array, Array], Array]
Mixing = Callable[[Array, Array, Array], tuple[Array, Array]]


@flax.struct.dataclass
class TrainState:
  step: Array
  params: Any
  batch_stats: Any  # {} for models without BatchNorm
  opt_state: Any

  @property
  def variables(self):
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: Array,
               image_shape: tuple) -> TrainState:
  """A fresh TrainState: `model.init` on one zero image of `image_shape`, `tx.init`."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def lr_at_epoch(recipe: Recipe, epoch: int | Array):
  """Learning rate during `epoch` (0-based): schedules are stepped per epoch, as in the
  benchmark's released code."""
  lr, epochs = recipe.lr, recipe.epochs
  if recipe.schedule == "cosine_epoch":
    return lr * 0.5 * (1 + jnp.cos(jnp.pi * epoch / epochs))
  if recipe.schedule == "step_half":
    return lr * jnp.where(epoch >= epochs // 2, 0.1, 1.0)
  if recipe.schedule == "dc_step":
    return lr * jnp.where(epoch >= dc_step_boundary(epochs), 0.1, 1.0)
  return lr * jnp.ones_like(jnp.asarray(epoch, jnp.float32))


def dc_step_boundary(epochs: int) -> int:
  """First epoch (0-based) at lr x 0.1 under 'dc_step', the DC/DSA code's schedule: it trains
  Epoch + 1 epochs (`epochs` = Epoch + 1) and decays after epoch Epoch // 2 + 1."""
  return (epochs - 1) // 2 + 2


class TraceRestartState(NamedTuple):
  count: Array
  trace: Any


def trace_restarted_at(decay: float, restart_count: int) -> optax.GradientTransformation:
  """Heavy-ball momentum (optax.trace, torch.optim.SGD's buffer) whose buffer restarts from
  zero at update number `restart_count`, as when the DC/DSA code rebuilds its optimizer at the
  learning-rate decay."""

  def init(params):
    return TraceRestartState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    keep = (state.count != restart_count).astype(jnp.float32)
    trace = jax.tree.map(lambda g, t: g + decay * keep * t, updates, state.trace)
    return trace, TraceRestartState(state.count + 1, trace)

  return optax.GradientTransformation(init, update)


def _decay_mask(params):
  # No weight decay on biases and normalisation parameters (every parameter with ndim <= 1).
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> optax.GradientTransformation:
  """The recipe's optimizer, its schedule stepped once per epoch of `steps_per_epoch` steps."""
  schedule = lambda count: lr_at_epoch(recipe, count // steps_per_epoch)
  if recipe.optimizer == "adamw":
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=recipe.weight_decay,
                       mask=_decay_mask)
  # torch.optim.SGD semantics: coupled L2 on every parameter, then heavy-ball momentum.
  if recipe.schedule == "dc_step":  # the optimizer is rebuilt at the decay: momentum restarts
    restart = dc_step_boundary(recipe.epochs) * steps_per_epoch
    return optax.chain(optax.add_decayed_weights(recipe.weight_decay),
                       trace_restarted_at(recipe.momentum, restart),
                       optax.scale_by_learning_rate(schedule))
  return optax.chain(optax.add_decayed_weights(recipe.weight_decay),
                     optax.sgd(schedule, momentum=recipe.momentum))


def batch_plan(num_examples: int, batch_size: int, num_devices: int) -> tuple[int, int]:
  """(per-step batch, steps per epoch). The last partial batch is kept (as torch's DataLoader
  with drop_last=False): the batch is padded with wrapped-around examples whose loss weight is
  zero, and rounded up to a multiple of the device count so it shards evenly."""
  b = min(batch_size, num_examples)
  b = -(-b // num_devices) * num_devices
  return b, -(-num_examples // min(batch_size, num_examples))


def plan_epoch(perm_key: Array, num_examples: int, batch: int, steps: int,
               real: int) -> tuple[Array, Array]:
  """One epoch's batches: (indices int32 [steps, batch], weights float32 [steps, batch]).

  Step s takes perm[s*real : (s+1)*real] of a random permutation; slots past `real` or past the
  end of the epoch wrap around and carry weight zero (static shapes, even sharding)."""
  perm = jax.random.permutation(perm_key, num_examples)
  slot = jnp.arange(batch)[None, :]
  flat = jnp.arange(steps)[:, None] * real + slot
  weight = ((slot < real) & (flat < num_examples)).astype(jnp.float32)
  return perm[flat % num_examples].astype(jnp.int32), weight


def pad_batch(size: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """Host arrays with a common leading length n <= size, grown to `size` rows with zeros, plus
  their weight float32 [size] (1 for the n real rows, 0 for padding): (*padded, weight).
  Fixed-shape batches compile once; the weight keeps padding out of every sum."""
  n = len(arrays[0])
  out = [np.concatenate([a, np.zeros((size - n, *a.shape[1:]), a.dtype)]) if n < size else a
         for a in arrays]
  weight = np.concatenate([np.ones(n, np.float32), np.zeros(size - n, np.float32)])
  return (*out, weight)


def unit_pixels(images: Array) -> Array:
  """float32 pixels in [0, 1] units: uint8 / 255, or float pixels (a distilled set's, which
  may leave [0, 1]) as they are."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalise(images_u8: Array, mean, std) -> Array:
  """uint8 [..., C] -> float32 (x / 255 - mean) / std, per channel."""
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def kl_divergence(teacher_logits: Array, student_logits: Array, temperature: float) -> Array:
  """Per-example KL(softmax(teacher/T) || softmax(student/T)), [B]. No T^2 factor (as the
  benchmark's released soft-label config)."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature)
  log_q = jax.nn.log_softmax(student_logits / temperature)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def apply_train_mode(model: nn.Module, params, batch_stats, x: Array, weight: Array):
  """Train-mode forward: (logits, updated batch_stats). Zero-weight (padding) rows are masked
  out of BatchNorm's batch statistics."""
  variables = {"params": params}
  if not batch_stats:
    return model.apply(variables, x, train=True), batch_stats
  variables["batch_stats"] = batch_stats
  logits, updates = model.apply(variables, x, train=True, mask=weight > 0,
                                mutable=["batch_stats"])
  return logits, updates["batch_stats"]


@dataclasses.dataclass(frozen=True)
class Step:
  """The static half of a training step.

  model: Flax module, logits = model.apply(variables, x, train=...).
  tx: the optimizer (`make_optimizer`).
  augment: pure (key, images float [B,H,W,C]) -> images.
  mean, std: per-channel normalisation (tuples).
  mixing: None, or pure (key, images, targets) -> (images, targets) on the normalised batch.
  teacher: None, or the teacher's module: the loss is then KL(teacher/T || student/T) on the
    same (mixed) images, with T = temperature; otherwise cross-entropy with the targets.
  """

  model: nn.Module
  tx: optax.GradientTransformation
  augment: Augment
  mean: tuple
  std: tuple
  mixing: Mixing | None = None
  teacher: nn.Module | None = None
  temperature: float = 1.0
  # False: augment [0,1] pixels, then normalise (torchvision transforms: rrc_flip, tile_crop).
  # True: normalise, then augment (the DC/DSA code's DSA: fills are the dataset mean and the
  # brightness jitter is in normalised units); `dcjax.augment.in_normalised_space(name)`.
  augment_normalised: bool = False


def train_step(step: Step, state: TrainState, images_u8: Array, targets: Array, weight: Array,
               aug_key: Array, mix_key: Array | None = None, teacher_variables: Any = None
               ) -> tuple[TrainState, Array, Array]:
  """One optimizer update on one batch.

  Args:
    step: the static half (see `Step`).
    state: the network's TrainState.
    images_u8: uint8 [B, H, W, C] (or float32 pixels in [0, 1] units: `unit_pixels`);
      targets: float [B, K] (one-hot or soft); weight: float32 [B], 0 for padding rows (they add
      nothing to the loss or to BatchNorm statistics).
    aug_key: key of the augmentation; mix_key: key of the mixing (when step.mixing is set).
    teacher_variables: the teacher's variables (when step.teacher is set).
  Returns:
    (new state, weighted mean loss float32 [], training-mode logits [B, K] of the forward pass
    that computed the gradient, i.e. before this update: forgetting and AUM read them).
  """
  mean, std = jnp.asarray(step.mean, jnp.float32), jnp.asarray(step.std, jnp.float32)
  x = unit_pixels(images_u8)
  if step.augment_normalised:
    x = step.augment(aug_key, (x - mean) / std)
  else:
    x = (step.augment(aug_key, x) - mean) / std
  if step.mixing is not None:
    # The teacher (if any) sees exactly the mixed images the student sees, so hard and soft
    # runs differ in their labels only.
    x, targets = step.mixing(mix_key, x, targets)
  teacher_logits = None
  if step.teacher is not None:
    teacher_logits = jax.lax.stop_gradient(step.teacher.apply(teacher_variables, x, train=False))

  def loss_fn(params, batch_stats):
    logits, batch_stats = apply_train_mode(step.model, params, batch_stats, x, weight)
    if teacher_logits is not None:
      per_example = kl_divergence(teacher_logits, logits, step.temperature)
    else:
      per_example = optax.softmax_cross_entropy(logits, targets)
    return jnp.sum(per_example * weight) / jnp.sum(weight), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats)
  updates, opt_state = step.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(state.step + 1, params, batch_stats, opt_state), loss, logits


def eval_step(model: nn.Module, mean, std, variables: Any, images_u8: Array, labels: Array,
              weight: Array) -> tuple[Array, Array]:
  """Weighted top-1 and top-5 hit counts (float32 scalars) of an eval-mode forward on images
  uint8 [B, H, W, C] with labels int [B]; padding rows carry weight 0."""
  logits = model.apply(variables, normalise(images_u8, mean, std), train=False)
  k = min(5, logits.shape[-1])
  hit = jax.lax.top_k(logits, k)[1] == labels[:, None]
  return jnp.sum(hit[:, 0] * weight), jnp.sum(hit.any(-1) * weight)
