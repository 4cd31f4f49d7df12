"""The layering the package layout promises, checked on the import statements themselves:
pure kernels import no stateful layer and no config library; runners never import the
benchmark runner; only the benchmark package (and main.py) reads a config."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "dcjax"
PURE = ["scores", "select", "combine", "augment", "mixing", "models", "layers", "protocols",
        "training", "rded", "sre2l", "resample", "errors"]
STATEFUL = ("dcjax.data", "dcjax.runners", "dcjax.benchmark", "dcjax.train", "dcjax.store",
            "dcjax.sources")


def imports(path: pathlib.Path) -> set[str]:
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      if node.module == "dcjax":
        out |= {f"dcjax.{a.name}" for a in node.names}
  return out


@pytest.mark.parametrize("name", PURE)
def test_pure_kernels_import_nothing_stateful(name):
  found = imports(ROOT / f"{name}.py")
  bad = sorted(m for m in found if any(m == s or m.startswith(s + ".") for s in STATEFUL)
               or m.split(".")[0] in ("ml_collections", "orbax", "grain", "absl"))
  assert not bad, f"dcjax/{name}.py imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "data").glob("*.py"))
                         + sorted((ROOT / "runners").glob("*.py")), ids=lambda p: p.name)
def test_io_and_runners_never_import_the_benchmark_or_a_config(path):
  found = imports(path)
  bad = sorted(m for m in found if m.startswith(("dcjax.benchmark", "ml_collections")))
  assert not bad, f"{path} imports {bad}"


def test_only_the_benchmark_package_reads_a_config():
  readers = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                   if "ml_collections" in {m.split(".")[0] for m in imports(p)})
  assert all(r.startswith("benchmark/") for r in readers), readers


def test_public_import_paths_keep_working():
  """The README's import paths, re-exported where the modules moved."""
  from dcjax import augment, combine, models, scores, select, sources, store, train  # noqa: F401
  from dcjax.data import sources as data_sources, store as data_store
  from dcjax.runners import student
  assert train.train_student is student.train_student and train.Student is student.Student
  assert store.write_compressed is data_store.write_compressed
  assert store.read_compressed is data_store.read_compressed
  assert sources.open_source is data_sources.open_source
  assert sources.load_images is data_sources.load_images


def test_score_cache_key_does_not_change_when_a_score_is_added(monkeypatch):
  from dcjax import protocols
  from dcjax.runners import dynamics, scoring
  args = dict(model="convnet", model_kwargs={"width": 32}, recipe=protocols.resolve("hard"),
              epochs=3, num_models=2, seed=0, el2n_epoch=None, image_shape=(28, 28, 1),
              mean=(0.5,), std=(0.5,))
  before = scoring.score_key(**args)
  monkeypatch.setattr(dynamics, "SCORES", (*dynamics.SCORES, "a_new_score"))
  assert scoring.score_key(**args) == before
  assert before["scores"] == ["el2n", "forgetting", "aum"]
