"""Loading the scripts of experiments/ (not a package) as modules, for their tests."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str):
  """experiments/<name>.py as module `name`, registered in sys.modules before it runs
  (dataclasses look their module up there)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module
