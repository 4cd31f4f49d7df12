"""main.py's benchmark across 2 processes (2 CPU devices each, gloo) into one shared workdir
equals the same run in 1 process with 4 devices; only process 0 writes the workdir."""

import json
import os
import sys

import pytest

from test_benchmark import ROOT
from test_multihost import free_port, needs_gloo, wait_all

import subprocess

FLAGS = ["--config.dataset=synthetic", "--config.data.synthetic.image_size=16",
         "--config.data.synthetic.num_examples=64", "--config.data.synthetic.num_test_examples=32",
         "--config.data.synthetic.num_classes=4", "--config.data.synthetic.channels=1",
         "--config.ipc=4", "--config.seeds=2", "--config.progress=False",
         "--config.eval.epochs=2", "--config.eval.batch_size=8",
         "--config.eval.model_kwargs.width=8", "--config.eval.test_batch_size=16",
         "--config.method=el2n_easy", "--config.scores.epochs=1",
         "--config.scores.model_kwargs.width=8", "--config.scores.batch_size=16"]


def _launch(workdir, log_name, devices, *extra, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
             DCJAX_CACHE=str(cache))
  log = open(f"{workdir}.{log_name}.log", "w+")
  argv = [sys.executable, os.path.join(ROOT, "main.py"),
          f"--config={os.path.join(ROOT, 'configs', 'benchmark.py')}", f"--workdir={workdir}",
          *FLAGS, *extra]
  return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                          cwd=ROOT), log


@needs_gloo
def test_benchmark_on_two_processes_equals_one(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  coordinator = f"localhost:{free_port()}"
  dist = [f"--config.distributed.coordinator_address={coordinator}",
          "--config.distributed.num_processes=2"]
  wait_all([
      # A multi-host run shares its workdir and caches (a shared filesystem).
      _launch(multi, "p0", 2, *dist, "--config.distributed.process_id=0", cache=tmp_path / "c"),
      _launch(multi, "p1", 2, *dist, "--config.distributed.process_id=1", cache=tmp_path / "c"),
      _launch(single, "single", 4, cache=tmp_path / "c_single")])
  a = json.load(open(multi / "results.json"))
  b = json.load(open(single / "results.json"))
  assert a["environment"]["device_count"] == b["environment"]["device_count"] == 4
  for ra, rb in zip(a["runs"], b["runs"]):
    assert ra["top1"] == rb["top1"] and ra["top5"] == rb["top5"]
    assert ra["final_loss"] == pytest.approx(rb["final_loss"], rel=1e-4, abs=1e-5)
  assert sorted(os.listdir(multi / "compressed")) == sorted(os.listdir(single / "compressed"))
  # One writer: process 1 printed no summary line; one score file in the shared cache.
  assert "top-1" in open(f"{multi}.p0.log").read().splitlines()[-1]
  assert not any("top-1" in line and "seeds" in line for line in open(f"{multi}.p1.log"))
  assert len([f for f in os.listdir(tmp_path / "c" / "scores") if f.endswith(".npz")]) == 1
