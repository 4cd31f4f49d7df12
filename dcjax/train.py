"""Train a fresh student on a (compressed) set held on the device, and test it.

The compressed set lives on the device as uint8 [N, H, W, C]; one jitted call runs a whole
epoch (`lax.scan` over steps): shuffle, gather the batch, augment, normalise, forward, backward,
update. Batches are sharded over the mesh's 'data' axis; parameters are replicated. Nothing
leaves the device inside an epoch, so the host never becomes the bottleneck.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from dcjax import distributed
from dcjax.checkpoint import Checkpointer
from dcjax.mixing import get_mixing

Array = jax.Array


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (default all) with axis 'data'."""
  devices = jax.devices()[: num_devices or jax.device_count()]
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


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


def lr_at_epoch(recipe: dict, epoch: int | Array):
  """Learning rate during `epoch` (0-based): schedules are stepped per epoch, as in the
  benchmark's released code."""
  lr, epochs = recipe["lr"], recipe["epochs"]
  if recipe["schedule"] == "cosine_epoch":
    return lr * 0.5 * (1 + jnp.cos(jnp.pi * epoch / epochs))
  if recipe["schedule"] == "step_half":
    return lr * jnp.where(epoch >= epochs // 2, 0.1, 1.0)
  return lr * jnp.ones_like(jnp.asarray(epoch, jnp.float32))


def _decay_mask(params):
  # No weight decay on biases and normalisation parameters (every parameter with ndim <= 1).
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(recipe: dict, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = lambda count: lr_at_epoch(recipe, count // steps_per_epoch)
  if recipe["optimizer"] == "adamw":
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=recipe["weight_decay"],
                       mask=_decay_mask)
  # torch.optim.SGD semantics: coupled L2 on every parameter, then heavy-ball momentum.
  return optax.chain(optax.add_decayed_weights(recipe["weight_decay"]),
                     optax.sgd(schedule, momentum=recipe["momentum"]))


def batch_plan(num_examples: int, batch_size: int, num_devices: int) -> tuple[int, int]:
  """(per-step batch, steps per epoch). The last partial batch is kept (as torch's DataLoader
  with drop_last=False): the batch is padded with wrapped-around examples whose loss weight is
  zero, and rounded up to a multiple of the device count so it shards evenly."""
  b = min(batch_size, num_examples)
  b = -(-b // num_devices) * num_devices
  return b, -(-num_examples // min(batch_size, num_examples))


def kl_divergence(teacher_logits: Array, student_logits: Array, temperature: float) -> Array:
  """Per-example KL(softmax(teacher/T) || softmax(student/T)), [B]. No T^2 factor (as the
  benchmark's released soft-label config)."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature)
  log_q = jax.nn.log_softmax(student_logits / temperature)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


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


def normalise(images_u8: Array, mean, std) -> Array:
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Student:
  """The jitted functions that train and test one student recipe; build once, reuse per seed.

  Attributes:
    model: Flax module, logits = model.apply(variables, x, train=...).
    recipe: resolved protocol (see dcjax.protocols.resolve).
    augment: pure (key, images float [B,H,W,C] in [0,1]) -> images.
    mean, std: per-channel normalisation applied after augmentation.
    mesh: device mesh with a 'data' axis.
    teacher: the teacher's Flax module when recipe['labels'] == 'teacher' (its variables are
      passed to `train_epoch` as an argument, so they are not baked into the executable).
  """

  model: nn.Module
  recipe: dict
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
    variables = self.model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))
    # Every process builds the same parameters from the same key; each places its own copy.
    return distributed.global_array(NamedSharding(self.mesh, P()), state), tx

  def _compiled(self, num_examples: int):
    """(optimizer, train_epoch) for a training set of `num_examples`, memoised."""
    if num_examples not in self._cache:
      _, steps = batch_plan(num_examples, self.recipe["batch_size"], self._num_devices())
      tx = make_optimizer(self.recipe, steps)
      self._cache[num_examples] = (tx, self._train_epoch_fn(tx, num_examples))
    return self._cache[num_examples]

  def train_epoch_fn(self, num_examples: int):
    return self._compiled(num_examples)[1]

  def _train_epoch_fn(self, tx, num_examples: int):
    """(state, images_u8 [N,H,W,C], labels [N], key, teacher_vars) -> (state, mean loss) for
    one epoch:
    one jitted shuffle, then one jitted step per batch."""
    batch, steps = batch_plan(num_examples, self.recipe["batch_size"], self._num_devices())
    data_sharding = NamedSharding(self.mesh, P("data"))
    model, augment, mean, std = self.model, self.augment, self.mean, self.std

    mixing = get_mixing(self.recipe["mixing"])
    use_teacher = self.recipe["labels"] == "teacher"
    temperature = float(self.recipe["temperature"])
    teacher = self.teacher
    if use_teacher and teacher is None:
      raise ValueError("recipe uses teacher labels but the Student has no teacher")

    def loss_fn(params, batch_stats, x, targets, teacher_logits, w):
      logits, batch_stats = apply_train_mode(model, params, batch_stats, x, w)
      if teacher_logits is not None:
        per_example = kl_divergence(teacher_logits, logits, temperature)
      else:
        per_example = optax.softmax_cross_entropy(logits, targets)
      return jnp.sum(per_example * w) / jnp.sum(w), batch_stats

    def normalise_and_augment(key, x_u8):
      x = augment(key, x_u8.astype(jnp.float32) / 255.0)
      return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)

    real = min(self.recipe["batch_size"], num_examples)  # fresh examples per step

    @jax.jit
    def epoch_plan(key):
      k_perm, k_aug = jax.random.split(key)
      idx, weight = plan_epoch(k_perm, num_examples, batch, steps, real)
      return idx, weight, jax.random.split(k_aug, steps)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, images, labels, idx, w, k, teacher_vars):
      k_aug, k_mix = jax.random.split(k)
      x = jax.lax.with_sharding_constraint(images[idx], data_sharding)
      x = normalise_and_augment(k_aug, x)
      targets = jax.nn.one_hot(labels[idx], model.num_classes)
      # Mixing acts on the normalised batch; the teacher (if any) sees exactly the mixed images
      # the student sees, so hard and soft runs differ in their labels only.
      x, targets = mixing(k_mix, x, targets)
      teacher_logits = None
      if use_teacher:
        teacher_logits = jax.lax.stop_gradient(teacher.apply(teacher_vars, x, train=False))
      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, state.batch_stats, x, targets, teacher_logits, w)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      return TrainState(state.step + 1, params, batch_stats, opt_state), loss

    def train_epoch(state, images, labels, key, teacher_vars=None):
      # A Python loop over jitted steps, not lax.scan: XLA:CPU runs convolutions inside a
      # while loop ~35x slower (measured: 23.8 s vs 0.66 s for one ConvNet-3 step of 100
      # images), and per-step dispatch costs nothing next to a conv step on any device.
      idx, weight, keys = epoch_plan(key)
      losses = []
      for s in range(steps):
        state, loss = train_step(state, images, labels, idx[s], weight[s], keys[s],
                                 teacher_vars)
        losses.append(loss)
      return state, jnp.mean(jnp.stack(losses))

    return train_epoch

  def eval_fn(self):
    """jitted (variables, images_u8 [B,H,W,C], labels [B], weight [B]) -> (top1, top5 hits)."""
    model, mean, std = self.model, self.mean, self.std

    @jax.jit
    def eval_batch(variables, images_u8, labels, weight):
      logits = model.apply(variables, normalise(images_u8, mean, std), train=False)
      k = min(5, logits.shape[-1])
      topk = jax.lax.top_k(logits, k)[1]
      hit = topk == labels[:, None]
      return jnp.sum(hit[:, 0] * weight), jnp.sum(hit.any(-1) * weight)

    return eval_batch


def _pad_batch(x: np.ndarray, y: np.ndarray, size: int):
  """(x, y, w) grown to `size` rows; the padding rows are zeros and weigh zero."""
  w = np.ones(len(y), np.float32)
  if len(y) < size:
    pad = size - len(y)
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    w = np.concatenate([w, np.zeros(pad, np.float32)])
  return x, y, w


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
    x, y, w = _pad_batch(images[start:start + local_bs], labels[start:start + local_bs],
                         local_bs)
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
  """Train a fresh student from `seed` on images uint8 [N,H,W,C] / labels int [N].

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
  images_d, labels_d = distributed.global_array(replicated, (images, labels.astype(np.int32)))
  # The checkpointed key, as a global array: orbax refuses a process-local one in a
  # multi-process run.
  rng_data = distributed.global_array(replicated, jax.random.key_data(k_train))
  epochs = student.recipe["epochs"]
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
