"""SRe2L's recover step (Yin et al. 2023, "Squeeze, Recover and Relabel"), as pure jitted
functions: images optimised from Gaussian noise so that a BatchNorm teacher classifies them as
their target class while the batch statistics they produce at every BatchNorm layer match the
layer's running statistics (those of the real training split).

  loss = CE(teacher(jitter(x)), y)
         + r_bn * sum_l m_l * (||mean_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2)

with m_0 = first_bn_multiplier and m_l = 1 after, var the biased batch variance over (N, H, W)
(SRe2L's BNFeatureHook). Optimiser and schedule as SRe2L's recover code: Adam (betas 0.5, 0.9,
eps 1e-8), cosine learning rate from `lr` to 0 without warm-up; the images live in normalised
space and are clipped back into the pixel range [0, 1] after every step; jitter is a random
roll by up to `jitter` pixels per axis and a random horizontal flip. A batch holds one image
per class of a class chunk (SRe2L's CIFAR-100 script: all 100 classes; its ImageNet: 100),
so its statistics mix classes as the running statistics do.

The squeeze (training the BatchNorm teacher) and the relabel (soft labels from the
benchmark's teacher) are the benchmark's runners; `dcjax.runners.recover` drives these
functions over every batch with a cache.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def logits_and_bn_loss(model: nn.Module, variables, images: Array,
                       first_multiplier: float = 10.0) -> tuple[Array, Array]:
  """The teacher's logits on `images` (normalised, [N, H, W, C]) in inference mode, and the
  BatchNorm matching term: sum over BatchNorm layers, in call order, of m_l * (||batch mean -
  running mean||_2 + ||batch var - running var||_2), m_0 = first_multiplier, the rest 1.
  ValueError if the model has no BatchNorm layer."""
  terms = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      x = jnp.asarray(args[0], jnp.float32)
      axes = tuple(range(x.ndim - 1))
      mean = x.mean(axes)
      var = jnp.mean(jnp.square(x - mean), axes)  # biased, as BNFeatureHook
      run_mean = context.module.get_variable("batch_stats", "mean")
      run_var = context.module.get_variable("batch_stats", "var")
      terms.append(jnp.linalg.norm(var - run_var) + jnp.linalg.norm(mean - run_mean))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, images, train=False)
  if not terms:
    raise ValueError(f"{type(model).__name__} has no BatchNorm layer: SRe2L's recover matches "
                     "BatchNorm statistics (use e.g. a ConvNet with norm='batch')")
  weights = jnp.asarray([first_multiplier] + [1.0] * (len(terms) - 1), jnp.float32)
  return logits, jnp.sum(weights * jnp.stack(terms))


def jitter(key: Array, images: Array, max_shift: int, flip: bool) -> Array:
  """SRe2L's input jitter: the whole batch rolled by (dy, dx) ~ U{0..max_shift}² and, with
  `flip`, mirrored left-right with probability 1/2 (one draw per batch)."""
  k_y, k_x, k_f = jax.random.split(key, 3)
  if max_shift:
    dy = jax.random.randint(k_y, (), 0, max_shift + 1)
    dx = jax.random.randint(k_x, (), 0, max_shift + 1)
    images = jnp.roll(images, (dy, dx), axis=(1, 2))
  if flip:
    images = jnp.where(jax.random.bernoulli(k_f), images[:, :, ::-1], images)
  return images


class RecoverState(NamedTuple):
  images: Array       # [N, H, W, C], normalised
  opt_state: Any
  step: Array         # int32 scalar: iterations done


def _optimizer(lr: float, iterations: int) -> optax.GradientTransformation:
  schedule = optax.cosine_decay_schedule(lr, iterations)  # SRe2L's lr_cosine_policy, no warm-up
  return optax.adam(schedule, b1=0.5, b2=0.9, eps=1e-8)


def init(key: Array, num_images: int, image_shape: tuple, *, lr: float,
         iterations: int) -> RecoverState:
  """Gaussian noise in normalised space (SRe2L's torch.randn start)."""
  images = jax.random.normal(key, (num_images, *image_shape), jnp.float32)
  return RecoverState(images, _optimizer(lr, iterations).init(images), jnp.int32(0))


def recover_steps(state: RecoverState, key: Array, labels: Array, model: nn.Module, variables,
                  *, num_steps: int, iterations: int, lr: float, r_bn: float,
                  first_multiplier: float, max_shift: int, flip: bool, mean, std
                  ) -> tuple[RecoverState, Array]:
  """`num_steps` recover iterations from `state` (one compiled loop; the step key is folded
  from `key` and the iteration number, so chunked and whole runs agree). Returns the new state
  and the loss [CE, BN term] of the last iteration. jit with the keyword settings static."""
  opt = _optimizer(lr, iterations)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  lo, hi = (0.0 - mean) / std, (1.0 - mean) / std

  def loss_fn(images, step_key):
    logits, bn = logits_and_bn_loss(model, variables, jitter(step_key, images, max_shift, flip),
                                    first_multiplier)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return ce + r_bn * bn, jnp.stack([ce, bn])

  def body(_, carry):
    state, _ = carry
    (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.images, jax.random.fold_in(key, state.step))
    updates, opt_state = opt.update(grads, state.opt_state, state.images)
    images = jnp.clip(optax.apply_updates(state.images, updates), lo, hi)
    return RecoverState(images, opt_state, state.step + 1), parts

  return jax.lax.fori_loop(0, num_steps, body, (state, jnp.zeros(2, jnp.float32)))


def to_uint8(images: Array, mean, std) -> Array:
  """Normalised images back to uint8 pixels (denormalised, clipped to [0, 1], rounded)."""
  x = images * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32)
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)
