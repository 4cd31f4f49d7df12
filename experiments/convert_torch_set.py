"""Convert a distilled set released as torch tensors into the .npz that `dcjax evaluate` reads.

  # MTT / DATM (images_best.pt [N, C, H, W], labels_best.pt [N] or learnt soft labels [N, K]):
  python experiments/convert_torch_set.py set.npz --images images_best.pt \
      --labels labels_best.pt --normalization cifar10
  # DC / DSA / DM (one res_<...>.pt holding {'data': [[images, labels], ...] per experiment}):
  python experiments/convert_torch_set.py set.npz --dc-result res_CIFAR10_ConvNet_10ipc.pt \
      --experiment 0 --normalization cifar10

Those repositories train on tensors normalised with their dataset's mean and std (the DC
code's `get_dataset`, which MTT and DATM reuse), and so save them; the .npz keeps the tensors
as they are, as [N, H, W, C], with that `mean` and `std`, and dcjax undoes the normalisation
when it reads them (dcjax.data.given). Learnt soft labels (DATM's [N, K] labels) are written as
`soft_labels` (train on them with `--config.eval.labels=stored`) and their argmax as `labels`.

Needs torch (not a dcjax dependency): run it where torch is installed. Files are read with
`torch.load(..., weights_only=True)`, which unpickles tensors, lists and dicts only; a file that
needs more (a pickled numpy scalar among the stored accuracies, say) is refused, and can be
re-saved in the environment that wrote it as a dict of tensors.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# The DC code's per-dataset normalisation (VICO-UoE/DatasetCondensation utils.get_dataset),
# which MTT and DATM reuse: name -> (mean, std), per channel.
NORMALIZATIONS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


class ConvertError(Exception):
  """Bad input: reported as one line, nothing written."""


def _load(path: str):
  try:
    import torch
  except ImportError:
    raise ConvertError("this converter needs torch (pip install torch); dcjax itself does not")
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise ConvertError(f"{path} does not exist") from None
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for refused files
    raise ConvertError(f"cannot read {path} with torch.load(weights_only=True): "
                       f"{str(e).splitlines()[0]}") from None


def _numpy(x, what: str) -> np.ndarray:
  if hasattr(x, "detach"):
    x = x.detach().cpu()
    x = x.float() if x.is_floating_point() else x
    return x.numpy()
  if isinstance(x, np.ndarray):
    return x
  raise ConvertError(f"{what} is a {type(x).__name__}, not a tensor")


def dc_experiment(result, experiment: int, path: str = "the result file"):
  """(images, labels) of one experiment of a DC/DSA/DM result dict {'data': [[x, y], ...]}."""
  data = result.get("data") if isinstance(result, dict) else None
  if not isinstance(data, (list, tuple)) or not data:
    raise ConvertError(f"{path} holds no 'data' list of [images, labels] pairs (the DC / DSA / "
                       "DM scripts' res_*.pt); for MTT / DATM give --images and --labels")
  if not 0 <= experiment < len(data):
    raise ConvertError(f"{path} holds {len(data)} experiment(s) (0..{len(data) - 1}); "
                       f"--experiment {experiment} is not one")
  pair = data[experiment]
  if not isinstance(pair, (list, tuple)) or len(pair) != 2:
    raise ConvertError(f"{path}: data[{experiment}] is not an [images, labels] pair")
  return pair[0], pair[1]


def arrays(images, labels, mean, std) -> dict[str, np.ndarray]:
  """The .npz's arrays from normalised images [N, C, H, W] (or [N, H, W, C]) and labels [N]
  (class ids) or [N, K] (learnt soft labels: their argmax becomes `labels`)."""
  x = _numpy(images, "images").astype(np.float32)
  y = _numpy(labels, "labels")
  if x.ndim != 4:
    raise ConvertError(f"images must be [N, C, H, W], got shape {list(x.shape)}")
  if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
    x = x.transpose(0, 2, 3, 1)
  if x.shape[-1] not in (1, 3):
    raise ConvertError(f"images must have 1 or 3 channels, got shape {list(x.shape)}")
  if len(y) != len(x) or y.ndim not in (1, 2):
    raise ConvertError(f"labels must be [N] or [N, K] with N = {len(x)}, got {list(y.shape)}")
  if not np.isfinite(x).all():
    raise ConvertError("images hold NaN or infinite values")
  out = dict(images=np.ascontiguousarray(x))
  if y.ndim == 2:
    out["soft_labels"] = y.astype(np.float32)
    y = y.argmax(1)
  if not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.mod(y, 1) == 0):
      raise ConvertError("labels [N] must be class ids")
  out["labels"] = y.astype(np.int64)
  if mean is not None:
    c = x.shape[-1]
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.shape != (c,) or std.shape != (c,):
      raise ConvertError(f"the normalisation has {mean.size} channel(s), the images {c}")
    out["mean"], out["std"] = mean, std
  return out


def _floats(text: str) -> tuple[float, ...]:
  return tuple(float(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("out", help="the .npz to write")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--images", help="MTT / DATM: the images tensor file (images_best.pt)")
  src.add_argument("--dc-result", help="DC / DSA / DM: the res_*.pt result file")
  p.add_argument("--labels", help="with --images: the labels tensor file (labels_best.pt)")
  p.add_argument("--experiment", type=int, default=0,
                 help="with --dc-result: which experiment's set (default 0)")
  p.add_argument("--normalization", choices=[*NORMALIZATIONS, "none"],
                 help="the dataset normalisation the tensors carry (the DC code's constants), "
                      "or none: pixels in [0, 1] units")
  p.add_argument("--mean", type=_floats, help="instead of --normalization: per-channel mean")
  p.add_argument("--std", type=_floats, help="instead of --normalization: per-channel std")
  args = p.parse_args(argv)
  try:
    if args.images and not args.labels:
      raise ConvertError("--images needs --labels")
    if (args.mean is None) != (args.std is None):
      raise ConvertError("give --mean and --std together")
    if (args.normalization is None) == (args.mean is None):
      raise ConvertError("give the tensors' normalisation: --normalization NAME (or none), or "
                         "--mean and --std")
    mean, std = args.mean, args.std
    if args.normalization and args.normalization != "none":
      mean, std = NORMALIZATIONS[args.normalization]
    if args.images:
      images, labels = _load(args.images), _load(args.labels)
    else:
      images, labels = dc_experiment(_load(args.dc_result), args.experiment, args.dc_result)
    out = arrays(images, labels, mean, std)
    if not args.out.endswith(".npz"):
      raise ConvertError(f"{args.out}: the output is an .npz")
  except ConvertError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez(args.out, **out)
  n, h, w, c = out["images"].shape
  print(f"{args.out}: {n} images {h}x{w}x{c} (float32"
        + (", normalised: dcjax undoes it" if "mean" in out else ", [0, 1] pixel units") + ")"
        + (f", soft labels [{n}, {out['soft_labels'].shape[1]}]" if "soft_labels" in out else "")
        + f", {len(np.unique(out['labels']))} classes")
  return 0


if __name__ == "__main__":
  sys.exit(main())
