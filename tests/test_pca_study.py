"""experiments/pca_study.py: the cells it would run."""

import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def study():
  return experiment_scripts.load("pca_study")


def test_gap_cells_pair_each_kernel_with_the_resampled_test_split(study, tmp_path, capsys):
  assert study.main(["run", "--root", str(tmp_path), "--datasets", "fmnist,cifar10",
                     "--ipcs", "10", "--parts", "gap", "--dry-run"]) == 0
  out = capsys.readouterr().out
  per_dataset = 1 + 5 + 1 + 4  # full-res, each kernel, area->lanczos3, two kernels x 2 strengths
  assert out.count("running ->") == 2 * per_dataset
  assert "--config.data.test_resample_size=14" in out and "test_resample_size=16" in out
  assert "configs/pca.py:full,cifar10_shared" in out
  assert "--config.combine.resample=area --config.eval.resample=lanczos3" in out
  assert "--config.eval.sharpen=2.0" in out
  assert out.count("--config.data.validation_per_class=500") == 2 * per_dataset
  assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_later_parts_use_the_chosen_kernel_and_prune(study, tmp_path, capsys):
  assert study.main(["run", "--root", str(tmp_path), "--datasets", "fmnist", "--ipcs", "1",
                     "--parts", "prune,k,augment,ladder", "--kernel", "lanczos3",
                     "--sharpen", "1", "--prune", "herding", "--split", "test", "--seeds", "5",
                     "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert out.count("running ->") == 2 * len(study.PRUNES) + 3 + 3 + 3
  assert "validation_per_class" not in out and "--config.seeds=5" in out
  assert "--config.pca.prune=herding --config.combine.k=3" in out
  assert "--config.data.test_resample_size=9" in out  # 28 // 3
  assert "--config.eval.crop_scale=(0.08,1.0)" in out
  assert "--config.data.image_size=56" in out and "--config.scores.image_size=28" in out
  assert "PCA_herding_k_3_lanczos3_sharpen_1_ipc1" in out
  with pytest.raises(SystemExit):
    study.main(["run", "--root", str(tmp_path), "--parts", "gap,magic"])
