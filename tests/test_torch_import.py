"""torchvision weights -> dcjax's Flax models (dcjax.torch_import) and the imported teacher.

The logit-equality tests need torch and torchvision and skip without them (the project's venv
has neither); the rest builds state dicts from numpy arrays and runs everywhere.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import benchmark
from dcjax.data import torch_import
from dcjax.errors import UserError
from test_benchmark import tiny_config


def _random_state_dict(name, num_classes, seed=0):
  """A numpy state dict with every key and shape torchvision's `name` has."""
  rng = np.random.default_rng(seed)
  model = torch_import.torchvision_model(name, num_classes)
  sd = {}
  for k, s in torch_import.expected_state_dict_shapes(name, model).items():
    if len(s) > 1:  # He-scaled conv / linear weights keep the logits finite
      w = rng.normal(size=s) * np.sqrt(2.0 / np.prod(s[1:]))
    elif k.endswith("running_var"):
      w = rng.uniform(0.5, 2.0, s)
    elif k.endswith("weight"):  # BatchNorm scale
      w = rng.uniform(0.5, 1.0, s)
    else:
      w = rng.uniform(-0.2, 0.2, s)
    sd[k] = w.astype(np.float32)
  return sd


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101", "mobilenet_v2"])
def test_logits_match_torchvision(tmp_path, name):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  net = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
  g = torch.Generator().manual_seed(1)
  bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    # Running statistics of random data (not torch's 0 / 1, under which a freshly initialised
    # MobileNetV2's activations vanish to ~1e-9 and only the last layers would be tested),
    # then random affine parameters: every layer shapes the logits.
    for m in bns:
      m.reset_running_stats()
      m.momentum = None  # a cumulative average over the batches below
    net.train()
    for _ in range(2):
      net(torch.randn(8, 3, 64, 64, generator=g))
    net.eval()
    for m in bns:
      m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
      m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
    # Logits of order 1 (MobileNetV2's classifier starts at std 0.01).
    fc = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 2 / fc.in_features**0.5)
  path = tmp_path / f"{name}.pth"
  torch.save(net.state_dict(), path)
  x = torch.randn(2, 3, 64, 64, generator=g)
  with torch.no_grad():
    expected = net(x).numpy()

  variables = torch_import.load_torchvision(str(path), name, num_classes=10)
  logits = torch_import.torchvision_model(name, 10).apply(
      variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), train=False)
  diff = float(np.max(np.abs(np.asarray(logits) - expected)))
  print(f"{name}: max |logit difference| {diff:.2e} (max |logit| {np.abs(expected).max():.2f})")
  assert np.std(expected) > 0.05  # the logits are not trivially equal
  assert diff < 1e-4


def test_conversion_layouts():
  sd = _random_state_dict("mobilenet_v2", 10)
  v = torch_import.convert_state_dict(sd, "mobilenet_v2",
                                      torch_import.torchvision_model("mobilenet_v2", 10))
  p, s = v["params"], v["batch_stats"]
  # conv OIHW -> HWIO; depthwise [C, 1, 3, 3] -> [3, 3, 1, C]; linear transposed; BN renamed.
  np.testing.assert_array_equal(p["features_0"]["conv"]["kernel"],
                                sd["features.0.0.weight"].transpose(2, 3, 1, 0))
  assert sd["features.2.conv.1.0.weight"].shape == (96, 1, 3, 3)
  np.testing.assert_array_equal(p["features_2"]["depthwise"]["conv"]["kernel"],
                                sd["features.2.conv.1.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["features_1"]["project"]["conv"]["kernel"],
                                sd["features.1.conv.1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["classifier"]["kernel"], sd["classifier.1.weight"].T)
  np.testing.assert_array_equal(p["features_18"]["bn"]["scale"], sd["features.18.1.weight"])
  np.testing.assert_array_equal(s["features_3"]["project"]["bn"]["var"],
                                sd["features.3.conv.3.running_var"])


def test_resnet_state_dict_keys_are_torchvisions():
  shapes = torch_import.expected_state_dict_shapes(
      "resnet18", torch_import.torchvision_model("resnet18", 1000))
  assert shapes["conv1.weight"] == (64, 3, 7, 7)
  assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
  assert shapes["layer4.1.bn2.running_var"] == (512,)
  assert shapes["fc.weight"] == (1000, 512)
  # 62 weight tensors + 20 BatchNorms x 2 running statistics (torchvision: 102 without
  # num_batches_tracked); 11,689,512 parameters as torchvision's.
  assert len(shapes) == 102
  n = sum(int(np.prod(s)) for k, s in shapes.items() if "running" not in k)
  assert n == 11_689_512


def test_strict_keys_and_shapes():
  sd = _random_state_dict("resnet18", 10)
  model = torch_import.torchvision_model("resnet18", 10)
  sd["layer1.0.bn1.num_batches_tracked"] = np.zeros((), np.int64)  # ignored
  torch_import.convert_state_dict(sd, "resnet18", model)
  with pytest.raises(UserError, match=r"unexpected \(1\): layer9.0.conv1.weight"):
    torch_import.convert_state_dict(dict(sd, **{"layer9.0.conv1.weight": sd["conv1.weight"]}),
                                    "resnet18", model)
  missing = {k: v for k, v in sd.items() if k != "layer3.1.bn2.running_mean"}
  with pytest.raises(UserError, match=r"missing \(1\): layer3.1.bn2.running_mean"):
    torch_import.convert_state_dict(missing, "resnet18", model)
  with pytest.raises(UserError, match=r"shape mismatch \(2\): fc.weight \(10, 512\) "
                                      r"\(model: \(5, 512\)\), fc.bias"):
    torch_import.convert_state_dict(sd, "resnet18", torch_import.torchvision_model("resnet18", 5))
  # Wrong input channels are named too (a 1-channel dataset with 3-channel weights).
  with pytest.raises(UserError, match=r"conv1.weight \(64, 3, 7, 7\) \(model: \(64, 1, 7, 7\)\)"):
    torch_import.convert_state_dict(sd, "resnet18", model, in_channels=1)
  with pytest.raises(UserError, match="unknown torchvision model 'vit_s16'"):
    torch_import.torchvision_model("vit_s16", 10)


def test_unwraps_nested_and_ddp_state_dicts():
  sd = _random_state_dict("resnet18", 10)
  model = torch_import.torchvision_model("resnet18", 10)
  ref = torch_import.convert_state_dict(sd, "resnet18", model)
  nested = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
  got = torch_import.convert_state_dict(nested, "resnet18", model)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ref, got))


def test_missing_torch_is_a_user_error_saying_how_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(UserError, match="needs PyTorch.*pip install torch"):
    torch_import.load_torchvision(str(tmp_path / "w.pth"), "resnet18", 10)


def test_unreadable_weights_file_is_a_user_error(tmp_path):
  pytest.importorskip("torch")
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"not a checkpoint")
  with pytest.raises(UserError, match="cannot read .*bad.pth as a PyTorch state dict"):
    torch_import.load_torchvision(str(bad), "resnet18", 10)
  with pytest.raises(UserError, match="no such weights file"):
    torch_import.load_torchvision(str(tmp_path / "absent.pth"), "resnet18", 10)


def test_soft_run_imports_caches_and_tests_a_torchvision_teacher(tmp_path, monkeypatch):
  # The .pth reading is stood in for (torch may be absent); the file's bytes still key the cache.
  sd = _random_state_dict("resnet18", 4)
  weights = tmp_path / "resnet18.pth"
  weights.write_bytes(b"stand-in for a torch.save file")
  reads = []
  monkeypatch.setattr(torch_import, "load_state_dict", lambda path: reads.append(path) or sd)
  cfg = {"eval.protocol": "soft", "eval.epochs": 1, "teacher.cache_dir": str(tmp_path / "t"),
         "teacher.model": "resnet18", "teacher.weights": str(weights),
         "teacher.allow_train": False}  # importing is not training
  r = benchmark.run(tiny_config(**cfg), str(tmp_path / "a"))
  t = r["teacher"]
  info = json.load(open(os.path.join(t["dir"], "teacher.json")))
  assert info["spec"]["weights"]["format"] == "torchvision"
  assert len(info["spec"]["weights"]["sha256"]) == 64 and "recipe" not in info["spec"]
  assert info["weights"] == str(weights) and 0 <= t["top1"] <= 100
  assert t["param_bytes"] == r["storage"]["teacher_bytes"] > 11_000_000 * 4
  assert reads == [str(weights)]
  # The cached teacher is reused without reading the file again, with the same accuracy.
  r2 = benchmark.run(tiny_config(**cfg), str(tmp_path / "b"))
  assert r2["teacher"] == t and reads == [str(weights)]
  assert r2["runs"][0]["top1"] == r["runs"][0]["top1"]  # the same soft labels
  # Other weights (other bytes) are another teacher.
  weights.write_bytes(b"other weights")
  r3 = benchmark.run(tiny_config(**cfg), str(tmp_path / "c"))
  assert r3["teacher"]["dir"] != t["dir"] and len(reads) == 2


def _write_safetensors(path, tensors, bf16=()):
  """A .safetensors file written by hand (the format: u64 header length, JSON, raw bytes)."""
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, value in tensors.items():
    if name in bf16:  # truncate float32 to bfloat16's top 16 bits
      raw, dtype = (value.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes(), "BF16"
    else:
      raw, dtype = value.astype("<f4").tobytes(), "F32"
    header[name] = {"dtype": dtype, "shape": list(value.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  blob = json.dumps(header).encode()
  path.write_bytes(len(blob).to_bytes(8, "little") + blob + b"".join(chunks))


def test_safetensors_weights_import_without_torch_as_the_state_dict_does(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # no torch needed for .safetensors
  sd = _random_state_dict("resnet18", 10)
  path = tmp_path / "resnet18.safetensors"
  _write_safetensors(path, sd)
  back = torch_import.read_safetensors(str(path))
  assert back.keys() == sd.keys()
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])
  ref = torch_import.load_torchvision(sd, "resnet18", num_classes=10)
  got = torch_import.load_torchvision(str(path), "resnet18", num_classes=10)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ref, got))
  # bfloat16 tensors are widened exactly.
  x = np.array([1.0, -2.5, 3.140625], np.float32)
  _write_safetensors(tmp_path / "b.safetensors", {"x": x}, bf16=("x",))
  np.testing.assert_array_equal(torch_import.read_safetensors(str(tmp_path / "b.safetensors"))["x"], x)


@pytest.mark.parametrize("content,match", [
    (b"abc", "shorter than its header length"),
    ((10**9).to_bytes(8, "little") + b"{}", "does not fit"),
    ((3).to_bytes(8, "little") + b"{x}", "not JSON"),
    ((len(b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}')).to_bytes(8, "little")
     + b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}' + b"\0" * 8,
     "do not match F32"),
    ((len(b'{"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}')).to_bytes(8, "little")
     + b'{"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}' + b"\0" * 8,
     "unsupported dtype C64"),
])
def test_bad_safetensors_files_are_refused_in_one_line(tmp_path, content, match):
  path = tmp_path / "w.safetensors"
  path.write_bytes(content)
  with pytest.raises(UserError, match=match):
    torch_import.read_safetensors(str(path))
  with pytest.raises(UserError, match="no such weights file"):
    torch_import.read_safetensors(str(tmp_path / "absent.safetensors"))
