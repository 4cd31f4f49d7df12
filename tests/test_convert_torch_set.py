"""experiments/convert_torch_set.py: a distilled set saved as torch tensors (MTT / DATM's
images_best.pt + labels_best.pt, DC / DSA / DM's res_*.pt) becomes the .npz `dcjax evaluate`
reads, with the pixels the repository trained on (normalisation undone by dcjax).

The conversion itself runs on arrays (no torch); the torch files' round trip runs where torch
is installed and is skipped elsewhere (torch is not a dcjax dependency)."""

import importlib.util

import numpy as np
import pytest

from dcjax.data import given
from tests import experiment_scripts

convert = experiment_scripts.load("convert_torch_set")
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _normalised(n=20, c=3, h=8, w=6, seed=0):
  """Pixels in [0, 1] units (some outside: distilled pixels are unclipped) and their
  CIFAR-10-normalised [N, C, H, W] copy, as the DC code's tensors."""
  rng = np.random.default_rng(seed)
  pixels = rng.normal(0.5, 0.4, size=(n, h, w, c)).astype(np.float32)
  mean, std = convert.NORMALIZATIONS["cifar10"]
  normalised = ((pixels - np.array(mean)) / np.array(std)).astype(np.float32)
  return pixels, normalised.transpose(0, 3, 1, 2)


def test_normalised_nchw_tensors_read_back_as_their_pixels(tmp_path):
  pixels, nchw = _normalised()
  labels = np.arange(20) % 10
  out = convert.arrays(nchw, labels, *convert.NORMALIZATIONS["cifar10"])
  assert out["images"].shape == (20, 8, 6, 3) and out["labels"].tolist() == labels.tolist()
  np.savez(tmp_path / "set.npz", **out)
  g = given.read_given(str(tmp_path / "set.npz"))
  assert g.images.dtype == np.float32 and g.soft_labels is None
  np.testing.assert_allclose(g.images, pixels, atol=1e-6)
  assert g.image_bytes == 20 * 8 * 6 * 3 * 4


def test_learnt_soft_labels_and_dc_results(tmp_path):
  _, nchw = _normalised(n=4)
  logits = np.array([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0]],
                    np.float32)
  out = convert.arrays(nchw, logits, None, None)  # DATM's learnt labels, pixels in [0, 1]
  assert out["labels"].tolist() == [1, 0, 2, 1] and out["soft_labels"].shape == (4, 3)
  assert "mean" not in out
  result = {"data": [[nchw, np.zeros(4)], [nchw[:2], np.array([1, 2])]], "accs_all_exps": {}}
  images, labels = convert.dc_experiment(result, 1)
  assert len(images) == 2 and labels.tolist() == [1, 2]
  for bad, match in (({"data": []}, "no 'data' list"), ({"x": 1}, "no 'data' list"),
                     ({"data": [[nchw]]}, "not an .images, labels. pair")):
    with pytest.raises(convert.ConvertError, match=match):
      convert.dc_experiment(bad, 0)
  with pytest.raises(convert.ConvertError, match="2 experiment"):
    convert.dc_experiment(result, 2)
  with pytest.raises(convert.ConvertError, match="1 channel"):
    convert.arrays(nchw, np.zeros(4), *convert.NORMALIZATIONS["fashion_mnist"])
  with pytest.raises(convert.ConvertError, match="class ids"):
    convert.arrays(nchw, np.array([0.5, 1, 2, 3]), None, None)


def test_bad_arguments_are_refused_in_one_line_with_nothing_written(tmp_path, capsys):
  out = tmp_path / "x.npz"
  missing = str(tmp_path / "missing.pt")
  for argv, message in (
      ([str(out), "--images", "a.pt"], "--images needs --labels"),
      ([str(out), "--images", "a.pt", "--labels", "b.pt"], "give the tensors' normalisation"),
      ([str(out), "--dc-result", "r.pt", "--mean", "0.5"], "give --mean and --std together"),
      ([str(out), "--dc-result", missing, "--normalization", "none"],
       f"{missing} does not exist" if HAVE_TORCH else "this converter needs torch")):
    assert convert.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
  assert not out.exists()


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (not a dcjax dependency)")
def test_torch_files_of_mtt_and_dc_convert_end_to_end(tmp_path, capsys):
  import torch
  pixels, nchw = _normalised()
  labels = np.arange(20) % 10
  torch.save(torch.from_numpy(nchw), tmp_path / "images_best.pt")
  torch.save(torch.from_numpy(labels), tmp_path / "labels_best.pt")
  assert convert.main([str(tmp_path / "mtt.npz"), "--images", str(tmp_path / "images_best.pt"),
                       "--labels", str(tmp_path / "labels_best.pt"),
                       "--normalization", "cifar10"]) == 0
  assert "20 images 8x6x3" in capsys.readouterr().out
  np.testing.assert_allclose(given.read_given(str(tmp_path / "mtt.npz")).images, pixels,
                             atol=1e-6)
  torch.save({"data": [[torch.from_numpy(nchw), torch.from_numpy(labels)]],
              "accs_all_exps": {"ConvNet": [0.5, 0.6]}}, tmp_path / "res.pt")
  assert convert.main([str(tmp_path / "dc.npz"), "--dc-result", str(tmp_path / "res.pt"),
                       "--mean", "0.4914,0.4822,0.4465", "--std", "0.2023,0.1994,0.2010"]) == 0
  a, b = np.load(tmp_path / "mtt.npz"), np.load(tmp_path / "dc.npz")
  assert all(np.array_equal(a[k], b[k]) for k in ("images", "labels", "mean", "std"))
