"""The benchmark: a class-balanced compressed set -> fresh students -> real test accuracy.

  python main.py --config=configs/benchmark.py --workdir=/tmp/run --config.ipc=10 --config.seeds=3

Protocols (config.eval.protocol): 'small_data' (method.md §4: SGD, DSA, batch 256, 300 epochs)
and 'hard' (method.md §2: AdamW, RandomResizedCrop + flip, batch 128, 300 epochs). Every field
of the preset can be overridden (eval.epochs, eval.lr, ...); unset fields keep the preset.
"""

import ml_collections
from ml_collections import config_dict


def _network_recipe(epochs: int) -> ml_collections.ConfigDict:
  """A network trained on the full training split (the teacher, the scoring models): a narrow
  ConvNet-3 and a short AdamW recipe, affordable on a 2-core CPU for Fashion-MNIST."""
  return ml_collections.ConfigDict(dict(
      model="convnet",
      model_kwargs=ml_collections.ConfigDict(dict(
          width=32, depth=config_dict.placeholder(int), norm=config_dict.placeholder(str),
          impl=config_dict.placeholder(str))),
      seed=0, protocol="hard", optimizer="adamw", lr=2e-3, weight_decay=0.01, momentum=0.9,
      schedule="cosine_epoch", batch_size=256, epochs=epochs, augment="flip", labels="hard",
      mixing="none", temperature=1.0))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.job = "benchmark"
  c.dataset = "fashion_mnist"  # fashion_mnist | tfds:<name> | folder:<path> | parquet:<path> | synthetic
  # random | el2n_easy | el2n_hard | forgetting_easy | forgetting_hard | aum_easy | aum_hard |
  # ccs | herding | kcenter  (scores from config.scores; herding/kcenter use teacher features)
  # | rded (distilled from the teacher's most realistic real crops; settings in config.rded)
  # | sre2l (synthesised from noise by a BatchNorm teacher's statistics; config.sre2l)
  # | pca (config.pca.prune's selection, combined k x k: set combine.k)
  c.method = "random"
  c.ipc = 10  # stored images per class
  # Combine (PCA): each stored image tiles k x k downscaled same-class selected images, so
  # k*k*ipc images per class are selected. 1 = store selected images as they are.
  # resample: the kernel that downscales a source image into its tile (dcjax.resample.METHODS:
  # linear (antialiased) | cubic | lanczos3 | area | nearest).
  c.combine = ml_collections.ConfigDict(dict(k=1, resample="linear"))
  # method 'pca': Prune with `prune` (any selection method), then Combine with combine.k.
  c.pca = ml_collections.ConfigDict(dict(prune="el2n_easy"))
  c.seed = 0  # selection seed; student i trains from seed + i
  c.seeds = 1  # number of fresh students (mean ± std over them)
  c.overwrite = False  # replace a finished run in --workdir
  c.checkpoint_every = 25  # epochs between checkpoints of each student (0: only at the end)
  c.progress = True

  c.data = ml_collections.ConfigDict()
  c.data.dir = config_dict.placeholder(str)  # None: the source's default location
  c.data.image_size = config_dict.placeholder(int)  # None: native resolution
  c.data.resize = "shorter_center_crop"  # or 'stretch'
  c.data.test_crop_ratio = 1.0  # 0.875 = ImageNet's resize 256 / center crop 224
  c.data.mean = config_dict.placeholder(tuple)  # None: the dataset's known statistics
  c.data.std = config_dict.placeholder(tuple)
  c.data.cache_dir = config_dict.placeholder(str)  # decoded test-split cache (.npz) across runs
  c.data.num_threads = 8
  # > 0: hold this many training examples per class out (seeded by validation_seed) and test on
  # them instead of the test split: for choosing settings without looking at the test set.
  c.data.validation_per_class = 0
  c.data.validation_seed = 0
  # > 0: also test every student on a copy of the test split downscaled to this size with
  # combine.resample and upscaled back with eval.resample (dcjax.resample.down_up), reported
  # beside the sharp split's figures as `resampled_test`: the PCA study's measure of the
  # train/test sharpness shift of Combine. The reported top-1 stays the sharp split's.
  c.data.test_resample_size = 0
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_examples=1024, num_test_examples=256, image_size=32, channels=3, num_classes=10,
      seed=0))

  c.eval = ml_collections.ConfigDict()
  c.eval.protocol = "small_data"
  c.eval.model = "convnet"
  c.eval.model_kwargs = ml_collections.ConfigDict(dict(
      width=config_dict.placeholder(int), depth=config_dict.placeholder(int),
      norm=config_dict.placeholder(str), weight_init=config_dict.placeholder(str),
      # ConvNet's dcjax.layers path (None: 'auto' = 'fused' on CPU: Winograd and the fused
      # norm -> ReLU -> pool); 'winograd' without the fused block (2026-12-06's figures),
      # 'custom' without Winograd either (the figures before), 'xla' XLA's kernels.
      impl=config_dict.placeholder(str)))
  c.eval.dtype = "float32"
  # Overrides of the protocol preset (None: keep the preset's value).
  for field, kind in [("optimizer", str), ("lr", float), ("weight_decay", float),
                      ("momentum", float), ("schedule", str), ("batch_size", int),
                      ("epochs", int), ("augment", str), ("labels", str), ("mixing", str),
                      ("temperature", float)]:
    c.eval[field] = config_dict.placeholder(kind)
  # RandomResizedCrop area bounds for augment 'rrc_flip' / 'tile_crop' (None: 0.08-1); for
  # tile_crop they are relative to one tile.
  c.eval.crop_scale = config_dict.placeholder(tuple)
  # The kernel of the augmentation's crop-resize (rrc_flip, tile_crop, tile_dsa: a tile up to
  # the training view), as combine.resample; and a random sharpness (unsharp mask / blur) per
  # view of this strength (0: off; dcjax.resample.random_sharpness).
  c.eval.resample = "linear"
  c.eval.sharpen = 0.0
  c.eval.test_batch_size = 1000
  c.eval.num_devices = config_dict.placeholder(int)  # None: all devices

  # The teacher of soft-label protocols: trained once on the full training split and cached
  # (keyed by dataset content, model, seed, recipe), reused by every later run. The default is
  # sized for a 2-core CPU on Fashion-MNIST (a narrow ConvNet-3, a few epochs).
  c.teacher = _network_recipe(epochs=4)
  c.teacher.allow_train = True  # False: a missing teacher is an error
  c.teacher.cache_dir = config_dict.placeholder(str)  # None: $DCJAX_CACHE or ~/.cache/dcjax
  # A torchvision state dict (.pth, or .safetensors read without torch) of teacher.model to
  # import instead of training one
  # (resnet18 / resnet50 / resnet101 / mobilenet_v2; needs PyTorch). None: train.
  c.teacher.weights = config_dict.placeholder(str)

  # Per-example scores of the training split for score-based methods: k models trained for a
  # few epochs with the dynamics runner (EL2N at `el2n_epoch`, forgetting events, AUM), cached
  # as a score file keyed by everything below. The default is sized for a 2-core CPU on
  # Fashion-MNIST (narrow ConvNet-3, 2 models, 3 epochs); `file` uses an existing or imported
  # score file instead.
  c.scores = _network_recipe(epochs=3)
  c.scores.file = config_dict.placeholder(str)
  # A plain per-example array as scores.file (.npy/.txt/.csv/.npz): the score it holds (el2n,
  # forgetting, aum, ...) and optionally a file of the example index of each row.
  c.scores.file_score = config_dict.placeholder(str)
  c.scores.file_indices = config_dict.placeholder(str)
  c.scores.cache_dir = config_dict.placeholder(str)  # None: $DCJAX_CACHE or ~/.cache/dcjax
  c.scores.allow_compute = True
  c.scores.num_models = 2
  # Resolution the training split is scored at (None: data.image_size). ImageNet scores at 64
  # px: 1.28M images then take 15.7 GB as uint8 (decoded once into data.cache_dir when set).
  c.scores.image_size = config_dict.placeholder(int)
  c.scores.el2n_epoch = config_dict.placeholder(int)  # None: after the last epoch
  c.scores.ccs_score = "aum"  # the difficulty CCS stratifies (el2n | forgetting | aum)
  c.scores.ccs_hard_cutoff = 0.1
  c.scores.ccs_bins = 50

  # RDED (method 'rded', Sun et al. 2024; dcjax/rded.py): per class, `candidates_per_class`
  # random real images, `crops_per_image` RandomResizedCrops each (area fraction `scale`, aspect
  # `ratio`, resized to the full size), scored by the teacher's (config.teacher) cross-entropy
  # of the true class; each image's best crop, then the combine.k**2 * ipc best crops of the
  # class, tiled k x k. 300 candidates, 5 crops and square crops are the released ImageNet
  # settings; the 0.5-1 scale is this benchmark's choice (the released code uses 0.08-1).
  # candidates_per_class must be >= k*k*ipc and <= the smallest class.
  c.rded = ml_collections.ConfigDict(dict(
      candidates_per_class=300, crops_per_image=5, scale=(0.5, 1.0), ratio=(1.0, 1.0),
      batch_size=50))  # batch_size: candidate images per observer call (x crops_per_image crops)

  # SRe2L (method 'sre2l', Yin et al. 2023; dcjax/sre2l.py, dcjax/runners/recover.py).
  # Squeeze: a BatchNorm teacher trained on the whole training split (sre2l.teacher: the
  # teacher recipe with norm='batch'; `weights` imports torchvision's, e.g. ResNet-18 for
  # ImageNet). Recover: ipc images per class optimised from noise, one image per class of a
  # class chunk per batch (classes_per_batch; None: all classes; SRe2L's ImageNet uses 100), so
  # that its BatchNorm batch statistics match the running ones (weight r_bn, the first layer's
  # first_bn_multiplier times) and it classifies as its class, under a random roll of up to
  # `jitter` px and a random flip; Adam (0.5, 0.9) with a cosine lr for `iterations` steps.
  # The defaults are SRe2L's CIFAR values (VILA-Lab/SRe2L's recover_cifar.sh) plus a flip per
  # batch (its ImageNet recovery's; the CIFAR script has none: sre2l.flip=False). Relabel: the soft
  # protocol's teacher (config.teacher), as for every method. Recovered sets are cached under
  # cache_dir (None: $DCJAX_CACHE/sre2l), one file per finished batch (a killed run resumes).
  c.sre2l = ml_collections.ConfigDict(dict(
      iterations=1000, lr=0.25, r_bn=0.01, first_bn_multiplier=10.0, jitter=4, flip=True,
      classes_per_batch=config_dict.placeholder(int), cache_dir=config_dict.placeholder(str)))
  c.sre2l.teacher = _network_recipe(epochs=4)
  c.sre2l.teacher.model_kwargs.norm = "batch"
  c.sre2l.teacher.allow_train = True
  c.sre2l.teacher.cache_dir = config_dict.placeholder(str)  # None: $DCJAX_CACHE/teachers
  c.sre2l.teacher.weights = config_dict.placeholder(str)

  # Multi-process runs (one process per host): jax.distributed.initialize at start-up (main.py).
  # An unset coordinator_address is a single-process run; "auto" lets JAX detect the cluster
  # (SLURM, Open MPI, Cloud TPU pods). Every process runs the same command with its process_id.
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address=config_dict.placeholder(str),  # "host:port" of process 0
      num_processes=config_dict.placeholder(int),
      process_id=config_dict.placeholder(int),
      local_device_ids=config_dict.placeholder(tuple),  # None: all local devices
      cpu_collectives="gloo",  # cross-process collectives between CPU devices: gloo | mpi
  ))
  return c
