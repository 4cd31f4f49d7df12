"""One process of tests/test_multihost.py (not a test module itself).

  python tests/multihost_worker.py OUT.npz                          # one process, all devices
  python tests/multihost_worker.py OUT.npz HOST:PORT NUM_PROCESSES PROCESS_ID

Runs (a) a tiny `dynamics.score_dynamics` (2 vmapped ConvNets, 2 epochs, 256 synthetic 16 px
images) and (b) one epoch of `train.train_student` on a 40-image set (checkpointed, then
restored), then `train.evaluate` on 99 test images (the whole set in every process, then each
process's share only), on a 'data' mesh over every device of every process. Process 0 writes
the scores, the final parameters and top-1 / top-5 to OUT.npz. The device count per process
comes from the environment (JAX_NUM_CPU_DEVICES), set by the test.
"""

import sys

import numpy as np

from dcjax.runners import distributed


def main(argv):
  out = argv[1]
  if len(argv) > 2:
    coordinator, num_processes, process_id = argv[2], int(argv[3]), int(argv[4])
    assert distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                  process_id=process_id, cpu_collectives="gloo")

  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  # pylint: disable-next=g-import-not-at-top
  from dcjax import augment, models, protocols, train
  from dcjax.runners import dynamics
  from dcjax.data import sources

  mean, std = (0.5,), (0.25,)
  rng = np.random.default_rng(0)
  num_classes = 4
  images = rng.integers(0, 256, size=(256, 16, 16, 1), dtype=np.uint8)
  labels = (np.arange(256) % num_classes).astype(np.int32)
  # A learnable signal, so predictions move during the short training.
  images[:, :4, :4, 0] = (labels[:, None, None] * 60).astype(np.uint8)
  test_images, test_labels = images[157:], labels[157:]  # 99 images
  mesh = train.make_mesh()  # all devices of all processes
  # Each process holds one contiguous block of a batch sharded over the mesh.
  per_process = 16 // jax.process_count()
  assert distributed.process_slice(NamedSharding(mesh, P("data")), 16) == slice(
      jax.process_index() * per_process, (jax.process_index() + 1) * per_process)

  # SGD, not AdamW: a conv bias ahead of a norm layer has a zero gradient up to rounding, and
  # Adam's m / sqrt(v) turns that rounding noise into lr-sized steps of either sign, so the
  # biases of two runs whose all-reduces sum in another order would differ by ~lr, not ~1e-7.
  # (a) Scoring: batch 64 -> 4 steps over 4 devices; EL2N in batches of 100 (the last padded).
  recipe = protocols.resolve("small_data", dict(batch_size=64, augment="flip"))
  scorer = models.get_model("convnet", num_classes, 16, width=8, depth=2)
  scores, score_vars = dynamics.score_dynamics(
      images, labels, num_classes=num_classes, model=scorer, recipe=recipe, mean=mean, std=std,
      num_models=2, epochs=2, seed=0, mesh=mesh, eval_batch_size=100, progress=False,
      return_params=True)

  # (b) One student epoch on 40 images (batch 16: the last step has 8 real rows), with
  # BatchNorm so batch statistics are reduced across processes too, then a test pass in
  # batches of 32 (the last padded).
  recipe = protocols.resolve("small_data", dict(batch_size=16, epochs=1))
  student = train.Student(models.get_model("convnet", num_classes, 16, width=8, depth=2,
                                           norm="batch"),
                          recipe, augment.get_augmentation(recipe.augment), mean, std, mesh)
  # Checkpointed into one directory shared by the processes (orbax writes it collectively),
  # then "resumed" from its last checkpoint: nothing left to train, the saved state comes back.
  ckpt_dir = out + ".checkpoints"
  variables, stats = train.train_student(student, images[:40], labels[:40], seed=3,
                                         progress=False, checkpoint_dir=ckpt_dir)
  restored, restored_stats = train.train_student(student, images[:40], labels[:40], seed=3,
                                                 progress=False, checkpoint_dir=ckpt_dir)
  assert restored_stats["resumed_from_epoch"] == 1
  for x, y in zip(jax.tree.leaves(distributed.to_host(variables)),
                  jax.tree.leaves(distributed.to_host(restored))):
    np.testing.assert_array_equal(x, y)
  top1, top5 = train.evaluate(student, student.eval_fn(), variables, test_images, test_labels,
                              batch_size=32)
  # The same test pass with each process holding only its share (50 / 49 images).
  share = sources.process_indices(len(test_labels), jax.process_index(), jax.process_count())
  local_top1, local_top5 = train.evaluate(student, student.eval_fn(), variables,
                                          test_images[share], test_labels[share], batch_size=32,
                                          process_local=True)

  # to_host is collective: every process calls it, process 0 writes.
  flat = {}
  for prefix, tree in (("score_vars", score_vars), ("student", variables)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(distributed.to_host(tree))[0]:
      flat[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
  if jax.process_index() == 0:
    np.savez(out, **{f"scores/{k}": v for k, v in scores.items()}, **flat,
             top1=top1, top5=top5, local_top1=local_top1, local_top5=local_top5,
             final_loss=stats["final_loss"],
             device_count=jax.device_count(), process_count=jax.process_count())


if __name__ == "__main__":
  main(sys.argv)
