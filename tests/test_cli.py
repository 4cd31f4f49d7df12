"""The `dcjax` console command: `dcjax run` / `dcjax evaluate` / `dcjax configs`, and a wheel
built from this checkout that ships the configs and the command (run from outside the repo)."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.seeds=1", "--config.eval.epochs=1", "--config.eval.batch_size=8",
        "--config.eval.model_kwargs.width=8", "--config.progress=False",
        "--config.data.synthetic.num_examples=40", "--config.data.synthetic.num_test_examples=20",
        "--config.data.synthetic.image_size=16", "--config.data.synthetic.num_classes=4",
        "--config.eval.num_devices=1"]


def _env(**extra):
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", **extra)


def _dcjax(*args, cwd=ROOT, env=None, exe=None):
  cmd = ([exe] if exe else [sys.executable, "-c",
                            "from dcjax.benchmark.cli import console_main; console_main()"])
  return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True,
                        env=env or _env(), timeout=600)


def test_refused_commands_say_why_in_one_line(capsys):
  """Refused before any config is loaded: checked in this process (a subprocess per case cost
  ~6 s of JAX import each); the refusals that go through absl's flag parsing run below."""
  from dcjax.benchmark.cli import console_main
  for args, message in ((["run", "--workdir=x"], "dcjax run needs --config"),
                        (["run", "--config=nope", "--workdir=x"], "unknown config 'nope'"),
                        (["evaluate", "--workdir=x"], "dcjax evaluate takes one PATH"),
                        (["frobnicate"], "unknown command 'frobnicate'"),
                        (["report", "runs/"], "dcjax report takes --out=DIR"),
                        (["report", "--out=x"], "dcjax report takes --out=DIR"),
                        (["report", "--out=x", os.path.join(ROOT, "configs")],
                         "no results.json under")):
    with pytest.raises(SystemExit) as e:
      console_main(["dcjax", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: {message}"), err
    assert "Traceback" not in err
  assert not os.path.exists(os.path.join(ROOT, "x"))


def test_configs_run_and_evaluate_by_name(tmp_path):
  p = _dcjax("configs")
  assert p.returncode == 0 and {"benchmark", "pca", "evaluate", "cifar10"} <= set(p.stdout.split())
  lines = dict(line.split(None, 1) for line in p.stdout.strip().splitlines())
  assert lines["pca"].startswith("PCA — Prune, Combine, Augment (Xiao et al. 2025")
  assert lines["sre2l"].endswith("not taken from real ones.")  # one sentence, whole
  run = tmp_path / "run"
  p = _dcjax("run", "--config=benchmark", f"--workdir={run}", "--config.dataset=synthetic",
             "--config.ipc=2", *TINY)
  assert p.returncode == 0, p.stderr
  assert p.stdout.strip().splitlines()[-1].startswith("random ipc=2 synthetic")
  p = _dcjax("evaluate", str(run / "compressed"), f"--workdir={tmp_path / 'ev'}",
             "--protocol=hard", *TINY, "--config.fairness.enabled=False")
  assert p.returncode == 0, p.stderr
  r = json.load(open(tmp_path / "ev" / "results.json"))
  assert r["method"] == "evaluate" and r["protocol"] == "hard" and r["dataset"] == "synthetic"
  # get_config refusing its argument: its message, not a traceback (absl parses the flags,
  # so each runs as its own process, as a user would)
  for args, message in ((["run", "--config=pca:full,ipc0", "--workdir=x"],
                         "bad config argument: configs/pca.py takes ':quick'"),
                        (["run", "--config=benchmark:fast", "--workdir=x"],
                         "bad config argument: this config takes no ':ARG'")):
    p = _dcjax(*args)
    assert p.returncode == 2 and p.stderr.startswith(f"error: {message}"), p.stderr
    assert "Traceback" not in p.stderr and "File " not in p.stderr, p.stderr
    if message.startswith("bad config"):
      assert len(p.stderr.strip().splitlines()) == 1, p.stderr
  assert not os.path.exists(os.path.join(ROOT, "x"))  # nothing written for refused input


def _venv_with_our_dependencies(where):
  """A new, empty virtual environment whose sys.path also sees this environment's installed
  distributions except dcjax itself (symlinked into one folder named by a .pth file), so pip
  can install dcjax's wheel with its dependencies resolved offline (--no-index)."""
  import site
  import venv
  venv.EnvBuilder(with_pip=True).create(where)
  deps = where.parent / "deps"
  deps.mkdir()
  for parent in site.getsitepackages():
    for entry in os.listdir(parent):
      if "dcjax" in entry.lower() or entry.endswith(".pth") or (deps / entry).exists():
        continue
      os.symlink(os.path.join(parent, entry), deps / entry)
  py = where / "bin" / "python"
  site_dir = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                            capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(site_dir, "dcjax-test-deps.pth"), "w") as f:
    f.write(str(deps) + "\n")
  return py


@pytest.mark.slow
def test_a_built_wheel_pip_installs_into_a_new_venv_and_runs_outside_the_repo(tmp_path):
  """pip builds a wheel of this checkout and installs it into a new venv (its dependencies
  resolved, offline, from this environment's installed distributions); the venv's `dcjax`
  command then runs, evaluates and reports a set outside the repository."""
  wheels = tmp_path / "wheels"
  p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                      ROOT], capture_output=True, text=True, timeout=600)
  if p.returncode != 0 and ("Could not find a version" in p.stderr or "NewConnection" in p.stderr):
    pytest.skip(f"cannot fetch the build backend: {p.stderr[-200:]}")
  assert p.returncode == 0, p.stderr
  (wheel,) = wheels.glob("dcjax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "dcjax/configs/pca.py" in names and "dcjax/configs/evaluate.py" in names
  assert not any(n.startswith(("configs/", "tests/")) for n in names)
  py = _venv_with_our_dependencies(tmp_path / "venv")
  p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", str(wheel)],
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stdout + p.stderr
  exe = tmp_path / "venv" / "bin" / "dcjax"
  assert exe.exists()
  env = _env()
  env.pop("PYTHONPATH", None)
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  where = subprocess.run([str(py), "-c", "import dcjax; print(dcjax.__file__)"],
                         cwd=outside, env=env, capture_output=True, text=True)
  assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr
  p = _dcjax("run", "--config=benchmark", f"--workdir={tmp_path / 'run'}",
             "--config.dataset=synthetic", "--config.ipc=2", *TINY, cwd=outside, env=env,
             exe=str(exe))
  assert p.returncode == 0, p.stderr
  p = _dcjax("evaluate", str(tmp_path / "run" / "compressed"), *TINY,
             "--config.fairness.enabled=False", cwd=outside, env=env, exe=str(exe))
  assert p.returncode == 0, p.stderr
  assert p.stdout.strip().splitlines()[-1].startswith("evaluate ipc=2 synthetic small_data")
  assert (outside / "workdirs" / "evaluate-compressed" / "results.json").exists()
  p = _dcjax("report", "--out=rep", str(tmp_path / "run"), "workdirs", cwd=outside, env=env,
             exe=str(exe))
  assert p.returncode == 0, p.stderr
  assert p.stderr.strip() == "2 results -> rep" and (outside / "rep" / "acc_vs_ipc.png").exists()
