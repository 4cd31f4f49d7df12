"""models.features returns exactly what each model's classifier sees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import models


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_features_times_classifier_equals_logits(name):
  model = models.get_model(name, 5, 16, **({"width": 4} if name != "convnet" else {"width": 8}))
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  variables = model.init(jax.random.key(0), x)
  f = np.asarray(models.features(model, variables, x))
  fc = variables["params"]["fc"]
  expected = np.asarray(model.apply(variables, x, train=False))
  np.testing.assert_allclose(f @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"]), expected,
                             rtol=1e-4, atol=1e-4)
  assert f.shape[0] == 3 and f.shape[1] == fc["kernel"].shape[0]


def test_every_model_names_its_classifier():
  for name in models.MODELS:
    model = models.get_model(name, 5, 32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert [n for n in models.CLASSIFIER_NAMES if n in shapes["params"]], name
