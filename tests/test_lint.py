"""The repository passes its linter (pyproject.toml's [tool.ruff]: Pyflakes and syntax errors):
an undefined name in a path no test runs, an unused import or a broken f-string fails here."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_repository_passes_ruff():
  pytest.importorskip("ruff", reason="ruff comes with the dev extras (scripts/setup.sh)")
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                         "--output-format", "concise", str(ROOT)],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_finds_an_undefined_name(tmp_path):
  """The check can fail: a module using a name it never defines is reported."""
  pytest.importorskip("ruff", reason="ruff comes with the dev extras (scripts/setup.sh)")
  (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
  (tmp_path / "bad.py").write_text("def f():\n  return undefined_name\n")
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(tmp_path)],
                        capture_output=True, text=True, timeout=120, cwd=tmp_path)
  assert proc.returncode == 1 and "F821" in proc.stdout
