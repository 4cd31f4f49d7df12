"""The benchmark on ImageNet-1K (method.md §2): ResNet-18 students at 224 px.

  python main.py --config=configs/imagenet_benchmark.py --workdir=W --config.ipc=10 \
      --config.eval.protocol=hard        # or soft

Reads `tfds:imagenet2012` (prepare it once with TensorFlow: see README); a JPEG folder works
too: --config.dataset=folder:/data/imagenet (train/ and val/ with class subfolders). Training
images are stored at 224 px (shorter side resized, centre crop); the test protocol is resize
256 / centre crop 224 (test_crop_ratio 0.875), decoded once and cached in data.cache_dir.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import benchmark  # noqa: E402


def get_config():
  c = benchmark.get_config()
  c.dataset = "tfds:imagenet2012"
  c.data.image_size = 224
  c.data.test_crop_ratio = 0.875
  c.data.num_threads = 32
  c.eval.protocol = "hard"
  c.eval.model = "resnet18"
  c.eval.test_batch_size = 500
  c.checkpoint_every = 10
  # A ResNet-18 teacher trained with the standard torchvision recipe (SGD 0.1, 90 epochs).
  c.teacher.model = "resnet18"
  c.teacher.model_kwargs.width = 64
  c.teacher.protocol = "hard"
  c.teacher.optimizer = "sgd"
  c.teacher.lr = 0.1
  c.teacher.weight_decay = 1e-4
  c.teacher.momentum = 0.9
  c.teacher.schedule = "cosine_epoch"
  c.teacher.batch_size = 256
  c.teacher.epochs = 90
  c.teacher.augment = "rrc_flip"
  return c
