"""Named evaluation recipes: how a fresh student is trained on a compressed set.

A protocol is a preset of optimiser, schedule, batch size, epochs and augmentation. The config
names one (`config.eval.protocol`) and may override any of its fields; `resolve` returns the
effective recipe, which results.json records in full so every number says how it was made.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

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
    # The distillation literature's small-data evaluation (method.md §4), as the DC/DSA code
    # runs it (evaluate_synset): SGD lr 0.01, momentum 0.9, wd 5e-4 (coupled, on every
    # parameter, as torch.optim.SGD), batch 256, Epoch = 300 trained as Epoch + 1 = 301
    # epochs with lr x0.1 after epoch Epoch//2 + 1 and the momentum restarted there
    # ('dc_step'), DSA on normalised images ('dsa'). DSA/DM train Epoch = 1000 with it:
    # eval.epochs=1001. The earlier dcjax variant (DSA on [0,1] pixels, x0.1 at half the
    # epochs, 300 epochs) is eval.augment=dsa_pixel, eval.schedule=step_half, eval.epochs=300.
    "small_data": dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9,
                       schedule="dc_step", batch_size=256, epochs=301, augment="dsa",
                       labels="hard", mixing="none", temperature=1.0),
}

RECIPE_FIELDS = ("optimizer", "lr", "weight_decay", "momentum", "schedule", "batch_size",
                 "epochs", "augment", "labels", "mixing", "temperature")
# 'stored': soft labels stored with an evaluated set (configs/evaluate.py), as probabilities,
# or logits turned into softmax(logits / temperature).
LABELS = ("hard", "teacher", "stored")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine_epoch", "step_half", "dc_step", "constant")
# Augmentation names a recipe may use (dcjax.augment.get_augmentation) and mixings
# (dcjax.mixing.MIXINGS); kept here as names so the recipe is validated without building one.
AUGMENTS = ("none", "flip", "rrc_flip", "dsa", "dsa_pixel", "tile_crop", "tile_dsa",
            "tile_dsa_pixel", "tile_dsa_noflip")
MIXINGS = ("none", "cutmix", "mixup", "cutout")


def _unknown(kind: str, name, known) -> ValueError:
  return ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one network is trained: a validated, immutable protocol (`resolve` builds one).

  Construction checks every field (ValueError naming it), so a Recipe that exists is valid:
  an unknown optimizer or schedule can never fall through to a default.
  """

  protocol: str
  optimizer: str
  lr: float
  weight_decay: float
  momentum: float
  schedule: str
  batch_size: int
  epochs: int
  augment: str
  labels: str
  mixing: str
  temperature: float

  def __post_init__(self):
    for name, value, known in (("optimizer", self.optimizer, OPTIMIZERS),
                               ("schedule", self.schedule, SCHEDULES),
                               ("label source", self.labels, LABELS),
                               ("augmentation", self.augment, AUGMENTS),
                               ("mixing", self.mixing, MIXINGS)):
      if value not in known:
        raise _unknown(name, value, known)
    for name in ("epochs", "batch_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    checks = (("lr", lambda v: v > 0, "> 0"), ("temperature", lambda v: v > 0, "> 0"),
              ("weight_decay", lambda v: v >= 0, ">= 0"),
              ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"))
    for name, ok, what in checks:
      value = getattr(self, name)
      if not isinstance(value, float) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")

  def replace(self, **changes) -> "Recipe":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    """The recipe as results.json and cache keys record it (the preset's fields, then
    `protocol`)."""
    d = {f: getattr(self, f) for f in RECIPE_FIELDS}
    d["protocol"] = self.protocol
    return d


_TYPES = dict(lr=float, weight_decay=float, momentum=float, temperature=float, batch_size=int,
              epochs=int)


def resolve(protocol: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
  """The preset called `protocol`, with every non-None entry of `overrides` that names a
  recipe field applied (other keys are ignored, so a whole config block can be passed)."""
  if protocol not in PROTOCOLS:
    raise _unknown("protocol", protocol, PROTOCOLS)
  fields = dict(PROTOCOLS[protocol])
  for k, v in (overrides or {}).items():
    if k in RECIPE_FIELDS and v is not None:
      fields[k] = v
  for k, kind in _TYPES.items():  # 1 -> 1.0 for floats; integral floats -> int for counts
    v = fields[k]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
      fields[k] = float(v)
    elif kind is int and isinstance(v, float) and v.is_integer():
      fields[k] = int(v)
  return Recipe(protocol=protocol, **fields)
