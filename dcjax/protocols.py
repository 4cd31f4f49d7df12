"""Named evaluation recipes: how a fresh student is trained on a compressed set.

A protocol is a preset of optimiser, schedule, batch size, epochs and augmentation. The config
names one (`config.eval.protocol`) and may override any of its fields; `resolve` returns the
effective recipe, which results.json records in full so every number says how it was made.
"""

from __future__ import annotations

from typing import Any, Mapping

from dcjax.errors import UserError, unknown_name

PROTOCOLS: dict[str, dict[str, Any]] = {
    # The benchmark's released hard-label recipe (method.md §2): AdamW 1e-3 / wd 0.01 with no
    # decay on biases and norm parameters, cosine to 0 stepped per epoch, batch 128, 300 epochs,
    # RandomResizedCrop(0.08-1) + horizontal flip at the dataset's resolution.
    "hard": dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, momentum=0.9,
                 schedule="cosine_epoch", batch_size=128, epochs=300, augment="rrc_flip",
                 labels="hard", mixing="none", temperature=1.0),
    # The soft-label recipe: identical to 'hard' except the labels. A teacher runs on the fly
    # on the same augmented, CutMix-ed batch; loss KL(teacher/T || student/T), T = 20, with no
    # T^2 factor (as the released config).
    "soft": dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, momentum=0.9,
                 schedule="cosine_epoch", batch_size=128, epochs=300, augment="rrc_flip",
                 labels="teacher", mixing="cutmix", temperature=20.0),
    # The distillation literature's small-data evaluation (method.md §4): SGD lr 0.01,
    # momentum 0.9, wd 5e-4 (coupled, on every parameter, as torch.optim.SGD), lr x0.1 at half
    # the epochs, batch 256, 300 epochs, DSA augmentation (DSA/DM train 1000 epochs with it:
    # override eval.epochs=1000 for that variant).
    "small_data": dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9,
                       schedule="step_half", batch_size=256, epochs=300, augment="dsa",
                       labels="hard", mixing="none", temperature=1.0),
}

RECIPE_FIELDS = ("optimizer", "lr", "weight_decay", "momentum", "schedule", "batch_size",
                 "epochs", "augment", "labels", "mixing", "temperature")
LABELS = ("hard", "teacher")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine_epoch", "step_half", "constant")


def resolve(protocol: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The preset called `protocol`, with every non-None entry of `overrides` applied."""
  if protocol not in PROTOCOLS:
    raise unknown_name("protocol", protocol, PROTOCOLS)
  recipe = dict(PROTOCOLS[protocol], protocol=protocol)
  for k, v in (overrides or {}).items():
    if k in RECIPE_FIELDS and v is not None:
      recipe[k] = v
  if recipe["optimizer"] not in OPTIMIZERS:
    raise unknown_name("optimizer", recipe["optimizer"], OPTIMIZERS)
  if recipe["schedule"] not in SCHEDULES:
    raise unknown_name("schedule", recipe["schedule"], SCHEDULES)
  if recipe["labels"] not in LABELS:
    raise unknown_name("label source", recipe["labels"], LABELS)
  if recipe["temperature"] <= 0:
    raise UserError(f"eval.temperature must be > 0, got {recipe['temperature']}")
  for k in ("epochs", "batch_size"):
    if int(recipe[k]) < 1:
      raise UserError(f"eval.{k} must be >= 1, got {recipe[k]}")
  return recipe
